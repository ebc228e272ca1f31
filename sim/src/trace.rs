//! Readable traces: one line per history entry, `time host what`, so two
//! runs can be compared with `diff`: client operations, the broker's requests
//! and responses (`<-` in, `->` out), faults, high-watermark and generation
//! changes, and each checker finding after the entry that completes it.
//! Filters keep the lines of some hosts or some partitions.

use std::collections::BTreeMap;
use std::io::Write;

use crate::checkers::Verdict;
use crate::history::{Entry, Event, Kind, Op};

/// Which lines to keep; empty lists keep everything.
#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    pub hosts: Vec<String>,
    /// `topic-partition`, e.g. `orders-3`.
    pub partitions: Vec<String>,
}

/// Faults and fencing: what a trace narrowed to some partitions still
/// shows, since they explain what happens to every partition.
fn is_cluster_context(entry: &Entry) -> bool {
    matches!(
        &entry.kind,
        Kind::Event {
            event: Event::Fault { .. }
                | Event::Heal
                | Event::BrokerFenced { .. }
                | Event::BrokerUnfenced { .. }
                | Event::BrokerRegistered { .. }
        }
    )
}

fn partitions_of(entry: &Entry) -> Vec<String> {
    let op = match &entry.kind {
        Kind::Invoke { op } | Kind::Ok { op } | Kind::Fail { op, .. } | Kind::Info { op, .. } => op,
        Kind::Event { event } => {
            return match event {
                Event::HighWatermark {
                    topic, partition, ..
                }
                | Event::Recovered {
                    topic, partition, ..
                }
                | Event::CorruptRead {
                    topic, partition, ..
                }
                | Event::PartitionLeader {
                    topic, partition, ..
                }
                | Event::ReplicaLog {
                    topic, partition, ..
                }
                | Event::Truncated {
                    topic, partition, ..
                }
                | Event::IsrChanged {
                    topic, partition, ..
                }
                | Event::FollowerCaughtUp {
                    topic, partition, ..
                }
                | Event::PartitionFollower {
                    topic, partition, ..
                } => {
                    vec![format!("{topic}-{partition}")]
                }
                Event::Wire { partitions, .. } => partitions.clone(),
                _ => Vec::new(),
            }
        }
    };
    match op {
        Op::Send {
            topic,
            partition: Some(p),
            ..
        } => vec![format!("{topic}-{p}")],
        Op::Send { .. } => Vec::new(),
        Op::Poll { records, .. } => records
            .iter()
            .map(|r| format!("{}-{}", r.topic, r.partition))
            .collect(),
        Op::Process { record, .. } => vec![format!("{}-{}", record.topic, record.partition)],
        Op::Commit { offsets, .. } => offsets
            .iter()
            .map(|o| format!("{}-{}", o.topic, o.partition))
            .collect(),
        Op::Seek { target, .. } => vec![format!("{}-{}", target.topic, target.partition)],
        Op::Assign { partitions, .. } | Op::Revoke { partitions, .. } => partitions
            .iter()
            .map(|p| format!("{}-{}", p.topic, p.partition))
            .collect(),
        Op::FinalRead { target, .. } => vec![format!("{}-{}", target.topic, target.partition)],
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Send {
            topic,
            key,
            value,
            partition,
            offset,
            tombstone,
        } => {
            let delete = if *tombstone { " (tombstone)" } else { "" };
            match (partition, offset) {
                (Some(p), Some(o)) => format!(
                    "send {value}{delete} key={} -> {topic}-{p}@{o}",
                    key.as_deref().unwrap_or("-")
                ),
                _ => format!(
                    "send {value}{delete} key={} to {topic}",
                    key.as_deref().unwrap_or("-")
                ),
            }
        }
        Op::Poll { records, .. } if records.is_empty() => "poll".to_string(),
        Op::Poll { records, .. } => {
            let first = &records[0];
            let last = &records[records.len() - 1];
            format!(
                "poll {} records {}-{}@{}..{}-{}@{}",
                records.len(),
                first.topic,
                first.partition,
                first.offset,
                last.topic,
                last.partition,
                last.offset
            )
        }
        Op::Process { record, .. } => format!(
            "process {}-{}@{} {}",
            record.topic, record.partition, record.offset, record.value
        ),
        Op::Commit {
            group,
            generation,
            member,
            offsets,
        } => format!(
            "commit {group} gen={generation} member={member} [{}]",
            offsets
                .iter()
                .map(|o| format!("{}-{}:{}", o.topic, o.partition, o.offset))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Op::Seek { target, .. } => format!(
            "seek {}-{}@{}",
            target.topic, target.partition, target.offset
        ),
        Op::Assign {
            group,
            generation,
            member,
            partitions,
        }
        | Op::Revoke {
            group,
            generation,
            member,
            partitions,
        } => {
            let verb = if matches!(op, Op::Assign { .. }) {
                "assign"
            } else {
                "revoke"
            };
            format!(
                "{verb} {group} gen={generation} member={member} [{}]",
                partitions
                    .iter()
                    .map(|p| format!("{}-{}", p.topic, p.partition))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        Op::FinalRead {
            target,
            log_start_offset,
            records,
        } => {
            format!(
                "final-read {}-{} from {log_start_offset}: {} records",
                target.topic,
                target.partition,
                records.len()
            )
        }
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Meta {
            scenario,
            seed,
            flush_on_ack,
            idempotence,
            ..
        } => {
            format!("meta scenario={scenario} seed={seed} flush_on_ack={flush_on_ack} idempotence={idempotence}")
        }
        Event::HighWatermark {
            topic,
            partition,
            high_watermark,
            ..
        } => format!("high-watermark {topic}-{partition} = {high_watermark}"),
        Event::Recovered {
            topic,
            partition,
            log_end_offset,
            high_watermark,
            ..
        } => format!(
            "recovered {topic}-{partition} log-end = {log_end_offset} high-watermark = {high_watermark}"
        ),
        Event::QuorumLeader { epoch, .. } => format!("quorum leader in epoch {epoch}"),
        Event::QuorumHighWatermark {
            epoch,
            high_watermark,
            committed_epoch,
            ..
        } => format!(
            "quorum high-watermark = {high_watermark} in epoch {epoch} (entry of epoch {committed_epoch})"
        ),
        Event::BrokerFenced {
            node_id,
            incarnation,
            ..
        } => format!("fenced broker {node_id} (incarnation {incarnation:?})"),
        Event::BrokerUnfenced {
            node_id,
            incarnation,
            ..
        } => format!("unfenced broker {node_id} (incarnation {incarnation})"),
        Event::BrokerRegistered {
            node_id,
            incarnation,
            ..
        } => format!("registered broker {node_id} (incarnation {incarnation})"),
        Event::FollowerCaughtUp {
            topic,
            partition,
            leader_epoch,
            follower_id,
            broker_epoch,
            fetch_offset,
            ..
        } => format!(
            "follower {follower_id} (broker epoch {broker_epoch}) caught up on {topic}-{partition} at {fetch_offset} in epoch {leader_epoch}"
        ),
        Event::PartitionFollower {
            topic,
            partition,
            leader_epoch,
            leader_id,
            ..
        } => format!("follows {leader_id} for {topic}-{partition} in epoch {leader_epoch}"),
        Event::VoteGranted {
            epoch, candidate, ..
        } => format!("voted for {candidate} in epoch {epoch}"),
        Event::IsrChanged {
            topic,
            partition,
            leader_epoch,
            isr,
            ..
        } => format!("isr of {topic}-{partition} in epoch {leader_epoch} is {isr:?}"),
        Event::Truncated {
            topic,
            partition,
            from_offset,
            to_offset,
            reason,
            ..
        } => format!("truncated {topic}-{partition} from {from_offset} to {to_offset} ({reason:?})"),
        Event::ReplicaLog {
            topic,
            partition,
            in_sync,
            batches,
            ..
        } => {
            let span = match (batches.first(), batches.last()) {
                (Some(first), Some(last)) => {
                    format!("offsets {}..={}", first.base_offset, last.last_offset)
                }
                _ => "nothing".to_string(),
            };
            format!(
                "replica of {topic}-{partition} ({}) holds {} batches, {span}",
                if *in_sync { "in sync" } else { "out of sync" },
                batches.len()
            )
        }
        Event::PartitionLeader {
            topic,
            partition,
            leader_epoch,
            isr,
            log_end_offset,
            ..
        } => format!(
            "leads {topic}-{partition} in epoch {leader_epoch}, isr {isr:?}, log-end = {log_end_offset}"
        ),
        Event::MetadataApplied {
            offset,
            epoch,
            digest,
            ..
        } => format!("metadata applied @{offset} epoch {epoch} digest {digest:08x}"),
        Event::CoordinatorLoaded { leader_epoch, .. } => {
            format!("coordinates groups in offsets epoch {leader_epoch}")
        }
        Event::CoordinatorResigned { leader_epoch, .. } => {
            format!("resigned as group coordinator (offsets epoch {leader_epoch})")
        }
        Event::Generation {
            group, generation, ..
        } => format!("generation {group} = {generation}"),
        Event::RebalanceStarted {
            group,
            generation,
            rebalance_timeout_ms,
            ..
        } => format!(
            "rebalance {group} from generation {generation}, deadline in {rebalance_timeout_ms} ms"
        ),
        Event::MemberJoined {
            group,
            member,
            instance,
            session_timeout_ms,
            ..
        } => format!(
            "joined {group} {member}{} session {session_timeout_ms} ms",
            instance
                .as_ref()
                .map_or(String::new(), |i| format!(" (instance {i})"))
        ),
        Event::MemberRemoved {
            group,
            member,
            reason,
            ..
        } => format!("removed {group} {member} ({reason:?})"),
        Event::Fault {
            kind,
            target,
            peer,
            power_loss,
            healed,
        } => {
            let verb = if *healed { "heal" } else { "fault" };
            format!(
                "{verb} {kind} {target}{}{}",
                peer.as_ref()
                    .map(|peer| format!(" from {peer}"))
                    .unwrap_or_default(),
                if *power_loss { " (power loss)" } else { "" }
            )
        }
        Event::Heal => "heal everything".to_string(),
        Event::Wire {
            direction,
            client,
            api,
            correlation_id,
            summary,
            ..
        } => {
            let arrow = if direction == "request" { "<-" } else { "->" };
            format!("{arrow} {client} {api}#{correlation_id} {summary}")
                .trim_end()
                .to_string()
        }
        Event::CorruptRead {
            topic,
            partition,
            detail,
        } => format!("corrupt batch fetched from {topic}-{partition}: {detail}"),
    }
}

pub fn line(entry: &Entry) -> String {
    let what = match &entry.kind {
        Kind::Invoke { op } => format!("invoke {}", describe_op(op)),
        Kind::Ok { op } => format!("ok     {}", describe_op(op)),
        Kind::Fail { op, error } => format!("fail   {} ({error})", describe_op(op)),
        Kind::Info { op, error } => format!("info   {} ({error})", describe_op(op)),
        Kind::Event { event } => format!("event  {}", describe_event(event)),
    };
    format!("{:>9}ms {:<14} {what}", entry.time_ms, entry.process)
}

/// Writes the trace: one line per entry that passes `filter`, and after the
/// last entry each checker anomaly names, a `checker` line with the finding
/// (kept by a partition filter only if it names one of the partitions).
pub fn write(
    history: &[Entry],
    verdicts: &[Verdict],
    filter: &TraceFilter,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut observations: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for verdict in verdicts {
        for anomaly in &verdict.anomalies {
            let at = anomaly.entries.iter().copied().max().unwrap_or(0);
            observations
                .entry(at)
                .or_default()
                .push(format!("{}: {}", verdict.checker, anomaly.description));
        }
    }
    for entry in history {
        // A request or response belongs to the broker and to its client.
        let client = match &entry.kind {
            Kind::Event {
                event: Event::Wire { client, .. },
            } => Some(client),
            _ => None,
        };
        let shown = (filter.hosts.is_empty()
            || filter.hosts.contains(&entry.process)
            || client.is_some_and(|client| filter.hosts.contains(client)))
            && (filter.partitions.is_empty()
                || is_cluster_context(entry)
                || partitions_of(entry)
                    .iter()
                    .any(|p| filter.partitions.contains(p)));
        if shown {
            writeln!(out, "{}", line(entry))?;
        }
        for observation in observations.get(&entry.index).into_iter().flatten() {
            let named = filter.partitions.is_empty()
                || filter.partitions.iter().any(|p| {
                    observation.contains(&format!("{p}@")) || observation.contains(&format!("{p} "))
                });
            if named {
                writeln!(
                    out,
                    "{:>9}ms {:<14} check  {observation}",
                    entry.time_ms, "checker"
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Builder;

    #[test]
    fn lines_are_readable_and_filters_keep_what_they_name() {
        let mut b = Builder::new();
        let send = Op::Send {
            topic: "t".into(),
            key: Some("k".into()),
            value: "producer-0-1".into(),
            partition: None,
            offset: None,
            tombstone: false,
        };
        let id = b.invoke(5, "producer-0", send);
        b.ok(
            9,
            "producer-0",
            id,
            Op::Send {
                topic: "t".into(),
                key: Some("k".into()),
                value: "producer-0-1".into(),
                partition: Some(2),
                offset: Some(7),
                tombstone: false,
            },
        );
        b.event(
            10,
            "nemesis",
            Event::Fault {
                kind: crate::history::FaultKind::CrashBroker,
                target: "broker-0".into(),
                peer: None,
                power_loss: true,
                healed: false,
            },
        );
        let history = b.build();
        let mut all = Vec::new();
        write(&history, &[], &TraceFilter::default(), &mut all).unwrap();
        let text = String::from_utf8(all).unwrap();
        assert_eq!(
            text,
            "        5ms producer-0     invoke send producer-0-1 key=k to t\n\
             \x20       9ms producer-0     ok     send producer-0-1 key=k -> t-2@7\n\
             \x20      10ms nemesis        event  fault crash-broker broker-0 (power loss)\n"
        );
        let mut only = Vec::new();
        write(
            &history,
            &[],
            &TraceFilter {
                hosts: vec![],
                partitions: vec!["t-2".into()],
            },
            &mut only,
        )
        .unwrap();
        // The send to t-2, and the fault, which a partition filter keeps.
        let only = String::from_utf8(only).unwrap();
        assert_eq!(only.lines().count(), 2, "{only}");
        assert!(only.lines().nth(1).unwrap().contains("fault crash-broker"));
    }

    #[test]
    fn a_host_filter_keeps_the_requests_its_host_sent() {
        let mut b = Builder::new();
        let wire = |client: &str| Event::Wire {
            direction: "request".into(),
            client: client.into(),
            api: "Produce".into(),
            correlation_id: 4,
            summary: "acks=-1 t-0 83 bytes".into(),
            partitions: vec!["t-0".into()],
        };
        b.event(1, "broker-0", wire("producer-0"));
        b.event(2, "broker-0", wire("producer-1"));
        let history = b.build();
        let mut out = Vec::new();
        let filter = TraceFilter {
            hosts: vec!["producer-0".into()],
            partitions: vec![],
        };
        write(&history, &[], &filter, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "        1ms broker-0       event  <- producer-0 Produce#4 acks=-1 t-0 83 bytes\n"
        );
    }

    #[test]
    fn checker_findings_follow_the_entry_that_completes_them() {
        let mut b = Builder::new();
        b.event(3, "broker-0", Event::Heal);
        b.event(8, "nemesis", Event::Heal);
        let history = b.build();
        let verdict = crate::checkers::Verdict {
            checker: "lost-write",
            property: crate::checkers::Property::Safety,
            valid: false,
            anomalies: vec![crate::checkers::Anomaly {
                description: "v acked at t-0@4 was lost".into(),
                entries: vec![0, 1],
            }],
            summary: String::new(),
        };
        let mut out = Vec::new();
        write(&history, &[verdict], &TraceFilter::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            "        8ms checker        check  lost-write: v acked at t-0@4 was lost"
        );
    }
}
