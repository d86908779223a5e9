//! The client side of push: for each snapshot the standby lacks, walk its
//! trees top-down (a tree the standby holds complete implies everything
//! below it), ask in batches which blobs are missing, send those as stored
//! (already compressed), flush regularly so an interrupted push keeps what
//! arrived, and publish the snapshot record last. Under `sync`, an early
//! push ([`EarlyPush`]) sends what the snapshot stores while it still runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use crate::error::Result;
use crate::id::{BlobId, ChunkId, SnapshotId, TreeId};
use crate::remote::bases::BaseCache;
use crate::remote::client::Remote;
use crate::remote::protocol::{DeltaChunk, IDS_PER_REQUEST_MAX, StoredBlob};
use crate::snapshot::create::Watch;
use crate::store::pack::BlobLoc;
use crate::store::{PushReads, Store, StoreLock};
use crate::tree::{ChunkRef, FileContent, Kind, Tree};

/// Bytes sent between two flushes (each flush makes them durable there).
pub const FLUSH_EVERY_BYTES: u64 = 64 * 1024 * 1024;
/// Blobs read ahead of the one being sent (at most 2 MiB each).
const READ_AHEAD_BLOBS: usize = 4;
/// A new chunk of a changed file is sent as a delta against the old
/// version's chunks that overlap its byte range widened by this much on
/// each side: edits shift content, and a re-packed image keeps most of
/// its bytes within a few MiB of where they were (on the benchmark's
/// image, a reach of 256 KiB saves 20% of its bytes, 1 MiB 49%, 2 MiB
/// 67%; docs/performance.md).
const DELTA_REACH_BYTES: u64 = 2 * 1024 * 1024;
/// Worth sending as a delta only below this share of the stored size.
const DELTA_WORTH_PERCENT: usize = 90;
/// Most bytes of base candidates a delta made during the snapshot may
/// read (`sync`'s early push). A chunk with more waits for the push after
/// the commit: reading and concatenating its bases while the snapshot's
/// threads hold their buffers put the two ends' peaks on top of each
/// other (20 MiB more on a 2M-entry night, docs/performance.md).
const EARLY_BASE_BYTES: u64 = 1024 * 1024;
/// Trees asked about and read at once by a push's walk.
const TREES_PER_BATCH: usize = IDS_PER_REQUEST_MAX;
/// Trees a push's walk remembers having walked (32 bytes each), to walk a
/// subtree named twice once; beyond it the walk forgets them all.
const VISITED_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Ignore the standby's completeness marks and ask about every blob
    /// (finds and repairs blobs a damaged standby lost).
    pub verify: bool,
    /// Chunk ids to remember for a read-back check afterwards.
    pub sample: usize,
    /// Also send snapshots older than the standby's newest (ones it forgot).
    pub all: bool,
    /// Send new chunks of changed files as deltas against their old
    /// version on the standby (not with `verify`, which must not trust
    /// the standby's chunks).
    pub delta: bool,
    /// Blobs shared with the other pushes of one run (fan-out to several
    /// nodes): a blob one push read and encoded is served to the others.
    pub shared: Option<Arc<SharedReads>>,
}

/// Blobs in the form one push sent them (as stored, or as a delta against
/// given bases), kept for the other pushes of the same run, which walk the
/// same trees alongside it: each blob is read from the packs, decompressed
/// and made into a delta once while the pushes stay within `max_bytes` of
/// one another. An entry goes when every other push took it, or when it
/// is the oldest and the cache is full (a node far behind then reads and
/// encodes it again).
#[derive(Debug)]
pub struct SharedReads {
    /// Pushes in the run: an entry is served to at most `readers - 1`.
    readers: usize,
    max_bytes: usize,
    inner: Mutex<SharedInner>,
    /// The delta bases read by any push of the run.
    bases: BaseCache,
}

/// A blob and the bases it is sent against (none: as stored).
type SendKey = (BlobId, Vec<ChunkId>);

/// One blob's sent form once made, and how many pushes took it. Its lock
/// is held while one push makes it, so the others of the run, which tend
/// to ask for the same blob at the same moment, wait for it instead of
/// making it too.
type Slot = Arc<Mutex<(Option<Arc<Outgoing>>, usize)>>;

