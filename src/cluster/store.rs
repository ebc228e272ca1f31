//! Where the metadata quorum keeps what must survive a crash: the metadata
//! log `__cluster_metadata-0` (RecordBatch v2 batches in an ordinary
//! partition log, each batch stamped with the quorum epoch of its entries)
//! and the `quorum-state` file (epoch, vote and leader).
//!
//! The order is the core's: [`QuorumStore::persist`] writes the election
//! state, truncates, appends and fsyncs, all before the shell sends anything
//! that depends on them.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

use crate::log::batch::{encode_uncompressed, KeyValue};
use crate::log::{LogConfig, PartitionLog};
use crate::quorum::{ElectionState, Entry, NodeId, Ready};
use crate::storage::SharedStorage;

/// The metadata log's directory name, as in Kafka.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// The metadata log's topic name on the wire (the quorum's Vote,
/// BeginQuorumEpoch and Fetch name it).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

const QUORUM_STATE_FILE: &str = "quorum-state";

/// How much of the metadata log one read brings back on recovery.
const RECOVERY_READ_BYTES: usize = 1 << 20;

/// Entries one appended batch carries at most.
const BATCH_ENTRIES_MAX: usize = 64;

pub struct QuorumStore {
    storage: SharedStorage,
    dir: PathBuf,
    log: PartitionLog,
}

/// What the quorum recovered from disk.
pub struct Recovered {
    pub state: ElectionState,
    pub entries: Vec<Entry>,
}

