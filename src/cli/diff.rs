use std::os::unix::ffi::OsStrExt;

use hamn::diff::{self, ChangeKind};
use hamn::snapshot::{self, Found};
use hamn::{Error, Result};

use super::{Ctx, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The older snapshot
    pub snap_a: String,
    /// The newer snapshot
    pub snap_b: String,
    /// Compare only below this path
    pub path: Option<std::path::PathBuf>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let all = store.snapshots()?;
    let (ida, sa) = snapshot::resolve_in(&all, &a.snap_a)?;
    let (idb, sb) = snapshot::resolve_in(&all, &a.snap_b)?;
    let path = a
        .path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_else(|| b"/".to_vec());
    let find = |root, label: &str| -> Result<Option<Found>> {
        match snapshot::lookup(&store, root, label, &path) {
            Ok(f) => Ok(Some(f)),
            Err(Error::NoSuchPath { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let fa = find(sa.root, &a.snap_a)?;
    let fb = find(sb.root, &a.snap_b)?;
    if fa.is_none() && fb.is_none() {
        return Err(Error::NoSuchPath {
            snapshot: format!("{} or {}", a.snap_a, a.snap_b),
            path: String::from_utf8_lossy(&path).into_owned(),
        });
    }
    let prefix = snapshot::normalized_path(&path)?;
    let result = match (&fa, &fb) {
        (Some(Found::Root(_)), _) | (_, Some(Found::Root(_))) => {
            diff::diff(&store, None, None, Some(sa.root), Some(sb.root), "/")?
        }
        _ => {
            let ea = match &fa {
                Some(Found::Entry(e)) => Some(e),
                _ => None,
            };
            let eb = match &fb {
                Some(Found::Entry(e)) => Some(e),
                _ => None,
            };
            diff::diff(&store, ea, eb, None, None, &prefix)?
        }
    };
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "from": ida,
            "to": idb,
            "changes": result.changes,
            "summary": result.summary,
        }));
        return Ok(0);
    }
    for c in &result.changes {
        let detail = match c.change {
            ChangeKind::Renamed => format!("{} -> {}", c.from.as_deref().unwrap_or("?"), c.path),
            _ => c.path.clone(),
        };
        let mut extra = Vec::new();
        if c.change == ChangeKind::Modified
            && let (Some(o), Some(n)) = (c.old_size, c.new_size)
        {
            extra.push(format!("{} -> {}", human_bytes(o), human_bytes(n)));
        }
        if c.change == ChangeKind::Added
            && let Some(n) = c.new_size
        {
            extra.push(human_bytes(n));
        }
        if let Some(t) = c.old_type {
            extra.push(format!("{t} -> {}", c.entry_type));
        }
        if !c.fields.is_empty() {
            extra.push(c.fields.join(","));
        }
        if extra.is_empty() {
            println!("{} {detail}", c.change.letter());
        } else {
            println!("{} {detail}  ({})", c.change.letter(), extra.join("; "));
        }
    }
    let s = &result.summary;
    hamn::log::info(&format!(
        "{} added, {} removed, {} modified, {} metadata, {} type changed, {} renamed",
        s.added, s.removed, s.modified, s.metadata, s.type_changed, s.renamed
    ));
    Ok(0)
}
