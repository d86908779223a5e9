#!/usr/bin/env python3
"""Generate a deterministic, xCAT /install-like tree for benchmarks.

    python3 benches/gen_tree.py OUT [--files N] [--bytes SIZE] [--seed S]
    python3 benches/gen_tree.py OUT --mutate NIGHT [--seed S]

Generate mode creates OUT (which must not exist, or be empty) holding what a
management node's /install looks like:

  netboot/<os>/x86_64/compute/rootimg/     an OS root image: tens of thousands
                                           of small files (text configs, docs,
                                           ELF-like binaries and libraries that
                                           share content, gzipped man pages,
                                           compressed kernel modules, ...),
                                           symlinks, a few hardlinks, a few big
                                           files (kernel, initramfs, rpmdb)
  netboot/<os>/x86_64/compute/rootimg.cpio.gz
                                           a gzipped newc cpio of the first
                                           part (sorted order) of that rootimg
  <os>/x86_64/Packages/*.rpm, repodata/    a package pool: incompressible
  post/otherpkgs/<os>/x86_64/*.rpm         ~10% of the packages, duplicated
  postscripts/, custom/, autoinst/         small text files

--image-files K makes a tree of many images instead of one: each holds at
most K entries (image i > 1 at netboot/<os>/x86_64/compute<i>/), so its
directories keep a real image's sizes (a debootstrapped image holds ~30k
entries) while --files grows; without it the one image's directories grow
with --files. A night then changes one image in six (~1% of the entries)
and re-packs those.

--files counts every non-directory entry (regular files, symlinks,
hardlinks); --bytes is the approximate total size of regular files (each
hardlinked name counted once). The rough byte split is 40% packages, 4%
duplicated packages, 14% packed image, 41% root image, 1% small text.
The same (--files, --bytes, --seed) always yields the same names, contents,
modes and mtimes.

Mutate mode applies night NIGHT's change (deterministic given the tree and
--seed) to a tree made by generate mode, the way a nightly run of xCAT
tooling would: ~3% of rootimg files rewritten (text edited in place,
binaries replaced, big files patched in the middle), ~2% touched (mtime
only), ~0.5% deleted, ~0.3% renamed or moved, ~0.5% new, packages added and
updated (plus repodata), lines added to rootimg/etc/hosts, a postscript
edited, and rootimg.cpio.gz re-packed (as packimage does; --no-repack skips
it). Nights are meant to be applied in order 1, 2, 3, ...

Only the standard library is used. Nothing is written outside OUT, and
OUT may not be /, /install, /etc or below them.
"""

import argparse
import gzip
import json
import os
import random
import stat
import sys
import zlib

OS_NAME = "rhels8.6.0"
ARCH = "x86_64"
KVER = "4.18.0-372.9.1.el8.x86_64"
# Newest generated mtime (2023-11-14); night N happens N days later.
BASE_TIME = 1_700_000_000
DAY = 86_400
GEN_SPAN = 400 * DAY
MiB = 1024 * 1024

ROOTIMG = f"netboot/{OS_NAME}/{ARCH}/compute/rootimg"
CPIO = f"netboot/{OS_NAME}/{ARCH}/compute/rootimg.cpio.gz"
PACKAGES = f"{OS_NAME}/{ARCH}/Packages"
REPODATA = f"{OS_NAME}/{ARCH}/repodata"
OTHERPKGS = f"post/otherpkgs/{OS_NAME}/{ARCH}"


def image_paths(i):
    """(rootimg, packed image) of the tree's image number i (0: the first)."""
    if i == 0:
        return ROOTIMG, CPIO
    profile = f"{os.path.dirname(ROOTIMG)}{i + 1}"
    return f"{profile}/rootimg", f"{profile}/rootimg.cpio.gz"


def tree_images(out):
    """The (rootimg, packed image) pairs of a tree made by generate mode."""
    pairs, i = [], 0
    while os.path.isdir(os.path.join(out, image_paths(i)[0])):
        pairs.append(image_paths(i))
        i += 1
    return pairs


# ---------------------------------------------------------------- content


