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
//!
//! The files: `plan` (what must change, from one `lstat` per entry),
//! `apply` (a plan carried out in a staging tree, through `extract`),
//! `execute` (staging every managed path), `swap` (the journaled live
//! part), `journal` (the intent journal and recovery after a crash),
//! `rollback`, `hooks` (`post_materialize`), `state` (what is deployed
//! where, kept in the store) and `status` (drift).

pub mod apply;
mod execute;
mod hooks;
pub mod journal;
pub mod plan;
mod rollback;
pub mod state;
mod status;
mod swap;

pub use execute::execute;
pub use hooks::execute_with_hooks;
pub use plan::{plan, staging_bases};
pub use rollback::rollback;
pub use status::{Status, status};

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::id::SnapshotId;
use crate::snapshot::path_components;
use crate::tree::Entry;
use plan::{Action, PlanStats};

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
pub(super) const SHADOW_FILES: [&str; 4] = ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"];

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
    pub(super) kept_leaders: std::collections::HashMap<(u64, u64), plan::RelPath>,
    #[serde(skip)]
    pub(super) entry: Entry,
}

#[derive(Debug, serde::Serialize)]
pub struct FilePlan {
    pub path: String,
    pub live: PathBuf,
    pub unchanged: bool,
    pub bytes: u64,
    #[serde(skip)]
    pub(super) entry: Entry,
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
    /// Live files read to check them before they were linked or copied
    /// (those untouched since the live deployment was sealed are not), and
    /// their bytes.
    pub live_files_read: u64,
    pub live_bytes_read: u64,
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
            live_files_read: 0,
            live_bytes_read: 0,
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

pub(super) fn live_path(root: &Path, snap_path: &str) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in path_components(snap_path.as_bytes())? {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    Ok(p)
}

pub(super) fn is_mount_point(live: &Path) -> bool {
    match (
        std::fs::symlink_metadata(live),
        live.parent().map(std::fs::symlink_metadata),
    ) {
        (Ok(a), Some(Ok(b))) => a.is_dir() && a.dev() != b.dev(),
        _ => false,
    }
}

pub(super) fn now_text() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
