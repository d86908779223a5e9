//! The intent journal of a deployment: written before the first live
//! change, marked committed after the last, removed when cleanup is done.
//! After a crash at any point, `recover` either undoes every live change
//! (not yet committed) or finishes the cleanup (committed), so the live
//! paths hold exactly the old set or exactly the new set.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::deploy::state::{self, DeployState};
use crate::error::{Error, IoContext, Result};
use crate::fs::write::{Dir, keeping_times};
use crate::store::{Backend, FileKind, Store, StoreLock};

pub use crate::store::JOURNAL_FILE;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prepared,
    Committed,
}

/// A managed directory swapped with a generation directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DirSwap {
    pub live: PathBuf,
    /// The generation directory (e.g. ROOT/.install.hamn).
    pub gen_dir: PathBuf,
    /// The entry in gen_dir that becomes live (staging or previous).
    pub incoming: String,
    /// Inode of the incoming tree, to tell after a crash whether the swap
    /// happened.
    pub incoming_ino: u64,
    /// Whether a live tree existed (else the incoming one is renamed in).
    pub had_live: bool,
    /// Name in gen_dir for the tree that was live, after the swap.
    pub outgoing_as: String,
}

/// A managed file (or other non-directory) replaced by rename.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileSwap {
    pub target: PathBuf,
    pub tmp: PathBuf,
    pub backup: PathBuf,
    pub existed: bool,
    pub tmp_ino: u64,
}

/// How one top-level entry of a mount-point directory is swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryOp {
    /// In both trees: exchanged.
    Exchange,
    /// Only in the new tree: moved in.
    In,
    /// Only in the old tree: moved out (to the outgoing generation).
    Out,
}

/// One top-level entry of a managed directory that is a mount point (so
/// it cannot be swapped as a whole).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntrySwap {
    pub live_dir: PathBuf,
    pub staging: PathBuf,
    pub name: Vec<u8>,
    pub op: EntryOp,
    /// Inode of the entry that moves first (staging's for Exchange/In,
    /// live's for Out), to tell after a crash whether it moved.
    pub ino: u64,
}

/// A rename inside a generation directory done at cleanup.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GenRename {
    pub gen_dir: PathBuf,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub version: u32,
    pub phase: Phase,
    pub root: PathBuf,
    pub dirs: Vec<DirSwap>,
    #[serde(default)]
    pub entries: Vec<EntrySwap>,
    #[serde(default)]
    pub gen_renames: Vec<GenRename>,
    pub files: Vec<FileSwap>,
    /// The deployment state to record once committed.
    pub state_after: DeployState,
}

pub fn write(store: &Store, j: &Journal) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(j).map_err(|e| Error::Other(e.to_string()))?;
    store
        .files()
        .write_atomic(FileKind::Journal, JOURNAL_FILE, &bytes)
}

pub fn read(store: &Store) -> Result<Option<Journal>> {
    let Some(b) = store.files().read(FileKind::Journal, JOURNAL_FILE)? else {
        return Ok(None);
    };
    serde_json::from_slice(&b).map(Some).map_err(|e| {
        Error::malformed(
            "deploy journal",
            format!(
                "{}: {e}",
                store.files().describe(FileKind::Journal, JOURNAL_FILE)
            ),
        )
    })
}

/// Delete the journal, durably.
fn remove(store: &Store) -> Result<()> {
    store.files().remove(FileKind::Journal, JOURNAL_FILE)?;
    Ok(())
}

fn split(p: &Path) -> Result<(Dir, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let parent = p
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent", p.display())))?;
    let name = p
        .file_name()
        .ok_or_else(|| Error::Other(format!("{} has no name", p.display())))?;
    Ok((Dir::open_root(parent).at(parent)?, name.as_bytes().to_vec()))
}

