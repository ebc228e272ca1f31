//! The storage seam: every byte the log keeps goes through these two traits.
//!
//! The contract, method by method:
//! - [`Storage::open`] opens a file for reading and appending, creating it if
//!   absent. A newly created file is durable only after [`Storage::sync_dir`]
//!   on its parent.
//! - [`StorageFile::append`] writes at the end and returns the position it wrote
//!   at. The bytes are readable at once but durable only after
//!   [`StorageFile::sync`]. Callers serialise appends to one file.
//! - [`StorageFile::read_at`] returns up to `len` bytes; fewer only at the end
//!   of the file.
//! - [`StorageFile::truncate`] shortens the file; durable after `sync`.
//! - `rename`, `remove` and `create_dir` change directory entries, durable after
//!   `sync_dir` on the parent.
//! - [`Storage::list`] returns the names in a directory, sorted.
//!
//! Implementations: [`fs::FsStorage`] (std files; fsync runs off the async
//! reactor) and [`mem::MemStorage`] (in memory; remembers what was synced and
//! can crash, losing or tearing unsynced writes). The simulation adds a third
//! over turmoil's filesystem.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::net::BoxFuture;

pub mod fs;
pub mod mem;

/// A handle to an open file, shareable between the log and its syncer.
pub type SharedFile = Arc<dyn StorageFile>;

/// A shared storage backend.
pub type SharedStorage = Arc<dyn Storage>;

pub trait Storage: Send + Sync + 'static {
    fn open<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<SharedFile>>;
    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<String>>>;
    fn create_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>>;
    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>>;
    /// Removes an empty directory.
    fn remove_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>>;
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>>;
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>>;
}

pub trait StorageFile: Send + Sync + 'static {
    fn read_at(&self, position: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>>;
    fn append(&self, data: Bytes) -> BoxFuture<'_, io::Result<u64>>;
    fn sync(&self) -> BoxFuture<'_, io::Result<()>>;
    fn truncate(&self, len: u64) -> BoxFuture<'_, io::Result<()>>;
    /// The current length, including bytes not yet synced.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads up to `len` bytes at `position` from a file whose logical length is
/// `file_len`, returning fewer only at the end. Shared by the file-backed
/// implementations (real and simulated), whose files both offer `pread`.
pub fn read_at_most(
    file: &impl std::os::unix::fs::FileExt,
    position: u64,
    len: usize,
    file_len: u64,
) -> io::Result<Bytes> {
    let available = file_len.saturating_sub(position);
    let wanted = usize::try_from(available).unwrap_or(usize::MAX).min(len);
    let mut buffer = vec![0u8; wanted];
    let mut filled = 0;
    while filled < wanted {
        let read = file.read_at(&mut buffer[filled..], position + filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    buffer.truncate(filled);
    Ok(Bytes::from(buffer))
}
