//! Shared test harness: a temp workspace with a store, a runner for the real
//! binary, deterministic tree generators and a full tree comparison
//! (content, type, mode, owner, mtime ns, xattrs, hardlinks, holes).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_hamn");

/// Tests that need root say so loudly instead of skipping.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (chown, mknod, security.* xattrs, mounts); run the suite as root"
    );
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("hamn-test-")
            .tempdir()
            .expect("temp dir");
        let e = Env { dir };
        e.ok(&["init"]);
        e
    }

    /// A workspace without a store.
    pub fn bare() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("hamn-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--store").arg(self.store());
        c.env_remove("HAMN_CONFIG");
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run hamn")
    }

    /// Run and require exit status 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hamn {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }

    /// Take a snapshot of `paths`, returning its id.
    pub fn snapshot(&self, paths: &[&Path]) -> String {
        let mut a: Vec<String> = vec!["--json".into(), "snapshot".into()];
        a.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let args: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let v: serde_json::Value = serde_json::from_str(&self.ok(&args)).expect("json");
        v["id"].as_str().expect("id").to_string()
    }

    pub fn snapshot_count(&self) -> usize {
        self.json(&["snapshots"])["snapshots"]
            .as_array()
            .expect("list")
            .len()
    }
}

/// Exit code, asserting the process was not killed by a signal (a panic
/// aborts with 101, which also fails the callers' expectations).
/// Wait until `child` has stopped itself (a `stop:` failpoint).
pub fn wait_stopped(child: &std::process::Child) {
    loop {
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        if stat.split_whitespace().nth(2) == Some("T") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Continue a stopped `child`.
pub fn resume(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
}

pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}", out.status))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

/// Text-like compressible bytes.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "node",
        "install",
        "xcat",
        "compute",
        "rootimg",
        "eth0",
        "192.168.0.",
        "\n",
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
        v.push(b' ');
    }
    v.truncate(n);
    v
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

/// A small tree of ordinary files: `n` files in nested dirs.
pub fn make_tree(root: &Path, n: usize, seed: u64) {
    for i in 0..n {
        let p = root.join(format!("d{}/s{}/f{i}.txt", i % 7, i % 3));
        let data = if i % 5 == 0 {
            bytes(1000 + (i * 37) % 5000, seed + i as u64)
        } else {
            text(100 + (i * 91) % 3000, seed + i as u64)
        };
        write(&p, &data);
    }
}

pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryFacts {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content_hash: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Index of the hardlink group (by first path), if the file has
    /// another name in the same tree. (A deployed file may also share its
    /// inode with the other generation, outside the tree.)
    pub link_group: Option<usize>,
    /// Allocated bytes are at most this share of the size (sparse kept).
    pub sparse: bool,
}

fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut v = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut v[..]) {
            v.truncate(len);
            out.insert(name.to_vec(), v);
        }
    }
    out
}

/// Facts of every entry below `root`, keyed by relative path bytes.
pub fn facts(root: &Path) -> BTreeMap<Vec<u8>, EntryFacts> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    collect(root, root, &mut out, &mut groups);
    // Only groups with two or more names here count, numbered afresh in
    // path order.
    let mut names = HashMap::new();
    for f in out.values() {
        if let Some(g) = f.link_group {
            *names.entry(g).or_insert(0) += 1;
        }
    }
    let mut renumbered = HashMap::new();
    for f in out.values_mut() {
        f.link_group = f.link_group.filter(|g| names[g] > 1).map(|g| {
            let n = renumbered.len();
            *renumbered.entry(g).or_insert(n)
        });
    }
    out
}

/// Facts of the entry at `p` itself; `link_group` is left to the caller.
fn entry_facts(p: &Path) -> EntryFacts {
    let md = fs::symlink_metadata(p).expect("lstat");
    let ft = md.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    EntryFacts {
        kind: kind.into(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        size: if ft.is_dir() { 0 } else { md.size() },
        content_hash: ft.is_file().then(|| {
            blake3::hash(&fs::read(p).expect("read"))
                .to_hex()
                .to_string()
        }),
        target: ft.is_symlink().then(|| {
            fs::read_link(p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        }),
        rdev: if ft.is_char_device() || ft.is_block_device() {
            md.rdev()
        } else {
            0
        },
        xattrs: xattrs_of(p),
        link_group: None,
        sparse: ft.is_file() && md.size() > 1 << 20 && md.blocks() * 512 < md.size() / 2,
    }
}

fn collect(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<Vec<u8>, EntryFacts>,
    groups: &mut HashMap<(u64, u64), usize>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let mut f = entry_facts(&p);
        let md = fs::symlink_metadata(&p).expect("lstat");
        if md.is_file() && md.nlink() > 1 {
            let n = groups.len();
            f.link_group = Some(*groups.entry((md.dev(), md.ino())).or_insert(n));
        }
        let rel = p
            .strip_prefix(root)
            .expect("prefix")
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.insert(rel, f);
        if md.is_dir() {
            collect(root, &p, out, groups);
        }
    }
}

/// Assert that the two tops (not what is below them) have the same
/// metadata: mode, owner, mtime and xattrs of a managed directory itself.
pub fn assert_same_top(expected: &Path, actual: &Path) {
    assert_eq!(
        entry_facts(expected),
        entry_facts(actual),
        "{} and {} differ",
        expected.display(),
        actual.display()
    );
}

/// Assert two trees are equal entry by entry, naming the first difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = facts(expected);
    let b = facts(actual);
    let names = |m: &BTreeMap<Vec<u8>, EntryFacts>| -> Vec<String> {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(&a), names(&b), "different entries");
    for (k, fa) in &a {
        let fb = &b[k];
        assert_eq!(fa, fb, "entry {:?} differs", OsStr::from_bytes(k));
    }
}

