//! Records the history of a run as it happens.
//!
//! Hosts and the nemesis share one recorder. turmoil runs the whole world on
//! one thread, so the order of entries is the order of events and is the
//! same on every run of a seed. Broker-side facts arrive as `tracing` events
//! with target `sluice::history`, captured by [`HistoryLayer`] into the
//! recorder of the run on the current thread.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use crate::history::{Entry, Event, Kind, Op};

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

thread_local! {
    static CURRENT: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Makes `recorder` the target of broker-side events on this thread until
/// the guard drops.
pub fn install(recorder: &Recorder) -> InstallGuard {
    CURRENT.with(|current| *current.borrow_mut() = Some(recorder.clone()));
    InstallGuard
}

pub struct InstallGuard;

impl Drop for InstallGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

#[derive(Default)]
struct Fields {
    event: String,
    node: i64,
    topic: String,
    partition: i64,
    value: i64,
    group: String,
    direction: String,
    client_id: String,
    api: String,
    summary: String,
    partitions: String,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "node" => self.node = value,
            "partition" => self.partition = value,
            "high_watermark" | "generation_id" | "log_end_offset" | "correlation_id" => {
                self.value = value
            }
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, value as i64);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.event = value.to_string(),
            "topic" => self.topic = value.to_string(),
            "group_id" => self.group = value.to_string(),
            "direction" => self.direction = value.to_string(),
            "client_id" => self.client_id = value.to_string(),
            "api" => self.api = value.to_string(),
            "summary" => self.summary = value.to_string(),
            "partitions" => self.partitions = value.to_string(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, text.trim_matches('"'));
    }
}

const WIRE_TARGET: &str = "sluice::wire";

fn current_wants_wire() -> bool {
    CURRENT.with(|current| current.borrow().as_ref().is_some_and(Recorder::wants_wire))
}

/// Captures `sluice::history` events from the broker into the history, and
/// `sluice::wire` events when the run's recorder asks for them.
pub struct HistoryLayer;

impl<S: tracing::Subscriber> Layer<S> for HistoryLayer {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == WIRE_TARGET {
            // Decided per run: ask `enabled` every time.
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // Summarising every request costs; only a traced run pays for it.
        metadata.target() != WIRE_TARGET || current_wants_wire()
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let target = event.metadata().target();
        if target != "sluice::history" && target != WIRE_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let broker = format!("broker-{}", fields.node);
        if target == WIRE_TARGET {
            let recorded = Event::Wire {
                direction: fields.direction,
                client: fields.client_id,
                api: fields.api,
                correlation_id: fields.value as i32,
                summary: fields.summary,
                partitions: fields
                    .partitions
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            };
            CURRENT.with(|current| {
                if let Some(recorder) = current.borrow().as_ref().filter(|r| r.wants_wire()) {
                    recorder.event(&broker, recorded);
                }
            });
            return;
        }
        let recorded = match fields.event.as_str() {
            "high_watermark" => Event::HighWatermark {
                broker: broker.clone(),
                topic: fields.topic,
                partition: fields.partition as i32,
                high_watermark: fields.value,
            },
            "generation" => Event::Generation {
                broker: broker.clone(),
                group: fields.group,
                generation: fields.value as i32,
            },
            "truncate" => Event::Truncate {
                broker: broker.clone(),
                topic: fields.topic,
                partition: fields.partition as i32,
                log_end_offset: fields.value,
            },
            _ => return,
        };
        CURRENT.with(|current| {
            if let Some(recorder) = current.borrow().as_ref() {
                recorder.event(&broker, recorded);
            }
        });
    }
}
