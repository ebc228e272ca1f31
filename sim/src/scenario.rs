//! Scenario files (`scenarios/*.toml`): topology, workload, faults, phases and
//! checkers. Unknown keys are errors. Any knob a file leaves out is drawn from
//! the seed (swarm testing), so one scenario explores many configurations,
//! including extreme ones such as tiny segments and short timeouts. The
//! resolved values are printed at the top of every run.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::topology::Topology;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub topology: TopologySpec,
    #[serde(default)]
    pub broker: BrokerKnobs,
    #[serde(default)]
    pub producers: Vec<ProducerSpec>,
    #[serde(default)]
    pub consumers: Vec<ConsumerGroupSpec>,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub phases: Phases,
    /// Checker names; empty runs them all.
    #[serde(default)]
    pub checkers: Vec<String>,
    /// Set in files under `scenarios/regressions/`, which `sim shrink` writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

/// What a regression scenario guards against, and how it was found.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    /// The planted bug this run catches (a `sim bugs` name), or, for a
    /// defect found with nothing planted and since fixed, what it was.
    pub guards: String,
    /// The seed the schedule was shrunk at; the file is run with it.
    pub seed: u64,
    /// The checker that must fail when the bug is planted.
    pub checker: String,
    /// The failing run it was shrunk from, for the record.
    pub shrunk_from: String,
}

/// The scenario's `[topology]` table: how many brokers, which topic and
/// how many partitions. The hosts a run builds from it are a
/// [`crate::topology::Topology`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(default = "one")]
    pub brokers: u32,
    pub partitions: Option<i32>,
    #[serde(default = "one_i16")]
    pub replication_factor: i16,
    #[serde(default = "default_topic")]
    pub topic: String,
}

fn one() -> u32 {
    1
}
fn one_i16() -> i16 {
    1
}
fn default_topic() -> String {
    "events".to_string()
}

impl Default for TopologySpec {
    fn default() -> Self {
        Self {
            brokers: 1,
            partitions: None,
            replication_factor: 1,
            topic: default_topic(),
        }
    }
}

/// `log.flush.interval.ms` when a scenario does not set it: short enough
/// that most power losses find little unsynced.
pub const SIM_FLUSH_MS_DEFAULT: u64 = 1_000;

/// `log.cleaner.delete.retention.ms` when unset: Kafka's, a day.
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 86_400_000;
/// `log.roll.ms` when unset: Kafka's, a week.
pub const ROLL_MS_DEFAULT: u64 = 604_800_000;
/// `log.cleaner.backoff.ms` when unset: Kafka's.
pub const CLEANER_BACKOFF_MS_DEFAULT: u64 = 15_000;

