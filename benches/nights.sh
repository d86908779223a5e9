#!/usr/bin/env bash
# The nightly job end to end, over a real sshd on 127.0.0.1: `hamn sync`
# (snapshot, push, read-back, deployment on the standby) side by side with
# the rsync cron lines it replaces, `rsync -Lprogtz --delete` and
# `rsync -aHAX --delete`, in one run, on the same generated xCAT
# /install-like tree (benches/gen_tree.py), through the same sshd.
#
#   bash benches/nights.sh                  # ~1 GB, 30k entries
#   SMALL=1 bash benches/nights.sh          # ~100 MB, 5k entries (quick)
#   OUT=results.md bash benches/nights.sh   # also write the tables to results.md
#
# Steps: a full first sync of the generated tree; NIGHTS nights of change
# (`gen_tree.py --mutate 1..NIGHTS`), each followed by a sync; then syncs
# with nothing changed: the first one after the last night (reported on its
# own: hamn's standby then re-applies that night's change, see
# docs/performance.md), REPS more with the page cache dropped and REPS
# with it warm, after two warm-up runs (medians reported). Each step runs
# hamn, then rsync -Lprogtz, then rsync -aHAX, each into its own standby
# copy, the page cache dropped before each (except in the warm no-change
# runs).
#
# Reported for each step and tool: wall time; CPU time (user+sys) on the
# primary (the measured command and its children: rsync's ssh) and on the
# standby (every process the standby's sshd ran for the session: sshd's
# crypto, `hamn serve` or the remote rsync, from the listener's cumulative
# child CPU); bytes on the wire each way, counted by a relay in front of
# sshd (benches/byteproxy.py: the encrypted SSH stream, the same place for
# every tool) and by each tool itself (hamn: `--json` push.bytes_sent /
# bytes_received, protocol bytes; rsync: --stats "Total bytes sent /
# received"); peak RSS on each side (/usr/bin/time -v; the standby command
# is started through a /usr/bin/time wrapper: hamn's standby.remote_bin,
# rsync's --rsync-path). hamn's own figures per step (snapshot, push,
# deployment) come from its JSON.
#
# Targets checked: on a change night, hamn's bytes on the wire <= rsync's
# and hamn's wall <= half of rsync's; a no-change sync under 1 s plus the
# cost of its snapshot; the first full sync within 1.5x of rsync -aHAX.
#
# Environment (besides those of benches/lib.sh: SMALL, FILES, BYTES, SEED,
# DROP, HAMN_BIN, HAMN_REV, OUT, BENCH_TMP, KEEP, PROXY):
#   NIGHTS=N   nights of change (default 3)
#   REPS=N     no-change syncs of each tool; the median is reported (default 3)
#   RSYNC=0    hamn only
#   NODELAY=1  also run a second, independent hamn (its own stores and
#              standby root) with benches/tcp_nodelay.c preloaded, which
#              sets TCP_NODELAY on its SSH socket: a diagnostic column
#              showing the cost of Nagle's algorithm on hamn's protocol
#              round trips (needs a C compiler)
#
# Needs root (its own sshd, root login by key on 127.0.0.1 only), rsync,
# openssh-server (installed with apt-get when missing). The temp dir needs
# about 8x BYTES: the tree, two stores, hamn's live and previous trees and
# the two rsync copies (NODELAY=1: about 12x).
#
# Comparing a change against a baseline: the tree and each night depend only
# on FILES/BYTES/SEED, so run the script on both commits with the same
# settings (HAMN_BIN=... to pin a binary; OUT=before.md, then OUT=after.md)
# and compare the tables. The rsync columns are measured in the same run, so
# the ratios stay comparable across machines and load; the load average is
# in each table.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NIGHTS=${NIGHTS:-3}
REPS=${REPS:-3}
RSYNC=${RSYNC:-1}
NODELAY=${NODELAY:-0}

