//! The simulated disks: one per broker host, outliving its processes, with
//! the durability rules of POSIX files and the faults of real disks.
//!
//! A file has the bytes a process sees (everything written) and the writes
//! not yet made durable by `sync`. A restart of the process loses nothing:
//! the operating system's page cache holds the unsynced writes. A power loss
//! ([`SimDisk::power_loss`]) loses them, except that with a `block_size`
//! each unsynced write keeps a random number of its leading blocks (a torn
//! write); and a file whose creation or rename was never made durable by
//! `sync_dir` vanishes, as its directory entry was never written.
//!
//! Reads are served from memory. (turmoil's own filesystem answers a read by
//! replaying every unsynced write of the host, at a cost quadratic in the
//! unsynced data, which took half the time of a run.)

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sluice::net::BoxFuture;
use sluice::storage::{SharedFile, Storage, StorageFile};

use crate::scenario::Draw;
use crate::seams::{DiskFaults, FsyncLatency, Operation};

/// One unsynced write: where, and what.
#[derive(Debug, Clone)]
struct PendingWrite {
    offset: u64,
    data: Bytes,
}

#[derive(Debug, Default)]
struct FileState {
    /// What a process reads: durable bytes with every write since applied.
    current: Vec<u8>,
    /// What survives a power loss untouched.
    durable: Vec<u8>,
    /// Writes since the last sync, oldest first (truncations are durable at
    /// once in this model's terms only when synced; see `truncate`).
    pending: Vec<PendingWrite>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The namespace a process sees: names to files.
    files: BTreeMap<PathBuf, Arc<Mutex<FileState>>>,
    dirs: BTreeSet<PathBuf>,
    /// The namespace a power loss leaves: each directory's entries as of
    /// its last `sync_dir`. Creating, renaming or removing a file changes
    /// only `files` until then, so a power loss undoes it whole (a rename
    /// is atomic: the file is found under its old name or its new one).
    durable_files: BTreeMap<PathBuf, Arc<Mutex<FileState>>>,
}

/// One host's disk, shared by the nemesis (which cuts its power) and each
/// incarnation of the host's broker process.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    inner: Arc<Mutex<Inner>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic already failed the run; keep the state.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimDisk {
    /// Power loss: unsynced writes are lost, each keeping a random number of
    /// its leading `block_size` blocks when `block_size` is not 0, and files
    /// whose directory entry is not durable vanish. Handles of the process
    /// that lost power must not be used again (its host is crashed first).
    pub fn power_loss(&self, block_size: u64, draw: &mut Draw) {
        let mut inner = lock(&self.inner);
        let mut survivors = BTreeMap::new();
        for (path, file) in &inner.durable_files {
            let state = lock(file);
            let mut content = state.durable.clone();
            if block_size > 0 {
                for write in &state.pending {
                    let blocks = (write.data.len() as u64).div_ceil(block_size);
                    let kept_blocks = draw.range(0, blocks);
                    let kept = usize::try_from(kept_blocks * block_size)
                        .unwrap_or(usize::MAX)
                        .min(write.data.len());
                    if kept == 0 {
                        continue;
                    }
                    let start = usize::try_from(write.offset).unwrap_or(usize::MAX);
                    let end = start.saturating_add(kept);
                    if end > content.len() {
                        content.resize(end, 0);
                    }
                    content[start..end].copy_from_slice(&write.data[..kept]);
                }
            }
            survivors.insert(
                path.clone(),
                Arc::new(Mutex::new(FileState {
                    current: content.clone(),
                    durable: content,
                    pending: Vec::new(),
                })),
            );
        }
        inner.durable_files = survivors.clone();
        inner.files = survivors;
    }
}

impl SimDisk {
    /// What a process would read from every file directly inside `dir`,
    /// by name: the harness's look at a replica's log at the end of a run.
    pub fn files_in(&self, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let inner = lock(&self.inner);
        inner
            .files
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, file)| (path.clone(), lock(file).current.clone()))
            .collect()
    }
}

