//! Deploying snapshots on the standby: `materialize` builds each managed
//! directory as a staging tree beside it (on the same file system) and
//! swaps it in with renameat2(RENAME_EXCHANGE); managed files are written
//! beside their targets and renamed over them. All live changes of one
//! deployment go under an intent journal (`journal`), so a crash leaves
//! the old set or the new set. The tree that was live stays as the
//! previous generation: `rollback` is one swap back.
//!
//! Never writes outside the root, never follows a symlink inside it while
//! writing (`fs::write`), and rejects hostile names before writing
//! (`tree` decoding).

pub mod apply;
pub mod journal;
pub mod plan;
pub mod state;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, IoContext, Result};
use crate::failpoint::failpoint;
use crate::fs::write::{Dir, PasswdLock, keeping_times};
use crate::id::SnapshotId;
use crate::restore::RestoreStats;
use crate::snapshot::{self, Found, Snapshot, path_components};
use crate::store::{Store, StoreLock};
use crate::tree::{Entry, Kind, Tree};
use journal::{DirSwap, FileSwap, Journal, Phase};
use plan::{Action, PlanStats, Planner};
use state::DeployState;

/// Generation directory of a managed directory: `.NAME.hamn` beside it,
/// or `.hamn.gen` inside it when it is a mount point (and so cannot be
/// renamed, and its siblings are on another file system).
pub fn gen_dir(live: &Path) -> PathBuf {
    if is_mount_point(live) {
        return live.join(MOUNT_GEN);
    }
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    live.with_file_name(format!(".{name}.hamn"))
}
pub const MOUNT_GEN: &str = ".hamn.gen";
pub const STAGING: &str = "staging";
pub const PREVIOUS: &str = "previous";
const SHADOW_FILES: [&str; 4] = ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"];

#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    pub root: PathBuf,
    pub dry_run: bool,
    pub post_materialize: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct DirPlan {
    pub path: String,
    pub live: PathBuf,
    /// Where staging starts from: "previous", "staging" or "empty".
    pub base: &'static str,
    pub mount_point: bool,
    pub stats: PlanStats,
    pub actions: Vec<Action>,
    /// Hard-link groups with a member kept on disk: where it is.
    #[serde(skip)]
    kept_leaders: std::collections::HashMap<(u64, u64), plan::RelPath>,
    #[serde(skip)]
    entry: Entry,
}

#[derive(Debug, serde::Serialize)]
pub struct FilePlan {
    pub path: String,
    pub live: PathBuf,
    pub unchanged: bool,
    pub bytes: u64,
    #[serde(skip)]
    entry: Entry,
}

#[derive(Debug, serde::Serialize)]
pub struct Plan {
    pub snapshot: SnapshotId,
    pub root: PathBuf,
    pub dirs: Vec<DirPlan>,
    pub files: Vec<FilePlan>,
    /// The snapshot is already deployed here: nothing to do.
    pub already_deployed: bool,
    /// The deployed snapshot has exactly the same managed paths (same
    /// entries, same tree ids): the new one is only recorded as deployed.
    pub same_content_as: Option<SnapshotId>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaterializeStats {
    pub snapshot: SnapshotId,
    pub previous: Option<SnapshotId>,
    pub files_written: u64,
    pub bytes_written: u64,
    /// Of the files written, those copied from the live tree (reflinked
    /// where the file system can) rather than rebuilt from chunks.
    pub files_copied: u64,
    pub bytes_copied: u64,
    /// Of the files copied, those reflinked (no data written), and their
    /// bytes.
    pub files_cloned: u64,
    pub bytes_cloned: u64,
    /// Files of the new generation that are hard links to their live copy
    /// (exactly the target already; no data written, not in
    /// `files_written`), and their bytes.
    pub files_linked: u64,
    pub bytes_linked: u64,
    pub entries_removed: u64,
    pub entries_reowned: u64,
    pub files_reused: u64,
    pub seconds: f64,
    pub already_deployed: bool,
    /// The deployed snapshot whose managed paths are identical to this
    /// one's: nothing on disk changed, the state now names this snapshot
    /// (the previous generation stays as it was).
    pub same_content_as: Option<SnapshotId>,
    pub warnings: Vec<String>,
    pub hook_failures: Vec<String>,
}

impl MaterializeStats {
    /// Nothing done yet: deploying `snapshot` over `previous`.
    pub fn new(snapshot: SnapshotId, previous: Option<SnapshotId>) -> Self {
        MaterializeStats {
            snapshot,
            previous,
            files_written: 0,
            bytes_written: 0,
            files_copied: 0,
            bytes_copied: 0,
            files_cloned: 0,
            bytes_cloned: 0,
            files_linked: 0,
            bytes_linked: 0,
            entries_removed: 0,
            entries_reowned: 0,
            files_reused: 0,
            seconds: 0.0,
            already_deployed: false,
            same_content_as: None,
            warnings: Vec::new(),
            hook_failures: Vec::new(),
        }
    }

