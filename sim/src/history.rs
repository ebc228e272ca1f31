//! The recorded history of a run, Jepsen-style, and its JSON Lines form.
//!
//! Every client operation appears as an `invoke` followed by `ok`, `fail` or
//! `info` (outcome unknown) with the same `process` and `id`. Broker-side facts
//! the checkers need (high-watermark moves, truncations, group generations)
//! and the nemesis's faults appear as `event` entries. One JSON object per
//! line; the schema is documented in `sim/HISTORY.md`.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A record as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Unique per send across the run: `<producer process>-<sequence>`. A
    /// tombstone's value is null on the wire; its send's value travels in
    /// the record's `sim-id` header and is recorded here.
    pub value: String,
    /// The record's value was null: a delete marker for its key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tombstone: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// An offset for a partition, as committed or sought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A client operation. The same value is logged at invoke and completion;
/// fields known only on completion are `None`/empty at invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// A producer send. `partition` and `offset` are filled on `ok`.
    Send {
        topic: String,
        key: Option<String>,
        value: String,
        partition: Option<i32>,
        offset: Option<i64>,
        /// Sent with a null value (the `sim-id` header carries `value`).
        #[serde(default, skip_serializing_if = "is_false")]
        tombstone: bool,
    },
    /// One consumer poll; `records` filled on `ok`, in the order returned.
    Poll {
        group: Option<String>,
        records: Vec<Record>,
    },
    /// The consumer finished processing a record (after its poll).
    Process {
        group: Option<String>,
        record: Record,
    },
    /// An offset commit: the next offset to read per partition.
    Commit {
        group: String,
        generation: i32,
        member: String,
        offsets: Vec<PartitionOffset>,
    },
    /// An explicit seek by the application.
    Seek {
        group: Option<String>,
        target: PartitionOffset,
    },
    /// Partitions assigned to a member by a completed rebalance.
    Assign {
        group: String,
        generation: i32,
        member: String,
        partitions: Vec<TopicPartition>,
    },
    /// Partitions taken from a member before a rebalance.
    Revoke {
        group: String,
        generation: i32,
        member: String,
        partitions: Vec<TopicPartition>,
    },
    /// The heal phase's fresh reader: every record of one partition from the
    /// log start, in offset order.
    FinalRead {
        target: TopicPartition,
        log_start_offset: i64,
        records: Vec<Record>,
    },
}

/// What the nemesis did to a host. In a history, a fault's `kind` says what
/// happened to whom, so checkers never infer it from host names: a broker
/// crash (`crash-broker`, a power loss that drops unsynced writes) and a
/// client crash (`crash-client`) are different kinds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut a client from the broker, both ways.
    Partition,
    /// Cut one direction only.
    PartitionOneway,
    /// Cut one broker from one other broker, both ways; each still reaches
    /// the clients and every other broker, so the two disagree about who is
    /// alive (a replica cut from its leader only, a voter from one voter).
    PartitionPair,
    /// Cut a host from everyone.
    Isolate,
    /// Hold messages on a link, then release them.
    Delay,
    /// Broker power loss: unsynced data is lost; restarted later.
    CrashBroker,
    /// Broker process restart without power loss.
    RestartBroker,
    /// A producer or consumer crashes and restarts.
    CrashClient,
    /// A consumer stops the world (GC-like) for a while.
    PauseConsumer,
    /// Latency on a client's link to the broker rises to seconds.
    SlowNetwork,
    /// The broker's disk is full (ENOSPC); healed by freeing space and
    /// restarting the broker, as an operator would.
    DiskFull,
    /// The broker's disk returns I/O errors; healed by a restart.
    DiskErrors,
    /// Hold every link of a host, to brokers and clients, past its session
    /// timeouts, then deliver what was held (Jepsen's pause: a process
    /// stopped by SIGSTOP or a long GC).
    PauseBroker,
    /// A schedule of the primitive faults above: cut the target from the
    /// other brokers for the duration (the followers drop out of its ISR),
    /// then power-lose it for the duration (KIP-966's last replica standing).
    IsrSqueeze,
    /// A schedule: power-lose the target and, at once, between none and all
    /// of the other brokers (the durability model's fsync window).
    CrashReplicas,
    /// A schedule: restart a broker other than the target (page cache kept),
    /// then power-lose the target within a fetch round trip (KIP-101).
    RestartThenCrash,
    /// A schedule: hold the links of each broker in turn, then release them
    /// in the reverse order, over the duration (FoundationDB's swizzle-clog).
    SwizzleClog,
    /// A schedule: power-lose one follower of the target (a partition
    /// leader) and restart it after the duration, before the leader's lag
    /// limit notices; a fetch it sent before can still be parked at the
    /// leader (KIP-903).
    PowerCycleFollower,
}

