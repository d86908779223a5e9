//! Snapshot behaviour: incremental reuse, dedup, excludes, one file
//! system, hooks, store permissions, files changing while read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `hamn --config CFG snapshot`.
fn snapshot_with_config(cfg: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshot"])
        .output()
        .unwrap()
}

fn stats(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["snapshot"];
    a.extend_from_slice(args);
    env.json(&a)["stats"].clone()
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 300, 1);
    let s = src.to_str().unwrap();
    let first = stats(&env, &[s]);
    assert_eq!(first["files"], 300);
    assert_eq!(first["files_read"], 300);
    let second = stats(&env, &[s]);
    assert_eq!(second["files_reused"], 300);
    assert_eq!(second["bytes_read"], 0);
    // No file data is stored again; at most the trees of the directories
    // above the managed path (/tmp changes under a parallel test run).
    let depth = src.components().count() as u64;
    assert!(
        second["blobs_added"].as_u64().unwrap() < depth,
        "no-change snapshot wrote data: {second}"
    );
    assert!(
        second["bytes_added_plain"].as_u64().unwrap() < 64 * 1024,
        "{second}"
    );
    // One file changed: only it is read.
    write(&src.join("d1/s1/f1.txt"), b"changed");
    let third = stats(&env, &[s]);
    assert_eq!(third["files_read"], 1);
    assert_eq!(third["files_reused"], 299);
}

/// A directory, symlink or device untouched since the parent snapshot is
/// taken with the xattrs (and target) recorded there; one whose inode
/// changed, by a new xattr or by being made anew, is read again.
#[test]
fn entries_other_than_files_are_read_again_only_when_their_inode_changed() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    write(&src.join("dir/sub/file"), b"data");
    std::os::unix::fs::symlink("target-aaaa", src.join("link")).unwrap();
    std::os::unix::fs::symlink("target-bbbb", src.join("kept")).unwrap();
    let set = |p: &Path, v: &[u8]| {
        rustix::fs::lsetxattr(p, "trusted.hamn", v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set(&src.join("dir"), b"one");
    set(&src.join("kept"), b"one");
    let s = src.to_str().unwrap();
    env.ok(&["snapshot", s]);
    // A second snapshot with no change, so the third has a parent that
    // itself reused everything.
    assert_eq!(stats(&env, &[s])["files_reused"], 1);
    set(&src.join("dir"), b"two");
    set(&src.join("dir/sub"), b"new");
    set(&src.join("kept"), b"two");
    // Same length, new inode (the number may well be reused).
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("target-cccc", src.join("link")).unwrap();
    env.ok(&["snapshot", s]);
    let restored = restore_all(&env, "latest", &src, "restored");
    assert_same_tree(&src, &restored);
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("target-cccc")
    );
}

/// Reading a file for a snapshot leaves the page cache as it was: a file
/// read from the disk is dropped again, a cached one (what the node
/// serves) stays cached.
#[test]
fn a_snapshot_leaves_the_page_cache_as_it_found_it() {
    let env = Env::new();
    let src = env.path("src");
    let cold = src.join("cold.img");
    let hot = src.join("hot.img");
    // Larger than what a file read from disk may keep cached while read.
    write(&cold, &bytes(20 << 20, 1));
    write(&hot, &bytes(4 << 20, 2));
    drop_from_cache(&cold);
    fs::read(&hot).unwrap();
    let (hot_cached, hot_pages) = cached_pages(&hot);
    assert_eq!(hot_cached, hot_pages);
    let st = stats(&env, &[src.to_str().unwrap()]);
    assert_eq!(st["files_read"], 2, "{st}");
    assert_eq!(
        cached_pages(&cold).0,
        0,
        "the file read from disk stayed cached"
    );
    assert_eq!(
        cached_pages(&hot),
        (hot_pages, hot_pages),
        "a cached file was dropped"
    );
}

