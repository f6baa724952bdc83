#!/bin/bash
# What the metrics cost: the core benches with and without the Prometheus recorder, alternating,
# three rounds each (BENCHMARKS.md, "Issue 12"). About 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p purly --bench frame --no-run 2>/dev/null; cargo bench -q -p purly --bench fanout --no-run 2>/dev/null
for round in 1 2 3; do
  for m in 0 1; do
    echo "== round $round metrics=$m"
    PURLY_BENCH_METRICS=$m cargo bench -q -p purly --bench frame -- session_send --measurement-time 5 --noplot 2>&1 | grep -E "^\s+time:   \[[0-9]"
    PURLY_BENCH_METRICS=$m cargo bench -q -p purly --bench fanout -- 'fanout/purly/(100|1000)$' --measurement-time 5 --noplot 2>&1 | grep -E "^fanout.*time:   \[[0-9]|^\s+time:   \[[0-9]"
  done
done
