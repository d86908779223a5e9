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
//! STORE/lock                the writer lock
//! STORE/tmp/                files being written
//! ```

pub mod durable;
pub mod index;
pub mod lock;
pub mod pack;
pub mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::id::{BlobId, BlobKind, ChunkId, PackId, TreeId};
use crate::tree::Tree;
pub use index::Index;
pub use lock::StoreLock;
pub use pack::BlobLoc;

pub const MARKER_FILE: &str = "HAMN-STORE";
pub const FORMAT_VERSION: u32 = 1;
pub const PACKS_DIR: &str = "packs";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const TMP_DIR: &str = "tmp";
const OPEN_PACKS_MAX: usize = 64;

pub struct Store {
    root: PathBuf,
    index: Index,
    open_packs: Mutex<HashMap<PackId, Arc<OpenPack>>>,
}

/// A pack open for reading, and the run of its bytes read last.
struct OpenPack {
    file: File,
    /// Chunk records read one after another, (start, end): what has been
    /// read of it is dropped from the page cache as one range.
    run: Mutex<(u64, u64)>,
}

impl OpenPack {
    /// Chunks are read once (a deployment, a push, a restore): their pages
    /// go back to free memory at once instead of pushing out the page
    /// cache that the node's services use. The kernel drops only the
    /// folios wholly inside a range, and a folio can span many KiB, so
    /// the range is the run of records read in a row, not one chunk.
    fn read_once(&self, loc: &BlobLoc) {
        // The record with its header; the first one with the pack's header.
        let mut start = loc.offset.saturating_sub(pack::RECORD_HEADER_LEN);
        if start <= pack::PACK_HEADER_LEN {
            start = 0;
        }
        let end = loc.offset + u64::from(loc.stored_len);
        let from = {
            let mut run = self.run.lock().unwrap_or_else(|p| p.into_inner());
            if run.1 == start && run.1 > run.0 {
                run.1 = end;
            } else {
                *run = (start, end);
            }
            run.0
        };
        crate::fs::uncache(&self.file, from, end - from);
    }
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
        let marker = format!("hamn store\nformat {FORMAT_VERSION}\n");
        durable::write_atomic(
            &path.join(MARKER_FILE),
            &path.join(TMP_DIR),
            marker.as_bytes(),
        )
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
        let lock = Self::lock_at(path, wait, command)?;
        let (index, moved) = Index::open_or_replace(&path.join(index::INDEX_FILE))?;
        Ok((Self::with_index(path, index), lock, moved))
    }

    fn with_index(path: &Path, index: Index) -> Store {
        Store {
            root: path.to_path_buf(),
            index,
            open_packs: Mutex::new(HashMap::new()),
        }
    }

    /// Check the `HAMN-STORE` marker: present, and a version we read.
    fn check_marker(path: &Path) -> Result<()> {
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
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn packs_dir(&self) -> PathBuf {
        self.root.join(PACKS_DIR)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR)
    }

    pub fn pack_path(&self, id: &PackId) -> PathBuf {
        pack::pack_path(&self.packs_dir(), id)
    }

    /// Become the store's one writer. Leftovers of a writer that died are
    /// removed once the lock is ours: nothing else can be writing them.
    pub fn lock(&self, wait: Duration, command: &str) -> Result<StoreLock> {
        Self::lock_at(&self.root, wait, command)
    }

    fn lock_at(root: &Path, wait: Duration, command: &str) -> Result<StoreLock> {
        let lock = StoreLock::acquire(root, wait, command)?;
        let tmp = root.join(TMP_DIR);
        durable::create_private_dir(&tmp)?;
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(lock)
    }

    fn pack_file(&self, id: &PackId) -> Result<Arc<OpenPack>> {
        let mut open = self.open_packs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(id) {
            return Ok(f.clone());
        }
        let path = self.pack_path(id);
        let f = match File::open(&path) {
            Ok(file) => Arc::new(OpenPack {
                file,
                run: Mutex::new((0, 0)),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingObject {
                    what: "pack",
                    id: id.to_hex(),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        if open.len() >= OPEN_PACKS_MAX {
            open.clear();
        }
        open.insert(*id, f.clone());
        Ok(f)
    }

    /// Read the stored bytes of a blob at a known location.
    pub fn read_stored(&self, loc: &BlobLoc) -> Result<Vec<u8>> {
        let f = self.pack_file(&loc.pack)?;
        let mut buf = vec![0u8; loc.stored_len as usize];
        f.file.read_exact_at(&mut buf, loc.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(loc, "pack is shorter than the index says (truncated?)")
            } else {
                Error::io(self.pack_path(&loc.pack), e)
            }
        })?;
        if loc.id.kind == BlobKind::Chunk {
            // Trees stay cached: plans, diffs and listings read them again.
            f.read_once(loc);
        }
        Ok(buf)
    }

    fn corrupt(&self, loc: &BlobLoc, detail: &str) -> Error {
        Error::Corrupt {
            what: loc.id.kind.name(),
            id: loc.id.to_hex(),
            pack: self.pack_path(&loc.pack).display().to_string(),
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
        self.index
            .get(&id.hash)?
            .ok_or_else(|| Error::MissingObject {
                what: id.kind.name(),
                id: id.to_hex(),
            })
    }

    /// Read a blob's plain bytes, verified against its id.
    pub fn read_blob(&self, id: BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let stored = self.read_stored(&loc)?;
        self.verify_stored(&loc, &stored)
    }

    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        self.read_blob(id.into())
    }

    pub fn read_tree(&self, id: TreeId) -> Result<Tree> {
        Tree::decode(&self.read_blob(id.into())?)
    }

    pub fn has_blob(&self, id: BlobId) -> Result<bool> {
        self.index.contains(&id.hash)
    }

    /// Every pack file present on disk (indexed or not).
    pub fn pack_files(&self) -> Result<Vec<PackId>> {
        let dir = self.packs_dir();
        let mut out = Vec::new();
        for sub in std::fs::read_dir(&dir).at(&dir)? {
            let sub = sub.at(&dir)?.path();
            if !sub.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&sub).at(&sub)? {
                let e = e.at(&sub)?;
                let name = e.file_name();
                let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".pack")) else {
                    continue;
                };
                if let Ok(id) = PackId::from_hex(hex) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
