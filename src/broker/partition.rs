//! A partition as the broker holds it: its log and its replica state behind
//! one async lock, its leader epoch, and group commit for `log.flush.on.ack`.
//!
//! Every log operation goes through [`Partition::with_log`], which afterwards
//! hands the log's offsets to the replica core ([`crate::replica`]) and sets
//! the high watermark that core decides. The leader epoch is stamped into
//! every batch.
//!
//! In a cluster a partition is led here or followed from another broker, as
//! the metadata image says ([`Partition::apply_leadership`]). A leader
//! answers its followers' fetches ([`Partition::follower_read`]), which is
//! how the core learns their positions; a follower appends what it fetched
//! ([`Partition::append_from_leader`]). ISR changes the core proposes wait in
//! [`Partition::take_isr_proposal`] for the broker to send to the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

use crate::log::producer_state::SequenceError;
use crate::log::{AppendOutcome, LogError, PartitionLog};
use crate::metadata::PartitionImage;
use crate::observe::{Fact, Observed, TruncationReason};
use crate::replica::{ReplicaConfig, ReplicaEffect, ReplicaState};

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("the partition was deleted")]
    Deleted,
    #[error("the partition is offline after a storage error; restart to recover")]
    Offline,
    #[error(transparent)]
    Log(#[from] LogError),
}

impl PartitionError {
    /// The Kafka error code a client gets for this error.
    pub fn code(&self) -> i16 {
        let error = match self {
            PartitionError::Deleted => ResponseError::UnknownTopicOrPartition,
            PartitionError::Offline => ResponseError::KafkaStorageError,
            PartitionError::Log(error) => match error {
                LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                LogError::Corrupt(_) => ResponseError::CorruptMessage,
                LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
                LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
                    ResponseError::OutOfOrderSequenceNumber
                }
                LogError::Sequence(SequenceError::DuplicateOutsideWindow) => {
                    ResponseError::DuplicateSequenceNumber
                }
                LogError::Sequence(SequenceError::StaleEpoch { .. }) => {
                    ResponseError::InvalidProducerEpoch
                }
                LogError::Io(_) => ResponseError::KafkaStorageError,
                LogError::NotContiguous { .. } => ResponseError::OffsetOutOfRange,
                LogError::KeylessRecordOnCompactedTopic { .. } => ResponseError::InvalidRecord,
            },
        };
        error.code()
    }
}

/// Where a follower fetches from next, and what it reports in that fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    pub log_end_offset: i64,
    /// The epoch of its last record (-1: none, or the planted
    /// `skip-truncation-same-leader` skipping the check).
    pub last_fetched_epoch: i32,
    /// Its log start, which the leader's DeleteRecords waits for.
    pub log_start_offset: i64,
}

/// The offsets a Fetch or ListOffsets response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// The log and the replica state that decides its high watermark, changed
/// together under one lock.
struct Hosted {
    log: PartitionLog,
    replica: ReplicaState,
    /// Effects of replica-core calls made inside an operation, applied with
    /// the log's own progress when it ends.
    effects: Vec<ReplicaEffect>,
}

/// An ISR change for the controller, with the epochs it was computed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: BTreeSet<i32>,
    /// Each follower in `isr` with the broker epoch its latest fetch named
    /// (-1 if none did): the controller admits a new member only in the
    /// incarnation it registered (KIP-903).
    pub broker_epochs: BTreeMap<i32, i64>,
}

/// How an acks=all produce's wait for the high watermark ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWait {
    /// The high watermark passed the batch.
    Replicated,
    /// This broker stopped leading the partition (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The ISR fell below `min.insync.replicas` while waiting
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    BelowMinInsync,
}

