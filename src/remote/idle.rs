//! An end to `hamn serve` sessions whose peer went silent. A primary that
//! dies mid-push (power, kernel panic, a cut link) sends no FIN: without
//! this, `serve` would sit in a read of its stdin, holding the store lock,
//! until sshd noticed the dead connection, which by default is never. A
//! standby being failed over needs that lock.
//!
//! Only time spent *blocked* on the peer counts: a read of stdin that has
//! not returned, or a write to stdout that has not. Time the server spends
//! working (deploying a snapshot, running gc) does not.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the current blocking call on the peer began (milliseconds since
/// the watch started, plus one), or 0 while none is in progress.
#[derive(Clone)]
pub struct Watch {
    since: Arc<AtomicU64>,
    start: Instant,
}

impl Watch {
    /// Start the watchdog: once a read or write of a [`Watched`] stream has
    /// been blocked for `limit`, `on_expiry` runs on the watchdog's thread
    /// (it should end the process).
    pub fn start(limit: Duration, on_expiry: impl FnOnce(Duration) + Send + 'static) -> Watch {
        let w = Watch {
            since: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
        };
        let seen = w.clone();
        let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(tick);
                let since = seen.since.load(Ordering::Relaxed);
                if since == 0 {
                    continue;
                }
                let blocked = seen.now_ms().saturating_sub(since - 1);
                if Duration::from_millis(blocked) >= limit {
                    on_expiry(Duration::from_millis(blocked));
                    return;
                }
            }
        });
        w
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn blocked<T>(&self, call: impl FnOnce() -> T) -> T {
        self.since.store(self.now_ms() + 1, Ordering::Relaxed);
        let out = call();
        self.since.store(0, Ordering::Relaxed);
        out
    }

    /// `inner` with each of its reads or writes watched.
    pub fn wrap<T>(&self, inner: T) -> Watched<T> {
        Watched {
            inner,
            watch: self.clone(),
        }
    }
}

pub struct Watched<T> {
    inner: T,
    watch: Watch,
}

impl<T: Read> Read for Watched<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let inner = &mut self.inner;
        self.watch.blocked(|| inner.read(buf))
    }
}

impl<T: Write> Write for Watched<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let inner = &mut self.inner;
        self.watch.blocked(|| inner.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let inner = &mut self.inner;
        self.watch.blocked(|| inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A reader that blocks until told to go on, then yields one byte.
    struct Gate(mpsc::Receiver<()>);

    impl Read for Gate {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            buf[0] = 7;
            Ok(1)
        }
    }

    #[test]
    fn only_time_blocked_on_the_peer_counts() {
        let (fired_tx, fired) = mpsc::channel();
        let w = Watch::start(Duration::from_millis(300), move |d| {
            let _ = fired_tx.send(d);
        });
        let (go, gate) = mpsc::channel();
        let mut r = w.wrap(Gate(gate));
        // Busy (not in a read) for longer than the limit: no expiry.
        go.send(()).unwrap();
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert!(fired.try_recv().is_err(), "fired while not blocked");
        // Reads that return in time: no expiry either.
        for _ in 0..4 {
            let go = go.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                go.send(()).unwrap();
            });
            r.read_exact(&mut b).unwrap();
        }
        assert!(fired.try_recv().is_err(), "fired on reads that returned");
        // A read that never returns: expiry, after at least the limit.
        std::thread::spawn(move || {
            let _ = r.read_exact(&mut b);
        });
        let d = fired
            .recv_timeout(Duration::from_secs(10))
            .expect("no expiry for a blocked read");
        assert!(d >= Duration::from_millis(300), "{d:?}");
        drop(go);
    }
}
