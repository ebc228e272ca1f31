//! Planted bugs: named, realistic mistakes the simulation must be able to
//! catch (see `reports/harness-power.md`).
//!
//! This module exists only with the `planted-bugs` Cargo feature, which only
//! the `sluice-sim` crate enables; `cargo build -p sluice` never compiles it.
//! Without the feature, [`planted!`](crate::planted) expands to `false`, so a
//! planted branch is dead code the compiler removes.
//!
//! With the feature, every bug is still inert until a simulation run selects
//! it with [`activate`]. The selection is per thread: a simulation runs all of
//! its hosts on the thread that drives it, and `sim sweep` runs one seed per
//! thread at a time, so parallel runs never see each other's bugs.

use std::cell::Cell;

/// The bugs that can be planted. Each names the code it breaks and the
/// property a checker should find broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// Under `log.flush.on.ack`, a produce is acknowledged once written to
    /// the page cache, before the fsync that makes it durable.
    AckBeforeFsync,
    /// Recovery trusts the last segment's tail: a batch torn by a power loss
    /// is kept (and served) instead of cut off.
    RecoveryKeepsTornTail,
    /// Fetch reads up to the log end instead of the high watermark, serving
    /// records that are not yet durable.
    FetchBeyondHighWatermark,
    /// The broker appends a retried idempotent batch again instead of
    /// answering with the offsets of the copy it already has.
    NoIdempotentDedup,
    /// The group coordinator accepts offset commits from an old generation or
    /// from a member it has removed.
    StaleGenerationCommit,
    /// The consumer commits the positions of the records a poll returns
    /// before the application has processed them.
    CommitBeforeProcess,
    /// The consumer keeps fetching and returning partitions a rebalance
    /// revoked from it.
    KeepRevokedPartitions,
    /// The consumer commits the offset of the last record it returned instead
    /// of the next offset to read.
    OffByOneCommit,
    /// The broker accepts an idempotent batch whose sequence number leaves a
    /// gap, so a producer never learns that the broker lost its earlier
    /// batches.
    SequenceGapAccepted,
    /// After a segment roll, the index lookup in the new segment rounds up
    /// instead of down, so a fetch starts at a later batch than the one that
    /// holds the requested offset.
    SegmentRollLosesIndex,
    /// The group coordinator computes a rebalance's deadline as `now *
    /// timeout` instead of `now + timeout`, so a rebalance waiting for a
    /// member that neither rejoins nor expires never ends.
    RebalanceDeadlineIgnored,
    /// The group coordinator never expires a member whose session lapsed,
    /// so a crashed consumer keeps its partitions for ever.
    SessionExpirySkipped,
    /// A metadata quorum voter grants its vote to every candidate of an
    /// epoch, not only the first, so two candidates can both win it.
    VoteTwice,
    /// The leader's high watermark is its own log end: records count as
    /// replicated before any follower holds them.
    HwIgnoresFollowers,
    /// A broker that becomes a follower truncates its log to its high
    /// watermark, which trails the leader's (the truncation KIP-101
    /// replaced with leader epochs).
    TruncateToHighWatermark,
    /// The leader never answers a follower's fetch with `diverging_epoch`,
    /// so a follower that holds a suffix the leader does not never
    /// truncates it and appends the leader's records after it.
    IgnoreDivergingEpoch,
    /// The metadata image keeps a partition's leader epoch when the
    /// controller moves leadership to another broker, so the old and the
    /// new leader share an epoch and fencing by epoch cannot tell them apart.
    LeaderEpochNotBumped,
    /// An acks=all produce is answered once the leader has appended (and
    /// synced, under `log.flush.on.ack`), without waiting for the high
    /// watermark to pass it.
    AckBeforeReplication,
    /// The leader advances the high watermark whatever the size of the
    /// ISR, so records count as committed on fewer than
    /// `min.insync.replicas` brokers.
    HwBelowMinIsr,
    /// A leader never records its leader epoch in its epoch cache, so it
    /// answers a follower's divergence check as if its own epoch did not
    /// exist and the follower keeps a suffix the leader does not have.
    NoEpochEntryOnElection,
    /// The controller elects a replica outside the ISR when no ISR member
    /// is alive (`unclean.leader.election.enable=true` by mistake), so the
    /// new leader may lack acknowledged records.
    UncleanElection,
    /// A follower whose leader keeps its broker across a new leader epoch
    /// skips the divergence check (KAFKA-7164), so it keeps a suffix a
    /// re-elected leader that lost it no longer has.
    SkipTruncationSameLeader,
    /// A follower appends the leader's batches without recording their
    /// producer ids and sequences, so once it leads, a retried idempotent
    /// batch is appended a second time.
    FollowerSkipsProducerState,
    /// The metadata quorum's leader counts entries of earlier epochs as
    /// committed once a majority holds them, before any entry of its own
    /// epoch is (Raft's Figure 8).
    CommitPriorEpochByCount,
    /// A partition leader ignores the broker epoch a follower's fetch
    /// carries and proposes ISR members without theirs, so a fetch a
    /// follower sent before it lost power and restarted readmits it to the
    /// ISR without what it lost (KIP-903).
    RejoinWithStaleBrokerEpoch,
    /// A partition leader never proposes dropping a lagging follower from
    /// the ISR, so one follower cut off from it stalls every acks=all
    /// produce for as long as the cut lasts (a liveness bug).
    IsrNeverShrinks,
    /// The log cleaner keeps the first record of each key it mapped instead
    /// of the latest, so a compacted log serves an old value.
    CleanerDropsLatest,
    /// The log cleaner drops every tombstone it cleans, ignoring
    /// `delete.retention.ms`, so a reader behind it never sees the delete.
    TombstoneDroppedEarly,
}

