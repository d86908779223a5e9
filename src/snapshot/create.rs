//! Taking a snapshot: walk the managed paths in parallel, reuse the chunk
//! lists of files unchanged since the parent snapshot, chunk and store the
//! rest, write trees bottom-up, and publish the record last.
//!
//! Problems with single source files (vanished, unreadable, changing
//! while read) are warnings: the file is left out and the run ends with
//! status 3. Problems with the store abort the run and publish nothing.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::chunk::{self, TREE_MAX_BYTES};
use crate::error::{Error, Result};
use crate::fs::read::{self as fsread, Owners};
use crate::id::{BlobId, ChunkId, SnapshotId, TreeId};
use crate::snapshot::{Snapshot, SnapshotStats, check_text, normalized_path, path_components};
use crate::store::index::BlobReader;
use crate::store::writer::BlobWriter;
use crate::store::{Store, StoreLock};
use crate::tree::{ChunkRef, Encoding, Entry, FileContent, Kind, Tree, TreeEncoder};

/// What became of a file `gzip_aware` matches.
enum Gz {
    Stored(FileContent),
    /// Better stored as plain chunks, for this reason (what was stored of
    /// it so far is unreferenced, for gc).
    Plain(String),
    /// It shrank while being read: read it again.
    Changed,
}

/// Attempts at reading a file that keeps changing under us.
const READ_ATTEMPTS: u32 = 3;
/// Entries of one directory walked in parallel before they are encoded:
/// bounds the memory of a large directory to its encoding plus one batch.
const DIR_BATCH_ENTRIES: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Absolute paths to snapshot.
    pub paths: Vec<String>,
    pub excludes: Vec<String>,
    /// Globs of files stored gzip-aware (`crate::gzip`).
    pub gzip_aware: Vec<String>,
    pub one_file_system: bool,
    pub follow_symlinks: bool,
    pub tags: Vec<String>,
    /// Shell commands run before the walk; a failure aborts the snapshot.
    pub pre_snapshot: Vec<String>,
}

impl SnapshotOptions {
    /// The managed paths normalized (`.` and repeated `/` removed), sorted
    /// and deduplicated, as the record lists them.
    pub fn normalized_paths(&self) -> Result<Vec<String>> {
        let mut paths: Vec<String> = self
            .paths
            .iter()
            .map(|p| normalized_path(p.as_bytes()))
            .collect::<Result<_>>()?;
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Refuse, before anything is written, what the snapshot record could
    /// not hold: tags and managed paths longer than `TEXT_MAX_BYTES`.
    pub fn validate(&self) -> Result<()> {
        for t in &self.tags {
            check_text("tag", t)?;
        }
        for p in self.normalized_paths()? {
            check_text("managed path", &p)?;
        }
        Ok(())
    }
}

pub struct SnapshotOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// The managed paths as a tree of names: a `Full` node is snapshotted
/// whole, a `Partial` one only carries the chosen entries below it.
enum Node {
    Full,
    Partial(BTreeMap<Vec<u8>, Node>),
}

impl Node {
    /// One managed path at or below `path` (this node), for messages.
    fn first_managed(&self, path: &Path) -> PathBuf {
        match self {
            Node::Partial(children) => match children.iter().next() {
                Some((name, sub)) => sub.first_managed(&path.join(OsStr::from_bytes(name))),
                None => path.to_path_buf(),
            },
            Node::Full => path.to_path_buf(),
        }
    }
}

fn build_trie(paths: &[String]) -> Result<Node> {
    let mut root = Node::Partial(BTreeMap::new());
    for p in paths {
        if !p.starts_with('/') {
            return Err(Error::Usage(format!("managed path '{p}' must be absolute")));
        }
        let comps = path_components(p.as_bytes())?;
        let mut node = &mut root;
        for c in comps {
            match node {
                Node::Full => break,
                Node::Partial(children) => {
                    node = children
                        .entry(c.to_vec())
                        .or_insert_with(|| Node::Partial(BTreeMap::new()));
                }
            }
        }
        *node = Node::Full;
    }
    Ok(root)
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    other: AtomicU64,
    bytes_total: AtomicU64,
    files_read: AtomicU64,
    files_reused: AtomicU64,
    bytes_read: AtomicU64,
}

/// What a snapshot tells whoever works alongside it while it runs (the
/// push of `sync`, started before the snapshot is committed). Called from
/// the snapshot's threads; each call returns at once.
pub trait Watch: Sync {
    /// The snapshot's parent, before anything is read.
    fn parent(&self, parent: Option<SnapshotId>);
    /// A chunk of a file read anew, at `offset`, before it is stored;
    /// `old` is the file's content in the parent snapshot.
    fn chunk_of_changed_file(&self, old: &FileContent, offset: u64, chunk: &ChunkRef);
    /// A pack was sealed and indexed, holding `blobs`.
    fn sealed(&self, blobs: &[BlobId]);
}

struct Walker<'a> {
    writer: BlobWriter<'a>,
    watch: Option<&'a dyn Watch>,
    store: &'a Store,
    /// The index as it was when the walk began, which locates every tree
    /// of the parent snapshot.
    parent_trees: BlobReader,
    excludes: globset::GlobSet,
    gzip_aware: globset::GlobSet,
    opts: &'a SnapshotOptions,
    owners: Owners,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    progress: Option<indicatif::ProgressBar>,
}

