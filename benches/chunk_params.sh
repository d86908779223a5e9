#!/usr/bin/env bash
# Chunking and compression parameters on the generated tree: runs the
# benches/chunk_params.rs bench (FastCDC 16K/64K/256K, 64K/256K/1M, 128K/512K/2M = hamn,
# 256K/1M/4M; zstd 1, 3 = hamn, 6) on a tree from benches/gen_tree.py and a
# copy of it after night NIGHT's change.
#
#   bash benches/chunk_params.sh             # ~1 GB, 30k entries
#   SMALL=1 bash benches/chunk_params.sh     # ~100 MB, 5k entries
#   OUT=results.md bash benches/chunk_params.sh
#
# Environment: those of benches/lib.sh (SMALL, FILES, BYTES, SEED, OUT,
# BENCH_TMP, KEEP), and NIGHT=N (default 1). Needs about 2.2x BYTES in the
# temp dir. One core; the files are read into memory before being timed.
#
# Comparing against a baseline: same settings on both commits, compare the
# tables (the figures depend on the fastcdc/blake3/zstd versions in
# Cargo.lock, not on hamn's code).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NIGHT=${NIGHT:-1}
HAMN_BIN=${HAMN_BIN:-/bin/true}   # the bench does not run hamn
bench_setup chunk_params
gen_tree "$work/base"
say "copying the tree and applying night $NIGHT"
cp -a "$work/base" "$work/night"
for ((n = 1; n <= NIGHT; n++)); do mutate "$work/night" "$n"; done
say "building and running the bench (cargo bench --bench chunk_params)"
(cd "$repo" && cargo bench --quiet --bench chunk_params --no-run) >/dev/null 2>&1 || die "cargo bench --no-run failed"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
(cd "$repo" && HAMN_PARAMS_BASE=$work/base HAMN_PARAMS_NIGHT=$work/night HAMN_PARAMS_OUT=$work/table.md \
    cargo bench --quiet --bench chunk_params) >/dev/null
gen=$(cat "$work/gen.json")
m=$(cat "$work/mutate$NIGHT.json")
{
    echo "### Chunking parameters: FastCDC and zstd on the generated tree (seed $SEED, night $NIGHT)"
    echo
    echo "* machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "* tree: $gen"
    echo "* night: $m"
    echo "* crates: $(cd "$repo" && grep -A1 -E '^name = "(fastcdc|blake3|zstd)"$' Cargo.lock | grep -v -- -- | paste -d' ' - - | sed 's/name = //; s/version = //; s/"//g' | paste -sd, -)"
    echo
    cat "$work/table.md"
} | tee ${OUT:+"$OUT"}
