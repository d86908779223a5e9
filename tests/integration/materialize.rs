//! Deploying on the standby: fidelity, cost that follows the change,
//! atomic swaps, rollback, hooks, crash safety and hostile input. Every
//! deployment goes under a temp --root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// `root` + an absolute path.
fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap())
}

/// `status --json` reports no drifted path.
fn assert_no_drift(status: &serde_json::Value) {
    let drifted = status["deployment"]["drifted"].as_array().unwrap();
    assert!(drifted.is_empty(), "{status}");
}

fn materialize(env: &Env, root: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["materialize", "--root", root.to_str().unwrap()];
    a.extend_from_slice(extra);
    env.json(&a)["materialize"].clone()
}

/// A managed directory and a managed file, like /install and /etc/hosts.
struct Site {
    install: PathBuf,
    hosts: PathBuf,
    root: PathBuf,
}

fn site(env: &Env) -> Site {
    let install = env.path("primary/install");
    make_tree(&install, 200, 31);
    write(&install.join("pool/kernel.rpm"), &bytes(3_000_000, 8));
    let hosts = env.path("primary/etc/hosts");
    write(&hosts, b"10.0.0.1 mn1\n");
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    Site {
        install,
        hosts,
        root,
    }
}

impl Site {
    fn snapshot(&self, env: &Env) -> String {
        env.snapshot(&[&self.install, &self.hosts])
    }
    fn live_install(&self) -> PathBuf {
        under(&self.root, &self.install)
    }
    fn live_hosts(&self) -> PathBuf {
        under(&self.root, &self.hosts)
    }
    fn assert_deployed_equals_source(&self) {
        assert_same_tree(&self.install, &self.live_install());
        assert_eq!(
            fs::read(&self.hosts).unwrap(),
            fs::read(self.live_hosts()).unwrap()
        );
    }
}

#[test]
fn materialize_reproduces_every_kind_of_entry() {
    let env = Env::new();
    let src = env.path("install");
    crate::fidelity::build_hostile_tree(&src);
    env.snapshot(&[&src]);
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    materialize(&env, &root, &[]);
    assert_same_tree(&src, &under(&root, &src));
}

#[test]
fn nightly_cost_follows_the_change() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    // Two more nights: the second starts from a previous generation.
    for night in 0..3u64 {
        let changed = bytes(200_000, 40 + night);
        write(
            &s.install.join(format!("d{night}/s0/f{night}.txt")),
            &changed,
        );
        write(
            &s.install.join(format!("new-{night}.bin")),
            &bytes(100_000, 50 + night),
        );
        fs::remove_file(s.install.join(format!("d4/s1/f{}.txt", 4 + 21 * night))).ok();
        write(
            &s.hosts,
            format!("10.0.0.1 mn1\n10.0.0.{} cn{night}\n", night + 2).as_bytes(),
        );
        s.snapshot(&env);
        let st = materialize(&env, &s.root, &[]);
        s.assert_deployed_equals_source();
        if night >= 1 {
            // Two nights of change at most (staging starts from the previous generation).
            let written = st["bytes_written"].as_u64().unwrap();
            assert!(
                written <= 2 * (300_000 + 100),
                "night {night} wrote {written} bytes"
            );
        }
    }
}

#[test]
fn the_swap_is_atomic_for_readers_holding_the_old_tree() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // A reader holds the live directory open across the next deployment.
    let held = fs::File::open(s.live_install()).unwrap();
    let old_ino = held.metadata().unwrap().ino();
    write(&s.install.join("tonight.txt"), b"new");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // By its descriptor the reader still sees the whole old tree...
    let via_fd = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&held)
    ));
    assert!(!via_fd.join("tonight.txt").exists());
    assert!(via_fd.join("pool/kernel.rpm").exists());
    // ...and by name everyone sees the whole new one.
    assert!(s.live_install().join("tonight.txt").exists());
    assert_ne!(fs::metadata(s.live_install()).unwrap().ino(), old_ino);
}

#[test]
fn rollback_is_one_swap_back_and_files_follow() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let night1 = env.path("night1");
    copy_tree(&s.install, &night1);
    let hosts1 = fs::read(&s.hosts).unwrap();
    write(&s.install.join("d1/s1/f1.txt"), b"night two");
    write(&s.hosts, b"10.0.0.1 mn1\n10.0.0.9 cn9\n");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    let before = fs::metadata(s.live_install()).unwrap().ino();
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_same_tree(&night1, &s.live_install());
    assert_eq!(fs::read(s.live_hosts()).unwrap(), hosts1);
    assert_ne!(fs::metadata(s.live_install()).unwrap().ino(), before);
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_eq!(
        st["deployment"]["deployed"],
        env.json(&["snapshots"])["snapshots"][0]["id"]
    );
    assert_no_drift(&st);
    // And forward again.
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    s.assert_deployed_equals_source();
}

