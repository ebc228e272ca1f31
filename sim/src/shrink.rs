//! `sim shrink`: reduces a failing run to a small scenario that still fails
//! the same checker, then writes it out for `scenarios/regressions/`.
//!
//! The failing run is first pinned: every knob the seed drew is written into
//! the scenario and the faults the nemesis started become a scripted
//! schedule, so the same seed replays the same run. Then, greedily and in a
//! fixed order, the shrinker tries smaller candidates and keeps each one that
//! still fails the target checker: fewer faults (halves, then quarters, down
//! to single faults), fewer producers and consumers, fewer messages, shorter
//! phases. Passes repeat until nothing shrinks or the run budget is spent.
//! Every candidate runs the same seed, so shrinking is itself deterministic.

use std::fmt::Write as _;

use sluice::plant::Bug;

use crate::runner::{self, SeedOutcome};
use crate::scenario::{
    BrokerKnobs, ConsumerGroupSpec, Faults, Phases, ProducerSpec, Regression, Resolved, Scenario,
    ScheduledFault, TopologySpec,
};
use crate::topology::Topology;

/// Candidate runs a shrink may spend unless told otherwise: enough for a
/// dozen faults and a few clients, a couple of minutes of one core.
pub const RUNS_MAX_DEFAULT: usize = 120;
/// Producers keep at least this many messages: fewer and most faults miss.
const MESSAGES_MIN: u32 = 10;
/// The heal phase keeps at least this long, so clients reconnect and the
/// final reads see a settled broker.
const HEAL_MS_MIN: u64 = 5_000;

/// How big a scenario is, for progress lines and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub faults: usize,
    pub producers: usize,
    pub consumers: usize,
    pub messages: u64,
    pub fault_ms: u64,
    pub heal_ms: u64,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults, {} producers, {} consumers, {} messages, fault phase {} ms, heal {} ms",
            self.faults, self.producers, self.consumers, self.messages, self.fault_ms, self.heal_ms
        )
    }
}

pub fn size(scenario: &Scenario) -> Size {
    Size {
        faults: scenario.faults.schedule.len(),
        producers: scenario.producers.iter().map(|p| p.count as usize).sum(),
        consumers: scenario.consumers.iter().map(|g| g.count as usize).sum(),
        messages: scenario
            .producers
            .iter()
            .map(|p| u64::from(p.count) * u64::from(p.messages.unwrap_or(0)))
            .sum(),
        fault_ms: scenario.phases.fault_ms.unwrap_or(0),
        heal_ms: scenario.phases.heal_ms.unwrap_or(0),
    }
}

/// The run `resolved` described, as a scenario with nothing left to draw and
/// `schedule` as its faults.
pub fn pin(resolved: &Resolved, schedule: Vec<ScheduledFault>) -> Scenario {
    Scenario {
        name: resolved.name.clone(),
        description: String::new(),
        topology: TopologySpec {
            brokers: resolved.brokers,
            partitions: Some(resolved.partitions),
            replication_factor: resolved.replication_factor,
            topic: resolved.topic.clone(),
        },
        broker: BrokerKnobs {
            segment_bytes: Some(resolved.segment_bytes),
            index_interval_bytes: Some(resolved.index_interval_bytes),
            flush_on_ack: Some(resolved.flush_on_ack),
            // TOML integers are i64; "never" stays never.
            flush_messages: Some(resolved.flush_messages.min(i64::MAX as u64)),
            flush_ms: Some(resolved.flush_ms),
            replica_fetch_wait_max_ms: Some(resolved.replica_fetch_wait_max_ms),
            block_size: Some(resolved.block_size),
            group_initial_rebalance_delay_ms: Some(resolved.group_initial_rebalance_delay_ms),
            min_insync_replicas: Some(resolved.min_insync_replicas),
            cleanup_policy: resolved.compacted.then(|| "compact".to_string()),
            delete_retention_ms: Some(resolved.delete_retention_ms),
            roll_ms: Some(resolved.roll_ms),
            cleaner_backoff_ms: Some(resolved.cleaner_backoff_ms),
        },
        // One entry per producer keeps each one's name and settings.
        producers: resolved
            .producers
            .iter()
            .map(|p| ProducerSpec {
                count: 1,
                messages: Some(p.messages),
                rate_per_sec: Some(p.rate_per_sec),
                keys: Some(p.keys),
                acks: Some(p.acks.clone()),
                idempotence: Some(p.idempotence),
                linger_ms: Some(p.linger_ms),
                tombstone_percent: Some(p.tombstone_percent),
            })
            .collect(),
        consumers: resolved
            .groups
            .iter()
            .map(|g| ConsumerGroupSpec {
                group: g.group.clone(),
                count: g.members.len() as u32,
                processing_ms: Some(g.processing_ms),
                commit: Some(g.commit),
                max_poll_interval_ms: Some(g.max_poll_interval_ms),
                session_timeout_ms: Some(g.session_timeout_ms),
                heartbeat_interval_ms: Some(g.heartbeat_interval_ms),
                max_poll_records: Some(g.max_poll_records),
                static_members: Some(g.static_members),
                shared_client_id: Some(g.shared_client_id),
            })
            .collect(),
        // No kinds: with an empty schedule the nemesis does nothing.
        faults: Faults {
            kinds: Vec::new(),
            interval_ms: None,
            duration_ms: None,
            schedule,
            // The schedule names each fault's host as it was hit.
            aim: crate::scenario::Aim::Any,
        },
        phases: Phases {
            fault_ms: Some(resolved.fault_ms),
            heal_ms: Some(resolved.heal_ms),
            tick_ms: Some(resolved.tick_ms),
        },
        checkers: resolved.checkers.clone(),
        regression: None,
    }
}

