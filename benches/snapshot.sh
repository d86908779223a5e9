#!/usr/bin/env bash
# End-to-end snapshot benchmark: hamn side by side with restic, in one run,
# on the same generated xCAT /install-like tree (benches/gen_tree.py).
#
#   bash benches/snapshot.sh                  # ~1 GB, 30k entries
#   SMALL=1 bash benches/snapshot.sh          # ~100 MB, 5k entries (quick)
#   FILES=300000 bash benches/snapshot.sh     # 300k small files (~300 MB): peak RSS vs file count
#   OUT=results.md bash benches/snapshot.sh   # also write the table to results.md
#
# Reported, for hamn and restic: cold snapshot wall time and throughput,
# no-change re-snapshot wall time (against `find TREE -printf '%s %T@\n'`),
# stored bytes and the dedup/compression ratio, peak RSS and CPU time
# (user+sys, and CPU/wall: how well the work spreads over the cores), a
# nightly change (gen_tree.py --mutate) and `check --read-data`.
#
# Environment:
#   SMALL=1        ~100 MB / 5k entries instead of ~1 GB / 30k
#   FILES=N        entries in the tree (default 30000, SMALL 5000)
#   BYTES=SIZE     bytes in the tree, e.g. 2G (default 1G; SMALL 100M;
#                  FILES above 30000 without BYTES: FILES x 1 KiB)
#   SEED=N         generator seed (default 1)
#   NIGHTS=N       nightly changes to snapshot after the cold runs (default 1)
#   REPS=N         runs of each short measurement (no-change, find); the
#                  median is reported (default 3)
#   RESTIC=0       skip restic (default: run it; installed with apt-get if
#                  missing and we are root)
#   HAMN_BIN=PATH  use this hamn instead of `cargo build --release`
#   OUT=FILE       also write the markdown table to FILE
#   BENCH_TMP=DIR  where the temp dir goes (default $TMPDIR or /tmp); the
#                  tree, store and repo need about 2.5x BYTES there
#   KEEP=1         keep the temp dir (tree, store, repo, raw timings)
#
# Comparing a change against a baseline: the tree depends only on
# FILES/BYTES/SEED, so run the script on both commits with the same settings
# and compare the tables (OUT=before.md, then OUT=after.md; diff them). The
# restic column is measured in the same run, so the "hamn vs restic" ratios
# stay comparable across machines. For the chunk/hash/compress inner loop
# use the criterion bench: benches/chunk_pipeline.rs.
#
# Everything is created under a fresh temp dir that is removed at the end;
# nothing else is touched. Dropping the page cache before cold runs needs
# root and a writable /proc/sys/vm/drop_caches; the table says whether it
# happened (if not, both tools read a tree that is already in the page
# cache, since it was just generated).
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

NIGHTS=${NIGHTS:-1}
REPS=${REPS:-3}
RESTIC=${RESTIC:-1}
# More files than the default without BYTES: 1 KiB a file.
if [[ $SMALL != 1 && -z ${BYTES:-} && $files -gt 30000 ]]; then
    bytes=$((files * 1024))
fi

# Temp dir, results, a private hamn binary, an empty config.
bench_setup snapshot
if [[ $RESTIC == 1 ]] && ! command -v restic >/dev/null; then
    as_root_install restic || {
        say "restic not found and not installable; its column stays empty"
        RESTIC=0
    }
fi
tree=$work/install
store=$work/store
repo_dir=$work/restic-repo
export RESTIC_PASSWORD=hamn-bench-only
export RESTIC_CACHE_DIR=$work/restic-cache
[[ $RESTIC == 1 ]] && put restic_version "$(restic version | head -1)"

gen_tree "$tree"

# measure_reps NAME CMD...: REPS runs as NAME.1, NAME.2, ...; the table
# shows the run with the median wall time (for the short, noise-prone runs).
measure_reps() {
    local name=$1 i
    shift
    for ((i = 1; i <= REPS; i++)); do
        measure "$name.$i" "$@"
    done
}

# The walk every tool must at least do: one stat per entry.
drop_caches
measure find_cold find "$tree" -printf '%s %T@\n'
measure_reps find_warm find "$tree" -printf '%s %T@\n'

# --- hamn
say "hamn: cold snapshot"
"$hamn" --store "$store" init >/dev/null
drop_caches
measure hamn_cold "$hamn" --store "$store" -q snapshot "$tree"
put hamn_cold.du "$(du -sb "$store" | cut -f1)"
say "hamn: no-change snapshot"
measure_reps hamn_nochange "$hamn" --store "$store" -q snapshot "$tree"

