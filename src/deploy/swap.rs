//! The live part of a deployment or a rollback: the journal written, the
//! swaps made in their order, the commit point, the clean-up.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::journal::{self, Journal, Phase};
use super::*;
use crate::error::{Error, IoContext, Result};
use crate::failpoint::failpoint;
use crate::fs::write::{Dir, PasswdLock, keeping_times};
use crate::store::{Store, StoreLock};

/// The live part: journal, swap, rename, mark committed, clean up.
pub(super) fn commit(store: &Store, lock: &StoreLock, j: &mut Journal) -> Result<()> {
    journal::write(store, j)?;
    failpoint("deploy:prepared");
    let result = swap_all(j);
    if let Err(e) = result {
        // Put the old set back now rather than at the next command.
        let _ = journal::recover(store, lock);
        return Err(e);
    }
    j.phase = Phase::Committed;
    journal::write(store, j)?;
    failpoint("deploy:committed");
    journal::finish(store, j)
}

pub(super) fn swap_all(j: &Journal) -> Result<()> {
    for d in &j.dirs {
        let generation = Dir::open_root(&d.gen_dir).at(&d.gen_dir)?;
        let parent_path = d.live.parent().unwrap_or(Path::new("/"));
        let parent = Dir::open_root(parent_path).at(parent_path)?;
        let name = d
            .live
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let incoming = d.incoming.as_bytes();
        let r = if d.had_live {
            keeping_times(
                &[
                    (&generation, incoming, &parent, &name),
                    (&parent, &name, &generation, incoming),
                ],
                || parent.exchange(&name, &generation, incoming),
            )
        } else {
            keeping_times(&[(&generation, incoming, &parent, &name)], || {
                generation.rename(incoming, &parent, &name)
            })
        };
        r.map_err(|e| {
            if e.raw_os_error() == Some(libc::EXDEV) {
                Error::Other(format!(
                    "{} and {} are on different file systems; the generation directory must be \
                     on the same file system as the managed directory",
                    d.live.display(),
                    d.gen_dir.display()
                ))
            } else {
                Error::io(&d.live, e)
            }
        })?;
        parent.fsync().at(parent_path)?;
        failpoint("deploy:dir-swapped");
    }
    for e in &j.entries {
        let live = Dir::open_root(&e.live_dir).at(&e.live_dir)?;
        let staging = Dir::open_root(&e.staging).at(&e.staging)?;
        let here = live.child_path(&e.name);
        let n = &e.name[..];
        match e.op {
            journal::EntryOp::Exchange => {
                keeping_times(&[(&staging, n, &live, n), (&live, n, &staging, n)], || {
                    live.exchange(n, &staging, n)
                })
            }
            journal::EntryOp::In => {
                keeping_times(&[(&staging, n, &live, n)], || staging.rename(n, &live, n))
            }
            journal::EntryOp::Out => {
                keeping_times(&[(&live, n, &staging, n)], || live.rename(n, &staging, n))
            }
        }
        .at(&here)?;
        failpoint("deploy:entry-swapped");
    }
    let mount_roots: std::collections::BTreeSet<&PathBuf> =
        j.entries.iter().map(|e| &e.live_dir).collect();
    for d in mount_roots {
        Dir::open_root(d).at(d)?.fsync().at(d)?;
    }
    let needs_pwlock = j
        .files
        .iter()
        .any(|f| SHADOW_FILES.iter().any(|s| f.target == j.root.join(s)));
    let _pw = if needs_pwlock {
        Some(
            PasswdLock::acquire(&j.root, std::time::Duration::from_secs(15))
                .map_err(|e| Error::io(j.root.join("etc/.pwd.lock"), e))?,
        )
    } else {
        None
    };
    for f in &j.files {
        let parent_path = f.target.parent().unwrap_or(Path::new("/"));
        let parent = Dir::open_root(parent_path).at(parent_path)?;
        let name = f
            .target
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let tmp = f
            .tmp
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let backup = f
            .backup
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        if f.existed {
            parent.remove(&backup).at(&f.backup)?;
            parent.link_to(&name, &parent, &backup).at(&f.backup)?;
            failpoint("deploy:file-linked");
        }
        parent.rename(&tmp, &parent, &name).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Error::Other(format!(
                    "{} is busy (a bind mount?) and cannot be replaced; nothing was changed",
                    f.target.display()
                ))
            } else {
                Error::io(&f.target, e)
            }
        })?;
        parent.fsync().at(parent_path)?;
        failpoint("deploy:file-renamed");
    }
    Ok(())
}
