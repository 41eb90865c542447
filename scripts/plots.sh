#!/usr/bin/env bash
# Runs the benchmarks behind docs/PERFORMANCE.md's plots, keeps their
# tables in docs/bench/, and draws docs/plots/*.svg from those tables with
# rdv-plot. Takes about 15 minutes on 2 cores; run as root (bench-idle.sh
# raises the open-file limit).
# Usage: scripts/plots.sh            (benchmarks, then plots)
#        scripts/plots.sh --replot   (plots from the tables already kept)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/bench docs/plots
if [ "${1:-}" != "--replot" ]; then
  # Each table is written aside and moved into place only when its
  # benchmark finished, so a failed run keeps the previous one.
  scripts/bench-idle.sh 20 100 1000 3000 10000 19000 >docs/bench/idle.md.new
  mv docs/bench/idle.md.new docs/bench/idle.md
  RDV_MEMORY_SIZES=10000,30000,100000,300000,1000000 \
    cargo bench -q -p rdv-point --bench memory >docs/bench/memory.md.new
  mv docs/bench/memory.md.new docs/bench/memory.md
  : >docs/bench/points.md.new
  for clients in 1 4 16 64; do
    scripts/bench-points.sh "$clients" 5 >>docs/bench/points.md.new
  done
  mv docs/bench/points.md.new docs/bench/points.md
fi
cargo build --release -q -p rdv-plot
plot=target/release/rdv-plot
$plot --table docs/bench/idle.md --x "idle peers" --y "RSS with peers" --series point \
  --log-x --log-y --title "Point memory holding idle peers (one registration each)" \
  --out docs/plots/idle-memory.svg
$plot --table docs/bench/idle.md --x "idle peers" --y "CPU at rest" --series point \
  --log-x --title "Point CPU at rest with idle peers connected" \
  --out docs/plots/idle-cpu.svg
$plot --table docs/bench/idle.md --x "idle peers" --y "DISCOVER p50" --series point \
  --log-x --log-y --title "DISCOVER (limit 100) latency against namespace size" \
  --out docs/plots/discover-latency.svg
$plot --table docs/bench/memory.md --x registrations --y "heap bytes" \
  --log-x --log-y --title "rdv point store: heap against registrations (each its own peer)" \
  --out docs/plots/memory-registrations.svg
for mix in Register Refresh Discover; do
  lower=$(echo "$mix" | tr '[:upper:]' '[:lower:]')
  $plot --table docs/bench/points.md --x clients --y ops/s --series point --where "mix=$mix" \
    --log-x --title "$mix throughput against concurrent clients" \
    --out "docs/plots/throughput-$lower.svg"
done
echo "plots written to docs/plots/"