/// Chunks are read once (restore, deployment, push): their pack pages go
/// back to free memory instead of staying in the page cache; so do the
/// packs `check --read-data` read.
#[test]
fn chunks_read_from_the_store_do_not_stay_in_the_page_cache() {
    let env = Env::new();
    let src = env.path("src");
    let big = bytes(16 << 20, 3);
    write(&src.join("big.img"), &big);
    let snap = env.snapshot(&[&src]);
    let cached = || {
        packs(&env.store())
            .iter()
            .map(|p| cached_pages(p))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    // Just written: in the page cache.
    let (n, total) = cached();
    assert!(
        n * 10 > total * 9,
        "{n} of {total} pages cached after the snapshot"
    );
    let copy = restore_all(&env, &snap, &src, "restored");
    assert_eq!(fs::read(copy.join("big.img")).unwrap(), big);
    // What may stay: the pack's tail (trees, trailer) and the folio (up to
    // 2 MiB) across the end of the last chunk.
    let (n, total) = cached();
    assert!(
        n * 8 < total,
        "{n} of {total} pages still cached after a restore"
    );
    for p in packs(&env.store()) {
        fs::read(p).unwrap();
    }
    env.ok(&["check", "--read-data"]);
    // check reads the trees again after dropping the packs.
    let (n, total) = cached();
    assert!(
        n * 8 < total,
        "{n} of {total} pages still cached after check --read-data"
    );
}

#[test]
fn identical_content_is_stored_once() {
    let env = Env::new();
    let src = env.path("src");
    let pkg = bytes(3 * 1024 * 1024, 5);
    write(&src.join("pool/a.rpm"), &pkg);
    write(&src.join("other/copy-of-a.rpm"), &pkg);
    let first = stats(&env, &[src.to_str().unwrap()]);
    let stored = first["bytes_added_stored"].as_u64().unwrap();
    assert!(
        stored < 3 * 1024 * 1024 + 64 * 1024,
        "duplicate stored twice: {stored}"
    );
    // A moved file costs nothing new.
    fs::rename(src.join("pool/a.rpm"), src.join("moved.rpm")).unwrap();
    let second = stats(&env, &[src.to_str().unwrap()]);
    assert!(second["bytes_added_plain"].as_u64().unwrap() < 64 * 1024);
}

#[test]
fn excludes_from_config_and_flags_are_honoured() {
    let env = Env::new();
    let src = env.path("install");
    write(&src.join("autoinst/node1"), b"host specific");
    write(&src.join("postscripts/a"), b"keep");
    write(&src.join("tmp.iso"), b"skip me");
    let cfg = env.path("hamn.toml");
    write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\nexclude = ['{}/autoinst']\n",
            env.store().display(),
            src.display(),
            src.display()
        )
        .as_bytes(),
    );
    let out = Command::new(BIN)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "snapshot",
            "--exclude",
            "**/*.iso",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ls = env.ok(&["ls", "latest", src.to_str().unwrap(), "--recursive"]);
    assert!(ls.contains("postscripts/a"), "{ls}");
    assert!(!ls.contains("autoinst"), "{ls}");
    assert!(!ls.contains("tmp.iso"), "{ls}");
}

#[test]
fn other_file_systems_are_not_crossed_unless_asked() {
    let env = Env::new();
    let src = env.path("rootimg");
    write(&src.join("etc/fstab"), b"x");
    let proc_like = Mount::tmpfs(&src.join("proc"), "1m");
    write(&proc_like.path.join("inside-mount"), b"must not be stored");
    let snap = env.snapshot(&[&src]);
    let ls = env.ok(&["ls", &snap, src.to_str().unwrap(), "-r"]);
    assert!(ls.contains("/proc"), "mount point dir should be kept: {ls}");
    assert!(!ls.contains("inside-mount"), "{ls}");
    let crossed = env.json(&["snapshot", "--cross-file-systems", src.to_str().unwrap()]);
    let ls = env.ok(&[
        "ls",
        crossed["id"].as_str().unwrap(),
        src.to_str().unwrap(),
        "-r",
    ]);
    assert!(ls.contains("inside-mount"), "{ls}");
}

#[test]
fn pre_snapshot_hook_runs_first_and_its_failure_aborts() {
    let env = Env::new();
    let src = env.path("install");
    write(&src.join("a"), b"a");
    let cfg = env.path("hamn.toml");
    let dump = src.join("dbbackup/dump.sql");
    write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\n[hooks]\npre_snapshot = ['mkdir -p {}; echo dump > {}']\n",
            env.store().display(),
            src.display(),
            dump.parent().unwrap().display(),
            dump.display()
        )
        .as_bytes(),
    );
    let out = snapshot_with_config(&cfg);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let cat = env.run(&["cat", "latest", dump.to_str().unwrap()]);
    assert_eq!(cat.stdout, b"dump\n");

    write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}']\n[hooks]\npre_snapshot = ['echo dumpxCATdb: cannot connect >&2; exit 3']\n",
            env.store().display(),
            src.display()
        )
        .as_bytes(),
    );
    let out = snapshot_with_config(&cfg);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect") && err.contains("hook"),
        "{err}"
    );
    assert_eq!(
        env.snapshot_count(),
        1,
        "a failed hook must not leave a snapshot"
    );
}

