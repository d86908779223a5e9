//! The base chunks of deltas (docs/protocol.md section 7), read from a
//! store and kept for the next deltas: a file's consecutive chunks mostly
//! share their bases, so both ends of a push would otherwise read and
//! verify each base several times.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::chunk::DELTA_BASE_MAX_BYTES;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::store::Store;

/// Plain bytes of recently read base chunks kept in memory: one delta's
/// largest base. The next chunk's candidates overlap the last one's, so
/// that holds most of what it reuses; twice as much kept 11 MiB more at
/// the peak of a 2M-entry night's sync, for 10% fewer base bytes read
/// (docs/performance.md).
const CACHE_BYTES: usize = DELTA_BASE_MAX_BYTES;
/// Below this size a chunk is too small for anchors to be found in it
/// reliably, and cheap to take as a base.
const SMALL_BYTES: usize = 64 * 1024;
/// Chunks whose anchors are kept (a few KiB each).
const ANCHORS_CACHED: usize = 256;

#[derive(Default, Debug)]
struct Cached {
    chunks: VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    bytes: usize,
    anchors: HashMap<ChunkId, Arc<Vec<u64>>>,
}

/// Shared by the threads making or applying deltas.
#[derive(Default, Debug)]
pub struct BaseCache {
    inner: Mutex<Cached>,
}

impl BaseCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One chunk's plain bytes, verified against its id when read.
    fn get(&self, store: &Store, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.lock().chunks.iter().find(|c| c.0 == id) {
            return Ok(c.1.clone());
        }
        let plain = Arc::new(store.read_chunk(id)?);
        let mut c = self.lock();
        c.bytes += plain.len();
        c.chunks.push_back((id, plain.clone()));
        while c.bytes > CACHE_BYTES {
            match c.chunks.pop_front() {
                Some(old) => c.bytes -= old.1.len(),
                None => break,
            }
        }
        Ok(plain)
    }

    /// The anchors (`chunk::anchors`) of chunk `id`, whose plain bytes
    /// are `plain`.
    fn anchors(&self, id: ChunkId, plain: &[u8]) -> Arc<Vec<u64>> {
        if let Some(a) = self.lock().anchors.get(&id) {
            return a.clone();
        }
        let a = Arc::new(crate::chunk::anchors(plain));
        let mut c = self.lock();
        if c.anchors.len() >= ANCHORS_CACHED {
            c.anchors.clear();
        }
        c.anchors.insert(id, a.clone());
        a
    }

    /// The base to compress chunk `plain` against, chosen among
    /// `candidates` (in file order): those it shares an anchor with, and
    /// any small one. A delta's cost grows with its base, and most of a
    /// candidate range of an edited or re-packed file holds none of a given
    /// new chunk's bytes. A chunk too small to have anchors for sure, or
    /// that has none, takes them all. Returns the chosen ids, in order, and
    /// their plain bytes concatenated (empty when none is chosen).
    pub fn base_for(
        &self,
        store: &Store,
        plain: &[u8],
        candidates: &[ChunkId],
    ) -> Result<(Vec<ChunkId>, Vec<u8>)> {
        let mine = if plain.len() < SMALL_BYTES {
            Vec::new()
        } else {
            crate::chunk::anchors(plain)
        };
        let (mut ids, mut base) = (Vec::new(), Vec::new());
        for id in candidates {
            let old = self.get(store, *id)?;
            let keep = mine.is_empty()
                || old.len() < SMALL_BYTES
                || crate::chunk::shared_anchors(&mine, &self.anchors(*id, &old)) > 0;
            if keep {
                append_base(&mut base, &old)?;
                ids.push(*id);
            }
        }
        Ok((ids, base))
    }

    /// A delta's prefix: the plain bytes of `ids`, concatenated in order,
    /// at most `DELTA_BASE_MAX_BYTES`.
    pub fn prefix(&self, store: &Store, ids: &[ChunkId]) -> Result<Vec<u8>> {
        let mut base = Vec::new();
        for id in ids {
            append_base(&mut base, &self.get(store, *id)?)?;
        }
        Ok(base)
    }
}

/// Add one chunk's plain bytes to a delta's base, within
/// `DELTA_BASE_MAX_BYTES`.
fn append_base(base: &mut Vec<u8>, plain: &[u8]) -> Result<()> {
    if base.len() + plain.len() > DELTA_BASE_MAX_BYTES {
        return Err(Error::malformed(
            "delta",
            "its bases are larger than the limit",
        ));
    }
    base.extend_from_slice(plain);
    Ok(())
}
