#!/usr/bin/env bash
# The nightly job on an xCAT-shaped management node, built from real Debian
# packages (benches/xcat_tree.sh): two debootstrapped netboot images with
# their packed rootimg.tar.gz, a package pool of real .deb files,
# postscripts, tftpboot, /etc files. `hamn sync` (from a config, the
# standby's store and deployment through a real sshd on 127.0.0.1) against
# `rsync -aHAX --delete` through the same sshd, in one run, on the same
# data; with RESTIC=1 also `restic backup` into a local repository (the
# history peer) and one `restic restore` at the end.
#
#   bash benches/xcat.sh                  # first sync, 3 nights, no-change syncs
#   NIGHTS=4 OUT=xcat.md bash benches/xcat.sh
#
# Steps: a full first sync; NIGHTS nights (benches/xcat_tree.sh
# xcat_night: packages installed and purged inside an image's chroot and
# the image re-packed, debs added to the pool and one moved, postscripts
# edited, deleted, added and touched, /etc/hosts and resolv.conf edited),
# each followed by a sync of each tool; then REPS no-change syncs. The page
# cache is dropped before each run. After every step each copy is compared
# with the primary (`rsync -naHAX --delete -i`: content by size and mtime,
# owner, mode, directory mtimes, xattrs, hard links, devices, symlinks).
#
# Reported per step and tool: wall; CPU on the primary and on the standby
# (everything the standby's sshd ran for the session); bytes on the wire
# each way (benches/byteproxy.py in front of sshd); peak RSS per end; and
# hamn's own phases. Disk at the end: tree, both stores, standby trees,
# rsync's copy, restic's repository.
#
# Environment (besides benches/lib.sh's DROP, HAMN_BIN, HAMN_REV, OUT,
# BENCH_TMP, KEEP, PROXY, FS; and benches/xcat_tree.sh's XCAT_CACHE,
# XCAT_POOL, XCAT_NODES, XCAT_REFRESH):
#   NIGHTS=N   nights of change (default 3)
#   REPS=N     no-change syncs per tool, median reported (default 2)
#   RSYNC=0    no rsync runs    RESTIC=1   add restic
#   GZIP_AWARE=1  the images' rootimg.tar.gz stored gzip-aware
#              (`gzip_aware` in the config; adds the targets of that feature)
#
# Needs root (debootstrap, chroot, device nodes, its own sshd), network
# access to a Debian mirror on the first run (everything is cached in
# XCAT_CACHE), rsync, openssh-server, debootstrap (installed with apt-get
# when missing). The temp dir needs about 8x the tree (~2 GB).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/xcat_tree.sh"

NIGHTS=${NIGHTS:-3}
REPS=${REPS:-2}
RSYNC=${RSYNC:-1}
RESTIC=${RESTIC:-0}
GZIP_AWARE=${GZIP_AWARE:-0}

bench_setup xcat
command -v rsync >/dev/null || as_root_install rsync || die "rsync is needed: apt-get install rsync"
command -v ssh >/dev/null || as_root_install openssh-client || die "ssh is needed: apt-get install openssh-client"
if [[ $RESTIC == 1 ]]; then
    command -v restic >/dev/null || as_root_install restic || die "RESTIC=1: restic is needed: apt-get install restic"
    put restic_version "$(restic version | head -1)"
fi
put rsync_version "$(rsync --version | head -1)"

P=$work/primary
say "building the xCAT tree (cache: $XCAT_CACHE)"
t0=$(date +%s.%N)
xcat_build "$P" >"$work/gen.json"
put gen_wall "$(awk "BEGIN { print $(date +%s.%N) - $t0 }")"
paths=(install tftpboot etc/hosts etc/resolv.conf etc/xcat)
shape() {
    # entries, files, symlinks, hard-linked files, devices, dirs, bytes, file capabilities
    python3 - "$P" "${paths[@]}" <<'PY'
import json, os, stat, sys
top = sys.argv[1]
c = dict(entries=0, files=0, symlinks=0, dangling=0, hardlinked=0, devices=0, dirs=0, bytes=0, xattr_files=0)
def one(p):
    st = os.lstat(p)
    c["entries"] += 1
    m = st.st_mode
    if stat.S_ISREG(m):
        c["files"] += 1
        c["bytes"] += st.st_size
        if st.st_nlink > 1:
            c["hardlinked"] += 1
        try:
            if os.listxattr(p, follow_symlinks=False):
                c["xattr_files"] += 1
        except OSError:
            pass
    elif stat.S_ISLNK(m):
        c["symlinks"] += 1
        t = os.readlink(p)
        if not os.path.exists(os.path.join(os.path.dirname(p), t) if not t.startswith("/") else top + t):
            c["dangling"] += 1
    elif stat.S_ISDIR(m):
        c["dirs"] += 1
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        c["devices"] += 1
for rel in sys.argv[2:]:
    p = os.path.join(top, rel)
    if os.path.isdir(p) and not os.path.islink(p):
        for d, dirs, files in os.walk(p):
            one(d)
            for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                one(os.path.join(d, n))
    else:
        one(p)
print(json.dumps(c))
PY
}
put gen_json "$(shape)"
put gen_extra "$(cat "$work/gen.json")"
for name in compute service; do
    put "image_$name" "$(stat -c %s "$P/install/$xcat_img_dir/$name/rootimg.tar.gz")"
