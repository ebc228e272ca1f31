//! The log cleaner: `cleanup.policy=compact`, which keeps the latest record
//! of each key.
//!
//! A pass over one log goes in three steps. Each reads or rewrites segments
//! below the high watermark without the log's lock, which it needs only to
//! plan and to install:
//! 1. [`PartitionLog::cleaning_due`]: the cleanable range is the segments
//!    wholly below the high watermark, before the active segment and older
//!    than `min.compaction.lag.ms`; a pass is due when its dirty share (the
//!    bytes not cleaned since this log was opened or last cleaned) reaches
//!    `min.cleanable.dirty.ratio`.
//! 2. [`PartitionLog::plan_map`] (under the lock) and [`MapJob::build`]
//!    (without it): the latest offset of every key in the dirty part, in a
//!    map bounded by `log.cleaner.dedupe.buffer.size`.
//!    A map that fills stops at a batch boundary; the next pass goes on
//!    from there.
//! 3. For each segment the map reaches, [`PartitionLog::plan_clean`] (under
//!    the lock), [`SegmentJob::rewrite`] (without it: the segment is below
//!    the high watermark and not active, so nothing appends to it) and
//!    [`PartitionLog::install_cleaned`] (under the lock, only if the segment
//!    is still the one that was read); [`PartitionLog::clean_segment`] does
//!    all three. A record stays if no later record of its key is mapped,
//!    and a tombstone stays until `delete.retention.ms` after its batch's
//!    largest timestamp. Offsets never change: a batch keeps its base offset
//!    and last offset delta, so a compacted log has gaps.
//!
//! Invariants:
//! - Cleaning never changes a segment's offset range. The last batch of a
//!   segment is kept even when none of its records are, as is the first
//!   batch of each leader epoch (the epoch cache is rebuilt from batch
//!   headers) and every batch the idempotent-producer state holds (so a
//!   restart rebuilds the same dedup state).
//! - A segment is replaced whole and atomically: the kept batches go to
//!   `<base>.log.cleaned`, which is fsynced, then renamed over `<base>.log`
//!   and the directory fsynced. A crash leaves the old segment or the new
//!   one, never a mix; recovery deletes a leftover `.cleaned` file. One
//!   rename suffices because a segment is cleaned into one of the same base
//!   (Kafka merges several, which needs its `.swap` step).
//! - Nothing at or above the high watermark, nor in the active segment, is
//!   read for the map or rewritten.
//! - Memory is bounded by the map, one batch (decompressed) and one 1 MiB
//!   write chunk; I/O per pass by the map's reach plus the already-clean
//!   segments before it.
//!
//! Compressed batches are read through [`super::compression`]; a batch the
//! cleaner changes is written back uncompressed (it never recompresses),
//! one it keeps whole stays as the producer wrote it.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;

use std::path::PathBuf;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::producer_state::ProducerStateManager;
use super::segment::{self, Segment};
use super::{LogError, PartitionLog};
use crate::storage::{SharedFile, SharedStorage};

/// The smallest `log.cleaner.dedupe.buffer.size` accepted: one full-size
/// batch of keys must fit.
pub const DEDUPE_BUFFER_BYTES_MIN: usize = 1 << 20;

/// What one entry of the offset map costs beyond its key's bytes: the
/// offset, the key's handle and the tree's node share, rounded up.
const MAP_ENTRY_OVERHEAD_BYTES: usize = 64;

/// Kept batches gathered before they are written to the `.cleaned` file,
/// so a segment of any size is rewritten in bounded memory.
const CLEANED_WRITE_BYTES: usize = 1 << 20;

/// The suffix of a segment being rewritten; recovery deletes any left.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// The latest offset of each key in the part of the log a pass mapped.
#[derive(Debug, Clone)]
pub struct OffsetMap {
    /// Looked up once per record per pass, so a hash map; an `IndexMap`
    /// iterates (it never is here) in insertion order, so nothing about it
    /// depends on its random hash seed but speed.
    latest: IndexMap<Bytes, i64>,
    bytes: usize,
    bytes_max: usize,
    /// One past the last offset mapped: segments that start below it are
    /// cleaned with this map.
    pub end_offset: i64,
}

impl OffsetMap {
    pub fn new(bytes_max: usize, start_offset: i64) -> Self {
        Self {
            latest: IndexMap::new(),
            bytes: 0,
            bytes_max,
            end_offset: start_offset,
        }
    }

