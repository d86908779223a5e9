//! Throughput of the per-chunk work of a snapshot, on one core: FastCDC cut
//! points (`hamn::chunk::chunk_stream`), BLAKE3 chunk ids
//! (`hamn::id::ChunkId::of`), zstd-or-raw encoding (`hamn::chunk::encode`),
//! and the three together as `BlobWriter::add` does them (no store I/O);
//! also the anchors a push computes to choose a delta's base chunks
//! (`hamn::chunk::anchors`).
//!
//! Input: 32 MiB of seeded, deterministic data, a mix of text-like (config
//! and doc lines), code-like (skewed bytes with repeats) and random
//! (already-compressed) segments, so every run and every machine sees the
//! same bytes.
//!
//! Run it:
//!
//! ```text
//! cargo bench --bench chunk_pipeline
//! ```
//!
//! Compare a change against a baseline:
//!
//! ```text
//! git stash            # or check out the commit to compare against
//! cargo bench --bench chunk_pipeline -- --save-baseline before
//! git stash pop
//! cargo bench --bench chunk_pipeline -- --baseline before
//! ```
//!
//! Criterion then prints the throughput change of each benchmark against
//! `before` (stored under target/criterion/). Sample counts are kept small
//! (10 samples of a 32 MiB pass each) so the whole bench runs in well under
//! two minutes on two cores; pass `--measurement-time 20` for tighter
//! numbers. `tests`-style use: `cargo bench --bench chunk_pipeline -- --test`
//! runs every benchmark once.
//!
//! The end-to-end snapshot benchmark (against restic, on a generated
//! /install-like tree) is `benches/snapshot.sh`.

use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

use hamn::chunk;
use hamn::id::ChunkId;

const DATA_BYTES: usize = 32 * 1024 * 1024;
const SEGMENT_BYTES: usize = 256 * 1024;
const SEED: u64 = 0x6861_6d6e; // "hamn"

/// Text-like bytes: lines of words from a small seeded vocabulary.
fn text_segment(rng: &mut fastrand::Rng, words: &[Vec<u8>], out: &mut Vec<u8>, n: usize) {
    let end = out.len() + n;
    while out.len() < end {
        match rng.u8(0..4) {
            0 => out.extend_from_slice(b"# "),
            1 => out.extend_from_slice(b"    "),
            _ => {}
        }
        for i in 0..rng.usize(2..12) {
            if i > 0 {
                out.push(if rng.u8(0..6) == 0 { b'=' } else { b' ' });
            }
            out.extend_from_slice(&words[rng.usize(..words.len())]);
        }
        out.push(b'\n');
    }
    out.truncate(end);
}

/// Code-like bytes: a skewed byte distribution with repeated snippets,
/// compressing about 2.5x with zstd, like machine code.
fn code_segment(rng: &mut fastrand::Rng, snippets: &[Vec<u8>], out: &mut Vec<u8>, n: usize) {
    let end = out.len() + n;
    while out.len() < end {
        if rng.bool() {
            for _ in 0..rng.usize(8..64) {
                out.extend_from_slice(&snippets[rng.usize(..snippets.len())]);
            }
        } else {
            for _ in 0..rng.usize(64..1024) {
                out.push(skewed_byte(rng));
            }
        }
    }
    out.truncate(end);
}

fn skewed_byte(rng: &mut fastrand::Rng) -> u8 {
    match rng.u8(..) {
        0..=89 => 0,
        90..=99 => 0xff,
        // A few dozen common values, then anything.
        100..=243 => 0x40 + rng.u8(0..48),
        _ => rng.u8(..),
    }
}

/// 32 MiB: 45% text-like, 30% code-like, 25% random, in 256 KiB segments
/// of seeded order (so chunks see the mix, not long uniform runs).
fn test_data() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let words: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            (0..rng.usize(2..10))
                .map(|_| rng.lowercase() as u8)
                .collect()
        })
        .collect();
    let snippets: Vec<Vec<u8>> = (0..2048)
        .map(|_| {
            (0..rng.usize(4..40))
                .map(|_| skewed_byte(&mut rng))
                .collect()
        })
        .collect();
    let mut data = Vec::with_capacity(DATA_BYTES);
    while data.len() < DATA_BYTES {
        let n = SEGMENT_BYTES.min(DATA_BYTES - data.len());
        match rng.u8(0..20) {
            0..=8 => text_segment(&mut rng, &words, &mut data, n),
            9..=14 => code_segment(&mut rng, &snippets, &mut data, n),
            _ => data.extend((0..n).map(|_| rng.u8(..))),
        }
    }
    data
}

/// The chunk boundaries `chunk_stream` finds in `data`.
fn chunk_ranges(data: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut buf = Vec::new();
    let mut pos = 0;
    chunk::chunk_stream(data, &mut buf, |c| {
        ranges.push(pos..pos + c.len());
        pos += c.len();
        Ok(())
    })
    .expect("reading from memory cannot fail")
    .expect("the callback never fails");
    assert_eq!(pos, data.len());
    ranges
}

fn benches(c: &mut Criterion) {
    let data = test_data();
    let ranges = chunk_ranges(&data);
    let stored: usize = ranges
        .iter()
        .map(|r| chunk::encode(&data[r.clone()]).1.len())
        .sum();
    eprintln!(
        "chunk_pipeline: {} MiB in {} chunks (mean {} KiB), zstd-or-raw stores {:.1}%",
        data.len() >> 20,
        ranges.len(),
        data.len() / ranges.len() / 1024,
        100.0 * stored as f64 / data.len() as f64
    );

    let mut g = c.benchmark_group("chunk_pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));

    let mut buf = Vec::new();
    g.bench_function("fastcdc_chunk", |b| {
        b.iter(|| {
            let mut n = 0usize;
            chunk::chunk_stream(black_box(&data[..]), &mut buf, |c| {
                n += c.len();
                Ok(())
            })
            .unwrap()
            .unwrap();
            black_box(n)
        })
    });

    g.bench_function("blake3_hash", |b| {
        b.iter(|| {
            for r in &ranges {
                black_box(ChunkId::of(black_box(&data[r.clone()])));
            }
        })
    });

    // The push's delta base choice: anchors of each chunk sent as a delta
    // and of each old chunk it may be compressed against.
    g.bench_function("anchors", |b| {
        b.iter(|| {
            for r in &ranges {
                black_box(chunk::anchors(black_box(&data[r.clone()])));
            }
        })
    });

    g.bench_function("zstd_encode", |b| {
        b.iter(|| {
            for r in &ranges {
                black_box(chunk::encode(black_box(&data[r.clone()])));
            }
        })
    });

    g.bench_function("chunk_hash_encode", |b| {
        b.iter(|| {
            let mut stored = 0usize;
            chunk::chunk_stream(black_box(&data[..]), &mut buf, |c| {
                black_box(ChunkId::of(c));
                stored += chunk::encode(c).1.len();
                Ok(())
            })
            .unwrap()
            .unwrap();
            black_box(stored)
        })
    });

    g.finish();
}

criterion_group!(chunk_pipeline, benches);
criterion_main!(chunk_pipeline);
