//! The controller quorum's shell: runs the pure [`Quorum`] core of
//! `src/quorum.rs` over the broker's storage, clock and network seams.
//!
//! Every step of the core happens under one async lock, in this order: step
//! or tick the core, take its [`Ready`](crate::quorum::Ready), make it
//! durable through [`store::QuorumStore`], tell the core, then send. A
//! message that answers a peer's request (VoteResponse, FetchResponse) goes
//! back as that request's response; one that starts an exchange (Vote,
//! BeginQuorumEpoch, Fetch) goes onto the peer's bounded queue, where one
//! sender task per peer sends it and steps the answer back in. Raft
//! tolerates lost messages, so a full queue or a dead peer drops them.
//!
//! The shell never decodes entries: the broker reads the committed ones
//! ([`ControllerQuorum::committed`]) and applies them to its metadata image.
//!
//! A failed write to the metadata log or the quorum state stops this voter
//! taking part until it restarts, as a Kafka controller stops on a failed
//! metadata write: it can no longer promise what it acknowledged.

pub mod store;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::client::connection::{Connection, ConnectionConfig};
use crate::clock::SharedClock;
use crate::net::Connector;
use crate::observe::{Fact, Observed};
use crate::quorum::{Entry, Message, NodeId, Quorum, QuorumConfig, Role};
use crate::storage::SharedStorage;

/// How often the core is ticked: elections and fetch timeouts are in the
/// hundreds of milliseconds, so 50 ms keeps them sharp.
pub const QUORUM_TICK_MS: u64 = 50;

/// Messages waiting for one peer; more are dropped (Raft resends).
const PEER_QUEUE_MAX: usize = 64;

/// How long one request to a peer may take, dial included: under the
/// election timeout, so a dead peer never holds up the next election.
const PEER_REQUEST_TIMEOUT_MS: u64 = 800;

/// A follower whose fetch came back with nothing new waits this long before
/// the next.
const IDLE_FETCH_PAUSE_MS: u64 = 20;

/// The longest the leader holds an idle fetch. Well under the core's fetch
/// retry (half a second with Kafka's 2 s fetch timeout), or the follower
/// would give up on held fetches and take none of the answers.
pub const QUORUM_FETCH_HOLD_MS: u64 = 200;

/// What the broker needs from the quorum: who leads, in which epoch, and how
/// far the metadata log is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    pub epoch: i32,
    pub leader_id: Option<NodeId>,
    pub high_watermark: u64,
    /// This voter's metadata log end offset.
    pub log_end_offset: u64,
}

/// One voter as DescribeQuorum shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterState {
    pub node_id: NodeId,
    /// The offset it holds durably, as the leader last heard (-1: unknown).
    pub log_end_offset: i64,
    /// When the leader last heard a fetch from it (-1: unknown).
    pub last_fetch_ms: i64,
}

/// DescribeQuorum's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub status: QuorumStatus,
    /// This voter's log end offset.
    pub log_end_offset: u64,
    /// Filled in only on the leader, which is the one that knows.
    pub voters: Vec<VoterState>,
}

/// Why a proposal was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// This voter does not lead; the leader, if known.
    NotLeader(Option<NodeId>),
    /// The metadata log could not be written.
    Failed,
}

struct Inner {
    core: Quorum,
    store: store::QuorumStore,
    /// Set by a failed write: the voter takes no further part.
    failed: bool,
}

pub struct ControllerQuorum {
    node_id: NodeId,
    voters: BTreeMap<NodeId, String>,
    inner: tokio::sync::Mutex<Inner>,
    clock: SharedClock,
    status: watch::Sender<QuorumStatus>,
    peers: BTreeMap<NodeId, mpsc::Sender<Message>>,
    /// The high watermark last sent to each follower, so a fetch is held
    /// only when its answer would tell the follower nothing new.
    sent_high_watermarks: std::sync::Mutex<BTreeMap<NodeId, u64>>,
    /// Who hears that this voter became leader.
    observed: Observed,
    /// The network seam, kept by [`ControllerQuorum::spawn`] for the
    /// farewell of [`ControllerQuorum::resign`].
    connector: std::sync::OnceLock<Arc<dyn Connector>>,
}