#[test]
fn status_reports_drift_and_redeploying_changes_nothing() {
    let env = Env::new();
    let s = site(&env);
    let id = s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let ino = fs::metadata(s.live_install()).unwrap().ino();
    let again = materialize(&env, &s.root, &[&id]);
    assert_eq!(again["already_deployed"], true);
    assert_eq!(
        fs::metadata(s.live_install()).unwrap().ino(),
        ino,
        "a no-op must not swap"
    );
    write(
        &s.live_install().join("d2/s2/f2.txt"),
        b"edited by hand on the standby",
    );
    fs::remove_file(s.live_install().join("d3/s0/f3.txt")).unwrap();
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    let drifted: Vec<String> = st["deployment"]["drifted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        drifted.iter().any(|p| p.ends_with("d2/s2/f2.txt")),
        "{drifted:?}"
    );
    assert!(
        drifted.iter().any(|p| p.ends_with("d3/s0/f3.txt")),
        "{drifted:?}"
    );
    let text = env.ok(&["status", "--root", s.root.to_str().unwrap(), "-v"]);
    assert!(text.contains("d2/s2/f2.txt"), "{text}");

    // The deployed snapshot again: still nothing to do, the drift stays.
    assert_eq!(materialize(&env, &s.root, &[&id])["already_deployed"], true);
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert!(
        st["deployment"]["drifted"].as_array().unwrap().len() >= 2,
        "{st}"
    );
    // --force rebuilds it from the store: the drift is gone, and the
    // drifted tree is the previous generation.
    let m = materialize(&env, &s.root, &[&id, "--force"]);
    assert_eq!(m["already_deployed"], false, "{m}");
    s.assert_deployed_equals_source();
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_no_drift(&st);
    assert_eq!(st["deployment"]["deployed"], id.as_str(), "{st}");
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_eq!(
        fs::read(s.live_install().join("d2/s2/f2.txt")).unwrap(),
        b"edited by hand on the standby"
    );
}

#[test]
fn a_deployed_snapshot_whose_live_paths_were_removed_is_deployed_again() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    write(&s.install.join("d1/s1/f1.txt"), b"night two");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);

    // Someone wipes the live directory: the same snapshot is deployed
    // again, from the store, not reported as already there.
    fs::remove_dir_all(s.live_install()).unwrap();
    let m = materialize(&env, &s.root, &[]);
    assert_eq!(m["already_deployed"], false, "{m}");
    assert!(m["files_written"].as_u64().unwrap() >= 1, "{m}");
    s.assert_deployed_equals_source();
    // Nothing was swapped out, so there is nothing to roll back to.
    assert!(m["previous"].is_null(), "{m}");
    let out = env.run(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no previous generation"),
        "{}",
        stderr(&out)
    );

    // A managed file removed by hand: likewise (and the snapshot taken
    // since, with the same content, is not merely recorded).
    fs::remove_file(s.live_hosts()).unwrap();
    s.snapshot(&env);
    let m = materialize(&env, &s.root, &[]);
    assert!(m["same_content_as"].is_null(), "{m}");
    s.assert_deployed_equals_source();
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_no_drift(&st);
}

#[test]
fn a_snapshot_with_the_deployed_content_is_recorded_without_a_swap() {
    let env = Env::new();
    let s = site(&env);
    let first = s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let night1 = env.path("night1");
    copy_tree(&s.install, &night1);
    write(&s.install.join("d1/s1/f1.txt"), b"night two");
    let second = s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let ino = fs::metadata(s.live_install()).unwrap().ino();
    let hosts_ino = fs::metadata(s.live_hosts()).unwrap().ino();

    // Nothing changed on the primary: a new snapshot id, the same content.
    let third = s.snapshot(&env);
    assert_ne!(third, second);
    let dry = env.json(&[
        "materialize",
        "--dry-run",
        "--root",
        s.root.to_str().unwrap(),
    ]);
    assert_eq!(dry["plan"]["same_content_as"], second.as_str(), "{dry}");
    let m = materialize(&env, &s.root, &[]);
    assert_eq!(m["same_content_as"], second.as_str(), "{m}");
    assert_eq!(m["already_deployed"], false);
    assert_eq!(m["files_written"], 0);
    assert_eq!(
        fs::metadata(s.live_install()).unwrap().ino(),
        ino,
        "no swap"
    );
    assert_eq!(fs::metadata(s.live_hosts()).unwrap().ino(), hosts_ino);
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_eq!(st["deployment"]["deployed"], third.as_str(), "{st}");
    assert_eq!(st["deployment"]["previous"], first.as_str(), "{st}");
    assert_no_drift(&st);
    s.assert_deployed_equals_source();

    // Rollback still goes to the last different content.
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_same_tree(&night1, &s.live_install());

    // A change in a managed file alone is a real deployment again.
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    write(&s.hosts, b"10.0.0.1 mn1\n10.0.0.7 cn7\n");
    s.snapshot(&env);
    let m = materialize(&env, &s.root, &[]);
    assert!(m["same_content_as"].is_null(), "{m}");
    s.assert_deployed_equals_source();
}

#[test]
fn dry_run_changes_nothing() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    write(&s.install.join("d0/s0/f0.txt"), b"changed");
    s.snapshot(&env);
    let before = facts(&s.root);
    let store_before = facts(&env.store());
    let plan = env.json(&[
        "materialize",
        "--root",
        s.root.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["plan"]["dirs"][0]["stats"]["to_create"]
            .as_u64()
            .unwrap()
            >= 1,
        "{plan}"
    );
    assert_eq!(facts(&s.root), before);
    assert_eq!(
        facts(&env.store()).keys().collect::<Vec<_>>(),
        store_before.keys().collect::<Vec<_>>()
    );
}

#[test]
fn post_materialize_hooks_get_the_snapshot_and_a_failure_keeps_the_deployment() {
    let env = Env::new();
    let s = site(&env);
    let out = env.path("hook.out");
    let cfg = env.path("hamn.toml");
    let write_cfg = |hook: &str| {
        fs::write(
            &cfg,
            format!(
                "store = '{}'\n[hooks]\npost_materialize = ['{hook}']\n",
                env.store().display()
            ),
        )
        .unwrap()
    };
    write_cfg(&format!(
        "echo $HAMN_SNAPSHOT $HAMN_ROOT > {}",
        out.display()
    ));
    let id = s.snapshot(&env);
    let run = || {
        Command::new(BIN)
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "materialize",
                "--root",
                s.root.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let o = run();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(&out).unwrap().trim(),
        format!("{id} {}", s.root.display())
    );
    write_cfg("echo makedhcp failed >&2; exit 1");
    write(&s.install.join("x"), b"x");
    s.snapshot(&env);
    let o = run();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("makedhcp failed"), "{}", stderr(&o));
    s.assert_deployed_equals_source();
}

