use hamn::Result;
use hamn::check::{self, CheckOptions};
use hamn::store::Store;

use super::{Ctx, human_bytes, usage};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also read every pack and verify every stored blob against its id
    #[arg(long)]
    pub read_data: bool,
    /// Read only a random N% of the packs (for nightly use), e.g. 5%
    #[arg(long, value_name = "N%", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
    /// Rebuild the index from the pack files, then check
    #[arg(long)]
    pub repair: bool,
}

fn percent(s: &str) -> Result<f64> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| {
        usage(format!(
            "--read-data-subset '{s}': expected a percentage like 5%"
        ))
    })?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(usage(format!(
            "--read-data-subset '{s}': must be above 0% and at most 100%"
        )));
    }
    Ok(v)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let opts = CheckOptions {
        read_data: a.read_data || a.read_data_subset.is_some(),
        read_data_percent: a.read_data_subset.as_deref().map(percent).transpose()?,
    };
    // A repair must work on an index that cannot even be opened, so it
    // takes the lock before opening the index, not after.
    let (store, lock, moved) = if a.repair {
        let (store, lock, moved) = Store::open_for_repair(
            &ctx.store_path(),
            ctx.lock_wait_duration(),
            &ctx.command_line,
        )?;
        (store, Some(lock), moved)
    } else {
        (ctx.open_store_read_only()?, None, None)
    };
    let mut repaired = None;
    if let Some(lock) = &lock {
        if let Some((aside, why)) = &moved {
            hamn::log::warn(&format!(
                "index could not be opened ({why}); moved aside to {} and rebuilt from the packs",
                aside.display()
            ));
        }
        let mut r = check::repair(&store, lock)?;
        r.index_moved_aside = moved.map(|(aside, _)| aside);
        hamn::log::info(&format!(
            "index rebuilt: {} packs, {} blobs",
            r.packs_indexed, r.blobs_indexed
        ));
        for s in &r.packs_salvaged {
            hamn::log::warn(&format!("damaged pack, salvaged {s}"));
        }
        repaired = Some(r);
    }
    let report = check::check(&store, &opts)?;
    if let (Some(lock), Some(r)) = (&lock, repaired.as_mut()) {
        r.blobs_dropped = check::drop_damaged(&store, lock, &report.damaged_blobs)?;
        if r.blobs_dropped > 0 {
            hamn::log::info(&format!(
                "{} damaged blobs removed from the index: the next snapshot reads their files \
                 again, the next push to this store sends them again",
                r.blobs_dropped
            ));
        }
    }
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "ok": report.problems.is_empty(),
            "report": report,
            "repair": repaired,
        }));
    } else {
        for p in &report.problems {
            println!("error: {}", p.message);
            for a in &p.affects {
                println!("  affects {a}");
            }
        }
        println!(
            "{} snapshots, {} trees, {} blobs in {} packs checked{}; {}",
            report.snapshots,
            report.trees,
            report.blobs_indexed,
            report.packs,
            if opts.read_data {
                format!(
                    ", {} packs ({}) read",
                    report.packs_read,
                    human_bytes(report.bytes_read)
                )
            } else {
                String::new()
            },
            if report.problems.is_empty() {
                "no problems".to_string()
            } else {
                format!("{} problems", report.problems.len())
            }
        );
        if report.packs_unindexed > 0 {
            hamn::log::info(&format!(
                "{} packs left by interrupted runs are not indexed; `hamn check --repair` indexes them",
                report.packs_unindexed
            ));
        }
    }
    if report.problems.is_empty() {
        Ok(0)
    } else {
        Err(hamn::Error::Reported(
            format!(
                "check found {} problems in store {}; see above",
                report.problems.len(),
                store.root().display()
            ),
            1,
        ))
    }
}
