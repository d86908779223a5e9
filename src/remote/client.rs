//! A connection to a standby store: the handshake, requests with their
//! replies, and errors from the peer turned into local errors. The
//! transport is any pair of byte streams.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId, TreeId};
use crate::remote::Target;
use crate::remote::protocol::*;
use crate::remote::server::{self, ServeOptions};
use crate::remote::ssh::{SshConnection, SshOptions};
use crate::snapshot::Snapshot;

pub struct Remote {
    peer: String,
    reader: FrameReader<Box<dyn Read + Send>>,
    writer: FrameWriter<Box<dyn Write + Send>>,
    /// The in-process server of a local target.
    local: Option<JoinHandle<Result<()>>>,
    ssh: Option<SshConnection>,
    /// The peer sent an error message (so its own words explain a failure).
    peer_spoke: bool,
    /// The last failed read or write ran out of time.
    timed_out: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub ssh: SshOptions,
    pub mode: u8,
    /// For local targets: how long the in-process server waits for the lock.
    pub lock_wait: std::time::Duration,
    /// Where the standby deploys (passed to `hamn serve --root`).
    pub root: std::path::PathBuf,
}

impl Remote {
    pub fn connect(target: &Target, opts: &ConnectOptions) -> Result<Remote> {
        let (reader, writer, local, ssh, store): (
            Box<dyn Read + Send>,
            Box<dyn Write + Send>,
            _,
            _,
            String,
        ) = match target {
            Target::Local(path) => {
                let (a, b) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
                let path = path.clone();
                let sopts = ServeOptions {
                    append_only: false,
                    lock_wait: opts.lock_wait,
                    root: opts.root.clone(),
                    no_deploy: false,
                    post_materialize: Vec::new(),
                    retention: None,
                    gc_grace: crate::gc::DEFAULT_GRACE,
                };
                let a2 = a.try_clone().map_err(|e| Error::io("socketpair", e))?;
                let handle = std::thread::spawn(move || {
                    let r = server::serve(&path, &sopts, &a, &a2);
                    let _ = a.shutdown(std::net::Shutdown::Both);
                    r
                });
                let b2 = b.try_clone().map_err(|e| Error::io("socketpair", e))?;
                (Box::new(b), Box::new(b2), Some(handle), None, String::new())
            }
            Target::Ssh(t) => {
                let conn = SshConnection::open(t, &opts.ssh, &opts.root)?;
                let (r, w) = conn.streams();
                (r, w, None, Some(conn), t.path.clone())
            }
        };
        let mut remote = Remote {
            peer: target.to_string(),
            reader: FrameReader::new(reader),
            writer: FrameWriter::new(writer),
            local,
            ssh,
            peer_spoke: false,
            timed_out: false,
        };
        let hello = Msg::Hello {
            version: PROTOCOL_VERSION,
            client: env!("CARGO_PKG_VERSION").to_string(),
            store,
            mode: opts.mode,
        };
        match remote.request(&hello) {
            Ok(Msg::Welcome { version, .. }) if version == PROTOCOL_VERSION => {
                if let Some(s) = &remote.ssh {
                    s.started();
                }
                Ok(remote)
            }
            Ok(Msg::Welcome {
                version, server, ..
            }) => Err(Error::Remote {
                peer: remote.peer.clone(),
                message: format!(
                    "speaks protocol version {version} (hamn {server}), this hamn speaks \
                     {PROTOCOL_VERSION}; install the same hamn version on both nodes"
                ),
            }),
            Ok(other) => Err(remote.unexpected(&other)),
            Err(e) => Err(remote.diagnose(e)),
        }
    }

    /// A failed handshake over SSH is most often a missing remote binary;
    /// say so with what the remote shell printed.
    fn diagnose(&mut self, e: Error) -> Error {
        if self.peer_spoke {
            return e;
        }
        if let Some(ssh) = self.ssh.take()
            && let Some(better) = ssh.diagnose()
        {
            return better;
        }
        e
    }

