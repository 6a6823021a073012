#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by slurm/start.sh, by pid files, in reverse
# order. Idempotent: a daemon that is not running is skipped.
#
#   slurm/stop.sh           # stop daemons; job and accounting state survive
#   slurm/stop.sh --wipe    # also forget the controller state (job ids restart at 1)
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH"
log() { echo "[slurm/stop] $*" >&2; }
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "[slurm/stop] error: must run as root" >&2; exit 1; }
  exec sudo -E "$0" "$@"
fi
wipe=0
case "${1:-}" in
  "") ;;
  --wipe) wipe=1 ;;
  *) echo "usage: $0 [--wipe]" >&2; exit 2 ;;
esac

stop() {  # stop NAME PIDFILE
  local name="$1" pidfile="$2" pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 20s: SIGKILL"; kill -9 "$pid" || true; fi
  fi
  rm -f "$pidfile"
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
stop MariaDB /run/mysqld/mysqld.pid
stop munged /run/munge/munged.pid
if [ "$wipe" = 1 ]; then
  log "wiping controller state"
  rm -rf /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
fi
log "stopped"
