//! sluice: a Kafka-compatible event log.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod alloc;
pub mod broker;
pub mod cli_tools;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod group;
pub mod log;
pub mod metadata;
pub mod net;
pub mod observe;
#[cfg(feature = "planted-bugs")]
pub mod plant;
pub mod quorum;
pub mod replica;
pub mod server;
pub mod storage;
pub mod testing;
pub mod topic_config;

/// `planted!(BugName)`: whether the named planted bug is selected for this
/// run. Always `false` unless the `planted-bugs` feature is on (only the
/// simulation enables it), so the buggy branch is compiled out of the real
/// broker and clients.
#[cfg(feature = "planted-bugs")]
#[macro_export]
macro_rules! planted {
    ($bug:ident) => {
        $crate::plant::is_active($crate::plant::Bug::$bug)
    };
}

/// `planted!(BugName)`: always `false` without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[macro_export]
macro_rules! planted {
    ($bug:ident) => {
        false
    };
}
