//! The leader-epoch cache: for each leader epoch that wrote to this log, the
//! first offset it wrote (KIP-101). A follower that comes back asks the
//! leader where its last epoch ends and truncates there, instead of to its
//! high watermark, which may lag the records it must keep (KIP-101) or be
//! past records a quick succession of leaders replaced (KIP-279).
//!
//! Every batch carries its leader epoch in its header, so the cache is
//! rebuilt from the headers that recovery walks on every open: there is no
//! checkpoint file that could disagree with the log.
//!
//! Invariant: epochs and start offsets both strictly rise.

/// Answer for an epoch the log has no record of (Kafka's
/// UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED: (i32, i64) = (-1, -1);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// (epoch, start offset), both strictly rising.
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// A batch of `epoch` starts at `base_offset`. A batch of the latest
    /// epoch changes nothing; a new, higher epoch opens an entry. Batches
    /// written without an epoch (-1, by old clients' paths) are ignored.
    pub fn record(&mut self, epoch: i32, base_offset: i64) {
        if epoch < 0 {
            return;
        }
        match self.entries.last() {
            Some(&(last, _)) if epoch <= last => {}
            // The latest epoch holds no record (a log emptied up to its
            // start, which kept the epoch covering it): the new one
            // replaces it, so start offsets keep strictly rising.
            Some(&(_, start)) if base_offset == start => {
                *self.entries.last_mut().expect("an entry") = (epoch, base_offset);
            }
            Some(&(_, start)) => {
                assert!(
                    base_offset >= start,
                    "epoch {epoch} starts before the last one"
                );
                self.entries.push((epoch, base_offset));
            }
            None => self.entries.push((epoch, base_offset)),
        }
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The epochs of the records from `offset` on, each with the first of
    /// its offsets at or past `offset`, in offset order.
    pub fn runs_from(&self, offset: i64) -> Vec<(i32, i64)> {
        let first = self
            .entries
            .iter()
            .rposition(|(_, start)| *start <= offset)
            .unwrap_or(0);
        self.entries
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(|&(epoch, start)| (epoch, start.max(offset)))
            .collect()
    }

    /// OffsetForLeaderEpoch: the largest epoch not above `epoch` that this
    /// log has, and where it ends: the start of the next epoch, or
    /// `log_end_offset` for the latest. [`UNDEFINED`] below the first epoch.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let Some(at) = self.entries.iter().rposition(|(e, _)| *e <= epoch) else {
            return UNDEFINED;
        };
        let end = self
            .entries
            .get(at + 1)
            .map_or(log_end_offset, |(_, next_start)| *next_start);
        (self.entries[at].0, end)
    }

    /// The log was truncated to end at `end_offset`: epochs that start at
    /// or past it are gone.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|(_, start)| *start < end_offset);
    }

    /// The log now starts at `start_offset` (retention): epochs wholly
    /// below it are gone, and the one that covers it starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let covering = self
            .entries
            .iter()
            .rposition(|(_, start)| *start <= start_offset);
        if let Some(at) = covering {
            self.entries.drain(..at);
            self.entries[0].1 = start_offset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: each record's epoch, in offset order from `start`.
    fn model_end_offset_for(start: i64, epochs: &[i32], epoch: i32) -> (i32, i64) {
        let Some(found) = epochs.iter().copied().filter(|e| *e <= epoch).max() else {
            return UNDEFINED;
        };
        let end = epochs
            .iter()
            .position(|e| *e > found)
            .map_or(start + epochs.len() as i64, |i| start + i as i64);
        (found, end)
    }

    proptest! {
        /// Against a per-record model, through truncations at both ends.
        #[test]
        fn answers_as_the_per_record_model(
            steps in prop::collection::vec(0i32..4, 1..40),
            asked in -1i32..12,
            cut_end in 0usize..40,
            cut_start in 0usize..40,
            runs_from in 0usize..40,
        ) {
            // Epochs only rise: each step adds 0..4 to the last epoch.
            let mut epochs = Vec::new();
            let mut epoch = 0;
            for step in &steps {
                epoch += step;
                epochs.push(epoch);
            }
            let mut cache = LeaderEpochCache::default();
            for (offset, epoch) in epochs.iter().enumerate() {
                cache.record(*epoch, offset as i64);
            }
            prop_assert_eq!(
                cache.end_offset_for(asked, epochs.len() as i64),
                model_end_offset_for(0, &epochs, asked)
            );
            if runs_from < epochs.len() {
                // Each change of epoch from `runs_from` on starts a run.
                let mut runs: Vec<(i32, i64)> = Vec::new();
                for (offset, epoch) in epochs.iter().enumerate().skip(runs_from) {
                    if runs.last().is_none_or(|(last, _)| last != epoch) {
                        runs.push((*epoch, offset as i64));
                    }
                }
                prop_assert_eq!(cache.runs_from(runs_from as i64), runs);
            }

            let end = cut_end.min(epochs.len());
            epochs.truncate(end);
            cache.truncate_from_end(end as i64);
            prop_assert_eq!(
                cache.end_offset_for(asked, end as i64),
                model_end_offset_for(0, &epochs, asked)
            );

            let start = cut_start.min(epochs.len());
            if start < epochs.len() {
                cache.truncate_from_start(start as i64);
                let kept = &epochs[start..];
                prop_assert_eq!(
                    cache.end_offset_for(asked, end as i64),
                    model_end_offset_for(start as i64, kept, asked)
                );
            }
        }
    }

    #[test]
    fn a_log_with_no_epochs_answers_undefined() {
        let mut cache = LeaderEpochCache::default();
        cache.record(-1, 0);
        assert_eq!(cache.end_offset_for(5, 10), UNDEFINED);
        assert_eq!(cache.latest_epoch(), None);
    }
}
