//! `hamn sync`, the nightly job: snapshot, push, confirm on the standby
//! (listed, complete, a sample of chunks read back), then as configured
//! have the standby deploy it and apply retention on both nodes. Writes
//! the Prometheus textfile at the end, also when a step failed.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use hamn::metrics::{self, Gauge};
use hamn::remote::protocol::MODE_WRITE;
use hamn::remote::push::{self, PushOptions};
use hamn::retention::{self, Policy};
use hamn::{Error, Result};

use super::remote_args::RemoteArgs;
use super::snapshot::{self as snapcmd, print_outcome};
use super::{Ctx, EXIT_WARNINGS};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Tag the new snapshot (repeatable)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
}

/// Chunks read back from the standby when the config sets no number
/// (`standby.verify_sample = 0` turns the read-back off).
const DEFAULT_VERIFY_SAMPLE: u32 = 16;

#[derive(Default)]
struct Report {
    snapshot: Option<serde_json::Value>,
    files_total: u64,
    files_read: u64,
    warnings: u64,
    push: Option<push::PushStats>,
    standby_newest_ns: Option<i64>,
    verified: u64,
    materialize: Option<serde_json::Value>,
    retention_local: Option<serde_json::Value>,
    retention_standby: Option<serde_json::Value>,
    code: i32,
}

fn steps(ctx: &Ctx, a: &Args, r: &mut Report) -> Result<()> {
    // Usage errors (an over-long tag, a bad standby URL) before the store
    // is touched.
    let opts = snapcmd::options_from(ctx, a.tags.clone(), Vec::new(), false, false, Vec::new())?;
    opts.validate()?;
    let target = a.remote.target(ctx)?;
    let store = ctx.open_store()?;
    let lock = ctx.lock(&store)?;
    hamn::log::info("sync: snapshot");
    let (outcome, remote) = snapshot_while_connecting(ctx, a, &store, &lock, &opts)?;
    let s = &outcome.snapshot.stats;
    (r.files_total, r.files_read, r.warnings) = (s.files, s.files_read, s.warnings);
    r.snapshot = Some(snapcmd::outcome_json(&outcome));
    if !ctx.json {
        print_outcome(&outcome);
    }
    hamn::log::info(&format!("sync: push to {target}"));
    let mut remote = match remote? {
        Some(r) => r,
        None => a.remote.connect(ctx, MODE_WRITE)?.1,
    };
    let sample = ctx
        .config
        .standby
        .verify_sample
        .unwrap_or(DEFAULT_VERIFY_SAMPLE) as usize;
    let stats = push::push(
        &store,
        &lock,
        &mut remote,
        &PushOptions {
            verify: false,
            sample,
            all: false,
            delta: ctx.config.standby.delta,
        },
    )?;
    if !ctx.json {
        super::push::print_stats(&stats, &target.to_string());
    }
    hamn::log::info("sync: confirm on the standby");
    let theirs = remote.snapshots()?;
    let Some((_, snap)) = theirs.iter().find(|(id, _)| *id == outcome.id) else {
        return Err(Error::Remote {
            peer: target.to_string(),
            message: format!(
                "snapshot {} is not listed after the push",
                outcome.id.short()
            ),
        });
    };
    r.standby_newest_ns = theirs
        .iter()
        .map(|(_, s)| s.time_ns)
        .max()
        .or(Some(snap.time_ns));
    r.verified = push::verify_sample(&mut remote, &stats.sample)?;
    r.push = Some(stats);
    if !ctx.json {
        println!(
            "standby has snapshot {}; {} chunks read back and verified",
            &outcome.id.to_hex()[..12],
            r.verified
        );
    }
    if ctx.config.standby.materialize {
        hamn::log::info("sync: materialize on the standby");
        let root = a.remote.remote_root(ctx);
        let d = match remote.materialize(outcome.id, &root.to_string_lossy()) {
            Err(Error::Refused(why)) => {
                hamn::log::warn(&format!("{why}; not deployed"));
                r.code = EXIT_WARNINGS;
                return finish(remote, &outcome, r);
            }
            other => other?,
        };
        // What the standby's deployment warned of is this run's warning
        // too (its stderr does not reach the primary's log).
        let texts = |k: &str| -> Vec<String> {
            d[k].as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        };
        if super::materialize::log_warnings(
            "standby: ",
            &texts("warnings"),
            &texts("hook_failures"),
        ) {
            r.code = EXIT_WARNINGS;
        }
        if !ctx.json {
            match d["same_content_as"].as_str() {
                Some(dep) => println!(
                    "standby: its deployed snapshot {} has the same content; recorded as deployed, nothing written",
                    &dep[..dep.len().min(12)]
                ),
                None => println!(
                    "standby deployed it: {} files written ({} bytes), {} unchanged",
                    d["files_written"], d["bytes_written"], d["files_reused"]
                ),
            }
        }
        r.materialize = Some(d);
    }
    if ctx.config.retention.apply_on_sync {
        hamn::log::info("sync: retention");
        let policy = Policy::from_config(&ctx.config.retention);
        let decisions = retention::plan(
            &store.snapshots()?,
            &policy,
            &hamn::deploy::state::pinned(&store)?,
        )?;
        let forgotten = retention::forget(&store, &lock, &decisions)?;
        let gc = hamn::gc::execute(
            &store,
            &lock,
            hamn::gc::plan(&store, super::gc::grace(ctx))?,
        )?;
        r.retention_local = Some(serde_json::json!({ "forgotten": forgotten, "gc": gc }));
        r.retention_standby = remote.apply_retention()?;
    }
    finish(remote, &outcome, r)
}