/// `replica.fetch.wait.max.ms` when a scenario leaves it unset: Kafka's.
pub const REPLICA_FETCH_WAIT_MAX_MS_DEFAULT: u64 = 500;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BrokerKnobs {
    pub segment_bytes: Option<u64>,
    pub index_interval_bytes: Option<u64>,
    /// `log.flush.on.ack`.
    pub flush_on_ack: Option<bool>,
    /// `log.flush.interval.messages` when not flushing on ack.
    pub flush_messages: Option<u64>,
    /// `log.flush.interval.ms`: an unflushed write is fsynced once this old
    /// (1000 when unset; not drawn).
    pub flush_ms: Option<u64>,
    /// Torn-write granularity on crash; 0 means writes are atomic.
    pub block_size: Option<u64>,
    /// `group.initial.rebalance.delay.ms`: 0, or Kafka's default of 3000.
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// `min.insync.replicas` (Kafka's default, 1, when unset).
    pub min_insync_replicas: Option<usize>,
    /// `replica.fetch.wait.max.ms`: how long a leader parks a follower's
    /// fetch that finds nothing new (Kafka's default, 500, when unset).
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// `log.cleanup.policy`: `delete` (the default) or `compact`.
    pub cleanup_policy: Option<String>,
    /// `log.cleaner.delete.retention.ms` (Kafka's default, a day, when unset).
    pub delete_retention_ms: Option<u64>,
    /// `log.roll.ms`: rolls segments by age, so a slow topic still gets
    /// segments the cleaner may touch (Kafka's default, a week, when unset).
    pub roll_ms: Option<u64>,
    /// `log.cleaner.backoff.ms` (Kafka's default, 15 s, when unset).
    pub cleaner_backoff_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// commit_sync after processing each poll's records.
    Manual,
    /// enable.auto.commit.
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSpec {
    #[serde(default = "one")]
    pub count: u32,
    /// Messages each producer sends.
    pub messages: Option<u32>,
    pub rate_per_sec: Option<u32>,
    /// Distinct keys; 0 sends without keys.
    pub keys: Option<u32>,
    /// "all", "1" or "0".
    pub acks: Option<String>,
    pub idempotence: Option<bool>,
    pub linger_ms: Option<u64>,
    /// Percent of keyed sends that are tombstones (null values); 0 when unset.
    pub tombstone_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroupSpec {
    pub group: String,
    #[serde(default = "one")]
    pub count: u32,
    /// Processing time per record, [min, max] ms.
    pub processing_ms: Option<[u64; 2]>,
    pub commit: Option<CommitMode>,
    pub max_poll_interval_ms: Option<u64>,
    pub session_timeout_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub max_poll_records: Option<usize>,
    /// Members set `group.instance.id` (KIP-345 static membership).
    pub static_members: Option<bool>,
    /// Members share one `client.id`, as replicas of one service do.
    pub shared_client_id: Option<bool>,
}

pub use crate::history::FaultKind;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    pub at_ms: u64,
    pub kind: FaultKind,
    /// Host name; drawn from the seed when absent.
    pub target: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Kinds the nemesis may draw from; empty with no schedule means no faults.
    #[serde(default)]
    pub kinds: Vec<FaultKind>,
    /// Time between drawn faults, [min, max] ms.
    pub interval_ms: Option<[u64; 2]>,
    /// How long a drawn fault lasts, [min, max] ms.
    pub duration_ms: Option<[u64; 2]>,
    /// A scripted schedule; when present, nothing is drawn.
    #[serde(default)]
    pub schedule: Vec<ScheduledFault>,
    /// Which broker a drawn broker fault (crash, restart, disk) hits.
    #[serde(default)]
    pub aim: Aim,
}

/// The broker a drawn broker fault aims at.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Aim {
    /// Any broker, drawn from the seed.
    #[default]
    Any,
    /// The active controller: the broker that most recently became the
    /// metadata quorum's leader.
    Controller,
    /// A partition leader: the broker that most recently became the leader
    /// of a partition drawn from the seed.
    Leader,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    pub fault_ms: Option<u64>,
    pub heal_ms: Option<u64>,
    /// Simulated milliseconds per simulation step (turmoil's tick); see
    /// [`TICK_MS_DEFAULT`].
    pub tick_ms: Option<u64>,
}

/// Simulated milliseconds per simulation step unless a scenario says
/// otherwise. Each step runs every host for this long in virtual time, in
/// turn; within a host, timers still fire at their exact instants, so
/// `linger.ms`, timeouts and the fsync window keep their meaning. Between
/// hosts, a message sent during a step is delivered at a later step, so
/// network latency is rounded up to whole steps, and the nemesis acts
/// between steps. Ten milliseconds keeps both far below every timing the
/// scenarios depend on across hosts (heartbeats and request timeouts are
/// seconds), while the drawn fsync latency (up to 30 ms) still lets other
/// hosts see a flush in progress; and each step costs about the same
/// whatever its length, so a run takes a tenth of the steps it would at 1 ms.
pub const TICK_MS_DEFAULT: u64 = 10;

/// The most brokers a scenario may ask for: every broker is a voter of the
/// controller quorum, and Kafka's quorums stay small.
pub const BROKERS_MAX: u32 = 5;

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Scenario = toml::from_str(text)?;
        // A setting the world would not honour is refused, never ignored: a
        // scenario that asks for three brokers must not quietly test one.
        anyhow::ensure!(
            (1..=BROKERS_MAX).contains(&scenario.topology.brokers),
            "topology.brokers = {}: between 1 and {BROKERS_MAX}",
            scenario.topology.brokers
        );
        anyhow::ensure!(
            (1..=scenario.topology.brokers as i16).contains(&scenario.topology.replication_factor),
            "topology.replication_factor = {}: between 1 and the {} brokers",
            scenario.topology.replication_factor,
            scenario.topology.brokers
        );
        let min_insync_replicas = scenario.broker.min_insync_replicas.unwrap_or(1);
        anyhow::ensure!(
            (1..=scenario.topology.replication_factor as usize).contains(&min_insync_replicas),
            "broker.min_insync_replicas = {min_insync_replicas}: between 1 and the replication \
             factor {}, or no acks=all produce could ever succeed",
            scenario.topology.replication_factor
        );
        anyhow::ensure!(
            !scenario.producers.is_empty(),
            "a scenario needs at least one [[producers]] entry"
        );
        let known = crate::checkers::names();
        for name in &scenario.checkers {
            anyhow::ensure!(
                known.contains(&name.as_str()),
                "unknown checker {name:?}; the checkers are: {}",
                known.join(", ")
            );
        }
        Ok(scenario)
    }
}

