//! One writer per store: an flock on `STORE/lock`, plus a description of
//! the holder (pid, host, start time, command) written into the file so a
//! second writer can say who holds it. The kernel drops the flock when its
//! holder dies, so a run killed by OOM or a reboot never blocks the next.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::error::{Error, IoContext, Result};

pub const LOCK_FILE: &str = "lock";

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started: String,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} (started {}, `{}`)",
            self.pid, self.host, self.started, self.command
        )
    }
}

/// Proof that this process is the store's one writer; released on drop.
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn pid_alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    serde_json::from_str(s.trim()).ok()
}

impl StoreLock {
    /// Take the lock, waiting up to `wait` for a live holder to finish.
    pub fn acquire(store: &Path, wait: Duration, command: &str) -> Result<StoreLock> {
        let path = store.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .at(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if Instant::now() >= deadline {
                        let holder = read_holder(&mut file);
                        let text = holder
                            .as_ref()
                            .map(|h| h.to_string())
                            .unwrap_or_else(|| "another process".into());
                        return Err(match holder {
                            Some(h) if h.host == hostname() && !pid_alive(h.pid) => {
                                Error::StaleLock {
                                    path: store.to_path_buf(),
                                    holder: text,
                                }
                            }
                            _ => Error::Locked {
                                path: store.to_path_buf(),
                                holder: text,
                            },
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
        if let Some(prev) = read_holder(&mut file) {
            crate::log::info(&format!(
                "took over the lock of {}: it exited without releasing it",
                prev
            ));
        }
        let me = Holder {
            pid: std::process::id(),
            host: hostname(),
            started: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
            command: command.to_string(),
        };
        file.set_len(0).at(&path)?;
        file.rewind().at(&path)?;
        let json = serde_json::to_string(&me).unwrap_or_default();
        file.write_all(json.as_bytes()).at(&path)?;
        Ok(StoreLock { file, path })
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // An empty lock file marks a clean release; the flock goes with the fd.
        let _ = self.file.set_len(0);
        let _ = &self.path;
    }
}
