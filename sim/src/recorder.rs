//! Records the history of a run as it happens.
//!
//! Hosts and the nemesis share one recorder. turmoil runs the whole world on
//! one thread, so the order of entries is the order of events and is the
//! same on every run of a seed. Broker-side facts arrive as typed
//! [`Fact`]s through a [`BrokerObserver`] each simulated broker is opened
//! with; clients' group events through the consumer's group observer.

use std::sync::{Arc, Mutex};

use sluice::observe::{Direction, Fact, Observer};

use crate::history::{Entry, EpochRun, Event, Kind, Op, RemovalReason, TruncationReason};

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    next_id: u64,
    /// Record the broker's `sluice::wire` request and response events.
    wire: bool,
}

#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

/// Simulated milliseconds since the run began, from inside or outside a host.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Recorder {
    /// A recorder that also keeps every request and response the broker sees.
    pub fn with_wire(wire: bool) -> Self {
        let recorder = Self::default();
        recorder.inner.lock().expect("recorder lock").wire = wire;
        recorder
    }

    fn wants_wire(&self) -> bool {
        self.inner.lock().expect("recorder lock").wire
    }

    fn push(&self, time_ms: u64, process: &str, id: u64, kind: Kind) {
        let mut inner = self.inner.lock().expect("recorder lock");
        let index = inner.entries.len() as u64;
        inner.entries.push(Entry {
            index,
            time_ms,
            process: process.to_string(),
            id,
            kind,
        });
    }

    pub fn invoke(&self, process: &str, op: Op) -> u64 {
        let id = {
            let mut inner = self.inner.lock().expect("recorder lock");
            inner.next_id += 1;
            inner.next_id
        };
        self.push(now_ms(), process, id, Kind::Invoke { op });
        id
    }

    pub fn ok(&self, process: &str, id: u64, op: Op) {
        self.push(now_ms(), process, id, Kind::Ok { op });
    }

    pub fn fail(&self, process: &str, id: u64, op: Op, error: String) {
        self.push(now_ms(), process, id, Kind::Fail { op, error });
    }

    pub fn info(&self, process: &str, id: u64, op: Op, error: String) {
        self.push(now_ms(), process, id, Kind::Info { op, error });
    }

    /// A completed operation with no separate invoke (assignments, processing).
    pub fn complete(&self, process: &str, op: Op) {
        let id = self.invoke(process, op.clone());
        self.ok(process, id, op);
    }

    pub fn event_at(&self, time_ms: u64, process: &str, event: Event) {
        self.push(time_ms, process, 0, Kind::Event { event });
    }

    pub fn event(&self, process: &str, event: Event) {
        self.event_at(now_ms(), process, event);
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.inner.lock().expect("recorder lock").entries.clone()
    }
}

/// What one broker reports, recorded as history events under the broker's
/// host name. The broker calls it synchronously, in the critical section
/// that made each fact true, so the event lands before anything that
/// depends on it.
pub struct BrokerObserver {
    recorder: Recorder,
    broker: String,
}

impl BrokerObserver {
    pub fn new(recorder: &Recorder, broker: &str) -> Self {
        Self {
            recorder: recorder.clone(),
            broker: broker.to_string(),
        }
    }
}

impl Observer for BrokerObserver {
    fn wants_wire(&self) -> bool {
        self.recorder.wants_wire()
    }

