#!/usr/bin/env bash
# Install (apt) and start a single-node Slurm cluster on this machine: munge, MariaDB,
# slurmdbd (accounting: submitit reads job states with sacct), slurmctld and slurmd.
# Idempotent: safe to run while everything is up, after a kill -9 or a reboot. Waits until
# the node is idle. Stop it with slurm/stop.sh (by pid files).
#
#   sudo slurm/start.sh               # CPUs = nproc, memory = 90% of RAM
#   SCALING_SLURM_CPUS=8 slurm/start.sh   # advertise more CPUs than the machine has
#
# Debian/Ubuntu only (apt-get, no systemd needed). Everything runs as root.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "[slurm/start] $*" >&2; }
die() { echo "[slurm/start] error: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "must run as root (no sudo found)"
  exec sudo -E "$0" "$@"
fi

HOST="$(hostname -s)"
# Not plain nproc: it answers OMP_NUM_THREADS when that is set (a shell tuned for one run
# would get a one-CPU cluster).
CPUS="${SCALING_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
# RealMemory above the real RAM marks the node INVALID: advertise 90% of it.
MEMORY_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
STATE=/var/lib/slurm
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm
CONF=/etc/slurm
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

# A zombie answers kill -0: a daemon killed with SIGKILL whose parent (here PID 1 of a
# container, which may not reap) has not waited for it is dead all the same.
alive() {
  [ -s "$1" ] || return 1
  local pid; pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${secs}s (logs in $LOGDIR)"
    sleep 0.5
  done
}

# --- 1. packages ------------------------------------------------------------------------
missing=0
for bin in munged slurmctld slurmd sbatch sacct slurmdbd mariadbd; do
  command -v "$bin" >/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
  log "installing ${PACKAGES[*]} (apt-get --no-install-recommends)"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not try to start services through init: we start them below.
  policy=/usr/sbin/policy-rc.d; own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
  if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
  fi
  [ "$own_policy" = 1 ] && rm -f "$policy"
fi

# --- 2. configuration ---------------------------------------------------------------------
mkdir -p "$CONF" "$STATE/slurmctld" "$STATE/slurmd" "$LOGDIR" "$RUNDIR"
render() {  # render TEMPLATE DEST MODE -> prints "changed" when DEST was rewritten
  local tmp; tmp="$(mktemp)"
  sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEMORY_MB@|$MEMORY_MB|g" \
      -e "s|@STATE@|$STATE|g" -e "s|@LOGDIR@|$LOGDIR|g" -e "s|@RUNDIR@|$RUNDIR|g" "$1" > "$tmp"
  chmod "$3" "$tmp"
  if [ -f "$2" ] && cmp -s "$tmp" "$2"; then rm -f "$tmp"; else mv "$tmp" "$2"; echo changed; fi
}
slurm_changed="$(render "$here/slurm.conf.in" "$CONF/slurm.conf" 644)"
# slurmdbd refuses a config not owned by SlurmUser (root) with mode 600.
dbd_changed="$(render "$here/slurmdbd.conf.in" "$CONF/slurmdbd.conf" 600)"
chown root:root "$CONF/slurmdbd.conf"

stop_pidfile() {  # stop a daemon we are about to restart with a new config
  if alive "$1"; then
    local pid; pid="$(cat "$1")"; kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
  fi
  rm -f "$1"
}

# --- 3. munge -----------------------------------------------------------------------------
# munged insists on its own user, a private key and a run dir it owns.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- munged --force
fi
wait_for 20 munged sh -c 'munge -n | unmunge'

# --- 4. MariaDB (accounting store) --------------------------------------------------------
mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  log "initialising MariaDB"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! alive /run/mysqld/mysqld.pid; then
  log "starting MariaDB"
  # Unix socket only: slurmdbd is on the same machine, and no port is opened.
  setsid nohup mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
    --socket=/run/mysqld/mysqld.sock >>"$LOGDIR/mariadb.log" 2>&1 < /dev/null &
fi
wait_for 60 MariaDB mariadb-admin --socket=/run/mysqld/mysqld.sock ping
mariadb --socket=/run/mysqld/mysqld.sock -e "
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# --- 5. slurmdbd, slurmctld, slurmd -------------------------------------------------------
[ -n "$dbd_changed" ] && stop_pidfile "$RUNDIR/slurmdbd.pid"
if ! alive "$RUNDIR/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd
fi
wait_for 60 slurmdbd sacctmgr -n -P list cluster
# Register the cluster before the controller first talks to the database.
sacctmgr -n -P list cluster format=cluster | grep -qx scaling || sacctmgr -i add cluster scaling >/dev/null

if [ -n "$slurm_changed" ]; then
  stop_pidfile "$RUNDIR/slurmd.pid"
  stop_pidfile "$RUNDIR/slurmctld.pid"
fi
if ! alive "$RUNDIR/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld
fi
wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
if ! alive "$RUNDIR/slurmd.pid"; then
  log "starting slurmd"
  slurmd
fi

# --- 6. wait for the node -----------------------------------------------------------------
deadline=$((SECONDS + 60))
while :; do
  state="$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|fail*)   # left over from an unclean stop
      scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || die "node $HOST is '$state', not idle, after 60s (see $LOGDIR/slurmd.log)"
  sleep 0.5
done
log "cluster up: node $HOST $state, $CPUS CPUs, ${MEMORY_MB} MB; try: sinfo; sbatch --wrap hostname"
