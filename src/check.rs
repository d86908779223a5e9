//! Verifying a store: snapshot records, the trees they reach, that every
//! referenced blob is indexed in a pack that exists, and (with read-data)
//! that every stored byte still matches its id. Damage is reported with the
//! snapshot paths it affects. Repair rebuilds the index from the packs.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::content::ContentReader;
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId, TreeId};
use crate::store::pack::{self, BlobLoc};
use crate::store::{FileKind, Store, StoreLock};
use crate::tree::{Encoding, FileContent, Kind, Tree};

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only this percentage of the packs (chosen at random).
    pub read_data_percent: Option<f64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub blobs_indexed: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    /// Packs on disk that no index entry uses (left by an interrupted run;
    /// harmless, `gc` removes them).
    pub packs_unindexed: u64,
    pub problems: Vec<Problem>,
    /// Where the blobs that read-data found damaged are indexed.
    #[serde(skip)]
    pub damaged_blobs: Vec<BlobLoc>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub message: String,
    /// `SNAPSHOT:PATH` of every entry the damage affects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affects: Vec<String>,
}

fn problem(message: String) -> Problem {
    Problem {
        message,
        affects: Vec::new(),
    }
}

/// The stored bytes of `l` within a whole pack, if the location fits.
fn stored_slice<'d>(data: &'d [u8], l: &BlobLoc) -> Option<&'d [u8]> {
    let start = usize::try_from(l.offset).ok()?;
    let end = start.checked_add(l.stored_len as usize)?;
    data.get(start..end)
}

/// One finding of a pack read: the damaged blob (None for damage outside
/// every indexed blob) and what is wrong.
type PackDamage = (Option<BlobLoc>, String);

/// Read a whole pack and verify it. Returns the bytes read and what
/// failed.
fn verify_pack(store: &Store, pack: PackId, indexed: &[BlobLoc]) -> (u64, Vec<PackDamage>) {
    // A whole pack is read once (the backend drops it from the page
    // cache): a check of the whole store must not push out what the node
    // serves.
    let data = match store.files().read(FileKind::Pack, &pack.to_hex()) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let why = format!("pack {} is missing", store.pack_location(&pack));
            return (0, indexed.iter().map(|l| (Some(*l), why.clone())).collect());
        }
        Err(e) => {
            let why = format!("pack {} unreadable: {e}", store.pack_location(&pack));
            return (0, indexed.iter().map(|l| (Some(*l), why.clone())).collect());
        }
    };
    let verifies =
        |l: &BlobLoc| stored_slice(&data, l).is_some_and(|b| store.verify_stored(l, b).is_ok());
    let mut bad = Vec::new();
    if crate::id::PackId::of(&data) != pack {
        // Some byte changed; find out which blobs it hit.
        for l in indexed {
            if !verifies(l) {
                bad.push((
                    Some(*l),
                    format!(
                        "{} {} damaged in pack {}",
                        l.id.kind.name(),
                        l.id.to_hex(),
                        store.pack_location(&pack)
                    ),
                ));
            }
        }
        if bad.is_empty() {
            bad.push((
                None,
                format!(
                    "pack {} does not match its id (damage outside live blobs)",
                    store.pack_location(&pack)
                ),
            ));
        }
    } else {
        for l in indexed {
            if !verifies(l) {
                bad.push((
                    Some(*l),
                    format!("{} {} does not decode", l.id.kind.name(), l.id.to_hex()),
                ));
            }
        }
    }
    (data.len() as u64, bad)
}

