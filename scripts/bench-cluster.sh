#!/usr/bin/env bash
# The 3-node cluster benchmarks behind docs/benchmarks.md, "Cluster (3 nodes
# on one 2-core box)".
#
# Builds bin/herald, writes three loopback cluster configs into a temp dir
# (free ports outside the ephemeral range 32768-60999, memberlist preset
# lan, no NATS client port), and for each scenario starts a fresh cluster
# (the three nodes at once: JetStream needs a majority before any is
# ready), waits for /readyz on all three, runs `herald bench` with the
# three nodes' URLs (subscriber i on node i % 3, REST publishes to node 1,
# server CPU summed over the three PIDs), and stops the cluster:
#
#   fanout-1ch     30,000 subscribers, 1 channel, 200 events of 100 bytes
#   fanout-1000ch  30,000 subscribers, 1,000 channels, 20,000 events
#   fanout-1000ch-batch10  the same, 10 events per REST request
#                  (batch_events): the publisher is no longer the bound
#   latency        10,000 subscribers (3,334 per node), 1 channel, 10 events
#                  of 100 bytes a second (100k deliveries/s offered): p50/p99
#   ch100          10,000 subscribers over 100 channels, 100 events/s: p50/p99
#   publish        the publish-bound scenario: 10,000 subscribers over
#                  1,000 channels, 8 concurrent REST publishers to node 1,
#                  20,000 events: events_per_s and deliveries_per_s
#   publish-spread the same with publisher i posting to node i % 3 (a load
#                  balancer in front of the cluster)
#   presence       3 presence subscribers (one per node): 20 joins on node 1
#                  timed until member_added reaches nodes 2 and 3; then
#                  kill -9 of node 3 timed until member_removed reaches
#                  nodes 1 and 2 (one sample)
#
# The 30,000 client sockets are held by 2 bench worker processes (15,000
# each, under the 20,000 open-files limit) bound to source addresses
# 127.0.0.2 and 127.0.0.3; each node holds 10,000. JSON reports go to
# out/bench-cluster/<scenario>.json; a markdown summary goes to stdout,
# progress to stderr. About 2 minutes on the 2-core box.
#
# It kills only the processes it started. Environment:
#   BENCH_PORT   first port to try (default 24001; keep it and the 8 ports
#                after it below 32768)
#   BENCH_OUT    output directory (default out/bench-cluster)
#   BENCH_ONLY   run only these scenarios (space-separated names)
#   BENCH_FLAGS  more `herald bench` flags for every scenario (they win over
#                the fixed ones, e.g. "--publishers 32")
#   BENCH_SERVER the node binary (default bin/herald); the load generator is
#                always the freshly built bin/herald
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT=${BENCH_OUT:-out/bench-cluster}
PORT=${BENCH_PORT:-24001}
ONLY=${BENCH_ONLY:-}
SERVER_BIN=${BENCH_SERVER:-bin/herald}
CREDS=(--app-id app-id --key app-key --secret app-secret)
TMP=$(mktemp -d -t herald-bench-cluster.XXXXXX)
PIDS=()    # the running nodes, node1..node3
CLIENT=()  # their client ports
URLS=      # ws://127.0.0.1:P1,ws://...:P2,ws://...:P3
RESTS=     # http://127.0.0.1:P1,... (@REST_ALL@ in a scenario's flags)

log() { echo "bench-cluster.sh: $*" >&2; }

