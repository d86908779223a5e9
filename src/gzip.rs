//! Gzip-aware content (docs/format.md, section 7.4). A file that matches
//! `gzip_aware` and is deflate data (one or more gzip members, a zlib
//! stream, or a raw deflate stream) is stored as its decompressed bytes,
//! chunked like any file, plus a recreation record that deflates them again
//! to exactly the original bytes. preflate-rs does the deflate analysis and
//! its inverse; this module frames it: headers and trailers kept verbatim,
//! each stream cut into pieces of bounded plain text, the record's encoding,
//! and the whole file's BLAKE3 that every recreation is checked against.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use preflate_rs::{ExitCode, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

pub const RECORD_MAGIC: &[u8; 4] = b"HGZR";
pub const RECORD_VERSION: u16 = 1;

/// Plain text one analysis piece holds at most. zlib ends a block after
/// 16 Ki symbols (at most 4.2 MB of plain text), so a piece holds at
/// least one whole block.
pub const PIECE_PLAIN_BYTES: usize = 8 << 20;

/// Compressed bytes offered to one analysis step. Deflate never shrinks
/// data by more than a fraction of a percent, so a step always ends on the
/// plain-text bound, never at the end of the offered bytes, except at the
/// end of the file (preflate-rs 0.7 mispredicts some streams whose steps
/// end at the end of the offered bytes).
pub const WINDOW_BYTES: usize = 12 << 20;

/// Longest verbatim run a record keeps: gzip headers with their name and
/// comment, trailers, and bytes after the last stream.
pub const VERBATIM_MAX_BYTES: usize = 1 << 20;

/// Largest plain-text piece a record may name (reading refuses more).
pub const PIECE_MAX_BYTES: u32 = 64 << 20;

/// A record larger than 1/`RECORD_MAX_FRACTION` of its file, or than
/// `RECORD_MAX_BYTES`, is not worth keeping: the file is stored as plain
/// chunks instead.
pub const RECORD_MAX_FRACTION: u64 = 20;
pub const RECORD_MAX_BYTES: usize = 64 << 20;

const SEGMENT_VERBATIM: u8 = 1;
const SEGMENT_DEFLATE: u8 = 2;

/// Deflate streams with longer hash chains than this are not analysed
/// (gzip -9 uses 4096; beyond it analysis time grows without bound).
const MAX_CHAIN: u32 = 4096;

/// How a file's bytes are rebuilt from its decompressed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Size of the original file.
    pub size: u64,
    /// Total decompressed bytes: what the file's plain chunks hold.
    pub plain_len: u64,
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes of the file kept as they are.
    Verbatim(Vec<u8>),
    /// One deflate stream, piece by piece.
    Deflate(Vec<Piece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Decompressed bytes of this piece, taken in order from the plain chunks.
    pub plain_len: u32,
    /// preflate-rs's corrections for the piece.
    pub corrections: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(RECORD_MAGIC);
        e.u16(RECORD_VERSION);
        e.u64(self.size);
        e.u64(self.plain_len);
        e.u32(self.segments.len() as u32);
        for s in &self.segments {
            match s {
                Segment::Verbatim(b) => {
                    e.u8(SEGMENT_VERBATIM);
                    e.bytes(b);
                }
                Segment::Deflate(pieces) => {
                    e.u8(SEGMENT_DEFLATE);
                    e.u32(pieces.len() as u32);
                    for p in pieces {
                        e.u32(p.plain_len);
                        e.bytes(&p.corrections);
                    }
                }
            }
        }
        e.finish()
    }

    /// Decode and check a record: the segments' bytes add up to `size`
    /// and the pieces' to `plain_len` (recreated lengths are checked as
    /// they are made).
    pub fn decode(data: &[u8]) -> Result<Record> {
        let mut d = Decoder::new(data, "recreation record");
        if d.take(4)? != RECORD_MAGIC {
            return Err(d.err("bad magic"));
        }
        let v = d.u16()?;
        if v != RECORD_VERSION {
            return Err(d.err(format!("version {v} is not known to this hamn")));
        }
        let size = d.u64()?;
        let plain_len = d.u64()?;
        let n = d.count(5)?;
        let mut segments = Vec::with_capacity(n);
        let (mut verbatim, mut plain) = (0u64, 0u64);
        for _ in 0..n {
            match d.u8()? {
                SEGMENT_VERBATIM => {
                    let b = d.bytes(VERBATIM_MAX_BYTES)?;
                    if b.is_empty() {
                        return Err(d.err("empty verbatim segment"));
                    }
                    verbatim += b.len() as u64;
                    segments.push(Segment::Verbatim(b.to_vec()));
                }
                SEGMENT_DEFLATE => {
                    let k = d.count(8)?;
                    let mut pieces = Vec::with_capacity(k);
                    for _ in 0..k {
                        let plain_len = d.u32()?;
                        if plain_len > PIECE_MAX_BYTES {
                            return Err(d.err(format!("piece of {plain_len} bytes")));
                        }
                        let corrections = d.bytes(RECORD_MAX_BYTES)?.to_vec();
                        plain += u64::from(plain_len);
                        pieces.push(Piece {
                            plain_len,
                            corrections,
                        });
                    }
                    segments.push(Segment::Deflate(pieces));
                }
                other => return Err(d.err(format!("segment kind {other}"))),
            }
        }
        d.expect_end()?;
        if plain != plain_len || verbatim > size {
            return Err(d.err("segment lengths do not match the file"));
        }
        Ok(Record {
            size,
            plain_len,
            segments,
        })
    }

    fn push_verbatim(&mut self, bytes: &[u8]) {
        if let Some(Segment::Verbatim(v)) = self.segments.last_mut() {
            v.extend_from_slice(bytes);
        } else {
            self.segments.push(Segment::Verbatim(bytes.to_vec()));
        }
    }
}

