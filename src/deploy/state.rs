//! What is deployed under a root: kept in the store (one small file per
//! root), so `status`, `rollback` and the next `materialize` know the
//! deployed and previous snapshots.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::store::{Store, durable};

pub const DEPLOYMENTS_DIR: &str = "deployments";

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
}

fn file(store: &Store, root: &Path) -> PathBuf {
    let key = blake3::hash(root.as_os_str().as_encoded_bytes());
    store
        .root()
        .join(DEPLOYMENTS_DIR)
        .join(format!("{}.json", &key.to_hex()[..16]))
}

pub fn read(store: &Store, root: &Path) -> Result<DeployState> {
    let p = file(store, root);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::malformed("deployment state", format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployState {
            root: root.to_path_buf(),
            ..DeployState::default()
        }),
        Err(e) => Err(Error::io(p, e)),
    }
}

pub fn write(store: &Store, s: &DeployState) -> Result<()> {
    let p = file(store, &s.root);
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| Error::Other(e.to_string()))?;
    durable::write_atomic(&p, &store.tmp_dir(), &bytes)
}

/// Every snapshot some deployment in this store still needs (deployed or
/// previous generation), with which; retention must keep them.
pub fn pinned(store: &Store) -> Result<Vec<(SnapshotId, &'static str)>> {
    let dir = store.root().join(DEPLOYMENTS_DIR);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in rd {
        let e = e.map_err(|err| Error::io(&dir, err))?;
        let b = std::fs::read(e.path()).map_err(|err| Error::io(e.path(), err))?;
        let s: DeployState = serde_json::from_slice(&b).map_err(|err| {
            Error::malformed("deployment state", format!("{}: {err}", e.path().display()))
        })?;
        out.extend(s.deployed.map(|i| (i, "deployed")));
        out.extend(s.previous.map(|i| (i, "previous generation")));
    }
    Ok(out)
}
