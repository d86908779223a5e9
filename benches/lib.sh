# Shared helpers of the shell benchmarks (nights.sh, materialize.sh, gc.sh).
# Sourced, not run. The conventions are those of snapshot.sh: one fresh temp
# dir removed at the end, a private copy of the hamn binary, results as
# "key<TAB>value" lines turned into a markdown table by an embedded Python
# script (with benches/report.py), /usr/bin/time -v for CPU and peak RSS, the page cache dropped
# before cold runs when permitted.
#
# Environment understood by every script that sources this file:
#   SMALL=1        ~100 MB / 5k entries instead of ~1 GB / 30k
#   FILES=N        entries in the tree (default 30000, SMALL 5000)
#   BYTES=SIZE     bytes in the tree (default 1G, SMALL 100M)
#   SEED=N         generator seed (default 1)
#   DROP=0         do not drop the page cache before measured runs
#   HAMN_BIN=PATH  use this hamn instead of `cargo build --release`
#   HAMN_REV=TEXT  with HAMN_BIN: the commit it was built from, for the table
#   OUT=FILE       also write the markdown tables to FILE
#   BENCH_TMP=DIR  where the temp dir goes (default $TMPDIR or /tmp)
#   KEEP=1         keep the temp dir
#   PROXY=0        (scripts with an sshd) connect straight to sshd, without
#                  the byte-counting relay; no wire byte counts then
#   PIN=1          (scripts with an sshd) two machines of one core each on
#                  this one: the primary's commands run on CPU 0
#                  (taskset -c 0, via "${pin_primary[@]}"), sshd and all it
#                  starts (the standby's side) on CPU 1; the byte-counting
#                  relay is left to float
#   SSHD_CONFIG_EXTRA=TEXT  (scripts with an sshd) more sshd_config lines,
#                  e.g. "Ciphers aes128-ctr" to see what another cipher costs
#   FS=xfs|btrfs   put the temp dir on a fresh file system of that type
#                  (XFS with reflinks, as RHEL makes /install), in a sparse
#                  image loop-mounted for the run (root; installs xfsprogs
#                  or btrfs-progs when missing); FS_SIZE=SIZE its size
#                  (default 16G, SMALL 4G)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

SMALL=${SMALL:-0}
# PIN=1: the primary's side on CPU 0 (sshd_start puts the standby's on CPU 1).
pin_primary=()
[[ ${PIN:-0} == 1 ]] && pin_primary=(taskset -c 0)
SEED=${SEED:-1}
KEEP=${KEEP:-0}
DROP=${DROP:-1}
if [[ $SMALL == 1 ]]; then
    files=${FILES:-5000}
    bytes=${BYTES:-100M}
else
    files=${FILES:-30000}
    bytes=${BYTES:-1G}
fi

say() { printf '%s\n' "$bench_name: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

as_root_install() {
    # Debian packages, only when missing and only as root.
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian package(s): $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; } ||
            return 1
    else
        return 1
    fi
}

# Processes this benchmark started (pids), stopped by cleanup.
started_pids=()

stop_pid_tree() {
    # PID and the children it has now (the sessions of an sshd), by id.
    local pid=$1 kids
    [[ -d /proc/$pid ]] || return 0
    kids=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
    kill "$pid" 2>/dev/null || true
    for k in $kids; do kill -9 "$k" 2>/dev/null || true; done
    for _ in $(seq 50); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local p
    for p in "${started_pids[@]}"; do stop_pid_tree "$p"; done
    started_pids=()
    if [[ -n ${work:-} && -d $work ]]; then
        if [[ $KEEP == 1 ]]; then
            say "kept $work"
        else
            rm -rf "$work"
        fi
    fi
    if [[ -n ${fs_dir:-} && $KEEP != 1 ]]; then
        umount "$fs_dir/mnt" 2>/dev/null || umount -l "$fs_dir/mnt" 2>/dev/null || true
        rm -rf "$fs_dir"
    fi
}

