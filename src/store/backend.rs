//! The storage boundary: everything a store keeps, as named files of a few
//! kinds, and the few operations the rest of hamn does on them. `Store`,
//! gc, check and the deployment state go through it only; `local` (a
//! directory) is the one implementation. A backend is told nothing of what
//! the files mean, and may never expose a half-written file under its
//! name: `write_atomic` and `NewFile::publish` are all-or-nothing.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::store::StoreLock;

/// What a file of the store is, which decides where a backend keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Pack files, named by the pack id in hex; written once, never changed.
    Pack,
    /// Snapshot records, named by the snapshot id in hex.
    Snapshot,
    /// Deployment state, one small file per deployment root.
    Deployment,
    /// The deployment's intent journal (a single name).
    Journal,
    /// What the primary knows of each node it syncs, one file per node.
    Node,
}

#[derive(Clone, Copy, Debug)]
pub struct FileInfo {
    pub size: u64,
    pub modified: SystemTime,
}

/// A file being written, invisible under any name until it is published.
pub trait NewFile: Write + Send {
    /// Make what was written durable and give it `name`, in one step.
    fn publish(self: Box<Self>, name: &str) -> Result<()>;
    /// Where it is being written, for messages.
    fn describe(&self) -> String;
}

pub trait Backend: Send + Sync {
    /// Where a file is or would be, for messages (a path, a URL).
    fn describe(&self, kind: FileKind, name: &str) -> String;
    /// The names of every file of `kind`, in no order.
    fn list(&self, kind: FileKind) -> Result<Vec<String>>;
    /// Size and modification time; `None` when there is no such file.
    fn info(&self, kind: FileKind, name: &str) -> Result<Option<FileInfo>>;
    /// Fill `buf` from `offset`. `once: Some(from)`: the bytes from
    /// `from` (at most `offset`: a record header before them, say) to the
    /// end of this read will not be wanted again soon (a chunk read for a
    /// deployment), so a backend that caches may let them go. A read past
    /// the end is an I/O error of kind `UnexpectedEof`; a missing file one
    /// of kind `NotFound`.
    fn read_at(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        buf: &mut [u8],
        once: Option<u64>,
    ) -> Result<()>;
    /// A whole file; `None` when there is no such file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Option<Vec<u8>>>;
    /// Write a whole file under `name`, atomically and durably.
    fn write_atomic(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()>;
    /// Start a file of `kind` that is published later (packs).
    fn create(&self, kind: FileKind) -> Result<Box<dyn NewFile>>;
    /// Remove a file, durably; false when there was none.
    fn remove(&self, kind: FileKind, name: &str) -> Result<bool>;
    /// Become the store's one writer (`store::lock`), waiting up to `wait`.
    fn lock(&self, wait: Duration, command: &str) -> Result<StoreLock>;
}
