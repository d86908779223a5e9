//! The one walk over a snapshot's trees: depth first from a root tree,
//! each tree read (and so verified against its id) through the store.
//! What a caller does with the entries, and which subtrees it skips, is
//! its own: gc marks what it meets, serve checks the files' objects of
//! trees not yet known complete, the planner adds up bytes.

use crate::error::Result;
use crate::id::TreeId;
use crate::store::Store;
use crate::tree::{Entry, Tree};

/// Walk the trees below `root` (itself included), with `state` shared by
/// the two callbacks. `enter(state, id)` is asked before each tree is
/// read: false skips it and everything below it (a tree met before, one
/// known complete). `visit(state, id, tree)` gets each tree read. A tree
/// that cannot be read ends the walk with its error.
pub fn trees<S>(
    store: &Store,
    root: TreeId,
    state: &mut S,
    enter: impl Fn(&mut S, TreeId) -> Result<bool>,
    visit: impl Fn(&mut S, TreeId, &Tree) -> Result<()>,
) -> Result<()> {
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !enter(state, id)? {
            continue;
        }
        let tree = store.read_tree(id)?;
        visit(state, id, &tree)?;
        // Pushed in reverse, so that subtrees are walked in name order.
        stack.extend(tree.entries.iter().rev().filter_map(|e| e.kind.dir()));
    }
    Ok(())
}

/// Every entry below `root`, each tree walked as often as it is named
/// (nothing skipped), with the files among them.
pub fn entries(store: &Store, root: TreeId, mut visit: impl FnMut(&Entry)) -> Result<()> {
    trees(
        store,
        root,
        &mut visit,
        |_, _| Ok(true),
        |visit, _, t| {
            t.entries.iter().for_each(&mut *visit);
            Ok(())
        },
    )
}