# fs_mount: FS=xfs|btrfs, a fresh file system in a sparse image under
# BENCH_TMP (or TMPDIR, /tmp), loop-mounted; BENCH_TMP then points into it.
fs_mount() {
    local kind=$1 base=${BENCH_TMP:-${TMPDIR:-/tmp}} size
    local -a mkfs
    [[ $(id -u) == 0 ]] || die "FS=$kind needs root (a loop mount)"
    case $kind in
    xfs)
        command -v mkfs.xfs >/dev/null || as_root_install xfsprogs || die "mkfs.xfs is missing: apt-get install xfsprogs"
        mkfs=(mkfs.xfs -q -m reflink=1)
        ;;
    btrfs)
        command -v mkfs.btrfs >/dev/null || as_root_install btrfs-progs || die "mkfs.btrfs is missing: apt-get install btrfs-progs"
        mkfs=(mkfs.btrfs -q)
        ;;
    *) die "FS must be xfs or btrfs, not '$kind'" ;;
    esac
    if [[ $SMALL == 1 ]]; then size=${FS_SIZE:-4G}; else size=${FS_SIZE:-16G}; fi
    fs_dir=$(mktemp -d "$base/hamn-fs.XXXXXX")
    truncate -s "$size" "$fs_dir/image" || die "cannot make a $size image in $base"
    "${mkfs[@]}" "$fs_dir/image" >/dev/null || die "${mkfs[*]} failed"
    mkdir "$fs_dir/mnt"
    mount -o loop "$fs_dir/image" "$fs_dir/mnt" || die "mount -o loop failed (no loop device?)"
    BENCH_TMP=$fs_dir/mnt
}

# bench_setup NAME: temp dir, results file, private hamn binary, empty config.
bench_setup() {
    bench_name=$1
    command -v python3 >/dev/null || die "python3 is needed (benches/gen_tree.py)"
    [[ -x /usr/bin/time ]] || as_root_install time || die "/usr/bin/time is needed: apt-get install time"
    trap bench_cleanup EXIT
    [[ -z ${FS:-} ]] || fs_mount "$FS"
    work=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/hamn-$bench_name.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    results=$work/results.txt
    : >"$results"
    mkdir -p "$work/bin"
    if [[ -n ${HAMN_BIN:-} ]]; then
        cp "$HAMN_BIN" "$work/bin/hamn"
        put hamn_version "$("$work/bin/hamn" --version 2>/dev/null || echo "$HAMN_BIN")${HAMN_REV:+ ($HAMN_REV)}"
    else
        say "building hamn (release)"
        (cd "$repo" && cargo build --release --quiet --bin hamn) || die "cargo build --release failed"
        cp "$repo/target/release/hamn" "$work/bin/hamn"
        local rev
        rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
        put hamn_version "$("$work/bin/hamn" --version) ($rev)"
    fi
    hamn=$work/bin/hamn
    : >"$work/empty.toml"
    export HAMN_CONFIG=$work/empty.toml
    put cpus "$(nproc)"
    put cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    put seed "$SEED"
    put load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
    put filesystem "$(df --output=fstype "$work" | tail -1 | tr -d ' ')${FS:+ (loop-mounted image, ${FS_SIZE:-default size})}"
    dropped=no
    [[ $DROP == 1 ]] || dropped=disabled
}

put() { printf '%s\t%s\n' "$1" "$2" >>"$results"; }

# gen_tree DIR: the seeded tree; its JSON summary is stored as gen_json.
gen_tree() {
    say "generating the tree: --files $files --bytes $bytes --seed $SEED"
    local t0 t1
    t0=$(date +%s.%N)
    python3 "$here/gen_tree.py" "$1" --files "$files" --bytes "$bytes" --seed "$SEED" >"$work/gen.json"
    t1=$(date +%s.%N)
    put gen_json "$(cat "$work/gen.json")"
    put gen_wall "$(awk "BEGIN { print $t1 - $t0 }")"
}

# mutate DIR NIGHT [ARGS...]: one night of change; its JSON summary is mutateN.
mutate() {
    local dir=$1 night=$2
    shift 2
    say "night $night: mutating the tree"
    python3 "$here/gen_tree.py" "$dir" --mutate "$night" --seed "$SEED" "$@" >"$work/mutate$night.json"
    put "mutate$night" "$(cat "$work/mutate$night.json")"
}

