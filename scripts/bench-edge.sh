#!/usr/bin/env bash
# The edge figures of issue 14, two server builds back to back under one
# load generator (bin/herald):
#   bash scripts/bench-edge.sh OLD_BINARY [ROUNDS] [SCENARIOS]
# SCENARIOS (default "connect idle latency"), each against a fresh server:
#   connect: herald bench connect --conns 5000 --inflight 100 --workers 1
#   idle:    herald bench idle --conns 10000 --channels 100 --hold 20s
#   latency: herald bench fanout --conns 10000 --channels 1 --rate 5
#            --messages 100 (50k deliveries/s offered), p50/p99
#   max:     herald bench fanout --conns 10000 --channels 1 --messages 200
#            (as fast as REST takes them), deliveries/s
#   ch100:   herald bench fanout --conns 10000 --channels 100 --rate 100
#            --messages 1000, p50/p99
# Each round runs OLD_BINARY then bin/herald; JSON goes to $BENCH_OUT
# (default out/bench-edge). It starts and stops only its own servers, by
# PID; every run is bounded by --timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench-edge.sh OLD_BINARY [ROUNDS] [SCENARIOS]}
ROUNDS=${2:-1}
SCEN=${3:-connect idle latency}
OUT=${BENCH_OUT:-out/bench-edge}
mkdir -p "$OUT"
go build -o bin/herald ./cmd/herald || exit 1
port=${BENCH_PORT:-18301}
CREDS=(--app-id app-id --key app-key --secret app-secret)
for i in $(seq "$ROUNDS"); do
	for s in $SCEN; do
		for which in before after; do
			bin=$OLD
			[[ $which == after ]] && bin=bin/herald
			d=$(mktemp -d -t herald-edge.XXXXXX)
			printf 'bus:\n  client_listen: ""\nadmin:\n  listen: "127.0.0.1:0"\n' >"$d/h.yaml"
			"$bin" serve --listen "127.0.0.1:$port" --data "$d/data" --config "$d/h.yaml" >"$d/log" 2>&1 &
			pid=$!
			sleep 1.5
			case $s in
			connect) args=(connect --conns 5000 --inflight 100 --workers 1) ;;
			idle) args=(idle --conns 10000 --channels 100 --hold 20s) ;;
			latency) args=(fanout --conns 10000 --channels 1 --rate 5 --messages 100 --payload 100) ;;
			max) args=(fanout --conns 10000 --channels 1 --messages 200 --payload 100) ;;
			ch100) args=(fanout --conns 10000 --channels 100 --rate 100 --messages 1000 --payload 100) ;;
			esac
			f="$OUT/$s-$which-$i.json"
			bin/herald bench "${args[@]}" --url "ws://127.0.0.1:$port" "${CREDS[@]}" \
				--server-pid "$pid" --timeout 3m 2>/dev/null >"$f"
			load=$(cut -d' ' -f1 /proc/loadavg)
			case $s in
			connect) sum=$(jq -r '"connects_per_s \(.results.connects_per_s|floor) inflight \(.params.inflight) p50 \(.results.time_to_established_ms.p50) p99 \(.results.time_to_established_ms.p99) failed \(.results.failed)"' "$f") ;;
			idle) sum=$(jq -r '"rss_per_conn_bytes \(.results.rss_per_conn_bytes) rss \(.results.rss_before_kib)->\(.results.rss_after_kib) KiB drops \(.results.drops)"' "$f") ;;
			latency | ch100) sum=$(jq -r '"p50 \(.results.latency_ms.p50) p99 \(.results.latency_ms.p99) delivered \(.results.delivered)/\(.results.expected) lost \(.results.lost) dup \(.results.duplicates)"' "$f") ;;
			max) sum=$(jq -r '"deliveries_per_s \(.results.deliveries_per_s|floor) delivered \(.results.delivered)/\(.results.expected) lost \(.results.lost) dup \(.results.duplicates) p50 \(.results.latency_ms.p50) p99 \(.results.latency_ms.p99)"' "$f") ;;
			esac
			echo "$s $which round $i (load $load): $sum"
			kill "$pid"
			wait "$pid" 2>/dev/null
			rm -rf "$d"
			port=$((port + 1))
		done
	done
done