    /// Log the deployment's warnings and failed `post_materialize` hooks,
    /// each after `from` (where it ran); whether there were any (exit 3).
    pub fn log_warnings(&self, from: &str) -> bool {
        for w in &self.warnings {
            crate::log::warn(&format!("{from}{w}"));
        }
        for h in &self.hook_failures {
            crate::log::warn(&format!(
                "{from}post_materialize {h}; the deployment stays in place"
            ));
        }
        !(self.warnings.is_empty() && self.hook_failures.is_empty())
    }

    /// Whether the deployment changed anything on disk (hooks run only then).
    pub fn changed_tree(&self) -> bool {
        !self.already_deployed && self.same_content_as.is_none()
    }
}

fn live_path(root: &Path, snap_path: &str) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in path_components(snap_path.as_bytes())? {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    Ok(p)
}

fn is_mount_point(live: &Path) -> bool {
    match (
        std::fs::symlink_metadata(live),
        live.parent().map(std::fs::symlink_metadata),
    ) {
        (Ok(a), Some(Ok(b))) => a.is_dir() && a.dev() != b.dev(),
        _ => false,
    }
}

/// Build the plan for deploying `snap` under `root` (nothing is changed).
///
/// A snapshot already deployed there, or with the deployed one's content,
/// needs no work, unless `force` is set or one of its managed paths is
/// missing from the live tree: then the managed paths are rebuilt from the
/// store like any other deployment, which also undoes drift.
pub fn plan(
    store: &Store,
    id: SnapshotId,
    snap: &Snapshot,
    root: &Path,
    force: bool,
) -> Result<Plan> {
    let st = state::read(store, root)?;
    let mut plan = Plan {
        snapshot: id,
        root: root.to_path_buf(),
        dirs: Vec::new(),
        files: Vec::new(),
        already_deployed: false,
        same_content_as: None,
    };
    let Some(dep) = st.deployed else {
        return plan_paths(store, &st, snap, plan);
    };
    let missing = missing_live(snap, root)?;
    if let Some(live) = &missing {
        crate::log::info(&format!(
            "{} is missing although snapshot {} is deployed under {}: deploying again",
            live.display(),
            dep.short(),
            root.display()
        ));
    }
    if !force && missing.is_none() {
        if dep == id {
            plan.already_deployed = true;
            return Ok(plan);
        }
        if same_managed_content(store, snap, dep) {
            plan.same_content_as = Some(dep);
            return Ok(plan);
        }
    }
    plan_paths(store, &st, snap, plan)
}

/// The trees the next deployment under `root` will plan against (each
/// managed directory's staging base), to warm the inode cache ahead of
/// it. Best effort: empty when nothing is deployed there.
pub fn staging_bases(store: &Store, root: &Path) -> Vec<PathBuf> {
    let Some(snap) = state::read(store, root)
        .ok()
        .and_then(|st| st.deployed)
        .and_then(|id| store.read_snapshot(id).ok())
    else {
        return Vec::new();
    };
    snap.paths
        .iter()
        .filter_map(|p| live_path(root, p).ok())
        .map(|live| staging_base(&gen_dir(&live)))
        .filter(|(_, base)| *base != "empty")
        .map(|(path, _)| path)
        .collect()
}

/// Where staging starts from in `generation`, and which base that is:
/// a staging tree left by a deployment that did not finish, else the
/// previous generation, else nothing ("empty": staging is made anew).
fn staging_base(generation: &Path) -> (PathBuf, &'static str) {
    if generation.join(STAGING).is_dir() {
        (generation.join(STAGING), "staging")
    } else if generation.join(PREVIOUS).is_dir() {
        (generation.join(PREVIOUS), "previous")
    } else {
        (generation.join(STAGING), "empty")
    }
}

/// The first managed path of `snap` that does not exist under `root`.
fn missing_live(snap: &Snapshot, root: &Path) -> Result<Option<PathBuf>> {
    for p in &snap.paths {
        let live = live_path(root, p)?;
        match live.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(live)),
            Err(e) => return Err(Error::io(&live, e)),
            Ok(_) => {}
        }
    }
    Ok(None)
}

