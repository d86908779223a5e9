//! The durability recipe, in one place: private files (0600 whatever the
//! umask), fsync that is fatal when it fails, and publish = fsync, rename,
//! fsync the directory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

/// Create a new file readable by its owner only.
pub fn create_private(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .at(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .at(path)?;
    Ok(f)
}

/// Create a directory (and parents) with mode 0700.
pub fn create_private_dir(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        create_private_dir(parent)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)).at(path)?;
    fsync_dir(parent_of(path))
}

/// Give an existing directory mode 0700, whatever it had.
pub fn make_dir_private(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)).at(path)
}

/// The directory holding `path` ("." for a bare relative name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync; a failure is fatal and never retried (the kernel may have dropped
/// the dirty pages, so a second fsync could succeed without the data).
pub fn fsync(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(|source| Error::Fsync {
        path: path.to_path_buf(),
        source,
    })
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).at(dir)?;
    fsync(&f, dir)
}

/// Move a durable temp file to its final name and make the rename durable.
pub fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let dir = parent_of(dest);
    create_private_dir(dir)?;
    std::fs::rename(tmp, dest).at(dest)?;
    fsync_dir(dir)
}

/// Write `bytes` to `dest` atomically and durably.
pub fn write_atomic(dest: &Path, tmp_dir: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_dir.join(format!(".{:016x}.tmp", fastrand::u64(..)));
    let mut f = create_private(&tmp)?;
    let res = f.write_all(bytes).at(&tmp).and_then(|_| fsync(&f, &tmp));
    drop(f);
    if let Err(e) = res.and_then(|_| publish(&tmp, dest)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}
