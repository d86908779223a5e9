//! The client side of push: for each snapshot the standby lacks, walk its
//! trees top-down (a tree the standby holds complete implies everything
//! below it), ask in batches which blobs are missing, send those as stored
//! (already compressed), flush regularly so an interrupted push keeps what
//! arrived, and publish the snapshot record last.

use std::collections::HashSet;
use std::time::Instant;

use crate::error::Result;
use crate::id::{BlobId, ChunkId, SnapshotId, TreeId};
use crate::remote::client::Remote;
use crate::remote::protocol::{IDS_PER_REQUEST_MAX, StoredBlob};
use crate::store::pack::BlobLoc;
use crate::store::{Store, StoreLock};
use crate::tree::Kind;

/// Bytes sent between two flushes (each flush makes them durable there).
pub const FLUSH_EVERY_BYTES: u64 = 64 * 1024 * 1024;
/// Blobs read ahead of the one being sent (at most 2 MiB each).
const READ_AHEAD_BLOBS: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Ignore the standby's completeness marks and ask about every blob
    /// (finds and repairs blobs a damaged standby lost).
    pub verify: bool,
    /// Chunk ids to remember for a read-back check afterwards.
    pub sample: usize,
    /// Also send snapshots older than the standby's newest (ones it forgot).
    pub all: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushStats {
    pub snapshots_sent: Vec<SnapshotId>,
    pub snapshots_present: u64,
    /// Older than the standby's newest and missing there: not sent.
    pub snapshots_skipped: u64,
    pub trees_walked: u64,
    pub blobs_sent: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub seconds: f64,
    #[serde(skip)]
    pub sample: Vec<ChunkId>,
}

struct Pusher<'a> {
    local: &'a Store,
    remote: &'a mut Remote,
    opts: &'a PushOptions,
    stats: PushStats,
    since_flush: u64,
    seen_chunks: u64,
    rng: fastrand::Rng,
    progress: Option<indicatif::ProgressBar>,
}

