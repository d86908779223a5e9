//! The push protocol's frames and messages (docs/protocol.md). A frame is
//! a u32 length, a u8 message type and the payload; no frame may exceed
//! `FRAME_MAX_BYTES`, and every count and length inside is checked before
//! anything is allocated for it. Decoding never panics on hostile bytes.

use std::io::{self, Read, Write};

use crate::codec::{Decoder, Encoder};
use crate::deploy::MaterializeStats;
use crate::error::{Error, Result};
use crate::gc::GcStats;
use crate::id::{BlobId, BlobKind, ChunkId, ID_LEN, SnapshotId, TreeId};
use crate::retention::RetentionReport;

pub const PROTOCOL_MAGIC: &[u8; 8] = b"HAMNPROT";
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame: one tree blob at its largest, with headroom.
pub const FRAME_MAX_BYTES: usize = crate::chunk::TREE_MAX_BYTES + 1024 * 1024;
/// Most ids in one HaveTrees/HaveBlobs/ReadBlobs request.
pub const IDS_PER_REQUEST_MAX: usize = 8192;
/// Most snapshot records in one listing.
pub const SNAPSHOTS_MAX: usize = 1_000_000;
const TEXT_MAX_BYTES: usize = 64 * 1024;
/// Largest snapshot record in a message.
pub const RECORD_MAX_BYTES: usize = crate::snapshot::RECORD_MAX_BYTES;
/// Most texts (warnings, hook failures) in one report.
pub const TEXTS_MAX: usize = 100_000;

pub const T_HELLO: u8 = 1;
pub const T_WELCOME: u8 = 2;
pub const T_ERROR: u8 = 3;
pub const T_LIST_SNAPSHOTS: u8 = 4;
pub const T_SNAPSHOT_LIST: u8 = 5;
pub const T_HAVE_TREES: u8 = 6;
pub const T_HAVE: u8 = 7;
pub const T_HAVE_BLOBS: u8 = 8;
pub const T_PUT_BLOB: u8 = 9;
pub const T_FLUSH: u8 = 10;
pub const T_FLUSHED: u8 = 11;
pub const T_PUT_SNAPSHOT: u8 = 12;
pub const T_SNAPSHOT_STORED: u8 = 13;
pub const T_READ_BLOBS: u8 = 14;
pub const T_BLOBS: u8 = 15;
pub const T_BYE: u8 = 16;
pub const T_MATERIALIZE: u8 = 17;
pub const T_MATERIALIZED: u8 = 18;
pub const T_APPLY_RETENTION: u8 = 19;
pub const T_RETENTION_APPLIED: u8 = 20;
pub const T_PUT_DELTA: u8 = 21;

/// Error codes carried by `Msg::Error`.
pub const E_FAILED: u8 = 1;
pub const E_VERSION: u8 = 2;
pub const E_LOCKED: u8 = 3;
pub const E_BAD_REQUEST: u8 = 4;
pub const E_REFUSED: u8 = 5;

/// Session modes announced in Hello.
pub const MODE_READ: u8 = 0;
pub const MODE_WRITE: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub id: BlobId,
    pub encoding: u8,
    pub plain_len: u32,
    pub stored: Vec<u8>,
}

/// A chunk sent as a zstd delta against chunks the receiver holds
/// (`chunk::delta_encode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaChunk {
    pub id: ChunkId,
    pub plain_len: u32,
    /// The chunks whose plain bytes, concatenated in this order, are the
    /// delta's prefix.
    pub bases: Vec<ChunkId>,
    pub delta: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Hello {
        version: u32,
        client: String,
        /// The store the client means; empty for "the server's own".
        store: String,
        mode: u8,
    },
    Welcome {
        version: u32,
        server: String,
        store_format: u32,
    },
    Error {
        code: u8,
        message: String,
    },
    ListSnapshots,
    /// Encoded snapshot records.
    SnapshotList(Vec<Vec<u8>>),
    HaveTrees(Vec<TreeId>),
    HaveBlobs(Vec<BlobId>),
    /// One flag per asked id, in order.
    Have(Vec<bool>),
    PutBlob(StoredBlob),
    PutDelta(DeltaChunk),
    Flush,
    Flushed {
        blobs_added: u64,
        bytes_stored: u64,
    },
    PutSnapshot(Vec<u8>),
    SnapshotStored(SnapshotId),
    ReadBlobs(Vec<BlobId>),
    Blobs(Vec<StoredBlob>),
    Bye,
    /// Deploy a snapshot on the standby under its root (which must be the
    /// one the server was started with).
    Materialize {
        snapshot: SnapshotId,
        root: String,
    },
    /// What the deployment did.
    Materialized(Box<MaterializeStats>),
    /// Apply the standby's own retention policy (forget, then gc).
    ApplyRetention,
    /// What forget and gc did there.
    RetentionApplied(RetentionReport),
}

