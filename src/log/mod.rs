//! The partition log: an ordered, durable sequence of RecordBatch v2 bytes.
//!
//! A [`PartitionLog`] owns its segments, its three offsets and its
//! idempotent-producer state. It takes the current time as an argument and does
//! all I/O through the storage seam, so it is the same code under simulation.
//! Invariant: nothing under `src/log` reads a clock or spawns a task.
//!
//! Offsets, kept apart from the start:
//! - `log_start_offset`: the first offset still stored (retention moves it).
//! - `log_end_offset`: one past the last appended offset.
//! - `high_watermark`: one past the last offset consumers may see. The log
//!   only stores it: the replica core ([`crate::replica`]) decides it, from
//!   the log end or durable offset and the followers' positions, and its
//!   owner sets it with [`PartitionLog::set_high_watermark`]. Recovery sets
//!   it to what it kept, and truncation lowers it with the log end.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`; a batch
//! is never served unless it passed validation on append or on recovery; a
//! read never returns a batch at or past the bound it was given.

pub mod batch;
pub mod cleaner;
pub mod compression;
pub mod leader_epochs;
pub mod producer_state;
pub mod segment;
pub mod testing;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use batch::{BatchError, BatchHeader};
use producer_state::{ProducerStateManager, SequenceError};
use segment::Segment;

use crate::storage::{SharedFile, SharedStorage};

/// How record timestamps are set (`log.message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// Per-log settings, named after Kafka's `server.properties` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `log.segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u64,
    /// `log.roll.ms`: roll a non-empty active segment older than this.
    pub roll_ms: i64,
    /// `log.retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `log.retention.bytes`: delete old segments while the log is larger; -1 for no limit.
    pub retention_bytes: i64,
    /// `log.index.interval.bytes`: bytes between offset-index entries.
    pub index_interval_bytes: u64,
    /// `log.flush.interval.messages`: fsync after this many unflushed records.
    pub flush_messages: u64,
    /// `log.flush.interval.ms`: fsync when the oldest unflushed write is this old.
    pub flush_ms: i64,
    /// `log.flush.on.ack` (sluice): acknowledge and expose a produce only after
    /// fsync. Concurrent appends share one fsync (group commit). The replica
    /// core and the produce handler act on it; the log itself does not.
    pub flush_on_ack: bool,
    /// `message.max.bytes`: the largest batch accepted.
    pub message_max_bytes: usize,
    /// `log.message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `log.cleanup.policy`: delete old segments, compact by key, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `log.cleaner.delete.retention.ms`: how long a cleaned log keeps a
    /// tombstone, counted from its batch's largest timestamp.
    pub delete_retention_ms: i64,
    /// `log.cleaner.min.compaction.lag.ms`: a segment whose newest record is
    /// younger than this is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.min.cleanable.ratio`: clean once the dirty share of the
    /// cleanable bytes reaches this.
    pub min_cleanable_dirty_ratio: f64,
}

/// `cleanup.policy`: `delete`, `compact`, or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        delete: false,
        compact: true,
    };

    /// Kafka's spelling: `delete`, `compact` or `compact,delete`.
    pub fn name(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }

    /// Parses a comma-separated list of `delete` and `compact`.
    pub fn parse(value: &str) -> Result<CleanupPolicy, String> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for name in value.split(',').map(str::trim) {
            match name {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                other => {
                    return Err(format!(
                        "String must be one of: compact, delete (not {other:?})"
                    ))
                }
            }
        }
        Ok(policy)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            roll_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            flush_on_ack: false,
            message_max_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// The log start offset DeleteRecords set, when it is past the first
/// segment's base: Kafka's `log-start-offset-checkpoint`, one per log.
const LOG_START_FILE: &str = "log-start-offset";

async fn read_log_start(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
) -> Result<Option<i64>, LogError> {
    let file = storage.open(&dir.join(LOG_START_FILE)).await?;
    let bytes = file.read_at(0, 32).await?;
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Ok(Some(offset)),
        // An empty or torn file: the atomic rename never happened, so the
        // start it was to record was never acknowledged.
        _ => Ok(None),
    }
}