# --- restic (repository format 2: zstd compression, like hamn)
if [[ $RESTIC == 1 ]]; then
    say "restic: cold backup"
    restic -r "$repo_dir" init --repository-version 2 >/dev/null
    drop_caches
    measure restic_cold restic -r "$repo_dir" --json backup --host bench "$tree"
    put restic_cold.du "$(du -sb "$repo_dir" | cut -f1)"
    say "restic: no-change backup"
    measure_reps restic_nochange restic -r "$repo_dir" --json backup --host bench "$tree"
fi

# --- nightly changes
for ((night = 1; night <= NIGHTS; night++)); do
    say "night $night: mutating the tree"
    python3 "$here/gen_tree.py" "$tree" --mutate "$night" --seed "$SEED" >"$work/mutate$night.json"
    put "mutate$night" "$(cat "$work/mutate$night.json")"
    measure "hamn_night$night" "$hamn" --store "$store" -q snapshot "$tree"
    if [[ $RESTIC == 1 ]]; then
        before=$(du -sb "$repo_dir" | cut -f1)
        measure "restic_night$night" restic -r "$repo_dir" --json backup --host bench "$tree"
        put "restic_night$night.du_added" "$(($(du -sb "$repo_dir" | cut -f1) - before))"
    fi
done
put nights "$NIGHTS"
put reps "$REPS"
put hamn_final.du "$(du -sb "$store" | cut -f1)"
[[ $RESTIC == 1 ]] && put restic_final.du "$(du -sb "$repo_dir" | cut -f1)"

# --- verification of every stored byte
say "check --read-data"
measure hamn_check "$hamn" --store "$store" check --read-data
[[ $RESTIC == 1 ]] && measure restic_check restic -r "$repo_dir" check --read-data

"$hamn" --store "$store" snapshots --json >"$work/hamn_snapshots.json"
put dropped "$dropped"
put restic "$RESTIC"

# --- the table
PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os

from report import emit, f, gen, mib, night_line, res, secs, work
snaps = json.load(open(os.path.join(work, "hamn_snapshots.json")))["snapshots"]
restic = res["restic"] == "1"
nights = int(res["nights"])


