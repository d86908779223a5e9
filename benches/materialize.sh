#!/usr/bin/env bash
# Cost of a nightly deployment on the standby: `hamn materialize` of one
# night's snapshot, with the previous generation present (the third
# materialization onward), against a full materialization into an empty
# root and against `rsync -aHAX --delete` bringing a local copy of the old
# tree to the new one. Everything is local (no ssh): the standby's store is
# the store the snapshots were taken into.
#
#   bash benches/materialize.sh                 # ~1 GB, 30k entries, night 3
#   SMALL=1 bash benches/materialize.sh         # ~100 MB, 5k entries (quick)
#   REPACK=0 bash benches/materialize.sh        # nights without the rootimg.cpio.gz re-pack (~2% change)
#   OUT=results.md bash benches/materialize.sh  # also write the table to results.md
#   FS=xfs bash benches/materialize.sh          # on a loop-mounted XFS with reflinks (benches/lib.sh)
#
# Sequence: generate the tree, snapshot S0, materialize S0 into an empty
# root R; then for each night n = 1..NIGHT: mutate, snapshot Sn, and (n <
# NIGHT) materialize Sn into R. Before the last night a copy of the tree is
# made with rsync (untimed). The measured runs, page cache dropped before
# each: `hamn materialize S_NIGHT --root R` (R holds S_NIGHT-1 live and
# S_NIGHT-2 as GEN/previous), `rsync -aHAX --delete --stats TREE/ COPY/`,
# `hamn materialize S_NIGHT --root EMPTY`.
#
# Reported: wall time, CPU, peak RSS, bytes written (hamn: --json
# bytes_written, the bytes rebuilt from chunks, and bytes_copied, the
# unchanged files copied from the live tree, which on a file system without
# reflinks are written as well; rsync: --stats "Total transferred file
# size"; both: the kernel's count of blocks written by the process, "File
# system outputs" of /usr/bin/time, x512), against what really changed
# (benches/treediff.py: files whose bytes differ, or new, between the live
# tree and the new one; and between GEN/previous, hamn's staging base, and
# the new one).
#
# Targets: bytes written at most 1.2x the bytes that changed (live -> new),
# and hamn faster than the rsync.
#
# Environment (besides those of benches/lib.sh):
#   NIGHT=N    the night measured (default 3; at least 2 so that the
#              previous generation exists)
#   REPACK=0   nights without the rootimg.cpio.gz re-pack (gen_tree.py
#              --no-repack): the ~2% night
#
# Comparing a change against a baseline: same settings on both commits
# (HAMN_BIN to pin a binary, OUT=before.md / OUT=after.md), compare.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NIGHT=${NIGHT:-3}
REPACK=${REPACK:-1}
((NIGHT >= 2)) || { echo "materialize.sh: NIGHT must be at least 2" >&2; exit 2; }

bench_setup materialize
command -v rsync >/dev/null || as_root_install rsync || die "rsync is needed: apt-get install rsync"
put rsync_version "$(rsync --version | head -1)"
mutate_args=()
[[ $REPACK == 1 ]] || mutate_args=(--no-repack)

tree=$work/primary/install
mkdir -p "$work/primary" "$work/root" "$work/empty-root"
gen_tree "$tree"
store=$work/store
"$hamn" --store "$store" init >/dev/null
live=$work/root$tree
gen=$(dirname "$live")/.$(basename "$live").hamn

say "snapshot S0 and the first deployment (empty root)"
"$hamn" --store "$store" -q snapshot "$tree"
drop_caches
measure mat0 "$hamn" --store "$store" --json materialize --root "$work/root"
for ((n = 1; n <= NIGHT; n++)); do
    if ((n == NIGHT)); then
        rsync -aHAX "$tree/" "$work/copy/"
    fi
    mutate "$tree" "$n" "${mutate_args[@]}"
    "$hamn" --store "$store" -q snapshot "$tree"
    if ((n < NIGHT)); then
        say "night $n: deployment $((n + 1))"
        drop_caches
        measure "mat$n" "$hamn" --store "$store" --json materialize --root "$work/root"
    fi
done

say "what changed"
put diff_live "$(python3 "$here/treediff.py" "$live" "$tree")"
put diff_previous "$(python3 "$here/treediff.py" "$gen/previous" "$tree")"

say "night $NIGHT: hamn materialize (previous generation present)"
drop_caches
measure hamn_night "$hamn" --store "$store" --json materialize --root "$work/root"
say "night $NIGHT: rsync -aHAX --delete of a copy of the old tree"
drop_caches
measure rsync_night rsync -aHAX --delete --stats "$tree/" "$work/copy/"
say "night $NIGHT: hamn materialize into an empty root"
drop_caches
measure hamn_empty "$hamn" --store "$store" --json materialize --root "$work/empty-root"

put diff_hamn "$(rsync -naHAX --delete -i "$tree/" "$live/" | wc -l)"
put diff_rsync "$(rsync -naHAX --delete -i "$tree/" "$work/copy/" | wc -l)"
put night "$NIGHT"
put dropped "$dropped"
put load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os, re

from report import emit, f, gen, mib, night_line, res, secs, work
night = int(res["night"])
dl = json.loads(res["diff_live"])
dp = json.loads(res["diff_previous"])


def hj(name):
    return json.load(open(os.path.join(work, name + ".out")))["materialize"]


def rs(name):
    text = open(os.path.join(work, name + ".out")).read()
    m = re.search(r"Total transferred file size: ([\d,]+)", text)
    n = re.search(r"Number of regular files transferred: ([\d,]+)", text)
    return int(m.group(1).replace(",", "")), int(n.group(1).replace(",", ""))