drop_caches() {
    [[ $DROP == 1 && ${NODROP:-0} != 1 ]] || return 0
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        dropped=yes
    fi
}

# measure NAME CMD...: wall (s), user+sys CPU (s), peak RSS (KiB) of CMD
# and its children. Exit statuses listed in $OKRC (default "0") are
# accepted and recorded as NAME.rc; any other ends the benchmark.
measure() {
    local name=$1
    shift
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    t1=$(date +%s.%N)
    if [[ " ${OKRC:-0} " != *" $rc "* ]]; then
        say "$name failed (exit $rc): $*"
        tail -5 "$work/$name.err" >&2
        exit 1
    fi
    put "$name.rc" "$rc"
    put "$name.wall" "$(awk "BEGIN { print $t1 - $t0 }")"
    put "$name.user" "$(sed -n 's/^[[:space:]]*User time (seconds): //p' "$work/$name.time")"
    put "$name.sys" "$(sed -n 's/^[[:space:]]*System time (seconds): //p' "$work/$name.time")"
    put "$name.rss_kib" "$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$work/$name.time")"
    put "$name.fs_out" "$(sed -n 's/^[[:space:]]*File system outputs: //p' "$work/$name.time")"
    put "$name.load" "$(cut -d' ' -f1 /proc/loadavg)"
}

# ---------------------------------------------------------------- sshd

# sshd_start: a private OpenSSH server on a free 127.0.0.1 port, as
# tests/integration/sshd.rs starts it (own host key, config and
# authorized_keys under $work/sshd), and a byte-counting TCP proxy in front
# of it (benches/byteproxy.py) so both hamn and rsync are measured at the
# same place: the TCP payload between client and standby. Sets ssh_port
# (sshd), port (the proxy: what the clients use), ssh_key, ssh_known_hosts,
# sshd_pid, proxy_pid.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sshd_start() {
    [[ $(id -u) == 0 ]] || die "the sshd benchmark needs root (it starts its own sshd and logs in as root)"
    [[ -x /usr/sbin/sshd ]] || as_root_install openssh-server || die "/usr/sbin/sshd is missing: apt-get install openssh-server"
    command -v ssh-keygen >/dev/null || as_root_install openssh-client || die "ssh-keygen is missing"
    local d=$work/sshd
    mkdir -p "$d" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -C hamn-bench -f "$d/host_key"
    ssh-keygen -q -t ed25519 -N '' -C hamn-bench -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"
    ssh_port=$(free_port)
    cat >"$d/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
LogLevel ERROR
MaxStartups 50
${SSHD_CONFIG_EXTRA:-}
EOF
    local pin_standby=()
    if [[ ${PIN:-0} == 1 ]]; then
        command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux)"
        (($(nproc) >= 2)) || die "PIN=1 needs 2 CPUs"
        pin_standby=(taskset -c 1)
    fi
    put pin "${PIN:-0}"
    "${pin_standby[@]}" /usr/sbin/sshd -D -e -f "$d/sshd_config" </dev/null >/dev/null 2>"$d/sshd.log" &
    sshd_pid=$!
    started_pids+=("$sshd_pid")
    if [[ ${PROXY:-1} == 1 ]]; then
        port=$(free_port)
        python3 "$here/byteproxy.py" "$port" "$ssh_port" "$d/proxy.json" </dev/null >/dev/null 2>"$d/proxy.log" &
        proxy_pid=$!
        started_pids+=("$proxy_pid")
    else
        # PROXY=0: clients go straight to sshd; no wire byte counts.
        port=$ssh_port
        proxy_pid=
        echo '{"opened": 0, "closed": 0, "up": 0, "down": 0}' >"$d/proxy.json"
    fi
    put proxy "${PROXY:-1}"
    local i
    for i in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$ssh_port" 2>/dev/null &&
            [[ -s $d/proxy.json ]]; then
            break
        fi
        [[ $i == 100 ]] && die "sshd or the proxy did not start (see $d/sshd.log, $d/proxy.log)"
        sleep 0.1
    done
    local kt kb
    read -r kt kb _ <"$d/host_key.pub"
    printf '[127.0.0.1]:%s %s %s\n[127.0.0.1]:%s %s %s\n' "$port" "$kt" "$kb" "$ssh_port" "$kt" "$kb" >"$d/known_hosts"
    ssh_key=$d/client_key
    ssh_known_hosts=$d/known_hosts
    # The standby ends are wrapped in /usr/bin/time so their CPU and peak
    # RSS are recorded too: one file per session in $work/remote-times.
    mkdir -p "$work/remote-times"
    cat >"$work/bin/remote-timed" <<EOF
