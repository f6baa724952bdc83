#!/usr/bin/env bash
# Runs the same workloads against purly's `server` example and the hand-written `baseline`
# (examples/baseline.rs), alternating purly / baseline, and prints each result and the ratios.
# purly runs in memory (--memory), as the baseline does: the store costs are measured on
# their own (cargo bench -p purly-sqlite --bench store).
# purly's per-connection rate limit is off (--max-frames-per-sec 0): the baseline has none, and
# the load generator's one publisher per model is exactly the client that limit would slow.
# Loopback only; every load is bounded in count (--updates) and in time (--limit).
#
#   bash examples/compare.sh            # ~2 minutes on 2 cores
#   ROUNDS=3 bash examples/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || true
ROUNDS="${ROUNDS:-2}"
cargo build --release --quiet -p purly-examples --example server --example baseline --example loadgen
bin=target/release/examples
results=$(mktemp)
servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true; rm -f "$results"' EXIT

start() { # name port -> pid of a fresh server
    if [ "$1" = purly ]; then "$bin/server" --memory --max-frames-per-sec 0 --addr "127.0.0.1:$2" >/dev/null 2>&1 &
    else "$bin/baseline" --addr "127.0.0.1:$2" >/dev/null 2>&1 &
    fi
    local pid=$!
    servers+=("$pid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.1; done
    echo "$pid"
}

load() { # name workload pid port loadgen-args...
    local name=$1 workload=$2 pid=$3 port=$4; shift 4
    local url protocol
    if [ "$name" = purly ]; then url="ws://127.0.0.1:$port/$workload/stream"; protocol=purly.stream
    else url="ws://127.0.0.1:$port/$workload"; protocol=""
    fi
    "$bin/loadgen" --url "$url" --subprotocol "$protocol" --pid "$pid" --limit 60 --json "$@" \
        | sed "s/^{/{\"server_name\":\"$name\",\"workload\":\"$workload\",/" >>"$results"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for name in purly baseline; do
        port=$((8100 + round * 10 + (${#name} % 2)))
        pid=$(start "$name" "$port")
        load "$name" saturated "$pid" "$port" --subscribers 1000 --publishers 1 --updates 5000
        load "$name" rate50k "$pid" "$port" --subscribers 1000 --publishers 1 --updates 300 --rate 50
        load "$name" stuck0 "$pid" "$port" --subscribers 200 --updates 1000 --rate 200 --size 20000
        load "$name" stuck1 "$pid" "$port" --subscribers 200 --updates 1000 --rate 200 --size 20000 --stuck 1
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
def values(server, workload, key):
    out = []
    for r in rows:
        if r["server_name"] == server and r["workload"] == workload:
            v = r
            for part in key.split("."):
                v = v[part]
            out.append(v)
    return out
def show(label, workload, key, unit, better):
    p, b = values("purly", workload, key), values("baseline", workload, key)
    mp, mb = statistics.median(p), statistics.median(b)
    ratio = (mp / mb if better == "higher" else mb / mp) if mp and mb else float("nan")
    print(f"{label:<52} purly {mp:>12,.0f} {unit:<6} baseline {mb:>12,.0f} {unit:<6} "
          f"purly is {ratio:.2f}x {'better' if ratio >= 1 else 'worse'}  (runs: {p} vs {b})")
print()
show("saturated, 1000 subscribers: deliveries/s", "saturated", "deliveries_per_second", "/s", "higher")
for server in ("purly", "baseline"):
    print(f"  {server}: lost {sum(values(server, 'saturated', 'lost'))}, reordered {sum(values(server, 'saturated', 'reordered'))}, errors {sum(values(server, 'saturated', 'errors'))}")
show("50,000 deliveries/s, 1000 subscribers: p99 latency", "rate50k", "latency_us.p99", "us", "lower")
show("idle connections (10,000): bytes per connection", "idle", "bytes_per_connection", "B", "lower")
for server in ("purly", "baseline"):
    a, b = statistics.median(values(server, "stuck0", "latency_us.p99")), statistics.median(values(server, "stuck1", "latency_us.p99"))
    print(f"one stuck subscriber, 200 x 20 KB updates/s, p99 of the others: {server}: {a:,.0f} us -> {b:,.0f} us ({b / a:.2f}x)")
PY
