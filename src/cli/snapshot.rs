use hamn::Result;
use hamn::snapshot::create::{self, SnapshotOptions};

use super::{Ctx, EXIT_WARNINGS, human_bytes, usage};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Exclude paths matching this glob (repeatable; adds to the config's)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Store what symlinks point to instead of the links (as rsync -L)
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Descend into other file systems mounted below the managed paths
    #[arg(long)]
    pub cross_file_systems: bool,
    /// Paths to snapshot instead of the config's managed paths
    #[arg(value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let cfg = &ctx.config;
    let paths: Vec<String> = if a.paths.is_empty() {
        cfg.paths.clone()
    } else {
        a.paths
            .iter()
            .map(|p| {
                let abs =
                    std::path::absolute(p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
                Ok(abs.to_string_lossy().into_owned())
            })
            .collect::<Result<_>>()?
    };
    let opts = SnapshotOptions {
        paths,
        excludes: cfg.exclude.iter().chain(&a.excludes).cloned().collect(),
        one_file_system: cfg.one_file_system && !a.cross_file_systems,
        follow_symlinks: cfg.follow_symlinks || a.follow_symlinks,
        tags: a.tags,
        pre_snapshot: cfg.hooks.pre_snapshot.clone(),
    };
    let store = ctx.open_store()?;
    let lock = ctx.lock(&store)?;
    let out = create::create(&store, &lock, &opts)?;
    let s = &out.snapshot.stats;
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "id": out.id,
            "time": out.snapshot.time_local().to_rfc3339(),
            "host": out.snapshot.host,
            "paths": out.snapshot.paths,
            "tags": out.snapshot.tags,
            "parent": out.snapshot.parent,
            "stats": s,
            "warnings": out.warnings,
        }));
    } else {
        println!(
            "snapshot {} saved: {} files, {} dirs, {} total; {} read, {} files unchanged; {} new ({} stored) in {:.1}s",
            &out.id.to_hex()[..12],
            s.files,
            s.dirs,
            human_bytes(s.bytes_total),
            human_bytes(s.bytes_read),
            s.files_reused,
            human_bytes(s.bytes_added_plain),
            human_bytes(s.bytes_added_stored),
            s.duration_ms as f64 / 1000.0
        );
        if !out.warnings.is_empty() {
            println!("{} warnings (see above)", out.warnings.len());
        }
    }
    Ok(if out.warnings.is_empty() {
        0
    } else {
        EXIT_WARNINGS
    })
}