#[test]
fn hooks_of_a_deployment_killed_before_they_ran_run_at_the_next_materialize() {
    let env = Env::new();
    let s = site(&env);
    let out = env.path("hook.out");
    let cfg = env.path("hamn.toml");
    fs::write(
        &cfg,
        format!(
            "store = '{}'\n[hooks]\npost_materialize = ['echo $HAMN_SNAPSHOT >> {}']\n",
            env.store().display(),
            out.display()
        ),
    )
    .unwrap();
    let materialize_with = |failpoint: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["--config", cfg.to_str().unwrap(), "materialize", "--root"])
            .arg(&s.root);
        if let Some(p) = failpoint {
            c.env("HAMN_FAILPOINT", p);
        }
        c.output().unwrap()
    };
    for (night, point) in ["deploy:committed", "deploy:state-written"]
        .iter()
        .enumerate()
    {
        write(&s.install.join("night"), format!("{night}").as_bytes());
        let id = s.snapshot(&env);
        let _ = fs::remove_file(&out);
        // Killed after the commit: the deployment completes (now or at
        // the next command's recovery), its hooks did not run.
        let o = materialize_with(Some(point));
        assert_eq!(o.status.code(), None, "{point}: not killed: {}", stderr(&o));
        assert!(!out.exists(), "{point}: the hook ran before the kill");
        // The next materialize finds the snapshot deployed and runs them.
        let o = materialize_with(None);
        assert_eq!(code(&o), 0, "{point}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("did not all run"),
            "{point}: {}",
            stderr(&o)
        );
        s.assert_deployed_equals_source();
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("{id}\n"),
            "{point}"
        );
        // Once.
        let o = materialize_with(None);
        assert_eq!(code(&o), 0, "{point}: {}", stderr(&o));
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("{id}\n"),
            "{point}"
        );
    }
}

#[test]
fn killed_deployments_leave_the_old_set_or_the_new_set() {
    let env = Env::new();
    let s = site(&env);
    // Managed files in one set, like /etc/hosts, /etc/passwd, /etc/group.
    let passwd = env.path("primary/etc/passwd");
    let group = env.path("primary/etc/group");
    let set = |tag: &str| {
        write(&s.hosts, format!("hosts {tag}\n").as_bytes());
        write(&passwd, format!("passwd {tag}\n").as_bytes());
        write(&group, format!("group {tag}\n").as_bytes());
    };
    let snap = |env: &Env| env.snapshot(&[&s.install, &s.hosts, &passwd, &group]);
    set("A");
    let a = snap(&env);
    env.ok(&["materialize", &a, "--root", s.root.to_str().unwrap()]);
    let tree_a = env.path("tree-a");
    copy_tree(&s.install, &tree_a);
    set("B");
    for i in 0..20 {
        write(
            &s.install.join(format!("big/{i}.bin")),
            &bytes(1_000_000, 70 + i),
        );
    }
    let b = snap(&env);
    let tree_b = env.path("tree-b");
    copy_tree(&s.install, &tree_b);
    let live_files = [
        s.live_hosts(),
        under(&s.root, &passwd),
        under(&s.root, &group),
    ];
    // Crash exactly between the steps of the commit, and at random moments.
    let points = [
        "deploy:prepared",
        "deploy:dir-swapped",
        "deploy:file-linked:1",
        "deploy:file-renamed:1",
        "deploy:file-linked:2",
        "deploy:file-renamed:2",
        "deploy:file-renamed:3",
        "deploy:committed",
        "deploy:state-written",
        "deploy:generation-kept",
    ];
    let mut rng = fastrand::Rng::with_seed(3);
    let mut saw = [0, 0];
    let mut recovered = 0;
    for round in 0..(points.len() + 8) {
        // Alternate the target so that every crash interrupts a real change.
        let target = if round % 2 == 0 { &b } else { &a };
        let mut cmd = env.cmd();
        cmd.args(["materialize", target, "--root", s.root.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = points.get(round) {
            cmd.env("HAMN_FAILPOINT", p);
        }
        let mut child = cmd.spawn().unwrap();
        if round >= points.len() {
            std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        if round < points.len() {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "failpoint {} was not reached",
                points[round]
            );
        }
        // Any command recovers first.
        let st = env.run(&["status", "--root", s.root.to_str().unwrap()]);
        assert_eq!(code(&st), 0, "{}", stderr(&st));
        let journaled = stderr(&st).contains("interrupted deployment was");
        if journaled {
            recovered += 1;
        }
        let contents: Vec<String> = live_files
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        let all_a = contents.iter().all(|c| c.ends_with("A\n"));
        let all_b = contents.iter().all(|c| c.ends_with("B\n"));
        assert!(
            all_a || all_b,
            "round {round}: a mix of old and new files: {contents:?}"
        );
        let expect_tree = if all_a { &tree_a } else { &tree_b };
        assert_same_tree(expect_tree, &s.live_install());
        saw[all_b as usize] += 1;
        // No backup files are left beside the managed files, nor temp
        // files once a journal was recovered; a kill before the journal
        // may leave `.NAME.hamn-new` files, which the next materialize
        // replaces (docs/deploy.md, known limits).
        let leftovers = || -> Vec<String> {
            live_files
                .iter()
                .flat_map(|f| fs::read_dir(f.parent().unwrap()).unwrap())
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".hamn-"))
                .collect()
        };
        let left = leftovers();
        assert!(
            left.iter().all(|n| !journaled && n.ends_with(".hamn-new")),
            "round {round}: {left:?}"
        );
        // Finish the deployment properly before the next round.
        env.ok(&["materialize", target, "--root", s.root.to_str().unwrap()]);
        assert!(leftovers().is_empty(), "round {round}: {:?}", leftovers());
    }
    assert!(saw[0] > 0 && saw[1] > 0, "{saw:?}");
    assert!(
        recovered >= points.len(),
        "only {recovered} crashes left a journal"
    );
}

