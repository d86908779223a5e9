//! Pack files: append-only containers of blobs, self-describing so that the
//! index can be rebuilt from them. A pack is written through the storage
//! boundary as a new file and published under its id once durable; a
//! published pack is never modified.
//!
//! Layout (all integers little-endian; see docs/format.md):
//! header `PACK_MAGIC` u32 version u32 reserved, then blob records
//! (`RECORD_HEADER_LEN` bytes of header then the stored bytes), then the
//! trailer (entry count u32, entries of `TRAILER_ENTRY_LEN` bytes), then the
//! footer (trailer length u32, BLAKE3 of the trailer, `FOOTER_MAGIC`).

use std::io::Write;

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, IoContext, Result};
use crate::id::{BlobId, BlobKind, ID_LEN, PackId};
use crate::store::backend::{Backend, FileKind, NewFile};

pub const PACK_MAGIC: &[u8; 8] = b"HAMNPACK";
pub const FOOTER_MAGIC: &[u8; 8] = b"HAMNPEND";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = 1 + 1 + ID_LEN as u64 + 4 + 4;
pub const TRAILER_ENTRY_LEN: usize = 1 + 1 + ID_LEN + 8 + 4 + 4;
pub const FOOTER_LEN: u64 = 4 + ID_LEN as u64 + 8;
/// A pack is closed once it holds this many bytes.
pub const PACK_TARGET_BYTES: u64 = 32 * 1024 * 1024;
/// ... or this many blobs: a writer keeps one entry per blob of its open
/// pack in memory, so a run of many tiny files must not grow one pack
/// without bound.
pub const PACK_MAX_BLOBS: usize = 16 * 1024;
/// Largest trailer a reader accepts (far above what PACK_TARGET_BYTES yields).
pub const TRAILER_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Where one blob lives: what the index records and the trailer repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    pub id: BlobId,
    pub encoding: u8,
    pub pack: PackId,
    /// Offset of the stored bytes (after the record header).
    pub offset: u64,
    pub plain_len: u32,
    pub stored_len: u32,
}

/// A pack just published by `PackWriter::finish`.
pub struct SealedPack {
    pub id: PackId,
    pub blobs: Vec<BlobLoc>,
    /// The whole file: header, records, trailer and footer.
    pub size_bytes: u64,
}

pub struct PackWriter {
    out: Option<Box<dyn NewFile>>,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<BlobLoc>,
}

impl PackWriter {
    /// Start a pack in `files`; it is invisible until `finish`, and
    /// abandoned when dropped before.
    pub fn create(files: &dyn Backend) -> Result<Self> {
        let mut w = PackWriter {
            out: Some(files.create(FileKind::Pack)?),
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        };
        let mut header = Encoder::new();
        header.raw(PACK_MAGIC);
        header.u32(PACK_VERSION);
        header.u32(0);
        w.write(&header.finish())?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::Other("pack writer already finished".into()))?;
        out.write_all(bytes).at(out.describe())?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack should be sealed (by size or by number of blobs).
    pub fn is_full(&self) -> bool {
        self.len >= PACK_TARGET_BYTES || self.entries.len() >= PACK_MAX_BLOBS
    }

    pub fn add(&mut self, id: BlobId, encoding: u8, plain_len: u32, stored: &[u8]) -> Result<()> {
        let mut h = Encoder::new();
        h.u8(id.kind as u8);
        h.u8(encoding);
        h.id(&id.hash);
        h.u32(plain_len);
        h.u32(stored.len() as u32);
        self.write(&h.finish())?;
        let offset = self.len;
        self.write(stored)?;
        self.entries.push(BlobLoc {
            id,
            encoding,
            pack: PackId([0; ID_LEN]),
            offset,
            plain_len,
            stored_len: stored.len() as u32,
        });
        Ok(())
    }

    /// Write the trailer, make the pack durable and publish it under its
    /// id. Returns its id, the locations of its blobs and its final size
    /// (trailer and footer included).
    pub fn finish(mut self) -> Result<SealedPack> {
        let trailer = encode_trailer(&self.entries);
        self.write(&trailer)?;
        let mut footer = Encoder::new();
        footer.u32(trailer.len() as u32);
        footer.raw(blake3::hash(&trailer).as_bytes());
        footer.raw(FOOTER_MAGIC);
        self.write(&footer.finish())?;
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::Other("pack writer already finished".into()))?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        out.publish(&id.to_hex())?;
        let mut entries = std::mem::take(&mut self.entries);
        for e in &mut entries {
            e.pack = id;
        }
        Ok(SealedPack {
            id,
            blobs: entries,
            size_bytes: self.len,
        })
    }
}

fn encode_trailer(entries: &[BlobLoc]) -> Vec<u8> {
    let mut t = Encoder::new();
    t.u32(entries.len() as u32);
    for e in entries {
        t.u8(e.id.kind as u8);
        t.u8(e.encoding);
        t.id(&e.id.hash);
        t.u64(e.offset);
        t.u32(e.plain_len);
        t.u32(e.stored_len);
    }
    t.finish()
}