impl Pusher<'_> {
    fn send(&mut self, loc: &BlobLoc, stored: Vec<u8>) -> Result<()> {
        let n = stored.len() as u64;
        self.remote.put_blob(&StoredBlob {
            id: loc.id,
            encoding: loc.encoding,
            plain_len: loc.plain_len,
            stored,
        })?;
        self.stats.blobs_sent += 1;
        self.since_flush += n;
        if let Some(p) = &self.progress {
            p.set_position(self.remote.bytes_sent());
        }
        if self.since_flush >= FLUSH_EVERY_BYTES {
            self.remote.flush()?;
            self.since_flush = 0;
        }
        Ok(())
    }

    /// Ask which of `ids` the standby lacks and send those, in the order
    /// they lie in the local packs (sequential reads when the packs are
    /// not cached). A second thread reads ahead while this one sends, so
    /// the disk and the encryption overlap.
    fn send_missing(&mut self, ids: &mut Vec<BlobId>) -> Result<()> {
        ids.sort_by_key(|b| b.hash);
        ids.dedup_by_key(|b| b.hash);
        let have = self.remote.have_blobs(ids)?;
        let mut missing = ids
            .iter()
            .zip(have)
            .filter(|(_, has)| !has)
            .map(|(id, _)| self.local.locate(*id))
            .collect::<Result<Vec<BlobLoc>>>()?;
        ids.clear();
        missing.sort_by_key(|l| (l.pack, l.offset));
        let local = self.local;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_BLOBS);
            let missing = &missing;
            s.spawn(move || {
                for loc in missing {
                    let read = local.read_stored(loc);
                    let failed = read.is_err();
                    if tx.send(read).is_err() || failed {
                        break;
                    }
                }
            });
            // Leaving early drops `rx`, which stops the reader.
            for (loc, stored) in missing.iter().zip(rx) {
                self.send(loc, stored?)?;
            }
            Ok(())
        })
    }

    /// Reservoir-sample chunk ids for the read-back check.
    fn consider(&mut self, id: ChunkId) {
        if self.opts.sample == 0 {
            return;
        }
        self.seen_chunks += 1;
        if self.stats.sample.len() < self.opts.sample {
            self.stats.sample.push(id);
        } else {
            let j = self.rng.u64(..self.seen_chunks) as usize;
            if j < self.opts.sample {
                self.stats.sample[j] = id;
            }
        }
    }

    fn push_tree(&mut self, root: TreeId) -> Result<()> {
        let mut visited: HashSet<TreeId> = HashSet::new();
        let mut level = vec![root];
        let mut chunks: Vec<BlobId> = Vec::new();
        while !level.is_empty() {
            level.retain(|t| visited.insert(*t));
            let complete = if self.opts.verify {
                vec![false; level.len()]
            } else {
                self.remote.have_trees(&level)?
            };
            let todo: Vec<TreeId> = level
                .iter()
                .zip(complete)
                .filter(|(_, c)| !c)
                .map(|(t, _)| *t)
                .collect();
            self.stats.trees_walked += todo.len() as u64;
            let mut next = Vec::new();
            let mut trees: Vec<BlobId> = todo.iter().map(|t| (*t).into()).collect();
            for t in &todo {
                let tree = self.local.read_tree(*t)?;
                for e in &tree.entries {
                    match &e.kind {
                        Kind::Dir(id) => next.push(*id),
                        Kind::File(c) => {
                            for ch in &c.chunks {
                                self.consider(ch.id);
                                chunks.push(ch.id.into());
                                if chunks.len() >= IDS_PER_REQUEST_MAX {
                                    self.send_missing(&mut chunks)?;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            self.send_missing(&mut chunks)?;
            self.send_missing(&mut trees)?;
            level = next;
        }
        Ok(())
    }
}

/// Ship every local snapshot the standby lacks, oldest first.
pub fn push(
    local: &Store,
    _lock: &StoreLock,
    remote: &mut Remote,
    opts: &PushOptions,
) -> Result<PushStats> {
    let started = Instant::now();
    let listed = remote.snapshots()?;
    let their_newest = listed.iter().map(|(_, s)| s.time_ns).max();
    let theirs: HashSet<SnapshotId> = listed.into_iter().map(|(id, _)| id).collect();
    let progress = crate::log::progress_enabled().then(|| {
        let p = indicatif::ProgressBar::new_spinner();
        p.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed} {bytes} sent ({bytes_per_sec}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        p.enable_steady_tick(std::time::Duration::from_millis(200));
        p
    });
    let mut p = Pusher {
        local,
        remote,
        opts,
        stats: PushStats::default(),
        since_flush: 0,
        seen_chunks: 0,
        rng: fastrand::Rng::new(),
        progress,
    };
    let ours = local.snapshots()?;
    let newest_local = ours.last().map(|(id, _)| *id);
    for (id, snap) in ours {
        if theirs.contains(&id) {
            p.stats.snapshots_present += 1;
            if !opts.verify {
                continue;
            }
        } else if !opts.all
            && Some(id) != newest_local
            && their_newest.is_some_and(|t| snap.time_ns <= t)
        {
            // Older than what the standby has: it forgot it by its own
            // retention, or never needed it. `--all` sends it anyway.
            p.stats.snapshots_skipped += 1;
            continue;
        }
        if let Some(pb) = &p.progress {
            pb.set_message(format!("snapshot {}", id.short()));
        }
        p.push_tree(snap.root)?;
        p.remote.flush()?;
        p.since_flush = 0;
        let stored = p.remote.put_snapshot(snap.encode())?;
        if stored != id {
            return Err(crate::Error::Remote {
                peer: p.remote.peer().to_string(),
                message: format!("stored snapshot {} as {}", id.short(), stored.short()),
            });
        }
        crate::log::verbose(&format!(
            "snapshot {} is complete on the standby",
            id.short()
        ));
        if !theirs.contains(&id) {
            p.stats.snapshots_sent.push(id);
        }
    }
    if let Some(pb) = &p.progress {
        pb.finish_and_clear();
    }
    let mut stats = p.stats;
    stats.bytes_sent = remote.bytes_sent();
    stats.bytes_received = remote.bytes_received();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Read `ids` back from the standby and check each against its id.
/// Returns how many were checked.
pub fn verify_sample(remote: &mut Remote, ids: &[ChunkId]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let blobs: Vec<BlobId> = ids.iter().map(|c| (*c).into()).collect();
    let got = remote.read_blobs(&blobs)?;
    for (b, want) in got.iter().zip(&blobs) {
        if b.id.hash != want.hash {
            return Err(crate::Error::Remote {
                peer: remote.peer().to_string(),
                message: format!(
                    "returned blob {} when asked for {}",
                    b.id.to_hex(),
                    want.to_hex()
                ),
            });
        }
        let plain = crate::chunk::decode(b.id.kind, b.encoding, &b.stored, b.plain_len)?;
        if blake3::hash(&plain).as_bytes() != &b.id.hash {
            return Err(crate::Error::Remote {
                peer: remote.peer().to_string(),
                message: format!(
                    "chunk {} read back from the standby is damaged; run `hamn check --read-data` there",
                    b.id.to_hex()
                ),
            });
        }
    }
    Ok(got.len() as u64)
}