/// Restore all of `src` from snapshot `snap` into a new dir; returns the
/// restored copy of `src` (restore keeps full paths below --to).
pub fn restore_all(env: &Env, snap: &str, src: &Path, name: &str) -> PathBuf {
    let to = env.path(name);
    fs::create_dir_all(&to).expect("mkdir");
    env.ok(&[
        "restore",
        snap,
        src.to_str().expect("utf8"),
        "--to",
        to.to_str().expect("utf8"),
    ]);
    to.join(src.strip_prefix("/").expect("absolute"))
}

/// Copy a tree (content and mtimes only) to freeze a reference state.
pub fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp");
    assert!(st.success());
}

/// A file system mounted for the test's lifetime (root only).
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// `mount ARGS path` for the test's lifetime (root only).
    fn new(path: &Path, args: &[&str]) -> Mount {
        require_root();
        fs::create_dir_all(path).expect("mkdir");
        let st = Command::new("mount")
            .args(args)
            .arg(path)
            .status()
            .expect("mount");
        assert!(st.success(), "mount {args:?} on {} failed", path.display());
        Mount {
            path: path.to_path_buf(),
        }
    }

    /// Give a tmpfs mount another size (room made on a full disk).
    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(st.success(), "remount of {} failed", self.path.display());
    }

    pub fn tmpfs(path: &Path, size: &str) -> Mount {
        Mount::new(
            path,
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
        )
    }

    /// A ramfs: a file system that refuses every xattr.
    pub fn ramfs(path: &Path) -> Mount {
        Mount::new(path, &["-t", "ramfs", "ramfs"])
    }

    /// A fresh XFS with reflinks (RHEL's default for /install) in a sparse
    /// image file `image`, loop-mounted on `path`. Needs mkfs.xfs
    /// (xfsprogs, which scripts/test.sh installs) and a loop device.
    pub fn xfs(image: &Path, path: &Path) -> Mount {
        require_root();
        let f = fs::File::create(image).expect("image file");
        // 300 MiB is the smallest XFS mkfs.xfs makes.
        f.set_len(320 << 20).expect("size the image");
        drop(f);
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(image)
            .status()
            .expect("mkfs.xfs is missing: apt-get install xfsprogs");
        assert!(mkfs.success(), "mkfs.xfs {} failed", image.display());
        Mount::new(path, &["-o", "loop", image.to_str().unwrap()])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The pack files of a store, oldest first.
pub fn packs(store: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in fs::read_dir(store.join("packs")).expect("packs") {
        let sub = sub.expect("e").path();
        for p in fs::read_dir(&sub).expect("sub") {
            v.push(p.expect("e").path());
        }
    }
    v.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).expect("mtime"));
    v
}

/// One blob as a pack's trailer lists it.
#[derive(Debug, Clone, Copy)]
pub struct PackEntry {
    /// 1 chunk, 2 tree.
    pub kind: u8,
    pub hash: [u8; 32],
    pub offset: u64,
    pub stored_len: u32,
}

const PACK_FOOTER_LEN: usize = 44;
const TRAILER_ENTRY_LEN: usize = 50;

/// The blobs a pack holds, read from its trailer (docs/format.md, 5.1).
pub fn pack_entries(pack: &Path) -> Vec<PackEntry> {
    let data = fs::read(pack).expect("read pack");
    let footer = &data[data.len() - PACK_FOOTER_LEN..];
    let trailer_len = u32::from_le_bytes(footer[..4].try_into().unwrap()) as usize;
    let trailer = &data[data.len() - PACK_FOOTER_LEN - trailer_len..data.len() - PACK_FOOTER_LEN];
    let n = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let e = &trailer[4 + i * TRAILER_ENTRY_LEN..4 + (i + 1) * TRAILER_ENTRY_LEN];
            PackEntry {
                kind: e[0],
                hash: e[2..34].try_into().unwrap(),
                offset: u64::from_le_bytes(e[34..42].try_into().unwrap()),
                stored_len: u32::from_le_bytes(e[46..50].try_into().unwrap()),
            }
        })
        .collect()
}

