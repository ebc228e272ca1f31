//! An in-memory storage that remembers what was synced, and can crash.
//!
//! Each file keeps its current bytes and its bytes as of the last `sync`. A
//! [`MemStorage::crash`] throws away unsynced bytes, keeping a random prefix of
//! them (a torn write), and forgets files whose creation was never made durable
//! by `sync_dir`. Tests of recovery use it; it never touches the OS.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand_core::RngCore;

use super::{BoxFuture, SharedFile, Storage, StorageFile};

#[derive(Default)]
struct FileState {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    files: BTreeMap<PathBuf, Arc<Mutex<FileState>>>,
    dirs: BTreeSet<PathBuf>,
    /// Files whose directory entry is durable.
    durable_entries: BTreeSet<PathBuf>,
    /// When set, appends past this many bytes in total fail with ENOSPC-like errors.
    capacity_bytes: Option<u64>,
    /// When set, this many more mutating operations succeed and every one
    /// after fails: the process died there (tests then call `crash`).
    writes_left: Option<u64>,
}

#[derive(Clone, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<Inner>>,
}

struct MemFile {
    state: Arc<Mutex<FileState>>,
    storage: MemStorage,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock here means a test already panicked; keep going so the
    // panic that matters is the one reported.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit the total bytes stored; appends past it fail (a full disk).
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        lock(&self.inner).capacity_bytes = capacity_bytes;
    }

    /// Lets `writes` more mutating operations (open, append, sync,
    /// truncate, remove, rename, sync_dir) succeed, then fails every later
    /// one, so a test can stop a multi-step operation at any point. `None`
    /// lifts the limit.
    pub fn fail_after_writes(&self, writes: Option<u64>) {
        lock(&self.inner).writes_left = writes;
    }

    fn write_allowed(&self) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        match &mut inner.writes_left {
            Some(0) => Err(io::Error::other("stopped: the test's crash point")),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn used_bytes(inner: &Inner) -> u64 {
        inner
            .files
            .values()
            .map(|file| lock(file).current.len() as u64)
            .sum()
    }

    /// Simulates power loss: unsynced bytes are lost except for a random
    /// prefix of them (a torn write), and files never made durable vanish.
    /// Handles opened before the crash must not be used afterwards.
    pub fn crash(&self, rng: &mut dyn RngCore) {
        let mut inner = lock(&self.inner);
        let durable_entries = inner.durable_entries.clone();
        inner.files.retain(|path, _| durable_entries.contains(path));
        let mut fresh = BTreeMap::new();
        for (path, file) in &inner.files {
            let state = lock(file);
            let mut survived = state.durable.clone();
            let extends_durable = state.current.len() > state.durable.len()
                && state.current[..state.durable.len()] == state.durable[..];
            if extends_durable {
                let unsynced = &state.current[state.durable.len()..];
                let kept = (rng.next_u64() % (unsynced.len() as u64 + 1)) as usize;
                survived.extend_from_slice(&unsynced[..kept]);
            }
            fresh.insert(
                path.clone(),
                Arc::new(Mutex::new(FileState {
                    current: survived.clone(),
                    durable: survived,
                })),
            );
        }
        inner.files = fresh;
    }

    /// Replaces everything stored here with a copy of what `other` holds
    /// (files, synced bytes, directories), for benchmarks and tests that
    /// start many runs from one state.
    pub fn copy_from(&self, other: &MemStorage) {
        let source = lock(&other.inner);
        let files = source
            .files
            .iter()
            .map(|(path, file)| {
                let state = lock(file);
                let copy = FileState {
                    current: state.current.clone(),
                    durable: state.durable.clone(),
                };
                (path.clone(), Arc::new(Mutex::new(copy)))
            })
            .collect();
        let mut inner = lock(&self.inner);
        inner.files = files;
        inner.dirs = source.dirs.clone();
        inner.durable_entries = source.durable_entries.clone();
    }

    /// The current bytes of a file, for tests that corrupt files on purpose.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = lock(&self.inner);
        inner.files.get(path).map(|file| lock(file).current.clone())
    }

    /// Overwrite a file's bytes, durable at once (for corruption tests).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut inner = lock(&self.inner);
        inner.durable_entries.insert(path.to_path_buf());
        inner.files.insert(
            path.to_path_buf(),
            Arc::new(Mutex::new(FileState {
                current: bytes.clone(),
                durable: bytes,
            })),
        );
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for MemStorage {
    fn open<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<SharedFile>> {
        Box::pin(async move {
            self.write_allowed()?;
            let mut inner = lock(&self.inner);
            let state = inner.files.entry(path.to_path_buf()).or_default().clone();
            Ok(Arc::new(MemFile {
                state,
                storage: self.clone(),
            }) as SharedFile)
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<String>>> {
        Box::pin(async move {
            let inner = lock(&self.inner);
            let mut names = BTreeSet::new();
            let children = inner.files.keys().chain(inner.dirs.iter());
            for path in children {
                if path.parent() == Some(dir) {
                    if let Some(name) = path.file_name() {
                        names.insert(name.to_string_lossy().into_owned());
                    }
                }
            }
            Ok(names.into_iter().collect())
        })
    }

    fn create_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.inner);
            let mut current = Some(dir);
            while let Some(path) = current {
                if path.as_os_str().is_empty() {
                    break;
                }
                inner.dirs.insert(path.to_path_buf());
                current = path.parent();
            }
            Ok(())
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.write_allowed()?;
            let mut inner = lock(&self.inner);
            inner.durable_entries.remove(path);
            inner
                .files
                .remove(path)
                .map(|_| ())
                .ok_or_else(|| not_found(path))
        })
    }

    fn remove_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.inner);
            if inner.files.keys().any(|path| path.parent() == Some(dir)) {
                return Err(io::Error::other("directory not empty"));
            }
            if inner.dirs.remove(dir) {
                Ok(())
            } else {
                Err(not_found(dir))
            }
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.write_allowed()?;
            let mut inner = lock(&self.inner);
            let file = inner.files.remove(from).ok_or_else(|| not_found(from))?;
            inner.files.insert(to.to_path_buf(), file);
            if inner.durable_entries.remove(from) {
                inner.durable_entries.insert(to.to_path_buf());
            }
            Ok(())
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.write_allowed()?;
            let mut inner = lock(&self.inner);
            let children: Vec<PathBuf> = inner
                .files
                .keys()
                .filter(|path| path.parent() == Some(dir))
                .cloned()
                .collect();
            inner.durable_entries.extend(children);
            Ok(())
        })
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, position: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        Box::pin(async move {
            let state = lock(&self.state);
            let start = usize::try_from(position)
                .unwrap_or(usize::MAX)
                .min(state.current.len());
            let end = start.saturating_add(len).min(state.current.len());
            Ok(Bytes::copy_from_slice(&state.current[start..end]))
        })
    }

    fn append(&self, data: Bytes) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            self.storage.write_allowed()?;
            {
                let inner = lock(&self.storage.inner);
                if let Some(capacity_bytes) = inner.capacity_bytes {
                    if MemStorage::used_bytes(&inner) + data.len() as u64 > capacity_bytes {
                        return Err(io::Error::new(
                            io::ErrorKind::StorageFull,
                            "no space left on device",
                        ));
                    }
                }
            }
            let mut state = lock(&self.state);
            let position = state.current.len() as u64;
            state.current.extend_from_slice(&data);
            Ok(position)
        })
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.storage.write_allowed()?;
            let mut state = lock(&self.state);
            state.durable = state.current.clone();
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.storage.write_allowed()?;
            let mut state = lock(&self.state);
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(state.current.len());
            state.current.truncate(len);
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        lock(&self.state).current.len() as u64
    }
}
