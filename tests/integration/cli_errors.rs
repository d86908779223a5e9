//! Bad input gets one clear line and exit status 1 or 2, never a panic.

use std::fs;
use std::process::Command;

use crate::common::*;

fn one_line_error(out: &std::process::Output, expect_code: i32, needle: &str) {
    assert_eq!(code(out), expect_code, "{}", stderr(out));
    let err = stderr(out);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("hamn: error: "), "{err}");
    assert!(first.contains(needle), "expected '{needle}' in: {first}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_and_malformed_configs() {
    let env = Env::bare();
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/hamn.toml", "snapshots"])
        .output()
        .unwrap();
    one_line_error(&out, 2, "/nonexistent/hamn.toml");
    let cfg = env.path("bad.toml");
    write(&cfg, b"store = '/x'\npaths = [\n");
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    one_line_error(&out, 2, "bad.toml");
    write(&cfg, b"store = '/x'\nstandbyy = 1\n");
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    one_line_error(&out, 2, "standbyy");
    // HAMN_CONFIG is honoured the same way.
    let out = Command::new(BIN)
        .env("HAMN_CONFIG", &cfg)
        .arg("snapshots")
        .output()
        .unwrap();
    one_line_error(&out, 2, "standbyy");
}

#[test]
fn missing_managed_path_and_empty_path_list() {
    let env = Env::new();
    let out = env.run(&["snapshot", env.path("not-there").to_str().unwrap()]);
    one_line_error(&out, 2, "does not exist");
    let out = env.run(&["snapshot"]);
    one_line_error(&out, 2, "no paths");
}

#[test]
fn not_a_store_and_newer_format() {
    let env = Env::bare();
    fs::create_dir_all(env.store()).unwrap();
    let out = env.run(&["snapshots"]);
    one_line_error(&out, 1, "not a hamn store");
    env.ok(&["init"]);
    let out = env.run(&["init"]);
    one_line_error(&out, 1, "already holds");
    write(&env.store().join("HAMN-STORE"), b"hamn store\nformat 99\n");
    let out = env.run(&["snapshots"]);
    one_line_error(&out, 1, "upgrade hamn");
}

#[test]
fn unknown_and_ambiguous_snapshot_ids() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    // 17 snapshots: some leading hex digit is shared by two of them.
    let mut ids = Vec::new();
    for i in 0..17 {
        write(&src.join("a"), format!("{i}").as_bytes());
        ids.push(env.snapshot(&[&src]));
    }
    let out = env.run(&["ls", "ffffffffffffffffffff"]);
    let c = code(&out);
    if !ids.iter().any(|id| id.starts_with("ffffffffffffffffffff")) {
        one_line_error(&out, 1, "no snapshot matches");
    } else {
        panic!("improbable id prefix collision, exit {c}");
    }
    let shared = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() >= 2)
        .unwrap();
    let out = env.run(&["ls", &shared]);
    one_line_error(&out, 1, "ambiguous");
    // latest~N and unique prefixes work.
    let out = env.ok(&["cat", "latest~16", src.join("a").to_str().unwrap()]);
    assert_eq!(out, "0");
    let out = env.ok(&["cat", &ids[5][..10], src.join("a").to_str().unwrap()]);
    assert_eq!(out, "5");
    let out = env.run(&["cat", "latest~17", src.join("a").to_str().unwrap()]);
    one_line_error(&out, 1, "no snapshot matches");
    let out = env.run(&["cat", "latest", src.join("nope").to_str().unwrap()]);
    one_line_error(&out, 1, "not in snapshot");
}

#[test]
fn json_errors_are_one_document() {
    let env = Env::bare();
    let out = env.run(&["--json", "snapshots"]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 1);
    assert!(v["error"].as_str().unwrap().contains("not a hamn store"));
}

#[test]
fn hostile_names_in_paths_are_refused() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.snapshot(&[&src]);
    let out = env.run(&["cat", "latest", "/../etc/passwd"]);
    one_line_error(&out, 2, "not a path inside a snapshot");
}

#[test]
fn failures_after_a_result_document_still_print_one_json_document() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big.bin"), &bytes(1024 * 1024, 8));
    write(&src.join("small.txt"), b"small");
    env.snapshot(&[&src]);
    damage_largest_chunk(&packs(&env.store())[0]);

    let out = env.run(&["--json", "check", "--read-data"]);
    one_line_error(&out, 1, "check found 1 problems");
    let v = one_json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["report"]["problems"].as_array().unwrap().len(), 1);

    let to = env.path("out");
    let out = env.run(&[
        "--json",
        "restore",
        "latest",
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("hamn: error: 1 entries could not be restored"));
    let v = one_json(&out);
    let errors = v["stats"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].as_str().unwrap().contains("big.bin"),
        "{errors:?}"
    );
    assert_eq!(v["stats"]["files"], 1);
}

#[test]
fn init_refuses_a_foreign_directory_and_makes_its_own_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::bare();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Something else's directory: refused, and left exactly as it was.
    fs::create_dir_all(env.store()).unwrap();
    write(&env.store().join("notes.txt"), b"not a store");
    fs::set_permissions(env.store(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(&["init"]);
    one_line_error(&out, 1, "is not empty and holds no hamn store");
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
    let names: Vec<_> = fs::read_dir(env.store())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    assert_eq!(mode(&env.store()), 0o755);
    // An empty directory (a fresh file system's lost+found aside) that an
    // admin made world-readable becomes 0700.
    fs::remove_file(env.store().join("notes.txt")).unwrap();
    fs::create_dir(env.store().join("lost+found")).unwrap();
    env.ok(&["init"]);
    assert_eq!(mode(&env.store()), 0o700);
    env.ok(&["snapshots"]);
    // What an interrupted init leaves is completed, not refused.
    let again = env.path("half");
    fs::create_dir_all(again.join("packs")).unwrap();
    fs::set_permissions(&again, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(again.join("packs"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .arg("--store")
        .arg(&again)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(mode(&again), 0o700);
    assert_eq!(mode(&again.join("packs")), 0o700);
}

#[test]
fn managed_path_below_a_missing_directory() {
    let env = Env::new();
    let missing = env.path("no-such-dir/hosts");
    let out = env.run(&["snapshot", missing.to_str().unwrap()]);
    one_line_error(&out, 2, "does not exist");
    assert!(
        stderr(&out).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshot_count(), 0);
}
