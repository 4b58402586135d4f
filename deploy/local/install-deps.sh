#!/usr/bin/env bash
# Install the Debian packages the local system and the tests need, when missing:
# Java 17 + Maven (Kafka jars), PostgreSQL, Chromium (wall browser tests), python3-venv.
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "[deps] installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