#[test]
fn a_hostile_tree_is_rejected_before_anything_is_written() {
    use hamn::store::Store;
    use hamn::store::writer::BlobWriter;
    use hamn::tree::{Entry, Kind, Meta, Tree};
    let env = Env::new();
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    let store = Store::open(&env.store()).unwrap();
    let lock = store.lock(Duration::ZERO, "test").unwrap();
    let w = BlobWriter::new(&store, &lock).unwrap();
    let evil = Tree {
        entries: vec![Entry {
            name: b"..".to_vec(),
            meta: Meta::default(),
            kind: Kind::Symlink(b"/etc/shadow".to_vec()),
        }],
    };
    let evil_id = w.add_tree(&evil.encode()).unwrap();
    let install = Tree {
        entries: vec![Entry {
            name: b"install".to_vec(),
            meta: Meta {
                mode: 0o755,
                ..Meta::default()
            },
            kind: Kind::Dir(evil_id),
        }],
    };
    let root_id = w.add_tree(&install.encode()).unwrap();
    w.finish().unwrap();
    store
        .write_snapshot(
            &lock,
            &hamn::snapshot::Snapshot {
                time_ns: 1,
                host: "evil".into(),
                paths: vec!["/install".into()],
                root: root_id,
                parent: None,
                tags: vec![],
                stats: Default::default(),
            },
        )
        .unwrap();
    drop(lock);
    let out = env.run(&["materialize", "--root", root.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("entry name"), "{}", stderr(&out));
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "something was written"
    );
}

#[test]
fn symlinks_planted_in_the_target_are_never_followed() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    write(&s.install.join("d5/s2/f5.txt"), b"second night");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // The previous generation (tomorrow's staging) gets a directory replaced
    // by a link to a place outside the root.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let prev = crate::materialize::gen_previous(&s.live_install());
    fs::remove_dir_all(prev.join("d1")).unwrap();
    std::os::unix::fs::symlink(&outside, prev.join("d1")).unwrap();
    write(&s.install.join("d1/s1/f1.txt"), b"third night");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through a symlink"
    );
    s.assert_deployed_equals_source();
}