/// A broker process's view of its host's disk: the disk, the nemesis's
/// faults for the host, and how long its fsyncs take.
pub struct DiskStorage {
    disk: SimDisk,
    faults: Arc<DiskFaults>,
    host: String,
    fsync: FsyncLatency,
}

impl DiskStorage {
    pub fn new(disk: SimDisk, faults: Arc<DiskFaults>, host: &str, fsync: FsyncLatency) -> Self {
        Self {
            disk,
            faults,
            host: host.to_string(),
            fsync,
        }
    }
}

struct DiskFile {
    state: Arc<Mutex<FileState>>,
    faults: Arc<DiskFaults>,
    host: String,
    fsync: FsyncLatency,
}

impl Storage for DiskStorage {
    fn open<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<SharedFile>> {
        Box::pin(async move {
            let mut inner = lock(&self.disk.inner);
            let state = match inner.files.get(path) {
                Some(state) => Arc::clone(state),
                None => {
                    self.faults.check(&self.host, Operation::Create)?;
                    let state = Arc::new(Mutex::new(FileState::default()));
                    inner.files.insert(path.to_path_buf(), Arc::clone(&state));
                    state
                }
            };
            Ok(Arc::new(DiskFile {
                state,
                faults: Arc::clone(&self.faults),
                host: self.host.clone(),
                fsync: self.fsync.clone(),
            }) as SharedFile)
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<String>>> {
        Box::pin(async move {
            let inner = lock(&self.disk.inner);
            let mut names = BTreeSet::new();
            for path in inner.files.keys().chain(inner.dirs.iter()) {
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
            let mut inner = lock(&self.disk.inner);
            let mut current = Some(dir);
            while let Some(path) = current {
                if path.as_os_str().is_empty() {
                    break;
                }
                // Directories are durable at once in this model: the broker
                // creates its data directory at start and partition
                // directories when it creates topics, and recovers either
                // way if one vanished.
                inner.dirs.insert(path.to_path_buf());
                current = path.parent();
            }
            Ok(())
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.disk.inner);
            inner.files.remove(path).ok_or_else(|| not_found(path))?;
            Ok(())
        })
    }

    fn remove_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.disk.inner);
            if inner.files.keys().any(|path| path.parent() == Some(dir)) {
                return Err(io::Error::other("directory not empty"));
            }
            if !inner.dirs.remove(dir) {
                return Err(not_found(dir));
            }
            Ok(())
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.disk.inner);
            let file = inner.files.remove(from).ok_or_else(|| not_found(from))?;
            inner.files.insert(to.to_path_buf(), file);
            Ok(())
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut inner = lock(&self.disk.inner);
            let Inner {
                files,
                durable_files,
                ..
            } = &mut *inner;
            durable_files.retain(|path, _| path.parent() != Some(dir));
            for (path, file) in files.iter() {
                if path.parent() == Some(dir) {
                    durable_files.insert(path.clone(), Arc::clone(file));
                }
            }
            Ok(())
        })
    }
}

