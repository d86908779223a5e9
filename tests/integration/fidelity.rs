//! A restored snapshot equals its source bit for bit and in metadata.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

/// A valid security.capability value (v2, cap_net_bind_service=ep).
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("chown");
}

fn setx(p: &Path, k: &str, v: &[u8]) {
    rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {k} on {}: {e}", p.display()));
}

/// Every kind of entry and metadata the brief lists.
pub fn build_hostile_tree(root: &Path) {
    require_root();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("empty"), b"");
    write(&root.join("tiny"), b"x");
    write(
        &root.join("multi-chunk.bin"),
        &bytes(7 * 1024 * 1024 + 3, 11),
    );
    // Sparse: holes at the start, in the middle and at the end.
    let sparse = root.join("sparse.img");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&bytes(100_000, 12), 8 * 1024 * 1024)
        .unwrap();
    f.write_all_at(b"tail-data", 40 * 1024 * 1024).unwrap();
    drop(f);
    // Links.
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hosts", root.join("absolute")).unwrap();
    std::os::unix::fs::symlink("../tiny", root.join("empty-dir-link")).unwrap();
    write(&root.join("a/shared"), &text(5000, 13));
    fs::create_dir_all(root.join("b")).unwrap();
    fs::hard_link(root.join("a/shared"), root.join("b/shared-link")).unwrap();
    fs::hard_link(root.join("a/shared"), root.join("shared-link-2")).unwrap();
    // Special files.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("loop9"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        rustix::fs::makedev(7, 9),
    )
    .unwrap();
    // Modes and owners (numbers that exist in no passwd here).
    write(&root.join("setuid"), b"#!/bin/sh\n");
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    write(&root.join("setgid"), b"g");
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir_all(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(&root.join("owned"), b"o");
    chown(&root.join("owned"), 12345, 23456);
    chown(&root.join("dangling"), 4242, 4343);
    // xattrs: capability set after chown (chown clears it).
    write(&root.join("ping"), &bytes(3000, 14));
    setx(&root.join("ping"), "security.capability", &CAP_NET_BIND);
    setx(
        &root.join("ping"),
        "security.selinux",
        b"system_u:object_r:ping_exec_t:s0\0",
    );
    setx(&root.join("tiny"), "user.note", b"hello");
    setx(&root.join("empty-dir"), "user.dir", &[0, 1, 2, 255]);
    // Names: non-UTF-8, newline, 255 bytes.
    write(
        &root.join(OsStr::from_bytes(b"bad-\xff\xfe-name")),
        b"latin",
    );
    write(&root.join("line\nbreak"), b"nl");
    let long = "L".repeat(255);
    write(&root.join(&long), b"long");
    // Fixed mtimes with nanoseconds (directories last, children first).
    for (i, e) in [
        "tiny", "empty", "setuid", "owned", "ping", "dangling", "fifo",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(
            &root.join(e),
            1_600_000_000 + i as i64,
            123_456_789 + i as i64,
        );
    }
    set_mtime(&root.join("empty-dir"), 1_500_000_000, 1);
}

#[test]
fn restore_reproduces_every_kind_of_entry_and_metadata() {
    let env = Env::new();
    let src = env.path("src");
    build_hostile_tree(&src);
    let snap = env.snapshot(&[&src]);
    let restored = restore_all(&env, &snap, &src, "out");
    assert_same_tree(&src, &restored);
    // The sparse file kept its holes.
    let facts = facts(&restored);
    assert!(
        facts[&b"sparse.img".to_vec()].sparse,
        "holes were filled in"
    );
    // Hardlinks restored as one inode.
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(restored.join("a/shared")).unwrap();
    let b = fs::metadata(restored.join("b/shared-link")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn symlinks_are_kept_as_links_and_followed_only_on_request() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("real"), b"real content");
    std::os::unix::fs::symlink("real", src.join("link")).unwrap();
    let kept = env.snapshot(&[&src]);
    let out = env.ok(&["ls", &kept, src.join("link").to_str().unwrap()]);
    assert!(out.starts_with('l') && out.contains("-> real"), "{out}");

    let followed = env.json(&["snapshot", "--follow-symlinks", src.to_str().unwrap()]);
    let id = followed["id"].as_str().unwrap();
    let cat = env.run(&["cat", id, src.join("link").to_str().unwrap()]);
    assert_eq!(code(&cat), 0, "{}", stderr(&cat));
    assert_eq!(cat.stdout, b"real content");

    // A loop of directory links is stored once, then kept as a link.
    std::os::unix::fs::symlink(".", src.join("sub-loop")).unwrap();
    let out = env.run(&[
        "--json",
        "snapshot",
        "--follow-symlinks",
        src.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink loop"), "{}", stderr(&out));
}

#[test]
fn cat_streams_exact_bytes_including_holes() {
    let env = Env::new();
    let src = env.path("src");
    let data = bytes(5 * 1024 * 1024 + 17, 21);
    write(&src.join("big"), &data);
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(src.join("holey"))
        .unwrap();
    f.set_len(3 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 1024 * 1024).unwrap();
    drop(f);
    let snap = env.snapshot(&[&src]);
    let out = env.run(&["cat", &snap, src.join("big").to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert!(out.stdout == data, "cat returned different bytes");
    let out = env.run(&["cat", &snap, src.join("holey").to_str().unwrap()]);
    assert_eq!(out.stdout, fs::read(src.join("holey")).unwrap());
}

#[test]
fn device_nodes_without_privilege_fail_alone() {
    require_root();
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("a-null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    write(&src.join("b-file"), b"restored anyway");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("c-fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    env.snapshot(&[&src]);
    // In a user namespace hamn is root over its own files but has no
    // CAP_MKNOD: mknod of a device fails with EPERM, as for a non-root user.
    let to = env.path("out");
    let out = std::process::Command::new("unshare")
        .arg("--map-root-user")
        .arg(BIN)
        .arg("--store")
        .arg(env.store())
        .args(["--json", "restore", "latest", src.to_str().unwrap(), "--to"])
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v = one_json(&out);
    let errors = v["stats"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].as_str().unwrap().contains("a-null"), "{errors:?}");
    assert_eq!(v["stats"]["files"], 1);
    assert_eq!(v["stats"]["other_entries"], 1);
    let restored = to.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("b-file")).unwrap(),
        b"restored anyway"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(restored.join("c-fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(!restored.join("a-null").exists());
}
