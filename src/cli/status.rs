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
    // On a primary with nodes configured: how far behind is each? With
    // one node, a failure to reach it is the command's error; with
    // several, it is that node's line (exit 3).
    let nodes = if !a.remote.to.is_empty() || ctx.config.standby.iter().any(|s| s.url.is_some()) {
        a.remote.nodes(ctx)?
    } else {
        Vec::new()
    };
    let ours = store.snapshots()?;
    let mut standby: Vec<NodeStatus> = Vec::new();
    for n in &nodes {
        let record = hamn::nodes::read(&store, &n.name).ok().flatten();
        let newest = hamn::remote::client::Remote::connect(
            &n.target,
            &a.remote.connect_options(ctx, n, MODE_READ),
        )
        .and_then(|mut remote| {
            let theirs = remote.snapshots()?;
            remote.close()?;
            Ok(theirs.last().map(|(id, s)| (*id, s.time_ns)))
        });
        let newest = match newest {
            Err(e) if nodes.len() == 1 => return Err(e),
            other => other,
        };
        let behind = match &newest {
            Ok(Some((_, t))) => ours.iter().filter(|(_, s)| s.time_ns > *t).count(),
            _ => ours.len(),
        };
        standby.push(NodeStatus {
            name: n.name.clone(),
            url: n.target.to_string(),
            newest,
            behind,
            record,
        });
    }
    let unreachable = standby.iter().any(|n| n.newest.is_err());
    let code = if unreachable { super::EXIT_WARNINGS } else { 0 };
    if ctx.json {
        let list: Vec<serde_json::Value> = standby.iter().map(NodeStatus::json).collect();
        ctx.print_json(&serde_json::json!({
            "deployment": st,
            "standby": list.first(),
            "nodes": list,
        }));
        return Ok(code);
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
    } else if standby.is_empty() {
        println!("deployed:   nothing deployed under {}", root.display());
    }
    for n in &standby {
        // The standby alone keeps its one-line form; nodes of a list are named.
        let who = if standby.len() > 1 {
            format!("node {} ({})", n.name, n.url)
        } else {
            n.url.clone()
        };
        let deployed = n
            .record
            .as_ref()
            .and_then(|r| r.deployed)
            .map(|d| format!(", deployed {}", super::id12(&d)))
            .unwrap_or_default();
        let b = n.behind;
        match &n.newest {
            Ok(Some((id, time_ns))) => {
                let age = age_seconds(*time_ns);
                println!(
                    "standby:    {who}: newest {} ({}h{:02}m old), {b} snapshots behind{deployed}",
                    super::id12(id),
                    age / 3600,
                    (age % 3600) / 60
                );
            }
            Ok(None) => println!("standby:    {who}: no snapshots yet, {b} behind"),
            Err(e) => println!("standby:    {who}: unreachable: {e}"),
        }
    }
    Ok(code)
}

fn age_seconds(time_ns: i64) -> i64 {
    (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - time_ns) / 1_000_000_000
}

/// One node as `status` sees it: asked now, and as the last sync left it.
struct NodeStatus {
    name: String,
    url: String,
    newest: Result<Option<(hamn::id::SnapshotId, i64)>>,
    behind: usize,
    record: Option<hamn::nodes::NodeRecord>,
}

impl NodeStatus {
    fn json(&self) -> serde_json::Value {
        let newest = self.newest.as_ref().ok().and_then(|n| *n);
        let r = self.record.as_ref();
        serde_json::json!({
            "name": self.name,
            "url": self.url,
            "newest": newest.map(|x| x.0),
            "newest_age_seconds": newest.map(|x| age_seconds(x.1)),
            "snapshots_behind": self.behind,
            "error": self.newest.as_ref().err().map(|e| e.to_string()),
            "deployed": r.and_then(|r| r.deployed),
            "last_sync": r.map(|r| r.last_run.clone()),
            "last_sync_ok": r.map(|r| r.ok),
            "last_sync_error": r.and_then(|r| r.error.clone()),
        })
    }
}
