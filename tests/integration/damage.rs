//! Damaged stores: a flipped byte or a truncated pack is found by
//! `check --read-data` with the affected paths; reading an affected file
//! fails clearly and never yields wrong bytes; other files still restore;
//! `check --repair` rebuilds a lost index from the packs.

use std::fs;
use std::os::unix::fs::FileExt;

use crate::common::*;

/// Two snapshots; the second adds one large file whose data is the first
/// record of the newest pack.
fn two_snapshots(env: &Env) -> (std::path::PathBuf, String, String) {
    let src = env.path("src");
    make_tree(&src, 50, 3);
    let first = env.snapshot(&[&src]);
    write(&src.join("victim.rpm"), &bytes(1024 * 1024, 99));
    let second = env.snapshot(&[&src]);
    (src, first, second)
}

#[test]
fn a_flipped_byte_is_found_and_never_returned_as_content() {
    let env = Env::new();
    let (src, first, second) = two_snapshots(&env);
    let newest = packs(&env.store()).pop().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&newest)
        .unwrap();
    let mut b = [0u8; 1];
    let at = 16 + 42 + 1000; // inside the first record's stored bytes
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);

    // Structure still looks fine; the data check finds it and names the path.
    env.ok(&["check"]);
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("victim.rpm"),
        "affected path not named:\n{text}"
    );

    let victim = src.join("victim.rpm");
    let cat = env.run(&["cat", &second, victim.to_str().unwrap()]);
    assert_eq!(code(&cat), 1);
    assert!(cat.stdout.is_empty(), "damaged bytes were printed");
    assert!(stderr(&cat).contains("damaged"), "{}", stderr(&cat));

    // Restoring the whole tree: the victim is reported and absent, the rest is exact.
    let to = env.path("out");
    fs::create_dir_all(&to).unwrap();
    let out = env.run(&[
        "restore",
        &second,
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("victim.rpm"));
    let restored = to.join(src.strip_prefix("/").unwrap());
    assert!(
        !restored.join("victim.rpm").exists(),
        "a damaged file was left behind"
    );
    fs::remove_file(&victim).unwrap();
    let keep = facts(&src);
    let got = facts(&restored);
    for (k, v) in &keep {
        if k.as_slice() != b"." {
            if v.kind == "dir" {
                continue; // directory mtimes differ: the victim was removed in src
            }
            assert_eq!(Some(v), got.get(k), "{:?}", String::from_utf8_lossy(k));
        }
    }
    // The older snapshot does not use the damaged pack at all.
    let old = restore_all(&env, &first, &src, "old");
    assert!(old.join("d1").is_dir());
}

#[test]
fn a_truncated_pack_is_reported() {
    let env = Env::new();
    let (src, first, _second) = two_snapshots(&env);
    let newest = packs(&env.store()).pop().unwrap();
    let len = fs::metadata(&newest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("affects"));
    // The first snapshot is untouched.
    let restored = restore_all(&env, &first, &src, "r");
    assert!(restored.join("d0").is_dir());
}

#[test]
fn repair_rebuilds_a_lost_index() {
    let env = Env::new();
    let (src, _first, second) = two_snapshots(&env);
    fs::remove_file(env.store().join("index.redb")).unwrap();
    let out = env.run(&["cat", &second, src.join("victim.rpm").to_str().unwrap()]);
    assert_eq!(
        code(&out),
        1,
        "reading without an index must fail, not invent data"
    );
    env.ok(&["check", "--repair"]);
    env.ok(&["check", "--read-data"]);
    let out = env.run(&["cat", &second, src.join("victim.rpm").to_str().unwrap()]);
    assert_eq!(out.stdout, bytes(1024 * 1024, 99));
}

/// A new store on a tmpfs of `size`, and a runner of hamn on that store.
fn store_on_tmpfs(env: &Env, size: &str) -> (Mount, impl Fn(&[&str]) -> std::process::Output) {
    let small = Mount::tmpfs(&env.path("small"), size);
    let store = small.path.join("store");
    let run = move |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(code(&run(&["init"])), 0);
    (small, run)
}

