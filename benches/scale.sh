#!/usr/bin/env bash
# Scale: the nightly job on trees of many entries, one size after another
# in one run, to see what grows with the number of entries. Each tree is
# made of many root images of a real image's directory sizes
# (`gen_tree.py --image-files`, 30k entries an image by default), so only
# the number of entries grows, not the directories. Per size:
#
#   cold       `hamn snapshot`, page cache dropped
#   find       `find TREE -printf '%s %T@\n'` (warm), the walk any tool pays
#   nochange   `hamn snapshot` again (warm; median of REPS, taking turns
#              with find)
#   first      `hamn sync` over the private sshd to an empty standby store,
#              deploying (`materialize = true`): the whole tree
#   night      one night of change (gen_tree.py --mutate 1: one image in
#              six changed, ~1% of the entries; NIGHT_IMAGES of them, the
#              same bytes at every size), then `hamn sync`
#
# and the standby's tree compared with the primary's after each sync
# (names, types, modes, sizes, mtimes, link targets and contents).
#
#   bash benches/scale.sh                            # 300k and 2M entries
#   SIZES="300000" bash benches/scale.sh             # one size
#   SIZES="30000 300000" IMAGE_FILES=10000 bash benches/scale.sh
#
# Reported per size: wall, CPU and peak RSS of the primary's command and
# (syncs) of the standby's `hamn serve`, the sync's snapshot / push /
# deployment seconds (its --json), bytes on the wire. Targets (the
# fan-out issue's): peak RSS <= 150 MB on each end, flat from the
# smallest size to the largest (<= 1.25x); the no-change snapshot <=
# 1.5x find.
#
# Environment: those of benches/lib.sh (SEED, DROP, HAMN_BIN, HAMN_REV,
# OUT, BENCH_TMP, KEEP, PROXY, PIN), and
#   SIZES="N ..."    entries of each tree (default "300000 2000000")
#   BYTES_PER=SIZE   bytes per entry (default 1K: 2 GiB at 2M entries)
#   IMAGE_FILES=K    entries per root image (default 30000)
#   REPS=N           no-change snapshots and finds per size (default 3)
#   NIGHT_IMAGES=K   the night changes K images at every size (default: one
#                    in six, so the night's change grows with the tree)
# Needs root (its own sshd, dropping the page cache) and about 4x the
# largest tree's bytes of disk; each size's files are removed before the
# next size starts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=${SIZES:-300000 2000000}
BYTES_PER=${BYTES_PER:-1K}
IMAGE_FILES=${IMAGE_FILES:-30000}
REPS=${REPS:-3}
per=$(python3 -c "import sys; sys.path.insert(0, sys.argv[1]); import gen_tree; print(gen_tree.parse_size(sys.argv[2]))" "$here" "$BYTES_PER")

bench_setup scale
sshd_start
say "sshd on 127.0.0.1:$ssh_port"
: >"$work/standby.toml"
cat >"$work/bin/hamn-remote" <<EOF
#!/bin/sh
HAMN_CONFIG=$work/standby.toml exec $work/bin/remote-timed $work/bin/hamn "\$@"
EOF
chmod 755 "$work/bin/hamn-remote"
put sizes "$SIZES"
put image_files "$IMAGE_FILES"
put reps "$REPS"

# same_tree A B: exit 0 when the two trees hold the same entries (names,
# types, modes, sizes, mtimes, link targets) and the same bytes. A
# directory's size is the file system's business, not the tree's.
listing() {
    (cd "$1" && find . \( -type d -printf '%p d %m %T@\n' \) -o -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort | md5sum)
}
same_tree() {
    [[ $(listing "$1") == "$(listing "$2")" ]] && diff -r --no-dereference -q "$1" "$2" >/dev/null
}

for n in $SIZES; do
    s=s$n
    d=$work/$s
    mkdir -p "$d"
    tree=$d/install
    say "$n entries: generating the tree (--image-files $IMAGE_FILES)"
    python3 "$here/gen_tree.py" "$tree" --files "$n" --bytes "$((n * per))" --seed "$SEED" \
        --image-files "$IMAGE_FILES" >"$d/gen.json"
    put "$s.gen" "$(cat "$d/gen.json")"
    put "$s.largest_dir" "$(find "$tree" -type d -printf '%h\n' | sort | uniq -c | sort -n | tail -1 | awk '{ print $1 }')"
    "$hamn" --store "$d/primary" init >/dev/null
    "$hamn" --store "$d/standby" init >/dev/null
    mkdir -p "$d/root"
    standby_toml "$d/primary" "$tree" "$d/standby" "$d/root" >"$d/hamn.toml"
    export HAMN_CONFIG=$d/hamn.toml
    "$hamn" config check >/dev/null

    say "$n entries: cold snapshot"
    drop_caches
    measure "$s.cold" "$hamn" --store "$d/primary" -q snapshot "$tree"
    # find and the no-change snapshot take turns, after one walk that
    # warms what the cold snapshot's reads pushed out of the caches, so
    # that each meets the tree's metadata as warm as the other does.
    say "$n entries: find and no-change snapshots, in turn"
    find "$tree" -printf '%s %T@\n' >/dev/null
    for ((i = 1; i <= REPS; i++)); do
        measure "$s.find.$i" find "$tree" -printf '%s %T@\n'
        measure "$s.nochange.$i" "$hamn" --store "$d/primary" -q snapshot "$tree"
    done
    say "$n entries: first sync"
    drop_caches
    measure_remote "$s.first" "$hamn" --json sync
    if same_tree "$tree" "$d/root$tree"; then put "$s.first.identical" yes; else put "$s.first.identical" NO; fi
    mutate "$tree" 1 ${NIGHT_IMAGES:+--images "$NIGHT_IMAGES"}
    mv "$work/mutate1.json" "$d/mutate1.json"
    put "$s.mutate1" "$(cat "$d/mutate1.json")"
    say "$n entries: night sync"
    drop_caches
    measure_remote "$s.night" "$hamn" --json sync
    if same_tree "$tree" "$d/root$tree"; then put "$s.night.identical" yes; else put "$s.night.identical" NO; fi
    put "$s.primary_du" "$(du -sb "$d/primary" | cut -f1)"
    for step in first night; do
        cp "$work/$s.$step.out" "$d/$step.json"
    done
    # Room for the next size: keep only the JSON documents and timings.
    [[ $KEEP == 1 ]] || rm -rf "$tree" "$d/primary" "$d/standby" "$d/root"