/// Derives a child seed from a root seed and a label, so every consumer of
/// randomness gets its own stream regardless of the order others draw in.
pub fn child_seed(root: u64, label: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write_u64(root);
    hasher.write(label.as_bytes());
    let mut rng = ChaCha8Rng::seed_from_u64(hasher.finish());
    rng.next_u64()
}

/// A seeded source for knob resolution.
pub struct Draw(ChaCha8Rng);

impl Draw {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }
    /// Uniform in [low, high].
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.0.next_u64() % (high - low + 1)
    }
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.0.next_u64() % denominator < numerator
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.0.next_u64() % items.len() as u64) as usize]
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// Every knob concrete: the scenario's values, or values drawn from the seed.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub name: String,
    pub seed: u64,
    pub brokers: u32,
    pub partitions: i32,
    pub replication_factor: i16,
    pub min_insync_replicas: usize,
    pub topic: String,
    pub segment_bytes: u64,
    pub index_interval_bytes: u64,
    pub flush_on_ack: bool,
    pub flush_messages: u64,
    pub flush_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    pub block_size: u64,
    pub group_initial_rebalance_delay_ms: u64,
    /// `log.cleanup.policy=compact` on every broker.
    pub compacted: bool,
    pub delete_retention_ms: u64,
    pub roll_ms: u64,
    pub cleaner_backoff_ms: u64,
    pub producers: Vec<ResolvedProducer>,
    pub groups: Vec<ResolvedGroup>,
    pub fault_kinds: Vec<FaultKind>,
    pub fault_aim: Aim,
    pub fault_interval_ms: [u64; 2],
    pub fault_duration_ms: [u64; 2],
    pub schedule: Vec<ScheduledFault>,
    pub fault_ms: u64,
    pub heal_ms: u64,
    pub tick_ms: u64,
    pub checkers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedProducer {
    pub name: String,
    pub messages: u32,
    pub rate_per_sec: u32,
    pub keys: u32,
    pub acks: String,
    pub idempotence: bool,
    pub linger_ms: u64,
    pub tombstone_percent: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedGroup {
    pub group: String,
    pub members: Vec<String>,
    pub processing_ms: [u64; 2],
    pub commit: CommitMode,
    pub max_poll_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_poll_records: usize,
    pub static_members: bool,
    pub shared_client_id: bool,
}

impl Scenario {
    /// Fills every open knob from the seed. Drawn ranges stay within what a
    /// Kafka deployment could plausibly set, skewed towards small values that
    /// stress rolls, recovery and rebalances.
    pub fn resolve(&self, seed: u64) -> Resolved {
        let mut draw = Draw::new(child_seed(seed, "knobs"));
        let partitions = self
            .topology
            .partitions
            .unwrap_or_else(|| draw.range(1, 8) as i32);
        let segment_bytes = self
            .broker
            .segment_bytes
            .unwrap_or_else(|| *draw.pick(&[512, 4096, 65_536, 1 << 20]));
        let index_interval_bytes = self
            .broker
            .index_interval_bytes
            .unwrap_or_else(|| *draw.pick(&[64, 4096]));
        let flush_on_ack = self
            .broker
            .flush_on_ack
            .unwrap_or_else(|| draw.chance(1, 2));
        let flush_messages = self
            .broker
            .flush_messages
            .unwrap_or_else(|| *draw.pick(&[1, 100, u64::MAX]));
        let block_size = self
            .broker
            .block_size
            .unwrap_or_else(|| *draw.pick(&[0, 512, 4096]));
        let mut producers = Vec::new();
        for spec in &self.producers {
            for _ in 0..spec.count {
                let name = Topology::producer_name(producers.len() as u32);
                producers.push(ResolvedProducer {
                    name,
                    messages: spec.messages.unwrap_or_else(|| draw.range(50, 400) as u32),
                    rate_per_sec: spec
                        .rate_per_sec
                        .unwrap_or_else(|| draw.range(5, 200) as u32),
                    keys: spec.keys.unwrap_or_else(|| *draw.pick(&[0, 1, 10, 100])),
                    acks: spec.acks.clone().unwrap_or_else(|| "all".to_string()),
                    idempotence: spec.idempotence.unwrap_or(true),
                    linger_ms: spec.linger_ms.unwrap_or_else(|| *draw.pick(&[0, 5, 50])),
                    tombstone_percent: spec.tombstone_percent.unwrap_or(0).min(100),
                });
            }
        }
        let mut groups = Vec::new();
        let mut consumer_count = 0;
        for spec in &self.consumers {
            let members = (0..spec.count)
                .map(|_| {
                    consumer_count += 1;
                    Topology::consumer_name(consumer_count - 1)
                })
                .collect();
            let session_timeout_ms = spec
                .session_timeout_ms
                .unwrap_or_else(|| *draw.pick(&[6_000, 10_000, 45_000]));
            groups.push(ResolvedGroup {
                group: spec.group.clone(),
                members,
                processing_ms: spec.processing_ms.unwrap_or_else(|| {
                    let low = draw.range(0, 20);
                    [low, low + draw.range(0, 100)]
                }),
                commit: spec.commit.unwrap_or(if draw.chance(1, 2) {
                    CommitMode::Manual
                } else {
                    CommitMode::Auto
                }),
                max_poll_interval_ms: spec
                    .max_poll_interval_ms
                    .unwrap_or_else(|| *draw.pick(&[5_000, 30_000, 300_000])),
                session_timeout_ms,
                heartbeat_interval_ms: spec.heartbeat_interval_ms.unwrap_or(session_timeout_ms / 3),
                max_poll_records: spec
                    .max_poll_records
                    .unwrap_or_else(|| *draw.pick(&[1, 10, 500])),
                static_members: false,
                shared_client_id: false,
            });
        }
        // Knobs added later draw from their own streams, so the draws above
        // (and every seed's earlier configuration) stay as they were.
        let group_initial_rebalance_delay_ms = self
            .broker
            .group_initial_rebalance_delay_ms
            .unwrap_or_else(|| {
                *Draw::new(child_seed(seed, "initial-rebalance-delay")).pick(&[0, 3_000])
            });
        let mut identity = Draw::new(child_seed(seed, "group-identity"));
        for (group, spec) in groups.iter_mut().zip(&self.consumers) {
            group.static_members = spec.static_members.unwrap_or_else(|| identity.chance(1, 3));
            group.shared_client_id = spec
                .shared_client_id
                .unwrap_or_else(|| identity.chance(1, 3));
        }
        let fault_interval_ms = self.faults.interval_ms.unwrap_or_else(|| {
            let low = draw.range(500, 5_000);
            [low, low * 2]
        });
        let fault_duration_ms = self.faults.duration_ms.unwrap_or_else(|| {
            let low = draw.range(200, 5_000);
            [low, low * 3]
        });
        Resolved {
            name: self.name.clone(),
            seed,
            brokers: self.topology.brokers,
            partitions,
            replication_factor: self.topology.replication_factor,
            min_insync_replicas: self.broker.min_insync_replicas.unwrap_or(1),
            topic: self.topology.topic.clone(),
            segment_bytes,
            index_interval_bytes,
            flush_on_ack,
            flush_messages,
            flush_ms: self.broker.flush_ms.unwrap_or(SIM_FLUSH_MS_DEFAULT),
            replica_fetch_wait_max_ms: self
                .broker
                .replica_fetch_wait_max_ms
                .unwrap_or(REPLICA_FETCH_WAIT_MAX_MS_DEFAULT),
            block_size,
            group_initial_rebalance_delay_ms,
            compacted: self.broker.cleanup_policy.as_deref() == Some("compact"),
            delete_retention_ms: self
                .broker
                .delete_retention_ms
                .unwrap_or(DELETE_RETENTION_MS_DEFAULT),
            roll_ms: self.broker.roll_ms.unwrap_or(ROLL_MS_DEFAULT),
            cleaner_backoff_ms: self
                .broker
                .cleaner_backoff_ms
                .unwrap_or(CLEANER_BACKOFF_MS_DEFAULT),
            producers,
            groups,
            fault_kinds: self.faults.kinds.clone(),
            fault_aim: self.faults.aim,
            fault_interval_ms,
            fault_duration_ms,
            schedule: self.faults.schedule.clone(),
            fault_ms: self
                .phases
                .fault_ms
                .unwrap_or_else(|| draw.range(10_000, 60_000)),
            heal_ms: self.phases.heal_ms.unwrap_or(30_000),
            tick_ms: self.phases.tick_ms.unwrap_or(TICK_MS_DEFAULT).max(1),
            checkers: self.checkers.clone(),
        }
    }
}