fn put_ids(e: &mut Encoder, ids: impl ExactSizeIterator<Item = (u8, [u8; ID_LEN])>) {
    e.u32(ids.len() as u32);
    for (k, h) in ids {
        e.u8(k);
        e.id(&h);
    }
}

fn get_ids(d: &mut Decoder<'_>) -> Result<Vec<(u8, [u8; ID_LEN])>> {
    let n = d.count(1 + ID_LEN)?;
    if n > IDS_PER_REQUEST_MAX {
        return Err(d.err(format!(
            "{n} ids in one request, limit {IDS_PER_REQUEST_MAX}"
        )));
    }
    (0..n).map(|_| Ok((d.u8()?, d.id()?))).collect()
}

fn put_blob(e: &mut Encoder, b: &StoredBlob) {
    e.u8(b.id.kind as u8);
    e.u8(b.encoding);
    e.id(&b.id.hash);
    e.u32(b.plain_len);
    e.bytes(&b.stored);
}

fn get_blob(d: &mut Decoder<'_>) -> Result<StoredBlob> {
    let kind = BlobKind::from_u8(d.u8()?)?;
    let encoding = d.u8()?;
    let hash = d.id()?;
    let plain_len = d.u32()?;
    let stored = d.bytes(FRAME_MAX_BYTES)?.to_vec();
    Ok(StoredBlob {
        id: BlobId { kind, hash },
        encoding,
        plain_len,
        stored,
    })
}

fn text(d: &mut Decoder<'_>) -> Result<String> {
    let b = d.bytes(TEXT_MAX_BYTES)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// Texts sent in one report at most, and their bytes: a deployment onto
/// a file system that refuses every xattr warns once per entry, and its
/// report must still fit a frame. What is left out is counted in a last
/// text.
const TEXTS_SENT_MAX: usize = 10_000;
const TEXTS_SENT_BYTES: usize = 16 * 1024 * 1024;

fn put_texts(e: &mut Encoder, texts: &[String]) {
    let mut bytes = 0;
    let sent = texts
        .iter()
        .take(TEXTS_SENT_MAX)
        .take_while(|t| {
            bytes += t.len().min(TEXT_MAX_BYTES) + 4;
            bytes <= TEXTS_SENT_BYTES
        })
        .count();
    let more = texts.len() - sent;
    e.u32((sent + (more > 0) as usize) as u32);
    for t in &texts[..sent] {
        e.bytes(&t.as_bytes()[..t.len().min(TEXT_MAX_BYTES)]);
    }
    if more > 0 {
        e.bytes(format!("... and {more} more").as_bytes());
    }
}

fn get_texts(d: &mut Decoder<'_>) -> Result<Vec<String>> {
    let n = d.count(4)?;
    if n > TEXTS_MAX {
        return Err(d.err(format!("{n} texts in one report, limit {TEXTS_MAX}")));
    }
    (0..n).map(|_| text(d)).collect()
}

fn put_opt_snapshot(e: &mut Encoder, id: &Option<SnapshotId>) {
    match id {
        Some(id) => {
            e.u8(1);
            e.id(&id.0);
        }
        None => e.u8(0),
    }
}

fn get_opt_snapshot(d: &mut Decoder<'_>) -> Result<Option<SnapshotId>> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(SnapshotId(d.id()?))),
        other => Err(d.err(format!("option flag {other}"))),
    }
}