impl Bug {
    pub const ALL: [Bug; 28] = [
        Bug::AckBeforeFsync,
        Bug::RecoveryKeepsTornTail,
        Bug::FetchBeyondHighWatermark,
        Bug::NoIdempotentDedup,
        Bug::StaleGenerationCommit,
        Bug::CommitBeforeProcess,
        Bug::KeepRevokedPartitions,
        Bug::OffByOneCommit,
        Bug::SequenceGapAccepted,
        Bug::SegmentRollLosesIndex,
        Bug::RebalanceDeadlineIgnored,
        Bug::SessionExpirySkipped,
        Bug::VoteTwice,
        Bug::HwIgnoresFollowers,
        Bug::TruncateToHighWatermark,
        Bug::IgnoreDivergingEpoch,
        Bug::LeaderEpochNotBumped,
        Bug::AckBeforeReplication,
        Bug::HwBelowMinIsr,
        Bug::NoEpochEntryOnElection,
        Bug::UncleanElection,
        Bug::SkipTruncationSameLeader,
        Bug::FollowerSkipsProducerState,
        Bug::CommitPriorEpochByCount,
        Bug::RejoinWithStaleBrokerEpoch,
        Bug::IsrNeverShrinks,
        Bug::CleanerDropsLatest,
        Bug::TombstoneDroppedEarly,
    ];