changed = dl["changed_bytes"]
rows = []


def cpu(name):
    return f"{f(name + '.user') + f(name + '.sys'):.1f} s"


def hamn_row(label, name, ratio=True):
    m = hj(name)
    # Reflinked copies share the live file's blocks: no data written.
    cloned = m.get("bytes_cloned", 0)
    written = m["bytes_written"] + m.get("bytes_copied", 0) - cloned
    copied = f"{mib(m.get('bytes_copied', 0))} copied" + (f" ({mib(cloned)} of it reflinked)" if cloned else "")
    if m.get("files_linked", 0):
        copied += f" ({m['files_linked']:,} files, {mib(m['bytes_linked'])} hard-linked, not counted)"
    rows.append([label, secs(f(name + ".wall")), cpu(name), mib(f(name + ".rss_kib") * 1024),
                 f"{mib(m['bytes_written'])} + {copied} = {mib(written)}",
                 mib(f(name + ".fs_out") * 512), f"{written / changed:.2f}x" if changed and ratio else "",
                 f"{m['files_written']:,} written ({m.get('files_copied', 0):,} copied), "
                 f"{m.get('files_linked', 0):,} linked, "
                 f"{m['entries_removed']:,} removed, {m['entries_reowned']:,} re-owned", res.get(name + ".load", "")])
    return written


for n in range(0, night):
    what = "first: empty root" if n == 0 else ("second: no previous generation yet" if n == 1 else "previous generation present")
    hamn_row(f"hamn materialize S{n} ({what})", f"mat{n}", ratio=False)
hw = hamn_row(f"**hamn materialize S{night}** (previous generation present)", "hamn_night")
rsize, rfiles = rs("rsync_night")
rows.append([f"**rsync -aHAX --delete**, copy of S{night - 1}'s tree -> S{night}'s", secs(f("rsync_night.wall")),
             cpu("rsync_night"), mib(f("rsync_night.rss_kib") * 1024), f"{mib(rsize)} (Total transferred file size)",
             mib(f("rsync_night.fs_out") * 512), f"{rsize / changed:.2f}x" if changed else "",
             f"{rfiles:,} files", res.get("rsync_night.load", "")])
hamn_row(f"hamn materialize S{night} into an empty root", "hamn_empty", ratio=False)

m = hj("hamn_night")
with_touched = changed + dl["meta_bytes"]
targets = [
    ["bytes written <= 1.2x the bytes that changed (live -> new)", "MET" if hw <= 1.2 * changed else "MISSED",
     f"{mib(hw)} vs {mib(changed)} ({hw / changed:.2f}x); kernel count {mib(f('hamn_night.fs_out') * 512)}"],
    ["(for reference) the same, touched-only files counted as changed", "MET" if hw <= 1.2 * with_touched else "MISSED",
     f"{mib(hw)} vs {mib(with_touched)} ({hw / with_touched:.2f}x); rsync {mib(rsize)} ({rsize / with_touched:.2f}x)"],
    ["hamn materialize faster than rsync -aHAX --delete", "MET" if f("hamn_night.wall") < f("rsync_night.wall") else "MISSED",
     f"{secs(f('hamn_night.wall'))} vs {secs(f('rsync_night.wall'))} ({f('hamn_night.wall') / f('rsync_night.wall'):.2f}x)"],
]

head = [f"### Deployment cost of night {night}: {gen['entries']:,} entries ({gen['files']:,} files), "
        f"{mib(gen['bytes'])} plain; seed {res['seed']}", ""]
head.append(f"* machine: {res['cpus']} CPUs ({res['cpu_model']}); load average at start {res['load_start']}, "
            f"at end {res['load_end']}")
head.append(f"* hamn: {res['hamn_version']}; {res['rsync_version']}")
for n in range(1, night + 1):
    head.append(night_line(n))
head.append(f"* night {night}, live (S{night - 1}) -> new: {dl['new']:,} new files ({mib(dl['new_bytes'])}), "
            f"{dl['content']:,} with other content ({mib(dl['content_bytes'])}), {dl['meta_only']:,} touched only "
            f"({mib(dl['meta_bytes'])}), {dl['deleted']:,} deleted: **{mib(changed)} changed = "
            f"{100 * changed / dl['bytes']:.1f}% of {mib(dl['bytes'])}**")
head.append(f"* GEN/previous (S{night - 2}), hamn's staging base -> new: {mib(dp['changed_bytes'])} changed "
            f"({dp['new'] + dp['content']:,} files), {dp['meta_only']:,} touched only ({mib(dp['meta_bytes'])})")
head.append(f"* page cache dropped before each run: {res['dropped']}")
head.append(f"* file system: {res['filesystem']}")
head.append("* bytes written: hamn's own count (rebuilt from chunks + copied from the live tree, less what was "
            "reflinked: a reflink shares blocks and writes no data), rsync's Total transferred file size; kernel: "
            "File system outputs x 512 (blocks the process dirtied)")
head.append(f"* the deployed trees equal the primary's afterwards (`rsync -naHAX --delete -i` lines): hamn "
            f"{res['diff_hamn']}, rsync copy {res['diff_rsync']}")
tbl = ["| run | wall | CPU | peak RSS | bytes written (own count) | kernel: written | vs changed | entries | load |",
       "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
for r in rows:
    tbl.append("| " + " | ".join(r) + " |")
tg = ["", "| target | verdict | measured |", "|---|---|---|"]
for r in targets:
    tg.append("| " + " | ".join(r) + " |")
text = "\n".join(head + [""] + tbl + tg) + "\n"
emit(text)
PY
