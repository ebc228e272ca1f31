//! The harness can fail: every planted bug is caught by the checker it
//! breaks within a small seed budget, and the same seeds pass without it.
//! `sim power` measures the same thing over more seeds for
//! `reports/harness-power.md`.

use sluice::plant::Bug;
use sluice_sim::power::{self, Target};
use sluice_sim::report::Outcome;
use sluice_sim::runner;

/// Seeds searched per bug under `cargo test`, from 0. Every bug is caught
/// well within it in `sim power`'s ranges; the budget keeps CI fast.
const SEED_BUDGET: u64 = 8;

fn assert_caught_and_clean(bug: Bug) {
    let target: Target = power::target(bug);
    let scenario = power::load(target.scenario).expect("the target scenario loads");
    let detection = power::detect(&target, &scenario, 0..SEED_BUDGET).unwrap_or_else(|| {
        panic!(
            "{bug} planted in {} was not caught by {} within seeds 0..{SEED_BUDGET}",
            target.scenario, target.checker
        )
    });
    assert!(detection.failed.contains(&target.checker));
    for seed in 0..=detection.seed {
        let outcome = runner::run_seed(&scenario, seed);
        assert_eq!(
            outcome.outcome,
            Outcome::Pass,
            "{} seed {seed} fails without {bug} planted ({:?}); reproduce with: \
             cargo run -p sluice-sim --release -- run {} --seed {seed}",
            target.scenario,
            outcome.failed_checkers(),
            target.scenario
        );
    }
}

macro_rules! planted_bug_tests {
    ($($test:ident => $bug:expr;)*) => {
        $(
            #[test]
            fn $test() {
                assert_caught_and_clean($bug);
            }
        )*

        #[test]
        fn every_planted_bug_has_a_test_and_a_target() {
            let tested = [$($bug),*];
            for bug in Bug::ALL {
                assert!(tested.contains(&bug), "{bug} has no test in sim/tests/power.rs");
                assert_eq!(power::target(bug).bug, bug);
            }
        }
    };
}

planted_bug_tests! {
    ack_before_fsync_is_caught => Bug::AckBeforeFsync;
    recovery_keeps_torn_tail_is_caught => Bug::RecoveryKeepsTornTail;
    fetch_beyond_high_watermark_is_caught => Bug::FetchBeyondHighWatermark;
    no_idempotent_dedup_is_caught => Bug::NoIdempotentDedup;
    stale_generation_commit_is_caught => Bug::StaleGenerationCommit;
    commit_before_process_is_caught => Bug::CommitBeforeProcess;
    keep_revoked_partitions_is_caught => Bug::KeepRevokedPartitions;
    off_by_one_commit_is_caught => Bug::OffByOneCommit;
    sequence_gap_accepted_is_caught => Bug::SequenceGapAccepted;
    segment_roll_loses_index_is_caught => Bug::SegmentRollLosesIndex;
    rebalance_deadline_ignored_is_caught => Bug::RebalanceDeadlineIgnored;
    session_expiry_skipped_is_caught => Bug::SessionExpirySkipped;
    vote_twice_is_caught => Bug::VoteTwice;
    hw_ignores_followers_is_caught => Bug::HwIgnoresFollowers;
    truncate_to_high_watermark_is_caught => Bug::TruncateToHighWatermark;
    ignore_diverging_epoch_is_caught => Bug::IgnoreDivergingEpoch;
    leader_epoch_not_bumped_is_caught => Bug::LeaderEpochNotBumped;
    ack_before_replication_is_caught => Bug::AckBeforeReplication;
    hw_below_min_isr_is_caught => Bug::HwBelowMinIsr;
    no_epoch_entry_on_election_is_caught => Bug::NoEpochEntryOnElection;
    unclean_election_is_caught => Bug::UncleanElection;
    skip_truncation_same_leader_is_caught => Bug::SkipTruncationSameLeader;
    follower_skips_producer_state_is_caught => Bug::FollowerSkipsProducerState;
    commit_prior_epoch_by_count_is_caught => Bug::CommitPriorEpochByCount;
    rejoin_with_stale_broker_epoch_is_caught => Bug::RejoinWithStaleBrokerEpoch;
    isr_never_shrinks_is_caught => Bug::IsrNeverShrinks;
    cleaner_drops_latest_is_caught => Bug::CleanerDropsLatest;
    tombstone_dropped_early_is_caught => Bug::TombstoneDroppedEarly;
}