#[derive(Debug, Default)]
struct SharedInner {
    /// Each blob's slot, and the bytes it holds once made (counted in
    /// `bytes`).
    slots: HashMap<SendKey, (Slot, usize)>,
    /// Insertion order, oldest first (may name entries already gone).
    order: std::collections::VecDeque<SendKey>,
    bytes: usize,
}

impl SharedInner {
    fn remove(&mut self, key: &SendKey, slot: &Slot) {
        // Only this slot: the key may have a newer one since.
        if self
            .slots
            .get(key)
            .is_some_and(|(s, _)| Arc::ptr_eq(s, slot))
            && let Some((_, len)) = self.slots.remove(key)
        {
            self.bytes -= len;
        }
    }
}

impl SharedReads {
    pub fn new(readers: usize, max_bytes: usize) -> SharedReads {
        SharedReads {
            readers,
            max_bytes,
            inner: Mutex::new(SharedInner::default()),
            bases: BaseCache::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What another push of the run sent for `key`, or `make()`.
    fn get_or(&self, key: SendKey, make: impl FnOnce() -> Result<Outgoing>) -> Result<Outgoing> {
        if self.readers < 2 {
            return make();
        }
        let slot = {
            let mut g = self.lock();
            match g.slots.get(&key) {
                Some((s, _)) => s.clone(),
                None => {
                    let s: Slot = Default::default();
                    g.slots.insert(key.clone(), (s.clone(), 0));
                    g.order.push_back(key.clone());
                    s
                }
            }
        };
        let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = &held.0 {
            let copy = out.as_ref().clone();
            held.1 += 1;
            let done = held.1 >= self.readers;
            drop(held);
            if done {
                // Every push has it: let it go.
                self.lock().remove(&key, &slot);
            }
            return Ok(copy);
        }
        let out = make()?;
        held.0 = Some(Arc::new(out.clone()));
        held.1 = 1;
        drop(held);
        let mut g = self.lock();
        if let Some((s, len)) = g.slots.get_mut(&key)
            && Arc::ptr_eq(s, &slot)
        {
            *len = out.len();
            g.bytes += out.len();
        }
        while g.bytes > self.max_bytes {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some((_, len)) = g.slots.remove(&old) {
                g.bytes -= len;
            }
        }
        // Keys of slots every push took stay in `order`: drop them now
        // and then, so that it follows the slots held, not the run.
        if g.order.len() > 2 * g.slots.len() + 1024 {
            let SharedInner { slots, order, .. } = &mut *g;
            order.retain(|k| slots.contains_key(k));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushStats {
    pub snapshots_sent: Vec<SnapshotId>,
    pub snapshots_present: u64,
    /// Older than the standby's newest and missing there: not sent.
    pub snapshots_skipped: u64,
    pub trees_walked: u64,
    pub blobs_sent: u64,
    /// Of the blobs sent, chunks sent as deltas, and the bytes that saved
    /// against sending them as stored.
    pub deltas_sent: u64,
    pub delta_bytes_saved: u64,
    /// Plain bytes of the bases the deltas were made against (what their
    /// CPU cost follows).
    pub delta_base_bytes: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub seconds: f64,
    /// Of the blobs and bytes sent, those sent while the snapshot was
    /// still being taken (`sync`'s early push).
    pub blobs_sent_early: u64,
    pub bytes_sent_early: u64,
    #[serde(skip)]
    pub sample: Vec<ChunkId>,
}

impl PushStats {
    /// Count in what an early push sent before this push.
    pub fn add_early(&mut self, early: &PushStats) {
        self.blobs_sent += early.blobs_sent;
        self.deltas_sent += early.deltas_sent;
        self.delta_bytes_saved += early.delta_bytes_saved;
        self.delta_base_bytes += early.delta_base_bytes;
        self.bytes_sent += early.bytes_sent;
        self.bytes_received += early.bytes_received;
        self.seconds += early.seconds;
        self.blobs_sent_early += early.blobs_sent;
        self.bytes_sent_early += early.bytes_sent;
    }
}

struct Pusher<'a> {
    local: &'a Store,
    remote: &'a mut Remote,
    opts: &'a PushOptions,
    stats: PushStats,
    since_flush: u64,
    seen_chunks: u64,
    rng: fastrand::Rng,
    progress: Option<Progress>,
    /// New chunk -> the old version's chunks to send it against, for the
    /// chunks listed since the last `send_missing`.
    delta_bases: HashMap<ChunkId, Vec<ChunkId>>,
    /// The session's bytes sent when the push began.
    sent_before: u64,
}

/// The push's progress on a terminal: bytes sent, rate and, when the new
/// snapshots' stored sizes tell how much is to come, a bar and an ETA.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    /// The snapshot being sent.
    label: String,
    /// Stored bytes of the blobs handled so far (sent as stored or as
    /// deltas): the bar's position, against the new snapshots' stored
    /// bytes, so that the ETA allows for what deltas save.
    handled: u64,
}

impl Progress {
    /// `expected`: stored bytes the snapshots to send added to the local
    /// store (0: unknown, a spinner without ETA).
    fn new(expected: u64) -> Progress {
        let (bar, template) = if expected > 0 {
            (
                indicatif::ProgressBar::new(expected),
                "{spinner} [{bar:16}] {percent:>3}% {elapsed} ETA {eta} {wide_msg}",
            )
        } else {
            (
                indicatif::ProgressBar::new_spinner(),
                "{spinner} {elapsed} {wide_msg}",
            )
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress {
            bar,
            started: Instant::now(),
            label: String::new(),
            handled: 0,
        }
    }

    fn update(&mut self, stored: u64, sent: u64) {
        self.handled += stored;
        if self.bar.length().is_some_and(|l| self.handled > l) {
            // More than the snapshots' own new data (the standby lacked
            // older data too): the bar stays full until the end.
            self.bar.set_length(self.handled);
        }
        self.bar.set_position(self.handled);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} sent at {}/s ({})",
            indicatif::HumanBytes(sent),
            indicatif::HumanBytes((sent as f64 / secs) as u64),
            self.label
        ));
    }
}

/// What the read-ahead thread hands over: a blob as stored, or a delta.
#[derive(Debug, Clone)]
enum Outgoing {
    Stored(StoredBlob),
    Delta {
        chunk: DeltaChunk,
        saved: u64,
        base_bytes: u64,
    },
}

impl Outgoing {
    /// Bytes it holds in memory.
    fn len(&self) -> usize {
        match self {
            Outgoing::Stored(b) => b.stored.len(),
            Outgoing::Delta { chunk, .. } => chunk.delta.len(),
        }
    }
}

/// The old version's chunks to send `new`'s chunk at `offset` (of `len`
/// bytes) against: those overlapping its range widened by
/// DELTA_REACH_BYTES, those inside its own range first, then the
/// nearest, within the limits of one delta; returned in file order, with
/// their bytes.
fn bases_for(old: &FileContent, offset: u64, len: u64) -> (Vec<ChunkId>, u64) {
    let (lo, hi) = (
        offset.saturating_sub(DELTA_REACH_BYTES),
        offset + len + DELTA_REACH_BYTES,
    );
    let mut near: Vec<(u64, u64, ChunkId, u64)> = Vec::new();
    let mut at = 0u64;
    for c in old.stored_refs() {
        let (s, e) = (at, at + c.len as u64);
        at = e;
        if e > lo && s < hi {
            // 0 inside the chunk's own range, else how far outside it.
            let distance = if e <= offset {
                offset - e
            } else {
                s.saturating_sub(offset + len)
            };
            near.push((distance, s, c.id, c.len as u64));
        }
    }
    near.sort_by_key(|n| n.0);
    let mut picked: Vec<(u64, ChunkId)> = Vec::new();
    let mut bytes = 0u64;
    for (_, s, id, l) in near {
        if picked.len() == crate::chunk::DELTA_BASES_MAX
            || bytes + l > crate::chunk::DELTA_BASE_MAX_BYTES as u64
        {
            break;
        }
        bytes += l;
        picked.push((s, id));
    }
    picked.sort_by_key(|p| p.0);
    (picked.into_iter().map(|p| p.1).collect(), bytes)
}

/// Read what `loc` names for sending: as a delta when it has bases and
/// that pays, else as stored.
/// What another push of the run sent for it when one did (`shared`).
fn outgoing(
    local: &Store,
    loc: &BlobLoc,
    bases: Option<&Vec<ChunkId>>,
    cache: &BaseCache,
    shared: Option<&SharedReads>,
) -> Result<Outgoing> {
    // On the read-ahead thread or on rayon's.
    let _reads = PushReads::enter();
    let make = || make_outgoing(local, loc, bases, cache);
    match shared {
        Some(s) => s.get_or((loc.id, bases.cloned().unwrap_or_default()), make),
        None => make(),
    }
}

fn make_outgoing(
    local: &Store,
    loc: &BlobLoc,
    bases: Option<&Vec<ChunkId>>,
    cache: &BaseCache,
) -> Result<Outgoing> {
    let stored = StoredBlob {
        id: loc.id,
        encoding: loc.encoding,
        plain_len: loc.plain_len,
        stored: local.read_stored(loc)?,
    };
    let Some(bases) = bases else {
        return Ok(Outgoing::Stored(stored));
    };
    let plain = local.verify_stored(loc, &stored.stored)?;
    let (bases, base) = cache.base_for(local, &plain, bases)?;
    if bases.is_empty() {
        return Ok(Outgoing::Stored(stored));
    }
    match crate::chunk::delta_encode(&plain, &base) {
        Some(delta) if delta.len() * 100 < stored.stored.len() * DELTA_WORTH_PERCENT => {
            let saved = (stored.stored.len() - delta.len()) as u64;
            Ok(Outgoing::Delta {
                chunk: DeltaChunk {
                    id: ChunkId(loc.id.hash),
                    plain_len: loc.plain_len,
                    bases,
                    delta,
                },
                saved,
                base_bytes: base.len() as u64,
            })
        }
        _ => Ok(Outgoing::Stored(stored)),
    }
}

impl Pusher<'_> {
    fn send(&mut self, out: Outgoing) -> Result<()> {
        let before = self.remote.bytes_sent();
        let stored = match &out {
            Outgoing::Stored(b) => b.stored.len() as u64,
            Outgoing::Delta { chunk, saved, .. } => chunk.delta.len() as u64 + saved,
        };
        match out {
            Outgoing::Stored(b) => self.remote.put_blob(b)?,
            Outgoing::Delta {
                chunk,
                saved,
                base_bytes,
            } => {
                self.remote.put_delta(chunk)?;
                self.stats.deltas_sent += 1;
                self.stats.delta_bytes_saved += saved;
                self.stats.delta_base_bytes += base_bytes;
            }
        }
        self.stats.blobs_sent += 1;
        self.since_flush += self.remote.bytes_sent() - before;
        let sent = self.remote.bytes_sent() - self.sent_before;
        if let Some(p) = &mut self.progress {
            p.update(stored, sent);
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
        // The bases of these chunks; those of others stay for later.
        let bases: HashMap<ChunkId, Vec<ChunkId>> = ids
            .iter()
            .filter_map(|b| {
                let c = ChunkId(b.hash);
                self.delta_bases.remove(&c).map(|v| (c, v))
            })
            .collect();
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
        let shared = self.opts.shared.as_deref();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_BLOBS);
            let (missing, bases) = (&missing, &bases);
            s.spawn(move || {
                // Deltas take CPU: make a few at once, in order.
                use rayon::prelude::*;
                // The pushes of one run share their delta bases too: the
                // one that makes a delta reads its bases, and the next
                // blob's maker, often another push, needs the same ones.
                let own = BaseCache::default();
                let cache = shared.map_or(&own, |s| &s.bases);
                for group in missing.chunks(READ_AHEAD_BLOBS) {
                    let out: Vec<Result<Outgoing>> = group
                        .par_iter()
                        .map(|loc| {
                            outgoing(local, loc, bases.get(&ChunkId(loc.id.hash)), cache, shared)
                        })
                        .collect();
                    for read in out {
                        let failed = read.is_err();
                        if tx.send(read).is_err() || failed {
                            return;
                        }
                    }
                }
            });
            // Leaving early drops `rx`, which stops the reader.
            for out in rx {
                self.send(out?)?;
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

    /// Send everything below `root` the standby lacks. `base`: the root of
    /// a snapshot the standby holds, whose files at the same paths are the
    /// old versions new chunks are sent against.
    fn push_tree(&mut self, root: TreeId, base: Option<TreeId>) -> Result<()> {
        // Trees still to walk, the last pushed walked first, a batch at a
        // time: what waits follows the depth of the tree and the width of
        // its directories, not its number of directories.
        let mut stack = vec![(root, base)];
        let mut visited: HashSet<TreeId> = HashSet::new();
        let mut chunks: Vec<BlobId> = Vec::new();
        while !stack.is_empty() {
            let mut level = stack.split_off(stack.len().saturating_sub(TREES_PER_BATCH));
            if visited.len() > VISITED_MAX {
                // Only saves asking again about a subtree named twice.
                visited.clear();
            }
            level.retain(|(t, _)| visited.insert(*t));
            let ids: Vec<TreeId> = level.iter().map(|(t, _)| *t).collect();
            let complete = if self.opts.verify {
                vec![false; level.len()]
            } else {
                self.remote.have_trees(&ids)?
            };
            let todo: Vec<(TreeId, Option<TreeId>)> = level
                .iter()
                .zip(complete)
                .filter(|(_, c)| !c)
                .map(|(t, _)| *t)
                .collect();
            self.stats.trees_walked += todo.len() as u64;
            let mut trees: Vec<BlobId> = todo.iter().map(|(t, _)| (*t).into()).collect();
            for (t, old) in &todo {
                let tree = self.local.read_tree(*t)?;
                let old: Option<Tree> = match old {
                    Some(o) if self.opts.delta && o != t => self.local.read_tree(*o).ok(),
                    _ => None,
                };
                for e in &tree.entries {
                    let before = old.as_ref().and_then(|o| o.get(&e.name)).map(|o| &o.kind);
                    match &e.kind {
                        Kind::Dir(id) => stack.push((
                            *id,
                            match before {
                                Some(Kind::Dir(o)) => Some(*o),
                                _ => None,
                            },
                        )),
                        Kind::File(c) => {
                            // A changed file: its old version's chunks
                            // are the bases of its new ones.
                            let old = match before {
                                Some(Kind::File(o)) if o.stored_refs() != c.stored_refs() => {
                                    Some(o)
                                }
                                _ => None,
                            };
                            let mut at = 0u64;
                            for ch in c.stored_refs() {
                                if let Some(o) = old {
                                    let (bases, _) = bases_for(o, at, ch.len as u64);
                                    if !bases.is_empty() && !bases.contains(&ch.id) {
                                        self.delta_bases.insert(ch.id, bases);
                                    }
                                }
                                at += ch.len as u64;
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
    let _reads = PushReads::enter();
    let started = Instant::now();
    // Counted from here: a session may have carried requests before.
    let (sent_before, received_before) = (remote.bytes_sent(), remote.bytes_received());
    let listed = remote.snapshots()?;
    let their_newest = listed.iter().map(|(_, s)| s.time_ns).max();
    let theirs: HashSet<SnapshotId> = listed.into_iter().map(|(id, _)| id).collect();
    let ours = local.snapshots()?;
    let newest_local = ours.last().map(|(id, _)| *id);
    // Older than what the standby has: it forgot it by its own retention,
    // or never needed it. `--all` sends it anyway.
    let skipped = |id: SnapshotId, snap: &crate::snapshot::Snapshot| {
        !opts.all && Some(id) != newest_local && their_newest.is_some_and(|t| snap.time_ns <= t)
    };
    let progress = crate::log::progress_enabled().then(|| {
        Progress::new(
            ours.iter()
                .filter(|(id, snap)| !theirs.contains(id) && !skipped(*id, snap))
                .map(|(_, snap)| snap.stats.bytes_added_stored)
                .sum(),
        )
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
        delta_bases: HashMap::new(),
        sent_before,
    };
    // The root of the newest snapshot so far that both sides hold (the list
    // is oldest first): the old versions deltas are made against.
    let mut shared_root: Option<TreeId> = None;
    for (id, snap) in ours {
        if theirs.contains(&id) {
            p.stats.snapshots_present += 1;
            if !opts.verify {
                shared_root = Some(snap.root);
                continue;
            }
        } else if skipped(id, &snap) {
            p.stats.snapshots_skipped += 1;
            continue;
        }
        if let Some(pb) = &mut p.progress {
            pb.label = id.short();
        }
        let base = shared_root.filter(|_| opts.delta && !opts.verify);
        p.push_tree(snap.root, base)?;
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
        shared_root = Some(snap.root);
    }
    if let Some(pb) = &p.progress {
        pb.bar.finish_and_clear();
    }
    let mut stats = p.stats;
    stats.bytes_sent = remote.bytes_sent() - sent_before;
    stats.bytes_received = remote.bytes_received() - received_before;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// What a snapshot tells the early pushes of `sync` ([`EarlyFeed`]).
pub enum Early {
    /// The snapshot's parent.
    Parent(Option<SnapshotId>),
    /// A new chunk and the old version's chunks to send it against.
    Bases(ChunkId, Vec<ChunkId>),
    /// A new chunk whose bases are too large to read during the snapshot
    /// (`EARLY_BASE_BYTES`): the push after the commit sends it.
    Later(ChunkId),
    /// The blobs of a pack the snapshot sealed.
    Sealed(Vec<BlobId>),
    /// The snapshot is committed.
    Done,
}

/// The snapshot's side of the early pushes: what it stores, forwarded to
/// each node's early push, with the delta bases of each new chunk chosen
/// as [`push`] chooses them (the file's old version at the same path).
pub struct EarlyFeed {
    to: Vec<mpsc::Sender<Early>>,
    delta: bool,
}

impl EarlyFeed {
    /// `delta`: whether any node takes deltas.
    pub fn new(to: Vec<mpsc::Sender<Early>>, delta: bool) -> EarlyFeed {
        EarlyFeed { to, delta }
    }

    fn send(&self, e: impl Fn() -> Early) {
        // A node whose early push ended takes nothing more.
        for t in &self.to {
            let _ = t.send(e());
        }
    }
}

impl Watch for EarlyFeed {
    fn parent(&self, parent: Option<SnapshotId>) {
        self.send(|| Early::Parent(parent));
    }

    fn chunk_of_changed_file(&self, old: &FileContent, offset: u64, chunk: &ChunkRef) {
        if !self.delta || old.encoding != crate::tree::Encoding::Plain {
            return;
        }
        let (bases, bytes) = bases_for(old, offset, chunk.len as u64);
        if bases.is_empty() || bases.contains(&chunk.id) {
            return;
        }
        if bytes > EARLY_BASE_BYTES {
            self.send(|| Early::Later(chunk.id));
        } else {
            self.send(|| Early::Bases(chunk.id, bases.clone()));
        }
    }

    fn sealed(&self, blobs: &[BlobId]) {
        self.send(|| Early::Sealed(blobs.to_vec()));
    }
}

/// A push to one node while the snapshot is still taken (`sync`): the
/// blobs of each pack the snapshot seals that the node lacks, new chunks
/// of changed files as deltas against their old versions, exactly as
/// [`push`] would send them, except the chunks whose bases are larger
/// than `EARLY_BASE_BYTES`: those wait for [`push`]. Only when the node
/// holds the snapshot's parent, or there is none: a delta's bases must be
/// there, and a node further behind is sent what it lacks by [`push`]
/// after the snapshot (against the newest snapshot both hold). [`push`] then finds on the
/// node what this sent, and sends the rest, the trees and the record.
pub struct EarlyPush<'a> {
    local: &'a Store,
    opts: &'a PushOptions,
    /// None until the parent is known; then whether to send.
    on: Option<bool>,
    stats: PushStats,
    delta_bases: HashMap<ChunkId, Vec<ChunkId>>,
    /// Chunks left to [`push`] ([`Early::Later`]) not yet sealed.
    later: HashSet<ChunkId>,
    since_flush: u64,
    /// Time spent asking and sending (not waiting for the snapshot).
    busy: std::time::Duration,
    sent_before: u64,
    received_before: u64,
}

impl<'a> EarlyPush<'a> {
    pub fn new(local: &'a Store, opts: &'a PushOptions, remote: &Remote) -> EarlyPush<'a> {
        EarlyPush {
            local,
            opts,
            on: None,
            stats: PushStats::default(),
            delta_bases: HashMap::new(),
            later: HashSet::new(),
            since_flush: 0,
            busy: std::time::Duration::ZERO,
            sent_before: remote.bytes_sent(),
            received_before: remote.bytes_received(),
        }
    }

    /// Whether anything was sent.
    pub fn sent(&self) -> bool {
        self.stats.blobs_sent > 0
    }

    /// Act on one thing the snapshot said (`Done` is the caller's);
    /// whether the node was asked or sent anything.
    pub fn take(&mut self, remote: &mut Remote, e: Early) -> Result<bool> {
        let _reads = PushReads::enter();
        let started = Instant::now();
        let taken = self.take_timed(remote, e);
        self.busy += started.elapsed();
        taken
    }

    fn take_timed(&mut self, remote: &mut Remote, e: Early) -> Result<bool> {
        match e {
            Early::Parent(None) => self.on = Some(true),
            Early::Parent(Some(id)) => {
                let held = remote.snapshots()?.iter().any(|(s, _)| *s == id);
                if !held {
                    crate::log::verbose(&format!(
                        "sync: {} lacks the snapshot's parent {}: nothing is sent during the snapshot",
                        remote.peer(),
                        id.short()
                    ));
                }
                self.on = Some(held);
                return Ok(true);
            }
            Early::Bases(c, b) if self.opts.delta && self.on != Some(false) => {
                self.delta_bases.insert(c, b);
            }
            Early::Later(c) if self.opts.delta && self.on != Some(false) => {
                self.later.insert(c);
            }
            Early::Sealed(mut ids) if self.on == Some(true) => {
                ids.retain(|b| !self.later.remove(&ChunkId(b.hash)));
                let mut p = Pusher {
                    local: self.local,
                    remote,
                    opts: self.opts,
                    stats: std::mem::take(&mut self.stats),
                    since_flush: self.since_flush,
                    seen_chunks: 0,
                    rng: fastrand::Rng::new(),
                    progress: None,
                    delta_bases: std::mem::take(&mut self.delta_bases),
                    sent_before: self.sent_before,
                };
                let sent = p.send_missing(&mut ids);
                self.stats = p.stats;
                self.delta_bases = p.delta_bases;
                self.since_flush = p.since_flush;
                sent?;
                return Ok(true);
            }
            _ => {}
        }
        Ok(false)
    }

    /// What it sent, for [`PushStats::add_early`].
    pub fn finish(self, remote: &Remote) -> PushStats {
        let mut stats = self.stats;
        stats.bytes_sent = remote.bytes_sent() - self.sent_before;
        stats.bytes_received = remote.bytes_received() - self.received_before;
        stats.seconds = self.busy.as_secs_f64();
        stats
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobKind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(n: u8) -> BlobId {
        BlobId {
            kind: BlobKind::Chunk,
            hash: [n; 32],
        }
    }

    fn blob(n: u8, len: usize) -> Outgoing {
        Outgoing::Stored(StoredBlob {
            id: id(n),
            encoding: 0,
            plain_len: len as u32,
            stored: vec![n; len],
        })
    }

    #[test]
    fn pushes_asking_at_once_make_each_blob_once_and_hold_it_within_bounds() {
        let shared = SharedReads::new(3, 10_000);
        let made = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for n in 0..20u8 {
                        let out = shared
                            .get_or((id(n), Vec::new()), || {
                                made.fetch_add(1, Ordering::Relaxed);
                                // Slow enough that the others ask meanwhile.
                                std::thread::sleep(std::time::Duration::from_millis(2));
                                Ok(blob(n, 1000))
                            })
                            .unwrap();
                        assert_eq!(out.len(), 1000);
                    }
                });
            }
        });
        assert_eq!(made.load(Ordering::Relaxed), 20, "each blob made once");
        let g = shared.lock();
        assert_eq!(g.bytes, 0, "all taken by the three: nothing held");
        assert!(g.slots.is_empty());
        drop(g);
        // One push alone, far ahead: what the others have not taken is
        // held up to the bound, oldest first out.
        for n in 0..30u8 {
            shared
                .get_or((id(n), vec![ChunkId([1; 32])]), || Ok(blob(n, 1000)))
                .unwrap();
        }
        let g = shared.lock();
        assert!(g.bytes <= 10_000, "{}", g.bytes);
        assert_eq!(g.slots.len(), 10);
        assert!(g.slots.contains_key(&(id(29), vec![ChunkId([1; 32])])));
        assert!(!g.slots.contains_key(&(id(0), vec![ChunkId([1; 32])])));
    }
}
