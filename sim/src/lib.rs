//! Placeholder until the simulation harness lands (issue: deterministic simulation harness).
