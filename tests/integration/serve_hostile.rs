//! `hamn serve` facing a wrong or hostile peer: each bad input gets an
//! error message back and changes nothing visible in the store.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use hamn::id::{BlobId, BlobKind, ChunkId, TreeId};
use hamn::remote::protocol::*;
use hamn::snapshot::{Snapshot, SnapshotStats};
use hamn::tree::{ChunkRef, Encoding, Entry, FileContent, Kind, Meta, Tree};

use crate::common::*;

fn frame(m: &Msg) -> Vec<u8> {
    let (t, p) = m.encode();
    let mut out = ((p.len() + 1) as u32).to_le_bytes().to_vec();
    out.push(t);
    out.extend(p);
    out
}

fn hello() -> Vec<u8> {
    frame(&Msg::Hello {
        version: PROTOCOL_VERSION,
        client: "test".into(),
        store: String::new(),
        mode: MODE_WRITE,
    })
}

/// `hamn serve` on `store` with `args`, all three stdio piped.
fn spawn_serve(store: &Path, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("serve")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Feed raw bytes to `hamn serve`; returns (exit code, replies).
fn serve(store: &Path, input: &[u8]) -> (i32, Vec<Msg>) {
    let mut child = spawn_serve(store, &[]);
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let mut replies = Vec::new();
    let mut r = FrameReader::new(&out.stdout[..]);
    while let Ok(Some(m)) = r.read() {
        replies.push(m);
    }
    (code(&out), replies)
}

fn last_error(replies: &[Msg]) -> String {
    match replies.last() {
        Some(Msg::Error { message, .. }) => message.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn blob(kind: BlobKind, plain: &[u8]) -> StoredBlob {
    let (encoding, stored) = hamn::chunk::encode(plain);
    StoredBlob {
        id: BlobId {
            kind,
            hash: *blake3::hash(plain).as_bytes(),
        },
        encoding,
        plain_len: plain.len() as u32,
        stored,
    }
}

fn record(root: TreeId) -> Vec<u8> {
    Snapshot {
        time_ns: 1,
        host: "evil".into(),
        paths: vec!["/x".into()],
        root,
        parent: None,
        tags: vec![],
        stats: SnapshotStats::default(),
    }
    .encode()
}

/// The store shows no snapshot and still checks clean.
fn unchanged(env: &Env) {
    assert_eq!(env.snapshot_count(), 0);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_wrong_chunk_is_refused() {
    let env = Env::new();
    let mut b = blob(BlobKind::Chunk, b"real content");
    b.id.hash[0] ^= 1;
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(b)));
    input.extend(frame(&Msg::Flush));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1);
    assert!(
        last_error(&replies).contains("does not match"),
        "{replies:?}"
    );
    unchanged(&env);
}

/// Whether the standby at `store` holds chunk `id`.
fn holds(store: &Path, id: ChunkId) -> bool {
    let mut input = hello();
    input.extend(frame(&Msg::HaveBlobs(vec![id.into()])));
    let (c, replies) = serve(store, &input);
    assert_eq!(c, 0, "{replies:?}");
    match replies.last() {
        Some(Msg::Have(f)) => f[0],
        other => panic!("expected Have, got {other:?}"),
    }
}

#[test]
fn deltas_with_missing_bases_wrong_content_or_past_the_limit_are_refused() {
    let env = Env::new();
    let old = bytes(300_000, 1);
    let base = blob(BlobKind::Chunk, &old);
    let base_id = ChunkId(base.id.hash);
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(base)));
    input.extend(frame(&Msg::Flush));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 0, "{replies:?}");

    let mut new = old.clone();
    new[1000] ^= 1;
    let good = DeltaChunk {
        id: ChunkId(*blake3::hash(&new).as_bytes()),
        plain_len: new.len() as u32,
        bases: vec![base_id],
        delta: hamn::chunk::delta_encode(&new, &old).unwrap(),
    };
    let mut missing_base = good.clone();
    missing_base.bases = vec![ChunkId([7; 32])];
    let mut wrong_id = good.clone();
    wrong_id.id.0[0] ^= 1;
    let mut too_long = good.clone();
    too_long.plain_len = hamn::chunk::CHUNK_MAX_BYTES as u32 + 1;
    let mut garbage = good.clone();
    garbage.delta = b"not zstd".to_vec();
    for (bad, says) in [
        (missing_base, "not stored here"),
        (wrong_id, "does not match"),
        (too_long, "limit"),
        (garbage, "zstd"),
    ] {
        let id = bad.id;
        let mut input = hello();
        input.extend(frame(&Msg::PutDelta(bad)));
        input.extend(frame(&Msg::Flush));
        let (c, replies) = serve(&env.store(), &input);
        assert_eq!(c, 1, "{says}: {replies:?}");
        assert!(last_error(&replies).contains(says), "{says}: {replies:?}");
        assert!(!holds(&env.store(), id), "{says}: stored anyway");
    }
    assert!(!holds(&env.store(), good.id));
    let mut input = hello();
    input.extend(frame(&Msg::PutDelta(good.clone())));
    input.extend(frame(&Msg::Flush));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 0, "{replies:?}");
    assert!(holds(&env.store(), good.id));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn over_long_frames_and_garbage_are_refused() {
    let env = Env::new();
    let mut input = hello();
    input.extend(((FRAME_MAX_BYTES + 1) as u32).to_le_bytes());
    input.push(T_PUT_BLOB);
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1);
    assert!(last_error(&replies).contains("limit"), "{replies:?}");
    let (c, replies) = serve(&env.store(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c, 1);
    assert!(!replies.is_empty());
    let mut input = hello();
    input.extend([9, 0, 0, 0, 99, 1, 2, 3, 4, 5, 6, 7, 8]);
    let (c, _) = serve(&env.store(), &input);
    assert_eq!(c, 1);
    unchanged(&env);
}