    /// Whether the keys of a batch, `key_bytes` in all, still fit.
    fn fits(&self, key_bytes: usize, key_count: usize) -> bool {
        self.bytes + key_bytes + key_count * MAP_ENTRY_OVERHEAD_BYTES <= self.bytes_max
    }

    fn put(&mut self, key: &[u8], offset: i64) {
        match self.latest.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                self.bytes += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
                self.latest.insert(Bytes::copy_from_slice(key), offset);
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// The range a pass would clean, when one is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleaningDue {
    /// Where the dirty part starts: the map is built from here.
    pub first_dirty_offset: i64,
    /// The base of the first segment the pass may not touch.
    pub first_uncleanable_offset: i64,
    pub dirty_ratio: f64,
}

/// What cleaning one segment did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCleaned {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// When the earliest tombstone kept here may go.
    pub tombstone_expiry_ms: Option<i64>,
}

/// What a whole pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCleaned {
    pub segments: usize,
    pub keys_mapped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// When the earliest tombstone the pass kept may go.
    pub tombstone_expiry_ms: Option<i64>,
}

impl PassCleaned {
    pub fn add(&mut self, cleaned: &SegmentCleaned) {
        self.segments += 1;
        self.bytes_before += cleaned.bytes_before;
        self.bytes_after += cleaned.bytes_after;
        self.records_removed += cleaned.records_removed;
        self.tombstones_removed += cleaned.tombstones_removed;
        self.tombstone_expiry_ms = match (self.tombstone_expiry_ms, cleaned.tombstone_expiry_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One batch read back from a segment, with its records section
/// decompressed when it was compressed.
struct ReadBatch {
    position: u64,
    bytes: Bytes,
    header: BatchHeader,
}

impl ReadBatch {
    fn records_section(&self) -> Result<Bytes, LogError> {
        let section = self.bytes.slice(HEADER_LEN..self.header.size_bytes);
        let codec = self.header.compression();
        if codec == 0 {
            return Ok(section);
        }
        let compression = match codec {
            1 => kafka_protocol::records::Compression::Gzip,
            2 => kafka_protocol::records::Compression::Snappy,
            3 => kafka_protocol::records::Compression::Lz4,
            4 => kafka_protocol::records::Compression::Zstd,
            _ => return Err(batch::BatchError::Records("unknown compression codec").into()),
        };
        let mut input = section;
        super::compression::decompress(&mut input, compression).map_err(|error| {
            tracing::warn!(%error, offset = self.header.base_offset, "cleaner could not decompress a batch");
            batch::BatchError::Records("compressed records do not decompress").into()
        })
    }
}

/// Refuses a producer's batch for a compacted log when one of its records
/// has no key (Kafka's INVALID_RECORD).
pub fn check_keys(bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
    if header.is_control() {
        return Ok(());
    }
    // Every append to a compacted log (the offsets log's included) comes
    // here: an uncompressed batch's records are walked in place, and only a
    // compressed one is copied, to be decompressed.
    let decompressed;
    let records_bytes: &[u8] = if header.compression() == 0 {
        &bytes[HEADER_LEN..header.size_bytes]
    } else {
        let read = ReadBatch {
            position: 0,
            bytes: Bytes::copy_from_slice(bytes),
            header: *header,
        };
        decompressed = read.records_section()?;
        &decompressed
    };
    let records = batch::records(records_bytes, header.record_count)?;
    match records.iter().position(|record| record.key.is_none()) {
        Some(record) => Err(LogError::KeylessRecordOnCompactedTopic { record }),
        None => Ok(()),
    }
}

/// Whether a read checks the batch's CRC32C. The map pass and the rewrite
/// check it, so a corrupt batch is never trusted for a key nor given a new
/// CRC over bad bytes; the read-only decision pass in between only walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crc {
    Check,
    Skip,
}

async fn read_batch(
    file: &SharedFile,
    file_len: u64,
    position: u64,
    crc: Crc,
) -> Result<Option<ReadBatch>, LogError> {
    if position >= file_len {
        return Ok(None);
    }
    let head = file.read_at(position, HEADER_LEN).await?;
    let header = batch::parse_header_prefix(&head)?;
    let bytes = file.read_at(position, header.size_bytes).await?;
    let header = match crc {
        Crc::Check => batch::validate_stored(&bytes)?,
        Crc::Skip => batch::parse_header(&bytes)?,
    };
    Ok(Some(ReadBatch {
        position,
        bytes,
        header,
    }))
}

/// What cleaning does with one batch.
enum Kept {
    /// Every record stays: the bytes as they are (compressed or not).
    Whole,
    /// Some records go: the batch rebuilt with the rest (possibly none).
    Rewritten(Bytes),
    Dropped,
}

/// The cleaner's decision for each batch of one segment, made the same
/// way in the read-only pass and in the rewrite.
struct BatchFilter<'a> {
    map: &'a OffsetMap,
    now_ms: i64,
    delete_retention_ms: i64,
    log_start_offset: i64,
    epochs: &'a [(i32, i64)],
    producers: &'a ProducerStateManager,
    file_len: u64,
}

impl BatchFilter<'_> {
    fn apply(&self, read: &ReadBatch, cleaned: &mut SegmentCleaned) -> Result<Kept, LogError> {
        let header = read.header;
        if header.is_control() || header.last_offset() < self.log_start_offset {
            return Ok(Kept::Whole);
        }
        let section = read.records_section()?;
        let records = batch::records(&section, header.record_count)?;
        let tombstones_expire = crate::planted!(TombstoneDroppedEarly)
            || header
                .max_timestamp
                .saturating_add(self.delete_retention_ms)
                < self.now_ms;
        let mut retained: Vec<&[u8]> = Vec::with_capacity(records.len());
        for record in &records {
            let offset = header.base_offset + record.offset_delta;
            let superseded = record
                .key
                .and_then(|key| self.map.get(key))
                .is_some_and(|latest| {
                    // Planted: with the first offset mapped, every later
                    // record of the key goes, the latest among them.
                    if crate::planted!(CleanerDropsLatest) {
                        latest != offset
                    } else {
                        latest > offset
                    }
                });
            if superseded {
                cleaned.records_removed += 1;
            } else if record.tombstone && tombstones_expire && offset < self.map.end_offset {
                cleaned.records_removed += 1;
                cleaned.tombstones_removed += 1;
            } else {
                if record.tombstone {
                    let expiry_ms = header
                        .max_timestamp
                        .saturating_add(self.delete_retention_ms);
                    cleaned.tombstone_expiry_ms = Some(
                        cleaned
                            .tombstone_expiry_ms
                            .map_or(expiry_ms, |t| t.min(expiry_ms)),
                    );
                }
                retained.push(record.bytes);
            }
        }
        if retained.len() == records.len() {
            return Ok(Kept::Whole);
        }
        let last_of_segment = read.position + header.size_bytes as u64 == self.file_len;
        let keeps_header = last_of_segment
            || self
                .epochs
                .contains(&(header.partition_leader_epoch, header.base_offset))
            || (header.has_producer_id()
                && self
                    .producers
                    .holds_batch(header.producer_id, header.base_offset));
        if retained.is_empty() && !keeps_header {
            return Ok(Kept::Dropped);
        }
        Ok(Kept::Rewritten(
            batch::with_records(&read.bytes, &retained).freeze(),
        ))
    }
}

