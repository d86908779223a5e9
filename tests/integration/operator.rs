//! Operator experience: config check, templates, completions, man page.

use std::fs;
use std::process::Command;

use crate::common::*;
use crate::sshd::Sshd;

fn check(cfg: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .args(extra)
        .output()
        .unwrap()
}

fn problem(out: &std::process::Output, needle: &str) {
    assert_eq!(
        code(out),
        2,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(all.contains(needle), "expected '{needle}' in:\n{all}");
}

#[test]
fn config_check_names_each_problem_and_exits_2() {
    let env = Env::new();
    let src = env.path("install");
    write(&src.join("a"), b"a");
    let cfg = env.path("hamn.toml");
    let base = format!(
        "store = '{}'\npaths = ['{}']\n",
        env.store().display(),
        src.display()
    );
    fs::write(&cfg, &base).unwrap();
    let out = check(&cfg, &[]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    fs::write(&cfg, format!("{base}excludes = ['x']\n")).unwrap();
    problem(&check(&cfg, &[]), "excludes");

    fs::write(
        &cfg,
        format!("{base}paths = ['/nonexistent/install']\n")
            .replace(&format!("paths = ['{}']\n", src.display()), ""),
    )
    .unwrap();
    problem(&check(&cfg, &[]), "/nonexistent/install does not exist");

    fs::write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\n",
            env.path("nostore").display(),
            src.display()
        ),
    )
    .unwrap();
    problem(&check(&cfg, &[]), "hamn init");

    // An unreachable standby, and one whose host key is not known.
    let sshd = Sshd::start("");
    let kh = sshd.path("known_hosts");
    fs::write(
        &cfg,
        format!(
            "{base}[standby]\nurl = 'ssh://root@127.0.0.1:1/var/lib/hamn'\nidentity = '{}'\nknown_hosts = '{}'\n",
            sshd.path("client_key").display(),
            kh.display()
        ),
    )
    .unwrap();
    problem(&check(&cfg, &[]), "cannot connect");
    let empty = env.path("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let with_standby = |known_hosts: &std::path::Path| {
        fs::write(
            &cfg,
            format!(
                "{base}[standby]\nurl = '{}'\nidentity = '{}'\nknown_hosts = '{}'\nremote_bin = '{BIN}'\n",
                sshd.url(&env.store()),
                sshd.path("client_key").display(),
                known_hosts.display()
            ),
        )
        .unwrap()
    };
    with_standby(&empty);
    problem(&check(&cfg, &[]), "host key unknown");
    with_standby(&kh);
    let out = check(&cfg, &[]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    // A standby root on a read-only file system cannot take a deployment.
    let ro = Mount::tmpfs(&env.path("ro"), "1m");
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&ro.path)
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(&cfg, &base).unwrap();
    problem(
        &check(&cfg, &["--standby-root", ro.path.to_str().unwrap()]),
        "read-only",
    );
}

#[test]
fn the_config_template_parses_and_describes_an_xcat_node() {
    let out = Command::new(BIN)
        .args(["init", "--config-template"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    for p in [
        "/install",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/xcat",
        "/install/autoinst",
        "dumpxCATdb",
    ] {
        assert!(text.contains(p), "template lacks {p}");
    }
    let env = Env::bare();
    let cfg = env.path("t.toml");
    fs::write(&cfg, &text).unwrap();
    // It parses: the only complaints are about this machine (paths, store).
    let out = check(&cfg, &["--offline"]);
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(
        all.lines()
            .all(|l| l.contains("does not exist") || l.contains("hamn init")),
        "{all}"
    );
}

#[test]
fn completions_and_man_page_pass_their_own_syntax_checks() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, checker) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0);
        let f = dir.path().join(format!("hamn.{shell}"));
        fs::write(&f, &out.stdout).unwrap();
        let st = Command::new(checker)
            .arg("-n")
            .arg(&f)
            .status()
            .unwrap_or_else(|e| {
                panic!("{checker} is needed for this test (scripts/test.sh installs it): {e}")
            });
        assert!(st.success(), "{shell} completion has a syntax error");
    }
    let man_dir = dir.path().join("man");
    let out = Command::new(BIN)
        .args(["man", "--out", man_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pages: Vec<_> = fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        pages.iter().any(|p| p.ends_with("hamn-sync.1")),
        "{pages:?}"
    );
    for p in &pages {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(p)
            .output()
            .expect("groff is needed for this test (scripts/test.sh installs it)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every subcommand's help has an example.
    for sub in [
        "snapshot",
        "sync",
        "push",
        "materialize",
        "rollback",
        "status",
        "forget",
        "gc",
        "diff",
        "check",
    ] {
        let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example"),
            "{sub} --help has no example"
        );
    }
}
