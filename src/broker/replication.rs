//! Partition replication in a cluster, the broker's side of it.
//!
//! - **Followers fetch.** One fetcher task per leader broker sends Fetch
//!   with this broker's `replica_id` for every partition it follows from
//!   that leader, at its log end, naming the epoch of its last batch
//!   (`last_fetched_epoch`) and the leader epoch it knows
//!   (`current_leader_epoch`). Records are appended as the leader wrote them
//!   ([`Partition::append_from_leader`]); a `diverging_epoch` answer makes
//!   it truncate first ([`Partition::truncate_diverging`]), and an
//!   OFFSET_OUT_OF_RANGE below the leader's log start makes it start its
//!   log over there ([`Partition::start_at_leader_log_start`]). A fetcher
//!   stops when no partition follows its leader any more.
//! - **Leaders track followers** through those fetches (the replica core
//!   decides the high watermark) and, on a timer, propose ISR changes, which
//!   this module sends to the active controller as AlterPartition and
//!   retries until the controller records them or leadership moves on.
//! - **Heartbeats.** A broker sends BrokerHeartbeat, with its incarnation as
//!   the broker epoch, to the active controller every
//!   `broker.heartbeat.interval.ms`; a broker that stops is fenced after
//!   `broker.session.timeout.ms` (see `broker/active_controller.rs`).
//!
//! Every wait is bounded: fetches by the request timeout, backoffs by
//! [`FETCH_BACKOFF_MS`].

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::partition::{IsrProposal, Partition};
use super::Broker;
use crate::client::connection::Connection;

/// The Fetch version followers send: v12 carries `last_fetched_epoch` and
/// answers `diverging_epoch` (KIP-320), and still names topics by name.
const REPLICA_FETCH_VERSION: i16 = 12;

/// A follower's fetch takes at most this much per partition and in all, so
/// one response stays far below the connection's frame limit.
const REPLICA_FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;
const REPLICA_FETCH_BYTES_MAX: i32 = 16 << 20;

/// How long a fetcher waits before retrying after an error (no connection,
/// a leader that no longer leads): long enough not to spin, short against
/// `replica.lag.time.max.ms`.
const FETCH_BACKOFF_MS: u64 = 100;

/// How often leaders let the replica core look for lagging followers and
/// send proposed ISR changes.
const REPLICA_TICK_MS: u64 = 200;

/// The AlterPartition version leaders send: v3 names each ISR member with
/// the broker epoch its fetch carried (KIP-903).
pub(super) const ALTER_PARTITION_VERSION: i16 = 3;

/// The tagged field in which a follower's Fetch names its broker epoch.
/// Kafka carries it in Fetch v15's `ReplicaState` (tag 1, KIP-903), a
/// version that also names topics by id, which sluice does not serve yet;
/// at v12 tag 1 is not valid, so sluice sends the same `ReplicaState`
/// encoding under a tag of its own that other brokers would skip as unknown.
const REPLICA_STATE_TAG: i32 = 10_903;

/// The version `ReplicaState` is encoded at inside [`REPLICA_STATE_TAG`].
const REPLICA_STATE_VERSION: i16 = 15;

/// Names this follower's `(node id, broker epoch)` in `request`.
fn with_replica_state(request: FetchRequest, node_id: i32, broker_epoch: u64) -> FetchRequest {
    use kafka_protocol::protocol::Encodable;
    let state = fetch_request::ReplicaState::default()
        .with_replica_id(BrokerId(node_id))
        .with_replica_epoch(i64::try_from(broker_epoch).unwrap_or(i64::MAX));
    let mut bytes = bytes::BytesMut::new();
    state
        .encode(&mut bytes, REPLICA_STATE_VERSION)
        .expect("ReplicaState encodes at v15");
    let mut tagged = request.unknown_tagged_fields.clone();
    tagged.insert(REPLICA_STATE_TAG, bytes.freeze());
    request.with_unknown_tagged_fields(tagged)
}

/// The broker epoch a follower's fetch names, or -1 if it names none (or
/// names another replica than `replica_id`).
pub(super) fn fetch_broker_epoch(request: &FetchRequest, replica_id: i32) -> i64 {
    use kafka_protocol::protocol::Decodable;
    let Some(bytes) = request.unknown_tagged_fields.get(&REPLICA_STATE_TAG) else {
        return -1;
    };
    let mut bytes = bytes.clone();
    match fetch_request::ReplicaState::decode(&mut bytes, REPLICA_STATE_VERSION) {
        Ok(state) if state.replica_id.0 == replica_id => state.replica_epoch.max(-1),
        _ => -1,
    }
}

