//! The SSH transport (the only module that uses ssh2): connect, check the
//! standby's host key against known_hosts (an unknown or changed key is an
//! error, never accepted), authenticate by key (a file, else the agent),
//! and run `hamn serve` on the standby. The protocol runs over the
//! channel's stdin/stdout.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh2::{CheckResult, HostKeyType, KnownHostFileKind, MethodType, Session};

use crate::error::{Error, Result};
use crate::remote::SshTarget;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for any one read or write on an established session
/// unless the config says otherwise (`standby.io_timeout`). A standby
/// whose `hamn serve` died while the client was writing is noticed only
/// through this limit (libssh2 keeps waiting for window space).
pub const DEFAULT_IO_TIMEOUT_SECS: u64 = 120;
/// Longest wait for the answer to one of the standby's long steps
/// (checking a new snapshot, deploying, retention) unless the config says
/// otherwise (`standby.step_timeout`; 0: no limit). Far above any sane
/// deployment, so that only a standby that hangs (a hung NFS mount under
/// its root, a hook that never returns) runs into it.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 6 * 3600;

#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// Private key file; without one the SSH agent is asked.
    pub identity: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// The hamn binary on the standby (default `hamn`).
    pub remote_bin: Option<String>,
    /// Seconds any one read or write may wait (None: the default).
    pub io_timeout: Option<u64>,
    /// Seconds the answer to a long step may take (None: the default,
    /// 0: no limit).
    pub step_timeout: Option<u64>,
}

pub struct SshConnection {
    session: Session,
    io_timeout_ms: u32,
    /// 0: no limit.
    step_timeout_ms: u32,
    /// Shared with the writing stream, which looks at it when a write
    /// stalls ([`StallAwareWriter`]).
    channel: Arc<Mutex<ssh2::Channel>>,
    remote_bin: String,
    peer: String,
}

/// libssh2 waits for the standby's SSH window however long the limit is,
/// even after the standby closed the channel: sshd stops opening the
/// window once the far end's `hamn serve` has exited (after an error it
/// reported, such as a full disk), and libssh2 does not look at the close
/// while it waits. This writer waits in one-second slices instead, and
/// between them gives up as soon as the standby has sent something on
/// stdout (the client reads no replies while it streams blobs, so that is
/// an error message; stderr is dropped once the session runs,
/// [`SshConnection::started`]) or closed its side; the caller then reads
/// why.
struct StallAwareWriter {
    stream: ssh2::Stream,
    channel: Arc<Mutex<ssh2::Channel>>,
    session: Session,
}

impl StallAwareWriter {
    const SLICE_MS: u32 = 1000;

    fn peer_stopped(&self) -> bool {
        let ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        ch.eof() || ch.read_window().available > 0
    }
}

impl Write for StallAwareWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let limit_ms = self.session.timeout();
        let started = std::time::Instant::now();
        self.session.set_timeout(if limit_ms == 0 {
            Self::SLICE_MS
        } else {
            limit_ms.min(Self::SLICE_MS)
        });
        let r = loop {
            match self.stream.write(buf) {
                // Nothing of `buf` was taken: libssh2 keeps a packet it
                // began and goes on with it when called with the same bytes.
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    if self.peer_stopped() {
                        break Err(std::io::Error::new(
                            std::io::ErrorKind::BrokenPipe,
                            "the standby stopped reading",
                        ));
                    }
                    if limit_ms != 0 && started.elapsed().as_millis() >= u128::from(limit_ms) {
                        break Err(e);
                    }
                }
                r => break r,
            }
        };
        self.session.set_timeout(limit_ms);
        r
    }

    /// Nothing to do: libssh2 sends what it is given at once. (ssh2's
    /// `Stream::flush` is `libssh2_channel_flush_ex`, which throws away
    /// unread *incoming* data, such as an error message of the standby.)
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn default_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".ssh/known_hosts")
}

/// A known_hosts line that names the standby.
struct KnownLine {
    number: usize,
    key_type: String,
    /// The line names the host without a port (which libssh2, like
    /// OpenSSH, also takes for a host on another port).
    bare: bool,
}

