#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (localhost), for the slow test
# tests/test_slurm_cluster.py, which runs the job scripts of scripts/slurm/
# and scripts/slurm_wasap.sh under a real slurmctld + slurmd.
#
#   scripts/ci/slurm_cluster.sh up       # install (when absent), configure, start, wait for idle
#   scripts/ci/slurm_cluster.sh down     # stop the daemons it started (munged, slurmctld, slurmd)
#   scripts/ci/slurm_cluster.sh status   # sinfo
#
# Needs root, Debian's packages (slurmctld slurmd munge slurm-client: SLURM
# 22.05 on Debian 12) and no systemd: every daemon runs in the background,
# its pid in $STATE/*.pid. Idempotent: `up` on a running cluster only waits
# for the node; `down` on a stopped one does nothing.
#
# Exit status of `up`: 0 the node is idle; 77 cannot here (not root, the
# packages cannot be installed, a foreign /etc/slurm/slurm.conf); 1 the
# daemons did not come up (their logs are printed).
#
# What mattered in a container (no systemd, cgroup v1/v2 not delegated):
#   ProctrackType=proctrack/linuxproc  proctrack/cgroup needs a writable cgroup tree
#   TaskPlugin=task/none               task/cgroup and task/affinity: same; no binding here
#   JobAcctGatherType=jobacct_gather/none, no AccountingStorage (no slurmdbd):
#                                      sacct has nothing; finished jobs are read with
#                                      `scontrol show job` instead, kept MinJobAge=3600 s
#   SlurmdParameters=config_overrides  lets the node announce more CPUs than the machine
#                                      has (CPUs=max(nproc, 12)): slurm_wasap.sh asks for
#                                      6 tasks x 2 CPUs, table3 for 6 x 1; without it slurmd drains the node
#                                      ("Low socket*core*thread count")
#   SelectType=select/cons_tres, SelectTypeParameters=CR_CPU: CPUs are the consumable,
#                                      memory is checked against RealMemory per job but not
#                                      summed (the Table 2 tasks ask --mem=8G each; with
#                                      CR_*_Memory at most two would run at once here)
#   RealMemory = MemTotal - 1 GiB margin (slurmd drains a node that claims more than it
#                                      has unless config_overrides; kept honest anyway)
#   JobRequeue=1                       `scontrol requeue` from inside a job (exit 75)
#   AuthInfo=cred_expire=10            a requeued job waits cred_expire (default 120 s) before
#                                      it may start again: 10 s keeps the preemption test short
#   no cgroup.conf                     22.05 knows no CgroupPlugin=disabled: slurmd dies with it
#   SlurmUser=root                     no slurm user's spool permissions to set up
#   munged run as user munge with its key 0400 munge:munge (it refuses a group/other-
#                                      readable key and, by default, running as root)
# Settings from the environment: SLURM_CLUSTER_CPUS (default max(nproc, 12)),
# SLURM_CLUSTER_STATE (default /var/spool/sparse_mlp_slurm), SLURM_CLUSTER_TIMEOUT (s, 60).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by sparse_mlp scripts/ci/slurm_cluster.sh"
STATE=${SLURM_CLUSTER_STATE:-/var/spool/sparse_mlp_slurm}
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}
PKGS=(slurmctld slurmd munge slurm-client)

cannot() { echo "slurm_cluster: cannot: $*" >&2; exit 77; }
log() { echo "slurm_cluster: $*" >&2; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v munged >/dev/null || missing+=(munge)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]}"
    log "installing ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq "${PKGS[@]}"; } >"$STATE/apt.log" 2>&1; then
        tail -20 "$STATE/apt.log" >&2
        cannot "apt-get install ${PKGS[*]} failed (log: $STATE/apt.log)"
    fi
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        cannot "$CONF exists and was not written by this script: not touching a real cluster's config"
    fi
    local host cpus mem_kb mem_mb
    host=$(hostname -s)
    cpus=${SLURM_CLUSTER_CPUS:-$(( $(nproc) > 12 ? $(nproc) : 12 ))}
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$(( mem_kb / 1024 - 1024 ))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
    local tmp="$CONF.tmp.$$"
    cat >"$tmp" <<EOF
$MARK
# one node on localhost for tests/test_slurm_cluster.py; see the script for why each line
ClusterName=sparsemlp
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=10
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if [ -e "$CONF" ] && cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv "$tmp" "$CONF"; fi
    # no cgroup.conf: 22.05 has no CgroupPlugin=disabled (slurmd fails to start with it),
    # and without the file and the cgroup plugins slurmd never touches cgroups
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    local key=/etc/munge/munge.key rundir=/run/munge
    if [ ! -s "$key" ]; then
        log "creating $key"
        if command -v mungekey >/dev/null; then mungekey --create --keyfile "$key"
        else dd if=/dev/urandom of="$key" bs=1024 count=1 status=none; fi
    fi
    mkdir -p "$rundir" /var/lib/munge /var/log/munge
    chown munge:munge "$key" "$rundir" /var/lib/munge /var/log/munge /etc/munge
    chmod 0400 "$key"; chmod 0700 /etc/munge; chmod 0755 "$rundir"
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cannot "munged does not answer (see /var/log/munge/munged.log)"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1; }

up() {
    [ "$(id -u)" -eq 0 ] || cannot "needs root (installs packages, starts daemons)"
    mkdir -p "$STATE"
    install_packages
    write_conf
    start_munge
    if ! alive "$STATE/slurmctld.pid"; then
        log "starting slurmctld"
        # -i: ignore state files of an older configuration
        slurmctld -i
    fi
    if ! alive "$STATE/slurmd.pid"; then
        log "starting slurmd"
        slurmd
    fi
    local state=""
    for _ in $(seq $((TIMEOUT * 2))); do
        state=$(node_state)
        case "$state" in
            idle*|mixed*|allocated*) log "node $(hostname -s) is $state"; sinfo >&2; return 0 ;;
            drain*|down*)
                # a node left down by an earlier run (ReturnToService=2 handles most)
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "node did not become idle within ${TIMEOUT}s (state: ${state:-none})"
    sinfo -N -l >&2 || true
    scontrol show node >&2 || true
    tail -30 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    exit 1
}

stop_pidfile() {
    local f=$1 name=$2 pid
    alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

down() {
    [ "$(id -u)" -eq 0 ] || cannot "needs root"
    # jobs first, so no training is left behind the daemons
    if alive "$STATE/slurmctld.pid"; then
        scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 100); do [ -z "$(squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    stop_pidfile "$STATE/slurmd.pid" slurmd
    stop_pidfile "$STATE/slurmctld.pid" slurmctld
    if [ -s /run/munge/munged.pid ] && grep -qF "$MARK" "$CONF" 2>/dev/null; then
        stop_pidfile /run/munge/munged.pid munged
    fi
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) sinfo -N -l ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