#[test]
fn a_zstd_bomb_is_refused_before_it_inflates() {
    let env = Env::new();
    // 64 MiB of zeros compresses to a few KiB; it claims to be a small chunk.
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let stored = zstd::bulk::compress(&zeros, 3).unwrap();
    let b = StoredBlob {
        id: BlobId {
            kind: BlobKind::Chunk,
            hash: *blake3::hash(&zeros).as_bytes(),
        },
        encoding: hamn::chunk::ENCODING_ZSTD,
        plain_len: 1024,
        stored: stored.clone(),
    };
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(b.clone())));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1, "{replies:?}");
    // Declaring the true size is refused by the chunk size limit.
    let mut big = b;
    big.plain_len = zeros.len() as u32;
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(big)));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1);
    assert!(last_error(&replies).contains("limit"), "{replies:?}");
    unchanged(&env);
}

#[test]
fn a_chunk_padded_past_its_compressed_size_is_refused() {
    let env = Env::new();
    let content = b"a small chunk";
    let mut b = blob(BlobKind::Chunk, content);
    // A zstd skippable frame (magic 0x184D2A50, length, payload) decodes
    // to nothing: 1 MiB of it after the real frame leaves the content as
    // it is, and would only fill the standby's disk.
    let mut stored = zstd::bulk::compress(content, 3).unwrap();
    let pad = 1024 * 1024u32;
    stored.extend(0x184D_2A50u32.to_le_bytes());
    stored.extend(pad.to_le_bytes());
    stored.extend(vec![0u8; pad as usize]);
    assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), content);
    b.encoding = hamn::chunk::ENCODING_ZSTD;
    b.stored = stored;
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(b.clone())));
    input.extend(frame(&Msg::Flush));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1, "{replies:?}");
    assert!(last_error(&replies).contains("is stored in"), "{replies:?}");
    assert!(!holds_blob(&env.store(), b.id));
    unchanged(&env);
}