/// Why a file is stored as plain chunks after all (said in a log line).
#[derive(Debug)]
pub struct NotDeflate(pub String);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    Gzip,
    Zlib,
    Raw,
}

enum State {
    /// Expecting a stream's header (or, after a gzip member, another
    /// member or the file's tail).
    Start,
    Stream(Box<PreflateStreamProcessor>),
    Trailer,
    Tail,
    Done,
}

/// Reads a deflate file and yields its decompressed bytes through
/// [`Read`], recording what recreates the original as it goes. Memory is
/// bounded by [`WINDOW_BYTES`] of compressed bytes and one piece of plain
/// text, whatever the file's size. A file that turns out not to be deflate
/// data ends the stream with an `InvalidData` error and [`Inflater::failure`]
/// says why; the caller then stores it plainly.
pub struct Inflater<'f> {
    file: &'f File,
    size: u64,
    /// File offset of `window[0]`.
    win_at: u64,
    window: Vec<u8>,
    /// Next unconsumed file offset (at or after `win_at`).
    pos: u64,
    hasher: blake3::Hasher,
    framing: Option<Framing>,
    state: State,
    pieces: Vec<Piece>,
    verifier: Verifier,
    /// Checksums of the current stream's decompressed bytes, compared with
    /// its trailer: a damaged file that still parses as deflate is stored
    /// plainly.
    crc: crc32fast::Hasher,
    adler: adler2::Adler32,
    stream_len: u64,
    record: Record,
    out: Vec<u8>,
    out_at: usize,
    failure: Option<String>,
}

impl<'f> Inflater<'f> {
    pub fn new(file: &'f File, size: u64) -> Self {
        Inflater {
            file,
            size,
            win_at: 0,
            window: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            framing: None,
            state: State::Start,
            pieces: Vec::new(),
            verifier: Verifier::default(),
            crc: crc32fast::Hasher::new(),
            adler: adler2::Adler32::new(),
            stream_len: 0,
            record: Record {
                size,
                plain_len: 0,
                segments: Vec::new(),
            },
            out: Vec::new(),
            out_at: 0,
            failure: None,
        }
    }

    /// Why the file is not stored gzip-aware, once reading failed on it.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The record and the BLAKE3 of the file's first `size` bytes, once
    /// they were all read; or why the file is better stored plainly.
    pub fn finish(mut self) -> std::result::Result<(Record, [u8; 32]), NotDeflate> {
        if !matches!(self.state, State::Done) {
            return Err(NotDeflate("not read to its end".into()));
        }
        self.verifier.finish().map_err(NotDeflate)?;
        // Every byte up to the size was hashed as it was read; a file that
        // changed meanwhile is caught by the caller's stat comparison.
        let hash = *self.hasher.finalize().as_bytes();
        let record = std::mem::replace(
            &mut self.record,
            Record {
                size: 0,
                plain_len: 0,
                segments: Vec::new(),
            },
        );
        let len = record.encode().len();
        if len as u64 > self.size / RECORD_MAX_FRACTION || len > RECORD_MAX_BYTES {
            return Err(NotDeflate(format!(
                "its recreation data ({len} bytes) exceeds 1/{RECORD_MAX_FRACTION} of the file"
            )));
        }
        Ok((record, hash))
    }

