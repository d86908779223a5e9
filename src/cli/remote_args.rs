//! Flags shared by the commands that talk to the standby.

use std::path::PathBuf;

use hamn::Result;
use hamn::remote::client::{ConnectOptions, Remote};
use hamn::remote::ssh::SshOptions;
use hamn::remote::{Target, parse_target};

use super::{Ctx, usage};

#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Standby store: ssh://[user@]host[:port]/path or a local path (default: config standby.url)
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
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

impl RemoteArgs {
    pub fn target(&self, ctx: &Ctx) -> Result<Target> {
        let url = self
            .to
            .clone()
            .or_else(|| ctx.config.standby.url.clone())
            .ok_or_else(|| usage("no standby: pass --to URL or set standby.url in the config"))?;
        parse_target(&url)
    }

    /// Where the standby deploys: config standby.root, else /.
    pub fn remote_root(&self, ctx: &Ctx) -> PathBuf {
        ctx.config
            .standby
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    pub fn connect(&self, ctx: &Ctx, mode: u8) -> Result<(Target, Remote)> {
        let (target, opts) = self.connect_options(ctx, mode)?;
        let remote = Remote::connect(&target, &opts)?;
        Ok((target, remote))
    }

    /// The standby and how to reach it, from these flags and the config.
    pub fn connect_options(&self, ctx: &Ctx, mode: u8) -> Result<(Target, ConnectOptions)> {
        let target = self.target(ctx)?;
        let sb = &ctx.config.standby;
        let opts = ConnectOptions {
            ssh: SshOptions {
                identity: self.identity.clone().or_else(|| sb.identity.clone()),
                known_hosts: self.known_hosts.clone().or_else(|| sb.known_hosts.clone()),
                remote_bin: self.remote_bin.clone().or_else(|| sb.remote_bin.clone()),
                io_timeout: sb.io_timeout,
                step_timeout: sb.step_timeout,
            },
            mode,
            lock_wait: ctx.lock_wait_duration(),
            root: self.remote_root(ctx),
        };
        Ok((target, opts))
    }
}