pub fn check(store: &Store, opts: &CheckOptions) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let indexed_packs = store.index().packs()?;
    let on_disk: HashSet<PackId> = store.pack_files()?.into_iter().collect();
    let indexed_set: HashSet<PackId> = indexed_packs.iter().map(|p| p.0).collect();
    report.packs = indexed_packs.len() as u64;
    report.packs_unindexed = on_disk.difference(&indexed_set).count() as u64;
    for (p, _, _) in &indexed_packs {
        if !on_disk.contains(p) {
            report.problems.push(problem(format!(
                "pack {} is in the index but missing on disk",
                p.to_hex()
            )));
        }
    }

    // Blob locations grouped by pack (needed for read-data).
    let mut by_pack: HashMap<PackId, Vec<BlobLoc>> = HashMap::new();
    let mut blobs = 0u64;
    store.index().for_each_blob(|l| {
        blobs += 1;
        if opts.read_data {
            by_pack.entry(l.pack).or_default().push(l);
        }
        Ok(())
    })?;
    report.blobs_indexed = blobs;

    let mut bad: HashMap<[u8; 32], String> = HashMap::new();
    if opts.read_data {
        let mut packs: Vec<PackId> = by_pack.keys().copied().collect();
        packs.sort();
        if let Some(pct) = opts.read_data_percent {
            let want = ((packs.len() as f64) * pct / 100.0).ceil() as usize;
            fastrand::shuffle(&mut packs);
            packs.truncate(want.min(packs.len()));
        }
        let progress = crate::log::progress_enabled().then(|| {
            let p = indicatif::ProgressBar::new(packs.len() as u64);
            p.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} packs {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            p
        });
        let results: Vec<(u64, Vec<PackDamage>)> = packs
            .par_iter()
            .map(|p| {
                let r = verify_pack(store, *p, &by_pack[p]);
                if let Some(pb) = &progress {
                    pb.inc(1);
                }
                r
            })
            .collect();
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        report.packs_read = packs.len() as u64;
        for (n, errs) in results {
            report.bytes_read += n;
            for (loc, msg) in errs {
                match loc {
                    Some(l) => {
                        bad.insert(l.id.hash, msg);
                        report.damaged_blobs.push(l);
                    }
                    None => report.problems.push(problem(msg)),
                }
            }
        }
    }

    // Walk every snapshot; each distinct tree once.
    let snaps = match store.snapshot_records() {
        Ok((good, bad)) => {
            for (at, why) in bad {
                report.problems.push(problem(format!(
                    "snapshot record {at} is unusable ({why}); every command leaves it out; \
                     delete it, or put back an intact copy"
                )));
            }
            good
        }
        Err(e) => {
            report.problems.push(problem(e.to_string()));
            Vec::new()
        }
    };
    report.snapshots = snaps.len() as u64;
    if opts.read_data {
        bad.extend(recreation_failures(store, &snaps, &bad)?);
    }

    // Which trees hold damage is a property of the tree, not of the
    // snapshot: find it once per distinct tree, then list the affected
    // paths in every snapshot, descending only into damaged trees.
    let mut damage = Damage::new(store, &bad);
    for (_, snap) in &snaps {
        damage.tree_damaged(snap.root)?;
    }
    report.trees = damage.damaged.len() as u64;
    let mut affects: HashMap<[u8; 32], Vec<String>> = HashMap::new();
    for (sid, snap) in &snaps {
        damage.affected(*sid, snap.root, "/", &mut affects);
    }
    let Damage {
        damaged,
        missing_chunks,
        unreadable_trees,
        ..
    } = damage;
    let marks = false_marks(store, &bad, &damaged)?;
    let mut found: Vec<Problem> = Vec::new();
    for (hash, msg) in bad
        .into_iter()
        .chain(missing_chunks)
        .chain(unreadable_trees)
    {
        found.push(Problem {
            message: msg,
            affects: affects.remove(&hash).unwrap_or_default(),
        });
    }
    found.sort_by(|a, b| a.message.cmp(&b.message));
    report.problems.extend(found);
    report.problems.extend(marks);
    Ok(report)
}

/// The completeness marks of trees no snapshot reaches that do not hold
/// (a tree missing, or something below it). Those of reached trees are
/// checked by the walk of the snapshots, which reports what they lack.
fn false_marks(
    store: &Store,
    bad: &HashMap<[u8; 32], String>,
    reached: &HashMap<TreeId, bool>,
) -> Result<Option<Problem>> {
    let mut damage = Damage::new(store, bad);
    let mut lying: Vec<TreeId> = Vec::new();
    for id in store.index().complete_trees()? {
        let id = TreeId(id);
        if !reached.contains_key(&id) && damage.tree_damaged(id)? {
            lying.push(id);
        }
    }
    Ok(lying.first().map(|first| {
        problem(format!(
            "{} tree(s) no snapshot reaches are marked complete but lack data below them \
             (first: tree {}): a push would skip what a standby lacks; \
             `hamn check --repair` clears the marks",
            lying.len(),
            first.short()
        ))
    }))
}

