//! The simulation's implementations of sluice's seams: turmoil's TCP for the
//! network and turmoil's virtual time for the clock; the disk is in
//! `disk.rs`, with the faults and fsync latency defined here. Nothing here
//! changes sluice's code: the broker and clients take these as trait
//! objects.

use std::io;
use std::sync::{Arc, Mutex};

use sluice::clock::Clock;
use sluice::net::{BoxFuture, BoxStream, Connector, Listener};

/// How long an fsync takes on the simulated disk, drawn per fsync from the
/// broker incarnation's seed: usually 1 to 4 ms, as on an SSD, and one time
/// in five 5 to 30 ms, as under load. Long enough that acknowledging before
/// the flush, or serving records above the high watermark, is a window the
/// nemesis and the other hosts can hit, also across the simulation's steps.
#[derive(Clone)]
pub struct FsyncLatency(Arc<Mutex<crate::scenario::Draw>>);

impl std::fmt::Debug for FsyncLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncLatency")
    }
}

impl Default for FsyncLatency {
    fn default() -> Self {
        Self::new(0)
    }
}

impl FsyncLatency {
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(crate::scenario::Draw::new(seed))))
    }

    pub(crate) fn next(&self) -> std::time::Duration {
        let mut draw = self.0.lock().expect("fsync latency lock");
        let ms = if draw.chance(1, 5) {
            draw.range(5, 30)
        } else {
            draw.range(1, 4)
        };
        std::time::Duration::from_millis(ms)
    }
}

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

    pub(crate) fn check(&self, host: &str, operation: Operation) -> io::Result<()> {
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
pub(crate) enum Operation {
    Create,
    Write,
    Sync,
}
