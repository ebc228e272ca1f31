//! One connection to one broker.
//!
//! Frames are a 4-byte big-endian size followed by a request or response
//! header and a body, all encoded by `kafka-protocol`. Requests are pipelined:
//! a writer task writes frames in the order callers hand them in and a reader
//! task matches responses to requests by correlation id, relying on Kafka's
//! guarantee that a broker answers the requests of one connection in order.
//!
//! Writing happens in a task, not in the caller, so a caller that gives up
//! (timeout, dropped future) can never leave half a frame on the wire.
//!
//! Any error or timeout drops the connection; the next call dials again and
//! renegotiates versions with ApiVersions. Under simulation a partitioned link
//! silently swallows packets, so every wait here is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
// tokio's clock, not the OS's: virtual under the simulation.
use tokio::time::Instant;

use super::ClientError;
use crate::net::{BoxStream, Connector};

/// Kafka's `request.timeout.ms` default.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Largest response frame accepted. Fetch responses are bounded by
/// `fetch.max.bytes` (50 MiB by default) but a broker may exceed it to return
/// at least one batch; 100 MiB matches the broker-side `socket.request.max.bytes`.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Requests queued for the writer task of one connection. The producer keeps
/// at most `max.in.flight.requests.per.connection` (<= 5) per connection and
/// the consumer a handful, so 64 is never reached in normal use; it exists so
/// a stalled socket pushes back on callers instead of growing memory.
const QUEUED_REQUESTS_MAX: usize = 64;

/// Requests awaiting a response on one connection. Beyond this the connection
/// is treated as broken: a healthy broker answers long before.
const PENDING_REQUESTS_MAX: usize = 1024;

/// The versions of each API this client implements, as `(api_key, min, max)`.
/// Caps are where a newer version changes a field we rely on (topic ids replace
/// topic names in Produce v13, Fetch v13; OffsetFetch v8 batches groups).
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 1, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeQuorum, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::ElectLeaders, 1, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// The highest ApiVersions version we send first; brokers that do not know it
/// answer in v0 with UNSUPPORTED_VERSION and their own range.
const API_VERSIONS_VERSION_FIRST: i16 = 3;

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// Settings shared by every connection of a client.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// `client.id`: sent in every request header, shown in broker logs.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for any response (and for the
    /// dial plus version negotiation) before dropping the connection.
    pub request_timeout_ms: u64,
    /// Largest response frame accepted before the connection is dropped.
    pub response_bytes_max: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: "sluice".to_string(),
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
        }
    }
}

