//! Crash points for tests: when the environment variable `HAMN_FAILPOINT`
//! is `NAME` or `NAME:N`, the process kills itself with SIGKILL the first
//! (or N-th) time it reaches `failpoint("NAME")`; with `stop:NAME` it
//! stops itself (SIGSTOP) there instead, so a test can run something else
//! while it holds whatever it holds, then continue it (`stop:NAME:every`:
//! each time it gets there). Crash-safety tests use
//! this to stop a run exactly between two steps of a commit protocol. A
//! real SIGKILL: nothing is flushed or cleaned up on the way out.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

static TARGET: OnceLock<Option<(String, u64, bool)>> = OnceLock::new();
static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

fn target() -> &'static Option<(String, u64, bool)> {
    TARGET.get_or_init(|| {
        let v = std::env::var("HAMN_FAILPOINT").ok()?;
        let (v, stop) = match v.strip_prefix("stop:") {
            Some(rest) => (rest.to_string(), true),
            None => (v, false),
        };
        match v.rsplit_once(':') {
            // 0: every time.
            Some((name, "every")) if stop => Some((name.to_string(), 0, stop)),
            Some((name, n)) if n.parse::<u64>().is_ok() => {
                Some((name.to_string(), n.parse().unwrap_or(1), stop))
            }
            _ => Some((v, 1, stop)),
        }
    })
}

pub fn failpoint(name: &str) {
    let Some((want, nth, stop)) = target() else {
        return;
    };
    if want != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
    let n = hits
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert(0);
    *n += 1;
    if *n == *nth || *nth == 0 {
        let sig = if *stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::KILL
        };
        let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
    }
}
