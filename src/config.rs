//! The TOML configuration: where the store is, what is managed, where the
//! standby is, retention and hooks. Unknown keys are errors, so a typo never
//! silently disables a setting.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG: &str = "/etc/hamn/hamn.toml";
pub const DEFAULT_STORE: &str = "/var/lib/hamn";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store directory on this node.
    pub store: Option<PathBuf>,
    /// Managed paths, absolute.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Glob patterns matched against absolute paths; a match is not stored.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Glob patterns (as `exclude`) of deflate files (`*.tar.gz`,
    /// `*.cpio.gz`) stored decompressed with what recreates them exactly.
    #[serde(default)]
    pub gzip_aware: Vec<String>,
    /// Stay on the file system of each managed path (default true).
    #[serde(default = "yes")]
    pub one_file_system: bool,
    /// Store what symlinks point to instead of the links (as rsync -L).
    #[serde(default)]
    pub follow_symlinks: bool,
    /// The nodes `sync` keeps current: a `[standby]` table, or an array
    /// of `[[standby]]` tables (the standby and xCAT service nodes).
    #[serde(default, deserialize_with = "one_or_many")]
    pub standby: Vec<Standby>,
    /// How many nodes `sync` pushes to at once (default 4).
    #[serde(default = "four")]
    pub sync_parallel: usize,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Seconds a writer waits for the store lock before giving up (exit 4).
    #[serde(default)]
    pub lock_wait: u64,
}

fn yes() -> bool {
    true
}

fn four() -> usize {
    4
}

/// `[standby]` (one table) or `[[standby]]` (an array of tables), with
/// serde's own messages for unknown keys and wrong types in either.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Standby>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<Standby>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a [standby] table or [[standby]] tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            m: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            Ok(vec![Standby::deserialize(
                serde::de::value::MapAccessDeserializer::new(m),
            )?])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            s: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standby {
    /// The node's name in logs, `--json`, metrics and `sync --to NAME`;
    /// required with several `[[standby]]` tables, else "standby".
    pub name: Option<String>,
    pub url: Option<String>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub remote_bin: Option<String>,
    /// Have the standby deploy each snapshot after `sync` pushed it.
    #[serde(default)]
    pub materialize: bool,
    /// Where the standby deploys (default /); passed to its `hamn serve --root`.
    pub root: Option<PathBuf>,
    /// Seconds one read or write to the standby may wait before the push
    /// gives up (default 120); the standby's long steps (checking a new
    /// snapshot, deploying, retention) are not limited.
    pub io_timeout: Option<u64>,
    /// Seconds the standby's answer to one of its long steps (checking a
    /// new snapshot, deploying, retention) may take before the primary
    /// gives up (default 6 hours; 0: no limit).
    pub step_timeout: Option<u64>,
    /// Chunks read back from the standby after each sync: absent means
    /// the built-in 16, 0 turns the read-back off.
    pub verify_sample: Option<u32>,
    /// Send new chunks of changed files as deltas against their old
    /// version on the standby (default true; false trades bytes on the
    /// wire for CPU on both ends).
    #[serde(default = "yes")]
    pub delta: bool,
}

impl Standby {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("standby")
    }
}

