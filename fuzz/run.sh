#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation on the
# stable toolchain (no cargo-fuzz needed) and runs each for a bounded time.
# A crash, a panic or a timeout fails the run; the input is saved under
# target/fuzz-artifacts/<target>/. The seed corpus in fuzz/corpus/ is read,
# never written: each run grows a scratch copy.
#
#   bash fuzz/run.sh            # every target, FUZZ_SECONDS (default 15) each
#   FUZZ_SECONDS=600 bash fuzz/run.sh context_input   # a long run of one
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-15}"
target_dir="$(pwd)/../target/fuzz-run"
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
# `--target` keeps the instrumentation off build scripts and proc macros.
CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --quiet --target "$triple" --bins
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^rdv-fuzz$')
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "../target/fuzz-artifacts/$t"
  if [ -d "corpus/$t" ]; then cp -r "corpus/$t/." "$scratch/$t/"; fi
  echo "fuzz: $t for ${seconds}s"
  "$target_dir/$triple/release/$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="../target/fuzz-artifacts/$t/" "$scratch/$t" 2>"$scratch/$t.log" \
    || { tail -n 40 "$scratch/$t.log"; echo "fuzz: $t failed; input saved in target/fuzz-artifacts/$t/"; exit 1; }
  grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/  $t /" || true
done