/// A lazily dialled, self-healing connection to one broker address.
pub struct Connection {
    addr: String,
    connector: Arc<dyn Connector>,
    config: ConnectionConfig,
    /// The live socket, if any. A tokio mutex because dialling awaits; held
    /// only while dialling, so concurrent callers share one dial.
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

/// What the writer task needs for one request.
struct Outgoing {
    /// The whole frame, with a zero correlation id the writer patches in.
    frame: BytesMut,
    /// Where to deliver the response body; `None` when the broker sends no
    /// response (Produce with acks=0).
    reply: Option<oneshot::Sender<Result<Bytes, ClientError>>>,
    /// When the answer is overdue: past it, the connection is presumed dead
    /// even if the caller stopped waiting earlier.
    deadline: Instant,
}

/// Where a response body (or the connection's failure) is delivered.
type Reply = oneshot::Sender<Result<Bytes, ClientError>>;

struct PendingState {
    /// Requests written and not yet answered, oldest first, each with the
    /// time its answer is overdue.
    queue: VecDeque<(i32, Reply, Instant)>,
    /// Set once the socket failed; later requests fail at once with it.
    failed: Option<ClientError>,
}

struct Pending(Mutex<PendingState>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // A poisoned lock only means another task panicked mid-update; the
        // queue is still structurally valid, so keep going.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection failed and fails every waiting request.
    fn fail(&self, error: ClientError) {
        let mut state = self.lock();
        if state.failed.is_none() {
            state.failed = Some(error.clone());
        }
        for (_, reply, _) in state.queue.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// A dialled socket with its two tasks. Dropping it aborts both.
struct Live {
    outgoing: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
    /// Broker's supported versions by api key, from ApiVersions.
    versions: BTreeMap<i16, (i16, i16)>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shutdown(ClientError::Closed);
    }
}

impl Live {
    fn is_failed(&self) -> bool {
        self.pending.lock().failed.is_some()
    }

    /// Whether the oldest unanswered request is overdue. Answers come in
    /// order, so the socket is presumed dead (a peer that vanished without a
    /// reset) even when every caller gave up on its own shorter timeout and
    /// nobody saw the request time out.
    fn is_overdue(&self) -> bool {
        self.pending
            .lock()
            .queue
            .front()
            .is_some_and(|(_, _, deadline)| *deadline <= Instant::now())
    }

    /// Stops both tasks and fails every request still waiting on this socket.
    fn shutdown(&self, error: ClientError) {
        for task in &self.tasks {
            task.abort();
        }
        self.pending.fail(error);
    }
}

impl Connection {
    pub fn new(
        addr: impl Into<String>,
        connector: Arc<dyn Connector>,
        config: ConnectionConfig,
    ) -> Self {
        Self {
            addr: addr.into(),
            connector,
            config,
            live: tokio::sync::Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// The version of `R` to use with this broker: the highest both sides
    /// support. Dials if not connected.
    pub async fn version<R: Request>(&self) -> Result<i16, ClientError> {
        let live = self.live().await?;
        self.pick_version(&live, R::KEY)
    }

    fn pick_version(&self, live: &Live, api_key: i16) -> Result<i16, ClientError> {
        let (client_min, client_max) = CLIENT_VERSIONS
            .iter()
            .find(|(key, _, _)| *key as i16 == api_key)
            .map(|(_, min, max)| (*min, *max))
            .ok_or_else(|| ClientError::Invalid(format!("api key {api_key} is not implemented")))?;
        let unsupported = || ClientError::UnsupportedVersion {
            addr: self.addr.clone(),
            api_key,
            min: client_min,
            max: client_max,
        };
        let (broker_min, broker_max) = live
            .versions
            .get(&api_key)
            .copied()
            .ok_or_else(unsupported)?;
        let max = client_max.min(broker_max);
        if max < client_min.max(broker_min) {
            return Err(unsupported());
        }
        Ok(max)
    }

    /// Sends `req` at the negotiated version and waits for its response,
    /// bounded by `request.timeout.ms`.
    pub async fn call<R: Request>(&self, req: R) -> Result<R::Response, ClientError> {
        let version = self.version::<R>().await?;
        self.send(req, version).await
    }

    /// Sends `req` at `version` and waits for its response, bounded by
    /// `request.timeout.ms`.
    pub async fn send<R: Request>(&self, req: R, version: i16) -> Result<R::Response, ClientError> {
        self.send_with_timeout(req, version, self.request_timeout())
            .await
    }

    /// Like [`send`](Self::send) with an explicit bound, for requests the
    /// broker may legitimately hold: Fetch (long poll) and JoinGroup (waits
    /// for the whole group).
    pub async fn send_with_timeout<R: Request>(
        &self,
        req: R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let live = self.live().await?;
        let frame = self.encode(&req, version)?;
        let (reply, response) = oneshot::channel();
        let api_key = R::KEY;
        let deadline = Instant::now() + timeout;
        let result = tokio::time::timeout_at(deadline, async {
            live.outgoing
                .send(Outgoing {
                    frame,
                    reply: Some(reply),
                    deadline,
                })
                .await
                .map_err(|_| self.network_error("connection closed"))?;
            response
                .await
                .map_err(|_| self.network_error("connection closed"))?
        })
        .await;
        let body = match result {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                self.discard(&live).await;
                return Err(error);
            }
            Err(_elapsed) => {
                self.discard(&live).await;
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        };
        match decode_response::<R>(body, api_key, version) {
            Ok(response) => Ok(response),
            Err(message) => {
                // Undecodable bytes mean we no longer agree on the framing.
                self.discard(&live).await;
                Err(ClientError::Protocol {
                    addr: self.addr.clone(),
                    message,
                })
            }
        }
    }

    /// Sends a request the broker will not answer (Produce with acks=0). Returns
    /// once the request is queued for writing.
    pub async fn send_no_response<R: Request>(
        &self,
        req: R,
        version: i16,
    ) -> Result<(), ClientError> {
        let live = self.live().await?;
        let frame = self.encode(&req, version)?;
        let queued = tokio::time::timeout(
            self.request_timeout(),
            live.outgoing.send(Outgoing {
                frame,
                reply: None,
                deadline: Instant::now(),
            }),
        )
        .await;
        match queued {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.discard(&live).await;
                Err(self.network_error("connection closed"))
            }
            Err(_) => {
                self.discard(&live).await;
                Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    timeout_ms: self.config.request_timeout_ms,
                })
            }
        }
    }

    /// Drops the connection now, failing its in-flight requests.
    pub async fn close(&self) {
        self.live.lock().await.take();
    }

    fn network_error(&self, message: impl Into<String>) -> ClientError {
        ClientError::Network {
            addr: self.addr.clone(),
            message: message.into(),
        }
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<BytesMut, ClientError> {
        encode_request(req, version, &self.config.client_id).map_err(|e| {
            ClientError::Invalid(format!("encoding api key {} v{version}: {e}", R::KEY))
        })
    }

    /// Shuts `live` down, so other requests on it fail now rather than at
    /// their own timeouts, and forgets it if it is still the current one.
    async fn discard(&self, live: &Arc<Live>) {
        live.shutdown(self.network_error("connection dropped after an error"));
        let mut current = self.live.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, live)) {
            current.take();
        }
    }

