#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   tests/slurm/cluster.sh up       install what is missing (apt), write the configs, start munged, MariaDB,
#                                   slurmdbd, slurmctld and slurmd; wait until the node is idle. Idempotent:
#                                   a second `up` stops what the first started and starts afresh.
#   tests/slurm/cluster.sh down     stop the daemons this script started, by the PIDs it recorded, and remove
#                                   the configs it wrote
#   tests/slurm/cluster.sh status   recorded daemons (up/down) and sinfo
#
# Needs root on Debian/Ubuntu without systemd (the daemons run as plain background processes; no cgroups:
# proctrack/linuxproc, task/none, so nothing enforces the memory, CPU or GPU limits, they only schedule).
# Accounting (slurmdbd + MariaDB) is on, so `sacct` and `sacctmgr` answer as on a real cluster and the
# executor plugin's default status command (sacct) and account validation work unchanged.
#
# Environment:
#   DISTILLERY_SLURM_GPUS=N          advertise N (<= 4) fake GPUs as gres/gpu (backed by /dev/null etc.)
#   DISTILLERY_SLURM_CPUS=N          declare N CPUs / M MB on the node instead of what `slurmd -C` finds
#   DISTILLERY_SLURM_MEM_MB=M        (a job asking for more CPUs than the node has pends forever)
#   DISTILLERY_SLURM_FORCE=1         overwrite an /etc/slurm/slurm.conf that this script did not write
set -euo pipefail

STATE=/run/distillery-slurm        # PIDs of the daemons this script started: <name>.pid
LOGS=/var/log/slurm
MARK="# written by distillery tests/slurm/cluster.sh"
PACKAGES=(munge slurm-wlm slurm-client slurmdbd mariadb-server)
DB_PASSWORD=distillery-test        # local MariaDB on 127.0.0.1 for a test cluster only
NODE=$(hostname -s)

say() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# wait_until SECONDS COMMAND...: retry COMMAND every 0.25 s until it succeeds
wait_until() {
    local limit=$1 start=$SECONDS
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - start < limit)) || { say "gave up after ${limit}s waiting for: $*"; return 1; }
        sleep 0.25
    done
}

# record NAME PIDFILE: remember the PID a daemon wrote, so `down` stops exactly that process
record() {
    local name=$1 pidfile=$2
    wait_until 15 test -s "$pidfile" || die "$name wrote no $pidfile"
    install -d -m 0755 "$STATE"
    cat "$pidfile" > "$STATE/$name.pid"
}

# stop NAME: SIGTERM the recorded PID (if it still runs the expected program), SIGKILL after 15 s
stop() {
    local name=$1 file="$STATE/$1.pid" pid comm
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
    if [[ -n $comm && $comm == "$name"* ]]; then
        say "stopping $name (PID $pid)"
        kill "$pid" 2>/dev/null || true
        local i
        for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (PID $pid) ignored SIGTERM; SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

# down also removes the configs this script wrote: with a slurm.conf naming a controller that is gone, every
# `scontrol show config` (the SLURM executor plugin runs one whenever Snakemake loads it) waits 9 s for it
down() {
    local name file
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop "$name"; done
    for file in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf; do
        if [[ -f $file ]] && grep -qxF "$MARK" "$file"; then rm -f "$file"; fi
    done
}

status() {
    local name pid
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        pid=$(cat "$STATE/$name.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then echo "up    $name $pid"; else echo "down  $name"; fi
    done
    sinfo -N -o '%N %P %T %c %m %G' 2>/dev/null || true
}

install_missing() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
    say "installing ${missing[*]}"
    apt-get update -qq
    # Without systemd the postinst scripts cannot start services (policy-rc.d); this script starts them.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already answers; using it"
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
    record munged /run/munge/munged.pid
    wait_until 15 bash -c 'munge -n | unmunge' || die "munge does not answer"
}

start_database() {
    if ! mariadb-admin ping >/dev/null 2>&1; then
        install -d -o mysql -g mysql /run/mysqld
        rm -f /run/mysqld/mysqld.pid
        # setsid and closed descriptors: the server outlives this script and holds no caller's pipe open
        setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
            </dev/null >>"$LOGS/mariadbd.log" 2>&1 &
        record mariadbd /run/mysqld/mysqld.pid
        wait_until 60 mariadb-admin ping || die "MariaDB does not answer (see $LOGS/mariadbd.log)"
    fi
    mariadb <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
    chmod 0600 /etc/slurm/slurmdbd.conf
    rm -f /run/slurm/slurmdbd.pid
    slurmdbd </dev/null >/dev/null 2>&1
    record slurmdbd /run/slurm/slurmdbd.pid
    wait_until 30 sacctmgr -n list cluster || die "slurmdbd does not answer (see $LOGS/slurmdbd.log)"
}

write_slurm_conf() {
    local node gres_types="" gpus=${DISTILLERY_SLURM_GPUS:-0} overrides="" devices=(/dev/null /dev/zero /dev/full /dev/urandom)
    node=$(slurmd -C | head -n 1)      # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. ... RealMemory=..
    if [[ -n ${DISTILLERY_SLURM_CPUS:-}${DISTILLERY_SLURM_MEM_MB:-} ]]; then
        local memory=${node##*RealMemory=}
        node="NodeName=$NODE CPUs=${DISTILLERY_SLURM_CPUS:-$(nproc)} RealMemory=${DISTILLERY_SLURM_MEM_MB:-${memory%% *}}"
        overrides="SlurmdParameters=config_overrides"
    fi
    rm -f /etc/slurm/gres.conf
    if ((gpus > 0)); then
        ((gpus <= ${#devices[@]})) || die "at most ${#devices[@]} fake GPUs"
        # gres/gpu wants one character device per GPU; any existing one does (nothing uses it)
        local i
        echo "$MARK" >/etc/slurm/gres.conf
        for ((i = 0; i < gpus; i++)); do
            echo "NodeName=$NODE Name=gpu File=${devices[i]}" >>/etc/slurm/gres.conf
        done
        gres_types="GresTypes=gpu"
        node="$node Gres=gpu:$gpus"
    fi
    cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=distillery
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
ReturnToService=2
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$overrides
$gres_types
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    [[ $(id -u) == 0 ]] || die "run as root"
    if [[ -e /etc/slurm/slurm.conf ]] && ! grep -qxF "$MARK" /etc/slurm/slurm.conf \
        && [[ ${DISTILLERY_SLURM_FORCE:-0} != 1 ]]; then
        die "/etc/slurm/slurm.conf was not written by this script; set DISTILLERY_SLURM_FORCE=1 to replace it"
    fi
    install_missing
    down
    getent hosts "$NODE" >/dev/null || { say "adding $NODE to /etc/hosts"; echo "127.0.0.1 $NODE" >>/etc/hosts; }
    install -d /etc/slurm /run/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd
    # Controller state survives restarts (a node once drained stays drained): start from nothing.
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
    start_munge
    write_slurm_conf
    start_database
    rm -f /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
    slurmctld </dev/null >/dev/null 2>&1
    record slurmctld /run/slurm/slurmctld.pid
    wait_until 30 scontrol ping || die "slurmctld does not answer (see $LOGS/slurmctld.log)"
    slurmd </dev/null >/dev/null 2>&1
    record slurmd /run/slurm/slurmd.pid
    wait_until 60 bash -c "sinfo -h -n '$NODE' -o %T | grep -qx idle" \
        || die "node $NODE is not idle (see $LOGS/slurmd.log)"
    say "up: $(sinfo -h -o '%P %T %c CPUs %m MB %G')"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