done

sshd_start
say "sshd on 127.0.0.1:$ssh_port, counting relay on 127.0.0.1:$port"

: >"$work/standby.toml"
cat >"$work/bin/hamn-remote" <<EOF
#!/bin/sh
HAMN_CONFIG=$work/standby.toml exec $work/bin/remote-timed $work/bin/hamn "\$@"
EOF
chmod 755 "$work/bin/hamn-remote"
"$hamn" --store "$work/primary-store" init >/dev/null
"$hamn" --store "$work/standby-store" init >/dev/null
mkdir -p "$work/standby-root" "$work/rsync-A"
{
    echo "store = \"$work/primary-store\""
    printf 'paths = ['
    for p in "${paths[@]}"; do printf '"%s", ' "$P/$p"; done
    printf ']\n'
    [[ $GZIP_AWARE == 1 ]] && printf 'gzip_aware = ["%s/install/**/rootimg.tar.gz"]\n' "$P"
    echo
    cat <<EOF
[standby]
url = "ssh://root@127.0.0.1:$port$work/standby-store"
identity = "$ssh_key"
known_hosts = "$ssh_known_hosts"
remote_bin = "$work/bin/hamn-remote"
materialize = true
root = "$work/standby-root"
EOF
} >"$work/hamn.toml"
export HAMN_CONFIG=$work/hamn.toml
"$hamn" config check >"$work/config-check.out" 2>&1 || die "hamn config check: $(cat "$work/config-check.out")"

rsh="ssh -F /dev/null -p $port -i $ssh_key -o UserKnownHostsFile=$ssh_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes"
put ssh_version "$(ssh -V 2>&1)"
rel=()
for p in "${paths[@]}"; do rel+=("$P/./$p"); done
if [[ $RESTIC == 1 ]]; then
    export RESTIC_PASSWORD=hamn-bench RESTIC_CACHE_DIR=$work/restic-cache
    restic init -q -r "$work/restic-repo" >/dev/null
fi

# same COPY: lines of `rsync -naHAX --delete -i` from the primary's paths
# to COPY (0: identical).
same() {
    local copy=$1 n=0 p c
    for p in "${paths[@]}"; do
        if [[ -d $P/$p ]]; then
            c=$(rsync -naHAX --delete -i "$P/$p/" "$copy/$p/" | wc -l)
        else
            c=$(rsync -naHAX -i "$P/$p" "$copy/$p" | wc -l)
        fi
        n=$((n + c))
    done
    echo "$n"
}

run_step() {
    local step=$1
    say "$step: hamn sync"
    drop_caches
    measure_remote "hamn_$step" "${pin_primary[@]}" "$hamn" --json sync
    put "hamn_$step.diff" "$(same "$work/standby-root$P")"
    if [[ $RSYNC == 1 ]]; then
        say "$step: rsync -aHAX --delete"
        drop_caches
        OKRC="0 24" measure_remote "rsyncA_$step" "${pin_primary[@]}" rsync -aHAXR --delete --stats -e "$rsh" \
            --rsync-path="$work/bin/remote-timed rsync" "${rel[@]}" "root@127.0.0.1:$work/rsync-A/"
        put "rsyncA_$step.diff" "$(same "$work/rsync-A")"
    fi
    if [[ $RESTIC == 1 ]]; then
        say "$step: restic backup"
        drop_caches
        measure "restic_$step" restic backup -q -r "$work/restic-repo" "${paths[@]/#/$P/}"
        put "restic_$step.repo" "$(du -sb "$work/restic-repo" | cut -f1)"
    fi
    put "hamn_$step.standby_store" "$(du -sb "$work/standby-store" | cut -f1)"
}

run_step full
for ((night = 1; night <= NIGHTS; night++)); do
    say "night $night: changing the tree"
    put "mutate$night" "$(xcat_night "$P" "$night")"
    run_step "night$night"
done
for ((i = 1; i <= REPS; i++)); do
    run_step "nochange$i"
done
if [[ $RESTIC == 1 ]]; then
    say "restic restore latest"
    drop_caches
    measure restic_restore restic restore -q -r "$work/restic-repo" latest --target "$work/restic-restore"
