//! Random sequences of edits, each followed by a snapshot; every snapshot
//! must later restore to exactly the tree it was taken of.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::common::*;

#[derive(Debug, Clone)]
enum Op {
    Write { file: u8, size: u32, seed: u64 },
    Append { file: u8, size: u16 },
    Delete { file: u8 },
    Rename { from: u8, to: u8 },
    Chmod { file: u8, mode: u16 },
    Symlink { file: u8, target: u8 },
    Hardlink { file: u8, target: u8 },
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12u8, 0..3_000_000u32, any::<u64>()).prop_map(|(file, size, seed)| Op::Write { file, size, seed }),
        2 => (0..12u8, 1..5000u16).prop_map(|(file, size)| Op::Append { file, size }),
        1 => (0..12u8).prop_map(|file| Op::Delete { file }),
        1 => (0..12u8, 0..12u8).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (0..12u8, 0..0o7777u16).prop_map(|(file, mode)| Op::Chmod { file, mode }),
        1 => (0..12u8, 0..12u8).prop_map(|(file, target)| Op::Symlink { file, target }),
        1 => (0..12u8, 0..12u8).prop_map(|(file, target)| Op::Hardlink { file, target }),
        2 => Just(Op::Snapshot),
    ]
}

fn file_path(src: &Path, n: u8) -> PathBuf {
    src.join(format!("d{}/f{n}", n % 3))
}

fn apply(src: &Path, op: &Op) {
    match *op {
        Op::Write { file, size, seed } => {
            let p = file_path(src, file);
            let _ = fs::remove_file(&p);
            let data = if seed % 2 == 0 {
                bytes(size as usize, seed)
            } else {
                text(size as usize, seed)
            };
            write(&p, &data);
        }
        Op::Append { file, size } => {
            let p = file_path(src, file);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
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
            if a.exists() {
                fs::create_dir_all(b.parent().unwrap()).unwrap();
                fs::rename(a, b).unwrap();
            }
        }
        Op::Chmod { file, mode } => {
            let p = file_path(src, file);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode as u32)).unwrap();
            }
        }
        Op::Symlink { file, target } => {
            let p = file_path(src, file);
            let _ = fs::remove_file(&p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(format!("../d{}/f{target}", target % 3), &p).unwrap();
        }
        Op::Hardlink { file, target } => {
            let (p, t) = (file_path(src, file), file_path(src, target));
            if p != t
                && fs::symlink_metadata(&t)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
            {
                let _ = fs::remove_file(&p);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::hard_link(&t, &p).unwrap();
            }
        }
        Op::Snapshot => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_snapshot_restores_to_the_tree_it_was_taken_of(ops in proptest::collection::vec(op(), 4..16)) {
        let env = Env::new();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        let mut taken: Vec<(String, PathBuf)> = Vec::new();
        let mut ops = ops;
        ops.push(Op::Snapshot);
        for (i, op) in ops.iter().enumerate() {
            apply(&src, op);
            if let Op::Snapshot = op {
                let id = env.snapshot(&[&src]);
                let frozen = env.path(&format!("frozen-{i}"));
                copy_tree(&src, &frozen);
                taken.push((id, frozen));
            }
        }
        for (n, (id, frozen)) in taken.iter().enumerate() {
            let restored = restore_all(&env, id, &src, &format!("restored-{n}"));
            assert_same_tree(frozen, &restored);
        }
        env.ok(&["check", "--read-data"]);
    }
}
