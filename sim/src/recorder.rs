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
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "node" => self.node = value,
            "partition" => self.partition = value,
            "high_watermark" | "generation_id" | "log_end_offset" => self.value = value,
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
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, text.trim_matches('"'));
    }
}

/// Captures `sluice::history` events from the broker into the history.
pub struct HistoryLayer;

impl<S: tracing::Subscriber> Layer<S> for HistoryLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sluice::history" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let broker = format!("broker-{}", fields.node);
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
