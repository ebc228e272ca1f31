//! Replica state: one partition as one broker replicates it. A pure core, fed
//! the log's offsets, followers' fetch positions and the time, that decides the
//! high watermark and the in-sync replica set. The broker's partition shell
//! owns the log and this state under one lock, and after every log operation
//! hands the new offsets here and applies the high watermark it gets back.
//!
//! The high-watermark rule, the same for one replica or many: the high
//! watermark is the lowest position among the in-sync replicas, counted only
//! while the ISR holds at least `min.insync.replicas`, and it never moves
//! back on a leader. The leader's own position is its log end offset, or
//! under `log.flush.on.ack` its durable offset; a follower's is the offset it
//! last fetched from. A single replica whose ISR is itself is the degenerate
//! case: its high watermark follows its log end (or durable) offset.
//!
//! Invariants: nothing here reads a clock or does I/O; the ISR always holds
//! the leader; `high_watermark <= ` the leader's position.

use std::collections::{BTreeMap, BTreeSet};

/// What the replica needs from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This broker's `node.id`.
    pub node_id: i32,
    /// `log.flush.on.ack`: the leader's own position counts only once durable.
    pub flush_on_ack: bool,
    /// `min.insync.replicas`: the high watermark moves only while the ISR is
    /// at least this large.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves
    /// the ISR.
    pub replica_lag_time_max_ms: i64,
}