#[test]
fn disk_full_leaves_the_live_tree_untouched() {
    let env = Env::new();
    let small = Mount::tmpfs(&env.path("small-root"), "6m");
    let install = env.path("primary/install");
    make_tree(&install, 50, 2);
    env.snapshot(&[&install]);
    materialize(&env, &small.path, &[]);
    let live = under(&small.path, &install);
    let night1 = env.path("night1");
    copy_tree(&install, &night1);
    write(&install.join("huge.img"), &bytes(8 * 1024 * 1024, 9));
    env.snapshot(&[&install]);
    let out = env.run(&["materialize", "--root", small.path.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("No space left"), "{err}");
    assert_same_tree(&night1, &live);
}

/// A root on a file system that refuses xattrs (ramfs): everything else
/// is deployed, each xattr it could not keep is a warning naming the file
/// and the xattr, and the exit status says "done with warnings".
#[test]
fn xattrs_the_root_cannot_keep_are_warnings_and_the_rest_is_deployed() {
    let env = Env::new();
    let mut s = site(&env);
    let ram = Mount::ramfs(&env.path("root-ramfs"));
    s.root = ram.path.clone();
    let tagged = s.install.join("pool/kernel.rpm");
    set_site_tag(&tagged);
    s.snapshot(&env);
    let root = s.root.to_str().unwrap();
    let out = env.run(&["--json", "materialize", "--root", root]);
    assert_site_tag_refused(&out, "", "kernel.rpm");
    // The deployed tree is the source without that xattr.
    rustix::fs::lremovexattr(&tagged, SITE_TAG).unwrap();
    s.assert_deployed_equals_source();
}

#[test]
fn a_managed_directory_that_is_a_mount_point_swaps_its_entries() {
    let env = Env::new();
    let s = site(&env);
    let live = s.live_install();
    let mount = Mount::tmpfs(&live, "64m");
    s.snapshot(&env);
    let out = env.run(&["materialize", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("mount point"), "{}", stderr(&out));
    let night1 = env.path("night1");
    copy_tree(&s.install, &night1);
    // The generation directory lives inside the mount; compare without it.
    let visible = |p: &Path| {
        let copy = env.path(&format!("view-{}", fastrand::u32(..)));
        copy_tree(p, &copy);
        let _ = fs::remove_dir_all(copy.join(".hamn.gen"));
        copy
    };
    assert_same_tree(&s.install, &visible(&live));
    write(&s.install.join("night2.txt"), b"two");
    fs::remove_dir_all(s.install.join("d6")).unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    assert_same_tree(&s.install, &visible(&live));
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_no_drift(&st);
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_same_tree(&night1, &visible(&live));
    drop(mount);
}

#[test]
fn a_file_only_touched_on_the_primary_is_not_rewritten() {
    let env = Env::new();
    let s = site(&env);
    // Two deployments, so that a previous generation exists.
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    write(&s.install.join("night1"), b"1");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // Night: the 3 MB package is touched (new mtime, same bytes). Where
    // the generations share it (no reflinks: the second deployment linked
    // it), its new metadata needs a new inode, written once; never more.
    let rpm = s.install.join("pool/kernel.rpm");
    set_mtime(&rpm, 1_800_000_000, 5);
    s.snapshot(&env);
    let st = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    let written = |st: &serde_json::Value| {
        st["bytes_written"].as_u64().unwrap() + st["bytes_copied"].as_u64().unwrap()
    };
    let size = fs::metadata(&rpm).unwrap().len();
    assert!(written(&st) < size + 100_000, "{st}");
    // Touched again, and again: the generations no longer share it, so
    // only its metadata changes.
    for night in 1..=2 {
        set_mtime(&rpm, 1_800_000_000 + night, 5);
        s.snapshot(&env);
        let st = materialize(&env, &s.root, &[]);
        s.assert_deployed_equals_source();
        assert!(written(&st) < 100_000, "a touched file was rewritten: {st}");
    }
}

/// A site whose root is a tmpfs, which has no reflinks: there, files the
/// live tree already has right are hard-linked between generations.
fn site_without_reflinks(env: &Env) -> (Site, Mount) {
    let mut s = site(env);
    let m = Mount::tmpfs(&env.path("root-tmpfs"), "64m");
    s.root = m.path.clone();
    (s, m)
}

/// Three deployments (S0, S1 changing `d1/s1/f1.txt`, S2 changing
/// `d2/s2/f2.txt`): the third brings the first generation forward, and
/// `f1`, exactly right in the live tree, is linked from it. Returns the
/// third deployment's summary and a copy of S1's tree. `before_third`
/// runs before the third deployment.
fn three_deployments(
    env: &Env,
    s: &Site,
    before_third: impl FnOnce(),
) -> (serde_json::Value, PathBuf) {
    s.snapshot(env);
    materialize(env, &s.root, &[]);
    write(&s.install.join("d1/s1/f1.txt"), &bytes(300_000, 61));
    s.snapshot(env);
    let second = materialize(env, &s.root, &[]);
    // A generation built from nothing shares every unchanged file with
    // the live tree (on a file system without reflinks), and writes the
    // changed one.
    if second["files_cloned"] == 0 {
        assert!(second["files_linked"].as_u64().unwrap() >= 150, "{second}");
        assert_eq!(second["files_copied"], 0, "{second}");
    }
    let night1 = env.path("night1");
    copy_tree(&s.install, &night1);
    write(&s.install.join("d2/s2/f2.txt"), &bytes(200_000, 62));
    s.snapshot(env);
    before_third();
    (materialize(env, &s.root, &[]), night1)
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn a_file_changed_last_night_is_shared_with_the_live_tree_not_written_again() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    let (third, _) = three_deployments(&env, &s, || {});
    s.assert_deployed_equals_source();
    assert_eq!(third["files_linked"], 1, "{third}");
    assert_eq!(third["bytes_linked"], 300_000, "{third}");
    // Only tonight's file was written: last night's is not written again.
    let written =
        third["bytes_written"].as_u64().unwrap() + third["bytes_copied"].as_u64().unwrap();
    assert!(written < 250_000, "{third}");
    let f1 = "d1/s1/f1.txt";
    let prev = gen_previous(&s.live_install());
    assert_eq!(ino(&s.live_install().join(f1)), ino(&prev.join(f1)));
    assert_ne!(
        ino(&s.live_install().join("d2/s2/f2.txt")),
        ino(&prev.join("d2/s2/f2.txt"))
    );
    // The next night links f2 in turn, and says so.
    write(&s.install.join("d3/s0/f3.txt"), b"night three");
    s.snapshot(&env);
    let text = env.ok(&["materialize", "--root", s.root.to_str().unwrap()]);
    assert!(text.contains(", 1 linked to the live tree,"), "{text}");
    s.assert_deployed_equals_source();
}

/// `three_deployments` on a tmpfs root, and a copy of S2's tree. Returns
/// the site, its mount, the copy, and `f1` on the primary: the file the
/// live tree shares with the previous generation (which becomes staging).
fn f1_shared(env: &Env) -> (Site, Mount, PathBuf, PathBuf) {
    let (s, root_fs) = site_without_reflinks(env);
    three_deployments(env, &s, || {});
    let night2 = env.path("night2");
    copy_tree(&s.install, &night2);
    let f1 = s.install.join("d1/s1/f1.txt");
    (s, root_fs, night2, f1)
}

#[test]
fn a_shared_file_only_touched_on_the_primary_is_replaced_not_changed_in_place() {
    let env = Env::new();
    let (s, _root_fs, night2, f1) = f1_shared(&env);
    // Tonight f1 gets a new mtime and mode only.
    set_mtime(&f1, 1_800_000_000, 7);
    fs::set_permissions(&f1, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    // The previous generation is S2's tree exactly: its f1 kept its own
    // mtime and mode, and a rollback has nothing to repair.
    assert_same_tree(&night2, &gen_previous(&s.live_install()));
    let out = env.run(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("changed in place"),
        "{}",
        stderr(&out)
    );
    assert_same_tree(&night2, &s.live_install());
}

#[test]
fn a_shared_file_that_gains_a_hard_link_and_a_mode_is_replaced_not_changed_in_place() {
    let env = Env::new();
    let (s, _root_fs, night2, f1) = f1_shared(&env);
    // Tonight f1 gets a second name and another mode on the primary: its
    // link count in the snapshot (2) is now that of the shared inode.
    fs::hard_link(&f1, s.install.join("d1/s1/z-again.txt")).unwrap();
    fs::set_permissions(&f1, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert_same_tree(&night2, &gen_previous(&s.live_install()));
}

#[test]
fn a_hard_link_into_a_new_directory_joins_the_file_kept_on_disk() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // Night 1: a new directory holds a second name of an unchanged file.
    fs::create_dir_all(s.install.join("new")).unwrap();
    fs::hard_link(
        s.install.join("d1/s1/f1.txt"),
        s.install.join("new/f1-link"),
    )
    .unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    // Night 2 starts from the first generation, which has f1 and no
    // `new`: the directory is created whole, and its member of the group
    // must be linked to the f1 kept there.
    write(&s.install.join("d2/s2/f2.txt"), b"night two");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert_no_drift(&env.json(&["status", "--root", s.root.to_str().unwrap()]));
}

#[test]
fn a_damaged_file_with_hard_links_is_reported_as_damaged_and_nothing_is_deployed() {
    let env = Env::new();
    let s = site(&env);
    let (a, b) = (s.install.join("big/a.bin"), s.install.join("big/b.bin"));
    write(&a, &bytes(400_000, 70));
    fs::hard_link(&a, &b).unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    write(&s.install.join("night1"), b"1");
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let before = env.path("before");
    copy_tree(&s.live_install(), &before);
    // Tonight the linked file gets new bytes (both names), whose chunk is
    // damaged in the store: the first name is written and removed again,
    // the second was to be linked to it.
    std::os::unix::fs::FileExt::write_all_at(
        &fs::OpenOptions::new().write(true).open(&a).unwrap(),
        &bytes(400_000, 71),
        0,
    )
    .unwrap();
    s.snapshot(&env);
    damage_largest_chunk(packs(&env.store()).last().unwrap());
    let out = env.run(&["materialize", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("entries could not be written"), "{err}");
    assert!(err.contains("big/a.bin"), "{err}");
    assert!(!err.contains("No such file"), "{err}");
    assert_same_tree(&before, &s.live_install());
}

#[test]
fn a_shared_file_changed_in_place_is_rebuilt_before_a_rollback() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    let (_, night1) = three_deployments(&env, &s, || {});
    // On the standby, f1 is appended to in place: the previous
    // generation's name for the inode sees the change too.
    let live_f1 = s.live_install().join("d1/s1/f1.txt");
    let mut f = fs::OpenOptions::new().append(true).open(&live_f1).unwrap();
    std::io::Write::write_all(&mut f, b"appended on the standby").unwrap();
    drop(f);
    let prev = gen_previous(&s.live_install());
    assert!(
        fs::read(prev.join("d1/s1/f1.txt"))
            .unwrap()
            .ends_with(b"on the standby")
    );
    // A rollback killed after the rewrite was written, before it was
    // renamed in, leaves the shared name for the next one to find.
    let killed = env
        .cmd()
        .args(["rollback", "--root", s.root.to_str().unwrap()])
        .env("HAMN_FAILPOINT", "rollback:rewrite-written")
        .output()
        .unwrap();
    assert_eq!(
        killed.status.code(),
        None,
        "not killed: {}",
        stderr(&killed)
    );
    // Rollback restores S1 exactly, and keeps the edited copy in the
    // generation that was live.
    rollback_rewriting_shared_files(&env, &s, &night1);
    assert!(
        fs::read(prev.join("d1/s1/f1.txt"))
            .unwrap()
            .ends_with(b"on the standby")
    );
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_no_drift(&st);
}

#[test]
fn the_second_deployment_shares_unchanged_files_and_rollback_still_restores_the_first() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    let night0 = env.path("night0");
    copy_tree(&s.install, &night0);
    write(&s.install.join("d1/s1/f1.txt"), &bytes(300_000, 61));
    s.snapshot(&env);
    let second = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    // Nothing unchanged is written or copied again: it is linked.
    assert!(second["files_linked"].as_u64().unwrap() >= 150, "{second}");
    assert_eq!(second["files_copied"], 0, "{second}");
    assert!(
        second["bytes_written"].as_u64().unwrap() < 400_000,
        "{second}"
    );
    let prev = gen_previous(&s.live_install());
    let (f3, f1) = ("d3/s0/f3.txt", "d1/s1/f1.txt");
    assert_eq!(ino(&s.live_install().join(f3)), ino(&prev.join(f3)));
    assert_ne!(ino(&s.live_install().join(f1)), ino(&prev.join(f1)));
    // An admin edits an unchanged file of the live tree in place: the
    // previous generation's name sees it too, and rollback must still
    // bring back the first snapshot exactly.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(s.live_install().join(f3))
        .unwrap();
    std::io::Write::write_all(&mut f, b"edited on the standby").unwrap();
    drop(f);
    rollback_rewriting_shared_files(&env, &s, &night0);
    let st = env.json(&["status", "--root", s.root.to_str().unwrap()]);
    assert_no_drift(&st);
}

/// `hamn rollback`, which must say it rewrote shared files changed in
/// place and leave the live tree equal to `expected`.
fn rollback_rewriting_shared_files(env: &Env, s: &Site, expected: &Path) {
    let out = env.run(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed in place"),
        "{}",
        stderr(&out)
    );
    assert_same_tree(expected, &s.live_install());
}

#[test]
fn rollback_after_a_deployment_that_did_not_finish_rebuilds_the_previous_snapshot() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    let (_, night1) = three_deployments(&env, &s, || {});
    let night2 = env.path("night2");
    copy_tree(&s.install, &night2);
    // Tonight's deployment is killed after staging was built from the
    // previous generation (S1's tree), before the swap.
    write(&s.install.join("d3/s0/f3.txt"), &bytes(100_000, 63));
    s.snapshot(&env);
    let out = env
        .cmd()
        .args(["materialize", "--root", s.root.to_str().unwrap()])
        .env("HAMN_FAILPOINT", "deploy:prepared")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "not killed: {}", stderr(&out));
    let prev = gen_previous(&s.live_install());
    // The next command undoes the swap's journal: S2 stays live, and the
    // previous generation is the half-built staging tree.
    let root = s.root.to_str().unwrap();
    let st = env.json(&["status", "--root", root]);
    assert_same_tree(&night2, &s.live_install());
    assert!(!prev.exists());
    // Rollback still goes back to S1, exactly.
    let out = env.run(&["rollback", "--root", root]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("did not finish"), "{}", stderr(&out));
    assert_same_tree(&night1, &s.live_install());
    let after = env.json(&["status", "--root", root]);
    assert_eq!(
        after["deployment"]["deployed"],
        st["deployment"]["previous"]
    );
    assert_eq!(
        after["deployment"]["previous"],
        st["deployment"]["deployed"]
    );
    assert_no_drift(&after);
    // And forward again, by the usual swap.
    env.ok(&["rollback", "--root", root]);
    assert_same_tree(&night2, &s.live_install());
}

