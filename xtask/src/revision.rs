//! Revisions to compare: a release name from `reports/releases.toml` or any
//! git revision, checked out in a temporary worktree and built there with its
//! own target directory (kept between runs, so a second report is quick).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;

pub const RELEASES_PATH: &str = "reports/releases.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Releases {
    release: Vec<Release>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    version: String,
    commit: String,
    #[allow(dead_code)]
    #[serde(default)]
    note: String,
}

/// One side of a comparison, built.
#[derive(Debug, Clone)]
pub struct Revision {
    /// What the report calls it: the release version, or the short commit.
    pub label: String,
    pub commit: String,
    /// The source tree the benchmarks and sweeps run in.
    pub dir: PathBuf,
    /// Criterion bench executables by bench target name.
    pub benches: Vec<(String, PathBuf)>,
    pub sim: PathBuf,
}

pub fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .output()
        .context("running git")?;
    anyhow::ensure!(
        output.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// `name` as a release version, else as a git revision; returns the label
/// and the full commit.
pub fn resolve(name: &str) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(RELEASES_PATH)
        .with_context(|| format!("reading {RELEASES_PATH}"))?;
    let releases: Releases =
        toml::from_str(&text).with_context(|| format!("parsing {RELEASES_PATH}"))?;
    let wanted = name.strip_prefix('v').unwrap_or(name);
    if let Some(release) = releases.release.iter().find(|r| r.version == wanted) {
        let commit = git(&["rev-parse", &format!("{}^{{commit}}", release.commit)])?;
        return Ok((release.version.clone(), commit));
    }
    let commit = git(&["rev-parse", &format!("{name}^{{commit}}")]).with_context(|| {
        format!("{name} is neither a version in {RELEASES_PATH} nor a git revision")
    })?;
    Ok((commit[..10].to_string(), commit))
}

/// Checks `commit` out under `root/worktrees/<label>`, replacing any earlier
/// checkout there.
pub fn worktree(root: &Path, label: &str, commit: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join("worktrees").join(label);
    if dir.exists() {
        let _ = git(&["worktree", "remove", "--force", &dir.to_string_lossy()]);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    git(&["worktree", "prune"])?;
    std::fs::create_dir_all(root.join("worktrees"))?;
    git(&[
        "worktree",
        "add",
        "--detach",
        &dir.to_string_lossy(),
        commit,
    ])?;
    Ok(dir)
}

/// Removes a worktree made by [`worktree`].
pub fn remove_worktree(dir: &Path) {
    let _ = git(&["worktree", "remove", "--force", &dir.to_string_lossy()]);
}

/// Builds the criterion benches of the root package and the `sim` binary in
/// `dir`, with `target_dir` as the target directory.
pub fn build(label: &str, commit: &str, dir: &Path, target_dir: &Path) -> anyhow::Result<Revision> {
    eprintln!("== building {label} in {}", dir.display());
    let benches = artifacts(
        dir,
        target_dir,
        &["bench", "-p", "sluice", "--benches", "--no-run"],
        "bench",
    )?;
    let sims = artifacts(
        dir,
        target_dir,
        &["build", "--release", "-p", "sluice-sim", "--bin", "sim"],
        "bin",
    )?;
    let built = sims
        .into_iter()
        .find(|(name, _)| name == "sim")
        .map(|(_, path)| path)
        .context("no sim binary was built")?;
    // Worktrees share a target directory, where the next build replaces
    // `release/sim`; keep this revision's copy apart. (Bench executables
    // carry a hash of their worktree's path, so they do not collide.)
    let kept_dir = target_dir.join("perf-report-bin").join(label);
    std::fs::create_dir_all(&kept_dir)
        .with_context(|| format!("creating {}", kept_dir.display()))?;
    let sim = kept_dir.join("sim");
    std::fs::copy(&built, &sim)
        .with_context(|| format!("copying {} to {}", built.display(), sim.display()))?;
    Ok(Revision {
        label: label.to_string(),
        commit: commit.to_string(),
        dir: dir.to_path_buf(),
        benches,
        sim,
    })
}

/// Runs a cargo build and returns the executables it produced of `kind`.
fn artifacts(
    dir: &Path,
    target_dir: &Path,
    args: &[&str],
    kind: &str,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo {} failed in {}",
        args.join(" "),
        dir.display()
    );
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let kinds = message["target"]["kind"].as_array();
        if !kinds.is_some_and(|kinds| kinds.iter().any(|k| k == kind)) {
            continue;
        }
        if let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.push((name.to_string(), PathBuf::from(executable)));
        }
    }
    found.sort();
    Ok(found)
}

/// The scenario names (file stems) under `dir/scenarios`, sorted.
pub fn scenarios(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.join("scenarios"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Some(stem) = path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}
