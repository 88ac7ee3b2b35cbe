#!/usr/bin/env bash
# Alternating idle-memory runs of two server builds under one load generator:
#   bash scripts/idle-abab.sh OLD_BINARY [ROUNDS]
# Each round runs `herald bench idle --conns 15000 --channels 1 --hold 20s`
# against a fresh OLD_BINARY server, then a fresh bin/herald server, and
# prints each run's RSS per connection. SERVER_GOGC sets the servers' GOGC
# (e.g. off, to count everything a connection allocates). It starts and
# stops only its own servers, by PID; every run is bounded by --timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: idle-abab.sh OLD_BINARY [ROUNDS]}
ROUNDS=${2:-3}
go build -o bin/herald ./cmd/herald || exit 1
port=18101
for i in $(seq "$ROUNDS"); do
	for which in before after; do
		bin=$OLD
		[[ $which == after ]] && bin=bin/herald
		d=$(mktemp -d -t herald-abab.XXXXXX)
		printf 'bus:\n  client_listen: ""\nadmin:\n  listen: "127.0.0.1:0"\n' >"$d/h.yaml"
		GOGC=${SERVER_GOGC:-100} "$bin" serve --listen "127.0.0.1:$port" --data "$d/data" --config "$d/h.yaml" >"$d/log" 2>&1 &
		pid=$!
		sleep 1.5
		bin/herald bench idle --url "ws://127.0.0.1:$port" --app-id app-id --key app-key --secret app-secret \
			--server-pid "$pid" --timeout 3m --conns 15000 --channels 1 --hold 20s 2>/dev/null >"$d/out.json"
		echo "$which round $i: $(grep -o '"rss_per_conn_bytes": [0-9]*\|"rss_before_kib": [0-9]*\|"rss_after_kib": [0-9]*' "$d/out.json" | tr '\n' ' ')"
		kill "$pid"
		wait "$pid" 2>/dev/null
		rm -rf "$d"
		port=$((port + 1))
	done
done