/// The dirty part of a log, planned under its lock
/// ([`PartitionLog::plan_map`]) and mapped without it.
pub struct MapJob {
    first_dirty_offset: i64,
    segments: Vec<MapSegment>,
}

struct MapSegment {
    file: SharedFile,
    file_len: u64,
    next_offset: i64,
    /// Where the first batch at or after the first dirty offset may start.
    start_position: u64,
}

impl MapJob {
    /// Maps every key of the dirty part to its latest offset, stopping at
    /// the batch that would overfill `dedupe_bytes_max` (at least one batch
    /// is mapped, so a pass always makes progress).
    pub async fn build(&self, dedupe_bytes_max: usize) -> Result<OffsetMap, LogError> {
        let first_dirty_offset = self.first_dirty_offset;
        let mut map = OffsetMap::new(dedupe_bytes_max, first_dirty_offset);
        for segment in &self.segments {
            let mut position = segment.start_position;
            while let Some(read) =
                read_batch(&segment.file, segment.file_len, position, Crc::Check).await?
            {
                position += read.header.size_bytes as u64;
                if read.header.last_offset() < first_dirty_offset {
                    continue;
                }
                if !read.header.is_control() {
                    let section = read.records_section()?;
                    let records = batch::records(&section, read.header.record_count)?;
                    let keys: Vec<(&[u8], i64)> = records
                        .iter()
                        .filter_map(|record| {
                            let offset = read.header.base_offset + record.offset_delta;
                            record.key.map(|key| (key, offset))
                        })
                        .filter(|(_, offset)| *offset >= first_dirty_offset)
                        .collect();
                    let key_bytes = keys.iter().map(|(key, _)| key.len()).sum();
                    if !map.is_empty() && !map.fits(key_bytes, keys.len()) {
                        return Ok(map);
                    }
                    for (key, offset) in keys {
                        if crate::planted!(CleanerDropsLatest) && map.get(key).is_some() {
                            // Planted: the first offset mapped for a key stays.
                            continue;
                        }
                        map.put(key, offset);
                    }
                }
                map.end_offset = read.header.next_offset();
            }
            map.end_offset = map.end_offset.max(segment.next_offset);
        }
        Ok(map)
    }
}

