//! The base chunks of deltas (docs/protocol.md section 7), read from a
//! store and kept for the next deltas: a file's consecutive chunks mostly
//! share their bases, so both ends of a push would otherwise read and
//! verify each base several times.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::chunk::DELTA_BASE_MAX_BYTES;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::store::Store;

/// Plain bytes of recently read base chunks kept in memory.
const CACHE_BYTES: usize = 12 * 1024 * 1024;

#[derive(Default)]
struct Cached {
    chunks: VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    bytes: usize,
}

/// Shared by the threads making or applying deltas.
#[derive(Default)]
pub struct BaseCache {
    inner: Mutex<Cached>,
}

impl BaseCache {
    /// One chunk's plain bytes, verified against its id when read.
    fn get(&self, store: &Store, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        let lock = || self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
