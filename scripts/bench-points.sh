#!/usr/bin/env bash
# Loads an rdv point and rust-libp2p's reference point (rdv-libp2p-peer
# server) with the same `rdv bench` run and prints one table.
# Usage: scripts/bench-points.sh [CLIENTS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
seconds=${2:-10}
cargo build --release -q -p rdv
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
rdv=$PWD/target/release/rdv
(cd "$work" && exec "$rdv" point --store memory --listen /ip4/127.0.0.1/tcp/0 >rdv.out 2>rdv.err) &
./target/release/rdv-libp2p-peer server --listen /ip4/127.0.0.1/tcp/0 \
  --max-registrations 1000000 --max-registrations-per-peer 1000 >"$work/rust.out" 2>/dev/null &
for f in rdv.out rust.out; do
  for _ in $(seq 100); do grep -q tcp "$work/$f" 2>/dev/null && break; sleep 0.1; done
done
rdv_point=$(grep -m1 /tcp/ "$work/rdv.out" | sed 's/^listening on //')
rust_point=$(grep -m1 /tcp/ "$work/rust.out" | sed 's/^listening on //')
"$rdv" bench --point "$rdv_point" --point "$rust_point" --name rdv --name rust-libp2p \
  --clients "$clients" --seconds "$seconds" "${@:3}"
