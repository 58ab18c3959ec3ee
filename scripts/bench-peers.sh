#!/usr/bin/env bash
# Installs the peers the benchmarks compare against when missing: restic, BorgBackup
# (Debian's borgbackup, 1.2 on bookworm) and GNU time (the peak-RSS measurement).
# Bench-only: the test run does not need borg. Idempotent; `make bench` runs it.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have restic || missing+=(restic)
have borg || missing+=(borgbackup)
have /usr/bin/time || missing+=(time)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
echo "benchmark peers ready: $(restic version | cut -d' ' -f1-2), $(borg --version)"