    /// Make sure the window holds the file from `pos` up to `WINDOW_BYTES`
    /// on (or to the end of the file). Bytes are hashed as they are read,
    /// which is in file order.
    fn fill(&mut self) -> io::Result<()> {
        let consumed = (self.pos - self.win_at) as usize;
        self.window.drain(..consumed);
        self.win_at = self.pos;
        let want = (WINDOW_BYTES as u64).min(self.size - self.pos) as usize;
        while self.window.len() < want {
            let have = self.window.len();
            self.window.resize(want, 0);
            let n = self
                .file
                .read_at(&mut self.window[have..], self.win_at + have as u64)?;
            self.window.truncate(have + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            self.hasher.update(&self.window[have..]);
        }
        Ok(())
    }

    fn ahead(&self) -> &[u8] {
        &self.window[(self.pos - self.win_at) as usize..]
    }

    fn keep(&mut self, n: usize) {
        let pos = (self.pos - self.win_at) as usize;
        let bytes = self.window[pos..pos + n].to_vec();
        self.record.push_verbatim(&bytes);
        self.pos += n as u64;
    }

    /// One step: the next piece of decompressed bytes (possibly empty),
    /// or `None` at the end of the file.
    fn step(&mut self) -> std::result::Result<Option<Vec<u8>>, Fail> {
        self.fill()?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Ok(None),
            State::Start => {
                let ahead = self.ahead();
                let framing = match self.framing {
                    None => detect(ahead),
                    Some(Framing::Gzip) if ahead.starts_with(&[0x1f, 0x8b]) => Framing::Gzip,
                    Some(_) => {
                        self.state = State::Tail;
                        return Ok(Some(Vec::new()));
                    }
                };
                let header = match framing {
                    Framing::Gzip => gzip_header_len(ahead)?,
                    Framing::Zlib => 2,
                    Framing::Raw => 0,
                };
                self.framing = Some(framing);
                self.crc = crc32fast::Hasher::new();
                self.adler = adler2::Adler32::new();
                self.stream_len = 0;
                if header > 0 {
                    self.keep(header);
                }
                // The check that each piece recreates exactly runs on the
                // verifier's thread, beside the analysis of the next piece.
                let config = PreflateConfig {
                    max_chain_length: MAX_CHAIN,
                    plain_text_limit: PIECE_PLAIN_BYTES,
                    verify_compression: false,
                };
                self.verifier.send(Check::Stream)?;
                self.state = State::Stream(Box::new(PreflateStreamProcessor::new(&config)));
                Ok(Some(Vec::new()))
            }
            State::Stream(mut stream) => {
                let r = stream.decompress(self.ahead()).map_err(|e| {
                    let why = match e.exit_code() {
                        ExitCode::ShortRead => "the deflate stream is truncated".to_string(),
                        code => format!("deflate analysis failed ({code})"),
                    };
                    Fail::NotDeflate(why)
                })?;
                let packed = self.ahead()[..r.compressed_size].to_vec();
                self.pos += r.compressed_size as u64;
                let plain = stream.plain_text().text().to_vec();
                self.record.plain_len += plain.len() as u64;
                self.stream_len += plain.len() as u64;
                match self.framing {
                    Some(Framing::Gzip) => self.crc.update(&plain),
                    Some(Framing::Zlib) => self.adler.write_slice(&plain),
                    _ => {}
                }
                self.verifier.send(Check::Piece {
                    plain: plain.clone(),
                    corrections: r.corrections.clone(),
                    packed,
                })?;
                self.pieces.push(Piece {
                    plain_len: plain.len() as u32,
                    corrections: r.corrections,
                });
                if stream.is_done() {
                    let pieces = std::mem::take(&mut self.pieces);
                    self.record.segments.push(Segment::Deflate(pieces));
                    self.state = State::Trailer;
                } else {
                    if r.compressed_size == 0 {
                        return Err(Fail::NotDeflate(
                            "the deflate analysis made no progress".into(),
                        ));
                    }
                    stream.shrink_to_dictionary();
                    self.state = State::Stream(stream);
                }
                Ok(Some(plain))
            }
            State::Trailer => {
                let n = match self.framing {
                    Some(Framing::Gzip) => 8,
                    Some(Framing::Zlib) => 4,
                    _ => 0,
                };
                let trailer = self
                    .ahead()
                    .get(..n)
                    .ok_or_else(|| Fail::NotDeflate("the stream's trailer is cut short".into()))?;
                let intact = match self.framing {
                    Some(Framing::Gzip) => {
                        let mut want = self.crc.clone().finalize().to_le_bytes().to_vec();
                        want.extend((self.stream_len as u32).to_le_bytes());
                        trailer == want
                    }
                    Some(Framing::Zlib) => trailer == self.adler.checksum().to_be_bytes(),
                    _ => true,
                };
                if !intact {
                    return Err(Fail::NotDeflate(
                        "its checksum does not match its data: the file is damaged".into(),
                    ));
                }
                if n > 0 {
                    self.keep(n);
                }
                self.state = State::Start;
                Ok(Some(Vec::new()))
            }
            State::Tail => {
                let rest = self.size - self.pos;
                if rest > VERBATIM_MAX_BYTES as u64 {
                    return Err(Fail::NotDeflate(format!(
                        "{rest} bytes follow the compressed data"
                    )));
                }
                while self.pos < self.size {
                    let n = self.ahead().len();
                    self.keep(n);
                    self.fill()?;
                }
                Ok(None)
            }
        }
    }
}