bench_setup nights
command -v rsync >/dev/null || as_root_install rsync || die "rsync is needed: apt-get install rsync"
command -v ssh >/dev/null || as_root_install openssh-client || die "ssh is needed: apt-get install openssh-client"
put rsync_version "$(rsync --version | head -1)"

tree=$work/primary/install
mkdir -p "$work/primary"
gen_tree "$tree"

sshd_start
say "sshd on 127.0.0.1:$ssh_port, counting relay on 127.0.0.1:$port"

# hamn: the primary's store, the standby's store and deployment root
# (suffix -nd: the second, independent set of NODELAY=1).
: >"$work/standby.toml"
cat >"$work/bin/hamn-remote" <<EOF
#!/bin/sh
HAMN_CONFIG=$work/standby.toml exec $work/bin/remote-timed $work/bin/hamn "\$@"
EOF
chmod 755 "$work/bin/hamn-remote"
hamn_setup() {
    local sfx=$1
    "$hamn" --store "$work/primary-store$sfx" init >/dev/null
    "$hamn" --store "$work/standby-store$sfx" init >/dev/null
    mkdir -p "$work/standby-root$sfx"
    standby_toml "$work/primary-store$sfx" "$tree" "$work/standby-store$sfx" "$work/standby-root$sfx" \
        >"$work/hamn$sfx.toml"
    HAMN_CONFIG=$work/hamn$sfx.toml "$hamn" config check >"$work/config-check.out" 2>&1 ||
        die "hamn config check: $(cat "$work/config-check.out")"
}
hamn_setup ""
export HAMN_CONFIG=$work/hamn.toml
if [[ $NODELAY == 1 ]]; then
    cc -shared -fPIC -O2 -o "$work/bin/tcp_nodelay.so" "$here/tcp_nodelay.c" -ldl ||
        die "NODELAY=1 needs a C compiler (cc) for benches/tcp_nodelay.c"
    hamn_setup -nd
fi

rsh="ssh -F /dev/null -p $port -i $ssh_key -o UserKnownHostsFile=$ssh_known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes"
put ssh_version "$(ssh -V 2>&1)"

run_step() {
    local step=$1
    say "$step: hamn sync"
    drop_caches
    measure_remote "hamn_$step" "$hamn" --json sync
    if [[ $NODELAY == 1 ]]; then
        say "$step: hamn sync with TCP_NODELAY (diagnostic)"
        drop_caches
        measure_remote "hamnN_$step" env LD_PRELOAD="$work/bin/tcp_nodelay.so" HAMN_CONFIG="$work/hamn-nd.toml" \
            "$hamn" --json sync
    fi
    if [[ $RSYNC == 1 ]]; then
        # -L meets the tree's absolute symlinks, which do not resolve here:
        # rsync then exits 23 and skips --delete (as on a real node).
        say "$step: rsync -Lprogtz --delete"
        drop_caches
        OKRC="0 23 24" measure_remote "rsyncL_$step" rsync -Lprogtz --delete --stats -e "$rsh" \
            --rsync-path="$work/bin/remote-timed rsync" "$tree/" "root@127.0.0.1:$work/rsync-L/"
        say "$step: rsync -aHAX --delete"
        drop_caches
        OKRC="0 24" measure_remote "rsyncA_$step" rsync -aHAX --delete --stats -e "$rsh" \
            --rsync-path="$work/bin/remote-timed rsync" "$tree/" "root@127.0.0.1:$work/rsync-A/"
    fi
}

run_step full
for ((night = 1; night <= NIGHTS; night++)); do
    mutate "$tree" "$night"
    run_step "night$night"
done
for ((i = 0; i <= REPS; i++)); do
    run_step "nochange$i"
done
# Warm-up: hamn's standby walks its previous generation, which is the
# other of two trees each time, so two runs warm both.
for i in 1 2; do
    NODROP=1 run_step "nochangewarmup$i"
done
for ((i = 1; i <= REPS; i++)); do
    NODROP=1 run_step "nochangewarm$i"
done

