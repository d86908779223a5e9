//! `hamn sync`, the nightly job (`hamn::sync`): flags and config into
//! options, then the report printed.

use hamn::remote::protocol::MODE_WRITE;
use hamn::retention::Policy;
use hamn::sync::{DEFAULT_VERIFY_SAMPLE, SyncOptions, SyncReport};
use hamn::{Error, Result};

use super::remote_args::RemoteArgs;
use super::snapshot::{self as snapcmd, print_outcome};
use super::{Ctx, id12};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Tag the new snapshot (repeatable)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
}

fn options(ctx: &Ctx, a: &Args) -> Result<SyncOptions> {
    let cfg = &ctx.config;
    let (target, connect) = a.remote.connect_options(ctx, MODE_WRITE)?;
    Ok(SyncOptions {
        snapshot: snapcmd::options_from(ctx, a.tags.clone(), Vec::new(), false, false, Vec::new())?,
        target,
        connect,
        verify_sample: cfg
            .standby
            .verify_sample
            .map_or(DEFAULT_VERIFY_SAMPLE, |n| n as usize),
        delta: cfg.standby.delta,
        materialize: cfg.standby.materialize.then(|| a.remote.remote_root(ctx)),
        retention: cfg
            .retention
            .apply_on_sync
            .then(|| (Policy::from_config(&cfg.retention), super::gc::grace(ctx))),
        textfile: cfg.monitoring.textfile.clone(),
        lock_wait: ctx.lock_wait_duration(),
        command: ctx.command_line.clone(),
    })
}

fn print(r: &SyncReport, target: &str) {
    if let Some(o) = &r.snapshot {
        print_outcome(o);
    }
    if let (Some(p), Some(o)) = (&r.push, &r.snapshot) {
        super::push::print_stats(p, target);
        println!(
            "standby has snapshot {}; {} chunks read back and verified",
            id12(&o.id),
            r.verified_chunks
        );
    }
    if let Some(d) = &r.materialize {
        match &d.same_content_as {
            Some(dep) => println!(
                "standby: its deployed snapshot {} has the same content; recorded as deployed, nothing written",
                id12(dep)
            ),
            None => println!(
                "standby deployed it: {} files written ({} bytes), {} unchanged",
                d.files_written, d.bytes_written, d.files_reused
            ),
        }
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    // Usage errors (an over-long tag, a bad standby URL) before the store
    // is touched.
    let opts = options(ctx, &a)?;
    let (r, result) = hamn::sync::sync(&ctx.store_path(), &opts);
    let code = r.exit_code(&result);
    if ctx.json {
        // One document either way: a failed run still tells what its
        // steps did before the failure (the snapshot taken, what was sent).
        let mut doc = serde_json::json!({
            "snapshot": r.snapshot.as_ref().map(snapcmd::outcome_json),
            "standby": opts.target.to_string(),
            "push": r.push,
            "verified_chunks": r.verified_chunks,
            "materialize": r.materialize,
            "retention": { "local": r.retention_local, "standby": r.retention_standby },
            "exit_code": code,
        });
        if let Err(e) = &result {
            doc["error"] = e.to_string().into();
        }
        ctx.print_json(&doc);
    } else {
        print(&r, &opts.target.to_string());
    }
    match result {
        Ok(()) => Ok(code),
        Err(e) if ctx.json => Err(Error::Reported(e.to_string(), code)),
        Err(e) => Err(e),
    }
}
