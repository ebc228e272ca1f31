//! One seeded run: builds the turmoil world from a resolved scenario, runs
//! the workload under the nemesis, heals, reads every partition back, and
//! returns the recorded history.
//!
//! Hosts ([`Topology`]): `broker-N` (the sluice broker on turmoil's
//! filesystem), `producer-N` and `consumer-N` (the sluice clients, running
//! [`workloads`](crate::workloads)), and the client `final-reader`, which
//! waits out the fault and heal phases and then runs the final reads. The
//! [`Nemesis`] acts between simulation steps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use sluice::config::BrokerConfig;
use sluice::observe::Observed;

use crate::disk::{DiskStorage, SimDisk};
use crate::history::{Event, History};
use crate::nemesis::Nemesis;
use crate::recorder::{BrokerObserver, Recorder};
use crate::scenario::{child_seed, Resolved, ScheduledFault};
use crate::seams::{DiskFaults, FsyncLatency, SimClock, SimConnector, SimListener};
use crate::topology::{Topology, BROKER_LOG_DIR, BROKER_PORT, READER_HOST};
use crate::workloads::{final_reads, replica_logs, run_consumer, run_producer};

/// The fixed calendar epoch of every run: 2024-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_704_067_200;
/// The final reads get this long after the heal phase before the run is
/// declared stuck (a liveness failure of the reader itself).
const FINAL_READ_BUDGET_MS: u64 = 60_000;
/// Hard cap on simulated time beyond the phases, so a wedged run ends.
const SIMULATION_SLACK_MS: u64 = 120_000;
/// turmoil's default upper bound on message latency.
pub(crate) const LINK_MAX_LATENCY_MS: u64 = 100;

/// State shared between the nemesis (outside the hosts) and the workloads.
#[derive(Default)]
pub struct Shared {
    /// Consumers that must stop the world until this simulated ms.
    pub(crate) paused_until_ms: Mutex<BTreeMap<String, u64>>,
    /// Set once the final reads are done: consumers leave and stop.
    pub(crate) stop: AtomicBool,
    /// Per producer: how many sends it has invoked, across restarts, so
    /// values stay unique.
    pub(crate) producer_progress: Mutex<BTreeMap<String, u32>>,
    /// Incarnations per host, for per-incarnation seeds.
    pub(crate) incarnations: Mutex<BTreeMap<String, u32>>,
    /// Set when the final reads completed.
    pub(crate) finished: AtomicBool,
    /// Disk faults the nemesis has switched on, by broker.
    pub(crate) disks: Arc<DiskFaults>,
    /// Each broker host's disk, which outlives its processes.
    pub(crate) drives: Mutex<BTreeMap<String, SimDisk>>,
    pub(crate) final_reads_failed: AtomicU32,
}