/// Read and check a published pack's trailer: the list of what it holds.
pub fn read_trailer(files: &dyn Backend, pack: PackId) -> Result<Vec<BlobLoc>> {
    let name = pack.to_hex();
    let location = files.describe(FileKind::Pack, &name);
    let size = files
        .info(FileKind::Pack, &name)?
        .ok_or_else(|| Error::MissingObject {
            what: "pack",
            id: name.clone(),
        })?
        .size;
    let read_at =
        |buf: &mut [u8], offset: u64| files.read_at(FileKind::Pack, &name, offset, buf, None);
    let bad = |detail: String| Error::Corrupt {
        what: "pack",
        id: pack.to_hex(),
        pack: location.clone(),
        detail,
    };
    if size < PACK_HEADER_LEN + FOOTER_LEN + 4 {
        return Err(bad(format!("only {size} bytes long")));
    }
    let mut header = [0u8; PACK_HEADER_LEN as usize];
    read_at(&mut header, 0)?;
    if &header[..8] != PACK_MAGIC {
        return Err(bad("bad header magic".into()));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != PACK_VERSION {
        return Err(bad(format!(
            "pack version {version}, expected {PACK_VERSION}"
        )));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    read_at(&mut footer, size - FOOTER_LEN)?;
    let mut d = Decoder::new(&footer, "pack footer");
    let trailer_len = d.u32()? as u64;
    let hash = d.id()?;
    if d.take(8)? != FOOTER_MAGIC {
        return Err(bad("bad footer magic (truncated?)".into()));
    }
    if trailer_len > TRAILER_MAX_BYTES || trailer_len + FOOTER_LEN + PACK_HEADER_LEN > size {
        return Err(bad(format!("trailer length {trailer_len} does not fit")));
    }
    let mut trailer = vec![0u8; trailer_len as usize];
    read_at(&mut trailer, size - FOOTER_LEN - trailer_len)?;
    if blake3::hash(&trailer).as_bytes() != &hash {
        return Err(bad("trailer checksum mismatch".into()));
    }
    let data_end = size - FOOTER_LEN - trailer_len;
    let mut d = Decoder::new(&trailer, "pack trailer");
    let n = d.count(TRAILER_ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = BlobKind::from_u8(d.u8()?)?;
        let encoding = d.u8()?;
        let hash = d.id()?;
        let offset = d.u64()?;
        let plain_len = d.u32()?;
        let stored_len = d.u32()?;
        // A crafted entry must not overflow: compare with checked sums.
        let end = offset.checked_add(stored_len as u64);
        if offset < PACK_HEADER_LEN + RECORD_HEADER_LEN || end.is_none_or(|e| e > data_end) {
            return Err(bad(format!(
                "entry at {offset}+{stored_len} lies outside the data"
            )));
        }
        out.push(BlobLoc {
            id: BlobId { kind, hash },
            encoding,
            pack,
            offset,
            plain_len,
            stored_len,
        });
    }
    d.expect_end()?;
    Ok(out)
}

/// Recover what can be recovered from a pack whose trailer is unusable
/// (truncated or damaged) by walking its record headers from the start.
/// Only records whose content matches their id are returned.
pub fn scan_records(data: &[u8], pack: PackId) -> Result<Vec<BlobLoc>> {
    let mut out = Vec::new();
    let mut pos = PACK_HEADER_LEN as usize;
    if !data.starts_with(PACK_MAGIC) || data.len() < pos {
        return Ok(out);
    }
    // Every length below comes from the file: all slicing goes through
    // `get` with checked ends, so a crafted record stops the scan instead
    // of panicking.
    loop {
        let header_end = pos.saturating_add(RECORD_HEADER_LEN as usize);
        let Some(header) = data.get(pos..header_end) else {
            break;
        };
        let mut d = Decoder::new(header, "record");
        let Ok(kind) = BlobKind::from_u8(d.u8()?) else {
            break;
        };
        let encoding = d.u8()?;
        let hash = d.id()?;
        let plain_len = d.u32()?;
        let stored_len = d.u32()? as usize;
        let start = header_end;
        let Some(stored) = start
            .checked_add(stored_len)
            .and_then(|end| data.get(start..end))
        else {
            break;
        };
        let id = BlobId { kind, hash };
        let ok = crate::chunk::decode(kind, encoding, stored, plain_len)
            .map(|plain| blake3::hash(&plain).as_bytes() == &hash)
            .unwrap_or(false);
        if !ok {
            break;
        }
        out.push(BlobLoc {
            id,
            encoding,
            pack,
            offset: start as u64,
            plain_len,
            stored_len: stored_len as u32,
        });
        pos = start + stored_len;
    }
    Ok(out)
}
