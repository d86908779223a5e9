//! Content chunking, hashing and compression: FastCDC cut points, BLAKE3 ids,
//! zstd (or raw when that is smaller). This module owns the size limits that
//! bound every decompression; it never touches the store.

use std::cell::RefCell;
use std::io::Read;

use crate::error::{Error, Result};
use crate::id::BlobKind;

/// FastCDC bounds (see docs/format.md for how they were chosen).
pub const CHUNK_MIN_BYTES: usize = 128 * 1024;
pub const CHUNK_AVG_BYTES: usize = 512 * 1024;
pub const CHUNK_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Largest encoded tree accepted: a directory of ~200k entries.
pub const TREE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// zstd level used for new blobs: level 1 compresses 1.7x faster than 3
/// for 0.8% more stored bytes on a management node's data (mostly
/// packages and compressed images); docs/performance.md section 7.
pub const ZSTD_LEVEL: i32 = 1;

/// How a blob's stored bytes encode its plain bytes.
pub const ENCODING_RAW: u8 = 0;
pub const ENCODING_ZSTD: u8 = 1;

pub fn max_plain_len(kind: BlobKind) -> usize {
    match kind {
        BlobKind::Chunk => CHUNK_MAX_BYTES,
        BlobKind::Tree => TREE_MAX_BYTES,
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compress `plain` with zstd; keep it raw when compression does not pay.
/// Returns (encoding, stored bytes).
pub fn encode(plain: &[u8]) -> (u8, Vec<u8>) {
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        c.as_mut().and_then(|c| c.compress(plain).ok())
    });
    match compressed {
        Some(z) if z.len() < plain.len() => (ENCODING_ZSTD, z),
        _ => (ENCODING_RAW, plain.to_vec()),
    }
}

/// Turn stored bytes back into plain bytes, never allocating more than the
/// declared plain length, which is itself bounded by the kind's maximum.
pub fn decode(kind: BlobKind, encoding: u8, stored: &[u8], plain_len: u32) -> Result<Vec<u8>> {
    let plain_len = plain_len as usize;
    if plain_len > max_plain_len(kind) {
        return Err(Error::malformed(
            "blob",
            format!(
                "declared size {plain_len} exceeds the {} limit",
                kind.name()
            ),
        ));
    }
    let out = match encoding {
        ENCODING_RAW => stored.to_vec(),
        ENCODING_ZSTD => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                match d.as_mut() {
                    Some(d) => d.decompress(stored, plain_len),
                    None => zstd::bulk::decompress(stored, plain_len),
                }
            })
            .map_err(|e| Error::malformed("blob", format!("zstd: {e}")))?,
        other => {
            return Err(Error::malformed(
                "blob",
                format!("unknown encoding {other}"),
            ));
        }
    };
    if out.len() != plain_len {
        return Err(Error::malformed(
            "blob",
            format!("decoded {} bytes, expected {plain_len}", out.len()),
        ));
    }
    Ok(out)
}

/// Most base chunks one delta may name, and their largest total size.
pub const DELTA_BASES_MAX: usize = 16;
pub const DELTA_BASE_MAX_BYTES: usize = 6 * 1024 * 1024;
/// zstd level of a delta.
const DELTA_ZSTD_LEVEL: i32 = 1;
/// zstd window of a delta: the bases and the chunk (8 MiB).
const DELTA_WINDOW_LOG: u32 = 23;

/// Compress chunk `plain` against `base`, the plain bytes of chunks the
/// peer already holds, concatenated: zstd with `base` as a raw prefix, so
/// every stretch the chunk shares with them is sent as a reference. Used
/// for a changed file whose old version the peer has (a re-packed image,
/// an edited config file). None when zstd fails (send the chunk as is).
pub fn delta_encode(plain: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    if base.len() > DELTA_BASE_MAX_BYTES || plain.len() > CHUNK_MAX_BYTES {
        return None;
    }
    let mut c = CCtx::try_create()?;
    // Level 1: the long-distance matches carry a delta; a higher level
    // costs half as much time again for the same size (measured on a
    // re-packed netboot image, docs/performance.md).
    c.set_parameter(CParameter::CompressionLevel(DELTA_ZSTD_LEVEL))
        .ok()?;
    c.set_parameter(CParameter::WindowLog(DELTA_WINDOW_LOG))
        .ok()?;
    // The level's match finder indexes only the last MiB of a prefix;
    // long-distance matching finds the base's stretches anywhere in it
    // (as `zstd --patch-from` does).
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .ok()?;
    c.ref_prefix(base).ok()?;
    let mut out = Vec::with_capacity(zstd::compress_bound(plain.len()));
    c.compress2(&mut out, plain).ok()?;
    Some(out)
}

