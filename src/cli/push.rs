use hamn::Result;
use hamn::remote::protocol::MODE_WRITE;
use hamn::remote::push::{self, PushOptions};

use super::remote_args::RemoteArgs;
use super::{Ctx, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Ask about every blob instead of trusting the standby's complete trees
    /// (finds and repairs data a damaged standby lost)
    #[arg(long)]
    pub verify: bool,
    /// Also send snapshots older than the standby's newest (by default those
    /// are taken to be forgotten there by its own retention)
    #[arg(long)]
    pub all: bool,
    /// Send every chunk as stored, never as a delta against an old
    /// version on the standby (default: standby.delta in the config)
    #[arg(long)]
    pub no_delta: bool,
}

pub fn print_stats(s: &push::PushStats, peer: &str) {
    println!(
        "pushed {} snapshots to {peer} ({} already there): {} blobs ({} as deltas, {} saved), {} sent, {} received in {:.1}s",
        s.snapshots_sent.len(),
        s.snapshots_present,
        s.blobs_sent,
        s.deltas_sent,
        human_bytes(s.delta_bytes_saved),
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received),
        s.seconds
    );
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store()?;
    let lock = ctx.lock(&store)?;
    let node = a.remote.single(ctx)?;
    let target = node.target.clone();
    let mut remote = hamn::remote::client::Remote::connect(
        &target,
        &a.remote.connect_options(ctx, &node, MODE_WRITE),
    )?;
    let opts = PushOptions {
        verify: a.verify,
        sample: 0,
        all: a.all,
        delta: node.config.delta && !a.no_delta,
        shared: None,
    };
    let stats = push::push(&store, &lock, &mut remote, &opts)?;
    remote.close()?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "standby": target.to_string(), "push": stats }));
    } else {
        print_stats(&stats, &target.to_string());
    }
    Ok(0)
}
