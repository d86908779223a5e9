//! Snapshot records: what was taken, when, from where, and the root tree.
//! A record is published last, after everything it references is durable,
//! so a visible snapshot is always complete. Also: resolving the SNAP
//! argument (`latest`, `latest~N`, or an id prefix) and paths within a
//! snapshot.

pub mod create;

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::store::{FileKind, Store, StoreLock};
use crate::tree::{Entry, Kind, Tree, validate_name};

pub const SNAPSHOT_MAGIC: &[u8; 4] = b"HSNP";
pub const SNAPSHOT_VERSION: u16 = 1;
/// Longest text field (host, managed path, tag) a record may hold.
pub const TEXT_MAX_BYTES: usize = 4096;
/// Largest encoded snapshot record (the push protocol carries records up
/// to this size).
pub const RECORD_MAX_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_total: u64,
    pub files_read: u64,
    pub files_reused: u64,
    pub bytes_read: u64,
    pub blobs_added: u64,
    pub bytes_added_plain: u64,
    pub bytes_added_stored: u64,
    pub warnings: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Start of the snapshot, nanoseconds since the epoch (UTC).
    pub time_ns: i64,
    pub host: String,
    /// The managed paths, absolute.
    pub paths: Vec<String>,
    pub root: TreeId,
    pub parent: Option<SnapshotId>,
    pub tags: Vec<String>,
    pub stats: SnapshotStats,
}

/// Refuse a text field that no reader would accept (usage error: the
/// fields come from the command line and the config).
pub fn check_text(what: &str, text: &str) -> Result<()> {
    if text.len() > TEXT_MAX_BYTES {
        return Err(Error::Usage(format!(
            "{what} '{}...' is {} bytes long; a snapshot record holds at most {TEXT_MAX_BYTES}",
            text.chars().take(40).collect::<String>(),
            text.len()
        )));
    }
    Ok(())
}

fn put_str(e: &mut Encoder, s: &str) {
    e.bytes(s.as_bytes());
}

fn get_str(d: &mut Decoder<'_>) -> Result<String> {
    let b = d.bytes(TEXT_MAX_BYTES)?;
    String::from_utf8(b.to_vec()).map_err(|_| d.err("text is not UTF-8"))
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(SNAPSHOT_MAGIC);
        e.u16(SNAPSHOT_VERSION);
        e.i64(self.time_ns);
        put_str(&mut e, &self.host);
        e.u32(self.paths.len() as u32);
        for p in &self.paths {
            put_str(&mut e, p);
        }
        e.id(&self.root.0);
        match &self.parent {
            Some(p) => {
                e.u8(1);
                e.id(&p.0);
            }
            None => e.u8(0),
        }
        e.u32(self.tags.len() as u32);
        for t in &self.tags {
            put_str(&mut e, t);
        }
        let s = &self.stats;
        for v in [
            s.files,
            s.dirs,
            s.other_entries,
            s.bytes_total,
            s.files_read,
            s.files_reused,
            s.bytes_read,
            s.blobs_added,
            s.bytes_added_plain,
            s.bytes_added_stored,
            s.warnings,
            s.duration_ms,
        ] {
            e.u64(v);
        }
        e.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
        let mut d = Decoder::new(bytes, "snapshot record");
        if d.take(4)? != SNAPSHOT_MAGIC {
            return Err(d.err("bad magic"));
        }
        let v = d.u16()?;
        if v != SNAPSHOT_VERSION {
            return Err(d.err(format!(
                "record version {v}, this hamn reads {SNAPSHOT_VERSION}"
            )));
        }
        let time_ns = d.i64()?;
        let host = get_str(&mut d)?;
        let n = d.count(4)?;
        let paths = (0..n)
            .map(|_| get_str(&mut d))
            .collect::<Result<Vec<_>>>()?;
        let root = TreeId(d.id()?);
        let parent = match d.u8()? {
            0 => None,
            1 => Some(SnapshotId(d.id()?)),
            _ => return Err(d.err("bad parent flag")),
        };
        let n = d.count(4)?;
        let tags = (0..n)
            .map(|_| get_str(&mut d))
            .collect::<Result<Vec<_>>>()?;
        let mut vals = [0u64; 12];
        for v in &mut vals {
            *v = d.u64()?;
        }
        d.expect_end()?;
        let [
            files,
            dirs,
            other_entries,
            bytes_total,
            files_read,
            files_reused,
            bytes_read,
            blobs_added,
            bytes_added_plain,
            bytes_added_stored,
            warnings,
            duration_ms,
        ] = vals;
        Ok(Snapshot {
            time_ns,
            host,
            paths,
            root,
            parent,
            tags,
            stats: SnapshotStats {
                files,
                dirs,
                other_entries,
                bytes_total,
                files_read,
                files_reused,
                bytes_read,
                blobs_added,
                bytes_added_plain,
                bytes_added_stored,
                warnings,
                duration_ms,
            },
        })
    }

    pub fn time_local(&self) -> chrono::DateTime<chrono::Local> {
        chrono::DateTime::from_timestamp_nanos(self.time_ns).with_timezone(&chrono::Local)
    }
}

/// Resolve a SNAP argument: `latest`, `latest~N`, or an unambiguous prefix
/// of a snapshot id.
pub fn resolve(store: &Store, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    let all = store.snapshots()?;
    resolve_in(&all, spec).cloned()
}

