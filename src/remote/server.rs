//! The standby end of push: `serve(store, reader, writer)` answers protocol
//! messages on any byte stream (stdio under SSH, a socket pair in tests).
//! It accepts nothing but protocol messages, touches nothing outside its
//! store, verifies every blob against its id before storing it, and
//! publishes a snapshot only once everything it references is durable here.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::deploy::MaterializeStats;
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, SnapshotId, TreeId};
use crate::remote::bases::BaseCache;
use crate::remote::protocol::*;
use crate::retention::RetentionReport;
use crate::snapshot::Snapshot;
use crate::store::writer::BlobWriter;
use crate::store::{FORMAT_VERSION, Store, StoreLock};
use crate::tree::{Encoding, Kind};

/// Most blobs returned by one ReadBlobs request (their stored bytes must
/// also fit in one frame).
pub const READ_BLOBS_MAX: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Refuse every request that deletes (forget, gc).
    pub append_only: bool,
    pub lock_wait: Duration,
    /// Where this standby deploys snapshots (a client cannot choose another).
    pub root: std::path::PathBuf,
    /// Refuse to deploy: the client's key can then only add data.
    pub no_deploy: bool,
    /// post_materialize hooks from this standby's config.
    pub post_materialize: Vec<String>,
    /// This standby's own retention policy (None: not configured).
    pub retention: Option<crate::retention::Policy>,
    pub gc_grace: Duration,
}

fn same_store(asked: &str, ours: &Path) -> bool {
    if asked.is_empty() {
        return true;
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(asked)) == canon(ours)
}

fn error_code(e: &Error) -> u8 {
    match e {
        Error::Refused(_) => E_REFUSED,
        Error::Locked { .. } | Error::StaleLock { .. } => E_LOCKED,
        Error::Malformed { .. } | Error::Corrupt { .. } => E_BAD_REQUEST,
        _ => E_FAILED,
    }
}

/// A pushed blob's plain bytes must hash to its id.
fn check_id(id: BlobId, plain: &[u8]) -> Result<()> {
    if blake3::hash(plain).as_bytes() != &id.hash {
        return Err(Error::malformed(
            "pushed blob",
            format!(
                "{} {} does not match its content",
                id.kind.name(),
                id.to_hex()
            ),
        ));
    }
    Ok(())
}

/// Completeness marks a publication's walk writes in one transaction.
const MARKS_PER_COMMIT: usize = 16 * 1024;
/// Trees a publication's walk remembers having checked (32 bytes each).
const SEEN_MAX: usize = 64 * 1024;

/// A chunk a pushed tree names must be stored, with the length the tree
/// gives it. Its kind is not compared: blobs are stored once per content,
/// so a file that holds the same bytes as a tree (an empty directory's
/// tree is ten bytes long) names that tree's blob, legitimately.
fn check_chunk(blobs: &crate::store::index::BlobReader, ch: &crate::tree::ChunkRef) -> Result<()> {
    let Some(loc) = blobs.get(&ch.id.0)? else {
        return Err(Error::MissingObject {
            what: "chunk",
            id: ch.id.to_hex(),
        });
    };
    if loc.plain_len != ch.len {
        return Err(Error::malformed(
            "pushed tree",
            format!(
                "chunk {} is listed with {} bytes, but this store holds {} bytes under its id",
                ch.id.to_hex(),
                ch.len,
                loc.plain_len
            ),
        ));
    }
    Ok(())
}

struct Session<'s, W: Write> {
    store: &'s Store,
    opts: &'s ServeOptions,
    lock: Option<&'s StoreLock>,
    writer: Option<BlobWriter<'s>>,
    out: FrameWriter<W>,
    blobs_added: u64,
    bytes_stored: u64,
    /// Base chunks of recent deltas.
    bases: BaseCache,
}