/// A directory's tree in the parent snapshot, and whether this store holds
/// it complete (`Index::is_complete`: everything below it is stored), so
/// that the unchanged files in it need no look-up of their chunks.
struct PrevTree {
    id: TreeId,
    tree: Tree,
    complete: bool,
}

/// What a directory's new tree is compared with: its tree in the parent
/// snapshot, and whether this store holds that one complete.
#[derive(Clone, Copy)]
struct Like {
    id: TreeId,
    complete: bool,
}

impl PrevTree {
    fn like(&self) -> Like {
        Like {
            id: self.id,
            complete: self.complete,
        }
    }
}

/// Whether an I/O error is about one source file rather than the machine.
fn is_source_problem(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::EPERM
                | libc::EIO
                | libc::ENOTDIR
                | libc::ELOOP
                | libc::ENXIO
                | libc::ESTALE
        )
    )
}

impl Walker<'_> {
    fn warn(&self, path: &Path, what: impl std::fmt::Display) {
        let msg = format!("{}: {what}", path.display());
        crate::log::warn(&msg);
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    /// A source-side I/O problem becomes a warning (entry left out); any
    /// other error ends the snapshot.
    fn soft<T>(&self, path: &Path, r: io::Result<T>) -> Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_source_problem(&e) => {
                self.warn(path, e);
                Ok(None)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Whether metadata of `path` is read through a symlink: only when
    /// following links, and `md` (the followed stat) is not itself a link.
    fn follows(&self, md: &Metadata) -> bool {
        self.opts.follow_symlinks && !md.file_type().is_symlink()
    }

    fn excluded(&self, path: &Path) -> bool {
        !self.excludes.is_empty() && self.excludes.is_match(path)
    }

    fn empty_tree(&self) -> Result<TreeId> {
        self.writer.add_tree(&Tree::default().encode())
    }

    /// Store the tree of the directory `path`, refusing one that no reader
    /// would accept rather than publishing a snapshot that cannot be read.
    fn write_tree(&self, path: &Path, tree: &Tree, prev: Option<Like>) -> Result<TreeId> {
        self.write_tree_bytes(path, tree.encode(), prev)
    }

    /// [`Walker::write_tree`] of an encoded tree; one equal to `prev`'s
    /// tree is known stored, and known complete when that one is.
    fn write_tree_bytes(&self, path: &Path, bytes: Vec<u8>, prev: Option<Like>) -> Result<TreeId> {
        if bytes.len() > TREE_MAX_BYTES {
            return Err(Error::TreeTooLarge {
                path: path.to_path_buf(),
                bytes: bytes.len() as u64,
                max: TREE_MAX_BYTES as u64,
            });
        }
        let id = match prev {
            Some(p) => self.writer.add_tree_like(&bytes, p.id)?,
            None => self.writer.add_tree(&bytes)?,
        };
        // Everything the tree names was added before it: it is complete
        // once the writer's next seal commits. One already marked is left
        // alone, so that an unchanged tree of many directories writes
        // nothing.
        if !prev.is_some_and(|p| p.complete && p.id == id) {
            self.writer.mark_complete(id)?;
        }
        Ok(id)
    }

    /// Snapshot the node at `path` (the managed-paths trie says how much of
    /// it), with `prev` its entry in the parent snapshot, found in a tree
    /// held complete here when `stored`.
    fn node_entry(
        &self,
        path: &Path,
        name: &[u8],
        node: &Node,
        prev: Option<&Entry>,
        stored: bool,
    ) -> Result<Option<Entry>> {
        match node {
            Node::Full => {
                let md = match std::fs::symlink_metadata(path) {
                    Ok(md) => md,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::Usage(format!(
                            "managed path {} does not exist; create it or remove it from the config",
                            path.display()
                        )));
                    }
                    Err(e) => return Err(Error::io(path, e)),
                };
                let dev = md.dev();
                self.entry(path, name.to_vec(), md, prev.cloned(), stored, dev, None)
            }
            Node::Partial(children) => {
                let md = match std::fs::symlink_metadata(path) {
                    Ok(md) => md,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::Usage(format!(
                            "managed path {} does not exist ({} is missing); \
                             create it or remove it from the config",
                            node.first_managed(path).display(),
                            path.display()
                        )));
                    }
                    Err(e) => return Err(Error::io(path, e)),
                };
                if !md.is_dir() {
                    return Err(Error::Usage(format!(
                        "{} is not a directory, but managed paths lie below it",
                        path.display()
                    )));
                }
                let prev_tree = self.prev_subtree(prev.and_then(|e| e.kind.dir()), stored)?;
                let mut entries = Vec::new();
                for (child, sub) in children {
                    let child_path = path.join(OsStr::from_bytes(child));
                    // Managed paths below the top level obey the excludes
                    // like every other entry.
                    if self.excluded(&child_path) {
                        continue;
                    }
                    let prev_child = prev_tree.as_ref().and_then(|t| t.tree.get(child));
                    let stored = prev_tree.as_ref().is_some_and(|t| t.complete);
                    if let Some(e) = self.node_entry(&child_path, child, sub, prev_child, stored)? {
                        entries.push(e);
                    }
                }
                let id = self.write_tree(
                    path,
                    &Tree { entries },
                    prev_tree.as_ref().map(PrevTree::like),
                )?;
                let xattrs = self
                    .soft(path, fsread::xattrs(path, self.follows(&md)))?
                    .unwrap_or_default();
                self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                Ok(Some(Entry {
                    name: name.to_vec(),
                    meta: fsread::meta_from(&md, &self.owners, xattrs),
                    kind: Kind::Dir(id),
                }))
            }
        }
    }

    /// The parent snapshot's tree `prev` of a directory, found in a tree
    /// held complete when `in_complete` (then this one is complete too:
    /// everything below that one is stored).
    fn prev_subtree(&self, prev: Option<TreeId>, in_complete: bool) -> Result<Option<PrevTree>> {
        match prev {
            Some(id) => match self.store.read_tree_in(&self.parent_trees, id) {
                Ok(tree) => Ok(Some(PrevTree {
                    id,
                    tree,
                    complete: in_complete || self.store.index().is_complete(&id.0)?,
                })),
                Err(e) => {
                    // A damaged parent only costs re-reading; say so once per tree.
                    crate::log::warn(&format!("parent tree unreadable, reading files again: {e}"));
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// One walked entry, named `name`. `prev` is its entry in the parent
    /// snapshot (taken over: what is unchanged of it is moved into the new
    /// entry, not copied), from a tree held complete here when `stored`;
    /// `fs_dev` is the device of the managed path; `up` the directories
    /// above it (to stop symlink loops when following).
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        mut md: Metadata,
        prev: Option<Entry>,
        stored: bool,
        fs_dev: u64,
        up: Option<&Up<'_>>,
    ) -> Result<Option<Entry>> {
        if self.opts.follow_symlinks && md.file_type().is_symlink() {
            match std::fs::metadata(path) {
                Ok(target) if target.is_dir() && Up::contains(up, &target) => {
                    self.warn(path, "symlink loop; kept as a link")
                }
                Ok(target) => md = target,
                Err(e) => self.warn(path, format!("symlink not followed: {e}; kept as a link")),
            }
        }
        let ft = md.file_type();
        if ft.is_file() {
            return self.file_entry(path, name, md, prev, stored);
        }
        let (old_meta, old_kind) = match prev {
            Some(p) => (Some(p.meta), Some(p.kind)),
            None => (None, None),
        };
        // An inode untouched since the parent snapshot has the xattrs, and
        // a symlink the target, recorded there: no syscall reads them.
        let same = old_kind.as_ref().is_some_and(|k| k.is_type_of(ft))
            && old_meta
                .as_ref()
                .is_some_and(|m| fsread::same_inode_version(m, &md));
        let xattrs = match old_meta.filter(|_| same) {
            Some(m) => m.xattrs,
            None => match self.soft(path, fsread::xattrs(path, self.follows(&md)))? {
                Some(x) => x,
                None => return Ok(None),
            },
        };
        let kind = if ft.is_dir() {
            self.counters.dirs.fetch_add(1, Ordering::Relaxed);
            if self.opts.one_file_system && md.dev() != fs_dev {
                crate::log::verbose(&format!(
                    "{}: another file system, not crossed",
                    path.display()
                ));
                Kind::Dir(self.empty_tree()?)
            } else {
                let here = Up {
                    dev: md.dev(),
                    ino: md.ino(),
                    parent: up,
                };
                let prev_tree = self.prev_subtree(old_kind.as_ref().and_then(Kind::dir), stored)?;
                match self.dir_tree(path, prev_tree, fs_dev, &here)? {
                    Some(id) => Kind::Dir(id),
                    None => return Ok(None),
                }
            }
        } else {
            self.counters.other.fetch_add(1, Ordering::Relaxed);
            if ft.is_symlink() {
                match old_kind.filter(|_| same) {
                    Some(Kind::Symlink(t)) if t.len() as u64 == md.len() => Kind::Symlink(t),
                    _ => match self.soft(path, std::fs::read_link(path))? {
                        Some(t) => Kind::Symlink(t.into_os_string().into_vec()),
                        None => return Ok(None),
                    },
                }
            } else if ft.is_char_device() {
                Kind::CharDev(md.rdev())
            } else if ft.is_block_device() {
                Kind::BlockDev(md.rdev())
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            }
        };
        Ok(Some(Entry {
            name,
            meta: fsread::meta_from(&md, &self.owners, xattrs),
            kind,
        }))
    }

    fn file_entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        md: Metadata,
        prev: Option<Entry>,
        stored: bool,
    ) -> Result<Option<Entry>> {
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.progress {
            p.inc(1);
        }
        let old = match prev {
            Some(Entry {
                kind: Kind::File(content),
                meta,
                ..
            }) if fsread::unchanged(&meta, content.size, &md)
                // In a tree held complete, its chunks are stored: no look-up.
                && (stored || self.all_stored(&content)?) =>
            {
                // Setting an xattr changes the ctime, which `unchanged`
                // compared: the recorded ones are still right.
                let c = &self.counters.files_reused;
                return Ok(Some(self.file(c, name, &md, meta.xattrs, content)));
            }
            Some(Entry {
                kind: Kind::File(c),
                ..
            }) => Some(c),
            _ => None,
        };
        for _ in 0..READ_ATTEMPTS {
            let Some(read) = self.read_file(path, old.as_ref())? else {
                return Ok(None);
            };
            let Some((content, before)) = read else {
                continue;
            };
            let xattrs = match self.soft(path, fsread::xattrs(path, self.follows(&md)))? {
                Some(x) => x,
                None => return Ok(None),
            };
            let c = &self.counters.files_read;
            return Ok(Some(self.file(c, name, &before, xattrs, content)));
        }
        self.warn(
            path,
            format!("changed while being read {READ_ATTEMPTS} times; not stored in this snapshot"),
        );
        Ok(None)
    }

    /// A file's entry, counted in `counter` (reused or read) and its bytes.
    fn file(
        &self,
        counter: &AtomicU64,
        name: Vec<u8>,
        md: &Metadata,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        content: FileContent,
    ) -> Entry {
        counter.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_total
            .fetch_add(content.size, Ordering::Relaxed);
        Entry {
            name,
            meta: fsread::meta_from(md, &self.owners, xattrs),
            kind: Kind::File(content),
        }
    }

    /// Whether every chunk of a file's previous content is still indexed
    /// (or stored by this run). A chunk can have gone since the parent
    /// snapshot (`check --read-data --repair` drops damaged ones); then the
    /// file must be read again, or the new snapshot would lack it too.
    fn all_stored(&self, content: &FileContent) -> Result<bool> {
        for c in content.stored_refs() {
            if !self.writer.has(c.id.into())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Read and store one file. `Ok(None)`: a warning was given, leave it
    /// out. `Ok(Some(None))`: it changed while read, try again.
    #[allow(clippy::type_complexity)]
    fn read_file(
        &self,
        path: &Path,
        old: Option<&FileContent>,
    ) -> Result<Option<Option<(FileContent, Metadata)>>> {
        let Some(file) = self.soft(path, fsread::open_source(path, self.opts.follow_symlinks))?
        else {
            return Ok(None);
        };
        let Some(before) = self.soft(path, file.metadata())? else {
            return Ok(None);
        };
        if !before.is_file() {
            // Replaced by something else since the directory was listed.
            return Ok(Some(None));
        }
        if self.gzip_aware.is_match(path) && before.size() > 0 {
            match self.read_gzip(path, &file, before.size())? {
                None => return Ok(None),
                Some(Gz::Stored(content)) => {
                    let Some(after) = self.soft(path, file.metadata())? else {
                        return Ok(None);
                    };
                    if !fsread::same_version(&before, &after) {
                        return Ok(Some(None));
                    }
                    return Ok(Some(Some((content, before))));
                }
                Some(Gz::Changed) => return Ok(Some(None)),
                Some(Gz::Plain(why)) => crate::log::info(&format!(
                    "{}: stored as plain chunks, not gzip-aware: {why}",
                    path.display()
                )),
            }
        }
        let Some(extents) = self.soft(path, fsread::data_extents(&file, &before))? else {
            return Ok(None);
        };
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        let mut reader = fsread::ExtentReader::new(&file, &extents);
        let read = CHUNK_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            chunk::chunk_stream(&mut reader, &mut buf, |data| {
                let c = ChunkRef {
                    id: ChunkId::of(data),
                    len: data.len() as u32,
                };
                // Told before it is stored: before the pack holding it
                // can be sealed.
                if let (Some(w), Some(old)) = (self.watch, old) {
                    w.chunk_of_changed_file(old, bytes, &c);
                }
                self.writer.add_chunk_as(c.id, data)?;
                bytes += data.len() as u64;
                chunks.push(c);
                Ok(())
            })
        });
        reader.release();
        let Some(stored) = self.soft(path, read)? else {
            return Ok(None);
        };
        stored?;
        self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        let Some(after) = self.soft(path, file.metadata())? else {
            return Ok(None);
        };
        let extent_bytes: u64 = extents.iter().map(|e| e.1).sum();
        if !fsread::same_version(&before, &after) || bytes != extent_bytes {
            return Ok(Some(None));
        }
        let mut holes = Vec::new();
        let mut pos = 0;
        for &(off, len) in &extents {
            if off > pos {
                holes.push((pos, off - pos));
            }
            pos = off + len;
        }
        if before.size() > pos {
            holes.push((pos, before.size() - pos));
        }
        Ok(Some(Some((
            FileContent {
                size: before.size(),
                encoding: Encoding::Plain,
                holes,
                chunks,
            },
            before,
        ))))
    }

    /// Store a file that `gzip_aware` matches as its decompressed bytes and
    /// its recreation record (`crate::gzip`). `Ok(None)`: a warning was
    /// given, leave it out.
    fn read_gzip(&self, path: &Path, file: &std::fs::File, size: u64) -> Result<Option<Gz>> {
        let mut inflater = crate::gzip::Inflater::new(file, size);
        let mut plain = Vec::new();
        let mut plain_bytes = 0u64;
        let mut shown = 0u64;
        let mut segments = crate::archive::Segments::new(&mut inflater);
        let read = CHUNK_BUF.with(|buf| -> io::Result<Result<()>> {
            let mut buf = buf.borrow_mut();
            // Each archive member of some size is chunked on its own, as
            // the same file outside the archive is (crate::archive).
            let mut each = |data: &[u8]| {
                let id = self.writer.add_chunk(data)?;
                plain_bytes += data.len() as u64;
                plain.push(ChunkRef {
                    id,
                    len: data.len() as u32,
                });
                if let Some(p) = &self.progress
                    && plain_bytes - shown >= 16 << 20
                {
                    shown = plain_bytes;
                    p.set_message(format!(
                        "gzip-aware: {} ({} MiB decompressed)",
                        path.display(),
                        plain_bytes >> 20
                    ));
                }
                Ok(())
            };
            while segments.next_segment()? {
                if let Err(e) = chunk::chunk_stream(&mut segments, &mut buf, &mut each)? {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        });
        drop(segments);
        if let Some(p) = &self.progress {
            p.set_message("");
        }
        match read {
            Err(e) => {
                if let Some(why) = inflater.failure() {
                    return Ok(Some(Gz::Plain(why.to_string())));
                }
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    // It shrank while being read: the caller's stat
                    // comparison sees the change and reads it again.
                    return Ok(Some(Gz::Changed));
                }
                self.soft(path, Err::<(), _>(e))?;
                return Ok(None);
            }
            Ok(stored) => stored?,
        }
        let (record, file_hash) = match inflater.finish() {
            Ok(r) => r,
            Err(crate::gzip::NotDeflate(why)) => return Ok(Some(Gz::Plain(why))),
        };
        let encoded = record.encode();
        let mut chunks = Vec::new();
        let stored = CHUNK_BUF.with(|buf| {
            chunk::chunk_stream(&encoded[..], &mut buf.borrow_mut(), |data| {
                let id = self.writer.add_chunk(data)?;
                chunks.push(ChunkRef {
                    id,
                    len: data.len() as u32,
                });
                Ok(())
            })
        });
        stored.map_err(|e| Error::io(path, e))??;
        self.counters.bytes_read.fetch_add(size, Ordering::Relaxed);
        let record_chunks = chunks.len() as u32;
        chunks.extend(plain);
        Ok(Some(Gz::Stored(FileContent {
            size,
            encoding: Encoding::Gzip(Box::new(crate::tree::Gzip {
                file_hash,
                plain_len: record.plain_len,
                record_chunks,
            })),
            holes: Vec::new(),
            chunks,
        })))
    }

    /// Snapshot a directory's contents; `None` when it could not be listed.
    fn dir_tree(
        &self,
        path: &Path,
        prev: Option<PrevTree>,
        fs_dev: u64,
        up: &Up<'_>,
    ) -> Result<Option<TreeId>> {
        let Some(rd) = self.soft(path, std::fs::read_dir(path))? else {
            return Ok(None);
        };
        let mut children = Vec::new();
        for e in rd {
            let Some(e) = self.soft(path, e)? else {
                continue;
            };
            children.push((e.file_name().into_vec(), e));
        }
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Each child's entry in the parent snapshot, moved out of the
        // parent's tree: both lists are in name order.
        let (like, prev_entries) = match prev {
            Some(p) => (Some(p.like()), p.tree.entries),
            None => (None, Vec::new()),
        };
        let stored = like.is_some_and(|l| l.complete);
        let mut prev_entries = prev_entries.into_iter().peekable();
        let children: Vec<(Vec<u8>, std::fs::DirEntry, Option<Entry>)> = children
            .into_iter()
            .map(|(name, de)| {
                while prev_entries.next_if(|p| p.name < name).is_some() {}
                let prev = prev_entries.next_if(|p| p.name == name);
                (name, de, prev)
            })
            .collect();
        drop(prev_entries);
        // Entries are encoded batch by batch as they come, so a directory
        // of many thousand entries holds its encoding, not its entries.
        let mut tree = TreeEncoder::new();
        let mut children = children.into_iter();
        loop {
            let batch: Vec<_> = children.by_ref().take(DIR_BATCH_ENTRIES).collect();
            if batch.is_empty() {
                break;
            }
            let entries: Vec<Option<Entry>> = batch
                .into_par_iter()
                .map(|(name, de, prev)| {
                    let child = de.path();
                    if self.excluded(&child) {
                        return Ok(None);
                    }
                    let Some(md) = self.soft(&child, de.metadata())? else {
                        return Ok(None);
                    };
                    self.entry(&child, name, md, prev, stored, fs_dev, Some(up))
                })
                .collect::<Result<_>>()?;
            for e in entries.iter().flatten() {
                tree.push(e);
            }
        }
        Ok(Some(self.write_tree_bytes(path, tree.finish(), like)?))
    }
}

/// The chain of directories above an entry, by (device, inode).
struct Up<'a> {
    dev: u64,
    ino: u64,
    parent: Option<&'a Up<'a>>,
}

impl Up<'_> {
    fn contains(mut up: Option<&Up<'_>>, md: &Metadata) -> bool {
        while let Some(u) = up {
            if u.dev == md.dev() && u.ino == md.ino() {
                return true;
            }
            up = u.parent;
        }
        false
    }
}