/// Rewrite a pack's trailer entries through `edit`, with a footer checksum
/// that matches again (a crafted, self-consistent trailer).
pub fn rewrite_trailer(pack: &Path, edit: impl Fn(usize, &mut [u8])) {
    let mut data = fs::read(pack).expect("read pack");
    let len = data.len();
    let trailer_len =
        u32::from_le_bytes(data[len - PACK_FOOTER_LEN..][..4].try_into().unwrap()) as usize;
    let start = len - PACK_FOOTER_LEN - trailer_len;
    let n = u32::from_le_bytes(data[start..start + 4].try_into().unwrap()) as usize;
    for i in 0..n {
        let at = start + 4 + i * TRAILER_ENTRY_LEN;
        edit(i, &mut data[at..at + TRAILER_ENTRY_LEN]);
    }
    let hash = *blake3::hash(&data[start..start + trailer_len]).as_bytes();
    data[len - PACK_FOOTER_LEN + 4..len - PACK_FOOTER_LEN + 36].copy_from_slice(&hash);
    fs::write(pack, &data).expect("write pack");
}

/// Flip one byte in the middle of the largest chunk stored in `pack`;
/// returns that chunk's entry.
pub fn damage_largest_chunk(pack: &Path) -> PackEntry {
    let victim = pack_entries(pack)
        .into_iter()
        .filter(|e| e.kind == 1)
        .max_by_key(|e| e.stored_len)
        .expect("a chunk in the pack");
    damage_blob(pack, &victim);
    victim
}

/// Flip one byte in the middle of `blob`'s stored bytes in `pack`.
pub fn damage_blob(pack: &Path, blob: &PackEntry) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .expect("open pack");
    use std::os::unix::fs::FileExt;
    let at = blob.offset + blob.stored_len as u64 / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0x40], at).expect("write");
}

/// Run hamn on the store `store` (a standby's, say).
pub fn standby(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run hamn")
}

/// Parse stdout as exactly one JSON document (trailing output is an error).
pub fn one_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not exactly one JSON document: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// How many of a file's pages are in the page cache, and how many it has
/// (mincore on a mapping, which faults nothing in).
pub fn cached_pages(path: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).expect("open");
    let len = f.metadata().expect("stat").len() as usize;
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore writes one byte per page into a buffer of that many bytes.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        let r = libc::mincore(p, len, resident.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(r, 0, "mincore {}", path.display());
    }
    let n = resident.iter().filter(|b| **b & 1 == 1).count();
    (n, resident.len())
}

/// Write a file's pages out and drop them from the page cache; fails the
/// test if the file system keeps them (tmpfs: the cache is the file).
pub fn drop_from_cache(path: &Path) {
    let f = fs::File::open(path).expect("open");
    f.sync_all().expect("fsync");
    let uncache =
        || rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
    uncache();
    let need = "the tests need a disk file system (ext4, XFS) for their temp dir";
    assert_eq!(
        cached_pages(path).0,
        0,
        "{} stays in the page cache: {need}",
        path.display()
    );
    // And the file system tells a read of cached bytes only from another.
    let mut buf = [0u8; 4096];
    let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
    let probe = rustix::io::preadv2(&f, &mut bufs, 0, rustix::io::ReadWriteFlags::NOWAIT);
    assert!(
        matches!(probe, Err(rustix::io::Errno::AGAIN)),
        "a RWF_NOWAIT read of {} gave {probe:?}, not EAGAIN: {need}",
        path.display()
    );
    // The probe started a readahead: let it finish, then drop it all again.
    fs::read(path).expect("read");
    uncache();
    assert_eq!(cached_pages(path).0, 0, "{}: {need}", path.display());
}

/// The xattr that tests of a root refusing xattrs set on a source file.
pub const SITE_TAG: &str = "user.site-tag";

pub fn set_site_tag(path: &Path) {
    rustix::fs::lsetxattr(path, SITE_TAG, b"1", rustix::fs::XattrFlags::empty())
        .expect("setxattr on the source");
}

/// A deployment that could not keep [`SITE_TAG`] on `file`: done with
/// warnings (exit 3), a log line `warning: {from}...` naming the file and
/// the xattr, and one warning in the `--json` summary, which is returned.
pub fn assert_site_tag_refused(out: &Output, from: &str, file: &str) -> serde_json::Value {
    assert_eq!(code(out), 3, "{}", stderr(out));
    let err = stderr(out);
    let line = format!("warning: {from}");
    assert!(
        err.lines()
            .any(|l| l.contains(&line) && l.contains(file) && l.contains(SITE_TAG)),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = j["materialize"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{j}");
    j
}