#[test]
fn disk_full_while_snapshotting_loses_nothing() {
    let env = Env::bare();
    let (_small, run) = store_on_tmpfs(&env, "4m");
    let src = env.path("src");
    write(&src.join("small.txt"), b"fits");
    assert_eq!(code(&run(&["snapshot", src.to_str().unwrap()])), 0);
    write(&src.join("huge.bin"), &bytes(8 * 1024 * 1024, 5));
    let out = run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // Nothing earlier is lost, and nothing half-written is visible.
    let out = run(&["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(code(&run(&["check", "--read-data"])), 0);
    let cat = run(&["cat", "latest", src.join("small.txt").to_str().unwrap()]);
    assert_eq!(cat.stdout, b"fits");
}

#[test]
fn a_full_disk_under_the_index_is_reported_as_a_full_disk_and_loses_nothing() {
    let env = Env::bare();
    let (small, run) = store_on_tmpfs(&env, "3m");
    // 20,000 small distinct files: their pack fits, the index's growth
    // for their 20,000 rows does not.
    let src = env.path("src");
    for d in 0..20 {
        for i in 0..1000 {
            write(
                &src.join(format!("d{d}/f{i}")),
                format!("file {d} {i}\n").as_bytes(),
            );
        }
    }
    let out = run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("index.redb: No space left"), "{err}");
    // The disk is the problem, not the index: no rebuild is asked for.
    assert!(!err.contains("--repair"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // With room made, the store is whole and the snapshot goes through.
    small.resize("32m");
    let out = run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&run(&["snapshot", src.to_str().unwrap()])), 0);
    let cat = run(&["cat", "latest", src.join("d7/f9").to_str().unwrap()]);
    assert_eq!(cat.stdout, b"file 7 9\n");
    assert_eq!(code(&run(&["check", "--read-data"])), 0);
}

#[test]
fn a_damaged_snapshot_record_blocks_nothing_else() {
    let env = Env::new();
    let (src, first, second) = two_snapshots(&env);
    let record = env.store().join("snapshots").join(&first);
    let mut bytes_ = fs::read(&record).unwrap();
    let last = bytes_.len() - 1;
    bytes_[last] ^= 1;
    fs::write(&record, &bytes_).unwrap();

    // Listing leaves it out with a warning naming the file.
    let out = env.run(&["--json", "snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = one_json(&out);
    let ids: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
    let err = stderr(&out);
    assert!(
        err.contains(record.to_str().unwrap()) && err.contains("hamn check"),
        "{err}"
    );
    // Reading and snapshotting still work.
    let cat = env.run(&["cat", "latest", src.join("victim.rpm").to_str().unwrap()]);
    assert_eq!(cat.stdout, bytes(1024 * 1024, 99));
    env.snapshot(&[&src]);
    // check names the record as a problem.
    let out = env.run(&["--json", "check"]);
    assert_eq!(code(&out), 1);
    let v = one_json(&out);
    let problems = v["report"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains(record.to_str().unwrap()),
        "{problems:?}"
    );
    assert_eq!(v["report"]["snapshots"], 2);
}

#[test]
fn damage_in_a_shared_tree_is_listed_in_every_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    let big = src.join("shared/big.bin");
    write(&big, &bytes(1024 * 1024, 21));
    let first = env.snapshot(&[&src]);
    // The later snapshots reuse the unchanged tree of shared/.
    write(&src.join("other.txt"), b"new");
    let second = env.snapshot(&[&src]);
    write(&src.join("other.txt"), b"newer");
    let third = env.snapshot(&[&src]);
    damage_largest_chunk(&packs(&env.store())[0]);

    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v = one_json(&out);
    let problems = v["report"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let mut affects: Vec<&str> = problems[0]["affects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    affects.sort();
    let mut want: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|id| format!("{}:{}", &id[..8], big.display()))
        .collect();
    want.sort();
    assert_eq!(affects, want);
}

#[test]
fn repair_replaces_an_index_that_cannot_be_opened() {
    let env = Env::new();
    let (src, _first, second) = two_snapshots(&env);
    let index = env.store().join("index.redb");
    fs::write(&index, bytes(100_000, 5)).unwrap();
    let out = env.run(&["cat", &second, src.join("victim.rpm").to_str().unwrap()]);
    assert_eq!(code(&out), 1, "a garbage index must not be read");

    let out = env.run(&["--json", "check", "--repair"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = one_json(&out);
    let aside = std::path::PathBuf::from(v["repair"]["index_moved_aside"].as_str().unwrap());
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("index.redb.damaged-"),
        "{}",
        aside.display()
    );
    assert_eq!(aside.parent().unwrap(), env.store());
    assert_eq!(
        fs::read(&aside).unwrap(),
        bytes(100_000, 5),
        "old index kept"
    );
    assert!(stderr(&out).contains("moved aside"), "{}", stderr(&out));
    env.ok(&["check", "--read-data"]);
    let out = env.run(&["cat", &second, src.join("victim.rpm").to_str().unwrap()]);
    assert_eq!(out.stdout, bytes(1024 * 1024, 99));
}

#[test]
fn read_data_repair_makes_the_next_snapshot_store_damaged_data_again() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big.bin"), &bytes(1024 * 1024, 31));
    write(&src.join("small.txt"), b"small");
    let first = env.snapshot(&[&src]);
    // A snapshot's trees are held complete: the next one reuses their
    // unchanged files without looking up each one's chunks.
    let root_complete = || {
        let store = hamn::store::Store::open_read_only(&env.store()).unwrap();
        let id = hamn::id::SnapshotId::from_hex(&first).unwrap();
        let root = store.read_snapshot(id).unwrap().root;
        store.index().is_complete(&root.0).unwrap()
    };
    assert!(root_complete());
    damage_largest_chunk(&packs(&env.store())[0]);

    let out = env.run(&["--json", "check", "--read-data", "--repair"]);
    assert_eq!(code(&out), 1, "the damage is still there");
    assert_eq!(one_json(&out)["repair"]["blobs_dropped"], 1);
    assert!(
        !root_complete(),
        "a dropped chunk leaves no tree held complete"
    );
    // The file is unchanged, but its damaged chunk is no longer indexed:
    // the snapshot reads it again instead of reusing its chunk list.
    let v = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(v["stats"]["files_read"], 1, "{v}");
    assert_eq!(v["stats"]["files_reused"], 1, "{v}");
    let big = src.join("big.bin");
    for snap in [v["id"].as_str().unwrap(), first.as_str()] {
        let out = env.run(&["cat", snap, big.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            out.stdout == bytes(1024 * 1024, 31),
            "wrong bytes from {snap}"
        );
    }
}

#[test]
fn read_data_repair_makes_the_next_push_resend_damaged_data() {
    let env = Env::new();
    let src = env.path("src");
    let big = src.join("big.bin");
    write(&big, &bytes(1024 * 1024, 41));
    write(&src.join("small.txt"), b"small");
    let first = env.snapshot(&[&src]);
    let sb = env.path("standby");
    let standby = |args: &[&str]| standby(&sb, args);
    assert_eq!(code(&standby(&["init"])), 0);
    env.ok(&["push", "--to", sb.to_str().unwrap()]);
    damage_largest_chunk(&packs(&sb)[0]);

    let out = standby(&["--json", "check", "--read-data", "--repair"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(one_json(&out)["repair"]["blobs_dropped"], 1);
    // The next night: a new snapshot whose unchanged parts the standby
    // claimed to hold complete before the repair.
    write(&src.join("small.txt"), b"changed");
    let second = env.snapshot(&[&src]);
    env.ok(&["push", "--to", sb.to_str().unwrap()]);
    for snap in [&second, &first] {
        let out = standby(&["cat", snap, big.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            out.stdout == bytes(1024 * 1024, 41),
            "wrong bytes from {snap}"
        );
    }
}

#[test]
fn a_crafted_trailer_offset_cannot_crash_repair() {
    let env = Env::new();
    let (src, _first, second) = two_snapshots(&env);
    let newest = packs(&env.store()).pop().unwrap();
    // Self-consistent (checksum fixed up) but offset + length overflows u64.
    rewrite_trailer(&newest, |i, entry| {
        if i == 0 {
            entry[34..42].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        }
    });
    let out = env.run(&["--json", "check", "--repair"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = one_json(&out);
    let salvaged = v["repair"]["packs_salvaged"].as_array().unwrap();
    assert_eq!(salvaged.len(), 1, "{v}");
    assert!(
        salvaged[0]
            .as_str()
            .unwrap()
            .contains(newest.to_str().unwrap())
    );
    // Its records were intact: everything is readable again.
    let out = env.run(&["cat", &second, src.join("victim.rpm").to_str().unwrap()]);
    assert!(out.stdout == bytes(1024 * 1024, 99));
}

#[test]
fn a_completeness_mark_no_snapshot_reaches_is_checked() {
    let env = Env::new();
    let (src, first, second) = two_snapshots(&env);
    let frozen = restore_all(&env, &first, &src, "before");
    // The second record goes, as if its run had been killed just before
    // publishing: its trees stay marked complete, and the marks hold.
    fs::remove_file(env.store().join("snapshots").join(&second)).unwrap();
    env.ok(&["check"]);
    // Its pack goes too: the marks now vouch for trees that are gone.
    let newest = packs(&env.store()).pop().unwrap();
    fs::remove_file(&newest).unwrap();
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no snapshot reaches are marked complete but lack data"),
        "false mark not reported:\n{text}"
    );
    // Repair forgets the marks; the first snapshot is whole.
    env.ok(&["check", "--repair"]);
    env.ok(&["check", "--read-data"]);
    assert_same_tree(&frozen, &restore_all(&env, &first, &src, "after"));
}