/// Undo `delta_encode`: the chunk's plain bytes, never more than
/// `plain_len`, itself bounded by the largest chunk. The caller checks
/// them against the chunk's id.
pub fn delta_decode(delta: &[u8], base: &[u8], plain_len: u32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let plain_len = plain_len as usize;
    if plain_len > CHUNK_MAX_BYTES || base.len() > DELTA_BASE_MAX_BYTES {
        return Err(Error::malformed(
            "delta",
            format!(
                "chunk of {plain_len} bytes or base of {} bytes is over the limit",
                base.len()
            ),
        ));
    }
    let zstd_err = |e: usize| {
        Error::malformed(
            "delta",
            format!("zstd: {}", zstd::zstd_safe::get_error_name(e)),
        )
    };
    let mut d = DCtx::try_create()
        .ok_or_else(|| Error::Other("zstd: cannot allocate a decompression context".into()))?;
    d.set_parameter(DParameter::WindowLogMax(DELTA_WINDOW_LOG))
        .map_err(zstd_err)?;
    d.ref_prefix(base).map_err(zstd_err)?;
    let mut out = Vec::with_capacity(plain_len);
    d.decompress(&mut out, delta).map_err(zstd_err)?;
    if out.len() != plain_len {
        return Err(Error::malformed(
            "delta",
            format!("decoded {} bytes, expected {plain_len}", out.len()),
        ));
    }
    Ok(out)
}

/// One anchor in about this many bytes (a power of two).
const ANCHOR_SPACING: u64 = 2048;
/// Most anchors kept for one chunk: the smallest values, a sample that
/// does not depend on where in the chunk they lie (a chunk of repetitive
/// bytes could otherwise yield one per byte).
const ANCHORS_MAX: usize = 4096;

/// 256 pseudo-random words for the anchors' rolling hash (splitmix64).
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Content-defined fingerprints of `data`, sorted and distinct: the
/// rolling hash of the 64 bytes before each position where its top bits
/// are zero (bit k of this hash depends on the last k+1 bytes only, so
/// the top bits are the ones that depend on all 64), about one per
/// `ANCHOR_SPACING` bytes. Two byte strings sharing a stretch of a few KiB
/// most likely share an anchor wherever the stretch lies in each, so the
/// anchors tell, at a fraction of a delta's cost, which old chunks a new
/// chunk copies from (a delta's base then holds only those).
pub fn anchors(data: &[u8]) -> Vec<u64> {
    // The hash at position i covers data[i - 63..=i] alone, so the
    // positions are split into LANES runs hashed side by side (each lane
    // warmed with the 63 bytes before its run): independent chains that
    // the CPU overlaps, where one chain waits on each shift and add. The
    // result is the same set as one pass: the smallest ANCHORS_MAX of
    // all, however they are gathered.
    const LANES: usize = 4;
    const WARM: usize = 63;
    let shift = 64 - ANCHOR_SPACING.trailing_zeros();
    let mut out = Vec::new();
    if data.len() <= WARM {
        return out;
    }
    let step = |h: u64, b: u8| (h << 1).wrapping_add(GEAR[b as usize]);
    let per = (data.len() - WARM) / LANES;
    let start = |j: usize| WARM + j * per;
    let mut h = [0u64; LANES];
    for (j, hj) in h.iter_mut().enumerate() {
        *hj = data[start(j) - WARM..start(j)]
            .iter()
            .fold(0, |h, &b| step(h, b));
    }
    let keep = |v: u64, out: &mut Vec<u64>| {
        if v >> shift == 0 {
            out.push(v);
            if out.len() >= 4 * ANCHORS_MAX {
                keep_smallest(out);
            }
        }
    };
    let lane = |j: usize| &data[start(j)..start(j) + per];
    for (((&b0, &b1), &b2), &b3) in lane(0).iter().zip(lane(1)).zip(lane(2)).zip(lane(3)) {
        h[0] = step(h[0], b0);
        h[1] = step(h[1], b1);
        h[2] = step(h[2], b2);
        h[3] = step(h[3], b3);
        for v in h {
            keep(v, &mut out);
        }
    }
    // The positions after the last lane's run continue its chain.
    let mut last = h[LANES - 1];
    for &b in &data[start(LANES)..] {
        last = step(last, b);
        keep(last, &mut out);
    }
    keep_smallest(&mut out);
    out
}