/// How often a session opened during the snapshot asks the standby
/// something, inside any `serve --idle-timeout` of 2 s or more.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Longest a session opened during the snapshot waits for it. The
/// standby's `serve` holds its store's lock from the start of a write
/// session: a primary whose snapshot hangs (a `pre_snapshot` hook, a hung
/// mount) must not keep the standby locked, which a failover needs free.
/// A nightly snapshot takes seconds; a longer one gets a new session.
const EARLY_SESSION_MAX: Duration = Duration::from_secs(10);
/// How long a failed snapshot waits for the early session to close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Take the snapshot while a second thread opens the session with the
/// standby (TCP, SSH key exchange, `hamn serve` started there), so the
/// push starts as soon as the snapshot is committed. The session is
/// pinged every `KEEPALIVE` until the snapshot is done, and once more then.
/// A failed snapshot is returned without waiting for the connection (a
/// session already open is closed first, within `CLOSE_WAIT`). Otherwise the
/// snapshot comes with: the session; or, when the connection was still
/// being made as the snapshot ended and then failed, its error, the run's
/// error as it would have been after the snapshot; or None for a
/// connection that failed or a session lost during the snapshot (the link
/// dropped, the standby's `serve` ended) or given up after
/// `EARLY_SESSION_MAX`, and the caller connects again.
fn snapshot_while_connecting(
    ctx: &Ctx,
    a: &Args,
    store: &hamn::store::Store,
    lock: &hamn::store::StoreLock,
    opts: &hamn::snapshot::create::SnapshotOptions,
) -> Result<(
    hamn::snapshot::create::SnapshotOutcome,
    Result<Option<hamn::remote::client::Remote>>,
)> {
    use hamn::remote::client::Remote;
    let (target, copts) = a.remote.connect_options(ctx, MODE_WRITE)?;
    // Ok(()) on `done`: the snapshot is committed; the sender dropped: it failed.
    let (done, wait) = mpsc::channel::<()>();
    let (give, session) = mpsc::channel();
    // Err(Some(e)): the connection failed; Err(None): the session was not kept.
    let early = move || -> std::result::Result<Remote, Option<Error>> {
        let started = Instant::now();
        let mut remote = Remote::connect(&target, &copts).map_err(|e| {
            match wait.try_recv() {
                // Still snapshotting: connecting again after it costs no
                // more than connecting only then would have.
                Err(mpsc::TryRecvError::Empty) => {
                    hamn::log::verbose(&format!(
                        "sync: connecting during the snapshot failed: {e}"
                    ));
                    None
                }
                // The snapshot is done and waited for this attempt: its
                // error is the run's.
                _ => Some(e),
            }
        })?;
        let lost = |e: Error| {
            hamn::log::verbose(&format!(
                "sync: the session opened for the push was lost: {e}"
            ));
            None
        };
        loop {
            match wait.recv_timeout(KEEPALIVE) {
                // The snapshot is committed: still there for the push?
                Ok(()) => return remote.ping().map(|()| remote).map_err(lost),
                Err(RecvTimeoutError::Timeout) if started.elapsed() < EARLY_SESSION_MAX => {
                    remote.ping().map_err(lost)?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    hamn::log::verbose(&format!(
                        "sync: the snapshot takes over {} s: closing the session opened for the push",
                        EARLY_SESSION_MAX.as_secs()
                    ));
                    break;
                }
                // The snapshot failed.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Closed, not dropped, so the standby has released its lock
        // before anyone connects again.
        let _ = remote.close();
        Err(None)
    };
    std::thread::Builder::new()
        .name("hamn-session".into())
        .spawn(move || {
            let _ = give.send(early());
        })
        .map_err(|e| Error::Other(format!("cannot start a thread: {e}")))?;
    let outcome = match hamn::snapshot::create::create(store, lock, opts) {
        Ok(o) => o,
        Err(e) => {
            drop(done);
            // A session already open gets a moment to close, so the
            // standby's lock is released before this process exits; a
            // connection still being made is not waited for.
            let _ = session.recv_timeout(CLOSE_WAIT);
            return Err(e);
        }
    };
    let _ = done.send(());
    let remote = match session.recv() {
        Ok(Ok(r)) => Ok(Some(r)),
        Ok(Err(Some(e))) => Err(e),
        Ok(Err(None)) => Ok(None),
        Err(_) => {
            hamn::log::warn(
                "sync: the thread opening the session during the snapshot panicked; connecting again",
            );
            Ok(None)
        }
    };
    Ok((outcome, remote))
}

fn finish(
    remote: hamn::remote::client::Remote,
    outcome: &hamn::snapshot::create::SnapshotOutcome,
    r: &mut Report,
) -> Result<()> {
    remote.close()?;
    if !outcome.warnings.is_empty() {
        r.code = EXIT_WARNINGS;
    }
    Ok(())
}

/// The last-success time recorded in an earlier textfile, to carry over.
fn previous_success(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hamn_sync_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

fn write_metrics(ctx: &Ctx, r: &Report, code: i32, started: Instant, now: f64) -> Result<()> {
    let Some(path) = &ctx.config.monitoring.textfile else {
        return Ok(());
    };
    let last_success = if code == 0 || code == EXIT_WARNINGS {
        Some(now + started.elapsed().as_secs_f64())
    } else {
        previous_success(path)
    };
    let mut g = vec![
        Gauge {
            name: "hamn_sync_last_run_timestamp_seconds",
            help: "Start of the last hamn sync run (Unix time).",
            value: now,
        },
        Gauge {
            name: "hamn_sync_exit_status",
            help: "Exit status of the last hamn sync (0 ok, 1 failed, 2 usage, 3 warnings, 4 locked).",
            value: code as f64,
        },
        Gauge {
            name: "hamn_sync_duration_seconds",
            help: "Wall time of the last hamn sync.",
            value: started.elapsed().as_secs_f64(),
        },
        Gauge {
            name: "hamn_snapshot_files",
            help: "Files in the last snapshot.",
            value: r.files_total as f64,
        },
        Gauge {
            name: "hamn_snapshot_files_changed",
            help: "Files read because they changed since the previous snapshot.",
            value: r.files_read as f64,
        },
        Gauge {
            name: "hamn_snapshot_warnings",
            help: "Files that could not be stored in the last snapshot.",
            value: r.warnings as f64,
        },
        Gauge {
            name: "hamn_push_bytes_sent",
            help: "Bytes sent to the standby by the last sync.",
            value: r.push.as_ref().map_or(0, |p| p.bytes_sent) as f64,
        },
        Gauge {
            name: "hamn_push_chunks_sent",
            help: "Chunks and trees sent to the standby by the last sync.",
            value: r.push.as_ref().map_or(0, |p| p.blobs_sent) as f64,
        },
    ];
    if let Some(t) = last_success {
        g.push(Gauge {
            name: "hamn_sync_last_success_timestamp_seconds",
            help: "End of the last successful hamn sync (Unix time).",
            value: t,
        });
    }
    if let Some(ns) = r.standby_newest_ns {
        g.push(Gauge {
            name: "hamn_standby_newest_snapshot_age_seconds",
            help: "Age of the newest snapshot on the standby at the end of the last sync.",
            value: (now - ns as f64 / 1e9).max(0.0),
        });
    }
    metrics::write_textfile(path, &g)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut r = Report::default();
    let result = steps(ctx, &a, &mut r);
    let code = match &result {
        Ok(()) => r.code,
        Err(e) => e.exit_code(),
    };
    if let Err(e) = write_metrics(ctx, &r, code, started, now) {
        hamn::log::warn(&format!("could not write the metrics textfile: {e}"));
    }
    if ctx.json {
        // One document either way: a failed run still tells what its
        // steps did before the failure (the snapshot taken, what was sent).
        let mut doc = serde_json::json!({
            "snapshot": r.snapshot,
            "standby": a.remote.target(ctx).ok().map(|t| t.to_string()),
            "push": r.push,
            "verified_chunks": r.verified,
            "materialize": r.materialize,
            "retention": { "local": r.retention_local, "standby": r.retention_standby },
            "exit_code": code,
        });
        if let Err(e) = &result {
            doc["error"] = e.to_string().into();
        }
        ctx.print_json(&doc);
    }
    match result {
        Ok(()) => Ok(code),
        Err(e) if ctx.json => Err(Error::Reported(e.to_string(), code)),
        Err(e) => Err(e),
    }
}
