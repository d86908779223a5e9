//! The store: a directory holding pack files, the redb index over them, and
//! snapshot records. This module owns the layout and the write order
//! (pack data, fsync, index transaction, snapshot record last); it knows
//! nothing of file systems being snapshotted.
//!
//! ```text
//! STORE/HAMN-STORE          format marker and version
//! STORE/index.redb          blob id -> pack location (a cache of the packs)
//! STORE/packs/XX/ID.pack    pack files
//! STORE/snapshots/ID        snapshot records
//! STORE/deployments/K.json  deployment state, one file per root
//! STORE/deploy-journal.json a deployment's intent journal, while it runs
//! STORE/nodes/NAME.json     what the primary knows of each node it syncs
//! STORE/lock                the writer lock
//! STORE/tmp/                files being written
//! ```
//!
//! Every file but the index and the lock goes through the storage
//! boundary (`backend`; `local` is the directory above).

pub mod backend;
pub mod durable;
pub mod index;
pub mod local;
pub mod lock;
pub mod pack;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::id::{BlobId, BlobKind, ChunkId, PackId, TreeId};
use crate::tree::Tree;
pub use backend::{Backend, FileInfo, FileKind};
pub use index::Index;
use local::Local;
pub use lock::StoreLock;
pub use pack::BlobLoc;

pub const MARKER_FILE: &str = "HAMN-STORE";
/// The newest store format this hamn reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// What `hamn init` writes: the oldest format that describes an empty
/// store, so that a store is readable by every hamn that can read what it
/// holds.
pub const FORMAT_INITIAL: u32 = 1;
/// The format whose trees may hold gzip-aware files (content encoding 1).
pub const FORMAT_GZIP_AWARE: u32 = 2;
pub const PACKS_DIR: &str = "packs";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const TMP_DIR: &str = "tmp";
pub const DEPLOYMENTS_DIR: &str = "deployments";
pub const JOURNAL_FILE: &str = "deploy-journal.json";
pub const NODES_DIR: &str = "nodes";

pub struct Store {
    root: PathBuf,
    index: Index,
    files: Box<dyn Backend>,
    /// Stored bytes of blobs pushes read from packs since the store was
    /// opened ([`PushReads`]).
    bytes_read: std::sync::atomic::AtomicU64,
}