done

put dropped "$dropped"

python3 - "$results" "$work" "${OUT:-}" <<'EOF'
import json, sys

res = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("\t")
    res[k] = v
work, out_file = sys.argv[2], sys.argv[3]
f = lambda k: float(res[k])  # noqa: E731
mib = lambda kib: kib / 1024  # noqa: E731
sizes = res["sizes"].split()
reps = int(res["reps"])


def med(key):
    runs = sorted((f(f"{key}.{i}.wall"), f"{key}.{i}") for i in range(1, reps + 1))
    return runs[(len(runs) - 1) // 2][1]


def cpu(k):
    return f(k + ".user") + f(k + ".sys")


lines = [f"### Scale: {res['hamn_version']}, {res['cpus']} CPUs ({res['cpu_model']}), "
         f"{res['filesystem']}, page cache dropped before cold runs: {res['dropped']}, "
         f"load at start {res['load_start']}", "",
         "| entries | images | largest directory | bytes | find (warm) | cold snapshot | no-change snapshot | vs find |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
rss_p, rss_s, verdicts = {}, {}, []
for n in sizes:
    s = f"s{n}"
    g = json.loads(res[f"{s}.gen"])
    fw = f(med(f"{s}.find") + ".wall")
    nc = med(f"{s}.nochange")
    lines.append(f"| {g['entries']:,} | {g['images']} | {res[s + '.largest_dir']} | {g['bytes'] / 2**30:.2f} GiB | "
                 f"{fw:.2f} s | {f(s + '.cold.wall'):.1f} s, CPU {cpu(s + '.cold'):.1f} s, {mib(f(s + '.cold.rss_kib')):.1f} MiB | "
                 f"{f(nc + '.wall'):.2f} s, CPU {cpu(nc):.2f} s, {mib(f(nc + '.rss_kib')):.1f} MiB | {f(nc + '.wall') / fw:.2f}x |")
    ratio = f(nc + ".wall") / fw
    verdicts.append(f"| {n} entries: no-change snapshot <= 1.5x find | {'MET' if ratio <= 1.5 else 'MISSED'} | {ratio:.2f}x |")
lines += ["", "| entries | sync | wall | snapshot / push / deploy | primary CPU, peak RSS | standby CPU (serve), peak RSS | bytes up | identical |",
          "|---:|---|---:|---|---|---|---:|---|"]
for n in sizes:
    s = f"s{n}"
    m = json.loads(res[f"{s}.mutate1"])
    rss_p[n] = max(f(f"{s}.{k}.rss_kib") for k in ["cold", "first", "night"] + [f"nochange.{i}" for i in range(1, reps + 1)])
    rss_s[n] = max(f(f"{s}.{k}.remote_rss_kib") for k in ["first", "night"])
    for step in ["first", "night"]:
        k = f"{s}.{step}"
        j = json.load(open(f"{work}/{s}/{step}.json"))
        mat = j.get("materialize") or {}
        split = (f"{j['snapshot']['stats']['duration_ms'] / 1000:.1f} / {j['push']['seconds']:.1f} / "
                 f"{mat.get('seconds', 0):.1f} s")
        what = "first (whole tree)" if step == "first" else f"night ({m['images_changed']} images changed)"
        lines.append(f"| {n} | {what} | {f(k + '.wall'):.1f} s | {split} | {cpu(k):.1f} s, {mib(f(k + '.rss_kib')):.1f} MiB | "
                     f"{f(k + '.remote_cmd_cpu'):.1f} s, {mib(f(k + '.remote_rss_kib')):.1f} MiB | "
                     f"{int(res[k + '.wire_up']) / 2**20:,.1f} MiB | {res[k + '.identical']} |")
for n in sizes:
    verdicts.append(f"| {n} entries: peak RSS <= 150 MB, primary / standby | "
                    f"{'MET' if max(rss_p[n], rss_s[n]) * 1024 <= 150e6 else 'MISSED'} | "
                    f"{mib(rss_p[n]):.1f} / {mib(rss_s[n]):.1f} MiB |")
lo, hi = sizes[0], sizes[-1]
if lo != hi:
    for end, r in [("primary", rss_p), ("standby", rss_s)]:
        g = r[hi] / r[lo]
        verdicts.append(f"| peak RSS flat from {lo} to {hi} entries ({end}, <= 1.25x) | {'MET' if g <= 1.25 else 'MISSED'} | {g:.2f}x |")
lines += ["", "| target | verdict | measured |", "|---|---|---|"] + verdicts
text = "\n".join(lines) + "\n"
print(text)
if out_file:
    open(out_file, "w").write(text)
EOF