#[test]
fn trees_with_escaping_names_are_refused() {
    let env = Env::new();
    let content = b"payload";
    let chunk = blob(BlobKind::Chunk, content);
    for name in [&b".."[..], b"a/b", b"x\0y", b""] {
        let tree = Tree {
            entries: vec![Entry {
                name: name.to_vec(),
                meta: Meta::default(),
                kind: Kind::File(FileContent {
                    size: content.len() as u64,
                    encoding: Encoding::Plain,
                    holes: vec![],
                    chunks: vec![ChunkRef {
                        id: ChunkId(chunk.id.hash),
                        len: content.len() as u32,
                    }],
                }),
            }],
        };
        let bytes = tree.encode();
        let t = blob(BlobKind::Tree, &bytes);
        let mut input = hello();
        input.extend(frame(&Msg::PutBlob(chunk.clone())));
        input.extend(frame(&Msg::PutBlob(t.clone())));
        input.extend(frame(&Msg::Flush));
        input.extend(frame(&Msg::PutSnapshot(record(TreeId(t.id.hash)))));
        let (c, replies) = serve(&env.store(), &input);
        assert_eq!(c, 1, "{name:?}");
        assert!(
            last_error(&replies).contains("entry name"),
            "{name:?}: {replies:?}"
        );
        // Refused as it arrived: not stored, so never reported as held.
        assert!(!holds_blob(&env.store(), t.id), "{name:?}");
    }
    assert_eq!(env.snapshot_count(), 0);
}

/// Whether the standby at `store` holds blob `id`.
fn holds_blob(store: &Path, id: BlobId) -> bool {
    let mut input = hello();
    input.extend(frame(&Msg::HaveBlobs(vec![id])));
    let (c, replies) = serve(store, &input);
    assert_eq!(c, 0, "{replies:?}");
    match replies.last() {
        Some(Msg::Have(f)) => f[0],
        other => panic!("expected Have, got {other:?}"),
    }
}

fn dir(name: &[u8], id: TreeId) -> Entry {
    Entry {
        name: name.to_vec(),
        meta: Meta::default(),
        kind: Kind::Dir(id),
    }
}

fn file_of(name: &[u8], chunk: BlobId, len: u32) -> Entry {
    Entry {
        name: name.to_vec(),
        meta: Meta::default(),
        kind: Kind::File(FileContent {
            size: len as u64,
            encoding: Encoding::Plain,
            holes: vec![],
            chunks: vec![ChunkRef {
                id: ChunkId(chunk.hash),
                len,
            }],
        }),
    }
}

