//! Events and progress go to stderr: plain lines on a terminal, timestamped
//! lines otherwise (cron, systemd), nothing but errors with `-q`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(1);

pub const QUIET: u8 = 0;
pub const NORMAL: u8 = 1;
pub const VERBOSE: u8 = 2;

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Whether progress bars may be drawn: stderr is a terminal and not -q.
pub fn progress_enabled() -> bool {
    level() >= NORMAL && std::io::stderr().is_terminal()
}

fn emit(msg: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{msg}");
    } else {
        eprintln!("{} {msg}", chrono::Local::now().format("%Y-%m-%dT%H:%M:%S"));
    }
}

pub fn info(msg: &str) {
    if level() >= NORMAL {
        emit(msg);
    }
}

pub fn verbose(msg: &str) {
    if level() >= VERBOSE {
        emit(msg);
    }
}

pub fn warn(msg: &str) {
    if level() >= NORMAL {
        emit(&format!("warning: {msg}"));
    }
}
