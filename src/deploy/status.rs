//! What is deployed under a root, and the live tree's drift from it.

use std::path::{Path, PathBuf};

use super::plan::{self, Planner};
use super::state::{self};
use super::*;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::snapshot::{self, Found, Snapshot};
use crate::store::Store;
use crate::tree::{Kind, Tree};

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
