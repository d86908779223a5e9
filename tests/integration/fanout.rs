//! One primary, several nodes (`[[standby]]`): one snapshot pushed to
//! every node through real sshds on loopback, a failing node never
//! stopping the others, and the next run resuming each node.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::sshd::Sshd;

/// A `[[standby]]` table for the store `sb` behind `sshd`, deploying
/// under `root`.
fn node(name: &str, sshd: &Sshd, sb: &Path, root: &Path) -> String {
    format!(
        "[[standby]]\nname = '{name}'\nurl = '{}'\nidentity = '{}'\nknown_hosts = '{}'\n\
         remote_bin = '{BIN}'\nmaterialize = true\nroot = '{}'\nio_timeout = 20\n",
        sshd.url(sb),
        sshd.path("client_key").display(),
        sshd.path("known_hosts").display(),
        root.display(),
    )
}

/// `hamn --config CFG ARGS...`, as cron runs it.
fn hamn(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env_remove("HAMN_CONFIG")
        .args(["--config", cfg.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

/// `sync --json [ARGS...]`: exit status, its one JSON document, stderr.
fn sync_to(cfg: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["--json", "sync"];
    a.extend_from_slice(args);
    let out = hamn(cfg, &a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {}", stderr(&out)));
    (code(&out), v, stderr(&out))
}

fn sync(cfg: &Path) -> (i32, serde_json::Value, String) {
    sync_to(cfg, &[])
}

fn by_name<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {v}"))
}

/// `name{node="NODE"} value` of a Prometheus textfile.
fn gauge(text: &str, name: &str, node: &str) -> Option<f64> {
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

fn init(store: &Path) {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn one_sync_keeps_three_nodes_and_a_failing_node_stops_no_other() {
    require_root();
    let env = Env::new();
    let src = env.path("primary/install");
    make_tree(&src, 80, 41);
    // 12 MiB that does not compress: more than sn1's disk holds.
    write(&src.join("pool/image.bin"), &bytes(12 * 1024 * 1024, 5));
    let sshd = Sshd::start("");
    let mut sshd_sn2 = Some(Sshd::start(""));
    let small = Mount::tmpfs(&env.path("sn1-disk"), "6m");
    let stores: Vec<PathBuf> = vec![
        env.path("mn2/store"),
        small.path.join("store"),
        env.path("sn2/store"),
    ];
    let roots: Vec<PathBuf> = ["mn2", "sn1", "sn2"]
        .iter()
        .map(|n| env.path(&format!("{n}/root")))
        .collect();
    for (s, r) in stores.iter().zip(&roots) {
        init(s);
        fs::create_dir_all(r).unwrap();
    }
    // In a folder of its own: written by a rename, it would change the
    // mtime of the folder above the managed path, and so its tree.
    let textfile = env.path("metrics/hamn.prom");
    fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let config = |sn2: &Sshd| -> PathBuf {
        let cfg = env.path("hamn.toml");
        let text = format!(
            "store = '{}'\npaths = ['{}']\nsync_parallel = 3\n[monitoring]\ntextfile = '{}'\n{}{}{}",
            env.store().display(),
            src.display(),
            textfile.display(),
            node("mn2", &sshd, &stores[0], &roots[0]),
            node("sn1", &sshd, &stores[1], &roots[1]),
            node("sn2", sn2, &stores[2], &roots[2]),
        );
        fs::write(&cfg, text).unwrap();
        cfg
    };
    let cfg = config(sshd_sn2.as_ref().unwrap());
    // sn2's sshd is stopped: its port refuses connections.
    sshd_sn2.take();
    let (c, v, err) = sync(&cfg);
    assert_eq!(c, 3, "some nodes failed, one succeeded: {v}\n{err}");
    assert_eq!(v["exit_code"], 3);
    let snap = v["snapshot"]["id"].as_str().unwrap().to_string();
    let mn2 = by_name(&v, "mn2");
    assert_eq!(mn2["status"], "ok", "{v}");
    assert_eq!(mn2["deployed"], snap.as_str());
    let sn1 = by_name(&v, "sn1");
    assert_eq!(sn1["status"], "failed");
    assert!(
        sn1["error"].as_str().unwrap().contains("No space left"),
        "{sn1}"
    );
    let sn2 = by_name(&v, "sn2");
    assert_eq!(sn2["status"], "failed");
    assert!(sn2["error"].as_str().is_some(), "{sn2}");
    assert!(
        err.contains("warning: node sn1:") && err.contains("warning: node sn2:"),
        "{err}"
    );
    // The working node is deployed exactly.
    assert_same_tree(&src, &roots[0].join(src.strip_prefix("/").unwrap()));
    assert_same_top(&src, &roots[0].join(src.strip_prefix("/").unwrap()));
    let metrics = fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        gauge(&metrics, "hamn_node_sync_ok", "mn2"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "hamn_node_sync_ok", "sn1"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "hamn_node_sync_ok", "sn2"),
        Some(0.0),
        "{metrics}"
    );
    assert!(gauge(&metrics, "hamn_node_last_success_timestamp_seconds", "mn2").is_some());
    assert!(gauge(&metrics, "hamn_node_last_success_timestamp_seconds", "sn1").is_none());
    assert!(metrics.contains("hamn_sync_exit_status 3"), "{metrics}");

    // The faults cleared: sn1 has room, sn2's sshd runs again (on a new
    // port, so the config follows it). The next run finishes the two and
    // sends the node that was done none of the data: the new record, and
    // the trees of the folders above the managed path whose mtime changed
    // (`/tmp` gets the new sshd's folder).
    small.resize("64m");
    let sshd_sn2 = Sshd::start("");
    let cfg = config(&sshd_sn2);
    let (c, v, err) = sync(&cfg);
    assert_eq!(c, 0, "{v}\n{err}");
    let snap = v["snapshot"]["id"].as_str().unwrap().to_string();
    for name in ["mn2", "sn1", "sn2"] {
        let n = by_name(&v, name);
        assert_eq!(n["status"], "ok", "{n}");
        assert_eq!(n["deployed"], snap.as_str(), "{n}");
    }
    let mn2 = &by_name(&v, "mn2")["push"];
    assert!(mn2["bytes_sent"].as_u64().unwrap() < 4096, "{mn2}");
    assert_eq!(
        mn2["blobs_sent"], mn2["trees_walked"],
        "only trees went to mn2: {mn2}"
    );
    assert!(by_name(&v, "sn1")["chunks_sent"].as_u64().unwrap() > 0);
    for r in &roots {
        assert_same_tree(&src, &r.join(src.strip_prefix("/").unwrap()));
    }
    // Three pushes side by side read each blob from the packs about once
    // (what the shared reads miss when one node runs ahead is read again).
    let sent: u64 = ["sn1", "sn2"]
        .iter()
        .map(|n| by_name(&v, n)["push"]["bytes_sent"].as_u64().unwrap())
        .sum();
    assert!(
        v["pack_bytes_read"].as_u64().unwrap() < sent,
        "two nodes got {sent} protocol bytes; the packs were read for {}",
        v["pack_bytes_read"]
    );

    // `status` on the primary shows every node and what it deployed.
    let out = hamn(&cfg, &["--json", "status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{st}");
    for n in nodes {
        assert_eq!(n["newest"], snap.as_str(), "{n}");
        assert_eq!(n["deployed"], snap.as_str(), "{n}");
        assert_eq!(n["snapshots_behind"], 0, "{n}");
        assert_eq!(n["last_sync_ok"], true, "{n}");
    }
    // One node only, by name.
    let (c, v, err) = sync_to(&cfg, &["--to", "sn2"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["nodes"][0]["name"], "sn2");
    // A name that is no node is a usage error.
    let out = hamn(&cfg, &["sync", "--to", "sn9"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("no such node"), "{}", stderr(&out));
}

#[test]
fn retention_keeps_the_newest_snapshot_of_a_node_that_was_down() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 20, 3);
    let (a, b) = (env.path("a"), env.path("b"));
    init(&a);
    init(&b);
    let cfg = env.path("hamn.toml");
    let write_cfg = |nodes: &[(&str, &Path)]| {
        let mut text = format!(
            "store = '{}'\npaths = ['{}']\n[retention]\nkeep_last = 1\napply_on_sync = true\ngc_grace_hours = 0\n",
            env.store().display(),
            src.display()
        );
        for (n, p) in nodes {
            text += &format!("[[standby]]\nname = '{n}'\nurl = '{}'\n", p.display());
        }
        fs::write(&cfg, text).unwrap();
    };
    write_cfg(&[("a", &a), ("b", &b)]);
    let (c, v, err) = sync(&cfg);
    assert_eq!(c, 0, "{v}\n{err}");
    let first = v["snapshot"]["id"].as_str().unwrap().to_string();
    // b is down for two nights (here: left out of the runs).
    for night in 0..2 {
        write(&src.join(format!("night{night}.txt")), b"new");
        let (c, _, err) = sync_to(&cfg, &["--to", "a"]);
        assert_eq!(c, 0, "{err}");
    }
    let list = env.json(&["snapshots"]);
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&first.as_str()),
        "b's newest was forgotten: {ids:?}"
    );
    assert_eq!(ids.len(), 2, "keep_last = 1 and b's newest: {ids:?}");
    let forget = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let reasons = forget.to_string();
    assert!(reasons.contains("newest on node b"), "{reasons}");
    // Back up: b catches up, and its old snapshot is no longer pinned.
    let (c, v, err) = sync(&cfg);
    assert_eq!(c, 0, "{v}\n{err}");
    let list = env.json(&["snapshots"]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1, "{list}");
    let out = Command::new(BIN)
        .arg("--store")
        .arg(&b)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
