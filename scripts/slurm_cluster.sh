#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1, for the tests of the SLURM workflow profile (issue #24).
#
#   scripts/slurm_cluster.sh install   # apt-get install slurm-wlm slurmdbd munge mariadb-server (as root; no
#                                      # service is started by the install)
#   scripts/slurm_cluster.sh start     # munged, MariaDB, slurmdbd, slurmctld, slurmd; prints the partition
#   scripts/slurm_cluster.sh status    # what runs, sinfo
#   scripts/slurm_cluster.sh stop      # cancels this cluster's jobs, stops every daemon it started by its PID,
#                                      # restores /etc/slurm as it found it
#
# Needs root (the daemons, /etc/slurm). Everything lives in $LESIONLIB_SLURM_STATE (default /tmp/lesionlib-slurm):
# munge's key and socket, MariaDB's data directory (its own server on 127.0.0.1, not the system's), SLURM's
# spool and state, the PID of each daemon, the logs (kept by `stop` under $STATE/log). The configuration must be
# /etc/slurm/slurm.conf (with SLURM_CONF pointing elsewhere, the `srun` inside each job finds no configuration):
# `start` moves an /etc/slurm it finds to $STATE/etc-slurm.backup and `stop` puts it back. The node: this host's
# name, 2 CPUs (or $LESIONLIB_SLURM_CPUS), its memory as `slurmd -C` reports it, one partition `lesionlib`,
# accounting through slurmdbd (the executor plugin reads job states with `sacct`), proctrack/linuxproc and
# task/none (no cgroups needed), no GPU. Ports: $LESIONLIB_SLURM_PORT_BASE (default 16817) for slurmctld, +1
# slurmd, +2 slurmdbd, +3 MariaDB.
#
# `start` refuses to run beside a SLURM daemon it did not start (a real cluster node), stops the remains of a
# half-started earlier run of its own first, and is idempotent: a second `start` on a running cluster is a
# no-op. `stop` is idempotent too.
set -euo pipefail

STATE="${LESIONLIB_SLURM_STATE:-/tmp/lesionlib-slurm}"
PORT_BASE="${LESIONLIB_SLURM_PORT_BASE:-16817}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CPUS="${LESIONLIB_SLURM_CPUS:-2}"
CLUSTER=lesionlib
PARTITION=lesionlib
ETC=/etc/slurm
MUNGE_RUN=/run/munge
MARKER="$ETC/.lesionlib-one-node-cluster"
BACKUP="$STATE/etc-slurm.backup"
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)   # stop order
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server iproute2 procps)   # iproute2: ss; procps: pgrep

log() { echo "[slurm-cluster] $*" >&2; }
die() { echo "[slurm-cluster] error: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts SLURM's daemons and writes $ETC)"; }

# PID recorded for daemon $1, when that process is alive and still the program we started (not a reused PID).
live_pid() {
    local name=$1 pidfile="$STATE/pids/$1.pid" pid exe program
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -d "/proc/$pid" ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    program=$(readlink -f "$(command -v "$name" || echo "/nonexistent/$name")")  # Debian: slurmd -> slurmd-wlm
    [ "${exe% (deleted)}" = "$program" ] || return 1
    echo "$pid"
}

stop_pid() {  # stop_pid NAME: SIGTERM, up to 20 s, then SIGKILL; by the recorded PID only
    local name=$1 pid i
    if ! pid=$(live_pid "$name"); then
        [ ! -s "$STATE/pids/$name.pid" ] || log "$name (pid $(cat "$STATE/pids/$name.pid")) is not running"
        rm -f "$STATE/pids/$name.pid"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do
        [ -d "/proc/$pid" ] || break
        sleep 0.5
    done
    if [ -d "/proc/$pid" ]; then
        log "$name (pid $pid) did not stop within 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$STATE/pids/$name.pid"
}

