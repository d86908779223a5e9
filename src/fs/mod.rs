//! Everything that touches the file systems being snapshotted or restored
//! into: reading metadata, xattrs and sparse extents (`read`), and writing
//! entries with `*at` calls that never follow a symlink (`write`). The
//! store and tree layers never make these syscalls themselves (but for
//! [`uncache`], which the store uses for its packs).

pub mod read;
pub mod write;

/// Drop `len` bytes of `file` from `offset` (to its end when `len` is 0)
/// out of the page cache, for data read once: best effort, as only clean
/// pages wholly inside the range can go.
pub fn uncache(file: &std::fs::File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}