fn get_bool(d: &mut Decoder<'_>) -> Result<bool> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(d.err(format!("boolean {other}"))),
    }
}

/// Layout of `Materialized` (docs/protocol.md section 9).
fn put_materialized(e: &mut Encoder, s: &MaterializeStats) {
    e.id(&s.snapshot.0);
    put_opt_snapshot(e, &s.previous);
    for n in [
        s.files_written,
        s.bytes_written,
        s.files_copied,
        s.bytes_copied,
        s.files_cloned,
        s.bytes_cloned,
        s.files_linked,
        s.bytes_linked,
        s.entries_removed,
        s.entries_reowned,
        s.files_reused,
    ] {
        e.u64(n);
    }
    e.u64(s.seconds.to_bits());
    e.u8(s.already_deployed as u8);
    put_opt_snapshot(e, &s.same_content_as);
    put_texts(e, &s.warnings);
    put_texts(e, &s.hook_failures);
}

fn get_materialized(d: &mut Decoder<'_>) -> Result<MaterializeStats> {
    let mut s = MaterializeStats::new(SnapshotId(d.id()?), get_opt_snapshot(d)?);
    for n in [
        &mut s.files_written,
        &mut s.bytes_written,
        &mut s.files_copied,
        &mut s.bytes_copied,
        &mut s.files_cloned,
        &mut s.bytes_cloned,
        &mut s.files_linked,
        &mut s.bytes_linked,
        &mut s.entries_removed,
        &mut s.entries_reowned,
        &mut s.files_reused,
    ] {
        *n = d.u64()?;
    }
    s.seconds = f64::from_bits(d.u64()?);
    s.already_deployed = get_bool(d)?;
    s.same_content_as = get_opt_snapshot(d)?;
    s.warnings = get_texts(d)?;
    s.hook_failures = get_texts(d)?;
    Ok(s)
}

/// Layout of `RetentionApplied` (docs/protocol.md section 10).
fn put_retention(e: &mut Encoder, r: &RetentionReport) {
    e.u64(r.forgotten);
    e.u64(r.gc.packs_deleted);
    e.u64(r.gc.packs_rewritten);
    e.u64(r.gc.packs_written);
    e.i64(r.gc.bytes_freed);
    e.u64(r.gc.bytes_rewritten);
    e.u64(r.gc.seconds.to_bits());
}

fn get_retention(d: &mut Decoder<'_>) -> Result<RetentionReport> {
    Ok(RetentionReport {
        forgotten: d.u64()?,
        gc: GcStats {
            packs_deleted: d.u64()?,
            packs_rewritten: d.u64()?,
            packs_written: d.u64()?,
            bytes_freed: d.i64()?,
            bytes_rewritten: d.u64()?,
            seconds: f64::from_bits(d.u64()?),
        },
    })
}

impl Msg {
    /// The client's keepalive: a request that asks nothing (an empty
    /// `HaveTrees`, answered by an empty `Have`).
    pub fn keepalive() -> Msg {
        Msg::HaveTrees(Vec::new())
    }

