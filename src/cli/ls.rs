use std::os::unix::ffi::OsStrExt;

use hamn::Result;
use hamn::snapshot::{self, Found, child_path};
use hamn::store::Store;
use hamn::tree::{Entry, Kind};

use super::{Ctx, time_ns_text};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot: id prefix, latest or latest~N
    pub snap: String,
    /// Path inside the snapshot (default /)
    pub path: Option<std::path::PathBuf>,
    /// List everything below PATH, not only its direct entries
    #[arg(short, long)]
    pub recursive: bool,
}

pub fn mode_text(e: &Entry) -> String {
    let m = e.meta.mode;
    let mut s = String::with_capacity(10);
    s.push(e.kind.letter());
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => m & 0o4000 != 0,
            5 => m & 0o2000 != 0,
            8 => m & 0o1000 != 0,
            _ => false,
        };
        let set = m & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

fn owner(name: &[u8], id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

pub fn entry_json(path: &str, e: &Entry) -> serde_json::Value {
    let m = &e.meta;
    let mut v = serde_json::json!({
        "path": path,
        "type": e.kind.name(),
        "mode": format!("{:04o}", m.mode),
        "uid": m.uid,
        "gid": m.gid,
        "user": String::from_utf8_lossy(&m.user),
        "group": String::from_utf8_lossy(&m.group),
        "size": e.size(),
        "mtime": time_ns_text(m.mtime_sec, m.mtime_nsec),
        "mtime_sec": m.mtime_sec,
        "mtime_nsec": m.mtime_nsec,
        "xattrs": m.xattrs.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
    });
    if !e.name.is_empty() && std::str::from_utf8(&e.name).is_err() {
        v["name_hex"] = hex::encode(&e.name).into();
    }
    match &e.kind {
        Kind::Symlink(t) => v["target"] = String::from_utf8_lossy(t).into(),
        Kind::CharDev(r) | Kind::BlockDev(r) => v["rdev"] = (*r).into(),
        Kind::File(c) => {
            v["chunks"] = c.chunks.len().into();
            v["encoding"] = c.encoding.name().into();
            if m.nlink > 1 {
                v["nlink"] = m.nlink.into();
            }
        }
        Kind::Dir(id) => v["tree"] = id.to_hex().into(),
        _ => {}
    }
    v
}

fn line(path: &str, e: &Entry) -> String {
    let m = &e.meta;
    let mut s = format!(
        "{} {}/{} {:>12} {} {}",
        mode_text(e),
        owner(&m.user, m.uid),
        owner(&m.group, m.gid),
        e.size(),
        chrono::DateTime::from_timestamp(m.mtime_sec, m.mtime_nsec)
            .map(|t| t
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string())
            .unwrap_or_default(),
        path
    );
    if let Kind::Symlink(t) = &e.kind {
        s.push_str(" -> ");
        s.push_str(&String::from_utf8_lossy(t));
    }
    s
}

fn walk(
    store: &Store,
    prefix: &str,
    entries: &[Entry],
    recursive: bool,
    out: &mut dyn FnMut(&str, &Entry),
) -> Result<()> {
    for e in entries {
        let p = child_path(prefix, &e.name);
        out(&p, e);
        if recursive && let Kind::Dir(id) = &e.kind {
            let t = store.read_tree(*id)?;
            walk(store, &p, &t.entries, true, out)?;
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let (id, snap) = snapshot::resolve(&store, &a.snap)?;
    let path = a
        .path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_else(|| b"/".to_vec());
    let shown = snapshot::normalized_path(&path)?;
    let mut json_rows = Vec::new();
    let json = ctx.json;
    let mut emit = |p: &str, e: &Entry| {
        if json {
            json_rows.push(entry_json(p, e));
        } else {
            println!("{}", line(p, e));
        }
    };
    match snapshot::lookup(&store, snap.root, &a.snap, &path)? {
        Found::Root(tree) => walk(&store, "/", &tree.entries, a.recursive, &mut emit)?,
        Found::Entry(e) => {
            emit(&shown, &e);
            if let Kind::Dir(tid) = &e.kind {
                let t = store.read_tree(*tid)?;
                walk(&store, &shown, &t.entries, a.recursive, &mut emit)?;
            }
        }
    }
    if json {
        ctx.print_json(&serde_json::json!({ "snapshot": id, "entries": json_rows }));
    }
    Ok(0)
}
