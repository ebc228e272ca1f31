//! sluice's Rust consumer sharing a consumer group with kafka-python, so the
//! ConsumerProtocol bytes and the range assignor must agree with another
//! client's, whichever member leads. Also checks that kafka-python's keyed
//! partitioning (murmur2, as Java) lands where ours does.
//!
//! Gated by `SLUICE_INTEROP=1` because it needs kafka-python installed, like
//! `tests/interop.rs`. Without the variable the test says it did not run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sluice::client::partitioner::partition_for_key;
use sluice::client::{
    Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, TopicPartition,
};
use sluice::clock::SystemClock;
use sluice::net::TcpConnector;
use sluice::testing::{start_broker, test_config};

/// Bound on the whole scenario; the Python side has its own timeout inside.
const WAIT: Duration = Duration::from_secs(60);

fn consumer(address: &str, group: &str) -> Consumer {
    let config = ConsumerConfig {
        bootstrap_servers: address.to_string(),
        group_id: Some(group.to_string()),
        auto_offset_reset: AutoOffsetReset::Earliest,
        enable_auto_commit: false,
        heartbeat_interval_ms: 100,
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    };
    Consumer::new(config, Arc::new(TcpConnector), Arc::new(SystemClock)).unwrap()
}

/// Runs the Python member while polling `rust` until Python exits; returns
/// Python's stdout and every assignment the Rust member had.
/// With `python_first`, the Rust member starts polling only once Python holds
/// an assignment alone, so Python leads the group.
async fn run_mixed(
    address: &str,
    topic: &str,
    group: &str,
    rust: &mut Consumer,
    python_first: bool,
) -> (String, Vec<Vec<TopicPartition>>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client_interop/mixed_group.py");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("python-joined");
    let mut command = Command::new("python3");
    command.arg(script).args([address, topic, group, "2", "45"]);
    if python_first {
        command.arg(&marker);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut seen: Vec<Vec<TopicPartition>> = Vec::new();
    let status = tokio::time::timeout(WAIT, async {
        while python_first && !marker.exists() {
            if let Some(status) = child.try_wait().expect("python status") {
                return status;
            }
            // The marker is a file; there is nothing to await but its existence.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            rust.poll(Duration::from_millis(50)).await.expect("poll");
            let current = rust.assignment().to_vec();
            if seen.last() != Some(&current) {
                seen.push(current);
            }
            if let Some(status) = child.try_wait().expect("python status") {
                return status;
            }
        }
    })
    .await
    .expect("python member finished");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "python member failed: {stdout}");
    (stdout, seen)
}

fn python_assignment(stdout: &str) -> Vec<TopicPartition> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ASSIGNED "))
        .expect("ASSIGNED line");
    line.split(',')
        .map(|tp| {
            let (topic, partition) = tp.rsplit_once(':').unwrap();
            TopicPartition::new(topic, partition.parse().unwrap())
        })
        .collect()
}

fn check_key_placement(stdout: &str, partitions: i32) {
    let mut checked = 0;
    for line in stdout.lines().filter_map(|l| l.strip_prefix("KEY ")) {
        let (key, partition) = line.split_once(' ').unwrap();
        assert_eq!(
            partition_for_key(key.as_bytes(), partitions),
            partition.parse::<i32>().unwrap(),
            "placement of {key}"
        );
        checked += 1;
    }
    assert_eq!(checked, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_kafka_python_share_a_group_whoever_leads() {
    if std::env::var("SLUICE_INTEROP").as_deref() != Ok("1") {
        eprintln!("client interop test not run: set SLUICE_INTEROP=1 with kafka-python installed");
        return;
    }
    let broker = start_broker(test_config()).await;
    let admin = Admin::new(
        &broker.address,
        Arc::new(TcpConnector),
        ConnectionConfig::default(),
    );
    admin.create_topic("mixed", 4, 1, &[]).await.unwrap();
    let all: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("mixed", p)).collect();

    // Rust joins first and leads: Python must decode our assignment.
    let mut rust = consumer(&broker.address, "rust-leads");
    rust.subscribe(vec!["mixed".into()], None).unwrap();
    tokio::time::timeout(WAIT, async {
        while rust.assignment().is_empty() {
            rust.poll(Duration::from_millis(50)).await.unwrap();
        }
    })
    .await
    .expect("rust member joined alone");
    assert_eq!(rust.assignment(), &all[..]);
    let (stdout, seen) = run_mixed(&broker.address, "mixed", "rust-leads", &mut rust, false).await;
    check_key_placement(&stdout, 4);
    let python = python_assignment(&stdout);
    assert_eq!(python.len(), 2, "{stdout}");
    let complement: Vec<TopicPartition> = all
        .iter()
        .filter(|tp| !python.contains(tp))
        .cloned()
        .collect();
    assert!(
        seen.contains(&complement),
        "rust never held {complement:?}: {seen:?}"
    );
    rust.close().await.unwrap();

    // Python joins first and leads: we must decode kafka-python's assignment.
    let mut rust = consumer(&broker.address, "python-leads");
    rust.subscribe(vec!["mixed".into()], None).unwrap();
    let (stdout, seen) = run_mixed(&broker.address, "mixed", "python-leads", &mut rust, true).await;
    let python = python_assignment(&stdout);
    let complement: Vec<TopicPartition> = all
        .iter()
        .filter(|tp| !python.contains(tp))
        .cloned()
        .collect();
    assert!(!complement.is_empty() && python.len() + complement.len() == 4);
    assert!(
        seen.contains(&complement),
        "rust never held {complement:?}: {seen:?}"
    );
    rust.close().await.unwrap();
}
