#!/bin/bash
# A throw-away SLURM cluster on localhost for tests: one node (this host, at 127.0.0.1),
# every file (configuration, state, spool, logs, PID files, munge socket and key) under DIR.
#
#   test/slurm-cluster.sh start DIR [CPUS]   start munged, slurmctld and slurmd; wait until the
#                                            node is idle; exit non-zero printing the log of a
#                                            daemon that did not come up (and stop the others)
#   test/slurm-cluster.sh stop DIR           cancel this cluster's jobs and stop exactly the
#                                            daemons started by 'start' (PIDs in DIR/pids)
#
# Clients select the cluster with SLURM_CONF=DIR/slurm.conf (DIR/env holds that line).
# Authentication: a munged of our own running as the munge user (setpriv) with a fresh key;
# when munge is not usable (no munged, no munge user, or it does not start) auth/none.
# The node declares CPUS (default 2) whatever the hardware has (SlurmdParameters=config_overrides).
# Ports: the first free pair from 16817 up, so that a system SLURM or another test cluster
# does not collide with this one.
set -eu
PATH=$PATH:/usr/sbin:/sbin   # the daemons, for users whose PATH lacks sbin

prog=test/slurm-cluster.sh
die() { echo "$prog: $*" >&2; exit 1; }
usage() { echo "usage: $prog start DIR [CPUS] | $prog stop DIR" >&2; exit 2; }

# the daemon of PID FILE if it still runs the program NAME (guards against PID reuse)
alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}

# the process of PID FILE runs (not a zombie): at start, before it has exec'd its program,
# its cmdline is still the forking shell's, so 'alive' would call it dead under load
running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/stat" ] && ! sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | grep -q '^[ZX]'
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

show_log() {
    echo "----- $1 -----" >&2
    if [ -s "$1" ]; then tail -n 60 "$1" >&2; else echo "(empty)" >&2; fi
}

