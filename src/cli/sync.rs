//! `hamn sync`, the nightly job (`hamn::sync`): flags and config into
//! options, then the report printed.

use hamn::remote::protocol::MODE_WRITE;
use hamn::retention::Policy;
use hamn::sync::{DEFAULT_VERIFY_SAMPLE, NodeOptions, NodeReport, SyncOptions, SyncReport};
use hamn::{Error, Result};

use super::remote_args::{RemoteArgs, remote_root};
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
    let nodes = a
        .remote
        .nodes(ctx)?
        .into_iter()
        .map(|n| NodeOptions {
            connect: a.remote.connect_options(ctx, &n, MODE_WRITE),
            verify_sample: n
                .config
                .verify_sample
                .map_or(DEFAULT_VERIFY_SAMPLE, |v| v as usize),
            delta: n.config.delta,
            materialize: n.config.materialize.then(|| remote_root(&n.config)),
            record: n.configured,
            name: n.name,
            target: n.target,
        })
        .collect();
    Ok(SyncOptions {
        snapshot: snapcmd::options_from(ctx, a.tags.clone(), Vec::new(), false, false, Vec::new())?,
        nodes,
        parallel: cfg.sync_parallel,
        retention: cfg
            .retention
            .apply_on_sync
            .then(|| (Policy::from_config(&cfg.retention), super::gc::grace(ctx))),
        textfile: cfg.monitoring.textfile.clone(),
        lock_wait: ctx.lock_wait_duration(),
        command: ctx.command_line.clone(),
    })
}

fn print(r: &SyncReport) {
    if let Some(o) = &r.snapshot {
        print_outcome(o);
    }
    for n in &r.nodes {
        let Some(p) = &n.push else { continue };
        super::push::print_stats(p, &n.target);
        if let (Some(o), Some(Ok(()))) = (&r.snapshot, &n.result) {
            println!(
                "{} has snapshot {}; {} chunks read back and verified",
                n.name,
                id12(&o.id),
                n.verified_chunks
            );
        }
        if let Some(d) = &n.materialize {
            match &d.same_content_as {
                Some(dep) => println!(
                    "{}: its deployed snapshot {} has the same content; recorded as deployed, nothing written",
                    n.name,
                    id12(dep)
                ),
                None => println!(
                    "{} deployed it: {} files written ({} bytes), {} unchanged",
                    n.name, d.files_written, d.bytes_written, d.files_reused
                ),
            }
        }
    }
    if r.nodes.len() > 1 {
        for n in &r.nodes {
            println!("node {}: {}", n.name, n.status());
        }
    }
}

fn node_json(n: &NodeReport) -> serde_json::Value {
    serde_json::json!({
        "name": n.name,
        "url": n.target,
        "status": n.status(),
        "bytes_sent": n.push.as_ref().map_or(0, |p| p.bytes_sent),
        "chunks_sent": n.push.as_ref().map_or(0, |p| p.blobs_sent),
        "deployed": n.materialize.as_ref().map(|d| d.snapshot),
        "error": match &n.result { Some(Err(e)) => Some(e.to_string()), _ => None },
        "push": n.push,
        "verified_chunks": n.verified_chunks,
        "materialize": n.materialize,
        "retention": n.retention,
    })
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    // Usage errors (an over-long tag, a bad standby URL) before the store
    // is touched.
    let opts = options(ctx, &a)?;
    let (r, result) = hamn::sync::sync(&ctx.store_path(), &opts);
    let code = r.exit_code(&result);
    if ctx.json {
        // One document either way: a failed run still tells what its
        // steps did before the failure (the snapshot taken, what was
        // sent). With one node, its figures also stand at the top level.
        let one = match &r.nodes[..] {
            [n] => Some(n),
            _ => None,
        };
        let mut doc = serde_json::json!({
            "snapshot": r.snapshot.as_ref().map(snapcmd::outcome_json),
            "standby": opts.nodes.first().map(|n| n.target.to_string()),
            "push": one.and_then(|n| n.push.as_ref()),
            "verified_chunks": one.map_or(0, |n| n.verified_chunks),
            "materialize": one.and_then(|n| n.materialize.as_ref()),
            "retention": {
                "local": r.retention_local,
                "standby": one.and_then(|n| n.retention.as_ref()),
            },
            "nodes": r.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "pack_bytes_read": r.pack_bytes_read,
            "exit_code": code,
        });
        if let Err(e) = &result {
            doc["error"] = e.to_string().into();
        }
        ctx.print_json(&doc);
    } else {
        print(&r);
    }
    match result {
        Ok(()) => Ok(code),
        Err(e) if ctx.json => Err(Error::Reported(e.to_string(), code)),
        Err(e) => Err(e),
    }
}