fi

put du_tree "$(du -sb "$P" | cut -f1)"
put du_primary_store "$(du -sb "$work/primary-store" | cut -f1)"
put du_standby_store "$(du -sb "$work/standby-store" | cut -f1)"
put du_standby_root "$(du -sb "$work/standby-root" | cut -f1)"
[[ $RSYNC == 1 ]] && put du_rsyncA "$(du -sb "$work/rsync-A" | cut -f1)"
[[ $RESTIC == 1 ]] && put du_restic "$(du -sb "$work/restic-repo" | cut -f1)"
put nights "$NIGHTS"
put reps "$REPS"
put rsync "$RSYNC"
put restic "$RESTIC"
put gzip_aware "$GZIP_AWARE"
put dropped "$dropped"
put load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os, re

from report import emit, f, gen, mib, res, secs, work
nights = int(res["nights"])
reps = int(res["reps"])
rsync = res["rsync"] == "1"
restic = res["restic"] == "1"
gzip_aware = res.get("gzip_aware") == "1"
tools = ["hamn"] + (["rsyncA"] if rsync else []) + (["restic"] if restic else [])
label = {"hamn": "hamn sync", "rsyncA": "rsync -aHAX --delete", "restic": "restic backup (local repo)"}


def hj(name):
    return json.load(open(os.path.join(work, name + ".out")))


