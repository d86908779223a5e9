use hamn::Result;
use hamn::deploy::{self, MaterializeOptions};
use hamn::snapshot;

use super::{Ctx, EXIT_WARNINGS, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot to deploy (default: the newest)
    pub snap: Option<String>,
    /// Deploy under this directory instead of / (tests always pass a temp dir)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: std::path::PathBuf,
    /// Print the plan (entries to write, remove, re-own) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy even when the snapshot (or its content) is already deployed:
    /// rebuild the managed paths from the store, undoing drift
    #[arg(long)]
    pub force: bool,
}

pub fn print_stats(verb: &str, s: &deploy::MaterializeStats, root: &std::path::Path) {
    let linked = if s.files_linked > 0 {
        format!(", {} linked to the live tree", s.files_linked)
    } else {
        String::new()
    };
    println!(
        "{verb} snapshot {} under {}: {} files written ({}){linked}, {} removed, {} re-owned, {} unchanged in {:.1}s",
        super::id12(&s.snapshot),
        root.display(),
        s.files_written,
        human_bytes(s.bytes_written),
        s.entries_removed,
        s.entries_reowned,
        s.files_reused,
        s.seconds
    );
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = if a.dry_run {
        ctx.open_store_read_only()?
    } else {
        ctx.open_store()?
    };
    let root = std::path::absolute(&a.root).map_err(|e| hamn::Error::io(&a.root, e))?;
    let spec = a.snap.as_deref().unwrap_or("latest");
    let (id, snap) = snapshot::resolve(&store, spec)?;
    let lock = ctx.lock(&store)?;
    let plan = deploy::plan(&store, id, &snap, &root, a.force)?;
    if a.dry_run {
        if ctx.json {
            ctx.print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
            return Ok(0);
        }
        if plan.already_deployed {
            println!(
                "snapshot {} is already deployed under {}; nothing to do",
                super::id12(&id),
                root.display()
            );
            return Ok(0);
        }
        if let Some(dep) = plan.same_content_as {
            println!(
                "the deployed snapshot {} has the same managed paths as {}; nothing would be \
                 written, {} would be recorded as deployed",
                dep.short(),
                id.short(),
                id.short()
            );
            return Ok(0);
        }
        for d in &plan.dirs {
            println!(
                "{} (staging from {}): write {} entries ({}), remove {}, re-own {}, link {}; then swap",
                d.live.display(),
                d.base,
                d.stats.to_create,
                human_bytes(d.stats.bytes_to_write),
                d.stats.to_remove,
                d.stats.to_reown,
                d.stats.to_link
            );
            for act in &d.actions {
                let (letter, p) = match act {
                    deploy::plan::Action::Create { path, .. } => ('+', path),
                    deploy::plan::Action::Remove { path } => ('-', path),
                    deploy::plan::Action::Meta { path, .. } => ('m', path),
                    deploy::plan::Action::Link { path, .. } => ('h', path),
                };
                hamn::log::verbose(&format!("  {letter} {}/{p}", d.path));
            }
        }
        for f in &plan.files {
            if !f.unchanged {
                println!("{}: replace ({})", f.live.display(), human_bytes(f.bytes));
            }
        }
        return Ok(0);
    }
    let opts = MaterializeOptions {
        root: root.clone(),
        dry_run: false,
        post_materialize: ctx.config.hooks.post_materialize.clone(),
    };
    let stats = deploy::execute_with_hooks(&store, &lock, &snap, plan, &opts)?;
    let warned = stats.log_warnings("");
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "root": root, "materialize": stats }));
    } else if stats.already_deployed {
        println!(
            "snapshot {} is already deployed under {}; nothing changed",
            super::id12(&id),
            root.display()
        );
    } else if let Some(dep) = &stats.same_content_as {
        println!(
            "snapshot {} has the same managed paths as the deployed {}: recorded as deployed \
             under {}; nothing changed",
            super::id12(&id),
            super::id12(dep),
            root.display()
        );
    } else {
        print_stats("deployed", &stats, &root);
    }
    Ok(if warned { EXIT_WARNINGS } else { 0 })
}
