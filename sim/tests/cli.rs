//! The `sim` command as a user meets it: `--json` is one JSON object, usage
//! mistakes exit 2 and say what would have worked, `sim bugs` explains each
//! bug, and a closed pipe ends it quietly.

use std::io::Read;
use std::process::{Command, Stdio};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sim"))
}

/// A short scripted scenario (a shrunk regression), so the run is quick.
const SHORT: &str = "scenarios/regressions/ack-before-fsync-balances-0.toml";

fn in_workspace(command: &mut Command) -> &mut Command {
    command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn json_output_is_one_json_object() {
    let output = in_workspace(sim().args(["run", SHORT, "--json"]))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let document: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"));
    assert_eq!(document["outcome"], "pass");
    assert_eq!(document["seed"], 0);
    assert!(document["verdicts"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    assert!(document["trace_hash"]
        .as_str()
        .is_some_and(|h| h.len() == 16));
    assert_eq!(
        document["commit"].as_str(),
        Some(env!("SLUICE_SIM_COMMIT")),
        "the commit the binary was built from"
    );
}

#[test]
fn usage_mistakes_exit_2_and_say_what_exists() {
    let output = in_workspace(sim().args(["run", "no-such-scenario", "--seed", "1"]))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("no scenario \"no-such-scenario\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("orders") && stderr.contains("balances"),
        "{stderr}"
    );
    let output = in_workspace(sim().args(["sweep", "orders", "--seeds", "5..2"]))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let output = sim().args(["run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "clap's own usage errors");
}

#[test]
fn bugs_are_listed_with_a_line_each() {
    let output = sim().arg("bugs").output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|line| line.starts_with("session-expiry-skipped"))
        .expect("listed");
    assert!(line.contains("never expired"), "{line}");
    assert_eq!(stdout.lines().count(), sluice::plant::Bug::ALL.len());
}

#[test]
fn a_closed_pipe_ends_it_quietly() {
    // The trace (written to stdout here) is larger than a pipe's buffer, so
    // the writer is still writing when the reader goes away.
    let mut child = in_workspace(sim().args(["run", SHORT, "--trace", "/dev/stdout"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, then close the pipe, as `| head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let _ = status;
}

/// N shards, merged, are exactly the unsharded sweep: the same runs with the
/// same outcomes and trace hashes, the same summary, the same exit code.
#[test]
fn merged_shards_are_the_unsharded_sweep() {
    let scratch = tempfile_dir();
    let sweep = |shard: Option<&str>, out: &std::path::Path| {
        let mut command = sim();
        in_workspace(&mut command).args([
            "sweep",
            "power-loss",
            "balances",
            "--seeds",
            "0..5",
            "--jobs",
            "2",
            "--out",
        ]);
        command.arg(out);
        if let Some(shard) = shard {
            command.args(["--shard", shard]);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let whole = scratch.join("whole.jsonl");
    let (whole_code, whole_stdout) = sweep(None, &whole);
    let mut shards = Vec::new();
    for k in 1..=3 {
        let path = scratch.join(format!("shard-{k}.jsonl"));
        sweep(Some(&format!("{k}/3")), &path);
        shards.push(path);
    }
    let mut merge = sim();
    in_workspace(&mut merge).arg("merge").args(&shards);
    let merged = merge.output().unwrap();
    assert_eq!(merged.status.code(), whole_code);
    let table = |text: &str| -> Vec<String> {
        // The summary without the header lines and the timing columns.
        text.lines()
            .filter(|line| {
                line.starts_with("FAILED")
                    || line.starts_with("power-loss")
                    || line.starts_with("balances")
            })
            .map(|line| {
                line.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let merged_stdout = String::from_utf8(merged.stdout).unwrap();
    assert_eq!(
        table(&merged_stdout),
        table(&whole_stdout),
        "{merged_stdout}\n{whole_stdout}"
    );
    let key = |path: &std::path::Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let mut runs: Vec<(String, u64, String, String)> = text
            .lines()
            .map(|line| {
                let run: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    run["scenario"].as_str().unwrap().to_string(),
                    run["seed"].as_u64().unwrap(),
                    run["outcome"].as_str().unwrap().to_string(),
                    run["trace_hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        runs.sort();
        runs
    };
    let mut from_shards: Vec<_> = shards.iter().flat_map(|path| key(path)).collect();
    from_shards.sort();
    assert_eq!(from_shards, key(&whole));
    assert_eq!(from_shards.len(), 10);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
