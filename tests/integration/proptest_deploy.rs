//! Night after night onto one standby root: random edits on the primary,
//! then `hamn sync` (snapshot, push to the standby's store, deployment
//! under its root), and after every night the deployed tree equals the
//! primary's in every attribute, directory mtimes to the nanosecond
//! included. Some nights the deployment is killed part-way first (the
//! next one starts from what it left); some nights end with a rollback,
//! which must bring back the earlier night exactly.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;

use crate::common::*;

/// Directories an edit can aim at, relative to the managed directory
/// ("" is the managed directory itself). `d0`..`d2` may become files.
const DIRS: [&str; 7] = ["", "d0", "d1", "d2", "d0/s", "d1/s", "d2/s"];
const FILES: u8 = 12;
const XATTR: &str = "user.hamn.test";

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: u8,
        size: u32,
        seed: u64,
    },
    Append {
        file: u8,
        size: u16,
    },
    Delete {
        file: u8,
    },
    Rename {
        from: u8,
        to: u8,
    },
    Chmod {
        file: u8,
        mode: u16,
    },
    Symlink {
        file: u8,
        target: u8,
    },
    Hardlink {
        file: u8,
        target: u8,
    },
    /// Write a few bytes `gap` bytes past the end: the file grows a hole.
    Sparse {
        file: u8,
        gap: u32,
    },
    /// An entry made in the directory and removed again, and its mtime
    /// set: only the directory's own mtime changes.
    TouchDir {
        dir: u8,
        sec: u32,
        nsec: u32,
    },
    ChmodDir {
        dir: u8,
        mode: u16,
    },
    ChownDir {
        dir: u8,
        uid: u8,
        gid: u8,
    },
    SetXattr {
        dir: u8,
        value: u8,
    },
    RemoveXattr {
        dir: u8,
    },
    /// A top-level directory becomes a file, or a file a directory.
    DirFile {
        dir: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..FILES;
    let dir = 0..DIRS.len() as u8;
    prop_oneof![
        3 => (file.clone(), 0..300_000u32, any::<u64>()).prop_map(|(file, size, seed)| Op::Write { file, size, seed }),
        1 => (file.clone(), 1..5000u16).prop_map(|(file, size)| Op::Append { file, size }),
        1 => file.clone().prop_map(|file| Op::Delete { file }),
        1 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (file.clone(), 0..0o7777u16).prop_map(|(file, mode)| Op::Chmod { file, mode }),
        1 => (file.clone(), file.clone()).prop_map(|(file, target)| Op::Symlink { file, target }),
        2 => (file.clone(), file.clone()).prop_map(|(file, target)| Op::Hardlink { file, target }),
        1 => (file, 1_100_000..3_000_000u32).prop_map(|(file, gap)| Op::Sparse { file, gap }),
        4 => (dir.clone(), any::<u32>(), 0..1_000_000_000u32).prop_map(|(dir, sec, nsec)| Op::TouchDir { dir, sec, nsec }),
        2 => (dir.clone(), 0o500..0o7777u16).prop_map(|(dir, mode)| Op::ChmodDir { dir, mode }),
        2 => (dir.clone(), 0..3u8, 0..3u8).prop_map(|(dir, uid, gid)| Op::ChownDir { dir, uid, gid }),
        2 => (dir.clone(), any::<u8>()).prop_map(|(dir, value)| Op::SetXattr { dir, value }),
        1 => dir.prop_map(|dir| Op::RemoveXattr { dir }),
        1 => (1..4u8).prop_map(|dir| Op::DirFile { dir }),
    ]
}

#[derive(Debug, Clone)]
struct Night {
    ops: Vec<Op>,
    /// Kill the night's first deployment at its N-th action (a sync that
    /// has fewer actions is not killed), then sync again.
    kill_at: Option<u32>,
    /// Roll the standby back after the night's deployment.
    rollback: bool,
}

fn night() -> impl Strategy<Value = Night> {
    (
        proptest::collection::vec(op(), 1..8),
        proptest::option::weighted(0.3, 1..4u32),
        proptest::bool::weighted(0.25),
    )
        .prop_map(|(ops, kill_at, rollback)| Night {
            ops,
            kill_at,
            rollback,
        })
}

fn file_path(src: &Path, n: u8) -> PathBuf {
    if n < 6 {
        src.join(format!("d{}/f{n}", n % 3))
    } else {
        src.join(format!("d{}/s/f{n}", n % 3))
    }
}

fn is_file(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Make `p`'s parent directories below `src`; false when a non-directory
/// stands in the way (the edit is then not made).
fn parent_ready(src: &Path, p: &Path) -> bool {
    let parent = p.parent().unwrap();
    let blocked = parent
        .ancestors()
        .take_while(|a| *a != src)
        .any(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()));
    if blocked {
        return false;
    }
    fs::create_dir_all(parent).unwrap();
    true
}

