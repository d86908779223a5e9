//! The write engine: creating snapshot entries (with their subtrees) in a
//! directory, as deployment and salvage both do. Content, owners, modes,
//! xattrs, times, hard links, sparse holes; each file's bytes come through
//! [`ContentReader`], so every chunk is verified before it is written. A
//! file whose data is damaged is removed again and reported, never left
//! with wrong bytes, and the other entries are still written. Writes go
//! through `fs::write` (no symlink followed, nothing outside the target).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::content::ContentReader;
use crate::error::{Error, IoContext, Result};
use crate::fs::write::{Dir, set_meta_fd};
use crate::store::Store;
use crate::tree::{Entry, FileContent, Kind, Tree};

#[derive(Debug, Default, serde::Serialize)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub hardlinks: u64,
    pub bytes_written: u64,
    /// Files copied (reflinked where possible) from the live tree instead
    /// of rebuilt from chunks, and their bytes.
    pub files_copied: u64,
    pub bytes_copied: u64,
    /// Of those, the files reflinked (sharing the live file's blocks, so
    /// no data was written), and their bytes.
    pub files_cloned: u64,
    pub bytes_cloned: u64,
    /// Files made hard links to their live copy (no data written, not
    /// counted in `files`), and their bytes: see [`Extractor::share_with_live`].
    pub files_linked: u64,
    pub bytes_linked: u64,
    /// Live files read to check them before they were linked or copied,
    /// and their bytes; a file unchanged since the live deployment was
    /// sealed is taken unread ([`Extractor::live_deployed`]).
    pub live_files_read: u64,
    pub live_bytes_read: u64,
    /// Entries that could not be restored, with the reason: damaged or
    /// missing data, or a device node without the privilege to make it.
    pub errors: Vec<String>,
    /// Metadata that could not be applied (e.g. an xattr the target file
    /// system does not support).
    pub warnings: Vec<String>,
}

/// Whether an error concerns one entry's data (restore goes on) rather
/// than the target (restore stops).
fn is_data_problem(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::MissingObject { .. } | Error::Malformed { .. }
    )
}

pub struct Extractor<'a> {
    fill: Fill<'a>,
    /// (dev, ino) of a hardlinked source file -> where this run put it.
    links: HashMap<(u64, u64), PathBuf>,
    /// Set inside [`Extractor::parallel`]: files are created here and
    /// filled by worker threads.
    filler: Option<Filler>,
    /// What the live tree holds, as its deployment recorded it.
    deployed: Option<LiveDeployed>,
    /// The directory being written last and the live directory it
    /// mirrors ([`Fill::live_dir`]), opened once for all its files.
    live_dir: Option<(PathBuf, Option<Dir>)>,
    pub stats: ExtractStats,
}

/// [`Fill::live_dir`] of `dir`, kept in `cache` while `dir` is written.
fn cached_live_dir<'c>(
    fill: &Fill<'_>,
    cache: &'c mut Option<(PathBuf, Option<Dir>)>,
    dir: &Dir,
) -> Option<&'c Dir> {
    if cache.as_ref().is_none_or(|(p, _)| p != dir.path()) {
        *cache = Some((dir.path().to_path_buf(), fill.live_dir(dir)));
    }
    cache.as_ref()?.1.as_ref()
}

/// The snapshot deployed in the live tree that files are linked or copied
/// from, and when that deployment sealed this managed directory
/// ([`crate::deploy::state::DeployState::seals`]). A live file whose
/// entry there has the target's content, and whose ctime is older than
/// the seal, is as that deployment wrote (or kept) it: nothing has
/// written to it, renamed it or linked it since, so it is taken without
/// reading it again.
pub struct LiveDeployed {
    /// The live tree's directory in that snapshot.
    pub tree: crate::id::TreeId,
    pub sealed_ns: i64,
    /// The directories of the last lookup below `tree`, by name, with
    /// their trees (None: not a directory in that snapshot).
    open: Vec<(Vec<u8>, Option<Tree>)>,
    root: Option<Tree>,
}

impl LiveDeployed {
    pub fn new(tree: crate::id::TreeId, sealed_ns: i64) -> Self {
        LiveDeployed {
            tree,
            sealed_ns,
            open: Vec::new(),
            root: None,
        }
    }

