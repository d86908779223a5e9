//! What is deployed under a root: kept in the store (one small file per
//! root), so `status`, `rollback` and the next `materialize` know the
//! deployed and previous snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::store::{FileKind, Store};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeployState {
    pub root: PathBuf,
    /// The deployed snapshot (hex in the file).
    pub deployed: Option<SnapshotId>,
    /// The previous generation's snapshot (None: it holds what was there
    /// before hamn, or there is none).
    pub previous: Option<SnapshotId>,
    pub time: String,
    /// The deployment committed but its `post_materialize` hooks have not
    /// all run yet (set at the commit, cleared after them): after a crash
    /// in between, the next materialize runs them.
    #[serde(default)]
    pub hooks_pending: bool,
    /// Per managed directory (its path, as in the plan), the ctime (Unix
    /// ns) its file system gave a mark made after this deployment had
    /// written every file of that directory's staging tree, before it went
    /// live ([`SEAL`]): a live file there whose ctime is older has not
    /// been written, renamed, linked or re-owned since. Each directory has
    /// its own: the directories are staged one after another, and may lie
    /// on file systems whose timestamps differ in granularity. Empty after
    /// a rollback (the generation swapped back may hold changes made while
    /// it was live before) and in older state files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seals: BTreeMap<String, i64>,
}

/// The mark in each generation directory whose ctime seals a deployment:
/// stamped by the same clock, at the same granularity, as the files
/// beside it.
pub const SEAL: &str = "seal";

/// The state file's name for `root`.
fn file(root: &Path) -> String {
    let key = blake3::hash(root.as_os_str().as_encoded_bytes());
    format!("{}.json", &key.to_hex()[..16])
}

fn decode(store: &Store, name: &str, bytes: &[u8]) -> Result<DeployState> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::malformed(
            "deployment state",
            format!(
                "{}: {e}",
                store.files().describe(FileKind::Deployment, name)
            ),
        )
    })
}

pub fn read(store: &Store, root: &Path) -> Result<DeployState> {
    let name = file(root);
    match store.files().read(FileKind::Deployment, &name)? {
        Some(b) => decode(store, &name, &b),
        None => Ok(DeployState {
            root: root.to_path_buf(),
            ..DeployState::default()
        }),
    }
}

pub fn write(store: &Store, s: &DeployState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| Error::Other(e.to_string()))?;
    store
        .files()
        .write_atomic(FileKind::Deployment, &file(&s.root), &bytes)
}

/// Every snapshot some deployment in this store still needs (deployed or
/// previous generation), with which; retention must keep them.
pub fn pinned(store: &Store) -> Result<Vec<(SnapshotId, &'static str)>> {
    let mut out = Vec::new();
    for name in store.files().list(FileKind::Deployment)? {
        // Removed since the listing: nothing to keep for it.
        let Some(b) = store.files().read(FileKind::Deployment, &name)? else {
            continue;
        };
        let s = decode(store, &name, &b)?;
        out.extend(s.deployed.map(|i| (i, "deployed")));
        out.extend(s.previous.map(|i| (i, "previous generation")));
    }
    Ok(out)
}
