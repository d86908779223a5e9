//! The nightly job as one operation: one snapshot, then for every node
//! (the standby, xCAT service nodes; at most `parallel` at once) a push,
//! the confirmation that the node stored the snapshot and a sample of its
//! chunks read back, and as asked its deployment and its retention; then
//! retention on the primary and the Prometheus textfile, also when a step
//! failed. A node that fails never stops the others; a chunk that several
//! nodes lack is read from the packs (and made into a delta) once while
//! they push side by side.
//! It prints nothing: it logs its steps and returns a report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::MaterializeStats;
use crate::error::{EXIT_WARNINGS, Error, Result};
use crate::id::SnapshotId;
use crate::metrics::{self, Gauge};
use crate::nodes::{self, NodeRecord};
use crate::remote::Target;
use crate::remote::client::{ConnectOptions, Remote};
use crate::remote::push::{self, Early, EarlyFeed, EarlyPush, PushOptions, PushStats, SharedReads};
use crate::retention::{self, Policy, RetentionReport};
use crate::snapshot::create::{self, SnapshotOptions, SnapshotOutcome};
use crate::store::{Store, StoreLock};

/// Chunks read back from a node when the config sets no number
/// (`verify_sample = 0` turns the read-back off).
pub const DEFAULT_VERIFY_SAMPLE: usize = 16;
/// Bytes of sent blobs kept for the other nodes of a run after one node's
/// push read and encoded them (`push::SharedReads`).
pub const SHARED_READS_BYTES: usize = 128 * 1024 * 1024;

/// One node to keep current.
pub struct NodeOptions {
    /// Its name in logs, reports and metrics.
    pub name: String,
    pub target: Target,
    /// How to reach it (a write session).
    pub connect: ConnectOptions,
    /// Chunks of the push read back from it and verified.
    pub verify_sample: usize,
    /// Send new chunks of changed files as deltas.
    pub delta: bool,
    /// Have it deploy the snapshot under this root.
    pub materialize: Option<PathBuf>,
    /// Keep what the run learns of it in the primary's store
    /// (`nodes`): for a configured node, not for a one-off `--to URL`.
    pub record: bool,
}

pub struct SyncOptions {
    pub snapshot: SnapshotOptions,
    pub nodes: Vec<NodeOptions>,
    /// Nodes pushed to at once.
    pub parallel: usize,
    /// Apply this policy on the primary and ask every node to apply its
    /// own, with this gc grace.
    pub retention: Option<(Policy, Duration)>,
    /// Write the run's gauges here (Prometheus textfile).
    pub textfile: Option<PathBuf>,
    /// How long to wait for this store's lock, and the command named in it.
    pub lock_wait: Duration,
    pub command: String,
}

/// What one node's turn did; a failed turn keeps what its steps did
/// before the failure.
pub struct NodeReport {
    pub name: String,
    pub target: String,
    pub push: Option<PushStats>,
    pub verified_chunks: u64,
    pub materialize: Option<MaterializeStats>,
    /// Why the node did not deploy (it serves with `--no-deploy`).
    pub not_deployed: Option<String>,
    pub retention: Option<RetentionReport>,
    /// The node's turn finished with warnings.
    pub warned: bool,
    /// How the turn ended; `None` when it never started (the snapshot
    /// failed).
    pub result: Option<Result<()>>,
}

impl NodeReport {
    fn new(n: &NodeOptions) -> NodeReport {
        NodeReport {
            name: n.name.clone(),
            target: n.target.to_string(),
            push: None,
            verified_chunks: 0,
            materialize: None,
            not_deployed: None,
            retention: None,
            warned: false,
            result: None,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.result, Some(Err(_)))
    }

    /// "ok", "warnings", "failed" or "not run".
    pub fn status(&self) -> &'static str {
        match &self.result {
            None => "not run",
            Some(Err(_)) => "failed",
            Some(Ok(())) if self.warned => "warnings",
            Some(Ok(())) => "ok",
        }
    }
}

