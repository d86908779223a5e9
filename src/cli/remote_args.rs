//! Flags shared by the commands that talk to the standby (or to the
//! nodes of a `[[standby]]` list): which node, and how to reach it.

use std::path::PathBuf;

use hamn::Result;
use hamn::config::Standby;
use hamn::remote::client::ConnectOptions;
use hamn::remote::ssh::SshOptions;
use hamn::remote::{Target, parse_target};

use super::{Ctx, usage};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// A configured node's name (sync: repeatable, those nodes only), or a
    /// standby store URL: ssh://[user@]host[:port]/path or a local path
    /// (default: every configured node)
    #[arg(long, value_name = "NAME|URL")]
    pub to: Vec<String>,
    /// SSH private key (default: config standby.identity, else the SSH agent)
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file holding the standby's host key (default: ~/.ssh/known_hosts)
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// The hamn binary on the standby (default: hamn)
    #[arg(long, value_name = "PATH")]
    pub remote_bin: Option<String>,
}

/// One node as a command reaches it.
pub struct Node {
    pub name: String,
    pub target: Target,
    pub config: Standby,
    /// A node of the config (not a one-off `--to URL`).
    pub configured: bool,
}

impl RemoteArgs {
    /// The nodes `--to` names, or every configured one. A `--to` that
    /// names no configured node is a URL, with the first node's settings.
    pub fn nodes(&self, ctx: &Ctx) -> Result<Vec<Node>> {
        let cfg = &ctx.config;
        let mut out = Vec::new();
        if self.to.is_empty() {
            for s in &cfg.standby {
                // One node of several without a url (being reinstalled,
                // say) does not keep the others from their run.
                if s.url.is_none() && cfg.standby.len() > 1 {
                    hamn::log::warn(&format!("node {} has no url: left out", s.name()));
                    continue;
                }
                out.push(self.node(s.clone(), true)?);
            }
            if out.is_empty() {
                return Err(usage(
                    "no standby: pass --to URL or set [standby] url in the config",
                ));
            }
            return Ok(out);
        }
        for to in &self.to {
            let by_url = cfg.standby.iter().find(|s| s.url.as_deref() == Some(to));
            let (s, configured) = match cfg.node(to).or(by_url) {
                Some(s) => (s.clone(), true),
                None if !to.contains('/') => {
                    let names: Vec<&str> = cfg.standby.iter().map(|s| s.name()).collect();
                    return Err(usage(format!(
                        "--to {to}: no such node in the config (nodes: {}); a URL is \
                         ssh://host/path or a path",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
                // Another store than any configured node's, reached with the
                // first node's settings, under the default name.
                None => (
                    Standby {
                        name: None,
                        url: Some(to.clone()),
                        ..cfg.standby()
                    },
                    false,
                ),
            };
            if out.iter().any(|n: &Node| n.name == s.name()) {
                return Err(usage(format!("--to {to}: node {} named twice", s.name())));
            }
            out.push(self.node(s, configured)?);
        }
        Ok(out)
    }

    /// The one node a command that talks to a single standby (push,
    /// status of one node) means.
    pub fn single(&self, ctx: &Ctx) -> Result<Node> {
        let mut nodes = self.nodes(ctx)?;
        if nodes.len() > 1 {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(usage(format!(
                "several nodes ({}): pass --to NAME for one",
                names.join(", ")
            )));
        }
        Ok(nodes.remove(0))
    }

    fn node(&self, s: Standby, configured: bool) -> Result<Node> {
        let url = s.url.clone().ok_or_else(|| {
            usage(format!(
                "node {}: no url: set url in its [standby] table or pass --to URL",
                s.name()
            ))
        })?;
        Ok(Node {
            name: s.name().to_string(),
            target: parse_target(&url)?,
            config: s,
            configured,
        })
    }

    /// How to reach `node`, from these flags and its config.
    pub fn connect_options(&self, ctx: &Ctx, node: &Node, mode: u8) -> ConnectOptions {
        let sb = &node.config;
        ConnectOptions {
            ssh: SshOptions {
                identity: self.identity.clone().or_else(|| sb.identity.clone()),
                known_hosts: self.known_hosts.clone().or_else(|| sb.known_hosts.clone()),
                remote_bin: self.remote_bin.clone().or_else(|| sb.remote_bin.clone()),
                io_timeout: sb.io_timeout,
                step_timeout: sb.step_timeout,
            },
            mode,
            lock_wait: ctx.lock_wait_duration(),
            root: remote_root(sb),
        }
    }
}

/// Where a node deploys: its `root`, else /.
pub fn remote_root(sb: &Standby) -> PathBuf {
    sb.root.clone().unwrap_or_else(|| PathBuf::from("/"))
}
