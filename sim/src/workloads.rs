//! The workloads each client host runs, and the final reads: a producer
//! sending numbered values, a consumer in a group polling, processing and
//! committing, and the reader that reads every partition back once the
//! faults have healed. Each records what it invokes and what came of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice::client::{
    Acks, Admin, AutoOffsetReset, CommitOutcome, ConnectionConfig, Consumer, ConsumerConfig,
    GroupEvent, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

use crate::history::{
    Event, Op, PartitionOffset, Record, ReplicaBatch, TopicPartition as HistoryTp,
};
use crate::recorder::{self, Recorder};
use crate::scenario::{child_seed, CommitMode, Draw, Resolved, ResolvedGroup, ResolvedProducer};
use crate::seams::{SimClock, SimConnector};
use crate::topology::{Topology, BROKER_LOG_DIR, READER_HOST};
use crate::world::Shared;

/// Client request timeouts inside the simulation: short, so partitions are
/// noticed within a fault phase.
const CLIENT_REQUEST_TIMEOUT_MS: u64 = 3_000;

async fn ensure_topic(resolved: &Resolved) {
    let admin = Admin::new(
        &Topology::of(resolved).bootstrap(),
        Arc::new(SimConnector),
        ConnectionConfig {
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            ..ConnectionConfig::default()
        },
    );
    loop {
        match admin
            .create_topic(
                &resolved.topic,
                resolved.partitions,
                resolved.replication_factor,
                &[],
            )
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

/// The record header that carries a tombstone's send value, so the
/// checkers can tell which send a null value came from.
const SIM_ID_HEADER: &str = "sim-id";

fn send_op(
    topic: &str,
    key: Option<String>,
    value: String,
    at: Option<(i32, i64)>,
    tombstone: bool,
) -> Op {
    Op::Send {
        topic: topic.to_string(),
        key,
        value,
        partition: at.map(|(partition, _)| partition),
        offset: at.map(|(_, offset)| offset),
        tombstone,
    }
}

pub(crate) async fn run_producer(
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
            bootstrap_servers: Topology::of(&resolved).bootstrap(),
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
        // Drawn only when asked for, so other scenarios' draws stay as they were.
        let tombstone = key.is_some()
            && spec.tombstone_percent > 0
            && draw.range(0, 99) < u64::from(spec.tombstone_percent);
        let op = send_op(&resolved.topic, key.clone(), value.clone(), None, tombstone);
        let id = recorder.invoke(&spec.name, op.clone());
        let mut record = ProducerRecord::new(
            resolved.topic.clone(),
            key.clone().map(Bytes::from),
            (!tombstone).then(|| Bytes::from(value.clone())),
        );
        if tombstone {
            record.headers.push(sluice::client::Header {
                key: SIM_ID_HEADER.to_string(),
                value: Some(Bytes::from(value.clone())),
            });
        }
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
                                Some((metadata.partition, metadata.offset)),
                                tombstone,
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
            .or_else(|| {
                record
                    .headers
                    .iter()
                    .find(|header| header.key == SIM_ID_HEADER)
                    .and_then(|header| header.value.as_ref())
            })
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        tombstone: record.value.is_none(),
    }
}

pub(crate) async fn run_consumer(
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
            bootstrap_servers: Topology::of(&resolved).bootstrap(),
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
    // What was processed and not yet committed, as an application that
    // commits manually keeps it: a failed commit is retried with the next
    // one, so a partition that gets no more records is still committed.
    let mut uncommitted: BTreeMap<TopicPartition, i64> = BTreeMap::new();
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
        // queue is drained to keep it from filling, and a rebalance in it
        // makes what was left uncommitted someone else's business: the
        // group resumes from its committed offsets.
        if !consumer.drain_group_events().is_empty() {
            uncommitted.clear();
        }
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
        if group.commit == CommitMode::Manual {
            uncommitted.extend(next_offsets);
            // A partition given away in a rebalance is its new owner's to
            // commit.
            let owned = consumer.assignment().to_vec();
            uncommitted.retain(|tp, _| owned.contains(tp));
            if !uncommitted.is_empty() {
                // Each attempt is recorded by the group observer when it is
                // sent.
                match consumer.commit_sync(Some(uncommitted.clone())).await {
                    Ok(()) => uncommitted.clear(),
                    Err(error) => tracing::debug!(%error, "commit_sync failed"),
                }
            }
        }
        if !consumer.drain_group_events().is_empty() {
            uncommitted.clear();
        }
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
pub(crate) async fn final_reads(resolved: &Resolved, recorder: &Recorder) -> bool {
    let process = READER_HOST;
    let mut consumer = match Consumer::new(
        ConsumerConfig {
            bootstrap_servers: Topology::of(resolved).bootstrap(),
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
                    records.push(to_record(record));
                }
                // The consumer's position, not the last record's offset: a
                // compacted log's batches may end in offsets with no record.
                position = consumer.position(&tp).await.map_err(|e| e.to_string())?;
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

/// How long the replica read waits for the metadata naming each partition's
/// replicas and ISR.
const REPLICA_READ_METADATA_WAIT_MS: u64 = 5_000;

/// After the final reads: every broker's replica of every partition of the
/// topic, read from its disk directly, as `replica_log` events. Judged by
/// `replica-agreement`. Returns false when the metadata could not be read.
pub(crate) async fn replica_logs(
    resolved: &Resolved,
    recorder: &Recorder,
    shared: &Shared,
) -> bool {
    let admin = Admin::new(
        &Topology::of(resolved).bootstrap(),
        Arc::new(SimConnector),
        ConnectionConfig {
            client_id: READER_HOST.to_string(),
            request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
            ..ConnectionConfig::default()
        },
    );
    let Ok(info) = admin
        .cluster()
        .topic_info(
            &resolved.topic,
            false,
            Duration::from_millis(REPLICA_READ_METADATA_WAIT_MS),
        )
        .await
    else {
        return false;
    };
    for partition in &info.partitions {
        for &node in &partition.replicas {
            let Ok(index) = u32::try_from(node) else {
                continue;
            };
            let broker = Topology::broker_name(index);
            let dir = std::path::PathBuf::from(format!(
                "{BROKER_LOG_DIR}/{}-{}",
                resolved.topic, partition.partition
            ));
            let batches = replica_batches(shared.drive(&broker).files_in(&dir));
            recorder.event(
                &broker,
                Event::ReplicaLog {
                    broker: broker.clone(),
                    topic: resolved.topic.clone(),
                    partition: partition.partition,
                    in_sync: partition.isr.contains(&node),
                    batches,
                },
            );
        }
    }
    true
}

/// The batches of a partition directory's segment files, in offset order,
/// up to the first that is not whole (a write in progress).
fn replica_batches(files: Vec<(std::path::PathBuf, Vec<u8>)>) -> Vec<ReplicaBatch> {
    let mut batches = Vec::new();
    // Segment names are zero-padded base offsets, so name order is offset order.
    for (path, bytes) in files {
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let mut rest = bytes.as_slice();
        while let Ok(header) = sluice::log::batch::parse_header(rest) {
            batches.push(ReplicaBatch {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                leader_epoch: header.partition_leader_epoch,
                crc: header.crc,
            });
            rest = &rest[header.size_bytes..];
        }
    }
    batches
}
