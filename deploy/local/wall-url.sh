#!/usr/bin/env bash
# Print the URL of the wall's main screen with a fresh 12-hour token.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IOC="${VENV:-$ROOT/.venv}/bin/ioc"
export IOC_CONFIG="${IOC_CONFIG:-$ROOT/deploy/local/demo.yaml}"
echo; echo "Video wall (main screen, token valid 12 h):"
echo "  $("$IOC" wall token --screen main --ttl 12h --url)"; echo
