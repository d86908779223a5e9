//! Salvage: copying selected paths of a snapshot out into a directory
//! (`hamn restore`), through the write engine (`extract`), with the
//! directories above each path given their snapshot metadata.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::extract::Extractor;
use crate::fs::write::Dir;
use crate::id::TreeId;
use crate::snapshot::path_components;
use crate::tree::{Kind, Meta};

impl Extractor<'_> {
    /// Restore `path` of the snapshot rooted at `root` to `to/path`.
    pub fn restore_path(&mut self, root: TreeId, label: &str, path: &str, to: &Path) -> Result<()> {
        let comps = path_components(path.as_bytes())?;
        let mut dir = Dir::open_root(to).at(to)?;
        let mut tree = self.store().read_tree(root)?;
        let missing = || Error::NoSuchPath {
            snapshot: label.to_string(),
            path: path.to_string(),
        };
        if comps.is_empty() {
            for e in tree.entries.clone() {
                self.entry(&dir, &e)?;
            }
            return Ok(());
        }
        let (last, parents) = comps.split_last().expect("non-empty");
        let mut made: Vec<(PathBuf, Meta)> = Vec::new();
        for c in parents {
            let e = tree.get(c).ok_or_else(missing)?.clone();
            let Kind::Dir(id) = e.kind else {
                return Err(missing());
            };
            let existed = dir.kind_of(c).at(dir.child_path(c))?.is_some();
            dir = dir.make_dir(c).at(dir.child_path(c))?;
            if !existed {
                made.push((dir.path().to_path_buf(), e.meta.clone()));
            }
            tree = self.store().read_tree(id)?;
        }
        let e = tree.get(last).ok_or_else(missing)?.clone();
        self.entry(&dir, &e)?;
        // Directories created to hold the path get their snapshot metadata
        // too, innermost first so parent mtimes are not disturbed.
        for (p, meta) in made.into_iter().rev() {
            let d = Dir::open_root(&p).at(&p)?;
            let failed = d.set_meta(&meta).at(&p)?;
            self.note(&p, failed);
        }
        Ok(())
    }
}