    /// The content the deployed snapshot has for `rel/name` (`rel`
    /// relative to the live tree), when it is a regular file there.
    fn content(&mut self, store: &Store, rel: &Path, name: &[u8]) -> Option<&FileContent> {
        use std::os::unix::ffi::OsStrExt;
        if self.root.is_none() {
            self.root = Some(store.read_tree(self.tree).ok()?);
        }
        let comps: Vec<&[u8]> = rel.iter().map(|c| c.as_bytes()).collect();
        let shared = self
            .open
            .iter()
            .zip(&comps)
            .take_while(|((n, _), c)| n.as_slice() == **c)
            .count();
        self.open.truncate(shared);
        for c in &comps[shared..] {
            let up = match self.open.last() {
                Some((_, t)) => t.as_ref(),
                None => self.root.as_ref(),
            };
            let sub = up.and_then(|t| match t.get(c).map(|e| &e.kind) {
                Some(Kind::Dir(id)) => store.read_tree(*id).ok(),
                _ => None,
            });
            self.open.push((c.to_vec(), sub));
        }
        let dir = match self.open.last() {
            Some((_, t)) => t.as_ref(),
            None => self.root.as_ref(),
        }?;
        match &dir.get(name)?.kind {
            Kind::File(c) => Some(c),
            _ => None,
        }
    }
}

/// Whether a live file's stat shows no change since the seal: its ctime
/// is older than the seal's (the same clock; equal times prove nothing).
fn untouched_since(md: &std::fs::Metadata, sealed_ns: Option<i64>) -> bool {
    sealed_ns.is_some_and(|s| crate::fs::read::ctime_ns(md) < s)
}

/// Files whose content is being written at once by the workers of
/// [`Extractor::parallel`] (and so open): enough to keep them busy while
/// the caller creates the next entries.
const FILL_QUEUE: usize = 32;

/// What fills a created file: its store, and the live tree to copy
/// unchanged files from.
#[derive(Clone)]
struct Fill<'a> {
    store: &'a Store,
    /// (top being written, live tree it mirrors): a file whose live copy
    /// has the right size, mtime and content is copied (reflinked where
    /// possible) from it instead of being rebuilt from chunks.
    reuse: Option<(PathBuf, PathBuf)>,
    /// A file whose live copy is exactly the target is hard-linked to it
    /// rather than copied.
    share: bool,
}

/// One created file for a worker to fill and give its metadata.
struct FillJob {
    dir: Dir,
    file: File,
    entry: Entry,
    /// The live deployment's seal, when its snapshot has this content here.
    sealed_ns: Option<i64>,
}

/// The sending end of the workers' queue.
struct Filler {
    tx: std::sync::mpsc::SyncSender<FillJob>,
    /// A worker met an error that stops the run (not a damaged chunk).
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Fill<'_> {
    /// With `share` set, make `e` in `dir` a hard link to its live copy
    /// when that already is exactly the target: a regular file with no
    /// other name, the same size, mtime, owner, mode and xattrs, no holes,
    /// and every chunk's bytes hashing to its id (not read when the live
    /// deployment has this content here, `sealed_ns`, and the file is
    /// untouched since its seal). Nothing is written; the
    /// two trees share the inode until a deployment replaces it in one of
    /// them (deployments never change a shared file in place:
    /// [`crate::deploy::plan`]).
    /// `live` is the live directory `dir` mirrors ([`Fill::live_dir`]).
    #[allow(clippy::too_many_arguments)]
    fn link_from_live(
        &self,
        dir: &Dir,
        live: Option<&Dir>,
        e: &Entry,
        c: &FileContent,
        sealed_ns: Option<i64>,
        stats: &mut ExtractStats,
    ) -> bool {
        use std::os::unix::fs::MetadataExt;
        if !self.share || e.meta.nlink > 1 {
            return false;
        }
        let Some(src) = live else {
            return false;
        };
        let Ok(file) = src.open_file(&e.name) else {
            return false;
        };
        let Ok(md) = file.metadata() else {
            return false;
        };
        let same = md.nlink() == 1
            && dir.dev().is_ok_and(|d| d == md.dev())
            && md.size() == c.size
            && crate::fs::read::file_has_meta(&file, &md, &e.meta)
            && (untouched_since(&md, sealed_ns) || live_holds(&file, c, stats));
        if !same || dir.link_from(&e.name, src, &e.name).is_err() {
            return false;
        }
        // The live name may have been replaced since it was opened.
        let linked = dir
            .ident_of(&e.name)
            .is_ok_and(|now| now.is_some_and(|(dev, ino, _)| (dev, ino) == (md.dev(), md.ino())));
        if !linked {
            let _ = dir.remove(&e.name);
            return false;
        }
        stats.files_linked += 1;
        stats.bytes_linked += c.size;
        true
    }

