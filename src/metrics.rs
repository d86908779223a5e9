//! The Prometheus textfile `hamn sync` leaves for node_exporter's textfile
//! collector: written to a temp file beside the target and renamed over
//! it, so the collector never reads half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};

/// One gauge: name, help text, value.
pub struct Gauge<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub value: f64,
}

pub fn render(gauges: &[Gauge<'_>]) -> String {
    let mut out = String::new();
    for g in gauges {
        let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
        let _ = writeln!(out, "# TYPE {} gauge", g.name);
        let _ = writeln!(out, "{} {}", g.name, g.value);
    }
    out
}

/// Replace `path` with the rendered gauges, atomically.
pub fn write_textfile(path: &Path, gauges: &[Gauge<'_>]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".hamn-metrics")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(render(gauges).as_bytes()).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .at(tmp.path())?;
    }
    tmp.persist(path)
        .map_err(|e| crate::Error::io(path, e.error))?;
    Ok(())
}
