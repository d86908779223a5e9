//! Garbage collection: delete data no snapshot references. Mark every blob
//! reachable from the remaining snapshots (a set of 16-byte id prefixes: a
//! prefix collision only keeps a dead blob), then per pack: delete packs
//! with nothing live, rewrite partly dead ones (most dead bytes first,
//! until at least `RECLAIM_TARGET` of the dead bytes are reclaimed, unless
//! they are too thinly spread to be worth copying), and
//! delete pack files no index entry uses. Data younger than the grace
//! period is kept: an interrupted push or snapshot may still use it.
//!
//! Crash order: live blobs are copied into new packs and indexed before an
//! old pack leaves the index, and a pack leaves the index before its file
//! is deleted. A crash at any point loses nothing referenced; the next gc
//! finishes the job.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::failpoint::failpoint;
use crate::id::PackId;
use crate::store::pack::{self, BlobLoc, RECORD_HEADER_LEN};
use crate::store::writer::BlobWriter;
use crate::store::{FileKind, Store, StoreLock};
use crate::tree::Kind;

/// Share of the dead bytes a gc reclaims at least.
pub const RECLAIM_TARGET: f64 = 0.9;
/// Partly dead packs are rewritten only when their dead bytes are at
/// least this share of the live bytes that would be copied.
pub const REWRITE_MIN_SHARE: f64 = 0.05;
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

type Mark = [u8; 16];

