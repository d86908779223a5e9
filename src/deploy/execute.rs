//! Carrying out a plan: each managed directory staged beside its live
//! tree from its base and made durable, each managed file written beside
//! its target, then the journaled swap (`swap`).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::journal::{self, DirSwap, FileSwap, Journal, Phase};
use super::rollback::REWRITE_TMP;
use super::state::{self, DeployState};
use super::swap::commit;
use super::*;
use crate::error::{Error, IoContext, Result};
use crate::fs::write::Dir;
use crate::snapshot::{Found, Snapshot, lookup, path_components};
use crate::store::{Store, StoreLock};
use crate::tree::{Kind, Meta};

/// Make the directories above a managed path exist, with the snapshot's
/// metadata where they are created.
pub(super) fn ensure_parents(store: &Store, snap: &Snapshot, root: &Path, p: &str) -> Result<Dir> {
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
                // The live trees did not change.
                seals: before.seals.clone(),
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
    // The snapshot the live trees hold, if nothing has changed them since
    // its deployment was sealed (checked per file by its ctime).
    let live_snap = before
        .deployed
        .filter(|_| !before.seals.is_empty())
        .and_then(|id| store.read_snapshot(id).ok());
    // Each managed directory's seal, as its staging tree is sealed.
    let mut seals = std::collections::BTreeMap::new();
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
        applier.live_deployed(live_snap.as_ref().and_then(|s| {
            let tree = match lookup(store, s.root, "", d.path.as_bytes()).ok()? {
                Found::Root(_) => s.root,
                Found::Entry(e) => match e.kind {
                    Kind::Dir(id) => id,
                    _ => return None,
                },
            };
            Some(crate::extract::LiveDeployed::new(
                tree,
                *before.seals.get(&d.path)?,
            ))
        }));
        // Without reflinks, a file the live tree already has exactly right
        // is shared with it (a hard link) rather than written again: when
        // a generation is brought forward, the files the live tree got
        // last time; when one is built from nothing (the second
        // deployment), nearly all of them. Rollback rewrites a shared file
        // changed in place through the live tree before it swaps
        // (`rollback::reconcile_shared`). Where reflinks make copies free,
        // files are reflinked instead and the generations share no inode.
        applier.share_with_live(!generation.supports_reflinks());
        applier.apply(&staging, &d.actions, &d.kept_leaders)?;
        let failed = set_top_meta(&generation, STAGING.as_bytes(), &staging, &d.entry.meta)?;
        stats.warnings.extend(failed);
        crate::failpoint::failpoint("deploy:sealing");
        seals.insert(d.path.clone(), stamp_seal(&generation)?);
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
    stats.live_files_read = a.live_files_read;
    stats.live_bytes_read = a.live_bytes_read;
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
            seals,
        },
    };
    commit(store, lock, &mut j)?;
    // A mount point keeps its own inode: give it the snapshot's metadata.
    for (live, meta) in mount_roots {
        let d = Dir::open_root(&live).at(&live)?;
        let up = live.parent().unwrap_or(Path::new("/"));
        let parent = Dir::open_root(up).at(up)?;
        let name = live.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        stats
            .warnings
            .extend(set_top_meta(&parent, name, &d, &meta)?);
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The swaps that bring the top-level entries of `incoming` into the
/// mount point `live` (and the current ones out into `incoming`).
pub(super) fn mount_entry_swaps(live: &Path, incoming: &Path) -> Result<Vec<journal::EntrySwap>> {
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
pub(super) fn stage_file(
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

/// Stamp the seal in the generation directory, once every file
/// of its staging tree is written: its ctime, from the file system.
fn stamp_seal(generation: &Dir) -> Result<i64> {
    let p = generation.child_path(state::SEAL.as_bytes());
    // A new inode: its ctime is the file system's now.
    let md = generation
        .create_file(state::SEAL.as_bytes())
        .and_then(|f| f.metadata())
        .at(&p)?;
    Ok(crate::fs::read::ctime_ns(&md))
}

/// Give a managed directory itself (`dir`, `parent`'s child `name`) the
/// snapshot's metadata, xattrs that the snapshot does not have removed
/// (a staging tree brought forward keeps those of its old generation).
fn set_top_meta(parent: &Dir, name: &[u8], dir: &Dir, meta: &Meta) -> Result<Vec<String>> {
    parent
        .drop_other_xattrs(name, &meta.xattrs)
        .at(dir.path())?;
    dir.set_meta(meta).at(dir.path())
}
