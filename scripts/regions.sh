#!/usr/bin/env bash
# Two Herald regions on loopback, one node each, in the foreground
# (`make regions`; docs/regions.md).
#
# Starts bin/herald serve with configs/regions/a.yaml (region a, the home
# region: client port 6001, admin 6060, data in ./data/region-a) and
# configs/regions/b.yaml (region b: 6002, 6061, ./data/region-b), joined by
# NATS gateways (7222, 7223), each line of output prefixed with its
# region's name. Ctrl-C (or SIGTERM) stops both gracefully; a second Ctrl-C
# kills them. A node that exits on its own is reported and the other keeps
# running (stop region a with `kill <pid>` to watch region b answer
# publishes with 503 until a is back: `bin/herald serve --config
# configs/regions/a.yaml` in another terminal). It kills only the
# processes it started.
#
# Environment: HERALD_BIN, the binary (default bin/herald, built by
# `make regions`). Needs bash 4.3 or later (wait -n).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
BIN=${HERALD_BIN:-bin/herald}
NODES=(a b)
PORTS=(6001 6002)

if [[ ! -x $BIN ]]; then
	echo "regions.sh: $BIN not found; run make regions (or make build) first" >&2
	exit 1
fi

say() { echo "[regions] $*" >&2; }

# prefix copies stdin to stdout with "[name] " before each line. It ignores
# INT and TERM so that a node's last log lines (its drain) still get through
# after Ctrl-C, and it ends when the node closes its output.
prefix() {
	trap '' INT TERM
	local line
	while IFS= read -r line || [[ -n $line ]]; do
		printf '[%s] %s\n' "$1" "$line"
	done
}

pids=()    # the nodes
prefixers=()
status=()
stopping=0 # the exit status once asked to stop: 130 (INT) or 143 (TERM)

# shellcheck disable=SC2317 # called from the traps
stop() {
	if ((stopping)); then
		say "killing the nodes"
		for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
		return
	fi
	stopping=$1
	say "stopping the nodes (Ctrl-C again to kill them)"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
}
trap 'stop 130' INT
trap 'stop 143' TERM

for i in "${!NODES[@]}"; do
	name=${NODES[$i]}
	mkdir -p "data/region-$name"
	# The prefixer is this script's child (not the node's), and gets EOF
	# when the node exits: the script closes its copy of the pipe.
	exec {out}> >(prefix "$name")
	prefixers+=("$!")
	"$BIN" serve --config "configs/regions/$name.yaml" >&"$out" 2>&1 &
	pids+=("$!")
	status+=("")
	exec {out}>&-
	say "region $name started (pid $!): ws://127.0.0.1:${PORTS[$i]}/app/app-key, config configs/regions/$name.yaml"
done
say "Ctrl-C stops both"

# Wait until every node has exited, reporting each exit.
while :; do
	wait -n 2>/dev/null # a node exited, or a signal came
	running=0
	for i in "${!pids[@]}"; do
		[[ -n ${status[$i]} ]] && continue
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			running=$((running + 1))
			continue
		fi
		wait "${pids[$i]}" 2>/dev/null
		status[i]=$?
		say "region ${NODES[$i]} exited with status ${status[$i]}"
	done
	((running == 0)) && break
done
# Let the prefixers print the nodes' last lines (at most 2 s).
for _ in $(seq 20); do
	alive=0
	for pid in "${prefixers[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
	((alive)) || break
	sleep 0.1
done

if ((stopping)); then
	exit "$stopping"
fi
for s in "${status[@]}"; do
	if [[ $s != 0 ]]; then exit 1; fi
done
exit 0
