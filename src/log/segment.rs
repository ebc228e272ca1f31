//! One segment: `<20-digit base offset>.log` with its sparse offset index
//! (`.index`: relative offset u32 + file position u32, one entry every
//! `log.index.interval.bytes`) and time index (`.timeindex`: timestamp i64 +
//! relative offset u32).
//!
//! The in-memory copies of both indexes are authoritative while running, and
//! recovery rebuilds them from the log on every start, so the index files are
//! a record for people and tools, never read back. New entries are therefore
//! written in bulk: when [`INDEX_PENDING_BYTES_MAX`] of them have gathered,
//! and whenever the segment is synced (on flush of a roll, and at open).
//! Writing them with every append cost two system calls per batch.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_LEN};
use crate::storage::{SharedFile, Storage};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Index bytes gathered in memory before they are written: one page, about
/// 340 offset or time entries, so the cost is one write per few hundred
/// batches and the memory per segment stays bounded.
pub const INDEX_PENDING_BYTES_MAX: usize = 4096;

pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub struct Segment {
    pub base_offset: i64,
    pub log: SharedFile,
    index: SharedFile,
    time_index: SharedFile,
    offset_entries: Vec<(u32, u32)>,
    time_entries: Vec<(i64, u32)>,
    /// Offset-index entries not yet written to `index`.
    pending_offset_bytes: BytesMut,
    /// Time-index entries not yet written to `time_index`.
    pending_time_bytes: BytesMut,
    /// One past the last offset stored here (= base offset when empty).
    pub next_offset: i64,
    /// Largest record timestamp stored here, -1 when none.
    pub max_timestamp: i64,
    /// When the segment was created, for `log.roll.ms`.
    pub created_ms: i64,
    bytes_since_index_entry: u64,
    dir: PathBuf,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> [PathBuf; 3] {
        let stem = file_stem(base_offset);
        [
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        ]
    }

    /// Opens (or creates) the three files of a segment. Indexes start empty;
    /// call [`Segment::load_indexes`] or [`Segment::recover`].
    pub async fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
        created_ms: i64,
    ) -> io::Result<Self> {
        let [log, index, time_index] = Self::paths(dir, base_offset);
        Ok(Self {
            base_offset,
            log: storage.open(&log).await?,
            index: storage.open(&index).await?,
            time_index: storage.open(&time_index).await?,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            pending_offset_bytes: BytesMut::new(),
            pending_time_bytes: BytesMut::new(),
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms,
            bytes_since_index_entry: 0,
            dir: dir.to_path_buf(),
        })
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.len() == 0
    }

    fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&relative),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        relative as u32
    }

    /// Appends already-validated batches whose offsets are assigned. Returns
    /// the file position they start at.
    pub async fn append(
        &mut self,
        bytes: Bytes,
        headers: &[(usize, BatchHeader)],
        index_interval_bytes: u64,
    ) -> io::Result<u64> {
        let start = self.log.append(bytes).await?;
        for (position_in_payload, header) in headers {
            let position = start + *position_in_payload as u64;
            self.index_batch(position, header, index_interval_bytes);
            self.next_offset = header.next_offset();
        }
        self.write_index_entries_if_due().await?;
        Ok(start)
    }

    /// Adds index entries for one batch at `position`, if it is due one.
    fn index_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u64) {
        if self.offset_entries.is_empty() || self.bytes_since_index_entry >= index_interval_bytes {
            let relative = self.relative(header.base_offset);
            let position = u32::try_from(position).expect("segment larger than 4 GiB");
            self.offset_entries.push((relative, position));
            self.pending_offset_bytes.put_u32(relative);
            self.pending_offset_bytes.put_u32(position);
            self.bytes_since_index_entry = 0;
            let newest_indexed_time = self.time_entries.last().map_or(-1, |e| e.0);
            let batch_time = header.max_timestamp.max(self.max_timestamp);
            if batch_time > newest_indexed_time {
                let relative = self.relative(header.last_offset());
                self.time_entries.push((batch_time, relative));
                self.pending_time_bytes.put_i64(batch_time);
                self.pending_time_bytes.put_u32(relative);
            }
        }
        self.bytes_since_index_entry += header.size_bytes as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Writes the queued index entries out once enough have gathered.
    async fn write_index_entries_if_due(&mut self) -> io::Result<()> {
        debug_assert_eq!(self.pending_offset_bytes.len() % OFFSET_ENTRY_BYTES, 0);
        debug_assert_eq!(self.pending_time_bytes.len() % TIME_ENTRY_BYTES, 0);
        if self.pending_offset_bytes.len() + self.pending_time_bytes.len()
            >= INDEX_PENDING_BYTES_MAX
        {
            self.write_pending_index_entries().await?;
        }
        Ok(())
    }

    /// Writes every queued index entry to the index files.
    async fn write_pending_index_entries(&mut self) -> io::Result<()> {
        if !self.pending_offset_bytes.is_empty() {
            let bytes = self.pending_offset_bytes.split().freeze();
            self.index.append(bytes).await?;
        }
        if !self.pending_time_bytes.is_empty() {
            let bytes = self.pending_time_bytes.split().freeze();
            self.time_index.append(bytes).await?;
        }
        Ok(())
    }

    /// The file position of the batch containing `offset`, or of a batch
    /// before it: the largest indexed offset not above `offset`.
    pub fn lookup_position(&self, offset: i64) -> u64 {
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let at = self.offset_entries.partition_point(|e| e.0 <= relative);
        if crate::planted!(SegmentRollLosesIndex)
            && self.base_offset > 0
            && at < self.offset_entries.len()
        {
            // Planted: in a rolled segment, round up to the next entry.
            return u64::from(self.offset_entries[at].1);
        }
        if at == 0 {
            0
        } else {
            u64::from(self.offset_entries[at - 1].1)
        }
    }

    /// The first offset whose batch's max timestamp is at least `timestamp`,
    /// as a lower bound to scan from.
    pub fn lookup_timestamp(&self, timestamp: i64) -> i64 {
        let at = self.time_entries.partition_point(|e| e.0 < timestamp);
        if at == 0 {
            self.base_offset
        } else {
            self.base_offset + i64::from(self.time_entries[at - 1].1)
        }
    }

    /// Reads whole batches from the one containing `offset`, stopping before a
    /// batch at or past `max_offset` and after `max_bytes` (but always
    /// returning at least one batch if any is below `max_offset`).
    pub async fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> io::Result<Bytes> {
        // Batches before the target are walked by header only; the index keeps
        // that walk under `log.index.interval.bytes` plus one batch.
        let mut position = self.lookup_position(offset);
        let file_len = self.log.len();
        loop {
            if position >= file_len {
                return Ok(Bytes::new());
            }
            let head = self.log.read_at(position, HEADER_LEN).await?;
            let Ok(header) = batch::parse_header_prefix(&head) else {
                return Err(io::Error::other(format!(
                    "unreadable batch header at position {position} of segment {}",
                    self.base_offset
                )));
            };
            if header.base_offset >= max_offset {
                return Ok(Bytes::new());
            }
            if header.last_offset() >= offset {
                break;
            }
            position += header.size_bytes as u64;
        }
        let chunk_len = max_bytes.max(HEADER_LEN);
        let chunk = self.log.read_at(position, chunk_len).await?;
        let mut end = 0;
        while let Some((base_offset, size)) = batch::peek_offset_and_size(&chunk[end..]) {
            if base_offset >= max_offset || (end > 0 && end + size > chunk.len()) {
                break;
            }
            if end + size > chunk.len() {
                // The first batch is larger than max_bytes: return it whole.
                return self.log.read_at(position, size).await;
            }
            end += size;
        }
        Ok(chunk.slice(..end))
    }

    /// Walks the segment, validating every batch (when `validate_crc`) or only
    /// the header framing. Truncates at the first bad batch, rebuilds both
    /// indexes, and returns the headers of all good batches and the bytes cut.
    pub async fn recover(
        &mut self,
        validate_crc: bool,
        index_interval_bytes: u64,
    ) -> io::Result<(Vec<BatchHeader>, u64)> {
        let file_len = self.log.len();
        let mut headers = Vec::new();
        let mut position = 0u64;
        let mut next_offset = self.base_offset;
        while position < file_len {
            let head = self.log.read_at(position, HEADER_LEN).await?;
            let Ok(header) = batch::parse_header_prefix(&head) else {
                break;
            };
            if crate::planted!(RecoveryKeepsTornTail)
                && validate_crc
                && header.base_offset >= next_offset
            {
                // Planted: trust the header, keep whatever bytes the batch
                // has, and carry on after it.
                headers.push(header);
                next_offset = header.next_offset();
                position = (position + header.size_bytes as u64).min(file_len);
                continue;
            }
            if position + header.size_bytes as u64 > file_len || header.base_offset < next_offset {
                break;
            }
            if validate_crc {
                let whole = self.log.read_at(position, header.size_bytes).await?;
                if batch::validate_stored(&whole).is_err() {
                    break;
                }
            }
            headers.push(header);
            next_offset = header.next_offset();
            position += header.size_bytes as u64;
        }
        let cut_bytes = file_len - position;
        if cut_bytes > 0 {
            self.log.truncate(position).await?;
            self.log.sync().await?;
        }
        self.rebuild_indexes(&headers, index_interval_bytes).await?;
        self.next_offset = next_offset;
        Ok((headers, cut_bytes))
    }

    async fn rebuild_indexes(
        &mut self,
        headers: &[BatchHeader],
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        self.offset_entries.clear();
        self.time_entries.clear();
        self.pending_offset_bytes.clear();
        self.pending_time_bytes.clear();
        self.max_timestamp = -1;
        self.bytes_since_index_entry = 0;
        self.index.truncate(0).await?;
        self.time_index.truncate(0).await?;
        let mut position = 0usize;
        let mut placed = Vec::with_capacity(headers.len());
        for header in headers {
            placed.push((position, *header));
            position += header.size_bytes;
        }
        // The same index logic as at append time, without rewriting the log.
        for (position, header) in &placed {
            self.index_batch(*position as u64, header, index_interval_bytes);
        }
        self.write_pending_index_entries().await
    }

    /// Cuts every batch that holds an offset at or past `offset`, so the
    /// segment ends on a batch boundary at or below it.
    pub async fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> io::Result<()> {
        let (headers, _) = self.recover(false, index_interval_bytes).await?;
        let mut position = 0u64;
        let mut kept = Vec::new();
        for header in headers {
            if header.last_offset() >= offset {
                break;
            }
            position += header.size_bytes as u64;
            kept.push(header);
        }
        self.log.truncate(position).await?;
        self.rebuild_indexes(&kept, index_interval_bytes).await?;
        self.next_offset = kept.last().map_or(self.base_offset, |h| h.next_offset());
        Ok(())
    }

    /// Writes the queued index entries, then syncs the log and both indexes.
    pub async fn sync_all(&mut self) -> io::Result<()> {
        self.write_pending_index_entries().await?;
        self.log.sync().await?;
        self.index.sync().await?;
        self.time_index.sync().await
    }

    pub async fn delete(self, storage: &dyn Storage) -> io::Result<()> {
        for path in Self::paths(&self.dir, self.base_offset) {
            match storage.remove(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
