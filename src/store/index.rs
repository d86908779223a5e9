//! The redb index: blob id -> location, and the set of indexed packs.
//! It is a cache of the pack trailers and can always be rebuilt from them
//! (`hamn check --repair`); it never holds a fact the packs do not.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, ID_LEN, PackId};
use crate::store::pack::BlobLoc;

/// blob hash -> kind u8, encoding u8, pack id, offset u64, plain u32, stored u32
const BLOBS: TableDefinition<[u8; ID_LEN], &[u8]> = TableDefinition::new("blobs");
/// pack id -> blob count u32, pack bytes u64
const PACKS: TableDefinition<[u8; ID_LEN], (u32, u64)> = TableDefinition::new("packs");

/// Trees known to be complete here: the tree and everything below it is
/// stored. Filled when a pushed snapshot is verified and when a snapshot
/// is taken; a tree in it lets the push negotiation skip its whole
/// subtree, and the next snapshot reuse its unchanged files without
/// looking up their chunks.
const COMPLETE: TableDefinition<[u8; ID_LEN], ()> = TableDefinition::new("complete_trees");

pub const INDEX_FILE: &str = "index.redb";
/// redb's page cache: bounds the index's share of memory whatever its
/// size. Lookups are by random hash, so a bigger cache mostly holds pages
/// the kernel's page cache holds anyway: at 600k files 16 MiB cost 28 MiB
/// more peak RSS than 4 MiB for no gain in time (docs/performance.md).
const CACHE_BYTES: usize = 4 * 1024 * 1024;

pub struct Index {
    db: Db,
    path: PathBuf,
}

/// A read-write handle, or a read-only one that never writes the file
/// (reading commands and dry runs leave the index exactly as it was).
enum Db {
    Rw(redb::Database),
    Ro(redb::ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Rw(d) => d.begin_read(),
            Db::Ro(d) => d.begin_read(),
        }
    }
}

fn encode_loc(l: &BlobLoc) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(l.id.kind as u8);
    e.u8(l.encoding);
    e.id(&l.pack.0);
    e.u64(l.offset);
    e.u32(l.plain_len);
    e.u32(l.stored_len);
    e.finish()
}

fn decode_loc(hash: [u8; ID_LEN], v: &[u8]) -> Result<BlobLoc> {
    let mut d = Decoder::new(v, "index entry");
    let kind = BlobKind::from_u8(d.u8()?)?;
    let encoding = d.u8()?;
    let pack = PackId(d.id()?);
    let offset = d.u64()?;
    let plain_len = d.u32()?;
    let stored_len = d.u32()?;
    Ok(BlobLoc {
        id: BlobId { kind, hash },
        encoding,
        pack,
        offset,
        plain_len,
        stored_len,
    })
}

/// See [`Index::reader`].
pub struct BlobReader {
    table: redb::ReadOnlyTable<[u8; ID_LEN], &'static [u8]>,
    path: PathBuf,
}

impl BlobReader {
    pub fn contains(&self, hash: &[u8; ID_LEN]) -> Result<bool> {
        Ok(self.get(hash)?.is_some())
    }

    pub fn get(&self, hash: &[u8; ID_LEN]) -> Result<Option<BlobLoc>> {
        let v = self
            .table
            .get(hash)
            .map_err(|e| index_error(&self.path, e.into()))?;
        v.map(|v| decode_loc(*hash, v.value())).transpose()
    }
}

/// Why an index could not be opened.
enum OpenFailure {
    /// The file is damaged or not an index: rebuilding it is the cure.
    Damaged(Error),
    /// Anything else (another process, the disk, permissions).
    Other(Error),
}

/// Whether a redb error says the file itself is bad.
fn is_damage(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::RepairAborted
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        redb::Error::Io(io) => is_damage_io(io),
        _ => false,
    }
}

/// Whether an I/O error reading the index says its bytes are bad.
fn is_damage_io(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    ) || io.raw_os_error() == Some(libc::EIO)
}