    /// The live copy of `dir`'s child `name` (a regular file), opened
    /// below the live tree without following symlinks.
    fn live_file(&self, dir: &Dir, name: &[u8]) -> Option<File> {
        self.live_dir(dir)?.open_file(name).ok()
    }

    /// The live directory that `dir` (being written) mirrors, opened below
    /// the live tree without following symlinks.
    fn live_dir(&self, dir: &Dir) -> Option<Dir> {
        use std::os::unix::ffi::OsStrExt;
        let (top, live) = self.reuse.as_ref()?;
        let rel = dir.path().strip_prefix(top).ok()?;
        Dir::beneath(live, rel.as_os_str().as_bytes()).ok()
    }

    /// Fill `file` (`dir`'s child for `e`) from its live copy if that is
    /// the same version: same size and mtime, no holes to keep, every
    /// chunk's bytes hashing to its id (read unless untouched since the
    /// seal, as in [`Fill::link_from_live`]).
    fn copy_from_live(
        &self,
        file: &File,
        dir: &Dir,
        e: &Entry,
        c: &FileContent,
        sealed_ns: Option<i64>,
        stats: &mut ExtractStats,
    ) -> bool {
        use std::os::unix::fs::MetadataExt;
        if c.size == 0 {
            return false;
        }
        let Some(src) = self.live_file(dir, &e.name) else {
            return false;
        };
        let Ok(m) = src.metadata() else {
            return false;
        };
        let same = m.size() == c.size
            && m.mtime() == e.meta.mtime_sec
            && m.mtime_nsec() as u32 == e.meta.mtime_nsec
            && c.holes.is_empty()
            && (untouched_since(&m, sealed_ns) || live_holds(&src, c, stats));
        if same && let Ok(cloned) = crate::fs::write::clone_or_copy(&src, file, c.size) {
            stats.files_copied += 1;
            stats.bytes_copied += c.size;
            if cloned {
                stats.files_cloned += 1;
                stats.bytes_cloned += c.size;
            }
            return true;
        }
        let _ = file.set_len(0);
        false
    }

    fn write_content(
        &self,
        file: &File,
        path: &Path,
        content: &FileContent,
        stats: &mut ExtractStats,
    ) -> Result<()> {
        let mut written = 0u64;
        ContentReader::new(self.store).for_each_data(content, |off, bytes| {
            file.write_all_at(bytes, off).at(path)?;
            written += bytes.len() as u64;
            Ok(())
        })?;
        file.set_len(content.size).at(path)?;
        stats.bytes_written += written;
        Ok(())
    }

    /// Give the new `file` (entry `e` in `dir`) its content and metadata.
    /// A file whose data is damaged or missing is removed again and
    /// recorded in `stats.errors` (`Ok(false)`); any other error removes
    /// it and is returned.
    fn file(
        &self,
        dir: &Dir,
        file: File,
        e: &Entry,
        content: &FileContent,
        sealed_ns: Option<i64>,
        stats: &mut ExtractStats,
    ) -> Result<bool> {
        let path = dir.child_path(&e.name);
        let written = if self.copy_from_live(&file, dir, e, content, sealed_ns, stats) {
            Ok(())
        } else {
            self.write_content(&file, &path, content, stats)
        };
        if let Err(err) = written {
            drop(file);
            let _ = dir.remove(&e.name);
            if is_data_problem(&err) {
                stats.errors.push(format!("{}: {err}", path.display()));
                return Ok(false);
            }
            return Err(err);
        }
        let failed = set_meta_fd(&file, &e.meta).at(&path)?;
        note(stats, &path, failed);
        stats.files += 1;
        Ok(true)
    }

