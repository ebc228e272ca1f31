//! The instruction-count gate: runs `sim/benches/instructions.rs` under
//! callgrind (through gungraun) and compares each case's instruction count
//! with the committed baseline, `sim/benches/instructions.toml`.
//!
//! Instruction counts of a fixed workload barely move between runs on one
//! toolchain (hash seeds and allocator state shift them by a few hundredths
//! of a percent), so a small threshold catches real regressions without the
//! false alarms that wall-clock gates raise on shared machines.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const BASELINE_PATH: &str = "sim/benches/instructions.toml";
/// For a first baseline: repeated runs on one machine agree to a few parts in
/// a million, and a real regression worth stopping a merge for is larger.
const THRESHOLD_PERCENT_DEFAULT: f64 = 2.0;

/// The committed baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// One line on why the counts last changed; a deliberate change rewrites
    /// it in the same commit.
    pub reason: String,
    /// A case fails the gate when it executes more than this many percent
    /// over its baseline count.
    pub threshold_percent: f64,
    /// The toolchain the counts were taken with: another compiler emits other
    /// instructions, so a mismatch is reported next to any failure.
    pub rustc: String,
    pub valgrind: String,
    /// The CPU model: glibc picks its memcpy and friends by CPU features, so
    /// another CPU runs other instructions for the same code.
    pub cpu: String,
    /// Instructions per case, keyed `group::function::case`.
    pub counts: BTreeMap<String, u64>,
}

impl Baseline {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let baseline: Baseline =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            baseline.threshold_percent > 0.0 && baseline.threshold_percent < 100.0,
            "{}: threshold_percent {} is not between 0 and 100",
            path.display(),
            baseline.threshold_percent
        );
        Ok(baseline)
    }

    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Instructions executed by each case of sim/benches/instructions.rs, counted\n\
             # by callgrind. `cargo xtask instructions` (run by .ci/run) fails when a case\n\
             # exceeds its count by more than threshold_percent. A deliberate change\n\
             # rewrites this file in the same commit:\n\
             #   cargo xtask instructions --update --reason \"one line on why\"\n",
        );
        text.push_str(&toml::to_string(self).expect("a baseline serialises"));
        text
    }
}

/// How one case compares with its baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Within,
    Regressed,
    /// Fewer instructions than the threshold allows for: not a failure, but
    /// the baseline should be lowered so later regressions are caught.
    Improved,
    /// Measured but not in the baseline.
    New,
    /// In the baseline but not measured (renamed or removed).
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub case: String,
    pub baseline: Option<u64>,
    pub measured: Option<u64>,
    pub status: Status,
}

impl Row {
    pub fn change_percent(&self) -> Option<f64> {
        match (self.baseline, self.measured) {
            (Some(base), Some(now)) if base > 0 => {
                Some((now as f64 - base as f64) * 100.0 / base as f64)
            }
            _ => None,
        }
    }
}

/// Every case of both sides, in name order.
pub fn compare(baseline: &Baseline, measured: &BTreeMap<String, u64>) -> Vec<Row> {
    let mut cases: Vec<&String> = baseline.counts.keys().chain(measured.keys()).collect();
    cases.sort();
    cases.dedup();
    cases
        .into_iter()
        .map(|case| {
            let base = baseline.counts.get(case).copied();
            let now = measured.get(case).copied();
            let status = match (base, now) {
                (None, _) => Status::New,
                (_, None) => Status::Missing,
                (Some(base), Some(now)) => {
                    let limit = base as f64 * (1.0 + baseline.threshold_percent / 100.0);
                    let floor = base as f64 * (1.0 - baseline.threshold_percent / 100.0);
                    if now as f64 > limit {
                        Status::Regressed
                    } else if (now as f64) < floor {
                        Status::Improved
                    } else {
                        Status::Within
                    }
                }
            };
            Row {
                case: case.clone(),
                baseline: base,
                measured: now,
                status,
            }
        })
        .collect()
}

/// The gate fails on a regression, and on a case that is missing or new: the
/// baseline must name exactly the cases the bench runs, or a renamed case
/// would silently escape the gate.
pub fn passes(rows: &[Row]) -> bool {
    rows.iter()
        .all(|row| matches!(row.status, Status::Within | Status::Improved))
}