/// What the verifier's thread checks, in order.
enum Check {
    /// A new deflate stream starts.
    Stream,
    /// A piece: recreated from its plain text and corrections, it must
    /// give exactly `packed`, the original deflate bytes.
    Piece {
        plain: Vec<u8>,
        corrections: Vec<u8>,
        packed: Vec<u8>,
    },
}

/// Recreates each analysed piece on a thread of its own, one piece behind
/// the analysis, so that the check costs the analysis no time where a core
/// is free. Started on the first stream; at most two pieces wait for it.
#[derive(Default)]
struct Verifier {
    tx: Option<std::sync::mpsc::SyncSender<Check>>,
    thread: Option<std::thread::JoinHandle<std::result::Result<(), String>>>,
}

impl Verifier {
    fn send(&mut self, check: Check) -> std::result::Result<(), Fail> {
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Check>(1);
            let thread = std::thread::Builder::new()
                .name("gzip-verify".into())
                .spawn(move || verify(rx))
                .map_err(Fail::Io)?;
            self.tx = Some(tx);
            self.thread = Some(thread);
        }
        if self.tx.as_ref().is_some_and(|tx| tx.send(check).is_ok()) {
            return Ok(());
        }
        // The verifier stopped: it found a piece that does not recreate.
        Err(Fail::NotDeflate(match self.finish() {
            Err(why) => why,
            Ok(()) => "the recreation check stopped".into(),
        }))
    }

    /// Wait for every piece sent to be checked.
    fn finish(&mut self) -> std::result::Result<(), String> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the recreation check panicked".into()),
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn verify(rx: std::sync::mpsc::Receiver<Check>) -> std::result::Result<(), String> {
    let mut re = None;
    for check in rx {
        match check {
            Check::Stream => re = Some(RecreateStreamProcessor::new()),
            Check::Piece {
                plain,
                corrections,
                packed,
            } => {
                let re = re.as_mut().ok_or("a piece before its stream")?;
                let (out, _) = re
                    .recompress(&mut &plain[..], &corrections)
                    .map_err(|e| format!("its recreation check failed ({})", e.exit_code()))?;
                if out != packed {
                    return Err("its recreation check gave other bytes".into());
                }
            }
        }
    }
    Ok(())
}

enum Fail {
    Io(io::Error),
    NotDeflate(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl Read for Inflater<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_at < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_at);
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                return Ok(n);
            }
            if self.failure.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not deflate data",
                ));
            }
            match self.step() {
                Ok(Some(out)) => {
                    self.out = out;
                    self.out_at = 0;
                }
                Ok(None) => {
                    self.state = State::Done;
                    return Ok(0);
                }
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::NotDeflate(why)) => {
                    self.failure = Some(why);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not deflate data",
                    ));
                }
            }
        }
    }
}

fn detect(head: &[u8]) -> Framing {
    if head.len() >= 3 && head[..3] == [0x1f, 0x8b, 8] {
        return Framing::Gzip;
    }
    if head.len() >= 2 {
        let (cmf, flg) = (head[0], head[1]);
        // CM 8 (deflate), a window of at most 32 KiB, the check bits, and
        // no preset dictionary.
        if cmf & 0x0f == 8
            && cmf >> 4 <= 7
            && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
            && flg & 0x20 == 0
        {
            return Framing::Zlib;
        }
    }
    Framing::Raw
}

