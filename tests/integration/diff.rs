//! `hamn diff`: every change type, renames, path filters, and JSON.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn diff_reports_each_kind_of_change() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 40, 9);
    write(&src.join("hosts"), b"10.0.0.1 mn1\n");
    write(&src.join("pkg/big.rpm"), &bytes(600_000, 4));
    write(&src.join("mode-me"), b"m");
    write(&src.join("becomes-dir"), b"file");
    std::os::unix::fs::symlink("old-target", src.join("link")).unwrap();
    write(&src.join("gone"), b"bye");
    let a = env.snapshot(&[&src]);

    write(&src.join("hosts"), b"10.0.0.1 mn1\n10.0.0.2 mn2\n");
    fs::rename(src.join("pkg/big.rpm"), src.join("pool-big.rpm")).unwrap();
    fs::set_permissions(src.join("mode-me"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    write(&src.join("becomes-dir/inner"), b"i");
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("new-target", src.join("link")).unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    write(&src.join("added"), b"new");
    let b = env.snapshot(&[&src]);

    let v = env.json(&["diff", &a, &b]);
    let changes = v["changes"].as_array().unwrap();
    let find = |suffix: &str| {
        changes
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no change for {suffix}: {changes:#?}"))
            .clone()
    };
    assert_eq!(find("/hosts")["change"], "modified");
    assert_eq!(find("/hosts")["new_size"], 26);
    let r = find("/pool-big.rpm");
    assert_eq!(r["change"], "renamed");
    assert!(r["from"].as_str().unwrap().ends_with("/pkg/big.rpm"));
    let m = find("/mode-me");
    assert_eq!(m["change"], "metadata");
    assert!(m["fields"].as_array().unwrap().iter().any(|f| f == "mode"));
    assert_eq!(find("/becomes-dir")["change"], "type_changed");
    assert_eq!(find("/becomes-dir/inner")["change"], "added");
    let l = find("/link");
    assert_eq!(l["change"], "metadata");
    assert!(
        l["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "target")
    );
    assert_eq!(find("/gone")["change"], "removed");
    assert_eq!(find("/added")["change"], "added");
    // Untouched files do not appear.
    assert!(
        !changes
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with("f3.txt"))
    );

    // Human output: one line per change with its letter.
    let text = env.ok(&["diff", &a, &b]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("M ") && l.contains("/hosts")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("R ") && l.contains("pkg/big.rpm -> ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("D ") && l.contains("/gone")),
        "{text}"
    );

    // A path filter limits the report.
    let sub = env.json(&["diff", &a, &b, src.join("becomes-dir").to_str().unwrap()]);
    for c in sub["changes"].as_array().unwrap() {
        assert!(c["path"].as_str().unwrap().contains("becomes-dir"), "{c}");
    }
}

#[test]
fn unchanged_subtrees_are_skipped_by_id() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src, 700, 2);
    let a = env.snapshot(&[&src]);
    write(&src.join("d3/s0/f3.txt"), b"one change");
    let b = env.snapshot(&[&src]);
    let v = env.json(&["diff", &a, &b]);
    assert_eq!(v["summary"]["modified"], 1);
    // Only the trees on the path to the change are read: root carriers + src + d3 + s0.
    let compared = v["summary"]["trees_compared"].as_u64().unwrap();
    let depth = src.components().count() as u64 + 2;
    assert!(
        compared <= depth,
        "compared {compared} trees for one change (depth {depth})"
    );
}