    /// The live connection, dialling and negotiating versions if needed.
    async fn live(&self) -> Result<Arc<Live>, ClientError> {
        let mut current = self.live.lock().await;
        if let Some(live) = current.as_ref() {
            if !live.is_failed() && !live.is_overdue() {
                return Ok(live.clone());
            }
        }
        if let Some(stale) = current.take() {
            stale.shutdown(ClientError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: self.config.request_timeout_ms,
            });
        }
        let live = match tokio::time::timeout(self.request_timeout(), self.dial()).await {
            Ok(result) => Arc::new(result?),
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    timeout_ms: self.config.request_timeout_ms,
                })
            }
        };
        *current = Some(live.clone());
        Ok(live)
    }

    async fn dial(&self) -> Result<Live, ClientError> {
        let stream = self
            .connector
            .connect(&self.addr)
            .await
            .map_err(|e| self.network_error(e.to_string()))?;
        let (read_half, write_half) = tokio::io::split(stream);
        let pending = Arc::new(Pending(Mutex::new(PendingState {
            queue: VecDeque::new(),
            failed: None,
        })));
        let (outgoing, outgoing_rx) = mpsc::channel(QUEUED_REQUESTS_MAX);
        let writer = tokio::spawn(write_loop(
            write_half,
            outgoing_rx,
            pending.clone(),
            self.addr.clone(),
        ));
        let reader = tokio::spawn(read_loop(
            read_half,
            pending.clone(),
            self.addr.clone(),
            self.config.response_bytes_max,
        ));
        let mut live = Live {
            outgoing,
            pending,
            versions: BTreeMap::new(),
            tasks: [writer, reader],
        };
        live.versions = self.negotiate(&live).await?;
        Ok(live)
    }

    /// ApiVersions: first at the newest version we know; a broker that does
    /// not know it answers in v0 with UNSUPPORTED_VERSION and its own range.
    async fn negotiate(&self, live: &Live) -> Result<BTreeMap<i16, (i16, i16)>, ClientError> {
        let mut version = API_VERSIONS_VERSION_FIRST;
        // Two rounds at most: the optimistic one and the one the broker asked for.
        for _ in 0..2 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("sluice"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let frame = self.encode(&req, version)?;
            let (reply, response) = oneshot::channel();
            live.outgoing
                .send(Outgoing {
                    frame,
                    reply: Some(reply),
                    deadline: Instant::now() + self.request_timeout(),
                })
                .await
                .map_err(|_| self.network_error("connection closed"))?;
            let body = response
                .await
                .map_err(|_| self.network_error("connection closed"))??;
            let parsed = decode_response::<ApiVersionsRequest>(
                body.clone(),
                ApiKey::ApiVersions as i16,
                version,
            )
            .ok()
            .filter(|r| r.error_code == 0);
            let response = match parsed {
                Some(r) => r,
                None => {
                    let v0 =
                        decode_response::<ApiVersionsRequest>(body, ApiKey::ApiVersions as i16, 0)
                            .map_err(|message| ClientError::Protocol {
                                addr: self.addr.clone(),
                                message,
                            })?;
                    if v0.error_code != UNSUPPORTED_VERSION {
                        ClientError::check(v0.error_code)?;
                        // Error code 0 yet the newer decode failed: accept the v0 view.
                        return Ok(version_map(&v0));
                    }
                    let broker_max = v0
                        .api_keys
                        .iter()
                        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                        .map(|k| k.max_version)
                        .unwrap_or(0);
                    let next = broker_max.clamp(0, API_VERSIONS_VERSION_FIRST);
                    if next >= version {
                        return Err(ClientError::Protocol {
                            addr: self.addr.clone(),
                            message: "ApiVersions negotiation did not converge".to_string(),
                        });
                    }
                    version = next;
                    continue;
                }
            };
            return Ok(version_map(&response));
        }
        Err(ClientError::Protocol {
            addr: self.addr.clone(),
            message: "ApiVersions negotiation did not converge".to_string(),
        })
    }
}

