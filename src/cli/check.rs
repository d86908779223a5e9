use hamn::Result;
use hamn::check::{self, CheckOptions};

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
    let store = ctx.open_store()?;
    let mut repaired = None;
    if a.repair {
        let lock = ctx.lock(&store)?;
        let r = check::repair(&store, &lock)?;
        hamn::log::info(&format!(
            "index rebuilt: {} packs, {} blobs",
            r.packs_indexed, r.blobs_indexed
        ));
        for s in &r.packs_salvaged {
            hamn::log::warn(&format!("damaged pack, salvaged {s}"));
        }
        repaired = Some(r);
    }
    let opts = CheckOptions {
        read_data: a.read_data || a.read_data_subset.is_some(),
        read_data_percent: a.read_data_subset.as_deref().map(percent).transpose()?,
    };
    let report = check::check(&store, &opts)?;
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
        Err(hamn::Error::Reported(format!(
            "check found {} problems in store {}; see above",
            report.problems.len(),
            store.root().display()
        )))
    }
}
