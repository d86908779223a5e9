use std::os::unix::ffi::OsStrExt;

use hamn::snapshot::{self, Found};
use hamn::tree::Kind;
use hamn::{Error, Result};

use super::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot: id prefix, latest or latest~N
    pub snap: String,
    /// Path of a file inside the snapshot
    pub path: std::path::PathBuf,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let (_, snap) = snapshot::resolve(&store, &a.snap)?;
    let path = a.path.as_os_str().as_bytes();
    let not_file = |what: &str| {
        Error::Usage(format!(
            "{} in snapshot {} is a {what}, not a file",
            a.path.display(),
            a.snap
        ))
    };
    match snapshot::lookup(&store, snap.root, &a.snap, path)? {
        Found::Root(_) => Err(not_file("dir")),
        Found::Entry(e) => match &e.kind {
            Kind::File(c) => {
                // File bytes go to stdout as they are, even with --json.
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                hamn::content::ContentReader::new(&store).cat(c, &mut out)?;
                let _ = ctx;
                Ok(0)
            }
            other => Err(not_file(other.name())),
        },
    }
}
