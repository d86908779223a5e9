//! The nightly job as one operation: snapshot, push, confirm on the
//! standby (the snapshot stored there, a sample of chunks read back),
//! then as asked have the standby deploy it and apply retention on both
//! nodes, and write the Prometheus textfile at the end, also when a step
//! failed. It prints nothing: it logs its steps and returns a report.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::deploy::MaterializeStats;
use crate::error::{EXIT_WARNINGS, Error, Result};
use crate::metrics::{self, Gauge};
use crate::remote::Target;
use crate::remote::client::{ConnectOptions, Remote};
use crate::remote::push::{self, PushOptions, PushStats};
use crate::retention::{self, Policy, RetentionReport};
use crate::snapshot::create::{self, SnapshotOptions, SnapshotOutcome};
use crate::store::{Store, StoreLock};

/// Chunks read back from the standby when the config sets no number
/// (`standby.verify_sample = 0` turns the read-back off).
pub const DEFAULT_VERIFY_SAMPLE: usize = 16;

pub struct SyncOptions {
    pub snapshot: SnapshotOptions,
    pub target: Target,
    /// How to reach the standby (a write session).
    pub connect: ConnectOptions,
    /// Chunks of the push read back from the standby and verified.
    pub verify_sample: usize,
    /// Send new chunks of changed files as deltas.
    pub delta: bool,
    /// Have the standby deploy the snapshot under this root.
    pub materialize: Option<PathBuf>,
    /// Apply this policy on both nodes after the push, with this gc grace.
    pub retention: Option<(Policy, Duration)>,
    /// Write the run's gauges here (Prometheus textfile).
    pub textfile: Option<PathBuf>,
    /// How long to wait for this store's lock, and the command named in it.
    pub lock_wait: Duration,
    pub command: String,
}

/// What a run did, step by step; a failed run keeps what its steps did
/// before the failure.
#[derive(Default)]
pub struct SyncReport {
    pub snapshot: Option<SnapshotOutcome>,
    pub push: Option<PushStats>,
    /// Time of the newest snapshot the standby holds after the push.
    pub standby_newest_ns: Option<i64>,
    pub verified_chunks: u64,
    pub materialize: Option<MaterializeStats>,
    /// Why the standby did not deploy (it serves with `--no-deploy`).
    pub not_deployed: Option<String>,
    pub retention_local: Option<RetentionReport>,
    pub retention_standby: Option<RetentionReport>,
    /// The run finished with warnings (exit status 3).
    pub warned: bool,
}

impl SyncReport {
    /// The exit status of a run that ended with `result`.
    pub fn exit_code(&self, result: &Result<()>) -> i32 {
        match result {
            Err(e) => e.exit_code(),
            Ok(()) if self.warned => EXIT_WARNINGS,
            Ok(()) => 0,
        }
    }
}

/// Run the nightly job for the store at `store_path`. The report is
/// returned whether or not a step failed; the textfile, when asked for,
/// is written either way.
pub fn sync(store_path: &Path, opts: &SyncOptions) -> (SyncReport, Result<()>) {
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut r = SyncReport::default();
    let result = steps(store_path, opts, &mut r);
    if let Some(path) = &opts.textfile
        && let Err(e) = write_metrics(path, &r, r.exit_code(&result), started, now)
    {
        crate::log::warn(&format!("could not write the metrics textfile: {e}"));
    }
    (r, result)
}

fn steps(store_path: &Path, opts: &SyncOptions, r: &mut SyncReport) -> Result<()> {
    opts.snapshot.validate()?;
    let store = Store::open(store_path)?;
    let lock = store.lock(opts.lock_wait, &opts.command)?;
    crate::log::info("sync: snapshot");
    let (outcome, early) = snapshot_while_connecting(&store, &lock, opts)?;
    let id = outcome.id;
    r.warned |= !outcome.warnings.is_empty();
    r.snapshot = Some(outcome);
    crate::log::info(&format!("sync: push to {}", opts.target));
    let mut remote = match early? {
        Some(remote) => remote,
        None => Remote::connect(&opts.target, &opts.connect)?,
    };
    let stats = push::push(
        &store,
        &lock,
        &mut remote,
        &PushOptions {
            verify: false,
            sample: opts.verify_sample,
            all: false,
            delta: opts.delta,
        },
    )?;
    crate::log::info("sync: confirm on the standby");
    // The push hands each snapshot over and the standby answers with the
    // id it stored: this run's must be among them.
    if !stats.snapshots_sent.contains(&id) {
        return Err(Error::Remote {
            peer: opts.target.to_string(),
            message: format!("snapshot {} was not stored by the push", id.short()),
        });
    }
    r.standby_newest_ns = r.snapshot.as_ref().map(|o| o.snapshot.time_ns);
    r.verified_chunks = push::verify_sample(&mut remote, &stats.sample)?;
    r.push = Some(stats);
    if let Some(root) = &opts.materialize {
        crate::log::info("sync: materialize on the standby");
        match remote.materialize(id, &root.to_string_lossy()) {
            Err(Error::Refused(why)) => {
                crate::log::warn(&format!("{why}; not deployed"));
                r.not_deployed = Some(why);
                r.warned = true;
                return remote.close();
            }
            Err(e) => return Err(e),
            Ok(d) => {
                // What the standby's deployment warned of is this run's
                // warning too (its stderr does not reach the primary's log).
                r.warned |= d.log_warnings("standby: ");
                r.materialize = Some(d);
            }
        }
    }
    if let Some((policy, grace)) = &opts.retention {
        crate::log::info("sync: retention");
        r.retention_local = Some(retention::apply(&store, &lock, policy, *grace)?);
        r.retention_standby = remote.apply_retention()?;
    }
    remote.close()
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
    store: &Store,
    lock: &StoreLock,
    opts: &SyncOptions,
) -> Result<(SnapshotOutcome, Result<Option<Remote>>)> {
    let (target, copts) = (opts.target.clone(), opts.connect.clone());
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
                    crate::log::verbose(&format!(
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
            crate::log::verbose(&format!(
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
                    crate::log::verbose(&format!(
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
    let outcome = match create::create(store, lock, &opts.snapshot) {
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
            crate::log::warn(
                "sync: the thread opening the session during the snapshot panicked; connecting again",
            );
            Ok(None)
        }
    };
    Ok((outcome, remote))
}

/// The last-success time recorded in an earlier textfile, to carry over.
fn previous_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hamn_sync_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

fn write_metrics(path: &Path, r: &SyncReport, code: i32, started: Instant, now: f64) -> Result<()> {
    let last_success = if code == 0 || code == EXIT_WARNINGS {
        Some(now + started.elapsed().as_secs_f64())
    } else {
        previous_success(path)
    };
    let stats = r.snapshot.as_ref().map(|o| &o.snapshot.stats);
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
            value: stats.map_or(0, |s| s.files) as f64,
        },
        Gauge {
            name: "hamn_snapshot_files_changed",
            help: "Files read because they changed since the previous snapshot.",
            value: stats.map_or(0, |s| s.files_read) as f64,
        },
        Gauge {
            name: "hamn_snapshot_warnings",
            help: "Files that could not be stored in the last snapshot.",
            value: stats.map_or(0, |s| s.warnings) as f64,
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