class Content:
    """Byte generators: text-like (compresses ~3x with zstd), code-like
    (~2.5x), random (incompressible). Files are assembled from pieces at
    random offsets of seeded corpora, so each file is unique but the
    generation stays fast."""

    CORPUS_BYTES = 4 * MiB

    def __init__(self, seed):
        r = random.Random(f"{seed}:corpus")
        syll = [c + v for c in "bcdfghjklmnprstvwxz" for v in "aeiou"]
        self.words = sorted(
            {"".join(r.choice(syll) for _ in range(r.randint(1, 4))) for _ in range(8000)}
        )
        self.text_corpus = self._text_corpus(r)
        table = bytes(
            ([0] * 90 + [0xFF] * 10 + [r.randrange(256) for _ in range(48) for _ in range(3)]
             + [r.randrange(256) for _ in range(12)])[:256]
        )
        self.skew_table = table
        snippets = [r.randbytes(r.randint(4, 40)).translate(table) for _ in range(2048)]
        parts, total = [], 0
        while total < self.CORPUS_BYTES:
            if r.random() < 0.5:
                s = b"".join(r.choices(snippets, k=r.randint(8, 64)))
            else:
                s = r.randbytes(r.randint(64, 1024)).translate(table)
            parts.append(s)
            total += len(s)
        self.code_corpus = b"".join(parts)
        # Shared "runtimes" embedded in big binaries: long identical runs
        # that content-defined chunking can find across files.
        self.runtimes = [self._pieces(r, self.code_corpus, 2 * MiB, 1024, 8192) for _ in range(4)]
        # License texts: identical files in many doc directories.
        self.licenses = [
            b"LICENSE\n\n" + self._pieces(r, self.text_corpus, r.randint(12_000, 36_000), 2048, 8192)
            for _ in range(4)
        ]

    def _text_corpus(self, r):
        w = self.words
        lines, total = [], 0
        while total < self.CORPUS_BYTES:
            k = r.random()
            if k < 0.25:
                line = f"# {' '.join(r.choices(w, k=r.randint(3, 12)))}"
            elif k < 0.5:
                line = f"{r.choice(w)}_{r.choice(w)} = {r.choice(w)}{r.randint(0, 999)}"
            elif k < 0.6:
                line = f"[{r.choice(w)}]"
            elif k < 0.75:
                line = f"    {r.choice(w)} /{'/'.join(r.choices(w, k=r.randint(1, 4)))}"
            elif k < 0.85:
                line = f"export {r.choice(w).upper()}=\"{' '.join(r.choices(w, k=r.randint(1, 3)))}\""
            else:
                line = " ".join(r.choices(w, k=r.randint(4, 16))).capitalize() + "."
            lines.append(line)
            total += len(line) + 1
        return ("\n".join(lines) + "\n").encode()

    @staticmethod
    def _pieces(rng, corpus, n, lo, hi):
        out, total = [], 0
        while total < n:
            k = min(rng.randint(lo, hi), len(corpus) - 1)
            off = rng.randrange(len(corpus) - k)
            out.append(corpus[off : off + k])
            total += k
        return b"".join(out)[:n]

    def text(self, rng, n, header=b""):
        if n <= len(header):
            return header[:n]
        body_len = n - len(header)
        if body_len <= 16384:
            corpus = self.text_corpus
            off = rng.randrange(len(corpus) - body_len)
            nl = corpus.find(b"\n", off, off + 200)
            off = nl + 1 if 0 <= nl < len(corpus) - body_len else off
            return header + corpus[off : off + body_len]
        return header + self._pieces(rng, self.text_corpus, body_len, 2048, 16384)

    def code_bytes(self, rng, n):
        return self._pieces(rng, self.code_corpus, n, 1024, 8192)

    def random_bytes(self, rng, n):
        return rng.randbytes(n)

    def elf(self, rng, n):
        head = (b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x03\x00\x3e\x00\x01\x00\x00\x00"
                + rng.randbytes(8) + b"\x40" + bytes(7) + b"GNU\x00" + rng.randbytes(20))
        if n <= len(head):
            return head[:n]
        body = n - len(head)
        if body > 5 * MiB // 2 and rng.random() < 0.6:
            rt = rng.choice(self.runtimes)
            return head + rt + self.code_bytes(rng, body - len(rt))
        return head + self.code_bytes(rng, body)

    def gzipped_text(self, rng, n):
        # Man pages compress ~3x with gzip -9.
        return gzip.compress(self.text(rng, max(1, n * 3)), compresslevel=9, mtime=0)

    def mixed(self, rng, n):
        parts, total = [], 0
        while total < n:
            k = min(n - total, rng.randint(4096, 65536))
            parts.append(self.text(rng, k) if rng.random() < 0.5 else self.code_bytes(rng, k))
            total += k
        return b"".join(parts)

    def make(self, kind, rng, n, header=b""):
        if kind == "text":
            return self.text(rng, n, header)
        if kind == "code":
            return self.code_bytes(rng, n)
        if kind == "elf":
            return self.elf(rng, n)
        if kind == "gz":
            return self.gzipped_text(rng, n)
        if kind == "mixed":
            return self.mixed(rng, n)
        if kind == "random":
            return self.random_bytes(rng, n)
        if kind.startswith("license"):
            # Sizes of one variant are scaled alike, so copies stay identical.
            return self.licenses[int(kind[7:])][:n]
        raise ValueError(kind)


# ---------------------------------------------------------------- planning

# category: (content kind, median bytes, sigma, mode)
CATEGORIES = {
    "conf": ("text", 1200, 1.1, 0o644),
    "elf": ("elf", 40_000, 1.4, 0o755),
    "so": ("elf", 90_000, 1.5, 0o755),
    "script": ("text", 2500, 1.0, 0o755),
    "doc": ("text", 4000, 1.3, 0o644),
    "man": ("gz", 3000, 0.8, 0o644),
    "mo": ("code", 15_000, 1.0, 0o644),
    "py": ("text", 6000, 1.2, 0o644),
    "pyc": ("code", 7000, 1.2, 0o644),
    "h": ("text", 5000, 1.2, 0o644),
    "ko": ("random", 25_000, 1.1, 0o644),
    "tz": ("code", 1500, 0.6, 0o644),
    "unit": ("text", 700, 0.5, 0o644),
    "png": ("random", 3000, 1.2, 0o644),
    "fw": ("random", 150_000, 1.5, 0o644),
}

# Share of rootimg entries per area (symlinks included).
AREAS = [
    ("etc", 6), ("bin", 6), ("lib", 9), ("libexec", 2), ("doc", 12), ("man", 10),
    ("locale", 6), ("python", 18), ("include", 5), ("kmod", 8), ("zoneinfo", 3),
    ("systemd", 4), ("icons", 5), ("firmware", 2), ("alternatives", 1),
]

LANGS = ["af", "ar", "as", "ast", "be", "bg", "bn", "bs", "ca", "cs", "cy", "da", "de", "el",
         "en_GB", "eo", "es", "et", "eu", "fa", "fi", "fr", "ga", "gl", "gu", "he", "hi", "hr",
         "hu", "ia", "id", "is", "it", "ja", "ka", "kk", "kn", "ko", "lt", "lv", "mk", "ml",
         "mr", "ms", "nb", "nl", "nn", "or", "pa", "pl", "pt", "pt_BR", "ro", "ru", "si", "sk",
         "sl", "sq", "sr", "sv", "ta", "te", "th", "tr", "uk", "vi", "zh_CN", "zh_TW"]
