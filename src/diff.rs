//! What changed between two snapshots. Subtrees with equal ids are skipped
//! without being read, so the cost follows the change, not the tree size.
//! Files that disappear in one place and appear with the same content in
//! another are reported as renames.

use std::collections::HashMap;

use crate::error::Result;
use crate::id::TreeId;
use crate::store::Store;
use crate::tree::{Entry, Kind, Meta, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
    Metadata,
    TypeChanged,
    Renamed,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Removed => 'D',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'm',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Renamed => 'R',
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub change: ChangeKind,
    pub path: String,
    /// The old path of a rename.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Entry type after the change (before it, for removals).
    pub entry_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
    /// Metadata fields that differ: mode, uid, gid, mtime, xattrs, target, rdev.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
    #[serde(skip)]
    content_key: Option<blake3::Hash>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    pub renamed: u64,
    pub trees_compared: u64,
}

use crate::snapshot::child_path as join;

/// The metadata fields that differ between two entries of the same type.
pub fn meta_fields(a: &Entry, b: &Entry) -> Vec<&'static str> {
    let (x, y): (&Meta, &Meta) = (&a.meta, &b.meta);
    let mut f = Vec::new();
    if x.mode != y.mode {
        f.push("mode");
    }
    if x.uid != y.uid {
        f.push("uid");
    }
    if x.gid != y.gid {
        f.push("gid");
    }
    if (x.mtime_sec, x.mtime_nsec) != (y.mtime_sec, y.mtime_nsec) {
        f.push("mtime");
    }
    if x.xattrs != y.xattrs {
        f.push("xattrs");
    }
    match (&a.kind, &b.kind) {
        (Kind::Symlink(s), Kind::Symlink(t)) if s != t => f.push("target"),
        (Kind::CharDev(s), Kind::CharDev(t)) | (Kind::BlockDev(s), Kind::BlockDev(t)) if s != t => {
            f.push("rdev")
        }
        _ => {}
    }
    f
}

fn content_key(e: &Entry) -> Option<blake3::Hash> {
    match &e.kind {
        Kind::File(c) if c.size > 0 => {
            let mut h = blake3::Hasher::new();
            h.update(&c.size.to_le_bytes());
            for (o, l) in &c.holes {
                h.update(&o.to_le_bytes());
                h.update(&l.to_le_bytes());
            }
            for ch in c.stored_refs() {
                h.update(&ch.id.0);
            }
            Some(h.finalize())
        }
        _ => None,
    }
}

struct Differ<'a> {
    store: &'a Store,
    out: Vec<Change>,
    trees_compared: u64,
}

