//! sluice: a Kafka-compatible event log.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod client;
pub mod clock;
pub mod net;
pub mod storage;
