//! What the primary knows of each node it syncs (the standby, xCAT
//! service nodes): one small record per node in the primary's store,
//! written by `sync` after each node's turn. `status` shows them, and
//! retention keeps the newest snapshot each node is known to hold, so a
//! node that was down for some nights still finds its delta bases.

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::store::{FileKind, Store, StoreLock};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Where the node's store was reached (its URL, secrets left out).
    pub url: String,
    /// When a run last tried this node (RFC 3339), and whether it worked.
    pub last_run: String,
    pub ok: bool,
    /// The failure of the last run, when it failed.
    pub error: Option<String>,
    /// End of the last run that succeeded (Unix time).
    pub last_success_unix: Option<f64>,
    /// The newest snapshot the node is known to hold (pushed there and
    /// confirmed), and its time.
    pub newest: Option<SnapshotId>,
    pub newest_time_ns: Option<i64>,
    /// The snapshot `sync` last had the node deploy.
    pub deployed: Option<SnapshotId>,
}

fn file(name: &str) -> String {
    format!("{name}.json")
}

pub fn read(store: &Store, name: &str) -> Result<Option<NodeRecord>> {
    let Some(b) = store.files().read(FileKind::Node, &file(name))? else {
        return Ok(None);
    };
    serde_json::from_slice(&b).map(Some).map_err(|e| {
        Error::malformed(
            "node record",
            format!(
                "{}: {e}",
                store.files().describe(FileKind::Node, &file(name))
            ),
        )
    })
}

pub fn write(store: &Store, _lock: &StoreLock, r: &NodeRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(r).map_err(|e| Error::Other(e.to_string()))?;
    store
        .files()
        .write_atomic(FileKind::Node, &file(&r.name), &bytes)
}

/// Every node record in the store, by name.
pub fn all(store: &Store) -> Result<Vec<NodeRecord>> {
    let mut out = Vec::new();
    for f in store.files().list(FileKind::Node)? {
        if let Some(name) = f.strip_suffix(".json")
            && let Some(r) = read(store, name)?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
