#!/usr/bin/env bash
# Stop the daemons scripts/slurm_up.sh started, newest first, by the pids it recorded; a pid is signalled only
# while /proc/<pid>/comm still names its daemon. Nothing else is touched. State (spool, MariaDB) is kept.
set -uo pipefail

STATE=${VDT_SLURM_STATE:-/var/lib/vdt-slurm}
PIDS=$STATE/pids
[ -s "$PIDS" ] || { echo "slurm_down: nothing recorded in $PIDS"; exit 0; }

alive() { [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ]; }

tac "$PIDS" | while read -r name pid; do
    if ! alive "$name" "$pid"; then echo "slurm_down: $name ($pid) not running"; continue; fi
    kill -TERM "$pid"
    for i in $(seq 100); do alive "$name" "$pid" || break; sleep 0.1; done
    if alive "$name" "$pid"; then echo "slurm_down: $name ($pid) ignored TERM; KILL"; kill -KILL "$pid"; fi
    echo "slurm_down: stopped $name ($pid)"
done
: > "$PIDS"