impl Default for Standby {
    fn default() -> Self {
        Standby {
            name: None,
            url: None,
            identity: None,
            known_hosts: None,
            remote_bin: None,
            materialize: false,
            root: None,
            io_timeout: None,
            step_timeout: None,
            verify_sample: None,
            delta: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// `hamn sync` applies the policy (forget + gc) on this node, and asks
    /// the standby to apply its own, after a successful push.
    #[serde(default)]
    pub apply_on_sync: bool,
    /// gc keeps unreferenced data younger than this many hours (data an
    /// interrupted push or snapshot may still use). Default 24.
    pub gc_grace_hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Prometheus textfile written by `hamn sync` (for node_exporter's
    /// textfile collector), replaced atomically at the end of every run.
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Shell commands run before the walk; a failure aborts the snapshot.
    #[serde(default)]
    pub pre_snapshot: Vec<String>,
    /// Shell commands run after a successful materialization.
    #[serde(default)]
    pub post_materialize: Vec<String>,
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.message().to_string()
                + &e.span()
                    .map(|s| {
                        let line = text[..s.start].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default(),
        })?;
        for p in &cfg.paths {
            if !p.starts_with('/') {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!("managed path '{p}' must be absolute"),
                });
            }
        }
        for (key, globs) in [("exclude", &cfg.exclude), ("gzip_aware", &cfg.gzip_aware)] {
            for g in globs {
                globset::Glob::new(g).map_err(|e| Error::Config {
                    path: path.to_path_buf(),
                    message: format!("{key} pattern '{g}': {e}"),
                })?;
            }
        }
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut names = std::collections::HashSet::new();
        for s in &cfg.standby {
            if cfg.standby.len() > 1 && s.name.is_none() {
                return Err(bad(format!(
                    "every [[standby]] table needs a name when there are several (the one for {} has none)",
                    s.url.as_deref().unwrap_or("no url")
                )));
            }
            let n = s.name();
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad(format!(
                    "standby name '{n}': use letters, digits, '-', '_' and '.' only"
                )));
            }
            if !names.insert(n.to_string()) {
                return Err(bad(format!("standby name '{n}' is used twice")));
            }
            if let Some(u) = &s.url
                && cfg
                    .standby
                    .iter()
                    .filter(|o| o.url.as_ref() == Some(u))
                    .count()
                    > 1
            {
                return Err(bad(format!(
                    "standby url '{u}' is given to two nodes: each node has a store of its own"
                )));
            }
        }
        if cfg.sync_parallel == 0 {
            return Err(bad("sync_parallel must be at least 1".into()));
        }
        Ok(cfg)
    }

    /// Load the config: an explicit path must exist; the default location
    /// may be absent (then every setting takes its default).
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let env = std::env::var_os("HAMN_CONFIG").map(PathBuf::from);
        let (path, required) = match (explicit, env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Config::parse(&text, &path)?, Some(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok((Config::default_values(), None))
            }
            Err(e) => Err(Error::Config {
                path,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    fn default_values() -> Config {
        Config {
            one_file_system: true,
            sync_parallel: four(),
            ..Config::default()
        }
    }

    /// The first (or only) configured node, or the defaults when there is
    /// none: what `push` and `status` use without `--to NAME`.
    pub fn standby(&self) -> Standby {
        self.standby.first().cloned().unwrap_or_default()
    }

    /// The configured node called `name`.
    pub fn node(&self, name: &str) -> Option<&Standby> {
        self.standby.iter().find(|s| s.name() == name)
    }

    pub fn store_path(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.store.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_relative_paths_are_errors() {
        let p = Path::new("x.toml");
        assert!(Config::parse("stor = '/x'", p).is_err());
        assert!(Config::parse("paths = ['etc/hosts']", p).is_err());
        assert!(Config::parse("exclude = ['[']", p).is_err());
        let c = Config::parse("paths = ['/install']\n[hooks]\npre_snapshot = ['true']", p).unwrap();
        assert!(c.one_file_system);
        assert!(c.standby().delta, "deltas are on without a [standby] table");
        assert_eq!(c.hooks.pre_snapshot, vec!["true"]);
        assert!(
            Config::parse("[standby]\nurl = '/s'", p)
                .unwrap()
                .standby()
                .delta
        );
        assert!(
            !Config::parse("[standby]\ndelta = false", p)
                .unwrap()
                .standby()
                .delta
        );
    }

    #[test]
    fn one_standby_table_or_several_named_ones() {
        let p = Path::new("x.toml");
        let one = Config::parse("[standby]\nurl = '/s'", p).unwrap();
        assert_eq!(one.standby.len(), 1);
        assert_eq!(one.standby[0].name(), "standby");
        assert_eq!(one.sync_parallel, 4);
        let two = Config::parse(
            "sync_parallel = 2\n[[standby]]\nname = 'mn2'\nurl = '/a'\n[[standby]]\nname = 'sn1'\nurl = '/b'\nmaterialize = true",
            p,
        )
        .unwrap();
        assert_eq!(two.standby.len(), 2);
        assert_eq!(two.node("sn1").unwrap().url.as_deref(), Some("/b"));
        assert!(two.node("sn1").unwrap().materialize);
        assert_eq!(two.sync_parallel, 2);
        for (text, why) in [
            (
                "[[standby]]\nurl = '/a'\n[[standby]]\nurl = '/b'",
                "needs a name",
            ),
            (
                "[[standby]]\nname = 'x'\n[[standby]]\nname = 'x'",
                "used twice",
            ),
            ("[[standby]]\nname = 'a b'", "letters, digits"),
            ("[[standby]]\nname = 'x'\nurll = '/a'", "unknown field"),
            ("sync_parallel = 0", "at least 1"),
            (
                "[[standby]]\nname = 'a'\nurl = '/s'\n[[standby]]\nname = 'b'\nurl = '/s'",
                "two nodes",
            ),
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
