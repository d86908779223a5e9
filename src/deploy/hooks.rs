//! `post_materialize` hooks, run after a deployment that changed
//! something, or when a crash kept them from running after theirs.

use std::path::Path;

use super::state::{self, DeployState};
use super::*;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreLock};

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
pub(super) fn run_hooks(commands: &[String], id: &SnapshotId, root: &Path) -> Vec<String> {
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
