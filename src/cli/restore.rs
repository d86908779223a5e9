use hamn::Result;
use hamn::extract::Extractor;
use hamn::snapshot;

use super::{Ctx, human_bytes, usage};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot: id prefix, latest or latest~N
    pub snap: String,
    /// Paths inside the snapshot to restore (e.g. /etc/hosts /install/postscripts)
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Directory to restore into; each path keeps its full name below it
    #[arg(long, value_name = "DIR")]
    pub to: std::path::PathBuf,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let (id, snap) = snapshot::resolve(&store, &a.snap)?;
    if !a.to.exists() {
        std::fs::create_dir_all(&a.to).map_err(|e| hamn::Error::io(&a.to, e))?;
    } else if !a.to.is_dir() {
        return Err(usage(format!("--to {}: not a directory", a.to.display())));
    }
    let mut r = Extractor::new(&store);
    r.parallel(|r| {
        for p in &a.paths {
            r.restore_path(snap.root, &a.snap, p, &a.to)?;
        }
        Ok(())
    })?;
    let s = &r.stats;
    for w in &s.warnings {
        hamn::log::warn(w);
    }
    for e in &s.errors {
        hamn::log::warn(&format!("not restored: {e}"));
    }
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "snapshot": id, "to": a.to, "stats": s }));
    } else {
        println!(
            "restored {} files, {} dirs, {} other entries, {} hardlinks, {} from snapshot {} to {}",
            s.files,
            s.dirs,
            s.other_entries,
            s.hardlinks,
            human_bytes(s.bytes_written),
            super::id12(&id),
            a.to.display()
        );
    }
    if !s.errors.is_empty() {
        return Err(hamn::Error::Reported(
            format!(
                "{} entries could not be restored (first: {}); each is named above",
                s.errors.len(),
                s.errors[0]
            ),
            1,
        ));
    }
    Ok(if s.warnings.is_empty() {
        0
    } else {
        super::EXIT_WARNINGS
    })
}
