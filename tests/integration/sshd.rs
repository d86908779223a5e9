//! A real OpenSSH server on 127.0.0.1 for push tests: its own host key,
//! config and authorized_keys in a temp dir, stopped (with its sessions)
//! when the fixture is dropped. Needs /usr/sbin/sshd and ssh-keygen; fails
//! loudly without them.

#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn keygen(path: &Path) {
    keygen_of_type(path, "ed25519");
}

fn keygen_of_type(path: &Path, key_type: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", key_type, "-N", "", "-C", "hamn-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian package openssh-client) is needed");
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Start sshd; `key_options` prefixes the client key in authorized_keys
    /// (e.g. a forced command).
    pub fn start(key_options: &str) -> Sshd {
        Sshd::start_with(key_options, "")
    }

    /// Start sshd with `extra` appended to its config (e.g. `Ciphers ...`).
    pub fn start_with(key_options: &str, extra: &str) -> Sshd {
        require_root();
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install Debian's openssh-server (scripts/test.sh does)"
        );
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("hamn-sshd-")
            .tempdir()
            .expect("tmp");
        let d = dir.path();
        keygen(&d.join("host_key"));
        // A second host key, of a type a client prefers less
        // (known_hosts below lists only the first).
        keygen_of_type(&d.join("host_key_ecdsa"), "ecdsa");
        keygen(&d.join("client_key"));
        let pubkey = fs::read_to_string(d.join("client_key.pub")).unwrap();
        let line = if key_options.is_empty() {
            pubkey
        } else {
            format!("{key_options} {pubkey}")
        };
        fs::write(d.join("authorized_keys"), line).unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nHostKey {d}/host_key_ecdsa\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 50\n{extra}\n",
                d = d.display()
            ),
        )
        .unwrap();
        let hostpub = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut fields = hostpub.split_whitespace();
        let (kt, kb) = (fields.next().unwrap(), fields.next().unwrap());
        fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kt} {kb}\n"),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let s = Sshd { dir, port, child };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, store: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, store.display())
    }

    /// `--to URL --identity K --known-hosts F --remote-bin BIN`
    pub fn args(&self, store: &Path) -> Vec<String> {
        vec![
            "--to".into(),
            self.url(store),
            "--identity".into(),
            self.path("client_key").display().to_string(),
            "--known-hosts".into(),
            self.path("known_hosts").display().to_string(),
            "--remote-bin".into(),
            BIN.into(),
        ]
    }
}

impl Sshd {
    /// Cut every open connection (kill -9 the per-connection sshd processes).
    pub fn drop_connections(&self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Stop the listener and every session it started.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
