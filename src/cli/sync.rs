use hamn::Result;
use hamn::remote::protocol::MODE_WRITE;
use hamn::remote::push::{self, PushOptions};

use super::remote_args::RemoteArgs;
use super::snapshot::{self as snapcmd, print_outcome};
use super::{Ctx, EXIT_WARNINGS};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Tag the new snapshot (repeatable)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
}

/// Chunks read back from the standby when the config sets no number.
const DEFAULT_VERIFY_SAMPLE: u32 = 16;

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let opts = snapcmd::options_from(ctx, a.tags, Vec::new(), false, false, Vec::new())?;
    opts.validate()?;
    let store = ctx.open_store()?;
    let lock = ctx.lock(&store)?;
    let target = a.remote.target(ctx)?;
    hamn::log::info("sync: snapshot");
    let outcome = hamn::snapshot::create::create(&store, &lock, &opts)?;
    hamn::log::info(&format!("sync: push to {target}"));
    let (_, mut remote) = a.remote.connect(ctx, MODE_WRITE)?;
    let sample = match ctx.config.standby.verify_sample {
        0 => DEFAULT_VERIFY_SAMPLE,
        n => n,
    } as usize;
    let stats = push::push(
        &store,
        &lock,
        &mut remote,
        &PushOptions {
            verify: false,
            sample,
        },
    )?;
    hamn::log::info("sync: confirm on the standby");
    let present = remote.snapshots()?.iter().any(|(id, _)| *id == outcome.id);
    if !present {
        return Err(hamn::Error::Remote {
            peer: target.to_string(),
            message: format!(
                "snapshot {} is not listed after the push",
                outcome.id.short()
            ),
        });
    }
    let verified = push::verify_sample(&mut remote, &stats.sample)?;
    let deployed = if ctx.config.standby.materialize {
        hamn::log::info("sync: materialize on the standby");
        let root = a.remote.remote_root(ctx);
        Some(remote.materialize(outcome.id, &root.to_string_lossy())?)
    } else {
        None
    };
    let hook_failed = deployed
        .as_ref()
        .and_then(|d| d["hook_failures"].as_array())
        .is_some_and(|h| !h.is_empty());
    remote.close()?;
    let code = if outcome.warnings.is_empty() && !hook_failed {
        0
    } else {
        EXIT_WARNINGS
    };
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": snapcmd::outcome_json(&outcome),
            "standby": target.to_string(),
            "push": stats,
            "verified_chunks": verified,
            "materialize": deployed,
            "exit_code": code,
        }));
    } else {
        print_outcome(&outcome);
        super::push::print_stats(&stats, &target.to_string());
        println!(
            "standby has snapshot {}; {verified} chunks read back and verified",
            &outcome.id.to_hex()[..12]
        );
        if let Some(d) = &deployed {
            println!(
                "standby deployed it: {} files written ({} bytes), {} unchanged",
                d["files_written"], d["bytes_written"], d["files_reused"]
            );
        }
    }
    Ok(code)
}
