//! Writing entries into a target directory with `*at` calls on directory
//! descriptors. Nothing here follows a symlink inside the target: every
//! open uses O_NOFOLLOW, metadata calls use AT_SYMLINK_NOFOLLOW, and names
//! reaching this module are single validated components.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::tree::Meta;

fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// An open directory inside (or at) a target root.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Open the target root itself (a path the admin chose).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Open the directory `rel` (a `/`-separated relative path, empty
    /// for `top` itself) below `top`, refusing any symlink on the way and
    /// any escape from `top`.
    pub fn beneath(top: &Path, rel: &[u8]) -> io::Result<Dir> {
        let root = Dir::open_root(top)?;
        if rel.is_empty() {
            return Ok(root);
        }
        let fd = rustix::fs::openat2(
            &root.fd,
            c_name(rel)?.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
        )?;
        Ok(Dir {
            fd,
            path: top.join(std::ffi::OsStr::from_bytes(rel)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same open directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    pub fn child_path(&self, name: &[u8]) -> PathBuf {
        self.path.join(std::ffi::OsStr::from_bytes(name))
    }

    /// Open a child directory, refusing a symlink.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            c_name(name)?.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: self.child_path(name),
        })
    }

    /// Create a child directory (0700 until its metadata is applied), or
    /// open it when a real directory of that name is already there.
    pub fn make_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let c = c_name(name)?;
        match rustix::fs::mkdirat(&self.fd, c.as_c_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => match self.kind_of(name)? {
                Some(FileType::Directory) => {}
                _ => {
                    self.remove(name)?;
                    rustix::fs::mkdirat(&self.fd, c.as_c_str(), Mode::from_raw_mode(0o700))?;
                }
            },
            Err(e) => return Err(e.into()),
        }
        self.open_dir(name)
    }

    /// The type of a child, without following it; `None` if absent.
    pub fn kind_of(&self, name: &[u8]) -> io::Result<Option<FileType>> {
        match rustix::fs::statat(
            &self.fd,
            c_name(name)?.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a child of any type; a directory with all its contents.
    pub fn remove(&self, name: &[u8]) -> io::Result<()> {
        let c = c_name(name)?;
        match rustix::fs::unlinkat(&self.fd, c.as_c_str(), AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {
                if self.kind_of(name)? != Some(FileType::Directory) {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
                let sub = self.open_dir(name)?;
                for n in sub.names()? {
                    sub.remove(&n)?;
                }
                drop(sub);
                rustix::fs::unlinkat(&self.fd, c.as_c_str(), AtFlags::REMOVEDIR)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Names in this directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let fd = rustix::fs::openat(
            &self.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(n.to_vec());
            }
        }
        Ok(out)
    }

    /// Open a child regular file for reading. Anything else (a symlink, a
    /// device node, a fifo) is refused without being opened.
    pub fn open_file(&self, name: &[u8]) -> io::Result<File> {
        let c = c_name(name)?;
        let regular = |st: &rustix::fs::Stat| {
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            }
        };
        regular(&rustix::fs::statat(
            &self.fd,
            c.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)?;
        // Non-blocking, in case the name was replaced since the check.
        let fd = rustix::fs::openat(
            &self.fd,
            c.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        regular(&rustix::fs::fstat(&fd)?)?;
        Ok(File::from(fd))
    }

    /// Create a new regular file (replacing whatever had the name).
    pub fn create_file(&self, name: &[u8]) -> io::Result<File> {
        let c = c_name(name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, c.as_c_str(), flags, Mode::from_raw_mode(0o600))
        {
            Err(rustix::io::Errno::EXIST) => {
                self.remove(name)?;
                rustix::fs::openat(&self.fd, c.as_c_str(), flags, Mode::from_raw_mode(0o600))?
            }
            r => r?,
        };
        Ok(File::from(fd))
    }

    fn replace_with(
        &self,
        name: &[u8],
        make: impl Fn(&CString) -> rustix::io::Result<()>,
    ) -> io::Result<()> {
        let c = c_name(name)?;
        match make(&c) {
            Err(rustix::io::Errno::EXIST) => {
                self.remove(name)?;
                make(&c)?;
                Ok(())
            }
            r => Ok(r?),
        }
    }

    pub fn symlink(&self, name: &[u8], target: &[u8]) -> io::Result<()> {
        let t = c_name(target)?;
        self.replace_with(name, |c| {
            rustix::fs::symlinkat(t.as_c_str(), &self.fd, c.as_c_str())
        })
    }

    /// Create a device node, fifo or socket node.
    pub fn make_node(&self, name: &[u8], kind: FileType, rdev: u64) -> io::Result<()> {
        self.replace_with(name, |c| {
            rustix::fs::mknodat(
                &self.fd,
                c.as_c_str(),
                kind,
                Mode::from_raw_mode(0o600),
                rdev,
            )
        })
    }

    /// Hard-link `target` (a path under the same root, made by this run).
    pub fn hard_link(&self, name: &[u8], target: &Path) -> io::Result<()> {
        self.replace_with(name, |c| {
            rustix::fs::linkat(
                rustix::fs::CWD,
                target,
                &self.fd,
                c.as_c_str(),
                AtFlags::empty(),
            )
        })
    }

    /// Apply metadata to a child that is not open (symlinks, nodes).
    /// Returns the xattrs that could not be set.
    pub fn set_meta_at(
        &self,
        name: &[u8],
        meta: &Meta,
        is_symlink: bool,
    ) -> io::Result<Vec<String>> {
        let c = c_name(name)?;
        chown_ok(rustix::fs::chownat(
            &self.fd,
            c.as_c_str(),
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ))?;
        if !is_symlink {
            rustix::fs::chmodat(
                &self.fd,
                c.as_c_str(),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )?;
        }
        // lsetxattr needs a path; reach the child through this directory's
        // descriptor so that no component of the root path is re-resolved.
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .join(std::ffi::OsStr::from_bytes(name));
        let mut failed = Vec::new();
        for (k, v) in &meta.xattrs {
            if let Err(e) =
                rustix::fs::lsetxattr(&proc_path, k.as_slice(), v, rustix::fs::XattrFlags::empty())
            {
                failed.push(format!("{}: {e}", String::from_utf8_lossy(k)));
            }
        }
        rustix::fs::utimensat(
            &self.fd,
            c.as_c_str(),
            &times(meta),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(failed)
    }

    pub fn set_meta(&self, meta: &Meta) -> io::Result<Vec<String>> {
        set_meta_fd(&self.fd, meta)
    }
}

fn chown_ok(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        // Without root, ownership cannot be given away; the rest still is.
        Err(rustix::io::Errno::PERM) if !rustix::process::geteuid().is_root() => Ok(()),
        r => Ok(r?),
    }
}

fn times(meta: &Meta) -> Timestamps {
    let t = Timespec {
        tv_sec: meta.mtime_sec,
        tv_nsec: meta.mtime_nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Apply owner, mode, xattrs and mtime to an open file or directory, in
/// the order that keeps them: chown clears setuid bits and capabilities,
/// so mode and xattrs come after it, and the times come last.
/// Returns the xattrs that could not be set.
pub fn set_meta_fd(fd: impl AsFd, meta: &Meta) -> io::Result<Vec<String>> {
    let fd = fd.as_fd();
    chown_ok(rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
    ))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    let mut failed = Vec::new();
    for (k, v) in &meta.xattrs {
        if let Err(e) = rustix::fs::fsetxattr(fd, k.as_slice(), v, rustix::fs::XattrFlags::empty())
        {
            failed.push(format!("{}: {e}", String::from_utf8_lossy(k)));
        }
    }
    rustix::fs::futimens(fd, &times(meta))?;
    Ok(failed)
}

impl Dir {
    /// The (device, inode) of a child, without following it.
    pub fn ident_of(&self, name: &[u8]) -> io::Result<Option<(u64, u64, FileType)>> {
        match rustix::fs::statat(
            &self.fd,
            c_name(name)?.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some((
                st.st_dev,
                st.st_ino,
                FileType::from_raw_mode(st.st_mode),
            ))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A child's access and modification times, without following it.
    pub fn times_of(&self, name: &[u8]) -> io::Result<Timestamps> {
        let st = rustix::fs::statat(
            &self.fd,
            c_name(name)?.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        })
    }

    /// Set a child's access and modification times, without following it.
    pub fn set_times_of(&self, name: &[u8], t: &Timestamps) -> io::Result<()> {
        rustix::fs::utimensat(
            &self.fd,
            c_name(name)?.as_c_str(),
            t,
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Atomically swap two entries (renameat2 RENAME_EXCHANGE). Fails with
    /// EXDEV across file systems; never falls back to copying.
    pub fn exchange(&self, name: &[u8], other: &Dir, other_name: &[u8]) -> io::Result<()> {
        rustix::fs::renameat_with(
            &self.fd,
            c_name(name)?.as_c_str(),
            &other.fd,
            c_name(other_name)?.as_c_str(),
            rustix::fs::RenameFlags::EXCHANGE,
        )?;
        Ok(())
    }

    /// Rename a child to `other/other_name`, replacing a non-directory there.
    pub fn rename(&self, name: &[u8], other: &Dir, other_name: &[u8]) -> io::Result<()> {
        rustix::fs::renameat(
            &self.fd,
            c_name(name)?.as_c_str(),
            &other.fd,
            c_name(other_name)?.as_c_str(),
        )?;
        Ok(())
    }

    /// Hard-link a child under another name in another directory.
    pub fn link_to(&self, name: &[u8], other: &Dir, other_name: &[u8]) -> io::Result<()> {
        rustix::fs::linkat(
            &self.fd,
            c_name(name)?.as_c_str(),
            &other.fd,
            c_name(other_name)?.as_c_str(),
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Make `name` a hard link to `other`'s child `other_name`, replacing
    /// whatever had the name.
    pub fn link_from(&self, name: &[u8], other: &Dir, other_name: &[u8]) -> io::Result<()> {
        let src = c_name(other_name)?;
        self.replace_with(name, |c| {
            rustix::fs::linkat(
                &other.fd,
                src.as_c_str(),
                &self.fd,
                c.as_c_str(),
                AtFlags::empty(),
            )
        })
    }

    /// Whether the file system here shares blocks between files
    /// (`FICLONE` works): tried on two scratch files, removed again (so
    /// never call it on a directory whose names matter).
    pub fn supports_reflinks(&self) -> bool {
        let (a, b) = (b".hamn-reflink-probe-a", b".hamn-reflink-probe-b");
        let probe = || -> io::Result<bool> {
            std::os::unix::fs::FileExt::write_all_at(&self.create_file(a)?, &[0u8; 4096], 0)?;
            let src = self.open_file(a)?;
            let dst = self.create_file(b)?;
            Ok(rustix::fs::ioctl_ficlone(&dst, &src).is_ok())
        };
        let works = probe().unwrap_or(false);
        let _ = self.remove(a);
        let _ = self.remove(b);
        works
    }

    pub fn fsync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// Flush the whole file system this directory is on.
    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd)?;
        Ok(())
    }

    /// The device this directory is on.
    pub fn dev(&self) -> io::Result<u64> {
        Ok(rustix::fs::fstat(&self.fd)?.st_dev as u64)
    }

    /// Remove xattrs of a child that `keep` does not list.
    pub fn drop_other_xattrs(&self, name: &[u8], keep: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .join(std::ffi::OsStr::from_bytes(name));
        let mut names = vec![0u8; 64 * 1024];
        let n = match rustix::fs::llistxattr(&proc_path, &mut names[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for x in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            if !keep.iter().any(|(k, _)| k == x) {
                rustix::fs::lremovexattr(&proc_path, x)?;
            }
        }
        Ok(())
    }
}

/// The shadow-utils lock (what lckpwdf takes): a write lock on
/// `ROOT/etc/.pwd.lock`, held while passwd/shadow/group/gshadow are
/// replaced so that useradd or passwd cannot race the replacement.
pub struct PasswdLock {
    _file: File,
}

impl PasswdLock {
    pub fn acquire(root: &Path, wait: std::time::Duration) -> io::Result<PasswdLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = root.join("etc/.pwd.lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as _;
            fl.l_whence = libc::SEEK_SET as _;
            // SAFETY: a valid open descriptor and an initialised flock struct.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
            if r == 0 {
                return Ok(PasswdLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
                || std::time::Instant::now() >= deadline
            {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Run `op`, which moves each `(from_dir, from, to_dir, to)` entry, and
/// give each moved entry back the times it had before. Some file systems
/// (XFS) give a directory moved to another parent a new mtime, as its
/// `..` entry changed; a deployed tree keeps the snapshot's times.
pub fn keeping_times(
    moves: &[(&Dir, &[u8], &Dir, &[u8])],
    op: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let before = moves
        .iter()
        .map(|(dir, name, _, _)| dir.times_of(name))
        .collect::<std::io::Result<Vec<_>>>()?;
    op()?;
    for ((_, _, dir, name), t) in moves.iter().zip(&before) {
        dir.set_times_of(name, t)?;
    }
    Ok(())
}

/// Make `dst` a copy of the first `len` bytes of `src`: a reflink where the
/// file system can share the blocks (returns true), else an in-kernel
/// copy (false).
pub fn clone_or_copy(src: &File, dst: &File, len: u64) -> io::Result<bool> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(true);
    }
    let (mut off_in, mut off_out) = (0u64, 0u64);
    while off_in < len {
        let want = (len - off_in).min(1 << 30) as usize;
        let n = rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
    }
    Ok(false)
}
