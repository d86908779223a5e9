//! Stores written by earlier releases stay readable. Each format version
//! has a golden store under tests/fixtures/ (see docs/format.md).

use std::fs;
use std::path::Path;

use crate::common::*;

/// A writable copy of a fixture store in a temp workspace.
fn fixture(name: &str) -> Env {
    let env = Env::bare();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(env.store())
        .status()
        .unwrap();
    assert!(st.success());
    fs::create_dir_all(env.store().join("tmp")).unwrap();
    env
}

fn read_v1(env: &Env) {
    read_v1_at(env, "latest");
}

/// The golden snapshot, named by `snap`, reads back whole.
fn read_v1_at(env: &Env, snap: &str) {
    env.ok(&["check", "--read-data"]);
    let hosts = env.ok(&["cat", snap, "/tmp/golden/src/etc/hosts"]);
    assert_eq!(hosts, "10.0.0.1 mn1\n");
    let ls = env.ok(&["ls", snap, "/tmp/golden/src/install", "-r"]);
    assert!(
        ls.contains("300000") && ls.contains("/tmp/golden/src/install/sub/big.txt"),
        "{ls}"
    );
    assert!(ls.contains("hosts-link -> ../etc/hosts"), "{ls}");
    let v = env.json(&["snapshots"]);
    assert_eq!(v["snapshots"][0]["tags"][0], "golden");
    let to = env.path("out");
    env.ok(&[
        "restore",
        snap,
        "/tmp/golden/src/install/sub/big.txt",
        "--to",
        to.to_str().unwrap(),
    ]);
    let big = fs::read(to.join("tmp/golden/src/install/sub/big.txt")).unwrap();
    assert_eq!(big, vec![b'x'; 300_000]);
}

#[test]
fn format_v1_store_reads() {
    read_v1(&fixture("store-v1"));
}

#[test]
fn format_v1_index_rebuilds_from_its_packs() {
    let env = fixture("store-v1");
    fs::remove_file(env.store().join("index.redb")).unwrap();
    env.ok(&["check", "--repair"]);
    read_v1(&env);
}

#[test]
fn a_v1_store_is_raised_to_format_2_by_its_first_gzip_aware_snapshot() {
    let env = fixture("store-v1");
    let golden = env.json(&["snapshots"])["snapshots"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let src = env.path("src");
    write(&src.join("plain.txt"), &text(20_000, 3));
    env.snapshot(&[&src]);
    let marker = || fs::read_to_string(env.store().join("HAMN-STORE")).unwrap();
    assert!(
        marker().contains("format 1"),
        "raised without need:\n{}",
        marker()
    );
    let cfg = env.path("hamn.toml");
    write(&cfg, b"gzip_aware = [\"**/*.gz\"]\n");
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .arg(src.join("plain.txt"))
        .output()
        .expect("gzip must be installed");
    write(&src.join("plain.txt.gz"), &gz.stdout);
    let out = env
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["snapshot", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("format raised to 2"),
        "{}",
        stderr(&out)
    );
    assert!(marker().contains("format 2"), "{}", marker());
    read_v1_at(&env, &golden);
    let back = env.run(&["cat", "latest", src.join("plain.txt.gz").to_str().unwrap()]);
    assert!(back.stdout == gz.stdout);
    // A marker newer than this hamn is still refused.
    fs::write(env.store().join("HAMN-STORE"), "hamn store\nformat 3\n").unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("upgrade hamn"), "{}", stderr(&out));
}

/// The golden format-2 store: `/tmp/golden2/src/install` (a README and
/// `images/rootimg.tar.gz`, a `gzip -9n` tar of two text files, stored
/// gzip-aware) and `/tmp/golden2/src/etc/hosts`, tagged `golden-v2`.
#[test]
fn format_v2_store_reads() {
    let env = fixture("store-v2");
    env.ok(&["check", "--read-data"]);
    let img = "/tmp/golden2/src/install/images/rootimg.tar.gz";
    let ls = env.json(&["ls", "latest", img]);
    assert_eq!(ls["entries"][0]["encoding"], "gzip", "{ls}");
    let gz = env.run(&["cat", "latest", img]);
    assert_eq!(code(&gz), 0, "{}", stderr(&gz));
    assert_eq!(
        gz.stdout.len() as u64,
        ls["entries"][0]["size"].as_u64().unwrap()
    );
    // The recreated file is the gzip it was: gzip's own check of its CRC
    // passes, and the tar inside lists its two files.
    let to = env.path("rootimg.tar.gz");
    fs::write(&to, &gz.stdout).unwrap();
    let list = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&to)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "format.md\nprotocol.md\n"
    );
    let hosts = env.ok(&["cat", "latest", "/tmp/golden2/src/etc/hosts"]);
    assert_eq!(hosts, "10.0.0.1 mn1\n");
    let v = env.json(&["snapshots"]);
    assert_eq!(v["snapshots"][0]["tags"][0], "golden-v2");
    let marker = fs::read_to_string(env.store().join("HAMN-STORE")).unwrap();
    assert!(marker.contains("format 2"));
}