/// What a run did, step by step.
#[derive(Default)]
pub struct SyncReport {
    pub snapshot: Option<SnapshotOutcome>,
    pub nodes: Vec<NodeReport>,
    pub retention_local: Option<RetentionReport>,
    /// Stored bytes read from the primary's packs by the pushes.
    pub pack_bytes_read: u64,
    /// The snapshot had warnings (files that vanished or could not be read).
    pub warned: bool,
}

impl SyncReport {
    /// The exit status of a run that ended with `result`: the error's, or
    /// 3 when some nodes failed and others did not, or when anything
    /// warned; 0 otherwise.
    pub fn exit_code(&self, result: &Result<()>) -> i32 {
        match result {
            Err(e) => e.exit_code(),
            Ok(()) if self.warned || self.nodes.iter().any(|n| n.failed() || n.warned) => {
                EXIT_WARNINGS
            }
            Ok(()) => 0,
        }
    }
}

/// Run the nightly job for the store at `store_path`. The report is
/// returned whether or not a step failed; the textfile, when asked for,
/// is written either way. The run fails as a whole when the snapshot
/// fails or every node does (with a single node: with that node's error).
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
    if opts.nodes.is_empty() {
        return Err(Error::Usage(
            "no standby to sync: set [standby] in the config".into(),
        ));
    }
    let store = Arc::new(Store::open(store_path)?);
    let lock = store.lock(opts.lock_wait, &opts.command)?;
    crate::log::info("sync: snapshot");
    let shared = Arc::new(SharedReads::new(opts.nodes.len(), SHARED_READS_BYTES));
    // The early pushes' reads count too.
    let read_before = store.pack_bytes_read();
    // Sessions with the first nodes are opened while the snapshot runs,
    // and sent what it stores as it goes.
    let early: Vec<EarlySession> = opts
        .nodes
        .iter()
        .take(opts.parallel.max(1))
        .map(|n| EarlySession::start(n, &store, &shared))
        .collect::<Result<_>>()?;
    let feed = EarlyFeed::new(
        early.iter().filter_map(|s| s.feed.clone()).collect(),
        opts.nodes.iter().any(|n| n.delta),
    );
    let created = create::create_watched(&store, &lock, &opts.snapshot, Some(&feed));
    drop(feed);
    let outcome = match created {
        Ok(o) => o,
        Err(e) => {
            EarlySession::abandon(early);
            r.nodes = opts.nodes.iter().map(NodeReport::new).collect();
            return Err(e);
        }
    };
    let (id, time_ns) = (outcome.id, outcome.snapshot.time_ns);
    r.warned |= !outcome.warnings.is_empty();
    r.snapshot = Some(outcome);
    let mut early: Vec<Option<EarlySession>> = early.into_iter().map(Some).collect();
    for s in early.iter_mut().flatten() {
        s.snapshot_done();
    }
    let early = Mutex::new(early);
    let next = AtomicUsize::new(0);
    let parallel = opts.parallel.clamp(1, opts.nodes.len());
    let reports: Mutex<Vec<(usize, NodeReport)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(n) = opts.nodes.get(i) else { break };
                    let session = early
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(i)
                        .and_then(Option::take);
                    let mut nr = NodeReport::new(n);
                    let turn = Turn {
                        store: &store,
                        lock: &lock,
                        node: n,
                        snapshot: (id, time_ns),
                        shared: &shared,
                        retention: opts.retention.is_some(),
                    };
                    let result = turn.run(session, &mut nr);
                    if let Err(e) = &result
                        && opts.nodes.len() > 1
                    {
                        crate::log::warn(&format!("node {}: {e}", n.name));
                    }
                    if n.record {
                        turn.record(&nr, &result);
                    }
                    nr.result = Some(result);
                    reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, nr));
                }
            });
        }
    });
    r.pack_bytes_read = store.pack_bytes_read() - read_before;
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|(i, _)| *i);
    r.nodes = reports.into_iter().map(|(_, n)| n).collect();
    let failed = r.nodes.iter().filter(|n| n.failed()).count();
    if failed == r.nodes.len() {
        // One node: its error is the run's, exit status and all.
        if let [only] = &mut r.nodes[..]
            && let Some(Err(e)) = only.result.take()
        {
            only.result = Some(Err(Error::Other(e.to_string())));
            return Err(e);
        }
        return Err(Error::Other(format!(
            "sync failed on every node ({failed}); see the lines above for each"
        )));
    }
    // Retention on the primary once some node has everything it was
    // asked to do (pushed, and deployed where asked).
    let complete = r
        .nodes
        .iter()
        .any(|n| matches!(n.result, Some(Ok(()))) && n.not_deployed.is_none());
    if let Some((policy, grace)) = opts.retention.as_ref().filter(|_| complete) {
        crate::log::info("sync: retention");
        r.retention_local = Some(retention::apply(&store, &lock, policy, *grace)?);
    }
    Ok(())
}

