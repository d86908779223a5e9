#!/usr/bin/env bash
# Run every test of hamn. Installs what the tests need when it is missing
# (Debian packages, as root) and fails loudly when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the tests need root (chown, mknod, security.* xattrs, tmpfs and loop mounts)" >&2
    exit 1
fi

# Debian packages the tests use, as "command:package".
need=()
for pair in mount:mount umount:mount /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client \
            pgrep:procps pkill:procps pkg-config:pkg-config groff:groff zsh:zsh fish:fish \
            mkfs.xfs:xfsprogs gzip:gzip pigz:pigz cpio:cpio; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# Headers for the ssh2 crate's libssh2 build.
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --locked --all-targets
cargo test --locked -- --test-threads=2
