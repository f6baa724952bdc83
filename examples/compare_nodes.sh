#!/usr/bin/env bash
# Several nodes, side by side: 3 purly nodes and 3 socketioxide nodes (examples/socketio_peer.rs
# on socketioxide-redis, its own Redis adapter), first on one redis-server, then on a Redis
# Cluster of 3 masters, alternating within each round. Workloads: 1,000 models x 5 subscribers
# with each publisher waiting for its echoes (at most 32 unconfirmed), the same at 50,000
# deliveries/s (latency), and one model x 1,000 subscribers (window 32). Connections are spread
# over the 3 nodes. All processes share this machine's cores: the figures compare the two
# servers' cost on the same box, not a cluster's capacity. Rate limits are off for purly
# (--max-frames-per-sec 0; the peer has none). Loopback only; every load is bounded in count
# and time. Needs redis-server and redis-cli on the PATH.
#
#   bash examples/compare_nodes.sh          # ~6 minutes per round on 2 cores (ROUNDS=2)
#   STORES=cluster WORKLOADS=models_rate ROUNDS=4 bash examples/compare_nodes.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || true
ROUNDS="${ROUNDS:-2}"
STORES="${STORES:-redis cluster}"
WORKLOADS="${WORKLOADS:-models_rate models_window one_window}"
cargo build --release --quiet -p purly-examples --example server --example loadgen --example socketio_peer
bin=target/release/examples
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

redis() { # port [more redis-server arguments]
    mkdir -p "$tmp/$1"
    redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
        --dir "$tmp/$1" "${@:2}" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$1"
}
redis 8290
for port in 8291 8292 8293; do
    redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf
done
redis-cli --cluster create 127.0.0.1:8291 127.0.0.1:8292 127.0.0.1:8293 --cluster-replicas 0 \
    --cluster-yes >/dev/null
for port in 8291 8292 8293; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done

nodes() { # server store -> starts 3 nodes on 8281-8283
    local seeds=redis://127.0.0.1:8291,redis://127.0.0.1:8292,redis://127.0.0.1:8293 command
    node_pids=()
    for port in 8281 8282 8283; do
        case "$1/$2" in
            purly/redis) command=("$bin/server" --redis redis://127.0.0.1:8290 --max-frames-per-sec 0) ;;
            purly/cluster) command=("$bin/server" --redis-cluster "$seeds" --max-frames-per-sec 0) ;;
            socketioxide/redis) command=("$bin/socketio_peer" --redis redis://127.0.0.1:8290) ;;
            socketioxide/cluster) command=("$bin/socketio_peer" --redis-cluster "$seeds") ;;
        esac
        "${command[@]}" --addr "127.0.0.1:$port" >/dev/null 2>&1 &
        node_pids+=($!); pids+=($!); wait_port "$port"
    done
}

load() { # server store workload loadgen-args...
    local urls="" protocol
    for port in 8281 8282 8283; do
        case "$1" in
            purly) urls+="ws://127.0.0.1:$port/$3-$round-$2{model}/stream,"; protocol=purly ;;
            socketioxide) urls+="ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket&model=$3-$round-$2{model},"; protocol=socketio ;;
        esac
    done
    "$bin/loadgen" --url "${urls%,}" --protocol "$protocol" --limit 60 --json "${@:4}" \
        | sed "s/^{/{\"server_name\":\"$1\",\"store\":\"$2\",\"workload\":\"$3\",/" >>"$tmp/results" \
        || echo "{\"server_name\":\"$1\",\"store\":\"$2\",\"workload\":\"$3\",\"failed\":true}" >>"$tmp/results"
}

for round in $(seq "$ROUNDS"); do
    for store in $STORES; do
        for server in purly socketioxide; do
            echo "round $round/$ROUNDS: $server on $store" >&2
            nodes "$server" "$store"
            # Latency first, on fresh nodes; then throughput.
            for workload in $WORKLOADS; do
                case "$workload" in
                    models_rate) load "$server" "$store" models_rate --models 1000 --subscribers 5000 --updates 60 --rate 10000 ;;
                    models_window) load "$server" "$store" models_window --models 1000 --subscribers 5000 --updates 300 --window 32 ;;
                    one_window) load "$server" "$store" one_window --subscribers 1000 --updates 20000 --window 32 ;;
                esac
            done
            kill "${node_pids[@]}"; wait "${node_pids[@]}" 2>/dev/null || true
        done
    done
done
cp "$tmp/results" "${RESULTS:-/dev/null}" 2>/dev/null || true

python3 - "$tmp/results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for workload, key, label in [("models_window", "deliveries_per_second", "deliveries/s"),
                             ("models_rate", "latency_us.p99", "p99 us at 50,000 deliveries/s"),
                             ("one_window", "deliveries_per_second", "deliveries/s")]:
    for store in ("redis", "cluster"):
        for server in ("purly", "socketioxide"):
            picked = [r for r in rows if (r["server_name"], r["store"], r["workload"]) == (server, store, workload)]
            values = []
            for r in picked:
                v = r
                for part in key.split("."):
                    v = v[part]
                values.append(v)
            lost = sum(r.get("lost", 0) for r in picked)
            reordered = sum(r.get("reordered", 0) for r in picked)
            failed = sum(1 for r in picked if r.get("failed"))
            median = f"{statistics.median(values):>12,.0f}" if values else "           -"
            print(f"{workload:<14} {store:<8} {server:<13} {label:<30} median {median}  runs {[round(v) for v in values]}  lost {lost} reordered {reordered} failed runs {failed}")
PY
