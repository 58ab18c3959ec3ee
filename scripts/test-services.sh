#!/usr/bin/env bash
# Installs the Debian packages the tests need when missing, and starts PostgreSQL and
# MariaDB when they are not running. Idempotent; safe to run before every test run.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have /usr/sbin/sshd || missing+=(openssh-server)
have ssh-keygen || missing+=(openssh-client)
have prometheus || missing+=(prometheus)
have promtool || missing+=(prometheus)
have prometheus-alertmanager || missing+=(prometheus-alertmanager)
have amtool || missing+=(prometheus-alertmanager)
have pg_dump || missing+=(postgresql-client)
have mariadb-dump || missing+=(mariadb-client)
have restic || missing+=(restic)
# ACLs on restored directories (tests/integration/test_files_source.py)
have setfacl || missing+=(acl)
have prometheus-node-exporter || missing+=(prometheus-node-exporter)
# The HTML reports are opened, screenshotted and printed to PDF by Debian's Chromium.
have /usr/bin/chromium || missing+=(chromium)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1; }
if ! pg_up; then
  if [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    echo "PostgreSQL server is not installed; installing" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

my_up() { mariadb-admin -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1; }
if ! my_up; then
  if [ ! -x /usr/sbin/mariadbd ]; then
    echo "MariaDB server is not installed; installing" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server >/dev/null
  fi
  echo "starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 30); do my_up && break; sleep 1; done
  my_up || { echo "MariaDB did not start on 127.0.0.1:3306" >&2; exit 1; }
fi
echo "test services ready"
