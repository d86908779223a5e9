//! forget and gc: space is reclaimed, kept snapshots stay exact, dry runs
//! change nothing, crashes lose nothing, and gc never races a writer.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn store_bytes(store: &Path) -> u64 {
    packs(store)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Listing of every file in the store with its size and mtime.
fn store_listing(store: &Path) -> Vec<(PathBuf, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "lock" {
                out.push((p, md.len(), md.mtime_nsec() + md.mtime() * 1_000_000_000));
            }
        }
    }
    out.sort();
    out
}

/// A config with no gc grace period, so that tests see data go at once.
fn no_grace(env: &Env) -> PathBuf {
    let cfg = env.path("nograce.toml");
    fs::write(
        &cfg,
        format!(
            "store = '{}'\n[retention]\ngc_grace_hours = 0\n",
            env.store().display()
        ),
    )
    .unwrap();
    cfg
}

fn hamn_cfg(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

/// Five nights, each replacing a 2 MB image; returns the source dir.
fn five_nights(env: &Env) -> PathBuf {
    let src = env.path("src");
    make_tree(&src, 100, 4);
    for night in 0..5 {
        write(&src.join("image.img"), &bytes(2_000_000, 60 + night));
        env.snapshot(&[&src]);
    }
    src
}

#[test]
fn forget_and_gc_reclaim_what_only_forgotten_snapshots_used() {
    let env = Env::new();
    let src = five_nights(&env);
    let cfg = no_grace(&env);
    let before = store_bytes(&env.store());
    let out = env.json(&["forget", "--keep-last", "2"]);
    assert_eq!(out["forgotten"], 3);
    assert_eq!(env.snapshot_count(), 2);
    let out = hamn_cfg(&cfg, &["--json", "gc"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = store_bytes(&env.store());
    // Three 2 MB images were dead; at least 90% of that must be gone.
    assert!(
        before - after >= 3 * 2_000_000 * 9 / 10,
        "freed {} of ~6 MB",
        before - after
    );
    env.ok(&["check", "--read-data"]);
    let restored = restore_all(&env, "latest", &src, "r");
    assert_same_tree(&src, &restored);
    // Nothing left to collect.
    let again = hamn_cfg(&cfg, &["--json", "gc", "--dry-run"]);
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["plan"]["dead_bytes_total"], 0, "{v}");
}

#[test]
fn dry_runs_change_nothing() {
    let env = Env::new();
    five_nights(&env);
    let cfg = no_grace(&env);
    let before = store_listing(&env.store());
    let v = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["keep"] == false)
            .count(),
        4
    );
    assert_eq!(code(&hamn_cfg(&cfg, &["gc", "--dry-run"])), 0);
    assert_eq!(store_listing(&env.store()), before);
    env.ok(&["forget", "--keep-last", "1"]);
    let before = store_listing(&env.store());
    let out = hamn_cfg(&cfg, &["--json", "gc", "--dry-run"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["plan"]["dead_bytes_reclaimed"].as_u64().unwrap() > 0);
    assert_eq!(store_listing(&env.store()), before);
}

#[test]
fn the_grace_period_keeps_young_unreferenced_data() {
    let env = Env::new();
    five_nights(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    let before = store_bytes(&env.store());
    let v = env.json(&["gc"]);
    assert_eq!(v["gc"]["packs_deleted"], 0);
    assert_eq!(store_bytes(&env.store()), before);
}

#[test]
fn a_killed_gc_loses_nothing_and_the_next_one_finishes() {
    let env = Env::new();
    let src = five_nights(&env);
    let cfg = no_grace(&env);
    env.ok(&["forget", "--keep-last", "2"]);
    let points = [
        "gc:copied",
        "gc:unindexed:1",
        "gc:unindexed:2",
        "gc:unindexed:3",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    for (i, p) in points
        .iter()
        .map(Some)
        .chain([None, None, None])
        .enumerate()
    {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&cfg)
            .arg("gc")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = p {
            c.env("HAMN_FAILPOINT", p);
        }
        let mut child = c.spawn().unwrap();
        if p.is_none() {
            std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
            let _ = child.kill();
        }
        let _ = child.wait();
        let out = env.run(&["check", "--read-data"]);
        assert_eq!(
            code(&out),
            0,
            "round {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let restored = restore_all(&env, "latest", &src, &format!("r{i}"));
        assert_same_tree(&src, &restored);
    }
    assert_eq!(code(&hamn_cfg(&cfg, &["gc"])), 0);
    let out = hamn_cfg(&cfg, &["--json", "gc", "--dry-run"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["dead_bytes_total"], 0, "{v}");
    env.ok(&["check", "--read-data"]);
}

#[test]
fn deployed_and_previous_snapshots_are_never_forgotten() {
    let env = Env::new();
    let src = env.path("install");
    make_tree(&src, 20, 1);
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    let mut ids = Vec::new();
    for night in 0..4 {
        write(&src.join("n"), format!("{night}").as_bytes());
        ids.push(env.snapshot(&[&src]));
        if night < 2 {
            env.ok(&["materialize", "--root", root.to_str().unwrap()]);
        }
    }
    let v = env.json(&["forget", "--keep-last", "1"]);
    let kept: Vec<String> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(kept.contains(&ids[0]), "previous generation forgotten");
    assert!(kept.contains(&ids[1]), "deployed snapshot forgotten");
    assert!(kept.contains(&ids[3]));
    assert!(!kept.contains(&ids[2]));
    // Rollback still works after gc.
    let cfg = no_grace(&env);
    assert_eq!(code(&hamn_cfg(&cfg, &["gc"])), 0);
    env.ok(&["rollback", "--root", root.to_str().unwrap()]);
    assert_eq!(
        fs::read(root.join(src.strip_prefix("/").unwrap()).join("n")).unwrap(),
        b"0"
    );
}

#[test]
fn gc_and_a_writer_never_interleave() {
    let env = Env::new();
    let src = five_nights(&env);
    let cfg = no_grace(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    // gc stops itself half-way, holding the store lock.
    let mut gc = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "gc"])
        .env("HAMN_FAILPOINT", "stop:gc:copied")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_stopped(&gc);
    // A snapshot that re-references the data of forgotten snapshots cannot run now.
    write(&src.join("image.img"), &bytes(2_000_000, 60));
    let out = env.run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    resume(&gc);
    assert!(gc.wait().unwrap().success());
    let id = env.snapshot(&[&src]);
    env.ok(&["check", "--read-data"]);
    let restored = restore_all(&env, &id, &src, "r");
    assert_same_tree(&src, &restored);
}

#[test]
fn thinly_spread_dead_bytes_are_not_worth_a_rewrite() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 50, 4);
    write(&src.join("big.img"), &bytes(3_000_000, 1));
    for night in 0..4 {
        write(&src.join("small"), format!("{night}").as_bytes());
        env.snapshot(&[&src]);
    }
    let cfg = no_grace(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    // Only a few small files and trees died; the big image is still live.
    let out = hamn_cfg(&cfg, &["--json", "gc"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gc"]["bytes_rewritten"], 0, "{v}");
    env.ok(&["check", "--read-data"]);
    assert_same_tree(&src, &restore_all(&env, "latest", &src, "r"));
}
