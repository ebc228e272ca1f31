//! Runs one seed of one scenario, end to end: resolve knobs, simulate, check,
//! report. Panics anywhere in the run (including inside spawned tasks, which
//! tokio would otherwise swallow) make the run a crash.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use serde::Serialize;

use crate::checkers::{self, Verdict};
use crate::history::History;
use crate::report::{self, Outcome, Report};
use crate::scenario::{Resolved, Scenario, ScheduledFault};
use crate::world;
use sluice::plant::Bug;

thread_local! {
    /// The first panic message seen on this thread during a run.
    static PANICKED: RefCell<Option<String>> = const { RefCell::new(None) };
}

static SETUP: Once = Once::new();

/// Log timestamps in simulated milliseconds.
struct SimTimer;

impl tracing_subscriber::fmt::time::FormatTime for SimTimer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>8}ms", crate::recorder::now_ms())
    }
}

/// Installs the process-wide panic hook, and with `SLUICE_SIM_LOG` a log
/// subscriber. Idempotent.
pub fn setup() {
    SETUP.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        // SLUICE_SIM_LOG=1 also prints sluice's own debug logs, stamped with
        // simulated time: for following a run step by step.
        let log = std::env::var_os("SLUICE_SIM_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_timer(SimTimer)
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)
        });
        // Without SLUICE_SIM_LOG no subscriber is installed, so sluice's log
        // calls cost a branch each (broker facts come through the typed
        // observer, not through tracing).
        if let Some(log) = log {
            let _ =
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log));
        }
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.to_string();
            let first = PANICKED.with(|p| {
                let mut slot = p.borrow_mut();
                let first = slot.is_none();
                if first {
                    *slot = Some(message);
                }
                first
            });
            if first && std::env::var_os("SLUICE_SIM_QUIET_PANICS").is_none() {
                default_hook(info);
            }
        }));
    });
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedOutcome {
    pub scenario: String,
    pub seed: u64,
    /// The planted bug, if any.
    #[serde(serialize_with = "serialize_plant")]
    pub plant: Option<Bug>,
    pub outcome: Outcome,
    pub verdicts: Vec<Verdict>,
    pub report: Option<Report>,
    pub trace_hash: String,
    pub panic: Option<String>,
    pub stuck: bool,
    pub steps: u64,
    pub simulated_ms: u64,
    pub wall_ms: u64,
    #[serde(skip)]
    pub history: History,
    #[serde(skip)]
    pub resolved: Option<Resolved>,
    /// The faults the run started, as a replayable schedule.
    #[serde(skip)]
    pub faults_started: Vec<ScheduledFault>,
}

fn serialize_plant<S: serde::Serializer>(plant: &Option<Bug>, s: S) -> Result<S::Ok, S::Error> {
    match plant {
        Some(bug) => s.serialize_some(bug.name()),
        None => s.serialize_none(),
    }
}

impl SeedOutcome {
    /// The names of the checkers that found a violation.
    pub fn failed_checkers(&self) -> Vec<&'static str> {
        self.verdicts
            .iter()
            .filter(|verdict| !verdict.valid)
            .map(|verdict| verdict.checker)
            .collect()
    }
}

/// Finds a scenario by name in `scenarios/` (relative to the working
/// directory, then to the source tree) or takes it as a path.
pub fn locate(scenario: &str) -> PathBuf {
    let as_path = Path::new(scenario);
    if as_path.extension().is_some() || as_path.components().count() > 1 {
        return as_path.to_path_buf();
    }
    let file = format!("{scenario}.toml");
    for base in [
        PathBuf::from("scenarios"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios"),
    ] {
        let candidate = base.join(&file);
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("scenarios").join(file)
}

/// `scenarios/`: in the working directory if there is one, else in the
/// source tree.
fn scenarios_dir() -> PathBuf {
    let local = PathBuf::from("scenarios");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
    }
}

/// `scenarios/regressions/`, where `sim shrink` writes.
pub fn regressions_dir() -> PathBuf {
    scenarios_dir().join("regressions")
}

/// The `.toml` files directly in `dir`, sorted; none if it cannot be read.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// Every regression scenario in `scenarios/regressions/`, sorted.
pub fn regression_scenarios() -> Vec<PathBuf> {
    toml_files(&regressions_dir())
}

/// Every scenario file directly in `scenarios/`, sorted.
pub fn all_scenarios() -> Vec<PathBuf> {
    toml_files(&scenarios_dir())
}

/// Wall-clock time of the harness itself, for the report's wall time and
/// seeds-per-minute; never seen by the simulated world.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> Instant {
    Instant::now()
}

pub fn run_seed(scenario: &Scenario, seed: u64) -> SeedOutcome {
    run_seed_planted(scenario, seed, None)
}

/// Runs one seed with `plant` (if any) planted in sluice for the run.
pub fn run_seed_planted(scenario: &Scenario, seed: u64, plant: Option<Bug>) -> SeedOutcome {
    run_seed_with(scenario, seed, plant, false)
}

/// Runs one seed with `plant` planted; with `wire`, the history also records
/// every request and response (for `sim run --trace`).
pub fn run_seed_with(
    scenario: &Scenario,
    seed: u64,
    plant: Option<Bug>,
    wire: bool,
) -> SeedOutcome {
    setup();
    let started = wall_clock();
    PANICKED.with(|p| *p.borrow_mut() = None);
    let resolved = scenario.resolve(seed);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _planted = sluice::plant::activate(plant.as_slice());
        world::run(&resolved, wire)
    }));
    let panic = PANICKED.with(|p| p.borrow_mut().take());
    let wall_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(run) => {
            let verdicts = checkers::run(&run.history, &resolved.checkers);
            let mut outcome = Outcome::from_verdicts(&verdicts);
            if run.stuck && outcome == Outcome::Pass {
                outcome = Outcome::Liveness;
            }
            if panic.is_some() {
                outcome = Outcome::Crash;
            }
            SeedOutcome {
                scenario: scenario.name.clone(),
                seed,
                plant,
                outcome,
                report: Some(report::build(&run.history)),
                trace_hash: report::trace_hash(&run.history),
                verdicts,
                panic,
                stuck: run.stuck,
                steps: run.steps,
                simulated_ms: run.simulated_ms,
                wall_ms,
                history: run.history,
                resolved: Some(resolved),
                faults_started: run.faults_started,
            }
        }
        Err(_) => SeedOutcome {
            scenario: scenario.name.clone(),
            seed,
            plant,
            outcome: Outcome::Crash,
            verdicts: Vec::new(),
            report: None,
            trace_hash: String::new(),
            panic: Some(panic.unwrap_or_else(|| "panic".to_string())),
            stuck: false,
            steps: 0,
            simulated_ms: 0,
            wall_ms,
            history: Vec::new(),
            resolved: Some(resolved),
            faults_started: Vec::new(),
        },
    }
}