    /// The kebab-case name `sim --plant` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::RecoveryKeepsTornTail => "recovery-keeps-torn-tail",
            Bug::FetchBeyondHighWatermark => "fetch-beyond-high-watermark",
            Bug::NoIdempotentDedup => "no-idempotent-dedup",
            Bug::StaleGenerationCommit => "stale-generation-commit",
            Bug::CommitBeforeProcess => "commit-before-process",
            Bug::KeepRevokedPartitions => "keep-revoked-partitions",
            Bug::OffByOneCommit => "off-by-one-commit",
            Bug::SequenceGapAccepted => "sequence-gap-accepted",
            Bug::SegmentRollLosesIndex => "segment-roll-loses-index",
            Bug::RebalanceDeadlineIgnored => "rebalance-deadline-ignored",
            Bug::SessionExpirySkipped => "session-expiry-skipped",
            Bug::VoteTwice => "vote-twice",
            Bug::HwIgnoresFollowers => "hw-ignores-followers",
            Bug::TruncateToHighWatermark => "truncate-to-high-watermark",
            Bug::IgnoreDivergingEpoch => "ignore-diverging-epoch",
            Bug::LeaderEpochNotBumped => "leader-epoch-not-bumped",
            Bug::AckBeforeReplication => "ack-before-replication",
            Bug::HwBelowMinIsr => "hw-below-min-isr",
            Bug::NoEpochEntryOnElection => "no-epoch-entry-on-election",
            Bug::UncleanElection => "unclean-election",
            Bug::SkipTruncationSameLeader => "skip-truncation-same-leader",
            Bug::FollowerSkipsProducerState => "follower-skips-producer-state",
            Bug::CommitPriorEpochByCount => "commit-prior-epoch-by-count",
            Bug::RejoinWithStaleBrokerEpoch => "rejoin-with-stale-broker-epoch",
            Bug::IsrNeverShrinks => "isr-never-shrinks",
            Bug::CleanerDropsLatest => "cleaner-drops-latest",
            Bug::TombstoneDroppedEarly => "tombstone-dropped-early",
        }
    }

    /// One line on what the bug breaks, for `sim bugs`.
    pub fn description(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "acks=all answered before the fsync under log.flush.on.ack",
            Bug::RecoveryKeepsTornTail => "recovery keeps a batch torn by power loss and serves it",
            Bug::FetchBeyondHighWatermark => "fetch serves records above the high watermark",
            Bug::NoIdempotentDedup => "a retried idempotent batch is appended a second time",
            Bug::StaleGenerationCommit => "offset commits from an old generation are accepted",
            Bug::CommitBeforeProcess => "the consumer commits what poll returned before processing",
            Bug::KeepRevokedPartitions => "the consumer keeps fetching partitions it lost",
            Bug::OffByOneCommit => "the consumer commits the last offset read, not the next",
            Bug::SequenceGapAccepted => {
                "the broker accepts an idempotent batch after a sequence gap"
            }
            Bug::SegmentRollLosesIndex => "after a roll the index lookup skips to a later batch",
            Bug::RebalanceDeadlineIgnored => {
                "a rebalance deadline is now * timeout, not now + timeout"
            }
            Bug::SessionExpirySkipped => "members whose session lapsed are never expired",
            Bug::VoteTwice => "a quorum voter grants every candidate of an epoch its vote",
            Bug::HwIgnoresFollowers => "the leader's high watermark is its own log end",
            Bug::TruncateToHighWatermark => {
                "a new follower truncates to its high watermark (pre-KIP-101)"
            }
            Bug::IgnoreDivergingEpoch => {
                "the leader never reports a diverging epoch, so followers never truncate"
            }
            Bug::LeaderEpochNotBumped => "a new partition leader keeps its predecessor's epoch",
            Bug::AckBeforeReplication => "acks=all is answered before the high watermark passes it",
            Bug::HwBelowMinIsr => {
                "the high watermark advances with the ISR below min.insync.replicas"
            }
            Bug::NoEpochEntryOnElection => "a leader never records its epoch in its epoch cache",
            Bug::UncleanElection => "the controller elects a replica outside the ISR",
            Bug::SkipTruncationSameLeader => {
                "a follower skips truncation when its leader is re-elected (KAFKA-7164)"
            }
            Bug::FollowerSkipsProducerState => {
                "a follower does not rebuild idempotent producer state as it appends"
            }
            Bug::CommitPriorEpochByCount => {
                "the quorum leader commits earlier epochs' entries by count (Raft's Figure 8)"
            }
            Bug::RejoinWithStaleBrokerEpoch => {
                "a fetch from before a follower's restart readmits it to the ISR (KIP-903)"
            }
            Bug::IsrNeverShrinks => "a leader never drops a lagging follower from the ISR",
            Bug::CleanerDropsLatest => {
                "the log cleaner keeps each key's first record, not its latest"
            }
            Bug::TombstoneDroppedEarly => {
                "the log cleaner drops tombstones before delete.retention.ms"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Self::ALL.into_iter().find(|bug| bug.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for Bug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
}

/// Whether `bug` is planted on this thread. Call sites use
/// [`planted!`](crate::planted), which is `false` without the feature.
pub fn is_active(bug: Bug) -> bool {
    ACTIVE.with(|active| active.get() & bug.bit() != 0)
}

/// Plants `bugs` on this thread until the guard drops.
pub fn activate(bugs: &[Bug]) -> Planted {
    let previous = ACTIVE.with(|active| {
        let previous = active.get();
        active.set(bugs.iter().fold(0, |set, bug| set | bug.bit()));
        previous
    });
    Planted { previous }
}

/// Restores the previous selection when dropped.
#[must_use = "the bugs are planted only while the guard lives"]
pub struct Planted {
    previous: u32,
}

impl Drop for Planted {
    fn drop(&mut self) {
        ACTIVE.with(|active| active.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_selection_is_scoped() {
        for bug in Bug::ALL {
            assert_eq!(Bug::parse(bug.name()), Some(bug));
            assert!(!is_active(bug));
        }
        {
            let _planted = activate(&[Bug::OffByOneCommit]);
            assert!(is_active(Bug::OffByOneCommit));
            assert!(!is_active(Bug::AckBeforeFsync));
        }
        assert!(!is_active(Bug::OffByOneCommit));
        assert_eq!(Bug::parse("no-such-bug"), None);
    }
}
