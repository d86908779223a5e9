#!/usr/bin/env bash
# The SSH path alone: how fast `hamn push` moves a snapshot's bytes to a
# standby through a real sshd on 127.0.0.1, against what OpenSSH's own
# `ssh standby 'cat > /dev/null'` moves on the same machine with each
# cipher. The data is incompressible (as the nightly bytes of packed images
# and .deb files are), so what crosses the link is the data itself.
#
#   bash benches/ssh_path.sh                       # 512 MiB, 3 runs each
#   SIZE_MIB=256 REPS=5 OUT=ssh.md bash benches/ssh_path.sh
#   HAMN_BIN=old/hamn HAMN_REV=abc1234 bash benches/ssh_path.sh   # a baseline
#
# Each run: the page cache is dropped, a fresh standby store is made, and
# `hamn push --no-delta` (no delta search: nothing on the standby to delta
# against) sends the one snapshot; `ssh -c CIPHER ... 'cat > /dev/null'`
# reads the same files. Reported: median wall, MB/s, CPU of the client and
# of the standby side (sshd and what it ran), the cipher hamn negotiated.
#
# Environment (besides benches/lib.sh's DROP, HAMN_BIN, HAMN_REV, OUT,
# BENCH_TMP, KEEP, SSHD_CONFIG_EXTRA): SIZE_MIB (default 512), REPS
# (default 3), CAT_CIPHERS (the ciphers of the `ssh` rows, default
# "aes256-gcm@openssh.com chacha20-poly1305@openssh.com"). PROXY
# defaults to 0 here: the byte-counting relay would be the bottleneck.
set -euo pipefail
PROXY=${PROXY:-0}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_MIB=${SIZE_MIB:-512}
REPS=${REPS:-3}
# The ciphers `ssh ... cat` is timed with (those the standby's sshd allows).
read -r -a CAT_CIPHERS <<<"${CAT_CIPHERS:-aes256-gcm@openssh.com chacha20-poly1305@openssh.com}"

bench_setup ssh_path
sshd_start
put gen_json "{\"entries\": $((SIZE_MIB / 64 + 1)), \"files\": $((SIZE_MIB / 64)), \"bytes\": $((SIZE_MIB << 20))}"
put reps "$REPS"
put size_mib "$SIZE_MIB"
put cat_ciphers "${CAT_CIPHERS[*]}"

src=$work/src
mkdir -p "$src"
say "writing $SIZE_MIB MiB of seeded incompressible data"
python3 - "$src" "$SIZE_MIB" "$SEED" <<'PY'
import random, sys
d, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
for i in range(mib // 64):
    with open(f"{d}/image{i:02d}.bin", "wb") as fh:
        for _ in range(64):
            fh.write(r.randbytes(1 << 20))
PY
cat >"$work/bin/hamn-remote" <<EOF
#!/bin/sh
exec $work/bin/remote-timed $hamn "\$@"
EOF
chmod 755 "$work/bin/hamn-remote"
"$hamn" --store "$work/primary" init >/dev/null
"$hamn" --store "$work/primary" snapshot "$src" >/dev/null

ssh_opts=(-p "$port" -i "$ssh_key" -o UserKnownHostsFile="$ssh_known_hosts" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o Compression=no)
for ((rep = 1; rep <= REPS; rep++)); do
    rm -rf "$work/standby"
    "$hamn" --store "$work/standby" init >/dev/null
    drop_caches
    measure_remote "push$rep" "$hamn" -v --store "$work/primary" --json push --no-delta \
        --to "ssh://root@127.0.0.1:$port$work/standby" --identity "$ssh_key" \
        --known-hosts "$ssh_known_hosts" --remote-bin "$work/bin/hamn-remote"
    for c in "${CAT_CIPHERS[@]}"; do
        drop_caches
        measure_remote "cat-$c-$rep" bash -c 'cat "$1"/*.bin | ssh "${@:2}" "cat > /dev/null"' - "$src" \
            "${ssh_opts[@]}" -c "$c" root@127.0.0.1
    done
done
put cipher "$(grep -m1 ': cipher ' "$work/push1.err" | sed 's/.*: cipher //')"
put dropped "$dropped"
put load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH="$here" python3 - "$results" "$work" ${OUT:+"$OUT"} <<'PY'
import json, os, statistics

from report import emit, f, res, work

reps = int(res["reps"])
size = int(res["size_mib"]) << 20


def row(label, prefix):
    walls = [f(f"{prefix}{r}.wall") for r in range(1, reps + 1)]
    mid = sorted(range(reps), key=lambda i: walls[i])[reps // 2] + 1
    w = f(f"{prefix}{mid}.wall")
    cpu = f(f"{prefix}{mid}.user") + f(f"{prefix}{mid}.sys")
    return (f"| {label} | {w:.2f} s ({min(walls):.2f}-{max(walls):.2f}) | {size / w / 1e6:.0f} |"
            f" {cpu:.2f} s | {f(f'{prefix}{mid}.remote_cpu'):.2f} s |")


sent = json.load(open(os.path.join(work, "push1.out")))["push"]["bytes_sent"]
lines = [
    f"### The SSH path: {int(res['size_mib'])} MiB of incompressible data, {reps} runs each (median, range)",
    "",
    f"* machine: {res['cpus']} CPUs ({res['cpu_model']}); load at start {res['load_start']}, at end {res['load_end']}",
    f"* hamn: {res['hamn_version']}; {res['sshd_version']}; page cache dropped: {res['dropped']}",
    f"* hamn negotiated: {res['cipher']}; the push sent {sent / 1e6:.1f} MB",
    "",
    "| command | wall | MB/s | CPU, client | CPU, standby side |",
    "|---|---:|---:|---:|---:|",
    row("`hamn push --no-delta`", "push"),
] + [row(f"`ssh -c {c} standby 'cat > /dev/null'`", f"cat-{c}-") for c in res["cat_ciphers"].split()]
emit("\n".join(lines) + "\n")
PY
