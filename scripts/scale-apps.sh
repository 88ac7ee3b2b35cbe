#!/usr/bin/env bash
# The app-scale figures behind docs/benchmarks.md, "Apps at scale".
#
#   scripts/scale-apps.sh [APPS] [STREAMS]     (default 10000 1000)
#
# 1. node/scale_test.go TestScaleApps: one node with APPS registry apps
#    (written straight into the HERALD_APPS bucket), restarted; one app's
#    REST-to-WebSocket latency while the others idle; admin-API creates and
#    the time to a new app's first event; a first NATS login; what APPS
#    eager NATS accounts would cost; STREAMS apps' streams made, and the
#    restart with them on disk.
# 2. The same on a 3-node cluster in one process (TestScaleAppsCluster):
#    seeding through node 1 until node 3 has every app, a new app made
#    through node 1 and usable on node 3, REST on node 1 to a WebSocket on
#    node 3, STREAMS/3 apps' R3 streams.
# 3. A real process: bin/herald serve with apps_source: registry on a data
#    dir holding APPS apps (written by `herald apps create`, 8 at a time),
#    restarted: the time to /readyz and its VmRSS.
set -euo pipefail
cd "$(dirname "$0")/.."
APPS=${1:-10000}
STREAMS=${2:-1000}

if [ -z "${ONLY_PROCESS:-}" ]; then # ONLY_PROCESS=1 runs part 3 alone
	echo "== one node, in process"
	HERALD_SCALE_APPS=$APPS HERALD_SCALE_STREAMS=$STREAMS \
		go test ./node/ -run '^TestScaleApps$' -count=1 -v -timeout 30m | grep -E 'scale_test|^(ok|FAIL|---)'
	echo "== 3-node cluster, in process"
	HERALD_SCALE_APPS=$APPS HERALD_SCALE_STREAMS=$((STREAMS / 3)) \
		go test ./node/ -run '^TestScaleAppsCluster$' -count=1 -v -timeout 30m | grep -E 'scale_test|^(ok|FAIL|---)'
fi

echo "== one node, a real process"
go build -o bin/herald ./cmd/herald
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/herald.yaml" <<EOF
listen: 127.0.0.1:16001
data_dir: $dir/data
apps_source: registry
admin:
  listen: 127.0.0.1:16060
bus:
  client_listen: 127.0.0.1:14222
log:
  level: warn
EOF
admin=http://127.0.0.1:16060
ready() {
	for _ in $(seq 1 600); do
		curl -fs http://127.0.0.1:16001/readyz >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "node not ready" >&2
	exit 1
}
bin/herald serve --config "$dir/herald.yaml" &
pid=$!
ready
start=$(date +%s.%N)
seq -f 's%05.0f' 1 "$APPS" | xargs -P 8 -I{} bin/herald apps create --admin $admin --id {} >/dev/null
echo "$APPS creates through herald apps, 8 at a time: $(echo "$(date +%s.%N) - $start" | bc) s"
grep VmRSS /proc/$pid/status | sed "s/^/with $APPS apps, as created: /"
kill -TERM $pid
wait $pid || true
start=$(date +%s.%N)
bin/herald serve --config "$dir/herald.yaml" &
pid=$!
ready
echo "restart to /readyz with $APPS apps: $(echo "$(date +%s.%N) - $start" | bc) s"
sleep 2
grep VmRSS /proc/$pid/status | sed "s/^/after the restart, idle: /"
bin/herald apps list --admin $admin | tail -1