/// Plan every managed path of `snap` into `plan`.
fn plan_paths(
    store: &Store,
    st: &state::DeployState,
    snap: &Snapshot,
    mut plan: Plan,
) -> Result<Plan> {
    let root = plan.root.clone();
    let root = root.as_path();
    let label = plan.snapshot.short();
    for p in &snap.paths {
        let live = live_path(root, p)?;
        let entry = match snapshot::lookup(store, snap.root, &label, p.as_bytes())? {
            Found::Entry(e) => e,
            Found::Root(_) => return Err(Error::Usage("'/' cannot be a managed path".into())),
        };
        match &entry.kind {
            Kind::Dir(tree_id) => {
                if live
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(Error::Usage(format!(
                        "{} is a symlink, but the snapshot has a directory there; hamn deploys \
                         real directories: replace the link by the directory it points to \
                         (or mount it there), then materialize again",
                        live.display()
                    )));
                }
                let tree = store.read_tree(*tree_id)?;
                let (base_path, base) = staging_base(&gen_dir(&live));
                // What the previous generation holds, when it is known.
                let base_tree = match (base, st.previous) {
                    ("previous", Some(prev)) => store
                        .read_snapshot(prev)
                        .ok()
                        .and_then(|ps| {
                            snapshot::lookup(store, ps.root, &prev.short(), p.as_bytes()).ok()
                        })
                        .and_then(|f| match f {
                            Found::Entry(Entry {
                                kind: Kind::Dir(t), ..
                            }) => store.read_tree(t).ok(),
                            _ => None,
                        }),
                    _ => None,
                };
                let mut planner = Planner::new(store);
                let stop = std::sync::atomic::AtomicBool::new(false);
                std::thread::scope(|s| {
                    s.spawn(|| plan::warm(&base_path, &stop));
                    let planned = planner.dir(
                        &base_path,
                        &plan::RelPath(Vec::new()),
                        &tree,
                        base_tree.as_ref(),
                    );
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    planned
                })?;
                plan.dirs.push(DirPlan {
                    path: p.clone(),
                    mount_point: is_mount_point(&live),
                    live,
                    base,
                    kept_leaders: planner.kept_leaders(),
                    stats: planner.stats,
                    actions: planner.actions,
                    entry,
                });
            }
            _ => {
                let mut planner = Planner::new(store);
                let parent = live.parent().unwrap_or(root).to_path_buf();
                let only = Tree {
                    entries: vec![entry.clone()],
                };
                planner.entries_only(&parent, &only)?;
                let bytes = match &entry.kind {
                    Kind::File(c) => c.data_len(),
                    _ => 0,
                };
                plan.files.push(FilePlan {
                    path: p.clone(),
                    live,
                    unchanged: planner.actions.is_empty(),
                    bytes,
                    entry,
                });
            }
        }
    }
    Ok(plan)
}

/// Whether the deployed snapshot `dep` has the same managed paths as
/// `snap` with identical entries (metadata and tree ids, so everything
/// below is identical too). A no-change night then costs no walk of the
/// standby's tree. Anything unreadable counts as different.
fn same_managed_content(store: &Store, snap: &Snapshot, dep: SnapshotId) -> bool {
    let Ok(deployed) = store.read_snapshot(dep) else {
        return false;
    };
    if deployed.paths != snap.paths {
        return false;
    }
    let entry =
        |root, label: &str, p: &str| match snapshot::lookup(store, root, label, p.as_bytes()) {
            Ok(Found::Entry(e)) => Some(e),
            _ => None,
        };
    snap.paths.iter().all(|p| {
        let new = entry(snap.root, "new", p);
        new.is_some() && new == entry(deployed.root, "deployed", p)
    })
}

/// Make the directories above a managed path exist, with the snapshot's
/// metadata where they are created.
fn ensure_parents(store: &Store, snap: &Snapshot, root: &Path, p: &str) -> Result<Dir> {
    let comps = path_components(p.as_bytes())?;
    let mut dir = Dir::open_root(root).at(root)?;
    let mut tree = store.read_tree(snap.root)?;
    for c in &comps[..comps.len().saturating_sub(1)] {
        let e = tree
            .get(c)
            .ok_or_else(|| Error::malformed("snapshot", "managed path missing from its tree"))?
            .clone();
        let Kind::Dir(id) = e.kind else {
            return Err(Error::malformed(
                "snapshot",
                "a managed path's parent is not a directory",
            ));
        };
        let existed = dir.kind_of(c).at(dir.child_path(c))?.is_some();
        let child = dir.make_dir(c).at(dir.child_path(c))?;
        if !existed {
            child.set_meta(&e.meta).at(child.path())?;
        }
        dir = child;
        tree = store.read_tree(id)?;
    }
    Ok(dir)
}