impl<'s, W: Write> Session<'s, W> {
    fn lock(&self) -> Result<&'s StoreLock> {
        self.lock
            .ok_or_else(|| Error::Usage("this session was opened read-only".into()))
    }

    fn flush_writer(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let stats = w.finish()?;
            self.blobs_added += stats.blobs_added;
            self.bytes_stored += stats.bytes_stored_added;
        }
        Ok(())
    }

    fn put_blob(&mut self, b: StoredBlob) -> Result<()> {
        // Nothing hamn writes is longer than zstd's bound for its content:
        // padding (skippable frames) would only take up the standby's disk.
        if b.stored.len() > zstd::compress_bound(b.plain_len as usize) {
            return Err(Error::malformed(
                "pushed blob",
                format!(
                    "{} {} is stored in {} bytes for {} bytes of content",
                    b.id.kind.name(),
                    b.id.to_hex(),
                    b.stored.len(),
                    b.plain_len
                ),
            ));
        }
        let plain = crate::chunk::decode(b.id.kind, b.encoding, &b.stored, b.plain_len)?;
        check_id(b.id, &plain)?;
        // A tree that would not decode (a name with `/`, `..` or NUL,
        // garbage) is refused before it is stored, not when a snapshot
        // names it.
        if b.id.kind == BlobKind::Tree {
            crate::tree::Tree::decode(&plain)?;
        }
        self.store_verified(b)
    }

    /// Store a blob the caller checked against its id.
    fn store_verified(&mut self, b: StoredBlob) -> Result<()> {
        let lock = self.lock()?;
        if self.writer.is_none() {
            self.writer = Some(BlobWriter::new(self.store, lock)?);
        }
        let Some(w) = &self.writer else {
            return Ok(());
        };
        if !w.has(b.id)? {
            w.add_stored(b.id, b.encoding, b.plain_len, &b.stored)?;
        }
        Ok(())
    }

    /// A chunk sent as a delta: rebuild it from its bases (chunks stored
    /// here, each verified as it is read), check it against its id, and
    /// store it compressed as any other chunk.
    fn put_delta(&mut self, c: DeltaChunk) -> Result<()> {
        let base = self
            .bases
            .prefix(self.store, &c.bases)
            .map_err(|e| match e {
                Error::MissingObject { id, .. } => Error::malformed(
                    "pushed delta",
                    format!("its base chunk {id} is not stored here; push again with --verify"),
                ),
                e => e,
            })?;
        self.lock()?;
        let plain = crate::chunk::delta_decode(&c.delta, &base, c.plain_len)?;
        check_id(c.id.into(), &plain)?;
        let (encoding, stored) = crate::chunk::encode(&plain);
        self.store_verified(StoredBlob {
            id: c.id.into(),
            encoding,
            plain_len: c.plain_len,
            stored,
        })
    }

    /// Check that everything below `root` is stored, and mark each tree
    /// complete once it and every tree below it was checked, in
    /// transactions of at most `MARKS_PER_COMMIT` marks (each true when
    /// written, whatever stops the walk after it). Trees already marked
    /// are not descended, so the cost follows what was just pushed; each
    /// tree is read once however often it is referenced (a peer can build
    /// a tree that references one subtree twice at every level). A chunk
    /// must be stored with the length the tree gives it. Returns whether a
    /// walked tree holds a gzip-aware file.
    fn verify_complete(&self, root: TreeId) -> Result<bool> {
        let index = self.store.index();
        // Everything is sealed and indexed by now; nothing is written
        // while the walk runs, so one read transaction serves it.
        let blobs = index.reader()?;
        let mut gzip = false;
        // Trees checked (with all below them) in this walk, so that a
        // subtree named twice is checked once; forgotten when large, once
        // their marks are written.
        let mut seen = std::collections::HashSet::<[u8; 32]>::new();
        let mut marks: Vec<[u8; 32]> = Vec::new();
        // Depth first: each tree being checked, with its subtrees not yet
        // gone into.
        let mut stack: Vec<(TreeId, Vec<TreeId>)> = Vec::new();
        let mut next = Some(root);
        loop {
            if let Some(t) = next.take()
                && !seen.contains(&t.0)
                && !index.is_complete(&t.0)?
            {
                let tree = self.store.read_tree(t)?;
                for e in &tree.entries {
                    if let Kind::File(c) = &e.kind {
                        gzip |= c.encoding != Encoding::Plain;
                        for ch in c.stored_refs() {
                            check_chunk(&blobs, ch)?;
                        }
                    }
                }
                // Reversed, so that subtrees are checked in name order.
                let dirs = tree.entries.iter().rev().filter_map(|e| e.kind.dir());
                stack.push((t, dirs.collect()));
            }
            let Some((t, dirs)) = stack.last_mut() else {
                break;
            };
            if let Some(d) = dirs.pop() {
                next = Some(d);
                continue;
            }
            // Everything below `t` is checked.
            let t = *t;
            stack.pop();
            seen.insert(t.0);
            marks.push(t.0);
            if marks.len() >= MARKS_PER_COMMIT {
                index.mark_complete(&marks)?;
                marks.clear();
                if seen.len() > SEEN_MAX {
                    seen.clear();
                }
            }
        }
        index.mark_complete(&marks)?;
        Ok(gzip)
    }

    fn put_snapshot(&mut self, record: Vec<u8>) -> Result<SnapshotId> {
        let lock = self.lock()?;
        let snap = Snapshot::decode(&record)?;
        if snap.encode() != record {
            return Err(Error::malformed(
                "snapshot record",
                "not in canonical encoding",
            ));
        }
        self.flush_writer()?;
        if self.verify_complete(snap.root)? {
            self.store
                .require_format(crate::store::FORMAT_GZIP_AWARE, lock)?;
        }
        self.store.write_snapshot(lock, &snap)
    }

    fn materialize(&mut self, id: SnapshotId, root: &str) -> Result<MaterializeStats> {
        if self.opts.no_deploy {
            return Err(Error::Refused(
                "this standby serves with --no-deploy: it deploys from its own timer".into(),
            ));
        }
        let lock = self.lock()?;
        if Path::new(root) != self.opts.root {
            return Err(Error::Usage(format!(
                "this standby deploys under {} only, not {root}",
                self.opts.root.display()
            )));
        }
        self.flush_writer()?;
        let snap = self.store.read_snapshot(id)?;
        let plan = crate::deploy::plan(self.store, id, &snap, &self.opts.root, false)?;
        let opts = crate::deploy::MaterializeOptions {
            root: self.opts.root.clone(),
            dry_run: false,
            post_materialize: self.opts.post_materialize.clone(),
        };
        crate::deploy::execute_with_hooks(self.store, lock, &snap, plan, &opts)
    }

    /// Forget by this standby's own policy, then gc.
    fn apply_retention(&mut self) -> Result<RetentionReport> {
        if self.opts.append_only {
            return Err(Error::Refused(
                "this standby serves append-only: it applies its own retention from its own timer"
                    .into(),
            ));
        }
        let lock = self.lock()?;
        let Some(policy) = &self.opts.retention else {
            return Err(Error::Refused(
                "this standby has no [retention] policy in its config".into(),
            ));
        };
        self.flush_writer()?;
        crate::retention::apply(self.store, lock, policy, self.opts.gc_grace)
    }

    fn handle(&mut self, m: Msg) -> Result<bool> {
        match m {
            Msg::ListSnapshots => {
                let list = self
                    .store
                    .snapshots()?
                    .into_iter()
                    .map(|(_, s)| s.encode())
                    .collect();
                self.out.send_now(&Msg::SnapshotList(list))?;
            }
            Msg::HaveTrees(ids) => {
                let trees: Vec<[u8; 32]> = ids.iter().map(|t| t.0).collect();
                let flags = self.store.index().are_complete(&trees)?;
                self.out.send_now(&Msg::Have(flags))?;
            }
            Msg::HaveBlobs(ids) => {
                // One read transaction for the batch (redb locks and
                // unlocks a byte range of its file for each).
                let flags = match &self.writer {
                    Some(w) => ids.iter().map(|b| w.has(*b)).collect::<Result<Vec<_>>>()?,
                    None => {
                        let r = self.store.index().reader()?;
                        ids.iter()
                            .map(|b| r.contains(&b.hash))
                            .collect::<Result<Vec<_>>>()?
                    }
                };
                self.out.send_now(&Msg::Have(flags))?;
            }
            Msg::PutBlob(b) => self.put_blob(b)?,
            Msg::PutDelta(c) => self.put_delta(c)?,
            Msg::Flush => {
                self.flush_writer()?;
                let reply = Msg::Flushed {
                    blobs_added: self.blobs_added,
                    bytes_stored: self.bytes_stored,
                };
                self.out.send_now(&reply)?;
            }
            Msg::PutSnapshot(record) => {
                let id = self.put_snapshot(record)?;
                self.out.send_now(&Msg::SnapshotStored(id))?;
            }
            Msg::ReadBlobs(ids) => {
                if ids.len() > READ_BLOBS_MAX {
                    return Err(Error::malformed(
                        "request",
                        format!("{} blobs asked at once, limit {READ_BLOBS_MAX}", ids.len()),
                    ));
                }
                // Sized from the index before anything is read: blobs
                // that could not travel in one frame are refused unread.
                let locs = ids
                    .iter()
                    .map(|id| self.store.locate(*id))
                    .collect::<Result<Vec<_>>>()?;
                let bytes: usize = locs.iter().map(|l| l.stored_len as usize + 64).sum();
                if bytes > FRAME_MAX_BYTES {
                    return Err(Error::malformed(
                        "request",
                        format!(
                            "the {} blobs asked hold {bytes} bytes, more than one frame \
                             ({FRAME_MAX_BYTES}); ask for fewer at once",
                            ids.len()
                        ),
                    ));
                }
                let mut out = Vec::new();
                for (id, loc) in ids.into_iter().zip(locs) {
                    out.push(StoredBlob {
                        id: BlobId {
                            kind: id.kind,
                            hash: id.hash,
                        },
                        encoding: loc.encoding,
                        plain_len: loc.plain_len,
                        stored: self.store.read_stored(&loc)?,
                    });
                }
                self.out.send_now(&Msg::Blobs(out))?;
            }
            Msg::Bye => {
                self.flush_writer()?;
                return Ok(false);
            }
            Msg::ApplyRetention => {
                let report = self.apply_retention()?;
                self.out.send_now(&Msg::RetentionApplied(report))?;
            }
            Msg::Materialize { snapshot, root } => {
                let stats = self.materialize(snapshot, &root)?;
                self.out.send_now(&Msg::Materialized(Box::new(stats)))?;
            }
            other => {
                return Err(Error::malformed(
                    "request",
                    format!("unexpected message {:?}", other.encode().0),
                ));
            }
        }
        Ok(true)
    }
}