thread_local! {
    static CHUNK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run the pre-snapshot hooks; the first failure aborts with its output.
pub fn run_hooks(commands: &[String], env: &[(&str, String)]) -> Result<()> {
    for cmd in commands {
        crate::log::info(&format!("running hook: {cmd}"));
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| Error::Hook {
                command: cmd.clone(),
                status: "not started".into(),
                output: e.to_string(),
            })?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if text.is_empty() {
                text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            let text: String = text
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(Error::Hook {
                command: cmd.clone(),
                status: out.status.to_string(),
                output: text,
            });
        }
    }
    Ok(())
}

/// The newest snapshot of the same host and paths: its unchanged files are
/// not read again.
fn find_parent(
    store: &Store,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(store
        .snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.host == host && s.paths == paths))
}

/// Fewest threads a snapshot walks and reads with, whatever the core
/// count: with the page cache cold (the nightly case) each thread spends
/// most of its time waiting on the disk for an inode or a file's first
/// blocks, so more requests in flight finish the walk sooner. On 2 cores,
/// 8 threads take a cold 1 GiB, 30k-file snapshot from 5.56 to 3.07 s
/// (`benches/snapshot.sh`, docs/performance.md).
pub const SNAPSHOT_THREADS_MIN: usize = 8;

/// Globs matched against absolute paths, `*` not crossing `/`.
fn glob_set(key: &str, patterns: &[String]) -> Result<globset::GlobSet> {
    let mut globs = globset::GlobSetBuilder::new();
    for g in patterns {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Usage(format!("{key} pattern '{g}': {e}")))?;
        globs.add(glob);
    }
    globs
        .build()
        .map_err(|e| Error::Usage(format!("{key} patterns: {e}")))
}

