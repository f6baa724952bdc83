#!/usr/bin/env bash
# Runs the same workloads, side by side in one run, against purly's `server` example and two
# peers configured as well as purly: the hand-written broadcast server done well
# (examples/baseline.rs) and socketioxide + axum (examples/socketio_peer.rs). Prints each
# result and the ratios; every run counts every loss and is marked failed if it has any.
# purly runs in memory (--memory), as the peers do (the store's costs are measured on their
# own: cargo bench -p purly-sqlite --bench store). purly's per-connection rate limit is off
# (--max-frames-per-sec 0): the peers have none, and the load generator's one publisher per
# model is exactly the client that limit would slow.
# Loopback only; every load is bounded in count (--updates) and in time (--limit).
#
#   bash examples/compare.sh            # ~8 minutes on 2 cores
#   ROUNDS=2 bash examples/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 40000 2>/dev/null || ulimit -n 20000 2>/dev/null || true
ROUNDS="${ROUNDS:-1}"
cargo build --release --quiet -p purly-examples --example server --example baseline \
    --example socketio_peer --example loadgen
bin=target/release/examples
results=$(mktemp)
servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true; rm -f "$results"' EXIT

start() { # name port -> pid of a fresh server
    case "$1" in
        purly) "$bin/server" --memory --max-frames-per-sec 0 --addr "127.0.0.1:$2" >/dev/null 2>&1 & ;;
        baseline) "$bin/baseline" --addr "127.0.0.1:$2" >/dev/null 2>&1 & ;;
        socketioxide) "$bin/socketio_peer" --addr "127.0.0.1:$2" >/dev/null 2>&1 & ;;
    esac
    local pid=$!
    servers+=("$pid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.1; done
    echo "$pid"
}

load() { # name workload pid port loadgen-args...
    local name=$1 workload=$2 pid=$3 port=$4; shift 4
    local url protocol
    case "$name" in
        purly) url="ws://127.0.0.1:$port/$workload{model}/stream"; protocol=purly ;;
        baseline) url="ws://127.0.0.1:$port/$workload{model}"; protocol=raw ;;
        socketioxide) url="ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket&model=$workload{model}"; protocol=socketio ;;
    esac
    "$bin/loadgen" --url "$url" --protocol "$protocol" --pid "$pid" --limit 60 --json "$@" \
        | sed "s/^{/{\"server_name\":\"$name\",\"workload\":\"$workload\",/" >>"$results" \
        || echo "{\"server_name\":\"$name\",\"workload\":\"$workload\",\"failed\":true,\"crashed\":true}" >>"$results"
}

port=8300
for round in $(seq "$ROUNDS"); do
    for name in purly baseline socketioxide; do
        echo "round $round/$ROUNDS: $name" >&2
        port=$((port + 3))
        pid=$(start "$name" "$port")
        load "$name" flood "$pid" "$port" --subscribers 1000 --updates 5000
        load "$name" window "$pid" "$port" --subscribers 1000 --updates 20000 --window 32
        load "$name" rate "$pid" "$port" --subscribers 1000 --updates 300 --rate 50
        # What clients that stop reading cost the others: 1 KB updates (10 MB for each stuck
        # client, more than loopback buffers hold), without and then with 10 stuck clients.
        load "$name" window_1k "$pid" "$port" --subscribers 1000 --updates 5000 --window 32 --size 1000
        load "$name" stuck "$pid" "$port" --subscribers 1000 --updates 5000 --window 32 --size 1000 --stuck 10
        kill "$pid"; wait "$pid" 2>/dev/null || true
        # 1,000 models x 5 subscribers, one publisher each: at 50,000 deliveries/s, then
        # as fast as accepted. Memory is read after both, on this process.
        pid=$(start "$name" "$((port + 1))")
        load "$name" models_rate "$pid" "$((port + 1))" --models 1000 --subscribers 5000 --updates 60 --rate 10000
        load "$name" models_flood "$pid" "$((port + 1))" --models 1000 --subscribers 5000 --updates 300
        # The same with each publisher waiting for its echoes (at most 32 unconfirmed), as apps
        # do: the typical deployment, many small models.
        load "$name" models_window "$pid" "$((port + 1))" --models 1000 --subscribers 5000 --updates 300 --window 32
        kill "$pid"; wait "$pid" 2>/dev/null || true
        # Memory per idle connection, on a fresh process.
        pid=$(start "$name" "$((port + 2))")
        load "$name" idle "$pid" "$((port + 2))" --idle 10000
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
servers = ["purly", "baseline", "socketioxide"]
def values(server, workload, key):
    out = []
    for r in rows:
        if r["server_name"] == server and r["workload"] == workload:
            v = r
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                out.append(v)
    return out
def median(server, workload, key):
    v = values(server, workload, key)
    return statistics.median(v) if v else float("nan")
def show(label, workload, key, unit, better):
    m = {s: median(s, workload, key) for s in servers}
    cells = "  ".join(f"{s} {m[s]:>11,.2f} {unit}" for s in servers)
    ratio = lambda a, b: (a / b if better == "higher" else b / a) if a and b else float("nan")
    print(f"{label:<44} {cells}   purly vs baseline {ratio(m['purly'], m['baseline']):.2f}x, vs socketioxide {ratio(m['purly'], m['socketioxide']):.2f}x ({'higher' if better == 'higher' else 'lower'} is better)")
print()
for workload, title in [("flood", "flood, 1 model x 1000"), ("window", "window 32, 1 model x 1000"),
                        ("rate", "50,000/s, 1 model x 1000"),
                        ("window_1k", "window 32, 1 KB, 1 model x 1000"),
                        ("stuck", "same + 10 stuck clients"),
                        ("models_rate", "50,000/s, 1000 models x 5"),
                        ("models_flood", "flood, 1000 models x 5"),
                        ("models_window", "window 32, 1000 models x 5")]:
    show(f"{title}: deliveries/s", workload, "deliveries_per_second", "/s", "higher")
    show(f"{title}: p50 latency", workload, "latency_us.p50", "us", "lower")
    show(f"{title}: p99 latency", workload, "latency_us.p99", "us", "lower")
    show(f"{title}: server CPU per delivery", workload, "server.cpu_us_per_delivery", "us", "lower")
pace = {s: median(s, "stuck", "deliveries_per_second") / median(s, "window_1k", "deliveries_per_second")
        for s in servers}
print(f"{'10 stuck clients: the others keep this share of their pace':<44} "
      + "  ".join(f"{s} {pace[s]:>11.2f}  " for s in servers))
show("6,000 connections: server CPU to set one up", "models_rate", "server.setup_cpu_us_per_connection", "us", "lower")
show("1000 models x 5 after the runs: server RSS", "models_flood", "server.rss_kib", "KiB", "lower")
show("idle connections (10,000): bytes each", "idle", "bytes_per_connection", "B", "lower")
failed = [(r["server_name"], r["workload"]) for r in rows if r.get("failed")]
print()
print("runs with any loss (owed, gaps, duplicates, dropped or never-synced subscribers, errors):",
      failed if failed else "none")
PY