/// Serve one client on `input`/`output` for the store at `store_path`.
pub fn serve<R: Read, W: Write>(
    store_path: &Path,
    opts: &ServeOptions,
    input: R,
    output: W,
) -> Result<()> {
    let mut rd = FrameReader::new(input);
    let mut out = FrameWriter::new(output);
    let refuse = |out: &mut FrameWriter<W>, code: u8, e: Error| -> Result<()> {
        let _ = out.send_now(&Msg::Error {
            code,
            message: e.to_string(),
        });
        Err(e)
    };
    let hello = match rd.read() {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(e) => return refuse(&mut out, E_BAD_REQUEST, e),
    };
    let Msg::Hello {
        version,
        store,
        mode,
        ..
    } = hello
    else {
        return refuse(
            &mut out,
            E_BAD_REQUEST,
            Error::malformed("request", "the first message must be Hello"),
        );
    };
    if version != PROTOCOL_VERSION {
        return refuse(
            &mut out,
            E_VERSION,
            Error::Other(format!(
                "protocol version {version} asked, this standby speaks {PROTOCOL_VERSION} \
                 (hamn {}); install the same hamn version on both nodes",
                env!("CARGO_PKG_VERSION")
            )),
        );
    }
    if !same_store(&store, store_path) {
        return refuse(
            &mut out,
            E_REFUSED,
            Error::Usage(format!(
                "this standby serves store {} only, not {store}",
                store_path.display()
            )),
        );
    }
    let st = match Store::open(store_path) {
        Ok(s) => s,
        Err(e) => return refuse(&mut out, E_FAILED, e),
    };
    let lock = if mode == MODE_WRITE {
        match st.lock(opts.lock_wait, "hamn serve (push)") {
            Ok(l) => Some(l),
            Err(e) => return refuse(&mut out, error_code(&e), e),
        }
    } else {
        None
    };
    out.send_now(&Msg::Welcome {
        version: PROTOCOL_VERSION,
        server: env!("CARGO_PKG_VERSION").to_string(),
        store_format: FORMAT_VERSION,
    })?;
    let session = Session {
        store: &st,
        opts,
        lock: lock.as_ref(),
        writer: None,
        out,
        blobs_added: 0,
        bytes_stored: 0,
        bases: BaseCache::default(),
    };
    // A standby that deploys what it is sent reads its staging base's
    // inodes while the push runs, so that the deployment's plan finds
    // them cached (read-only, best effort; it stops with the session).
    // It starts with the client's first request other than a keepalive:
    // a session opened while the primary takes its snapshot waits idle
    // until then.
    let warm_dirs = if mode == MODE_WRITE && !opts.no_deploy {
        crate::deploy::staging_bases(&st, &opts.root)
    } else {
        Vec::new()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        if !warm_dirs.is_empty() {
            let (warm_dirs, stop) = (&warm_dirs, &stop);
            s.spawn(move || {
                // Err: the session ended first.
                if wait.recv().is_ok() {
                    for d in warm_dirs {
                        crate::deploy::plan::warm(d, stop);
                    }
                }
            });
        }
        let ended = session_loop(&mut rd, session, refuse, go);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        ended
    })
}

