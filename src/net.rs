//! The network seam.
//!
//! The broker accepts and the clients dial through these traits, so the same
//! code runs over tokio's TCP in the real binary and over turmoil's simulated
//! TCP in `sluice-sim`. Invariant: nothing outside this file names a concrete
//! socket type.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: a TCP connection, real or simulated.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed future, so the seams can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed stream.
pub type BoxStream = Box<dyn StreamObj>;

/// Object-safe form of [`Stream`].
pub trait StreamObj: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> StreamObj for T {}

/// Dials a `host:port` address.
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>>;
}

/// Accepts connections.
pub trait Listener: Send + 'static {
    /// Returns the stream and the peer's address, for logs.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>>;
    /// The address actually bound (useful with port 0).
    fn local_addr(&self) -> io::Result<String>;
}

/// Real TCP through tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Real TCP listener through tokio.
#[derive(Debug)]
pub struct TcpListener(pub tokio::net::TcpListener);

impl TcpListener {
    pub async fn bind(addr: &str) -> io::Result<Self> {
        Ok(Self(tokio::net::TcpListener::bind(addr).await?))
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.0.local_addr()?.to_string())
    }
}