# stop_cluster: SIGTERM to every node at once, SIGKILL after 15 s.
stop_cluster() {
	local pid
	((${#PIDS[@]})) || return 0
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	for _ in $(seq 150); do
		local alive=0
		for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${PIDS[@]}"; do
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	PIDS=()
}

cleanup() {
	stop_cluster
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# port_free P: nothing listens on P, TCP or UDP, on any address.
port_free() { [[ -z $(ss -Htuan "sport = :$1" 2>/dev/null) ]]; }

# next_port: sets P to the next free port from PORT on, below the
# ephemeral range (not in a subshell: PORT moves on).
next_port() {
	while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
	if ((PORT >= 32768)); then
		log "no free port below 32768"; exit 1
	fi
	P=$PORT
	PORT=$((PORT + 1))
}

# start_cluster NAME: three fresh nodes (empty data dirs), ready on /readyz.
start_cluster() {
	local name=$1 i
	local -a ml routes
	CLIENT=()
	for i in 1 2 3; do
		next_port; CLIENT+=("$P")
		next_port; ml+=("$P")
		next_port; routes+=("$P")
	done
	local seeds="\"127.0.0.1:${ml[0]}\", \"127.0.0.1:${ml[1]}\", \"127.0.0.1:${ml[2]}\""
	local rts="\"127.0.0.1:${routes[0]}\", \"127.0.0.1:${routes[1]}\", \"127.0.0.1:${routes[2]}\""
	URLS=
	RESTS=
	for i in 0 1 2; do
		local n=node$((i + 1)) dir="$TMP/$name"
		mkdir -p "$dir/data-$n"
		cat >"$dir/$n.yaml" <<EOF
listen: "127.0.0.1:${CLIENT[$i]}"
data_dir: "$dir/data-$n"
bus:
  client_listen: ""
admin:
  listen: "127.0.0.1:0"
cluster:
  name: herald-bench
  node_name: $n
  bind: "127.0.0.1:${ml[$i]}"
  seeds: [$seeds]
  routes: [$rts]
  route_listen: "127.0.0.1:${routes[$i]}"
  preset: lan
apps:
  - id: app-id
    key: app-key
    secret: app-secret
EOF
		URLS+="${URLS:+,}ws://127.0.0.1:${CLIENT[$i]}"
		RESTS+="${RESTS:+,}http://127.0.0.1:${CLIENT[$i]}"
	done
	for i in 1 2 3; do
		"$SERVER_BIN" serve --config "$TMP/$name/node$i.yaml" >"$TMP/$name/node$i.log" 2>&1 &
		PIDS+=("$!")
	done
	log "$name: nodes ${PIDS[*]} on client ports ${CLIENT[*]}"
	local deadline=$((SECONDS + 90))
	for i in 0 1 2; do
		until curl -sf -o /dev/null "http://127.0.0.1:${CLIENT[$i]}/readyz"; do
			if ! kill -0 "${PIDS[$i]}" 2>/dev/null || ((SECONDS > deadline)); then
				log "$name: node$((i + 1)) not ready; its log:"; tail -20 "$TMP/$name/node$((i + 1)).log" >&2
				return 1
			fi
			sleep 0.2
		done
	done
	log "$name: cluster ready"
}

FILES=()
FAILED=()

# run NAME SCENARIO FLAGS...: one scenario against a fresh cluster.
run() {
	local name=$1 scenario=$2; shift 2
	if [[ -n $ONLY && " $ONLY " != *" $name "* ]]; then return; fi
	log "== $name: herald bench $scenario $*"
	if ! start_cluster "$name"; then
		FAILED+=("$name (cluster did not start)"); stop_cluster; return
	fi
	local pids
	pids=$(IFS=,; echo "${PIDS[*]}")
	local extra=()
	if [[ $scenario == presence ]]; then extra=(--kill-pid "${PIDS[2]}"); fi
	bin/herald bench "$scenario" --url "$URLS" --rest-url "http://127.0.0.1:${CLIENT[0]}" "${CREDS[@]}" \
		--server-pid "$pids" --timeout 3m --plot "$OUT/$name.png" "${extra[@]}" "${@//@REST_ALL@/$RESTS}" ${BENCH_FLAGS:-} >"$OUT/$name.json"
	local rc=$?
	if [[ $rc -ne 0 ]]; then
		FAILED+=("$name (exit $rc)")
		log "$name failed (exit $rc); node logs' tails:"
		for i in 1 2 3; do tail -5 "$TMP/$name/node$i.log" >&2; done
	fi
	if [[ -s $OUT/$name.json ]]; then FILES+=("$OUT/$name.json"); fi
	stop_cluster
}

log "building bin/herald"
go build -o bin/herald ./cmd/herald || exit 1
mkdir -p "$OUT"
START=$(date +%s)

run fanout-1ch    fanout   --conns 30000 --channels 1    --messages 200   --payload 100
run fanout-1000ch fanout   --conns 30000 --channels 1000 --messages 20000 --payload 100
run fanout-1000ch-batch10 fanout --conns 30000 --channels 1000 --messages 20000 --payload 100 --batch 10
run latency       fanout   --conns 10000 --channels 1    --rate 10  --messages 100  --payload 100
run ch100         fanout   --conns 10000 --channels 100  --rate 100 --messages 1000 --payload 100
run publish       publish  --conns 10000 --channels 1000 --publishers 8 --messages 20000
run publish-spread publish --conns 10000 --channels 1000 --publishers 8 --messages 20000 --rest-url @REST_ALL@
run presence      presence --conns 3 --joins 20

log "done in $(($(date +%s) - START)) s; reports in $OUT/"
echo "## herald bench, 3-node cluster ($(date -u +%Y-%m-%d))"
echo
if [[ ${#FILES[@]} -gt 0 ]]; then
	bin/herald bench summary "${FILES[@]}"
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
	echo
	echo "Failed: ${FAILED[*]}"
	exit 1
fi