fn now_text() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Deploy a planned snapshot. The caller holds the store lock.
pub fn execute(
    store: &Store,
    lock: &StoreLock,
    snap: &Snapshot,
    plan: Plan,
    opts: &MaterializeOptions,
) -> Result<MaterializeStats> {
    let started = Instant::now();
    let before = state::read(store, &opts.root)?;
    let mut stats = MaterializeStats::new(plan.snapshot, before.deployed);
    if plan.already_deployed {
        stats.already_deployed = true;
        return Ok(stats);
    }
    if let Some(dep) = plan.same_content_as {
        state::write(
            store,
            &state::DeployState {
                root: opts.root.clone(),
                deployed: Some(plan.snapshot),
                previous: before.previous,
                time: now_text(),
                hooks_pending: before.hooks_pending,
            },
        )?;
        stats.same_content_as = Some(dep);
        stats.seconds = started.elapsed().as_secs_f64();
        return Ok(stats);
    }
    let mut dir_swaps = Vec::new();
    let mut entry_swaps = Vec::new();
    let mut gen_renames = Vec::new();
    let mut mount_roots = Vec::new();
    let mut file_swaps = Vec::new();
    let mut applier = apply::Applier::new(store);
    for d in &plan.dirs {
        ensure_parents(store, snap, &opts.root, &d.path)?;
        if d.mount_point {
            crate::log::info(&format!(
                "{} is a mount point and cannot be swapped as a whole: its top-level entries \
                 are swapped one by one instead",
                d.live.display()
            ));
        }
        let gen_path = gen_dir(&d.live);
        crate::store::durable::create_private_dir(&gen_path)?;
        let generation = Dir::open_root(&gen_path).at(&gen_path)?;
        // A rollback killed while rewriting a shared file left this.
        generation
            .remove(REWRITE_TMP.as_bytes())
            .at(gen_path.join(REWRITE_TMP))?;
        if d.base == "previous" {
            generation
                .rename(PREVIOUS.as_bytes(), &generation, STAGING.as_bytes())
                .at(&gen_path)?;
        }
        let staging = generation
            .make_dir(STAGING.as_bytes())
            .at(gen_path.join(STAGING))?;
        if d.live.is_dir() {
            applier.reuse_from(gen_path.join(STAGING), d.live.clone());
        }
        // Bringing a generation forward creates mostly the files the live
        // tree got last time: without reflinks, those are shared with it
        // (hard links) rather than written again. A generation built from
        // nothing gets its own copies, so that the two stay independent
        // for the next nights' metadata-only changes; so does every file
        // where reflinks make copies free.
        applier.share_with_live(d.base != "empty" && !generation.supports_reflinks());
        applier.apply(&staging, &d.actions, &d.kept_leaders)?;
        let failed = staging.set_meta(&d.entry.meta).at(staging.path())?;
        stats.warnings.extend(failed);
        // Everything staged is durable before it can become live.
        staging.syncfs().at(staging.path())?;
        let had_live = d.live.symlink_metadata().is_ok();
        if had_live && !d.live.is_dir() {
            return Err(Error::Other(format!(
                "{} exists but is not a directory; move it away first",
                d.live.display()
            )));
        }
        if d.mount_point {
            entry_swaps.extend(mount_entry_swaps(&d.live, &gen_path.join(STAGING))?);
            gen_renames.push(journal::GenRename {
                gen_dir: gen_path.clone(),
                from: STAGING.into(),
                to: PREVIOUS.into(),
            });
            mount_roots.push((d.live.clone(), d.entry.meta.clone()));
        } else {
            dir_swaps.push(DirSwap {
                live: d.live.clone(),
                gen_dir: gen_path.clone(),
                incoming: STAGING.into(),
                incoming_ino: std::fs::metadata(gen_path.join(STAGING))
                    .at(&gen_path)?
                    .ino(),
                had_live,
                outgoing_as: PREVIOUS.into(),
            });
        }
        stats.entries_removed += d.stats.to_remove;
        stats.entries_reowned += d.stats.to_reown;
        stats.files_reused += d.stats.entries_checked - d.stats.to_create;
    }
    applier.forget_link_groups();
    for f in &plan.files {
        if f.unchanged {
            stats.files_reused += 1;
            continue;
        }
        file_swaps.push(stage_file(store, snap, &opts.root, f, &mut applier)?);
    }
    let a = applier.finish();
    stats.files_written = a.files;
    stats.bytes_written = a.bytes_written;
    stats.files_copied = a.files_copied;
    stats.bytes_copied = a.bytes_copied;
    stats.files_cloned = a.files_cloned;
    stats.bytes_cloned = a.bytes_cloned;
    stats.files_linked = a.files_linked;
    stats.bytes_linked = a.bytes_linked;
    stats.warnings.extend(a.warnings);
    if !a.errors.is_empty() {
        return Err(Error::Other(format!(
            "{} entries could not be written (first: {}); nothing was deployed",
            a.errors.len(),
            a.errors[0]
        )));
    }
    // A managed directory with no live tree to swap out leaves no previous
    // generation: there is then nothing to roll back to.
    if dir_swaps.iter().any(|d| !d.had_live) {
        stats.previous = None;
    }
    let mut j = Journal {
        version: 1,
        phase: Phase::Prepared,
        root: opts.root.clone(),
        dirs: dir_swaps,
        entries: entry_swaps,
        gen_renames,
        files: file_swaps,
        state_after: DeployState {
            root: opts.root.clone(),
            deployed: Some(plan.snapshot),
            previous: stats.previous,
            time: now_text(),
            hooks_pending: !opts.post_materialize.is_empty(),
        },
    };
    commit(store, lock, &mut j)?;
    // A mount point keeps its own inode: give it the snapshot's metadata.
    for (live, meta) in mount_roots {
        let d = Dir::open_root(&live).at(&live)?;
        stats.warnings.extend(d.set_meta(&meta).at(&live)?);
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The swaps that bring the top-level entries of `incoming` into the
/// mount point `live` (and the current ones out into `incoming`).
fn mount_entry_swaps(live: &Path, incoming: &Path) -> Result<Vec<journal::EntrySwap>> {
    use journal::{EntryOp, EntrySwap};
    let names = |p: &Path| -> Result<Vec<Vec<u8>>> {
        let mut v: Vec<Vec<u8>> = Dir::open_root(p)
            .at(p)?
            .names()
            .at(p)?
            .into_iter()
            .filter(|n| n.as_slice() != MOUNT_GEN.as_bytes())
            .collect();
        v.sort();
        Ok(v)
    };
    let (old, new) = (names(live)?, names(incoming)?);
    let ino = |p: PathBuf| -> Result<u64> { Ok(std::fs::symlink_metadata(&p).at(&p)?.ino()) };
    let mut out = Vec::new();
    for n in &new {
        let op = if old.contains(n) {
            EntryOp::Exchange
        } else {
            EntryOp::In
        };
        out.push(EntrySwap {
            live_dir: live.to_path_buf(),
            staging: incoming.to_path_buf(),
            name: n.clone(),
            op,
            ino: ino(incoming.join(std::ffi::OsStr::from_bytes(n)))?,
        });
    }
    for n in old.iter().filter(|n| !new.contains(n)) {
        out.push(EntrySwap {
            live_dir: live.to_path_buf(),
            staging: incoming.to_path_buf(),
            name: n.clone(),
            op: EntryOp::Out,
            ino: ino(live.join(std::ffi::OsStr::from_bytes(n)))?,
        });
    }
    Ok(out)
}

/// Write a managed file's new version beside it (`.NAME.hamn-new`, made
/// durable) and say how it will be swapped in.
fn stage_file(
    store: &Store,
    snap: &Snapshot,
    root: &Path,
    f: &FilePlan,
    applier: &mut apply::Applier<'_>,
) -> Result<FileSwap> {
    let parent = ensure_parents(store, snap, root, &f.path)?;
    let name = f.entry.name.clone();
    let tmp_name = [b".", &name[..], b".hamn-new"].concat();
    let mut tmp_entry = f.entry.clone();
    tmp_entry.name = tmp_name.clone();
    applier.create_entry(&parent, &tmp_entry)?;
    parent.syncfs().at(parent.path())?;
    Ok(FileSwap {
        target: f.live.clone(),
        tmp: parent.child_path(&tmp_name),
        backup: parent.child_path(&[b".", &name[..], b".hamn-old"].concat()),
        existed: parent.kind_of(&name).at(&f.live)?.is_some(),
        tmp_ino: parent
            .ident_of(&tmp_name)
            .at(parent.child_path(&tmp_name))?
            .map(|i| i.1)
            .unwrap_or(0),
    })
}

/// The live part: journal, swap, rename, mark committed, clean up.
fn commit(store: &Store, lock: &StoreLock, j: &mut Journal) -> Result<()> {
    journal::write(store, j)?;
    failpoint("deploy:prepared");
    let result = swap_all(j);
    if let Err(e) = result {
        // Put the old set back now rather than at the next command.
        let _ = journal::recover(store, lock);
        return Err(e);
    }
    j.phase = Phase::Committed;
    journal::write(store, j)?;
    failpoint("deploy:committed");
    journal::finish(store, j)
}

fn swap_all(j: &Journal) -> Result<()> {
    for d in &j.dirs {
        let generation = Dir::open_root(&d.gen_dir).at(&d.gen_dir)?;
        let parent_path = d.live.parent().unwrap_or(Path::new("/"));
        let parent = Dir::open_root(parent_path).at(parent_path)?;
        let name = d
            .live
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let incoming = d.incoming.as_bytes();
        let r = if d.had_live {
            keeping_times(
                &[
                    (&generation, incoming, &parent, &name),
                    (&parent, &name, &generation, incoming),
                ],
                || parent.exchange(&name, &generation, incoming),
            )
        } else {
            keeping_times(&[(&generation, incoming, &parent, &name)], || {
                generation.rename(incoming, &parent, &name)
            })
        };
        r.map_err(|e| {
            if e.raw_os_error() == Some(libc::EXDEV) {
                Error::Other(format!(
                    "{} and {} are on different file systems; the generation directory must be \
                     on the same file system as the managed directory",
                    d.live.display(),
                    d.gen_dir.display()
                ))
            } else {
                Error::io(&d.live, e)
            }
        })?;
        parent.fsync().at(parent_path)?;
        failpoint("deploy:dir-swapped");
    }
    for e in &j.entries {
        let live = Dir::open_root(&e.live_dir).at(&e.live_dir)?;
        let staging = Dir::open_root(&e.staging).at(&e.staging)?;
        let here = live.child_path(&e.name);
        let n = &e.name[..];
        match e.op {
            journal::EntryOp::Exchange => {
                keeping_times(&[(&staging, n, &live, n), (&live, n, &staging, n)], || {
                    live.exchange(n, &staging, n)
                })
            }
            journal::EntryOp::In => {
                keeping_times(&[(&staging, n, &live, n)], || staging.rename(n, &live, n))
            }
            journal::EntryOp::Out => {
                keeping_times(&[(&live, n, &staging, n)], || live.rename(n, &staging, n))
            }
        }
        .at(&here)?;
        failpoint("deploy:entry-swapped");
    }
    let mount_roots: std::collections::BTreeSet<&PathBuf> =
        j.entries.iter().map(|e| &e.live_dir).collect();
    for d in mount_roots {
        Dir::open_root(d).at(d)?.fsync().at(d)?;
    }
    let needs_pwlock = j
        .files
        .iter()
        .any(|f| SHADOW_FILES.iter().any(|s| f.target == j.root.join(s)));
    let _pw = if needs_pwlock {
        Some(
            PasswdLock::acquire(&j.root, std::time::Duration::from_secs(15))
                .map_err(|e| Error::io(j.root.join("etc/.pwd.lock"), e))?,
        )
    } else {
        None
    };
    for f in &j.files {
        let parent_path = f.target.parent().unwrap_or(Path::new("/"));
        let parent = Dir::open_root(parent_path).at(parent_path)?;
        let name = f
            .target
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let tmp = f
            .tmp
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let backup = f
            .backup
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        if f.existed {
            parent.remove(&backup).at(&f.backup)?;
            parent.link_to(&name, &parent, &backup).at(&f.backup)?;
            failpoint("deploy:file-linked");
        }
        parent.rename(&tmp, &parent, &name).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Error::Other(format!(
                    "{} is busy (a bind mount?) and cannot be replaced; nothing was changed",
                    f.target.display()
                ))
            } else {
                Error::io(&f.target, e)
            }
        })?;
        parent.fsync().at(parent_path)?;
        failpoint("deploy:file-renamed");
    }
    Ok(())
}

