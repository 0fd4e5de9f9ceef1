#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on localhost (root, Debian 12, no systemd):
# munged, mariadbd + slurmdbd (accounting: submitit needs sacct to see dead jobs), slurmctld, slurmd.
# Each daemon's pid goes to $VDT_SLURM_STATE/pids ("name pid" lines, oldest first); scripts/slurm_down.sh stops
# exactly those. Reuses a running cluster it started earlier. Settings: https://slurm.schedmd.com/slurm.conf.html and
# https://slurm.schedmd.com/accounting.html (docs/development.md: how the tests use it).
set -euo pipefail

STATE=${VDT_SLURM_STATE:-/var/lib/vdt-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
PIDS=$STATE/pids
t0=$(date +%s%N)
log() { local ds=$(( ($(date +%s%N) - t0) / 100000000 )); echo "[slurm_up $((ds / 10)).$((ds % 10))s] $*"; }
die() { echo "slurm_up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
mkdir -p "$STATE"

alive() {  # alive NAME PID: the pid runs and /proc names the daemon
    [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm")" = "$1" ]
}
node_ready() { sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

if [ -s "$PIDS" ]; then
    all=1
    while read -r name pid; do alive "$name" "$pid" || all=0; done < "$PIDS"
    if [ $all = 1 ] && command -v sinfo >/dev/null && node_ready; then
        log "cluster already up (pids in $PIDS)"; sinfo; exit 0
    fi
    log "stale state in $PIDS: taking down what is left"
    "$HERE/slurm_down.sh"
fi
: > "$PIDS"

record() {  # record NAME PIDFILE: wait for the pid file (slurm writes it a moment after forking), store the pid
    local i pid
    for i in $(seq 100); do
        if [ -s "$2" ]; then pid=$(cat "$2"); alive "$1" "$pid" && { echo "$1 $pid" >> "$PIDS"; return 0; }; fi
        sleep 0.1
    done
    die "$1 did not start (no live pid in $2); see /var/log/slurm/ and $STATE/"
}

# 1. Packages.
need=()
for p in slurm-wlm munge slurmdbd mariadb-server; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >"$STATE/apt.log" 2>&1 \
        || { tail -20 "$STATE/apt.log"; die "apt-get install failed"; }
fi

# 2. munge.
[ -s /etc/munge/munge.key ] || mungekey --create
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge /run/munge
rm -f /run/munge/munged.pid
runuser -u munge -- /usr/sbin/munged
record munged /run/munge/munged.pid
munge -n | unmunge >/dev/null || die "munge round trip failed"
log "munged up"

# 3. slurm.conf: the node line from slurmd -C, RealMemory cut 5 %, address 127.0.0.1.
host=$(hostname -s)
node=$(slurmd -C | head -1 | sed -E 's/ UpTime=.*//')
mem=$(echo "$node" | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
node=$(echo "$node" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem * 95 / 100))/")" NodeAddr=127.0.0.1 State=UNKNOWN"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
sed -e "s/@HOST@/$host/" -e "s|@NODE@|$node|" "$HERE/slurm/slurm.conf.in" > /etc/slurm/slurm.conf

# 4. Accounting: MariaDB, then slurmdbd.
install -d -o mysql -g mysql /run/mysqld
rm -f /run/mysqld/mysqld.pid
setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
    </dev/null >"$STATE/mariadbd.log" 2>&1 &
for i in $(seq 150); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
mariadb-admin ping >/dev/null 2>&1 || { tail "$STATE/mariadbd.log"; die "mariadbd did not answer"; }
record mariadbd /run/mysqld/mysqld.pid
[ -s "$STATE/dbpass" ] || { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$STATE/dbpass"; chmod 600 "$STATE/dbpass"; }
pass=$(cat "$STATE/dbpass")
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
sed "s/@PASS@/$pass/" "$HERE/slurm/slurmdbd.conf.in" > /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
rm -f /run/slurmdbd.pid
/usr/sbin/slurmdbd
record slurmdbd /run/slurmdbd.pid
for i in $(seq 50); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
log "mariadbd + slurmdbd up"

# 5. slurmctld, slurmd.
rm -f /run/slurmctld.pid /run/slurmd.pid
/usr/sbin/slurmctld
record slurmctld /run/slurmctld.pid
/usr/sbin/slurmd
record slurmd /run/slurmd.pid

# 6. Wait for an idle node.
for i in $(seq 60); do node_ready && break; sleep 0.5; done
if ! node_ready; then
    sinfo -N -l || true
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log || true
    die "the node did not become idle"
fi
log "cluster up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