impl QuorumStore {
    /// Opens (or creates) the metadata log under `log_dirs` and reads the
    /// election state and every entry back.
    pub async fn open(
        storage: SharedStorage,
        log_dirs: &Path,
        log_config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<(QuorumStore, Recovered)> {
        let config = LogConfig {
            // The quorum fsyncs every append itself before counting it.
            flush_on_ack: false,
            flush_messages: u64::MAX,
            retention_ms: -1,
            retention_bytes: -1,
            // Whatever `log.cleanup.policy` says for topics: the metadata
            // log keeps every entry (its records carry no keys) and is
            // never cleaned.
            cleanup_policy: crate::log::CleanupPolicy::DELETE,
            ..log_config.clone()
        };
        let log_dir = log_dirs.join(METADATA_LOG_DIR);
        let log = PartitionLog::open(storage.clone(), &log_dir, config, now_ms)
            .await
            .map_err(|error| io::Error::other(format!("opening the metadata log: {error}")))?;
        let state = read_state(storage.as_ref(), log_dirs).await?;
        let entries = read_entries(&log).await?;
        let store = QuorumStore {
            storage,
            dir: log_dirs.to_path_buf(),
            log,
        };
        Ok((store, Recovered { state, entries }))
    }

    /// Makes what `ready` asks durable, in the core's order.
    pub async fn persist(&mut self, ready: &Ready, now_ms: i64) -> io::Result<()> {
        if let Some(state) = &ready.election_state {
            write_state(self.storage.as_ref(), &self.dir, state).await?;
        }
        if let Some(offset) = ready.truncate_to {
            self.log
                .truncate_to(offset as i64)
                .await
                .map_err(io::Error::other)?;
        }
        for run in runs_of_one_epoch(&ready.append) {
            let batch = encode_uncompressed(&values_of(run), now_ms, -1, -1, -1);
            self.log
                .append(batch, run[0].epoch, now_ms)
                .await
                .map_err(io::Error::other)?;
        }
        if !ready.append.is_empty() {
            self.log.flush().await.map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// Splits entries into runs that share an epoch, at most
/// [`BATCH_ENTRIES_MAX`] long: one batch each.
fn runs_of_one_epoch(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for end in 1..=entries.len() {
        if end == entries.len()
            || entries[end].epoch != entries[start].epoch
            || end - start == BATCH_ENTRIES_MAX
        {
            runs.push(&entries[start..end]);
            start = end;
        }
    }
    runs
}

/// The records of one batch: each entry's payload as a value, without key.
fn values_of(run: &[Entry]) -> Vec<KeyValue<'_>> {
    run.iter()
        .map(|entry| (None, Some(entry.payload.as_ref())))
        .collect()
}

/// Encodes entries as batches for a Fetch response: the same form as on
/// disk, with offsets from `base_offset`.
pub fn encode_entries(entries: &[Entry], base_offset: u64) -> Bytes {
    let mut out = BytesMut::new();
    let mut offset = base_offset as i64;
    for run in runs_of_one_epoch(entries) {
        let mut batch = encode_uncompressed(&values_of(run), 0, -1, -1, -1);
        crate::log::batch::assign_offset_and_epoch(&mut batch, offset, run[0].epoch);
        offset += run.len() as i64;
        out.extend_from_slice(&batch);
    }
    out.freeze()
}

/// Decodes batches from a Fetch response back into entries; `None` if they
/// do not decode, do not start at `base_offset` or have gaps.
pub fn decode_entries(mut bytes: Bytes, base_offset: u64) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut next = base_offset as i64;
    if bytes.is_empty() {
        return Some(entries);
    }
    for set in RecordBatchDecoder::decode_all(&mut bytes).ok()? {
        for record in set.records {
            if record.offset != next {
                return None;
            }
            next += 1;
            entries.push(Entry {
                epoch: record.partition_leader_epoch,
                payload: record.value.unwrap_or_default(),
            });
        }
    }
    Some(entries)
}

async fn read_entries(log: &PartitionLog) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let end = log.log_end_offset();
    while (entries.len() as i64) < end {
        let offset = entries.len() as i64;
        let bytes = log
            .read(offset, RECOVERY_READ_BYTES, end)
            .await
            .map_err(io::Error::other)?;
        if bytes.is_empty() {
            break;
        }
        let decoded = decode_entries(bytes, offset as u64).ok_or_else(|| {
            io::Error::other(format!(
                "the metadata log does not decode at offset {offset}"
            ))
        })?;
        if decoded.is_empty() {
            break;
        }
        entries.extend(decoded);
    }
    Ok(entries)
}

fn parse_id(text: &str) -> Option<Option<NodeId>> {
    let id: NodeId = text.parse().ok()?;
    Some((id >= 0).then_some(id))
}

async fn read_state(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
) -> io::Result<ElectionState> {
    let path = dir.join(QUORUM_STATE_FILE);
    let file = storage.open(&path).await?;
    let bytes = file.read_at(0, 4096).await?;
    let mut state = ElectionState::default();
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let bad = || io::Error::other(format!("{}: bad line {line:?}", path.display()));
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        match key.trim() {
            "leaderEpoch" => state.epoch = value.trim().parse().map_err(|_| bad())?,
            "votedId" => state.voted_for = parse_id(value.trim()).ok_or_else(bad)?,
            "leaderId" => state.leader_id = parse_id(value.trim()).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(state)
}

/// Writes the election state atomically: a temporary file, synced, renamed.
async fn write_state(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
    state: &ElectionState,
) -> io::Result<()> {
    let text = format!(
        "leaderEpoch={}\nvotedId={}\nleaderId={}\n",
        state.epoch,
        state.voted_for.unwrap_or(-1),
        state.leader_id.unwrap_or(-1)
    );
    let temporary = dir.join(format!("{QUORUM_STATE_FILE}.tmp"));
    let _ = storage.remove(&temporary).await;
    let file = storage.open(&temporary).await?;
    file.append(Bytes::from(text)).await?;
    file.sync().await?;
    storage
        .rename(&temporary, &dir.join(QUORUM_STATE_FILE))
        .await?;
    storage.sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(epoch: i32, text: &str) -> Entry {
        Entry {
            epoch,
            payload: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    #[test]
    fn entries_survive_the_wire_form() {
        let entries = vec![entry(1, "a"), entry(1, "b"), entry(2, "c"), entry(4, "d")];
        let bytes = encode_entries(&entries, 7);
        assert_eq!(decode_entries(bytes.clone(), 7), Some(entries));
        assert_eq!(decode_entries(bytes, 6), None, "a gap is refused");
        assert_eq!(decode_entries(Bytes::new(), 3), Some(Vec::new()));
    }

    #[tokio::test]
    async fn state_and_entries_are_read_back_after_truncation() {
        let storage: SharedStorage = Arc::new(crate::storage::mem::MemStorage::default());
        let dir = Path::new("/data");
        storage.create_dir(dir).await.expect("dir");
        let config = LogConfig::default();
        let (mut store, recovered) = QuorumStore::open(storage.clone(), dir, &config, 0)
            .await
            .expect("open");
        assert_eq!(recovered.state, ElectionState::default());
        assert!(recovered.entries.is_empty());
        let state = ElectionState {
            epoch: 3,
            voted_for: Some(2),
            leader_id: None,
        };
        let ready = Ready {
            election_state: Some(state),
            append: vec![entry(1, "a"), entry(2, "b"), entry(3, "c")],
            ..Ready::default()
        };
        store.persist(&ready, 10).await.expect("persist");
        let ready = Ready {
            truncate_to: Some(2),
            append: vec![entry(3, "d")],
            ..Ready::default()
        };
        store.persist(&ready, 20).await.expect("persist");
        drop(store);
        let (_, recovered) = QuorumStore::open(storage, dir, &config, 30)
            .await
            .expect("reopen");
        assert_eq!(recovered.state, state);
        assert_eq!(
            recovered.entries,
            vec![entry(1, "a"), entry(2, "b"), entry(3, "d")]
        );
    }
}