/// [`execute`], then the `post_materialize` hooks: after a deployment that
/// changed something, and also when the state says the hooks of the
/// deployed snapshot are still pending (a crash came between the commit
/// and their end, so they may run twice). Returns the stats with the
/// hooks' failures.
pub fn execute_with_hooks(
    store: &Store,
    lock: &StoreLock,
    snap: &Snapshot,
    plan: Plan,
    opts: &MaterializeOptions,
) -> Result<MaterializeStats> {
    let mut stats = execute(store, lock, snap, plan, opts)?;
    let st = state::read(store, &opts.root)?;
    let Some(deployed) = st.deployed else {
        return Ok(stats);
    };
    if !stats.changed_tree() && !st.hooks_pending {
        return Ok(stats);
    }
    if !stats.changed_tree() && !opts.post_materialize.is_empty() {
        crate::log::info(&format!(
            "the post_materialize hooks of the deployment of {} under {} did not all run \
             (interrupted): running them now",
            deployed.short(),
            opts.root.display()
        ));
    }
    stats.hook_failures = run_hooks(&opts.post_materialize, &deployed, &opts.root);
    if st.hooks_pending {
        // The deployment and its hooks are done either way; at worst the
        // hooks run once more next time.
        let cleared = DeployState {
            hooks_pending: false,
            ..st
        };
        if let Err(e) = state::write(store, &cleared) {
            stats.warnings.push(format!(
                "the post_materialize hooks ran but could not be recorded as done ({e}); \
                 they will run again at the next materialize"
            ));
        }
    }
    Ok(stats)
}