pub fn render_rows(rows: &[Row], threshold_percent: f64) -> String {
    let mut text = format!(
        "{:<44} {:>15} {:>15} {:>9}  status (threshold {threshold_percent}%)\n",
        "case", "baseline", "measured", "change"
    );
    for row in rows {
        let show = |count: Option<u64>| count.map_or_else(|| "-".to_string(), |c| c.to_string());
        let change = row
            .change_percent()
            .map_or_else(|| "-".to_string(), |c| format!("{c:+.2}%"));
        let status = match row.status {
            Status::Within => "ok",
            Status::Regressed => "REGRESSED",
            Status::Improved => "improved: lower the baseline (--update)",
            Status::New => "NEW: not in the baseline (--update)",
            Status::Missing => "MISSING: in the baseline but not run",
        };
        text.push_str(&format!(
            "{:<44} {:>15} {:>15} {:>9}  {status}\n",
            row.case,
            show(row.baseline),
            show(row.measured),
            change
        ));
    }
    text
}

/// Extracts `case -> instructions` from gungraun's `--output-format=json`
/// lines (one benchmark summary a line).
pub fn parse_summaries(output: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (number, line) in output.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let summary: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("gungraun output line {}", number + 1))?;
        let case = case_name(&summary)
            .with_context(|| format!("gungraun output line {}: no benchmark name", number + 1))?;
        let instructions = instructions(&summary).with_context(|| {
            format!(
                "gungraun output line {}: no callgrind instruction count",
                number + 1
            )
        })?;
        anyhow::ensure!(
            counts.insert(case.clone(), instructions).is_none(),
            "case {case} reported twice"
        );
    }
    anyhow::ensure!(!counts.is_empty(), "gungraun reported no benchmarks");
    Ok(counts)
}

/// `group::function::case`, from the summary's module path (which starts
/// with the bench file's name) and id.
fn case_name(summary: &serde_json::Value) -> Option<String> {
    let module = summary.get("module_path")?.as_str()?;
    let id = summary.get("id")?.as_str()?;
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    Some(format!("{module}::{id}"))
}

/// The total `Ir` (instructions executed, over all threads) of the callgrind
/// profile: `profiles[tool = "Callgrind"].data.total.metrics.Ir.values.new`
/// in gungraun 0.20's summary schema.
fn instructions(summary: &serde_json::Value) -> Option<u64> {
    summary
        .get("profiles")?
        .as_array()?
        .iter()
        .find(|profile| profile.get("tool").and_then(|t| t.as_str()) == Some("Callgrind"))?
        .pointer("/data/total/metrics/Ir/values/new")?
        .as_u64()
}

fn tool_version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|| format!("{program}: not found"))
}

/// Runs the instruction benches and returns each case's count.
pub fn measure() -> anyhow::Result<BTreeMap<String, u64>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "bench",
            "-p",
            "sluice-sim",
            "--bench",
            "instructions",
            "--",
            "--output-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "cargo bench --bench instructions failed ({}); is gungraun-runner 0.20.0 installed \
         (cargo install gungraun-runner --version 0.20.0 --locked) and valgrind on PATH?\n{stdout}",
        output.status
    );
    parse_summaries(&stdout)
}

/// The CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

