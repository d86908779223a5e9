#!/usr/bin/env bash
# The main job end to end on a built-in sample: a small xCAT-like tree, a
# primary store and a standby store in a folder. Nothing outside WORK is
# touched. Usage: scripts/demo.sh [WORK]   (default: a new temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
hamn="$PWD/target/release/hamn"
work=${1:-$(mktemp -d /tmp/hamn-demo.XXXXXX)}
mkdir -p "$work"
tree="$work/primary"
store="$work/primary-store"

echo "== sample tree in $tree"
mkdir -p "$tree/install/postscripts" "$tree/install/netboot/rhels8/x86_64/compute/rootimg/etc" \
         "$tree/install/rhels8/x86_64/Packages" "$tree/etc"
for i in $(seq 1 200); do
    printf 'config %d for compute nodes\n' "$i" > "$tree/install/netboot/rhels8/x86_64/compute/rootimg/etc/conf$i"
done
head -c 3000000 /dev/urandom > "$tree/install/rhels8/x86_64/Packages/kernel.rpm"
cp "$tree/install/rhels8/x86_64/Packages/kernel.rpm" "$tree/install/rhels8/x86_64/Packages/kernel-copy.rpm"
printf '#!/bin/sh\necho setup\n' > "$tree/install/postscripts/setup"
chmod 755 "$tree/install/postscripts/setup"
ln -sf ../Packages/kernel.rpm "$tree/install/postscripts/kernel-link"
printf '10.0.0.1 mn1\n10.0.0.2 mn2\n' > "$tree/etc/hosts"

cat > "$work/hamn.toml" <<TOML
store = "$store"
paths = ["$tree/install", "$tree/etc/hosts"]
exclude = ["$tree/install/autoinst"]
TOML
run() { echo "+ hamn $*"; "$hamn" --config "$work/hamn.toml" "$@"; }

echo "== night 1"
run init
run snapshot --tag night1
echo "== night 2: hosts grows, a postscript changes"
printf '10.0.0.3 cn1\n' >> "$tree/etc/hosts"
printf '#!/bin/sh\necho setup v2\n' > "$tree/install/postscripts/setup"
run snapshot --tag night2
run snapshots
run diff latest~1 latest
run cat latest~1 "$tree/etc/hosts"
run restore latest~1 "$tree/etc/hosts" --to "$work/salvage"
run check --read-data
echo "== done; everything is under $work"