/// Run post_materialize hooks; failures are reported, the deployment stays.
fn run_hooks(commands: &[String], id: &SnapshotId, root: &Path) -> Vec<String> {
    let env = [
        ("HAMN_SNAPSHOT", id.to_hex()),
        ("HAMN_ROOT", root.display().to_string()),
    ];
    let mut failures = Vec::new();
    for c in commands {
        if let Err(e) = crate::snapshot::create::run_hooks(std::slice::from_ref(c), &env) {
            failures.push(e.to_string());
        }
    }
    failures
}

/// Swap every managed directory back with its previous generation and
/// put back the previous snapshot's managed files.
pub fn rollback(store: &Store, lock: &StoreLock, root: &Path) -> Result<MaterializeStats> {
    let started = Instant::now();
    let st = state::read(store, root)?;
    let deployed = st
        .deployed
        .ok_or_else(|| Error::Other(format!("nothing is deployed under {}", root.display())))?;
    let Some(previous) = st.previous else {
        return Err(Error::Other(format!(
            "no previous generation under {} to roll back to (materialize an older snapshot instead)",
            root.display()
        )));
    };
    let cur = store.read_snapshot(deployed)?;
    let prev = store.read_snapshot(previous)?;
    if let Some(generation) = consumed_previous(&cur, root)? {
        // A deployment that did not finish took GEN/previous as its
        // staging base: the previous snapshot is rebuilt from that
        // staging tree (and the live tree, and the store) and deployed,
        // which leaves the same state as a rollback.
        crate::log::info(&format!(
            "{} was taken as the base of a deployment that did not finish: rebuilding \
             snapshot {} from it and deploying that",
            generation.display(),
            previous.short()
        ));
        let plan = plan(store, previous, &prev, root, true)?;
        let opts = MaterializeOptions {
            root: root.to_path_buf(),
            dry_run: false,
            post_materialize: Vec::new(),
        };
        return execute(store, lock, &prev, plan, &opts);
    }
    let mut applier = apply::Applier::new(store);
    let mut dirs = Vec::new();
    let mut entries = Vec::new();
    let mut to_reconcile = Vec::new();
    for p in &cur.paths {
        let live = live_path(root, p)?;
        let generation = gen_dir(&live);
        if !live.is_dir()
            || live
                .symlink_metadata()
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(true)
        {
            continue;
        }
        if !generation.join(PREVIOUS).is_dir() {
            return Err(Error::Other(format!(
                "{} has no previous generation in {}",
                live.display(),
                generation.display()
            )));
        }
        if let Found::Entry(e) =
            snapshot::lookup(store, prev.root, &previous.short(), p.as_bytes())?
        {
            to_reconcile.push((generation.clone(), e));
        }
        if is_mount_point(&live) {
            entries.extend(mount_entry_swaps(&live, &generation.join(PREVIOUS))?);
            continue;
        }
        dirs.push(DirSwap {
            live,
            gen_dir: generation.clone(),
            incoming: PREVIOUS.into(),
            incoming_ino: std::fs::metadata(generation.join(PREVIOUS))
                .at(&generation)?
                .ino(),
            had_live: true,
            outgoing_as: PREVIOUS.into(),
        });
    }
    // Managed files come back from the previous snapshot, journaled.
    let st = state::read(store, root)?;
    let mut file_plan = plan_paths(
        store,
        &st,
        &prev,
        Plan {
            snapshot: previous,
            root: root.to_path_buf(),
            dirs: Vec::new(),
            files: Vec::new(),
            already_deployed: false,
            same_content_as: None,
        },
    )?;
    file_plan.dirs.clear();
    let mut files = Vec::new();
    for f in &file_plan.files {
        if f.unchanged {
            continue;
        }
        files.push(stage_file(store, &prev, root, f, &mut applier)?);
    }
    let mut a = applier.finish();
    if a.errors.is_empty() {
        for (generation, e) in &to_reconcile {
            a.add(reconcile_shared(store, generation, e)?);
        }
    }
    if !a.errors.is_empty() {
        return Err(Error::Other(format!(
            "{} entries could not be written (first: {}); nothing was rolled back",
            a.errors.len(),
            a.errors[0]
        )));
    }
    let mut j = Journal {
        version: 1,
        phase: Phase::Prepared,
        root: root.to_path_buf(),
        dirs,
        entries,
        gen_renames: Vec::new(),
        files,
        state_after: DeployState {
            root: root.to_path_buf(),
            deployed: Some(previous),
            previous: Some(deployed),
            time: now_text(),
            hooks_pending: false,
        },
    };
    commit(store, lock, &mut j)?;
    Ok(MaterializeStats {
        files_written: a.files,
        bytes_written: a.bytes_written,
        seconds: started.elapsed().as_secs_f64(),
        warnings: a.warnings,
        ..MaterializeStats::new(previous, Some(deployed))
    })
}

