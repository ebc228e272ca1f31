//! Every scenario passes its checkers on the CI seed list, and every run is
//! deterministic: the same seed gives the same trace hash twice in one
//! process and again in a separate process, and a different seed differs.
//!
//! Longer explorations are `sim sweep`'s job; these seeds keep `cargo test`
//! within CI's budget on two cores.

use std::path::Path;
use std::process::Command;

use sluice_sim::report::Outcome;
use sluice_sim::runner;
use sluice_sim::scenario::Scenario;

/// Seeds each scenario runs under `cargo test`. Pinned so CI is reproducible;
/// chosen from the start of the range, not for passing.
const CI_SEEDS: &[u64] = &[1, 2, 3];
/// The crawler runs 29 consumers and costs several times the others.
const CRAWLER_CI_SEEDS: &[u64] = &[1];

fn load(name: &str) -> Scenario {
    Scenario::load(&runner::locate(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn assert_passes(name: &str, seeds: &[u64]) {
    let scenario = load(name);
    for &seed in seeds {
        let outcome = runner::run_seed(&scenario, seed);
        let failures: Vec<String> = outcome
            .verdicts
            .iter()
            .filter(|v| !v.valid)
            .map(|v| {
                format!(
                    "{}: {:?}",
                    v.checker,
                    v.anomalies.first().map(|a| &a.description)
                )
            })
            .collect();
        assert_eq!(
            outcome.outcome,
            Outcome::Pass,
            "{name} seed {seed} failed ({failures:?}, panic {:?}, stuck {}); reproduce with: \
             cargo run -p sluice-sim --release -- run {name} --seed {seed}",
            outcome.panic,
            outcome.stuck
        );
    }
}

/// Runs `seed` twice here and once in a separate `sim` process, and a
/// different seed once; compares trace hashes.
fn assert_deterministic(name: &str, seed: u64) {
    let scenario = load(name);
    let first = runner::run_seed(&scenario, seed);
    let second = runner::run_seed(&scenario, seed);
    assert!(!first.trace_hash.is_empty());
    assert_eq!(
        first.trace_hash, second.trace_hash,
        "{name} seed {seed}: two runs in one process differ"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["run", name, "--seed", &seed.to_string()])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run the sim binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let hash_line = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        hash_line,
        format!("trace-hash: {}", first.trace_hash),
        "{name} seed {seed}: a separate process differs:\n{stdout}"
    );
    assert!(
        stdout.starts_with(&format!("seed: {seed}\n")),
        "the seed is printed first:\n{stdout}"
    );
    let other = runner::run_seed(&scenario, seed + 1000);
    assert_ne!(
        first.trace_hash,
        other.trace_hash,
        "{name}: seeds {seed} and {} gave the same trace",
        seed + 1000
    );
}

/// `sim run --trace` records every request and response, without changing
/// the run: the trace hash is the untraced one.
#[test]
fn tracing_records_requests_and_keeps_the_trace_hash() {
    use sluice_sim::history::{Event, Kind};
    let scenario = load("balances");
    let plain = runner::run_seed(&scenario, 1);
    let traced = runner::run_seed_with(&scenario, 1, None, true);
    assert_eq!(plain.trace_hash, traced.trace_hash);
    let wire = |outcome: &runner::SeedOutcome, api: &str| {
        outcome
            .history
            .iter()
            .filter(|entry| {
                matches!(&entry.kind, Kind::Event { event: Event::Wire { api: a, .. } } if a == api)
            })
            .count()
    };
    assert_eq!(wire(&plain, "Produce"), 0);
    assert!(
        wire(&traced, "Produce") > 0,
        "no Produce requests in the trace"
    );
    assert!(wire(&traced, "Fetch") > 0, "no Fetch requests in the trace");
    let mut text = Vec::new();
    sluice_sim::trace::write(
        &traced.history,
        &traced.verdicts,
        &sluice_sim::trace::TraceFilter::default(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("<- producer-0 Produce#"),
        "{}",
        &text[..2000.min(text.len())]
    );
}

macro_rules! scenario_tests {
    ($($test:ident, $determinism:ident => $name:literal, $seeds:expr;)*) => {
        $(
            #[test]
            fn $test() {
                assert_passes($name, $seeds);
            }

            #[test]
            fn $determinism() {
                assert_deterministic($name, 7);
            }
        )*

        /// A scenario file nobody runs would be a scenario CI never checks.
        #[test]
        fn every_scenario_file_has_a_test() {
            let tested = [$($name),*];
            for path in runner::all_scenarios() {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                assert!(tested.contains(&name.as_str()), "scenarios/{name}.toml has no test in sim/tests/scenarios.rs");
            }
        }
    };
}

scenario_tests! {
    crawler_passes, crawler_is_deterministic => "crawler", CRAWLER_CI_SEEDS;
    orders_passes, orders_is_deterministic => "orders", CI_SEEDS;
    balances_passes, balances_is_deterministic => "balances", CI_SEEDS;
    fanout_passes, fanout_is_deterministic => "fanout", CI_SEEDS;
    slow_consumer_passes, slow_consumer_is_deterministic => "slow-consumer", CI_SEEDS;
    ingest_passes, ingest_is_deterministic => "ingest", CI_SEEDS;
    power_loss_passes, power_loss_is_deterministic => "power-loss", CI_SEEDS;
    orders_cluster_passes, orders_cluster_is_deterministic => "orders-cluster", CI_SEEDS;
    ingest_cluster_passes, ingest_cluster_is_deterministic => "ingest-cluster", CI_SEEDS;
    power_loss_cluster_passes, power_loss_cluster_is_deterministic => "power-loss-cluster", CI_SEEDS;
    balances_cluster_passes, balances_cluster_is_deterministic => "balances-cluster", CI_SEEDS;
    fanout_cluster_passes, fanout_cluster_is_deterministic => "fanout-cluster", CI_SEEDS;
    slow_consumer_cluster_passes, slow_consumer_cluster_is_deterministic => "slow-consumer-cluster", CI_SEEDS;
    crawler_cluster_passes, crawler_cluster_is_deterministic => "crawler-cluster", CRAWLER_CI_SEEDS;
    failover_passes, failover_is_deterministic => "failover", CI_SEEDS;
    controller_churn_passes, controller_churn_is_deterministic => "controller-churn", CI_SEEDS;
    isr_squeeze_passes, isr_squeeze_is_deterministic => "isr-squeeze", CI_SEEDS;
    fsync_window_passes, fsync_window_is_deterministic => "fsync-window", CI_SEEDS;
    cluster_pause_passes, cluster_pause_is_deterministic => "cluster-pause", CI_SEEDS;
    last_replica_standing_passes, last_replica_standing_is_deterministic => "last-replica-standing", CI_SEEDS;
    leader_flap_passes, leader_flap_is_deterministic => "leader-flap", CI_SEEDS;
    steady_cluster_passes, steady_cluster_is_deterministic => "steady-cluster", CI_SEEDS;
    follower_power_cycle_passes, follower_power_cycle_is_deterministic => "follower-power-cycle", CI_SEEDS;
    replica_cut_passes, replica_cut_is_deterministic => "replica-cut", CI_SEEDS;
    compaction_passes, compaction_is_deterministic => "compaction", CI_SEEDS;
    compaction_cluster_passes, compaction_cluster_is_deterministic => "compaction-cluster", CI_SEEDS;
}
