#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the tests of sweep.py (tests/test_slurm.py)
# and for trying sweeps by hand. Needs root; no systemd (the daemons are started directly).
#
#   scripts/slurm_local.sh start    install Debian's slurmctld, slurmd, slurm-client and munge
#                                   if missing, write /etc/slurm/slurm.conf for this node (its
#                                   real CPUs and memory, select/cons_tres, JobRequeue=1), start
#                                   munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_local.sh stop     cancel this cluster's jobs, stop the daemons `start` started
#                                   (those recorded in $ONE_SLURM_DIR/started), nothing else
#   scripts/slurm_local.sh status   what `start` started and whether SLURM answers
#
# If a SLURM already answers (`sinfo`), `start` starts nothing and `stop` stops nothing. If an
# earlier `start` is recorded but its cluster no longer answers (the machine rebooted, CI was
# killed), `start` first stops what of it still runs. A /etc/slurm/slurm.conf that this script
# did not write is never replaced.
#
# A requeued job waits AuthInfo=cred_expire seconds before it may start again (SLURM's default
# is 120 s). The tests requeue on purpose, so this cluster uses 10 s, and the schedulers pass
# every second, so a job starts within about a second of becoming eligible.
set -euo pipefail

STATE=${ONE_SLURM_DIR:-/var/tmp/one-slurm}
CONF=/etc/slurm/slurm.conf
MARK='# written by scripts/slurm_local.sh'
STARTED=$STATE/started           # "NAME PID" of each daemon this script started
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

# sinfo retries for about 9 s before it says that no controller answers
answers() { timeout 3 sinfo -h -o %T >/dev/null 2>&1; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || die "not root: install ${PACKAGES[*]} (apt-get) first"
  say "installing ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local install=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}")
  "${install[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${install[@]}" >/dev/null; } ||
    die "apt-get could not install ${PACKAGES[*]}"
}

write_config() {
  if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -qxF "$MARK"; then
    die "$CONF exists and was not written by this script: start that SLURM instead"
  fi
  # This node as slurmd sees it: NodeName=HOST CPUs=... RealMemory=...
  local node host cpus memory
  node=$(slurmd -C | head -n 1)
  host=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node")
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  [ -n "$host" ] && [ -n "$cpus" ] && [ -n "$memory" ] || die "slurmd -C gave no node line: $node"
  mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/spool" "$STATE/log"
  cat >"$CONF" <<EOF
$MARK
ClusterName=one-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((memory / cpus))
JobRequeue=1
ReturnToService=2
$node NodeAddr=127.0.0.1
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  munge_works && return
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  record munged /run/munge/munged.pid
  for _ in $(seq 50); do munge_works && return; sleep 0.1; done
  die "munged started but does not answer"
}

record() {  # NAME PIDFILE: wait for the daemon's pid file, then note the daemon as ours
  local pid=''
  for _ in $(seq 100); do
    pid=$(cat "$2" 2>/dev/null || true)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || die "$1 wrote no pid file $2 (see $STATE/log)"
  echo "$1 $pid" >>"$STARTED"
}

wait_idle() {
  local state=''
  for _ in $(seq 300); do
    state=$(timeout 10 sinfo -h -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && return
    sleep 0.2
  done
  die "the node is '${state:-unreachable}', not idle, 60 s after starting (see $STATE/log)"
}

start() {
  local began=$SECONDS
  if answers; then say "a SLURM already answers here; nothing started"; sinfo; return; fi
  if [ -s "$STARTED" ]; then
    # an earlier start whose cluster no longer answers (a crash, a killed CI, a rebooted
    # machine): stop whatever of it still runs, then start afresh
    say "$STARTED lists daemons of an earlier start that no longer answers: stopping them"
    stop
  fi
  install_packages
  write_config
  rm -rf "$STATE/ctld" "$STATE/spool" && mkdir -p "$STATE/ctld" "$STATE/spool"
  : >"$STARTED"
  start_munge
  slurmctld
  record slurmctld "$STATE/slurmctld.pid"
  slurmd
  record slurmd "$STATE/slurmd.pid"
  wait_idle
  say "up in $((SECONDS - began)) s: $(sinfo -h -N -o '%N, %c CPUs, %m MB, partition %P')"
}

ours() {  # PID NAME: the process PID is still the daemon NAME we started
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

stop() {
  [ -s "$STARTED" ] || { say "nothing started by this script is recorded in $STARTED"; return; }
  if grep -q '^slurmctld ' "$STARTED" && answers; then
    # our own cluster: its jobs go with it (slurmstepd would outlive slurmd)
    squeue -h -o %A | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  local name pid
  # in reverse order of starting: slurmd, slurmctld, munged
  tac "$STARTED" | while read -r name pid; do
    ours "$pid" "$name" || { say "$name (pid $pid) is no longer running"; continue; }
    kill "$pid"
    for _ in $(seq 100); do ours "$pid" "$name" || break; sleep 0.1; done
    if ours "$pid" "$name"; then
      kill -9 "$pid"
      say "$name (pid $pid) killed"
    else
      say "$name (pid $pid) stopped"
    fi
  done
  rm -f "$STARTED"
}

status() {
  if [ -s "$STARTED" ]; then
    while read -r name pid; do
      if ours "$pid" "$name"; then say "$name pid $pid running"; else say "$name pid $pid gone"; fi
    done <"$STARTED"
  else
    say "nothing started by this script"
  fi
  if answers; then sinfo; else say "no SLURM answers (sinfo)"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