/// One segment's cleaning, planned under the log's lock
/// ([`PartitionLog::plan_clean`]) and carried out without it: the segment
/// is below the high watermark and not active, so nothing appends to it
/// meanwhile, and whatever removes or replaces it (retention, DeleteRecords,
/// a follower starting over) is noticed when the result is installed.
pub struct SegmentJob {
    base: i64,
    file: SharedFile,
    file_len: u64,
    next_offset: i64,
    log_start_offset: i64,
    delete_retention_ms: i64,
    /// The leader-epoch cache's entries: an epoch's first batch stays.
    epochs: Vec<(i32, i64)>,
    /// The batches kept for idempotent producers stay.
    producers: ProducerStateManager,
    storage: SharedStorage,
    dir: PathBuf,
}

/// What [`SegmentJob::rewrite`] did.
pub enum Rewritten {
    /// Nothing to drop: the segment stays as it is.
    Unchanged(SegmentCleaned),
    /// The kept batches are in `path` (`<base>.log.cleaned`), fsynced.
    Written {
        cleaned: SegmentCleaned,
        path: PathBuf,
    },
}

impl SegmentJob {
    /// Decides in a read-only pass, then, if anything goes, streams the kept
    /// batches into `<base>.log.cleaned` in chunks of
    /// [`CLEANED_WRITE_BYTES`] and fsyncs it, so memory stays bounded by one
    /// batch and one chunk whatever the segment's size.
    pub async fn rewrite(&self, map: &OffsetMap, now_ms: i64) -> Result<Rewritten, LogError> {
        let filter = BatchFilter {
            map,
            now_ms,
            delete_retention_ms: self.delete_retention_ms,
            log_start_offset: self.log_start_offset,
            epochs: &self.epochs,
            producers: &self.producers,
            file_len: self.file_len,
        };
        let mut cleaned = SegmentCleaned {
            bytes_before: self.file_len,
            bytes_after: self.file_len,
            ..SegmentCleaned::default()
        };
        let mut position = 0;
        while let Some(read) = read_batch(&self.file, self.file_len, position, Crc::Skip).await? {
            position += read.header.size_bytes as u64;
            filter.apply(&read, &mut cleaned)?;
        }
        if cleaned.records_removed == 0 {
            return Ok(Rewritten::Unchanged(cleaned));
        }
        let path = self.dir.join(format!(
            "{}.log{CLEANED_SUFFIX}",
            segment::file_stem(self.base)
        ));
        match self.storage.remove(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        let file = self.storage.open(&path).await?;
        let mut pending = BytesMut::new();
        let mut position = 0;
        let mut recount = SegmentCleaned::default();
        while let Some(read) = read_batch(&self.file, self.file_len, position, Crc::Check).await? {
            position += read.header.size_bytes as u64;
            match filter.apply(&read, &mut recount)? {
                Kept::Whole => pending.extend_from_slice(&read.bytes),
                Kept::Rewritten(bytes) => pending.extend_from_slice(&bytes),
                Kept::Dropped => {}
            }
            if pending.len() >= CLEANED_WRITE_BYTES {
                file.append(pending.split().freeze()).await?;
            }
        }
        assert_eq!(
            (recount.records_removed, recount.tombstones_removed),
            (cleaned.records_removed, cleaned.tombstones_removed),
            "the rewrite of segment {} drops what the first pass decided",
            self.base
        );
        if !pending.is_empty() {
            file.append(pending.freeze()).await?;
        }
        file.sync().await?;
        Ok(Rewritten::Written { cleaned, path })
    }
}

impl PartitionLog {
    /// Whether a cleaning pass is due now, and over what range. `None`
    /// unless the log is compacted and its dirty share of the cleanable
    /// bytes reaches `min.cleanable.dirty.ratio`.
    pub fn cleaning_due(&self, now_ms: i64) -> Option<CleaningDue> {
        if !self.config.cleanup_policy.compact {
            return None;
        }
        let active_base = *self
            .segments
            .keys()
            .next_back()
            .expect("a log has a segment");
        let lag_ms = self.config.min_compaction_lag_ms;
        let mut first_uncleanable_offset = active_base;
        for (base, segment) in &self.segments {
            let too_young = lag_ms > 0 && segment.max_timestamp > now_ms.saturating_sub(lag_ms);
            if *base == active_base || segment.next_offset > self.high_watermark || too_young {
                first_uncleanable_offset = *base;
                break;
            }
        }
        let first_dirty_offset = self.first_dirty_offset.max(self.log_start_offset);
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        for segment in self
            .segments
            .range(..first_uncleanable_offset)
            .map(|(_, s)| s)
        {
            if segment.next_offset <= first_dirty_offset {
                clean_bytes += segment.size_bytes();
            } else {
                dirty_bytes += segment.size_bytes();
            }
        }
        // A kept tombstone whose time has come makes the clean part due too
        // (KIP-534), or it would stay until new records arrive.
        let tombstone_due = self
            .tombstone_expiry_ms
            .is_some_and(|expiry_ms| expiry_ms < now_ms);
        if dirty_bytes == 0 && !tombstone_due {
            return None;
        }
        let dirty_ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes).max(1) as f64;
        let ratio_due = dirty_bytes > 0 && dirty_ratio >= self.config.min_cleanable_dirty_ratio;
        (ratio_due || tombstone_due).then_some(CleaningDue {
            first_dirty_offset,
            first_uncleanable_offset,
            dirty_ratio,
        })
    }

