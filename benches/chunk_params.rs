//! Chunking and compression parameters, measured on a generated xCAT
//! /install-like tree: FastCDC (v2020, normalization level 1, as
//! `hamn::chunk::chunk_stream` uses it) with min/avg/max of 64K/256K/1M,
//! 128K/512K/2M (hamn's `CHUNK_*_BYTES`) and 256K/1M/4M, and zstd levels 1
//! (hamn's `ZSTD_LEVEL`), 3 and 6, each chunk compressed on its own and kept
//! raw when that is smaller, as `hamn::chunk::encode` does. It uses the
//! `fastcdc`, `blake3` and `zstd` crates directly, so candidates are
//! measured without changing hamn. One smaller setting, 16K/64K/256K, is
//! measured too, to show what finer chunks would recover of a re-packed
//! gzip image.
//!
//! For each FastCDC setting, one core:
//!
//! * the base tree: every regular file (hard links once) is read into memory
//!   (not timed), cut, each chunk hashed with BLAKE3, and each chunk not seen
//!   before compressed at each zstd level. Reported: cut and hash throughput,
//!   zstd throughput per level (over the plain bytes it compressed), the
//!   one-core pipeline throughput (plain bytes / (cut + hash + zstd time)),
//!   chunk counts, and the dedup+compression ratio (plain bytes / stored
//!   bytes);
//! * the night's tree (`gen_tree.py --mutate`): only the files a snapshot
//!   reads (new, or size or mtime changed), cut and hashed against the base
//!   tree's chunks; reported: the new bytes a snapshot stores and a push
//!   sends, split into the re-packed rootimg.cpio.gz, the packages (*.rpm)
//!   and the other changed files, each with how much of it deduplicated.
//!
//! Run it on trees made by benches/gen_tree.py (benches/chunk_params.sh does
//! all of it: `bash benches/chunk_params.sh`, `SMALL=1` for ~100 MB):
//!
//! ```text
//! python3 benches/gen_tree.py /tmp/p/base --seed 1
//! cp -a /tmp/p/base /tmp/p/night && python3 benches/gen_tree.py /tmp/p/night --mutate 1 --seed 1
//! HAMN_PARAMS_BASE=/tmp/p/base HAMN_PARAMS_NIGHT=/tmp/p/night cargo bench --bench chunk_params
//! ```
//!
//! `HAMN_PARAMS_OUT=FILE` also writes the tables to FILE. Without
//! HAMN_PARAMS_BASE the bench says so and exits 0 (so `cargo bench` as a
//! whole still runs).
//!
//! Comparing against a baseline: the trees depend only on gen_tree.py's
//! arguments and the figures on the crates' versions (Cargo.lock), so run it
//! on both commits with the same trees and compare the tables.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Cdc {
    label: &'static str,
    min: usize,
    avg: usize,
    max: usize,
}

const K: usize = 1024;
const CDCS: [Cdc; 4] = [
    Cdc {
        label: "16K/64K/256K (extra)",
        min: 16 * K,
        avg: 64 * K,
        max: 256 * K,
    },
    Cdc {
        label: "64K/256K/1M",
        min: 64 * K,
        avg: 256 * K,
        max: 1024 * K,
    },
    Cdc {
        label: "128K/512K/2M (hamn)",
        min: 128 * K,
        avg: 512 * K,
        max: 2048 * K,
    },
    Cdc {
        label: "256K/1M/4M",
        min: 256 * K,
        avg: 1024 * K,
        max: 4096 * K,
    },
];
const LEVELS: [i32; 3] = [1, 3, 6];

#[derive(Clone)]
struct FileInfo {
    rel: PathBuf,
    size: u64,
    mtime: (i64, i64),
}

/// Regular files below `top`, sorted by path, each hard-linked inode once.
fn list_files(top: &Path) -> Vec<FileInfo> {
    fn rec(top: &Path, rel: &Path, seen: &mut HashSet<(u64, u64)>, out: &mut Vec<FileInfo>) {
        let dir = top.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("read_dir").file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let m = fs::symlink_metadata(top.join(&r)).expect("lstat");
            if m.is_dir() {
                rec(top, &r, seen, out);
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                out.push(FileInfo {
                    rel: r,
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                });
            }
        }
    }
    let mut out = Vec::new();
    rec(top, Path::new(""), &mut HashSet::new(), &mut out);
    out
}

#[derive(Default, Clone, Copy)]
struct Part {
    size: u64,
    new_plain: u64,
}

#[derive(Default)]
struct Pass {
    files: u64,
    plain: u64,
    chunks: u64,
    new_chunks: u64,
    new_plain: u64,
    new_stored: [u64; 3],
    t_cut: Duration,
    t_hash: Duration,
    t_zstd: [Duration; 3],
    cpio: Part,
    rpm: Part,
    other: Part,
}

struct Chunker {
    index: HashSet<[u8; 32]>,
    zstd: Vec<zstd::bulk::Compressor<'static>>,
}

impl Chunker {
    fn file(&mut self, cdc: &Cdc, data: &[u8], pass: &mut Pass) -> u64 {
        let t = Instant::now();
        let cuts: Vec<(usize, usize)> = if data.len() <= cdc.min {
            vec![(0, data.len())]
        } else {
            fastcdc::v2020::FastCDC::new(data, cdc.min, cdc.avg, cdc.max)
                .map(|c| (c.offset, c.length))
                .collect()
        };
        pass.t_cut += t.elapsed();
        let mut new_plain = 0;
        for (off, len) in cuts {
            let chunk = &data[off..off + len];
            let t = Instant::now();
            let id = *blake3::hash(chunk).as_bytes();
            pass.t_hash += t.elapsed();
            pass.chunks += 1;
            if !self.index.insert(id) {
                continue;
            }
            pass.new_chunks += 1;
            pass.new_plain += len as u64;
            new_plain += len as u64;
            for (i, c) in self.zstd.iter_mut().enumerate() {
                let t = Instant::now();
                let z = c.compress(chunk).expect("zstd");
                pass.t_zstd[i] += t.elapsed();
                pass.new_stored[i] += z.len().min(len) as u64;
            }
        }
        pass.files += 1;
        pass.plain += data.len() as u64;
        new_plain
    }
}

