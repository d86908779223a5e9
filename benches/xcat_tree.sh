# An xCAT management node's managed paths, built from real Debian packages,
# and the nights that change them. Sourced by benches/xcat.sh (after
# benches/lib.sh), not run.
#
#   xcat_build P     make P/install, P/tftpboot and P/etc/{hosts,resolv.conf,...}
#   xcat_night P N   night N's change (N = 1, 2, 3, ...; N > 3 repeats 1..3
#                    with other names), printed as one JSON line
#
# P/install holds what an xCAT site's /install holds:
#   netboot/debian12/x86_64/{compute,service}/rootimg/   debootstrapped images
#       (Debian 12 minbase + a kernel, sshd, NFS client...; the service image
#       more): many small files, absolute and dangling symlinks, hard links,
#       device nodes, a file capability (ping's cap_net_raw)
#   netboot/.../{compute,service}/rootimg.tar.gz   the image packed as
#       packimage packs it (tar of rootimg with xattrs | gzip -6), re-packed
#       on every night that changes the image
#   netboot/.../{kernel,initrd-stateless.gz}        the image's boot files
#   debian12/x86_64/pool/main/X/PKG/*.deb           a package pool
#   postscripts/, custom/                           scripts and lists
# P/tftpboot/xcat/...: per-node boot configs and the images' boot files.
#
# Everything downloaded is kept in XCAT_CACHE (default
# /var/cache/hamn-bench): the debootstrap package cache, each image as a tar
# (rootimg-NAME.tar, made once), the pool's and the nights' .deb files. The
# second run builds the same tree from the cache without the network
# (XCAT_REFRESH=1 builds the images again).
#
#   XCAT_POOL=N      .deb files in the pool (default 520)
#   XCAT_NODES=N     compute nodes (boot configs, hosts lines; default 256)
#   XCAT_SUITE=S     Debian suite (default bookworm), XCAT_MIRROR=URL

