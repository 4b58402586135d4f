#!/usr/bin/env bash
# Install the Debian packages the local system and the tests need, when missing:
# Java 17 + Maven (Kafka jars), PostgreSQL, Chromium (wall browser tests), python3-venv,
# Prometheus (the server and promtool: `make up` and the tests run them; Debian's service is
# never started). As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "[deps] installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the binaries: a policy-rc.d that refuses keeps the packages' init scripts (Debian's
# prometheus service) from starting anything; ours start what they need themselves.
policy=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq "${need[@]}" >/dev/null
