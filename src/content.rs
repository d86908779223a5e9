//! A file's content as the store holds it, and the one way to its bytes.
//! Every reader of a file's stored objects (gc's mark, check, diff, push,
//! serve's completeness check, the snapshot's reuse) names them through
//! [`FileContent::stored_refs`], and every reader of its bytes (deploy,
//! restore, cat, check's recreation, the live-copy checks) goes through
//! [`ContentReader`]. A plain file is its chunks in order with holes
//! between them; a gzip-aware file is its recreation record's chunks and
//! its decompressed chunks, deflated again by [`crate::gzip::recreate`] and
//! checked against the file's BLAKE3 (docs/format.md, section 7.4).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::error::{Error, IoContext, Result};
use crate::gzip::Record;
use crate::id::ChunkId;
use crate::store::Store;
use crate::tree::{ChunkRef, Encoding, FileContent};

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
    /// skipped (the caller's file keeps them). A gzip-aware file is
    /// recreated piece by piece; should its bytes not hash to the file's
    /// BLAKE3 (they were passed on already), the call ends with an error,
    /// so a deployment or restore never keeps them.
    pub fn for_each_data(
        &self,
        content: &FileContent,
        emit: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match &content.encoding {
            Encoding::Plain => self.plain_data(content, emit),
            Encoding::Gzip(g) => self.recreate(content, &g.file_hash, emit),
        }
    }

    /// The recreation record of a gzip-aware file.
    pub fn record(&self, content: &FileContent) -> Result<Record> {
        let mut bytes = Vec::new();
        for c in content.record_refs() {
            bytes.extend_from_slice(&self.store.read_chunk(c.id)?);
        }
        let record = Record::decode(&bytes)?;
        if record.size != content.size {
            return Err(Error::malformed(
                "recreation record",
                "its file size differs from the entry's",
            ));
        }
        Ok(record)
    }

    fn recreate(
        &self,
        content: &FileContent,
        file_hash: &[u8; 32],
        mut emit: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let record = self.record(content)?;
        let mut chunks = content.data_refs().iter();
        let mut held = Vec::new();
        let mut held_at = 0usize;
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        crate::gzip::recreate(
            &record,
            |buf, mut n| {
                while n > 0 {
                    if held_at == held.len() {
                        let c = chunks.next().ok_or_else(|| {
                            Error::malformed("recreation record", "it names more bytes than stored")
                        })?;
                        held = self.store.read_chunk(c.id)?;
                        held_at = 0;
                    }
                    let k = n.min(held.len() - held_at);
                    buf.extend_from_slice(&held[held_at..held_at + k]);
                    held_at += k;
                    n -= k;
                }
                Ok(())
            },
            |bytes| {
                if pos + bytes.len() as u64 > content.size {
                    return Err(Error::malformed(
                        "recreation record",
                        "it recreates more bytes than the file had",
                    ));
                }
                hasher.update(bytes);
                emit(pos, bytes)?;
                pos += bytes.len() as u64;
                Ok(())
            },
        )?;
        if pos != content.size || hasher.finalize().as_bytes() != file_hash {
            return Err(Error::malformed(
                "recreation record",
                format!(
                    "the recreated file (BLAKE3 {}) is not the original",
                    &hex::encode(file_hash)[..16]
                ),
            ));
        }
        Ok(())
    }

    fn plain_data(
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
        if let Encoding::Gzip(g) = &content.encoding {
            return hash_of(file, content.size).is_some_and(|h| h == g.file_hash);
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

/// BLAKE3 of the first `size` bytes of `file`, when it has exactly that many.
fn hash_of(file: &File, size: u64) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        off += n as u64;
        if off > size {
            return None;
        }
    }
    (off == size).then(|| *hasher.finalize().as_bytes())
}