    /// Maps every key in `[due.first_dirty_offset,
    /// due.first_uncleanable_offset)` to its latest offset: [`Self::plan_map`]
    /// and [`MapJob::build`] in one go.
    pub async fn build_offset_map(
        &self,
        due: &CleaningDue,
        dedupe_bytes_max: usize,
    ) -> Result<OffsetMap, LogError> {
        self.plan_map(due).build(dedupe_bytes_max).await
    }

    /// What building the map for `due` reads, taken while the log is held:
    /// the file, length and start position of each segment of the dirty
    /// part. Those segments are below the high watermark and not active, so
    /// nothing appends to them while [`MapJob::build`] reads them without
    /// the lock.
    pub fn plan_map(&self, due: &CleaningDue) -> MapJob {
        let first = self
            .segments
            .range(..=due.first_dirty_offset)
            .next_back()
            .map_or(due.first_dirty_offset, |(base, _)| *base);
        let segments = self
            .segments
            .range(first..due.first_uncleanable_offset)
            .map(|(_, segment)| MapSegment {
                file: segment.log.clone(),
                file_len: segment.log.len(),
                next_offset: segment.next_offset,
                start_position: segment.lookup_position(due.first_dirty_offset),
            })
            .collect();
        MapJob {
            first_dirty_offset: due.first_dirty_offset,
            segments,
        }
    }

    /// The bases of the segments a pass with `map` cleans: every segment
    /// from the log start that begins below the map's end and is still
    /// cleanable (not active, wholly below the high watermark).
    pub fn segments_to_clean(&self, map: &OffsetMap) -> Vec<i64> {
        let active_base = *self
            .segments
            .keys()
            .next_back()
            .expect("a log has a segment");
        self.segments
            .range(..map.end_offset)
            .filter(|(base, segment)| {
                **base != active_base && segment.next_offset <= self.high_watermark
            })
            .map(|(base, _)| *base)
            .collect()
    }

    /// Rewrites the segment at `base` without the records `map` supersedes
    /// and the tombstones past `delete.retention.ms`, and swaps it in
    /// atomically: [`PartitionLog::plan_clean`], [`SegmentJob::rewrite`],
    /// [`PartitionLog::install_cleaned`] in one go. Returns `None` when the
    /// segment is gone or no longer cleanable. The broker runs the three
    /// steps itself, so the log's lock is free while the segment is
    /// rewritten.
    pub async fn clean_segment(
        &mut self,
        base: i64,
        map: &OffsetMap,
        now_ms: i64,
    ) -> Result<Option<SegmentCleaned>, LogError> {
        let Some(job) = self.plan_clean(base) else {
            return Ok(None);
        };
        let rewritten = job.rewrite(map, now_ms).await?;
        self.install_cleaned(&job, rewritten).await
    }

