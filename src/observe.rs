//! The broker's typed report to whoever embeds it.
//!
//! The simulation needs broker-side facts that no client sees: when a high
//! watermark moved, what recovery found, when a group's generation changed
//! or a member was removed. The broker hands them to an [`Observer`] as
//! [`Fact`] values the compiler checks, so renaming a field breaks the build
//! instead of silently blinding a checker. The real binary installs no
//! observer; then reporting a fact is one `Option` test.
//!
//! A fact is reported at the moment it becomes true, in the same critical
//! section that made it so (a high watermark under its partition's lock), so
//! an observer that records facts in arrival order sees them before anything
//! that depends on them.

use std::sync::Arc;

/// How a member left its group, as the coordinator decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// It sent LeaveGroup.
    Left,
    /// No heartbeat within its `session.timeout.ms`.
    SessionExpired,
    /// It did not rejoin before the rebalance deadline (its
    /// `rebalance.timeout.ms`, the client's `max.poll.interval.ms`).
    RebalanceTimeout,
    /// A static member's instance id rejoined under a new member id
    /// (KIP-345): the old id is fenced.
    Replaced,
}

impl RemovalReason {
    pub fn name(self) -> &'static str {
        match self {
            RemovalReason::Left => "left",
            RemovalReason::SessionExpired => "session-expired",
            RemovalReason::RebalanceTimeout => "rebalance-timeout",
            RemovalReason::Replaced => "replaced",
        }
    }
}

/// Why a replica cut the end off its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationReason {
    /// The leader answered its fetch with `diverging_epoch` (KIP-320): it
    /// cut back to where its log and the leader's last agree.
    DivergingEpoch,
    /// It cut back to its own high watermark on becoming a follower, the
    /// rule KIP-101 retired. Only the planted `truncate-to-high-watermark`
    /// bug does this.
    OwnHighWatermark,
}

impl TruncationReason {
    pub fn name(self) -> &'static str {
        match self {
            TruncationReason::DivergingEpoch => "diverging-epoch",
            TruncationReason::OwnHighWatermark => "own-high-watermark",
        }
    }
}

