//! Adding blobs to a store from many threads at once. Hashing and
//! compression run on the caller's thread; only the append to the open pack
//! is serialised. A blob is skipped when the index or the unindexed packs of
//! this run already hold it, so identical content is stored once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::chunk;
use crate::error::Result;
use crate::id::{BlobId, ChunkId, ID_LEN, TreeId};
use crate::store::index::BlobReader;
use crate::store::pack::PackWriter;
use crate::store::{Store, StoreLock};

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WriteStats {
    pub blobs_added: u64,
    pub blobs_deduplicated: u64,
    pub bytes_plain_added: u64,
    pub bytes_stored_added: u64,
    pub packs_written: u64,
}

#[derive(Default)]
struct Counters {
    blobs_added: AtomicU64,
    blobs_deduplicated: AtomicU64,
    bytes_plain_added: AtomicU64,
    bytes_stored_added: AtomicU64,
    packs_written: AtomicU64,
}

/// What a writer tells of each pack it seals: the blobs in it.
pub type SealedHook<'s> = &'s (dyn Fn(&[BlobId]) + Sync);

/// Trees waiting for their completeness marks at most, before the open
/// pack is sealed early to write them (as many as a pack's blobs).
const MARKS_PER_SEAL_MAX: usize = crate::store::pack::PACK_MAX_BLOBS;

/// What the writer appends to: the open pack, and the trees that are
/// complete once every blob added so far is durable and indexed.
#[derive(Default)]
struct Open {
    pack: Option<PackWriter>,
    marks: Vec<[u8; ID_LEN]>,
}

pub struct BlobWriter<'s> {
    store: &'s Store,
    _lock: &'s StoreLock,
    open: Mutex<Open>,
    /// Held from taking a pack out of `open` to its index commit, so that
    /// packs are indexed in the order they were filled: when a pack's
    /// commit writes completeness marks, every blob added before them is
    /// indexed by it or an earlier commit.
    sealing: Mutex<()>,
    /// Blobs written to packs that are not indexed yet.
    pending: Mutex<HashSet<[u8; ID_LEN]>>,
    /// The index as of the last seal of this writer (the store lock keeps
    /// every other writer out, so nothing else changes it meanwhile).
    reader: RwLock<Arc<BlobReader>>,
    counters: Counters,
    /// Told the blobs of each pack once it is sealed and indexed.
    on_sealed: Option<SealedHook<'s>>,
}

impl<'s> BlobWriter<'s> {
    pub fn new(store: &'s Store, lock: &'s StoreLock) -> Result<Self> {
        Ok(BlobWriter {
            store,
            _lock: lock,
            open: Mutex::new(Open::default()),
            sealing: Mutex::new(()),
            pending: Mutex::new(HashSet::new()),
            reader: RwLock::new(Arc::new(store.index().reader()?)),
            counters: Counters::default(),
            on_sealed: None,
        })
    }

    /// Call `f` with the blobs of each pack this writer seals, once the
    /// pack is durable and indexed (from the thread that sealed it).
    pub fn on_sealed(mut self, f: Option<SealedHook<'s>>) -> Self {
        self.on_sealed = f;
        self
    }

