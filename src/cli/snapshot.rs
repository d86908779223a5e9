use hamn::Result;
use hamn::snapshot::create::{self, SnapshotOptions, SnapshotOutcome};

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

/// Snapshot options from the config and the command line.
pub fn options_from(
    ctx: &Ctx,
    tags: Vec<String>,
    excludes: Vec<String>,
    follow_symlinks: bool,
    cross_file_systems: bool,
    paths: Vec<std::path::PathBuf>,
) -> Result<SnapshotOptions> {
    let cfg = &ctx.config;
    let paths: Vec<String> = if paths.is_empty() {
        cfg.paths.clone()
    } else {
        paths
            .iter()
            .map(|p| {
                let abs =
                    std::path::absolute(p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
                Ok(abs.to_string_lossy().into_owned())
            })
            .collect::<Result<_>>()?
    };
    Ok(SnapshotOptions {
        paths,
        excludes: cfg.exclude.iter().chain(&excludes).cloned().collect(),
        gzip_aware: cfg.gzip_aware.clone(),
        one_file_system: cfg.one_file_system && !cross_file_systems,
        follow_symlinks: cfg.follow_symlinks || follow_symlinks,
        tags,
        pre_snapshot: cfg.hooks.pre_snapshot.clone(),
    })
}

pub fn outcome_json(out: &SnapshotOutcome) -> serde_json::Value {
    serde_json::json!({
        "id": out.id,
        "time": out.snapshot.time_local().to_rfc3339(),
        "host": out.snapshot.host,
        "paths": out.snapshot.paths,
        "tags": out.snapshot.tags,
        "parent": out.snapshot.parent,
        "stats": out.snapshot.stats,
        "warnings": out.warnings,
    })
}

pub fn print_outcome(out: &SnapshotOutcome) {
    let s = &out.snapshot.stats;
    println!(
        "snapshot {} saved: {} files, {} dirs, {} total; {} read, {} files unchanged; {} new ({} stored) in {:.1}s",
        super::id12(&out.id),
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

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let opts = options_from(
        ctx,
        a.tags,
        a.excludes,
        a.follow_symlinks,
        a.cross_file_systems,
        a.paths,
    )?;
    opts.validate()?;
    let store = ctx.open_store()?;
    let lock = ctx.lock(&store)?;
    let out = create::create(&store, &lock, &opts)?;
    if ctx.json {
        ctx.print_json(&outcome_json(&out));
    } else {
        print_outcome(&out);
    }
    Ok(if out.warnings.is_empty() {
        0
    } else {
        EXIT_WARNINGS
    })
}