/// Sort, drop repeats, keep the `ANCHORS_MAX` smallest.
fn keep_smallest(v: &mut Vec<u64>) {
    v.sort_unstable();
    v.dedup();
    v.truncate(ANCHORS_MAX);
}

/// How many of the sorted `a` also occur in the sorted `b`.
pub fn shared_anchors(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Cut a byte stream into content-defined chunks, calling `each` with every
/// chunk's plain bytes in order. Uses one buffer of `CHUNK_MAX_BYTES` per
/// call, so memory does not depend on the stream's length.
pub fn chunk_stream<R: Read>(
    mut reader: R,
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> std::io::Result<Result<()>> {
    buf.resize(CHUNK_MAX_BYTES, 0);
    let mut len = 0usize;
    let mut eof = false;
    loop {
        while !eof && len < buf.len() {
            match reader.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            return Ok(Ok(()));
        }
        let cut = if len <= CHUNK_MIN_BYTES {
            len
        } else {
            let cdc = fastcdc::v2020::FastCDC::new(
                &buf[..len],
                CHUNK_MIN_BYTES,
                CHUNK_AVG_BYTES,
                CHUNK_MAX_BYTES,
            );
            let (_, end) = cdc.cut(0, len);
            if end == 0 { len } else { end }
        };
        if let Err(e) = each(&buf[..cut]) {
            return Ok(Err(e));
        }
        buf.copy_within(cut..len, 0);
        len -= cut;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    fn cuts(data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        chunk_stream(data, &mut buf, |c| {
            out.push(c.len());
            Ok(())
        })
        .unwrap()
        .unwrap();
        out
    }

    #[test]
    fn chunks_cover_the_stream_within_bounds() {
        let data = pseudo_random(9 * 1024 * 1024 + 17, 1);
        let sizes = cuts(&data);
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        assert!(sizes.len() > 4);
        for s in &sizes[..sizes.len() - 1] {
            assert!((CHUNK_MIN_BYTES..=CHUNK_MAX_BYTES).contains(s), "{s}");
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_cut_points() {
        let data = pseudo_random(8 * 1024 * 1024, 2);
        let mut edited = data.clone();
        edited.splice(3_000_000..3_000_000, [7u8; 100]);
        let a = cuts(&data);
        let b = cuts(&edited);
        let ends = |v: &[usize]| -> Vec<usize> {
            v.iter()
                .scan(0, |acc, s| {
                    *acc += s;
                    Some(*acc)
                })
                .collect()
        };
        let (ea, eb) = (ends(&a), ends(&b));
        let shared_tail = ea
            .iter()
            .filter(|e| **e > 3_100_000 && eb.contains(&(**e + 100)))
            .count();
        assert!(
            shared_tail
                >= ea
                    .iter()
                    .filter(|e| **e > 3_100_000 + CHUNK_MAX_BYTES)
                    .count()
        );
    }

    /// One rolling hash over all of `data`, position by position: what
    /// `anchors` must equal.
    fn anchors_one_pass(data: &[u8]) -> Vec<u64> {
        let shift = 64 - ANCHOR_SPACING.trailing_zeros();
        let mut h = 0u64;
        let mut out = Vec::new();
        for (i, &b) in data.iter().enumerate() {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if i >= 63 && h >> shift == 0 {
                out.push(h);
            }
        }
        keep_smallest(&mut out);
        out
    }

    #[test]
    fn anchors_in_lanes_equal_one_pass_over_the_data() {
        let big = pseudo_random(CHUNK_MAX_BYTES * 5 + 3, 9);
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {} of a config file\n", i % 977).into_bytes())
            .collect();
        for len in [0, 1, 62, 63, 64, 65, 66, 67, 68, 127, 4096, 65_537, 1 << 20] {
            let d = &big[..len];
            assert_eq!(anchors(d), anchors_one_pass(d), "len {len}");
            assert_eq!(
                anchors(&text[..len.min(text.len())]),
                anchors_one_pass(&text[..len.min(text.len())])
            );
        }
        // More anchors than are kept: the same smallest ones.
        assert_eq!(anchors(&big), anchors_one_pass(&big));
        assert_eq!(anchors(&big).len(), ANCHORS_MAX);
        for cut in [1usize, 2, 3, 5, 4097] {
            let d = &big[cut..CHUNK_MAX_BYTES + cut * 7];
            assert_eq!(anchors(d), anchors_one_pass(d), "cut {cut}");
        }
    }

    #[test]
    fn anchors_find_a_shared_stretch_wherever_it_lies() {
        let stretch = pseudo_random(16 * 1024, 3);
        let mut old = pseudo_random(512 * 1024, 4);
        let mut new = pseudo_random(512 * 1024, 5);
        old.splice(100_000..100_000, stretch.iter().copied());
        new.splice(400_123..400_123, stretch.iter().copied());
        let (a, b) = (anchors(&old), anchors(&new));
        // About one anchor per ANCHOR_SPACING bytes, sorted and distinct.
        let expected = old.len() / ANCHOR_SPACING as usize;
        assert!(
            a.len() > expected / 2 && a.len() < expected * 2,
            "{}",
            a.len()
        );
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(shared_anchors(&a, &b) >= 2, "{}", shared_anchors(&a, &b));
        let unrelated = anchors(&pseudo_random(512 * 1024, 6));
        assert_eq!(shared_anchors(&b, &unrelated), 0);
        // Repetitive bytes give few anchors, not one per byte.
        assert!(anchors(&vec![0u8; CHUNK_MAX_BYTES]).len() <= 1);
        let pattern: Vec<u8> = (0..CHUNK_MAX_BYTES).map(|i| (i % 251) as u8).collect();
        assert!(anchors(&pattern).len() <= 251);
        assert!(anchors(&old[..63]).is_empty());
        // However many anchors a chunk has, at most ANCHORS_MAX are kept:
        // the smallest values, wherever they lie.
        let big = pseudo_random(CHUNK_MAX_BYTES * 8, 7);
        let all = anchors(&big);
        assert_eq!(all.len(), ANCHORS_MAX);
        let tail = anchors(&big[CHUNK_MAX_BYTES * 4..]);
        assert!(shared_anchors(&all, &tail) > ANCHORS_MAX / 4);
    }

    #[test]
    fn decode_refuses_oversized_and_mismatched_blobs() {
        let plain = vec![0u8; 4096];
        let (enc, stored) = encode(&plain);
        assert_eq!(enc, ENCODING_ZSTD);
        assert_eq!(decode(BlobKind::Chunk, enc, &stored, 4096).unwrap(), plain);
        assert!(decode(BlobKind::Chunk, enc, &stored, 4095).is_err());
        let too_big = (CHUNK_MAX_BYTES + 1) as u32;
        assert!(decode(BlobKind::Chunk, enc, &stored, too_big).is_err());
        let random = pseudo_random(1000, 3);
        let (enc, stored) = encode(&random);
        assert_eq!(enc, ENCODING_RAW);
        assert_eq!(stored, random);
    }

    #[test]
    fn a_delta_sends_what_the_base_lacks_and_only_decodes_with_it() {
        // Incompressible data with small edits spread through it, shifted
        // by an insertion: nothing a chunk-level dedup would find.
        let old = pseudo_random(1 << 20, 7);
        let mut new = old[..300_000].to_vec();
        new.extend_from_slice(b"inserted");
        new.extend_from_slice(&old[300_000..]);
        for i in (0..new.len()).step_by(40_000) {
            new[i] ^= 0x5a;
        }
        let delta = delta_encode(&new, &old).unwrap();
        assert!(delta.len() < new.len() / 20, "{} bytes", delta.len());
        // The shared stretch far from the end of a larger base is found
        // too (the match finder alone sees only the base's last MiB).
        let mut far = old.clone();
        far.extend(pseudo_random(3 << 20, 9));
        let d = delta_encode(&new, &far).unwrap();
        assert!(d.len() < new.len() / 20, "{} bytes", d.len());
        assert_eq!(delta_decode(&d, &far, new.len() as u32).unwrap(), new);
        let len = new.len() as u32;
        assert_eq!(delta_decode(&delta, &old, len).unwrap(), new);
        // Another base gives other bytes (or an error): the receiver's id
        // check catches it.
        let other = pseudo_random(1 << 20, 8);
        assert!(
            delta_decode(&delta, &other, len).is_ok_and(|p| p != new)
                || delta_decode(&delta, &other, len).is_err()
        );
        // A declared length that is short, or over the chunk limit, fails.
        assert!(delta_decode(&delta, &old, len - 1).is_err());
        assert!(delta_decode(&delta, &old, (CHUNK_MAX_BYTES + 1) as u32).is_err());
        // A frame that inflates past the largest chunk is refused.
        let zeros = vec![0u8; CHUNK_MAX_BYTES + 4096];
        let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(delta_decode(&bomb, &old, CHUNK_MAX_BYTES as u32).is_err());
        assert!(delta_decode(b"garbage", &old, 10).is_err());
    }
}