    /// A worker: fill the queued files until the queue closes. After an
    /// error that stops the run (in any worker), the rest of the queue is
    /// only drained.
    fn work(
        &self,
        rx: &std::sync::Mutex<std::sync::mpsc::Receiver<FillJob>>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> (ExtractStats, Option<Error>) {
        use std::sync::atomic::Ordering;
        let mut stats = ExtractStats::default();
        let mut first = None;
        loop {
            let job = rx
                .lock()
                .map_err(|_| ())
                .and_then(|r| r.recv().map_err(|_| ()));
            let Ok(job) = job else { break };
            if stop.load(Ordering::Relaxed) {
                continue;
            }
            let Kind::File(content) = &job.entry.kind else {
                continue;
            };
            let sealed = job.sealed_ns;
            if let Err(err) = self.file(&job.dir, job.file, &job.entry, content, sealed, &mut stats)
            {
                stop.store(true, Ordering::Relaxed);
                first = Some(err);
            }
        }
        (stats, first)
    }
}

/// [`ContentReader::holds`], counted as live bytes read.
fn live_holds(file: &File, c: &FileContent, stats: &mut ExtractStats) -> bool {
    stats.live_files_read += 1;
    stats.live_bytes_read += c.size;
    ContentReader::holds(file, c)
}

fn note(stats: &mut ExtractStats, path: &Path, failed: Vec<String>) {
    for f in failed {
        stats
            .warnings
            .push(format!("{}: xattr {f}", path.display()));
    }
}

impl ExtractStats {
    pub fn add(&mut self, o: ExtractStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.other_entries += o.other_entries;
        self.hardlinks += o.hardlinks;
        self.bytes_written += o.bytes_written;
        self.files_copied += o.files_copied;
        self.bytes_copied += o.bytes_copied;
        self.files_cloned += o.files_cloned;
        self.bytes_cloned += o.bytes_cloned;
        self.files_linked += o.files_linked;
        self.bytes_linked += o.bytes_linked;
        self.live_files_read += o.live_files_read;
        self.live_bytes_read += o.live_bytes_read;
        self.errors.extend(o.errors);
        self.warnings.extend(o.warnings);
    }
}

impl<'a> Extractor<'a> {
    pub fn new(store: &'a Store) -> Self {
        Extractor {
            fill: Fill {
                store,
                reuse: None,
                share: false,
            },
            links: HashMap::new(),
            filler: None,
            deployed: None,
            live_dir: None,
            stats: ExtractStats::default(),
        }
    }

    pub fn store(&self) -> &'a Store {
        self.fill.store
    }

    /// Copy unchanged files from `live` (the tree `top` is a new copy of).
    pub fn reuse_from(&mut self, top: PathBuf, live: PathBuf) {
        self.live_dir = None;
        self.fill.reuse = Some((top, live));
    }

    /// What the live tree of [`Extractor::reuse_from`] holds, as its
    /// deployment recorded it (None: unknown, every live file is read).
    pub fn live_deployed(&mut self, deployed: Option<LiveDeployed>) {
        self.deployed = deployed;
    }

    /// The live deployment's seal when its snapshot has `content` for
    /// `dir`'s child `name`.
    fn sealed_for(&mut self, dir: &Dir, name: &[u8], content: &FileContent) -> Option<i64> {
        let (top, _) = self.fill.reuse.as_ref()?;
        let rel = dir.path().strip_prefix(top).ok()?;
        let d = self.deployed.as_mut()?;
        let sealed = d.sealed_ns;
        (d.content(self.fill.store, rel, name)? == content).then_some(sealed)
    }

    /// Hard-link groups already on disk, (source dev, source ino) -> path:
    /// a member created from now on is linked to that path, and groups
    /// met before are forgotten.
    pub fn link_groups_to(&mut self, known: HashMap<(u64, u64), PathBuf>) {
        self.links = known;
    }

    /// Whether files whose live copy already is exactly the target (all
    /// metadata included) are hard-linked to it instead of copied: for a
    /// previous generation being brought forward, where the files to
    /// create are mostly the ones the live tree got last time.
    pub fn share_with_live(&mut self, share: bool) {
        self.fill.share = share;
    }

