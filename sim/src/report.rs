//! The report of one run: verdicts, counts, simulated latencies and the
//! trace hash.

use std::collections::BTreeMap;
use std::hash::Hasher;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::checkers::Verdict;
use crate::history::{Entry, Event, Kind, Op};

/// FNV-1a over the JSON form of every history entry, in order. Two runs of
/// one seed on one commit must produce the same hash.
pub fn trace_hash(history: &[Entry]) -> String {
    let mut hasher = fnv::FnvHasher::default();
    // Request and response events are only there when tracing; leave them
    // out, and number the rest as if they had never been recorded, so a
    // traced run hashes like an untraced one.
    let mut index = 0;
    for entry in history {
        if matches!(
            &entry.kind,
            crate::history::Kind::Event {
                event: crate::history::Event::Wire { .. }
            }
        ) {
            continue;
        }
        let renumbered = Entry {
            index,
            ..entry.clone()
        };
        index += 1;
        let line = serde_json::to_vec(&renumbered).expect("history entries serialise");
        hasher.write(&line);
        hasher.write_u8(b'\n');
    }
    format!("{:016x}", hasher.finish())
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acknowledged: u64,
    pub send_failed: u64,
    pub send_indeterminate: u64,
    pub polled_records: u64,
    pub commits: u64,
    pub faults: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
    pub samples: u64,
}

fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50_ms: histogram.value_at_quantile(0.5),
        p99_ms: histogram.value_at_quantile(0.99),
        max_ms: histogram.max(),
        samples: histogram.len(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub counts: Counts,
    /// Simulated milliseconds from a send's invoke to its acknowledgement.
    pub produce_to_ack: Percentiles,
    /// Simulated milliseconds from a send's invoke to the first poll that
    /// returned it.
    pub end_to_end: Percentiles,
}

pub fn build(history: &[Entry]) -> Report {
    let mut counts = Counts::default();
    let mut invoked_at: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut sent_at_by_value: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, u64> = BTreeMap::new();
    // Latencies up to an hour of simulated time, 2 significant digits.
    let mut produce_to_ack =
        Histogram::<u64>::new_with_max(3_600_000, 2).expect("histogram bounds");
    let mut end_to_end = Histogram::<u64>::new_with_max(3_600_000, 2).expect("histogram bounds");
    for entry in history {
        match &entry.kind {
            Kind::Invoke {
                op: Op::Send { value, .. },
            } => {
                counts.sent += 1;
                invoked_at.insert((entry.process.clone(), entry.id), entry.time_ms);
                sent_at_by_value.insert(value.clone(), entry.time_ms);
            }
            Kind::Ok {
                op: Op::Send { .. },
            } => {
                counts.acknowledged += 1;
                if let Some(start) = invoked_at.get(&(entry.process.clone(), entry.id)) {
                    let _ = produce_to_ack.record(entry.time_ms.saturating_sub(*start));
                }
            }
            Kind::Fail {
                op: Op::Send { .. },
                ..
            } => counts.send_failed += 1,
            Kind::Info {
                op: Op::Send { .. },
                ..
            } => counts.send_indeterminate += 1,
            Kind::Ok {
                op: Op::Poll { records, .. },
            } => {
                counts.polled_records += records.len() as u64;
                for record in records {
                    first_seen
                        .entry(record.value.clone())
                        .or_insert(entry.time_ms);
                }
            }
            Kind::Ok {
                op: Op::Commit { .. },
            } => counts.commits += 1,
            Kind::Event {
                event: Event::Fault { healed: false, .. },
            } => counts.faults += 1,
            _ => {}
        }
    }
    for (value, seen) in &first_seen {
        if let Some(sent) = sent_at_by_value.get(value) {
            let _ = end_to_end.record(seen.saturating_sub(*sent));
        }
    }
    Report {
        counts,
        produce_to_ack: percentiles(&produce_to_ack),
        end_to_end: percentiles(&end_to_end),
    }
}

/// How a run ended, in the order of precedence the exit code uses: a later
/// variant is worse, so a sweep exits with its worst run's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Liveness,
    Safety,
    Crash,
}

impl Outcome {
    /// Process exit codes: 0 pass, 3 safety violation, 4 liveness failure,
    /// 5 crash or panic. (1 is an operational error, 2 a usage error.)
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pass => 0,
            Outcome::Safety => 3,
            Outcome::Liveness => 4,
            Outcome::Crash => 5,
        }
    }

    pub fn from_verdicts(verdicts: &[Verdict]) -> Self {
        use crate::checkers::Property;
        if verdicts
            .iter()
            .any(|v| !v.valid && v.property == Property::Safety)
        {
            Outcome::Safety
        } else if verdicts.iter().any(|v| !v.valid) {
            Outcome::Liveness
        } else {
            Outcome::Pass
        }
    }
}