stop() {
    local dir=$1 name pidfile pid
    [ -d "$dir/pids" ] || return 0
    # jobs still running would leave slurmstepd and task processes behind
    if [ -f "$dir/slurm.conf" ] && alive "$dir/pids/slurmctld.pid" slurmctld; then
        SLURM_CONF=$dir/slurm.conf timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for name in slurmd slurmctld munged; do
        pidfile=$dir/pids/$name.pid
        alive "$pidfile" "$name" || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive "$pidfile" "$name" || break
            sleep 0.1
        done
        if alive "$pidfile" "$name"; then
            echo "$prog: $name (pid $pid) ignored SIGTERM for 5 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

start() {
    local dir=$1 cpus=$2 host user auth port p state
    { command -v slurmctld && command -v slurmd && command -v sbatch; } > /dev/null \
        || die "slurmctld, slurmd and sbatch are needed (Debian: apt-get install slurm-wlm)"
    case $cpus in ''|*[!0-9]*|0) die "CPUS '$cpus': expected a positive integer" ;; esac
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -e "$dir/slurm.conf" ] || die "'$dir' already holds a cluster (stop it first, or use another directory)"
    # munged runs as the munge user: it must be able to reach DIR/munge
    chmod 755 "$dir"
    mkdir -p "$dir/pids" "$dir/state" "$dir/spool" "$dir/log"
    host=$(hostname -s)
    user=$(id -un)

    port=16817
    while ! port_free "$port" || ! port_free $((port + 1)); do
        port=$((port + 2))
        [ "$port" -lt 17817 ] || die "no free pair of TCP ports in 16817..17817"
    done

    auth=none
    if command -v munged > /dev/null && command -v setpriv > /dev/null && id munge > /dev/null 2>&1; then
        mkdir -p "$dir/munge"
        chmod 711 "$dir/munge"   # munged wants its socket directory searchable by all
        # a key of our own: the system's /etc/munge/munge.key is left alone
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
        chown -R munge:munge "$dir/munge"
        # setpriv execs munged, so $! is munged's PID; munged must reach DIR through its parents
        setpriv --reuid=munge --regid=munge --init-groups test -r "$dir/munge/munge.key" \
            || echo "$prog: the munge user cannot reach $dir/munge (a parent directory is not searchable: chmod o+x)" >&2
        setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
            --socket="$dir/munge/munge.socket.2" --key-file="$dir/munge/munge.key" \
            --log-file="$dir/munge/munged.log" --pid-file="$dir/munge/munged.pid" \
            --seed-file="$dir/munge/munged.seed" > "$dir/log/munged.out" 2>&1 &
        echo $! > "$dir/pids/munged.pid"
        for _ in $(seq 1 50); do
            [ -S "$dir/munge/munge.socket.2" ] && break
            alive "$dir/pids/munged.pid" munged || break
            sleep 0.1
        done
        if [ -S "$dir/munge/munge.socket.2" ] && munge -n --socket="$dir/munge/munge.socket.2" \
                | unmunge --socket="$dir/munge/munge.socket.2" > /dev/null 2>&1; then
            auth=munge
        else
            echo "$prog: munged did not start or does not answer; using auth/none. Its output:" >&2
            show_log "$dir/log/munged.out"
            show_log "$dir/munge/munged.log"
            stop "$dir"
            mkdir -p "$dir/pids"
        fi
    else
        echo "$prog: munged, setpriv or the munge user missing: using auth/none" >&2
    fi

    {
        echo "# a one-node test cluster written by $prog"
        echo "ClusterName=ladletest"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=$port"
        echo "SlurmdPort=$((port + 1))"
        echo "SlurmUser=$user"
        echo "SlurmdUser=root"
        if [ "$auth" = munge ]; then
            echo "AuthType=auth/munge"
            echo "CredType=cred/munge"
            echo "AuthInfo=socket=$dir/munge/munge.socket.2"
        else
            echo "AuthType=auth/none"
            echo "CredType=cred/none"
        fi
        echo "StateSaveLocation=$dir/state"
        echo "SlurmdSpoolDir=$dir/spool/slurmd-%n"
        echo "SlurmctldPidFile=$dir/state/slurmctld.pid"
        echo "SlurmdPidFile=$dir/spool/slurmd.pid"
        echo "SlurmctldLogFile=$dir/log/slurmctld.log"
        echo "SlurmdLogFile=$dir/log/slurmd.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_CPU"
        echo "SchedulerType=sched/builtin"
        # like many sites: no MPI plugin unless srun asks (--mpi=pmix)
        echo "MpiDefault=none"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobCompType=jobcomp/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "MailProg=/bin/true"
        echo "KillWait=5"
        echo "MinJobAge=600"
        echo "ReturnToService=2"
        echo "SlurmdParameters=config_overrides"
        echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN"
        echo "PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
    } > "$dir/slurm.conf"
    echo "SLURM_CONF=$dir/slurm.conf" > "$dir/env"
    export SLURM_CONF=$dir/slurm.conf

    slurmctld -D -i -f "$SLURM_CONF" > "$dir/log/slurmctld.out" 2>&1 &
    echo $! > "$dir/pids/slurmctld.pid"
    slurmd -D -f "$SLURM_CONF" -N "$host" > "$dir/log/slurmd.out" 2>&1 &
    echo $! > "$dir/pids/slurmd.pid"

    state=
    for _ in $(seq 1 150); do
        for p in slurmctld slurmd; do
            if ! running "$dir/pids/$p.pid"; then
                echo "$prog: $p exited at start" >&2
                show_log "$dir/log/$p.out"
                show_log "$dir/log/$p.log"
                stop "$dir"
                exit 1
            fi
        done
        state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
        case $state in idle*) break ;; esac
        sleep 0.2
    done
    case $state in
        idle*) ;;
        *)
            echo "$prog: node $host is '${state:-unknown}' after 30 s, not idle" >&2
            for p in slurmctld slurmd; do show_log "$dir/log/$p.out"; show_log "$dir/log/$p.log"; done
            stop "$dir"
            exit 1 ;;
    esac
    echo "$prog: cluster up in $dir (auth/$auth, node $host with $cpus CPUs, ports $port/$((port + 1)))"
}

[ $# -ge 2 ] || usage
case $1 in
    start) [ $# -le 3 ] || usage; start "$2" "${3:-2}" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