pub fn run(update: bool, reason: Option<String>) -> anyhow::Result<i32> {
    let path = Path::new(BASELINE_PATH);
    let rustc = tool_version("rustc", "-V");
    let valgrind = tool_version("valgrind", "--version");
    let cpu = cpu_model();
    let measured = measure()?;
    if update {
        let reason = reason.context("--update needs --reason \"one line on why\"")?;
        let threshold_percent =
            Baseline::load(path).map_or(THRESHOLD_PERCENT_DEFAULT, |old| old.threshold_percent);
        let baseline = Baseline {
            reason,
            threshold_percent,
            rustc,
            valgrind,
            cpu,
            counts: measured,
        };
        std::fs::write(path, baseline.render())?;
        println!("wrote {}", path.display());
        return Ok(0);
    }
    let baseline = Baseline::load(path)?;
    let rows = compare(&baseline, &measured);
    print!("{}", render_rows(&rows, baseline.threshold_percent));
    if passes(&rows) {
        println!("instruction counts: ok");
        return Ok(0);
    }
    if baseline.rustc != rustc || baseline.valgrind != valgrind || baseline.cpu != cpu {
        // Counts from another compiler, valgrind or CPU are not comparable:
        // failing here would be a false alarm, passing silently a false
        // assurance. Say so, and leave the verdict to a machine like the
        // baseline's.
        println!(
            "instruction counts: NOT GATED. The baseline was counted with {}, {} on {}; this \
             machine has {rustc}, {valgrind} on {cpu}, which execute other instructions for \
             the same code. Re-count the baseline on this kind of machine to gate here.",
            baseline.rustc, baseline.valgrind, baseline.cpu
        );
        return Ok(0);
    }
    println!(
        "instruction counts: FAILED. If the change is deliberate, update the baseline in the \
         same commit: cargo xtask instructions --update --reason \"...\""
    );
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(counts: &[(&str, u64)]) -> Baseline {
        Baseline {
            reason: "test".into(),
            threshold_percent: 1.0,
            rustc: "rustc".into(),
            valgrind: "valgrind".into(),
            cpu: "cpu".into(),
            counts: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn measured(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
        counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_count_over_the_threshold_fails_and_one_within_passes() {
        let base = baseline(&[("log::append::a", 1_000_000), ("sim::run::b", 2_000_000)]);
        let rows = compare(
            &base,
            &measured(&[("log::append::a", 1_009_999), ("sim::run::b", 2_000_000)]),
        );
        assert!(passes(&rows), "{rows:?}");
        let rows = compare(
            &base,
            &measured(&[("log::append::a", 1_010_001), ("sim::run::b", 2_000_000)]),
        );
        assert!(!passes(&rows));
        assert_eq!(rows[0].status, Status::Regressed);
        assert_eq!(rows[1].status, Status::Within);
    }

    #[test]
    fn improvements_pass_but_renamed_or_new_cases_fail() {
        let base = baseline(&[("a", 1_000_000), ("b", 1_000)]);
        let rows = compare(&base, &measured(&[("a", 500_000), ("b", 1_000)]));
        assert!(passes(&rows));
        assert_eq!(rows[0].status, Status::Improved);
        let rows = compare(&base, &measured(&[("a", 1_000_000), ("c", 1_000)]));
        assert!(!passes(&rows));
        let statuses: Vec<Status> = rows.iter().map(|r| r.status.clone()).collect();
        assert_eq!(statuses, [Status::Within, Status::Missing, Status::New]);
    }

    #[test]
    fn the_baseline_file_round_trips() {
        let base = baseline(&[("log::append::records_100b", 123)]);
        let text = base.render();
        let dir = std::env::temp_dir().join(format!("xtask-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("instructions.toml");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), base);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summaries_give_one_count_per_case() {
        let output = r#"
not json
{"module_path":"instructions::log::append","id":"records_100b","profiles":[{"tool":"Callgrind","data":{"parts":[{"metrics":{"Ir":{"values":{"new":4000}}}},{"metrics":{"Ir":{"values":{"new":242}}}}],"total":{"metrics":{"Ir":{"values":{"new":4242}}}}}}]}
{"module_path":"instructions::sim::simulation","id":"seed_1","profiles":[{"tool":"Callgrind","data":{"parts":[],"total":{"metrics":{"Ir":{"values":{"new":99,"old":98}}}}}}]}
"#;
        let counts = parse_summaries(output).unwrap();
        assert_eq!(
            counts,
            measured(&[
                ("log::append::records_100b", 4242),
                ("sim::simulation::seed_1", 99)
            ])
        );
        assert!(parse_summaries("nothing here").is_err());
        let no_count = r#"{"module_path":"instructions::a","id":"b","profiles":[{"tool":"DHAT"}]}"#;
        assert!(parse_summaries(no_count).is_err());
    }
}
