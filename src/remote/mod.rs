//! Shipping snapshots to the standby: the protocol, the server (`serve`),
//! the client side of push, and the transports (a local store path served
//! in-process over a socket pair, or SSH). Only `ssh` imports ssh2.

pub mod bases;
pub mod client;
pub mod idle;
pub mod protocol;
pub mod push;
pub mod server;
pub mod ssh;

use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local(PathBuf),
    Ssh(SshTarget),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(p) => write!(f, "{}", p.display()),
            Target::Ssh(t) => write!(f, "ssh://{}@{}:{}{}", t.user, t.host, t.port, t.path),
        }
    }
}

fn current_user() -> String {
    uzers::get_current_username()
        .map(|u| u.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

/// Parse a standby URL: `ssh://[user@]host[:port]/path` or a local path.
pub fn parse_target(url: &str) -> Result<Target> {
    let Some(rest) = url.strip_prefix("ssh://") else {
        if url.contains("://") {
            return Err(Error::Usage(format!(
                "standby URL '{url}': only ssh:// URLs and local paths are supported"
            )));
        }
        return Ok(Target::Local(PathBuf::from(url)));
    };
    let bad = |why: &str| {
        Error::Usage(format!(
            "standby URL '{url}': {why}; expected ssh://[user@]host[:port]/path/to/store"
        ))
    };
    let slash = rest.find('/').ok_or_else(|| bad("no store path"))?;
    let (authority, path) = rest.split_at(slash);
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (u.to_string(), h),
        Some(_) => return Err(bad("empty user")),
        None => (current_user(), authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => 22,
            None => return Err(bad("junk after ']'")),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport.to_string(), 22),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if path.len() < 2 {
        return Err(bad("no store path"));
    }
    Ok(Target::Ssh(SshTarget {
        user,
        host,
        port,
        path: path.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_target("ssh://root@mn2:2222/var/lib/hamn").unwrap(),
            Target::Ssh(SshTarget {
                user: "root".into(),
                host: "mn2".into(),
                port: 2222,
                path: "/var/lib/hamn".into()
            })
        );
        match parse_target("ssh://[::1]/s").unwrap() {
            Target::Ssh(t) => assert_eq!((t.host.as_str(), t.port), ("::1", 22)),
            t => panic!("{t:?}"),
        }
        assert_eq!(
            parse_target("/mnt/standby").unwrap(),
            Target::Local("/mnt/standby".into())
        );
        assert!(parse_target("ssh://host").is_err());
        assert!(parse_target("ssh://host:x/p").is_err());
        assert!(parse_target("rsync://h/p").is_err());
    }
}