/// Who this voter is and where it keeps its state.
pub struct QuorumSetup<'a> {
    pub node_id: NodeId,
    /// Every voter's id and the address its quorum requests go to.
    pub voters: BTreeMap<NodeId, String>,
    pub log_dirs: &'a std::path::Path,
    pub log_config: &'a crate::log::LogConfig,
    /// Seeds the randomised election timeouts.
    pub seed: u64,
}

/// The receiving ends of the peer queues, until [`ControllerQuorum::spawn`]
/// starts a sender on each.
pub struct PeerQueues(Vec<(NodeId, String, mpsc::Receiver<Message>)>);

impl ControllerQuorum {
    /// Recovers this voter's quorum state and metadata log.
    pub async fn open(
        setup: QuorumSetup<'_>,
        storage: SharedStorage,
        clock: SharedClock,
        observed: Observed,
    ) -> std::io::Result<(Arc<ControllerQuorum>, PeerQueues)> {
        let QuorumSetup {
            node_id,
            voters,
            log_dirs,
            log_config,
            seed,
        } = setup;
        let now_ms = clock.now_ms();
        let (store, recovered) =
            store::QuorumStore::open(storage, log_dirs, log_config, now_ms).await?;
        tracing::info!(
            node = node_id,
            epoch = recovered.state.epoch,
            entries = recovered.entries.len(),
            "recovered the metadata quorum"
        );
        let config = QuorumConfig::new(node_id, voters.keys().copied());
        let core = Quorum::new(config, recovered.state, recovered.entries, seed, now_ms);
        let mut peers = BTreeMap::new();
        let mut queues = Vec::new();
        for (id, address) in &voters {
            if *id != node_id {
                let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
                peers.insert(*id, sender);
                queues.push((*id, address.clone(), receiver));
            }
        }
        let status = QuorumStatus {
            epoch: core.epoch(),
            leader_id: None,
            high_watermark: 0,
            log_end_offset: 0,
        };
        let quorum = Arc::new(ControllerQuorum {
            node_id,
            voters,
            inner: tokio::sync::Mutex::new(Inner {
                core,
                store,
                failed: false,
            }),
            clock,
            status: watch::channel(status).0,
            peers,
            sent_high_watermarks: std::sync::Mutex::new(BTreeMap::new()),
            observed,
            connector: std::sync::OnceLock::new(),
        });
        Ok((quorum, PeerQueues(queues)))
    }