fn mb_s(bytes: u64, d: Duration) -> String {
    if d.is_zero() {
        return "-".into();
    }
    format!("{:.0}", bytes as f64 / d.as_secs_f64() / 1e6)
}

fn mib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.2} GiB", b as f64 / (1 << 30) as f64)
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * a as f64 / b as f64)
    }
}

fn main() {
    let Some(base) = std::env::var_os("HAMN_PARAMS_BASE").map(PathBuf::from) else {
        eprintln!(
            "chunk_params: set HAMN_PARAMS_BASE (and HAMN_PARAMS_NIGHT) to trees made by benches/gen_tree.py, \
             or run benches/chunk_params.sh; nothing measured"
        );
        return;
    };
    let night = std::env::var_os("HAMN_PARAMS_NIGHT").map(PathBuf::from);
    let base_files = list_files(&base);
    let base_meta: HashMap<PathBuf, FileInfo> = base_files
        .iter()
        .map(|f| (f.rel.clone(), f.clone()))
        .collect();
    let night_files: Vec<FileInfo> = night
        .as_ref()
        .map(|n| {
            list_files(n)
                .into_iter()
                .filter(|f| {
                    base_meta
                        .get(&f.rel)
                        .is_none_or(|b| b.size != f.size || b.mtime != f.mtime)
                })
                .collect()
        })
        .unwrap_or_default();

    let mut t1 = vec![
        "| FastCDC min/avg/max | chunks (unique) | mean chunk of files > max | cut MB/s | BLAKE3 MB/s | zstd level | zstd MB/s | one-core pipeline MB/s | stored | dedup+compression ratio |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    let mut t2 = vec![
        "| FastCDC min/avg/max | files read | bytes read | new plain (deduplicated away) | new stored z1 / z3 / z6 | rootimg.cpio.gz: size, new | packages: size, new | other changed files: size, new |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    for cdc in &CDCS {
        eprintln!("chunk_params: FastCDC {}", cdc.label);
        let mut ch = Chunker {
            index: HashSet::new(),
            zstd: LEVELS
                .iter()
                .map(|l| zstd::bulk::Compressor::new(*l).expect("zstd"))
                .collect(),
        };
        let mut p = Pass::default();
        let (mut big_bytes, mut big_chunks) = (0u64, 0u64);
        for f in &base_files {
            let data = fs::read(base.join(&f.rel)).expect("read");
            let before = p.chunks;
            ch.file(cdc, &data, &mut p);
            if data.len() > cdc.max {
                big_bytes += data.len() as u64;
                big_chunks += p.chunks - before;
            }
        }
        for (i, level) in LEVELS.iter().enumerate() {
            let total = p.t_cut + p.t_hash + p.t_zstd[i];
            t1.push(format!(
                "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                cdc.label,
                p.chunks,
                p.new_chunks,
                mib(big_bytes / big_chunks.max(1)),
                mb_s(p.plain, p.t_cut),
                mb_s(p.plain, p.t_hash),
                level,
                mb_s(p.new_plain, p.t_zstd[i]),
                mb_s(p.plain, total),
                mib(p.new_stored[i]),
                p.plain as f64 / p.new_stored[i] as f64
            ));
        }
        if let Some(n) = &night {
            let mut q = Pass::default();
            for f in &night_files {
                let data = fs::read(n.join(&f.rel)).expect("read");
                let new = ch.file(cdc, &data, &mut q);
                let name = f.rel.to_string_lossy();
                let part = if name.ends_with("rootimg.cpio.gz") {
                    &mut q.cpio
                } else if name.ends_with(".rpm") {
                    &mut q.rpm
                } else {
                    &mut q.other
                };
                part.size += data.len() as u64;
                part.new_plain += new;
            }
            let part = |x: Part| {
                format!(
                    "{}, {} ({} new)",
                    mib(x.size),
                    mib(x.new_plain),
                    pct(x.new_plain, x.size)
                )
            };
            t2.push(format!(
                "| {} | {} | {} | {} ({}) | {} / {} / {} | {} | {} | {} |",
                cdc.label,
                q.files,
                mib(q.plain),
                mib(q.new_plain),
                pct(q.plain - q.new_plain, q.plain),
                mib(q.new_stored[0]),
                mib(q.new_stored[1]),
                mib(q.new_stored[2]),
                part(q.cpio),
                part(q.rpm),
                part(q.other)
            ));
        }
    }
    let base_bytes: u64 = base_files.iter().map(|f| f.size).sum();
    let mut text = format!(
        "Base tree {}: {} regular files, {} ({} bytes); one core, the files already in memory.\n\n{}\n",
        base.display(),
        base_files.len(),
        mib(base_bytes),
        base_bytes,
        t1.join("\n")
    );
    if let Some(n) = &night {
        text.push_str(&format!(
            "\nNight tree {}: the {} files a snapshot reads (new, or size/mtime changed), against the base tree's chunks.\n\n{}\n",
            n.display(),
            night_files.len(),
            t2.join("\n")
        ));
    }
    print!("{text}");
    if let Some(out) = std::env::var_os("HAMN_PARAMS_OUT") {
        fs::write(out, &text).expect("write HAMN_PARAMS_OUT");
    }
}
