//! Real files through `std::fs`.
//!
//! Reads and appends go to the page cache and are done inline; `fsync` can take
//! milliseconds, so it runs on tokio's blocking pool. This file is part of the
//! real-environment seam: the simulation never runs it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{BoxFuture, SharedFile, Storage, StorageFile};

#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsFile {
    file: Arc<File>,
    /// Logical length. Appends are serialised by `append_lock` so two appends
    /// never claim the same position.
    len: AtomicU64,
    append_lock: Mutex<()>,
}

#[allow(clippy::disallowed_methods)] // The real seam is the one place allowed to block a thread.
async fn off_reactor<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| io::Error::other(join_error.to_string()))?
}

impl Storage for FsStorage {
    fn open<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<SharedFile>> {
        Box::pin(async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let len = file.metadata()?.len();
            Ok(Arc::new(FsFile {
                file: Arc::new(file),
                len: AtomicU64::new(len),
                append_lock: Mutex::new(()),
            }) as SharedFile)
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<String>>> {
        Box::pin(async move {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
    }

    fn create_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { std::fs::create_dir_all(dir) })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { std::fs::remove_file(path) })
    }

    fn remove_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { std::fs::remove_dir(dir) })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { std::fs::rename(from, to) })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let dir: PathBuf = dir.to_path_buf();
        Box::pin(off_reactor(move || File::open(dir)?.sync_all()))
    }
}

impl StorageFile for FsFile {
    fn read_at(&self, position: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        let file_len = self.len.load(Ordering::Acquire);
        Box::pin(async move { super::read_at_most(self.file.as_ref(), position, len, file_len) })
    }

    fn append(&self, data: Bytes) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            let _serialised = self
                .append_lock
                .lock()
                .map_err(|_| io::Error::other("append lock poisoned"))?;
            let position = self.len.load(Ordering::Acquire);
            self.file.write_all_at(&data, position)?;
            self.len
                .store(position + data.len() as u64, Ordering::Release);
            Ok(position)
        })
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        let file = Arc::clone(&self.file);
        Box::pin(off_reactor(move || file.sync_data()))
    }

    fn truncate(&self, len: u64) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let _serialised = self
                .append_lock
                .lock()
                .map_err(|_| io::Error::other("append lock poisoned"))?;
            self.file.set_len(len)?;
            self.len.store(len, Ordering::Release);
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}