    /// Starts the ticker and one sender per peer; they stop when the quorum
    /// is dropped or the returned handles are aborted.
    pub fn spawn(
        self: &Arc<Self>,
        queues: PeerQueues,
        connector: Arc<dyn Connector>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let _ = self.connector.set(Arc::clone(&connector));
        let mut handles = Vec::new();
        let weak = Arc::downgrade(self);
        handles.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(QUORUM_TICK_MS));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(quorum) = weak.upgrade() else {
                    return;
                };
                quorum.tick().await;
            }
        }));
        for (peer, address, queue) in queues.0 {
            let connection = self.peer_connection(address, &connector);
            handles.push(tokio::spawn(send_loop(
                Arc::downgrade(self),
                peer,
                connection,
                queue,
            )));
        }
        handles
    }

    /// A connection to another voter, bounded by the peer request timeout.
    fn peer_connection(&self, address: String, connector: &Arc<dyn Connector>) -> Connection {
        Connection::new(
            address,
            Arc::clone(connector),
            ConnectionConfig {
                client_id: format!("sluice-quorum-{}", self.node_id),
                request_timeout_ms: PEER_REQUEST_TIMEOUT_MS,
                ..ConnectionConfig::default()
            },
        )
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn voters(&self) -> &BTreeMap<NodeId, String> {
        &self.voters
    }

    /// Watches who leads and how far the log is committed.
    pub fn status(&self) -> watch::Receiver<QuorumStatus> {
        self.status.subscribe()
    }

    pub fn current_status(&self) -> QuorumStatus {
        *self.status.borrow()
    }

    async fn tick(&self) {
        let mut inner = self.inner.lock().await;
        if inner.failed {
            return;
        }
        let now_ms = self.clock.now_ms();
        inner.core.tick(now_ms);
        self.drive(&mut inner, None).await;
    }

    /// Steps a peer's message in; returns the answer to send back, if the
    /// core made one for `from`.
    pub async fn step(&self, from: NodeId, message: Message) -> Option<Message> {
        let mut inner = self.inner.lock().await;
        if inner.failed {
            return None;
        }
        let now_ms = self.clock.now_ms();
        inner.core.step(from, message, now_ms);
        self.drive(&mut inner, Some(from)).await
    }

    /// A follower's fetch of the metadata log. One that would get nothing
    /// new, not even a high watermark it was not already sent, is held until
    /// the log or the high watermark moves, at most `max_wait_ms` (and
    /// [`QUORUM_FETCH_HOLD_MS`]), so idle followers do not spin.
    pub async fn fetch(
        &self,
        from: NodeId,
        fetch: crate::quorum::FetchRequest,
        max_wait_ms: u64,
    ) -> Option<Message> {
        let mut changes = self.status.subscribe();
        let answer = self.step(from, Message::Fetch(fetch.clone())).await;
        let answered_hw = match &answer {
            Some(Message::FetchResponse(r)) if r.entries.is_empty() && r.diverging.is_none() => {
                r.high_watermark
            }
            _ => None,
        };
        let Some(high_watermark) = answered_hw else {
            return answer;
        };
        let already_sent = {
            let mut sent = self.sent_high_watermarks.lock().expect("sent lock");
            sent.insert(from, high_watermark) == Some(high_watermark)
        };
        if !already_sent {
            return answer;
        }
        changes.mark_unchanged();
        let wait = Duration::from_millis(max_wait_ms.min(QUORUM_FETCH_HOLD_MS));
        let _ = tokio::time::timeout(wait, changes.changed()).await;
        let answer = self.step(from, Message::Fetch(fetch)).await;
        if let Some(Message::FetchResponse(r)) = &answer {
            if let Some(high_watermark) = r.high_watermark {
                self.sent_high_watermarks
                    .lock()
                    .expect("sent lock")
                    .insert(from, high_watermark);
            }
        }
        answer
    }

    /// Shutting down: a leader resigns and tells the other voters, and the
    /// message is sent before this returns (at most one request timeout),
    /// so they elect a successor at once instead of after the fetch
    /// timeout.
    pub async fn resign(&self) {
        let Some(connector) = self.connector.get().cloned() else {
            return;
        };
        let mut inner = self.inner.lock().await;
        if inner.failed || !matches!(inner.core.role(), Role::Leader { .. }) {
            return;
        }
        let now_ms = self.clock.now_ms();
        inner.core.resign(now_ms);
        let ready = inner.core.ready();
        drop(inner);
        let mut sends = Vec::new();
        for outbound in ready.messages {
            let Some(address) = self.voters.get(&outbound.to).cloned() else {
                continue;
            };
            let Some(request) = wire::end_quorum_epoch_request(&outbound.message) else {
                continue;
            };
            sends.push((address, request));
        }
        for (address, request) in sends {
            let connection = self.peer_connection(address, &connector);
            let _ = connection
                .send(request, wire::END_QUORUM_EPOCH_VERSION)
                .await;
        }
    }

    /// Appends `payload` to the metadata log as the leader. Returns its
    /// offset and the epoch it was appended in: it is committed once the
    /// high watermark passes the offset with that epoch still there.
    pub async fn propose(&self, payload: Bytes) -> Result<(u64, i32), ProposeError> {
        let mut inner = self.inner.lock().await;
        if inner.failed {
            return Err(ProposeError::Failed);
        }
        let epoch = inner.core.epoch();
        let offset = inner
            .core
            .propose(payload)
            .map_err(ProposeError::NotLeader)?;
        self.drive(&mut inner, None).await;
        if inner.failed {
            return Err(ProposeError::Failed);
        }
        Ok((offset, epoch))
    }

    /// The committed entries from `from` up to the high watermark.
    pub async fn committed(&self, from: u64) -> Vec<Entry> {
        let inner = self.inner.lock().await;
        let high_watermark = inner.core.high_watermark() as usize;
        inner
            .core
            .log()
            .get(from as usize..high_watermark)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default()
    }

    pub async fn describe(&self) -> QuorumDescription {
        let inner = self.inner.lock().await;
        let log_end_offset = inner.core.log().len() as u64;
        let mut voters = Vec::new();
        for id in self.voters.keys() {
            let state = match inner.core.role() {
                Role::Leader { progress, .. } if *id != self.node_id => progress
                    .get(id)
                    .map_or((-1, -1), |(offset, at_ms)| (*offset as i64, *at_ms)),
                Role::Leader { .. } => (log_end_offset as i64, self.clock.now_ms()),
                _ => (-1, -1),
            };
            voters.push(VoterState {
                node_id: *id,
                log_end_offset: state.0,
                last_fetch_ms: state.1,
            });
        }
        QuorumDescription {
            status: self.current_status(),
            log_end_offset,
            voters,
        }
    }

    /// Persists, then sends, until the core has nothing more to do. Returns
    /// the answer for `reply_to`, if one was made.
    async fn drive(&self, inner: &mut Inner, reply_to: Option<NodeId>) -> Option<Message> {
        let mut reply = None;
        loop {
            let ready = inner.core.ready();
            if ready.is_empty() {
                break;
            }
            let now_ms = self.clock.now_ms();
            if ready.needs_persist() {
                if let Err(error) = inner.store.persist(&ready, now_ms).await {
                    tracing::error!(node = self.node_id, %error, "writing the metadata quorum's state failed; this voter stops taking part until it restarts");
                    inner.failed = true;
                    self.status.send_modify(|status| status.leader_id = None);
                    return None;
                }
                inner.core.on_persisted(now_ms);
            }
            for outbound in ready.messages.into_iter().chain(ready.after_persist) {
                if let Message::VoteResponse {
                    epoch,
                    granted: true,
                    ..
                } = &outbound.message
                {
                    self.observed.report(|| Fact::VoteGranted {
                        epoch: *epoch,
                        candidate: outbound.to,
                    });
                }
                let is_answer = matches!(
                    outbound.message,
                    Message::VoteResponse { .. } | Message::FetchResponse(_)
                );
                if is_answer {
                    if Some(outbound.to) == reply_to {
                        reply = Some(outbound.message);
                    }
                } else if let Some(queue) = self.peers.get(&outbound.to) {
                    if queue.try_send(outbound.message).is_err() {
                        tracing::debug!(
                            peer = outbound.to,
                            "peer queue full; dropping a quorum message"
                        );
                    }
                }
            }
        }
        let committed_epoch = {
            let high_watermark = inner.core.high_watermark() as usize;
            inner
                .core
                .log()
                .get(high_watermark.wrapping_sub(1))
                .map_or(-1, |entry| entry.epoch)
        };
        let status = QuorumStatus {
            epoch: inner.core.epoch(),
            leader_id: match inner.core.role() {
                Role::Leader { .. } => Some(self.node_id),
                Role::Follower { leader_id, .. } => Some(*leader_id),
                _ => None,
            },
            high_watermark: inner.core.high_watermark(),
            log_end_offset: inner.core.log().len() as u64,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            if current.leader_id != status.leader_id || current.epoch != status.epoch {
                if status.leader_id == Some(self.node_id) {
                    // Reported while the quorum's lock is held, so in the
                    // order the claims were made.
                    self.observed.report(|| Fact::QuorumLeader {
                        epoch: status.epoch,
                    });
                }
                tracing::info!(
                    node = self.node_id,
                    epoch = status.epoch,
                    leader = ?status.leader_id,
                    "metadata quorum leadership changed"
                );
            }
            if status.leader_id == Some(self.node_id)
                && status.high_watermark > current.high_watermark
            {
                self.observed.report(|| Fact::QuorumHighWatermark {
                    epoch: status.epoch,
                    high_watermark: status.high_watermark,
                    committed_epoch,
                });
            }
            *current = status;
            true
        });
        reply
    }
}