thread_local! {
    static FOR_PUSH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While one is alive, this thread's pack reads are a push's, counted in
/// [`Store::pack_bytes_read`]; the snapshot that a `sync` takes beside its
/// pushes reads the same store uncounted.
pub struct PushReads(bool);

impl PushReads {
    pub fn enter() -> PushReads {
        PushReads(FOR_PUSH.with(|f| f.replace(true)))
    }
}

impl Drop for PushReads {
    fn drop(&mut self) {
        FOR_PUSH.with(|f| f.set(self.0));
    }
}

/// The files of the store at `path` without opening it (no index, no
/// marker check): for a look at one file before a command opens the store.
pub fn files_at(path: &Path) -> impl Backend {
    Local::new(path)
}

impl Store {
    /// Create an empty store at `path`. The directory may exist if it is
    /// empty, or holds only what an interrupted `init` leaves (and a file
    /// system's `lost+found`); it is made 0700 whatever its mode was.
    pub fn init(path: &Path) -> Result<()> {
        if path.join(MARKER_FILE).exists() {
            return Err(Error::AlreadyAStore {
                path: path.to_path_buf(),
            });
        }
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for e in rd {
                    let name = e.at(path)?.file_name();
                    let ours = [PACKS_DIR, SNAPSHOTS_DIR, TMP_DIR, index::INDEX_FILE];
                    if !(ours.iter().any(|o| name == *o) || name == "lost+found") {
                        return Err(Error::NotEmpty {
                            path: path.to_path_buf(),
                            example: path.join(name),
                        });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        durable::create_private_dir(path)?;
        durable::make_dir_private(path)?;
        for d in [PACKS_DIR, SNAPSHOTS_DIR, TMP_DIR] {
            durable::create_private_dir(&path.join(d))?;
            durable::make_dir_private(&path.join(d))?;
        }
        Index::open(&path.join(index::INDEX_FILE))?;
        Self::write_marker(path, FORMAT_INITIAL)
    }

    fn write_marker(path: &Path, version: u32) -> Result<()> {
        let marker = format!("hamn store\nformat {version}\n");
        durable::write_atomic(
            &path.join(MARKER_FILE),
            &path.join(TMP_DIR),
            marker.as_bytes(),
        )
    }

    /// The format version the marker states.
    pub fn format(&self) -> Result<u32> {
        Self::check_marker(&self.root)
    }

    /// Raise the marker to `version` before anything of that format is
    /// written, so that an older hamn refuses the store as a whole ("upgrade
    /// hamn") instead of failing on the first file it cannot read. The
    /// marker is replaced atomically and never lowered.
    pub fn require_format(&self, version: u32, _lock: &StoreLock) -> Result<()> {
        if self.format()? >= version {
            return Ok(());
        }
        crate::log::info(&format!(
            "store {}: format raised to {version} (gzip-aware files); hamn releases before it cannot read this store",
            self.root.display()
        ));
        Self::write_marker(&self.root, version)
    }

    pub fn open(path: &Path) -> Result<Store> {
        Self::check_marker(path)?;
        let index = Index::open(&path.join(index::INDEX_FILE))?;
        Ok(Self::with_index(path, index))
    }

    /// Open a store for reading: nothing in it is written, not even the
    /// index file (works beside a running writer).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Self::check_marker(path)?;
        let index = Index::open_read_only(&path.join(index::INDEX_FILE))?;
        Ok(Self::with_index(path, index))
    }

    /// Open a store to rebuild its index (`check --repair`): take the lock
    /// first, then open the index; one that redb cannot open because it is
    /// damaged is moved aside and replaced by an empty one (the index is a
    /// cache of the packs). Returns where a damaged index went, and why.
    #[allow(clippy::type_complexity)]
    pub fn open_for_repair(
        path: &Path,
        wait: Duration,
        command: &str,
    ) -> Result<(Store, StoreLock, Option<(PathBuf, String)>)> {
        Self::check_marker(path)?;
        let lock = Local::new(path).lock(wait, command)?;
        let (index, moved) = Index::open_or_replace(&path.join(index::INDEX_FILE))?;
        Ok((Self::with_index(path, index), lock, moved))
    }

    fn with_index(path: &Path, index: Index) -> Store {
        Store {
            root: path.to_path_buf(),
            index,
            files: Box::new(Local::new(path)),
            bytes_read: Default::default(),
        }
    }

    /// Check the `HAMN-STORE` marker: present, and a version we read.
    fn check_marker(path: &Path) -> Result<u32> {
        let marker_path = path.join(MARKER_FILE);
        let marker = match std::fs::read_to_string(&marker_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io(marker_path, e)),
        };
        let version = marker
            .lines()
            .find_map(|l| l.strip_prefix("format "))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| Error::NotAStore {
                path: path.to_path_buf(),
            })?;
        if version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(version)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Become the store's one writer.
    pub fn lock(&self, wait: Duration, command: &str) -> Result<StoreLock> {
        self.files.lock(wait, command)
    }

    /// Stored bytes of blobs pushes read from packs since the store was
    /// opened.
    pub fn pack_bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The storage boundary under this store.
    pub fn files(&self) -> &dyn Backend {
        self.files.as_ref()
    }

    /// Where a pack is, for messages.
    pub fn pack_location(&self, id: &PackId) -> String {
        self.files.describe(FileKind::Pack, &id.to_hex())
    }

    /// Read the stored bytes of a blob at a known location.
    pub fn read_stored(&self, loc: &BlobLoc) -> Result<Vec<u8>> {
        // Chunks are read once, with the record's header before them (and
        // the pack's, before the first record), so that records read one
        // after another make one run of bytes for the backend to drop.
        // Trees stay cached: plans, diffs and listings read them again.
        let once = (loc.id.kind == BlobKind::Chunk).then(|| {
            let from = loc.offset.saturating_sub(pack::RECORD_HEADER_LEN);
            if from <= pack::PACK_HEADER_LEN {
                0
            } else {
                from
            }
        });
        let mut buf = vec![0u8; loc.stored_len as usize];
        if FOR_PUSH.with(|f| f.get()) {
            self.bytes_read
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        self.files
            .read_at(
                FileKind::Pack,
                &loc.pack.to_hex(),
                loc.offset,
                &mut buf,
                once,
            )
            .map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    Error::MissingObject {
                        what: "pack",
                        id: loc.pack.to_hex(),
                    }
                }
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.corrupt(loc, "pack is shorter than the index says (truncated?)")
                }
                e => e,
            })?;
        Ok(buf)
    }

    fn corrupt(&self, loc: &BlobLoc, detail: &str) -> Error {
        Error::Corrupt {
            what: loc.id.kind.name(),
            id: loc.id.to_hex(),
            pack: self.pack_location(&loc.pack),
            detail: detail.to_string(),
        }
    }

    /// Decode stored bytes and check them against the blob's id.
    pub fn verify_stored(&self, loc: &BlobLoc, stored: &[u8]) -> Result<Vec<u8>> {
        let plain = crate::chunk::decode(loc.id.kind, loc.encoding, stored, loc.plain_len)
            .map_err(|e| self.corrupt(loc, &e.to_string()))?;
        if blake3::hash(&plain).as_bytes() != &loc.id.hash {
            return Err(self.corrupt(loc, "content does not match its id"));
        }
        Ok(plain)
    }

    pub fn locate(&self, id: BlobId) -> Result<BlobLoc> {
        Self::found(id, self.index.get(&id.hash)?)
    }

    fn found(id: BlobId, loc: Option<BlobLoc>) -> Result<BlobLoc> {
        loc.ok_or_else(|| Error::MissingObject {
            what: id.kind.name(),
            id: id.to_hex(),
        })
    }

    /// Read a blob's plain bytes, verified against its id.
    pub fn read_blob(&self, id: BlobId) -> Result<Vec<u8>> {
        self.read_located(&self.locate(id)?)
    }

    /// The plain bytes of the blob at `loc`, verified against its id.
    fn read_located(&self, loc: &BlobLoc) -> Result<Vec<u8>> {
        let stored = self.read_stored(loc)?;
        self.verify_stored(loc, &stored)
    }

    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        self.read_blob(id.into())
    }

    pub fn read_tree(&self, id: TreeId) -> Result<Tree> {
        Tree::decode(&self.read_blob(id.into())?)
    }

    /// [`Store::read_tree`], located through `reader`'s view of the index:
    /// for the many trees of one walk, without a read transaction each.
    pub fn read_tree_in(&self, reader: &index::BlobReader, id: TreeId) -> Result<Tree> {
        let loc = Self::found(id.into(), reader.get(&id.0)?)?;
        Tree::decode(&self.read_located(&loc)?)
    }

    pub fn has_blob(&self, id: BlobId) -> Result<bool> {
        self.index.contains(&id.hash)
    }

    /// Every pack file present in the store (indexed or not).
    pub fn pack_files(&self) -> Result<Vec<PackId>> {
        let mut out: Vec<PackId> = self
            .files
            .list(FileKind::Pack)?
            .iter()
            .filter_map(|n| PackId::from_hex(n).ok())
            .collect();
        out.sort();
        Ok(out)
    }
}
