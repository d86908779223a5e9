//! Push through a real sshd on loopback: only missing data travels, the
//! standby verifies and commits whole snapshots, host keys are checked,
//! interrupted pushes resume, and errors are one clear line.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::Sshd;

/// A primary store with a snapshot of a generated tree, and an empty standby store.
fn primary_and_standby(env: &Env, files: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = env.path("src");
    make_tree(&src, files, 17);
    for i in 0..3 {
        write(
            &src.join(format!("pool/p{i}.rpm")),
            &bytes(1_500_000, 300 + i),
        );
    }
    env.snapshot(&[&src]);
    let standby = env.path("standby");
    let out = Command::new(BIN)
        .arg("--store")
        .arg(&standby)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    (src, standby)
}

/// Push with the fixture's flags, `extra` flag/value pairs replacing them.
fn push(env: &Env, sshd: &Sshd, standby: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = sshd.args(standby);
    let mut rest = Vec::new();
    let mut it = extra.iter();
    while let Some(flag) = it.next() {
        match args.iter().position(|a| a == flag) {
            Some(i) if flag.starts_with("--") && *flag != "--verify" => {
                args[i + 1] = it.next().expect("value").to_string();
            }
            _ => rest.push(flag.to_string()),
        }
    }
    let mut a: Vec<String> = vec!["--json".into(), "push".into()];
    a.extend(args);
    a.extend(rest);
    env.cmd().args(&a).output().unwrap()
}

/// `n` images of `mib` MiB of seeded data under src/images, then a snapshot.
fn add_images(env: &Env, src: &Path, n: u64, mib: usize, seed: u64) {
    for i in 0..n {
        write(
            &src.join(format!("images/{i}.img")),
            &bytes(mib * 1024 * 1024, seed + i),
        );
    }
    env.snapshot(&[src]);
}

/// Start a push to the fixture's standby in the background.
fn spawn_push(env: &Env, sshd: &Sshd, standby: &Path, err: Stdio) -> std::process::Child {
    spawn_push_with(env, sshd, standby, err, None)
}