/// One node's turn, after the snapshot.
struct Turn<'a> {
    store: &'a Store,
    lock: &'a StoreLock,
    node: &'a NodeOptions,
    snapshot: (SnapshotId, i64),
    shared: &'a Arc<SharedReads>,
    retention: bool,
}

impl Turn<'_> {
    fn run(&self, early: Option<EarlySession>, r: &mut NodeReport) -> Result<()> {
        let n = self.node;
        let (id, _) = self.snapshot;
        let (mut remote, early) = match early.map(EarlySession::take).transpose()?.flatten() {
            Some((remote, sent)) => (remote, Some(sent)),
            None => (Remote::connect(&n.target, &n.connect)?, None),
        };
        crate::log::info(&format!("sync: push to {} ({})", n.name, n.target));
        let mut stats = push::push(
            self.store,
            self.lock,
            &mut remote,
            &PushOptions {
                verify: false,
                sample: n.verify_sample,
                all: false,
                delta: n.delta,
                shared: Some(self.shared.clone()),
            },
        )?;
        if let Some(e) = &early {
            stats.add_early(e);
        }
        // The push hands each snapshot over and the node answers with the
        // id it stored: this run's must be among them.
        let stored = stats.snapshots_sent.contains(&id);
        r.push = Some(stats);
        if !stored {
            return Err(Error::Remote {
                peer: n.target.to_string(),
                message: format!("snapshot {} was not stored by the push", id.short()),
            });
        }
        let sample = r
            .push
            .as_ref()
            .map(|p| p.sample.clone())
            .unwrap_or_default();
        r.verified_chunks = push::verify_sample(&mut remote, &sample)?;
        if let Some(root) = &n.materialize {
            crate::log::info(&format!("sync: materialize on {}", n.name));
            match remote.materialize(id, &root.to_string_lossy()) {
                Err(Error::Refused(why)) => {
                    // It deploys from its own timer: no retention there
                    // either tonight (it may still need its snapshots).
                    crate::log::warn(&format!("{}: {why}; not deployed", n.name));
                    r.not_deployed = Some(why);
                    r.warned = true;
                    return remote.close();
                }
                Err(e) => return Err(e),
                Ok(d) => {
                    // What the node's deployment warned of is this run's
                    // warning too (its stderr does not reach this log).
                    r.warned |= d.log_warnings(&format!("{}: ", n.name));
                    r.materialize = Some(d);
                }
            }
        }
        if self.retention {
            crate::log::info(&format!("sync: retention on {}", n.name));
            r.retention = remote.apply_retention()?;
        }
        remote.close()
    }

    /// Keep what this turn learnt of the node in the primary's store
    /// (best effort: a failure here only costs `status` its figures).
    fn record(&self, r: &NodeReport, result: &Result<()>) {
        let (id, time_ns) = self.snapshot;
        let before = nodes::read(self.store, &r.name).ok().flatten();
        let stored = r
            .push
            .as_ref()
            .is_some_and(|p| p.snapshots_sent.contains(&id));
        let mut rec = before.unwrap_or_else(|| NodeRecord {
            name: r.name.clone(),
            ..NodeRecord::default()
        });
        rec.url = r.target.clone();
        rec.last_run = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        rec.ok = result.is_ok();
        rec.error = result.as_ref().err().map(|e| e.to_string());
        if result.is_ok() {
            rec.last_success_unix = Some(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        if stored {
            rec.newest = Some(id);
            rec.newest_time_ns = Some(time_ns);
        }
        if let Some(d) = &r.materialize {
            rec.deployed = Some(d.snapshot);
        }
        if let Err(e) = nodes::write(self.store, self.lock, &rec) {
            crate::log::warn(&format!("node {}: its record was not kept: {e}", r.name));
        }
    }
}

/// How often a session opened during the snapshot asks the node
/// something when it has nothing to send, inside any `serve
/// --idle-timeout` of 2 s or more.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Longest a session opened during the snapshot waits without anything
/// to send. A node's `serve` holds its store's lock from the start of a
/// write session: a primary whose snapshot hangs (a `pre_snapshot` hook,
/// a hung mount) must not keep the standby locked, which a failover needs
/// free. A snapshot that stores nothing new for that long gets a new
/// session afterwards.
const EARLY_SESSION_MAX: Duration = Duration::from_secs(10);
/// How long a failed snapshot waits for the early sessions to close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What an early session ends as: the session and what its early push
/// sent; or, when the connection was still being made as the snapshot
/// ended and then failed, its error (Some), the node's error as it would
/// have been after the snapshot; or None for a connection that failed or
/// a session lost during the snapshot, and the node's turn connects again.
type EarlyEnd = std::result::Result<(Remote, PushStats), Option<Error>>;

/// A session with one node opened by a thread of its own while the
/// snapshot runs (TCP, SSH key exchange, `hamn serve` started there), so
/// that its push starts before the snapshot is committed: the thread runs
/// the node's [`EarlyPush`], sending the blobs of each pack the snapshot
/// seals, and pings the node when there is nothing to send. It ends when
/// the snapshot is committed ([`Early::Done`]) as an [`EarlyEnd`]; the
/// session is closed (what was sent flushed there first) when the
/// snapshot fails, when the link drops or the node's `serve` ends, or
/// after `EARLY_SESSION_MAX` without anything to send.
struct EarlySession {
    /// What the snapshot tells the thread; dropped: it failed.
    feed: Option<mpsc::Sender<Early>>,
    session: mpsc::Receiver<EarlyEnd>,
}

impl EarlySession {
    fn start(
        n: &NodeOptions,
        store: &Arc<Store>,
        shared: &Arc<SharedReads>,
    ) -> Result<EarlySession> {
        let (target, copts, name) = (n.target.clone(), n.connect.clone(), n.name.clone());
        let popts = PushOptions {
            delta: n.delta,
            shared: Some(shared.clone()),
            ..PushOptions::default()
        };
        let store = store.clone();
        let (feed, wait) = mpsc::channel::<Early>();
        let (give, session) = mpsc::channel();
        let early = move || -> EarlyEnd {
            let mut remote = Remote::connect(&target, &copts).map_err(|e| {
                loop {
                    match wait.try_recv() {
                        // What the snapshot stored meanwhile goes with its push.
                        Ok(
                            Early::Parent(_)
                            | Early::Bases(..)
                            | Early::Later(_)
                            | Early::Sealed(_),
                        ) => continue,
                        // Still snapshotting: connecting again after it costs
                        // no more than connecting only then would have.
                        Err(mpsc::TryRecvError::Empty) => {
                            crate::log::verbose(&format!(
                                "sync: connecting to {name} during the snapshot failed: {e}"
                            ));
                            break None;
                        }
                        // The snapshot is done and waited for this attempt: its
                        // error is the node's.
                        Ok(Early::Done) | Err(mpsc::TryRecvError::Disconnected) => break Some(e),
                    }
                }
            })?;
            let lost = |e: Error| {
                crate::log::verbose(&format!(
                    "sync: the session opened for the push to {name} was lost: {e}"
                ));
                None
            };
            let mut pushing = EarlyPush::new(&store, &popts, &remote);
            // The last time the node was asked or sent something, and the
            // last time the snapshot gave something to send.
            let (mut talked, mut fed) = (Instant::now(), Instant::now());
            loop {
                match wait.recv_timeout(KEEPALIVE) {
                    // The snapshot is committed: still there for the push?
                    Ok(Early::Done) => {
                        return match remote.ping() {
                            Ok(()) => {
                                let sent = pushing.finish(&remote);
                                Ok((remote, sent))
                            }
                            Err(e) => Err(lost(e)),
                        };
                    }
                    Ok(e) => {
                        let talked_now = match pushing.take(&mut remote, e) {
                            Ok(t) => t,
                            Err(e) => {
                                // Its push after the snapshot meets it
                                // again, and reports it.
                                lost(e);
                                break;
                            }
                        };
                        fed = Instant::now();
                        if talked_now {
                            talked = fed;
                        } else if talked.elapsed() >= KEEPALIVE {
                            remote.ping().map_err(lost)?;
                            talked = Instant::now();
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if fed.elapsed() < EARLY_SESSION_MAX => {
                        remote.ping().map_err(lost)?;
                        talked = Instant::now();
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        crate::log::verbose(&format!(
                            "sync: the snapshot stored nothing new for {} s: closing the session opened for {name}",
                            EARLY_SESSION_MAX.as_secs()
                        ));
                        break;
                    }
                    // The snapshot failed.
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // What was sent is kept there (the next push finds it); closed,
            // not dropped, so the node has released its lock before anyone
            // connects again.
            if pushing.sent() {
                let _ = remote.flush();
            }
            let _ = remote.close();
            Err(None)
        };
        std::thread::Builder::new()
            .name("hamn-session".into())
            .spawn(move || {
                let _ = give.send(early());
            })
            .map_err(|e| Error::Other(format!("cannot start a thread: {e}")))?;
        Ok(EarlySession {
            feed: Some(feed),
            session,
        })
    }

    fn snapshot_done(&mut self) {
        if let Some(d) = self.feed.take() {
            let _ = d.send(Early::Done);
        }
    }

    /// The snapshot failed: sessions already open get a moment to close,
    /// so the nodes' locks are released before this process exits; a
    /// connection still being made is not waited for.
    fn abandon(sessions: Vec<EarlySession>) {
        let deadline = Instant::now() + CLOSE_WAIT;
        let waiting: Vec<_> = sessions
            .into_iter()
            .map(|mut s| {
                s.feed = None;
                s.session
            })
            .collect();
        for w in waiting {
            let _ = w.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Wait for the session: Ok(Some) to use, Ok(None) to connect again,
    /// Err for the node's error.
    fn take(self) -> Result<Option<(Remote, PushStats)>> {
        match self.session.recv() {
            Ok(Ok(r)) => Ok(Some(r)),
            Ok(Err(Some(e))) => Err(e),
            Ok(Err(None)) => Ok(None),
            Err(_) => {
                crate::log::warn(
                    "sync: the thread opening a session during the snapshot panicked; connecting again",
                );
                Ok(None)
            }
        }
    }
}

/// The last-success times recorded in an earlier textfile, to carry over:
/// the run's (`None` key) and each node's.
fn previous_success(path: &Path) -> Vec<(Option<String>, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("hamn_sync_last_success_timestamp_seconds ") {
            out.extend(v.trim().parse().ok().map(|v| (None, v)));
        } else if let Some(rest) =
            l.strip_prefix("hamn_node_last_success_timestamp_seconds{node=\"")
            && let Some((name, v)) = rest.split_once("\"} ")
        {
            out.extend(v.trim().parse().ok().map(|v| (Some(name.to_string()), v)));
        }
    }
    out
}

fn write_metrics(path: &Path, r: &SyncReport, code: i32, started: Instant, now: f64) -> Result<()> {
    let before = previous_success(path);
    let carried = |node: Option<&str>| {
        before
            .iter()
            .find(|(n, _)| n.as_deref() == node)
            .map(|(_, v)| *v)
    };
    let end = now + started.elapsed().as_secs_f64();
    let last_success = if code == 0 || code == EXIT_WARNINGS {
        Some(end)
    } else {
        carried(None)
    };
    let stats = r.snapshot.as_ref().map(|o| &o.snapshot.stats);
    let pushes = || r.nodes.iter().filter_map(|n| n.push.as_ref());
    let mut g = vec![
        Gauge::new(
            "hamn_sync_last_run_timestamp_seconds",
            "Start of the last hamn sync run (Unix time).",
            now,
        ),
        Gauge::new(
            "hamn_sync_exit_status",
            "Exit status of the last hamn sync (0 ok, 1 failed, 2 usage, 3 warnings, 4 locked).",
            code as f64,
        ),
        Gauge::new(
            "hamn_sync_duration_seconds",
            "Wall time of the last hamn sync.",
            started.elapsed().as_secs_f64(),
        ),
        Gauge::new(
            "hamn_snapshot_files",
            "Files in the last snapshot.",
            stats.map_or(0, |s| s.files) as f64,
        ),
        Gauge::new(
            "hamn_snapshot_files_changed",
            "Files read because they changed since the previous snapshot.",
            stats.map_or(0, |s| s.files_read) as f64,
        ),
        Gauge::new(
            "hamn_snapshot_warnings",
            "Files that could not be stored in the last snapshot.",
            stats.map_or(0, |s| s.warnings) as f64,
        ),
        Gauge::new(
            "hamn_push_bytes_sent",
            "Bytes sent to the nodes by the last sync, all nodes together.",
            pushes().map(|p| p.bytes_sent).sum::<u64>() as f64,
        ),
        Gauge::new(
            "hamn_push_chunks_sent",
            "Chunks and trees sent to the nodes by the last sync, all nodes together.",
            pushes().map(|p| p.blobs_sent).sum::<u64>() as f64,
        ),
    ];
    if let Some(t) = last_success {
        g.push(Gauge::new(
            "hamn_sync_last_success_timestamp_seconds",
            "End of the last successful hamn sync (Unix time).",
            t,
        ));
    }
    // The age the standby's newest snapshot has: the snapshot this run
    // stored there, on the first node that has it.
    let newest = r.snapshot.as_ref().map(|o| o.snapshot.time_ns);
    let stored = |n: &NodeReport| {
        n.push.as_ref().is_some_and(|p| {
            r.snapshot
                .as_ref()
                .is_some_and(|o| p.snapshots_sent.contains(&o.id))
        })
    };
    if let Some(ns) = newest
        && r.nodes.iter().any(stored)
    {
        g.push(Gauge::new(
            "hamn_standby_newest_snapshot_age_seconds",
            "Age of the newest snapshot on the standby at the end of the last sync.",
            (now - ns as f64 / 1e9).max(0.0),
        ));
    }
    for n in &r.nodes {
        let label = n.name.clone();
        g.push(
            Gauge::new(
                "hamn_node_sync_ok",
                "1 when the last sync reached the node and did everything asked there, else 0.",
                matches!(n.result, Some(Ok(()))) as u8 as f64,
            )
            .node(&label),
        );
        g.push(
            Gauge::new(
                "hamn_node_push_bytes_sent",
                "Bytes the last sync sent to the node.",
                n.push.as_ref().map_or(0, |p| p.bytes_sent) as f64,
            )
            .node(&label),
        );
        g.push(
            Gauge::new(
                "hamn_node_push_chunks_sent",
                "Chunks and trees the last sync sent to the node.",
                n.push.as_ref().map_or(0, |p| p.blobs_sent) as f64,
            )
            .node(&label),
        );
        let ok = matches!(n.result, Some(Ok(())));
        if let Some(t) = if ok {
            Some(end)
        } else {
            carried(Some(&n.name))
        } {
            g.push(
                Gauge::new(
                    "hamn_node_last_success_timestamp_seconds",
                    "End of the last sync that succeeded on the node (Unix time).",
                    t,
                )
                .node(&label),
            );
        }
    }
    // A node this run did not serve (`--to` left it out) keeps the time
    // of its last success, or its staleness alert would go silent.
    for (name, t) in before.iter().filter_map(|(n, t)| Some((n.as_ref()?, *t))) {
        if !r.nodes.iter().any(|n| &n.name == name) {
            g.push(
                Gauge::new(
                    "hamn_node_last_success_timestamp_seconds",
                    "End of the last sync that succeeded on the node (Unix time).",
                    t,
                )
                .node(name),
            );
        }
    }
    metrics::write_textfile(path, &g)
}