/// Overwrite `p` in place with other bytes of the same length, keeping
/// its mtime: a change that size and mtime cannot show.
fn corrupt_in_place(p: &Path) {
    let md = fs::metadata(p).unwrap();
    let mut data = fs::read(p).unwrap();
    data.iter_mut().for_each(|b| *b = !*b);
    std::os::unix::fs::FileExt::write_all_at(
        &fs::OpenOptions::new().write(true).open(p).unwrap(),
        &data,
        0,
    )
    .unwrap();
    set_mtime(p, md.mtime(), md.mtime_nsec());
}

#[test]
fn a_live_file_changed_with_its_size_and_mtime_kept_is_not_copied() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // The second deployment links (or, with reflinks, copies) unchanged
    // files from the live tree: not this one.
    let f3 = "d3/s0/f3.txt";
    corrupt_in_place(&s.live_install().join(f3));
    write(&s.install.join("d1/s1/f1.txt"), &bytes(300_000, 61));
    s.snapshot(&env);
    let second = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    let reused =
        second["files_copied"].as_u64().unwrap() + second["files_linked"].as_u64().unwrap();
    assert!(reused >= 150, "{second}");
    // The damaged live copy went to the previous generation, apart from
    // the new live file.
    assert_ne!(
        ino(&s.live_install().join(f3)),
        ino(&gen_previous(&s.live_install()).join(f3))
    );
}