# The copies equal the primary? (itemized differences of a dry run; the
# rsync -L copy differs by design: links expanded, deletions skipped.)
live=$work/standby-root$tree
put diff_hamn "$(rsync -naHAX --delete -i "$tree/" "$live/" | wc -l)"
[[ $NODELAY == 1 ]] && put diff_hamnN "$(rsync -naHAX --delete -i "$tree/" "$work/standby-root-nd$tree/" | wc -l)"
[[ $RSYNC == 1 ]] && put diff_rsyncA "$(rsync -naHAX --delete -i "$tree/" "$work/rsync-A/" | wc -l)"
put du_tree "$(du -sb "$tree" | cut -f1)"
put du_primary_store "$(du -sb "$work/primary-store" | cut -f1)"
put du_standby_store "$(du -sb "$work/standby-store" | cut -f1)"
put du_standby_live "$(du -sb "$live" | cut -f1)"
put du_standby_gen "$(du -sb "$(dirname "$live")/.$(basename "$live").hamn" 2>/dev/null | cut -f1 || echo 0)"
if [[ $RSYNC == 1 ]]; then
    put du_rsyncL "$(du -sb "$work/rsync-L" | cut -f1)"
    put du_rsyncA "$(du -sb "$work/rsync-A" | cut -f1)"
fi
put nights "$NIGHTS"
put reps "$REPS"
put rsync "$RSYNC"
put nodelay "$NODELAY"
put dropped "$dropped"
put load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os, re

from report import emit, f, gen, mib, night_line, res, secs, work
nights = int(res["nights"])
reps = int(res["reps"])
rsync = res["rsync"] == "1"
proxy = res.get("proxy", "1") == "1"
nodelay = res.get("nodelay") == "1"
hamns = ["hamn"] + (["hamnN"] if nodelay else [])
tools = hamns + (["rsyncL", "rsyncA"] if rsync else [])
label = {"hamn": "hamn sync", "hamnN": "hamn sync, TCP_NODELAY shim (diagnostic)",
         "rsyncL": "rsync -Lprogtz --delete", "rsyncA": "rsync -aHAX --delete"}


def hamn_json(name):
    return json.load(open(os.path.join(work, name + ".out")))


def rsync_stats(name):
    text = open(os.path.join(work, name + ".out")).read()
    out = {}
    for key, pat in [("sent", r"Total bytes sent: ([\d,]+)"), ("received", r"Total bytes received: ([\d,]+)"),
                     ("xfer_size", r"Total transferred file size: ([\d,]+)"),
                     ("files_xfer", r"Number of regular files transferred: ([\d,]+)"),
                     ("literal", r"Literal data: ([\d,]+)"), ("matched", r"Matched data: ([\d,]+)")]:
        m = re.search(pat, text)
        out[key] = int(m.group(1).replace(",", "")) if m else 0
    err = open(os.path.join(work, name + ".err")).read()
    out["no_referent"] = err.count("symlink has no referent")
    out["delete_skipped"] = "skipping file deletion" in err
    return out


def own(name, tool):
    if tool.startswith("hamn"):
        p = hamn_json(name)["push"]
        return p["bytes_sent"], p["bytes_received"]
    s = rsync_stats(name)
    return s["sent"], s["received"]


def wire(name, tool):
    """Bytes up + down: the relay's count, else the tool's own."""
    if proxy:
        return f(name + ".wire_up") + f(name + ".wire_down")
    a, b = own(name, tool)
    return a + b


steps = ["full"] + [f"night{n}" for n in range(1, nights + 1)]
nc_steps = ["nochange0", "nochange", "nochangewarm"]


