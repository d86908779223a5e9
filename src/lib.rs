//! hamn keeps the standby management node of an xCAT cluster an identical,
//! versioned clone of the primary: snapshots of the managed paths go into a
//! deduplicated, content-addressed store, from which they can be listed,
//! compared, verified and restored.
//!
//! Layers, each depending only on those below it:
//! `cli` (in the binary) -> `snapshot::create`, `restore`, `diff`, `check`
//! -> `store`, `tree`, `snapshot` -> `chunk`, `id`, `codec` -> `error`.
//! Only `fs` makes raw file-system syscalls.

pub mod check;
pub mod chunk;
pub mod codec;
pub mod config;
pub mod deploy;
pub mod diff;
pub mod error;
pub mod failpoint;
pub mod fs;
pub mod gc;
pub mod id;
pub mod log;
pub mod metrics;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod tree;

pub use error::{Error, Result};
