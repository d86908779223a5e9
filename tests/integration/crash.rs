//! kill -9 of a running snapshot at random points: afterwards the store
//! checks clean, every earlier snapshot restores exactly, and the next
//! snapshot works without manual cleanup.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn killed_snapshots_leave_earlier_snapshots_intact() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 400, 7);
    for i in 0..6 {
        write(
            &src.join(format!("big/{i}.bin")),
            &bytes(3 * 1024 * 1024, 100 + i),
        );
    }
    let base = env.snapshot(&[&src]);
    let frozen = env.path("frozen");
    copy_tree(&src, &frozen);

    // How long an uninterrupted snapshot of fresh data takes, to spread the kills.
    let mut rng = fastrand::Rng::with_seed(42);
    let mut killed_mid_run = 0;
    for round in 0..12u64 {
        // New content every round so that packs are being written when killed.
        for i in 0..4 {
            write(
                &src.join(format!("new/{round}-{i}.bin")),
                &bytes(2 * 1024 * 1024, 1000 * round + i),
            );
        }
        let mut child = env
            .cmd()
            .args(["snapshot", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.u64(0..250));
        let start = Instant::now();
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let check = env.run(&["check", "--read-data"]);
        assert_eq!(
            code(&check),
            0,
            "round {round}: check failed:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            stderr(&check)
        );
    }
    assert!(
        killed_mid_run >= 6,
        "only {killed_mid_run} kills hit a running snapshot"
    );

    // The first snapshot still restores exactly.
    let restored = restore_all(&env, &base, &src, "restored-base");
    assert_same_tree(&frozen, &restored);
    // A new snapshot works and captures the current tree.
    let after = env.snapshot(&[&src]);
    let restored = restore_all(&env, &after, &src, "restored-after");
    assert_same_tree(&src, &restored);
    env.ok(&["check", "--read-data"]);
}
