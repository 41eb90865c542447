#!/usr/bin/env bash
# Holds N idle peers (each its own identity, one connection, one live
# registration) on an in-memory rdv point and on rust-libp2p's reference
# point (rdv-libp2p-peer server), fresh points for each N, and prints one
# table: each point's memory per peer and its CPU and wake-ups at rest.
# Usage: scripts/bench-idle.sh [REST_SECONDS] [N...]   (default: 20 1000 10000)
# PEER_PING=15 makes the peers ping every 15 s, as rust-libp2p peers do.
# Each peer holds an open file in the bench and one in the point: the
# open-file limit (`ulimit -Hn`, 20,000 on the machine measured) bounds N.
set -euo pipefail
cd "$(dirname "$0")/.."
rest=${1:-20}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
# Each peer is a socket in the bench and one in the point.
ulimit -Hn 1048576 2>/dev/null || true  # where allowed (CAP_SYS_RESOURCE)
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p rdv
rdv=$PWD/target/release/rdv
peer=$PWD/target/release/rdv-libp2p-peer
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
header=1
for n in "${sizes[@]}"; do
  # A point address serves ~28,000 client ports (the ephemeral range):
  # from 20,000 peers on (a margin) the points also listen on 127.0.0.2,
  # .3, ...
  spread=$(( n / 20000 + 1 ))
  listen=()
  for k in $(seq 1 "$spread"); do listen+=(--listen "/ip4/127.0.0.$k/tcp/0"); done
  room=$(( n + 1000 ))
  cat >"$work/point.toml" <<TOML
store = "memory"
idle_timeout = 86400
max_connections = $room
max_connections_per_ip = $room
max_pending_connections = 1024
max_pending_per_ip = 1024
max_registrations_per_ip_namespace = $room
max_registrations_per_namespace = $room
max_streams_per_ip = 1024
TOML
  rm -f "$work"/*.out
  (cd "$work" && exec "$rdv" --data "$work/data" point --config point.toml "${listen[@]}" >rdv.out 2>rdv.err) &
  rdv_pid=$!
  "$peer" server "${listen[@]}" --idle-timeout 86400 \
    --max-registrations "$room" --max-registrations-per-peer 10 >"$work/rust.out" 2>/dev/null &
  rust_pid=$!
  for f in rdv.out rust.out; do
    for _ in $(seq 100); do
      c=$(grep -c /tcp/ "$work/$f" 2>/dev/null || true)
      [ "${c:-0}" -ge "$spread" ] && break
      sleep 0.1
    done
  done
  addrs() { grep /tcp/ "$work/$1" | sed 's/^listening on //' | paste -sd, -; }
  "$rdv" bench --idle "$n" --seconds "$rest" \
    --point "$(addrs rdv.out)" --pid "$rdv_pid" \
    --point "$(addrs rust.out)" --pid "$rust_pid" --name rdv --name rust-libp2p \
    ${PEER_PING:+--peer-ping "$PEER_PING"} >"$work/table" || {
    echo "bench failed; the rdv point said:" >&2
    cat "$work/rdv.err" >&2
    exit 1
  }
  if [ $header = 1 ]; then cat "$work/table"; header=0; else tail -n +3 "$work/table"; fi
  kill "$rdv_pid" "$rust_pid"
  wait "$rdv_pid" "$rust_pid" 2>/dev/null || true
done