/// Sends a request whose answer the core does not need (BeginQuorumEpoch,
/// EndQuorumEpoch); a failure is logged, and the core resends if it must.
async fn notify<R: kafka_protocol::protocol::Request>(
    connection: &Connection,
    peer: NodeId,
    request: Option<R>,
    version: i16,
) {
    let Some(request) = request else {
        return;
    };
    if let Err(error) = connection.send(request, version).await {
        tracing::debug!(peer, %error, api = ?R::KEY, "quorum notification failed");
    }
}

/// Sends one peer's queued messages, one at a time, and steps the answers
/// back into the core.
async fn send_loop(
    quorum: Weak<ControllerQuorum>,
    peer: NodeId,
    connection: Connection,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut pending = std::collections::VecDeque::new();
    loop {
        if pending.is_empty() {
            match queue.recv().await {
                Some(message) => pending.push_back(message),
                None => return,
            }
        }
        while let Ok(message) = queue.try_recv() {
            pending.push_back(message);
        }
        let Some(message) = pending.pop_front() else {
            continue;
        };
        // Only the newest fetch is answered by the core; older ones queued
        // behind a slow peer are dropped unsent.
        if matches!(message, Message::Fetch(_))
            && pending.iter().any(|m| matches!(m, Message::Fetch(_)))
        {
            continue;
        }
        let answer = match &message {
            Message::Vote { .. } => {
                let Some(request) = wire::vote_request(&message) else {
                    continue;
                };
                match connection.send(request, wire::VOTE_VERSION).await {
                    Ok(response) => wire::vote_from_response(&response),
                    Err(error) => {
                        tracing::debug!(peer, %error, "vote request failed");
                        None
                    }
                }
            }
            Message::BeginQuorumEpoch { .. } => {
                let request = wire::begin_quorum_epoch_request(&message);
                notify(&connection, peer, request, wire::BEGIN_QUORUM_EPOCH_VERSION).await;
                None
            }
            Message::EndQuorumEpoch { .. } => {
                let request = wire::end_quorum_epoch_request(&message);
                notify(&connection, peer, request, wire::END_QUORUM_EPOCH_VERSION).await;
                None
            }
            Message::Fetch(fetch) => {
                let timeout = Duration::from_millis(
                    PEER_REQUEST_TIMEOUT_MS + wire::QUORUM_FETCH_MAX_WAIT_MS as u64,
                );
                match connection
                    .send_with_timeout(
                        wire::fetch_request(fetch),
                        wire::QUORUM_FETCH_VERSION,
                        timeout,
                    )
                    .await
                {
                    Ok(response) => {
                        let answer = wire::fetch_from_response(response, fetch);
                        if answer.as_ref().is_some_and(|a| a.entries.is_empty()) {
                            tokio::time::sleep(Duration::from_millis(IDLE_FETCH_PAUSE_MS)).await;
                        }
                        answer.map(Message::FetchResponse)
                    }
                    Err(error) => {
                        tracing::debug!(peer, %error, "quorum fetch failed");
                        None
                    }
                }
            }
            Message::VoteResponse { .. } | Message::FetchResponse(_) => None,
        };
        let Some(quorum) = quorum.upgrade() else {
            return;
        };
        if let Some(answer) = answer {
            quorum.step(peer, answer).await;
        }
    }
}