#[test]
fn store_is_private_whatever_the_umask() {
    let env = Env::bare();
    let src = env.path("src");
    write(&src.join("shadow"), b"root:$6$secret:");
    let store = env.store();
    let sh = format!(
        "umask 000; {BIN} --store {s} init && {BIN} --store {s} snapshot {src}",
        s = store.display(),
        src = src.display()
    );
    let st = Command::new("sh").arg("-c").arg(&sh).status().unwrap();
    assert!(st.success());
    fn walk(p: &Path) {
        let md = fs::symlink_metadata(p).unwrap();
        let mode = md.permissions().mode() & 0o777;
        if md.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path());
            }
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
    walk(&store);
}

#[test]
fn a_file_rewritten_during_the_snapshot_is_never_stored_torn() {
    let env = Env::new();
    let src = env.path("src");
    let target = src.join("busy.img");
    let size = 24 * 1024 * 1024;
    write(&target, &vec![b'a'; size]);
    // A writer that keeps rewriting the file with one letter at a time.
    let script = format!(
        "i=0; while true; do i=$((i+1)); head -c {size} /dev/zero | tr '\\0' \"$( [ $((i%2)) = 0 ] && echo a || echo b)\" 1<> {p}; done",
        p = target.display()
    );
    let mut writer = Command::new("bash").arg("-c").arg(&script).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let out = env.run(&["--json", "snapshot", src.to_str().unwrap()]);
        let c = code(&out);
        assert!(c == 0 || c == 3, "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let cat = env.run(&["cat", &id, target.to_str().unwrap()]);
        if code(&cat) == 0 {
            let data = cat.stdout;
            assert_eq!(data.len(), size);
            let first = data[0];
            assert!(data.iter().all(|b| *b == first), "torn file stored");
        } else {
            // Left out with a warning: the exit status said so.
            assert_eq!(c, 3);
            assert!(stderr(&out).contains("changed while being read"));
        }
        outcomes.push(c);
    }
    let _ = writer.kill();
    let _ = writer.wait();
}

#[test]
fn ls_json_shows_mtimes_far_from_now() {
    let env = Env::new();
    let fs_ = Mount::tmpfs(&env.path("times"), "4m");
    let old = fs_.path.join("old");
    let new = fs_.path.join("new");
    write(&old, b"1600");
    write(&new, b"3000");
    // Outside the ±292 years that nanoseconds in an i64 can hold.
    set_mtime(&old, -11_676_096_000, 500_000_000);
    set_mtime(&new, 32_503_680_000, 7);
    let snap = env.snapshot(&[&fs_.path]);
    let v = env.json(&["ls", &snap, fs_.path.to_str().unwrap()]);
    let entries = v["entries"].as_array().unwrap();
    let get = |name: &str| {
        entries
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {entries:?}"))
    };
    assert_eq!(get("/old")["mtime_sec"], -11_676_096_000i64);
    assert_eq!(get("/old")["mtime_nsec"], 500_000_000);
    assert_eq!(get("/new")["mtime_sec"], 32_503_680_000i64);
    assert_eq!(get("/new")["mtime_nsec"], 7);
    // The text form is local time: the last day of 1599 west of UTC.
    let text = get("/old")["mtime"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("1600-01-01") || text.starts_with("1599-12-31"),
        "{text}"
    );
}

#[test]
fn an_over_long_tag_is_refused_before_anything_is_written() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let packs_before = packs(&env.store()).len();
    let tag = "t".repeat(4097);
    let out = env.run(&["snapshot", "--tag", &tag, src.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("4097 bytes"), "{}", stderr(&out));
    assert_eq!(env.snapshot_count(), 0);
    assert_eq!(packs(&env.store()).len(), packs_before, "data was written");
    // The limit itself is accepted, and the record reads back.
    let tag = "t".repeat(4096);
    env.ok(&["snapshot", "--tag", &tag, src.to_str().unwrap()]);
    assert_eq!(env.json(&["snapshots"])["snapshots"][0]["tags"][0], tag);
}