/// The lines of known_hosts `text` that name this host, plain or hashed
/// (matched by libssh2 itself, one line at a time). Lines libssh2 cannot
/// read (markers, unknown key types) are passed over, as it passes over
/// them when it checks.
fn known_host_lines(sess: &Session, text: &str, host: &str, port: u16) -> Vec<KnownLine> {
    // Any key: a line for the host answers Mismatch, another NotFound.
    let names = |kh: &ssh2::KnownHosts, port: u16| {
        matches!(
            kh.check_port(host, port, b"?"),
            CheckResult::Match | CheckResult::Mismatch
        )
    };
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with('@') {
                return None;
            }
            let key_type = l.split_whitespace().nth(1)?.to_string();
            let mut kh = sess.known_hosts().ok()?;
            kh.read_str(l, KnownHostFileKind::OpenSSH).ok()?;
            names(&kh, port).then(|| KnownLine {
                number: i + 1,
                key_type,
                bare: port == 22 || names(&kh, 22),
            })
        })
        .collect()
}

/// The host key algorithms to offer, those whose keys known_hosts holds
/// for the host first, then the rest of what libssh2 supports (as
/// OpenSSH orders them). libssh2 compares the server's key with every
/// entry for the host whatever its type, so a known_hosts that lists only
/// an ECDSA or RSA key of a server that also has an Ed25519 one would
/// otherwise read as a changed key. None: known_hosts names no usable key.
fn host_key_methods(lines: &[KnownLine], supported: &[&str]) -> Option<String> {
    const ORDER: [(&str, &str); 8] = [
        ("ssh-ed25519", "ssh-ed25519"),
        ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"),
        ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
        ("ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"),
        ("ssh-rsa", "rsa-sha2-512"),
        ("ssh-rsa", "rsa-sha2-256"),
        ("ssh-rsa", "ssh-rsa"),
        ("ssh-dss", "ssh-dss"),
    ];
    let mut methods: Vec<&str> = ORDER
        .iter()
        .filter(|(key_type, method)| {
            supported.contains(method) && lines.iter().any(|l| l.key_type == *key_type)
        })
        .map(|(_, method)| *method)
        .collect();
    if methods.is_empty() {
        return None;
    }
    for m in supported {
        if !methods.contains(m) {
            methods.push(m);
        }
    }
    Some(methods.join(","))
}

fn ssh_err(peer: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote {
        peer: peer.to_string(),
        message: format!("{what}: {e}"),
    }
}