impl FaultKind {
    /// The kebab-case name scenario files and histories use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::PartitionPair => "partition-pair",
            FaultKind::Isolate => "isolate",
            FaultKind::Delay => "delay",
            FaultKind::CrashBroker => "crash-broker",
            FaultKind::RestartBroker => "restart-broker",
            FaultKind::CrashClient => "crash-client",
            FaultKind::PauseConsumer => "pause-consumer",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::DiskFull => "disk-full",
            FaultKind::DiskErrors => "disk-errors",
            FaultKind::PauseBroker => "pause-broker",
            FaultKind::IsrSqueeze => "isr-squeeze",
            FaultKind::CrashReplicas => "crash-replicas",
            FaultKind::RestartThenCrash => "restart-then-crash",
            FaultKind::SwizzleClog => "swizzle-clog",
            FaultKind::PowerCycleFollower => "power-cycle-follower",
        }
    }

    /// A schedule of primitive faults: the nemesis starts the primitives,
    /// and only they appear in a history.
    pub fn is_schedule(self) -> bool {
        matches!(
            self,
            FaultKind::IsrSqueeze
                | FaultKind::CrashReplicas
                | FaultKind::RestartThenCrash
                | FaultKind::SwizzleClog
                | FaultKind::PowerCycleFollower
        )
    }

    /// A broker stops (and its group coordinator forgets its members): a
    /// crash, a restart, or the restart that heals a disk fault.
    pub fn restarts_broker(self) -> bool {
        matches!(
            self,
            FaultKind::CrashBroker
                | FaultKind::RestartBroker
                | FaultKind::DiskFull
                | FaultKind::DiskErrors
        )
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A run of records of one leader epoch in a replica's log, from
/// `start_offset` to the next run's start (`truncated`'s `cut_epochs`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub struct EpochRun {
    pub leader_epoch: i32,
    pub start_offset: i64,
}

/// Why a replica cut its log back (`truncated`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TruncationReason {
    DivergingEpoch,
    OwnHighWatermark,
}

/// Why the coordinator removed a member (`member_removed`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalReason {
    Left,
    SessionExpired,
    RebalanceTimeout,
    Replaced,
}

fn one_replica() -> i16 {
    1
}

fn every_ack_waits() -> bool {
    true
}

/// One batch in a replica's log, as `replica_log` lists it: two replicas
/// hold the same batch when all four agree (followers copy the leader's
/// bytes, so the CRC covers the records and producer fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
    pub crc: u32,
}

