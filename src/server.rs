//! The connection loop: accepts connections through the network seam and
//! serves size-delimited Kafka requests on each, in order.
//!
//! Each connection handles one request at a time, so responses go out in
//! request order as Kafka requires, and a connection holds at most one
//! request in memory. A frame larger than `socket.request.max.bytes`, an
//! idle connection past `connections.max.idle.ms`, or bad input closes only
//! that connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::broker::{Broker, HandleOutcome};
use crate::net::{BoxStream, Listener};

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectionEnd {
    PeerClosed,
    Idle,
    Oversized(usize),
    BadRequest(String),
    Io(String),
}

/// Serves one connection until it ends.
pub async fn serve_connection(
    broker: Arc<Broker>,
    mut stream: BoxStream,
    peer: String,
) -> ConnectionEnd {
    let connection = broker.number_connection();
    let idle = Duration::from_millis(broker.config().connections_max_idle_ms);
    let max_request_bytes = broker.config().socket_request_max_bytes;
    let client_host = format!(
        "/{}",
        peer.rsplit_once(':')
            .map_or(peer.as_str(), |(host, _)| host)
    );
    loop {
        let mut size_bytes = [0u8; 4];
        match tokio::time::timeout(idle, stream.read_exact(&mut size_bytes)).await {
            Err(_) => return ConnectionEnd::Idle,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return ConnectionEnd::PeerClosed
            }
            Ok(Err(error)) => return ConnectionEnd::Io(error.to_string()),
            Ok(Ok(_)) => {}
        }
        let size = i32::from_be_bytes(size_bytes);
        if size < 0 || size as usize > max_request_bytes {
            return ConnectionEnd::Oversized(size.max(0) as usize);
        }
        let mut frame = BytesMut::zeroed(size as usize);
        // A peer that sends a size and then stalls is idle, too.
        match tokio::time::timeout(idle, stream.read_exact(&mut frame)).await {
            Err(_) => return ConnectionEnd::Idle,
            Ok(Err(error)) => return ConnectionEnd::Io(error.to_string()),
            Ok(Ok(_)) => {}
        }
        match broker
            .handle_on(frame.freeze(), &client_host, connection)
            .await
        {
            HandleOutcome::Respond(response) => {
                if let Err(error) = write_all(&mut stream, response).await {
                    return ConnectionEnd::Io(error.to_string());
                }
            }
            HandleOutcome::NoResponse => {}
            HandleOutcome::Close(reason) => return ConnectionEnd::BadRequest(reason),
        }
    }
}

async fn write_all(stream: &mut BoxStream, bytes: Bytes) -> std::io::Result<()> {
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Accepts connections forever, each served on its own task, at most
/// `max.connections` at once.
pub async fn serve(broker: Arc<Broker>, listener: Box<dyn Listener>) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        broker.set_bound_address(&address);
    }
    serve_unadvertised(broker, listener).await
}

/// [`serve`] for a listener clients are not told about: the CONTROLLER
/// listener, which the other voters reach through `controller.quorum.voters`.
pub async fn serve_unadvertised(
    broker: Arc<Broker>,
    mut listener: Box<dyn Listener>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(broker.config().max_connections.max(1)));
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept errors (EMFILE, a reset before accept) are transient:
                // log, pause briefly so a persistent one does not spin, go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            let end = serve_connection(broker, stream, peer.clone()).await;
            match &end {
                ConnectionEnd::PeerClosed => tracing::debug!(peer, "connection closed by peer"),
                ConnectionEnd::Oversized(size) => {
                    tracing::warn!(
                        peer,
                        size,
                        "closing connection: request larger than socket.request.max.bytes"
                    )
                }
                other => tracing::info!(peer, reason = ?other, "closing connection"),
            }
            drop(permit);
        });
    }
}
