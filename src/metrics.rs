//! The Prometheus textfile `hamn sync` leaves for node_exporter's textfile
//! collector: written to a temp file beside the target and renamed over
//! it, so the collector never reads half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};

/// One gauge sample: name, help text, value, and the node it is about
/// (the `node` label) for per-node gauges.
pub struct Gauge<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub value: f64,
    pub node: Option<String>,
}

impl<'a> Gauge<'a> {
    pub fn new(name: &'a str, help: &'a str, value: f64) -> Self {
        Gauge {
            name,
            help,
            value,
            node: None,
        }
    }

    /// The same gauge, about one node. Node names are letters, digits,
    /// `-`, `_` and `.` (checked with the config), so need no escaping.
    pub fn node(mut self, name: &str) -> Self {
        self.node = Some(name.to_string());
        self
    }
}

/// The text format: each gauge's HELP and TYPE once, then its samples,
/// in the order the gauges first appear.
pub fn render(gauges: &[Gauge<'_>]) -> String {
    let mut out = String::new();
    let mut names: Vec<&str> = Vec::new();
    for g in gauges {
        if !names.contains(&g.name) {
            names.push(g.name);
        }
    }
    for name in names {
        let mut samples = gauges.iter().filter(|g| g.name == name).peekable();
        if let Some(first) = samples.peek() {
            let _ = writeln!(out, "# HELP {name} {}", first.help);
            let _ = writeln!(out, "# TYPE {name} gauge");
        }
        for g in samples {
            match &g.node {
                Some(n) => {
                    let _ = writeln!(out, "{name}{{node=\"{n}\"}} {}", g.value);
                }
                None => {
                    let _ = writeln!(out, "{name} {}", g.value);
                }
            }
        }
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