/// A redb error as hamn reports it. A failed read or write that is no
/// damage of the file (a full disk, a read-only file system) is that I/O
/// error: rebuilding the index would not cure it. So is redb's refusal of
/// every later call once a write failed, until the file is opened again.
/// Anything else is an index error, cured by a rebuild.
fn index_error(path: &Path, e: redb::Error) -> Error {
    match e {
        redb::Error::Io(io) if !is_damage_io(&io) => Error::io(path, io),
        redb::Error::PreviousIo => Error::io(
            path,
            std::io::Error::other(
                "a write to it failed earlier in this run (the first error says why); \
                 nothing more is written until it is opened again",
            ),
        ),
        e => Error::Index {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

impl Index {
    /// Open (creating if absent) the index. Every hamn process opens it in
    /// multi-writer mode so that readers work beside a running snapshot;
    /// the store lock, not redb, serialises writers.
    pub fn open(path: &Path) -> Result<Index> {
        Self::try_open(path).map_err(|f| match f {
            OpenFailure::Damaged(e) | OpenFailure::Other(e) => e,
        })
    }

    /// Open the index for a rebuild (the caller holds the store lock): an
    /// index redb cannot open because the file is damaged is moved aside to
    /// `index.redb.damaged-<unix time>` and an empty one is created.
    /// Returns the index and, if it was replaced, where the old file went
    /// and why.
    pub fn open_or_replace(path: &Path) -> Result<(Index, Option<(PathBuf, String)>)> {
        let why = match Self::try_open(path) {
            Ok(idx) => return Ok((idx, None)),
            Err(OpenFailure::Other(e)) => return Err(e),
            Err(OpenFailure::Damaged(e)) => e.to_string(),
        };
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut aside = path.with_file_name(format!("{INDEX_FILE}.damaged-{secs}"));
        let mut n = 1;
        while aside.exists() {
            aside = path.with_file_name(format!("{INDEX_FILE}.damaged-{secs}-{n}"));
            n += 1;
        }
        std::fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::store::durable::fsync_dir(dir)?;
        }
        let idx = Self::open(path)?;
        Ok((idx, Some((aside, why))))
    }

    fn try_open(path: &Path) -> std::result::Result<Index, OpenFailure> {
        let fail = |e: redb::Error| {
            let damaged = is_damage(&e);
            let err = index_error(path, e);
            if damaged {
                OpenFailure::Damaged(err)
            } else {
                OpenFailure::Other(err)
            }
        };
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| fail(e.into()))?;
        // Make sure the tables exist so readers never see "table missing";
        // only a new index is written to, so that reading commands (and dry
        // runs) leave the file as it was.
        let present = {
            let rx = db.begin_read().map_err(|e| fail(e.into()))?;
            rx.open_table(BLOBS).is_ok()
                && rx.open_table(PACKS).is_ok()
                && rx.open_table(COMPLETE).is_ok()
        };
        if !present {
            let tx = db.begin_write().map_err(|e| fail(e.into()))?;
            {
                tx.open_table(BLOBS).map_err(|e| fail(e.into()))?;
                tx.open_table(PACKS).map_err(|e| fail(e.into()))?;
                tx.open_table(COMPLETE).map_err(|e| fail(e.into()))?;
            }
            tx.commit().map_err(|e| fail(e.into()))?;
        }
        Ok(Index {
            db: Db::Rw(db),
            path: path.to_path_buf(),
        })
    }

    /// Open an existing index for reading only. An index left by a writer
    /// that crashed needs redb's repair first, which only a read-write open
    /// does: then it is opened read-write.
    pub fn open_read_only(path: &Path) -> Result<Index> {
        match Self::try_read_only(path) {
            Ok(idx) => Ok(idx),
            Err(_) if path.exists() => Self::open(path),
            Err(e) => Err(e),
        }
    }

    fn try_read_only(path: &Path) -> Result<Index> {
        let err = |detail: String| Error::Index {
            path: path.to_path_buf(),
            detail,
        };
        if !path.exists() {
            return Err(err("missing".into()));
        }
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .open_read_only(path)
            .map_err(|e| err(e.to_string()))?;
        Ok(Index {
            db: Db::Ro(db),
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        index_error(&self.path, e.into())
    }

    fn write_tx(&self) -> Result<redb::WriteTransaction> {
        match &self.db {
            Db::Rw(d) => d.begin_write().map_err(|e| self.err(e)),
            Db::Ro(_) => Err(Error::Index {
                path: self.path.clone(),
                detail: "opened read-only".into(),
            }),
        }
    }

    pub fn get(&self, hash: &[u8; ID_LEN]) -> Result<Option<BlobLoc>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        match t.get(hash).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(decode_loc(*hash, v.value())?)),
            None => Ok(None),
        }
    }

    /// A consistent view of the blob table for many lookups: one read
    /// transaction instead of one per lookup. It does not see later commits;
    /// take a new one after committing.
    pub fn reader(&self) -> Result<BlobReader> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        Ok(BlobReader {
            table,
            path: self.path.clone(),
        })
    }

    pub fn contains(&self, hash: &[u8; ID_LEN]) -> Result<bool> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        Ok(t.get(hash).map_err(|e| self.err(e))?.is_some())
    }

    /// Record a published pack and its blobs in one durable transaction,
    /// with the completeness marks of `complete` (trees whose blobs are
    /// all indexed once this commits).
    pub fn add_pack(
        &self,
        pack: PackId,
        size: u64,
        blobs: &[BlobLoc],
        complete: &[[u8; ID_LEN]],
    ) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            for b in blobs {
                t.insert(b.id.hash, encode_loc(b).as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut p = tx.open_table(PACKS).map_err(|e| self.err(e))?;
            p.insert(pack.0, (blobs.len() as u32, size))
                .map_err(|e| self.err(e))?;
        }
        self.insert_marks(&tx, complete)?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn insert_marks(&self, tx: &redb::WriteTransaction, trees: &[[u8; ID_LEN]]) -> Result<()> {
        let mut t = tx.open_table(COMPLETE).map_err(|e| self.err(e))?;
        for id in trees {
            t.insert(id, ()).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Forget blobs found damaged, each only while the index still places
    /// it where it was found; returns how many rows were removed.
    pub fn remove_blobs(&self, blobs: &[BlobLoc]) -> Result<u64> {
        let tx = self.write_tx()?;
        let mut removed = 0;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            for b in blobs {
                let here = match t.get(b.id.hash).map_err(|e| self.err(e))? {
                    Some(v) => {
                        let l = decode_loc(b.id.hash, v.value())?;
                        l.pack == b.pack && l.offset == b.offset
                    }
                    None => false,
                };
                if here {
                    t.remove(b.id.hash).map_err(|e| self.err(e))?;
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Forget a pack and those of its blobs that the index places in it.
    pub fn remove_pack(&self, pack: PackId, blobs: &[BlobLoc]) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            for b in blobs {
                let here = match t.get(b.id.hash).map_err(|e| self.err(e))? {
                    Some(v) => decode_loc(b.id.hash, v.value())?.pack == pack,
                    None => false,
                };
                if here {
                    t.remove(b.id.hash).map_err(|e| self.err(e))?;
                }
            }
            let mut p = tx.open_table(PACKS).map_err(|e| self.err(e))?;
            p.remove(pack.0).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// All indexed packs with (blob count, bytes).
    pub fn packs(&self) -> Result<Vec<(PackId, u32, u64)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PACKS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (n, size) = v.value();
            out.push((PackId(k.value()), n, size));
        }
        Ok(out)
    }

    pub fn blob_count(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    /// Visit every indexed blob location.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobLoc) -> Result<()>) -> Result<()> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            f(decode_loc(k.value(), v.value())?)?;
        }
        Ok(())
    }

    /// Every tree marked complete.
    pub fn complete_trees(&self) -> Result<Vec<[u8; ID_LEN]>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(COMPLETE) {
            Ok(t) => t,
            // An index written before marks existed, not opened for
            // writing since.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            out.push(row.map_err(|e| self.err(e))?.0.value());
        }
        Ok(out)
    }

    /// Drop every entry (before a rebuild from the packs).
    pub fn clear(&self) -> Result<()> {
        let tx = self.write_tx()?;
        tx.delete_table(BLOBS).map_err(|e| self.err(e))?;
        tx.delete_table(PACKS).map_err(|e| self.err(e))?;
        tx.delete_table(COMPLETE).map_err(|e| self.err(e))?;
        {
            tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            tx.open_table(PACKS).map_err(|e| self.err(e))?;
            tx.open_table(COMPLETE).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

impl Index {
    pub fn is_complete(&self, tree: &[u8; ID_LEN]) -> Result<bool> {
        Ok(self.are_complete(std::slice::from_ref(tree))?[0])
    }

    /// [`Index::is_complete`] for many trees, in one read transaction.
    pub fn are_complete(&self, trees: &[[u8; ID_LEN]]) -> Result<Vec<bool>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(COMPLETE).map_err(|e| self.err(e))?;
        trees
            .iter()
            .map(|tree| Ok(t.get(tree).map_err(|e| self.err(e))?.is_some()))
            .collect()
    }

    pub fn mark_complete(&self, trees: &[[u8; ID_LEN]]) -> Result<()> {
        let tx = self.write_tx()?;
        self.insert_marks(&tx, trees)?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Keep only the completeness marks of trees `keep` accepts.
    pub fn retain_complete(&self, keep: impl Fn(&[u8; ID_LEN]) -> bool) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut t = tx.open_table(COMPLETE).map_err(|e| self.err(e))?;
            t.retain(|k, _| keep(&k)).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forget every completeness mark (after damage was found).
    pub fn clear_complete(&self) -> Result<()> {
        let tx = self.write_tx()?;
        tx.delete_table(COMPLETE).map_err(|e| self.err(e))?;
        tx.open_table(COMPLETE).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }
}