    fn is_pending(&self, hash: &[u8; ID_LEN]) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(hash)
    }

    /// Whether the store (or this run) already holds the blob. Pending is
    /// checked before the index: a sealed pack is indexed, and the reader
    /// renewed, before its ids leave the pending set, so one of the two
    /// always sees it.
    pub fn has(&self, id: BlobId) -> Result<bool> {
        if self.is_pending(&id.hash) {
            return Ok(true);
        }
        let reader = self
            .reader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        reader.contains(&id.hash)
    }

    pub fn add_chunk(&self, plain: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(plain);
        self.add(id.into(), plain)?;
        Ok(id)
    }

    /// `add_chunk` for a chunk whose id the caller computed from `plain`.
    pub fn add_chunk_as(&self, id: ChunkId, plain: &[u8]) -> Result<()> {
        self.add(id.into(), plain)
    }

    pub fn add_tree(&self, plain: &[u8]) -> Result<TreeId> {
        let id = TreeId::of(plain);
        self.add(id.into(), plain)?;
        Ok(id)
    }

    /// [`BlobWriter::add_tree`] where the caller has just read `stored`
    /// from this store: a tree equal to it needs no look-up.
    pub fn add_tree_like(&self, plain: &[u8], stored: TreeId) -> Result<TreeId> {
        let id = TreeId::of(plain);
        if id == stored {
            self.counters
                .blobs_deduplicated
                .fetch_add(1, Ordering::Relaxed);
            return Ok(id);
        }
        self.add(id.into(), plain)?;
        Ok(id)
    }

    /// Store a blob whose id the caller computed from `plain`.
    fn add(&self, id: BlobId, plain: &[u8]) -> Result<()> {
        if self.has(id)? {
            self.counters
                .blobs_deduplicated
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let (encoding, stored) = chunk::encode(plain);
        self.add_stored(id, encoding, plain.len() as u32, &stored)
    }

    /// Store a blob already in its stored form (as received from a peer,
    /// or moved by gc out of a pack it will delete). Only this run's own
    /// packs are consulted, not the index. The caller must have verified
    /// the blob against its id.
    pub fn add_stored(
        &self,
        id: BlobId,
        encoding: u8,
        plain_len: u32,
        stored: &[u8],
    ) -> Result<()> {
        let mut open = self.lock_open();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if !pending.insert(id.hash) {
                self.counters
                    .blobs_deduplicated
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if open.pack.is_none() {
            open.pack = Some(PackWriter::create(self.store.files())?);
        }
        let w = open.pack.as_mut().expect("pack writer was just created");
        w.add(id, encoding, plain_len, stored)?;
        self.counters.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_plain_added
            .fetch_add(plain_len as u64, Ordering::Relaxed);
        self.counters
            .bytes_stored_added
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        if w.is_full() {
            self.seal_open(open)?;
        }
        Ok(())
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mark tree `id` complete once every blob added so far (all that it
    /// names, when the caller added them before it) is durable and
    /// indexed: in the commit of the pack open now, or of the next one.
    pub fn mark_complete(&self, id: TreeId) -> Result<()> {
        let mut open = self.lock_open();
        open.marks.push(id.0);
        if open.marks.len() >= MARKS_PER_SEAL_MAX {
            // A walk over stored trees adds marks and no blobs: write them
            // now, with the open pack's blobs if it has any.
            self.seal_open(open)?;
        }
        Ok(())
    }

    /// Seal the open pack (fsync, rename, index commit) with the marks
    /// waiting, or write the marks alone when no pack is open. The other
    /// threads start the next pack meanwhile.
    fn seal_open(&self, mut open: std::sync::MutexGuard<'_, Open>) -> Result<()> {
        let pack = open.pack.take().filter(|w| !w.is_empty());
        let marks = std::mem::take(&mut open.marks);
        let turn = self.sealing.lock().unwrap_or_else(|p| p.into_inner());
        drop(open);
        let sealed = match pack {
            Some(w) => self.seal(w, &marks),
            None if marks.is_empty() => Ok(()),
            None => self.store.index().mark_complete(&marks),
        };
        drop(turn);
        sealed
    }

    /// Publish a pack and index it with `marks`; only then do its ids
    /// leave `pending`.
    fn seal(&self, w: PackWriter, marks: &[[u8; ID_LEN]]) -> Result<()> {
        let sealed = w.finish()?;
        crate::failpoint::failpoint("pack:published");
        self.store
            .index()
            .add_pack(sealed.id, sealed.size_bytes, &sealed.blobs, marks)?;
        crate::failpoint::failpoint("pack:indexed");
        self.counters.packs_written.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(self.store.index().reader()?);
        *self.reader.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for l in &sealed.blobs {
            pending.remove(&l.id.hash);
        }
        drop(pending);
        if let Some(f) = self.on_sealed {
            let ids: Vec<BlobId> = sealed.blobs.iter().map(|l| l.id).collect();
            f(&ids);
        }
        Ok(())
    }

    pub fn kind_stats(&self) -> WriteStats {
        WriteStats {
            blobs_added: self.counters.blobs_added.load(Ordering::Relaxed),
            blobs_deduplicated: self.counters.blobs_deduplicated.load(Ordering::Relaxed),
            bytes_plain_added: self.counters.bytes_plain_added.load(Ordering::Relaxed),
            bytes_stored_added: self.counters.bytes_stored_added.load(Ordering::Relaxed),
            packs_written: self.counters.packs_written.load(Ordering::Relaxed),
        }
    }

    /// Seal the open pack so that everything added is durable and indexed,
    /// and every tree given to [`BlobWriter::mark_complete`] marked.
    pub fn finish(self) -> Result<WriteStats> {
        self.seal_open(self.lock_open())?;
        Ok(self.kind_stats())
    }
}