/// The same, with a config file (e.g. a short standby.io_timeout).
fn spawn_push_with(
    env: &Env,
    sshd: &Sshd,
    standby: &Path,
    err: Stdio,
    config: Option<&Path>,
) -> std::process::Child {
    let mut cmd = env.cmd();
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("push")
        .args(sshd.args(standby))
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn pushed(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(code(out), 0, "push failed: {}", stderr(out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["push"].clone()
}

/// The standby's newest snapshot restores to exactly `src`.
fn assert_standby_restores(env: &Env, sb: &Path, src: &Path, name: &str) {
    let to = env.path(name);
    let out = standby(
        sb,
        &[
            "restore",
            "latest",
            src.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(src, &to.join(src.strip_prefix("/").unwrap()));
}

/// `[standby]` lines that reach the store `sb` through the fixture's sshd.
fn ssh_standby(sshd: &Sshd, sb: &Path) -> String {
    format!(
        "url = '{}'\nidentity = '{}'\nknown_hosts = '{}'\nremote_bin = '{BIN}'\n",
        sshd.url(sb),
        sshd.path("client_key").display(),
        sshd.path("known_hosts").display(),
    )
}

/// Write the primary's config, hamn.toml: the env's store, `paths`, a
/// `[standby]` table of `standby` lines, then `rest` (more tables).
fn write_config(env: &Env, paths: &[&Path], standby: &str, rest: &str) -> std::path::PathBuf {
    let paths: Vec<String> = paths.iter().map(|p| format!("'{}'", p.display())).collect();
    let cfg = env.path("hamn.toml");
    fs::write(
        &cfg,
        format!(
            "store = '{}'\npaths = [{}]\n[standby]\n{standby}{rest}",
            env.store().display(),
            paths.join(", ")
        ),
    )
    .unwrap();
    cfg
}

/// `hamn [extra] sync` with the config `cfg`, as cron runs it.
fn run_sync(cfg: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .args(extra)
        .arg("sync")
        .output()
        .unwrap()
}

/// `hamn --config CFG --json sync`, which must succeed; its JSON.
fn sync(cfg: &Path) -> serde_json::Value {
    let out = run_sync(cfg, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    one_json(&out)
}

fn standby_snapshots(store: &Path) -> usize {
    let out = standby(store, &["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshots"].as_array().unwrap().len()
}

#[test]
fn push_over_ssh_sends_only_what_is_missing() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 300);
    let first = pushed(&push(&env, &sshd, &sb, &[]));
    assert_eq!(first["snapshots_sent"].as_array().unwrap().len(), 1);
    let full = first["bytes_sent"].as_u64().unwrap();
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);

    // The standby's copy restores to the source exactly.
    assert_standby_restores(&env, &sb, &src, "from-standby");

    // Nothing new: almost nothing travels.
    let again = pushed(&push(&env, &sshd, &sb, &[]));
    assert_eq!(again["blobs_sent"], 0);
    assert!(again["bytes_sent"].as_u64().unwrap() < 200, "{again}");

    // A small change: a small push, a few trees walked.
    write(&src.join("d2/s1/f2.txt"), b"changed tonight");
    env.snapshot(&[&src]);
    let night = pushed(&push(&env, &sshd, &sb, &[]));
    assert_eq!(night["snapshots_sent"].as_array().unwrap().len(), 1);
    assert!(
        night["bytes_sent"].as_u64().unwrap() < full / 20,
        "{night} vs {full}"
    );
    assert!(night["trees_walked"].as_u64().unwrap() <= 12, "{night}");
    assert_eq!(standby_snapshots(&sb), 2);
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
}

/// The ciphers `push -v` says it negotiated, out and in.
fn negotiated_ciphers(out: &std::process::Output) -> (String, String) {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains(": cipher "))
        .unwrap_or_else(|| panic!("no cipher line in {err}"));
    let rest = line.split(": cipher ").nth(1).unwrap();
    let mut w = rest.split_whitespace();
    let out_c = w.next().unwrap().to_string();
    assert_eq!(w.next(), Some("out,"), "{line}");
    (out_c, w.next().unwrap().to_string())
}

#[test]
fn chacha20_is_chosen_where_offered_and_a_standby_restricted_to_other_ciphers_still_works() {
    let env = Env::new();
    let (src, sb) = primary_and_standby(&env, 40);
    // OpenSSH's default list offers both AES-GCM and ChaCha20-Poly1305;
    // libssh2's ChaCha20 costs the primary the least CPU per byte
    // (docs/performance.md, "The SSH path").
    let sshd = Sshd::start("");
    let out = push(&env, &sshd, &sb, &["-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = "chacha20-poly1305@openssh.com";
    assert_eq!(negotiated_ciphers(&out), (want.into(), want.into()));
    drop(sshd);

    // A standby whose sshd allows only other ciphers is still reached.
    for only in ["aes128-ctr", "aes256-gcm@openssh.com"] {
        let sb2 = env.path(&format!("standby-{only}"));
        assert_eq!(code(&standby(&sb2, &["init"])), 0);
        let sshd = Sshd::start_with("", &format!("Ciphers {only}"));
        let out = push(&env, &sshd, &sb2, &["-v"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(negotiated_ciphers(&out), (only.into(), only.into()));
        assert_standby_restores(&env, &sb2, &src, &format!("from-{only}"));
    }
}

#[test]
fn a_changed_image_travels_as_a_delta_against_its_old_version() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 50);
    let img = src.join("images/rootimg.cpio.gz");
    let old = bytes(6 * 1024 * 1024, 77);
    write(&img, &old);
    env.snapshot(&[&src]);
    pushed(&push(&env, &sshd, &sb, &[]));
    let sb_no_delta = env.path("standby-no-delta");
    copy_tree(&sb, &sb_no_delta);

    let new = repacked(&old);
    write(&img, &new);
    env.snapshot(&[&src]);
    let night = pushed(&push(&env, &sshd, &sb, &[]));
    let deltas = night["deltas_sent"].as_u64().unwrap();
    assert!(deltas >= 3, "{night}");
    assert!(
        night["bytes_sent"].as_u64().unwrap() < new.len() as u64 / 10,
        "{night}"
    );
    // Each new chunk was compressed against the old chunks at its own
    // place, not against all within reach (2 MiB on each side).
    assert!(
        night["delta_base_bytes"].as_u64().unwrap() < deltas * 2 * 1024 * 1024,
        "{night}"
    );
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_standby_restores(&env, &sb, &src, "from-standby");

    // Without deltas the whole image travels.
    let whole = pushed(&push(&env, &sshd, &sb_no_delta, &["--no-delta"]));
    assert_eq!(whole["deltas_sent"], 0, "{whole}");
    assert!(
        whole["bytes_sent"].as_u64().unwrap() > new.len() as u64,
        "{whole}"
    );
    assert_standby_restores(&env, &sb_no_delta, &src, "from-standby-no-delta");
}

#[test]
fn host_keys_are_checked_never_accepted() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (_src, sb) = primary_and_standby(&env, 10);
    // A push with known_hosts `text` must be refused; its message.
    let refused = |name: &str, text: &str, hashed: bool| -> String {
        let kh = env.path(name);
        fs::write(&kh, text).unwrap();
        if hashed {
            hash_known_hosts(&kh);
        }
        let out = push(&env, &sshd, &sb, &["--known-hosts", kh.to_str().unwrap()]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        stderr(&out)
    };
    // Unknown: an empty known_hosts.
    let err = refused("empty_known_hosts", "", false);
    assert!(
        err.contains("host key unknown") && err.contains("ssh-keyscan"),
        "{err}"
    );
    // Changed: another key under the same name.
    let other = Sshd::start("");
    let kh = fs::read_to_string(other.path("known_hosts")).unwrap();
    let wrong = kh.replace(&other.port.to_string(), &sshd.port.to_string());
    let err = refused("wrong_known_hosts", &wrong, false);
    assert!(
        err.contains("HOST KEY CHANGED")
            && err.contains("line 1")
            && err.contains(&format!("ssh-keygen -R '[127.0.0.1]:{}'", sshd.port)),
        "{err}"
    );
    // The same, hashed (HashKnownHosts yes): the line is still named.
    let err = refused("hashed_known_hosts", &wrong, true);
    assert!(
        err.contains("HOST KEY CHANGED") && err.contains("line 1"),
        "{err}"
    );
    // An entry without a port is taken for any port: the hint names it so.
    let bare = kh.replace(&format!("[127.0.0.1]:{}", other.port), "127.0.0.1");
    let err = refused("bare_known_hosts", &bare, false);
    assert!(
        err.contains("HOST KEY CHANGED") && err.contains("ssh-keygen -R '127.0.0.1'"),
        "{err}"
    );
    // Only a key of a type the standby does not have (RSA): the standby
    // shows one of its own, which is a changed key, not a failed handshake.
    let rsa = env.path("rsa_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    let rsa_pub = fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let mut f = rsa_pub.split_whitespace();
    let (kt, kb) = (f.next().unwrap(), f.next().unwrap());
    let err = refused(
        "rsa_only_known_hosts",
        &format!("[127.0.0.1]:{} {kt} {kb}\n", sshd.port),
        false,
    );
    assert!(
        err.contains("HOST KEY CHANGED") && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(standby_snapshots(&sb), 0);
}

/// Hash a known_hosts file in place, as `HashKnownHosts yes` writes it.
fn hash_known_hosts(file: &Path) {
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read_to_string(file).unwrap().contains("|1|"));
}

#[test]
fn a_known_hosts_with_only_another_key_type_of_the_standby_is_enough() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (_src, sb) = primary_and_standby(&env, 10);
    // Only the standby's ECDSA key, hashed, after a comment and another
    // host's line: the standby also has an Ed25519 key, which a client
    // prefers, and which must then not be taken for a changed key.
    let ecdsa = fs::read_to_string(sshd.path("host_key_ecdsa.pub")).unwrap();
    let mut f = ecdsa.split_whitespace();
    let (kt, kb) = (f.next().unwrap(), f.next().unwrap());
    let kh = env.path("ecdsa_only_known_hosts");
    fs::write(
        &kh,
        format!(
            "# the standby\nother.example {kt} {kb}\n[127.0.0.1]:{} {kt} {kb}\n",
            sshd.port
        ),
    )
    .unwrap();
    hash_known_hosts(&kh);
    let out = push(&env, &sshd, &sb, &["--known-hosts", kh.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(standby_snapshots(&sb), 1);
}

#[test]
fn clear_errors_for_auth_missing_binary_and_wrong_store() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (_src, sb) = primary_and_standby(&env, 10);
    // A key the standby does not know.
    let stranger = env.path("stranger");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    let out = push(
        &env,
        &sshd,
        &sb,
        &["--identity", stranger.to_str().unwrap()],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("authentication refused"),
        "{}",
        stderr(&out)
    );
    // No hamn at that path on the standby.
    let out = push(&env, &sshd, &sb, &["--remote-bin", "/nonexistent/hamn"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("not found on the standby") && err.contains("--remote-bin"),
        "{err}"
    );
    // No sshd listening.
    let mut a: Vec<String> = vec!["push".into()];
    let mut args = sshd.args(&sb);
    args[1] = format!("ssh://root@127.0.0.1:1{}", sb.display());
    a.extend(args);
    let out = env.cmd().args(&a).output().unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    {
        let o = &out;
        assert_eq!(stderr(o).trim().lines().count(), 1, "{}", stderr(o));
    }
}

#[test]
fn forced_command_serves_only_its_store() {
    let env = Env::new();
    let sb_path = env.path("standby");
    let sshd = Sshd::start(&format!(
        "command=\"{BIN} serve --store {}\",restrict",
        sb_path.display()
    ));
    let (_src, sb) = primary_and_standby(&env, 20);
    assert_eq!(sb, sb_path);
    // The client's remote-bin is ignored by the forced command: push works.
    let out = push(&env, &sshd, &sb, &["--remote-bin", "/bin/false"]);
    pushed(&out);
    assert_eq!(standby_snapshots(&sb), 1);
    // Asking for another store through the same key is refused.
    let other = env.path("other-store");
    assert_eq!(code(&standby(&other, &["init"])), 0);
    let out = push(&env, &sshd, &other, &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("serves store"), "{}", stderr(&out));
    assert_eq!(standby_snapshots(&other), 0);
}

#[test]
fn killed_pushes_resume_with_only_the_rest() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 50);
    add_images(&env, &src, 12, 9, 500);
    // The size of a full push, measured on a second standby.
    let reference = env.path("reference");
    assert_eq!(code(&standby(&reference, &["init"])), 0);
    let full = pushed(&push(&env, &sshd, &reference, &[]))["bytes_sent"]
        .as_u64()
        .unwrap();

    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..4 {
        let mut child = spawn_push(&env, &sshd, &sb, Stdio::null());
        // Kill at a random moment; in the last round only once the standby
        // has made some data durable, so that there is something to resume.
        let start = Instant::now();
        let deadline = Duration::from_millis(100 + rng.u64(0..1500));
        loop {
            std::thread::sleep(Duration::from_millis(10));
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let arrived = !packs(&sb).is_empty();
            if (round < 3 && start.elapsed() >= deadline) || (round == 3 && arrived) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "push made no progress"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        // Never a partial snapshot; the store checks clean.
        assert!(standby_snapshots(&sb) <= 2, "round {round}");
        let out = standby(&sb, &["check", "--read-data"]);
        assert_eq!(
            code(&out),
            0,
            "round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    // The next push sends only what had not arrived.
    let arrived: u64 = packs(&sb)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(arrived > 0);
    let rest = pushed(&push(&env, &sshd, &sb, &[]))["bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(rest < full, "resumed push sent {rest} of {full}");
    assert!(
        rest + arrived <= full + full / 50,
        "resumed push sent {rest} although {arrived} of {full} had arrived"
    );
    assert_eq!(standby_snapshots(&sb), 2);
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
}

#[test]
fn a_silent_standby_is_named_with_the_setting_that_gave_up_on_it() {
    let env = Env::new();
    // The standby's forced command says nothing, ever.
    let sshd = Sshd::start("command=\"sleep 60\",restrict");
    let (_src, sb) = primary_and_standby(&env, 5);
    let cfg = env.path("short-timeout.toml");
    // Long enough for the handshake on a busy machine, which it also bounds.
    fs::write(&cfg, "[standby]\nio_timeout = 4\n").unwrap();
    let out = spawn_push_with(&env, &sshd, &sb, Stdio::piped(), Some(&cfg))
        .wait_with_output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.starts_with("hamn: error: standby")
            && err.contains("127.0.0.1")
            && err.contains("no answer within 4 s (standby.io_timeout)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn killing_the_standby_side_or_the_connection_is_survived() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 50);
    add_images(&env, &src, 10, 8, 900);
    // A push writing into a dead `hamn serve` notices through its I/O limit.
    let cfg = env.path("short-timeout.toml");
    fs::write(&cfg, "[standby]\nio_timeout = 5\n").unwrap();
    let child = spawn_push_with(&env, &sshd, &sb, Stdio::piped(), Some(&cfg));
    // Wait for the standby's serve process, then kill -9 it mid-push.
    let start = Instant::now();
    let pattern = format!("serve --store {}", sb.display());
    loop {
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        if out.status.success() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &pattern])
                .status();
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "the push must fail when its standby dies");
    let err = stderr(&out);
    assert!(err.starts_with("hamn: error: standby"), "{err}");
    assert!(standby_snapshots(&sb) <= 1);
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
    // The connection itself dropping mid-push: the same.
    let child = spawn_push_with(&env, &sshd, &sb, Stdio::piped(), Some(&cfg));
    let start = Instant::now();
    while !Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    sshd.drop_connections();
    let out = child.wait_with_output().unwrap();
    if code(&out) != 0 {
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with("hamn: error: "),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
    // The next push completes.
    pushed(&push(&env, &sshd, &sb, &[]));
    assert_eq!(standby_snapshots(&sb), 2);
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
}

#[test]
fn concurrent_pushes_do_not_corrupt() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 50);
    add_images(&env, &src, 6, 8, 700);
    // A second primary store pushing to the same standby at the same time.
    let env2 = Env::new();
    let src2 = env2.path("src");
    make_tree(&src2, 100, 99);
    write(&src2.join("big.img"), &bytes(30 * 1024 * 1024, 1));
    env2.snapshot(&[&src2]);
    let spawn = |e: &Env| spawn_push(e, &sshd, &sb, Stdio::piped());
    let a = spawn(&env);
    let b = spawn(&env2);
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [code(&oa), code(&ob)];
    for (c, o) in codes.iter().zip([&oa, &ob]) {
        assert!(*c == 0 || *c == 4, "unexpected exit {c}: {}", stderr(o));
        if *c == 4 {
            assert_eq!(
                stderr(o).matches("is locked by").count(),
                1,
                "{}",
                stderr(o)
            );
        }
    }
    assert!(codes.contains(&0));
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
}

#[test]
fn a_damaged_standby_is_repaired_by_push_verify() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb) = primary_and_standby(&env, 40);
    pushed(&push(&env, &sshd, &sb, &[]));
    // Lose a pack on the standby.
    for p in packs(&sb) {
        fs::remove_file(p).unwrap();
    }
    standby(&sb, &["check", "--repair"]);
    assert_eq!(
        code(&standby(&sb, &["check"])),
        1,
        "check must see missing data"
    );
    pushed(&push(&env, &sshd, &sb, &["--verify"]));
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_standby_restores(&env, &sb, &src, "r");
}

#[test]
fn sync_snapshots_pushes_and_verifies_in_one_run() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let src = env.path("install");
    make_tree(&src, 100, 5);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let standby_lines = format!("{}verify_sample = 8\n", ssh_standby(&sshd, &sb));
    let cfg = write_config(&env, &[&src], &standby_lines, "");
    let v = sync(&cfg);
    assert_eq!(v["verified_chunks"], 8);
    assert_eq!(v["push"]["snapshots_sent"][0], v["snapshot"]["id"]);
    assert_eq!(standby_snapshots(&sb), 1);
    // A file vanishing... a warning night: exit 3 is passed to cron.
    let unreadable = src.join("d0/s0/f0.txt");
    assert!(unreadable.exists());
}

#[test]
fn sync_has_the_standby_materialize_over_the_same_session() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let src = env.path("install");
    make_tree(&src, 60, 8);
    let hosts = env.path("etc/hosts");
    write(&hosts, b"10.0.0.1 mn1\n");
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let root = env.path("standby-root");
    fs::create_dir_all(&root).unwrap();
    let standby_lines = format!(
        "{}materialize = true\nroot = '{}'\n",
        ssh_standby(&sshd, &sb),
        root.display()
    );
    let cfg = write_config(&env, &[&src, &hosts], &standby_lines, "");
    for night in 0..2 {
        write(
            &hosts,
            format!("10.0.0.1 mn1\n10.0.0.{} cn\n", night + 5).as_bytes(),
        );
        let v = sync(&cfg);
        assert_eq!(v["materialize"]["snapshot"], v["snapshot"]["id"]);
        assert_same_tree(&src, &root.join(src.strip_prefix("/").unwrap()));
        assert_eq!(
            fs::read(root.join(hosts.strip_prefix("/").unwrap())).unwrap(),
            fs::read(&hosts).unwrap()
        );
    }
    // The standby refuses to deploy anywhere but its own root.
    let (mut remote, _) = {
        use hamn::remote::client::{ConnectOptions, Remote};
        use hamn::remote::ssh::SshOptions;
        let target = hamn::remote::parse_target(&sshd.url(&sb)).unwrap();
        let opts = ConnectOptions {
            ssh: SshOptions {
                identity: Some(sshd.path("client_key")),
                known_hosts: Some(sshd.path("known_hosts")),
                remote_bin: Some(BIN.into()),
                io_timeout: None,
                step_timeout: None,
            },
            mode: hamn::remote::protocol::MODE_WRITE,
            lock_wait: Duration::ZERO,
            root: root.clone(),
        };
        (Remote::connect(&target, &opts).unwrap(), ())
    };
    let id = remote.snapshots().unwrap().last().unwrap().0;
    let err = remote.materialize(id, "/").unwrap_err().to_string();
    assert!(err.contains("deploys under"), "{err}");
}

/// Parse Prometheus text exposition format strictly enough to catch
/// mistakes: every sample has HELP and TYPE lines before it, names are
/// valid, values are numbers. Returns name -> value.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let valid = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut help = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(valid(name), "bad name {name}");
            help.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split_whitespace();
            let (name, t) = (f.next().unwrap(), f.next().unwrap());
            assert!(["gauge", "counter", "untyped"].contains(&t), "bad type {t}");
            typed.insert(name.to_string(), t.to_string());
        } else {
            let mut f = line.split_whitespace();
            let (series, value) = (f.next().unwrap(), f.next().unwrap());
            assert!(f.next().is_none(), "extra fields: {line}");
            // name, or name{label="value",...}
            let name = match series.split_once('{') {
                None => series,
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                    for pair in labels.split(',') {
                        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                        assert!(valid(k) && !k.contains(':'), "bad label name: {line}");
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "bad label value: {line}"
                        );
                    }
                    name
                }
            };
            assert!(
                valid(name) && help.contains(name) && typed.contains_key(name),
                "{line}"
            );
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            assert!(
                out.insert(series.to_string(), v).is_none(),
                "duplicate {series}"
            );
        }
    }
    out
}

