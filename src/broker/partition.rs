//! A partition as the broker holds it: its log and its replica state behind
//! one async lock, its leader epoch, and group commit for `log.flush.on.ack`.
//!
//! Every log operation goes through [`Partition::with_log`], which afterwards
//! hands the log's offsets to the replica core ([`crate::replica`]) and sets
//! the high watermark that core decides. The leader epoch is stamped into
//! every batch.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

use crate::log::producer_state::SequenceError;
use crate::log::{AppendOutcome, LogError, PartitionLog};
use crate::observe::{Fact, Observed};
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
            },
        };
        error.code()
    }
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
    /// Set after a storage error: the in-memory state may no longer match the
    /// files, so nothing more is served until recovery on restart.
    offline: AtomicBool,
    /// One fsync at a time; appends that arrive during it share the next one.
    flush_turn: tokio::sync::Mutex<()>,
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
        let leader_epoch = AtomicI32::new(replica.leader_epoch());
        Self {
            topic,
            index,
            observed,
            hosted: tokio::sync::Mutex::new(Some(Hosted { log, replica })),
            leader_epoch,
            offline: AtomicBool::new(false),
            flush_turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
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
        self.check_online()?;
        let mut guard = self.hosted.lock().await;
        let Hosted { log, replica } = guard.as_mut().ok_or(PartitionError::Deleted)?;
        let high_watermark = log.high_watermark();
        let result = f(log).await.map_err(|error| self.take_offline_on_io(error));
        // Whatever a successful operation did to the log, the replica core
        // decides what consumers may now see. A failed one exposes nothing
        // more: its storage error has taken the partition offline, and
        // recovery on restart decides what survives.
        let effects = match &result {
            Ok(_) => replica.on_log_progress(log.log_end_offset(), log.durable_offset()),
            Err(_) => Vec::new(),
        };
        for effect in effects {
            match effect {
                ReplicaEffect::HighWatermark(offset) => log.set_high_watermark(offset),
                // A partition's only replica is its whole ISR, always.
                ReplicaEffect::IsrChanged(isr) => {
                    unreachable!("a single replica's ISR changed to {isr:?}")
                }
            }
        }
        // Reported under the lock, so the fact precedes every fetch that can
        // see the new high watermark.
        if log.high_watermark() != high_watermark {
            self.observed.report(|| Fact::HighWatermark {
                topic: self.topic.clone(),
                partition: self.index,
                high_watermark: log.high_watermark(),
            });
        }
        result
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

    /// Waits until everything below `offset` is durable, sharing fsyncs with
    /// concurrent callers (group commit).
    pub async fn sync_to(&self, offset: i64) -> Result<(), PartitionError> {
        if crate::planted!(AckBeforeFsync) {
            // Planted: the write reached the page cache, call it durable.
            return Ok(());
        }
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
