//! sluice-sim: runs the unmodified sluice broker and clients inside a seeded
//! turmoil simulation, records a history and checks it.

pub mod checkers;
pub mod disk;
pub mod history;
pub mod nemesis;
pub mod power;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod seams;
pub mod shrink;
pub mod sweep;
pub mod topology;
pub mod trace;
pub mod workloads;
pub mod world;
