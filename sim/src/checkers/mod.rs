//! Checkers: pure functions from a recorded history to a verdict.
//!
//! Each checker lives in its own module with two kinds of unit test: a
//! hand-built history containing exactly its anomaly (the checker must fail
//! it) and a clean one (it must pass). A checker that cannot fail is a defect.

use serde::Serialize;

use crate::history::Entry;

mod at_least_once;
mod compacted_view;
mod duplicate;
mod facts;
mod group_liveness;
mod inconsistent_offsets;
mod intact_reads;
mod isr_shrink;
mod lost_write;
mod offset_commits;
mod ordering;
mod progress;
mod quorum;
mod replicas;
mod unclean_exclusion;
mod unseen;

pub use at_least_once::AtLeastOnce;
pub use compacted_view::CompactedView;
pub use duplicate::Duplicate;
pub use group_liveness::GroupLiveness;
pub use inconsistent_offsets::InconsistentOffsets;
pub use intact_reads::IntactReads;
pub use isr_shrink::IsrShrink;
pub use lost_write::LostWrite;
pub use offset_commits::OffsetCommits;
pub use ordering::Ordering;
pub use progress::Progress;
pub use quorum::{MetadataAgreement, SingleLeader};
pub use replicas::{LeaderCompleteness, MinIsr, ReplicaAgreement, Truncation};
pub use unclean_exclusion::UncleanExclusion;
pub use unseen::Unseen;

/// Whether a violation breaks safety (something bad happened) or liveness
/// (something good never happened). The CLI exits differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Property {
    Safety,
    Liveness,
}

/// One offending finding, naming the history entries that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub description: String,
    /// `Entry::index` values of the operations involved.
    pub entries: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub property: Property,
    pub valid: bool,
    /// The first offending findings, in history order (capped by the checker).
    pub anomalies: Vec<Anomaly>,
    /// A one-line summary (what was checked, how much).
    pub summary: String,
}

pub trait Checker {
    /// Stable kebab-case name, as scenarios and `--checkers` spell it.
    fn name(&self) -> &'static str;
    fn property(&self) -> Property;
    fn check(&self, history: &[Entry]) -> Verdict;
}

/// Report at most this many anomalies per checker: enough to debug, small
/// enough to print.
pub const MAX_ANOMALIES: usize = 20;

/// Every checker, in report order.
pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(LostWrite),
        Box::new(Unseen),
        Box::new(Duplicate),
        Box::new(InconsistentOffsets),
        Box::new(IntactReads),
        Box::new(Ordering),
        Box::new(OffsetCommits),
        Box::new(AtLeastOnce),
        Box::new(GroupLiveness),
        Box::new(Progress),
        Box::new(SingleLeader),
        Box::new(MetadataAgreement),
        Box::new(ReplicaAgreement),
        Box::new(LeaderCompleteness),
        Box::new(Truncation),
        Box::new(MinIsr),
        Box::new(UncleanExclusion),
        Box::new(IsrShrink),
        Box::new(CompactedView),
    ]
}

/// Every checker's name, in report order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|checker| checker.name()).collect()
}

