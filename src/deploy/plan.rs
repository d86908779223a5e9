//! Planning a deployment: compare a directory on disk with a snapshot tree
//! and list what must change (write, remove, re-own) to make them equal.
//! One `lstat` per entry, no reads of unchanged content. The same walk
//! finds drift in a live tree (`hamn status`).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::id::SnapshotId;
use crate::snapshot::{self, Found, Snapshot};
use crate::store::Store;
use crate::tree::{Entry, Kind, Tree};

use super::{
    DirPlan, FilePlan, PREVIOUS, Plan, STAGING, gen_dir, is_mount_point, live_path, state,
};

/// A path relative to the top of a walk: names joined by `/`, as bytes
/// (names may be any bytes but `/` and NUL). Shown lossily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(pub Vec<u8>);

impl RelPath {
    pub fn join(&self, name: &[u8]) -> RelPath {
        if self.0.is_empty() {
            RelPath(name.to_vec())
        } else {
            RelPath([&self.0[..], b"/", name].concat())
        }
    }

    pub fn is_below(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// (parent components, own name)
    pub fn split(&self) -> (Vec<&[u8]>, &[u8]) {
        let mut comps: Vec<&[u8]> = self.0.split(|b| *b == b'/').collect();
        let name = comps.pop().unwrap_or_default();
        (comps, name)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Remove whatever is at `path`.
    Remove { path: RelPath },
    /// Create the entry (a whole subtree for a directory), replacing
    /// whatever is there.
    Create {
        path: RelPath,
        #[serde(skip)]
        entry: Entry,
        bytes: u64,
    },
    /// Make `path` a hard link to `target` (both relative to the top).
    Link { path: RelPath, target: RelPath },
    /// Content is right; owner, mode, xattrs or mtime are not.
    Meta {
        path: RelPath,
        #[serde(skip)]
        entry: Entry,
    },
}

impl Action {
    pub fn path(&self) -> &RelPath {
        match self {
            Action::Remove { path }
            | Action::Create { path, .. }
            | Action::Link { path, .. }
            | Action::Meta { path, .. } => path,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PlanStats {
    pub entries_checked: u64,
    pub to_create: u64,
    pub to_remove: u64,
    pub to_reown: u64,
    pub to_link: u64,
    pub bytes_to_write: u64,
}

/// What is on disk, compared with what the snapshot says.
fn same_type(md: &Metadata, e: &Entry) -> bool {
    let ft = md.file_type();
    match &e.kind {
        Kind::File(_) => ft.is_file(),
        Kind::Dir(_) => ft.is_dir(),
        Kind::Symlink(_) => ft.is_symlink(),
        Kind::CharDev(r) => ft.is_char_device() && md.rdev() == *r,
        Kind::BlockDev(r) => ft.is_block_device() && md.rdev() == *r,
        Kind::Fifo => ft.is_fifo(),
        Kind::Socket => ft.is_socket(),
    }
}

/// A file on disk that is still the base snapshot's version (its size and
/// mtime) and whose chunks the target shares: its bytes are already right.
fn still_base_with_same_content(md: &Metadata, e: &Entry, base: Option<&Entry>) -> bool {
    match (&e.kind, base) {
        (
            Kind::File(c),
            Some(Entry {
                kind: Kind::File(bc),
                meta: bm,
                ..
            }),
        ) => {
            md.is_file()
                && c.same_content(bc)
                && md.size() == bc.size
                && md.mtime() == bm.mtime_sec
                && md.mtime_nsec() as u32 == bm.mtime_nsec
        }
        _ => false,
    }
}

/// Content (or link target) matches: same size and mtime for files.
fn same_content(path: &Path, md: &Metadata, e: &Entry) -> bool {
    match &e.kind {
        Kind::File(c) => {
            md.size() == c.size
                && md.mtime() == e.meta.mtime_sec
                && md.mtime_nsec() as u32 == e.meta.mtime_nsec
        }
        Kind::Symlink(t) => std::fs::read_link(path)
            .map(|l| l.as_os_str().as_bytes() == t.as_slice())
            .unwrap_or(false),
        _ => true,
    }
}

fn same_meta(path: &Path, md: &Metadata, e: &Entry) -> bool {
    crate::fs::read::has_meta(path, md, &e.meta)
}

/// A regular file with more than one name may be shared with the other
/// generation (see [`crate::extract::Extractor::share_with_live`]), also
/// when the snapshot gives it hard links of its own: it must be replaced,
/// never changed in place, or the other tree could change with it.
fn shared(md: &Metadata) -> bool {
    md.is_file() && md.nlink() > 1
}

/// (device, inode).
type Inode = (u64, u64);

pub struct Planner<'a> {
    store: &'a Store,
    /// (source dev, source ino) of hardlinked files -> first path planned,
    /// and its inode on disk when it is kept there.
    leaders: HashMap<Inode, (RelPath, Option<Inode>)>,
    pub actions: Vec<Action>,
    pub stats: PlanStats,
    /// Drift mode (for `status`): a directory is listed only for its own
    /// differences. Otherwise (staging) every directory with changes below
    /// gets its metadata set again after them.
    pub drift_only: bool,
    /// Only the files shared with another generation are checked (and
    /// re-created where they differ from the snapshot), nothing else: a
    /// previous generation before it is rolled back, whose shared files
    /// may have been changed in place through the live tree.
    pub shared_only: bool,
}

impl<'a> Planner<'a> {
    pub fn new(store: &'a Store) -> Self {
        Planner {
            store,
            leaders: HashMap::new(),
            actions: Vec::new(),
            stats: PlanStats::default(),
            drift_only: false,
            shared_only: false,
        }
    }

    fn create(&mut self, rel: RelPath, e: &Entry) -> Result<()> {
        let bytes = subtree_bytes(self.store, e)?;
        self.stats.to_create += 1;
        self.stats.bytes_to_write += bytes;
        self.actions.push(Action::Create {
            path: rel,
            entry: e.clone(),
            bytes,
        });
        Ok(())
    }

    /// Plan `disk` (a directory, which may be missing) to become `tree`.
    /// Paths in actions are relative to the top of the walk, with `rel`
    /// the position of `disk` below it. `base` is what the snapshot that
    /// `disk` was built from has there, when known: a file on disk that
    /// still is that version and whose content the target shares only
    /// needs its metadata (an mtime touched on the primary, say).
    pub fn dir(
        &mut self,
        disk: &Path,
        rel: &RelPath,
        tree: &Tree,
        base: Option<&Tree>,
    ) -> Result<()> {
        let mut present: Vec<Vec<u8>> = match std::fs::read_dir(disk) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                .collect::<std::io::Result<_>>()
                .at(disk)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(crate::Error::io(disk, e)),
        };
        present.sort();
        for name in present.iter().filter(|_| !self.shared_only) {
            if tree.get(name).is_none() {
                self.stats.to_remove += 1;
                self.actions.push(Action::Remove {
                    path: rel.join(name),
                });
            }
        }
        for e in &tree.entries {
            self.entry(disk, rel, e, base.and_then(|b| b.get(&e.name)))?;
        }
        Ok(())
    }

    /// Plan only the entries of `tree` found in `disk` (no removals): for
    /// single managed files.
    pub fn entries_only(&mut self, disk: &Path, tree: &Tree) -> Result<()> {
        for e in &tree.entries {
            self.entry(disk, &RelPath(Vec::new()), e, None)?;
        }
        Ok(())
    }

    fn entry(&mut self, disk: &Path, rel: &RelPath, e: &Entry, base: Option<&Entry>) -> Result<()> {
        self.stats.entries_checked += 1;
        let path: PathBuf = disk.join(std::ffi::OsStr::from_bytes(&e.name));
        let r = rel.join(&e.name);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => Some(md),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(crate::Error::io(&path, err)),
        };
        if self.shared_only {
            return self.shared_entry(&path, r, e, md);
        }
        // Hard links: the first of a group is planned as a file; the others
        // must be the same inode on disk.
        if let Kind::File(_) = &e.kind
            && e.meta.nlink > 1
        {
            let key = (e.meta.dev, e.meta.ino);
            if let Some((leader, leader_disk)) = self.leaders.get(&key).cloned() {
                let here = md.as_ref().map(|m| (m.dev(), m.ino()));
                if leader_disk.is_none() || here != leader_disk {
                    self.stats.to_link += 1;
                    self.actions.push(Action::Link {
                        path: r,
                        target: leader,
                    });
                }
                return Ok(());
            }
        }
        let Some(md) = md else {
            self.remember_leader(e, &r, None);
            return self.create(r, e);
        };
        let content_ok = same_type(&md, e)
            && (same_content(&path, &md, e) || still_base_with_same_content(&md, e, base));
        // Other metadata for a possibly shared file: a new inode, which the
        // other members of its hard-link group are then linked to.
        let replace = content_ok && !self.drift_only && shared(&md) && !same_meta(&path, &md, e);
        if !content_ok || replace {
            self.remember_leader(e, &r, None);
            return self.create(r, e);
        }
        self.remember_leader(e, &r, Some((md.dev(), md.ino())));
        if let Kind::Dir(id) = &e.kind {
            let sub = self.store.read_tree(*id)?;
            let base_sub = match base.map(|b| &b.kind) {
                Some(Kind::Dir(b)) => self.store.read_tree(*b).ok(),
                _ => None,
            };
            self.dir(&path, &r, &sub, base_sub.as_ref())?;
            // A directory's own mtime counts like its owner and mode: an
            // entry made and removed again on the primary (dpkg's
            // `updates/`, a chroot's `tmp/`) changes only that.
            let ok = same_meta(&path, &md, e)
                && md.mtime() == e.meta.mtime_sec
                && md.mtime_nsec() as u32 == e.meta.mtime_nsec;
            // A directory's times are set again after its contents change.
            let changed_below =
                !self.drift_only && self.actions.last().is_some_and(|a| a.path().is_below(&r));
            if !ok || changed_below {
                if !ok {
                    self.stats.to_reown += 1;
                }
                self.actions.push(Action::Meta {
                    path: r,
                    entry: e.clone(),
                });
            }
            return Ok(());
        }
        if !same_meta(&path, &md, e) {
            self.stats.to_reown += 1;
            self.actions.push(Action::Meta {
                path: r,
                entry: e.clone(),
            });
        }
        Ok(())
    }

    /// [`Planner::shared_only`]: re-create a shared file that is not the
    /// snapshot's version (files with hard links in the snapshot are left
    /// alone); walk directories. Only creates are planned: the caller
    /// keeps the directories' own metadata as it is.
    fn shared_entry(
        &mut self,
        path: &Path,
        r: RelPath,
        e: &Entry,
        md: Option<Metadata>,
    ) -> Result<()> {
        let Some(md) = md else {
            return Ok(());
        };
        match &e.kind {
            Kind::Dir(id) if md.is_dir() => {
                let sub = self.store.read_tree(*id)?;
                self.dir(path, &r, &sub, None)
            }
            Kind::File(_)
                if e.meta.nlink <= 1
                    && shared(&md)
                    && !(same_content(path, &md, e) && same_meta(path, &md, e)) =>
            {
                self.create(r, e)
            }
            _ => Ok(()),
        }
    }

    /// Hard-link groups whose first member is kept on disk as it is:
    /// (source dev, source ino) -> its path. A member that a created
    /// subtree holds, where the planner does not descend, is linked to it.
    pub fn kept_leaders(&self) -> HashMap<(u64, u64), RelPath> {
        self.leaders
            .iter()
            .filter(|(_, (_, disk))| disk.is_some())
            .map(|(k, (rel, _))| (*k, rel.clone()))
            .collect()
    }

    fn remember_leader(&mut self, e: &Entry, rel: &RelPath, disk: Option<(u64, u64)>) {
        if matches!(e.kind, Kind::File(_)) && e.meta.nlink > 1 {
            self.leaders
                .entry((e.meta.dev, e.meta.ino))
                .or_insert((rel.clone(), disk));
        }
    }
}

/// Walk `dir` on disk ahead of the planner, in the same order (names
/// sorted, depth first), `lstat`ing every entry so that the planner's own
/// `lstat`s find the inodes cached: with a cold cache the walk waits on
/// the disk for each inode, and two walkers keep two reads in flight.
/// Read-only and best effort: it stops at the first error or when `stop`
/// is set.
pub fn warm(dir: &Path, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<std::ffi::OsString> =
        rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let p = dir.join(n);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            warm(&p, stop);
        }
    }
}