    fn unexpected(&self, m: &Msg) -> Error {
        Error::Remote {
            peer: self.peer.clone(),
            message: format!("unexpected reply (message type {})", m.encode().0),
        }
    }

    fn peer_error(&self, code: u8, message: String) -> Error {
        if code == E_REFUSED {
            return Error::Refused(format!("standby {}: {message}", self.peer));
        }
        if code == E_LOCKED {
            Error::RemoteLocked {
                peer: self.peer.clone(),
                message,
            }
        } else {
            Error::Remote {
                peer: self.peer.clone(),
                message,
            }
        }
    }

    fn read(&mut self) -> Result<Msg> {
        match self.reader.read() {
            Ok(Some(Msg::Error { code, message })) => {
                self.peer_spoke = true;
                Err(self.peer_error(code, message))
            }
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(Error::Remote {
                peer: self.peer.clone(),
                message: "connection closed by the standby".into(),
            }),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// A read or write on the connection failed: say which standby, and
    /// for a time-out which setting bounds it.
    fn lost(&mut self, e: Error) -> Error {
        let Error::Io { source, .. } = &e else {
            return e;
        };
        let message = if source.kind() == std::io::ErrorKind::TimedOut {
            self.timed_out = true;
            match &self.ssh {
                Some(s) => format!(
                    "no answer within {} s (standby.io_timeout): the network or the standby stalled",
                    s.io_timeout().as_secs()
                ),
                None => format!("no answer: {source}"),
            }
        } else {
            format!("connection lost: {source}")
        };
        Error::Remote {
            peer: self.peer.clone(),
            message,
        }
    }

    /// Send one message and wait for its reply.
    pub fn request(&mut self, m: &Msg) -> Result<Msg> {
        if let Err(e) = self.writer.send_now(m) {
            // The peer may have said why before it hung up.
            let e = self.lost(e);
            return Err(self.read().err().unwrap_or(e));
        }
        self.read()
    }

    /// Queue a blob without waiting (the pipe stays full); errors from the
    /// peer surface at the next request.
    pub fn put_blob(&mut self, b: StoredBlob) -> Result<()> {
        self.queue(&Msg::PutBlob(b))
    }

    /// Queue a chunk sent as a delta, as `put_blob`.
    pub fn put_delta(&mut self, d: DeltaChunk) -> Result<()> {
        self.queue(&Msg::PutDelta(d))
    }

    fn queue(&mut self, m: &Msg) -> Result<()> {
        if let Err(e) = self.writer.send(m) {
            let e = self.lost(e);
            return Err(self.read().err().unwrap_or(e));
        }
        Ok(())
    }

    pub fn snapshots(&mut self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        match self.request(&Msg::ListSnapshots)? {
            Msg::SnapshotList(list) => list
                .into_iter()
                .map(|r| Ok((SnapshotId::of(&r), Snapshot::decode(&r)?)))
                .collect(),
            other => Err(self.unexpected(&other)),
        }
    }

    fn have(&mut self, m: Msg, n: usize) -> Result<Vec<bool>> {
        match self.request(&m)? {
            Msg::Have(flags) if flags.len() == n => Ok(flags),
            other => Err(self.unexpected(&other)),
        }
    }

    pub fn have_trees(&mut self, ids: &[TreeId]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(IDS_PER_REQUEST_MAX) {
            out.extend(self.have(Msg::HaveTrees(batch.to_vec()), batch.len())?);
        }
        Ok(out)
    }

    pub fn have_blobs(&mut self, ids: &[BlobId]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(IDS_PER_REQUEST_MAX) {
            out.extend(self.have(Msg::HaveBlobs(batch.to_vec()), batch.len())?);
        }
        Ok(out)
    }

    /// Send the keepalive ([`Msg::keepalive`]): keeps a session opened
    /// ahead of its work from looking idle to the standby.
    pub fn ping(&mut self) -> Result<()> {
        self.have(Msg::keepalive(), 0).map(|_| ())
    }

    /// Make everything sent so far durable on the standby.
    pub fn flush(&mut self) -> Result<()> {
        match self.request(&Msg::Flush)? {
            Msg::Flushed { .. } => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    pub fn put_snapshot(&mut self, record: Vec<u8>) -> Result<SnapshotId> {
        // The standby checks everything new below the root first.
        match self.long_request(&Msg::PutSnapshot(record), "it checks the new snapshot")? {
            Msg::SnapshotStored(id) => Ok(id),
            other => Err(self.unexpected(&other)),
        }
    }

    pub fn read_blobs(&mut self, ids: &[BlobId]) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for batch in ids.chunks(server::READ_BLOBS_MAX) {
            match self.request(&Msg::ReadBlobs(batch.to_vec()))? {
                Msg::Blobs(b) if b.len() == batch.len() => out.extend(b),
                other => return Err(self.unexpected(&other)),
            }
        }
        Ok(out)
    }

    /// A request whose work on the standby may take long: waited for up
    /// to the step limit (`standby.step_timeout`) instead of the per-read
    /// one.
    fn long_request(&mut self, m: &Msg, what: &str) -> Result<Msg> {
        let Some(s) = &self.ssh else {
            return self.request(m);
        };
        s.long_wait(true);
        let limit = s.step_timeout();
        let started = std::time::Instant::now();
        // Only an error the peer sends for this request explains it.
        self.peer_spoke = false;
        self.timed_out = false;
        let r = self.request(m);
        if let Some(s) = &self.ssh {
            s.long_wait(false);
        }
        // libssh2 counts its time limit in whole seconds, so it may give
        // up to a second early: its own "timed out" counts as well.
        match (r, limit) {
            (Err(_), Some(limit))
                if !self.peer_spoke && (self.timed_out || started.elapsed() >= limit) =>
            {
                if let Some(s) = &self.ssh {
                    s.give_up();
                }
                Err(Error::Remote {
                    peer: self.peer.clone(),
                    message: format!(
                        "no answer within {} s while {what} (standby.step_timeout): the \
                         standby may still be working on it; see `hamn status` there",
                        limit.as_secs()
                    ),
                })
            }
            (r, _) => r,
        }
    }

    /// Have the standby deploy a snapshot it holds; returns its statistics.
    pub fn materialize(
        &mut self,
        snapshot: SnapshotId,
        root: &str,
    ) -> Result<crate::deploy::MaterializeStats> {
        let m = Msg::Materialize {
            snapshot,
            root: root.to_string(),
        };
        match self.long_request(&m, "it deploys the snapshot")? {
            Msg::Materialized(stats) => Ok(*stats),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Have the standby apply its own retention policy. `None` when it
    /// declines (append-only, or no policy): it then runs its own.
    pub fn apply_retention(&mut self) -> Result<Option<crate::retention::RetentionReport>> {
        match self.long_request(&Msg::ApplyRetention, "it applies its retention") {
            Ok(Msg::RetentionApplied(report)) => Ok(Some(report)),
            Ok(other) => Err(self.unexpected(&other)),
            Err(Error::Refused(why)) => {
                crate::log::info(&why);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn bytes_sent(&self) -> u64 {
        self.writer.bytes
    }

    pub fn bytes_received(&self) -> u64 {
        self.reader.bytes
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// End the session cleanly and wait for the other end.
    pub fn close(mut self) -> Result<()> {
        let bye = self.writer.send_now(&Msg::Bye);
        if let Some(h) = self.local.take() {
            match h.join() {
                Ok(r) => r?,
                Err(_) => return Err(Error::Other("the local standby server panicked".into())),
            }
        }
        if let Some(ssh) = self.ssh.take() {
            ssh.finish()?;
        }
        bye
    }
}