    pub fn is_keepalive(&self) -> bool {
        matches!(self, Msg::HaveTrees(ids) if ids.is_empty())
    }

    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut e = Encoder::new();
        let t = match self {
            Msg::Hello {
                version,
                client,
                store,
                mode,
            } => {
                e.raw(PROTOCOL_MAGIC);
                e.u32(*version);
                e.bytes(client.as_bytes());
                e.bytes(store.as_bytes());
                e.u8(*mode);
                T_HELLO
            }
            Msg::Welcome {
                version,
                server,
                store_format,
            } => {
                e.raw(PROTOCOL_MAGIC);
                e.u32(*version);
                e.bytes(server.as_bytes());
                e.u32(*store_format);
                T_WELCOME
            }
            Msg::Error { code, message } => {
                e.u8(*code);
                e.bytes(message.as_bytes());
                T_ERROR
            }
            Msg::ListSnapshots => T_LIST_SNAPSHOTS,
            Msg::SnapshotList(list) => {
                e.u32(list.len() as u32);
                for r in list {
                    e.bytes(r);
                }
                T_SNAPSHOT_LIST
            }
            Msg::HaveTrees(ids) => {
                put_ids(&mut e, ids.iter().map(|t| (BlobKind::Tree as u8, t.0)));
                T_HAVE_TREES
            }
            Msg::HaveBlobs(ids) => {
                put_ids(&mut e, ids.iter().map(|b| (b.kind as u8, b.hash)));
                T_HAVE_BLOBS
            }
            Msg::Have(flags) => {
                e.u32(flags.len() as u32);
                for f in flags {
                    e.u8(*f as u8);
                }
                T_HAVE
            }
            Msg::PutBlob(b) => {
                put_blob(&mut e, b);
                T_PUT_BLOB
            }
            Msg::PutDelta(c) => {
                e.id(&c.id.0);
                e.u32(c.plain_len);
                e.u32(c.bases.len() as u32);
                for b in &c.bases {
                    e.id(&b.0);
                }
                e.bytes(&c.delta);
                T_PUT_DELTA
            }
            Msg::Flush => T_FLUSH,
            Msg::Flushed {
                blobs_added,
                bytes_stored,
            } => {
                e.u64(*blobs_added);
                e.u64(*bytes_stored);
                T_FLUSHED
            }
            Msg::PutSnapshot(r) => {
                e.bytes(r);
                T_PUT_SNAPSHOT
            }
            Msg::SnapshotStored(id) => {
                e.id(&id.0);
                T_SNAPSHOT_STORED
            }
            Msg::ReadBlobs(ids) => {
                put_ids(&mut e, ids.iter().map(|b| (b.kind as u8, b.hash)));
                T_READ_BLOBS
            }
            Msg::Blobs(list) => {
                e.u32(list.len() as u32);
                for b in list {
                    put_blob(&mut e, b);
                }
                T_BLOBS
            }
            Msg::Bye => T_BYE,
            Msg::Materialize { snapshot, root } => {
                e.id(&snapshot.0);
                e.bytes(root.as_bytes());
                T_MATERIALIZE
            }
            Msg::Materialized(s) => {
                put_materialized(&mut e, s);
                T_MATERIALIZED
            }
            Msg::ApplyRetention => T_APPLY_RETENTION,
            Msg::RetentionApplied(r) => {
                put_retention(&mut e, r);
                T_RETENTION_APPLIED
            }
        };
        (t, e.finish())
    }

    pub fn decode(t: u8, payload: &[u8]) -> Result<Msg> {
        let mut d = Decoder::new(payload, "protocol message");
        let magic = |d: &mut Decoder<'_>| -> Result<()> {
            if d.take(8)? != PROTOCOL_MAGIC {
                return Err(d.err("not a hamn protocol peer"));
            }
            Ok(())
        };
        let m = match t {
            // A peer of another protocol version may lay out the rest of
            // its greeting differently: its version is all that is read,
            // so that the refusal can name both versions.
            T_HELLO => {
                magic(&mut d)?;
                let version = d.u32()?;
                if version != PROTOCOL_VERSION {
                    d.take(d.remaining())?;
                    return Ok(Msg::Hello {
                        version,
                        client: String::new(),
                        store: String::new(),
                        mode: 0,
                    });
                }
                Msg::Hello {
                    version,
                    client: text(&mut d)?,
                    store: text(&mut d)?,
                    mode: d.u8()?,
                }
            }
            T_WELCOME => {
                magic(&mut d)?;
                let version = d.u32()?;
                if version != PROTOCOL_VERSION {
                    let server = text(&mut d).unwrap_or_else(|_| "of another version".into());
                    d.take(d.remaining())?;
                    return Ok(Msg::Welcome {
                        version,
                        server,
                        store_format: 0,
                    });
                }
                Msg::Welcome {
                    version,
                    server: text(&mut d)?,
                    store_format: d.u32()?,
                }
            }
            T_ERROR => Msg::Error {
                code: d.u8()?,
                message: text(&mut d)?,
            },
            T_LIST_SNAPSHOTS => Msg::ListSnapshots,
            T_SNAPSHOT_LIST => {
                let n = d.count(4)?;
                if n > SNAPSHOTS_MAX {
                    return Err(d.err("too many snapshots"));
                }
                Msg::SnapshotList(
                    (0..n)
                        .map(|_| Ok(d.bytes(RECORD_MAX_BYTES)?.to_vec()))
                        .collect::<Result<_>>()?,
                )
            }
            T_HAVE_TREES => Msg::HaveTrees(
                get_ids(&mut d)?
                    .into_iter()
                    .map(|(_, h)| TreeId(h))
                    .collect(),
            ),
            T_HAVE_BLOBS | T_READ_BLOBS => {
                let ids = get_ids(&mut d)?
                    .into_iter()
                    .map(|(k, hash)| {
                        Ok(BlobId {
                            kind: BlobKind::from_u8(k)?,
                            hash,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if t == T_HAVE_BLOBS {
                    Msg::HaveBlobs(ids)
                } else {
                    Msg::ReadBlobs(ids)
                }
            }
            T_HAVE => {
                let n = d.count(1)?;
                Msg::Have((0..n).map(|_| Ok(d.u8()? != 0)).collect::<Result<_>>()?)
            }
            T_PUT_BLOB => Msg::PutBlob(get_blob(&mut d)?),
            T_PUT_DELTA => {
                let id = ChunkId(d.id()?);
                let plain_len = d.u32()?;
                let n = d.count(ID_LEN)?;
                if n == 0 || n > crate::chunk::DELTA_BASES_MAX {
                    return Err(d.err(format!(
                        "a delta with {n} bases (1 to {} allowed)",
                        crate::chunk::DELTA_BASES_MAX
                    )));
                }
                let bases = (0..n)
                    .map(|_| Ok(ChunkId(d.id()?)))
                    .collect::<Result<_>>()?;
                Msg::PutDelta(DeltaChunk {
                    id,
                    plain_len,
                    bases,
                    delta: d.bytes(FRAME_MAX_BYTES)?.to_vec(),
                })
            }
            T_FLUSH => Msg::Flush,
            T_FLUSHED => Msg::Flushed {
                blobs_added: d.u64()?,
                bytes_stored: d.u64()?,
            },
            T_PUT_SNAPSHOT => Msg::PutSnapshot(d.bytes(RECORD_MAX_BYTES)?.to_vec()),
            T_SNAPSHOT_STORED => Msg::SnapshotStored(SnapshotId(d.id()?)),
            T_BLOBS => {
                let n = d.count(1 + 1 + ID_LEN + 8)?;
                Msg::Blobs((0..n).map(|_| get_blob(&mut d)).collect::<Result<_>>()?)
            }
            T_BYE => Msg::Bye,
            T_MATERIALIZE => Msg::Materialize {
                snapshot: SnapshotId(d.id()?),
                root: text(&mut d)?,
            },
            T_MATERIALIZED => Msg::Materialized(Box::new(get_materialized(&mut d)?)),
            T_APPLY_RETENTION => Msg::ApplyRetention,
            T_RETENTION_APPLIED => Msg::RetentionApplied(get_retention(&mut d)?),
            other => return Err(d.err(format!("unknown message type {other}"))),
        };
        d.expect_end()?;
        Ok(m)
    }
}

/// Reads frames from a byte stream, counting the bytes.
pub struct FrameReader<R> {
    inner: R,
    pub bytes: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader { inner, bytes: 0 }
    }

    /// The next message, or `None` at a clean end of stream.
    pub fn read(&mut self) -> Result<Option<Msg>> {
        let mut len = [0u8; 4];
        match read_full(&mut self.inner, &mut len) {
            Ok(0) => return Ok(None),
            Ok(4) => {}
            Ok(_) => {
                return Err(Error::malformed(
                    "frame",
                    "stream ended inside a frame header",
                ));
            }
            Err(e) => return Err(Error::io("<connection>", e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > FRAME_MAX_BYTES {
            return Err(Error::malformed(
                "frame",
                format!("frame of {len} bytes (limit {FRAME_MAX_BYTES})"),
            ));
        }
        let mut buf = vec![0u8; len];
        match read_full(&mut self.inner, &mut buf) {
            Ok(n) if n == len => {}
            Ok(_) => return Err(Error::malformed("frame", "stream ended inside a frame")),
            Err(e) => return Err(Error::io("<connection>", e)),
        }
        self.bytes += 4 + len as u64;
        Msg::decode(buf[0], &buf[1..]).map(Some)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes frames to a byte stream, counting the bytes.
pub struct FrameWriter<W> {
    inner: W,
    pub bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter { inner, bytes: 0 }
    }

    /// Queue a message (buffered until `flush`).
    pub fn send(&mut self, m: &Msg) -> Result<()> {
        let (t, payload) = m.encode();
        let len = payload.len() + 1;
        if len > FRAME_MAX_BYTES {
            return Err(Error::Other(format!(
                "message of {len} bytes exceeds the frame limit"
            )));
        }
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4] = t;
        self.inner
            .write_all(&head)
            .and_then(|_| self.inner.write_all(&payload))
            .map_err(|e| Error::io("<connection>", e))?;
        self.bytes += 4 + len as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(|e| Error::io("<connection>", e))
    }

    pub fn send_now(&mut self, m: &Msg) -> Result<()> {
        self.send(m)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let blob = StoredBlob {
            id: BlobId {
                kind: BlobKind::Chunk,
                hash: [3; 32],
            },
            encoding: 1,
            plain_len: 10,
            stored: vec![1, 2, 3],
        };
        for m in [
            Msg::Hello {
                version: PROTOCOL_VERSION,
                client: "x".into(),
                store: "/s".into(),
                mode: MODE_WRITE,
            },
            Msg::Have(vec![true, false]),
            Msg::PutBlob(blob.clone()),
            Msg::PutDelta(DeltaChunk {
                id: ChunkId([4; 32]),
                plain_len: 9,
                bases: vec![ChunkId([5; 32]), ChunkId([6; 32])],
                delta: vec![9, 8],
            }),
            Msg::Blobs(vec![blob]),
            Msg::HaveTrees(vec![TreeId([1; 32])]),
            Msg::Materialized(Box::new(MaterializeStats {
                files_written: 7,
                bytes_linked: 1 << 40,
                seconds: 2.5,
                same_content_as: Some(SnapshotId([9; 32])),
                warnings: vec!["w1".into(), String::new()],
                hook_failures: vec!["h".into()],
                ..MaterializeStats::new(SnapshotId([8; 32]), None)
            })),
            Msg::RetentionApplied(RetentionReport {
                forgotten: 3,
                gc: GcStats {
                    packs_deleted: 1,
                    bytes_freed: -5,
                    seconds: 0.25,
                    ..GcStats::default()
                },
            }),
            Msg::Error {
                code: E_LOCKED,
                message: "m".into(),
            },
        ] {
            let (t, p) = m.encode();
            assert_eq!(Msg::decode(t, &p).unwrap(), m);
        }
    }

    #[test]
    fn hostile_frames_are_errors() {
        // Over-long frame header.
        let mut r = FrameReader::new(&[0xff, 0xff, 0xff, 0x7f, 1][..]);
        assert!(r.read().is_err());
        // A count far beyond the payload.
        let mut p = Vec::new();
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Msg::decode(T_HAVE_BLOBS, &p).is_err());
        // A delta naming no base, or too many.
        for n in [0u32, crate::chunk::DELTA_BASES_MAX as u32 + 1] {
            let mut p = vec![4u8; ID_LEN];
            p.extend_from_slice(&9u32.to_le_bytes());
            p.extend_from_slice(&n.to_le_bytes());
            p.extend(std::iter::repeat_n(5u8, n as usize * ID_LEN));
            p.extend_from_slice(&0u32.to_le_bytes());
            assert!(Msg::decode(T_PUT_DELTA, &p).is_err(), "{n} bases");
        }
        // Garbage.
        for t in 0..30u8 {
            let _ = Msg::decode(t, &[7, 7, 7]);
        }
    }
}