    fn fact(&self, fact: Fact) {
        let broker = self.broker.clone();
        let event = match fact {
            Fact::HighWatermark {
                topic,
                partition,
                high_watermark,
            } => Event::HighWatermark {
                broker,
                topic,
                partition,
                high_watermark,
            },
            Fact::Recovered {
                topic,
                partition,
                log_end_offset,
                high_watermark,
            } => Event::Recovered {
                broker,
                topic,
                partition,
                log_end_offset,
                high_watermark,
            },
            Fact::RebalanceStarted {
                group,
                generation,
                rebalance_timeout_ms,
                ..
            } => Event::RebalanceStarted {
                broker,
                group,
                generation,
                rebalance_timeout_ms,
            },
            Fact::QuorumLeader { epoch } => Event::QuorumLeader { broker, epoch },
            Fact::QuorumHighWatermark {
                epoch,
                high_watermark,
                committed_epoch,
            } => Event::QuorumHighWatermark {
                broker,
                epoch,
                high_watermark,
                committed_epoch,
            },
            Fact::BrokerFenced {
                node_id,
                incarnation,
            } => Event::BrokerFenced {
                broker,
                node_id,
                incarnation,
            },
            Fact::BrokerUnfenced {
                node_id,
                incarnation,
            } => Event::BrokerUnfenced {
                broker,
                node_id,
                incarnation,
            },
            Fact::BrokerRegistered {
                node_id,
                incarnation,
            } => Event::BrokerRegistered {
                broker,
                node_id,
                incarnation,
            },
            Fact::FollowerCaughtUp {
                topic,
                partition,
                leader_epoch,
                follower_id,
                broker_epoch,
                fetch_offset,
            } => Event::FollowerCaughtUp {
                broker,
                topic,
                partition,
                leader_epoch,
                follower_id,
                broker_epoch,
                fetch_offset,
            },
            Fact::PartitionFollower {
                topic,
                partition,
                leader_epoch,
                leader_id,
            } => Event::PartitionFollower {
                broker,
                topic,
                partition,
                leader_epoch,
                leader_id,
            },
            Fact::VoteGranted { epoch, candidate } => Event::VoteGranted {
                broker,
                epoch,
                candidate,
            },
            Fact::PartitionLeader {
                topic,
                partition,
                leader_epoch,
                isr,
                log_end_offset,
            } => Event::PartitionLeader {
                broker,
                topic,
                partition,
                leader_epoch,
                isr,
                log_end_offset,
            },
            Fact::CoordinatorLoaded { leader_epoch } => Event::CoordinatorLoaded {
                broker,
                leader_epoch,
            },
            Fact::CoordinatorResigned { leader_epoch } => Event::CoordinatorResigned {
                broker,
                leader_epoch,
            },
            Fact::MetadataApplied {
                offset,
                epoch,
                digest,
            } => Event::MetadataApplied {
                broker,
                offset,
                epoch,
                digest,
            },
            Fact::Generation { group, generation } => Event::Generation {
                broker,
                group,
                generation,
            },
            Fact::MemberJoined {
                group,
                member,
                instance,
                session_timeout_ms,
                rebalance_timeout_ms,
            } => Event::MemberJoined {
                broker,
                group,
                member,
                instance,
                session_timeout_ms: i64::from(session_timeout_ms),
                rebalance_timeout_ms: i64::from(rebalance_timeout_ms),
            },
            Fact::MemberRemoved {
                group,
                member,
                reason,
            } => Event::MemberRemoved {
                broker,
                group,
                member,
                reason: match reason {
                    sluice::observe::RemovalReason::Left => RemovalReason::Left,
                    sluice::observe::RemovalReason::SessionExpired => RemovalReason::SessionExpired,
                    sluice::observe::RemovalReason::RebalanceTimeout => {
                        RemovalReason::RebalanceTimeout
                    }
                    sluice::observe::RemovalReason::Replaced => RemovalReason::Replaced,
                },
            },
            Fact::IsrChanged {
                topic,
                partition,
                leader_epoch,
                isr,
            } => Event::IsrChanged {
                broker,
                topic,
                partition,
                leader_epoch,
                isr,
            },
            Fact::Truncated {
                topic,
                partition,
                from_offset,
                to_offset,
                cut_epochs,
                reason,
            } => Event::Truncated {
                broker,
                topic,
                partition,
                from_offset,
                to_offset,
                cut_epochs: cut_epochs
                    .into_iter()
                    .map(|(leader_epoch, start_offset)| EpochRun {
                        leader_epoch,
                        start_offset,
                    })
                    .collect(),
                reason: match reason {
                    sluice::observe::TruncationReason::DivergingEpoch => {
                        TruncationReason::DivergingEpoch
                    }
                    sluice::observe::TruncationReason::OwnHighWatermark => {
                        TruncationReason::OwnHighWatermark
                    }
                },
            },
            Fact::Wire {
                direction,
                client_id,
                api,
                correlation_id,
                summary,
                partitions,
            } => {
                if !self.recorder.wants_wire() {
                    return;
                }
                Event::Wire {
                    direction: match direction {
                        Direction::Request => "request",
                        Direction::Response => "response",
                    }
                    .to_string(),
                    client: client_id,
                    api,
                    correlation_id,
                    summary,
                    partitions,
                }
            }
        };
        self.recorder.event(&self.broker, event);
    }
}