/// The generation directory of the first managed directory of `snap`
/// under `root` whose previous generation was consumed as the staging
/// base of a deployment that did not finish (`GEN/staging` and no
/// `GEN/previous`).
fn consumed_previous(snap: &Snapshot, root: &Path) -> Result<Option<PathBuf>> {
    for p in &snap.paths {
        let generation = gen_dir(&live_path(root, p)?);
        if !generation.join(PREVIOUS).is_dir() && generation.join(STAGING).is_dir() {
            return Ok(Some(generation));
        }
    }
    Ok(None)
}

/// The scratch file in GEN that a shared file of `GEN/previous` is
/// rewritten into before it is renamed over its name.
const REWRITE_TMP: &str = "rewrite.tmp";

/// Before a rollback: rewrite from the store the files of `GEN/previous`
/// (the snapshot's `entry`) that it shares with the live tree and that
/// are no longer the snapshot's version, having been changed in place
/// through the live tree; the live tree keeps its changed copies. Each is
/// written whole beside the tree, then renamed over its name, so a crash
/// or damaged data leaves the shared name as it was (and the next
/// rollback finds it again); the directory keeps its times. Damaged data
/// is in the returned stats' errors.
fn reconcile_shared(store: &Store, generation: &Path, entry: &Entry) -> Result<RestoreStats> {
    let mut applier = apply::Applier::new(store);
    let Kind::Dir(tree) = entry.kind else {
        return Ok(applier.finish());
    };
    let tree = store.read_tree(tree)?;
    let prev_dir = generation.join(PREVIOUS);
    let mut planner = Planner::new(store);
    planner.shared_only = true;
    planner.dir(&prev_dir, &plan::RelPath(Vec::new()), &tree, None)?;
    if planner.actions.is_empty() {
        return Ok(applier.finish());
    }
    crate::log::info(&format!(
        "{}: {} files shared with the live tree were changed in place there; \
         rewriting them from the store before the rollback",
        prev_dir.display(),
        planner.stats.to_create
    ));
    let gen_dir = Dir::open_root(generation).at(generation)?;
    let tmp = REWRITE_TMP.as_bytes();
    for a in &planner.actions {
        let plan::Action::Create { path, entry, .. } = a else {
            continue;
        };
        let (comps, name) = path.split();
        // GEN, then `previous` and the directories down to the file's.
        let mut chain = vec![(
            PREVIOUS.as_bytes(),
            gen_dir.open_dir(PREVIOUS.as_bytes()).at(&prev_dir)?,
        )];
        for c in comps {
            let up = &chain[chain.len() - 1].1;
            let d = up.open_dir(c).at(up.child_path(c))?;
            chain.push((c, d));
        }
        let (parent_name, parent) = &chain[chain.len() - 1];
        let grand = chain.len().checked_sub(2).map_or(&gen_dir, |i| &chain[i].1);
        let times = grand.times_of(parent_name).at(parent.path())?;
        let mut e = entry.clone();
        e.name = tmp.to_vec();
        applier.create_entry(&gen_dir, &e)?;
        if gen_dir.kind_of(tmp).at(gen_dir.child_path(tmp))?.is_some() {
            let to = parent.child_path(name);
            let written = gen_dir.open_file(tmp).at(&to)?;
            written.sync_all().at(&to)?;
            failpoint("rollback:rewrite-written");
            gen_dir.rename(tmp, parent, name).at(&to)?;
            grand.set_times_of(parent_name, &times).at(parent.path())?;
        }
    }
    gen_dir.syncfs().at(generation)?;
    Ok(applier.finish())
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub root: PathBuf,
    pub deployed: Option<SnapshotId>,
    pub deployed_time: Option<String>,
    pub previous: Option<SnapshotId>,
    pub newest: Option<SnapshotId>,
    pub newest_time: Option<String>,
    /// Snapshots in the store newer than the deployed one.
    pub behind: u64,
    /// Live paths that differ from the deployed snapshot.
    pub drifted: Vec<String>,
}