#[test]
fn sync_writes_a_prometheus_textfile_and_applies_retention_on_both_nodes() {
    let env = Env::new();
    let src = env.path("install");
    make_tree(&src, 30, 3);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let prom = env.path("textfile/hamn.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let write_cfg = |url: &str| {
        write_config(
            &env,
            &[&src],
            &format!("url = '{url}'\n"),
            &format!(
                "[retention]\nkeep_last = 2\napply_on_sync = true\ngc_grace_hours = 0\n[monitoring]\ntextfile = '{}'\n",
                prom.display()
            ),
        )
    };
    let cfg = write_cfg(sb.to_str().unwrap());
    // The standby keeps more than the primary: its own policy.
    fs::write(
        env.path("standby.toml"),
        "[retention]\nkeep_last = 3\ngc_grace_hours = 0\n",
    )
    .unwrap();
    let start = chrono::Utc::now().timestamp() as f64;
    for night in 0..5 {
        write(&src.join("night"), &bytes(300_000, night));
        sync(&cfg);
    }
    let m = parse_prometheus(&fs::read_to_string(&prom).unwrap());
    assert_eq!(m["hamn_sync_exit_status"], 0.0);
    assert!(m["hamn_sync_last_success_timestamp_seconds"] >= start);
    assert!(m["hamn_standby_newest_snapshot_age_seconds"] < 600.0);
    assert!(m["hamn_push_bytes_sent"] > 300_000.0);
    assert_eq!(m["hamn_snapshot_files_changed"], 1.0);
    assert_eq!(env.snapshot_count(), 2);
    // A local standby is served in-process with no policy of its own: it keeps everything.
    assert_eq!(standby_snapshots(&sb), 5);
    // A failed run records its status and keeps the last success time.
    let last_ok = m["hamn_sync_last_success_timestamp_seconds"];
    write_cfg("/nonexistent/standby");
    let out = run_sync(&cfg, &[]);
    assert_eq!(code(&out), 1);
    let m = parse_prometheus(&fs::read_to_string(&prom).unwrap());
    assert_eq!(m["hamn_sync_exit_status"], 1.0);
    assert_eq!(m["hamn_sync_last_success_timestamp_seconds"], last_ok);
}