/// What a leader answers a follower's fetch with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerRead {
    /// The follower's log diverges from the leader's: its last fetched
    /// epoch ends here on the leader (KIP-320's `diverging_epoch`), and it
    /// must truncate before fetching again.
    Diverging { epoch: i32, end_offset: i64 },
    /// The fetch offset is below the leader's log start (retention removed
    /// what the follower would read next): it must start over there.
    BelowLogStart { log_start_offset: i64 },
    /// Records from the fetch offset up to the leader's log end.
    Records {
        bytes: Bytes,
        offsets: PartitionOffsets,
    },
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Told of every high-watermark move; none for internal logs, whose
    /// high watermark no client reads.
    observed: Observed,
    /// None once deleted.
    hosted: tokio::sync::Mutex<Option<Hosted>>,
    leader_epoch: AtomicI32,
    /// The log's `cleanup.policy` includes compact, mirrored out of its
    /// config so the cleaner passes other logs by without their lock.
    compacted: AtomicBool,
    /// The leader this broker knows of (itself when leading), mirrored out
    /// of the replica state so request handlers can route without the lock.
    leader_id: AtomicI32,
    /// This broker's `node.id`.
    node_id: i32,
    /// Bumped with every high-watermark move; acks=all produces wait on it.
    high_watermark_moved: tokio::sync::watch::Sender<i64>,
    /// How many replicas the leader counts as in sync, mirrored out of the
    /// replica state after every operation; `min.insync.replicas` beside it.
    in_sync_replicas: std::sync::atomic::AtomicUsize,
    min_insync_replicas: std::sync::atomic::AtomicUsize,
    /// The partition epoch of the leadership last taken on: ISR changes
    /// are proposed against it.
    partition_epoch: AtomicI32,
    /// The ISR the replica core last proposed, with the leader and
    /// partition epochs it was proposed in, until the broker sends it to
    /// the controller.
    isr_proposal: Mutex<Option<IsrProposal>>,
    /// Set after a storage error: the in-memory state may no longer match the
    /// files, so nothing more is served until recovery on restart.
    offline: AtomicBool,
    /// One fsync at a time; appends that arrive during it share the next one.
    flush_turn: tokio::sync::Mutex<()>,
    /// Each follower's log start offset, as its latest fetch reported it
    /// (Fetch's `log_start_offset`): DeleteRecords waits until every ISR
    /// member's has reached the new start. `log_starts_moved` wakes it.
    follower_log_starts: Mutex<BTreeMap<i32, i64>>,
    log_starts_moved: tokio::sync::watch::Sender<u64>,
    /// Only under the planted `skip-truncation-same-leader`: this follower's
    /// leader kept its broker across the last leader epoch change, and the
    /// follower skips the divergence check.
    same_leader_skips_epoch_check: AtomicBool,
}

impl Partition {
    /// Hosts `log` as its partition's only replica, on broker `node_id`.
    pub fn new(
        topic: String,
        index: i32,
        log: PartitionLog,
        node_id: i32,
        observed: Observed,
    ) -> Self {
        let replica = ReplicaState::single_replica(
            ReplicaConfig::single(node_id, log.config().flush_on_ack),
            log.log_end_offset(),
            log.durable_offset(),
            log.high_watermark(),
        );
        Self::hosting(topic, index, log, replica, observed)
    }

    /// Hosts `log` as one replica of a partition with the leadership
    /// `image` records: its leader when `image` names this broker, a
    /// follower otherwise.
    pub fn replicated(
        (topic, index): (String, i32),
        log: PartitionLog,
        config: ReplicaConfig,
        (image, partition_epoch): (&PartitionImage, i32),
        now_ms: i64,
        observed: Observed,
    ) -> Self {
        let replica = replica_for(config, image, &log, now_ms);
        let (log_end_offset, high_watermark) = (log.log_end_offset(), log.high_watermark());
        let partition = Self::hosting(topic, index, log, replica, observed);
        partition
            .partition_epoch
            .store(partition_epoch, Ordering::Release);
        if partition.is_leader() {
            partition.observed.report(|| Fact::PartitionLeader {
                topic: partition.topic.clone(),
                partition: partition.index,
                leader_epoch: image.leader_epoch,
                isr: image.isr.clone(),
                log_end_offset,
            });
            partition.report_leader_high_watermark(high_watermark);
        }
        partition
    }

