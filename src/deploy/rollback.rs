//! Rolling back: the previous generation swapped in again (its files
//! shared with the live tree and changed in place there rewritten from
//! the store first), the previous snapshot's managed files put back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::execute::{mount_entry_swaps, stage_file};
use super::journal::{DirSwap, Journal, Phase};
use super::plan::plan_paths;
use super::plan::{self, Planner};
use super::state::{self, DeployState};
use super::swap::commit;
use super::*;
use crate::error::{Error, IoContext, Result};
use crate::extract::ExtractStats;
use crate::failpoint::failpoint;
use crate::fs::write::Dir;
use crate::snapshot::{self, Found, Snapshot};
use crate::store::{Store, StoreLock};
use crate::tree::{Entry, Kind};

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
            seals: Default::default(),
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
pub(super) fn consumed_previous(snap: &Snapshot, root: &Path) -> Result<Option<PathBuf>> {
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
pub(super) const REWRITE_TMP: &str = "rewrite.tmp";

/// Before a rollback: rewrite from the store the files of `GEN/previous`
/// (the snapshot's `entry`) that it shares with the live tree and that
/// are no longer the snapshot's version, having been changed in place
/// through the live tree; the live tree keeps its changed copies. Each is
/// written whole beside the tree, then renamed over its name, so a crash
/// or damaged data leaves the shared name as it was (and the next
/// rollback finds it again); the directory keeps its times. Damaged data
/// is in the returned stats' errors.
pub(super) fn reconcile_shared(
    store: &Store,
    generation: &Path,
    entry: &Entry,
) -> Result<ExtractStats> {
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