/// A broker-side fact or a fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    /// The run's settings that change what checkers may expect. First entry.
    Meta {
        scenario: String,
        seed: u64,
        /// `log.flush.on.ack`: acknowledged means fsynced.
        flush_on_ack: bool,
        /// Producers use the idempotent producer.
        idempotence: bool,
        /// The checkers this run asks for (empty = all).
        checkers: Vec<String>,
        /// The broker's `group.initial.rebalance.delay.ms`: how long a
        /// group's first rebalance may wait for more members.
        #[serde(default)]
        group_initial_rebalance_delay_ms: u64,
        /// Replicas per partition. Above 1, a new leader may start with a
        /// high watermark below the highest its predecessor advertised.
        #[serde(default = "one_replica")]
        replication_factor: i16,
        /// Every producer sends with acks=all, so every ack waits for the
        /// high watermark (true when absent: the strict reading).
        #[serde(default = "every_ack_waits")]
        acks_all: bool,
        /// The brokers' `min.insync.replicas` (1 when absent).
        #[serde(default = "one_replica")]
        min_insync_replicas: i16,
        /// The brokers' `replica.lag.time.max.ms`: how long a follower may
        /// fall behind before its leader drops it from the ISR (0 when
        /// absent: unknown, and nothing is judged against it).
        #[serde(default)]
        replica_lag_time_max_ms: u64,
        /// The topic is compacted (`cleanup.policy=compact`): records a
        /// later record of their key supersedes may vanish.
        #[serde(default)]
        compacted: bool,
        /// Its `delete.retention.ms`: a tombstone may vanish once its
        /// timestamp is this old.
        #[serde(default)]
        delete_retention_ms: u64,
    },
    HighWatermark {
        broker: String,
        topic: String,
        partition: i32,
        high_watermark: i64,
    },
    /// The ISR of a partition `broker` leads changed within `leader_epoch`,
    /// as the controller recorded it.
    IsrChanged {
        broker: String,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    },
    /// A broker's replica cut its log from `from_offset` back to `to_offset`;
    /// `cut_epochs` are the leader epochs of what it cut, in offset order.
    Truncated {
        broker: String,
        topic: String,
        partition: i32,
        from_offset: i64,
        to_offset: i64,
        cut_epochs: Vec<EpochRun>,
        reason: TruncationReason,
    },
    /// At the end of a run, after the final reads: the batches one broker's
    /// replica of a partition holds in its segment files, read from its
    /// disk directly (unsynced writes included, as the broker reads them).
    ReplicaLog {
        broker: String,
        topic: String,
        partition: i32,
        /// Whether the partition's ISR, as the metadata said when the
        /// reader asked, counts this replica.
        in_sync: bool,
        batches: Vec<ReplicaBatch>,
    },
    /// A broker became the metadata quorum's leader (the active
    /// controller) in quorum epoch `epoch`.
    QuorumLeader { broker: String, epoch: i32 },
    /// The metadata quorum's leader in `epoch` counted everything below
    /// `high_watermark` as committed; the entry just below it was written in
    /// `committed_epoch`.
    QuorumHighWatermark {
        broker: String,
        epoch: i32,
        high_watermark: u64,
        committed_epoch: i32,
    },
    /// The active controller (`broker`) fenced broker `node_id`, registered
    /// in `incarnation`: its session lapsed.
    BrokerFenced {
        broker: String,
        node_id: i32,
        incarnation: Option<u64>,
    },
    /// The active controller (`broker`) unfenced `node_id`, heard from in
    /// `incarnation`.
    BrokerUnfenced {
        broker: String,
        node_id: i32,
        incarnation: u64,
    },
    /// A broker applied the record of `node_id`'s registration in
    /// `incarnation` (its broker epoch).
    BrokerRegistered {
        broker: String,
        node_id: i32,
        incarnation: u64,
    },
    /// A partition's leader (`broker`) found `follower_id` caught up by a
    /// fetch from `fetch_offset` naming broker epoch `broker_epoch` (-1 for
    /// none), and proposes it for the ISR.
    FollowerCaughtUp {
        broker: String,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        follower_id: i32,
        broker_epoch: i64,
        fetch_offset: i64,
    },
    /// A broker became a follower of a partition in `leader_epoch`,
    /// fetching from `leader_id` (-1 for none).
    PartitionFollower {
        broker: String,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        leader_id: i32,
    },
    /// A voter granted `candidate` (a node id) its vote in `epoch`.
    VoteGranted {
        broker: String,
        epoch: i32,
        candidate: i32,
    },
    /// A broker became a partition's leader in `leader_epoch`, with the ISR
    /// the controller recorded and its log ending at `log_end_offset`.
    PartitionLeader {
        broker: String,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        log_end_offset: i64,
    },
    /// A broker became the group coordinator, leading the offsets partition
    /// in `leader_epoch`, with its log loaded and committed.
    CoordinatorLoaded { broker: String, leader_epoch: i32 },
    /// A broker stopped coordinating groups (leadership of the offsets
    /// partition moved away from its `leader_epoch`).
    CoordinatorResigned { broker: String, leader_epoch: i32 },
    /// A broker applied the committed metadata log entry at `offset`,
    /// written in quorum epoch `epoch`, whose payload has CRC32C `digest`.
    MetadataApplied {
        broker: String,
        offset: u64,
        epoch: i32,
        digest: u32,
    },
    /// A broker opened a partition's log on start: what recovery kept.
    Recovered {
        broker: String,
        topic: String,
        partition: i32,
        log_end_offset: i64,
        high_watermark: i64,
    },
    Generation {
        broker: String,
        group: String,
        generation: i32,
    },
    /// A group began a rebalance; it must end (a `generation` event) within
    /// `rebalance_timeout_ms`, the coordinator's own deadline.
    RebalanceStarted {
        broker: String,
        group: String,
        generation: i32,
        rebalance_timeout_ms: i64,
    },
    /// A member joined or rejoined its group with these timeouts.
    MemberJoined {
        broker: String,
        group: String,
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        session_timeout_ms: i64,
        rebalance_timeout_ms: i64,
    },
    /// The coordinator removed a member from its group.
    MemberRemoved {
        broker: String,
        group: String,
        member: String,
        reason: RemovalReason,
    },
    /// A fault began or ended; `power_loss` marks crashes that lose unsynced data.
    Fault {
        kind: FaultKind,
        target: String,
        /// For `partition-pair`, the broker the target is cut from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
        power_loss: bool,
        healed: bool,
    },
    /// The fault phase ended and everything was repaired.
    Heal,
    /// A request the broker (the entry's process) received, or its response.
    /// Recorded only for `sim run --trace`; the trace hash leaves it out.
    Wire {
        /// "request" or "response".
        direction: String,
        /// The client id, which the harness sets to the client's host name.
        client: String,
        api: String,
        correlation_id: i32,
        summary: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        partitions: Vec<String>,
    },
    /// A consumer (the entry's process) fetched a batch that failed
    /// validation: a CRC mismatch or broken framing.
    CorruptRead {
        topic: String,
        partition: i32,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Invoke {
        op: Op,
    },
    Ok {
        op: Op,
    },
    Fail {
        op: Op,
        error: String,
    },
    /// The outcome is unknown (a timeout, a crash mid-request).
    Info {
        op: Op,
        error: String,
    },
    Event {
        event: Event,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the history, from 0.
    pub index: u64,
    /// Simulated milliseconds since the run began.
    pub time_ms: u64,
    /// Host or logical process: `producer-0`, `consumer-3`, `broker-0`, `nemesis`.
    pub process: String,
    /// Pairs an invoke with its completion within one process; 0 for events.
    pub id: u64,
    #[serde(flatten)]
    pub kind: Kind,
}

pub type History = Vec<Entry>;

pub fn write_jsonl(history: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
    for entry in history {
        serde_json::to_writer(&mut *out, entry)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a history, refusing what the checkers could only misread: a line
/// that is not an entry, an `index` other than the entry's position, time
/// going backwards, a negative offset. Every error names the line. A
/// history with no entries is an error too: checking nothing must not pass.
pub fn read_jsonl(input: &mut dyn BufRead) -> anyhow::Result<History> {
    let mut history = Vec::new();
    let mut last_time_ms = 0;
    for (number, line) in input.lines().enumerate() {
        let line_number = number + 1;
        let line = line.map_err(|error| anyhow::anyhow!("line {line_number}: {error}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line)
            .map_err(|error| anyhow::anyhow!("line {line_number}: {error}"))?;
        let position = history.len() as u64;
        anyhow::ensure!(
            entry.index == position,
            "line {line_number}: index {} but this is entry {position} (indexes count \
             entries from 0, in order)",
            entry.index
        );
        anyhow::ensure!(
            entry.time_ms >= last_time_ms,
            "line {line_number}: time_ms {} is before the previous entry's {last_time_ms}",
            entry.time_ms
        );
        if let Some(offset) = negative_offset(&entry.kind) {
            anyhow::bail!("line {line_number}: negative offset {offset}");
        }
        last_time_ms = entry.time_ms;
        history.push(entry);
    }
    anyhow::ensure!(!history.is_empty(), "the history has no entries");
    Ok(history)
}

/// The first negative offset an entry carries, if any. (A final read's
/// invoke logs `log_start_offset: -1`, meaning not yet known.)
fn negative_offset(kind: &Kind) -> Option<i64> {
    let op = match kind {
        Kind::Invoke { op } | Kind::Ok { op } | Kind::Fail { op, .. } | Kind::Info { op, .. } => op,
        Kind::Event { event } => {
            return match event {
                Event::HighWatermark { high_watermark, .. } if *high_watermark < 0 => {
                    Some(*high_watermark)
                }
                Event::Recovered {
                    log_end_offset,
                    high_watermark,
                    ..
                } => [*log_end_offset, *high_watermark]
                    .into_iter()
                    .find(|o| *o < 0),
                _ => None,
            }
        }
    };
    let records = |records: &[Record]| records.iter().map(|r| r.offset).find(|o| *o < 0);
    match op {
        Op::Send { offset, .. } => offset.filter(|o| *o < 0),
        Op::Poll { records: r, .. } => records(r),
        Op::Process { record, .. } => (record.offset < 0).then_some(record.offset),
        Op::Commit { offsets, .. } => offsets.iter().map(|o| o.offset).find(|o| *o < 0),
        Op::Seek { target, .. } => (target.offset < 0).then_some(target.offset),
        Op::FinalRead {
            log_start_offset,
            records: r,
            ..
        } => records(r).or((*log_start_offset < -1).then_some(*log_start_offset)),
        Op::Assign { .. } | Op::Revoke { .. } => None,
    }
}

/// Builds histories by hand, for checker tests.
#[derive(Default)]
pub struct Builder {
    entries: History,
    next_id: u64,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, time_ms: u64, process: &str, id: u64, kind: Kind) {
        self.entries.push(Entry {
            index: self.entries.len() as u64,
            time_ms,
            process: process.to_string(),
            id,
            kind,
        });
    }

    /// Logs an invoke and returns its id for the completion.
    pub fn invoke(&mut self, time_ms: u64, process: &str, op: Op) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.push(time_ms, process, id, Kind::Invoke { op });
        id
    }

    pub fn ok(&mut self, time_ms: u64, process: &str, id: u64, op: Op) {
        self.push(time_ms, process, id, Kind::Ok { op });
    }

    pub fn fail(&mut self, time_ms: u64, process: &str, id: u64, op: Op, error: &str) {
        self.push(
            time_ms,
            process,
            id,
            Kind::Fail {
                op,
                error: error.to_string(),
            },
        );
    }

    pub fn info(&mut self, time_ms: u64, process: &str, id: u64, op: Op, error: &str) {
        self.push(
            time_ms,
            process,
            id,
            Kind::Info {
                op,
                error: error.to_string(),
            },
        );
    }

    pub fn event(&mut self, time_ms: u64, process: &str, event: Event) {
        self.push(time_ms, process, 0, Kind::Event { event });
    }

    pub fn build(self) -> History {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_round_trips_through_json_lines() {
        let mut builder = Builder::new();
        builder.event(0, "nemesis", Event::Heal);
        let send = Op::Send {
            topic: "t".into(),
            key: Some("k".into()),
            value: "p0-1".into(),
            partition: None,
            offset: None,
            tombstone: false,
        };
        let id = builder.invoke(1, "producer-0", send);
        builder.ok(
            2,
            "producer-0",
            id,
            Op::Send {
                topic: "t".into(),
                key: Some("k".into()),
                value: "p0-1".into(),
                partition: Some(0),
                offset: Some(0),
                tombstone: false,
            },
        );
        let history = builder.build();
        let mut text = Vec::new();
        write_jsonl(&history, &mut text).unwrap();
        let first_line = String::from_utf8(text.clone()).unwrap();
        assert!(first_line.starts_with(r#"{"index":0,"time_ms":0,"process":"nemesis","id":0,"type":"event","event":{"e":"heal"}}"#), "{first_line}");
        let back = read_jsonl(&mut text.as_slice()).unwrap();
        assert_eq!(back, history);
    }

    fn refused(text: &str) -> String {
        read_jsonl(&mut text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn malformed_histories_are_refused_naming_the_line() {
        assert_eq!(refused(""), "the history has no entries");
        assert_eq!(refused("\n\n"), "the history has no entries");
        let heal = |index: u64, time_ms: u64| {
            format!(
                r#"{{"index":{index},"time_ms":{time_ms},"process":"nemesis","id":0,"type":"event","event":{{"e":"heal"}}}}"#
            )
        };
        let error = refused(&format!("{}\n{}\n", heal(0, 5), heal(5, 6)));
        assert!(
            error.starts_with("line 2: index 5 but this is entry 1"),
            "{error}"
        );
        let error = refused(&format!("{}\n{}\n", heal(0, 5), heal(1, 4)));
        assert!(error.starts_with("line 2: time_ms 4 is before"), "{error}");
        let ack = r#"{"index":0,"time_ms":1,"process":"producer-0","id":1,"type":"ok","op":{"f":"send","topic":"t","key":null,"value":"v","partition":0,"offset":-5}}"#;
        assert_eq!(refused(ack), "line 1: negative offset -5");
        let commit = r#"{"index":0,"time_ms":1,"process":"consumer-0","id":1,"type":"ok","op":{"f":"commit","group":"g","generation":1,"member":"m","offsets":[{"topic":"t","partition":0,"offset":-3}]}}"#;
        assert_eq!(refused(commit), "line 1: negative offset -3");
        let error = refused("{not json");
        assert!(error.starts_with("line 1: "), "{error}");
    }
}
