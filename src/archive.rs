//! Member-aligned chunking of tar and cpio streams. A packed netboot image
//! (`rootimg.tar.gz`, `rootimg.cpio.gz`) is the image's directory tree
//! itself, in an archive. When its decompressed bytes are chunked as one
//! stream, a file's bytes share chunks with the headers and files around
//! it, so they never deduplicate against the same file in the tree, and an
//! order change in a re-pack shifts every boundary after it. [`Segments`]
//! cuts the stream at the start and end of every member whose data is at
//! least [`MEMBER_MIN_BYTES`], so that each such member is chunked exactly
//! as the file on its own is: same chunks, same ids, stored once, wherever
//! the member moves. Headers and small members between them are chunked as
//! usual. A stream that is neither archive, or an archive that stops
//! parsing, is one segment from there on. Nothing of this is recorded: the
//! chunks are an ordinary decompressed stream.

use std::io::{self, Read};

/// Members with at least this much data get chunk boundaries of their own.
pub const MEMBER_MIN_BYTES: u64 = 4 * 1024;

/// Bytes kept ahead of the reader to parse a header.
const LOOKAHEAD: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Unknown,
    Tar,
    Cpio,
    /// Not an archive, or it stopped parsing: no more boundaries.
    None,
}

/// A reader that ends (returns 0) at every boundary; [`Segments::next_segment`]
/// starts the next segment.
pub struct Segments<R> {
    inner: R,
    buf: Vec<u8>,
    at: usize,
    eof: bool,
    /// Stream offset of `buf[at]`.
    pos: u64,
    format: Format,
    /// Where the next header starts.
    header_at: u64,
    /// End of the current segment, when known.
    end: Option<u64>,
    /// The segment after the current one is a member's data, up to here.
    member: Option<(u64, u64)>,
}

impl<R: Read> Segments<R> {
    pub fn new(inner: R) -> Self {
        Segments {
            inner,
            buf: Vec::new(),
            at: 0,
            eof: false,
            pos: 0,
            format: Format::Unknown,
            header_at: 0,
            end: None,
            member: None,
        }
    }

    /// Start the next segment; false at the end of the stream.
    pub fn next_segment(&mut self) -> io::Result<bool> {
        self.fill(1)?;
        if self.at == self.buf.len() {
            return Ok(false);
        }
        self.end = None;
        if let Some((start, end)) = self.member.take()
            && start == self.pos
        {
            self.end = Some(end);
        }
        Ok(true)
    }

    /// At least `n` bytes ahead in `buf`, unless the stream ends first.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() - self.at >= n || self.eof {
            return Ok(());
        }
        self.buf.drain(..self.at);
        self.at = 0;
        let want = n.max(LOOKAHEAD);
        while self.buf.len() < want && !self.eof {
            let have = self.buf.len();
            self.buf.resize(want, 0);
            match self.inner.read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    self.eof = true;
                }
                Ok(k) => self.buf.truncate(have + k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(have),
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Parse the header at `pos` (== `header_at`): move `header_at` past
    /// its member, and when the member is large, end this segment at its
    /// data and make the data the next segment.
    fn header(&mut self) -> io::Result<()> {
        self.fill(512)?;
        let head = &self.buf[self.at..];
        if self.format == Format::Unknown {
            self.format = if head.len() >= 263 && &head[257..262] == b"ustar" {
                Format::Tar
            } else if head.len() >= 6 && (&head[..6] == b"070701" || &head[..6] == b"070702") {
                Format::Cpio
            } else {
                Format::None
            };
        }
        let parsed = match self.format {
            Format::Tar => tar_member(head),
            Format::Cpio => cpio_member(head),
            _ => None,
        };
        let Some((data_off, len, next, regular)) = parsed else {
            self.format = Format::None;
            return Ok(());
        };
        let start = self.pos + data_off;
        self.header_at = self.pos + next;
        if regular && len >= MEMBER_MIN_BYTES {
            self.end = Some(start);
            self.member = Some((start, start + len));
        }
        Ok(())
    }
}