#[test]
fn a_live_file_changed_with_its_size_and_mtime_kept_is_not_linked() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    // The third deployment would link last night's file from the live
    // tree: not once it holds other bytes.
    let live_f1 = s.live_install().join("d1/s1/f1.txt");
    let (third, _) = three_deployments(&env, &s, || corrupt_in_place(&live_f1));
    s.assert_deployed_equals_source();
    assert_eq!(third["files_linked"], 0, "{third}");
}

/// `materialize` that pauses just before it seals each staging tree
/// (`dirs`: the managed directories), so that the files it wrote are
/// stamped at least one clock tick before their seal (a seal only proves
/// what is strictly older).
fn materialize_sealed_later(env: &Env, root: &Path) -> serde_json::Value {
    materialize_sealed_later_each(env, root, 1)
}

fn materialize_sealed_later_each(env: &Env, root: &Path, dirs: usize) -> serde_json::Value {
    let child = env
        .cmd()
        .args(["--json", "materialize", "--root", root.to_str().unwrap()])
        .env("HAMN_FAILPOINT", "stop:deploy:sealing:every")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..dirs {
        wait_stopped(&child);
        std::thread::sleep(Duration::from_millis(50));
        resume(&child);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    one_json(&out)["materialize"].clone()
}

#[test]
fn files_untouched_since_the_live_deployment_are_linked_without_reading_them() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    s.snapshot(&env);
    materialize_sealed_later(&env, &s.root);
    write(&s.install.join("d1/s1/f1.txt"), &bytes(300_000, 61));
    s.snapshot(&env);
    let second = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert!(second["files_linked"].as_u64().unwrap() >= 150, "{second}");
    assert_eq!(second["live_files_read"], 0, "{second}");
    assert_eq!(second["live_bytes_read"], 0, "{second}");
}

#[test]
fn each_managed_directory_is_trusted_by_its_own_seal() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    // A second managed directory: the two are staged and sealed one after
    // the other, so the files of the one staged second are written after
    // the first one's seal.
    let xcat = env.path("primary/etc/xcat");
    make_tree(&xcat, 60, 5);
    let paths = [s.install.as_path(), s.hosts.as_path(), xcat.as_path()];
    env.snapshot(&paths);
    let first = materialize_sealed_later_each(&env, &s.root, 2);
    assert_eq!(first["live_files_read"], 0, "{first}");
    write(&s.install.join("d1/s1/f1.txt"), &bytes(300_000, 61));
    write(&xcat.join("site.conf"), b"master=10.0.0.1\n");
    env.snapshot(&paths);
    let second = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert_same_tree(&xcat, &under(&s.root, &xcat));
    assert!(second["files_linked"].as_u64().unwrap() >= 200, "{second}");
    assert_eq!(second["live_files_read"], 0, "{second}");
}

#[test]
fn a_file_changed_on_the_primary_with_its_size_and_mtime_kept_is_not_linked_unread() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    s.snapshot(&env);
    materialize_sealed_later(&env, &s.root);
    // The live copy is untouched since its deployment, and its stat is
    // the new snapshot's; only its chunks differ from the new version.
    let f3 = "d3/s0/f3.txt";
    corrupt_in_place(&s.install.join(f3));
    s.snapshot(&env);
    let second = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert!(second["live_files_read"].as_u64().unwrap() >= 1, "{second}");
    assert_ne!(
        ino(&s.live_install().join(f3)),
        ino(&gen_previous(&s.live_install()).join(f3))
    );
}