/// A primary with a small tree and a standby, behind a real sshd, that
/// deploys what `sync` sends into its own root and then runs the
/// `post_materialize` hook `hook`; `standby_extra` adds lines to the
/// primary's [standby] table. Returns (standby store, standby root, sshd,
/// primary config).
fn deploying_standby(
    env: &Env,
    hook: &str,
    standby_extra: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    Sshd,
    std::path::PathBuf,
) {
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let root = env.path("standby-root");
    fs::create_dir_all(&root).unwrap();
    let sb_cfg = env.path("standby.toml");
    fs::write(&sb_cfg, format!("[hooks]\npost_materialize = ['{hook}']\n")).unwrap();
    let sshd = Sshd::start(&format!(
        "command=\"{BIN} --config {} serve --store {} --root {}\",restrict",
        sb_cfg.display(),
        sb.display(),
        root.display()
    ));
    let src = env.path("install");
    make_tree(&src, 20, 9);
    let standby_lines = format!(
        "{}materialize = true\nroot = '{}'\n{standby_extra}",
        ssh_standby(&sshd, &sb),
        root.display()
    );
    let cfg = write_config(env, &[&src], &standby_lines, "");
    (sb, root, sshd, cfg)
}

#[test]
fn a_standby_stuck_in_its_deployment_is_given_up_after_the_step_timeout() {
    let env = Env::new();
    // The standby's deployment hangs in a hook (as on a hung NFS mount).
    let (sb, _root, _sshd, cfg) = deploying_standby(&env, "sleep 20", "step_timeout = 2\n");
    let out = run_sync(&cfg, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no answer within 2 s while it deploys the snapshot (standby.step_timeout)"),
        "{err}"
    );
    // The primary's lock is free again: the next run is not refused.
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshot"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The snapshot arrived whole before the deployment began.
    assert_eq!(standby_snapshots(&sb), 1);
}

