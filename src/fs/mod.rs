//! Everything that touches the file systems being snapshotted or restored
//! into: reading metadata, xattrs and sparse extents (`read`), and writing
//! entries with `*at` calls that never follow a symlink (`write`). The
//! store and tree layers never make these syscalls themselves.

pub mod read;
pub mod write;
