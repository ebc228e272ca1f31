//! Running one revision's criterion benches and simulation sweeps, and
//! reading back what they measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::revision::Revision;

/// One benchmark's result from one run of its bench executable.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSample {
    /// Which of the alternating rounds measured it.
    pub round: usize,
    /// Criterion's full id, `group/function/parameter`.
    pub id: String,
    pub group: String,
    /// Criterion's median estimate of one iteration, in nanoseconds.
    pub median_ns: f64,
    /// Bytes or elements one iteration processes, if the bench says.
    pub throughput: Option<Throughput>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throughput {
    Bytes(u64),
    Elements(u64),
}

/// The benchmark ids a criterion bench executable holds (`--list`).
pub fn list_benches(executable: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new(executable)
        .args(["--bench", "--list"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {} --list", executable.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} --list failed ({})",
        executable.display(),
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": benchmark"))
        .map(str::to_string)
        .collect())
}

/// Criterion's filter is a regular expression; this one matches `id` alone.
fn exact_filter(id: &str) -> String {
    let mut pattern = String::from("^");
    for c in id.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

/// Runs one benchmark of one bench executable, with criterion writing under
/// `home`.
pub fn run_bench(
    revision: &Revision,
    executable: &Path,
    id: &str,
    home: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let status = Command::new(executable)
        .args(["--bench", "--noplot", "--warm-up-time", "1"])
        .arg(exact_filter(id))
        .current_dir(&revision.dir)
        .env("CRITERION_HOME", home)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("running {}", executable.display()))?;
    anyhow::ensure!(
        status.success(),
        "{} {id} failed ({status}); see {}",
        revision.label,
        log.display()
    );
    Ok(())
}

/// Every `new/` estimate criterion left under `home`, as measured in `round`.
pub fn read_criterion(home: &Path, round: usize) -> anyhow::Result<Vec<BenchSample>> {
    let mut samples = Vec::new();
    let mut stack: Vec<PathBuf> = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(sample) = read_estimate(&path, round)? {
                    samples.push(sample);
                }
            } else {
                stack.push(path);
            }
        }
    }
    samples.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(samples)
}

fn read_estimate(dir: &Path, round: usize) -> anyhow::Result<Option<BenchSample>> {
    let benchmark = dir.join("benchmark.json");
    let estimates = dir.join("estimates.json");
    if !benchmark.exists() || !estimates.exists() {
        return Ok(None);
    }
    let benchmark: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&benchmark)?)
        .with_context(|| format!("{}", benchmark.display()))?;
    let estimates: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&estimates)?)
        .with_context(|| format!("{}", estimates.display()))?;
    let id = benchmark["full_id"]
        .as_str()
        .context("benchmark.json has no full_id")?
        .to_string();
    let group = benchmark["group_id"]
        .as_str()
        .context("benchmark.json has no group_id")?
        .to_string();
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median")?;
    let throughput = match &benchmark["throughput"] {
        serde_json::Value::Object(map) => map
            .get("Bytes")
            .or_else(|| map.get("BytesDecimal"))
            .and_then(serde_json::Value::as_u64)
            .map(Throughput::Bytes)
            .or_else(|| {
                map.get("Elements")
                    .and_then(serde_json::Value::as_u64)
                    .map(Throughput::Elements)
            }),
        _ => None,
    };
    Ok(Some(BenchSample {
        round,
        id,
        group,
        median_ns,
        throughput,
    }))
}

/// One scenario's sweep with one revision's `sim`.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSample {
    pub scenario: String,
    pub round: usize,
    pub runs: u64,
    pub wall_ms: u64,
}

/// Times `sim sweep <scenario> --seeds <seeds> --jobs 1` in the revision's
/// tree. Failing seeds do not matter here (an old release may fail seeds a
/// later one fixed); only the time does.
#[allow(clippy::disallowed_methods)] // a wall clock is what this measures; xtask never runs in simulation
pub fn run_sweep(
    revision: &Revision,
    scenario: &str,
    round: usize,
    seeds: (u64, u64),
    log: &Path,
) -> anyhow::Result<SweepSample> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    eprintln!("   {} sweep {scenario}", revision.label);
    let started = std::time::Instant::now();
    let status = Command::new(&revision.sim)
        .args([
            "sweep",
            scenario,
            "--seeds",
            &format!("{}..{}", seeds.0, seeds.1),
            "--jobs",
            "1",
        ])
        .current_dir(&revision.dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running sim sweep")?;
    let wall_ms = started.elapsed().as_millis() as u64;
    // Exit codes 3 to 5 are verdicts; anything else means the sweep itself
    // did not run.
    anyhow::ensure!(
        matches!(status.code(), Some(0 | 3 | 4 | 5)),
        "{} sim sweep {scenario} failed to run ({status}); see {}",
        revision.label,
        log.display()
    );
    Ok(SweepSample {
        scenario: scenario.to_string(),
        round,
        runs: seeds.1 - seeds.0,
        wall_ms,
    })
}
