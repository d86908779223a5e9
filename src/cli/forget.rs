use hamn::Result;
use hamn::retention::{self, Policy};

use super::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "T")]
    pub keep_tags: Vec<String>,
    /// Print what would be kept and forgotten, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

impl Args {
    /// Flags given on the command line replace the config's whole policy.
    fn policy(&self, ctx: &Ctx) -> Policy {
        let flags = self.keep_last.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || !self.keep_tags.is_empty();
        if !flags {
            return Policy::from_config(&ctx.config.retention);
        }
        Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_tags: self.keep_tags.clone(),
        }
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = if a.dry_run {
        ctx.open_store_read_only()?
    } else {
        ctx.open_store()?
    };
    let policy = a.policy(ctx);
    let lock = if a.dry_run {
        None
    } else {
        Some(ctx.lock(&store)?)
    };
    let all = store.snapshots()?;
    let pinned = retention::pinned(&store)?;
    let decisions = retention::plan(&all, &policy, &pinned)?;
    let forgotten = match &lock {
        Some(l) => retention::forget(&store, l, &decisions)?,
        None => 0,
    };
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "dry_run": a.dry_run,
            "policy": policy,
            "snapshots": decisions,
            "forgotten": forgotten,
        }));
        return Ok(0);
    }
    for d in &decisions {
        println!(
            "{} {}  {}  {}",
            if d.keep { "keep  " } else { "forget" },
            super::id12(&d.id),
            d.time,
            d.reasons.join(", ")
        );
    }
    let n = decisions.iter().filter(|d| !d.keep).count();
    if a.dry_run {
        println!("dry run: {n} snapshots would be forgotten; nothing changed");
    } else {
        println!("{forgotten} snapshots forgotten; run `hamn gc` to reclaim their space");
    }
    Ok(0)
}