#[test]
fn a_tree_that_names_one_subtree_twice_at_every_level_is_checked_once() {
    // 2^60 paths lead to the bottom tree; each tree is checked once.
    let env = Env::new();
    let content = b"shared";
    let chunk = blob(BlobKind::Chunk, content);
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(chunk.clone())));
    let mut below = Tree {
        entries: vec![file_of(b"f", chunk.id, content.len() as u32)],
    };
    let mut top = blob(BlobKind::Tree, &below.encode());
    input.extend(frame(&Msg::PutBlob(top.clone())));
    for _ in 0..60 {
        let id = TreeId(top.id.hash);
        below = Tree {
            entries: vec![dir(b"a", id), dir(b"b", id)],
        };
        top = blob(BlobKind::Tree, &below.encode());
        input.extend(frame(&Msg::PutBlob(top.clone())));
    }
    input.extend(frame(&Msg::PutSnapshot(record(TreeId(top.id.hash)))));
    input.extend(frame(&Msg::Bye));
    let mut child = spawn_serve(&env.store(), &[]);
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let code = wait_exit(&mut child, std::time::Duration::from_secs(60));
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(
        code,
        Some(0),
        "serve did not publish the snapshot within 60 s (walking every path?)"
    );
    assert_eq!(env.snapshot_count(), 1);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_file_must_name_a_stored_chunk_of_its_length() {
    let env = Env::new();
    let content = b"twelve bytes";
    let chunk = blob(BlobKind::Chunk, content);
    let other = blob(BlobKind::Tree, &Tree::default().encode());
    for (what, target, len) in [
        ("a longer length", chunk.id, content.len() as u32 + 1),
        ("a shorter length", chunk.id, content.len() as u32 - 1),
    ] {
        let t = blob(
            BlobKind::Tree,
            &Tree {
                entries: vec![file_of(b"f", target, len)],
            }
            .encode(),
        );
        let mut input = hello();
        input.extend(frame(&Msg::PutBlob(chunk.clone())));
        input.extend(frame(&Msg::PutBlob(other.clone())));
        input.extend(frame(&Msg::PutBlob(t.clone())));
        input.extend(frame(&Msg::PutSnapshot(record(TreeId(t.id.hash)))));
        let (c, replies) = serve(&env.store(), &input);
        assert_eq!(c, 1, "{what}");
        assert!(
            last_error(&replies).contains("is listed with"),
            "{what}: {replies:?}"
        );
    }
    assert_eq!(env.snapshot_count(), 0);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_snapshot_with_missing_data_is_not_published() {
    let env = Env::new();
    let tree = Tree {
        entries: vec![Entry {
            name: b"f".to_vec(),
            meta: Meta::default(),
            kind: Kind::File(FileContent {
                size: 5,
                encoding: Encoding::Plain,
                holes: vec![],
                chunks: vec![ChunkRef {
                    id: ChunkId([7; 32]),
                    len: 5,
                }],
            }),
        }],
    };
    let t = blob(BlobKind::Tree, &tree.encode());
    let mut input = hello();
    input.extend(frame(&Msg::PutBlob(t.clone())));
    input.extend(frame(&Msg::PutSnapshot(record(TreeId(t.id.hash)))));
    let (c, replies) = serve(&env.store(), &input);
    assert_eq!(c, 1);
    assert!(last_error(&replies).contains("missing"), "{replies:?}");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn another_protocol_version_is_refused_naming_both() {
    let env = Env::new();
    let input = frame(&Msg::Hello {
        version: PROTOCOL_VERSION + 7,
        client: "future".into(),
        store: String::new(),
        mode: MODE_WRITE,
    });
    // The same, from a version whose greeting has grown a field.
    let mut future = PROTOCOL_MAGIC.to_vec();
    future.extend((PROTOCOL_VERSION + 7).to_le_bytes());
    future.extend(b"a field this version does not know");
    let mut grown = ((future.len() + 1) as u32).to_le_bytes().to_vec();
    grown.push(T_HELLO);
    grown.extend(future);
    for input in [input, grown] {
        let (c, replies) = serve(&env.store(), &input);
        assert_eq!(c, 1);
        let e = last_error(&replies);
        assert!(
            e.contains(&(PROTOCOL_VERSION + 7).to_string())
                && e.contains(&PROTOCOL_VERSION.to_string()),
            "{e}"
        );
    }
    // A primary of the version before, whose deployment and retention
    // replies were JSON texts, is told what to do.
    let older = frame(&Msg::Hello {
        version: PROTOCOL_VERSION - 1,
        client: "older".into(),
        store: String::new(),
        mode: MODE_WRITE,
    });
    let (c, replies) = serve(&env.store(), &older);
    assert_eq!(c, 1);
    let e = last_error(&replies);
    assert!(
        e.contains(&format!(
            "protocol version {} asked, this standby speaks {PROTOCOL_VERSION}",
            PROTOCOL_VERSION - 1
        )) && e.contains("same hamn version"),
        "{e}"
    );
    unchanged(&env);
}

/// Wait for `child` to exit, at most `limit`; None if it is still running.
fn wait_exit(child: &mut std::process::Child, limit: std::time::Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st.code().expect("exited, not killed"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

#[test]
fn a_primary_gone_silent_ends_the_session_and_frees_the_store_lock() {
    let env = Env::new();
    let data = env.path("data");
    make_tree(&data, 5, 3);
    let mut child = spawn_serve(&env.store(), &["--idle-timeout", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut replies = FrameReader::new(child.stdout.take().unwrap());
    stdin.write_all(&hello()).unwrap();
    assert!(
        matches!(replies.read(), Ok(Some(Msg::Welcome { .. }))),
        "no welcome"
    );
    // A primary that is slow but alive keeps its session: requests 1 s
    // apart for 4 s (twice the limit) are all answered.
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        stdin.write_all(&frame(&Msg::ListSnapshots)).unwrap();
        assert!(
            matches!(replies.read(), Ok(Some(Msg::SnapshotList(_)))),
            "a request after 1 s was not answered"
        );
    }
    // The session holds the store lock.
    let out = env.run(&["snapshot", data.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // Then silence, with the connection still open (stdin is kept): the
    // session ends by itself and the lock is free again.
    let status = wait_exit(&mut child, std::time::Duration::from_secs(30));
    drop(stdin);
    let Some(status) = status else {
        let _ = child.kill();
        panic!("hamn serve still runs 30 s after its primary went silent");
    };
    assert_eq!(status, 1);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("sent or read nothing for 2 s"), "{err}");
    env.snapshot(&[&data]);
    env.ok(&["check", "--read-data"]);
}
