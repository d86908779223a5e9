//! The command line: flags in, library call, output out. Human output goes
//! to stdout, logs and progress to stderr; with `--json` every command
//! prints exactly one JSON document on stdout (docs/json.md).

mod cat;
mod check;
mod completions;
mod config_cmd;
mod diff;
mod forget;
mod gc;
mod init;
mod ls;
mod materialize;
mod push;
mod remote_args;
mod restore;
mod rollback;
mod serve;
mod snapshot;
mod snapshots;
mod status;
mod sync;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use hamn::config::Config;
use hamn::store::{Store, StoreLock};
use hamn::{Error, Result};

pub use hamn::error::EXIT_WARNINGS;

#[derive(Parser, Debug)]
#[command(
    name = "hamn",
    version,
    about = "Keep an xCAT standby management node a versioned clone of the primary",
    long_about = None,
)]
pub struct Cli {
    /// Config file (default: $HAMN_CONFIG, else /etc/hamn/hamn.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store directory (default: the config's `store`, else /var/lib/hamn)
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print one JSON document on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Seconds to wait for another run's store lock (default: config, else 0)
    #[arg(long, global = true, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an empty store
    #[command(after_help = "Example: hamn --store /var/lib/hamn init")]
    Init(init::Args),
    /// Snapshot the managed paths (from the config, or PATHs)
    #[command(after_help = "Example: hamn snapshot --tag before-upgrade")]
    Snapshot(snapshot::Args),
    /// List snapshots
    #[command(after_help = "Example: hamn snapshots --json")]
    Snapshots(snapshots::Args),
    /// List a snapshot's entries
    #[command(after_help = "Example: hamn ls latest /install/netboot --recursive")]
    Ls(ls::Args),
    /// Print one file of a snapshot
    #[command(after_help = "Example: hamn cat latest~1 /etc/hosts")]
    Cat(cat::Args),
    /// Copy selected paths out of a snapshot, with all metadata
    #[command(
        after_help = "Example: hamn restore latest /etc/hosts /install/postscripts --to /tmp/salvage"
    )]
    Restore(restore::Args),
    /// What changed between two snapshots
    #[command(after_help = "Example: hamn diff latest~1 latest /install")]
    Diff(diff::Args),
    /// Verify the store (and, with --read-data, every stored byte)
    #[command(after_help = "Example: hamn check --read-data-subset 5%")]
    Check(check::Args),
    /// Check the configuration without changing anything
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Print shell completions (bash, zsh, fish, ...)
    #[command(after_help = "Example: hamn completions bash > /etc/bash_completion.d/hamn")]
    Completions(completions::CompletionsArgs),
    /// Print the man page (or write all pages into a directory)
    #[command(after_help = "Example: hamn man --out /usr/local/share/man/man1")]
    Man(completions::ManArgs),
    /// Forget snapshots a retention policy does not keep (data goes at the next gc)
    #[command(
        after_help = "Example: hamn forget --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --dry-run"
    )]
    Forget(forget::Args),
    /// Delete data no snapshot references, reclaiming disk space
    #[command(after_help = "Example: hamn gc --dry-run")]
    Gc(gc::Args),
    /// Ship every snapshot the standby lacks (only the missing data)
    #[command(
        after_help = "Example: hamn push --to ssh://root@mn2/var/lib/hamn --identity /root/.ssh/id_ed25519"
    )]
    Push(push::Args),
    /// The standby end of push, on stdin/stdout (started by push over SSH)
    #[command(
        after_help = "Example (authorized_keys on the standby):\n  command=\"hamn serve --store /var/lib/hamn\",restrict ssh-ed25519 AAAA... root@mn1"
    )]
    Serve(serve::Args),
    /// Deploy a snapshot (default the newest) into the managed paths, atomically
    #[command(after_help = "Example: hamn materialize latest --root /")]
    Materialize(materialize::Args),
    /// Put the previous generation back, in one swap
    #[command(after_help = "Example: hamn rollback")]
    Rollback(rollback::Args),
    /// Deployed, previous and newest snapshot; drift of the live tree; the standby's lag
    #[command(after_help = "Example: hamn status -v")]
    Status(status::Args),
    /// The nightly job: snapshot, push, confirm on the standby
    #[command(after_help = "Example (crontab): 0 2 * * * /usr/local/sbin/hamn -q sync")]
    Sync(sync::Args),
}

/// What every command needs: the parsed flags and the loaded config.
pub struct Ctx {
    pub json: bool,
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub store_flag: Option<PathBuf>,
    pub lock_wait: Option<u64>,
    pub command_line: String,
}

impl Ctx {
    pub fn store_path(&self) -> PathBuf {
        self.config.store_path(self.store_flag.as_deref())
    }

    pub fn open_store(&self) -> Result<Store> {
        Store::open(&self.store_path())
    }

    /// For commands that only read (and dry runs): nothing in the store changes.
    pub fn open_store_read_only(&self) -> Result<Store> {
        Store::open_read_only(&self.store_path())
    }

    pub fn lock_wait_duration(&self) -> Duration {
        Duration::from_secs(self.lock_wait.unwrap_or(self.config.lock_wait))
    }

    pub fn lock(&self, store: &Store) -> Result<StoreLock> {
        store.lock(self.lock_wait_duration(), &self.command_line)
    }

    /// Print the command's JSON document.
    pub fn print_json(&self, value: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }
}

pub fn run(cli: Cli) -> Result<i32> {
    let (config, config_path) = Config::load(cli.config.as_deref())?;
    let ctx = Ctx {
        json: cli.json,
        config,
        config_path,
        store_flag: cli.store,
        lock_wait: cli.lock_wait,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
    };
    if !matches!(
        cli.command,
        Command::Init(_) | Command::Completions(_) | Command::Man(_) | Command::Config(_)
    ) {
        hamn::deploy::journal::recover_interrupted(&ctx.store_path());
    }
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Cat(a) => cat::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Push(a) => push::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Config(c) => config_cmd::run(&ctx, c),
        Command::Completions(a) => completions::completions(&ctx, a),
        Command::Man(a) => completions::man(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::Sync(a) => sync::run(&ctx, a),
        Command::Materialize(a) => materialize::run(&ctx, a),
        Command::Rollback(a) => rollback::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
    }
}

/// 1.5 GiB, 12 KiB, 900 B.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time in nanoseconds since the epoch, as local RFC 3339 with ns.
pub fn time_ns_text(sec: i64, nsec: u32) -> String {
    chrono::DateTime::from_timestamp(sec, nsec)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
        })
        .unwrap_or_else(|| format!("{sec}.{nsec:09}"))
}

/// A snapshot id as human output shows it: its first 12 hex digits.
pub fn id12(id: &hamn::id::SnapshotId) -> String {
    id.to_hex()[..12].to_string()
}

/// Reject what the library cannot take as usage errors (exit 2).
pub fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}