/// Runs the named checkers (all when `names` is empty).
pub fn run(history: &[Entry], names: &[String]) -> Vec<Verdict> {
    all()
        .into_iter()
        .filter(|checker| names.is_empty() || names.iter().any(|n| n == checker.name()))
        .map(|checker| checker.check(history))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::facts::build::{record, H};
    use super::*;
    use crate::history::{read_jsonl, write_jsonl, Event, History, Record};

    const G: &str = "g";

    /// Polls `records` as one batch, processes each and commits the next
    /// offset, as the harness's consumers do.
    fn consume(h: &mut H, process: &str, generation: i32, records: &[Record]) {
        h.poll(process, G, records.to_vec());
        for record in records {
            h.process(process, G, record.clone());
        }
        let last = records.last().expect("a non-empty batch");
        h.commit(process, G, generation, &[(last.partition, last.offset + 1)]);
    }

    fn send_op(key: &str, value: &str, at: Option<(i32, i64)>) -> crate::history::Op {
        crate::history::Op::Send {
            topic: super::facts::build::TOPIC.into(),
            key: Some(key.into()),
            value: value.into(),
            partition: at.map(|(partition, _)| partition),
            offset: at.map(|(_, offset)| offset),
            tombstone: false,
        }
    }

    /// A small fault-free run as the harness records it: two producers, two
    /// partitions, a group of two consumers that rebalances once, then the
    /// final reads. Every checker must pass it.
    fn clean_run() -> History {
        let mut h = H::new(true, true);
        h.event_by(
            "broker-0",
            Event::QuorumLeader {
                broker: "broker-0".into(),
                epoch: 1,
            },
        );
        h.event_by(
            "broker-0",
            Event::MetadataApplied {
                broker: "broker-0".into(),
                offset: 0,
                epoch: 1,
                digest: 0xdead_beef,
            },
        );
        let mut log: [Vec<Record>; 2] = Default::default();
        for sequence in 0..6 {
            for producer in ["producer-0", "producer-1"] {
                let key = format!("k{}", sequence % 3);
                let partition = sequence % 2;
                let value = format!("{producer}-{sequence}");
                let records = &mut log[partition as usize];
                let offset = records.len() as i64;
                // An acks=all answer waits for the high watermark.
                let (_, id) = h.invoke(producer, send_op(&key, &value, None));
                h.high_watermark(partition, offset + 1);
                h.ok(
                    producer,
                    id,
                    send_op(&key, &value, Some((partition, offset))),
                );
                records.push(record(partition, offset, Some(&key), &value));
            }
        }
        h.rebalance_started(G, 0);
        h.member_joined(G, "consumer-0");
        h.generation(G, 1);
        h.assign("consumer-0", G, 1, &[0, 1]);
        consume(&mut h, "consumer-0", 1, &log[0][..3]);
        consume(&mut h, "consumer-0", 1, &log[1][..3]);
        h.rebalance_started(G, 1);
        h.member_joined(G, "consumer-1");
        h.revoke("consumer-0", G, 1, &[0, 1]);
        h.member_joined(G, "consumer-0");
        h.generation(G, 2);
        h.assign("consumer-0", G, 2, &[0]);
        h.assign("consumer-1", G, 2, &[1]);
        consume(&mut h, "consumer-0", 2, &log[0][3..]);
        consume(&mut h, "consumer-1", 2, &log[1][3..]);
        h.event(Event::Heal);
        for (partition, records) in log.into_iter().enumerate() {
            h.final_read(partition as i32, 0, records);
        }
        h.build()
    }

    #[test]
    fn all_checkers_pass_a_clean_run_read_back_from_json_lines() {
        let mut text = Vec::new();
        write_jsonl(&clean_run(), &mut text).unwrap();
        let history = read_jsonl(&mut text.as_slice()).unwrap();
        let verdicts = run(&history, &[]);
        let names: Vec<_> = verdicts.iter().map(|verdict| verdict.checker).collect();
        assert_eq!(
            names,
            vec![
                "lost-write",
                "unseen",
                "duplicate",
                "inconsistent-offsets",
                "intact-reads",
                "ordering",
                "offset-commits",
                "at-least-once",
                "group-liveness",
                "progress",
                "single-leader",
                "metadata-agreement",
                "replica-agreement",
                "leader-completeness",
                "truncation",
                "min-isr",
                "unclean-exclusion",
                "isr-shrink",
                "compacted-view"
            ]
        );
        for verdict in &verdicts {
            assert!(verdict.valid, "{verdict:?}");
            assert!(verdict.summary.ends_with("; 0 anomalies"), "{verdict:?}");
        }
    }

    #[test]
    fn run_selects_checkers_by_name() {
        let verdicts = run(
            &clean_run(),
            &["ordering".to_string(), "unseen".to_string()],
        );
        let names: Vec<_> = verdicts.iter().map(|verdict| verdict.checker).collect();
        assert_eq!(names, vec!["unseen", "ordering"]);
    }
}

