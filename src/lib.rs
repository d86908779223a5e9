//! hamn keeps the standby management node of an xCAT cluster an identical,
//! versioned clone of the primary: snapshots of the managed paths go into a
//! deduplicated, content-addressed store, from which they can be listed,
//! compared, verified and restored.
//!
//! Layers, each depending only on those below it (docs/layers.md):
//!
//! * `cli` (in the binary): flags and config into an operation's options,
//!   its report printed, errors mapped to exit codes;
//! * operations: `sync`, `snapshot::create`, `remote` (push, serve),
//!   `deploy`, `restore`, `diff`, `check`, `retention`, `gc`;
//! * `extract` (the write engine), `content` (a file's stored objects and
//!   bytes), `walk` (the walk over trees);
//! * `store` (packs, index, lock), with `snapshot` (records) and `tree`;
//! * `chunk`, `codec`, `id`, then `error`.
//!
//! Raw system calls are made in `fs` (walking, reading and writing trees
//! on disk) and in `store::lock` (flock, the holder's liveness) only;
//! `ssh2` is imported by `remote::ssh` only.

pub mod archive;
pub mod check;
pub mod chunk;
pub mod codec;
pub mod config;
pub mod content;
pub mod deploy;
pub mod diff;
pub mod error;
pub mod extract;
pub mod failpoint;
pub mod fs;
pub mod gc;
pub mod gzip;
pub mod id;
pub mod log;
pub mod metrics;
pub mod nodes;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod tree;
pub mod walk;

pub use error::{Error, Result};