/// Answer requests until the client says Bye or goes away.
/// `started` is told of the first request that is not a keepalive
/// ([`Msg::is_keepalive`]) or the end of the session.
fn session_loop<R: Read, W: Write>(
    rd: &mut FrameReader<R>,
    mut session: Session<'_, W>,
    refuse: impl Fn(&mut FrameWriter<W>, u8, Error) -> Result<()>,
    started: std::sync::mpsc::Sender<()>,
) -> Result<()> {
    let mut started = Some(started);
    loop {
        let msg = match rd.read() {
            Ok(Some(m)) => m,
            // The client went away: what was flushed stays; the open pack is dropped.
            Ok(None) => return Ok(()),
            Err(e) => return refuse(&mut session.out, E_BAD_REQUEST, e),
        };
        if !msg.is_keepalive()
            && !matches!(msg, Msg::Bye)
            && let Some(tx) = started.take()
        {
            let _ = tx.send(());
        }
        match session.handle(msg) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            // A declined request is an answer, not the end of the session.
            Err(e @ Error::Refused(_)) => {
                session.out.send_now(&Msg::Error {
                    code: E_REFUSED,
                    message: e.to_string(),
                })?;
            }
            Err(e) => {
                let code = error_code(&e);
                return refuse(&mut session.out, code, e);
            }
        }
    }
}
