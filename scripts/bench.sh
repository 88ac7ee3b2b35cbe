#!/usr/bin/env bash
# The fixed benchmark set behind docs/benchmarks.md (`make bench`).
#
# Builds bin/herald, then for each scenario starts a fresh server (its own
# temp data dir, its PID known), runs `herald bench`, writes the JSON report
# to out/bench/<scenario>.json (and a plot next to it), and stops the server.
# Finally it prints a markdown summary to stdout. Progress goes to stderr.
# Sized for a 2-core box: 10,000-15,000 sockets, well under 10 minutes.
#
# It kills only the processes it started. Environment:
#   BENCH_PORT   first port to try for the server (default 16001)
#   BENCH_HOLD   idle hold time (default 30s)
#   BENCH_OUT    output directory (default out/bench)
#   BENCH_ONLY   run only these scenarios (space-separated names)
#   BENCH_FLAGS  more `herald bench` flags for every scenario (they win over
#                the fixed ones, e.g. "--publishers 32")
#   BENCH_SERVER the server binary to measure (default bin/herald); the load
#                generator is always the freshly built bin/herald, so two
#                builds of the server compare under the same client
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-out/bench}
HOLD=${BENCH_HOLD:-30s}
PORT=${BENCH_PORT:-16001}
SERVER_BIN=${BENCH_SERVER:-bin/herald}
ONLY=${BENCH_ONLY:-}
CREDS=(--app-id app-id --key app-key --secret app-secret)
SERVER_PID=
TMP=$(mktemp -d -t herald-bench.XXXXXX)

log() { echo "bench.sh: $*" >&2; }

stop_server() {
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
		SERVER_PID=
	fi
}

cleanup() {
	stop_server
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME: a fresh server process with an empty data dir.
start_server() {
	local name=$1 data="$TMP/data-$1"
	while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
	mkdir -p "$data"
	# The dev app, and no NATS client port (its default 4222 allows one server per machine).
	printf 'bus:\n  client_listen: ""\nadmin:\n  listen: "127.0.0.1:0"\n' >"$TMP/herald.yaml"
	"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --data "$data" --config "$TMP/herald.yaml" >"$TMP/server-$name.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 100); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			log "server for $name exited; its log:"; tail -20 "$TMP/server-$name.log" >&2
			SERVER_PID=; return 1
		fi
		port_free "$PORT" || return 0
		sleep 0.1
	done
	log "server for $name did not listen on $PORT"; return 1
}

FILES=()
FAILED=()

# run NAME SCENARIO FLAGS...: one scenario against a fresh server.
run() {
	local name=$1 scenario=$2; shift 2
	if [[ -n $ONLY && " $ONLY " != *" $name "* ]]; then return; fi
	log "== $name: herald bench $scenario $*"
	if ! start_server "$name"; then FAILED+=("$name (server did not start)"); return; fi
	bin/herald bench "$scenario" --url "ws://127.0.0.1:$PORT" "${CREDS[@]}" \
		--server-pid "$SERVER_PID" --timeout 3m --plot "$OUT/$name.png" "$@" ${BENCH_FLAGS:-} >"$OUT/$name.json"
	local rc=$?
	if [[ $rc -ne 0 ]]; then
		FAILED+=("$name (exit $rc)")
		log "$name failed (exit $rc); server log tail:"; tail -20 "$TMP/server-$name.log" >&2
	fi
	if [[ -s $OUT/$name.json ]]; then FILES+=("$OUT/$name.json"); fi
	stop_server
	PORT=$((PORT + 1))
}

log "building bin/herald"
go build -o bin/herald ./cmd/herald || exit 1
mkdir -p "$OUT"
START=$(date +%s)

run connect        connect --conns 10000
run idle-1ch       idle    --conns 15000 --channels 1   --hold "$HOLD"
run idle-100ch     idle    --conns 15000 --channels 100 --hold "$HOLD"
run fanout-1ch     fanout  --conns 10000 --channels 1    --messages 200   --payload 100
run fanout-1000ch  fanout  --conns 10000 --channels 1000 --messages 20000 --payload 100
run storm          storm   --conns 10000 --channels 1
run publish        publish --conns 10000 --channels 1000 --publishers 8 --messages 20000

log "done in $(($(date +%s) - START)) s; reports in $OUT/"
echo "## herald bench ($(date -u +%Y-%m-%d))"
echo
if [[ ${#FILES[@]} -gt 0 ]]; then
	bin/herald bench summary "${FILES[@]}"
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
	echo
	echo "Failed: ${FAILED[*]}"
	exit 1
fi
