//! Idempotent-producer state (KIP-98) for one partition: per producer id, the
//! epoch and the metadata of its last five batches, so a retried batch gets its
//! original offsets back and a sequence gap is refused.
//!
//! The state is a pure function of the batches in the log, so recovery
//! rebuilds it by replaying batch headers.

use std::collections::{BTreeMap, VecDeque};

use super::batch::BatchHeader;

/// Kafka keeps the last five batches per producer; it is also the largest
/// allowed `max.in.flight.requests.per.connection` with idempotence.
pub const CACHED_BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

/// What the sequence check decided about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next expected sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets.
    Duplicate(BatchMetadata),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("out of order sequence: expected {expected}, got {received}")]
    OutOfOrder { expected: i32, received: i32 },
    #[error("duplicate of a batch older than the cached window")]
    DuplicateOutsideWindow,
    #[error("producer epoch {received} is older than the current {current}")]
    StaleEpoch { current: i16, received: i16 },
}

#[derive(Debug, Clone, Default)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

fn next_sequence(last_sequence: i32) -> i32 {
    if last_sequence == i32::MAX {
        0
    } else {
        last_sequence + 1
    }
}

impl ProducerStateManager {
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let received = header.base_sequence;
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if received == 0 || crate::planted!(SequenceGapAccepted) {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    received,
                })
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                current: entry.epoch,
                received: header.producer_epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return if received == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    received,
                })
            };
        }
        if let Some(cached) = entry.batches.iter().find(|cached| {
            cached.first_sequence == received && cached.last_sequence == header.last_sequence()
        }) {
            return Ok(SequenceCheck::Duplicate(*cached));
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |last| next_sequence(last.last_sequence));
        if received == expected {
            return Ok(SequenceCheck::Append);
        }
        if received > expected && crate::planted!(SequenceGapAccepted) {
            return Ok(SequenceCheck::Append);
        }
        let oldest_cached = entry.batches.front().map_or(0, |b| b.first_sequence);
        if received < oldest_cached && expected > oldest_cached {
            return Err(SequenceError::DuplicateOutsideWindow);
        }
        Err(SequenceError::OutOfOrder { expected, received })
    }

    /// Checks the batches of one produce payload in order, as if each were
    /// appended before the next is checked: the original offsets of the
    /// first retried batch, if any (then nothing is appended), or `None` if
    /// all may be appended. Nothing is recorded; the caller records the
    /// batches once they are in the log.
    pub fn check_payload(
        &self,
        headers: &[&BatchHeader],
    ) -> Result<Option<BatchMetadata>, SequenceError> {
        // One batch per payload is the common case (a producer sends one
        // batch per partition per request): check it against the state as
        // it is. Several need a scratch copy, of their producers only.
        if let [header] = headers {
            return match self.check(header)? {
                SequenceCheck::Duplicate(_) if crate::planted!(NoIdempotentDedup) => Ok(None),
                SequenceCheck::Duplicate(original) => Ok(Some(original)),
                SequenceCheck::Append => Ok(None),
            };
        }
        let mut scratch = ProducerStateManager {
            producers: headers
                .iter()
                .filter_map(|header| {
                    self.producers
                        .get(&header.producer_id)
                        .map(|entry| (header.producer_id, entry.clone()))
                })
                .collect(),
        };
        let mut duplicate = None;
        for header in headers {
            match scratch.check(header)? {
                SequenceCheck::Append => scratch.record(header),
                SequenceCheck::Duplicate(_) if crate::planted!(NoIdempotentDedup) => {
                    scratch.record(header)
                }
                SequenceCheck::Duplicate(original) => {
                    // The answer spans the retried batches: from the first's
                    // first offset to the last's last.
                    let spanned = duplicate.get_or_insert(original);
                    spanned.last_sequence = original.last_sequence;
                    spanned.last_offset = original.last_offset;
                }
            }
        }
        Ok(duplicate)
    }

    /// Records a batch that is now in the log, with its assigned offsets.
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while entry.batches.len() > CACHED_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Forgets batches at or past `offset` (log truncation).
    pub fn truncate_to(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|batch| batch.last_offset < offset);
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty());
    }

    /// Whether the batch of `producer_id` starting at `first_offset` is one
    /// of the batches kept for its producer: the log cleaner keeps such a
    /// batch (empty if need be), so recovery rebuilds the same state.
    pub fn holds_batch(&self, producer_id: i64, first_offset: i64) -> bool {
        self.producers.get(&producer_id).is_some_and(|entry| {
            entry
                .batches
                .iter()
                .any(|batch| batch.first_offset == first_offset)
        })
    }

    /// The largest producer id seen, so new ids never collide after a restart.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().next_back().copied()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}
