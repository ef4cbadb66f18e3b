#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (munged, slurmctld and
# slurmd from Debian's slurm-wlm and munge), for the Slurm executor's tests:
# partition `debug`, this host's CPUs, accounting to a text file so that
# `sacct` answers. Run as root; idempotent (a running cluster is left alone).
# Prints the settings the tests read: SLURM_CONF=... on stdout.
set -euo pipefail
STATE="${CRAM_SLURM_STATE:-/var/lib/cram-slurm}"
CONF="$STATE/slurm.conf"
HOST="$(hostname -s)"
mkdir -p "$STATE"/{spool,ctld,log}

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! munge -n >/dev/null 2>&1; then
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
  else
    /usr/sbin/munged --force
  fi
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

# The node's CPUs and memory as slurmd sees them.
NODE="$(slurmd -C | head -1)"
cat > "$CONF" <<CONF
ClusterName=cram
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MinJobAge=600
KillWait=5
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$CONF"

if ! scontrol ping >/dev/null 2>&1 || ! scontrol ping | grep -q UP; then
  pkill -x slurmctld 2>/dev/null || true
  /usr/sbin/slurmctld -c -f "$CONF"
fi
if ! pgrep -x slurmd >/dev/null; then
  /usr/sbin/slurmd -f "$CONF"
fi
for _ in $(seq 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    break
  fi
  sleep 0.2
done
if ! sinfo -h -o '%T' | grep -Eq '^(idle|mixed|allocated)'; then
  echo "slurm-local: the node did not come up:" >&2
  sinfo >&2 || true
  tail -20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  exit 1
fi
echo "SLURM_CONF=$CONF"