#!/bin/sh
exec /usr/bin/time -v -o "$work/remote-times/\$(date +%s%N).\$\$" "\$@"
EOF
    chmod 755 "$work/bin/remote-timed"
    put "sshd_version" "$(/usr/sbin/sshd -V 2>&1 | head -1 || true)"
}

# standby_toml PRIMARY_STORE TREE STANDBY_STORE ROOT: a primary's config
# managing TREE, with one standby behind the private sshd that deploys
# into ROOT (its `hamn serve` is $work/bin/hamn-remote).
standby_toml() {
    cat <<EOF
store = "$1"
paths = ["$2"]

[standby]
url = "ssh://root@127.0.0.1:$port$3"
identity = "$ssh_key"
known_hosts = "$ssh_known_hosts"
remote_bin = "$work/bin/hamn-remote"
materialize = true
root = "$4"
EOF
}

# The listener's cumulative CPU of reaped children (every session: sshd's
# crypto and the command it ran), in clock ticks.
sshd_child_ticks() {
    awk '{ print $16 + $17 }' "/proc/$sshd_pid/stat"
}

proxy_ticks() {
    if [[ -n $proxy_pid ]]; then awk '{ print $14 + $15 }' "/proc/$proxy_pid/stat"; else echo 0; fi
}

proxy_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/sshd/proxy.json" "$1"
}

# Wait until every connection through the proxy is closed and the sshd
# listener has reaped every session (so its child CPU is complete).
remote_quiet() {
    local i
    for i in $(seq 300); do
        if [[ $(proxy_field opened) == "$(proxy_field closed)" && -z $(cat "/proc/$sshd_pid/task/$sshd_pid/children" 2>/dev/null) ]]; then
            return 0
        fi
        sleep 0.1
    done
    say "warning: sessions still open after 30 s"
}

# measure_remote NAME CMD...: measure, plus the bytes through the proxy in
# each direction, the standby side's CPU (sshd and its command) and the peak
# RSS and CPU of the standby command itself (from remote-timed).
measure_remote() {
    local name=$1
    shift
    local up0 down0 t0 p0
    rm -f "$work"/remote-times/*
    remote_quiet
    up0=$(proxy_field up)
    down0=$(proxy_field down)
    t0=$(sshd_child_ticks)
    p0=$(proxy_ticks)
    measure "$name" "$@"
    remote_quiet
    put "$name.wire_up" "$(($(proxy_field up) - up0))"
    put "$name.wire_down" "$(($(proxy_field down) - down0))"
    put "$name.remote_cpu" "$(awk -v a="$t0" -v b="$(sshd_child_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / hz }')"
    put "$name.proxy_cpu" "$(awk -v a="$p0" -v b="$(proxy_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / hz }')"
    local f cpu=0 rss=0 u s r
    for f in "$work"/remote-times/*; do
        [[ -e $f ]] || continue
        u=$(sed -n 's/^[[:space:]]*User time (seconds): //p' "$f")
        s=$(sed -n 's/^[[:space:]]*System time (seconds): //p' "$f")
        r=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$f")
        cpu=$(awk "BEGIN { print $cpu + ${u:-0} + ${s:-0} }")
        ((${r:-0} > rss)) && rss=$r
    done
    put "$name.remote_cmd_cpu" "$cpu"
    put "$name.remote_rss_kib" "$rss"
}
