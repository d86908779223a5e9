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
    env.ok(&["check", "--read-data"]);
    let hosts = env.ok(&["cat", "latest", "/tmp/golden/src/etc/hosts"]);
    assert_eq!(hosts, "10.0.0.1 mn1\n");
    let ls = env.ok(&["ls", "latest", "/tmp/golden/src/install", "-r"]);
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
        "latest",
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