# Start a program in the background, its PID recorded (exec keeps the PID: setpriv and `exec` replace themselves).
spawn() {  # spawn NAME LOGFILE CMD...
    local name=$1 logfile=$2
    shift 2
    setsid "$@" >>"$logfile" 2>&1 < /dev/null &
    echo $! > "$STATE/pids/$name.pid"
}

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
    local seconds=$1 what=$2 i
    shift 2
    local deadline=$((SECONDS + seconds))
    while [ $SECONDS -lt $deadline ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "$what did not come up within $seconds s; logs: $STATE/log/"
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

cmd_install() {
    need_root
    # Debian starts a package's service on install where it can; the cluster's daemons are started by `start`
    # only, so no service is started here (a temporary policy-rc.d, removed afterwards; one already present is
    # left as it is).
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && created=1
    fi
    trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
    log "apt-get install ${PACKAGES[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
    [ "$created" = 1 ] && rm -f "$policy"
    trap - EXIT
    log "installed: $(slurmctld -V)"
}

check_tools() {
    local missing=() t
    for t in munged mungekey mariadb-install-db mariadbd mariadb slurmdbd slurmctld slurmd sacctmgr sbatch sacct pgrep \
             sinfo scontrol setpriv ss; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    [ ${#missing[@]} = 0 ] || die "not installed: ${missing[*]} (run: sudo $0 install)"
}

write_configs() {
    local host mem
    host=$(hostname -s)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    [ -n "$mem" ] || die "slurmd -C reported no RealMemory"
    if [ -e "$ETC" ] && [ ! -e "$MARKER" ]; then
        log "moving the existing $ETC to $BACKUP (restored by stop)"
        mv "$ETC" "$BACKUP"
    fi
    mkdir -p "$ETC"
    touch "$MARKER"
    cat > "$ETC/slurm.conf" <<EOF
# Written by lesionlib's scripts/slurm_cluster.sh (one-node test cluster); removed by its 'stop'.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
KillWait=10
InactiveLimit=0
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$ETC/slurmdbd.conf" <<EOF
# Written by lesionlib's scripts/slurm_cluster.sh (one-node test cluster); removed by its 'stop'.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=lesionlib-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

restore_etc() {
    if [ -e "$MARKER" ]; then
        rm -rf "$ETC"
        log "removed $ETC (written by start)"
    fi
    if [ -e "$BACKUP" ]; then
        if [ -e "$ETC" ]; then
            log "warning: $ETC exists and is not this script's; the backup stays at $BACKUP"
        else
            mv "$BACKUP" "$ETC"
            log "restored $ETC"
        fi
    fi
}

foreign_daemons() {  # SLURM and munge daemons running that this script did not start (by exact program name, read only)
    local d pid ours
    for d in slurmctld slurmd slurmdbd munged; do
        ours=$(live_pid "$d" || true)
        for pid in $(pgrep -x "$d" || true); do
            [ "$pid" = "$ours" ] || echo "$d($pid)"
        done
    done
}

cmd_start() {
    need_root
    check_tools
    if live_pid slurmd >/dev/null && live_pid slurmctld >/dev/null && live_pid slurmdbd >/dev/null \
        && sinfo -h -p "$PARTITION" >/dev/null 2>&1; then
        log "already running"
        print_env
        return 0
    fi
    local foreign
    foreign=$(foreign_daemons)
    [ -z "$foreign" ] || die "SLURM daemons not started by this script are running: $foreign (a real cluster node?)"
    if [ -d "$STATE/pids" ] || [ -e "$MARKER" ]; then
        log "stopping the remains of an earlier run first"
        cmd_stop
    fi
    local p
    for p in "$CTLD_PORT" "$SLURMD_PORT" "$DBD_PORT" "$DB_PORT"; do
        port_free "$p" || die "port $p is in use (set LESIONLIB_SLURM_PORT_BASE)"
    done
    rm -rf "$STATE/munge" "$STATE/mysql" "$STATE/ctld" "$STATE/spool" "$STATE/run" "$STATE/pids"
    mkdir -p "$STATE/log" "$STATE/pids" "$STATE/ctld" "$STATE/spool" "$STATE/run" "$STATE/munge"
    chmod 755 "$STATE"
    # A failed start stops what it started and puts /etc/slurm back.
    trap 'rc=$?; if [ $rc != 0 ]; then log "start failed: stopping what was started"; cmd_stop; fi; exit $rc' EXIT

    # munge: its own key, socket and log, run as the munge user
    chown munge:munge "$STATE/munge"
    chmod 755 "$STATE/munge"   # munged wants its socket's folder searchable by all
    setpriv --reuid=munge --regid=munge --clear-groups mungekey --create --keyfile="$STATE/munge/munge.key" --bits=1024
    chmod 400 "$STATE/munge/munge.key"
    # SLURM's clients look for munge's socket at its default place only (AuthInfo=socket=... is not read by all)
    if [ ! -d "$MUNGE_RUN" ]; then
        mkdir -p "$MUNGE_RUN" && touch "$STATE/created-munge-run"
    fi
    chown munge:munge "$MUNGE_RUN"
    chmod 755 "$MUNGE_RUN"
    spawn munged "$STATE/log/munged.stderr" setpriv --reuid=munge --regid=munge --clear-groups \
        munged --foreground --key-file="$STATE/munge/munge.key" --socket="$MUNGE_RUN/munge.socket.2" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/seed"
    wait_for 15 munged test -S "$MUNGE_RUN/munge.socket.2"

    # MariaDB: its own data directory and server on 127.0.0.1 (not the system's), a user for slurmdbd
    log "initialising MariaDB in $STATE/mysql"
    mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root --skip-test-db \
        --auth-root-authentication-method=socket > "$STATE/log/mariadb-install.log" 2>&1
    spawn mariadbd "$STATE/log/mariadb.log" mariadbd --no-defaults --datadir="$STATE/mysql" --user=root \
        --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$STATE/run/mysqld.sock" \
        --pid-file="$STATE/run/mariadbd.pid" --skip-name-resolve --innodb-buffer-pool-size=64M
    wait_for 60 MariaDB timeout 10 mariadb --no-defaults -S "$STATE/run/mysqld.sock" -u root -e "SELECT 1"
    mariadb --no-defaults -S "$STATE/run/mysqld.sock" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lesionlib-test';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    write_configs
    spawn slurmdbd "$STATE/log/slurmdbd.stderr" slurmdbd -D
    wait_for 60 slurmdbd timeout 10 sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    spawn slurmctld "$STATE/log/slurmctld.stderr" slurmctld -D -i
    wait_for 30 slurmctld timeout 10 scontrol ping
    spawn slurmd "$STATE/log/slurmd.stderr" slurmd -D
    wait_for 60 "the node" node_idle
    trap - EXIT
    log "running: partition $PARTITION, $CPUS CPUs; logs in $STATE/log"
    print_env
}

node_idle() { timeout 10 sinfo -h -p "$PARTITION" -o %T | grep -qx idle; }

print_env() {
    echo "partition=$PARTITION"
    echo "state=$STATE"
}

cancel_jobs() {
    command -v squeue >/dev/null || return 0
    live_pid slurmctld >/dev/null || return 0
    local jobs i
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    [ -n "${jobs// /}" ] || return 0
    log "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for i in $(seq 1 60); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && return 0
        sleep 0.5
    done
    log "warning: jobs still listed after 30 s: $(squeue -h 2>/dev/null | tr '\n' ';')"
}

cmd_stop() {
    need_root
    trap - EXIT
    [ -d "$STATE" ] || { restore_etc; return 0; }
    cancel_jobs
    local d
    for d in "${DAEMONS[@]}"; do
        stop_pid "$d"
    done
    rm -rf "$STATE/pids" "$STATE/munge" "$STATE/mysql" "$STATE/ctld" "$STATE/spool" "$STATE/run"
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock"
    if [ -e "$STATE/created-munge-run" ]; then
        rmdir "$MUNGE_RUN" 2>/dev/null || log "warning: $MUNGE_RUN is not empty, left in place"
        rm -f "$STATE/created-munge-run"
    fi
    restore_etc
    log "stopped (logs kept in $STATE/log)"
}

cmd_status() {
    local d pid
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(live_pid "$d"); then echo "$d running (pid $pid)"; else echo "$d not running"; fi
    done
    if live_pid slurmctld >/dev/null; then sinfo; fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
