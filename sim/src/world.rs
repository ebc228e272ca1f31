//! One seeded run: builds the turmoil world from a resolved scenario, runs
//! the workload under the nemesis, heals, reads every partition back, and
//! returns the recorded history.
//!
//! Hosts: `broker-N` (the sluice broker on turmoil's filesystem),
//! `producer-N` and `consumer-N` (the sluice clients), and the client
//! `controller`, which waits out the fault and heal phases and then runs the
//! final reads. The nemesis acts between simulation steps, from the seed or a
//! scripted schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use sluice::client::{
    Acks, Admin, AutoOffsetReset, CommitOutcome, ConnectionConfig, Consumer, ConsumerConfig,
    GroupEvent, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use sluice::config::BrokerConfig;
use sluice::observe::Observed;

use crate::disk::{DiskStorage, SimDisk};
use crate::history::{Event, History, Op, PartitionOffset, Record, TopicPartition as HistoryTp};
use crate::recorder::{self, BrokerObserver, Recorder};
use crate::scenario::{
    child_seed, CommitMode, Draw, FaultKind, Resolved, ResolvedGroup, ResolvedProducer,
    ScheduledFault,
};
use crate::seams::{DiskFault, DiskFaults, FsyncLatency, SimClock, SimConnector, SimListener};

/// The fixed calendar epoch of every run: 2024-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_704_067_200;
const BROKER_PORT: u16 = 9092;
/// The final reads get this long after the heal phase before the run is
/// declared stuck (a liveness failure of the reader itself).
const FINAL_READ_BUDGET_MS: u64 = 60_000;
/// Hard cap on simulated time beyond the phases, so a wedged run ends.
const SIMULATION_SLACK_MS: u64 = 120_000;
/// Client request timeouts inside the simulation: short, so partitions are
/// noticed within a fault phase.
const CLIENT_REQUEST_TIMEOUT_MS: u64 = 3_000;
/// turmoil's default upper bound on message latency.
const LINK_MAX_LATENCY_MS: u64 = 100;
/// A slow link: seconds, beyond the clients' request timeout.
const SLOW_LINK_MAX_LATENCY_MS: u64 = 4_000;

fn broker_name(index: u32) -> String {
    format!("broker-{index}")
}