    fn hosting(
        topic: String,
        index: i32,
        log: PartitionLog,
        replica: ReplicaState,
        observed: Observed,
    ) -> Self {
        let leader_epoch = AtomicI32::new(replica.leader_epoch());
        let node_id = replica.node_id();
        let leader_id = AtomicI32::new(replica.leader_id());
        let high_watermark_moved = tokio::sync::watch::channel(log.high_watermark()).0;
        let in_sync_replicas = std::sync::atomic::AtomicUsize::new(replica.in_sync_count());
        let min_insync_replicas =
            std::sync::atomic::AtomicUsize::new(replica.config().min_insync_replicas);
        let compacted = AtomicBool::new(log.config().cleanup_policy.compact);
        Self {
            topic,
            index,
            observed,
            hosted: tokio::sync::Mutex::new(Some(Hosted {
                log,
                replica,
                effects: Vec::new(),
            })),
            leader_epoch,
            compacted,
            leader_id,
            node_id,
            high_watermark_moved,
            in_sync_replicas,
            min_insync_replicas,
            partition_epoch: AtomicI32::new(0),
            isr_proposal: Mutex::new(None),
            offline: AtomicBool::new(false),
            same_leader_skips_epoch_check: AtomicBool::new(false),
            flush_turn: tokio::sync::Mutex::new(()),
            follower_log_starts: Mutex::new(BTreeMap::new()),
            log_starts_moved: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// The broker this replica takes to be the partition's leader.
    pub fn leader_id(&self) -> i32 {
        self.leader_id.load(Ordering::Acquire)
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.leader_id() == self.node_id
    }

    fn check_online(&self) -> Result<(), PartitionError> {
        if self.offline.load(Ordering::Acquire) {
            Err(PartitionError::Offline)
        } else {
            Ok(())
        }
    }

    fn take_offline_on_io(&self, error: LogError) -> PartitionError {
        if let LogError::Io(io) = &error {
            tracing::error!(topic = %self.topic, partition = self.index, %io, "storage error: partition taken offline");
            self.offline.store(true, Ordering::Release);
        }
        PartitionError::Log(error)
    }

    /// Runs `f` on the log, or fails if the partition is gone or offline.
    pub async fn with_log<T>(
        &self,
        f: impl AsyncFnOnce(&mut PartitionLog) -> Result<T, LogError>,
    ) -> Result<T, PartitionError> {
        self.with_hosted(async |hosted: &mut Hosted| f(&mut hosted.log).await)
            .await
    }

    /// Runs `f` on the log and the replica state, then lets the replica core
    /// decide what the log's progress means.
    async fn with_hosted<T>(
        &self,
        f: impl AsyncFnOnce(&mut Hosted) -> Result<T, LogError>,
    ) -> Result<T, PartitionError> {
        self.check_online()?;
        let mut guard = self.hosted.lock().await;
        let hosted = guard.as_mut().ok_or(PartitionError::Deleted)?;
        let high_watermark = hosted.log.high_watermark();
        let result = f(hosted)
            .await
            .map_err(|error| self.take_offline_on_io(error));
        let Hosted {
            log,
            replica,
            effects,
        } = hosted;
        // Whatever a successful operation did to the log, the replica core
        // decides what consumers may now see. A failed one exposes nothing
        // more: its storage error has taken the partition offline, and
        // recovery on restart decides what survives.
        let mut effects = std::mem::take(effects);
        if result.is_ok() {
            effects.extend(replica.on_log_progress(log.log_end_offset(), log.durable_offset()));
        }
        for effect in effects {
            match effect {
                ReplicaEffect::HighWatermark(offset) => log.set_high_watermark(offset),
                ReplicaEffect::IsrChanged(isr) => {
                    let broker_epochs = isr
                        .iter()
                        .map(|id| (*id, replica.follower_broker_epoch(*id)))
                        .collect();
                    *self.isr_proposal.lock().expect("proposal lock") = Some(IsrProposal {
                        leader_epoch: replica.leader_epoch(),
                        partition_epoch: self.partition_epoch.load(Ordering::Acquire),
                        isr,
                        broker_epochs,
                    });
                }
            }
        }
        let in_sync = replica.in_sync_count();
        if self.in_sync_replicas.swap(in_sync, Ordering::AcqRel) != in_sync {
            // Wakes acks=all produces, which give up below the minimum.
            self.high_watermark_moved.send_modify(|_| {});
        }
        // Reported under the lock, so the fact precedes every fetch that can
        // see the new high watermark. Only a leader's is what clients see; a
        // follower's trails it.
        if log.high_watermark() != high_watermark {
            if replica.leader_id() == replica.node_id() {
                self.observed.report(|| Fact::HighWatermark {
                    topic: self.topic.clone(),
                    partition: self.index,
                    high_watermark: log.high_watermark(),
                });
            }
            self.high_watermark_moved.send_replace(log.high_watermark());
        }
        result
    }

    /// Takes on the leadership the metadata image records: leads, follows,
    /// or (same leader and epoch) learns the ISR the controller recorded.
    /// Returns whether this broker now follows a different leader or epoch
    /// than before (so its fetcher must start over).
    pub async fn apply_leadership(
        &self,
        (image, partition_epoch): (&PartitionImage, i32),
        now_ms: i64,
    ) -> bool {
        // Set first: the ISR the core may propose from here on is computed
        // against this epoch's state.
        let previous_partition_epoch = self
            .partition_epoch
            .fetch_max(partition_epoch, Ordering::AcqRel);
        let mut changed = false;
        let mut flush_on_ack = false;
        let (mut log_end_offset, mut high_watermark) = (-1, -1);
        let _ = self
            .with_hosted(async |hosted: &mut Hosted| {
                let same = hosted.replica.leader_epoch() == image.leader_epoch
                    && hosted.replica.leader_id() == image.leader_id;
                if same {
                    // The same partition record as before (the image moved
                    // for something else): it says nothing about a proposal
                    // still in flight, which the controller may yet record.
                    if partition_epoch <= previous_partition_epoch {
                        return Ok(());
                    }
                    if let Some(previous) = hosted.replica.isr() {
                        let isr: BTreeSet<i32> = image.isr.iter().copied().collect();
                        if *previous != isr {
                            // Before the high watermark this ISR may move.
                            self.observed.report(|| Fact::IsrChanged {
                                topic: self.topic.clone(),
                                partition: self.index,
                                leader_epoch: image.leader_epoch,
                                isr: image.isr.clone(),
                            });
                        }
                        let effects = hosted.replica.on_isr_recorded(&isr);
                        hosted.effects.extend(effects);
                    }
                    return Ok(());
                }
                if image.leader_epoch < hosted.replica.leader_epoch() {
                    return Ok(());
                }
                let config = hosted.replica.config().clone();
                flush_on_ack = config.flush_on_ack;
                if crate::planted!(TruncateToHighWatermark) && image.leader_id != config.node_id {
                    let high_watermark = hosted.log.high_watermark();
                    self.truncate(
                        &mut hosted.log,
                        high_watermark,
                        TruncationReason::OwnHighWatermark,
                    )
                    .await?;
                }
                if crate::planted!(SkipTruncationSameLeader) {
                    let same_leader = image.leader_id == hosted.replica.leader_id()
                        && image.leader_id != config.node_id;
                    self.same_leader_skips_epoch_check
                        .store(same_leader, Ordering::Release);
                }
                hosted.replica = replica_for(config, image, &hosted.log, now_ms);
                log_end_offset = hosted.log.log_end_offset();
                high_watermark = hosted.log.high_watermark();
                changed = true;
                Ok(())
            })
            .await;
        if changed {
            *self.isr_proposal.lock().expect("proposal lock") = None;
            self.leader_epoch
                .store(image.leader_epoch, Ordering::Release);
            self.leader_id.store(image.leader_id, Ordering::Release);
            // Wakes acks=all produces, which stop waiting once this broker
            // no longer leads.
            self.high_watermark_moved.send_modify(|_| {});
            tracing::info!(
                topic = %self.topic,
                partition = self.index,
                leader = image.leader_id,
                leader_epoch = image.leader_epoch,
                "leadership changed"
            );
            if self.is_leader() {
                self.observed.report(|| Fact::PartitionLeader {
                    topic: self.topic.clone(),
                    partition: self.index,
                    leader_epoch: image.leader_epoch,
                    isr: image.isr.clone(),
                    log_end_offset,
                });
                self.report_leader_high_watermark(high_watermark);
                if flush_on_ack {
                    // A leader that counts itself only once synced must sync
                    // whatever it holds unsynced (a follower syncs each
                    // append, but what recovery kept may not be), or the
                    // high watermark waits for the next append.
                    self.sync_log_end().await;
                }
            } else {
                self.observed.report(|| Fact::PartitionFollower {
                    topic: self.topic.clone(),
                    partition: self.index,
                    leader_epoch: image.leader_epoch,
                    leader_id: image.leader_id,
                });
            }
        }
        changed
    }

    /// A new leader serves its log up to the high watermark it holds (what
    /// it recovered, or took from its last leader), so clients can see that
    /// much from now on.
    fn report_leader_high_watermark(&self, high_watermark: i64) {
        self.observed.report(|| Fact::HighWatermark {
            topic: self.topic.clone(),
            partition: self.index,
            high_watermark,
        });
    }

    /// The controller refused `refused` for naming a fenced broker: the
    /// core forgets it, unless leadership or the ISR moved on since.
    pub async fn abandon_isr_proposal(&self, refused: &IsrProposal) {
        let _ = self
            .with_hosted(async |hosted: &mut Hosted| {
                if hosted.replica.leader_epoch() == refused.leader_epoch {
                    hosted.replica.on_isr_refused(&refused.isr);
                }
                Ok(())
            })
            .await;
    }

    /// The ISR change the replica core proposed, for the controller.
    pub fn take_isr_proposal(&self) -> Option<IsrProposal> {
        self.isr_proposal.lock().expect("proposal lock").take()
    }

    /// Puts back a proposal the controller could not take (no controller, a
    /// lost connection), unless a newer one or a leadership change came.
    pub fn restore_isr_proposal(&self, restored: IsrProposal) {
        let mut proposal = self.isr_proposal.lock().expect("proposal lock");
        if proposal.is_none()
            && restored.leader_epoch == self.leader_epoch()
            && restored.partition_epoch == self.partition_epoch.load(Ordering::Acquire)
            && self.is_leader()
        {
            *proposal = Some(restored);
        }
    }

    /// The high watermark as last set (without taking the lock).
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark_moved.borrow()
    }

    /// Lets the leader drop followers that stopped keeping up.
    pub async fn tick(&self, now_ms: i64) {
        let _ = self
            .with_hosted(async |hosted: &mut Hosted| {
                let effects = hosted.replica.on_tick(now_ms);
                hosted.effects.extend(effects);
                Ok(())
            })
            .await;
    }

    /// Whether the leader counts at least `min.insync.replicas` replicas
    /// in sync (the smaller of the recorded and proposed ISR).
    pub fn has_min_insync_replicas(&self) -> bool {
        self.in_sync_replicas.load(Ordering::Acquire)
            >= self.min_insync_replicas.load(Ordering::Acquire)
    }

    /// Applies a topic's settings to this replica while it runs: the log's
    /// (segments, retention, flushing, batch size, timestamps) and
    /// `min.insync.replicas`. `log.flush.on.ack` is the broker's and stays.
    pub async fn apply_settings(&self, settings: &crate::topic_config::TopicSettings) {
        let mut log_config = settings.log.clone();
        let min_insync_replicas = settings.min_insync_replicas;
        let _ = self
            .with_hosted(async |hosted: &mut Hosted| {
                log_config.flush_on_ack = hosted.log.config().flush_on_ack;
                hosted.log.set_config(log_config);
                hosted.replica.set_min_insync_replicas(min_insync_replicas);
                Ok(())
            })
            .await;
        self.min_insync_replicas
            .store(min_insync_replicas, Ordering::Release);
        self.compacted
            .store(settings.log.cleanup_policy.compact, Ordering::Release);
    }

    /// Whether the log is compacted (the log cleaner's work).
    pub fn is_compacted(&self) -> bool {
        self.compacted.load(Ordering::Acquire)
    }

    /// An acks=all produce's wait: until the high watermark reaches
    /// `offset`, this broker stops leading in `leader_epoch`, or the ISR
    /// falls below `min.insync.replicas`. The caller bounds the wait.
    pub async fn wait_replicated(&self, offset: i64, leader_epoch: i32) -> AckWait {
        let mut moved = self.high_watermark_moved.subscribe();
        loop {
            if !self.is_leader() || self.leader_epoch() != leader_epoch {
                return AckWait::NotLeader;
            }
            if *moved.borrow_and_update() >= offset {
                return AckWait::Replicated;
            }
            if !self.has_min_insync_replicas() {
                return AckWait::BelowMinInsync;
            }
            if moved.changed().await.is_err() {
                return AckWait::NotLeader;
            }
        }
    }

    /// A follower's fetch, on the leader: checks the follower's log against
    /// the leader's epochs, then reads up to the log end and tells the core
    /// where the follower is.
    pub async fn follower_read(
        &self,
        (follower_id, broker_epoch): (i32, i64),
        (fetch_offset, last_fetched_epoch): (i64, i32),
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<FollowerRead, PartitionError> {
        self.with_hosted(async |hosted: &mut Hosted| {
            if last_fetched_epoch >= 0 && !crate::planted!(IgnoreDivergingEpoch) {
                if let Some(diverging) = diverging(&hosted.log, fetch_offset, last_fetched_epoch) {
                    return Ok(diverging);
                }
            }
            let log = &mut hosted.log;
            if fetch_offset < log.log_start_offset() {
                let log_start_offset = log.log_start_offset();
                return Ok(FollowerRead::BelowLogStart { log_start_offset });
            }
            let bytes = log
                .read(fetch_offset, max_bytes, log.log_end_offset())
                .await?;
            let effects =
                hosted
                    .replica
                    .on_follower_fetch((follower_id, broker_epoch), fetch_offset, now_ms);
            let proposes_follower = effects.iter().any(|effect| {
                matches!(effect, ReplicaEffect::IsrChanged(isr) if isr.contains(&follower_id))
            });
            if proposes_follower {
                // Before the proposal leaves: the fetch that justifies it.
                self.observed.report(|| Fact::FollowerCaughtUp {
                    topic: self.topic.clone(),
                    partition: self.index,
                    leader_epoch: hosted.replica.leader_epoch(),
                    follower_id,
                    broker_epoch,
                    fetch_offset,
                });
            }
            hosted.effects.extend(effects);
            let log = &hosted.log;
            Ok(FollowerRead::Records {
                bytes,
                offsets: PartitionOffsets {
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    log_end_offset: log.log_end_offset(),
                },
            })
        })
        .await
    }

    /// Where a follower fetches from next: its log end and the epoch of its
    /// last batch (-1 for an empty log).
    pub async fn fetch_position(&self) -> Result<FetchPosition, PartitionError> {
        let skip_epoch_check = self.same_leader_skips_epoch_check.load(Ordering::Acquire);
        self.with_log(async |log| {
            let last_fetched_epoch = log.latest_epoch().unwrap_or(-1);
            Ok(FetchPosition {
                log_end_offset: log.log_end_offset(),
                last_fetched_epoch: if skip_epoch_check {
                    -1
                } else {
                    last_fetched_epoch
                },
                log_start_offset: log.log_start_offset(),
            })
        })
        .await
    }

    /// A follower appends what it fetched from the leader and takes the
    /// leader's high watermark.
    pub async fn append_from_leader(
        &self,
        payload: Bytes,
        (leader_high_watermark, leader_log_start): (i64, i64),
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        self.with_hosted(async |hosted: &mut Hosted| {
            // DeleteRecords on the leader moves this replica's start too, up
            // to what it holds (never past the leader's high watermark, so
            // never past the one this replica is about to take).
            let start = leader_log_start.min(hosted.log.log_end_offset());
            hosted.log.advance_log_start(start).await?;
            if !payload.is_empty() {
                hosted.log.append_replicated(payload, now_ms).await?;
                // Under log.flush.on.ack an acknowledgement means on disk on
                // every in-sync replica, not only the leader: the offset this
                // follower fetches from next, which the leader counts toward
                // the high watermark, must be durable. Otherwise a follower
                // that loses power and is then elected as the ISR's last
                // member (KIP-966) would lose acknowledged records.
                if hosted.replica.config().flush_on_ack {
                    hosted.log.flush().await?;
                }
            }
            let end = hosted.log.log_end_offset();
            let durable = hosted.log.durable_offset();
            let mut effects = hosted.replica.on_log_progress(end, durable);
            effects.extend(
                hosted
                    .replica
                    .on_leader_high_watermark(leader_high_watermark),
            );
            hosted.effects.extend(effects);
            Ok(())
        })
        .await
    }

    /// A follower told its log diverges: it truncates to where its own copy
    /// of `epoch` ends or where the leader's does, whichever is lower
    /// (KIP-279), never simply to its high watermark.
    /// A follower below the leader's log start empties its log and starts
    /// it at `log_start_offset`, unless it has reached that far since.
    pub async fn start_at_leader_log_start(
        &self,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        self.with_log(async |log| {
            if log.log_end_offset() < log_start_offset {
                log.truncate_fully_and_start_at(log_start_offset, now_ms)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn truncate_diverging(
        &self,
        epoch: i32,
        leader_end_offset: i64,
    ) -> Result<i64, PartitionError> {
        self.with_log(async |log| {
            let (own_epoch, own_end) = log.end_offset_for_epoch(epoch);
            let target = if own_epoch < 0 {
                // Nothing of that epoch or earlier: everything diverges.
                log.log_start_offset()
            } else {
                own_end.min(leader_end_offset)
            };
            self.truncate(log, target, TruncationReason::DivergingEpoch)
                .await?;
            Ok(log.log_end_offset())
        })
        .await
    }

    /// Cuts the log back to `offset` and reports what was cut, if anything.
    async fn truncate(
        &self,
        log: &mut PartitionLog,
        offset: i64,
        reason: TruncationReason,
    ) -> Result<(), LogError> {
        let from_offset = log.log_end_offset();
        let cut_epochs = log.epoch_runs_from(offset.max(log.log_start_offset()));
        log.truncate_to(offset).await?;
        let to_offset = log.log_end_offset();
        if to_offset < from_offset {
            self.observed.report(|| Fact::Truncated {
                topic: self.topic.clone(),
                partition: self.index,
                from_offset,
                to_offset,
                cut_epochs,
                reason,
            });
        }
        Ok(())
    }

    /// DeleteRecords on the leader: moves the log start to `offset` (-1:
    /// the high watermark) durably and returns it. An offset past the high
    /// watermark is OFFSET_OUT_OF_RANGE; only the leader deletes.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, i16> {
        if !self.is_leader() {
            return Err(ResponseError::NotLeaderOrFollower.code());
        }
        self.with_log(async |log| {
            let target = if offset == -1 {
                log.high_watermark()
            } else {
                offset
            };
            if target < 0 || target > log.high_watermark() {
                return Ok(Err(ResponseError::OffsetOutOfRange.code()));
            }
            log.advance_log_start(target).await?;
            Ok(Ok(log.log_start_offset()))
        })
        .await
        .unwrap_or_else(|error| Err(error.code()))
    }

    /// A follower's fetch reported its log start offset.
    pub fn note_follower_log_start(&self, follower_id: i32, log_start_offset: i64) {
        if log_start_offset < 0 {
            return;
        }
        let previous = self
            .follower_log_starts
            .lock()
            .expect("follower log starts lock")
            .insert(follower_id, log_start_offset);
        if previous != Some(log_start_offset) {
            self.log_starts_moved.send_modify(|moves| *moves += 1);
        }
    }

    /// Waits until every other member of the ISR reports a log start at or
    /// past `offset` (DeleteRecords' low watermark), or this broker stops
    /// leading. The caller bounds the wait. Returns whether they all did.
    pub async fn wait_log_start_replicated(&self, offset: i64) -> bool {
        let mut moved = self.log_starts_moved.subscribe();
        loop {
            if !self.is_leader() {
                return false;
            }
            let isr: Vec<i32> = {
                let guard = self.hosted.lock().await;
                match guard.as_ref().and_then(|hosted| hosted.replica.isr()) {
                    Some(isr) => isr.iter().copied().collect(),
                    None => return false,
                }
            };
            let all = {
                let starts = self
                    .follower_log_starts
                    .lock()
                    .expect("follower log starts lock");
                isr.iter()
                    .filter(|id| **id != self.node_id)
                    .all(|id| starts.get(id).is_some_and(|start| *start >= offset))
            };
            if all {
                return true;
            }
            if moved.changed().await.is_err() {
                return false;
            }
        }
    }

    pub async fn offsets(&self) -> Result<PartitionOffsets, PartitionError> {
        self.with_log(async |log| {
            Ok(PartitionOffsets {
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
                log_end_offset: log.log_end_offset(),
            })
        })
        .await
    }

    pub async fn append(
        &self,
        payload: Bytes,
        now_ms: i64,
    ) -> Result<AppendOutcome, PartitionError> {
        let epoch = self.leader_epoch();
        // The one copy on the produce path: the header is rewritten in place.
        let payload = BytesMut::from(payload.as_ref());
        self.with_log(async move |log| log.append(payload, epoch, now_ms).await)
            .await
    }

    /// Syncs the whole log (a storage error takes the partition offline).
    async fn sync_log_end(&self) {
        if let Ok(end_offset) = self.with_log(async |log| Ok(log.log_end_offset())).await {
            if let Err(error) = self.sync_to(end_offset).await {
                tracing::error!(topic = %self.topic, partition = self.index, %error, "syncing a new leader's log failed");
            }
        }
    }

    /// Waits until everything below `offset` is durable, sharing fsyncs with
    /// concurrent callers (group commit).
    pub async fn sync_to(&self, offset: i64) -> Result<(), PartitionError> {
        loop {
            if self.with_log(async |log| Ok(log.durable_offset())).await? >= offset {
                return Ok(());
            }
            let _turn = self.flush_turn.lock().await;
            let target = self
                .with_log(async |log| {
                    Ok((log.durable_offset() < offset).then(|| log.flush_target()))
                })
                .await?;
            let Some((file, flushed_offset)) = target else {
                return Ok(());
            };
            if let Err(io) = file.sync().await {
                return Err(self.take_offline_on_io(LogError::Io(io)));
            }
            self.with_log(async |log| {
                log.mark_flushed(flushed_offset);
                Ok(())
            })
            .await?;
        }
    }

    /// Reads for a consumer: bounded by the high watermark.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, PartitionOffsets), PartitionError> {
        self.with_log(async |log| {
            let offsets = PartitionOffsets {
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
                log_end_offset: log.log_end_offset(),
            };
            let max_offset = if crate::planted!(FetchBeyondHighWatermark) {
                offsets.log_end_offset
            } else {
                offsets.high_watermark
            };
            let bytes = log.read(offset, max_bytes, max_offset).await?;
            Ok((bytes, offsets))
        })
        .await
    }

    /// Takes the log out and deletes its files.
    pub async fn delete(&self) -> Result<(), PartitionError> {
        let hosted = self
            .hosted
            .lock()
            .await
            .take()
            .ok_or(PartitionError::Deleted)?;
        hosted.log.delete().await.map_err(PartitionError::Log)
    }
}

/// Where a follower that fetches from `fetch_offset`, its last batch of
/// `last_fetched_epoch`, diverges from the leader's `log`: None when the
/// leader's copy of that epoch reaches the fetch offset.
fn diverging(
    log: &PartitionLog,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> Option<FollowerRead> {
    let (epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
    if epoch < 0 {
        // Every epoch here is newer than the follower's last: nothing it
        // holds is known to match, so it starts over from this log's start.
        let end_offset = log.log_start_offset();
        return Some(FollowerRead::Diverging { epoch, end_offset });
    }
    (epoch != last_fetched_epoch || end_offset < fetch_offset)
        .then_some(FollowerRead::Diverging { epoch, end_offset })
}

/// The replica state `image` gives this broker: leading at its epoch with
/// its ISR, or following its leader.
fn replica_for(
    config: ReplicaConfig,
    image: &PartitionImage,
    log: &PartitionLog,
    now_ms: i64,
) -> ReplicaState {
    let offsets = [
        log.log_end_offset(),
        log.durable_offset(),
        log.high_watermark(),
    ];
    if image.leader_id == config.node_id {
        ReplicaState::leader(
            config,
            image.leader_epoch,
            (&image.replicas, &image.isr),
            offsets,
            now_ms,
        )
    } else {
        ReplicaState::follower(config, image.leader_id, image.leader_epoch, offsets)
    }
}