#[test]
fn after_a_rollback_live_files_are_read_again_before_they_are_linked() {
    let env = Env::new();
    let (s, _root_fs) = site_without_reflinks(&env);
    let f = "d3/s0/f3.txt";
    let original = fs::read(s.install.join(f)).unwrap();
    let md = fs::metadata(s.install.join(f)).unwrap();
    s.snapshot(&env);
    materialize(&env, &s.root, &[]);
    // An admin edits the live copy in place, keeping its size and mtime.
    corrupt_in_place(&s.live_install().join(f));
    write(&s.install.join(f), b"version 1");
    s.snapshot(&env);
    materialize_sealed_later(&env, &s.root);
    // Back to the first generation, edit included.
    env.ok(&["rollback", "--root", s.root.to_str().unwrap()]);
    assert_ne!(fs::read(s.live_install().join(f)).unwrap(), original);
    // The primary goes back to the first version, mtime and all: the
    // rolled-back snapshot has exactly this entry, and the edited live
    // copy's ctime is older than any seal. It must still be read.
    write(&s.install.join(f), &original);
    set_mtime(&s.install.join(f), md.mtime(), md.mtime_nsec());
    s.snapshot(&env);
    let third = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert!(third["live_files_read"].as_u64().unwrap() >= 1, "{third}");
}

#[test]
fn files_already_in_the_live_tree_are_linked_or_copied_not_rebuilt() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    // The standby already has /install from the rsync days (same mtimes),
    // with one file out of date.
    fs::create_dir_all(s.live_install().parent().unwrap()).unwrap();
    copy_tree(&s.install, &s.live_install());
    write(&s.live_install().join("d1/s1/f1.txt"), b"stale copy");
    let st = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    // Hard links without reflinks, reflinked copies with them.
    let reused = st["files_copied"].as_u64().unwrap() + st["files_linked"].as_u64().unwrap();
    assert!(reused >= 190, "{st}");
    // Only the stale file (and nothing big) was rebuilt from the store.
    assert!(st["bytes_written"].as_u64().unwrap() < 10_000, "{st}");
    // The old tree stays as the previous generation, untouched.
    let prev = gen_previous(&s.live_install());
    assert_eq!(fs::read(prev.join("d1/s1/f1.txt")).unwrap(), b"stale copy");
}

/// Free bytes of the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let v = rustix::fs::statvfs(p).expect("statvfs");
    v.f_bfree * v.f_frsize
}

#[test]
fn on_xfs_unchanged_files_are_reflinked_not_written() {
    let env = Env::new();
    let xfs = Mount::xfs(&env.path("xfs.img"), &env.path("xfs"));
    let mut s = site(&env);
    s.root = xfs.path.join("root");
    fs::create_dir_all(&s.root).unwrap();
    s.snapshot(&env);
    let first = materialize(&env, &s.root, &[]);
    assert_eq!(first["files_cloned"], 0, "nothing to clone from: {first}");
    let mtime = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    let night0_top = mtime(&s.install);
    // The second deployment has no previous generation: every file that
    // did not change comes from the live tree.
    write(&s.install.join("night1"), b"1");
    s.snapshot(&env);
    let free = free_bytes(&xfs.path);
    let st = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    let cloned = st["bytes_cloned"].as_u64().unwrap();
    assert!(cloned >= 3_000_000, "the package was not reflinked: {st}");
    assert_eq!(st["files_cloned"], st["files_copied"], "{st}");
    // Shared blocks: the file system barely shrank.
    let used = free.saturating_sub(free_bytes(&xfs.path));
    assert!(
        used < cloned / 4,
        "{used} bytes used for {cloned} bytes reflinked"
    );
    // XFS gives a directory moved to another parent a new mtime: both
    // swapped trees keep their snapshot's.
    assert_eq!(mtime(&s.live_install()), mtime(&s.install));
    assert_eq!(mtime(&gen_previous(&s.live_install())), night0_top);
    // Both generations hold the package, one copy on disk.
    assert_eq!(
        fs::read(s.live_install().join("pool/kernel.rpm")).unwrap(),
        fs::read(gen_previous(&s.live_install()).join("pool/kernel.rpm")).unwrap()
    );
    // The third deployment brings the first generation forward: last
    // night's file is reflinked from the live tree, not hard-linked, so the
    // generations share no inode.
    write(&s.install.join("night2"), b"2");
    s.snapshot(&env);
    let third = materialize(&env, &s.root, &[]);
    s.assert_deployed_equals_source();
    assert_eq!(third["files_linked"], 0, "{third}");
    assert!(third["files_cloned"].as_u64().unwrap() >= 1, "{third}");
    assert_ne!(
        fs::metadata(s.live_install().join("night1")).unwrap().ino(),
        fs::metadata(gen_previous(&s.live_install()).join("night1"))
            .unwrap()
            .ino()
    );
}

#[test]
fn a_managed_directory_that_is_a_symlink_is_refused() {
    let env = Env::new();
    let s = site(&env);
    s.snapshot(&env);
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    write(&elsewhere.join("keep"), b"not hamn's");
    fs::create_dir_all(s.live_install().parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.live_install()).unwrap();
    let out = env.run(&["materialize", "--root", s.root.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out));
    assert!(
        fs::symlink_metadata(s.live_install())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
}

pub fn gen_previous(live: &Path) -> PathBuf {
    let name = live.file_name().unwrap().to_string_lossy().into_owned();
    live.with_file_name(format!(".{name}.hamn"))
        .join("previous")
}