#[test]
fn a_warning_of_the_standbys_deployment_is_the_syncs_warning() {
    let env = Env::new();
    let (_sb, root, _sshd, cfg) = deploying_standby(&env, "exit 7", "");
    let out = run_sync(&cfg, &["--json"]);
    // Deployed, and the failed hook on the standby is told on the primary.
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: standby: post_materialize")
            && err.contains("the deployment stays in place"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["exit_code"], 3, "{j}");
    assert_eq!(
        j["materialize"]["hook_failures"].as_array().unwrap().len(),
        1,
        "{j}"
    );
    assert!(fs::read_dir(&root).unwrap().next().is_some());
}

/// The standby's root cannot keep an xattr the snapshot has (its file
/// system refuses xattrs): the sync is done with warnings (exit 3), and the
/// standby's warning is in the primary's log.
#[test]
fn a_warning_of_the_standbys_deployment_about_an_xattr_is_the_syncs_warning() {
    let env = Env::new();
    let (_sb, root, _sshd, cfg) = deploying_standby(&env, "true", "");
    let _ram = Mount::ramfs(&root);
    let tagged = env.path("install").join("tagged.conf");
    fs::write(&tagged, b"x").unwrap();
    set_site_tag(&tagged);
    let out = run_sync(&cfg, &["--json"]);
    let j = assert_site_tag_refused(&out, "standby: ", "tagged.conf");
    assert_eq!(j["exit_code"], 3, "{j}");
    let deployed = root.join(tagged.strip_prefix("/").unwrap());
    assert_eq!(fs::read(&deployed).unwrap(), b"x");
}

#[test]
fn the_standby_applies_its_own_retention_unless_append_only() {
    for append_only in [false, true] {
        let env = Env::new();
        let sb = env.path("standby");
        assert_eq!(code(&standby(&sb, &["init"])), 0);
        let sb_cfg = env.path("standby.toml");
        fs::write(&sb_cfg, "[retention]\nkeep_last = 3\ngc_grace_hours = 0\n").unwrap();
        let sshd = Sshd::start(&format!(
            "command=\"{BIN} --config {} serve --store {}{}\",restrict",
            sb_cfg.display(),
            sb.display(),
            if append_only { " --append-only" } else { "" }
        ));
        let src = env.path("install");
        make_tree(&src, 20, 3);
        let cfg = write_config(
            &env,
            &[&src],
            &ssh_standby(&sshd, &sb),
            "[retention]\nkeep_last = 2\napply_on_sync = true\ngc_grace_hours = 0\n",
        );
        let mut last = None;
        for night in 0..5 {
            write(&src.join("night"), &bytes(100_000, night));
            last = Some(sync(&cfg));
        }
        assert_eq!(env.snapshot_count(), 2);
        let v = last.unwrap();
        // What the standby forgot is not sent again.
        assert_eq!(
            v["push"]["snapshots_sent"].as_array().unwrap().len(),
            1,
            "{v}"
        );
        if append_only {
            assert_eq!(standby_snapshots(&sb), 5);
            assert!(v["retention"]["standby"].is_null(), "{v}");
        } else {
            assert_eq!(standby_snapshots(&sb), 3);
            assert_eq!(v["retention"]["standby"]["forgotten"], 1, "{v}");
        }
        assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
    }
}