impl ReplicaConfig {
    /// One replica, alone: `min.insync.replicas` 1.
    pub fn single(node_id: i32, flush_on_ack: bool) -> ReplicaConfig {
        ReplicaConfig {
            node_id,
            flush_on_ack,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// A follower's progress, as the leader sees it from its fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset the follower last fetched from: it holds everything below.
    pub log_end_offset: i64,
    /// The last time the follower was caught up: it fetched at the leader's
    /// log end, or at least at the log end the leader had at its previous
    /// fetch (so steady produce does not make a healthy follower lag).
    pub caught_up_ms: i64,
    /// The leader's log end offset when this follower last fetched, and when.
    pub last_fetch_leader_end: i64,
    pub last_fetch_ms: i64,
    /// The broker epoch (incarnation) the follower's latest fetch carried,
    /// or -1 before one that names it (KIP-903). A fetch from an older
    /// incarnation is a straggler from before a restart: what it claims to
    /// hold may have been lost since, so it moves nothing.
    pub broker_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Leads the partition: tracks followers and decides the high watermark.
    Leader {
        replicas: BTreeSet<i32>,
        /// The ISR the controller has recorded.
        isr: BTreeSet<i32>,
        /// An ISR change sent to the controller and not yet recorded. Until
        /// it is, the high watermark counts every member of either set
        /// (KIP-497's maximal ISR), so a shrink cannot expose what a replica
        /// the controller might still elect does not hold.
        pending_isr: Option<BTreeSet<i32>>,
        /// Every member any proposal since the ISR was last recorded has
        /// named, the pending one's included. A proposal replaced by a later one (an expansion, then a
        /// shrink before the answer came) may still have been recorded by
        /// the controller, which could then elect its members; until the
        /// controller's ISR is known again the high watermark counts them.
        unconfirmed: BTreeSet<i32>,
        followers: BTreeMap<i32, FollowerProgress>,
        /// Each follower the pending proposal adds, with the broker epoch of
        /// the fetch that found it caught up. Every proposal until the
        /// controller answers names it in that epoch, even after a fetch
        /// from a newer incarnation: the controller then refuses it, and
        /// the new incarnation must catch up on its own (KIP-903).
        admission_epochs: BTreeMap<i32, i64>,
        /// The log end offset when this broker took the lead in this epoch:
        /// where its epoch begins. A follower joins the ISR only once it
        /// holds everything below it, as well as the high watermark: a new
        /// leader's high watermark may lag what an earlier leader
        /// acknowledged, and a follower admitted at that stale mark could be
        /// elected without the acknowledged records.
        epoch_start_offset: i64,
    },
    /// Follows `leader_id`; its high watermark is the leader's, as fetched.
    Follower { leader_id: i32 },
}

/// What the shell must act on after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEffect {
    /// The high watermark moved to this offset: set it on the log.
    HighWatermark(i64),
    /// Propose this ISR to the controller; report back with
    /// [`ReplicaState::on_isr_recorded`] once it is recorded.
    IsrChanged(BTreeSet<i32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    config: ReplicaConfig,
    leader_epoch: i32,
    role: Role,
    high_watermark: i64,
    log_end_offset: i64,
    durable_offset: i64,
}

impl ReplicaState {
    /// The only replica of its partition, and so its leader, at epoch 0,
    /// with a log recovered to these offsets.
    pub fn single_replica(
        config: ReplicaConfig,
        log_end_offset: i64,
        durable_offset: i64,
        high_watermark: i64,
    ) -> ReplicaState {
        let node_id = config.node_id;
        ReplicaState::leader(
            config,
            0,
            (&[node_id], &[node_id]),
            [log_end_offset, durable_offset, high_watermark],
            0,
        )
    }

    /// Leads at `leader_epoch` over `(replicas, isr)` (the ISR must hold
    /// this broker and be among the replicas), its log at `[log end, durable,
    /// high watermark]`. Followers start at the high watermark, caught up as
    /// of `now_ms`. Its epoch starts at the log end offset.
    pub fn leader(
        config: ReplicaConfig,
        leader_epoch: i32,
        (replicas, isr): (&[i32], &[i32]),
        [log_end_offset, durable_offset, high_watermark]: [i64; 3],
        now_ms: i64,
    ) -> ReplicaState {
        assert!(isr.contains(&config.node_id), "the ISR holds the leader");
        assert!(
            isr.iter().all(|id| replicas.contains(id)),
            "the ISR is among the replicas"
        );
        assert!(
            high_watermark <= log_end_offset,
            "high watermark above log end"
        );
        let followers = replicas
            .iter()
            .filter(|id| **id != config.node_id)
            .map(|id| {
                let progress = FollowerProgress {
                    log_end_offset: high_watermark,
                    caught_up_ms: now_ms,
                    last_fetch_leader_end: high_watermark,
                    last_fetch_ms: now_ms,
                    broker_epoch: -1,
                };
                (*id, progress)
            })
            .collect();
        ReplicaState {
            role: Role::Leader {
                replicas: replicas.iter().copied().collect(),
                isr: isr.iter().copied().collect(),
                pending_isr: None,
                unconfirmed: BTreeSet::new(),
                followers,
                admission_epochs: BTreeMap::new(),
                epoch_start_offset: log_end_offset,
            },
            config,
            leader_epoch,
            high_watermark,
            log_end_offset,
            durable_offset,
        }
    }

    /// Follows `leader_id` at `leader_epoch`.
    pub fn follower(
        config: ReplicaConfig,
        leader_id: i32,
        leader_epoch: i32,
        [log_end_offset, durable_offset, high_watermark]: [i64; 3],
    ) -> ReplicaState {
        assert_ne!(
            leader_id, config.node_id,
            "a follower follows another broker"
        );
        ReplicaState {
            role: Role::Follower { leader_id },
            config,
            leader_epoch,
            high_watermark: high_watermark.min(log_end_offset),
            log_end_offset,
            durable_offset,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// A topic's `min.insync.replicas` changed; the next high-watermark
    /// decision uses it.
    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize) {
        assert!(
            min_insync_replicas >= 1,
            "min.insync.replicas is at least 1"
        );
        self.config.min_insync_replicas = min_insync_replicas;
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The leader this replica knows of: itself when leading.
    pub fn leader_id(&self) -> i32 {
        match &self.role {
            Role::Leader { .. } => self.config.node_id,
            Role::Follower { leader_id } => *leader_id,
        }
    }

    /// How many replicas count toward `min.insync.replicas`: the recorded
    /// ISR, less any member a pending change drops (a pending addition
    /// does not count until recorded). 0 on a follower.
    pub fn in_sync_count(&self) -> usize {
        match &self.role {
            Role::Leader {
                isr, pending_isr, ..
            } => pending_isr
                .as_ref()
                .map_or(isr.len(), |pending| pending.intersection(isr).count()),
            Role::Follower { .. } => 0,
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The ISR the controller has recorded, when leading.
    pub fn isr(&self) -> Option<&BTreeSet<i32>> {
        match &self.role {
            Role::Leader { isr, .. } => Some(isr),
            Role::Follower { .. } => None,
        }
    }

    /// The controller recorded `isr` (the proposal, or a later one of its
    /// own): it becomes the ISR, and the high watermark may move.
    pub fn on_isr_recorded(&mut self, recorded: &BTreeSet<i32>) -> Vec<ReplicaEffect> {
        let node_id = self.config.node_id;
        let Role::Leader {
            isr,
            pending_isr,
            unconfirmed,
            admission_epochs,
            ..
        } = &mut self.role
        else {
            return Vec::new();
        };
        assert!(recorded.contains(&node_id), "the ISR holds the leader");
        *isr = recorded.clone();
        *pending_isr = None;
        admission_epochs.clear();
        // A proposal still in flight was computed against the partition
        // epoch this record replaced, so the controller refuses it.
        unconfirmed.clear();
        self.advance_high_watermark().into_iter().collect()
    }

    /// The local log moved: it appended, flushed or was truncated. Returns
    /// the effects, the high watermark first.
    pub fn on_log_progress(
        &mut self,
        log_end_offset: i64,
        durable_offset: i64,
    ) -> Vec<ReplicaEffect> {
        assert!(
            durable_offset <= log_end_offset,
            "durable offset above log end"
        );
        self.log_end_offset = log_end_offset;
        self.durable_offset = durable_offset;
        let mut effects = Vec::new();
        if self.high_watermark > log_end_offset {
            // Only a follower truncates; its high watermark follows its log.
            self.high_watermark = log_end_offset;
            effects.push(ReplicaEffect::HighWatermark(log_end_offset));
        }
        effects.extend(self.advance_high_watermark());
        effects
    }

    /// A follower, `(node id, broker epoch)`, fetched from `fetch_offset` at
    /// `now_ms` (leader only; a follower ignores it, as does a leader for a
    /// broker outside the replica set). A follower not in the ISR is
    /// proposed for it once it has reached both the high watermark and the
    /// leader's epoch start offset. A fetch from an incarnation older than
    /// one already heard from is ignored; one from a newer incarnation
    /// starts the follower's progress over, as the restart may have lost
    /// what the old one held (KIP-903). A broker epoch of -1 names none.
    pub fn on_follower_fetch(
        &mut self,
        (follower_id, broker_epoch): (i32, i64),
        fetch_offset: i64,
        now_ms: i64,
    ) -> Vec<ReplicaEffect> {
        let log_end_offset = self.log_end_offset;
        let high_watermark = self.high_watermark;
        let Role::Leader {
            replicas,
            isr,
            pending_isr,
            unconfirmed,
            followers,
            admission_epochs,
            epoch_start_offset,
        } = &mut self.role
        else {
            return Vec::new();
        };
        if !replicas.contains(&follower_id) || follower_id == self.config.node_id {
            return Vec::new();
        }
        let fetch_offset = fetch_offset.min(log_end_offset);
        let Some(progress) = followers.get_mut(&follower_id) else {
            return Vec::new();
        };
        if !crate::planted!(RejoinWithStaleBrokerEpoch) && broker_epoch >= 0 {
            if broker_epoch < progress.broker_epoch {
                return Vec::new();
            }
            if broker_epoch > progress.broker_epoch {
                // A new incarnation: nothing the old one fetched counts for
                // it, so it is caught up only once it reaches the log end.
                progress.broker_epoch = broker_epoch;
                progress.last_fetch_leader_end = i64::MAX;
            }
        }
        if fetch_offset >= log_end_offset {
            progress.caught_up_ms = now_ms;
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.last_fetch_leader_end = log_end_offset;
        progress.last_fetch_ms = now_ms;
        let mut effects = Vec::new();
        let proposed = pending_isr.as_ref().unwrap_or(isr);
        let caught_up = fetch_offset >= high_watermark && fetch_offset >= *epoch_start_offset;
        if !proposed.contains(&follower_id) && caught_up {
            let mut next = proposed.clone();
            next.insert(follower_id);
            unconfirmed.extend(next.iter().copied());
            admission_epochs.insert(follower_id, broker_epoch);
            *pending_isr = Some(next.clone());
            effects.push(ReplicaEffect::IsrChanged(next));
        }
        let mut out: Vec<ReplicaEffect> = self.advance_high_watermark().into_iter().collect();
        out.extend(effects);
        out
    }

    /// The broker epoch a proposal names for `follower_id`: while a pending
    /// proposal adds it, that of the fetch that found it caught up;
    /// otherwise its latest fetch's; -1 if none named one (or this replica
    /// does not lead). The controller admits a follower to the ISR only in
    /// the incarnation it has registered (KIP-903).
    pub fn follower_broker_epoch(&self, follower_id: i32) -> i64 {
        match &self.role {
            Role::Leader {
                followers,
                admission_epochs,
                ..
            } if !crate::planted!(RejoinWithStaleBrokerEpoch) => admission_epochs
                .get(&follower_id)
                .copied()
                .or_else(|| followers.get(&follower_id).map(|p| p.broker_epoch))
                .unwrap_or(-1),
            _ => -1,
        }
    }

    /// The controller refused the proposed ISR `refused` (it named a fenced
    /// broker): if it is still the pending proposal, it is dropped, and a
    /// later fetch that finds a follower caught up proposes again.
    pub fn on_isr_refused(&mut self, refused: &BTreeSet<i32>) {
        if let Role::Leader {
            isr,
            pending_isr,
            unconfirmed,
            admission_epochs,
            ..
        } = &mut self.role
        {
            if pending_isr.as_ref() == Some(refused) {
                *pending_isr = None;
                admission_epochs.clear();
                // The controller checked the refused proposal against the
                // partition epoch it was computed in, so no earlier one was
                // recorded since (a record bumps that epoch).
                *unconfirmed = isr.clone();
            }
        }
    }

    /// Proposes dropping followers that have not caught up within
    /// `replica.lag.time.max.ms` from the ISR (leader only). The high
    /// watermark keeps counting them until the controller records it.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<ReplicaEffect> {
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        if crate::planted!(IsrNeverShrinks) {
            return Vec::new();
        }
        let Role::Leader {
            isr,
            pending_isr,
            unconfirmed,
            followers,
            ..
        } = &mut self.role
        else {
            return Vec::new();
        };
        let proposed = pending_isr.as_ref().unwrap_or(isr);
        let lagging: Vec<i32> = followers
            .iter()
            .filter(|(id, progress)| {
                proposed.contains(*id) && now_ms.saturating_sub(progress.caught_up_ms) > lag_max_ms
            })
            .map(|(id, _)| *id)
            .collect();
        if lagging.is_empty() {
            return Vec::new();
        }
        let mut next = proposed.clone();
        for id in &lagging {
            next.remove(id);
        }
        unconfirmed.extend(proposed.iter().copied());
        *pending_isr = Some(next.clone());
        vec![ReplicaEffect::IsrChanged(next)]
    }

    /// A follower takes the leader's high watermark from a fetch response,
    /// bounded by what it holds.
    pub fn on_leader_high_watermark(&mut self, leader_high_watermark: i64) -> Vec<ReplicaEffect> {
        if !matches!(self.role, Role::Follower { .. }) || leader_high_watermark < 0 {
            return Vec::new();
        }
        let bounded = leader_high_watermark.min(self.log_end_offset);
        if bounded == self.high_watermark {
            return Vec::new();
        }
        self.high_watermark = bounded;
        vec![ReplicaEffect::HighWatermark(bounded)]
    }

    /// The leader's own position: what it holds, or what it holds durably.
    fn own_position(&self) -> i64 {
        if self.config.flush_on_ack {
            self.durable_offset
        } else {
            self.log_end_offset
        }
    }

    fn advance_high_watermark(&mut self) -> Option<ReplicaEffect> {
        let Role::Leader {
            isr,
            pending_isr,
            unconfirmed,
            followers,
            ..
        } = &self.role
        else {
            return None;
        };
        debug_assert!(
            pending_isr
                .iter()
                .flatten()
                .all(|id| unconfirmed.contains(id)),
            "every pending member is unconfirmed"
        );
        // Counted against the smaller of the recorded and proposed sets, so
        // a pending expansion does not satisfy min.insync.replicas early.
        if self.in_sync_count() < self.config.min_insync_replicas && !crate::planted!(HwBelowMinIsr)
        {
            return None;
        }
        let own = self.own_position();
        if crate::planted!(HwIgnoresFollowers) {
            return (own > self.high_watermark).then(|| {
                self.high_watermark = own;
                ReplicaEffect::HighWatermark(own)
            });
        }
        // The maximal ISR: every member of the recorded set or of any
        // proposal the controller may have recorded (`unconfirmed` holds
        // the pending one's members too).
        let lowest = isr
            .iter()
            .chain(unconfirmed.iter())
            .map(|id| {
                if *id == self.config.node_id {
                    own
                } else {
                    followers.get(id).map_or(i64::MIN, |p| p.log_end_offset)
                }
            })
            .min()
            .unwrap_or(own);
        if lowest > self.high_watermark {
            self.high_watermark = lowest;
            assert!(self.high_watermark <= self.log_end_offset);
            Some(ReplicaEffect::HighWatermark(lowest))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn high_watermarks(effects: &[ReplicaEffect]) -> Vec<i64> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                ReplicaEffect::HighWatermark(offset) => Some(*offset),
                ReplicaEffect::IsrChanged(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_single_replica_follows_its_log_end_or_with_flush_on_ack_its_durable_offset() {
        let mut replica = ReplicaState::single_replica(ReplicaConfig::single(0, false), 0, 0, 0);
        assert_eq!(high_watermarks(&replica.on_log_progress(5, 0)), [5]);
        assert_eq!(replica.on_log_progress(5, 5), []);

        let mut replica = ReplicaState::single_replica(ReplicaConfig::single(0, true), 0, 0, 0);
        assert_eq!(replica.on_log_progress(5, 0), []);
        assert_eq!(replica.high_watermark(), 0);
        assert_eq!(high_watermarks(&replica.on_log_progress(7, 5)), [5]);
        assert_eq!(high_watermarks(&replica.on_log_progress(7, 7)), [7]);
    }

    fn three_replicas(min_insync_replicas: usize) -> ReplicaState {
        let config = ReplicaConfig {
            node_id: 1,
            flush_on_ack: false,
            min_insync_replicas,
            replica_lag_time_max_ms: 1_000,
        };
        ReplicaState::leader(config, 3, (&[1, 2, 3], &[1, 2, 3]), [10, 10, 10], 0)
    }

    #[test]
    fn a_leader_exposes_only_what_every_in_sync_replica_holds() {
        let mut leader = three_replicas(2);
        assert_eq!(leader.on_log_progress(20, 20), []);
        assert_eq!(
            high_watermarks(&leader.on_follower_fetch((2, -1), 15, 100)),
            Vec::<i64>::new()
        );
        assert_eq!(
            high_watermarks(&leader.on_follower_fetch((3, -1), 18, 100)),
            [15]
        );
        assert_eq!(
            high_watermarks(&leader.on_follower_fetch((2, -1), 20, 200)),
            [18]
        );
        assert_eq!(
            high_watermarks(&leader.on_follower_fetch((3, -1), 20, 200)),
            [20]
        );
        // A fetch from further back (a retry) never moves it back.
        assert_eq!(leader.on_follower_fetch((3, -1), 12, 300), []);
        assert_eq!(leader.high_watermark(), 20);
    }

    #[test]
    fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
        let mut leader = three_replicas(2);
        leader.on_log_progress(20, 20);
        leader.on_follower_fetch((2, -1), 20, 500);
        // Follower 3 has not caught up since time 0: it is proposed out,
        // but the high watermark waits for the controller to record that.
        let effects = leader.on_tick(1_500);
        assert_eq!(effects, [ReplicaEffect::IsrChanged(BTreeSet::from([1, 2]))]);
        assert_eq!(leader.high_watermark(), 10);
        assert_eq!(
            leader.on_isr_recorded(&BTreeSet::from([1, 2])),
            [ReplicaEffect::HighWatermark(20)]
        );
        // Rejoins only at the high watermark.
        assert_eq!(leader.on_follower_fetch((3, -1), 19, 1_600), []);
        assert_eq!(
            leader.on_follower_fetch((3, -1), 20, 1_700),
            [ReplicaEffect::IsrChanged(BTreeSet::from([1, 2, 3]))]
        );
        // A broker outside the replica set is ignored.
        assert_eq!(leader.on_follower_fetch((9, -1), 20, 1_800), []);
    }

    #[test]
    fn a_follower_joins_the_isr_only_past_the_leaders_epoch_start() {
        // Elected alone with 124 records its high watermark never covered
        // (the previous leader's advance did not reach it).
        let config = ReplicaConfig {
            node_id: 2,
            flush_on_ack: false,
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 1_000,
        };
        let mut leader = ReplicaState::leader(config, 5, (&[0, 1, 2], &[2]), [124, 124, 0], 0);
        // A follower with an empty log reaches the stale high watermark, but
        // not the epoch start: it must not be admitted.
        assert_eq!(leader.on_follower_fetch((0, -1), 0, 100), []);
        assert_eq!(leader.on_follower_fetch((0, -1), 123, 200), []);
        assert_eq!(
            leader.on_follower_fetch((0, -1), 124, 300),
            [ReplicaEffect::IsrChanged(BTreeSet::from([0, 2]))]
        );
    }

    #[test]
    fn a_shrink_proposed_over_an_unanswered_expansion_still_counts_its_members() {
        let config = ReplicaConfig {
            node_id: 2,
            flush_on_ack: false,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 1_000,
        };
        let mut leader = ReplicaState::leader(config, 2, (&[0, 1, 2], &[2]), [10, 10, 10], 0);
        // Followers catch up: an expansion goes to the controller, which
        // records it, but the answer never reaches this leader.
        assert_eq!(
            leader.on_follower_fetch((0, -1), 10, 100),
            [ReplicaEffect::IsrChanged(BTreeSet::from([0, 2]))]
        );
        // Cut off, follower 0 stops fetching while this leader appends; it
        // proposes the follower out again.
        leader.on_log_progress(30, 30);
        assert_eq!(
            leader.on_tick(1_500),
            [ReplicaEffect::IsrChanged(BTreeSet::from([2]))]
        );
        // The controller may still hold [0, 2] and elect 0: nothing above
        // what 0 holds counts as committed until the ISR is known.
        assert_eq!(leader.on_log_progress(40, 40), []);
        assert_eq!(leader.high_watermark(), 10);
        assert_eq!(
            leader.on_isr_recorded(&BTreeSet::from([2])),
            [ReplicaEffect::HighWatermark(40)]
        );
    }

    #[test]
    fn a_fetch_from_an_old_incarnation_admits_nothing_for_the_new_one() {
        let mut leader = three_replicas(2);
        leader.on_isr_recorded(&BTreeSet::from([1, 2]));
        // Broker 3's fetch in incarnation 4 finds it caught up...
        assert_eq!(
            leader.on_follower_fetch((3, 4), 20, 100),
            [ReplicaEffect::IsrChanged(BTreeSet::from([1, 2, 3]))]
        );
        // ...then it restarts: its new incarnation holds only 12 records.
        assert_eq!(leader.on_follower_fetch((3, 5), 12, 200), []);
        // The pending proposal still names the incarnation that was caught
        // up, so the controller, which registered 5, refuses it.
        assert_eq!(leader.follower_broker_epoch(3), 4);
        leader.on_isr_refused(&BTreeSet::from([1, 2, 3]));
        assert_eq!(leader.follower_broker_epoch(3), 5);
        // A straggling fetch from incarnation 4 moves nothing.
        assert_eq!(leader.on_follower_fetch((3, 4), 20, 300), []);
        // Incarnation 5 is proposed once it has caught up itself.
        assert_eq!(
            leader.on_follower_fetch((3, 5), 20, 400),
            [ReplicaEffect::IsrChanged(BTreeSet::from([1, 2, 3]))]
        );
        assert_eq!(leader.follower_broker_epoch(3), 5);
    }

    #[test]
    fn a_refused_expansion_is_proposed_again_at_the_next_fetch() {
        let mut leader = three_replicas(2);
        leader.on_log_progress(20, 20);
        leader.on_follower_fetch((2, -1), 20, 500);
        leader.on_tick(1_500);
        leader.on_isr_recorded(&BTreeSet::from([1, 2]));
        let proposed = BTreeSet::from([1, 2, 3]);
        assert_eq!(
            leader.on_follower_fetch((3, -1), 20, 1_600),
            [ReplicaEffect::IsrChanged(proposed.clone())]
        );
        // Pending: a second fetch does not propose it twice.
        assert_eq!(leader.on_follower_fetch((3, -1), 20, 1_700), []);
        // The controller refused it (3 was fenced): proposed again.
        leader.on_isr_refused(&proposed);
        assert_eq!(
            leader.on_follower_fetch((3, -1), 20, 1_800),
            [ReplicaEffect::IsrChanged(proposed)]
        );
    }

    #[test]
    fn a_follower_that_keeps_up_with_steady_produce_stays_in_sync() {
        let mut leader = three_replicas(2);
        let mut now_ms = 0;
        let mut end = 10;
        for _ in 0..100 {
            // Each fetch reaches the end the leader had at the previous one,
            // never the current end, which moved on meanwhile.
            now_ms += 100;
            let previous_end = end;
            end += 5;
            leader.on_log_progress(end, end);
            leader.on_follower_fetch((2, -1), previous_end, now_ms);
            leader.on_follower_fetch((3, -1), previous_end, now_ms);
            assert_eq!(leader.on_tick(now_ms), []);
        }
        assert_eq!(leader.high_watermark(), end - 5);
    }

    #[test]
    fn below_min_insync_replicas_the_high_watermark_stands_still() {
        let mut leader = three_replicas(3);
        leader.on_log_progress(20, 20);
        leader.on_follower_fetch((2, -1), 20, 100);
        // Follower 3 falls out; two in sync is below min.insync.replicas 3.
        let effects = leader.on_tick(1_050);
        assert_eq!(effects, [ReplicaEffect::IsrChanged(BTreeSet::from([1, 2]))]);
        assert_eq!(leader.on_isr_recorded(&BTreeSet::from([1, 2])), []);
        assert_eq!(leader.on_log_progress(30, 30), []);
        assert_eq!(leader.high_watermark(), 10);
    }

    #[test]
    fn a_follower_takes_the_leaders_high_watermark_bounded_by_its_log() {
        let config = ReplicaConfig::single(2, false);
        let mut follower = ReplicaState::follower(config, 1, 4, [8, 8, 5]);
        assert_eq!(
            follower.on_leader_high_watermark(12),
            [ReplicaEffect::HighWatermark(8)]
        );
        assert_eq!(follower.on_log_progress(12, 12), []);
        assert_eq!(
            follower.on_leader_high_watermark(12),
            [ReplicaEffect::HighWatermark(12)]
        );
        // Truncation pulls the high watermark down with the log.
        assert_eq!(
            follower.on_log_progress(9, 9),
            [ReplicaEffect::HighWatermark(9)]
        );
        // Followers ignore leader-only inputs.
        assert_eq!(follower.on_follower_fetch((3, -1), 9, 0), []);
        assert_eq!(follower.on_tick(1_000_000), []);
        assert_eq!(follower.isr(), None);
    }
}