/// The BrokerHeartbeat version brokers send.
pub(super) const BROKER_HEARTBEAT_VERSION: i16 = 0;

impl Broker {
    /// The partitions this broker follows from `leader_id`.
    fn followed_from(&self, leader_id: i32) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|topic| topic.partitions.values())
            .filter(|partition| !partition.is_leader() && partition.leader_id() == leader_id)
            .cloned()
            .collect()
    }

    /// Makes sure a fetcher runs for `leader_id` (not this broker, not -1).
    pub(super) fn ensure_fetcher(self: &Arc<Self>, leader_id: i32) {
        if leader_id < 0 || leader_id == self.config.node_id {
            return;
        }
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut fetchers = cluster.fetchers.lock().expect("fetchers lock");
        let running = fetchers
            .get(&leader_id)
            .is_some_and(|handle| !handle.is_finished());
        if !running {
            let handle = tokio::spawn(fetch_loop(Arc::downgrade(self), leader_id));
            fetchers.insert(leader_id, handle);
        }
    }

    /// The fetch request for `partitions`, or None if none is followed any
    /// more (then the fetcher is removed, under the fetchers lock, so a
    /// concurrent [`Broker::ensure_fetcher`] starts a new one).
    async fn replica_fetch_request(
        &self,
        partitions: &[Arc<Partition>],
    ) -> (FetchRequest, Vec<(Arc<Partition>, i32)>) {
        let mut by_topic: BTreeMap<String, Vec<fetch_request::FetchPartition>> = BTreeMap::new();
        let mut asked = Vec::new();
        for partition in partitions {
            let Ok(position) = partition.fetch_position().await else {
                continue;
            };
            let leader_epoch = partition.leader_epoch();
            by_topic.entry(partition.topic.clone()).or_default().push(
                fetch_request::FetchPartition::default()
                    .with_partition(partition.index)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(position.log_end_offset)
                    .with_last_fetched_epoch(position.last_fetched_epoch)
                    .with_log_start_offset(position.log_start_offset)
                    .with_partition_max_bytes(REPLICA_FETCH_PARTITION_BYTES_MAX),
            );
            asked.push((Arc::clone(partition), leader_epoch));
        }
        let topics = by_topic
            .into_iter()
            .map(|(name, partitions)| {
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect();
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(self.config.node_id))
            .with_max_wait_ms(self.config.replica_fetch_wait_max_ms)
            .with_min_bytes(1)
            .with_max_bytes(REPLICA_FETCH_BYTES_MAX)
            .with_session_epoch(-1)
            .with_topics(topics);
        let request = with_replica_state(request, self.config.node_id, self.incarnation);
        (request, asked)
    }

    /// Applies one partition's answer to a follower fetch. Returns whether
    /// it made progress (records, a truncation, or nothing to do).
    async fn apply_replica_fetch(
        &self,
        partition: &Partition,
        asked_epoch: i32,
        data: fetch_response::PartitionData,
    ) -> bool {
        if partition.leader_epoch() != asked_epoch || partition.is_leader() {
            // Leadership moved while the fetch was out; the answer is stale.
            return true;
        }
        if data.error_code == ResponseError::OffsetOutOfRange.code() && data.log_start_offset > 0 {
            // Below the leader's log start: what this replica would copy
            // next is gone there, so it starts over at the leader's start.
            let now_ms = self.clock.now_ms();
            return match partition
                .start_at_leader_log_start(data.log_start_offset, now_ms)
                .await
            {
                Ok(()) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, log_start_offset = data.log_start_offset, "follower restarted its log at the leader's log start");
                    true
                }
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "follower log reset failed");
                    false
                }
            };
        }
        if data.error_code != 0 {
            tracing::debug!(
                topic = %partition.topic,
                partition = partition.index,
                code = data.error_code,
                "follower fetch refused"
            );
            return false;
        }
        let now_ms = self.clock.now_ms();
        if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
            let diverging = data.diverging_epoch;
            return match partition
                .truncate_diverging(diverging.epoch, diverging.end_offset)
                .await
            {
                Ok(end) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, epoch = diverging.epoch, end, "follower truncated a diverging log");
                    true
                }
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "follower truncation failed");
                    false
                }
            };
        }
        let records = data.records.unwrap_or_default();
        match partition
            .append_from_leader(
                records,
                (data.high_watermark, data.log_start_offset),
                now_ms,
            )
            .await
        {
            Ok(()) => {
                self.notify_data_arrived();
                true
            }
            Err(error) => {
                tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "follower append failed");
                false
            }
        }
    }

    /// Leaders: lets each replica core look for lagging followers, then
    /// sends every proposed ISR change to the active controller.
    async fn tick_replicas(self: &Arc<Self>, connections: &mut BTreeMap<i32, Connection>) {
        let now_ms = self.clock.now_ms();
        let mut proposals = Vec::new();
        for partition in self.all_partitions() {
            if !partition.is_leader() {
                continue;
            }
            partition.tick(now_ms).await;
            if let Some(proposal) = partition.take_isr_proposal() {
                proposals.push((partition, proposal));
            }
        }
        for (partition, proposal) in proposals {
            if !self
                .send_alter_partition(connections, &partition, &proposal)
                .await
            {
                partition.restore_isr_proposal(proposal);
            }
        }
    }

    /// Sends one ISR change to the active controller (or, on the controller,
    /// checks and writes it here). Returns false if it should be retried.
    async fn send_alter_partition(
        &self,
        connections: &mut BTreeMap<i32, Connection>,
        partition: &Partition,
        proposal: &IsrProposal,
    ) -> bool {
        let isr: Vec<(i32, i64)> = proposal
            .isr
            .iter()
            .map(|id| (*id, proposal.broker_epochs.get(id).copied().unwrap_or(-1)))
            .collect();
        let epochs = (proposal.leader_epoch, proposal.partition_epoch);
        let node_id = self.config.node_id;
        let key = (partition.topic.as_str(), partition.index);
        let Some(controller) = self.cluster_controller_id() else {
            return false;
        };
        let code = if controller == node_id {
            match self
                .alter_partition_here(key, (node_id, epochs.0, epochs.1), &isr)
                .await
            {
                Ok(()) => 0,
                Err(code) => code,
            }
        } else {
            let Some(connection) = self.connection_to_voter(connections, controller) else {
                return false;
            };
            let request = alter_partition_request(node_id, self.incarnation, key, epochs, &isr);
            match connection.send(request, ALTER_PARTITION_VERSION).await {
                Ok(response) if response.error_code != 0 => response.error_code,
                Ok(response) => response
                    .topics
                    .iter()
                    .flat_map(|topic| topic.partitions.iter())
                    .map(|p| p.error_code)
                    .next()
                    .unwrap_or(ResponseError::UnknownServerError.code()),
                Err(error) => {
                    tracing::debug!(%error, "AlterPartition failed");
                    return false;
                }
            }
        };
        if code != 0 {
            tracing::debug!(topic = %partition.topic, partition = partition.index, code, "ISR change refused");
        }
        if code == ResponseError::IneligibleReplica.code() {
            // A fenced follower: forget the proposal, so the next fetch that
            // finds the follower caught up proposes it again (KIP-841).
            partition.abandon_isr_proposal(proposal).await;
            return true;
        }
        // Refusals that can pass (no controller yet, a write that timed out)
        // are retried; one that says this leader is stale is dropped, as
        // the metadata that supersedes it is on its way.
        !matches!(
            ResponseError::try_from_code(code),
            Some(
                ResponseError::NotController
                    | ResponseError::RequestTimedOut
                    | ResponseError::KafkaStorageError
            )
        )
    }

    /// The active controller's node id, as the quorum says.
    fn cluster_controller_id(&self) -> Option<i32> {
        self.cluster.as_ref()?.quorum.current_status().leader_id
    }

    /// A connection to voter `node_id`'s quorum address, kept in
    /// `connections` across calls.
    fn connection_to_voter<'c>(
        &self,
        connections: &'c mut BTreeMap<i32, Connection>,
        node_id: i32,
    ) -> Option<&'c Connection> {
        let cluster = self.cluster.as_ref()?;
        let address = cluster.quorum.voters().get(&node_id).cloned()?;
        Some(
            connections
                .entry(node_id)
                .or_insert_with(|| cluster.broker_connection(address, self.config.node_id)),
        )
    }

    /// Tells the active controller this broker is alive.
    async fn send_heartbeat(&self, connections: &mut BTreeMap<i32, Connection>) {
        let node_id = self.config.node_id;
        let Some(controller) = self.cluster_controller_id() else {
            return;
        };
        if controller == node_id {
            self.heartbeat_received(node_id, self.incarnation);
            return;
        }
        let Some(connection) = self.connection_to_voter(connections, controller) else {
            return;
        };
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(node_id))
            .with_broker_epoch(self.incarnation as i64)
            .with_current_metadata_offset(-1);
        match connection.send(request, BROKER_HEARTBEAT_VERSION).await {
            Ok(response) if response.error_code != 0 => {
                tracing::debug!(code = response.error_code, "heartbeat refused")
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "heartbeat failed"),
        }
    }
}