impl Differ<'_> {
    fn one_sided(&mut self, change: ChangeKind, path: String, e: &Entry) -> Result<()> {
        let size = Some(e.size());
        self.out.push(Change {
            change,
            path: path.clone(),
            from: None,
            entry_type: e.kind.name(),
            old_type: None,
            old_size: if change == ChangeKind::Removed {
                size
            } else {
                None
            },
            new_size: if change == ChangeKind::Added {
                size
            } else {
                None
            },
            fields: Vec::new(),
            content_key: content_key(e),
        });
        if let Kind::Dir(id) = &e.kind {
            let tree = self.store.read_tree(*id)?;
            for child in &tree.entries {
                self.one_sided(change, join(&path, &child.name), child)?;
            }
        }
        Ok(())
    }

    fn trees(&mut self, a: Option<TreeId>, b: Option<TreeId>, prefix: &str) -> Result<()> {
        if a == b {
            return Ok(());
        }
        self.trees_compared += 1;
        let ta = match a {
            Some(id) => self.store.read_tree(id)?,
            None => Tree::default(),
        };
        let tb = match b {
            Some(id) => self.store.read_tree(id)?,
            None => Tree::default(),
        };
        let (mut i, mut j) = (0, 0);
        while i < ta.entries.len() || j < tb.entries.len() {
            let order = match (ta.entries.get(i), tb.entries.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let e = &ta.entries[i];
                    self.one_sided(ChangeKind::Removed, join(prefix, &e.name), e)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let e = &tb.entries[j];
                    self.one_sided(ChangeKind::Added, join(prefix, &e.name), e)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.entries(
                        &ta.entries[i],
                        &tb.entries[j],
                        join(prefix, &ta.entries[i].name),
                    )?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    pub fn entries(&mut self, x: &Entry, y: &Entry, path: String) -> Result<()> {
        if x.kind.letter() != y.kind.letter() {
            self.out.push(Change {
                change: ChangeKind::TypeChanged,
                path: path.clone(),
                from: None,
                entry_type: y.kind.name(),
                old_type: Some(x.kind.name()),
                old_size: Some(x.size()),
                new_size: Some(y.size()),
                fields: Vec::new(),
                content_key: None,
            });
            if let Kind::Dir(id) = &x.kind {
                let t = self.store.read_tree(*id)?;
                for c in &t.entries {
                    self.one_sided(ChangeKind::Removed, join(&path, &c.name), c)?;
                }
            }
            if let Kind::Dir(id) = &y.kind {
                let t = self.store.read_tree(*id)?;
                for c in &t.entries {
                    self.one_sided(ChangeKind::Added, join(&path, &c.name), c)?;
                }
            }
            return Ok(());
        }
        let fields = meta_fields(x, y);
        let modified = match (&x.kind, &y.kind) {
            (Kind::File(a), Kind::File(b)) => !a.same_content(b),
            _ => false,
        };
        if modified || !fields.is_empty() {
            self.out.push(Change {
                change: if modified {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Metadata
                },
                path: path.clone(),
                from: None,
                entry_type: y.kind.name(),
                old_type: None,
                old_size: Some(x.size()),
                new_size: Some(y.size()),
                fields,
                content_key: None,
            });
        }
        if let (Kind::Dir(a), Kind::Dir(b)) = (&x.kind, &y.kind) {
            self.trees(Some(*a), Some(*b), &path)?;
        }
        Ok(())
    }
}

/// Pair removed and added files with the same content into renames.
fn find_renames(changes: Vec<Change>) -> Vec<Change> {
    let mut removed: HashMap<blake3::Hash, Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if c.change == ChangeKind::Removed
            && c.entry_type == "file"
            && let Some(k) = c.content_key
        {
            removed.entry(k).or_default().push(i);
        }
    }
    let mut gone = vec![false; changes.len()];
    let mut renames: HashMap<usize, String> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if c.change != ChangeKind::Added || c.entry_type != "file" {
            continue;
        }
        let Some(k) = c.content_key else { continue };
        if let Some(list) = removed.get_mut(&k)
            && let Some(r) = list.pop()
        {
            gone[r] = true;
            renames.insert(i, changes[r].path.clone());
        }
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !gone[*i])
        .map(|(i, mut c)| {
            if let Some(from) = renames.remove(&i) {
                c.change = ChangeKind::Renamed;
                c.old_size = c.new_size;
                c.from = Some(from);
            }
            c
        })
        .collect()
}

pub struct DiffResult {
    pub changes: Vec<Change>,
    pub summary: DiffSummary,
}

/// Compare two entries (or roots) found at the same path in two snapshots.
pub fn diff(
    store: &Store,
    a: Option<&Entry>,
    b: Option<&Entry>,
    a_root: Option<TreeId>,
    b_root: Option<TreeId>,
    prefix: &str,
) -> Result<DiffResult> {
    let mut d = Differ {
        store,
        out: Vec::new(),
        trees_compared: 0,
    };
    match (a, b) {
        (Some(x), Some(y)) => d.entries(x, y, prefix.to_string())?,
        (Some(x), None) => d.one_sided(ChangeKind::Removed, prefix.to_string(), x)?,
        (None, Some(y)) => d.one_sided(ChangeKind::Added, prefix.to_string(), y)?,
        (None, None) => d.trees(a_root, b_root, prefix)?,
    }
    let changes = find_renames(d.out);
    let mut summary = DiffSummary {
        trees_compared: d.trees_compared,
        ..DiffSummary::default()
    };
    for c in &changes {
        match c.change {
            ChangeKind::Added => summary.added += 1,
            ChangeKind::Removed => summary.removed += 1,
            ChangeKind::Modified => summary.modified += 1,
            ChangeKind::Metadata => summary.metadata += 1,
            ChangeKind::TypeChanged => summary.type_changed += 1,
            ChangeKind::Renamed => summary.renamed += 1,
        }
    }
    Ok(DiffResult { changes, summary })
}