/// Whether a wire event is a request the broker received or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Something that became true on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A partition's high watermark moved: an append or fsync made records
    /// visible, or recovery or a truncation set it.
    HighWatermark {
        topic: String,
        partition: i32,
        high_watermark: i64,
    },
    /// A replica cut its log from `from_offset` (its log end before) back
    /// to `to_offset`. `cut_epochs` names what it cut: the leader epoch of
    /// each run of records, with the run's first offset, in offset order
    /// (a record is identified by its offset and leader epoch).
    Truncated {
        topic: String,
        partition: i32,
        from_offset: i64,
        to_offset: i64,
        cut_epochs: Vec<(i32, i64)>,
        reason: TruncationReason,
    },
    /// A partition log was opened after a start: what recovery kept.
    Recovered {
        topic: String,
        partition: i32,
        log_end_offset: i64,
        high_watermark: i64,
    },
    /// A group began a rebalance (PreparingRebalance). `deadline_ms` is the
    /// broker-clock time by which it ends whoever has rejoined; it is
    /// `rebalance_timeout_ms` after `now_ms` (or the initial delay for a
    /// group that was empty).
    RebalanceStarted {
        group: String,
        generation: i32,
        now_ms: i64,
        rebalance_timeout_ms: i64,
        deadline_ms: i64,
    },
    /// A rebalance completed: the group moved to `generation` (persisted
    /// before any member hears of it).
    Generation { group: String, generation: i32 },
    /// A member joined (or rejoined) with these timeouts.
    MemberJoined {
        group: String,
        member: String,
        instance: Option<String>,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
    },
    /// The coordinator removed a member from its group.
    MemberRemoved {
        group: String,
        member: String,
        reason: RemovalReason,
    },
    /// This broker became the metadata quorum's leader, the active
    /// controller, in `epoch` (its claim is durable before it acts).
    QuorumLeader { epoch: i32 },
    /// As the metadata quorum's leader in `epoch`, this broker counted
    /// everything below `high_watermark` as committed; the entry just below
    /// it was written in `committed_epoch` (Raft's rule: only an entry of
    /// the leader's own epoch commits, and everything before it with it).
    QuorumHighWatermark {
        epoch: i32,
        high_watermark: u64,
        committed_epoch: i32,
    },
    /// As the active controller, this broker fenced `node_id`, registered
    /// in `incarnation` (its broker epoch): its session lapsed. It leaves
    /// every ISR and leads nothing until it heartbeats again.
    BrokerFenced {
        node_id: i32,
        incarnation: Option<u64>,
    },
    /// As the active controller, this broker heard again from the fenced
    /// `node_id`, in `incarnation`, and unfenced it.
    BrokerUnfenced { node_id: i32, incarnation: u64 },
    /// This broker applied the record of `node_id`'s registration in
    /// `incarnation` (its broker epoch). From here on, this broker's view
    /// is that `node_id` runs that incarnation: its ISR changes may admit
    /// `node_id` only on the strength of a fetch from it (KIP-903).
    BrokerRegistered { node_id: i32, incarnation: u64 },
    /// As a partition's leader in `leader_epoch`, this broker found
    /// `follower_id` caught up by a fetch from `fetch_offset` naming broker
    /// epoch `broker_epoch` (-1 for none), and is about to propose it for
    /// the ISR.
    FollowerCaughtUp {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        follower_id: i32,
        broker_epoch: i64,
        fetch_offset: i64,
    },
    /// This broker became a follower of a partition in `leader_epoch`,
    /// fetching from `leader_id` (-1 when the partition has no leader).
    PartitionFollower {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        leader_id: i32,
    },
    /// This voter granted `candidate` its vote in `epoch`, durably (the
    /// answer leaves only once the vote is on disk).
    VoteGranted { epoch: i32, candidate: i32 },
    /// This broker became the leader of a partition in `leader_epoch`, with
    /// `isr` as the controller recorded it, holding `log_end_offset`
    /// records' worth of log: everything an earlier leader made visible must
    /// be below it.
    PartitionLeader {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        log_end_offset: i64,
    },
    /// The ISR of a partition this broker leads, as the controller
    /// recorded it, changed within `leader_epoch` (reported before any high
    /// watermark it lets through).
    IsrChanged {
        topic: String,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    },
    /// This broker became the group coordinator: it leads the offsets
    /// partition in `leader_epoch`, has replayed its log and everything
    /// replayed is below the high watermark. Group facts from then on are
    /// this broker's, until it resigns or another broker loads in a later
    /// epoch.
    CoordinatorLoaded { leader_epoch: i32 },
    /// This broker stopped coordinating groups (it no longer leads the
    /// offsets partition); it answered every parked caller NOT_COORDINATOR
    /// and forgot its groups. `leader_epoch` is the one it had loaded in.
    CoordinatorResigned { leader_epoch: i32 },
    /// This broker applied the committed metadata log entry at `offset`,
    /// written in quorum epoch `epoch`, whose payload has CRC32C `digest`.
    /// Every broker applies the same entries in the same order, so two
    /// brokers' facts for one offset must agree.
    MetadataApplied {
        offset: u64,
        epoch: i32,
        digest: u32,
    },
    /// A request the broker received or the response it sent, for readable
    /// traces. Reported only when [`Observer::wants_wire`] says so, since the
    /// summary costs a formatting pass over the message.
    Wire {
        direction: Direction,
        client_id: String,
        /// Kafka's name of the API, e.g. `OffsetCommit`.
        api: String,
        correlation_id: i32,
        summary: String,
        partitions: Vec<String>,
    },
}

/// Receives the broker's facts. Implementations must be cheap and must not
/// block: they are called under partition and coordinator locks.
pub trait Observer: Send + Sync {
    fn fact(&self, fact: Fact);

    /// Whether to report [`Fact::Wire`] for every request and response.
    fn wants_wire(&self) -> bool {
        false
    }
}

pub type SharedObserver = Arc<dyn Observer>;

/// An optional observer: reporting to none costs one branch.
#[derive(Clone, Default)]
pub struct Observed(Option<SharedObserver>);

impl Observed {
    pub fn new(observer: Option<SharedObserver>) -> Self {
        Self(observer)
    }

    pub fn none() -> Self {
        Self(None)
    }

    /// Reports the fact `make` builds, building it only if someone listens.
    pub fn report(&self, make: impl FnOnce() -> Fact) {
        if let Some(observer) = &self.0 {
            observer.fact(make());
        }
    }

    pub fn wants_wire(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|observer| observer.wants_wire())
    }
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observed(installed)"
        } else {
            "Observed(none)"
        })
    }
}
