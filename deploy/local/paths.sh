# Sourced by stack.sh and services.sh: where the local system keeps its state.
# Keep in step with ioc.config.default_state_dir() (the Python side of the same rule).
if [[ -n "${IOC_STATE_DIR:-}" ]]; then STATE="$IOC_STATE_DIR"
elif [[ $(id -u) -eq 0 ]]; then STATE=/var/lib/ioc-local  # PostgreSQL runs as 'postgres': not under /root
else STATE="${XDG_STATE_HOME:-$HOME/.local/state}/ioc"; fi
LOGS="$STATE/logs"
