//! Everything that touches the file systems being snapshotted or restored
//! into: reading metadata, xattrs and sparse extents (`read`), and writing
//! entries with `*at` calls that never follow a symlink (`write`). The
//! store and tree layers never make these syscalls themselves (but for
//! [`uncache`], which the store uses for its packs).

pub mod read;
pub mod write;

/// Drop `len` bytes of `file` from `offset` out of the page cache, for
/// data read once: best effort, as only clean pages wholly inside the
/// range can go.
pub fn uncache(file: &std::fs::File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        advise_dontneed(file, offset, Some(len));
    }
}

/// [`uncache`] the whole file.
pub fn uncache_all(file: &std::fs::File) {
    advise_dontneed(file, 0, None);
}

fn advise_dontneed(file: &std::fs::File, offset: u64, len: Option<std::num::NonZeroU64>) {
    let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
}
