//! Gzip-aware storage (`gzip_aware` in the config): deflate files made by
//! the usual tools come back exactly from every reader, a re-packed image
//! stores and ships only what changed inside it, what is not deflate data
//! is stored plainly with a log line, a damaged recreation record is
//! reported and never yields bytes, and a killed snapshot leaves the store
//! whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A config file that makes `*.gz`, `*.tgz` and `*.zz` files gzip-aware.
fn config(env: &Env) -> PathBuf {
    let cfg = env.path("hamn.toml");
    write(
        &cfg,
        b"gzip_aware = [\"**/*.gz\", \"**/*.tgz\", \"**/*.zz\"]\n",
    );
    cfg
}

/// Run hamn on the test store with the gzip-aware config.
fn with_config(env: &Env, args: &[&str]) -> std::process::Output {
    let cfg = config(env);
    env.cmd()
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .output()
        .unwrap()
}

fn snapshot(env: &Env, src: &Path) -> serde_json::Value {
    let out = with_config(env, &["--json", "snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    one_json(&out)
}

/// Feed `data` to `cmd` and return what it prints.
fn filter(cmd: &mut Command, data: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} must be installed: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feed = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// A tar of a real directory (this crate's sources and docs), made the
/// same way on every run.
fn tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Copies of this crate's `src` and `docs`: a real directory to pack,
/// `copies` times 1.1 MB.
fn image_dir(env: &Env, copies: usize) -> PathBuf {
    let img = env.path("rootimg");
    for i in 0..copies {
        let to = img.join(format!("usr{i}"));
        fs::create_dir_all(&to).unwrap();
        for sub in ["src", "docs"] {
            copy_tree(&sources().join(sub), &to.join(sub));
        }
    }
    img
}

fn python(script: &str, data: &[u8]) -> Vec<u8> {
    filter(Command::new("python3").args(["-c", script]), data)
}

/// The entries of `ls --json` of a snapshot, by path.
fn encodings(env: &Env, snap: &str, dir: &Path) -> std::collections::BTreeMap<String, String> {
    let v = env.json(&["ls", snap, dir.to_str().unwrap(), "-r"]);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["encoding"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn deflate_files_of_every_common_maker_come_back_exactly() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let tar = tar_of(&image_dir(&env, 1));
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    for level in ["-1", "-6", "-9"] {
        let name = match level {
            "-1" => "gzip1.tar.gz",
            "-6" => "gzip6.tar.gz",
            _ => "gzip9.tar.gz",
        };
        files.push((name, filter(Command::new("gzip").args([level, "-c"]), &tar)));
    }
    files.push((
        "pigz.tar.gz",
        filter(Command::new("pigz").args(["-c"]), &tar),
    ));
    files.push((
        "python.tar.gz",
        python(
            "import sys,gzip; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), 6, mtime=0))",
            &tar,
        ),
    ));
    files.push((
        "zlib.zz",
        python(
            "import sys,zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 6))",
            &tar,
        ),
    ));
    let real = Command::new("tar")
        .args(["--sort=name", "-czf", "-", "-C"])
        .arg(sources())
        .arg("src")
        .output()
        .unwrap();
    assert!(real.status.success());
    files.push(("real.tgz", real.stdout));
    // Not deflate data, or damaged: stored plainly, with a log line.
    let good = files[1].1.clone();
    files.push(("truncated.tar.gz", good[..good.len() / 2].to_vec()));
    let mut corrupt = good.clone();
    for b in &mut corrupt[5000..5200] {
        *b ^= 0x5a;
    }
    files.push(("corrupt.tar.gz", corrupt));
    files.push(("notgzip.gz", text(100_000, 5)));
    files.push(("plain.txt", text(50_000, 6)));
    for (name, data) in &files {
        write(&src.join("img").join(name), data);
    }

    let out = with_config(&env, &["--json", "snapshot", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snap = one_json(&out)["id"].as_str().unwrap().to_string();
    let log = stderr(&out);
    for broken in ["truncated.tar.gz", "corrupt.tar.gz", "notgzip.gz"] {
        assert!(
            log.lines()
                .any(|l| l.contains(broken) && l.contains("stored as plain chunks")),
            "no log line for {broken}:\n{log}"
        );
    }
    let marker = fs::read_to_string(env.store().join("HAMN-STORE")).unwrap();
    assert!(marker.contains("format 2"), "{marker}");

    let enc = encodings(&env, &snap, &src);
    for (name, _) in &files {
        let want = match *name {
            "truncated.tar.gz" | "corrupt.tar.gz" | "notgzip.gz" | "plain.txt" => "plain",
            _ => "gzip",
        };
        let path = src.join("img").join(name);
        assert_eq!(enc[path.to_str().unwrap()], want, "{name}");
    }

    // Every reader gives back the original bytes.
    for (name, data) in &files {
        let path = src.join("img").join(name);
        let out = env.run(&["cat", &snap, path.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(out.stdout == *data, "cat of {name} differs");
    }
    let restored = restore_all(&env, &snap, &src, "restored");
    assert_same_tree(&src, &restored);
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    env.ok(&["materialize", "--root", root.to_str().unwrap()]);
    assert_same_tree(&src, &root.join(src.strip_prefix("/").unwrap()));
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no problems"), "{check}");
}

#[test]
fn a_repacked_image_stores_and_ships_only_what_changed_inside_it() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let img = image_dir(&env, 10);
    let pack = |img: &Path| filter(Command::new("gzip").args(["-6", "-c"]), &tar_of(img));
    let first_gz = pack(&img);
    write(&src.join("rootimg.tar.gz"), &first_gz);
    let first = snapshot(&env, &src);
    let sb = env.path("standby");
    let standby = |args: &[&str]| standby(&sb, args);
    assert_eq!(code(&standby(&["init"])), 0);
    let push = |env: &Env| {
        let out = with_config(env, &["--json", "push", "--to", sb.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        one_json(&out)["push"].clone()
    };
    push(&env);

    // The night's change inside the image: one file edited, one added.
    let mut edited = fs::read(img.join("usr4/src/gzip.rs")).unwrap();
    edited.extend_from_slice(b"\n// edited on the night\n");
    write(&img.join("usr4/src/gzip.rs"), &edited);
    write(&img.join("etc/motd"), b"welcome to compute\n");
    let second_gz = pack(&img);
    write(&src.join("rootimg.tar.gz"), &second_gz);
    let second = snapshot(&env, &src);
    let added = second["stats"]["bytes_added_stored"].as_u64().unwrap();
    let size = second_gz.len() as u64;
    assert!(
        added * 2 < size,
        "the re-packed image stored {added} bytes of {size}"
    );
    let pushed = push(&env);
    let sent = pushed["bytes_sent"].as_u64().unwrap();
    assert!(sent * 5 < size, "the push sent {sent} bytes of {size}");
    assert!(first["stats"]["bytes_added_stored"].as_u64().unwrap() > 0);

    // The standby recreates both nights exactly, and checks clean.
    for (snap, data) in [(&first, &first_gz), (&second, &second_gz)] {
        let id = snap["id"].as_str().unwrap();
        let path = src.join("rootimg.tar.gz");
        let out = standby(&["cat", id, path.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(out.stdout == *data, "standby's copy of {id} differs");
    }
    let out = standby(&["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let marker = fs::read_to_string(sb.join("HAMN-STORE")).unwrap();
    assert!(marker.contains("format 2"), "{marker}");
    // Materialized on the standby, where the live copy of the old image
    // is checked against the new one by its whole-file hash.
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    for id in [&first["id"], &second["id"]] {
        let out = standby(&[
            "materialize",
            id.as_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let live = root.join(src.strip_prefix("/").unwrap());
    assert!(fs::read(live.join("rootimg.tar.gz")).unwrap() == second_gz);
}

#[test]
fn a_damaged_recreation_record_is_reported_and_never_returned() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let gz = filter(
        Command::new("gzip").args(["-c"]),
        &tar_of(&image_dir(&env, 1)),
    );
    write(&src.join("img/rootimg.tar.gz"), &gz);
    let snap = snapshot(&env, &src)["id"].as_str().unwrap().to_string();
    // The record is stored after the file's decompressed chunks: the last
    // chunk of the only pack.
    let pack = packs(&env.store()).pop().unwrap();
    let record = pack_entries(&pack)
        .into_iter()
        .rfind(|e| e.kind == 1)
        .unwrap();
    damage_blob(&pack, &record);

    let out = env.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rootimg.tar.gz"), "path not named:\n{text}");
    let path = src.join("img/rootimg.tar.gz");
    let cat = env.run(&["cat", &snap, path.to_str().unwrap()]);
    assert_eq!(code(&cat), 1);
    assert!(cat.stdout.is_empty(), "bytes were printed");
    assert!(stderr(&cat).contains("damaged"), "{}", stderr(&cat));
    let root = env.path("root");
    fs::create_dir_all(&root).unwrap();
    let out = env.run(&["materialize", "--root", root.to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(!root.join(path.strip_prefix("/").unwrap()).exists());
}

#[test]
fn a_killed_gzip_aware_snapshot_leaves_the_store_whole() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let tar = tar_of(&image_dir(&env, 2));
    write(&src.join("plain.txt"), &text(10_000, 1));
    let base = snapshot(&env, &src)["id"].as_str().unwrap().to_string();
    let gz = filter(Command::new("gzip").args(["-6", "-c"]), &tar);
    write(&src.join("rootimg.tar.gz"), &gz);
    let t0 = Instant::now();
    let cfg = config(&env);
    let spawn = || {
        env.cmd()
            .arg("--config")
            .arg(&cfg)
            .args(["snapshot", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(spawn().wait().unwrap().success());
    let full = t0.elapsed();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut killed = 0;
    for round in 0..6u64 {
        // A new image every round, so that its analysis is under way.
        let mut changed = tar.clone();
        changed.extend(text(4096, round));
        write(
            &src.join("rootimg.tar.gz"),
            &filter(Command::new("gzip").args(["-6", "-c"]), &changed),
        );
        let mut child = spawn();
        let delay = full.mul_f64(0.2 + 0.7 * rng.f64());
        let start = Instant::now();
        while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        use std::os::unix::process::ExitStatusExt;
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
        let check = env.run(&["check", "--read-data"]);
        assert_eq!(code(&check), 0, "round {round}: {}", stderr(&check));
        let out = env.run(&["cat", &base, src.join("plain.txt").to_str().unwrap()]);
        assert_eq!(code(&out), 0);
    }
    assert!(killed >= 3, "only {killed} runs were killed mid-run");
    let last = snapshot(&env, &src)["id"].as_str().unwrap().to_string();
    let restored = restore_all(&env, &last, &src, "restored");
    assert_same_tree(&src, &restored);
}

#[test]
fn an_image_packed_from_a_stored_tree_costs_only_its_headers() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    let img = src.join("netboot/compute/rootimg");
    // 30 files of real text, 20 to 78 KB each, and small ones around them.
    let text_of_crate = {
        let mut all = Vec::new();
        for sub in ["src", "docs"] {
            let mut names: Vec<_> = fs::read_dir(sources().join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            names.sort();
            for p in names {
                all.extend(fs::read(p).unwrap());
            }
        }
        all
    };
    for i in 0..30usize {
        let len = 20_000 + i * 2_000;
        let at = (i * 17_000) % (text_of_crate.len() - len);
        let mut data = format!("file {i}\n").into_bytes();
        data.extend_from_slice(&text_of_crate[at..at + len]);
        write(&img.join(format!("usr/lib/f{i:02}.so")), &data);
    }
    make_tree(&img.join("etc"), 60, 9);
    let image = src.join("netboot/compute/rootimg.tar.gz");
    let pack = |reverse: bool| {
        let order = if reverse { "sort -r" } else { "sort" };
        let script = format!(
            "find . -type f | {order} | tar --no-recursion -T - -cf - | gzip -6 > {}",
            image.display()
        );
        let st = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&img)
            .status()
            .unwrap();
        assert!(st.success());
    };
    pack(false);
    let first = snapshot(&env, &src);
    let tree_bytes: u64 = walk_sizes(&img);
    let plain = first["stats"]["bytes_added_plain"].as_u64().unwrap();
    assert!(
        plain < tree_bytes + tree_bytes / 3,
        "the image and its tree stored {plain} bytes for a tree of {tree_bytes}"
    );
    // Re-packed in the opposite order: every large member is found again.
    pack(true);
    let second = snapshot(&env, &src);
    let plain = second["stats"]["bytes_added_plain"].as_u64().unwrap();
    assert!(
        plain < tree_bytes / 4,
        "the re-ordered image stored {plain} new bytes for a tree of {tree_bytes}"
    );
    let id = second["id"].as_str().unwrap();
    let out = env.run(&["cat", id, image.to_str().unwrap()]);
    assert!(out.stdout == fs::read(&image).unwrap());
}

/// Bytes of the regular files below `dir`.
fn walk_sizes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            n += walk_sizes(&e.path());
        } else {
            n += md.len();
        }
    }
    n
}