fn apply(src: &Path, op: &Op) {
    let dir = |d: u8| src.join(DIRS[d as usize]);
    match *op {
        Op::Write { file, size, seed } => {
            let p = file_path(src, file);
            if parent_ready(src, &p) {
                let _ = fs::remove_file(&p);
                let data = if seed % 2 == 0 {
                    bytes(size as usize, seed)
                } else {
                    text(size as usize, seed)
                };
                fs::write(&p, data).unwrap();
            }
        }
        Op::Append { file, size } => {
            let p = file_path(src, file);
            if is_file(&p) {
                use std::io::Write;
                let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(&text(size as usize, size as u64)).unwrap();
            }
        }
        Op::Delete { file } => {
            let _ = fs::remove_file(file_path(src, file));
        }
        Op::Rename { from, to } => {
            let (a, b) = (file_path(src, from), file_path(src, to));
            if fs::symlink_metadata(&a).is_ok() && parent_ready(src, &b) {
                fs::rename(a, b).unwrap();
            }
        }
        Op::Chmod { file, mode } => {
            let p = file_path(src, file);
            if is_file(&p) {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode as u32)).unwrap();
            }
        }
        Op::Symlink { file, target } => {
            let p = file_path(src, file);
            if parent_ready(src, &p) {
                let _ = fs::remove_file(&p);
                std::os::unix::fs::symlink(format!("../d{}/f{target}", target % 3), &p).unwrap();
            }
        }
        Op::Hardlink { file, target } => {
            let (p, t) = (file_path(src, file), file_path(src, target));
            if p != t && is_file(&t) && parent_ready(src, &p) {
                let _ = fs::remove_file(&p);
                fs::hard_link(&t, &p).unwrap();
            }
        }
        Op::Sparse { file, gap } => {
            let p = file_path(src, file);
            if (is_file(&p) || fs::symlink_metadata(&p).is_err()) && parent_ready(src, &p) {
                use std::os::unix::fs::FileExt;
                let f = fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&p)
                    .unwrap();
                let end = f.metadata().unwrap().len();
                f.write_all_at(&text(4096, gap as u64), end + gap as u64)
                    .unwrap();
            }
        }
        Op::TouchDir { dir: d, sec, nsec } => {
            let d = dir(d);
            if is_dir(&d) {
                let tmp = d.join("tmp.entry");
                fs::write(&tmp, b"x").unwrap();
                fs::remove_file(&tmp).unwrap();
                set_mtime(&d, 1_500_000_000 + (sec % 300_000_000) as i64, nsec as i64);
            }
        }
        Op::ChmodDir { dir: d, mode } => {
            let d = dir(d);
            if is_dir(&d) {
                fs::set_permissions(&d, fs::Permissions::from_mode(mode as u32)).unwrap();
            }
        }
        Op::ChownDir { dir: d, uid, gid } => {
            let d = dir(d);
            if is_dir(&d) {
                let ids = [0, 1000, 1001];
                std::os::unix::fs::lchown(&d, Some(ids[uid as usize]), Some(ids[gid as usize]))
                    .unwrap();
            }
        }
        Op::SetXattr { dir: d, value } => {
            let d = dir(d);
            if is_dir(&d) {
                let v = vec![value; 1 + value as usize % 5];
                rustix::fs::lsetxattr(&d, XATTR, &v, rustix::fs::XattrFlags::empty()).unwrap();
            }
        }
        Op::RemoveXattr { dir: d } => {
            let _ = rustix::fs::lremovexattr(dir(d), XATTR);
        }
        Op::DirFile { dir: d } => {
            let d = dir(d);
            if is_dir(&d) {
                fs::remove_dir_all(&d).unwrap();
                fs::write(&d, b"a directory no more\n").unwrap();
            } else {
                let _ = fs::remove_file(&d);
                fs::create_dir(&d).unwrap();
            }
        }
    }
}

struct Standby {
    store: PathBuf,
    root: PathBuf,
    live: PathBuf,
}

impl Standby {
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("HAMN_CONFIG").arg("--store").arg(&self.store);
        c
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The live tree is `expected` (`None`: nothing deployed yet), the
    /// managed directory itself included, and `status` sees no drift.
    fn assert_live(&self, expected: Option<&Path>, when: &str) {
        let Some(expected) = expected else {
            assert!(!self.live.exists(), "{when}: deployed though nothing was");
            return;
        };
        assert_same_top(expected, &self.live);
        assert_same_tree(expected, &self.live);
        let st = self.json(&["status", "--root", self.root.to_str().unwrap()]);
        let drifted = &st["deployment"]["drifted"];
        assert_eq!(drifted.as_array().map(Vec::len), Some(0), "{when}: {st}");
    }
}