fn alter_partition_request(
    node_id: i32,
    incarnation: u64,
    (topic, partition): (&str, i32),
    (leader_epoch, partition_epoch): (i32, i32),
    isr: &[(i32, i64)],
) -> AlterPartitionRequest {
    use alter_partition_request::{BrokerState, PartitionData, TopicData};
    let partition = PartitionData::default()
        .with_partition_index(partition)
        .with_leader_epoch(leader_epoch)
        .with_new_isr_with_epochs(
            isr.iter()
                .map(|(id, broker_epoch)| {
                    BrokerState::default()
                        .with_broker_id(BrokerId(*id))
                        .with_broker_epoch(*broker_epoch)
                })
                .collect(),
        )
        .with_partition_epoch(partition_epoch);
    AlterPartitionRequest::default()
        .with_broker_id(BrokerId(node_id))
        .with_broker_epoch(incarnation as i64)
        .with_topics(vec![TopicData::default()
            .with_topic_id(crate::metadata::topic_id(topic))
            .with_partitions(vec![partition])])
}

/// One leader's fetcher: fetches every partition this broker follows from
/// `leader_id` until there are none.
async fn fetch_loop(broker: Weak<Broker>, leader_id: i32) {
    let mut connection: Option<(String, Connection)> = None;
    loop {
        let backoff = {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let partitions = {
                let cluster = broker.cluster.as_ref().expect("fetchers run in a cluster");
                let mut fetchers = cluster.fetchers.lock().expect("fetchers lock");
                let partitions = broker.followed_from(leader_id);
                if partitions.is_empty() {
                    fetchers.remove(&leader_id);
                    return;
                }
                partitions
            };
            let address = broker.with_metadata(|image| {
                image
                    .broker(leader_id)
                    .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port))
            });
            match address {
                None => true,
                Some(address) => {
                    if connection
                        .as_ref()
                        .is_none_or(|(known, _)| *known != address)
                    {
                        let cluster = broker.cluster.as_ref().expect("in a cluster");
                        let dialled =
                            cluster.broker_connection(address.clone(), broker.config.node_id);
                        connection = Some((address, dialled));
                    }
                    let (_, link) = connection.as_ref().expect("just set");
                    fetch_once(&broker, link, &partitions).await
                }
            }
        };
        if backoff {
            tokio::time::sleep(Duration::from_millis(FETCH_BACKOFF_MS)).await;
        }
    }
}

