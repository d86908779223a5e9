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

    // Crash exactly between the steps of the write order, then at random
    // moments spread over the length of an uninterrupted run.
    let points = ["pack:published", "pack:indexed", "snapshot:data-durable"];
    let timing = env.path("timing");
    make_tree(&timing, 400, 8);
    for i in 0..4 {
        write(
            &timing.join(format!("{i}.bin")),
            &bytes(2 * 1024 * 1024, 800 + i),
        );
    }
    let t0 = Instant::now();
    env.snapshot(&[&timing]);
    let full_run = t0.elapsed().max(Duration::from_millis(20));
    let mut rng = fastrand::Rng::with_seed(42);
    let mut killed_mid_run = 0;
    for round in 0..(points.len() as u64 + 10) {
        // New content every round so that packs are being written when killed.
        for i in 0..4 {
            write(
                &src.join(format!("new/{round}-{i}.bin")),
                &bytes(2 * 1024 * 1024, 1000 * round + i),
            );
        }
        let point = points.get(round as usize);
        let mut cmd = env.cmd();
        cmd.args(["snapshot", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = point {
            cmd.env("HAMN_FAILPOINT", p);
        }
        let mut child = cmd.spawn().unwrap();
        if point.is_none() {
            let delay = full_run.mul_f64(rng.f64());
            let start = Instant::now();
            while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = child.kill(); // SIGKILL
        }
        let status = child.wait().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() == Some(9) {
                killed_mid_run += 1;
            } else {
                assert!(point.is_none(), "failpoint {point:?} was not reached");
            }
        }

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
        killed_mid_run >= points.len() + 3,
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