def nochange_median(tool, kind="nochange"):
    runs = sorted((f(f"{tool}_{kind}{i}.wall"), f"{tool}_{kind}{i}") for i in range(1, reps + 1))
    return runs[(len(runs) - 1) // 2][1]


def step_name(step, tool):
    if step in ("nochange", "nochangewarm"):
        return nochange_median(tool, step)
    return f"{tool}_{step}"


def title(step):
    if step == "full":
        return "full first sync"
    if step == "nochange0":
        return f"no change, first sync after night {nights}"
    if step == "nochange":
        return f"no change (median of {reps})"
    if step == "nochangewarm":
        return f"no change, page cache warm (median of {reps})"
    n = int(step[5:])
    return f"night {n}"


rows = []
for step in steps + nc_steps:
    for tool in tools:
        name = step_name(step, tool)
        cpu_l = f(name + ".user") + f(name + ".sys")
        cpu_r = f(name + ".remote_cpu")
        sent, recv = own(name, tool)
        w = (f"{mib(f(name + '.wire_up'))} / {mib(f(name + '.wire_down'))}" if proxy else "")
        note = ""
        if not tool.startswith("hamn"):
            st = rsync_stats(name)
            note = f"{st['files_xfer']:,} files, {mib(st['xfer_size'])}"
            if st["no_referent"]:
                note += f"; {st['no_referent']} dangling links"
            if st["delete_skipped"]:
                note += "; --delete skipped (I/O error)"
        else:
            j = hamn_json(name)
            m = j.get("materialize") or {}
            note = (f"snapshot {j['snapshot']['stats']['duration_ms'] / 1000:.2f} s, push "
                    f"{j['push']['seconds']:.2f} s, deploy {m.get('seconds', 0):.2f} s")
        rows.append([title(step), label[tool], secs(f(name + ".wall")),
                     f"{cpu_l:.1f} + {cpu_r:.1f} s", w, f"{mib(sent)} / {mib(recv)}",
                     f"{mib(f(name + '.rss_kib') * 1024)} / {mib(f(name + '.remote_rss_kib') * 1024)}",
                     res.get(name + ".load", ""), note])

detail = []
for step, tool in [(s, t) for t in hamns for s in steps + nc_steps]:
    name = step_name(step, tool)
    j = hamn_json(name)
    s = j["snapshot"]["stats"]
    p = j["push"]
    m = j.get("materialize") or {}
    detail.append([title(step) + ("" if tool == "hamn" else ", TCP_NODELAY shim"), f"{s['duration_ms'] / 1000:.2f} s", f"{s['files_read']:,} / {s['files_reused']:,}",
                   mib(s["bytes_added_plain"]), mib(s["bytes_added_stored"]), f"{p['blobs_sent']:,}",
                   f"{p['seconds']:.2f} s", f"{j.get('verified_chunks', 0)}",
                   f"{m.get('seconds', 0):.2f} s",
                   f"{mib(m.get('bytes_written', 0))} + {mib(m.get('bytes_copied', 0))} copied",
                   f"{m.get('files_written', 0):,} / {m.get('entries_removed', 0):,} / {m.get('entries_reowned', 0):,}"])

targets = []
for hm in hamns:
    tag = "" if hm == "hamn" else " [TCP_NODELAY shim]"
    if rsync:
        for n in range(1, nights + 1):
            h = f"{hm}_night{n}"
            for t in ("rsyncA", "rsyncL"):
                r = f"{t}_night{n}"
                hb, rb = wire(h, hm), wire(r, t)
                hw, rw = f(h + ".wall"), f(r + ".wall")
                targets.append([f"night {n}: bytes on the wire (up+down) <= {label[t]}{tag}",
                                "MET" if hb <= rb else "MISSED", f"{mib(hb)} vs {mib(rb)} ({hb / rb:.2f}x)"])
                targets.append([f"night {n}: wall <= half of {label[t]}{tag}",
                                "MET" if hw <= rw / 2 else "MISSED", f"{secs(hw)} vs {secs(rw)} ({hw / rw:.2f}x)"])
        hw, rw = f(f"{hm}_full.wall"), f("rsyncA_full.wall")
        targets.append([f"full first sync: wall <= 1.5x rsync -aHAX{tag}", "MET" if hw <= 1.5 * rw else "MISSED",
                        f"{secs(hw)} vs {secs(rw)} ({hw / rw:.2f}x)"])
    for kind, what in [("nochange", "page cache dropped"), ("nochangewarm", "page cache warm")]:
        nc = nochange_median(hm, kind)
        snap_s = hamn_json(nc)["snapshot"]["stats"]["duration_ms"] / 1000
        w = f(nc + ".wall")
        targets.append([f"no-change sync ({what}): wall < 1 s + its snapshot{tag}", "MET" if w < 1 + snap_s else "MISSED",
                        f"{secs(w)}, snapshot {secs(snap_s)}: {secs(w - snap_s)} besides the snapshot"])

head = []
head.append(f"### hamn sync vs rsync over ssh, nightly: {gen['entries']:,} entries ({gen['files']:,} files, "
            f"{gen['symlinks']:,} symlinks, {gen['hardlinks']:,} hardlinks), {gen['dirs']:,} dirs, "
            f"{mib(gen['bytes'])} plain; seed {res['seed']}")
head.append("")
head.append(f"* machine: {res['cpus']} CPUs ({res['cpu_model']}); load average at start {res['load_start']}, "
            f"at end {res['load_end']} (the `load` column: 1-min load when each run ended)")
head.append(f"* hamn: {res['hamn_version']}; {res.get('rsync_version', '')}; {res.get('ssh_version', '')}; "
            f"sshd: {res.get('sshd_version', '')}")
for n in range(1, nights + 1):
    head.append(night_line(n))
head.append(f"* page cache dropped before each run: {res['dropped']} (except the warm no-change runs)")
head.append("* hamn's deploy seconds (materialize.seconds of its JSON) leave out the deployment's planning (one lstat "
            "and llistxattr per entry on the standby), which is in the wall time")
head.append("* sshd on 127.0.0.1 with its own host key; every client goes through the byte-counting relay "
            "benches/byteproxy.py" if proxy else "* PROXY=0: clients connect straight to sshd; bytes are the tools' own counts")
head.append("* CPU: primary (the command and its children, rsync's ssh included) + standby (everything the "
            "standby's sshd ran for the session, its crypto included); peak RSS: primary / standby command")
head.append("* wire: TCP payload through the relay (SSH-encrypted), client to standby / back; own count: hamn's "
            "protocol bytes (push.bytes_sent / bytes_received), rsync's --stats total bytes sent / received")
tbl = ["| step | tool | wall | CPU primary + standby | wire up / down | own count sent / received | "
       "peak RSS primary / standby | load | notes |",
       "|---|---|---:|---:|---:|---:|---:|---:|---|"]
for r in rows:
    tbl.append("| " + " | ".join(r) + " |")
det = ["", "hamn's own figures per step (from `hamn --json sync`):", "",
       "| step | snapshot | files read / reused | new plain | new stored | blobs sent | push | "
       "read back | deploy | deploy: rebuilt from chunks + copied from live | files written / removed / re-owned |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in detail:
    det.append("| " + " | ".join(r) + " |")
tg = ["", "| target | verdict | measured |", "|---|---|---|"]
for r in targets:
    tg.append("| " + " | ".join(r) + " |")
disk = ["", f"Disk at the end: tree {mib(f('du_tree'))}; primary store {mib(f('du_primary_store'))}; "
        f"standby: store {mib(f('du_standby_store'))} + live tree {mib(f('du_standby_live'))} + previous "
        f"generation {mib(f('du_standby_gen'))}" +
        (f"; rsync -L copy {mib(f('du_rsyncL'))}, rsync -aHAX copy {mib(f('du_rsyncA'))}" if rsync else "") + ".",
        f"Differences from the primary at the end (`rsync -naHAX --delete -i` lines): hamn's live tree "
        f"{res['diff_hamn']}" + (f", TCP_NODELAY hamn's {res['diff_hamnN']}" if nodelay else "") + (f", rsync -aHAX copy {res['diff_rsyncA']}" if rsync else "") + "."]
text = "\n".join(head + [""] + tbl + det + tg + disk) + "\n"
emit(text)
PY