#[test]
fn a_directory_too_large_for_one_tree_fails_the_snapshot_clearly() {
    let env = Env::new();
    // tmpfs holds 64 KiB xattr values: about 1030 such files make a
    // directory whose tree is over TREE_MAX_BYTES (64 MiB).
    let big = Mount::tmpfs(&env.path("big"), "64m");
    let dir = big.path.join("images");
    fs::create_dir_all(&dir).unwrap();
    let value = vec![b'v'; 64 * 1024];
    for i in 0..1030 {
        let f = dir.join(format!("f{i:04}"));
        write(&f, b"");
        rustix::fs::lsetxattr(&f, "trusted.big", &value, rustix::fs::XattrFlags::empty()).unwrap();
    }
    let out = env.run(&["snapshot", big.path.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(
        err.contains(&format!("directory {} is too large", dir.display())),
        "{err}"
    );
    assert_eq!(env.snapshot_count(), 0);
    // Without the culprit the same paths snapshot fine.
    env.ok(&[
        "snapshot",
        "--exclude",
        dir.to_str().unwrap(),
        big.path.to_str().unwrap(),
    ]);
}

#[test]
fn a_file_whose_chunks_left_the_index_is_read_again() {
    let env = Env::new();
    let src = env.path("src");
    let a = src.join("a.bin");
    write(&a, &bytes(600_000, 51));
    env.snapshot(&[&src]);
    // The second snapshot's trees all change (b.txt is new), so they are
    // in the second pack, while a.bin's chunks stay in the first.
    write(&src.join("b.txt"), b"b");
    env.snapshot(&[&src]);
    let all = packs(&env.store());
    assert_eq!(all.len(), 2);
    fs::remove_file(&all[0]).unwrap();
    // The index forgets a.bin's chunks (the first snapshot is now broken).
    assert_eq!(code(&env.run(&["check", "--repair"])), 1);

    let v = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(v["stats"]["files_read"], 1, "{v}");
    assert_eq!(v["stats"]["files_reused"], 1, "{v}");
    let out = env.run(&["cat", v["id"].as_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout == bytes(600_000, 51));
}

#[test]
fn excludes_apply_to_managed_paths_below_the_top_level() {
    let env = Env::new();
    let etc = env.path("etc");
    write(&etc.join("hosts"), b"10.0.0.1 mn1\n");
    write(&etc.join("resolv.conf"), b"nameserver 10.0.0.1\n");
    let hosts = etc.join("hosts");
    let resolv = etc.join("resolv.conf");
    let cfg = env.path("hamn.toml");
    write(
        &cfg,
        format!(
            "store = '{}'\npaths = ['{}', '{}']\nexclude = ['{}']\n",
            env.store().display(),
            hosts.display(),
            resolv.display(),
            hosts.display()
        )
        .as_bytes(),
    );
    let out = snapshot_with_config(&cfg);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ls = env.ok(&["ls", "latest", etc.to_str().unwrap()]);
    assert!(ls.contains(resolv.to_str().unwrap()), "{ls}");
    assert!(!ls.contains(hosts.to_str().unwrap()), "{ls}");
}

/// The index's byte count of every pack against the file on disk.
fn pack_sizes(store: &Path) -> Vec<(u64, u64)> {
    let s = hamn::store::Store::open(store).unwrap();
    let mut v: Vec<(u64, u64)> = s
        .index()
        .packs()
        .unwrap()
        .into_iter()
        .map(|(id, _, bytes)| {
            let hex = id.to_hex();
            let file = store
                .join("packs")
                .join(&hex[..2])
                .join(format!("{hex}.pack"));
            (bytes, fs::metadata(file).unwrap().len())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_index_records_each_pack_at_its_full_size() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 30, 61);
    env.snapshot(&[&src]);
    write(&src.join("more.bin"), &bytes(300_000, 62));
    env.snapshot(&[&src]);
    let sb = env.path("standby");
    let on = |store: &Path, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--store")
            .arg(store)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    };
    on(&sb, &["init"]);
    env.ok(&["push", "--to", sb.to_str().unwrap()]);
    for store in [env.store(), sb.clone()] {
        let written = pack_sizes(&store);
        assert!(!written.is_empty());
        for (indexed, on_disk) in &written {
            assert_eq!(indexed, on_disk, "{}", store.display());
        }
        // A rebuild from the packs records the same numbers.
        on(&store, &["check", "--repair"]);
        assert_eq!(pack_sizes(&store), written);
    }
}

#[test]
fn a_directory_larger_than_one_walk_batch_is_complete_and_in_order() {
    // More entries than the walker encodes at a time (1024), some left out
    // by an exclude, so the entry count is only known at the end.
    let env = Env::new();
    let src = env.path("src");
    let big = src.join("Packages");
    for i in 0..2600 {
        let name = if i % 260 == 7 {
            format!("pkg-{i:05}.rpm.tmp")
        } else {
            format!("pkg-{i:05}.rpm")
        };
        write(&big.join(name), format!("package {i}\n").as_bytes());
    }
    write(&big.join("zz-sub/inner"), b"below the batch boundary");
    let glob = format!("{}/*.tmp", big.display());
    let id = env.json(&["snapshot", src.to_str().unwrap(), "--exclude", &glob])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["check", "--read-data"]);
    let to = env.path("restored");
    env.ok(&[
        "restore",
        &id,
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    let got = to.join(big.strip_prefix("/").unwrap());
    let mut names: Vec<String> = fs::read_dir(&got)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2600 - 10 + 1);
    assert!(names.iter().all(|n| !n.ends_with(".tmp")));
    for n in names.iter().filter(|n| n.ends_with(".rpm")) {
        assert_eq!(
            fs::read(got.join(n)).unwrap(),
            fs::read(big.join(n)).unwrap()
        );
    }
    assert_eq!(
        fs::read(got.join("zz-sub/inner")).unwrap(),
        b"below the batch boundary"
    );
    // `ls` lists them in name order.
    let ls = env.json(&["ls", &id, big.to_str().unwrap()]);
    let listed: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .filter(|p| p.starts_with(&format!("{}/", big.display())))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert_eq!(listed.len(), names.len());
}

/// The name `/etc/passwd` (or `/etc/group`) gives id `id`, "" for none.
fn passwd_name(file: &str, id: u32) -> String {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == id.to_string())
        .map_or(String::new(), |f| f[0].to_string())
}

/// Owner names follow each entry's ids, whether the entry was read anew
/// or reused unchanged from the parent snapshot, and an id with no name
/// has none.
#[test]
fn owner_names_follow_the_ids_of_read_and_reused_entries() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let owners: [(&str, u32, u32); 3] = [("a", 0, 0), ("b", 1, 1), ("c", 54321, 54322)];
    for (name, uid, gid) in owners {
        write(&src.join(name), name.as_bytes());
        std::os::unix::fs::lchown(src.join(name), Some(uid), Some(gid)).unwrap();
    }
    let names = |snap: &str| -> Vec<(String, String, String)> {
        let v = env.json(&["ls", snap, src.to_str().unwrap()]);
        let mut out: Vec<_> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "file")
            .map(|e| {
                let path = e["path"].as_str().unwrap();
                (
                    path.rsplit('/').next().unwrap().to_string(),
                    e["user"].as_str().unwrap().to_string(),
                    e["group"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let expect = |owners: &[(&str, u32, u32)]| -> Vec<(String, String, String)> {
        owners
            .iter()
            .map(|(n, u, g)| {
                let user = passwd_name("/etc/passwd", *u);
                let group = passwd_name("/etc/group", *g);
                (n.to_string(), user, group)
            })
            .collect()
    };
    assert_eq!(passwd_name("/etc/passwd", 0), "root");
    let first = env.snapshot(&[&src]);
    assert_eq!(names(&first), expect(&owners));
    // Reused unchanged: the same names.
    let second = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(second["stats"]["files_reused"], 3, "{second}");
    assert_eq!(names(second["id"].as_str().unwrap()), expect(&owners));
    // A file given to another owner takes that owner's names.
    std::os::unix::fs::lchown(src.join("c"), Some(0), Some(1)).unwrap();
    let third = env.snapshot(&[&src]);
    assert_eq!(
        names(&third),
        expect(&[("a", 0, 0), ("b", 1, 1), ("c", 0, 1)])
    );
}
