//! `hamn config check`: validate a configuration without changing
//! anything. Each problem is one line; any problem means exit status 2.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hamn::Result;
use hamn::remote::Target;
use hamn::remote::client::Remote;
use hamn::remote::protocol::MODE_READ;

use super::Ctx;
use super::remote_args::{Node, RemoteArgs};

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config: keys, managed paths, the standby and its host key
    #[command(after_help = "Example: hamn --config /etc/hamn/hamn.toml config check")]
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Check as the standby: managed directories can be deployed under ROOT
    /// (staging beside them on the same file system)
    #[arg(long, value_name = "DIR")]
    pub standby_root: Option<std::path::PathBuf>,
    /// Do not contact the standby
    #[arg(long)]
    pub offline: bool,
}

pub fn run(ctx: &Ctx, c: ConfigCommand) -> Result<i32> {
    let ConfigCommand::Check(a) = c;
    let mut problems: Vec<String> = Vec::new();
    let cfg = &ctx.config;
    let where_ = ctx
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no config file: defaults)".into());
    if cfg.paths.is_empty() {
        problems.push("no managed paths: set `paths`".into());
    }
    if a.standby_root.is_none() {
        for p in &cfg.paths {
            if std::fs::symlink_metadata(p).is_err() {
                problems.push(format!("managed path {p} does not exist on this node"));
            }
        }
    }
    let store = ctx.store_path();
    if !store.join(hamn::store::MARKER_FILE).exists() {
        problems.push(format!(
            "store {} does not exist yet: run `hamn init`",
            store.display()
        ));
    }
    if let Some(root) = &a.standby_root {
        for p in &cfg.paths {
            let live = root.join(p.trim_start_matches('/'));
            let parent = live.parent().unwrap_or(root);
            let mut up = parent.to_path_buf();
            while !up.exists() {
                match up.parent() {
                    Some(u) => up = u.to_path_buf(),
                    None => break,
                }
            }
            match (std::fs::metadata(&up), std::fs::metadata(&live)) {
                (Ok(pm), Ok(lm)) if lm.is_dir() && pm.dev() != lm.dev() && up == parent => {
                    // A mount point: staging goes inside it, which works.
                }
                (Err(e), _) => problems.push(format!("{}: {e}", up.display())),
                _ => {}
            }
            if let Ok(vfs) = rustix::fs::statvfs(&up)
                && vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY)
            {
                problems.push(format!(
                    "{} is on a read-only file system: {p} cannot be deployed there",
                    up.display()
                ));
            }
        }
    }
    let standby = RemoteArgs::default();
    let nodes = if cfg.standby.iter().any(|s| s.url.is_some()) {
        standby.nodes(ctx)
    } else {
        Ok(Vec::new())
    };
    match nodes {
        Err(e) => problems.push(e.to_string()),
        Ok(nodes) => {
            for n in &nodes {
                // One node's problems name it when there are several.
                let at = if nodes.len() > 1 {
                    format!("node {}: ", n.name)
                } else {
                    String::new()
                };
                for p in node_problems(ctx, &standby, n, a.offline) {
                    problems.push(format!("{at}{p}"));
                }
            }
        }
    }
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "config": where_, "ok": problems.is_empty(), "problems": problems }));
    } else if problems.is_empty() {
        println!("{where_}: ok");
    } else {
        for p in &problems {
            println!("{where_}: {p}");
        }
    }
    if problems.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "hamn: error: {} problems in {where_}; see above",
            problems.len()
        );
        Ok(2)
    }
}

/// What stops `sync` from reaching node `n` (its store, its key files,
/// its host key; a read session unless `offline`).
fn node_problems(ctx: &Ctx, standby: &RemoteArgs, n: &Node, offline: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let sb = &n.config;
    match &n.target {
        Target::Local(p) => {
            if !p.join(hamn::store::MARKER_FILE).exists() {
                problems.push(format!("standby store {} is not a hamn store", p.display()));
            }
        }
        Target::Ssh(t) => {
            if let Some(id) = &sb.identity
                && !id.exists()
            {
                problems.push(format!("standby.identity {} does not exist", id.display()));
            }
            let kh = sb.known_hosts.clone().unwrap_or_else(|| {
                Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                    .join(".ssh/known_hosts")
            });
            if !kh.exists() {
                problems.push(format!(
                    "known_hosts {} does not exist: after checking the standby's fingerprint, \
                     ssh-keyscan -p {} {} >> {}",
                    kh.display(),
                    t.port,
                    t.host,
                    kh.display()
                ));
            } else if !offline {
                let opts = standby.connect_options(ctx, n, MODE_READ);
                if let Err(e) = Remote::connect(&n.target, &opts).and_then(|r| r.close()) {
                    problems.push(format!("standby: {e}"));
                }
            }
        }
    }
    problems
}