/// Recreate every distinct gzip-aware file of the snapshots whose objects
/// are all indexed and read back intact, and say which do not give back
/// their original bytes. Each failure is keyed by the first chunk of the
/// file's recreation record, so that the listing of affected paths names
/// every entry of the file.
fn recreation_failures(
    store: &Store,
    snaps: &[(SnapshotId, crate::snapshot::Snapshot)],
    bad: &HashMap<[u8; 32], String>,
) -> Result<Vec<([u8; 32], String)>> {
    let mut found = (HashSet::new(), HashMap::<[u8; 32], FileContent>::new());
    for (_, snap) in snaps {
        // An unreadable tree is reported by the damage walk.
        let _ = crate::walk::trees(
            store,
            snap.root,
            &mut found,
            |(seen, _), t| Ok(seen.insert(t.0)),
            |(_, files), _, tree| {
                for e in &tree.entries {
                    if let Kind::File(c) = &e.kind
                        && let Encoding::Gzip(g) = &c.encoding
                    {
                        files.entry(g.file_hash).or_insert_with(|| c.clone());
                    }
                }
                Ok(())
            },
        );
    }
    let mut files = Vec::new();
    for (hash, c) in found.1 {
        let mut intact = true;
        for r in c.stored_refs() {
            intact &= !bad.contains_key(&r.id.0) && store.index().get(&r.id.0)?.is_some();
        }
        if intact {
            files.push((hash, c));
        }
    }
    let reader = ContentReader::new(store);
    Ok(files
        .par_iter()
        .filter_map(|(hash, c)| {
            let e = reader.for_each_data(c, |_, _| Ok(())).err()?;
            Some((
                c.record_refs()[0].id.0,
                format!(
                    "gzip-aware file {} does not recreate: {e}",
                    &hex::encode(hash)[..16]
                ),
            ))
        })
        .collect())
}

/// The damage below each tree, found once per distinct tree.
struct Damage<'a> {
    store: &'a Store,
    /// Blobs that `--read-data` found damaged -> what is wrong.
    bad: &'a HashMap<[u8; 32], String>,
    /// Every tree reached -> whether it, or anything below it, is damaged.
    damaged: HashMap<TreeId, bool>,
    /// The readable trees with damage below them, for the listing pass.
    damaged_trees: HashMap<TreeId, Tree>,
    /// Chunks a tree names that the index does not hold -> message.
    missing_chunks: HashMap<[u8; 32], String>,
    /// Trees that are missing or do not decode -> message.
    unreadable_trees: HashMap<[u8; 32], String>,
}

impl<'a> Damage<'a> {
    fn new(store: &'a Store, bad: &'a HashMap<[u8; 32], String>) -> Self {
        Damage {
            store,
            bad,
            damaged: HashMap::new(),
            damaged_trees: HashMap::new(),
            missing_chunks: HashMap::new(),
            unreadable_trees: HashMap::new(),
        }
    }

