#!/usr/bin/env bash
# Print the URL of the wall's main screen with a fresh 12-hour token, and Prometheus' URL.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IOC="${VENV:-$ROOT/.venv}/bin/ioc"
export IOC_CONFIG="${IOC_CONFIG:-$ROOT/deploy/local/demo.yaml}"
echo; echo "Video wall (main screen, token valid 12 h):"
echo "  $("$IOC" wall token --screen main --ttl 12h --url)"; echo
echo "Operators' screen 'ops' (operator token for 'operator', may acknowledge alerts and switch presets):"
echo "  $("$IOC" wall token --screen ops --role operator --name operator --ttl 12h --url)"; echo
echo "Public services screen 'public' (e-government scorecards, docs/scorecards.md):"
echo "  $("$IOC" wall token --screen public --ttl 12h --url)"; echo
if command -v prometheus >/dev/null; then
  echo "Prometheus (metrics, alerts; rules in deploy/prometheus/; also: ioc status):"
  echo "  http://${PROMETHEUS_ADDR:-127.0.0.1:9090}/alerts"; echo
fi
