#!/usr/bin/env bash
# 1,000 subscribers of one model spread over 3 purly nodes on one Redis, against the same load
# on 1 in-memory node, alternating. All processes (Redis, the nodes, the load generator) share
# this machine's cores: the 3-node figures measure the cluster's overhead, not its capacity.
# purly's per-connection rate limit is off (--max-frames-per-sec 0): the baseline has none, and
# the load generator's one publisher per model is exactly the client that limit would slow.
# Loopback only; every load is bounded in count and time. Needs redis-server on the PATH.
#
#   bash examples/compare_nodes.sh          # ~2 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || true
ROUNDS="${ROUNDS:-2}"
cargo build --release --quiet -p purly-examples --example server --example loadgen
bin=target/release/examples
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

redis-server --port 8290 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
    --dir "$tmp" >/dev/null 2>&1 &
pids+=($!)
wait_port 8290

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    # One in-memory node.
    "$bin/server" --memory --max-frames-per-sec 0 --addr 127.0.0.1:8280 >/dev/null 2>&1 &
    single=$!; pids+=("$single"); wait_port 8280
    for workload in "saturated --updates 5000" "rate50k --updates 300 --rate 50"; do
        set -- $workload
        "$bin/loadgen" --url "ws://127.0.0.1:8280/$1-$round/stream" --subscribers 1000 \
            --publishers 1 "${@:2}" --limit 60 --pid "$single" --json \
            | sed "s/^{/{\"setup\":\"1 memory node\",\"workload\":\"$1\",/" >>"$tmp/results"
    done
    kill "$single"; wait "$single" 2>/dev/null || true
    # Three nodes on Redis.
    nodes=()
    for port in 8281 8282 8283; do
        "$bin/server" --redis redis://127.0.0.1:8290 --max-frames-per-sec 0 --addr "127.0.0.1:$port" >/dev/null 2>&1 &
        nodes+=($!); pids+=($!); wait_port "$port"
    done
    for workload in "saturated --updates 5000" "rate50k --updates 300 --rate 50"; do
        set -- $workload
        urls="ws://127.0.0.1:8281/$1-$round/stream,ws://127.0.0.1:8282/$1-$round/stream,ws://127.0.0.1:8283/$1-$round/stream"
        "$bin/loadgen" --url "$urls" --subscribers 1000 --publishers 1 "${@:2}" --limit 60 --json \
            | sed "s/^{/{\"setup\":\"3 nodes on Redis\",\"workload\":\"$1\",/" >>"$tmp/results"
    done
    kill "${nodes[@]}"; wait "${nodes[@]}" 2>/dev/null || true
done

python3 - "$tmp/results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for workload, key, label in [("saturated", "deliveries_per_second", "deliveries/s"),
                             ("rate50k", "latency_us.p99", "p99 us at 50,000 deliveries/s")]:
    for setup in ("1 memory node", "3 nodes on Redis"):
        values = []
        for r in rows:
            if r["setup"] == setup and r["workload"] == workload:
                v = r
                for part in key.split("."):
                    v = v[part]
                values.append(v)
        lost = sum(r["lost"] + r.get("reordered", 0) for r in rows if r["setup"] == setup and r["workload"] == workload)
        print(f"{workload:<10} {setup:<18} {label:<32} median {statistics.median(values):>12,.0f}  runs {values}  lost+reordered {lost}")
PY