fn bootstrap(resolved: &Resolved) -> String {
    (0..resolved.brokers)
        .map(|i| format!("{}:{BROKER_PORT}", broker_name(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// State shared between the nemesis (outside the hosts) and the workloads.
#[derive(Default)]
pub struct Shared {
    /// Consumers that must stop the world until this simulated ms.
    paused_until_ms: Mutex<BTreeMap<String, u64>>,
    /// Set once the final reads are done: consumers leave and stop.
    stop: AtomicBool,
    /// Per producer: how many sends it has invoked, across restarts, so
    /// values stay unique.
    producer_progress: Mutex<BTreeMap<String, u32>>,
    /// Incarnations per host, for per-incarnation seeds.
    incarnations: Mutex<BTreeMap<String, u32>>,
    /// Set when the final reads completed.
    finished: AtomicBool,
    /// Disk faults the nemesis has switched on, by broker.
    disks: Arc<DiskFaults>,
    /// Each broker host's disk, which outlives its processes.
    drives: Mutex<BTreeMap<String, SimDisk>>,
    final_reads_failed: AtomicU32,
}

impl Shared {
    /// The disk of `host`, the same for every incarnation of its broker.
    fn drive(&self, host: &str) -> SimDisk {
        self.drives
            .lock()
            .expect("drives lock")
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    fn next_incarnation(&self, host: &str) -> u32 {
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

fn broker_config(resolved: &Resolved, index: u32) -> BrokerConfig {
    let mut config = BrokerConfig {
        node_id: index as i32,
        listener: format!("0.0.0.0:{BROKER_PORT}"),
        advertised_listener: Some(format!("{}:{BROKER_PORT}", broker_name(index))),
        log_dirs: "/data".into(),
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
    config.log.flush_ms = 1_000;
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
        observed,
    )
    .await?;
    let _background = broker.spawn_background();
    sluice::server::serve(broker, Box::new(listener)).await?;
    Ok(())
}

async fn ensure_topic(resolved: &Resolved) {
    let admin = Admin::new(
        &bootstrap(resolved),
        Arc::new(SimConnector),
        ConnectionConfig {
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            ..ConnectionConfig::default()
        },
    );
    loop {
        match admin
            .create_topic(&resolved.topic, resolved.partitions, 1, &[])
            .await
        {
            Ok(()) => return,
            Err(error)
                if error.to_string().contains("exists")
                    || error.to_string().contains("TopicAlreadyExists") =>
            {
                return
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn send_op(
    topic: &str,
    key: Option<String>,
    value: String,
    partition: Option<i32>,
    offset: Option<i64>,
) -> Op {
    Op::Send {
        topic: topic.to_string(),
        key,
        value,
        partition,
        offset,
    }
}

async fn run_producer(
    resolved: Arc<Resolved>,
    spec: ResolvedProducer,
    recorder: Recorder,
    shared: Arc<Shared>,
) -> turmoil::Result {
    let incarnation = shared.next_incarnation(&spec.name);
    let seed = child_seed(resolved.seed, &format!("{}/{incarnation}", spec.name));
    ensure_topic(&resolved).await;
    let producer = Producer::new(
        ProducerConfig {
            bootstrap_servers: bootstrap(&resolved),
            client_id: spec.name.clone(),
            acks: Acks::parse(&spec.acks).unwrap_or(Acks::All),
            linger_ms: spec.linger_ms,
            enable_idempotence: spec.idempotence,
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            delivery_timeout_ms: 30_000,
            seed,
            ..ProducerConfig::default()
        },
        Arc::new(SimConnector),
        Arc::new(SimClock),
    )?;
    let mut draw = Draw::new(seed);
    let gap = Duration::from_micros(1_000_000 / u64::from(spec.rate_per_sec.max(1)));
    loop {
        let sequence = {
            let mut progress = shared.producer_progress.lock().expect("progress lock");
            let next = progress.entry(spec.name.clone()).or_insert(0);
            if *next >= spec.messages {
                break;
            }
            *next += 1;
            *next - 1
        };
        let key = (spec.keys > 0).then(|| format!("k{}", draw.range(0, u64::from(spec.keys) - 1)));
        let value = format!("{}-{sequence}", spec.name);
        let op = send_op(&resolved.topic, key.clone(), value.clone(), None, None);
        let id = recorder.invoke(&spec.name, op.clone());
        let record = ProducerRecord::new(
            resolved.topic.clone(),
            key.clone().map(Bytes::from),
            Some(Bytes::from(value.clone())),
        );
        match producer.enqueue(record).await {
            Ok(delivery) => {
                let recorder = recorder.clone();
                let process = spec.name.clone();
                let topic = resolved.topic.clone();
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(metadata) => recorder.ok(
                            &process,
                            id,
                            send_op(
                                &topic,
                                key,
                                value,
                                Some(metadata.partition),
                                Some(metadata.offset),
                            ),
                        ),
                        Err(error) if error.outcome_unknown() => {
                            recorder.info(&process, id, op, error.to_string())
                        }
                        Err(error) => recorder.fail(&process, id, op, error.to_string()),
                    }
                });
            }
            Err(error) if error.outcome_unknown() => {
                recorder.info(&spec.name, id, op, error.to_string())
            }
            Err(error) => recorder.fail(&spec.name, id, op, error.to_string()),
        }
        tokio::time::sleep(gap).await;
    }
    producer.flush().await;
    // Stay up so in-flight deliveries finish and the host is crashable.
    std::future::pending::<()>().await;
    Ok(())
}

fn to_history_tp(tp: &TopicPartition) -> HistoryTp {
    HistoryTp {
        topic: tp.topic.clone(),
        partition: tp.partition,
    }
}

/// Records a group event the consumer reports, at the moment it happens.
/// Every offset commit the consumer makes, whoever asked for it (the
/// workload's `commit_sync`, an automatic commit, the commit before a
/// revocation or on close), is an invoke when its request is sent, with the
/// generation it carries, and a completion when its fate is known: `ok`
/// (applied), `fail` (refused) or `info` (unknown). A consumer that dies in
/// between leaves the commit unfinished, which the checkers allow for.
fn record_group_event(
    recorder: &Recorder,
    process: &str,
    commits: &Mutex<BTreeMap<u64, (u64, Op)>>,
    event: &GroupEvent,
) {
    match event {
        GroupEvent::Assigned {
            group_id,
            generation_id,
            member_id,
            partitions,
        } => recorder.complete(
            process,
            Op::Assign {
                group: group_id.clone(),
                generation: *generation_id,
                member: member_id.clone(),
                partitions: partitions.iter().map(to_history_tp).collect(),
            },
        ),
        GroupEvent::Revoked {
            group_id,
            generation_id,
            member_id,
            partitions,
        } => recorder.complete(
            process,
            Op::Revoke {
                group: group_id.clone(),
                generation: *generation_id,
                member: member_id.clone(),
                partitions: partitions.iter().map(to_history_tp).collect(),
            },
        ),
        GroupEvent::CommitSent {
            attempt,
            group_id,
            generation_id,
            member_id,
            offsets,
        } => {
            let op = Op::Commit {
                group: group_id.clone(),
                generation: *generation_id,
                member: member_id.clone(),
                offsets: offsets
                    .iter()
                    .map(|(tp, offset)| PartitionOffset {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: *offset,
                    })
                    .collect(),
            };
            let id = recorder.invoke(process, op.clone());
            commits
                .lock()
                .expect("commits lock")
                .insert(*attempt, (id, op));
        }
        GroupEvent::CommitDone { attempt, outcome } => {
            let Some((id, op)) = commits.lock().expect("commits lock").remove(attempt) else {
                return;
            };
            match outcome {
                CommitOutcome::Applied => recorder.ok(process, id, op),
                CommitOutcome::Rejected(error) => recorder.fail(process, id, op, error.clone()),
                CommitOutcome::Unknown(error) => recorder.info(process, id, op, error.clone()),
            }
        }
    }
}

fn to_record(record: &sluice::client::ConsumerRecord) -> Record {
    Record {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        key: record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        value: record
            .value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
    }
}

async fn run_consumer(
    resolved: Arc<Resolved>,
    group: ResolvedGroup,
    name: String,
    recorder: Recorder,
    shared: Arc<Shared>,
) -> turmoil::Result {
    let incarnation = shared.next_incarnation(&name);
    let mut draw = Draw::new(child_seed(resolved.seed, &format!("{name}/{incarnation}")));
    ensure_topic(&resolved).await;
    let mut consumer = Consumer::new(
        ConsumerConfig {
            bootstrap_servers: bootstrap(&resolved),
            // Members may share one client.id, as replicas of one service do;
            // member ids must still be unique.
            client_id: if group.shared_client_id {
                group.group.clone()
            } else {
                name.clone()
            },
            group_id: Some(group.group.clone()),
            // A static member's identity is its host: a restarted consumer
            // comes back as the same instance.
            group_instance_id: group.static_members.then(|| name.clone()),
            auto_offset_reset: AutoOffsetReset::Earliest,
            enable_auto_commit: group.commit == CommitMode::Auto,
            auto_commit_interval_ms: 1_000,
            session_timeout_ms: group.session_timeout_ms,
            heartbeat_interval_ms: group.heartbeat_interval_ms,
            max_poll_interval_ms: group.max_poll_interval_ms,
            max_poll_records: group.max_poll_records,
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            default_api_timeout_ms: 10_000,
            ..ConsumerConfig::default()
        },
        Arc::new(SimConnector),
        Arc::new(SimClock),
    )?;
    {
        let (recorder, process) = (recorder.clone(), name.clone());
        // Commit attempts in flight: attempt -> (history id, op).
        let commits = Mutex::new(BTreeMap::new());
        consumer.set_group_observer(Box::new(move |event| {
            record_group_event(&recorder, &process, &commits, event)
        }));
    }
    consumer.subscribe(vec![resolved.topic.clone()], None)?;
    let group_name = Some(group.group.clone());
    let mut corrupt_partitions = BTreeSet::new();
    while !shared.stop.load(Ordering::Acquire) {
        let pause_until = shared
            .paused_until_ms
            .lock()
            .expect("pause lock")
            .get(&name)
            .copied();
        if let Some(until) = pause_until {
            let now = recorder::now_ms();
            if until > now {
                tokio::time::sleep(Duration::from_millis(until - now)).await;
            }
        }
        let id = recorder.invoke(
            &name,
            Op::Poll {
                group: group_name.clone(),
                records: Vec::new(),
            },
        );
        let polled = consumer.poll(Duration::from_millis(500)).await;
        // Group events were recorded by the observer as they happened; the
        // queue is drained only to keep it from filling.
        let _ = consumer.drain_group_events();
        let records = match polled {
            Ok(records) => records,
            Err(error) => {
                if corrupt_partitions.len() < CORRUPT_PARTITIONS_RECORDED_MAX {
                    record_corrupt_read(&recorder, &name, &error, &mut corrupt_partitions);
                }
                recorder.fail(
                    &name,
                    id,
                    Op::Poll {
                        group: group_name.clone(),
                        records: Vec::new(),
                    },
                    error.to_string(),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let seen: Vec<Record> = records.iter().map(to_record).collect();
        recorder.ok(
            &name,
            id,
            Op::Poll {
                group: group_name.clone(),
                records: seen.clone(),
            },
        );
        let mut next_offsets: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for record in seen {
            let work_ms = draw.range(group.processing_ms[0], group.processing_ms[1]);
            if work_ms > 0 {
                tokio::time::sleep(Duration::from_millis(work_ms)).await;
            }
            next_offsets.insert(
                TopicPartition::new(record.topic.clone(), record.partition),
                record.offset + 1,
            );
            recorder.complete(
                &name,
                Op::Process {
                    group: group_name.clone(),
                    record,
                },
            );
        }
        if group.commit == CommitMode::Manual && !next_offsets.is_empty() {
            // Each attempt is recorded by the group observer when it is sent.
            if let Err(error) = consumer.commit_sync(Some(next_offsets)).await {
                tracing::debug!(%error, "commit_sync failed");
            }
        }
        let _ = consumer.drain_group_events();
    }
    let _ = consumer.close().await;
    std::future::pending::<()>().await;
    Ok(())
}

/// A consumer records each partition it found corrupt at most once per
/// incarnation (a corrupt batch stays put, so every poll trips over it), and
/// at most this many partitions.
const CORRUPT_PARTITIONS_RECORDED_MAX: usize = 64;

/// Records a `CorruptRead` event if `error` says a fetched batch was corrupt
/// and `seen` does not yet hold its partition.
fn record_corrupt_read(
    recorder: &Recorder,
    process: &str,
    error: &sluice::client::ClientError,
    seen: &mut BTreeSet<(String, i32)>,
) {
    if let sluice::client::ClientError::CorruptRecords {
        topic,
        partition,
        message,
    } = error
    {
        if seen.insert((topic.clone(), *partition)) {
            recorder.event_at(
                recorder::now_ms(),
                process,
                Event::CorruptRead {
                    topic: topic.clone(),
                    partition: *partition,
                    detail: message.clone(),
                },
            );
        }
    }
}

/// Reads every partition from its log start to its end with a fresh consumer.
async fn final_reads(resolved: &Resolved, recorder: &Recorder) -> bool {
    let process = "final-reader";
    let mut consumer = match Consumer::new(
        ConsumerConfig {
            bootstrap_servers: bootstrap(resolved),
            client_id: process.to_string(),
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            max_poll_records: 10_000,
            ..ConsumerConfig::default()
        },
        Arc::new(SimConnector),
        Arc::new(SimClock),
    ) {
        Ok(consumer) => consumer,
        Err(_) => return false,
    };
    let mut all_read = true;
    for partition in 0..resolved.partitions {
        let tp = TopicPartition::new(resolved.topic.clone(), partition);
        let target = HistoryTp {
            topic: resolved.topic.clone(),
            partition,
        };
        let op = Op::FinalRead {
            target: target.clone(),
            log_start_offset: -1,
            records: Vec::new(),
        };
        let id = recorder.invoke(process, op.clone());
        let outcome: Result<(i64, Vec<Record>), String> = async {
            let tps = vec![tp.clone()];
            consumer.assign(tps.clone()).map_err(|e| e.to_string())?;
            let start = *consumer
                .beginning_offsets(&tps)
                .await
                .map_err(|e| e.to_string())?
                .get(&tp)
                .unwrap_or(&0);
            let end = *consumer
                .end_offsets(&tps)
                .await
                .map_err(|e| e.to_string())?
                .get(&tp)
                .unwrap_or(&0);
            consumer.seek(&tp, start).map_err(|e| e.to_string())?;
            let mut records = Vec::new();
            let mut position = start;
            while position < end {
                let polled = consumer
                    .poll(Duration::from_millis(500))
                    .await
                    .map_err(|e| {
                        record_corrupt_read(recorder, process, &e, &mut BTreeSet::new());
                        e.to_string()
                    })?;
                for record in &polled {
                    position = position.max(record.offset + 1);
                    records.push(to_record(record));
                }
            }
            Ok((start, records))
        }
        .await;
        match outcome {
            Ok((log_start_offset, records)) => {
                recorder.ok(
                    process,
                    id,
                    Op::FinalRead {
                        target,
                        log_start_offset,
                        records,
                    },
                );
            }
            Err(error) => {
                all_read = false;
                recorder.fail(process, id, op, error);
            }
        }
    }
    all_read
}

/// A fault in progress and how to undo it.
struct ActiveFault {
    heal_at_ms: u64,
    kind: FaultKind,
    target: String,
    peer: Option<String>,
}

fn client_hosts(resolved: &Resolved) -> Vec<String> {
    let mut hosts: Vec<String> = resolved.producers.iter().map(|p| p.name.clone()).collect();
    hosts.extend(
        resolved
            .groups
            .iter()
            .flat_map(|g| g.members.iter().cloned()),
    );
    hosts
}

fn consumer_hosts(resolved: &Resolved) -> Vec<String> {
    resolved
        .groups
        .iter()
        .flat_map(|g| g.members.iter().cloned())
        .collect()
}

/// Every host the target could have a connection to.
fn peers_of(resolved: &Resolved, target: &str) -> Vec<String> {
    let mut everyone: Vec<String> = (0..resolved.brokers).map(broker_name).collect();
    everyone.extend(client_hosts(resolved));
    everyone.push("controller".to_string());
    everyone.retain(|host| host != target);
    everyone
}

/// Cuts every link of `target`. Done before a crash or restart: tearing a
/// host down drops its sockets in an order tokio derives from process-wide
/// task ids, and each FIN or RST would draw from the simulation's random
/// generator, so the run would depend on what ran before it in the process.
/// A machine losing power sends nothing anyway; its peers find out by
/// timeout, as in production.
fn cut_links(sim: &mut turmoil::Sim<'_>, resolved: &Resolved, target: &str) {
    for peer in peers_of(resolved, target) {
        sim.partition(target, peer.as_str());
    }
}

fn mend_links(sim: &mut turmoil::Sim<'_>, resolved: &Resolved, target: &str) {
    for peer in peers_of(resolved, target) {
        sim.repair(target, peer.as_str());
    }
}

/// A fault to start: what, on whom (drawn when `None`), for how long.
struct FaultPlan {
    kind: FaultKind,
    target: Option<String>,
    duration_ms: u64,
}

struct Nemesis {
    draw: Draw,
    next_fault_ms: u64,
    schedule: Vec<ScheduledFault>,
    active: Vec<ActiveFault>,
    healed: bool,
    faults: u32,
    /// Every fault started, as a script that replays it.
    started: Vec<ScheduledFault>,
}

impl Nemesis {
    fn new(resolved: &Resolved) -> Self {
        let mut draw = Draw::new(child_seed(resolved.seed, "nemesis"));
        let first = draw.range(resolved.fault_interval_ms[0], resolved.fault_interval_ms[1]);
        let mut schedule = resolved.schedule.clone();
        schedule.sort_by_key(|fault| std::cmp::Reverse(fault.at_ms));
        Self {
            draw,
            next_fault_ms: first,
            schedule,
            active: Vec::new(),
            healed: false,
            faults: 0,
            started: Vec::new(),
        }
    }

    fn start(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
        plan: FaultPlan,
    ) {
        let FaultPlan {
            kind,
            target,
            duration_ms,
        } = plan;
        let brokers: Vec<String> = (0..resolved.brokers).map(broker_name).collect();
        let clients = client_hosts(resolved);
        let consumers = consumer_hosts(resolved);
        let pick = |draw: &mut Draw, from: &[String]| -> Option<String> {
            (!from.is_empty()).then(|| draw.pick(from).clone())
        };
        let target = match (&target, kind) {
            (Some(target), _) => Some(target.clone()),
            (
                None,
                FaultKind::CrashBroker
                | FaultKind::RestartBroker
                | FaultKind::DiskFull
                | FaultKind::DiskErrors,
            ) => pick(&mut self.draw, &brokers),
            (None, FaultKind::PauseConsumer) => pick(&mut self.draw, &consumers),
            (None, FaultKind::Isolate) => {
                let mut everyone = brokers.clone();
                everyone.extend(clients.iter().cloned());
                pick(&mut self.draw, &everyone)
            }
            (None, _) => pick(&mut self.draw, &clients),
        };
        let Some(target) = target else { return };
        // Never stack two faults on one host: undoing them would interleave.
        if self.active.iter().any(|fault| fault.target == target) {
            return;
        }
        let peer = brokers.first().cloned();
        let mut power_loss = false;
        match kind {
            FaultKind::Partition => {
                sim.partition(target.as_str(), peer.as_deref().unwrap_or("broker-0"))
            }
            FaultKind::PartitionOneway => {
                sim.partition_oneway(target.as_str(), peer.as_deref().unwrap_or("broker-0"))
            }
            FaultKind::Isolate => {
                for other in brokers
                    .iter()
                    .chain(clients.iter())
                    .filter(|h| **h != target)
                {
                    sim.partition(target.as_str(), other.as_str());
                }
            }
            FaultKind::Delay => sim.hold(target.as_str(), peer.as_deref().unwrap_or("broker-0")),
            FaultKind::CrashBroker | FaultKind::CrashClient => {
                power_loss = kind == FaultKind::CrashBroker;
                cut_links(sim, resolved, &target);
                sim.crash(target.as_str());
                if power_loss {
                    // The machine loses power: its disk keeps only what was
                    // synced (and torn blocks of what was being written).
                    let mut draw = Draw::new(child_seed(
                        resolved.seed,
                        &format!("power-loss/{target}/{now_ms}"),
                    ));
                    shared
                        .drive(&target)
                        .power_loss(resolved.block_size, &mut draw);
                }
            }
            FaultKind::RestartBroker => {
                cut_links(sim, resolved, &target);
                sim.bounce(target.as_str());
                mend_links(sim, resolved, &target);
            }
            FaultKind::PauseConsumer => {
                shared
                    .paused_until_ms
                    .lock()
                    .expect("pause lock")
                    .insert(target.clone(), now_ms + duration_ms);
            }
            FaultKind::SlowNetwork => {
                let slow = Duration::from_millis(SLOW_LINK_MAX_LATENCY_MS);
                sim.set_link_max_message_latency(
                    target.as_str(),
                    peer.as_deref().unwrap_or("broker-0"),
                    slow,
                );
            }
            FaultKind::DiskFull => shared.disks.set(&target, Some(DiskFault::Full)),
            FaultKind::DiskErrors => shared.disks.set(&target, Some(DiskFault::IoErrors)),
        }
        self.faults += 1;
        self.started.push(ScheduledFault {
            at_ms: now_ms,
            kind,
            target: Some(target.clone()),
            duration_ms,
        });
        recorder.event_at(
            now_ms,
            "nemesis",
            Event::Fault {
                kind,
                target: target.clone(),
                power_loss,
                healed: false,
            },
        );
        self.active.push(ActiveFault {
            heal_at_ms: now_ms + duration_ms,
            kind,
            target,
            peer,
        });
    }

    fn undo(
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
        fault: ActiveFault,
    ) {
        let peer = fault.peer.as_deref().unwrap_or("broker-0");
        match fault.kind {
            FaultKind::Partition => sim.repair(fault.target.as_str(), peer),
            FaultKind::PartitionOneway => sim.repair_oneway(fault.target.as_str(), peer),
            FaultKind::Isolate => {
                let mut everyone: Vec<String> = (0..resolved.brokers).map(broker_name).collect();
                everyone.extend(client_hosts(resolved));
                for other in everyone.iter().filter(|h| **h != fault.target) {
                    sim.repair(fault.target.as_str(), other.as_str());
                }
            }
            FaultKind::Delay => sim.release(fault.target.as_str(), peer),
            FaultKind::CrashBroker | FaultKind::CrashClient => {
                sim.bounce(fault.target.as_str());
                mend_links(sim, resolved, &fault.target);
            }
            FaultKind::RestartBroker => {}
            FaultKind::PauseConsumer => {
                shared
                    .paused_until_ms
                    .lock()
                    .expect("pause lock")
                    .remove(&fault.target);
            }
            FaultKind::SlowNetwork => {
                let normal = Duration::from_millis(LINK_MAX_LATENCY_MS);
                sim.set_link_max_message_latency(fault.target.as_str(), peer, normal);
            }
            FaultKind::DiskFull | FaultKind::DiskErrors => {
                // A partition that hit a storage error stays offline until
                // the broker restarts and recovers it, as in Kafka.
                shared.disks.set(&fault.target, None);
                cut_links(sim, resolved, &fault.target);
                sim.bounce(fault.target.as_str());
                mend_links(sim, resolved, &fault.target);
            }
        }
        recorder.event_at(
            now_ms,
            "nemesis",
            Event::Fault {
                kind: fault.kind,
                target: fault.target,
                power_loss: false,
                healed: true,
            },
        );
    }

    fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
    ) {
        let (due, remaining): (Vec<ActiveFault>, Vec<ActiveFault>) =
            std::mem::take(&mut self.active)
                .into_iter()
                .partition(|f| f.heal_at_ms <= now_ms || now_ms >= resolved.fault_ms);
        self.active = remaining;
        for fault in due {
            Self::undo(sim, resolved, shared, recorder, now_ms, fault);
        }
        if now_ms >= resolved.fault_ms {
            if !self.healed {
                self.healed = true;
                recorder.event_at(now_ms, "nemesis", Event::Heal);
            }
            return;
        }
        while self.schedule.last().is_some_and(|f| f.at_ms <= now_ms) {
            let fault = self.schedule.pop().expect("checked");
            self.start(
                sim,
                resolved,
                shared,
                recorder,
                now_ms,
                FaultPlan {
                    kind: fault.kind,
                    target: fault.target,
                    duration_ms: fault.duration_ms,
                },
            );
        }
        if resolved.schedule.is_empty()
            && !resolved.fault_kinds.is_empty()
            && now_ms >= self.next_fault_ms
        {
            let kind = *self.draw.pick(&resolved.fault_kinds);
            let duration = self
                .draw
                .range(resolved.fault_duration_ms[0], resolved.fault_duration_ms[1]);
            self.start(
                sim,
                resolved,
                shared,
                recorder,
                now_ms,
                FaultPlan {
                    kind,
                    target: None,
                    duration_ms: duration,
                },
            );
            self.next_fault_ms = now_ms
                + self
                    .draw
                    .range(resolved.fault_interval_ms[0], resolved.fault_interval_ms[1]);
        }
    }
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
        let name = broker_name(index);
        let host = name.clone();
        let recorder = recorder.clone();
        let (shared, seed) = (Arc::clone(&shared), resolved.seed);
        sim.host(host.as_str(), move || {
            let incarnation = shared.next_incarnation(&name);
            run_broker(
                config.clone(),
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
        sim.client("controller", async move {
            let wait = resolved.fault_ms + resolved.heal_ms;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let complete = final_reads(&resolved, &recorder).await;
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