TZ_REGIONS = ["Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe",
              "Indian", "Pacific", "Etc"]
KMOD_DIRS = ["drivers/net/ethernet/intel", "drivers/net/ethernet/mellanox", "drivers/net/ethernet/broadcom",
             "drivers/infiniband/hw/mlx5", "drivers/infiniband/core", "drivers/scsi", "drivers/scsi/megaraid",
             "drivers/md", "drivers/block", "drivers/gpu/drm", "drivers/usb/storage", "drivers/hid",
             "drivers/nvme/host", "drivers/char/ipmi", "fs/xfs", "fs/nfs", "fs/ext4", "fs/fuse",
             "net/ipv4", "net/ipv6", "net/sunrpc", "net/netfilter", "crypto", "lib", "sound/core"]
POSTSCRIPTS = ["syslog", "remoteshell", "syncfiles", "otherpkgs", "confignetwork", "setupntp",
               "hardeths", "configib", "enablekdump", "addsiteyum", "setroute", "xcatdsklspost",
               "xcatinstallpost", "xcatpostinit1", "updatenode", "mountinstall", "configrdma",
               "configeth", "nicutils.sh", "ospkgs", "setbootfromnet", "routeop", "sudoer",
               "getcredentials.awk", "xcatlib.sh", "setupnfsv4replication", "startsyncfiles"]