fn version_map(response: &ApiVersionsResponse) -> BTreeMap<i16, (i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect()
}

/// Encodes a whole frame: size, header (correlation id 0, patched by the
/// writer), body.
pub(crate) fn encode_request<R: Request>(
    req: &R,
    version: i16,
    client_id: &str,
) -> anyhow::Result<BytesMut> {
    let api_key =
        ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown api key {}", R::KEY))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, api_key.request_header_version(version))?;
    req.encode(&mut frame, version)?;
    let size = i32::try_from(frame.len() - 4)?;
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Decodes a response frame body (after the size, correlation id included).
fn decode_response<R: Request>(
    mut body: Bytes,
    api_key: i16,
    version: i16,
) -> Result<R::Response, String> {
    let key = ApiKey::try_from(api_key).map_err(|()| format!("unknown api key {api_key}"))?;
    ResponseHeader::decode(&mut body, key.response_header_version(version))
        .map_err(|e| format!("response header: {e}"))?;
    let response = R::Response::decode(&mut body, version)
        .map_err(|e| format!("api key {api_key} v{version}: {e}"))?;
    Ok(response)
}

/// Byte offset of the correlation id in a request frame: size (4), api key
/// (2), api version (2).
const CORRELATION_ID_OFFSET: usize = 8;

async fn write_loop(
    mut writer: WriteHalf<BoxStream>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    pending: Arc<Pending>,
    addr: String,
) {
    let mut correlation_id: i32 = 0;
    while let Some(Outgoing {
        mut frame,
        reply,
        deadline,
    }) = outgoing.recv().await
    {
        correlation_id = correlation_id.wrapping_add(1).max(1);
        frame[CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4]
            .copy_from_slice(&correlation_id.to_be_bytes());
        if let Some(reply) = reply {
            // Register before writing so the reader can never see a response
            // it has no waiter for.
            let mut state = pending.lock();
            if let Some(error) = state.failed.clone() {
                let _ = reply.send(Err(error));
                continue;
            }
            if state.queue.len() >= PENDING_REQUESTS_MAX {
                drop(state);
                let error = ClientError::Network {
                    addr: addr.clone(),
                    message: format!("more than {PENDING_REQUESTS_MAX} requests unanswered"),
                };
                let _ = reply.send(Err(error.clone()));
                pending.fail(error);
                return;
            }
            state.queue.push_back((correlation_id, reply, deadline));
        }
        let written = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        }
        .await;
        if let Err(e) = written {
            pending.fail(ClientError::Network {
                addr: addr.clone(),
                message: format!("write: {e}"),
            });
            return;
        }
    }
}