fn mark_of(h: &[u8; 32]) -> Mark {
    let mut m = [0u8; 16];
    m.copy_from_slice(&h[..16]);
    m
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackPlan {
    pub pack: String,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    #[serde(skip)]
    id: PackId,
    #[serde(skip)]
    live: Vec<BlobLoc>,
    #[serde(skip)]
    all: Vec<BlobLoc>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct GcPlan {
    pub snapshots: u64,
    pub blobs_referenced: u64,
    pub packs_total: u64,
    /// Packs with nothing referenced: deleted.
    pub delete: Vec<PackPlan>,
    /// Partly dead packs: their live blobs copied, then deleted.
    pub rewrite: Vec<PackPlan>,
    /// Pack files no index entry uses, older than the grace period.
    pub delete_unindexed: Vec<String>,
    /// Packs younger than the grace period, left alone.
    pub packs_in_grace: u64,
    pub dead_bytes_total: u64,
    pub dead_bytes_reclaimed: u64,
    pub live_bytes_rewritten: u64,
    #[serde(skip)]
    unindexed: Vec<PackId>,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct GcStats {
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub bytes_freed: i64,
    pub bytes_rewritten: u64,
    pub seconds: f64,
}

fn young(store: &Store, id: &PackId, grace: Duration) -> bool {
    store
        .files()
        .info(FileKind::Pack, &id.to_hex())
        .ok()
        .flatten()
        .is_some_and(|i| {
            SystemTime::now()
                .duration_since(i.modified)
                .unwrap_or_default()
                < grace
        })
}

/// Every blob reachable from the store's snapshots.
fn mark(store: &Store) -> Result<(u64, HashSet<Mark>)> {
    let snaps = store.snapshots()?;
    let mut marks: HashSet<Mark> = HashSet::new();
    for (sid, s) in &snaps {
        // The tree entered last is the one whose read failed.
        let mut walk = (&mut marks, s.root);
        crate::walk::trees(
            store,
            s.root,
            &mut walk,
            |(marks, last), t| {
                *last = t;
                Ok(marks.insert(mark_of(&t.0)))
            },
            |(marks, _), _, tree| {
                for e in &tree.entries {
                    if let Kind::File(c) = &e.kind {
                        marks.extend(c.stored_refs().iter().map(|ch| mark_of(&ch.id.0)));
                    }
                }
                Ok(())
            },
        )
        .map_err(|e| {
            Error::Other(format!(
                "snapshot {} references tree {} that cannot be read ({e}); gc stops without \
                 deleting anything: run `hamn check`",
                sid.short(),
                walk.1.short()
            ))
        })?;
    }
    Ok((snaps.len() as u64, marks))
}

fn record_bytes(l: &BlobLoc) -> u64 {
    RECORD_HEADER_LEN + l.stored_len as u64
}

pub fn plan(store: &Store, grace: Duration) -> Result<GcPlan> {
    let (snapshots, marks) = mark(store)?;
    let mut plan = GcPlan {
        snapshots,
        blobs_referenced: marks.len() as u64,
        ..GcPlan::default()
    };
    let indexed = store.index().packs()?;
    plan.packs_total = indexed.len() as u64;
    let mut partial = Vec::new();
    for (id, _, _) in &indexed {
        if young(store, id, grace) {
            plan.packs_in_grace += 1;
            continue;
        }
        let all = pack::read_trailer(store.files(), *id)?;
        let mut live = Vec::new();
        let (mut live_bytes, mut dead_bytes) = (0, 0);
        for l in &all {
            let here = store
                .index()
                .get(&l.id.hash)?
                .is_some_and(|x| x.pack == *id);
            if here && marks.contains(&mark_of(&l.id.hash)) {
                live_bytes += record_bytes(l);
                live.push(*l);
            } else {
                dead_bytes += record_bytes(l);
            }
        }
        plan.dead_bytes_total += dead_bytes;
        let p = PackPlan {
            pack: id.to_hex(),
            live_bytes,
            dead_bytes,
            id: *id,
            live,
            all,
        };
        if p.live.is_empty() {
            plan.dead_bytes_reclaimed += dead_bytes;
            plan.delete.push(p);
        } else if dead_bytes > 0 {
            partial.push(p);
        }
    }
    // Most dead bytes first, until the target share is reclaimed. Dead
    // bytes scattered thinly (under REWRITE_MIN_SHARE of what rewriting
    // would copy) are left for a later gc: copying gigabytes to free
    // kilobytes is no reclaim.
    partial.sort_by_key(|p| std::cmp::Reverse(p.dead_bytes));
    let target = (plan.dead_bytes_total as f64 * RECLAIM_TARGET).ceil() as u64;
    let partial_dead: u64 = partial.iter().map(|p| p.dead_bytes).sum();
    let partial_live: u64 = partial.iter().map(|p| p.live_bytes).sum();
    if (partial_dead as f64) < (partial_live as f64) * REWRITE_MIN_SHARE {
        partial.clear();
    }
    for p in partial {
        if plan.dead_bytes_reclaimed >= target {
            break;
        }
        plan.dead_bytes_reclaimed += p.dead_bytes;
        plan.live_bytes_rewritten += p.live_bytes;
        plan.rewrite.push(p);
    }
    let indexed_set: HashSet<PackId> = indexed.iter().map(|p| p.0).collect();
    for id in store.pack_files()? {
        if !indexed_set.contains(&id) {
            if young(store, &id, grace) {
                plan.packs_in_grace += 1;
            } else {
                plan.delete_unindexed.push(id.to_hex());
                plan.unindexed.push(id);
            }
        }
    }
    Ok(plan)
}

/// Remove a pack file (made durable by the backend); the bytes freed.
fn remove_file(store: &Store, id: &PackId) -> Result<u64> {
    let name = id.to_hex();
    let size = store
        .files()
        .info(FileKind::Pack, &name)?
        .map_or(0, |i| i.size);
    store.files().remove(FileKind::Pack, &name)?;
    Ok(size)
}

pub fn execute(store: &Store, lock: &StoreLock, plan: GcPlan) -> Result<GcStats> {
    let started = Instant::now();
    // Completeness marks of trees about to go are dropped before any data:
    // a mark must never vouch for a tree whose blobs are gone.
    let (_, marks) = mark(store)?;
    store
        .index()
        .retain_complete(|h| marks.contains(&mark_of(h)))?;
    let mut stats = GcStats::default();
    let mut freed: i64 = 0;
    if !plan.rewrite.is_empty() {
        let w = BlobWriter::new(store, lock)?;
        for p in &plan.rewrite {
            for l in &p.live {
                let stored = store.read_stored(l)?;
                // A damaged live blob must not be copied as if it were good.
                store.verify_stored(l, &stored)?;
                w.add_stored(l.id, l.encoding, l.plain_len, &stored)?;
                stats.bytes_rewritten += record_bytes(l);
            }
        }
        let written = w.finish()?;
        stats.packs_written = written.packs_written;
        freed -= written.bytes_stored_added as i64;
        failpoint("gc:copied");
        for p in &plan.rewrite {
            store.index().remove_pack(p.id, &p.all)?;
            failpoint("gc:unindexed");
            freed += remove_file(store, &p.id)? as i64;
            stats.packs_rewritten += 1;
        }
    }
    for p in &plan.delete {
        store.index().remove_pack(p.id, &p.all)?;
        failpoint("gc:unindexed");
        freed += remove_file(store, &p.id)? as i64;
        stats.packs_deleted += 1;
    }
    for id in &plan.unindexed {
        freed += remove_file(store, id)? as i64;
        stats.packs_deleted += 1;
    }
    stats.bytes_freed = freed;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}
