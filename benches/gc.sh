#!/usr/bin/env bash
# Retention cost: ten nights of snapshots, then `forget --keep-last 3` and
# `gc` (retention.gc_grace_hours = 0, so every pack is eligible).
#
#   bash benches/gc.sh                  # ~1 GB, 30k entries, 10 nights
#   SMALL=1 bash benches/gc.sh          # ~100 MB, 5k entries (quick)
#   FILES=300000 BYTES=300M bash benches/gc.sh   # many small files: gc memory vs entries
#   OUT=results.md bash benches/gc.sh   # also write the table to results.md
#
# Sequence: generate the tree, snapshot; NIGHTS times (`gen_tree.py
# --mutate 1..NIGHTS`) mutate and snapshot; `forget --keep-last KEEP`;
# `gc --dry-run` (for the plan: unreferenced bytes in the store); `gc`
# (measured, page cache dropped first); `check` afterwards. The bytes that
# the kept snapshots need are measured independently by pushing them into a
# fresh local store (`push --to`), which writes only referenced blobs.
#
# Reported: gc wall, CPU and peak RSS; bytes rewritten and freed (gc's JSON);
# the unreferenced bytes before (the dry-run plan's dead_bytes_total) and
# the share reclaimed; store size before and after and that of the fresh
# store; the size of index.redb (what gc's memory should be compared with).
#
# Environment (besides those of benches/lib.sh):
#   NIGHTS=N     nights of change (default 10)
#   KEEP_LAST=N  the policy, `forget --keep-last N` (default 3; KEEP=1
#                keeps the temp dir, as in every script)
#
# Comparing a change against a baseline: same settings on both commits
# (HAMN_BIN to pin a binary, OUT=before.md / OUT=after.md), compare.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NIGHTS=${NIGHTS:-10}
KEEP_LAST=${KEEP_LAST:-3}

bench_setup gc
printf '[retention]\ngc_grace_hours = 0\n' >"$work/gc.toml"
export HAMN_CONFIG=$work/gc.toml

tree=$work/primary/install
mkdir -p "$work/primary"
gen_tree "$tree"
store=$work/store
"$hamn" --store "$store" init >/dev/null
say "snapshot 0"
measure snap0 "$hamn" --store "$store" -q snapshot "$tree"
for ((n = 1; n <= NIGHTS; n++)); do
    mutate "$tree" "$n"
    measure "snap$n" "$hamn" --store "$store" -q snapshot "$tree"
done
put du_before "$(du -sb "$store" | cut -f1)"
put packs_before "$(find "$store/packs" -type f | wc -l)"
put index_before "$(du -sb "$store/index.redb" | cut -f1)"

say "forget --keep-last $KEEP_LAST"
measure forget "$hamn" --store "$store" --json forget --keep-last "$KEEP_LAST"
measure plan "$hamn" --store "$store" --json gc --dry-run
put du_after_forget "$(du -sb "$store" | cut -f1)"
say "gc"
drop_caches
measure gc "$hamn" --store "$store" --json gc
put du_after "$(du -sb "$store" | cut -f1)"
put packs_after "$(find "$store/packs" -type f | wc -l)"
put index_after "$(du -sb "$store/index.redb" | cut -f1)"
measure check "$hamn" --store "$store" check

say "the kept snapshots alone, pushed into a fresh store"
"$hamn" --store "$work/fresh" init >/dev/null
"$hamn" --store "$store" --json push --to "$work/fresh" >"$work/fresh-push.json"
put du_fresh "$(du -sb "$work/fresh" | cut -f1)"
put nights "$NIGHTS"
put keep_last "$KEEP_LAST"
put dropped "$dropped"
put load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os

from report import emit, f, gen, mib, res, secs, work


def js(name):
    return json.load(open(os.path.join(work, name + ".out")))


plan = js("plan")["plan"]
g = js("gc")["gc"]
forgot = js("forget")
dead = plan["dead_bytes_total"]
before, after, fresh = f("du_before"), f("du_after"), f("du_fresh")
rss = f("gc.rss_kib") * 1024
rows = [
    ["snapshots before / forgotten", f"{int(res['nights']) + 1} / {forgot['forgotten']}"],
    ["store before forget (du -sb): packs", f"{mib(before)}, {int(res['packs_before']):,} pack files"],
    ["index.redb before / after gc", f"{mib(f('index_before'))} / {mib(f('index_after'))}"],
    ["gc plan: unreferenced bytes (dead_bytes_total)", f"{mib(dead)} ({100 * dead / before:.0f}% of the store)"],
    ["gc plan: dead bytes reclaimed / live bytes rewritten", f"{mib(plan['dead_bytes_reclaimed'])} / {mib(plan['live_bytes_rewritten'])}"],
    ["**gc: wall**", f"**{secs(f('gc.wall'))}** (gc's own: {g['seconds']:.2f} s)"],
    ["gc: CPU user+sys", f"{f('gc.user') + f('gc.sys'):.1f} s"],
    ["**gc: peak RSS**", f"**{mib(rss)}** ({rss / f('index_before'):.2f}x index.redb)"],
    ["gc: packs deleted / rewritten / written", f"{g['packs_deleted']:,} / {g['packs_rewritten']:,} / {g['packs_written']:,}"],
    ["**gc: bytes rewritten**", f"**{mib(g['bytes_rewritten'])}**"],
    ["**gc: bytes freed**", f"**{mib(g['bytes_freed'])}**"],
    ["**share of unreferenced bytes reclaimed** (bytes_freed / dead_bytes_total)", f"**{100 * g['bytes_freed'] / dead:.1f}%**" if dead else "n/a"],
    ["store after gc (du -sb)", f"{mib(after)}, {int(res['packs_after']):,} pack files (freed {mib(before - after)} on disk)"],
    ["the kept snapshots pushed into a fresh store (du -sb)", f"{mib(fresh)}: after gc the store is {after / fresh:.2f}x that"],
    ["share reclaimed, measured on disk: (before - after) / (before - fresh)", f"{100 * (before - after) / (before - fresh):.1f}%" if before > fresh else "n/a"],
    ["check after gc", f"exit {res['check.rc']}, {secs(f('check.wall'))}"],
]
snap_walls = [f(f"snap{n}.wall") for n in range(1, int(res["nights"]) + 1)]
head = [f"### forget + gc after {res['nights']} nights: {gen['entries']:,} entries ({gen['files']:,} files), "
        f"{mib(gen['bytes'])} plain; seed {res['seed']}; keep-last {res['keep_last']}", ""]
head.append(f"* machine: {res['cpus']} CPUs ({res['cpu_model']}); load average at start {res['load_start']}, "
            f"at end {res['load_end']} (at gc's end: {res.get('gc.load', '')})")
head.append(f"* hamn: {res['hamn_version']}; config: [retention] gc_grace_hours = 0")
head.append(f"* nightly snapshots: median {secs(sorted(snap_walls)[len(snap_walls) // 2])}; page cache dropped before gc: "
            f"{res['dropped']}")
tbl = ["| metric | value |", "|---|---:|"]
for r in rows:
    tbl.append("| " + " | ".join(r) + " |")
text = "\n".join(head + [""] + tbl) + "\n"
emit(text)
PY