async fn write_log_start(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
    offset: i64,
) -> Result<(), LogError> {
    let temporary = dir.join(format!("{LOG_START_FILE}.tmp"));
    let _ = storage.remove(&temporary).await;
    let file = storage.open(&temporary).await?;
    file.append(Bytes::from(format!("{offset}\n"))).await?;
    file.sync().await?;
    storage
        .rename(&temporary, &dir.join(LOG_START_FILE))
        .await?;
    storage.sync_dir(dir).await?;
    Ok(())
}

/// Operating errors of a log. Each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("corrupt batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("batch of {size_bytes} bytes exceeds message.max.bytes {max_bytes}")]
    MessageTooLarge { size_bytes: usize, max_bytes: usize },
    #[error("sequence check failed: {0}")]
    Sequence(#[from] SequenceError),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    /// A replicated payload does not continue this log: its first batch
    /// starts at `base_offset`, or its batches leave a gap or go back.
    #[error("replicated batch at offset {base_offset} does not continue the log at {expected}")]
    NotContiguous { expected: i64, base_offset: i64 },
    /// Kafka's INVALID_RECORD: the cleaner keeps records by key, so a
    /// compacted log refuses a record without one.
    #[error("Compacted topic cannot accept message without key (batch record {record})")]
    KeylessRecordOnCompactedTopic { record: usize },
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp under LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// True when the batch was a retry of one already in the log.
    pub duplicate: bool,
}

pub struct PartitionLog {
    dir: PathBuf,
    storage: SharedStorage,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    /// Everything below this offset has been fsynced.
    durable_offset: i64,
    unflushed_messages: u64,
    /// When the oldest unflushed append happened, for `log.flush.interval.ms`.
    oldest_unflushed_ms: Option<i64>,
    producers: ProducerStateManager,
    /// Where each leader epoch's writes start, rebuilt from batch headers.
    epochs: leader_epochs::LeaderEpochCache,
    /// The log cleaner's progress: everything below this was cleaned with
    /// a map that covered it. Kept in memory only, so a restart cleans the
    /// whole log once more (which changes nothing already clean).
    first_dirty_offset: i64,
    /// When the earliest tombstone the last cleaning pass kept may be
    /// dropped; that time makes the log due for cleaning again.
    tombstone_expiry_ms: Option<i64>,
}