impl Shared {
    /// The disk of `host`, the same for every incarnation of its broker.
    pub(crate) fn drive(&self, host: &str) -> SimDisk {
        self.drives
            .lock()
            .expect("drives lock")
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn next_incarnation(&self, host: &str) -> u32 {
        let mut incarnations = self.incarnations.lock().expect("incarnations lock");
        let next = incarnations.entry(host.to_string()).or_insert(0);
        *next += 1;
        *next
    }
}

pub struct RunResult {
    pub history: History,
    pub steps: u64,
    pub simulated_ms: u64,
    /// The run ended because simulated time ran out before the final reads.
    pub stuck: bool,
    pub faults: u32,
    /// The faults the nemesis started, as a schedule that replays them.
    pub faults_started: Vec<ScheduledFault>,
}

/// `broker.session.timeout.ms`, `broker.heartbeat.interval.ms` and
/// `replica.lag.time.max.ms` in the simulation, scaled down with its faults.
const SIM_BROKER_SESSION_TIMEOUT_MS: i64 = 3_000;
const SIM_BROKER_HEARTBEAT_INTERVAL_MS: u64 = 500;
const SIM_REPLICA_LAG_TIME_MAX_MS: i64 = 3_000;
/// Kafka's 300 s would never hand a partition back to its preferred leader
/// within a run; 10 s does, after most faults, so runs also move
/// leadership away from a live leader.
const SIM_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: u64 = 10;

fn broker_config(resolved: &Resolved, index: u32) -> BrokerConfig {
    let mut config = BrokerConfig {
        node_id: index as i32,
        listener: format!("0.0.0.0:{BROKER_PORT}"),
        advertised_listener: Some(format!("{}:{BROKER_PORT}", Topology::broker_name(index))),
        log_dirs: BROKER_LOG_DIR.into(),
        num_partitions: resolved.partitions,
        group_initial_rebalance_delay_ms: resolved.group_initial_rebalance_delay_ms as i64,
        group_min_session_timeout_ms: 1_000,
        log_retention_check_interval_ms: 5_000,
        log_flush_scheduler_interval_ms: 200,
        ..BrokerConfig::default()
    };
    config.log.segment_bytes = resolved.segment_bytes;
    config.log.index_interval_bytes = resolved.index_interval_bytes;
    config.log.flush_on_ack = resolved.flush_on_ack;
    config.log.flush_messages = if resolved.flush_on_ack {
        u64::MAX
    } else {
        resolved.flush_messages
    };
    config.log.flush_ms = resolved.flush_ms as i64;
    config.min_insync_replicas = resolved.min_insync_replicas;
    if resolved.compacted {
        config.log.cleanup_policy = sluice::log::CleanupPolicy::COMPACT;
    }
    config.log.delete_retention_ms =
        i64::try_from(resolved.delete_retention_ms).unwrap_or(i64::MAX);
    config.log.roll_ms = i64::try_from(resolved.roll_ms).unwrap_or(i64::MAX);
    config.log_cleaner_backoff_ms = resolved.cleaner_backoff_ms;
    // The cleaner runs where a scenario compacts its topic (and then
    // compacts `__consumer_offsets` too). Elsewhere its task would only
    // reshuffle the schedule of every seed recorded before it existed.
    config.log_cleaner_enable = resolved.compacted;
    // The groups' offsets are replicated as the workload's topic is.
    config.offsets_topic_replication_factor = resolved.replication_factor;
    // Faults last half a second to a few seconds and runs a minute: with
    // Kafka's defaults (a 9 s session, a 30 s lag limit) a failover would
    // outlast most faults and an ISR would never shrink within a run.
    config.broker_session_timeout_ms = SIM_BROKER_SESSION_TIMEOUT_MS;
    config.broker_heartbeat_interval_ms = SIM_BROKER_HEARTBEAT_INTERVAL_MS;
    config.replica_lag_time_max_ms = SIM_REPLICA_LAG_TIME_MAX_MS;
    config.replica_fetch_wait_max_ms =
        i32::try_from(resolved.replica_fetch_wait_max_ms).unwrap_or(i32::MAX);
    config.leader_imbalance_check_interval_seconds = SIM_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS;
    if resolved.brokers > 1 {
        // Every broker is a voter, reached at its one listener.
        config.controller_quorum_voters = (0..resolved.brokers)
            .map(|i| {
                (
                    i as i32,
                    format!("{}:{BROKER_PORT}", Topology::broker_name(i)),
                )
            })
            .collect();
    }
    config
}

async fn run_broker(
    config: BrokerConfig,
    name: String,
    shared: Arc<Shared>,
    recorder: Recorder,
    fsync_seed: u64,
) -> turmoil::Result {
    let listener = SimListener::bind(&name, BROKER_PORT).await?;
    let storage = DiskStorage::new(
        shared.drive(&name),
        Arc::clone(&shared.disks),
        &name,
        FsyncLatency::new(fsync_seed),
    );
    let observed = Observed::new(Some(Arc::new(BrokerObserver::new(&recorder, &name))));
    let broker = sluice::broker::Broker::open_observed(
        config,
        Arc::new(storage),
        Arc::new(SimClock),
        Arc::new(SimConnector),
        observed,
    )
    .await?;
    let _background = broker.spawn_background();
    sluice::server::serve(broker, Box::new(listener)).await?;
    Ok(())
}

/// Runs one seed of a resolved scenario to completion. With `wire`, the
/// history also holds every request and response the brokers saw.
pub fn run(resolved: &Resolved, wire: bool) -> RunResult {
    let recorder = Recorder::with_wire(wire);
    let shared = Arc::new(Shared::default());
    let resolved = Arc::new(resolved.clone());
    recorder.event_at(
        0,
        "nemesis",
        Event::Meta {
            scenario: resolved.name.clone(),
            seed: resolved.seed,
            flush_on_ack: resolved.flush_on_ack,
            idempotence: resolved.producers.iter().all(|p| p.idempotence),
            checkers: resolved.checkers.clone(),
            group_initial_rebalance_delay_ms: resolved.group_initial_rebalance_delay_ms,
            replication_factor: resolved.replication_factor,
            acks_all: resolved.producers.iter().all(|p| p.acks == "all"),
            min_insync_replicas: i16::try_from(resolved.min_insync_replicas).unwrap_or(i16::MAX),
            replica_lag_time_max_ms: if resolved.brokers > 1 {
                SIM_REPLICA_LAG_TIME_MAX_MS as u64
            } else {
                0
            },
            compacted: resolved.compacted,
            delete_retention_ms: resolved.delete_retention_ms,
        },
    );
    let duration_ms =
        resolved.fault_ms + resolved.heal_ms + FINAL_READ_BUDGET_MS + SIMULATION_SLACK_MS;
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(child_seed(resolved.seed, "turmoil"))
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(Duration::from_millis(duration_ms))
        .tick_duration(Duration::from_millis(resolved.tick_ms))
        .max_message_latency(Duration::from_millis(LINK_MAX_LATENCY_MS))
        .tcp_capacity(4096);
    let mut sim = builder.build();
    for index in 0..resolved.brokers {
        let config = broker_config(&resolved, index);
        let name = Topology::broker_name(index);
        let host = name.clone();
        let recorder = recorder.clone();
        let (shared, seed) = (Arc::clone(&shared), resolved.seed);
        sim.host(host.as_str(), move || {
            let incarnation = shared.next_incarnation(&name);
            let mut config = config.clone();
            config.quorum_seed = child_seed(seed, &format!("{name}/{incarnation}/quorum"));
            run_broker(
                config,
                name.clone(),
                Arc::clone(&shared),
                recorder.clone(),
                child_seed(seed, &format!("{name}/{incarnation}/fsync")),
            )
        });
    }
    for spec in resolved.producers.clone() {
        let (resolved, recorder, shared) = (resolved.clone(), recorder.clone(), shared.clone());
        sim.host(spec.name.clone().as_str(), move || {
            run_producer(
                resolved.clone(),
                spec.clone(),
                recorder.clone(),
                shared.clone(),
            )
        });
    }
    for group in resolved.groups.clone() {
        for member in group.members.clone() {
            let (resolved, recorder, shared, group) = (
                resolved.clone(),
                recorder.clone(),
                shared.clone(),
                group.clone(),
            );
            sim.host(member.clone().as_str(), move || {
                run_consumer(
                    resolved.clone(),
                    group.clone(),
                    member.clone(),
                    recorder.clone(),
                    shared.clone(),
                )
            });
        }
    }
    {
        let (resolved, recorder, shared) = (resolved.clone(), recorder.clone(), shared.clone());
        sim.client(READER_HOST, async move {
            let wait = resolved.fault_ms + resolved.heal_ms;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let mut complete = final_reads(&resolved, &recorder).await;
            if resolved.brokers > 1 {
                complete &= replica_logs(&resolved, &recorder, &shared).await;
            }
            if !complete {
                shared.final_reads_failed.fetch_add(1, Ordering::Relaxed);
            }
            shared.stop.store(true, Ordering::Release);
            // Let consumers leave their groups before the world stops.
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            shared.finished.store(true, Ordering::Release);
            Ok(())
        });
    }
    let mut nemesis = Nemesis::new(&resolved);
    let mut steps = 0u64;
    let mut stuck = false;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        nemesis.step(&mut sim, &resolved, &shared, &recorder, now_ms);
        steps += 1;
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                stuck = !shared.finished.load(Ordering::Acquire);
                tracing::debug!(%error, "simulation ended");
                break;
            }
        }
    }
    RunResult {
        history: recorder.entries(),
        steps,
        simulated_ms: sim.elapsed().as_millis() as u64,
        stuck: stuck || shared.final_reads_failed.load(Ordering::Relaxed) > 0,
        faults: nemesis.faults,
        faults_started: nemesis.started,
    }
}