/// Length of the gzip member header at the start of `h` (RFC 1952).
fn gzip_header_len(h: &[u8]) -> std::result::Result<usize, Fail> {
    let short = || Fail::NotDeflate("the gzip header is cut short".into());
    if h.len() < 10 || h[2] != 8 {
        return Err(Fail::NotDeflate("not a deflate gzip member".into()));
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(Fail::NotDeflate(
            "reserved gzip header flags are set".into(),
        ));
    }
    let mut p = 10usize;
    if flags & 4 != 0 {
        let xlen = h.get(p..p + 2).ok_or_else(short)?;
        p += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [8u8, 16] {
        if flags & flag != 0 {
            let end = h.get(p..).ok_or_else(short)?.iter().position(|&b| b == 0);
            p += end.ok_or_else(short)? + 1;
        }
    }
    if flags & 2 != 0 {
        p += 2;
    }
    if p > h.len() || p > VERBATIM_MAX_BYTES {
        return Err(short());
    }
    Ok(p)
}

/// Rebuild the original file from its record and its decompressed bytes.
/// `plain(buf, n)` must fill `buf` with the next `n` decompressed bytes;
/// `emit` receives the file's bytes in order. The caller checks the whole
/// file's BLAKE3 and length.
pub fn recreate(
    record: &Record,
    mut plain: impl FnMut(&mut Vec<u8>, usize) -> Result<()>,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let bad = |detail: String| Error::malformed("recreation record", detail);
    let mut buf = Vec::new();
    for s in &record.segments {
        match s {
            Segment::Verbatim(b) => emit(b)?,
            Segment::Deflate(pieces) => {
                let mut re = RecreateStreamProcessor::new();
                for p in pieces {
                    buf.clear();
                    plain(&mut buf, p.plain_len as usize)?;
                    let (out, _) = re.recompress(&mut &buf[..], &p.corrections).map_err(|e| {
                        bad(format!("deflate recreation failed ({})", e.exit_code()))
                    })?;
                    emit(&out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// `n` bytes of real text: this crate's sources, over and over.
    fn text(n: usize) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            for p in &names {
                out.extend(std::fs::read(p).unwrap());
            }
        }
        out.truncate(n);
        out
    }

    fn gzip(args: &[&str], data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip must be installed");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Analyse `bytes` as a file; recreate it from the output and record.
    fn round_trip(bytes: &[u8]) -> std::result::Result<(Vec<u8>, Record), String> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        let mut inf = Inflater::new(&f, bytes.len() as u64);
        let mut plain = Vec::new();
        if inf.read_to_end(&mut plain).is_err() {
            return Err(inf.failure().expect("a failure is said").to_string());
        }
        let (record, hash) = inf.finish().map_err(|e| e.0)?;
        assert_eq!(hash, *blake3::hash(bytes).as_bytes());
        assert_eq!(record.plain_len, plain.len() as u64);
        let record = Record::decode(&record.encode()).unwrap();
        let mut at = 0;
        let mut out = Vec::new();
        recreate(
            &record,
            |buf, n| {
                buf.extend_from_slice(&plain[at..at + n]);
                at += n;
                Ok(())
            },
            |b| {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(at, plain.len());
        Ok((out, record))
    }

    #[test]
    fn gzip_levels_recreate_exactly() {
        let data = text(3 << 20);
        for level in ["-1", "-6", "-9"] {
            let gz = gzip(&[level, "-c"], &data);
            let (out, record) = round_trip(&gz).unwrap();
            assert!(out == gz, "gzip {level} recreated differently");
            assert!(record.encode().len() < gz.len() / 20);
        }
    }

    #[test]
    fn several_members_and_a_tail_recreate_exactly() {
        let mut gz = gzip(&["-c"], &text(200_000));
        gz.extend(gzip(&["-9", "-c"], &text(100_000)));
        gz.extend_from_slice(&[0u8; 512]);
        let (out, record) = round_trip(&gz).unwrap();
        assert!(out == gz);
        let streams = record
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Deflate(_)))
            .count();
        assert_eq!(streams, 2);
    }

    #[test]
    fn truncated_corrupt_and_other_files_are_refused_with_a_reason() {
        let gz = gzip(&["-c"], &text(1 << 20));
        let cut = round_trip(&gz[..gz.len() / 2]).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
        let mut bad = gz.clone();
        for b in &mut bad[1000..1100] {
            *b ^= 0x5a;
        }
        assert!(round_trip(&bad).is_err());
        assert!(round_trip(&text(100_000)).is_err());
        assert!(round_trip(b"").is_err());
    }

    #[test]
    fn records_refuse_damage() {
        let gz = gzip(&["-c"], &text(100_000));
        let (_, record) = round_trip(&gz).unwrap();
        let enc = record.encode();
        assert!(Record::decode(&enc[..enc.len() - 1]).is_err());
        let mut more = enc.clone();
        more.push(0);
        assert!(Record::decode(&more).is_err());
        let mut lie = record.clone();
        lie.plain_len += 1;
        assert!(Record::decode(&lie.encode()).is_err());
    }
}