impl PartitionLog {
    /// Opens the log in `dir`, recovering it: every batch of the last segment
    /// is validated, earlier segments (synced when they rolled) are walked by
    /// header. A torn or corrupt tail is cut back to the last good batch.
    pub async fn open(
        storage: SharedStorage,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        storage.create_dir(dir).await?;
        let names = storage.list(dir).await?;
        let start_checkpoint = if names.iter().any(|name| name == LOG_START_FILE) {
            read_log_start(storage.as_ref(), dir).await?
        } else {
            None
        };
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|name| segment::parse_log_file_name(name))
            .collect();
        bases.sort_unstable();
        let mut log = Self {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            config,
            segments: BTreeMap::new(),
            log_start_offset: 0,
            log_end_offset: 0,
            high_watermark: 0,
            durable_offset: 0,
            unflushed_messages: 0,
            oldest_unflushed_ms: None,
            producers: ProducerStateManager::default(),
            epochs: leader_epochs::LeaderEpochCache::default(),
            first_dirty_offset: 0,
            tombstone_expiry_ms: None,
        };
        // A segment the cleaner was rewriting when the broker stopped: the
        // rename never happened, so the old segment is whole.
        for name in names
            .iter()
            .filter(|name| name.ends_with(cleaner::CLEANED_SUFFIX))
        {
            tracing::warn!(dir = %dir.display(), file = %name, "recovery removed an unfinished cleaned segment");
            storage.remove(&dir.join(name)).await?;
        }
        let mut cut_at: Option<usize> = None;
        for (at, base_offset) in bases.iter().enumerate() {
            let mut segment = Segment::open(storage.as_ref(), dir, *base_offset, now_ms).await?;
            let is_last = at + 1 == bases.len();
            let (headers, cut_bytes) = segment
                .recover(is_last, log.config.index_interval_bytes)
                .await?;
            for header in &headers {
                log.producers.record(header);
                log.epochs
                    .record(header.partition_leader_epoch, header.base_offset);
            }
            if cut_bytes > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base_offset,
                    cut_bytes,
                    next_offset = segment.next_offset,
                    "recovery truncated a torn or corrupt tail"
                );
            }
            log.segments.insert(*base_offset, segment);
            if cut_bytes > 0 && !is_last {
                cut_at = Some(at + 1);
                break;
            }
        }
        if let Some(first_dropped) = cut_at {
            for base_offset in &bases[first_dropped..] {
                let segment = Segment::open(storage.as_ref(), dir, *base_offset, now_ms).await?;
                tracing::warn!(
                    segment = base_offset,
                    "recovery dropped a segment after a corrupt one"
                );
                segment.delete(storage.as_ref()).await?;
            }
        }
        if log.segments.is_empty() {
            let segment = Segment::open(storage.as_ref(), dir, 0, now_ms).await?;
            log.segments.insert(0, segment);
        }
        storage.sync_dir(dir).await?;
        log.active_mut().sync_all().await?;
        log.log_end_offset = log.active().next_offset;
        // DeleteRecords may have moved the start past the first segment's
        // base; never past the log end (a power loss may have cut the tail).
        let first_base = *log.segments.keys().next().expect("at least one segment");
        log.log_start_offset = start_checkpoint
            .map_or(first_base, |checkpoint| checkpoint.max(first_base))
            .min(log.log_end_offset);
        log.epochs.truncate_from_start(log.log_start_offset);
        log.first_dirty_offset = log.log_start_offset;
        log.durable_offset = log.log_end_offset;
        log.high_watermark = log.log_end_offset;
        log.check_invariants();
        Ok(log)
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn check_invariants(&self) {
        assert!(
            self.log_start_offset <= self.high_watermark,
            "log start above high watermark"
        );
        assert!(
            self.high_watermark <= self.log_end_offset,
            "high watermark above log end"
        );
        assert!(
            self.durable_offset <= self.log_end_offset,
            "durable offset above log end"
        );
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the log's settings in place (a topic's configuration was
    /// altered). Appends, rolls, flushes and retention read them as they
    /// go; nothing already written changes.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size_bytes).sum()
    }
    /// The latest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The leader epochs of the records from `offset` to the log end, each
    /// with the first of its offsets in that range (empty past the end).
    pub fn epoch_runs_from(&self, offset: i64) -> Vec<(i32, i64)> {
        if offset >= self.log_end_offset {
            return Vec::new();
        }
        self.epochs.runs_from(offset)
    }

    /// OffsetForLeaderEpoch: the largest epoch not above `epoch` in this
    /// log and the offset where it ends ([`leader_epochs::UNDEFINED`] below
    /// the first).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.max_producer_id()
    }

    /// Validates `payload` (one or more batches), assigns offsets and appends.
    /// A payload is all-or-nothing: one bad batch rejects all of it.
    pub async fn append(
        &mut self,
        mut payload: BytesMut,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError> {
        let batches = batch::split_batches(&payload)?;
        if batches.is_empty() {
            return Err(BatchError::TooShort(0).into());
        }
        if self.config.cleanup_policy.compact {
            for (position, header) in &batches {
                cleaner::check_keys(&payload[*position..*position + header.size_bytes], header)?;
            }
        }
        for (_, header) in &batches {
            if header.size_bytes > self.config.message_max_bytes {
                return Err(LogError::MessageTooLarge {
                    size_bytes: header.size_bytes,
                    max_bytes: self.config.message_max_bytes,
                });
            }
        }
        // Idempotence: a payload from one producer is checked batch by batch;
        // a retry of the whole payload answers with the original offsets.
        let headers: Vec<&BatchHeader> = batches.iter().map(|(_, header)| header).collect();
        if let Some(original) = self.producers.check_payload(&headers)? {
            return Ok(AppendOutcome {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                log_append_time_ms: -1,
                duplicate: true,
            });
        }
        let log_append_time_ms = match self.config.timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        let base_offset = self.log_end_offset;
        let mut next_offset = base_offset;
        let mut assigned = Vec::with_capacity(batches.len());
        for (position, header) in &batches {
            let bytes = &mut payload[*position..*position + header.size_bytes];
            batch::assign_offset_and_epoch(bytes, next_offset, leader_epoch);
            if log_append_time_ms >= 0 {
                batch::set_log_append_time(bytes, log_append_time_ms);
            }
            // Pair the validation on the way in with an assertion on the bytes
            // we write. Neither rewrite touches what the CRC covers (a
            // LogAppendTime rewrite recomputes it), so the header is what can
            // change; test builds check the CRC and framing again as well.
            let written =
                batch::parse_header(bytes).expect("offset assignment keeps the header whole");
            assert_eq!(written.base_offset, next_offset);
            assert_eq!(written.size_bytes, header.size_bytes);
            debug_assert!(
                batch::validate(bytes).is_ok(),
                "the written batch validates"
            );
            next_offset = written.next_offset();
            assigned.push((*position, written));
        }
        self.maybe_roll(payload.len() as u64, now_ms).await?;
        let index_interval_bytes = self.config.index_interval_bytes;
        self.active_mut()
            .append(payload.freeze(), &assigned, index_interval_bytes)
            .await?;
        // Planted: a leader's own appends leave its epoch cache untouched,
        // so it never learns where its epoch began.
        let epochs_before = crate::planted!(NoEpochEntryOnElection).then(|| self.epochs.clone());
        self.appended(&assigned, next_offset, now_ms, false).await?;
        if let Some(epochs) = epochs_before {
            self.epochs = epochs;
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time_ms,
            duplicate: false,
        })
    }

    /// Appends batches fetched from the partition's leader as they are:
    /// offsets, leader epochs and timestamps are the leader's. The payload
    /// must continue this log exactly (the first batch at the log end, each
    /// next one where the last ended; under compaction a batch may start
    /// past that, where the leader's cleaner removed batches); each batch is
    /// validated as a stored batch, and the idempotent-producer state and the leader-epoch cache
    /// are rebuilt from the headers, so a follower that becomes leader
    /// dedups retries and answers OffsetForLeaderEpoch as the old leader
    /// would have. Returns the new log end offset.
    pub async fn append_replicated(
        &mut self,
        payload: Bytes,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        let batches = batch::split_batches(&payload)?;
        if batches.is_empty() {
            return Ok(self.log_end_offset);
        }
        let mut next_offset = self.log_end_offset;
        // A compacted leader's log has gaps where the cleaner removed whole
        // batches; any other log is dense.
        let gaps_allowed = self.config.cleanup_policy.compact;
        for (position, header) in &batches {
            let continues = header.base_offset == next_offset
                || (gaps_allowed && header.base_offset > next_offset);
            if !continues {
                return Err(LogError::NotContiguous {
                    expected: next_offset,
                    base_offset: header.base_offset,
                });
            }
            batch::validate_stored(&payload[*position..*position + header.size_bytes])?;
            next_offset = header.next_offset();
        }
        self.maybe_roll(payload.len() as u64, now_ms).await?;
        let index_interval_bytes = self.config.index_interval_bytes;
        self.active_mut()
            .append(payload, &batches, index_interval_bytes)
            .await?;
        self.appended(&batches, next_offset, now_ms, true).await?;
        Ok(self.log_end_offset)
    }

    /// Bookkeeping after batches were written to the active segment, the
    /// same for a leader's append and a follower's: producer state and the
    /// leader-epoch cache learn the headers, the log end moves, and
    /// `log.flush.interval.messages` may call for an fsync. `replicated`
    /// says the batches came from a leader.
    async fn appended(
        &mut self,
        batches: &[(usize, BatchHeader)],
        next_offset: i64,
        now_ms: i64,
        replicated: bool,
    ) -> Result<(), LogError> {
        for (_, header) in batches {
            if !(replicated && crate::planted!(FollowerSkipsProducerState)) {
                self.producers.record(header);
            }
            self.epochs
                .record(header.partition_leader_epoch, header.base_offset);
        }
        let record_count = (next_offset - self.log_end_offset) as u64;
        self.log_end_offset = next_offset;
        self.unflushed_messages += record_count;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        if self.unflushed_messages >= self.config.flush_messages {
            self.flush().await?;
        }
        self.check_invariants();
        Ok(())
    }

    /// Sets what consumers may see, as the replica core decided: never below
    /// the log start nor above the log end.
    pub fn set_high_watermark(&mut self, offset: i64) {
        assert!(
            offset >= self.log_start_offset,
            "high watermark {offset} below log start {}",
            self.log_start_offset
        );
        assert!(
            offset <= self.log_end_offset,
            "high watermark {offset} above log end {}",
            self.log_end_offset
        );
        self.high_watermark = offset;
    }

    async fn maybe_roll(&mut self, incoming_bytes: u64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size_bytes() + incoming_bytes > self.config.segment_bytes;
        let too_old = now_ms - active.created_ms >= self.config.roll_ms;
        if too_big || too_old {
            self.roll(now_ms).await?;
        }
        Ok(())
    }

    /// Closes the active segment (syncing it) and starts a new one at the log end.
    pub async fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.active_mut().sync_all().await?;
        self.mark_flushed(self.log_end_offset);
        let base_offset = self.log_end_offset;
        let segment = Segment::open(self.storage.as_ref(), &self.dir, base_offset, now_ms).await?;
        self.storage.sync_dir(&self.dir).await?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        self.segments.insert(base_offset, segment);
        Ok(())
    }

    /// The active segment's file and the offset that syncing it makes durable.
    /// Lets a caller fsync without holding the log (group commit), then report
    /// back with [`PartitionLog::mark_flushed`].
    pub fn flush_target(&self) -> (SharedFile, i64) {
        (self.active().log.clone(), self.log_end_offset)
    }

    /// Records that everything below `offset` is durable.
    pub fn mark_flushed(&mut self, offset: i64) {
        if offset > self.durable_offset {
            self.durable_offset = offset.min(self.log_end_offset);
        }
        if self.durable_offset == self.log_end_offset {
            self.unflushed_messages = 0;
            self.oldest_unflushed_ms = None;
        }
        self.check_invariants();
    }

    /// Fsyncs the active segment now.
    pub async fn flush(&mut self) -> Result<(), LogError> {
        let (file, offset) = self.flush_target();
        file.sync().await?;
        self.mark_flushed(offset);
        Ok(())
    }

    /// Whether `log.flush.interval.ms` says a flush is due.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.oldest_unflushed_ms
            .is_some_and(|oldest| now_ms.saturating_sub(oldest) >= self.config.flush_ms)
    }

    /// Reads whole batches starting with the one that contains `offset`, never
    /// at or past `max_offset`, at least one batch even if larger than
    /// `max_bytes`. Reads stay within one segment, as Kafka's do.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Bytes, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let max_offset = max_offset.min(self.log_end_offset);
        if offset >= max_offset {
            return Ok(Bytes::new());
        }
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(self.log_start_offset, |(base, _)| *base);
        for (_, segment) in self.segments.range(first..) {
            if segment.next_offset <= offset {
                continue;
            }
            let bytes = segment.read(offset, max_bytes, max_offset).await?;
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is at
    /// least `timestamp`, with that timestamp; `None` when there is none.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp < timestamp {
                continue;
            }
            let mut offset = segment
                .lookup_timestamp(timestamp)
                .max(self.log_start_offset);
            while offset < self.high_watermark {
                let bytes = segment.read(offset, 1, self.high_watermark).await?;
                if bytes.is_empty() {
                    break;
                }
                let header = batch::parse_header(&bytes)?;
                if header.max_timestamp >= timestamp {
                    return Ok(Some(first_record_at_or_after(&bytes, &header, timestamp)));
                }
                offset = header.next_offset();
            }
        }
        Ok(None)
    }

    /// ListOffsets' MAX_TIMESTAMP (KIP-734): the first offset holding the
    /// largest record timestamp below the high watermark, with that
    /// timestamp; `None` for a log with nothing exposed. Segments whose
    /// largest timestamp cannot beat the best found so far are skipped.
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<(i64, Bytes, BatchHeader)> = None;
        let mut by_time: Vec<&Segment> = self.segments.values().collect();
        by_time.sort_by_key(|segment| std::cmp::Reverse(segment.max_timestamp));
        for segment in by_time {
            if best
                .as_ref()
                .is_some_and(|(ts, _, _)| segment.max_timestamp <= *ts)
            {
                continue;
            }
            let mut offset = segment.base_offset.max(self.log_start_offset);
            while offset < self.high_watermark && offset < segment.next_offset {
                let bytes = segment.read(offset, 1, self.high_watermark).await?;
                if bytes.is_empty() {
                    break;
                }
                let header = batch::parse_header(&bytes)?;
                // The first batch that reaches a new largest timestamp wins
                // ties, so equal timestamps resolve to the lowest offset.
                let beats = best.as_ref().is_none_or(|(ts, _, held)| {
                    header.max_timestamp > *ts
                        || (header.max_timestamp == *ts && header.base_offset < held.base_offset)
                });
                if beats {
                    best = Some((header.max_timestamp, bytes.clone(), header));
                }
                offset = header.next_offset();
            }
        }
        Ok(best
            .map(|(timestamp, bytes, header)| first_record_at_or_after(&bytes, &header, timestamp)))
    }

    /// Deletes whole segments past `log.retention.ms` or `log.retention.bytes`
    /// and advances the log start offset. Returns how many were deleted. The
    /// active segment is rolled first if it alone has expired. This is the
    /// "delete" cleanup policy; a log that is only compacted keeps every
    /// segment (the cleaner, [`cleaner`], bounds it instead).
    pub async fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if !self.config.cleanup_policy.delete {
            return Ok(0);
        }
        let expired = |segment: &Segment, retention_ms: i64| {
            retention_ms >= 0
                && !segment.is_empty()
                && now_ms.saturating_sub(segment.max_timestamp.max(segment.created_ms))
                    > retention_ms
        };
        if expired(self.active(), self.config.retention_ms)
            && self.high_watermark == self.log_end_offset
        {
            self.roll(now_ms).await?;
        }
        let mut total_bytes = self.size_bytes() as i64;
        let mut doomed = Vec::new();
        for (base, segment) in &self.segments {
            let is_active = *base == *self.segments.keys().next_back().expect("non-empty");
            // Never delete what consumers have not been allowed to see.
            if is_active || segment.next_offset > self.high_watermark {
                break;
            }
            let over_size = self.config.retention_bytes >= 0
                && total_bytes - segment.size_bytes() as i64 >= self.config.retention_bytes;
            if expired(segment, self.config.retention_ms) || over_size {
                total_bytes -= segment.size_bytes() as i64;
                doomed.push(*base);
            } else {
                break;
            }
        }
        for base in &doomed {
            let segment = self.segments.remove(base).expect("doomed segment exists");
            tracing::info!(dir = %self.dir.display(), segment = base, "retention deleted segment");
            segment.delete(self.storage.as_ref()).await?;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir(&self.dir).await?;
            // A start DeleteRecords put inside the first remaining segment
            // stays where it is.
            let first_base = *self.segments.keys().next().expect("active segment remains");
            self.log_start_offset = self.log_start_offset.max(first_base);
            self.epochs.truncate_from_start(self.log_start_offset);
        }
        self.check_invariants();
        Ok(doomed.len())
    }

    /// DeleteRecords: moves the log start offset up to `offset`, durably (a
    /// checkpoint file, written atomically, that recovery reads), and
    /// deletes the segments wholly below it. Records below the start are
    /// never served again. Returns whether the start moved. The caller
    /// keeps `offset` at or below what may be exposed (the high watermark
    /// on a leader, the log end on a follower).
    pub async fn advance_log_start(&mut self, offset: i64) -> Result<bool, LogError> {
        if offset <= self.log_start_offset {
            return Ok(false);
        }
        assert!(
            offset <= self.log_end_offset,
            "log start {offset} past the log end {}",
            self.log_end_offset
        );
        write_log_start(self.storage.as_ref(), &self.dir, offset).await?;
        let active_base = *self.segments.keys().next_back().expect("non-empty");
        let doomed: Vec<i64> = self
            .segments
            .iter()
            .filter(|(base, segment)| **base != active_base && segment.next_offset <= offset)
            .map(|(base, _)| *base)
            .collect();
        for base in &doomed {
            let segment = self.segments.remove(base).expect("doomed segment exists");
            segment.delete(self.storage.as_ref()).await?;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir(&self.dir).await?;
        }
        self.log_start_offset = offset;
        self.high_watermark = self.high_watermark.max(offset);
        self.epochs.truncate_from_start(offset);
        self.check_invariants();
        Ok(true)
    }

    /// Removes every offset at or past `offset` (for replication, and tests).
    pub async fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        let offset = offset.max(self.log_start_offset);
        let doomed: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for base in doomed {
            if base == self.log_start_offset {
                continue;
            }
            let segment = self.segments.remove(&base).expect("segment exists");
            segment.delete(self.storage.as_ref()).await?;
        }
        let index_interval_bytes = self.config.index_interval_bytes;
        let active = self.active_mut();
        active.truncate_to(offset, index_interval_bytes).await?;
        active.sync_all().await?;
        self.storage.sync_dir(&self.dir).await?;
        self.log_end_offset = self.active().next_offset;
        // A log start inside a batch (DeleteRecords) and a cut at that
        // batch's boundary leave nothing at or past the start: the log is
        // empty and starts where it now ends.
        self.log_start_offset = self.log_start_offset.min(self.log_end_offset);
        self.durable_offset = self.durable_offset.min(self.log_end_offset);
        self.high_watermark = self.high_watermark.min(self.log_end_offset);
        self.producers.truncate_to(self.log_end_offset);
        self.epochs.truncate_from_end(self.log_end_offset);
        self.first_dirty_offset = self.first_dirty_offset.min(self.log_end_offset);
        tracing::warn!(dir = %self.dir.display(), log_end_offset = self.log_end_offset, "log truncated");
        self.check_invariants();
        Ok(())
    }

    /// Empties the log and starts it over at `offset`: a follower whose
    /// position fell below the leader's log start holds nothing the leader
    /// still has, so it begins where the leader's log does. The old segments
    /// go first, then the new one is made, each step synced: a crash in
    /// between leaves an empty log, which the follower resets again.
    pub async fn truncate_fully_and_start_at(
        &mut self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        assert!(offset >= 0, "a log cannot start at {offset}");
        // A DeleteRecords checkpoint from before would otherwise hold the
        // start above `offset` after a restart.
        if let Err(error) = self.storage.remove(&self.dir.join(LOG_START_FILE)).await {
            if error.kind() != io::ErrorKind::NotFound {
                return Err(error.into());
            }
        }
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete(self.storage.as_ref()).await?;
        }
        self.storage.sync_dir(&self.dir).await?;
        let segment = Segment::open(self.storage.as_ref(), &self.dir, offset, now_ms).await?;
        self.storage.sync_dir(&self.dir).await?;
        self.segments.insert(offset, segment);
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.durable_offset = offset;
        self.high_watermark = offset;
        self.producers = ProducerStateManager::default();
        self.epochs = leader_epochs::LeaderEpochCache::default();
        self.first_dirty_offset = offset;
        tracing::warn!(dir = %self.dir.display(), log_start_offset = offset, "log emptied to start at the leader's log start");
        self.check_invariants();
        Ok(())
    }

    /// Deletes every file of this log and its directory.
    pub async fn delete(mut self) -> Result<(), LogError> {
        let segments = std::mem::take(&mut self.segments);
        for (_, segment) in segments {
            segment.delete(self.storage.as_ref()).await?;
        }
        for name in self.storage.list(&self.dir).await? {
            self.storage.remove(&self.dir.join(name)).await?;
        }
        self.storage.remove_dir(&self.dir).await?;
        if let Some(parent) = self.dir.parent() {
            self.storage.sync_dir(parent).await?;
        }
        Ok(())
    }
}

/// Finds the first record with a timestamp at or after `timestamp` inside one
/// batch. Falls back to the batch's base offset when its records cannot be
/// decoded here (a codec this build leaves out).
fn first_record_at_or_after(bytes: &Bytes, header: &BatchHeader, timestamp: i64) -> (i64, i64) {
    let mut buf = bytes.slice(..header.size_bytes);
    match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|record| record.timestamp >= timestamp)
            .map_or((header.base_offset, header.max_timestamp), |record| {
                (record.offset, record.timestamp)
            }),
        Err(_) => (header.base_offset, header.max_timestamp),
    }
}