/// One fetch round. Returns whether to back off before the next.
async fn fetch_once(
    broker: &Arc<Broker>,
    connection: &Connection,
    partitions: &[Arc<Partition>],
) -> bool {
    let (request, asked) = broker.replica_fetch_request(partitions).await;
    let wait = Duration::from_millis(broker.config.replica_fetch_wait_max_ms.max(0) as u64);
    let request_timeout_ms = broker.cluster.as_ref().map_or(0, |c| c.request_timeout_ms);
    let timeout = wait + Duration::from_millis(request_timeout_ms);
    let response = match connection
        .send_with_timeout(request, REPLICA_FETCH_VERSION, timeout)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "follower fetch failed");
            return true;
        }
    };
    if response.error_code != 0 {
        return true;
    }
    let mut progressed = true;
    for topic in response.responses {
        for data in topic.partitions {
            let found = asked.iter().find(|(partition, _)| {
                partition.topic == topic.topic.as_str() && partition.index == data.partition_index
            });
            if let Some((partition, asked_epoch)) = found {
                progressed &= broker
                    .apply_replica_fetch(partition, *asked_epoch, data)
                    .await;
            }
        }
    }
    !progressed
}

/// Leaders' ISR upkeep and every broker's heartbeats, on timers.
pub(super) async fn replica_loop(broker: Weak<Broker>) {
    let mut connections: BTreeMap<i32, Connection> = BTreeMap::new();
    let mut since_heartbeat_ms = u64::MAX;
    loop {
        {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker.tick_replicas(&mut connections).await;
            since_heartbeat_ms = since_heartbeat_ms.saturating_add(REPLICA_TICK_MS);
            // Sent before registration too: a restarted broker's heartbeat
            // in its new incarnation tells the controller not to wait for
            // it to lead anything.
            if since_heartbeat_ms >= broker.config.broker_heartbeat_interval_ms {
                since_heartbeat_ms = 0;
                broker.send_heartbeat(&mut connections).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(REPLICA_TICK_MS)).await;
    }
}
