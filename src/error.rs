//! The library's error type. Every variant carries what a user needs to act:
//! the path, snapshot or chunk involved, and the message says what to do.
//! Nothing here formats for a terminal or picks an exit code; `main` does.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("fsync of {path} failed: {source}; the data may not be durable, nothing was committed")]
    Fsync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a hamn store (no HAMN-STORE file); run `hamn init` or pass the right --store"
    )]
    NotAStore { path: PathBuf },
    #[error("{path} already holds a hamn store")]
    AlreadyAStore { path: PathBuf },
    #[error(
        "{path} is not empty and holds no hamn store (it has {example}); \
         give `hamn init` a new or empty directory"
    )]
    NotEmpty { path: PathBuf, example: PathBuf },
    #[error(
        "store {path} has format version {found}, this hamn reads up to {supported}; upgrade hamn"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "store {path} is locked by {holder}; wait for it to finish, or use --lock-wait SECONDS"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "store {path} is locked by {holder}, which is no longer running on this host; \
         check that no hamn runs, then remove {path}/lock"
    )]
    StaleLock { path: PathBuf, holder: String },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("no snapshot matches '{0}'; `hamn snapshots` lists them")]
    UnknownSnapshot(String),
    #[error("snapshot prefix '{prefix}' is ambiguous: {candidates}; give more characters")]
    AmbiguousSnapshot { prefix: String, candidates: String },
    #[error("path {path} is not in snapshot {snapshot}")]
    NoSuchPath { snapshot: String, path: String },
    #[error(
        "{what} {id} is missing from the store; run `hamn check` (and `hamn check --repair` if the index is damaged)"
    )]
    MissingObject { what: &'static str, id: String },
    #[error(
        "{what} {id} is damaged in {pack}: {detail}; run `hamn check --read-data` to see what it affects"
    )]
    Corrupt {
        what: &'static str,
        id: String,
        pack: String,
        detail: String,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("index {path}: {detail}; `hamn check --repair` rebuilds it from the packs")]
    Index { path: PathBuf, detail: String },
    #[error(
        "directory {path} is too large for one tree ({bytes} bytes encoded, the limit is {max}): \
         too many entries or too much xattr data; exclude part of it or spread it over subdirectories"
    )]
    TreeTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("hook `{command}` failed ({status}): {output}")]
    Hook {
        command: String,
        status: String,
        output: String,
    },
    #[error("standby {peer}: {message}")]
    Remote { peer: String, message: String },
    /// The standby's store is locked by another run (its own words).
    #[error("standby {peer}: {message}")]
    RemoteLocked { peer: String, message: String },
    /// A standby declined a request by its own policy (append-only, no
    /// retention configured).
    #[error("{0}")]
    Refused(String),
    /// The command has already printed its result (with `--json`, its one
    /// JSON document) and only the failure and its exit status remain:
    /// `main` prints this message on stderr but no JSON error document.
    #[error("{0}")]
    Reported(String, i32),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// Exit status: 2 for usage and configuration, 4 for a held lock, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config { .. } => 2,
            Error::Locked { .. } | Error::StaleLock { .. } | Error::RemoteLocked { .. } => 4,
            Error::Reported(_, code) => *code,
            _ => 1,
        }
    }
}

/// Exit status for a run that finished but had warnings.
pub const EXIT_WARNINGS: i32 = 3;

/// Attach a path to io errors: `file.read(..).at(&path)?`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e.into()))
    }
}
