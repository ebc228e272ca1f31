//! The simulation's implementations of sluice's seams: turmoil's TCP for the
//! network, turmoil's per-host filesystem for storage, and turmoil's virtual
//! time for the clock. Nothing here changes sluice's code: the broker and
//! clients take these as trait objects.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice::clock::Clock;
use sluice::net::{BoxFuture, BoxStream, Connector, Listener};
use sluice::storage::{SharedFile, Storage, StorageFile};
use turmoil::fs::shim::std::fs as simfs;

/// How long an fsync takes on the simulated disk: a few milliseconds, as on
/// an SSD under load. Long enough that acknowledging before the flush, or
/// serving records above the high watermark, is a window the nemesis can hit.
const FSYNC_LATENCY: std::time::Duration = std::time::Duration::from_millis(3);

/// Dials through turmoil's simulated network.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimConnector;

impl Connector for SimConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Accepts on turmoil's simulated network.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    advertised: String,
}

impl SimListener {
    /// Binds `0.0.0.0:port` and advertises `host:port`, the name clients dial.
    pub async fn bind(host: &str, port: u16) -> io::Result<Self> {
        let inner = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        Ok(Self {
            inner,
            advertised: format!("{host}:{port}"),
        })
    }
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.advertised.clone())
    }
}

/// Calendar time = the simulation's fixed epoch + virtual elapsed time, so it
/// keeps running across host restarts and is the same on every run.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        turmoil::since_epoch()
            .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A disk fault the nemesis can switch on for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// ENOSPC: appends and new files fail.
    Full,
    /// EIO: appends and syncs fail.
    IoErrors,
}

/// Disk faults by host, shared by the nemesis and each host's storage.
#[derive(Debug, Default)]
pub struct DiskFaults {
    by_host: Mutex<std::collections::BTreeMap<String, DiskFault>>,
}

impl DiskFaults {
    pub fn set(&self, host: &str, fault: Option<DiskFault>) {
        let mut by_host = self.by_host.lock().expect("disk faults lock");
        match fault {
            Some(fault) => by_host.insert(host.to_string(), fault),
            None => by_host.remove(host),
        };
    }

    fn get(&self, host: &str) -> Option<DiskFault> {
        self.by_host
            .lock()
            .expect("disk faults lock")
            .get(host)
            .copied()
    }

    fn check(&self, host: &str, operation: Operation) -> io::Result<()> {
        match (self.get(host), operation) {
            (Some(DiskFault::Full), Operation::Write | Operation::Create) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            )),
            (Some(DiskFault::IoErrors), Operation::Write | Operation::Sync) => {
                Err(io::Error::other("input/output error (simulated)"))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Copy)]
enum Operation {
    Create,
    Write,
    Sync,
}

/// turmoil's per-host filesystem. A crash of the host loses what was not
/// synced, and tears writes by the configured block size. The nemesis can
/// also make the disk full or failing through [`DiskFaults`].
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    faults: Arc<DiskFaults>,
    host: String,
}

impl SimStorage {
    /// Storage for `host`, subject to the faults set for it in `faults`.
    pub fn new(faults: Arc<DiskFaults>, host: &str) -> Self {
        Self {
            faults,
            host: host.to_string(),
        }
    }
}

struct SimFile {
    faults: Arc<DiskFaults>,
    host: String,
    file: simfs::File,
    len: AtomicU64,
    /// Serialises appends so two never claim the same position.
    append_lock: Mutex<()>,
}

impl Storage for SimStorage {
    fn open<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<SharedFile>> {
        Box::pin(async move {
            if !simfs::exists(path) {
                self.faults.check(&self.host, Operation::Create)?;
            }
            let file = simfs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let len = file.metadata()?.len();
            Ok(Arc::new(SimFile {
                faults: Arc::clone(&self.faults),
                host: self.host.clone(),
                file,
                len: AtomicU64::new(len),
                append_lock: Mutex::new(()),
            }) as SharedFile)
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<String>>> {
        Box::pin(async move {
            let mut names = Vec::new();
            for entry in simfs::read_dir(dir)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
    }

    fn create_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { simfs::create_dir_all(dir) })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { simfs::remove_file(path) })
    }

    fn remove_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { simfs::remove_dir(dir) })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { simfs::rename(from, to) })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { simfs::sync_dir(dir) })
    }
}

fn lock_error(_: std::sync::PoisonError<std::sync::MutexGuard<'_, ()>>) -> io::Error {
    io::Error::other("append lock poisoned")
}

impl StorageFile for SimFile {
    fn read_at(&self, position: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        let file_len = self.len.load(Ordering::Acquire);
        Box::pin(async move { sluice::storage::read_at_most(&self.file, position, len, file_len) })
    }

    fn append(&self, data: Bytes) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            self.faults.check(&self.host, Operation::Write)?;
            let _serialised = self.append_lock.lock().map_err(lock_error)?;
            let position = self.len.load(Ordering::Acquire);
            self.file.write_all_at(&data, position)?;
            self.len
                .store(position + data.len() as u64, Ordering::Release);
            Ok(position)
        })
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.faults.check(&self.host, Operation::Sync)?;
            // A flush to stable storage takes time; while it runs, the data
            // is written but not durable, and a power loss still loses it.
            tokio::time::sleep(FSYNC_LATENCY).await;
            self.file.sync_data()
        })
    }

    fn truncate(&self, len: u64) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let _serialised = self.append_lock.lock().map_err(lock_error)?;
            self.file.set_len(len)?;
            self.len.store(len, Ordering::Release);
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}