XCAT_CACHE=${XCAT_CACHE:-/var/cache/hamn-bench}
XCAT_POOL=${XCAT_POOL:-520}
XCAT_NODES=${XCAT_NODES:-256}
XCAT_SUITE=${XCAT_SUITE:-bookworm}
XCAT_MIRROR=${XCAT_MIRROR:-http://deb.debian.org/debian}

xcat_img_dir=netboot/debian12/x86_64

# Packages of each image on top of minbase.
xcat_pkgs_compute=linux-image-cloud-amd64,initramfs-tools,openssh-server,iputils-ping,libcap2-bin,iproute2,ifupdown,isc-dhcp-client,nfs-common,kmod,udev,systemd-sysv,procps,less,rsyslog,chrony
xcat_pkgs_service=$xcat_pkgs_compute,nfs-kernel-server,tftpd-hpa,isc-dhcp-server,rsync,perl,xinetd,ipmitool
# The pool: the closure of these (by name), the first XCAT_POOL of it.
xcat_pool_roots="slurm-wlm munge nfs-kernel-server openmpi-bin python3 perl gcc rsync apache2 xfsprogs
lvm2 mdadm ipmitool freeipmi-tools rdma-core infiniband-diags gfortran python3-numpy vim git tcpdump
strace gdb postgresql mariadb-server nginx bind9 isc-dhcp-server tftpd-hpa ansible golang-go ruby
php-cli cmake build-essential valgrind htop sysstat nvme-cli smartmontools lighttpd keepalived haproxy
corosync pacemaker ldap-utils slapd sssd krb5-user collectd conman syslinux pxelinux grub-efi-amd64-bin ipxe"

xcat_debs() {
    # xcat_debs DIR PKG...: the .deb files of PKG... in DIR (downloaded once).
    local dir=$1
    shift
    mkdir -p "$dir"
    local p missing=()
    for p in "$@"; do
        compgen -G "$dir/${p}_*.deb" >/dev/null || missing+=("$p")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    say "downloading ${#missing[@]} package(s) into $dir"
    (cd "$dir" && apt-get download -q "${missing[@]}" >/dev/null 2>&1) ||
        { apt-get update -q >/dev/null 2>&1 && (cd "$dir" && apt-get download -q "${missing[@]}" >/dev/null); } ||
        die "apt-get download failed for: ${missing[*]}"
}

xcat_closure() {
    # Package names of the dependency closure of "$@", sorted (real
    # packages only: lines apt-cache prints without leading space or '<').
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$@" 2>/dev/null | grep -E '^[a-z0-9]' | sort -u
}

xcat_image_tar() {
    # The cached tar of image NAME, made by debootstrap when missing.
    local name=$1 pkgs=$2 tarf=$XCAT_CACHE/rootimg-$1.tar
    if [[ -s $tarf && ${XCAT_REFRESH:-0} != 1 ]]; then
        echo "$tarf"
        return
    fi
    command -v debootstrap >/dev/null || as_root_install debootstrap || die "debootstrap is needed: apt-get install debootstrap"
    local t
    t=$(mktemp -d "$XCAT_CACHE/build.XXXXXX")
    say "debootstrap of the $name image (once; cached in $tarf)"
    mkdir -p "$XCAT_CACHE/debs"
    debootstrap --variant=minbase --cache-dir="$XCAT_CACHE/debs" --include="$pkgs" \
        "$XCAT_SUITE" "$t/root" "$XCAT_MIRROR" >"$t/log" 2>&1 ||
        { tail -5 "$t/log" >&2; die "debootstrap of the $name image failed (log: $t/log)"; }
    # As genimage leaves an image: no package cache, no daemons started by
    # package scripts, a hostname of its own.
    rm -f "$t"/root/var/cache/apt/archives/*.deb
    printf '#!/bin/sh\nexit 101\n' >"$t/root/usr/sbin/policy-rc.d"
    chmod 755 "$t/root/usr/sbin/policy-rc.d"
    echo "$name" >"$t/root/etc/hostname"
    tar -C "$t/root" --xattrs --xattrs-include='*' --acls --numeric-owner -cf "$tarf.part" . ||
        die "tar of the $name image failed"
    mv "$tarf.part" "$tarf"
    rm -rf "$t"
    echo "$tarf"
}

xcat_pack() {
    # packimage: rootimg.tar.gz from rootimg (tar with xattrs, gzip -6), and
    # the boot files beside it.
    local d=$1
    (cd "$d/rootimg" && tar --xattrs --xattrs-include='*' --numeric-owner -cf - .) | gzip -6 >"$d/rootimg.tar.gz.part"
    mv "$d/rootimg.tar.gz.part" "$d/rootimg.tar.gz"
    local k i
    k=$(ls "$d"/rootimg/boot/vmlinuz-* 2>/dev/null | sort | tail -1)
    i=$(ls "$d"/rootimg/boot/initrd.img-* 2>/dev/null | sort | tail -1)
    [[ -n $k ]] && cp -p "$k" "$d/kernel"
    [[ -n $i ]] && cp -p "$i" "$d/initrd-stateless.gz"
    return 0
}

xcat_chroot_dpkg() {
    # xcat_chroot_dpkg IMG -i DEB... | --purge PKG...: as genimage/otherpkgs
    # does inside the image (package scripts run; daemons are not started).
    local img=$1
    shift
    if [[ $1 == -i ]]; then
        shift
        mkdir -p "$img/tmp/hamn-debs"
        cp "$@" "$img/tmp/hamn-debs/"
        chroot "$img" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            sh -c 'dpkg -i --force-depends --force-confdef --force-confold /tmp/hamn-debs/*.deb' >>"$work/chroot.log" 2>&1 || true
        rm -rf "$img/tmp/hamn-debs"
    else
        chroot "$img" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            dpkg --purge --force-depends "$@" >>"$work/chroot.log" 2>&1 || true
    fi
}

xcat_night_debs() {
    # The .deb files that install PKG into image IMG: its closure minus
    # what the image has.
    local img=$1
    shift
    local have want p f out=()
    have=$(chroot "$img" dpkg-query -W -f '${Package}\n' 2>/dev/null | sort -u)
    want=$(xcat_closure "$@" | comm -23 - <(echo "$have"))
    # shellcheck disable=SC2086
    xcat_debs "$XCAT_CACHE/night-debs" $want
    for p in $want; do
        for f in "$XCAT_CACHE/night-debs/${p}"_*.deb; do
            [[ -e $f ]] && out+=("$f")
        done
    done
    printf '%s\n' "${out[@]}"
}

xcat_pool_add() {
    # xcat_pool_add POOL PKG...: the .deb files of PKG... put into POOL as
    # a mirror lays them out (POOL/l/PKG/, POOL/libx/PKG/); prints how many.
    local pool=$1 p f letter n=0
    shift
    xcat_debs "$XCAT_CACHE/pool" "$@"
    for p in "$@"; do
        for f in "$XCAT_CACHE/pool/${p}"_*.deb; do
            [[ -e $f ]] || continue
            letter=${p:0:1}
            [[ $p == lib* ]] && letter=${p:0:4}
            mkdir -p "$pool/$letter/$p"
            cp -p "$f" "$pool/$letter/$p/"
            n=$((n + 1))
        done
    done
    echo "$n"
}

xcat_build() {
    local P=$1 name tarf d
    [[ $(id -u) == 0 ]] || die "the xCAT tree needs root (debootstrap, device nodes, chroot)"
    mkdir -p "$XCAT_CACHE" "$P/install" "$P/tftpboot" "$P/etc"
    for name in compute service; do
        local pv=xcat_pkgs_$name
        tarf=$(xcat_image_tar "$name" "${!pv}")
        d=$P/install/$xcat_img_dir/$name
        mkdir -p "$d/rootimg"
        tar -C "$d/rootimg" --xattrs --xattrs-include='*' --acls --numeric-owner -xf "$tarf" ||
            die "unpacking $tarf failed"
        xcat_pack "$d"
    done

    # The package pool, laid out as a Debian mirror's pool.
    local pool=$P/install/debian12/x86_64/pool/main names ndebs
    # shellcheck disable=SC2086
    names=$(xcat_closure $xcat_pool_roots | head -n "$XCAT_POOL")
    # shellcheck disable=SC2086
    ndebs=$(xcat_pool_add "$pool" $names)
    mkdir -p "$P/install/debian12/x86_64/dists"
    (cd "$P/install/debian12/x86_64" && find pool -name '*.deb' | sort >dists/Packages.list)
    ln -s debian12 "$P/install/debian12.0"

    # Postscripts: a few hundred small scripts, some executable, a symlink.
    local ps=$P/install/postscripts i n
    mkdir -p "$ps/hostkeys" "$P/install/custom/netboot/debian" "$P/install/custom/install/debian"
    for ((i = 0; i < 320; i++)); do
        {
            printf '#!/bin/sh\n# xCAT postscript %03d\n' "$i"
            for ((n = 0; n < 20 + i % 60; n++)); do
                printf 'echo "step %d of postscript %d" >>/var/log/xcat/xcat.log\n' "$n" "$i"
            done
        } >"$ps/script$(printf %03d "$i")"
        ((i % 4 == 0)) || chmod 755 "$ps/script$(printf %03d "$i")"
    done
    ln -s script000 "$ps/syslog"
    ln -s /install/postscripts/script001 "$ps/remoteshell"
    ln -s /opt/xcat/share/xcat/missing "$ps/dangling"
    for name in compute service; do
        printf 'openssh-server\nnfs-common\n' >"$P/install/custom/netboot/debian/$name.pkglist"
        printf '/etc/hosts\n/etc/resolv.conf\n' >"$P/install/custom/netboot/debian/$name.synclist"
    done
    ssh-keygen -q -t ed25519 -N '' -C xcat -f "$ps/hostkeys/ssh_host_ed25519_key" </dev/null

    # tftpboot: the boot files of each image and a config per node.
    local tb=$P/tftpboot/xcat
    mkdir -p "$tb/xnba/nodes" "$tb/osimage"
    for name in compute service; do
        d=$P/install/$xcat_img_dir/$name
        mkdir -p "$tb/osimage/debian12-x86_64-netboot-$name"
        cp -p "$d/kernel" "$d/initrd-stateless.gz" "$tb/osimage/debian12-x86_64-netboot-$name/" 2>/dev/null || true
    done
    for ((i = 1; i <= XCAT_NODES; i++)); do
        printf '#!gpxe\nkernel http://10.0.0.1/tftpboot/xcat/osimage/debian12-x86_64-netboot-compute/kernel imgurl=http://10.0.0.1/install/netboot/debian12/x86_64/compute/rootimg.tar.gz XCAT=10.0.0.1:3001 NODE=cn%04d\ninitrd http://10.0.0.1/tftpboot/xcat/osimage/debian12-x86_64-netboot-compute/initrd-stateless.gz\nboot\n' "$i" \
            >"$tb/xnba/nodes/cn$(printf %04d "$i")"
        printf 'DEFAULT xCAT\nLABEL xCAT\n KERNEL xcat/xnba/nodes/cn%04d\n' "$i" >"$tb/xnba/nodes/cn$(printf %04d "$i").pxelinux"
    done

    # /etc: the hosts table, resolv.conf, xCAT's own configuration.
    {
        printf '127.0.0.1 localhost\n10.0.0.1 mgmt mgmt.cluster\n'
        for ((i = 1; i <= XCAT_NODES; i++)); do printf '10.0.%d.%d cn%04d cn%04d.cluster\n' $((i / 250 + 1)) $((i % 250 + 1)) "$i" "$i"; done
    } >"$P/etc/hosts"
    printf 'search cluster\nnameserver 10.0.0.1\n' >"$P/etc/resolv.conf"
    mkdir -p "$P/etc/xcat"
    printf '[site]\nmaster=10.0.0.1\ndomain=cluster\n' >"$P/etc/xcat/site.conf"
    printf '{"pool_debs": %d, "nodes": %d, "images": ["compute", "service"]}\n' "$ndebs" "$XCAT_NODES"
}

xcat_night() {
    # One night of an xCAT site: packages installed into and purged from an
    # image's chroot and the image re-packed, debs added to the pool, /etc
    # edited, a rename, deletes, files only touched.
    local P=$1 night=$2 img d
    local k=$(((night - 1) % 3 + 1)) r=$(((night - 1) / 3))
    local ps=$P/install/postscripts pool=$P/install/debian12/x86_64/pool/main
    local -a debs
    local changed=()
    case $k in
    1)
        d=$P/install/$xcat_img_dir/compute
        img=$d/rootimg
        mapfile -t debs < <(xcat_night_debs "$img" strace lsof ethtool pciutils)
        [[ ${#debs[@]} -gt 0 ]] && xcat_chroot_dpkg "$img" -i "${debs[@]}"
        echo "compute night $night" >"$img/etc/motd"
        xcat_pack "$d"
        changed+=(compute)
        ;;
    2)
        d=$P/install/$xcat_img_dir/compute
        img=$d/rootimg
        xcat_chroot_dpkg "$img" --purge lsof ethtool
        mapfile -t debs < <(xcat_night_debs "$img" tcpdump file)
        [[ ${#debs[@]} -gt 0 ]] && xcat_chroot_dpkg "$img" -i "${debs[@]}"
        xcat_pack "$d"
        d=$P/install/$xcat_img_dir/service
        mapfile -t debs < <(xcat_night_debs "$d/rootimg" numactl)
        [[ ${#debs[@]} -gt 0 ]] && xcat_chroot_dpkg "$d/rootimg" -i "${debs[@]}"
        xcat_pack "$d"
        changed+=(compute service)
        ;;
    3)
        d=$P/install/$xcat_img_dir/compute
        img=$d/rootimg
        xcat_chroot_dpkg "$img" --purge tcpdump
        printf 'options lnet networks=o2ib0(ib0) # night %d\n' "$night" >"$img/etc/modprobe.d/lustre.conf"
        xcat_pack "$d"
        changed+=(compute)
        ;;
    esac
    # The pool: new debs (the next names of its closure), one package moved
    # to another directory, one deleted.
    local names added
    # shellcheck disable=SC2086
    names=$(xcat_closure $xcat_pool_roots | sed -n "$((XCAT_POOL + 1 + (night - 1) * 6)),+5p")
    # shellcheck disable=SC2086
    added=$(xcat_pool_add "$pool" $names)
    local moved
    moved=$(cd "$pool" && find . -mindepth 2 -maxdepth 2 -type d | sort | sed -n "$((night * 7))p")
    [[ -n $moved ]] && mv "$pool/$moved" "$pool/$(dirname "$moved")/$(basename "$moved").old$night"
    # Postscripts: edits, one deleted, one added, some only touched.
    local i
    for ((i = 0; i < 5; i++)); do
        printf 'echo "night %d edit %d"\n' "$night" "$i" >>"$ps/script$(printf %03d $(((night * 37 + i * 11) % 320)))"
    done
    rm -f "$ps/script$(printf %03d $(((night * 53) % 320)))"
    printf '#!/bin/sh\necho night %d\n' "$night" >"$ps/night$night.$r"
    chmod 755 "$ps/night$night.$r"
    for ((i = 0; i < 40; i++)); do
        touch "$ps/script$(printf %03d $(((night * 17 + i * 7) % 320)))" 2>/dev/null || true
    done
    # /etc: a host line, and the resolver on the third night.
    printf '10.0.9.%d newnode%d newnode%d.cluster\n' "$night" "$night" "$night" >>"$P/etc/hosts"
    ((k == 3)) && printf 'search cluster\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n' >"$P/etc/resolv.conf"
    printf '{"night": %d, "images_repacked": "%s", "pool_added": %d, "pool_moved": "%s"}\n' \
        "$night" "${changed[*]}" "$added" "${moved:-}"
}
