//! Trees: one directory's entries with their full metadata, in a
//! deterministic, versioned binary encoding. A tree names its
//! subdirectories by tree id, so a snapshot is a Merkle tree and identical
//! subtrees have identical ids. Decoding rejects any name that could escape
//! a directory (`/`, NUL, `.`, `..`, empty) before anything uses it.

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::id::{ChunkId, TreeId};

pub const TREE_MAGIC: &[u8; 4] = b"HTRE";
pub const TREE_VERSION: u16 = 1;
pub const NAME_MAX_BYTES: usize = 255;
pub const SYMLINK_MAX_BYTES: usize = 4096;
pub const XATTR_NAME_MAX_BYTES: usize = 255;
pub const XATTR_VALUE_MAX_BYTES: usize = 64 * 1024;
pub const OWNER_NAME_MAX_BYTES: usize = 255;

/// How a file's bytes are made from its chunks (the entry's content
/// encoding byte, docs/format.md section 7.4).
pub const CONTENT_PLAIN: u8 = 0;
pub const CONTENT_GZIP: u8 = 1;

const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;
const KIND_CHAR: u8 = 4;
const KIND_BLOCK: u8 = 5;
const KIND_FIFO: u8 = 6;
const KIND_SOCKET: u8 = 7;

/// An owner name, shared: the entries of a tree and of a walk nearly all
/// name the same few owners, and hold one copy of each.
pub type OwnerName = std::sync::Arc<[u8]>;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Names for display only; restores use the numbers.
    pub user: OwnerName,
    pub group: OwnerName,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Change-detection key, compared with the live file on the next
    /// snapshot; not restored.
    pub dev: u64,
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub nlink: u32,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// How a file's bytes are made from its chunks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The chunks laid into the data extents.
    #[default]
    Plain,
    /// Deflate data stored decompressed (boxed: rare, and a plain file's
    /// entry stays small).
    Gzip(Box<Gzip>),
}

/// A gzip-aware file (`crate::gzip`): the chunks begin with
/// `record_chunks` chunks of the recreation record, followed by the
/// `plain_len` decompressed bytes. The file has no holes; its bytes are
/// the record's recreation, whose BLAKE3 must be `file_hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gzip {
    pub file_hash: [u8; 32],
    pub plain_len: u64,
    pub record_chunks: u32,
}

