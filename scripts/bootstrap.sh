#!/usr/bin/env bash
# Prepares this checkout to run: Debian packages the target needs, then .venv with fleetops.
# Usage: scripts/bootstrap.sh demo|test|bench
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-demo}"

# Debian packages each target needs (command to look for : package that provides it).
common=(python3:python3 mosquitto:mosquitto mosquitto_sub:mosquitto-clients)
case "$target" in
  demo) wanted=("${common[@]}") ;;
  test|bench) wanted=("${common[@]}" prometheus:prometheus promtool:prometheus
    systemd-analyze:systemd openssl:openssl dpkg-deb:dpkg fakeroot:fakeroot lintian:lintian
    prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
    chromium:chromium chromedriver:chromium-driver) ;;
  *) echo "bootstrap: unknown target '$target' (demo, test, bench)" >&2; exit 2 ;;
esac

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
for pair in "${wanted[@]}"; do
  cmd="${pair%%:*}"; pkg="${pair##*:}"
  have "$cmd" || missing+=("$pkg")
done
# python3 -m venv needs ensurepip, which Debian ships separately.
if have python3 && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=("python3-venv")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "fleetops needs these Debian packages: ${missing[*]}" >&2
    echo "install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A broker started by the package would hold port 1883; the demo and tests run their own.
if [ "$(id -u)" -eq 0 ] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
  : # leave a site's own broker alone
fi

python=python3
stamp=.venv/.fleetops-installed
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
