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

/// Plain bytes of recently read base chunks kept in memory.
const CACHE_BYTES: usize = 12 * 1024 * 1024;
/// Below this size a chunk is too small for anchors to be found in it
/// reliably, and cheap to take as a base.
const SMALL_BYTES: usize = 64 * 1024;
/// Chunks whose anchors are kept (a few KiB each).
const ANCHORS_CACHED: usize = 256;

#[derive(Default)]
struct Cached {
    chunks: VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    bytes: usize,
    anchors: HashMap<ChunkId, Arc<Vec<u64>>>,
}

/// Shared by the threads making or applying deltas.
#[derive(Default)]
pub struct BaseCache {
    inner: Mutex<Cached>,
}

impl BaseCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One chunk's plain bytes, verified against its id when read.
    fn get(&self, store: &Store, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        let lock = || self.lock();
        if let Some(c) = lock().chunks.iter().find(|c| c.0 == id) {
            return Ok(c.1.clone());
        }
        let plain = Arc::new(store.read_chunk(id)?);
        let mut c = lock();
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

    /// The anchors (`chunk::anchors`) of chunk `id`.
    fn anchors(&self, store: &Store, id: ChunkId) -> Result<Arc<Vec<u64>>> {
        if let Some(a) = self.lock().anchors.get(&id) {
            return Ok(a.clone());
        }
        let a = Arc::new(crate::chunk::anchors(&self.get(store, id)?));
        let mut c = self.lock();
        if c.anchors.len() >= ANCHORS_CACHED {
            c.anchors.clear();
        }
        c.anchors.insert(id, a.clone());
        Ok(a)
    }

    /// Of `candidates`, the chunks `plain` shares an anchor with, in the
    /// candidates' order: the bases worth compressing `plain` against.
    /// A delta's cost grows with its base, and most of a candidate range
    /// of an edited or re-packed file holds none of a given new chunk's
    /// bytes.
    pub fn sharing(&self, store: &Store, plain: &[u8], candidates: &[ChunkId]) -> Result<Vec<ChunkId>> {
        if plain.len() < SMALL_BYTES {
            // A small chunk (a config file, a file's tail) may have no
            // anchor; its delta is cheap whatever the base.
            return Ok(candidates.to_vec());
        }
        let mine = crate::chunk::anchors(plain);
        let mut out = Vec::new();
        for id in candidates {
            if crate::chunk::shared_anchors(&mine, &self.anchors(store, *id)?) > 0
                || self.get(store, *id)?.len() < SMALL_BYTES
            {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// A delta's prefix: the plain bytes of `ids`, concatenated in order,
    /// at most `DELTA_BASE_MAX_BYTES`.
    pub fn prefix(&self, store: &Store, ids: &[ChunkId]) -> Result<Vec<u8>> {
        let mut base = Vec::new();
        for id in ids {
            let plain = self.get(store, *id)?;
            if base.len() + plain.len() > DELTA_BASE_MAX_BYTES {
                return Err(Error::malformed(
                    "delta",
                    "its bases are larger than the limit",
                ));
            }
            base.extend_from_slice(&plain);
        }
        Ok(base)
    }
}