/// What is deployed under `root`, and whether the live tree drifted.
pub fn status(store: &Store, root: &Path) -> Result<Status> {
    let st = state::read(store, root)?;
    let all = store.snapshots()?;
    let newest = all.last();
    let time = |s: &Snapshot| {
        s.time_local()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    let mut out = Status {
        root: root.to_path_buf(),
        deployed: st.deployed,
        deployed_time: None,
        previous: st.previous,
        newest: newest.map(|(id, _)| *id),
        newest_time: newest.map(|(_, s)| time(s)),
        behind: 0,
        drifted: Vec::new(),
    };
    let Some(dep) = st.deployed else {
        return Ok(out);
    };
    let snap = store.read_snapshot(dep)?;
    out.deployed_time = Some(time(&snap));
    out.behind = all.iter().filter(|(_, s)| s.time_ns > snap.time_ns).count() as u64;
    for p in &snap.paths {
        let live = live_path(root, p)?;
        let entry = match snapshot::lookup(store, snap.root, &dep.short(), p.as_bytes())? {
            Found::Entry(e) => e,
            Found::Root(_) => continue,
        };
        let mut planner = Planner::new(store);
        planner.drift_only = true;
        match &entry.kind {
            Kind::Dir(id) => {
                let tree = store.read_tree(*id)?;
                planner.dir(&live, &plan::RelPath(Vec::new()), &tree, None)?;
                out.drifted.extend(
                    planner
                        .actions
                        .iter()
                        .filter(|a| a.path().0 != MOUNT_GEN.as_bytes())
                        .map(|a| format!("{p}/{}", a.path())),
                );
            }
            _ => {
                let parent = live.parent().unwrap_or(root).to_path_buf();
                planner.entries_only(
                    &parent,
                    &Tree {
                        entries: vec![entry],
                    },
                )?;
                if !planner.actions.is_empty() {
                    out.drifted.push(p.clone());
                }
            }
        }
    }
    Ok(out)
}
