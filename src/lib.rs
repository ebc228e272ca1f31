//! sluice: a Kafka-compatible event log.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod alloc;
pub mod broker;
pub mod cli_tools;
pub mod client;
pub mod clock;
pub mod config;
pub mod group;
pub mod log;
pub mod net;
pub mod server;
pub mod storage;
pub mod testing;