def nochange(tool):
    runs = sorted((f(f"{tool}_nochange{i}.wall"), f"{tool}_nochange{i}") for i in range(1, reps + 1))
    return runs[(len(runs) - 1) // 2][1]


steps = ["full"] + [f"night{n}" for n in range(1, nights + 1)] + ["nochange"]


def title(s):
    return {"full": "first full sync", "nochange": f"no change (median of {reps})"}.get(s, s.replace("night", "night "))


def name(step, tool):
    return nochange(tool) if step == "nochange" else f"{tool}_{step}"


def wire(n):
    return f(n + ".wire_up", 0) + f(n + ".wire_down", 0)


rows, detail, targets = [], [], []
for step in steps:
    for tool in tools:
        n = name(step, tool)
        cpu_r = f(n + ".remote_cpu", 0)
        note = ""
        if tool == "hamn":
            j = hj(n)
            m = j.get("materialize") or {}
            note = (f"snapshot {j['snapshot']['stats']['duration_ms'] / 1000:.2f} s, push {j['push']['seconds']:.2f} s, "
                    f"deploy {m.get('seconds', 0):.2f} s")
        elif tool == "restic":
            note = f"repo {mib(f(n + '.repo'))}"
        same = res.get(n + ".diff", "")
        rows.append([title(step), label[tool], secs(f(n + ".wall")),
                     f"{f(n + '.user') + f(n + '.sys'):.1f} + {cpu_r:.1f} s",
                     f"{mib(f(n + '.wire_up', 0))} / {mib(f(n + '.wire_down', 0))}" if tool != "restic" else "",
                     f"{mib(f(n + '.rss_kib') * 1024)} / {mib(f(n + '.remote_rss_kib', 0) * 1024)}",
                     "yes" if same == "0" else (f"no ({same} lines)" if same else ""), note])
    n = name(step, "hamn")
    j = hj(n)
    s, p, m = j["snapshot"]["stats"], j["push"], j.get("materialize") or {}
    detail.append([title(step), f"{s['duration_ms'] / 1000:.2f} s", f"{s['files_read']:,} / {s['files_reused']:,}",
                   mib(s["bytes_added_plain"]), mib(s["bytes_added_stored"]), f"{p['blobs_sent']:,}",
                   f"{p['seconds']:.2f} s", f"{m.get('seconds', 0):.2f} s",
                   f"{mib(m.get('bytes_written', 0))} + {mib(m.get('bytes_copied', 0))} copied + "
                   f"{mib(m.get('bytes_linked', 0))} linked",
                   mib(f(n + ".standby_store"))])
    if rsync:
        h, r = name(step, "hamn"), name(step, "rsyncA")
        hw, rw = f(h + ".wall"), f(r + ".wall")
        if step == "full":
            targets.append(["first full sync, deployment included: wall <= 1.0x rsync -aHAX",
                            "MET" if hw <= rw else "MISSED", f"{secs(hw)} vs {secs(rw)} ({hw / rw:.2f}x)"])
        elif step == "nochange":
            targets.append(["no-change night: wall <= 0.3x rsync -aHAX", "MET" if hw <= 0.3 * rw else "MISSED",
                            f"{secs(hw)} vs {secs(rw)} ({hw / rw:.2f}x)"])
        else:
            targets.append([f"{title(step)}: wall <= 0.5x rsync -aHAX", "MET" if hw <= 0.5 * rw else "MISSED",
                            f"{secs(hw)} vs {secs(rw)} ({hw / rw:.2f}x)"])
            hb, rb = f(h + ".wire_up"), f(r + ".wire_up")
            bound = 0.1 if gzip_aware else 1.0
            targets.append([f"{title(step)}: bytes up <= {bound}x rsync -aHAX", "MET" if hb <= bound * rb else "MISSED",
                            f"{mib(hb)} vs {mib(rb)} ({hb / rb:.3f}x)"])
if restic:
    last = f"night{nights}"
    hs, rs = f(f"hamn_{last}.standby_store"), f(f"restic_{last}.repo")
    targets.append([f"standby store after {nights} nights <= 0.5x restic's repository", "MET" if hs <= 0.5 * rs else "MISSED",
                    f"{mib(hs)} vs {mib(rs)} ({hs / rs:.2f}x)"])
rss = max(max(f(name(s, "hamn") + ".rss_kib"), f(name(s, "hamn") + ".remote_rss_kib", 0)) for s in steps) * 1024
targets.append(["peak RSS <= 100 MB on either end", "MET" if rss <= 100e6 else "MISSED", mib(rss)])
diffs = [res.get(name(s, "hamn") + ".diff") for s in steps]
targets.append(["standby tree identical to the primary after every step", "MET" if all(d == "0" for d in diffs) else "MISSED",
                ", ".join(d or "?" for d in diffs)])

x = json.loads(res["gen_extra"])
head = [f"### hamn sync vs rsync -aHAX over ssh on an xCAT-shaped tree: {gen['entries']:,} entries "
        f"({gen['files']:,} files, {gen['symlinks']:,} symlinks ({gen['dangling']:,} dangling), "
        f"{gen['hardlinked']:,} hard-linked files, {gen['devices']} device nodes, {gen['xattr_files']} files with xattrs), "
        f"{gen['dirs']:,} dirs, {mib(gen['bytes'])}", "",
        f"* machine: {res['cpus']} CPUs ({res['cpu_model']}); load average at start {res['load_start']}, at end {res['load_end']}"
        + ("; PIN=1: two one-core machines, the primary's commands on CPU 0, the standby's sshd and all it runs on CPU 1" if res.get("pin") == "1" else ""),
        f"* hamn: {res['hamn_version']}; {res.get('rsync_version', '')}; {res.get('ssh_version', '')}; "
        f"{res.get('restic_version', '')}",
        f"* the tree: images compute and service (debootstrap, Debian 12 minbase + kernel and services), "
        f"rootimg.tar.gz {mib(f('image_compute'))} and {mib(f('image_service'))}; pool of {x['pool_debs']} .debs; "
        f"{x['nodes']} nodes' boot configs; built in {secs(f('gen_wall'))}",
        f"* gzip_aware: {'on (the images rootimg.tar.gz)' if gzip_aware else 'off'}"]
for k in range(1, nights + 1):
    m = json.loads(res[f"mutate{k}"])
    head.append(f"* night {k}: images re-packed: {m['images_repacked'] or 'none'}; {m['pool_added']} debs added to the "
                f"pool, {m['pool_moved'] or 'nothing'} moved; 5 postscripts edited, 1 deleted, 1 added, 40 touched; "
                f"a hosts line")
head.append(f"* page cache dropped before each run: {res['dropped']}")
head.append("* CPU: primary (the command and its children) + standby (everything the standby's sshd ran for the "
            "session, its crypto included); RSS: primary / standby command; identical: `rsync -naHAX --delete -i` "
            "from the primary prints nothing")
tbl = ["| step | tool | wall | CPU primary + standby | wire up / down | peak RSS | identical | notes |",
       "|---|---|---:|---:|---:|---:|---|---|"] + ["| " + " | ".join(r) + " |" for r in rows]
det = ["", "hamn's phases (`hamn --json sync`):", "",
       "| step | snapshot | files read / reused | new plain | new stored | blobs sent | push | deploy | "
       "deploy: written + copied + linked | standby store |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + ["| " + " | ".join(r) + " |" for r in detail]
tg = ["", "| target | verdict | measured |", "|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in targets]
disk = ["", f"Disk at the end: tree {mib(f('du_tree'))}; primary store {mib(f('du_primary_store'))}; standby store "
        f"{mib(f('du_standby_store'))}, standby root (live + previous generation) {mib(f('du_standby_root'))}"
        + (f"; rsync copy {mib(f('du_rsyncA'))}" if rsync else "")
        + (f"; restic repository {mib(f('du_restic'))}, restore of the last snapshot {secs(f('restic_restore.wall'))}"
           if restic else "") + "."]
emit("\n".join(head + [""] + tbl + det + tg + disk) + "\n")
PY
