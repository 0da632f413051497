#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (no systemd needed), for tests and trying the
# SLURM profile: `scripts/slurm_local.sh start` / `stop`. Needs root and Debian's apt for the
# packages (slurmctld slurmd slurm-client munge, installed when missing). Details and the two
# pitfalls (status command squeue; config at /etc/slurm/slurm.conf): docs/hpc.md.
#
# Environment: BASE (state, logs, munge key; default ./.slurm-local), PORT_CTLD / PORT_D
# (default 16817 / 16818), CONF (default /etc/slurm/slurm.conf: jobs only find it there).
set -euo pipefail
BASE=${BASE:-$PWD/.slurm-local}
PORT_CTLD=${PORT_CTLD:-16817}
PORT_D=${PORT_D:-16818}
CONF=${CONF:-/etc/slurm/slurm.conf}

stop() {
  # only the daemons these PID files name
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    if [ -s "$BASE/$f" ]; then kill -TERM "$(cat "$BASE/$f")" 2>/dev/null || true; rm -f "$BASE/$f"; fi
  done
}

start() {
  local node cpus mem_mb
  node=$(hostname -s)
  cpus=$(nproc --all)   # all cores of the node: slurmd checks CPUs= against the hardware, not our affinity mask
  mem_mb=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 2048 ))
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
     || ! command -v sbatch >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
  fi
  stop
  sleep 1
  mkdir -p "$BASE"/{state,spool,log,munge}
  chmod 0755 "$BASE" "$BASE/munge"
  mkdir -p "$(dirname "$CONF")"
  cat > "$CONF" <<CONF
ClusterName=localci
SlurmctldHost=$node
SlurmctldPort=$PORT_CTLD
SlurmdPort=$PORT_D
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.socket
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
MpiDefault=pmi2
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
NodeName=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  [ -f "$BASE/munge/munge.key" ] || mungekey --create --keyfile="$BASE/munge/munge.key"
  chmod 0400 "$BASE/munge/munge.key"
  munged --force --socket="$BASE/munge/munge.socket" --key-file="$BASE/munge/munge.key" \
    --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed"
  munge -n --socket="$BASE/munge/munge.socket" | unmunge --socket="$BASE/munge/munge.socket" >/dev/null
  slurmctld -c -f "$CONF"   # daemonises; -c: start with no job state
  slurmd -f "$CONF"         # daemonises
  for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then echo "SLURM up: $(sinfo -h)"; return 0; fi
    sleep 0.5
  done
  echo "SLURM did not come up; last log lines:" >&2
  tail -20 "$BASE"/log/*.log >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop  (BASE=$BASE)" >&2; exit 2 ;;
esac
