//! One writer per store.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn config_with_hook(env: &Env, hook: &str) -> std::path::PathBuf {
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let cfg = env.path("hamn.toml");
    write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\n[hooks]\npre_snapshot = ['{hook}']\n",
            env.store().display(),
            src.display()
        )
        .as_bytes(),
    );
    cfg
}

#[test]
fn a_second_writer_fails_with_status_4_naming_the_holder_or_waits() {
    let env = Env::new();
    let cfg = config_with_hook(&env, "sleep 3");
    let mut first = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let src = env.path("src");
    let second = env.run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("locked"), "{err}");
    // Readers are not blocked by a writer.
    env.ok(&["snapshots"]);
    // A writer told to wait gets the lock once the first finishes.
    let waited = env.run(&["--lock-wait", "30", "snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&waited), 0, "{}", stderr(&waited));
    assert!(first.wait().unwrap().success());
    assert_eq!(env.snapshot_count(), 2);
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over() {
    let env = Env::new();
    let cfg = config_with_hook(&env, "sleep 30");
    let mut first = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    first.kill().unwrap();
    first.wait().unwrap();
    let src = env.path("src");
    let out = env.run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("took over the lock"),
        "{}",
        stderr(&out)
    );
}
