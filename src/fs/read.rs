//! Reading the live file system: metadata into tree form, xattrs without
//! following symlinks, data extents of sparse files, and owner names.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::RwLock;

use crate::tree::{Meta, OWNER_NAME_MAX_BYTES, OwnerName, XATTR_VALUE_MAX_BYTES};

/// uid/gid -> name, looked up once each. Read by every walking thread for
/// every entry, so a look-up of a known id takes only a shared lock, and
/// gives the one shared copy of the name.
#[derive(Default)]
pub struct Owners {
    users: RwLock<HashMap<u32, OwnerName>>,
    groups: RwLock<HashMap<u32, OwnerName>>,
}

/// An owner name cut to what a tree holds (`OWNER_NAME_MAX_BYTES`). Names
/// are for display only (restores use the numbers), so a longer one is
/// shortened rather than refused; a UTF-8 name is cut between characters.
fn owner_name(name: &[u8]) -> Vec<u8> {
    if name.len() <= OWNER_NAME_MAX_BYTES {
        return name.to_vec();
    }
    let mut end = OWNER_NAME_MAX_BYTES;
    if let Ok(text) = std::str::from_utf8(name) {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
    }
    name[..end].to_vec()
}

/// The name of `id` from `names`, looked up with `lookup` the first time.
fn owner_of(
    names: &RwLock<HashMap<u32, OwnerName>>,
    id: u32,
    lookup: impl FnOnce(u32) -> Option<Vec<u8>>,
) -> OwnerName {
    if let Some(name) = names.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return name.clone();
    }
    names
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id)
        .or_insert_with(|| {
            lookup(id)
                .map(|n| owner_name(&n))
                .unwrap_or_default()
                .into()
        })
        .clone()
}

impl Owners {
    pub fn user(&self, uid: u32) -> OwnerName {
        owner_of(&self.users, uid, |uid| {
            uzers::get_user_by_uid(uid).map(|u| u.name().as_bytes().to_vec())
        })
    }

    pub fn group(&self, gid: u32) -> OwnerName {
        owner_of(&self.groups, gid, |gid| {
            uzers::get_group_by_gid(gid).map(|g| g.name().as_bytes().to_vec())
        })
    }
}

/// Extended attributes of `path`, sorted by name: of the entry itself, or
/// with `follow` of a symlink's target. A file system without xattr
/// support has none.
pub fn xattrs(path: &Path, follow: bool) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if follow {
        xattrs_with(
            |names| rustix::fs::listxattr(path, names),
            |name, value| rustix::fs::getxattr(path, name, value),
        )
    } else {
        xattrs_with(
            |names| rustix::fs::llistxattr(path, names),
            |name, value| rustix::fs::lgetxattr(path, name, value),
        )
    }
}

/// [`xattrs`] of an open file.
pub fn xattrs_of_file(file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_with(
        |names| rustix::fs::flistxattr(file, names),
        |name, value| rustix::fs::fgetxattr(file, name, value),
    )
}