impl SshConnection {
    pub fn open(t: &SshTarget, o: &SshOptions, root: &Path) -> Result<SshConnection> {
        let peer = format!("{}@{}:{}", t.user, t.host, t.port);
        let addrs: Vec<_> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| ssh_err(&peer, "cannot resolve the host name", e))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            ssh_err(
                &peer,
                "cannot connect (check the host, the port and that sshd runs there)",
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "no address".into()),
            )
        })?;
        // Requests are small frames waiting for small replies: without
        // TCP_NODELAY each round trip can wait on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let mut sess = Session::new().map_err(|e| ssh_err(&peer, "ssh session", e))?;
        sess.set_tcp_stream(tcp);
        let kh_path = o.known_hosts.clone().unwrap_or_else(default_known_hosts);
        // Unreadable: reported with its remedy after the handshake.
        let kh_text = std::fs::read_to_string(&kh_path).unwrap_or_default();
        let kh_lines = known_host_lines(&sess, &kh_text, &t.host, t.port);
        let supported = sess.supported_algs(MethodType::HostKey).unwrap_or_default();
        if let Some(methods) = host_key_methods(&kh_lines, &supported) {
            // Best effort: libssh2 refuses only a list it supports none of.
            let _ = sess.method_pref(MethodType::HostKey, &methods);
        }
        // libssh2 takes an int of milliseconds.
        let millis = |secs: u64| secs.saturating_mul(1000).min(i32::MAX as u64) as u32;
        let io_timeout_ms = millis(o.io_timeout.unwrap_or(DEFAULT_IO_TIMEOUT_SECS).max(1));
        sess.set_timeout(io_timeout_ms);
        let step_timeout_ms = millis(o.step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT_SECS));
        sess.handshake()
            .map_err(|e| ssh_err(&peer, "ssh handshake failed", e))?;
        crate::log::verbose(&format!(
            "ssh: {peer}: cipher {} out, {} in",
            sess.methods(MethodType::CryptCs).unwrap_or("?"),
            sess.methods(MethodType::CryptSc).unwrap_or("?")
        ));

        let (key, key_type) = sess
            .host_key()
            .ok_or_else(|| ssh_err(&peer, "host key", "the server sent none"))?;
        let mut kh = sess
            .known_hosts()
            .map_err(|e| ssh_err(&peer, "known_hosts", e))?;
        let keyscan = format!(
            "ssh-keyscan -p {} {} >> {}",
            t.port,
            t.host,
            kh_path.display()
        );
        kh.read_file(&kh_path, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                ssh_err(
                    &peer,
                    &format!("cannot read known_hosts {}", kh_path.display()),
                    format!("{e}; after checking the standby's key fingerprint, add it: {keyscan}"),
                )
            })?;
        match kh.check_port(&t.host, t.port, key) {
            CheckResult::Match => {}
            CheckResult::NotFound => {
                return Err(ssh_err(
                    &peer,
                    "host key unknown",
                    format!(
                        "{} has no key for this host; after checking its fingerprint, add it: {keyscan}",
                        kh_path.display()
                    ),
                ));
            }
            CheckResult::Mismatch => {
                let type_name = match key_type {
                    HostKeyType::Rsa => "ssh-rsa",
                    HostKeyType::Dss => "ssh-dss",
                    HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
                    HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
                    HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
                    HostKeyType::Ed25519 => "ssh-ed25519",
                    HostKeyType::Unknown => "",
                };
                // The entries of the key type the standby showed, else all of the host's.
                let of_type: Vec<&KnownLine> = kh_lines
                    .iter()
                    .filter(|l| l.key_type == type_name)
                    .collect();
                let named: Vec<&KnownLine> = if of_type.is_empty() {
                    kh_lines.iter().collect()
                } else {
                    of_type
                };
                let numbers: Vec<String> = named.iter().map(|l| l.number.to_string()).collect();
                let lines = match numbers.len() {
                    0 => String::new(),
                    1 => format!(" line {}", numbers[0]),
                    _ => format!(" lines {}", numbers.join(", ")),
                };
                // As ssh-keygen names the host in the entry: bare for port
                // 22 or when the entry gives no port, else [host]:port.
                let name = if t.port == 22 || named.first().is_some_and(|l| l.bare) {
                    t.host.clone()
                } else {
                    format!("[{}]:{}", t.host, t.port)
                };
                return Err(ssh_err(
                    &peer,
                    "HOST KEY CHANGED",
                    format!(
                        "the key differs from {}{lines}; if the standby was reinstalled, remove that entry \
                         (ssh-keygen -R '{name}' -f {}) and add the new key after checking it",
                        kh_path.display(),
                        kh_path.display()
                    ),
                ));
            }
            CheckResult::Failure => {
                return Err(ssh_err(
                    &peer,
                    "host key check",
                    "libssh2 could not check the key",
                ));
            }
        }

        let auth = match &o.identity {
            Some(id) => sess
                .userauth_pubkey_file(&t.user, None, id, None)
                .map_err(|e| {
                    ssh_err(
                        &peer,
                        "authentication refused",
                        format!(
                            "{e}; check that {}.pub is in {}'s authorized_keys on the standby",
                            id.display(),
                            t.user
                        ),
                    )
                }),
            None => sess.userauth_agent(&t.user).map_err(|e| {
                ssh_err(
                    &peer,
                    "authentication refused",
                    format!("{e}; no --identity given and the SSH agent could not log in"),
                )
            }),
        };
        auth?;
        if !sess.authenticated() {
            return Err(ssh_err(
                &peer,
                "authentication refused",
                "not authenticated",
            ));
        }
        let mut channel = sess
            .channel_session()
            .map_err(|e| ssh_err(&peer, "cannot open a channel", e))?;
        let remote_bin = o.remote_bin.clone().unwrap_or_else(|| "hamn".into());
        let mut cmd = format!("{} serve --store {}", quote(&remote_bin), quote(&t.path));
        if root != Path::new("/") {
            cmd.push_str(&format!(" --root {}", quote(&root.to_string_lossy())));
        }
        channel
            .exec(&cmd)
            .map_err(|e| ssh_err(&peer, "cannot start hamn serve", e))?;
        Ok(SshConnection {
            session: sess,
            io_timeout_ms,
            step_timeout_ms,
            channel: Arc::new(Mutex::new(channel)),
            remote_bin,
            peer,
        })
    }

    /// Once `hamn serve` has answered, its stderr says nothing the client
    /// reads (it is read only when the start fails, [`Self::diagnose`]):
    /// drop it, so that a log line there neither waits unread in the
    /// channel nor looks like an answer to [`StallAwareWriter`].
    pub fn started(&self) {
        let _ = self
            .channel()
            .handle_extended_data(ssh2::ExtendedData::Ignore);
    }

    fn channel(&self) -> std::sync::MutexGuard<'_, ssh2::Channel> {
        self.channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait up to the step limit (`true`) for requests whose work on the
    /// standby may take long (a first full deployment), or with the usual
    /// per-read limit again (`false`).
    pub fn long_wait(&self, on: bool) {
        self.session.set_timeout(if on {
            self.step_timeout_ms
        } else {
            self.io_timeout_ms
        });
    }

    /// After a request was given up: closing the channel waits only a
    /// second for a standby that is still busy with it.
    pub fn give_up(&self) {
        self.session.set_timeout(1000);
    }

    /// The limit on any one read or write (`standby.io_timeout`).
    pub fn io_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.io_timeout_ms.into())
    }

    /// The step limit, if any.
    pub fn step_timeout(&self) -> Option<std::time::Duration> {
        (self.step_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(self.step_timeout_ms.into()))
    }

    pub fn streams(&self) -> (Box<dyn Read + Send>, Box<dyn Write + Send>) {
        let (reading, writing) = {
            let channel = self.channel();
            (channel.stream(0), channel.stream(0))
        };
        (
            Box::new(reading),
            Box::new(StallAwareWriter {
                stream: writing,
                channel: self.channel.clone(),
                session: self.session.clone(),
            }),
        )
    }

    /// Why the remote end did not answer: its exit status and stderr.
    pub fn diagnose(self) -> Option<Error> {
        // A remote command that failed to start has said so already; one
        // that hangs is not waited for again, for each step below.
        self.session.set_timeout(5000);
        let mut channel = self.channel();
        let _ = channel.wait_eof();
        let mut err = String::new();
        let _ = channel.stderr().read_to_string(&mut err);
        let _ = channel.wait_close();
        let status = channel.exit_status().ok()?;
        drop(channel);
        // The line that says what went wrong, not a closing hint such as
        // clap's "For more information, try '--help'.".
        let lines: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let err = lines
            .iter()
            .find(|l| l.contains("error:"))
            .or(lines.first())
            .copied()
            .unwrap_or("")
            .to_string();
        let message = match status {
            127 => format!(
                "`{}` was not found on the standby ({err}); install hamn there or pass --remote-bin PATH",
                self.remote_bin
            ),
            126 => format!(
                "`{}` on the standby is not executable ({err})",
                self.remote_bin
            ),
            0 => return None,
            s => format!("hamn serve exited with status {s}: {err}"),
        };
        Some(Error::Remote {
            peer: self.peer,
            message,
        })
    }

    pub fn finish(self) -> Result<()> {
        let mut channel = self.channel();
        let _ = channel.send_eof();
        let _ = channel.wait_eof();
        let _ = channel.wait_close();
        Ok(())
    }
}