fn sync(cfg: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("HAMN_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "--json", "sync"]);
    c
}

fn run_nights(nights: &[Night]) {
    require_root();
    let env = Env::new();
    let src = env.path("primary/install");
    fs::create_dir_all(src.join("d0/s")).unwrap();
    write(&src.join("d1/f1"), b"first night\n");
    let sb = Standby {
        store: env.path("standby"),
        root: env.path("standby-root"),
        live: env
            .path("standby-root")
            .join(src.strip_prefix("/").unwrap()),
    };
    fs::create_dir_all(&sb.root).unwrap();
    sb.json(&["init"]);
    let cfg = env.path("hamn.toml");
    fs::write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\n[standby]\nurl = '{}'\nmaterialize = true\nroot = '{}'\n",
            env.store().display(),
            src.display(),
            sb.store.display(),
            sb.root.display()
        ),
    )
    .unwrap();
    // Snapshot id -> a copy of the primary's tree as that night left it.
    let mut frozen: HashMap<String, PathBuf> = HashMap::new();
    let mut deployed: Option<PathBuf> = None;
    for (n, night) in nights.iter().enumerate() {
        for op in &night.ops {
            apply(&src, op);
        }
        if let Some(k) = night.kill_at {
            let out = sync(&cfg)
                .env("HAMN_FAILPOINT", format!("deploy:applying:{k}"))
                .output()
                .unwrap();
            if out.status.signal() == Some(9) {
                sb.assert_live(deployed.as_deref(), &format!("night {n}, killed"));
            } else {
                assert_eq!(code(&out), 0, "night {n}: {}", stderr(&out));
            }
        }
        let out = sync(&cfg).output().unwrap();
        assert_eq!(code(&out), 0, "night {n}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["snapshot"]["id"].as_str().unwrap().to_string();
        assert_eq!(v["materialize"]["snapshot"], id.as_str(), "night {n}: {v}");
        let copy = env.path(&format!("night-{n}"));
        copy_tree(&src, &copy);
        sb.assert_live(Some(&copy), &format!("night {n}"));
        frozen.insert(id, copy.clone());
        deployed = Some(copy);
        if night.rollback {
            let st = sb.json(&["status", "--root", sb.root.to_str().unwrap()]);
            let Some(previous) = st["deployment"]["previous"].as_str() else {
                // Nothing to go back to yet (the first deployment, or only
                // nights with the deployed content since): a clear refusal
                // that changes nothing.
                let out = sb
                    .cmd()
                    .args(["rollback", "--root", sb.root.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 1, "night {n}: {}", stderr(&out));
                assert!(
                    stderr(&out).contains("no previous generation"),
                    "{}",
                    stderr(&out)
                );
                sb.assert_live(deployed.as_deref(), &format!("night {n}, no rollback"));
                continue;
            };
            sb.json(&["rollback", "--root", sb.root.to_str().unwrap()]);
            let back = frozen[previous].clone();
            sb.assert_live(Some(&back), &format!("night {n}, rolled back"));
            deployed = Some(back);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_night_the_standby_equals_the_primary_in_every_attribute(
        nights in proptest::collection::vec(night(), 3..8)
    ) {
        run_nights(&nights);
    }
}

/// The case of the report: two directories whose entries come and go
/// within a night, so that only their own mtime changes, deployed from
/// the previous generation on the third night.
#[test]
fn a_directory_whose_only_change_is_its_mtime_is_deployed_with_it() {
    let touch = |dir| Op::TouchDir {
        dir,
        sec: 7,
        nsec: 123_456_789,
    };
    let night = |ops| Night {
        ops,
        kill_at: None,
        rollback: false,
    };
    run_nights(&[
        night(vec![Op::Write {
            file: 7,
            size: 100,
            seed: 1,
        }]),
        night(vec![touch(4)]),
        night(vec![touch(2), touch(4)]),
        night(vec![touch(0)]),
    ]);
}

/// A rollback with nothing to go back to: after the first deployment, and
/// after a night whose snapshot had the deployed content (recorded
/// without a new generation).
#[test]
fn a_rollback_with_nothing_to_go_back_to_is_refused_and_changes_nothing() {
    let night = |ops, rollback| Night {
        ops,
        kill_at: None,
        rollback,
    };
    run_nights(&[
        night(
            vec![Op::ChmodDir {
                dir: 1,
                mode: 0o750,
            }],
            true,
        ),
        // Appending to a file that does not exist changes nothing.
        night(vec![Op::Append { file: 11, size: 10 }], true),
        night(
            vec![Op::TouchDir {
                dir: 4,
                sec: 1,
                nsec: 2,
            }],
            true,
        ),
    ]);
}

/// An xattr removed from the managed directory itself on the primary is
/// removed on the standby too, when the staging tree comes from a
/// generation that still had it.
#[test]
fn an_xattr_removed_from_the_managed_directory_goes_on_the_standby() {
    let night = |ops| Night {
        ops,
        kill_at: None,
        rollback: false,
    };
    run_nights(&[
        night(vec![Op::SetXattr { dir: 0, value: 1 }]),
        night(vec![Op::Write {
            file: 3,
            size: 10,
            seed: 2,
        }]),
        night(vec![Op::RemoveXattr { dir: 0 }]),
    ]);
}