impl StorageFile for DiskFile {
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
            self.faults.check(&self.host, Operation::Write)?;
            let mut state = lock(&self.state);
            let offset = state.current.len() as u64;
            state.current.extend_from_slice(&data);
            state.pending.push(PendingWrite { offset, data });
            Ok(offset)
        })
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.faults.check(&self.host, Operation::Sync)?;
            // What is written when the fsync starts is what it makes
            // durable; it takes time, and a power loss meanwhile loses it.
            let (snapshot, written) = {
                let state = lock(&self.state);
                (state.current.clone(), state.pending.len())
            };
            tokio::time::sleep(self.fsync.next()).await;
            self.faults.check(&self.host, Operation::Sync)?;
            let mut state = lock(&self.state);
            state.durable = snapshot;
            let synced = written.min(state.pending.len());
            state.pending.drain(..synced);
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut state = lock(&self.state);
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(state.current.len());
            state.current.truncate(len);
            // A truncation is metadata a crash may not keep; model it as
            // durable at once for what is already durable (recovery cuts torn
            // tails itself), and drop unsynced writes past the new end.
            state.durable.truncate(len);
            let end = len as u64;
            state.pending.retain(|write| write.offset < end);
            for write in &mut state.pending {
                let keep = usize::try_from(end - write.offset)
                    .unwrap_or(usize::MAX)
                    .min(write.data.len());
                write.data.truncate(keep);
            }
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        lock(&self.state).current.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(disk: &SimDisk) -> DiskStorage {
        DiskStorage::new(
            disk.clone(),
            Arc::new(DiskFaults::default()),
            "broker-0",
            FsyncLatency::new(1),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_loss_keeps_synced_bytes_and_tears_unsynced_ones_by_block() {
        let disk = SimDisk::default();
        let store = storage(&disk);
        let dir = Path::new("/data");
        store.create_dir(dir).await.unwrap();
        let path = dir.join("f");
        let file = store.open(&path).await.unwrap();
        file.append(Bytes::from(vec![1u8; 100])).await.unwrap();
        file.sync().await.unwrap();
        store.sync_dir(dir).await.unwrap();
        file.append(Bytes::from(vec![2u8; 1000])).await.unwrap();
        assert_eq!(file.len(), 1100, "the process sees its unsynced write");
        // A restart (another process, same disk) still sees it.
        let again = storage(&disk).open(&path).await.unwrap();
        assert_eq!(again.len(), 1100);
        let mut kept = BTreeSet::new();
        for seed in 0..40 {
            let disk = SimDisk::default();
            let store = storage(&disk);
            store.create_dir(dir).await.unwrap();
            let file = store.open(&path).await.unwrap();
            file.append(Bytes::from(vec![1u8; 100])).await.unwrap();
            file.sync().await.unwrap();
            store.sync_dir(dir).await.unwrap();
            file.append(Bytes::from(vec![2u8; 1000])).await.unwrap();
            disk.power_loss(512, &mut Draw::new(seed));
            let after = storage(&disk).open(&path).await.unwrap();
            let len = after.len();
            assert!(len == 100 || len == 612 || len == 1100, "{len}");
            kept.insert(len);
        }
        assert_eq!(kept.len(), 3, "all three tears happen: {kept:?}");
        // Atomic writes (block size 0): nothing unsynced survives.
        disk.power_loss(0, &mut Draw::new(0));
        assert_eq!(storage(&disk).open(&path).await.unwrap().len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn names_change_durably_only_with_a_directory_sync() {
        let disk = SimDisk::default();
        let store = storage(&disk);
        let dir = Path::new("/data");
        store.create_dir(dir).await.unwrap();
        let kept = store.open(&dir.join("kept")).await.unwrap();
        kept.append(Bytes::from_static(b"k")).await.unwrap();
        kept.sync().await.unwrap();
        store.sync_dir(dir).await.unwrap();
        // Created and synced, but its name never was: it vanishes.
        let lost = store.open(&dir.join("lost")).await.unwrap();
        lost.append(Bytes::from_static(b"x")).await.unwrap();
        lost.sync().await.unwrap();
        // Renamed without a directory sync: the old name comes back.
        store
            .rename(&dir.join("kept"), &dir.join("renamed"))
            .await
            .unwrap();
        disk.power_loss(0, &mut Draw::new(0));
        assert_eq!(store.list(dir).await.unwrap(), vec!["kept".to_string()]);
        let back = store.open(&dir.join("kept")).await.unwrap();
        assert_eq!(back.read_at(0, 10).await.unwrap(), Bytes::from_static(b"k"));
        // Renamed and synced: the new name holds.
        store
            .rename(&dir.join("kept"), &dir.join("renamed"))
            .await
            .unwrap();
        store.sync_dir(dir).await.unwrap();
        disk.power_loss(0, &mut Draw::new(0));
        assert_eq!(store.list(dir).await.unwrap(), vec!["renamed".to_string()]);
    }
}