    /// Whether `tree` or anything below it is damaged or missing. Trees are
    /// content-addressed, so the recursion cannot loop.
    fn tree_damaged(&mut self, tree: TreeId) -> Result<bool> {
        if let Some(d) = self.damaged.get(&tree) {
            return Ok(*d);
        }
        if self.bad.contains_key(&tree.0) {
            self.damaged.insert(tree, true);
            return Ok(true);
        }
        let t = match self.store.read_tree(tree) {
            Ok(t) => t,
            Err(
                e @ (Error::MissingObject { .. } | Error::Corrupt { .. } | Error::Malformed { .. }),
            ) => {
                self.unreadable_trees
                    .insert(tree.0, format!("tree {}: {e}", tree.short()));
                self.damaged.insert(tree, true);
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let mut damaged = false;
        for e in &t.entries {
            match &e.kind {
                Kind::Dir(id) => damaged |= self.tree_damaged(*id)?,
                Kind::File(c) => {
                    for ch in c.stored_refs() {
                        damaged |= self.chunk_damaged(ch.id.0)?;
                    }
                }
                _ => {}
            }
        }
        self.damaged.insert(tree, damaged);
        if damaged {
            self.damaged_trees.insert(tree, t);
        }
        Ok(damaged)
    }

    fn chunk_damaged(&mut self, hash: [u8; 32]) -> Result<bool> {
        if self.bad.contains_key(&hash) || self.missing_chunks.contains_key(&hash) {
            return Ok(true);
        }
        if self.store.index().get(&hash)?.is_some() {
            return Ok(false);
        }
        self.missing_chunks.insert(
            hash,
            format!("chunk {} is not in the store", hex::encode(hash)),
        );
        Ok(true)
    }

    /// Add `SNAPSHOT:PATH` of every damaged entry below `tree` (shown as
    /// `path`) to `out`, keyed by the damaged blob.
    fn affected(
        &self,
        sid: SnapshotId,
        tree: TreeId,
        path: &str,
        out: &mut HashMap<[u8; 32], Vec<String>>,
    ) {
        let label = |p: &str| format!("{}:{p}", sid.short());
        if !self.damaged.get(&tree).copied().unwrap_or(false) {
            return;
        }
        let Some(t) = self.damaged_trees.get(&tree) else {
            // The tree itself is damaged: its whole listing is lost.
            out.entry(tree.0).or_default().push(label(path));
            return;
        };
        for e in &t.entries {
            let child = crate::snapshot::child_path(path, &e.name);
            match &e.kind {
                Kind::Dir(id) => self.affected(sid, *id, &child, out),
                Kind::File(c) => {
                    let mut listed: Vec<[u8; 32]> = Vec::new();
                    for ch in c.stored_refs() {
                        let h = ch.id.0;
                        let hit = self.bad.contains_key(&h) || self.missing_chunks.contains_key(&h);
                        if hit && !listed.contains(&h) {
                            listed.push(h);
                            out.entry(h).or_default().push(label(&child));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs whose trailer was unusable; their intact records were indexed.
    pub packs_salvaged: Vec<String>,
    /// Where an index that could not be opened was moved before the rebuild.
    pub index_moved_aside: Option<std::path::PathBuf>,
    /// Blobs that read-data found damaged, removed from the index again.
    pub blobs_dropped: u64,
}

/// Rebuild the index from the pack files alone.
pub fn repair(store: &Store, _lock: &StoreLock) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    store.index().clear()?;
    for p in store.pack_files()? {
        let name = p.to_hex();
        let size = store
            .files()
            .info(FileKind::Pack, &name)?
            .map_or(0, |i| i.size);
        let locs = match pack::read_trailer(store.files(), p) {
            Ok(l) => l,
            Err(_) => {
                let data = store
                    .files()
                    .read(FileKind::Pack, &name)?
                    .unwrap_or_default();
                let l = pack::scan_records(&data, p)?;
                report.packs_salvaged.push(format!(
                    "{}: {} intact blobs",
                    store.pack_location(&p),
                    l.len()
                ));
                l
            }
        };
        store.index().add_pack(p, size, &locs, &[])?;
        report.packs_indexed += 1;
        report.blobs_indexed += locs.len() as u64;
    }
    Ok(report)
}

/// After a read-data check: remove the blobs found damaged from the index
/// and forget every completeness mark. Nothing then claims to hold them, so
/// the next snapshot reads their files again (an unchanged file's chunk
/// list is reused only while all its chunks are indexed) and the next push
/// to this store sends them again. Returns how many index rows went.
pub fn drop_damaged(store: &Store, _lock: &StoreLock, damaged: &[BlobLoc]) -> Result<u64> {
    if damaged.is_empty() {
        return Ok(0);
    }
    let removed = store.index().remove_blobs(damaged)?;
    store.index().clear_complete()?;
    Ok(removed)
}
