#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's: installs
# redis-server if missing, builds .venv, then runs ruff, mypy --strict and pytest.
# Extra arguments go to pytest (e.g. bash tests/run.sh -k signals).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || apt_install redis-server
[ -x /usr/sbin/cron ] || apt_install cron
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || apt_install faketime
command -v openssl >/dev/null 2>&1 || apt_install openssl
# promtool checks docs/prometheus/lockrun-rules.yml (tests/test_check.py); Debian ships it
# in the prometheus package. Without recommends: node_exporter and its helpers are not needed.
command -v promtool >/dev/null 2>&1 || apt_install --no-install-recommends prometheus

python=${PYTHON:-python3}
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 |
    { grep -v "^WARNING: Location" || true; }

echo "== ruff"
.venv/bin/ruff check lockrun tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