fn ino_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Put the old set back: swap back directories that were swapped, restore
/// files from their backups, drop new files and temps.
fn undo(j: &Journal) -> Result<()> {
    for e in j.entries.iter().rev() {
        let live = Dir::open_root(&e.live_dir).at(&e.live_dir)?;
        let staging = Dir::open_root(&e.staging).at(&e.staging)?;
        let (here, there) = (
            e.live_dir.join(std::ffi::OsStr::from_bytes(&e.name)),
            e.staging.join(std::ffi::OsStr::from_bytes(&e.name)),
        );
        let n = &e.name[..];
        match e.op {
            EntryOp::Exchange if ino_of(&here) == Some(e.ino) => {
                keeping_times(&[(&live, n, &staging, n), (&staging, n, &live, n)], || {
                    live.exchange(n, &staging, n)
                })
                .at(&here)?
            }
            EntryOp::In if ino_of(&here) == Some(e.ino) => {
                keeping_times(&[(&live, n, &staging, n)], || live.rename(n, &staging, n))
                    .at(&here)?
            }
            EntryOp::Out if ino_of(&there) == Some(e.ino) => {
                keeping_times(&[(&staging, n, &live, n)], || staging.rename(n, &live, n))
                    .at(&there)?
            }
            _ => {}
        }
    }
    for d in &j.dirs {
        let generation = Dir::open_root(&d.gen_dir).at(&d.gen_dir)?;
        let (parent, name) = split(&d.live)?;
        if ino_of(&d.live) == Some(d.incoming_ino) {
            let incoming = d.incoming.as_bytes();
            if d.had_live {
                keeping_times(
                    &[
                        (&parent, &name, &generation, incoming),
                        (&generation, incoming, &parent, &name),
                    ],
                    || parent.exchange(&name, &generation, incoming),
                )
                .at(&d.live)?;
            } else {
                keeping_times(&[(&parent, &name, &generation, incoming)], || {
                    parent.rename(&name, &generation, incoming)
                })
                .at(&d.live)?;
            }
            parent.fsync().at(&d.live)?;
        }
    }
    for f in &j.files {
        let (parent, name) = split(&f.target)?;
        let (_, backup) = split(&f.backup)?;
        let (_, tmp) = split(&f.tmp)?;
        if f.existed && parent.kind_of(&backup).at(&f.backup)?.is_some() {
            // rename(2) between two links of one inode does nothing, so a
            // backup that is still the target's own inode is just dropped.
            if ino_of(&f.backup) == ino_of(&f.target) {
                parent.remove(&backup).at(&f.backup)?;
            } else {
                parent.rename(&backup, &parent, &name).at(&f.target)?;
            }
        } else if !f.existed && ino_of(&f.target) == Some(f.tmp_ino) {
            parent.remove(&name).at(&f.target)?;
        }
        parent.remove(&tmp).at(&f.tmp)?;
        parent.fsync().at(&f.target)?;
    }
    Ok(())
}

/// Cleanup after a committed deployment: record the state, keep the
/// outgoing trees as the previous generation, drop backups.
pub fn finish(store: &Store, j: &Journal) -> Result<()> {
    state::write(store, &j.state_after)?;
    crate::failpoint::failpoint("deploy:state-written");
    for d in &j.dirs {
        let generation = Dir::open_root(&d.gen_dir).at(&d.gen_dir)?;
        if d.had_live
            && d.incoming != d.outgoing_as
            && generation
                .kind_of(d.incoming.as_bytes())
                .at(&d.gen_dir)?
                .is_some()
        {
            generation.remove(d.outgoing_as.as_bytes()).at(&d.gen_dir)?;
            generation
                .rename(d.incoming.as_bytes(), &generation, d.outgoing_as.as_bytes())
                .at(&d.gen_dir)?;
            generation.fsync().at(&d.gen_dir)?;
        }
        crate::failpoint::failpoint("deploy:generation-kept");
    }
    for r in &j.gen_renames {
        let generation = Dir::open_root(&r.gen_dir).at(&r.gen_dir)?;
        if generation
            .kind_of(r.from.as_bytes())
            .at(&r.gen_dir)?
            .is_some()
        {
            generation.remove(r.to.as_bytes()).at(&r.gen_dir)?;
            generation
                .rename(r.from.as_bytes(), &generation, r.to.as_bytes())
                .at(&r.gen_dir)?;
            generation.fsync().at(&r.gen_dir)?;
        }
    }
    for f in &j.files {
        let (parent, backup) = split(&f.backup)?;
        parent.remove(&backup).at(&f.backup)?;
    }
    remove(store)
}

/// Complete or undo an interrupted deployment. Returns what was done.
pub fn recover(store: &Store, _lock: &StoreLock) -> Result<Option<&'static str>> {
    let Some(j) = read(store)? else {
        return Ok(None);
    };
    match j.phase {
        Phase::Prepared => {
            undo(&j)?;
            remove(store)?;
            Ok(Some("undone"))
        }
        Phase::Committed => {
            finish(store, &j)?;
            Ok(Some("completed"))
        }
    }
}

/// Finish or undo a deployment that a crash interrupted in the store at
/// `path`, whatever the command about to run: the live paths must never
/// stay half-changed. Every command that opens a store calls this first.
/// Quiet when there is no store or no journal, and when another run holds
/// the lock (that run recovers); a failure is logged, not returned.
pub fn recover_interrupted(path: &Path) {
    // Looked for without opening the index (opened for writing, it
    // changes the index file): most commands find no journal.
    let pending = crate::store::files_at(path)
        .list(FileKind::Journal)
        .is_ok_and(|l| !l.is_empty());
    if !pending {
        return;
    }
    let Ok(store) = Store::open(path) else {
        return;
    };
    let Ok(lock) = store.lock(std::time::Duration::ZERO, "hamn (recovering a deployment)") else {
        return;
    };
    match recover(&store, &lock) {
        Ok(Some(what)) => crate::log::info(&format!("an interrupted deployment was {what}")),
        Ok(None) => {}
        Err(e) => crate::log::warn(&format!("could not recover an interrupted deployment: {e}")),
    }
}