impl Encoding {
    pub fn code(&self) -> u8 {
        match self {
            Encoding::Plain => CONTENT_PLAIN,
            Encoding::Gzip(_) => CONTENT_GZIP,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Gzip(_) => "gzip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileContent {
    pub size: u64,
    pub encoding: Encoding,
    /// Holes as (offset, length), sorted; the chunks hold the other bytes.
    pub holes: Vec<(u64, u64)>,
    pub chunks: Vec<ChunkRef>,
}

impl FileContent {
    /// Bytes a restore writes (the size less the holes).
    pub fn data_len(&self) -> u64 {
        self.size - self.holes.iter().map(|h| h.1).sum::<u64>()
    }

    /// The chunks of a gzip-aware file's recreation record (none for a
    /// plain file).
    pub fn record_refs(&self) -> &[ChunkRef] {
        match &self.encoding {
            Encoding::Plain => &[],
            Encoding::Gzip(g) => &self.chunks[..g.record_chunks as usize],
        }
    }

    /// The chunks that hold the data: the file's bytes for a plain file,
    /// the decompressed bytes for a gzip-aware one.
    pub fn data_refs(&self) -> &[ChunkRef] {
        &self.chunks[self.record_refs().len()..]
    }

    /// The extents (offset, length) that hold data, in order.
    pub fn data_extents(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for &(off, len) in &self.holes {
            if off > pos {
                out.push((pos, off - pos));
            }
            pos = off + len;
        }
        if self.size > pos {
            out.push((pos, self.size - pos));
        }
        out
    }

    /// Content identity for rename detection and "modified" checks.
    pub fn same_content(&self, other: &FileContent) -> bool {
        self.size == other.size
            && self.encoding == other.encoding
            && self.holes == other.holes
            && self.chunks == other.chunks
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(FileContent),
    Dir(TreeId),
    Symlink(Vec<u8>),
    CharDev(u64),
    BlockDev(u64),
    Fifo,
    Socket,
}

impl Kind {
    /// The tree of a directory entry.
    pub fn dir(&self) -> Option<TreeId> {
        match self {
            Kind::Dir(id) => Some(*id),
            _ => None,
        }
    }

    pub fn letter(&self) -> char {
        match self {
            Kind::File(_) => '-',
            Kind::Dir(_) => 'd',
            Kind::Symlink(_) => 'l',
            Kind::CharDev(_) => 'c',
            Kind::BlockDev(_) => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    /// Whether an entry of this kind is what a stat of type `ft` shows.
    pub fn is_type_of(&self, ft: std::fs::FileType) -> bool {
        use std::os::unix::fs::FileTypeExt;
        match self {
            Kind::File(_) => ft.is_file(),
            Kind::Dir(_) => ft.is_dir(),
            Kind::Symlink(_) => ft.is_symlink(),
            Kind::CharDev(_) => ft.is_char_device(),
            Kind::BlockDev(_) => ft.is_block_device(),
            Kind::Fifo => ft.is_fifo(),
            Kind::Socket => ft.is_socket(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir(_) => "dir",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev(_) => "chardev",
            Kind::BlockDev(_) => "blockdev",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub meta: Meta,
    pub kind: Kind,
}

impl Entry {
    /// Logical size: a file's size, a symlink's target length, else 0.
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(c) => c.size,
            Kind::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Sorted by name, names unique.
    pub entries: Vec<Entry>,
}

/// Check that a name is one safe path component.
pub fn validate_name(name: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::malformed(
            "tree",
            format!("entry name {:?} {why}", String::from_utf8_lossy(name)),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name == b"." || name == b".." {
        return bad("is a relative link");
    }
    if name.contains(&b'/') {
        return bad("contains '/'");
    }
    if name.contains(&0) {
        return bad("contains NUL");
    }
    if name.len() > NAME_MAX_BYTES {
        return bad("is longer than 255 bytes");
    }
    Ok(())
}

impl Tree {
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut t = TreeEncoder::new();
        for ent in &self.entries {
            t.push(ent);
        }
        t.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        let mut d = Decoder::new(bytes, "tree");
        if d.take(4)? != TREE_MAGIC {
            return Err(d.err("bad magic"));
        }
        let version = d.u16()?;
        if version != TREE_VERSION {
            return Err(d.err(format!(
                "tree version {version}, this hamn reads {TREE_VERSION}"
            )));
        }
        let n = d.count(ENTRY_MIN_BYTES)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n);
        let mut owners = Owners::default();
        for _ in 0..n {
            let ent = decode_entry(&mut d, &mut owners)?;
            if let Some(prev) = entries.last()
                && prev.name >= ent.name
            {
                return Err(d.err("entries are not sorted or not unique"));
            }
            entries.push(ent);
        }
        d.expect_end()?;
        Ok(Tree { entries })
    }
}

fn small_bytes(e: &mut Encoder, b: &[u8]) {
    e.u16(b.len() as u16);
    e.raw(b);
}

/// The fewest bytes an encoded entry takes (a one-byte name, no owner
/// names, no xattrs, before its kind's own fields): a count of entries is
/// checked against it before any memory is reserved for them.
const ENTRY_MIN_BYTES: usize = 2 + 1 + 1 + 4 + 4 + 4 + 2 + 2 + 12 + 8 + 8 + 12 + 4 + 2;

fn small_bytes_dec<'a>(d: &mut Decoder<'a>, max: usize) -> Result<&'a [u8]> {
    let n = d.u16()? as usize;
    if n > max {
        return Err(d.err(format!("field of {n} bytes exceeds {max}")));
    }
    d.take(n)
}

/// Encodes a tree one entry at a time, keeping only the encoding: a large
/// directory is snapshotted without holding all its entries at once. The
/// caller pushes entries sorted by name, each name once (as `Tree`).
pub struct TreeEncoder {
    e: Encoder,
    count: u32,
}

/// Where the entry count sits in an encoded tree: after magic and version.
const TREE_COUNT_AT: usize = 4 + 2;

impl Default for TreeEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeEncoder {
    pub fn new() -> Self {
        let mut e = Encoder::new();
        e.raw(TREE_MAGIC);
        e.u16(TREE_VERSION);
        e.u32(0);
        TreeEncoder { e, count: 0 }
    }

    pub fn push(&mut self, ent: &Entry) {
        encode_entry(&mut self.e, ent);
        self.count += 1;
    }

    pub fn finish(self) -> Vec<u8> {
        let mut bytes = self.e.finish();
        bytes[TREE_COUNT_AT..TREE_COUNT_AT + 4].copy_from_slice(&self.count.to_le_bytes());
        bytes
    }
}

fn encode_entry(e: &mut Encoder, ent: &Entry) {
    small_bytes(e, &ent.name);
    let m = &ent.meta;
    let kind = match &ent.kind {
        Kind::File(_) => KIND_FILE,
        Kind::Dir(_) => KIND_DIR,
        Kind::Symlink(_) => KIND_SYMLINK,
        Kind::CharDev(_) => KIND_CHAR,
        Kind::BlockDev(_) => KIND_BLOCK,
        Kind::Fifo => KIND_FIFO,
        Kind::Socket => KIND_SOCKET,
    };
    e.u8(kind);
    e.u32(m.mode);
    e.u32(m.uid);
    e.u32(m.gid);
    small_bytes(e, &m.user);
    small_bytes(e, &m.group);
    e.i64(m.mtime_sec);
    e.u32(m.mtime_nsec);
    e.u64(m.dev);
    e.u64(m.ino);
    e.i64(m.ctime_sec);
    e.u32(m.ctime_nsec);
    e.u32(m.nlink);
    e.u16(m.xattrs.len() as u16);
    for (k, v) in &m.xattrs {
        small_bytes(e, k);
        e.bytes(v);
    }
    match &ent.kind {
        Kind::File(c) => {
            e.u64(c.size);
            e.u8(c.encoding.code());
            if let Encoding::Gzip(g) = &c.encoding {
                e.id(&g.file_hash);
                e.u64(g.plain_len);
                e.u32(g.record_chunks);
            }
            e.u32(c.holes.len() as u32);
            for (off, len) in &c.holes {
                e.u64(*off);
                e.u64(*len);
            }
            e.u32(c.chunks.len() as u32);
            for ch in &c.chunks {
                e.id(&ch.id.0);
                e.u32(ch.len);
            }
        }
        Kind::Dir(t) => e.id(&t.0),
        Kind::Symlink(target) => e.bytes(target),
        Kind::CharDev(r) | Kind::BlockDev(r) => e.u64(*r),
        Kind::Fifo | Kind::Socket => {}
    }
}

/// The owner names of the entry decoded last: the next one most often has
/// the same, and shares them.
#[derive(Default)]
struct Owners {
    user: OwnerName,
    group: OwnerName,
}

/// `bytes` as a shared name, `last` itself when it is the same.
fn shared_name(last: &mut OwnerName, bytes: &[u8]) -> OwnerName {
    if **last != *bytes {
        *last = bytes.into();
    }
    last.clone()
}

fn decode_entry(d: &mut Decoder<'_>, owners: &mut Owners) -> Result<Entry> {
    let name = small_bytes_dec(d, NAME_MAX_BYTES)?.to_vec();
    validate_name(&name)?;
    let kind = d.u8()?;
    let mode = d.u32()?;
    if mode > 0o7777 {
        return Err(d.err(format!("mode {mode:o} has bits beyond 07777")));
    }
    let uid = d.u32()?;
    let gid = d.u32()?;
    let user = shared_name(&mut owners.user, small_bytes_dec(d, OWNER_NAME_MAX_BYTES)?);
    let group = shared_name(&mut owners.group, small_bytes_dec(d, OWNER_NAME_MAX_BYTES)?);
    let mtime_sec = d.i64()?;
    let mtime_nsec = d.u32()?;
    let dev = d.u64()?;
    let ino = d.u64()?;
    let ctime_sec = d.i64()?;
    let ctime_nsec = d.u32()?;
    let nlink = d.u32()?;
    if mtime_nsec >= 1_000_000_000 || ctime_nsec >= 1_000_000_000 {
        return Err(d.err("nanoseconds out of range"));
    }
    let nx = d.u16()? as usize;
    let mut xattrs = Vec::with_capacity(nx.min(d.remaining() / 6));
    for _ in 0..nx {
        let k = small_bytes_dec(d, XATTR_NAME_MAX_BYTES)?.to_vec();
        if k.is_empty() || k.contains(&0) {
            return Err(d.err("bad xattr name"));
        }
        let v = d.bytes(XATTR_VALUE_MAX_BYTES)?.to_vec();
        xattrs.push((k, v));
    }
    let kind = match kind {
        KIND_FILE => {
            let size = d.u64()?;
            let encoding = match d.u8()? {
                CONTENT_PLAIN => Encoding::Plain,
                CONTENT_GZIP => Encoding::Gzip(Box::new(Gzip {
                    file_hash: d.id()?,
                    plain_len: d.u64()?,
                    record_chunks: d.u32()?,
                })),
                other => {
                    return Err(d.err(format!(
                        "content encoding {other} is not known to this hamn"
                    )));
                }
            };
            let nh = d.count(16)?;
            let mut holes = Vec::with_capacity(nh);
            let mut end = 0u64;
            for _ in 0..nh {
                let off = d.u64()?;
                let len = d.u64()?;
                if off < end || off.checked_add(len).is_none_or(|e| e > size) || len == 0 {
                    return Err(d.err("holes overlap, are unsorted or lie past the end"));
                }
                end = off + len;
                holes.push((off, len));
            }
            let nc = d.count(36)?;
            let mut chunks = Vec::with_capacity(nc);
            for _ in 0..nc {
                let id = ChunkId(d.id()?);
                let len = d.u32()?;
                if len == 0 || len as usize > crate::chunk::CHUNK_MAX_BYTES {
                    return Err(d.err(format!("chunk length {len} out of range")));
                }
                chunks.push(ChunkRef { id, len });
            }
            let c = FileContent {
                size,
                encoding,
                holes,
                chunks,
            };
            let chunk_bytes =
                |refs: &[ChunkRef]| -> u64 { refs.iter().map(|c| u64::from(c.len)).sum() };
            match &c.encoding {
                Encoding::Plain => {
                    let hole_bytes: u64 = c.holes.iter().map(|h| h.1).sum();
                    if chunk_bytes(&c.chunks) + hole_bytes != size {
                        return Err(d.err("chunks and holes do not add up to the file size"));
                    }
                }
                Encoding::Gzip(g) => {
                    if !c.holes.is_empty()
                        || g.record_chunks == 0
                        || g.record_chunks as usize > c.chunks.len()
                    {
                        return Err(d.err("a gzip-aware file has holes or no recreation record"));
                    }
                    if chunk_bytes(c.data_refs()) != g.plain_len
                        || chunk_bytes(c.record_refs()) > crate::gzip::RECORD_MAX_BYTES as u64
                    {
                        return Err(d.err("a gzip-aware file's chunks do not add up"));
                    }
                }
            }
            Kind::File(c)
        }
        KIND_DIR => Kind::Dir(TreeId(d.id()?)),
        KIND_SYMLINK => {
            let t = d.bytes(SYMLINK_MAX_BYTES)?.to_vec();
            if t.is_empty() || t.contains(&0) {
                return Err(d.err("bad symlink target"));
            }
            Kind::Symlink(t)
        }
        KIND_CHAR => Kind::CharDev(d.u64()?),
        KIND_BLOCK => Kind::BlockDev(d.u64()?),
        KIND_FIFO => Kind::Fifo,
        KIND_SOCKET => Kind::Socket,
        other => return Err(d.err(format!("unknown entry kind {other}"))),
    };
    Ok(Entry {
        name,
        meta: Meta {
            mode,
            uid,
            gid,
            user,
            group,
            mtime_sec,
            mtime_nsec,
            dev,
            ino,
            ctime_sec,
            ctime_nsec,
            nlink,
            xattrs,
        },
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            meta: Meta {
                mode: 0o4755,
                mtime_nsec: 5,
                xattrs: vec![(b"user.a".to_vec(), vec![1, 2])],
                ..Meta::default()
            },
            kind: Kind::File(FileContent {
                size: 10,
                encoding: Encoding::Plain,
                holes: vec![(0, 4)],
                chunks: vec![ChunkRef {
                    id: ChunkId([9; 32]),
                    len: 6,
                }],
            }),
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let t = Tree {
            entries: vec![file(b"a\nb"), file(&[0xff, 0xfe])],
        };
        let bytes = t.encode();
        assert_eq!(Tree::decode(&bytes).unwrap(), t);
        assert_eq!(TreeId::of(&bytes), TreeId::of(&t.encode()));
    }

    fn gzip_file(record_chunks: u32, plain_len: u64) -> Entry {
        let mut e = file(b"img.tar.gz");
        e.kind = Kind::File(FileContent {
            size: 1000,
            encoding: Encoding::Gzip(Box::new(Gzip {
                file_hash: [7; 32],
                plain_len,
                record_chunks,
            })),
            holes: vec![],
            chunks: vec![
                ChunkRef {
                    id: ChunkId([1; 32]),
                    len: 40,
                },
                ChunkRef {
                    id: ChunkId([2; 32]),
                    len: 3000,
                },
            ],
        });
        e
    }

    #[test]
    fn gzip_aware_files_round_trip_and_must_add_up() {
        let t = Tree {
            entries: vec![gzip_file(1, 3000)],
        };
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        let Kind::File(c) = &back.entries[0].kind else {
            panic!()
        };
        assert_eq!(c.record_refs().len(), 1);
        assert_eq!(c.data_refs()[0].len, 3000);
        assert_eq!(c.data_len(), 1000);
        for (records, plain) in [(0, 3040), (3, 3000), (1, 2999)] {
            let t = Tree {
                entries: vec![gzip_file(records, plain)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{records} {plain}");
        }
    }

    #[test]
    fn rejects_escaping_names_and_unsorted_entries() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0b"] {
            let t = Tree {
                entries: vec![file(bad)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?}");
        }
        let t = Tree {
            entries: vec![file(b"b"), file(b"a")],
        };
        assert!(Tree::decode(&t.encode()).is_err());
    }

    #[test]
    fn rejects_truncation_anywhere() {
        let bytes = Tree {
            entries: vec![file(b"x")],
        }
        .encode();
        for n in 0..bytes.len() {
            assert!(Tree::decode(&bytes[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn an_entry_count_is_checked_against_the_smallest_entry() {
        let header = Tree::default().encode().len();
        for kind in [
            Kind::File(FileContent::default()),
            Kind::Dir(TreeId([1; 32])),
            Kind::Symlink(Vec::new()),
            Kind::CharDev(0),
            Kind::BlockDev(0),
            Kind::Fifo,
            Kind::Socket,
        ] {
            let t = Tree {
                entries: vec![Entry {
                    name: b"x".to_vec(),
                    meta: Meta::default(),
                    kind,
                }],
            };
            assert!(t.encode().len() - header >= ENTRY_MIN_BYTES, "{t:?}");
        }
        // A count that the remaining bytes could not hold is refused
        // before anything is reserved for it.
        let mut forged = Tree::default().encode();
        let at = forged.len() - 4;
        forged.truncate(at);
        forged.extend_from_slice(&1000u32.to_le_bytes());
        forged.extend_from_slice(&vec![0u8; 1000 * ENTRY_MIN_BYTES - 1]);
        let err = Tree::decode(&forged).unwrap_err().to_string();
        assert!(err.contains("count 1000 exceeds"), "{err}");
    }
}
