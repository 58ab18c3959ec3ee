#!/usr/bin/env bash
# Prepares ./var for `make run`: a demo tree to back up, a repository key (mode 0600)
# and the local repository, each only when absent.
set -euo pipefail
OPSAGENT=${1:-opsagent}
mkdir -p var/state var/sandbox
if [ ! -d var/demo-data ]; then
  mkdir -p var/demo-data/documents var/demo-data/media
  for i in $(seq 1 20); do
    printf 'Invoice %s\nClient: demo\nAmount: %s.00\n' "$i" "$((i * 37))" > "var/demo-data/documents/invoice-$i.txt"
  done
  head -c 262144 /dev/urandom > var/demo-data/media/photo.bin
fi
if [ ! -s var/repository.key ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > var/repository.key)
fi
if "$OPSAGENT" backup --help 2>/dev/null | grep -q ' init '; then
  [ -e var/repository/config ] || "$OPSAGENT" backup init --config deploy/config/local.yml
fi