/// Bytes a Create of `e` writes (a whole subtree for a directory).
fn subtree_bytes(store: &Store, e: &Entry) -> Result<u64> {
    let data = |e: &Entry| match &e.kind {
        Kind::File(c) => c.data_len(),
        _ => 0,
    };
    let mut n = data(e);
    if let Kind::Dir(id) = &e.kind {
        crate::walk::entries(store, *id, |e| n += data(e))?;
    }
    Ok(n)
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
pub(super) fn staging_base(generation: &Path) -> (PathBuf, &'static str) {
    if generation.join(STAGING).is_dir() {
        (generation.join(STAGING), "staging")
    } else if generation.join(PREVIOUS).is_dir() {
        (generation.join(PREVIOUS), "previous")
    } else {
        (generation.join(STAGING), "empty")
    }
}

/// The first managed path of `snap` that does not exist under `root`.
pub(super) fn missing_live(snap: &Snapshot, root: &Path) -> Result<Option<PathBuf>> {
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
pub(super) fn plan_paths(
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
                    s.spawn(|| warm(&base_path, &stop));
                    let planned =
                        planner.dir(&base_path, &RelPath(Vec::new()), &tree, base_tree.as_ref());
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
pub(super) fn same_managed_content(store: &Store, snap: &Snapshot, dep: SnapshotId) -> bool {
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