#[test]
fn sync_verify_sample_defaults_to_16_and_0_turns_it_off() {
    let env = Env::new();
    let src = env.path("install");
    make_tree(&src, 60, 23);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let sync = |extra: &str| {
        let standby_lines = format!("url = '{}'\n{extra}", sb.display());
        sync(&write_config(&env, &[&src], &standby_lines, ""))
    };
    // Unset: the built-in sample of 16 chunks.
    let v = sync("");
    assert_eq!(v["verified_chunks"], 16, "{v}");
    // 0: no read-back at all, even though new chunks were pushed.
    write(&src.join("d0/s0/new.txt"), &text(5000, 24));
    let v = sync("verify_sample = 0\n");
    assert!(v["push"]["blobs_sent"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["verified_chunks"], 0, "{v}");
}

/// An sshd whose key runs `hamn serve` on `sb` through a wrapper that
/// appends its pid (the serve's, after `exec`) to the returned log, one
/// line per session, runs the shell command `first`, then starts `serve`
/// with the given options.
fn counting_sshd(
    env: &Env,
    sb: &Path,
    first: &str,
    serve_opts: &str,
) -> (Sshd, std::path::PathBuf) {
    let log = env.path("sessions.log");
    let sshd = sshd_running_script(
        &env.path("serve-wrapper.sh"),
        &format!(
            "#!/bin/sh\necho $$ >> {}\n{first}\nexec {BIN} serve --store {} {serve_opts}\n",
            log.display(),
            sb.display()
        ),
    );
    (sshd, log)
}

/// An sshd whose forced command is the shell script `body`, written to
/// `path`.
fn sshd_running_script(path: &Path, body: &str) -> Sshd {
    fs::write(path, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    Sshd::start(&format!("command=\"{}\",restrict", path.display()))
}

/// A standby behind `counting_sshd` (with `serve_opts`) and a primary
/// whose `pre_snapshot` hook is `hook(session log)`: (sshd, session log,
/// standby store, the primary's config).
fn early_session_site(
    env: &Env,
    serve_opts: &str,
    seed: u64,
    hook: impl Fn(&Path) -> String,
) -> (
    Sshd,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let (sshd, log) = counting_sshd(env, &sb, ":", serve_opts);
    let src = env.path("install");
    make_tree(&src, 20, seed);
    let rest = format!("[hooks]\npre_snapshot = ['{}']\n", hook(&log));
    let cfg = write_config(env, &[&src], &ssh_standby(&sshd, &sb), &rest);
    (sshd, log, sb, cfg)
}

/// Shell: wait (up to 20 s) until the session log names a session.
fn until_a_session(log: &Path) -> String {
    format!(
        "for i in $(seq 200); do [ -s {} ] && break; sleep 0.1; done",
        log.display()
    )
}

/// Run `sync`, which must send one snapshot; how many sessions the
/// standby had.
fn synced_in_sessions(cfg: &Path, log: &Path) -> usize {
    let out = sync(cfg);
    assert_eq!(out["push"]["snapshots_sent"].as_array().unwrap().len(), 1);
    fs::read_to_string(log).unwrap().lines().count()
}

#[test]
fn sync_opens_its_session_during_the_snapshot_and_keeps_it_alive() {
    let env = Env::new();
    let seen = env.path("sessions-during-snapshot");
    // The standby ends a session idle for 3 s; the snapshot takes 5 more
    // once the session is open.
    let (_sshd, log, sb, cfg) = early_session_site(&env, "--idle-timeout 3", 4, |log| {
        format!(
            "{}; cp {} {} && sleep 5",
            until_a_session(log),
            log.display(),
            seen.display()
        )
    });
    // The session was open while the snapshot's hook ran, and it was the
    // only one: kept alive past the standby's idle limit.
    assert_eq!(synced_in_sessions(&cfg, &log), 1);
    assert_eq!(fs::read_to_string(&seen).unwrap().lines().count(), 1);
    assert_eq!(standby_snapshots(&sb), 1);
}

#[test]
fn a_session_lost_during_the_snapshot_is_opened_again() {
    let env = Env::new();
    // The standby's end of the session opened early dies during the
    // snapshot (kill -9 of its `hamn serve`, once it has started).
    let (_sshd, log, sb, cfg) = early_session_site(&env, "", 5, |log| {
        format!(
            "{}; kill -9 $(head -1 {}) && sleep 1",
            until_a_session(log),
            log.display()
        )
    });
    assert_eq!(synced_in_sessions(&cfg, &log), 2);
    assert_eq!(standby_snapshots(&sb), 1);
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_snapshot_that_outlasts_the_early_session_leaves_the_standby_unlocked() {
    let env = Env::new();
    // 12 s into the snapshot, the standby's store can be locked by
    // someone else within 3 s (the session opened for the push was closed
    // after 10 s); the hook fails, and with it the sync, if it cannot.
    let sb = env.path("standby");
    let (_sshd, log, _, cfg) = early_session_site(&env, "", 6, |_| {
        format!(
            "sleep 12 && {BIN} --store {} --lock-wait 3 gc --dry-run",
            sb.display()
        )
    });
    assert_eq!(synced_in_sessions(&cfg, &log), 2);
}

#[test]
fn a_failed_snapshot_is_reported_and_ends_the_early_session() {
    let env = Env::new();
    // It fails once the session is open.
    let (_sshd, log, sb, cfg) = early_session_site(&env, "", 7, |log| {
        format!(
            "{}; echo database dump failed >&2; exit 7",
            until_a_session(log)
        )
    });
    let out = run_sync(&cfg, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database dump failed"),
        "{}",
        stderr(&out)
    );
    // The session had been opened, and its end freed the standby's lock.
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = standby(&sb, &["--lock-wait", "0", "gc", "--dry-run"]);
        if code(&out) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(standby_snapshots(&sb), 0);
}

#[test]
fn a_failed_snapshot_does_not_wait_for_a_slow_standby() {
    let env = Env::new();
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    // The standby takes 30 s to answer; the snapshot fails at once.
    let (sshd, _log) = counting_sshd(&env, &sb, "sleep 30", "");
    let src = env.path("install");
    make_tree(&src, 5, 8);
    let cfg = write_config(
        &env,
        &[&src],
        &ssh_standby(&sshd, &sb),
        "[hooks]\npre_snapshot = ['echo database dump failed >&2; exit 7']\n",
    );
    let started = Instant::now();
    let out = run_sync(&cfg, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database dump failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn push_on_a_terminal_shows_bytes_sent_rate_and_eta() {
    // `script` (util-linux) runs the push on a pseudo-terminal.
    assert!(
        Path::new("/usr/bin/script").exists(),
        "/usr/bin/script is missing: install Debian's bsdutils"
    );
    let env = Env::new();
    let (src, sb) = primary_and_standby(&env, 10);
    // Enough to send for the progress line to be drawn a few times.
    for i in 0..4 {
        write(
            &src.join(format!("images/part{i}.img")),
            &bytes(16 << 20, 40 + i),
        );
    }
    let newest = env.snapshot(&[&src]);
    let cmd = format!(
        "{BIN} --store {} push --to {}",
        env.store().display(),
        sb.display()
    );
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{text}");
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("ETA") && l.contains(" sent at ") && l.contains("/s ("))
        .unwrap_or_else(|| panic!("no progress line with bytes, rate and ETA in: {text}"));
    assert!(line.contains('%'), "{line}");
    assert!(line.contains(&format!("({})", &newest[..8])), "{line}");
    // Not on a terminal (cron): no progress line.
    let out = Command::new(BIN)
        .args(["--store", env.store().to_str().unwrap(), "push", "--to"])
        .arg(&sb)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("ETA"), "{}", stderr(&out));
}

#[test]
fn a_failed_sync_still_reports_its_steps_in_one_json_document() {
    let env = Env::new();
    let src = env.path("install");
    make_tree(&src, 10, 6);
    // A standby folder that is not a store: the push fails after the snapshot.
    let sb = env.path("not-a-store");
    fs::create_dir_all(&sb).unwrap();
    let cfg = write_config(&env, &[&src], &format!("url = '{}'\n", sb.display()), "");
    let out = run_sync(&cfg, &["--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let j = one_json(&out);
    assert_eq!(j["exit_code"], 1, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("not a hamn store"),
        "{j}"
    );
    let id = j["snapshot"]["id"]
        .as_str()
        .expect("the snapshot taken is reported");
    assert_eq!(env.ok(&["--json", "snapshots"]).matches(id).count(), 1);
    let err = stderr(&out);
    assert_eq!(err.matches("hamn: error:").count(), 1, "{err}");
}

#[test]
fn a_bad_standby_url_is_a_usage_error_before_the_store_is_opened() {
    let env = Env::bare();
    let src = env.path("install");
    make_tree(&src, 3, 6);
    // No primary store either: the URL is what is reported, with exit 2.
    let cfg = write_config(&env, &[&src], "url = 'ftp://mn2/var/lib/hamn'\n", "");
    let out = run_sync(&cfg, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("ftp://"), "{}", stderr(&out));
}

#[test]
fn a_file_holding_the_bytes_of_a_tree_travels_and_deploys() {
    // Blobs are stored once per content: this file's only chunk is the
    // blob of the empty directory's tree.
    let env = Env::new();
    let src = env.path("install");
    fs::create_dir_all(src.join("empty")).unwrap();
    write(
        &src.join("looks-like-a-tree"),
        &hamn::tree::Tree::default().encode(),
    );
    write(&src.join("other"), b"other content");
    env.snapshot(&[&src]);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let out = env.run(&["push", "--to", sb.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(standby_snapshots(&sb), 1);
    assert_standby_restores(&env, &sb, &src, "from-standby");
}

#[test]
fn a_sync_that_finds_the_store_locked_says_so_in_one_json_document() {
    let env = Env::new();
    let src = env.path("install");
    make_tree(&src, 5, 2);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    // Another run holds the primary's lock until told to go on.
    let (mark, go) = (env.path("holding"), env.path("go"));
    let hook = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.1; done",
        mark.display(),
        go.display()
    );
    let cfg = write_config(
        &env,
        &[&src],
        &format!("url = '{}'\n", sb.display()),
        &format!("[hooks]\npre_snapshot = ['{hook}']\n"),
    );
    let mut holder = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !mark.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the holder never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_sync(&cfg, &["--json"]);
    write(&go, b"");
    assert!(holder.wait().unwrap().success());
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let j = one_json(&out);
    assert_eq!(j["exit_code"], 4, "{j}");
    assert!(j["snapshot"].is_null(), "{j}");
    assert!(j["error"].as_str().unwrap().contains("locked"), "{j}");
}

#[test]
fn a_full_disk_on_the_standby_fails_the_push_clearly_and_loses_nothing() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let small = Mount::tmpfs(&env.path("standby-disk"), "6m");
    let sb = small.path.join("store");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let src = env.path("src");
    write(&src.join("small.txt"), b"fits");
    env.snapshot(&[&src]);
    let out = push(&env, &sshd, &sb, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // 12 MiB that does not compress, onto a 6 MiB disk.
    write(&src.join("huge.bin"), &bytes(12 * 1024 * 1024, 8));
    env.snapshot(&[&src]);
    // The standby's serve reports the error and exits while the primary
    // is still sending: the primary must not wait for its I/O limit.
    let cfg = env.path("io-timeout.toml");
    fs::write(&cfg, "[standby]\nio_timeout = 90\n").unwrap();
    let mut child = spawn_push_with(&env, &sshd, &sb, Stdio::piped(), Some(&cfg));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(45) {
            let _ = child.kill();
            panic!("the push still waits on a standby that failed and exited");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.starts_with("hamn: error: standby") && err.contains("No space left"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // The standby still holds the first snapshot, whole, and nothing else.
    assert_eq!(standby_snapshots(&sb), 1);
    assert_eq!(code(&standby(&sb, &["check", "--read-data"])), 0);
    // Once there is room, the next push completes the job.
    small.resize("64m");
    let out = push(&env, &sshd, &sb, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(standby_snapshots(&sb), 2);
    assert_standby_restores(&env, &sb, &src, "from-standby");
}

#[test]
fn a_slow_standby_that_logs_on_stderr_still_gets_the_whole_push() {
    // The standby writes a line on stderr, then its serve gets its input
    // in bursts of at most 512 KiB, 1.5 s apart: the primary's writes wait
    // more than a second at a time for the SSH window, and the line on
    // stderr is no answer.
    let env = Env::new();
    let (src, sb) = primary_and_standby(&env, 10);
    let sshd = sshd_running_script(
        &env.path("slow-standby.sh"),
        &format!(
            "#!/bin/sh\n\
             echo a log line of the standby >&2\n\
             throttle() {{\n\
               while :; do\n\
                 s=$(dd bs=65536 count=8 2>&1 >&3 | head -n 1)\n\
                 [ \"$s\" = \"0+0 records in\" ] && break\n\
                 sleep 1.5\n\
               done\n\
             }}\n\
             throttle 3>&1 | exec {BIN} serve --store {}\n",
            sb.display()
        ),
    );
    let out = push(&env, &sshd, &sb, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(standby_snapshots(&sb), 1);
    assert_standby_restores(&env, &sb, &src, "from-standby");
}

/// A primary tree with a 6 MiB image, a standby store, and a config that
/// syncs to it through `sshd` and deploys under a root of its own.
fn image_site(env: &Env, sshd: &Sshd) -> (PathBuf, PathBuf, PathBuf, PathBuf, Vec<u8>) {
    let src = env.path("install");
    make_tree(&src, 60, 12);
    let old = bytes(6 * 1024 * 1024, 78);
    write(&src.join("images/rootimg.cpio.gz"), &old);
    let sb = env.path("standby");
    assert_eq!(code(&standby(&sb, &["init"])), 0);
    let root = env.path("standby-root");
    fs::create_dir_all(&root).unwrap();
    let lines = format!(
        "{}materialize = true\nroot = '{}'\n",
        ssh_standby(sshd, &sb),
        root.display()
    );
    let cfg = write_config(env, &[&src], &lines, "");
    (src, sb, root, cfg, old)
}

/// `old` re-packed: a module inserted near the start and a byte changed
/// in every 100 KB, so that no chunk of it is stored anywhere.
fn repacked(old: &[u8]) -> Vec<u8> {
    let mut new = old[..1000].to_vec();
    new.extend_from_slice(b"a new kernel module");
    new.extend_from_slice(&old[1000..]);
    for i in (0..new.len()).step_by(100_000) {
        new[i] ^= 0xff;
    }
    new
}

#[test]
fn sync_sends_what_the_snapshot_stores_while_it_runs_and_large_deltas_after_it() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb, root, cfg, old) = image_site(&env, &sshd);
    let first = sync(&cfg);
    // Every blob the snapshot stored was sent before it was committed.
    let p = &first["push"];
    assert!(p["blobs_sent"].as_u64().unwrap() > 60, "{p}");
    assert_eq!(p["blobs_sent_early"], p["blobs_sent"], "{p}");
    assert!(
        p["bytes_sent_early"].as_u64().unwrap() > old.len() as u64,
        "{p}"
    );
    // What the push read from the packs for it is counted.
    assert!(
        first["pack_bytes_read"].as_u64().unwrap() >= old.len() as u64,
        "{first}"
    );

    let new = repacked(&old);
    write(&src.join("images/rootimg.cpio.gz"), &new);
    write(&src.join("d0/s0/f0.txt"), b"edited tonight");
    let night = sync(&cfg);
    let p = &night["push"];
    // The edited file and the new trees went during the snapshot; the new
    // chunks of the image, whose bases (the old image's chunks within
    // 2 MiB) are too large to read then, went after it, as deltas against
    // the old ones.
    let (sent, early) = (
        p["blobs_sent"].as_u64().unwrap(),
        p["blobs_sent_early"].as_u64().unwrap(),
    );
    assert!(early >= 2, "{p}");
    assert!(sent >= early + 3, "{p}");
    assert!(p["deltas_sent"].as_u64().unwrap() >= 3, "{p}");
    assert!(
        p["bytes_sent"].as_u64().unwrap() < new.len() as u64 / 10,
        "{p}"
    );
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &root.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn a_standby_without_the_snapshots_parent_is_sent_it_after_the_snapshot() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb, root, cfg, old) = image_site(&env, &sshd);
    // A snapshot the standby never got: the parent of the sync's.
    env.snapshot(&[&src]);
    write(&src.join("images/rootimg.cpio.gz"), &repacked(&old));
    let v = sync(&cfg);
    let p = &v["push"];
    // Nothing could be sent as deltas against a parent it lacks, and
    // nothing was sent during the snapshot; the push sent both snapshots.
    assert_eq!(p["blobs_sent_early"], 0, "{p}");
    assert_eq!(p["snapshots_sent"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(standby_snapshots(&sb), 2);
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &root.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn a_sync_killed_after_its_early_push_leaves_the_standby_whole_and_the_next_completes() {
    let env = Env::new();
    let sshd = Sshd::start("");
    let (src, sb, root, cfg, old) = image_site(&env, &sshd);
    sync(&cfg);
    let live = root.join(src.strip_prefix("/").unwrap());
    let night1 = env.path("night1");
    copy_tree(&src, &night1);
    write(&src.join("images/rootimg.cpio.gz"), &repacked(&old));
    // kill -9 once the snapshot's data is durable, before its record: the
    // early push has been sending meanwhile.
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "sync"])
        .env("HAMN_FAILPOINT", "snapshot:data-durable")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    // The standby's serve ends with the connection; its store checks
    // clean and holds one snapshot; the live tree is the first night's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let checked = loop {
        let out = standby(&sb, &["--lock-wait", "0", "check", "--read-data"]);
        if code(&out) != 4 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code(&checked), 0, "{}", stderr(&checked));
    assert_eq!(standby_snapshots(&sb), 1);
    assert_same_tree(&night1, &live);
    let v = sync(&cfg);
    assert_eq!(v["materialize"]["snapshot"], v["snapshot"]["id"]);
    assert_same_tree(&src, &live);
    let out = standby(&sb, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