pub fn resolve_in<'a>(
    all: &'a [(SnapshotId, Snapshot)],
    spec: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    let back =
        if spec == "latest" {
            Some(0)
        } else if let Some(n) = spec.strip_prefix("latest~") {
            Some(n.parse::<usize>().map_err(|_| {
                Error::Usage(format!("'{spec}': expected latest~N with a number N"))
            })?)
        } else {
            None
        };
    if let Some(n) = back {
        return all
            .len()
            .checked_sub(n + 1)
            .map(|i| &all[i])
            .ok_or_else(|| Error::UnknownSnapshot(spec.to_string()));
    }
    let prefix = spec.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::UnknownSnapshot(spec.to_string()));
    }
    let matches: Vec<_> = all
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&prefix))
        .collect();
    match matches.len() {
        0 => Err(Error::UnknownSnapshot(spec.to_string())),
        1 => Ok(matches[0]),
        _ => Err(Error::AmbiguousSnapshot {
            prefix: spec.to_string(),
            candidates: matches
                .iter()
                .map(|(id, _)| id.to_hex()[..12].to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Split an absolute or relative path inside a snapshot into components.
pub fn path_components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        validate_name(c).map_err(|_| {
            Error::Usage(format!(
                "'{}' is not a path inside a snapshot",
                String::from_utf8_lossy(path)
            ))
        })?;
        out.push(c);
    }
    Ok(out)
}

/// The canonical absolute form of a path inside a snapshot: `/a/b`
/// (doubled slashes and `.` dropped, names shown lossily).
pub fn normalized_path(path: &[u8]) -> Result<String> {
    let comps = path_components(path)?;
    Ok(format!(
        "/{}",
        comps
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("/")
    ))
}

/// What a path in a snapshot names: the root (a directory with no entry of
/// its own) or an entry.
pub enum Found {
    Root(Tree),
    Entry(Entry),
}

/// Find `path` in the snapshot rooted at `root`.
pub fn lookup(store: &Store, root: TreeId, snap_label: &str, path: &[u8]) -> Result<Found> {
    let comps = path_components(path)?;
    let mut tree = store.read_tree(root)?;
    let missing = || Error::NoSuchPath {
        snapshot: snap_label.to_string(),
        path: String::from_utf8_lossy(path).into_owned(),
    };
    let Some((last, dirs)) = comps.split_last() else {
        return Ok(Found::Root(tree));
    };
    for c in dirs {
        let e = tree.get(c).ok_or_else(missing)?;
        match &e.kind {
            Kind::Dir(id) => tree = store.read_tree(*id)?,
            _ => return Err(missing()),
        }
    }
    tree.get(last)
        .cloned()
        .map(Found::Entry)
        .ok_or_else(missing)
}

/// The display path of `name` inside the directory shown as `prefix`.
/// Names that are not UTF-8 are shown lossily; ids and JSON keep the bytes
/// out of it, so the display form is never used to find an entry.
pub fn child_path(prefix: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if prefix.ends_with('/') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}/{name}")
    }
}

/// Snapshot records in the store: one file each (`FileKind::Snapshot`),
/// named by the id of its bytes. Here rather than in `store`, which knows
/// nothing of what a record says.
impl Store {
    /// Every snapshot record that reads back intact, oldest first, and
    /// apart from them each record file that does not (where it is), with
    /// the reason. Records are read from their files (the authority), each
    /// checked against its id.
    #[allow(clippy::type_complexity)]
    pub fn snapshot_records(&self) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(String, String)>)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for name in self.files().list(FileKind::Snapshot)? {
            let Ok(id) = SnapshotId::from_hex(&name) else {
                continue;
            };
            let at = || self.files().describe(FileKind::Snapshot, &name);
            match self.read_snapshot(id) {
                Ok(s) => good.push((id, s)),
                // Removed since the listing (by a concurrent forget).
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(Error::Corrupt { detail, .. }) => bad.push((at(), detail)),
                Err(err) => bad.push((at(), err.to_string())),
            }
        }
        good.sort_by_key(|(id, s)| (s.time_ns, *id));
        bad.sort();
        Ok((good, bad))
    }

    /// Every intact snapshot record, oldest first. A damaged or unreadable
    /// record is left out with a warning, so that one bad file never
    /// blocks the others; `hamn check` reports it as a problem.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (good, bad) = self.snapshot_records()?;
        for (at, why) in &bad {
            crate::log::warn(&format!(
                "snapshot record {at} is left out ({why}); run `hamn check`"
            ));
        }
        Ok(good)
    }

    pub fn read_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let name = id.to_hex();
        let at = || self.files().describe(FileKind::Snapshot, &name);
        let bytes = self
            .files()
            .read(FileKind::Snapshot, &name)?
            .ok_or_else(|| Error::io(at(), std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        if SnapshotId::of(&bytes) != id {
            return Err(Error::Corrupt {
                what: "snapshot",
                id: id.to_hex(),
                pack: at(),
                detail: "record does not match its id (damaged)".into(),
            });
        }
        Snapshot::decode(&bytes)
    }

    /// Publish a snapshot record. Callers must have made everything it
    /// references durable and indexed first: this is the commit point.
    pub fn write_snapshot(&self, _lock: &StoreLock, snap: &Snapshot) -> Result<SnapshotId> {
        let bytes = snap.encode();
        let id = SnapshotId::of(&bytes);
        self.files()
            .write_atomic(FileKind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Delete a snapshot record (its data stays until `gc`), durably.
    pub fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.files().remove(FileKind::Snapshot, &id.to_hex())?;
        Ok(())
    }
}