/// Host names a scenario creates.
fn hosts(scenario: &Scenario) -> Vec<String> {
    let producers: u32 = scenario.producers.iter().map(|p| p.count).sum();
    let consumers: u32 = scenario.consumers.iter().map(|g| g.count).sum();
    Topology::new(scenario.topology.brokers, producers, consumers).targets()
}

/// Drops scheduled faults aimed at hosts the scenario no longer has.
fn drop_orphan_faults(mut scenario: Scenario) -> Scenario {
    let hosts = hosts(&scenario);
    scenario
        .faults
        .schedule
        .retain(|fault| fault.target.as_ref().is_none_or(|t| hosts.contains(t)));
    scenario
}

/// Smaller variants of `scenario`, most promising first.
fn candidates(scenario: &Scenario) -> Vec<(String, Scenario)> {
    let mut out = Vec::new();
    let schedule = &scenario.faults.schedule;
    // Faults: drop chunks of halving size (a light delta debugging).
    let mut chunk = schedule.len().div_ceil(2).max(1);
    while !schedule.is_empty() {
        for start in (0..schedule.len()).step_by(chunk) {
            let end = (start + chunk).min(schedule.len());
            let mut smaller = scenario.clone();
            smaller.faults.schedule.drain(start..end);
            let what = if end - start == 1 {
                format!("drop fault {start}")
            } else {
                format!("drop faults {start}..{end}")
            };
            out.push((what, smaller));
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // Clients: the last producer, the last group, the last group's last member.
    if scenario.producers.len() > 1 {
        let mut smaller = scenario.clone();
        smaller.producers.pop();
        out.push(("drop the last producer".into(), drop_orphan_faults(smaller)));
    }
    if !scenario.consumers.is_empty() {
        let mut smaller = scenario.clone();
        smaller.consumers.pop();
        out.push(("drop the last group".into(), drop_orphan_faults(smaller)));
    }
    if let Some(last) = scenario.consumers.last() {
        if last.count > 1 {
            let mut smaller = scenario.clone();
            if let Some(group) = smaller.consumers.last_mut() {
                group.count -= 1;
            }
            out.push((
                format!("one consumer fewer in {}", last.group),
                drop_orphan_faults(smaller),
            ));
        }
    }
    // Messages: halve every producer's.
    if scenario
        .producers
        .iter()
        .any(|p| p.messages.unwrap_or(0) > MESSAGES_MIN)
    {
        let mut smaller = scenario.clone();
        for producer in &mut smaller.producers {
            if let Some(messages) = producer.messages.as_mut() {
                *messages = (*messages / 2).max(MESSAGES_MIN);
            }
        }
        out.push(("halve the messages".into(), smaller));
    }
    // Phases: end the fault phase after the last fault heals; halve the heal.
    let fault_ms = scenario.phases.fault_ms.unwrap_or(0);
    let last_fault_end = schedule
        .iter()
        .map(|f| f.at_ms + f.duration_ms)
        .max()
        .unwrap_or(0);
    let tighter = last_fault_end.div_ceil(1_000) * 1_000 + 1_000;
    if tighter < fault_ms {
        let mut smaller = scenario.clone();
        smaller.phases.fault_ms = Some(tighter);
        out.push((format!("fault phase {tighter} ms"), smaller));
    }
    let heal_ms = scenario.phases.heal_ms.unwrap_or(0);
    if heal_ms / 2 >= HEAL_MS_MIN {
        let mut smaller = scenario.clone();
        smaller.phases.heal_ms = Some(heal_ms / 2);
        out.push((format!("heal phase {} ms", heal_ms / 2), smaller));
    }
    out
}

fn fails(outcome: &SeedOutcome, checker: &str) -> bool {
    outcome
        .verdicts
        .iter()
        .any(|verdict| verdict.checker == checker && !verdict.valid)
}

pub struct Shrunk {
    pub scenario: Scenario,
    pub seed: u64,
    pub checker: &'static str,
    pub original: Size,
    pub shrunk: Size,
    pub runs: usize,
}

/// Shrinks seed `seed` of `scenario` (with `plant` planted). `checker` picks
/// the checker to keep failing; by default the first that failed.
/// `progress` gets one line per accepted step.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    plant: Option<Bug>,
    checker: Option<&str>,
    runs_max: usize,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Shrunk> {
    let original = runner::run_seed_planted(scenario, seed, plant);
    let failed = original.failed_checkers();
    let checker = match checker {
        Some(name) => failed.iter().copied().find(|c| *c == name).ok_or_else(|| {
            anyhow::anyhow!("seed {seed} does not fail {name} (failed: {failed:?})")
        })?,
        None => *failed.first().ok_or_else(|| {
            anyhow::anyhow!(
                "seed {seed} of {} fails no checker ({:?}); nothing to shrink",
                scenario.name,
                original.outcome
            )
        })?,
    };
    let resolved = original
        .resolved
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the run did not resolve"))?;
    let mut current = pin(resolved, original.faults_started.clone());
    let mut runs = 1;
    let replay = runner::run_seed_planted(&current, seed, plant);
    runs += 1;
    anyhow::ensure!(
        fails(&replay, checker),
        "the pinned replay of seed {seed} no longer fails {checker}; cannot shrink"
    );
    let original_size = size(&current);
    progress(&format!("target: {checker}; start: {original_size}"));
    'passes: loop {
        let mut shrank = false;
        for (what, candidate) in candidates(&current) {
            if runs >= runs_max {
                progress(&format!("run budget of {runs_max} spent"));
                break 'passes;
            }
            let outcome = runner::run_seed_planted(&candidate, seed, plant);
            runs += 1;
            if fails(&outcome, checker) {
                current = candidate;
                shrank = true;
                progress(&format!("{what}: still fails; now {}", size(&current)));
                // Sizes changed: regenerate the candidates.
                break;
            }
        }
        if !shrank {
            break;
        }
    }
    Ok(Shrunk {
        shrunk: size(&current),
        scenario: current,
        seed,
        checker,
        original: original_size,
        runs,
    })
}

/// The regression file for a shrunk run: a comment header, then the scenario.
pub fn regression_file(
    shrunk: &Shrunk,
    source: &str,
    plant: Option<Bug>,
) -> anyhow::Result<String> {
    let guards = plant.map_or_else(|| shrunk.checker.to_string(), |bug| bug.name().to_string());
    let mut scenario = shrunk.scenario.clone();
    scenario.name = format!("{guards}-{source}-{}", shrunk.seed);
    scenario.description = format!(
        "regression: {guards}; {} seed {} shrunk to {}",
        source, shrunk.seed, shrunk.shrunk
    );
    scenario.regression = Some(Regression {
        guards: guards.clone(),
        seed: shrunk.seed,
        checker: shrunk.checker.to_string(),
        shrunk_from: format!("{source} seed {}: {}", shrunk.seed, shrunk.original),
    });
    let mut text = String::new();
    writeln!(
        text,
        "# Written by `sim shrink {source} --seed {}{}`.",
        shrunk.seed,
        plant.map_or(String::new(), |bug| format!(" --plant {bug}"))
    )?;
    writeln!(
        text,
        "# Every knob is pinned and the faults are scripted: the seed only drives"
    )?;
    match plant {
        Some(bug) => {
            writeln!(
                text,
                "# network timing and the clients. With `{bug}` planted this run fails"
            )?;
            writeln!(
                text,
                "# `{}`; without it, it passes. `cargo test` checks both.",
                shrunk.checker
            )?;
        }
        None => {
            writeln!(
                text,
                "# network timing and the clients. It failed `{}` with nothing planted",
                shrunk.checker
            )?;
            writeln!(
                text,
                "# when it was shrunk; once that defect is fixed it must pass, and"
            )?;
            writeln!(text, "# `cargo test` checks that it does.")?;
        }
    }
    text.push_str(&toml::to_string(&scenario)?);
    Ok(text)
}
