#!/usr/bin/env bash
# The application processes of the local system (workers, sink, gateway, feeds, cameras,
# wall), each in the background with a PID file and a log in the stack's log folder.
#
#   deploy/local/services.sh up|down|status
#
# Environment: IOC_CONFIG (settings file, default deploy/local/demo.yaml), VENV (.venv),
# IOC_STATE_DIR (as for stack.sh), PROMETHEUS_ADDR (where Prometheus listens, default
# 127.0.0.1:9090; it scrapes with deploy/prometheus/prometheus.yml, data in the state dir),
# IOC_WORKERS (identical `ioc worker` processes, every stage in each, default 1: the stage
# groups share the partitions among them; worker 1 serves /metrics on 9401, worker k on
# 9401 + 10*(k-1), i.e. 9411, 9421, ...; docs/performance/events.md, "N identical workers"),
# EGOV_HISTORY_SCALE (the feeds' e-government history, default 0.02; docs/scorecards.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=deploy/local/paths.sh
source "$HERE/paths.sh"
RUN="$STATE/run"
VENV="${VENV:-$ROOT/.venv}"
IOC="$VENV/bin/ioc"
export IOC_CONFIG="${IOC_CONFIG:-$HERE/demo.yaml}"

PROMETHEUS_ADDR="${PROMETHEUS_ADDR:-127.0.0.1:9090}"
# The feeds publish the 2020-2021 e-government history once at this scale (its marker in
# the state dir makes a restart resume or skip it), then stream live; 0: no history.
EGOV_HISTORY_SCALE="${EGOV_HISTORY_SCALE:-0.02}"
[[ "$EGOV_HISTORY_SCALE" =~ ^[01](\.[0-9]+)?$ ]] || { echo "EGOV_HISTORY_SCALE: expected 0-1, got '$EGOV_HISTORY_SCALE'" >&2; exit 2; }
EGOV_MARKER="$STATE/egov-history-$(basename "${IOC_CONFIG%.*}").json"  # one per settings file
IOC_WORKERS="${IOC_WORKERS:-1}"
[[ "$IOC_WORKERS" =~ ^[1-9][0-9]?$ ]] || { echo "IOC_WORKERS: expected 1-99, got '$IOC_WORKERS'" >&2; exit 2; }

# name | ioc arguments (or "!command arguments" for a program that is not ioc).
SERVICES=("worker|worker")
for ((k = 2; k <= IOC_WORKERS; k++)); do
  SERVICES+=("worker$k|worker --metrics-port $((9401 + 10 * (k - 1)))")
done
SERVICES+=(
  "sink|sink"
  "gateway|gateway"
  "wall|wall serve"
  "feeds|feeds run --egov-history $EGOV_HISTORY_SCALE --egov-history-marker $EGOV_MARKER"
  "cameras|camera run"
)
if command -v prometheus >/dev/null; then
  SERVICES+=("prometheus|!$(command -v prometheus) --config.file=$ROOT/deploy/prometheus/prometheus.yml \
--storage.tsdb.path=$STATE/prometheus --storage.tsdb.retention.time=7d \
--web.listen-address=$PROMETHEUS_ADDR")
fi

log() { printf '[services] %s\n' "$*" >&2; }

pid_of() {
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  # Ours: the supervisor's bash, whose script names itself. (A check for "ioc" in the
  # command line missed Prometheus when the state folder's path had no "ioc" in it.)
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "[supervisor]"; then
    echo "$pid"
  else
    rm -f "$f"; return 1
  fi
}

up() {
  mkdir -p "$RUN" "$LOGS"
  local entry name args pid cmd gid
  command -v prometheus >/dev/null || log "prometheus not installed (deploy/local/install-deps.sh): not started"
  for entry in "${SERVICES[@]}"; do
    name="${entry%%|*}"; args="${entry#*|}"
    if pid="$(pid_of "$name")"; then log "$name already running (pid $pid)"; continue; fi
    cmd="$IOC"; [[ "$args" == '!'* ]] && { cmd="${args%% *}"; cmd="${cmd#!}"; args="${args#* }"; }
    # Supervised as systemd's Restart=on-failure would: a service that exits on its own
    # (a crash, kill -9, the sink's stall watchdog, a stage that lost its group) is
    # started again after 2 s and the restart is logged; 'down' ends the whole group.
    # Workers and the sink join their consumer groups as static members named after
    # the service (docs/adr/0007): after a broker restart, and after a restart of the
    # service itself, they get their partitions back at once.
    gid=""; [[ "$name" == worker* || "$name" == sink ]] && gid="$name"
    # shellcheck disable=SC2016
    env ${gid:+IOC_KAFKA__GROUP_INSTANCE_ID=$gid} setsid bash -c 'while :; do "$0" "$@"; rc=$?; [[ $rc -eq 0 ]] && exit 0
      echo "[supervisor] ioc $* exited with code $rc at $(date -u +%FT%TZ); restarting in 2 s"
      sleep 2; done' "$cmd" $args >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    log "started $name (pid $!, supervised, log $LOGS/$name.log)"
  done
  sleep 3
  for entry in "${SERVICES[@]}"; do
    name="${entry%%|*}"
    if [[ -f "$RUN/$name.pid" ]] && ! pid_of "$name" >/dev/null; then
      log "ERROR: $name exited at start; last lines of $LOGS/$name.log:"; tail -n 20 "$LOGS/$name.log" >&2; return 1
    fi
  done
}

# The service names, and those of workers started earlier with a larger IOC_WORKERS
# (so 'down' and 'status' cover them whatever IOC_WORKERS is now).
names() {
  local entry f
  for entry in "${SERVICES[@]}"; do echo "${entry%%|*}"; done
  for f in "$RUN"/worker[0-9]*.pid; do
    [[ -e "$f" ]] || continue
    f="$(basename "$f" .pid)"
    if [[ "${f#worker}" -gt "$IOC_WORKERS" ]]; then echo "$f"; fi
  done
}

down() {
  local name pid i
  for name in $(names); do
    pid="$(pid_of "$name")" || continue
    log "stopping $name (pid $pid)"
    # The supervisor leads a process group of its own (setsid): TERM reaches it and the
    # service, so it does not restart what is stopping.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 -- "-$pid" 2>/dev/null && { log "$name did not stop in 10 s, killing"; kill -KILL -- "-$pid"; }
    rm -f "$RUN/$name.pid"
  done
}

status() {
  local name pid
  for name in $(names); do
    if pid="$(pid_of "$name")"; then printf '%-11s running  pid %s\n' "$name" "$pid"; else printf '%-11s stopped\n' "$name"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
