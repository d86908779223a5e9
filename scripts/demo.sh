#!/usr/bin/env bash
# The main job end to end on a built-in sample, on one machine: a small
# xCAT-like primary tree, the primary's store, a standby store in a folder,
# and a standby root the snapshots are deployed into. Nothing outside WORK
# is touched. Usage: scripts/demo.sh [WORK]   (default: a new temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
hamn="$PWD/target/release/hamn"
work=${1:-$(mktemp -d /tmp/hamn-demo.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
tree="$work/primary"

echo "== sample primary tree in $tree"
rootimg="$tree/install/netboot/rhels8/x86_64/compute/rootimg"
mkdir -p "$tree/install/postscripts" "$rootimg/etc" "$rootimg/usr/bin" \
         "$tree/install/rhels8/x86_64/Packages" "$tree/install/autoinst" "$tree/etc"
for i in $(seq 1 300); do
    printf 'config %d for compute nodes\n' "$i" > "$rootimg/etc/conf$i"
done
head -c 200000 /dev/urandom > "$rootimg/usr/bin/tool"
ln -sf ../usr/bin/tool "$rootimg/etc/tool-link"
head -c 3000000 /dev/urandom > "$tree/install/rhels8/x86_64/Packages/kernel.rpm"
cp "$tree/install/rhels8/x86_64/Packages/kernel.rpm" "$tree/install/rhels8/x86_64/Packages/kernel-copy.rpm"
printf '#!/bin/sh\necho setup\n' > "$tree/install/postscripts/setup"
chmod 755 "$tree/install/postscripts/setup"
echo "node1 specific" > "$tree/install/autoinst/node1"
# The image packed as packimage does; stored gzip-aware (see gzip_aware).
pack() { tar -C "$rootimg" -cf - . | gzip -6 > "$rootimg/../rootimg.tar.gz"; }
pack
printf '10.0.0.1 mn1\n10.0.0.2 mn2\n' > "$tree/etc/hosts"
printf 'nameserver 10.0.0.1\n' > "$tree/etc/resolv.conf"

cat > "$work/hamn.toml" <<TOML
store = "$work/primary-store"
paths = ["$tree/install", "$tree/etc/hosts", "$tree/etc/resolv.conf"]
exclude = ["$tree/install/autoinst"]
gzip_aware = ["$tree/install/netboot/**/rootimg.tar.gz"]

[standby]
url = "$work/standby-store"      # a folder here; ssh://root@mn2/var/lib/hamn for real
materialize = true
root = "$work/standby-root"      # / on a real standby

[retention]
keep_last = 3
apply_on_sync = true

[monitoring]
textfile = "$work/hamn.prom"
TOML
run() { echo "+ hamn $*"; "$hamn" --config "$work/hamn.toml" "$@"; }

run init
"$hamn" --store "$work/standby-store" init
mkdir -p "$work/standby-root"
run config check --standby-root "$work/standby-root"

echo "== night 1: the nightly job"
run sync
echo "== night 2: hosts grows, a postscript and a root image file change"
printf '10.0.0.3 cn1\n' >> "$tree/etc/hosts"
printf '#!/bin/sh\necho setup v2\n' > "$tree/install/postscripts/setup"
printf 'changed\n' > "$rootimg/etc/conf7"
pack
run sync
run snapshots
run diff latest~1 latest
echo "== on the standby"
"$hamn" --store "$work/standby-store" status --root "$work/standby-root"
diff -r "$tree/install/postscripts" "$work/standby-root$tree/install/postscripts" && echo "standby matches the primary"
echo "== rollback on the standby"
"$hamn" --store "$work/standby-store" rollback --root "$work/standby-root"
cat "$work/standby-root$tree/etc/hosts"
"$hamn" --store "$work/standby-store" check --read-data
echo "== metrics for node_exporter: $work/hamn.prom"
grep -v '^#' "$work/hamn.prom"
echo "== done; everything is under $work"