class Planner:
    def __init__(self, rng, content):
        self.rng = rng
        self.content = content
        self.entries = []  # dicts: path, type f/l/h, ...
        self.names = {}  # dir -> set of names

    def word(self):
        return self.rng.choice(self.content.words)

    def unique(self, d, name):
        used = self.names.setdefault(d, set())
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}{i}" if "." not in base else base.replace(".", f"{i}.", 1)
        used.add(name)
        return name

    def subdir(self, parent):
        """A new directory below parent whose name no file there takes."""
        return f"{parent}/{self.unique(parent, self.word())}"

    def file(self, d, name, cat, size=None, kind=None, mode=None):
        name = self.unique(d, name)
        ckind, med, sigma, cmode = CATEGORIES[cat] if cat in CATEGORIES else (kind, 0, 0, 0o644)
        if size is None:
            size = max(0, int(self.rng.lognormvariate(0, sigma) * med))
        self.entries.append({"path": f"{d}/{name}", "t": "f", "kind": kind or ckind,
                             "size": size, "mode": mode if mode is not None else cmode,
                             "scale": True})
        return f"{d}/{name}"

    def symlink(self, d, name, target):
        name = self.unique(d, name)
        path = f"{d}/{name}" if d else name
        self.entries.append({"path": path, "t": "l", "target": target})
        return path

    def pkgname(self):
        w = self.word()
        return self.rng.choice([w, w, f"lib{w}", f"python3-{w}", f"{w}-{self.word()}", f"perl-{w.capitalize()}"])

    # Each area generator appends about `n` entries.

    def area_etc(self, n):
        r = self.rng
        subdirs = ["etc", "etc/sysconfig", "etc/sysconfig/network-scripts", "etc/pki/tls/certs",
                   "etc/pki/rpm-gpg", "etc/yum.repos.d", "etc/security", "etc/security/limits.d",
                   "etc/ssh", "etc/pam.d", "etc/profile.d", "etc/cron.d", "etc/logrotate.d",
                   "etc/modprobe.d", "etc/sysctl.d", "etc/udev/rules.d", "etc/xdg/autostart",
                   "etc/selinux/targeted/contexts/files", "etc/dracut.conf.d", "etc/NetworkManager/conf.d"]
        subdirs += [f"etc/{self.word()}.d" for _ in range(max(1, n // 40))]
        exts = ["", ".conf", ".conf", ".cfg", ".rules", ".sh", ".repo", ".pem"]
        for _ in range(n):
            d = r.choice(subdirs)
            self.file(d, self.word() + r.choice(exts), "conf")

    def area_bin(self, n):
        r = self.rng
        made = []
        for i in range(n):
            d = "usr/bin" if r.random() < 0.75 else "usr/sbin"
            if made and r.random() < 0.05:
                src = r.choice(made)
                self.symlink(d, self.word(), os.path.basename(src) if src.startswith(d + "/") else "/" + src)
            elif r.random() < 0.08:
                self.file(d, self.word(), "script")
            elif made and r.random() < 0.02:
                # Identical binary under two names (a copied tool).
                src = r.choice(made)
                e = next(x for x in self.entries if x["path"] == src)
                self.entries.append(dict(e, path=f"{d}/{self.unique(d, self.word())}", dup_of=src))
            else:
                made.append(self.file(d, self.word(), "elf"))
        self.bins = made

    def area_lib(self, n):
        r = self.rng
        count = 0
        while count < n:
            d = "usr/lib64" if r.random() < 0.85 else self.subdir("usr/lib64")
            base = f"lib{self.word()}.so"
            major = r.randint(0, 9)
            real = self.file(d, f"{base}.{major}.{r.randint(0, 40)}.{r.randint(0, 9)}", "so")
            real_name = os.path.basename(real)
            count += 1
            if count < n:
                self.symlink(d, f"{base}.{major}", real_name)
                count += 1
            if count < n and r.random() < 0.3:
                self.symlink(d, base, f"{base}.{major}")
                count += 1

    def area_libexec(self, n):
        r = self.rng
        dirs = ["usr/libexec"] + [self.subdir("usr/libexec") for _ in range(max(1, n // 15))]
        for _ in range(n):
            self.file(r.choice(dirs), self.word(), "elf" if r.random() < 0.6 else "script")

    def area_doc(self, n):
        r = self.rng
        left = n
        while left > 0:
            d = f"usr/share/doc/{self.pkgname()}"
            for name in ["README", "NEWS", "COPYING", "ChangeLog", "AUTHORS", "README.md", "TODO"][: min(left, r.randint(1, 5))]:
                if name == "COPYING":
                    lic = r.randrange(len(self.content.licenses))
                    self.file(d, name, "doc", size=len(self.content.licenses[lic]), kind=f"license{lic}")
                else:
                    self.file(d, name, "doc")
                left -= 1

    def area_man(self, n):
        r = self.rng
        for _ in range(n):
            sec = r.choice("1111118885")
            self.file(f"usr/share/man/man{sec}", f"{self.word()}.{sec}.gz", "man")

    def area_locale(self, n):
        r = self.rng
        pkgs = [self.word() for _ in range(max(1, n // len(LANGS) + 1))]
        for _ in range(n):
            self.file(f"usr/share/locale/{r.choice(LANGS)}/LC_MESSAGES", f"{r.choice(pkgs)}.mo", "mo")

    def area_python(self, n):
        r = self.rng
        left = n
        while left > 0:
            pkg = f"usr/lib/python3.6/site-packages/{self.word()}"
            dirs = [pkg] + [f"{pkg}/{self.word()}" for _ in range(r.randint(0, 3))]
            for _ in range(min(left, r.randint(2, 40))):
                d = r.choice(dirs)
                mod = self.word()
                self.file(d, f"{mod}.py", "py")
                left -= 1
                if left > 0 and r.random() < 0.7:
                    self.file(f"{d}/__pycache__", f"{mod}.cpython-36.pyc", "pyc")
                    left -= 1

    def area_include(self, n):
        r = self.rng
        dirs = ["usr/include"] + [self.subdir("usr/include") for _ in range(max(1, n // 20))]
        for _ in range(n):
            self.file(r.choice(dirs), f"{self.word()}.h", "h")

    def area_kmod(self, n):
        r = self.rng
        for _ in range(n):
            d = f"usr/lib/modules/{KVER}/kernel/{r.choice(KMOD_DIRS)}"
            self.file(d, f"{self.word()}.ko.xz", "ko")

    def area_zoneinfo(self, n):
        r = self.rng
        for _ in range(n):
            self.file(f"usr/share/zoneinfo/{r.choice(TZ_REGIONS)}", self.word().capitalize(), "tz")

    def area_systemd(self, n):
        r = self.rng
        units = []
        for i in range(n):
            if units and r.random() < 0.3:
                u = r.choice(units)
                self.symlink(f"etc/systemd/system/{r.choice(['multi-user', 'sockets', 'timers', 'sysinit'])}.target.wants",
                             os.path.basename(u), "/" + u)
            else:
                units.append(self.file("usr/lib/systemd/system",
                                       f"{self.word()}.{r.choice(['service', 'service', 'socket', 'timer', 'target'])}",
                                       "unit"))

    def area_icons(self, n):
        r = self.rng
        for _ in range(n):
            d = f"usr/share/icons/{r.choice(['hicolor', 'Adwaita'])}/{r.choice(['16x16', '32x32', '48x48', '256x256'])}/{r.choice(['apps', 'mimetypes', 'actions'])}"
            self.file(d, f"{self.word()}.png", "png")

    def area_firmware(self, n):
        r = self.rng
        vendors = [self.word() for _ in range(max(1, n // 10))]
        for _ in range(n):
            self.file(f"usr/lib/firmware/{r.choice(vendors)}", f"{self.word()}.bin", "fw")

    def area_alternatives(self, n):
        bins = getattr(self, "bins", [])
        for _ in range(n // 2):
            if not bins:
                break
            b = self.rng.choice(bins)
            name = self.word()
            self.symlink("etc/alternatives", name, "/" + b)
            self.symlink("usr/bin", name, f"/etc/alternatives/{name}")

    def rootimg(self, n):
        """Plan a root image of about n entries (paths relative to it)."""
        r = self.rng
        for name, target in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
            self.symlink("", name, target)
        specials = [
            ("etc", "passwd", 2200, 0o644), ("etc", "group", 900, 0o644), ("etc", "shadow", 1300, 0o000),
            ("etc", "fstab", 500, 0o644), ("etc", "resolv.conf", 120, 0o644), ("etc", "hostname", 9, 0o644),
            ("etc", "os-release", 500, 0o644), ("etc", "services", 700_000, 0o644), ("etc", "profile", 2100, 0o644),
            ("etc", "bashrc", 3000, 0o644), ("etc", "exports", 200, 0o644), ("etc", "ntp.conf", 1400, 0o644),
            ("etc", "motd", 0, 0o644), ("root", ".bashrc", 180, 0o644), ("root", ".profile", 160, 0o644),
            ("etc/security", "limits.conf", 2400, 0o644), ("usr/bin", "passwd", 33_000, 0o4755),
        ]
        for d, name, size, mode in specials:
            self.file(d, name, "conf", size=size, mode=mode)
        hosts = self.file("etc", "hosts", "conf", size=0)
        self.entries[-1].update(kind="hosts", scale=False)
        big = [
            ("boot", f"vmlinuz-{KVER}", "random", 11 * MiB),
            ("boot", f"initramfs-{KVER}.img", "random", 45 * MiB),
            ("boot", f"System.map-{KVER}", "text", 4 * MiB),
            ("var/lib/rpm", "rpmdb.sqlite", "mixed", 60 * MiB),
            ("usr/lib/locale", "locale-archive", "code", 100 * MiB),
        ]
        for d, name, kind, size in big:
            self.file(d, name, None, size=size, kind=kind)
        left = n - len(self.entries)
        total_w = sum(w for _, w in AREAS)
        for name, w in AREAS:
            getattr(self, f"area_{name}")(max(1, left * w // total_w))
        # A few hardlinks, like gzip/gunzip/zcat or the mkfs.* family.
        regs = [e for e in self.entries if e["t"] == "f" and e["path"].startswith(("usr/bin/", "usr/sbin/"))]
        for _ in range(max(3, n // 5000)):
            if not regs:
                break
            src = r.choice(regs)
            d = os.path.dirname(src["path"])
            self.entries.append({"path": f"{d}/{self.unique(d, self.word())}", "t": "h", "target": src["path"]})
        self.empty_dirs = ["dev", "proc", "sys", "run", "tmp", "mnt", "media", "srv", "home", "opt", "var/log", "var/tmp"]
        return hosts


def scale_sizes(entries, budget):
    """Scale the planned sizes of entries marked scalable to fit budget."""
    fixed = sum(e["size"] for e in entries if e["t"] == "f" and not e.get("scale") and "dup_of" not in e)
    raw = sum(e["size"] for e in entries if e["t"] == "f" and e.get("scale") and "dup_of" not in e)
    factor = max(budget - fixed, 0) / raw if raw else 1.0
    for e in entries:
        if e["t"] == "f" and e.get("scale") and "dup_of" not in e:
            e["size"] = int(e["size"] * factor)
    by_path = {e["path"]: e for e in entries}
    for e in entries:
        if "dup_of" in e:
            e["size"] = by_path[e["dup_of"]]["size"]
    return factor


# ---------------------------------------------------------------- writing


def safe_out(path):
    real = os.path.realpath(path)
    for bad in ("/install", "/etc"):
        if real == bad or real.startswith(bad + "/"):
            sys.exit(f"gen_tree: refusing to write under {bad}: {real}")
    if real == "/":
        sys.exit("gen_tree: refusing to write to /")
    return real


def mtime_ns(rng, night=0):
    if night == 0:
        return (BASE_TIME - rng.randrange(GEN_SPAN)) * 10**9 + rng.randrange(10**9)
    return (BASE_TIME + night * DAY - rng.randrange(3600)) * 10**9 + rng.randrange(10**9)


# Directories whose entries changed; mutate gives them the night's mtime.
CHANGED_DIRS = set()


def set_dir_times(dirs, t):
    for d in sorted(dirs, reverse=True):
        if os.path.isdir(d):
            os.utime(d, ns=(t, t), follow_symlinks=False)


def write_file(path, data, mode, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    CHANGED_DIRS.add(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime, mtime))


def replace_file(path, data, mode, mtime):
    """Write a new version beside the file and rename it over (new inode)."""
    tmp = path + ".gen-tmp"
    write_file(tmp, data, mode, mtime)
    os.rename(tmp, path)


def write_symlink(path, target, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def hosts_lines(rng, start, count):
    out = []
    for i in range(start, start + count):
        out.append(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\tcn{i:05d} cn{i:05d}.cluster.example\n")
    return "".join(out).encode()


def inside(root, rel):
    """root/rel, refusing anything that could leave root."""
    if rel.startswith("/") or ".." in rel.split("/") or not rel:
        raise ValueError(f"gen_tree: bad relative path {rel!r}")
    return os.path.join(root, rel)


def materialize(root, entries, content, rng, stats):
    for e in entries:
        p = inside(root, e["path"])
        t = mtime_ns(rng)
        if e["t"] == "f":
            if e["kind"] == "hosts":
                data = b"127.0.0.1   localhost localhost.localdomain\n::1         localhost6\n" + hosts_lines(rng, 1, 64)
            elif "dup_of" in e:
                with open(inside(root, e["dup_of"]), "rb") as f:
                    data = f.read()
            else:
                header = f"# {e['path']}\n".encode() if e["kind"] == "text" and e["size"] > 200 else b""
                data = content.make(e["kind"], rng, e["size"], header)
            write_file(p, data, e["mode"], t)
            stats["files"] += 1
            stats["bytes"] += len(data)
        elif e["t"] == "l":
            write_symlink(p, e["target"], t)
            stats["symlinks"] += 1
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            os.link(inside(root, e["target"]), p)
            stats["hardlinks"] += 1


def sorted_walk(top):
    """(relative path, lstat) of everything below top, in sorted order."""
    out = []

    def rec(rel):
        full = os.path.join(top, rel) if rel else top
        for name in sorted(os.listdir(full)):
            r = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(top, r))
            out.append((r, st))
            if stat.S_ISDIR(st.st_mode):
                rec(r)

    rec("")
    return out


def cpio_header(ino, mode, nlink, mtime, size, name):
    nb = name.encode() + b"\0"
    h = b"070701" + b"".join(b"%08X" % v for v in (ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, len(nb), 0))
    h += nb
    return h + b"\0" * (-len(h) % 4)


def pack_image(rootimg, dest, target_bytes, mtime):
    """gzip'd newc cpio of rootimg in sorted order, stopped once the
    compressed output reaches target_bytes (directory mtimes are fixed so
    the bytes depend only on the files)."""
    tmp = dest + ".gen-tmp"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            ino = 0
            for rel, st in sorted_walk(rootimg):
                if raw.tell() >= target_bytes:
                    break
                ino += 1
                full = os.path.join(rootimg, rel)
                if stat.S_ISDIR(st.st_mode):
                    gz.write(cpio_header(ino, st.st_mode, 2, BASE_TIME, 0, rel))
                    continue
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(full).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        data = f.read()
                else:
                    continue
                gz.write(cpio_header(ino, st.st_mode, st.st_nlink, int(st.st_mtime), len(data), rel))
                gz.write(data)
                gz.write(b"\0" * (-len(data) % 4))
            gz.write(cpio_header(0, 0, 1, 0, 0, "TRAILER!!!"))
    os.utime(tmp, ns=(mtime, mtime))
    os.rename(tmp, dest)
    CHANGED_DIRS.add(os.path.dirname(dest))
    return os.path.getsize(dest)


def write_repodata(root, rng, mtime):
    names = sorted(os.listdir(os.path.join(root, PACKAGES)))
    xml = ['<?xml version="1.0" encoding="UTF-8"?>\n<metadata packages="%d">\n' % len(names)]
    for n in names:
        size = os.path.getsize(os.path.join(root, PACKAGES, n))
        xml.append(f'<package type="rpm"><name>{n.rsplit("-", 2)[0]}</name><location href="Packages/{n}"/>'
                   f'<size package="{size}"/></package>\n')
    xml.append("</metadata>\n")
    primary = gzip.compress("".join(xml).encode(), mtime=0)
    d = os.path.join(root, REPODATA)
    os.makedirs(d, exist_ok=True)
    for name in sorted(os.listdir(d)):
        os.unlink(os.path.join(d, name))
    write_file(os.path.join(d, "primary.xml.gz"), primary, 0o644, mtime)
    repomd = f'<repomd><data type="primary"><checksum>{zlib.crc32(primary):08x}</checksum></data></repomd>\n'
    write_file(os.path.join(d, "repomd.xml"), repomd.encode(), 0o644, mtime)
    return len(primary) + len(repomd)


def rpm_name(rng, content):
    w = rng.choice(content.words)
    return f"{w}-{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}-{rng.randint(1, 20)}.el8.{rng.choice(['x86_64', 'x86_64', 'noarch'])}.rpm"


def rpm_bytes(rng, name, size):
    head = b"\xed\xab\xee\xdb\x03\x00\x00\x01" + name.encode()[:66].ljust(66, b"\0")
    return head + rng.randbytes(max(0, size - len(head)))


def generate(args):
    out = safe_out(args.out)
    if os.path.exists(out) and os.listdir(out):
        sys.exit(f"gen_tree: {out} exists and is not empty")
    os.makedirs(out, exist_ok=True)
    os.umask(0o022)
    content = Content(args.seed)
    rng = random.Random(f"{args.seed}:tree")
    n, budget = args.files, args.bytes
    stats = {"files": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0}

    # Packages: ~40% of bytes, about 750 KiB each, at most 8% of entries.
    n_rpm = max(4, min(int(budget * 0.40 / (750 * 1024)), n * 8 // 100))
    rpm_sizes = [rng.lognormvariate(0, 1.3) for _ in range(n_rpm)]
    f = budget * 0.40 / sum(rpm_sizes)
    rpm_sizes = [max(1024, min(int(s * f), int(budget * 0.04) + 1024)) for s in rpm_sizes]
    rpm_names = set()
    while len(rpm_names) < n_rpm:
        rpm_names.add(rpm_name(rng, content))
    rpm_names = sorted(rpm_names)
    dups = sorted(rng.sample(range(n_rpm), max(2, n_rpm // 10)))
    small = []  # (path, data, mode)
    for i in range(min(len(POSTSCRIPTS) + 150, max(20, n // 200))):
        name = POSTSCRIPTS[i] if i < len(POSTSCRIPTS) else f"{rng.choice(content.words)}{i}"
        small.append((f"postscripts/{name}", content.text(rng, int(rng.lognormvariate(0, 1.0) * 2500),
                                                           b"#!/bin/sh\n"), 0o755))
    for ext in ["pkglist", "exlist", "postinstall", "synclist", "otherpkgs.pkglist"]:
        small.append((f"custom/netboot/rh/compute.{OS_NAME}.{ARCH}.{ext}", content.text(rng, 800), 0o644))
    for name in ["compute.tmpl", "service.tmpl", "compute.rhels8.pkglist"]:
        small.append((f"autoinst/{name}", content.text(rng, 6000), 0o644))

    n_root = n - n_rpm - len(dups) - len(small) - 3  # 3: cpio, repodata
    n_images = max(1, -(-n_root // args.image_files)) if args.image_files else 1
    n_root -= n_images - 1  # each further image has its own cpio
    cpio_target = int(budget * 0.14)
    rpm_bytes_total = sum(rpm_sizes) + sum(rpm_sizes[i] for i in dups)
    root_budget = budget - rpm_bytes_total - cpio_target - sum(len(d) for _, d, _ in small)
    for i in range(n_images):
        # Plan and write one image at a time: the planner holds its entries.
        n_img = n_root // n_images + (1 if i < n_root % n_images else 0)
        planner = Planner(rng, content)
        planner.rootimg(max(50, n_img))
        scale_sizes(planner.entries, max(root_budget // n_images, n_img * 64))
        rel_root, rel_cpio = image_paths(i)
        rootimg = os.path.join(out, rel_root)
        os.makedirs(rootimg)
        materialize(rootimg, planner.entries, content, rng, stats)
        for d in planner.empty_dirs:
            os.makedirs(os.path.join(rootimg, d), exist_ok=True)
        del planner
        cpio_size = pack_image(rootimg, os.path.join(out, rel_cpio), cpio_target // n_images, BASE_TIME * 10**9)
        stats["files"] += 1
        stats["bytes"] += cpio_size
    for i, (name, size) in enumerate(zip(rpm_names, rpm_sizes)):
        data = rpm_bytes(rng, name, size)
        t = mtime_ns(rng)
        write_file(os.path.join(out, PACKAGES, name), data, 0o644, t)
        stats["files"] += 1
        stats["bytes"] += len(data)
        if i in dups:
            write_file(os.path.join(out, OTHERPKGS, name), data, 0o644, t)
            stats["files"] += 1
            stats["bytes"] += len(data)
    stats["bytes"] += write_repodata(out, rng, BASE_TIME * 10**9)
    stats["files"] += 2
    for path, data, mode in small:
        write_file(os.path.join(out, path), data, mode, mtime_ns(rng))
        stats["files"] += 1
        stats["bytes"] += len(data)
    all_dirs = [out] + [os.path.join(top, d) for top, ds, _ in os.walk(out) for d in ds]
    set_dir_times(all_dirs, BASE_TIME * 10**9)
    stats["dirs"] = len(all_dirs) - 1
    stats["entries"] = stats["files"] + stats["symlinks"] + stats["hardlinks"]
    stats["packages"] = n_rpm
    stats["packages_duplicated"] = len(dups)
    stats["cpio_bytes"] = cpio_size
    stats["images"] = n_images
    print(json.dumps(stats))


# ---------------------------------------------------------------- mutate


def looks_random(data):
    sample = data[:8192]
    return len(sample) > 256 and len(zlib.compress(sample, 1)) > 0.9 * len(sample)


def mutate_image(rootimg, rng, content, night, st):
    """Night NIGHT's change inside one root image."""
    walk = sorted_walk(rootimg)
    regular = [rel for rel, s in walk if stat.S_ISREG(s.st_mode) and rel != "etc/hosts"]
    dirs = [rel for rel, s in walk if stat.S_ISDIR(s.st_mode)]
    pick = lambda pct: max(1, int(len(regular) * pct / 100))  # noqa: E731
    chosen = rng.sample(regular, min(len(regular), pick(3) + pick(2) + pick(0.5) + pick(0.3)))
    rewrite, rest = chosen[: pick(3)], chosen[pick(3):]
    touch, rest = rest[: pick(2)], rest[pick(2):]
    delete, rename = rest[: pick(0.5)], rest[pick(0.5):]

    for rel in rewrite:
        p = os.path.join(rootimg, rel)
        s = os.lstat(p)
        t = mtime_ns(rng, night)
        with open(p, "rb") as f:
            old = f.read()
        if len(old) > MiB:
            # A big file patched in the middle (rpmdb, locale-archive).
            n = min(len(old) // 4, rng.randint(4096, 65536))
            off = rng.randrange(len(old) - n)
            with open(p, "r+b") as f:
                f.seek(off)
                f.write(content.code_bytes(rng, n))
            os.utime(p, ns=(t, t))
            st["patched"] += 1
            st["bytes_written"] += n
        elif looks_random(old) or old[:4] == b"\x7fELF" or old[:2] == b"\x1f\x8b":
            # A package update replaces the file with a new build.
            size = max(0, int(len(old) * rng.uniform(0.9, 1.1)))
            if old[:4] == b"\x7fELF":
                data = content.elf(rng, size)
            elif old[:2] == b"\x1f\x8b":
                data = content.gzipped_text(rng, size)
            else:
                data = content.random_bytes(rng, size)
            replace_file(p, data, stat.S_IMODE(s.st_mode), t)
            st["rewritten"] += 1
            st["bytes_written"] += len(data)
        else:
            # A config edit: some lines changed, some appended.
            lines = old.split(b"\n")
            for _ in range(rng.randint(1, 3)):
                if lines:
                    lines[rng.randrange(len(lines))] = content.text(rng, rng.randint(10, 60)).replace(b"\n", b" ")
            lines.append(content.text(rng, rng.randint(0, 300)))
            data = b"\n".join(lines)
            with open(p, "r+b") as f:
                f.write(data)
                f.truncate()
            os.utime(p, ns=(t, t))
            st["rewritten"] += 1
            st["bytes_written"] += len(data)
    for rel in touch:
        t = mtime_ns(rng, night)
        os.utime(os.path.join(rootimg, rel), ns=(t, t))
        st["touched"] += 1
    for rel in delete:
        os.unlink(os.path.join(rootimg, rel))
        CHANGED_DIRS.add(os.path.dirname(os.path.join(rootimg, rel)))
        st["deleted"] += 1
    for rel in rename:
        d, name = os.path.split(rel)
        if rng.random() < 0.5 or not dirs:
            dest_dir = d
        else:
            dest_dir = rng.choice(dirs)
        dest = os.path.join(rootimg, dest_dir, f"{name}.{night}")
        if not os.path.lexists(dest):
            os.rename(os.path.join(rootimg, rel), dest)
            CHANGED_DIRS.update([os.path.dirname(os.path.join(rootimg, rel)), os.path.dirname(dest)])
            st["renamed"] += 1
    for _ in range(pick(0.5)):
        d = rng.choice(dirs) if dirs else ""
        name = f"{rng.choice(content.words)}-n{night}"
        p = os.path.join(rootimg, d, name)
        if os.path.lexists(p):
            continue
        kind = rng.choice(["text", "elf", "code", "random"])
        data = content.make(kind, rng, int(rng.lognormvariate(0, 1.3) * 8000), b"")
        write_file(p, data, 0o755 if kind == "elf" else 0o644, mtime_ns(rng, night))
        st["new_files"] += 1
        st["bytes_written"] += len(data)

    # Cluster work adds nodes to /etc/hosts.
    hosts = os.path.join(rootimg, "etc/hosts")
    if os.path.exists(hosts):
        with open(hosts, "rb") as f:
            n_lines = f.read().count(b"\n")
        add = rng.randint(20, 200)
        with open(hosts, "ab") as f:
            f.write(hosts_lines(rng, n_lines, add))
        t = mtime_ns(rng, night)
        os.utime(hosts, ns=(t, t))
        st["hosts_lines"] = add



def mutate(args):
    out = safe_out(args.out)
    images = tree_images(out)
    if not images:
        sys.exit(f"gen_tree: {out} is not a tree made by gen_tree.py (no {ROOTIMG})")
    os.umask(0o022)
    night = args.mutate
    content = Content(args.seed)
    rng = random.Random(f"{args.seed}:night:{night}")
    st = {"night": night, "rewritten": 0, "patched": 0, "touched": 0, "deleted": 0, "renamed": 0,
          "new_files": 0, "new_packages": 0, "updated_packages": 0, "hosts_lines": 0, "bytes_written": 0}
    if len(images) > 1:
        # A tree of many images: one in six is worked on, ~1% of the entries,
        # or --images of them (the same night's bytes on trees of any size).
        k = args.images if args.images is not None else max(1, round(len(images) / 6))
        images = sorted(rng.sample(images, min(len(images), k)))
    for rel_root, _ in images:
        mutate_image(os.path.join(out, rel_root), rng, content, night, st)
    st["images_changed"] = len(images)

    # Packages: some updated (old version removed), some new.
    pkgdir = os.path.join(out, PACKAGES)
    pkgs = sorted(os.listdir(pkgdir)) if os.path.isdir(pkgdir) else []
    sizes = sorted(os.path.getsize(os.path.join(pkgdir, n)) for n in pkgs) or [512 * 1024]
    median = sizes[len(sizes) // 2]
    for name in rng.sample(pkgs, min(len(pkgs), max(1, len(pkgs) // 100))):
        old_size = os.path.getsize(os.path.join(pkgdir, name))
        os.unlink(os.path.join(pkgdir, name))
        CHANGED_DIRS.add(pkgdir)
        new = name.replace(".el8.", f".n{night}.el8.", 1)
        data = rpm_bytes(rng, new, int(old_size * rng.uniform(0.9, 1.1)))
        write_file(os.path.join(pkgdir, new), data, 0o644, mtime_ns(rng, night))
        st["updated_packages"] += 1
        st["bytes_written"] += len(data)
    for i in range(max(2, len(pkgs) // 100)):
        name = rpm_name(rng, content).replace(".el8.", f".n{night}.el8.", 1)
        if os.path.exists(os.path.join(pkgdir, name)):
            continue
        data = rpm_bytes(rng, name, int(median * rng.lognormvariate(0, 1.0)))
        t = mtime_ns(rng, night)
        write_file(os.path.join(pkgdir, name), data, 0o644, t)
        st["new_packages"] += 1
        st["bytes_written"] += len(data)
        if i == 0:
            write_file(os.path.join(out, OTHERPKGS, name), data, 0o644, t)
            st["bytes_written"] += len(data)
    if os.path.isdir(pkgdir):
        write_repodata(out, rng, mtime_ns(rng, night))

    # A postscript fix.
    psdir = os.path.join(out, "postscripts")
    if os.path.isdir(psdir):
        names = sorted(os.listdir(psdir))
        if names:
            p = os.path.join(psdir, rng.choice(names))
            with open(p, "ab") as f:
                f.write(b"\n# night %d\n" % night + content.text(rng, rng.randint(50, 400)))
            t = mtime_ns(rng, night)
            os.utime(p, ns=(t, t))

    for rel_root, rel_cpio in images:
        cpio = os.path.join(out, rel_cpio)
        if os.path.exists(cpio) and not args.no_repack:
            st["cpio_bytes"] = pack_image(os.path.join(out, rel_root), cpio, os.path.getsize(cpio),
                                          mtime_ns(rng, night))
            st["bytes_written"] += st["cpio_bytes"]
    set_dir_times(CHANGED_DIRS, (BASE_TIME + night * DAY) * 10**9)
    print(json.dumps(st))


def parse_size(text):
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024**4}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("out", help="output directory (the tree's root, like /install)")
    ap.add_argument("--files", type=int, default=30000, help="non-directory entries (default 30000)")
    ap.add_argument("--bytes", type=parse_size, default=parse_size("1G"),
                    help="approximate bytes of regular files, e.g. 1G, 100M (default 1G)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    ap.add_argument("--mutate", type=int, metavar="NIGHT", help="apply night NIGHT's change to OUT")
    ap.add_argument("--image-files", type=int, metavar="K",
                    help="at most K entries per root image: a tree of many images of a real image's "
                         "directory sizes, instead of one image whose directories grow with --files")
    ap.add_argument("--no-repack", action="store_true", help="with --mutate: leave rootimg.cpio.gz alone")
    ap.add_argument("--images", type=int, metavar="K",
                    help="with --mutate on a tree of many images: change K of them (default: one in six)")
    args = ap.parse_args()
    if args.mutate is not None:
        if args.mutate < 1:
            ap.error("--mutate NIGHT must be >= 1")
        if args.images is not None and args.images < 1:
            ap.error("--images K must be >= 1")
        mutate(args)
    else:
        if args.files < 200:
            ap.error("--files must be at least 200")
        generate(args)


if __name__ == "__main__":
    main()