/// No history built from the documented schema makes a checker panic: `sim
/// check` reads histories recorded anywhere, so a malformed one must get a
/// verdict, never a crash.
#[cfg(test)]
mod robustness {
    use proptest::prelude::*;

    use super::facts::build::{record, H};
    use crate::history::{
        Entry, Event, FaultKind, Kind, Op, PartitionOffset, Record, RemovalReason, TopicPartition,
    };

    fn process() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "producer-0",
            "producer-1",
            "consumer-0",
            "consumer-1",
            "final-reader",
            "broker-0",
            "nemesis",
        ])
        .prop_map(str::to_string)
    }

    fn offset() -> impl Strategy<Value = i64> {
        prop_oneof![-3i64..0, 0i64..12, Just(i64::MAX), Just(i64::MIN)]
    }

    fn a_record() -> impl Strategy<Value = Record> {
        (0i32..3, offset(), prop::option::of("k[0-2]"), "v[0-5]").prop_map(
            |(partition, offset, key, value)| Record {
                topic: "t".into(),
                partition,
                offset,
                key,
                value,
                tombstone: false,
            },
        )
    }

    fn an_op() -> impl Strategy<Value = Op> {
        let group = || prop::sample::select(vec!["g", "h"]).prop_map(str::to_string);
        prop_oneof![
            (
                "v[0-5]",
                prop::option::of(0i32..3),
                prop::option::of(offset())
            )
                .prop_map(|(value, partition, offset)| Op::Send {
                    topic: "t".into(),
                    key: None,
                    value,
                    partition,
                    offset,
                    tombstone: false,
                }),
            (
                prop::option::of(group()),
                prop::collection::vec(a_record(), 0..4)
            )
                .prop_map(|(group, records)| Op::Poll { group, records }),
            (prop::option::of(group()), a_record())
                .prop_map(|(group, record)| Op::Process { group, record }),
            (group(), -1i32..4, 0i32..3, offset()).prop_map(
                |(group, generation, partition, offset)| Op::Commit {
                    group,
                    generation,
                    member: "m".into(),
                    offsets: vec![PartitionOffset {
                        topic: "t".into(),
                        partition,
                        offset,
                    }],
                }
            ),
            (group(), -1i32..4, prop::collection::vec(0i32..3, 0..3)).prop_map(
                |(group, generation, partitions)| Op::Assign {
                    group,
                    generation,
                    member: "m".into(),
                    partitions: partitions
                        .into_iter()
                        .map(|partition| TopicPartition {
                            topic: "t".into(),
                            partition,
                        })
                        .collect(),
                }
            ),
            (0i32..3, offset(), prop::collection::vec(a_record(), 0..4)).prop_map(
                |(partition, log_start_offset, records)| Op::FinalRead {
                    target: TopicPartition {
                        topic: "t".into(),
                        partition,
                    },
                    log_start_offset,
                    records,
                }
            ),
        ]
    }

    fn an_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0i32..3, offset()).prop_map(|(partition, high_watermark)| Event::HighWatermark {
                broker: "broker-0".into(),
                topic: "t".into(),
                partition,
                high_watermark,
            }),
            (-1i32..4).prop_map(|generation| Event::Generation {
                broker: "broker-0".into(),
                group: "g".into(),
                generation,
            }),
            (0i64..10_000).prop_map(|rebalance_timeout_ms| Event::RebalanceStarted {
                broker: "broker-0".into(),
                group: "g".into(),
                generation: 0,
                rebalance_timeout_ms,
            }),
            Just(Event::MemberRemoved {
                broker: "broker-0".into(),
                group: "g".into(),
                member: "m".into(),
                reason: RemovalReason::SessionExpired,
            }),
            (
                prop::sample::select(vec![
                    FaultKind::CrashBroker,
                    FaultKind::CrashClient,
                    FaultKind::RestartBroker
                ]),
                process(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(kind, target, power_loss, healed)| Event::Fault {
                    kind,
                    target,
                    peer: None,
                    power_loss,
                    healed,
                }),
            Just(Event::Heal),
        ]
    }

    fn a_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            an_op().prop_map(|op| Kind::Invoke { op }),
            an_op().prop_map(|op| Kind::Ok { op }),
            an_op().prop_map(|op| Kind::Fail {
                op,
                error: "e".into()
            }),
            an_op().prop_map(|op| Kind::Info {
                op,
                error: "e".into()
            }),
            an_event().prop_map(|event| Kind::Event { event }),
        ]
    }

    /// Numbers entries densely and keeps time from going backwards, as a
    /// history that `sim check` accepts has them.
    fn normalise(entries: Vec<(String, u64, u64, Kind)>) -> Vec<Entry> {
        let mut time_ms = 0;
        entries
            .into_iter()
            .enumerate()
            .map(|(index, (process, id, step_ms, kind))| {
                time_ms += step_ms;
                Entry {
                    index: index as u64,
                    time_ms,
                    process,
                    id,
                    kind,
                }
            })
            .collect()
    }

    fn clean() -> Vec<Entry> {
        let mut h = H::new(false, true);
        h.high_watermark(0, 3);
        h.generation("g", 1);
        h.assign("consumer-0", "g", 1, &[0]);
        for offset in 0..3 {
            h.send("producer-0", Some("k0"), &format!("v{offset}"), 0, offset);
        }
        let records: Vec<Record> = (0..3)
            .map(|offset| record(0, offset, Some("k0"), &format!("v{offset}")))
            .collect();
        h.poll("consumer-0", "g", records.clone());
        for record in &records {
            h.process("consumer-0", "g", record.clone());
        }
        h.commit("consumer-0", "g", 1, &[(0, 3)]);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.event(Event::Heal);
        h.final_read(0, 0, records);
        h.build()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_histories_never_panic_a_checker(
            entries in prop::collection::vec((process(), 0u64..4, 0u64..3_000, a_kind()), 0..60)
        ) {
            let history = normalise(entries);
            let _ = super::run(&history, &[]);
        }

        #[test]
        fn mutated_clean_histories_never_panic_a_checker(
            mutations in prop::collection::vec((0usize..64, 0u8..5, offset()), 1..8)
        ) {
            let mut entries: Vec<(String, u64, u64, Kind)> = clean()
                .into_iter()
                .map(|entry| (entry.process, entry.id, 10, entry.kind))
                .collect();
            for (at, what, offset) in mutations {
                if entries.is_empty() {
                    break;
                }
                let at = at % entries.len();
                match what {
                    0 => {
                        entries.remove(at);
                    }
                    1 => {
                        let copy = entries[at].clone();
                        entries.insert(at, copy);
                    }
                    2 => {
                        let other = (at + 1) % entries.len();
                        entries.swap(at, other);
                    }
                    3 => {
                        // Turn a completion into another kind of completion.
                        if let Kind::Ok { op } = &entries[at].3 {
                            entries[at].3 = Kind::Fail { op: op.clone(), error: "e".into() };
                        }
                    }
                    _ => {
                        // Move every offset the entry names.
                        let text = serde_json::to_string(&entries[at].3).unwrap();
                        let moved = text.replace("\"offset\":", &format!("\"offset\":{offset},\"x\":"));
                        if let Ok(kind) = serde_json::from_str::<Kind>(&moved) {
                            entries[at].3 = kind;
                        }
                    }
                }
            }
            let history = normalise(entries);
            let _ = super::run(&history, &[]);
        }
    }
}