    /// Run `body` with files filled by worker threads (one per core, at
    /// most 4): the entries are still created in order by the caller's
    /// thread, so directories, links and names come out as they would
    /// sequentially; only the writing of each regular file's content and
    /// its metadata moves to a worker. Every file is complete when this
    /// returns. The first error that stops the run (a full disk, a
    /// read-only file system) is returned; damaged data is recorded per
    /// file as before. A file with hard links is filled in order, so that
    /// one removed for damaged data never leaves a linked name behind.
    pub fn parallel<T>(&mut self, body: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        if workers < 2 || self.filler.is_some() {
            return body(self);
        }
        let fill = self.fill.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(FILL_QUEUE);
        let rx = Mutex::new(rx);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| s.spawn(|| fill.work(&rx, &stop)))
                .collect();
            self.filler = Some(Filler {
                tx,
                stop: stop.clone(),
            });
            let out = body(self);
            self.filler = None;
            let mut first = None;
            for h in handles {
                let (stats, err) = h.join().unwrap_or_else(|_| {
                    (
                        ExtractStats::default(),
                        Some(Error::Other("a file-writing thread panicked".into())),
                    )
                });
                self.stats.add(stats);
                first = first.or(err);
            }
            match first {
                Some(err) => Err(err),
                None => out,
            }
        })
    }

    pub fn note(&mut self, path: &Path, failed: Vec<String>) {
        note(&mut self.stats, path, failed);
    }

    /// Create `e` (and everything below it) in `dir`, replacing what is there.
    pub fn entry(&mut self, dir: &Dir, e: &Entry) -> Result<()> {
        let path = dir.child_path(&e.name);
        match &e.kind {
            Kind::Dir(id) => {
                let tree = match self.fill.store.read_tree(*id) {
                    Ok(t) => t,
                    Err(err) if is_data_problem(&err) => {
                        self.stats.errors.push(format!("{}: {err}", path.display()));
                        return Ok(());
                    }
                    Err(err) => return Err(err),
                };
                let sub = dir.make_dir(&e.name).at(&path)?;
                self.stats.dirs += 1;
                for child in &tree.entries {
                    self.entry(&sub, child)?;
                }
                let failed = sub.set_meta(&e.meta).at(&path)?;
                self.note(&path, failed);
            }
            Kind::File(content) => {
                let key = (e.meta.dev, e.meta.ino);
                if e.meta.nlink > 1
                    && let Some(first) = self.links.get(&key)
                {
                    dir.hard_link(&e.name, first).at(&path)?;
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
                let sealed = self.sealed_for(dir, &e.name, content);
                let live = match self.fill.share && e.meta.nlink <= 1 {
                    true => cached_live_dir(&self.fill, &mut self.live_dir, dir),
                    false => None,
                };
                if self
                    .fill
                    .link_from_live(dir, live, e, content, sealed, &mut self.stats)
                {
                    return Ok(());
                }
                let file = dir.create_file(&e.name).at(&path)?;
                if let Some(f) = &self.filler
                    && e.meta.nlink <= 1
                {
                    return f.send(FillJob {
                        dir: dir.try_clone().at(dir.path())?,
                        file,
                        entry: e.clone(),
                        sealed_ns: sealed,
                    });
                }
                let filled = self
                    .fill
                    .file(dir, file, e, content, sealed, &mut self.stats)?;
                if filled && e.meta.nlink > 1 {
                    self.links.insert(key, path);
                }
            }
            Kind::Symlink(target) => {
                dir.symlink(&e.name, target).at(&path)?;
                let failed = dir.set_meta_at(&e.name, &e.meta, true).at(&path)?;
                self.note(&path, failed);
                self.stats.other_entries += 1;
            }
            Kind::CharDev(_) | Kind::BlockDev(_) | Kind::Fifo | Kind::Socket => {
                let (ft, rdev) = match &e.kind {
                    Kind::CharDev(r) => (FileType::CharacterDevice, *r),
                    Kind::BlockDev(r) => (FileType::BlockDevice, *r),
                    Kind::Fifo => (FileType::Fifo, 0),
                    _ => (FileType::Socket, 0),
                };
                match dir.make_node(&e.name, ft, rdev) {
                    Ok(()) => {}
                    // Device nodes need CAP_MKNOD: without it this entry
                    // is lost, not the rest of the restore.
                    Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                        self.stats.errors.push(format!(
                            "{}: cannot create a {} here ({err}); restore it as root",
                            path.display(),
                            e.kind.name()
                        ));
                        return Ok(());
                    }
                    Err(err) => return Err(Error::io(&path, err)),
                }
                let failed = dir.set_meta_at(&e.name, &e.meta, false).at(&path)?;
                self.note(&path, failed);
                self.stats.other_entries += 1;
            }
        }
        Ok(())
    }
}

impl Filler {
    fn send(&self, job: FillJob) -> Result<()> {
        let stopped = || Error::Other("stopped: a file could not be written".into());
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped());
        }
        self.tx.send(job).map_err(|_| stopped())
    }
}