def med(name):
    """The key prefix of the median-wall run of a repeated measurement."""
    runs = sorted((f(f"{name}.{i}.wall"), f"{name}.{i}") for i in range(1, int(res["reps"]) + 1))
    return runs[(len(runs) - 1) // 2][1]


def restic_summary(name):
    for line in open(os.path.join(work, name + ".out")):
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("message_type") == "summary":
                return d
    return {}


def cpu(name):
    c = f(name + ".user") + f(name + ".sys")
    return c, f"{c:.1f} s ({c / max(f(name + '.wall'), 1e-9):.2f})"


def rss(name):
    return f(name + ".rss_kib") * 1024


plain = snaps[0]["stats"]["bytes_total"]
rows = []


def row(metric, h, r="", ratio="", target=""):
    rows.append((metric, h, r if restic else "", ratio if restic else "", target))


def faster(h, r):
    # "2.0x" means hamn takes half restic's time.
    return f"{r / h:.2f}x" if h > 0 else ""


hw, rw = f("hamn_cold.wall"), f("restic_cold.wall") if restic else 0
row("cold snapshot: wall", secs(hw), secs(rw) if restic else "", faster(hw, rw) if restic else "")
ht = plain / hw / 1e6
rt = plain / rw / 1e6 if restic else 0
verdict = ""
if restic:
    verdict = "MET" if ht >= 2 * rt else "MISSED"
    verdict = f">= 2x restic: {verdict} ({ht / rt:.2f}x)"
row("cold snapshot: throughput (plain MB/s)", f"{ht:,.1f} MB/s", f"{rt:,.1f} MB/s" if restic else "",
    f"{ht / rt:.2f}x" if restic else "", verdict)
row("cold snapshot: CPU user+sys (CPU/wall)", cpu("hamn_cold")[1], cpu("restic_cold")[1] if restic else "")
row("cold snapshot: peak RSS", mib(rss("hamn_cold")), mib(rss("restic_cold")) if restic else "",
    f"{rss('restic_cold') / rss('hamn_cold'):.2f}x" if restic else "",
    "independent of file count (compare FILES=...)")
fw = f(med("find_warm") + ".wall")
hnc = med("hamn_nochange")
rnc = med("restic_nochange") if restic else ""
hn, rn = f(hnc + ".wall"), f(rnc + ".wall") if restic else 0
row("no-change re-snapshot: wall", secs(hn), secs(rn) if restic else "", faster(hn, rn) if restic else "",
    f"<= 2x find: {'MET' if hn <= 2 * fw else 'MISSED'} ({hn / fw:.1f}x find)")
row("no-change re-snapshot: CPU user+sys (CPU/wall)", cpu(hnc)[1], cpu(rnc)[1] if restic else "")
row("no-change re-snapshot: peak RSS", mib(rss(hnc)), mib(rss(rnc)) if restic else "")
row("`find TREE -printf '%s %T@\\n'` (warm)", secs(fw))
if res["dropped"] == "yes":
    row("`find ...` (cold, page cache dropped)", secs(f("find_cold.wall")))
s0 = snaps[0]["stats"]
hstored = s0["bytes_added_stored"]
hdu = f("hamn_cold.du")
rdu = f("restic_cold.du") if restic else 0
row("stored after cold snapshot (hamn: stats.bytes_added_stored)", mib(hstored))
row("store size on disk after cold snapshot (du -sb)", mib(hdu), mib(rdu) if restic else "",
    f"{rdu / hdu:.2f}x" if restic else "")
row("dedup+compression ratio: plain / bytes_added_stored", f"{plain / hstored:.2f}")
row("dedup+compression ratio: plain / du -sb", f"{plain / hdu:.2f}", f"{plain / rdu:.2f}" if restic else "",
    f"{(plain / hdu) / (plain / rdu):.2f}x" if restic else "")
for n in range(1, nights + 1):
    sn = snaps[len(snaps) - nights + n - 1]["stats"]
    name = f"hamn_night{n}"
    hnw = f(name + ".wall")
    rnw = f(f"restic_night{n}.wall") if restic else 0
    row(f"night {n} (`gen_tree.py --mutate {n}`): snapshot wall", secs(hnw), secs(rnw) if restic else "",
        faster(hnw, rnw) if restic else "")
    rs = restic_summary(f"restic_night{n}") if restic else {}
    row(f"night {n}: stored bytes added (hamn: bytes_added_stored; restic: repo du growth)",
        mib(sn.get("bytes_added_stored", 0)), mib(f(f"restic_night{n}.du_added")) if restic else "")
    row(f"night {n}: files read / reused", f"{sn.get('files_read', 0):,} / {sn.get('files_reused', 0):,}",
        f"{rs.get('files_new', 0) + rs.get('files_changed', 0):,} / {rs.get('files_unmodified', 0):,}" if restic else "")
    row(f"night {n}: peak RSS", mib(rss(name)), mib(rss(f"restic_night{n}")) if restic else "")
row("check --read-data: wall", secs(f("hamn_check.wall")), secs(f("restic_check.wall")) if restic else "",
    faster(f("hamn_check.wall"), f("restic_check.wall")) if restic else "")
row("store size on disk at the end (du -sb)", mib(f("hamn_final.du")), mib(f("restic_final.du")) if restic else "")

head = []
head.append(f"### hamn snapshot benchmark: {gen['entries']:,} entries ({gen['files']:,} files, "
            f"{gen['symlinks']:,} symlinks, {gen['hardlinks']:,} hardlinks), {gen['dirs']:,} dirs, "
            f"{mib(plain)} plain ({plain:,} bytes); seed {res['seed']}")
head.append("")
head.append(f"* machine: {res['cpus']} CPUs ({res['cpu_model']})")
head.append(f"* hamn: {res['hamn_version']}" + (f"; restic: {res['restic_version']} "
            "(repository format 2, zstd auto)" if restic else "; restic: not run"))
head.append(f"* tree generated by benches/gen_tree.py in {float(res['gen_wall']):.1f} s; "
            f"{gen['packages']} packages ({gen['packages_duplicated']} duplicated), "
            f"rootimg.cpio.gz {mib(gen['cpio_bytes'])}")
for n in range(1, nights + 1):
    head.append(night_line(n))
if res["dropped"] == "yes":
    head.append("* page cache dropped before each cold run: yes")
else:
    head.append("* page cache dropped before each cold run: NO (not permitted here); "
                "the tree was just written, so every run read it from the page cache")
head.append(f"* no-change and find rows: median of {res['reps']} runs; everything else: one run")
head.append("* MB/s = 10^6 bytes of plain file content per second of wall time; "
            "CPU/wall = (user+sys)/wall, 2.0 = both of 2 cores busy; "
            "hamn vs restic > 1 means hamn is faster/smaller")
head.append("")
table = ["| metric | hamn | restic | hamn vs restic | target |", "|---|---:|---:|---:|---|"]
for r in rows:
    table.append("| " + " | ".join(r) + " |")
text = "\n".join(head + table) + "\n"
emit(text)
PY