impl<R: Read> Read for Segments<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.end == Some(self.pos) {
                return Ok(0);
            }
            let in_member = self.end.is_some() && self.member.is_none();
            if !in_member && self.pos == self.header_at && !matches!(self.format, Format::None) {
                self.header()?;
                continue;
            }
            self.fill(1)?;
            let ahead = self.buf.len() - self.at;
            if ahead == 0 {
                return Ok(0);
            }
            let mut n = out.len().min(ahead) as u64;
            for limit in [
                self.end,
                (!in_member && self.format != Format::None).then_some(self.header_at),
            ]
            .into_iter()
            .flatten()
            {
                if limit > self.pos {
                    n = n.min(limit - self.pos);
                }
            }
            let n = n as usize;
            out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256, for sizes of 8 GiB and more
        let mut v = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A tar header at the start of `h`: (data offset, data length, offset of
/// the next header, whether it is a regular file). None for the end of the
/// archive or anything that is not a valid header.
fn tar_member(h: &[u8]) -> Option<(u64, u64, u64, bool)> {
    let h = h.get(..512)?;
    let sum = octal(&h[148..156])?;
    let actual: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != actual {
        return None;
    }
    let size = octal(&h[124..136])?;
    let kind = h[156];
    // Links, directories and devices carry no data whatever the field says.
    let data = match kind {
        b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
        _ => size,
    };
    let regular = matches!(kind, b'0' | 0 | b'7');
    Some((512, data, 512 + data.div_ceil(512) * 512, regular))
}

/// A cpio "newc" header at the start of `h`, as [`tar_member`].
fn cpio_member(h: &[u8]) -> Option<(u64, u64, u64, bool)> {
    let h = h.get(..110)?;
    if &h[..6] != b"070701" && &h[..6] != b"070702" {
        return None;
    }
    let field = |i: usize| {
        let f = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).ok()?;
        u64::from_str_radix(f, 16).ok()
    };
    let mode = field(1)?;
    let size = field(6)?;
    let namesize = field(11)?;
    if namesize == 0 || namesize > 4096 {
        return None;
    }
    let data_off = (110 + namesize).div_ceil(4) * 4;
    // The trailer entry's name is "TRAILER!!!"; it is small and has no
    // data, and what follows it is padding: no more headers to parse.
    if namesize == 11 && size == 0 && mode == 0 {
        return None;
    }
    let regular = mode & 0o170000 == 0o100000;
    Some((data_off, size, (data_off + size).div_ceil(4) * 4, regular))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The segments of `data`, each as read.
    fn segments(data: &[u8]) -> Vec<Vec<u8>> {
        let mut s = Segments::new(data);
        let mut out = Vec::new();
        while s.next_segment().unwrap() {
            let mut seg = Vec::new();
            s.read_to_end(&mut seg).unwrap();
            out.push(seg);
        }
        out
    }

    fn archive(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(args.join(" "))
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        out.stdout
    }

    fn tree() -> (tempfile::TempDir, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let mut big = Vec::new();
        for (i, n) in [100_000usize, 17_000, 300, 1_000_000].iter().enumerate() {
            let data: Vec<u8> = (0..*n).map(|j| (j * 31 + i * 7) as u8).collect();
            std::fs::write(dir.path().join(format!("f{i}")), &data).unwrap();
            if *n as u64 >= MEMBER_MIN_BYTES {
                big.push(data);
            }
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("f0", dir.path().join("sub/link")).unwrap();
        (dir, big)
    }

    #[test]
    fn tar_and_cpio_members_are_segments_of_their_own() {
        let (dir, big) = tree();
        for args in [
            &["tar", "--sort=name", "-cf", "-", "."][..],
            &["tar", "--sort=name", "--format=posix", "-cf", "-", "."],
            &["find . | sort | cpio -o -H newc 2>/dev/null"],
        ] {
            let data = archive(args, dir.path());
            let segs = segments(&data);
            assert_eq!(segs.concat(), data, "{args:?}");
            for file in &big {
                assert!(segs.contains(file), "{args:?}: a member is not a segment");
            }
        }
    }

    #[test]
    fn other_streams_are_one_segment() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(segments(&data), vec![data.clone()]);
        assert!(segments(b"").is_empty());
        // A tar cut short, or damaged after its first member, is read whole.
        let (dir, _) = tree();
        let tar = archive(&["tar", "--sort=name", "-cf", "-", "."], dir.path());
        for cut in [&tar[..700], &tar[..tar.len() / 2]] {
            assert_eq!(segments(cut).concat(), cut);
        }
        let mut bad = tar.clone();
        bad[512 * 3 + 100] ^= 0xff;
        assert_eq!(segments(&bad).concat(), bad);
    }
}