    /// What cleaning the segment at `base` needs, taken while the log is
    /// held: its file and length, the log start, and copies of the epoch
    /// starts and producer state that decide which emptied batches stay.
    /// `None` when the segment is gone, active, or not wholly below the
    /// high watermark.
    pub fn plan_clean(&self, base: i64) -> Option<SegmentJob> {
        let active_base = *self
            .segments
            .keys()
            .next_back()
            .expect("a log has a segment");
        let segment = self.segments.get(&base)?;
        if base == active_base || segment.next_offset > self.high_watermark {
            return None;
        }
        Some(SegmentJob {
            base,
            file: segment.log.clone(),
            file_len: segment.log.len(),
            next_offset: segment.next_offset,
            log_start_offset: self.log_start_offset,
            delete_retention_ms: self.config.delete_retention_ms,
            epochs: self.epochs.entries().to_vec(),
            producers: self.producers.clone(),
            storage: self.storage.clone(),
            dir: self.dir.clone(),
        })
    }

    /// Swaps in what [`SegmentJob::rewrite`] wrote, if the segment is still
    /// the one it read (same base, same length, still cleanable): the
    /// fsynced `.cleaned` file is renamed over the segment, the directory
    /// fsynced and the segment reopened. Otherwise the written file is
    /// discarded and the answer is `None`.
    pub async fn install_cleaned(
        &mut self,
        job: &SegmentJob,
        rewritten: Rewritten,
    ) -> Result<Option<SegmentCleaned>, LogError> {
        let (mut cleaned, cleaned_path) = match rewritten {
            Rewritten::Unchanged(cleaned) => return Ok(Some(cleaned)),
            Rewritten::Written { cleaned, path } => (cleaned, path),
        };
        let still_there = self
            .plan_clean(job.base)
            .is_some_and(|now| now.file_len == job.file_len && now.next_offset == job.next_offset);
        if !still_there {
            match self.storage.remove(&cleaned_path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
            return Ok(None);
        }
        let log_path = self
            .dir
            .join(format!("{}.log", segment::file_stem(job.base)));
        self.storage.rename(&cleaned_path, &log_path).await?;
        self.storage.sync_dir(&self.dir).await?;
        let old = self
            .segments
            .remove(&job.base)
            .expect("segment being cleaned");
        let mut reopened =
            Segment::open(self.storage.as_ref(), &self.dir, job.base, old.created_ms).await?;
        drop(old);
        // Every batch was just checked or built with a fresh CRC.
        reopened
            .recover(false, self.config.index_interval_bytes)
            .await?;
        reopened.sync_all().await?;
        cleaned.bytes_after = reopened.size_bytes();
        assert_eq!(
            reopened.next_offset, job.next_offset,
            "cleaning changed the offset range of segment {}",
            job.base
        );
        self.segments.insert(job.base, reopened);
        Ok(Some(cleaned))
    }

    /// Records that a pass with `map` cleaned every segment it was to
    /// clean: its range is clean. A pass that had to skip a segment (no
    /// longer cleanable) leaves the range dirty, so a tombstone it mapped is
    /// never dropped while an older record of its key may remain.
    pub fn finish_cleaning(&mut self, map: &OffsetMap, pass: &PassCleaned) {
        self.first_dirty_offset = self.first_dirty_offset.max(map.end_offset);
        self.tombstone_expiry_ms = pass.tombstone_expiry_ms;
    }

    /// One whole pass, when one is due: the map, then every segment it
    /// reaches. The broker runs the steps itself, releasing the log
    /// between them; tests and tools call this.
    pub async fn clean(
        &mut self,
        now_ms: i64,
        dedupe_bytes_max: usize,
    ) -> Result<Option<PassCleaned>, LogError> {
        let Some(due) = self.cleaning_due(now_ms) else {
            return Ok(None);
        };
        let map = self.build_offset_map(&due, dedupe_bytes_max).await?;
        let mut pass = PassCleaned::default();
        let mut complete = true;
        for base in self.segments_to_clean(&map) {
            match self.clean_segment(base, &map, now_ms).await? {
                Some(cleaned) => pass.add(&cleaned),
                None => complete = false,
            }
        }
        if complete {
            self.finish_cleaning(&map, &pass);
        }
        pass.keys_mapped = map.len();
        Ok(Some(pass))
    }
}
