//! A file's content as the store holds it, and the one way to its bytes.
//! Every reader of a file's stored objects (gc's mark, check, diff, push,
//! serve's completeness check, the snapshot's reuse) names them through
//! [`FileContent::stored_refs`], and every reader of its bytes (deploy,
//! restore, cat, the live-copy checks) goes through [`ContentReader`]:
//! today a file is its chunks in order with holes between them; a
//! per-file transform (docs/format.md, "content encoding") changes these
//! two places only.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::error::{Error, IoContext, Result};
use crate::id::ChunkId;
use crate::store::Store;
use crate::tree::{ChunkRef, FileContent};

impl FileContent {
    /// The stored objects the content is made of, each with its plain
    /// length, in file order: what must be in a store for the file to be
    /// read back from it.
    pub fn stored_refs(&self) -> &[ChunkRef] {
        &self.chunks
    }
}

/// Reads files' bytes out of a store, each object verified against its id
/// before any of its bytes is passed on.
pub struct ContentReader<'s> {
    store: &'s Store,
}

impl<'s> ContentReader<'s> {
    pub fn new(store: &'s Store) -> Self {
        ContentReader { store }
    }

    /// Pass a file's data to `emit(offset, bytes)` in order; holes are
    /// skipped (the caller's file keeps them).
    pub fn for_each_data(
        &self,
        content: &FileContent,
        mut emit: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let extents = content.data_extents();
        let mut ext = extents.iter().copied();
        let (mut off, mut left) = ext.next().unwrap_or((0, 0));
        for c in content.stored_refs() {
            let data = self.store.read_chunk(c.id)?;
            let mut data = &data[..];
            while !data.is_empty() {
                while left == 0 {
                    (off, left) = ext.next().ok_or_else(|| {
                        Error::malformed("tree", "chunks exceed the file's data extents")
                    })?;
                }
                let n = (left as usize).min(data.len());
                emit(off, &data[..n])?;
                off += n as u64;
                left -= n as u64;
                data = &data[n..];
            }
        }
        Ok(())
    }

    /// Stream a file's bytes (holes as zeros) to `out`.
    pub fn cat(&self, content: &FileContent, out: &mut impl Write) -> Result<()> {
        let mut pos = 0u64;
        let zeros = vec![0u8; 64 * 1024];
        let pad = |out: &mut dyn Write, upto: u64, pos: &mut u64| -> Result<()> {
            while *pos < upto {
                let n = ((upto - *pos) as usize).min(zeros.len());
                out.write_all(&zeros[..n]).at("<stdout>")?;
                *pos += n as u64;
            }
            Ok(())
        };
        self.for_each_data(content, |off, bytes| {
            pad(out, off, &mut pos)?;
            out.write_all(bytes).at("<stdout>")?;
            pos += bytes.len() as u64;
            Ok(())
        })?;
        pad(out, content.size, &mut pos)?;
        out.flush().at("<stdout>")
    }

    /// Whether `file` on disk holds `content`: read in order, the bytes of
    /// each object hash to its id, and nothing follows. A file whose
    /// content has holes is never taken as holding it (holes are not read).
    pub fn holds(file: &File, content: &FileContent) -> bool {
        if !content.holes.is_empty() {
            return false;
        }
        let mut buf = Vec::new();
        let mut off = 0u64;
        for c in content.stored_refs() {
            buf.resize(c.len as usize, 0);
            if file.read_exact_at(&mut buf, off).is_err() || ChunkId::of(&buf) != c.id {
                return false;
            }
            off += u64::from(c.len);
        }
        off == content.size
    }
}
