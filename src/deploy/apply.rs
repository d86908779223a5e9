//! Carrying out a plan inside a staging tree (never the live one): remove,
//! create (from verified chunks), link, re-own. Paths are resolved one
//! component at a time from the staging root with O_NOFOLLOW.

use std::os::unix::ffi::OsStrExt;

use crate::deploy::plan::{Action, RelPath};
use crate::error::{IoContext, Result};
use crate::extract::{ExtractStats, Extractor};
use crate::fs::write::Dir;
use crate::store::Store;
use crate::tree::{Entry, Kind};

pub struct Applier<'a> {
    restorer: Extractor<'a>,
}

impl<'a> Applier<'a> {
    pub fn new(store: &'a Store) -> Self {
        Applier {
            restorer: Extractor::new(store),
        }
    }

    /// Files unchanged in `live` are copied from it into `top`.
    pub fn reuse_from(&mut self, top: std::path::PathBuf, live: std::path::PathBuf) {
        self.restorer.reuse_from(top, live);
    }

    /// What the live tree holds, as its deployment recorded it: files
    /// untouched since are linked or copied unread.
    pub fn live_deployed(&mut self, d: Option<crate::extract::LiveDeployed>) {
        self.restorer.live_deployed(d);
    }

    /// Files already exactly right in `live` are hard-linked, not copied.
    pub fn share_with_live(&mut self, share: bool) {
        self.restorer.share_with_live(share);
    }

    /// Hard-link groups of the trees applied so far are not linked into.
    pub fn forget_link_groups(&mut self) {
        self.restorer.link_groups_to(Default::default());
    }

    /// Create one entry (with its subtree) in `parent`.
    pub fn create_entry(&mut self, parent: &Dir, e: &Entry) -> Result<()> {
        self.restorer.entry(parent, e)
    }

    /// Carry out `actions` in `top`; the content of new files is written
    /// by worker threads ([`Extractor::parallel`]). A member of a hard-link
    /// group in `kept` (kept on disk, relative to `top`) that a created
    /// subtree holds is linked to it.
    pub fn apply(
        &mut self,
        top: &Dir,
        actions: &[Action],
        kept: &std::collections::HashMap<(u64, u64), RelPath>,
    ) -> Result<()> {
        self.restorer.link_groups_to(
            kept.iter()
                .map(|(k, rel)| (*k, resolve(top, rel)))
                .collect(),
        );
        self.restorer.parallel(|r| apply_actions(r, top, actions))
    }

    pub fn finish(self) -> ExtractStats {
        self.restorer.stats
    }
}

fn apply_actions(restorer: &mut Extractor, top: &Dir, actions: &[Action]) -> Result<()> {
    // The directories from `top` down to the last action's parent,
    // open: actions come in tree order, so the next one mostly shares
    // all or most of them, and only the rest is opened.
    let mut open: Vec<(Vec<u8>, Dir)> = Vec::new();
    let progress = crate::log::progress_enabled().then(|| {
        let p = indicatif::ProgressBar::new(actions.len() as u64);
        p.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} changes in {msg} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        p.set_message(top.path().display().to_string());
        p
    });
    for a in actions {
        if let Some(p) = &progress {
            p.inc(1);
        }
        crate::failpoint::failpoint("deploy:applying");
        let (comps, name) = a.path().split();
        let shared = open
            .iter()
            .zip(&comps)
            .take_while(|((n, _), c)| n.as_slice() == **c)
            .count();
        open.truncate(shared);
        for c in &comps[shared..] {
            let up = open.last().map(|(_, d)| d).unwrap_or(top);
            let d = up.open_dir(c).at(up.child_path(c))?;
            open.push((c.to_vec(), d));
        }
        let parent = open.last().map(|(_, d)| d).unwrap_or(top);
        let path = parent.child_path(name);
        match a {
            Action::Remove { .. } => parent.remove(name).at(&path)?,
            Action::Create { entry, .. } => {
                let mut e = entry.clone();
                e.name = name.to_vec();
                restorer.entry(parent, &e)?;
            }
            Action::Link { target, .. } => {
                let target = resolve(top, target);
                match parent.hard_link(name, &target) {
                    // The group's first file was removed again for damaged
                    // data (recorded): this name is lost with it.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && !restorer.stats.errors.is_empty() =>
                    {
                        restorer.stats.errors.push(format!(
                            "{}: not linked: {} could not be written",
                            path.display(),
                            target.display()
                        ));
                    }
                    r => r.at(&path)?,
                }
            }
            Action::Meta { entry, .. } => {
                parent
                    .drop_other_xattrs(name, &entry.meta.xattrs)
                    .at(&path)?;
                let is_link = matches!(entry.kind, Kind::Symlink(_));
                let failed = parent.set_meta_at(name, &entry.meta, is_link).at(&path)?;
                restorer.note(&path, failed);
            }
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok(())
}

fn resolve(top: &Dir, rel: &RelPath) -> std::path::PathBuf {
    let mut p = top.path().to_path_buf();
    for c in rel.0.split(|b| *b == b'/') {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}