fn xattrs_with(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match list(&mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => {
                let len = names.len() * 4;
                names.resize(len, 0)
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 256];
        let len = loop {
            match get(name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) if value.len() < XATTR_VALUE_MAX_BYTES => {
                    value.resize(XATTR_VALUE_MAX_BYTES, 0)
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the entry at `path` (with `md`, its `lstat`) has `m`'s mode
/// (not for symlinks), mtime (not for directories), owner and xattrs.
pub fn has_meta(path: &Path, md: &Metadata, m: &Meta) -> bool {
    has_stat_meta(md, m) && xattrs(path, false).is_ok_and(|x| x == m.xattrs)
}

/// [`has_meta`] of an open regular file, `md` its `fstat`.
pub fn file_has_meta(file: &File, md: &Metadata, m: &Meta) -> bool {
    has_stat_meta(md, m) && xattrs_of_file(file).is_ok_and(|x| x == m.xattrs)
}

fn has_stat_meta(md: &Metadata, m: &Meta) -> bool {
    let mode_ok = md.file_type().is_symlink() || md.mode() & 0o7777 == m.mode;
    let time_ok = md.file_type().is_dir()
        || (md.mtime() == m.mtime_sec && md.mtime_nsec() as u32 == m.mtime_nsec);
    mode_ok && time_ok && md.uid() == m.uid && md.gid() == m.gid
}

/// Tree metadata from a stat result and the entry's xattrs.
pub fn meta_from(md: &Metadata, owners: &Owners, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Meta {
    Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: owners.user(md.uid()),
        group: owners.group(md.gid()),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        dev: md.dev(),
        ino: md.ino(),
        ctime_sec: md.ctime(),
        ctime_nsec: md.ctime_nsec() as u32,
        nlink: md.nlink() as u32,
        xattrs,
    }
}

/// A stat's ctime in Unix nanoseconds.
pub fn ctime_ns(md: &Metadata) -> i64 {
    md.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.ctime_nsec())
}

/// Whether a stat is of the inode recorded in `meta`, its inode untouched
/// since: then its xattrs are the recorded ones (setting or removing one
/// changes the ctime), and so is a symlink's target (never changed in
/// place).
pub fn same_inode_version(meta: &Meta, md: &Metadata) -> bool {
    meta.dev == md.dev()
        && meta.ino == md.ino()
        && meta.ctime_sec == md.ctime()
        && meta.ctime_nsec == md.ctime_nsec() as u32
}

/// Whether a stat still describes the version of a file recorded in `meta`.
pub fn unchanged(meta: &Meta, size: u64, md: &Metadata) -> bool {
    same_inode_version(meta, md)
        && meta.mtime_sec == md.mtime()
        && meta.mtime_nsec == md.mtime_nsec() as u32
        && size == md.size()
}

/// Open a file for reading without following a symlink (unless `follow`)
/// and, where allowed, without updating its access time.
pub fn open_source(path: &Path, follow: bool) -> io::Result<File> {
    let base = if follow { 0 } else { libc::O_NOFOLLOW } | libc::O_CLOEXEC;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(base)
            .open(path),
        r => r,
    }
}

/// The extents of `file` that hold data, as (offset, length). A file whose
/// blocks cover its size is one extent; otherwise SEEK_DATA/SEEK_HOLE find
/// the holes.
pub fn data_extents(file: &File, md: &Metadata) -> io::Result<Vec<(u64, u64)>> {
    let size = md.size();
    if size == 0 {
        return Ok(Vec::new());
    }
    if md.blocks() * 512 >= size {
        return Ok(vec![(0, size)]);
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Hole(start))?.min(size);
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// Reads the given extents of a file one after another, as one stream.
///
/// It leaves the page cache about as it found it: a file whose first read
/// found nothing cached is dropped from the cache as it is read (every
/// [`DROP_EVERY`] bytes, the rest by [`ExtentReader::release`]); a file
/// that was cached stays. A snapshot reads every changed file once, and a
/// first one all of `/install`; the pages the node serves from (boot
/// images, packages) must not be pushed out by it.
pub struct ExtentReader<'a> {
    file: &'a File,
    extents: &'a [(u64, u64)],
    idx: usize,
    done: u64,
    cache: Cache,
    /// For a file read from the disk: where it has been dropped up to.
    dropped: u64,
}

/// How much of a file read from the disk may stay cached while it is read.
const DROP_EVERY: u64 = 8 << 20;

/// Whether the file was in the page cache before it was read.
#[derive(Clone, Copy, PartialEq)]
enum Cache {
    Unknown,
    /// Cached, or the file system cannot tell (no `RWF_NOWAIT`).
    Keep,
    /// Read from the disk.
    Fetched,
}

impl<'a> ExtentReader<'a> {
    pub fn new(file: &'a File, extents: &'a [(u64, u64)]) -> Self {
        ExtentReader {
            file,
            extents,
            idx: 0,
            done: 0,
            cache: Cache::Unknown,
            dropped: 0,
        }
    }

    /// The first read asks for cached bytes only, to learn whether the
    /// file is cached.
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if self.cache == Cache::Unknown {
            let mut bufs = [io::IoSliceMut::new(buf)];
            let flags = rustix::io::ReadWriteFlags::NOWAIT;
            match rustix::io::preadv2(self.file, &mut bufs, off, flags) {
                Ok(n) if n > 0 => {
                    self.cache = Cache::Keep;
                    return Ok(n);
                }
                Ok(_) | Err(rustix::io::Errno::AGAIN) => self.cache = Cache::Fetched,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => self.cache = Cache::Keep,
            }
        }
        let n = self.file.read_at(buf, off)?;
        // Reads go forward (extents are in order).
        let read_to = off + n as u64;
        if self.cache == Cache::Fetched && read_to - self.dropped >= DROP_EVERY {
            super::uncache(self.file, self.dropped, read_to - self.dropped);
            self.dropped = read_to;
        }
        Ok(n)
    }

    /// Drop the file from the page cache if it was read from the disk.
    pub fn release(&self) {
        if self.cache == Cache::Fetched {
            super::uncache_all(self.file);
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.extents.get(self.idx) {
            if self.done >= len {
                self.idx += 1;
                self.done = 0;
                continue;
            }
            let want = ((len - self.done) as usize).min(buf.len());
            let n = self.read_at(&mut buf[..want], off + self.done)?;
            if n == 0 {
                // Shorter than its stat said: the caller's re-stat sees it.
                self.idx = self.extents.len();
                return Ok(0);
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Whether two stats of one open file show the same version of it.
pub fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Entry, Kind, Tree};

    #[test]
    fn long_owner_names_are_cut_to_what_a_tree_holds() {
        assert_eq!(owner_name(b"root"), b"root");
        let ascii = vec![b'u'; 300];
        assert_eq!(owner_name(&ascii).len(), OWNER_NAME_MAX_BYTES);
        // 2-byte characters: 127 fit, the 128th would be cut in half.
        let accented = "é".repeat(150);
        let cut = owner_name(accented.as_bytes());
        assert_eq!(std::str::from_utf8(&cut).unwrap(), "é".repeat(127));
        let not_utf8 = vec![0xff; 400];
        assert_eq!(owner_name(&not_utf8).len(), OWNER_NAME_MAX_BYTES);
        // A tree holding the cut names reads back.
        let t = Tree {
            entries: vec![Entry {
                name: b"f".to_vec(),
                meta: Meta {
                    user: owner_name(&ascii).into(),
                    group: owner_name(&not_utf8).into(),
                    ..Meta::default()
                },
                kind: Kind::Fifo,
            }],
        };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }
}
