//! The store as a local directory (the layout of `store`'s module doc):
//! files written under `tmp/`, fsynced and renamed into place, the
//! directory fsynced after; packs read through a cache of open files, and
//! chunk records read once dropped from the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::store::backend::{Backend, FileInfo, FileKind, NewFile};
use crate::store::{
    DEPLOYMENTS_DIR, JOURNAL_FILE, NODES_DIR, PACKS_DIR, SNAPSHOTS_DIR, StoreLock, TMP_DIR, durable,
};

const OPEN_PACKS_MAX: usize = 64;

pub struct Local {
    root: PathBuf,
    open_packs: Mutex<HashMap<String, Arc<OpenPack>>>,
}

/// A pack open for reading, and the run of its bytes read last.
struct OpenPack {
    file: File,
    /// Bytes read once, one range after another, (start, end): what has
    /// been read of it is dropped from the page cache as one range.
    run: Mutex<(u64, u64)>,
}

impl OpenPack {
    /// Chunks are read once (a deployment, a push, a restore): their pages
    /// go back to free memory at once instead of pushing out the page
    /// cache that the node's services use. The kernel drops only the
    /// folios wholly inside a range, and a folio can span many KiB, so
    /// the range is the run of records read in a row, not one chunk: a
    /// read whose range starts where the run ended extends it.
    fn read_once(&self, start: u64, end: u64) {
        let from = {
            let mut run = self.run.lock().unwrap_or_else(|p| p.into_inner());
            if run.1 == start && run.1 > run.0 {
                run.1 = end;
            } else {
                *run = (start, end);
            }
            run.0
        };
        crate::fs::uncache(&self.file, from, end - from);
    }
}

impl Local {
    pub fn new(root: &Path) -> Local {
        Local {
            root: root.to_path_buf(),
            open_packs: Mutex::new(HashMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Pack => {
                let fan = name.get(..2).unwrap_or("__");
                self.root
                    .join(PACKS_DIR)
                    .join(fan)
                    .join(format!("{name}.pack"))
            }
            FileKind::Snapshot => self.root.join(SNAPSHOTS_DIR).join(name),
            FileKind::Deployment => self.root.join(DEPLOYMENTS_DIR).join(name),
            FileKind::Journal => self.root.join(JOURNAL_FILE),
            FileKind::Node => self.root.join(NODES_DIR).join(name),
        }
    }

    fn open_pack(&self, name: &str) -> Result<Arc<OpenPack>> {
        let mut open = self.open_packs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(name) {
            return Ok(f.clone());
        }
        let path = self.path(FileKind::Pack, name);
        let f = Arc::new(OpenPack {
            file: File::open(&path).at(&path)?,
            run: Mutex::new((0, 0)),
        });
        if open.len() >= OPEN_PACKS_MAX {
            open.clear();
        }
        open.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Names of the regular files in `dir` (none when it is missing).
    fn names_in(dir: &Path) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.at(dir)?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
}

/// A file under `tmp/`, renamed to its name once durable; removed when
/// dropped unpublished.
struct LocalNewFile {
    tmp: PathBuf,
    dest: Box<dyn Fn(&str) -> PathBuf + Send>,
    out: Option<std::io::BufWriter<File>>,
}

impl Write for LocalNewFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.out {
            Some(o) => o.write(buf),
            None => Err(std::io::Error::other("file already published")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl NewFile for LocalNewFile {
    fn publish(mut self: Box<Self>, name: &str) -> Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::Other("file already published".into()))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        let published = durable::fsync(&file, &self.tmp)
            .and_then(|()| durable::publish(&self.tmp, &(self.dest)(name)));
        if published.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        published
    }

    fn describe(&self) -> String {
        self.tmp.display().to_string()
    }
}

impl Drop for LocalNewFile {
    fn drop(&mut self) {
        // Unfinished files are abandoned; a published one was renamed away.
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Backend for Local {
    fn describe(&self, kind: FileKind, name: &str) -> String {
        self.path(kind, name).display().to_string()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        match kind {
            FileKind::Pack => {
                let mut out = Vec::new();
                let dir = self.root.join(PACKS_DIR);
                for fan in Self::names_in(&dir)? {
                    // A stray file beside the fan-out folders is no pack.
                    if !dir.join(&fan).is_dir() {
                        continue;
                    }
                    for n in Self::names_in(&dir.join(&fan))? {
                        if let Some(id) = n.strip_suffix(".pack") {
                            out.push(id.to_string());
                        }
                    }
                }
                Ok(out)
            }
            FileKind::Snapshot => Self::names_in(&self.root.join(SNAPSHOTS_DIR)),
            FileKind::Deployment => Self::names_in(&self.root.join(DEPLOYMENTS_DIR)),
            FileKind::Node => Self::names_in(&self.root.join(NODES_DIR)),
            FileKind::Journal => Ok(if self.path(kind, "").exists() {
                vec![JOURNAL_FILE.to_string()]
            } else {
                Vec::new()
            }),
        }
    }

    fn info(&self, kind: FileKind, name: &str) -> Result<Option<FileInfo>> {
        let path = self.path(kind, name);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(FileInfo {
                size: m.len(),
                modified: m.modified().at(&path)?,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn read_at(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        buf: &mut [u8],
        once: Option<u64>,
    ) -> Result<()> {
        let path = self.path(kind, name);
        if kind != FileKind::Pack {
            let f = File::open(&path).at(&path)?;
            return f.read_exact_at(buf, offset).at(&path);
        }
        let f = self.open_pack(name)?;
        f.file.read_exact_at(buf, offset).at(&path)?;
        if let Some(from) = once {
            f.read_once(from.min(offset), offset + buf.len() as u64);
        }
        Ok(())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(kind, name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).at(&path)?;
        // A whole pack is read to verify or salvage it, once.
        if kind == FileKind::Pack {
            crate::fs::uncache_all(&f);
        }
        Ok(Some(data))
    }

    fn write_atomic(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        durable::write_atomic(&self.path(kind, name), &self.tmp_dir(), bytes)
    }

    fn create(&self, kind: FileKind) -> Result<Box<dyn NewFile>> {
        let tmp = self
            .tmp_dir()
            .join(format!("new-{:016x}.tmp", fastrand::u64(..)));
        let file = durable::create_private(&tmp)?;
        let me = Local::new(&self.root);
        Ok(Box::new(LocalNewFile {
            tmp,
            dest: Box::new(move |name| me.path(kind, name)),
            out: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<bool> {
        let path = self.path(kind, name);
        if kind == FileKind::Pack {
            self.open_packs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path, e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        durable::fsync_dir(dir)?;
        Ok(true)
    }

    fn lock(&self, wait: Duration, command: &str) -> Result<StoreLock> {
        let lock = StoreLock::acquire(&self.root, wait, command)?;
        // Leftovers of a writer that died are removed once the lock is
        // ours: nothing else can be writing them.
        let tmp = self.tmp_dir();
        durable::create_private_dir(&tmp)?;
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(lock)
    }
}
