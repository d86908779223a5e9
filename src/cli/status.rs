use hamn::Result;
use hamn::deploy;
use hamn::remote::protocol::MODE_READ;

use super::Ctx;
use super::remote_args::RemoteArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The root a deployment is under (default /)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: std::path::PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn short(id: &Option<hamn::id::SnapshotId>) -> String {
    id.as_ref().map(super::id12).unwrap_or_else(|| "-".into())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let root = std::path::absolute(&a.root).map_err(|e| hamn::Error::io(&a.root, e))?;
    let st = deploy::status(&store, &root)?;
    // On a primary with a standby configured: how far behind is it?
    let standby = if a.remote.to.is_some() || ctx.config.standby.url.is_some() {
        let (target, mut remote) = a.remote.connect(ctx, MODE_READ)?;
        let theirs = remote.snapshots()?;
        remote.close()?;
        let ours = store.snapshots()?;
        let newest = theirs.last().map(|(id, s)| (id.to_hex(), s.time_ns));
        let behind = match &newest {
            Some((_, t)) => ours.iter().filter(|(_, s)| s.time_ns > *t).count(),
            None => ours.len(),
        };
        Some((target.to_string(), newest, behind))
    } else {
        None
    };
    if ctx.json {
        let sb = standby.as_ref().map(|(t, n, b)| {
            serde_json::json!({
                "url": t,
                "newest": n.as_ref().map(|x| x.0.clone()),
                "newest_age_seconds": n.as_ref().map(|x| (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - x.1) / 1_000_000_000),
                "snapshots_behind": b,
            })
        });
        ctx.print_json(&serde_json::json!({ "deployment": st, "standby": sb }));
        return Ok(0);
    }
    println!("store:      {}", store.root().display());
    println!(
        "newest:     {} {}",
        short(&st.newest),
        st.newest_time.clone().unwrap_or_default()
    );
    if st.deployed.is_some() {
        println!("root:       {}", root.display());
        println!(
            "deployed:   {} {}{}",
            short(&st.deployed),
            st.deployed_time.clone().unwrap_or_default(),
            if st.behind > 0 {
                format!(" ({} newer snapshots in the store)", st.behind)
            } else {
                String::new()
            }
        );
        println!("previous:   {}", short(&st.previous));
        if st.drifted.is_empty() {
            println!("drift:      none (live tree matches the deployed snapshot)");
        } else {
            println!(
                "drift:      {} paths differ from the deployed snapshot{}",
                st.drifted.len(),
                if hamn::log::level() >= hamn::log::VERBOSE {
                    ":"
                } else {
                    " (-v lists them)"
                }
            );
            if hamn::log::level() >= hamn::log::VERBOSE {
                for p in &st.drifted {
                    println!("  {p}");
                }
            }
        }
    } else if standby.is_none() {
        println!("deployed:   nothing deployed under {}", root.display());
    }
    if let Some((t, n, b)) = &standby {
        match n {
            Some((id, time_ns)) => {
                let age = (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - time_ns)
                    / 1_000_000_000;
                println!(
                    "standby:    {t}: newest {} ({}h{:02}m old), {b} snapshots behind",
                    &id[..12],
                    age / 3600,
                    (age % 3600) / 60
                );
            }
            None => println!("standby:    {t}: no snapshots yet, {b} behind"),
        }
    }
    Ok(0)
}