/// Take a snapshot of `opts.paths` into `store`, on a pool of at least
/// `SNAPSHOT_THREADS_MIN` threads.
pub fn create(store: &Store, lock: &StoreLock, opts: &SnapshotOptions) -> Result<SnapshotOutcome> {
    create_watched(store, lock, opts, None)
}

/// `create`, telling `watch` what it stores as it goes.
pub fn create_watched(
    store: &Store,
    lock: &StoreLock,
    opts: &SnapshotOptions,
    watch: Option<&dyn Watch>,
) -> Result<SnapshotOutcome> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(SNAPSHOT_THREADS_MIN))
        .thread_name(|i| format!("hamn-snapshot-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start the snapshot's threads: {e}")))?;
    pool.install(|| create_on_this_pool(store, lock, opts, watch))
}

fn create_on_this_pool(
    store: &Store,
    lock: &StoreLock,
    opts: &SnapshotOptions,
    watch: Option<&dyn Watch>,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    opts.validate()?;
    let paths = opts.normalized_paths()?;
    if paths.is_empty() {
        return Err(Error::Usage(
            "no paths to snapshot: give PATHs or set `paths` in the config".into(),
        ));
    }
    let trie = build_trie(&paths)?;
    let excludes = glob_set("exclude", &opts.excludes)?;
    let gzip_aware = glob_set("gzip_aware", &opts.gzip_aware)?;
    if !gzip_aware.is_empty() {
        store.require_format(crate::store::FORMAT_GZIP_AWARE, lock)?;
    }

    run_hooks(
        &opts.pre_snapshot,
        &[("HAMN_STORE", store.root().display().to_string())],
    )?;

    let host = crate::store::lock::hostname();
    check_text("host name", &host)?;
    let parent = find_parent(store, &host, &paths)?;
    if let Some(w) = watch {
        w.parent(parent.as_ref().map(|(id, _)| *id));
    }
    let prev_root = match &parent {
        Some((_, s)) => store.read_tree(s.root).ok().map(|tree| PrevTree {
            id: s.root,
            tree,
            complete: store.index().is_complete(&s.root.0).unwrap_or(false),
        }),
        None => None,
    };
    let progress = crate::log::progress_enabled().then(|| {
        let p = indicatif::ProgressBar::new_spinner();
        p.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {pos} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        p.enable_steady_tick(std::time::Duration::from_millis(200));
        p
    });
    let sealed = watch.map(|w| move |blobs: &[BlobId]| w.sealed(blobs));
    let walker = Walker {
        writer: BlobWriter::new(store, lock)?
            .on_sealed(sealed.as_ref().map(|f| f as &(dyn Fn(&[BlobId]) + Sync))),
        watch,
        store,
        parent_trees: store.index().reader()?,
        excludes,
        gzip_aware,
        opts,
        owners: Owners::default(),
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        progress,
    };
    let Node::Partial(top) = &trie else {
        return Err(Error::Usage("'/' cannot be a managed path".into()));
    };
    let mut entries = Vec::new();
    for (name, node) in top {
        let path = PathBuf::from("/").join(OsStr::from_bytes(name));
        if walker.excluded(&path) {
            continue;
        }
        let prev = prev_root.as_ref().and_then(|t| t.tree.get(name));
        let stored = prev_root.as_ref().is_some_and(|t| t.complete);
        if let Some(e) = walker.node_entry(&path, name, node, prev, stored)? {
            entries.push(e);
        }
    }
    let root = walker.write_tree(Path::new("/"), &Tree { entries }, None)?;
    if let Some(p) = &walker.progress {
        p.finish_and_clear();
    }
    let Walker {
        writer,
        counters,
        warnings,
        ..
    } = walker;
    // Everything is durable and indexed now, and the trees are marked
    // complete, so that the next snapshot reuses their unchanged files
    // without looking up each one's chunks.
    let written = writer.finish()?;
    let warnings = warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    let c = &counters;
    let snapshot = Snapshot {
        time_ns,
        host,
        paths,
        root,
        parent: parent.map(|(id, _)| id),
        tags: opts.tags.clone(),
        stats: SnapshotStats {
            files: c.files_read.load(Ordering::Relaxed) + c.files_reused.load(Ordering::Relaxed),
            dirs: c.dirs.load(Ordering::Relaxed),
            other_entries: c.other.load(Ordering::Relaxed),
            bytes_total: c.bytes_total.load(Ordering::Relaxed),
            files_read: c.files_read.load(Ordering::Relaxed),
            files_reused: c.files_reused.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            blobs_added: written.blobs_added,
            bytes_added_plain: written.bytes_plain_added,
            bytes_added_stored: written.bytes_stored_added,
            warnings: warnings.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
        },
    };
    if snapshot.encode().len() > crate::snapshot::RECORD_MAX_BYTES {
        return Err(Error::Usage(format!(
            "the snapshot record would exceed {} bytes: fewer tags or managed paths",
            crate::snapshot::RECORD_MAX_BYTES
        )));
    }
    crate::failpoint::failpoint("snapshot:data-durable");
    let id = store.write_snapshot(lock, &snapshot)?;
    Ok(SnapshotOutcome {
        id,
        snapshot,
        warnings,
    })
}