async fn read_loop(
    mut reader: ReadHalf<BoxStream>,
    pending: Arc<Pending>,
    addr: String,
    response_bytes_max: usize,
) {
    let error = loop {
        let mut size_bytes = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut size_bytes).await {
            break ClientError::Network {
                addr: addr.clone(),
                message: format!("read: {e}"),
            };
        }
        let size = i32::from_be_bytes(size_bytes);
        let size = match usize::try_from(size) {
            Ok(size) if (4..=response_bytes_max).contains(&size) => size,
            _ => {
                break ClientError::Protocol {
                    addr: addr.clone(),
                    message: format!("response frame size {size} outside 4..={response_bytes_max}"),
                }
            }
        };
        let mut body = vec![0u8; size];
        if let Err(e) = reader.read_exact(&mut body).await {
            break ClientError::Network {
                addr: addr.clone(),
                message: format!("read: {e}"),
            };
        }
        let body = Bytes::from(body);
        let correlation_id = (&body[0..4]).get_i32();
        let mut state = pending.lock();
        match state.queue.pop_front() {
            Some((expected, reply, _)) if expected == correlation_id => {
                // The waiter may have given up; that is fine.
                let _ = reply.send(Ok(body));
            }
            Some((expected, reply, _)) => {
                let error = ClientError::Protocol {
                    addr: addr.clone(),
                    message: format!(
                        "correlation id {correlation_id} where {expected} was expected"
                    ),
                };
                let _ = reply.send(Err(error.clone()));
                break error;
            }
            None => {
                break ClientError::Protocol {
                    addr: addr.clone(),
                    message: format!("unsolicited response with correlation id {correlation_id}"),
                }
            }
        }
    };
    pending.fail(error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use tokio::io::DuplexStream;

    #[test]
    fn request_frame_has_size_and_patchable_correlation_id() {
        let frame = encode_request(&MetadataRequest::default(), 1, "c").unwrap();
        let size = i32::from_be_bytes(frame[0..4].try_into().unwrap());
        assert_eq!(usize::try_from(size).unwrap(), frame.len() - 4);
        assert_eq!(&frame[4..6], &(ApiKey::Metadata as i16).to_be_bytes());
        assert_eq!(&frame[6..8], &1i16.to_be_bytes());
        assert_eq!(
            &frame[CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4],
            &[0, 0, 0, 0]
        );
    }

    /// How the scripted broker misbehaves after answering ApiVersions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Script {
        /// Answers every Metadata request.
        Answer,
        /// Reads requests and never answers, as a partitioned link.
        Silent,
        /// Answers with a correlation id off by one.
        WrongCorrelation,
        /// Announces a frame larger than the client accepts.
        Oversized,
        /// Knows ApiVersions only up to v2: answers v3 in v0 with UNSUPPORTED_VERSION.
        OldApiVersions,
    }

    /// A connector to an in-memory broker running `script`; counts dials.
    struct Scripted {
        script: Script,
        dials: Arc<AtomicUsize>,
    }

    impl Connector for Scripted {
        fn connect<'a>(
            &'a self,
            _addr: &'a str,
        ) -> crate::net::BoxFuture<'a, std::io::Result<BoxStream>> {
            let (client, server) = tokio::io::duplex(1 << 16);
            self.dials.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(server, self.script));
            Box::pin(async move { Ok(Box::new(client) as BoxStream) })
        }
    }

    async fn respond<M: Encodable>(
        server: &mut DuplexStream,
        correlation_id: i32,
        header_version: i16,
        body: &M,
        version: i16,
    ) {
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut frame, header_version)
            .unwrap();
        body.encode(&mut frame, version).unwrap();
        let size = i32::try_from(frame.len() - 4).unwrap();
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        server.write_all(&frame).await.unwrap();
    }

    async fn serve(mut server: DuplexStream, script: Script) {
        loop {
            let mut size = [0u8; 4];
            if server.read_exact(&mut size).await.is_err() {
                return;
            }
            let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
            if server.read_exact(&mut body).await.is_err() {
                return;
            }
            let mut body = Bytes::from(body);
            let header = decode_request_header_from_buffer(&mut body).unwrap();
            let key = ApiKey::try_from(header.request_api_key).unwrap();
            let version = header.request_api_version;
            let correlation_id = header.correlation_id;
            if key == ApiKey::ApiVersions {
                let keys = CLIENT_VERSIONS
                    .iter()
                    .map(|(k, min, max)| {
                        let max = if *k == ApiKey::ApiVersions && script == Script::OldApiVersions {
                            2
                        } else {
                            *max
                        };
                        ApiVersion::default()
                            .with_api_key(*k as i16)
                            .with_min_version(*min)
                            .with_max_version(max)
                    })
                    .collect();
                let mut response = ApiVersionsResponse::default().with_api_keys(keys);
                let mut answer_version = version;
                if script == Script::OldApiVersions && version > 2 {
                    response.error_code = UNSUPPORTED_VERSION;
                    answer_version = 0;
                }
                respond(&mut server, correlation_id, 0, &response, answer_version).await;
                continue;
            }
            let header_version = key.response_header_version(version);
            match script {
                Script::Answer | Script::OldApiVersions => {
                    respond(
                        &mut server,
                        correlation_id,
                        header_version,
                        &MetadataResponse::default(),
                        version,
                    )
                    .await;
                }
                Script::Silent => {}
                Script::WrongCorrelation => {
                    respond(
                        &mut server,
                        correlation_id + 1,
                        header_version,
                        &MetadataResponse::default(),
                        version,
                    )
                    .await;
                }
                Script::Oversized => {
                    server.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
                }
            }
        }
    }

    fn connection(script: Script, request_timeout_ms: u64) -> (Connection, Arc<AtomicUsize>) {
        let dials = Arc::new(AtomicUsize::new(0));
        let connector = Arc::new(Scripted {
            script,
            dials: dials.clone(),
        });
        let config = ConnectionConfig {
            request_timeout_ms,
            ..ConnectionConfig::default()
        };
        (Connection::new("broker:9092", connector, config), dials)
    }

    #[tokio::test]
    async fn pipelined_requests_are_matched_in_order_on_one_socket() {
        let (connection, dials) = connection(Script::Answer, 5_000);
        let calls = (0..5).map(|_| connection.call(MetadataRequest::default()));
        let (a, b, c, d, e) = {
            let mut calls = calls;
            tokio::join!(
                calls.next().unwrap(),
                calls.next().unwrap(),
                calls.next().unwrap(),
                calls.next().unwrap(),
                calls.next().unwrap()
            )
        };
        for result in [a, b, c, d, e] {
            result.unwrap();
        }
        assert_eq!(dials.load(Ordering::SeqCst), 1);
        assert_eq!(connection.version::<MetadataRequest>().await.unwrap(), 12);
    }

    #[tokio::test]
    async fn a_silent_broker_times_out_and_the_next_call_redials() {
        let (connection, dials) = connection(Script::Silent, 200);
        let error = connection
            .call(MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
        assert!(error.is_retriable());
        let error = connection
            .call(MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
        assert_eq!(
            dials.load(Ordering::SeqCst),
            2,
            "a timed-out connection is not reused"
        );
    }

    #[tokio::test]
    async fn protocol_violations_are_errors_not_panics() {
        let (connection, dials) = connection(Script::WrongCorrelation, 5_000);
        let error = connection
            .call(MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
        let _ = connection.call(MetadataRequest::default()).await;
        assert_eq!(dials.load(Ordering::SeqCst), 2);

        let (connection, _) = connection_with_limit(Script::Oversized);
        let error = connection
            .call(MetadataRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
    }

    fn connection_with_limit(script: Script) -> (Connection, Arc<AtomicUsize>) {
        let (mut connection, dials) = connection(script, 5_000);
        connection.config.response_bytes_max = 1 << 20;
        (connection, dials)
    }

    #[tokio::test]
    async fn api_versions_falls_back_to_what_the_broker_knows() {
        let (connection, dials) = connection(Script::OldApiVersions, 5_000);
        connection.call(MetadataRequest::default()).await.unwrap();
        assert_eq!(dials.load(Ordering::SeqCst), 1);
    }
}
