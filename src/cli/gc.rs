use std::time::Duration;

use hamn::Result;
use hamn::gc;

use super::{Ctx, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print what would be deleted and rewritten, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub fn grace(ctx: &Ctx) -> Duration {
    ctx.config
        .retention
        .gc_grace_hours
        .map(|h| Duration::from_secs(h * 3600))
        .unwrap_or(gc::DEFAULT_GRACE)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = if a.dry_run {
        ctx.open_store_read_only()?
    } else {
        ctx.open_store()?
    };
    // Even a dry run takes the lock: its plan is only true while no writer runs.
    let lock = ctx.lock(&store)?;
    let plan = gc::plan(&store, grace(ctx))?;
    if a.dry_run {
        if ctx.json {
            ctx.print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
        } else {
            println!(
                "dry run: would delete {} packs and {} unindexed pack files, rewrite {} packs ({} of live data), \
                 reclaiming {} of {} unreferenced; {} packs are within the grace period",
                plan.delete.len(),
                plan.delete_unindexed.len(),
                plan.rewrite.len(),
                human_bytes(plan.live_bytes_rewritten),
                human_bytes(plan.dead_bytes_reclaimed),
                human_bytes(plan.dead_bytes_total),
                plan.packs_in_grace
            );
        }
        return Ok(0);
    }
    let stats = gc::execute(&store, &lock, plan)?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "gc": stats }));
    } else {
        println!(
            "gc: {} packs deleted, {} rewritten ({} copied), {} freed in {:.1}s",
            stats.packs_deleted,
            stats.packs_rewritten,
            human_bytes(stats.bytes_rewritten),
            human_bytes(stats.bytes_freed.max(0) as u64),
            stats.seconds
        );
    }
    Ok(0)
}
