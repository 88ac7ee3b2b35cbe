#!/usr/bin/env bash
# The debug console's cost on fan-out (docs/benchmarks.md, "Debug console").
#
# For each round, three fresh servers in turn, the same `herald bench
# fanout` against each (REST publishes, 2,000 subscribers over 100
# channels, 20,000 events of 100 bytes):
#   none  no console or tap attached
#   all   `herald tap --app app-id --json` attached (every event of the app)
#   idle  `herald tap --app app-id --channel idle- --json`: attached,
#         filtered to a channel nothing publishes on
# The tap prints to /dev/null; it runs on the same box, like the bench
# client. After each attached run the node's tap figures (published,
# sampled out, dropped) are read from the console's stats endpoint.
#
# It kills only the processes it started. Environment:
#   BENCH_PORT    first port to try for the server (default 16301)
#   BENCH_OUT     output directory (default out/bench-console)
#   BENCH_ROUNDS  rounds of the three (default 2)
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-out/bench-console}
PORT=${BENCH_PORT:-16301}
ROUNDS=${BENCH_ROUNDS:-2}
CREDS=(--app-id app-id --key app-key --secret app-secret)
SERVER_PID=
TAP_PID=
TMP=$(mktemp -d -t herald-bench-console.XXXXXX)

log() { echo "bench-console.sh: $*" >&2; }

stop_pid() {
	local pid=$1
	[[ -n $pid ]] || return 0
	kill "$pid" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

cleanup() {
	stop_pid "$TAP_PID"
	stop_pid "$SERVER_PID"
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# next_port VAR: the next free port into VAR (not in a subshell: PORT moves on).
next_port() {
	while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
	printf -v "$1" '%s' "$PORT"
	PORT=$((PORT + 1))
}

# start_server NAME: a fresh server with an admin listener on ADMIN_PORT.
start_server() {
	local name=$1 data="$TMP/data-$1"
	next_port CLIENT_PORT
	next_port ADMIN_PORT
	mkdir -p "$data"
	printf 'bus:\n  client_listen: ""\nadmin:\n  listen: "127.0.0.1:%s"\n' "$ADMIN_PORT" >"$TMP/herald.yaml"
	bin/herald serve --listen "127.0.0.1:$CLIENT_PORT" --data "$data" --config "$TMP/herald.yaml" >"$TMP/server-$name.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 100); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			log "server for $name exited"; tail -20 "$TMP/server-$name.log" >&2; SERVER_PID=; return 1
		fi
		port_free "$ADMIN_PORT" || return 0
		sleep 0.1
	done
	return 1
}

FILES=()
run() {
	local name=$1 mode=$2
	log "== $name ($mode)"
	start_server "$name" || exit 1
	case $mode in
	all) bin/herald tap --admin "http://127.0.0.1:$ADMIN_PORT" --app app-id --json >/dev/null 2>"$TMP/tap-$name.log" & TAP_PID=$! ;;
	idle) bin/herald tap --admin "http://127.0.0.1:$ADMIN_PORT" --app app-id --channel idle- --json >/dev/null 2>"$TMP/tap-$name.log" & TAP_PID=$! ;;
	esac
	sleep 1 # the tap's watch reaches the node in one round trip
	bin/herald bench fanout --url "ws://127.0.0.1:$CLIENT_PORT" "${CREDS[@]}" --server-pid "$SERVER_PID" --timeout 3m \
		--conns 2000 --channels 100 --messages 20000 --payload 100 --publishers 16 >"$OUT/$name.json"
	if [[ -n $TAP_PID ]]; then
		curl -s "http://127.0.0.1:$ADMIN_PORT/console/api/stats?app=app-id" | tr -d ' \n' | grep -o '"tap":{[^}]*}' | sed "s/^/$name: /" >&2
		stop_pid "$TAP_PID"; TAP_PID=
	fi
	stop_pid "$SERVER_PID"; SERVER_PID=
	FILES+=("$OUT/$name.json")
}

log "building bin/herald"
go build -o bin/herald ./cmd/herald || exit 1
mkdir -p "$OUT"
for r in $(seq "$ROUNDS"); do
	run "none-$r" none
	run "all-$r" all
	run "idle-$r" idle
done
bin/herald bench summary "${FILES[@]}"
