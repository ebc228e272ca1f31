//! Three real `sluice broker` processes on loopback, each a broker and a
//! voter of the controller quorum: the quorum elects a leader, topics are
//! created through it and spread over the brokers, records go to each
//! partition's broker, and after the active controller is killed with
//! SIGKILL the others elect a new one and keep serving the control plane.
//! The killed node comes back with its partitions.
//!
//! A second cluster replicates: a topic with three replicas and
//! `min.insync.replicas=2` takes acks=all writes without pause while the
//! partition's leader, and later the active controller, are SIGKILLed and
//! restarted; every acknowledged record is then read back exactly once, in
//! order. The longest gap between acknowledgements is printed: the
//! failover time a producer sees.
//!
//! It needs only the `sluice` binary. With `SLUICE_INTEROP=1` kcat also
//! produces and consumes across the brokers.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long the cluster may take to elect, or re-elect, a controller.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// A bounded wait counted in sleeps (the workspace's lints keep the OS clock
/// out of the code, tests included): each `pause` sleeps `step`, and says
/// whether the time allowed has run out.
struct Patience {
    sleeps_left: u128,
    step: Duration,
}

impl Patience {
    fn new(allowed: Duration, step: Duration) -> Patience {
        Patience {
            sleeps_left: allowed.as_millis() / step.as_millis().max(1),
            step,
        }
    }

    fn exhausted(&self) -> bool {
        self.sleeps_left == 0
    }

    fn pause(&mut self) {
        self.sleeps_left = self.sleeps_left.saturating_sub(1);
        std::thread::sleep(self.step);
    }
}

struct Node {
    id: i32,
    config: PathBuf,
    log: PathBuf,
    address: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["broker", "--config"])
            .arg(&self.config)
            .args(["--override", "group.initial.rebalance.delay.ms=0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice broker");
        self.child = Some(child);
        let mut patience = Patience::new(Duration::from_secs(10), Duration::from_millis(50));
        while TcpStream::connect(&self.address).is_err() {
            assert!(
                !patience.exhausted(),
                "node {} did not listen on {}",
                self.id,
                self.address
            );
            patience.pause();
        }
    }

    /// SIGKILL: no flush, no goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

fn cluster(dir: &Path) -> Vec<Node> {
    cluster_with(dir, "")
}

/// Three nodes whose configuration files end with `extra` (settings, one
/// per line).
fn cluster_with(dir: &Path, extra: &str) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (plaintext, controller))| {
            let id = i as i32 + 1;
            let config = dir.join(format!("node-{id}.properties"));
            std::fs::write(
                &config,
                format!(
                    "process.roles=broker,controller\nnode.id={id}\n\
                     controller.quorum.voters={voters}\n\
                     listeners=PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller}\n\
                     controller.listener.names=CONTROLLER\nlog.dirs={}\n{extra}",
                    dir.join(format!("data-{id}")).display()
                ),
            )
            .unwrap();
            Node {
                id,
                config,
                log: dir.join(format!("node-{id}.log")),
                address: format!("127.0.0.1:{plaintext}"),
                child: None,
            }
        })
        .collect()
}

fn sluice(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `sluice metadata-quorum describe --status` through `bootstrap`, until it
/// names a leader other than `not`; returns the leader and the epoch.
fn wait_for_leader(bootstrap: &str, not: Option<i32>) -> (i32, i32) {
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(200));
    loop {
        let output = sluice(
            &[
                "metadata-quorum",
                "--bootstrap-server",
                bootstrap,
                "describe",
                "--status",
            ],
            None,
        );
        let text = stdout(&output);
        let field = |name: &str| -> Option<i32> {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse().ok())
        };
        if let (true, Some(leader), Some(epoch)) = (
            output.status.success(),
            field("LeaderId:"),
            field("LeaderEpoch:"),
        ) {
            if leader >= 0 && Some(leader) != not {
                assert!(text.contains("CurrentVoters:          [1,2,3]"), "{text}");
                return (leader, epoch);
            }
        }
        assert!(
            !patience.exhausted(),
            "no controller elected via {bootstrap}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        patience.pause();
    }
}

fn create_topic(bootstrap: &str, topic: &str, partitions: &str) {
    let output = try_create_topic(bootstrap, topic, partitions);
    assert!(
        output.status.success(),
        "creating {topic}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn try_create_topic(bootstrap: &str, topic: &str, partitions: &str) -> Output {
    sluice(
        &[
            "topics",
            "--create",
            "--topic",
            topic,
            "--partitions",
            partitions,
            "--bootstrap-server",
            bootstrap,
        ],
        None,
    )
}

/// The leader of each partition, from `sluice topics --describe`. Another
/// broker learns of a new topic once it has the metadata record committed,
/// a moment after the controller answered, so this asks until it knows.
fn leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    describe(bootstrap, topic)
        .lines()
        .filter_map(|line| line.split("Leader: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Each partition's preferred leader (its first replica), in partition order.
fn preferred(bootstrap: &str, topic: &str) -> Vec<i32> {
    describe(bootstrap, topic)
        .lines()
        .filter_map(|line| line.split("Replicas: ").nth(1))
        .filter_map(|rest| {
            rest.split_whitespace()
                .next()?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// `sluice topics --describe` of `topic` at `bootstrap`, asked until it
/// succeeds (see [`leaders`]).
fn describe(bootstrap: &str, topic: &str) -> String {
    let mut patience = Patience::new(Duration::from_secs(10), Duration::from_millis(100));
    loop {
        let output = sluice(
            &[
                "topics",
                "--describe",
                "--topic",
                topic,
                "--bootstrap-server",
                bootstrap,
            ],
            None,
        );
        if output.status.success() {
            return stdout(&output);
        }
        assert!(
            !patience.exhausted(),
            "describing {topic} at {bootstrap}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        patience.pause();
    }
}

fn produce(bootstrap: &str, topic: &str, lines: &str) {
    let output = sluice(
        &[
            "produce",
            "--topic",
            topic,
            "--parse-key",
            "--timeout-ms",
            "30000",
            "--bootstrap-server",
            bootstrap,
        ],
        Some(lines),
    );
    assert!(
        output.status.success(),
        "producing to {topic}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn consume_count(bootstrap: &str, topic: &str, expected: usize) -> usize {
    let output = sluice(
        &[
            "consume",
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            &expected.to_string(),
            "--timeout-ms",
            "20000",
            "--bootstrap-server",
            bootstrap,
        ],
        None,
    );
    stdout(&output).lines().count()
}

#[test]
fn three_processes_elect_a_controller_spread_topics_and_survive_its_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    let bootstrap_all = nodes
        .iter()
        .map(|n| n.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let (controller, epoch) = wait_for_leader(&nodes[0].address, None);

    // Brokers register with the controller as they come up; a topic is
    // spread over those registered when it is created. Probe until all
    // three are.
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(300));
    for probe in 0.. {
        let topic = format!("probe-{probe}");
        // Until a broker has registered, there is none to place replicas on
        // (INVALID_REPLICATION_FACTOR, as Kafka answers).
        let created = try_create_topic(&nodes[1].address, &topic, "3")
            .status
            .success();
        let spread: std::collections::BTreeSet<i32> = if created {
            leaders(&nodes[2].address, &topic).into_iter().collect()
        } else {
            Default::default()
        };
        if spread.len() == 3 {
            break;
        }
        assert!(!patience.exhausted(), "brokers did not all register");
        patience.pause();
    }
    create_topic(&nodes[1].address, "orders", "6");
    let placed = leaders(&nodes[2].address, "orders");
    assert_eq!(placed.len(), 6, "{placed:?}");
    let spread: std::collections::BTreeSet<i32> = placed.iter().copied().collect();
    assert_eq!(spread.len(), 3, "partitions not spread: {placed:?}");

    // Replicas placed by hand, as kafka-topics' --replica-assignment does:
    // each partition's first replica leads.
    let assigned = "2:1,1:3,3:2";
    let output = sluice(
        &[
            "topics",
            "--create",
            "--topic",
            "placed",
            "--replica-assignment",
            assigned,
            "--bootstrap-server",
            &nodes[0].address,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "--replica-assignment {assigned}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(leaders(&nodes[2].address, "placed"), [2, 1, 3]);

    // Topic configs live in the metadata log: created with the topic,
    // altered through a broker that is not the controller (it forwards),
    // and seen by every broker.
    let output = sluice(
        &[
            "topics",
            "--create",
            "--topic",
            "configured",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "retention.ms=60000",
            "--bootstrap-server",
            &nodes[0].address,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let follower = nodes
        .iter()
        .find(|n| n.id != controller)
        .expect("a broker that is not the controller");
    let output = sluice(
        &[
            "configs",
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "configured",
            "--add-config",
            "segment.ms=7200000",
            "--bootstrap-server",
            &follower.address,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for node in &nodes {
        wait_for_configs(
            &node.address,
            "configured",
            &["retention.ms=60000", "segment.ms=7200000"],
        );
    }
    // CreatePartitions through the controller: the new partitions get
    // leaders and take records.
    let output = sluice(
        &[
            "topics",
            "--alter",
            "--topic",
            "configured",
            "--partitions",
            "5",
            "--bootstrap-server",
            &follower.address,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(200));
    while leaders(&nodes[2].address, "configured").len() != 5 {
        assert!(
            !patience.exhausted(),
            "the added partitions never got leaders"
        );
        patience.pause();
    }
    let keyed: String = (0..20).map(|i| format!("k{i}:v{i}\n")).collect();
    produce(&bootstrap_all, "configured", &keyed);
    assert_eq!(consume_count(&bootstrap_all, "configured", 20), 20);
    // DeleteRecords up to partition 0's high watermark: answered once every
    // in-sync replica has the new log start, so it outlives failovers
    // (checked after the controller's kill below).
    let output = sluice(
        &[
            "delete-records",
            "--topic",
            "configured",
            "--partition",
            "0",
            "--offset",
            "-1",
            "--bootstrap-server",
            &bootstrap_all,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let low_watermark: i64 = stdout(&output)
        .split("low_watermark: ")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .expect("a low watermark");
    let earliest = || {
        let output = sluice(
            &[
                "get-offsets",
                "--topic",
                "configured",
                "--partitions",
                "0",
                "--time",
                "-2",
                "--bootstrap-server",
                &bootstrap_all,
            ],
            None,
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout(&output).trim().to_string()
    };
    assert_eq!(earliest(), format!("configured:0:{low_watermark}"));

    let lines: String = (0..60).map(|i| format!("k{}:v{i}\n", i % 12)).collect();
    produce(&bootstrap_all, "orders", &lines);
    assert_eq!(consume_count(&bootstrap_all, "orders", 60), 60);

    if std::env::var("SLUICE_INTEROP").as_deref() == Ok("1") {
        let output = Command::new("timeout")
            .args([
                "60",
                "kcat",
                "-b",
                &bootstrap_all,
                "-t",
                "orders",
                "-C",
                "-e",
                "-q",
            ])
            .output()
            .expect("kcat");
        let read = String::from_utf8_lossy(&output.stdout).lines().count();
        assert_eq!(read, 60, "kcat read {read} of 60 across the brokers");
    }

    // SIGKILL the active controller: the other two elect a new one, in a
    // later epoch, and it serves controller writes.
    let killed = nodes
        .iter()
        .position(|n| n.id == controller)
        .expect("the controller is a node");
    nodes[killed].kill();
    let survivor = &nodes[(killed + 1) % 3].address;
    let (_, new_epoch) = wait_for_leader(survivor, Some(controller));
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    create_topic(survivor, "after-failover", "2");

    // The killed node comes back, catches up and serves its partitions.
    nodes[killed].start();
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(200));
    loop {
        let output = sluice(
            &[
                "topics",
                "--describe",
                "--topic",
                "after-failover",
                "--bootstrap-server",
                &nodes[killed].address,
            ],
            None,
        );
        if output.status.success() && stdout(&output).contains("PartitionCount: 2") {
            break;
        }
        assert!(!patience.exhausted(), "node {controller} did not catch up");
        patience.pause();
    }
    produce(&bootstrap_all, "orders", "k0:after\n");
    assert_eq!(consume_count(&bootstrap_all, "orders", 61), 61);
    // The deleted records stayed deleted through the controller's kill,
    // whoever leads partition 0 now.
    assert_eq!(earliest(), format!("configured:0:{low_watermark}"));
    // Preferred leader election hands "configured" (three replicas) back
    // to each partition's first replica once the restarted broker is in
    // sync again.
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(300));
    loop {
        let output = sluice(
            &[
                "leader-election",
                "--election-type",
                "PREFERRED",
                "--all-topic-partitions",
                "--bootstrap-server",
                &bootstrap_all,
            ],
            None,
        );
        if output.status.success()
            && leaders(&nodes[killed].address, "configured")
                == preferred(&nodes[killed].address, "configured")
        {
            break;
        }
        assert!(
            !patience.exhausted(),
            "preferred leaders never came back: {} {}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        patience.pause();
    }
    // The restarted controller replayed the topic's configs.
    wait_for_configs(
        &nodes[killed].address,
        "configured",
        &["retention.ms=60000", "segment.ms=7200000"],
    );
}

/// Waits until `sluice configs --describe` at `bootstrap` lists each of
/// `expected` among `topic`'s overrides.
fn wait_for_configs(bootstrap: &str, topic: &str, expected: &[&str]) {
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(200));
    loop {
        let output = sluice(
            &[
                "configs",
                "--describe",
                "--entity-type",
                "topics",
                "--entity-name",
                topic,
                "--bootstrap-server",
                bootstrap,
            ],
            None,
        );
        let described = stdout(&output);
        let found = |entry: &&str| {
            described
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{entry} ")))
        };
        if output.status.success() && expected.iter().all(found) {
            return;
        }
        assert!(
            !patience.exhausted(),
            "{bootstrap} never described {topic} with {expected:?}: {described}"
        );
        patience.pause();
    }
}

/// The broker leading `topic`'s partition 0, from `sluice topics --describe`
/// at `bootstrap`, once it is one of `candidates`.
fn partition_leader(bootstrap: &str, topic: &str, not: Option<i32>) -> i32 {
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(200));
    loop {
        let leader = leaders(bootstrap, topic).first().copied();
        if let Some(leader) = leader.filter(|l| *l >= 0 && Some(*l) != not) {
            return leader;
        }
        assert!(!patience.exhausted(), "no new leader for {topic}");
        patience.pause();
    }
}

#[test]
fn a_replicated_partition_loses_no_acknowledged_record_when_its_leader_or_the_controller_is_killed()
{
    use sluice::client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
    use std::sync::Arc;

    const RECORDS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    // A short broker session, so a killed leader is fenced in seconds
    // (Kafka's default is 9 s).
    let (mut nodes, bootstrap_all) = start_replicated_cluster(
        dir.path(),
        "min.insync.replicas=2\nbroker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n",
    );
    // Three replicas need all three brokers registered.
    create_replicated_topic(&bootstrap_all, "ledger");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (acked, gaps) = runtime.block_on(async {
        let producer = Producer::new(
            ProducerConfig {
                bootstrap_servers: bootstrap_all.clone(),
                acks: Acks::All,
                linger_ms: 0,
                seed: 11,
                ..ProducerConfig::default()
            },
            Arc::new(sluice::net::TcpConnector),
            Arc::new(sluice::clock::SystemClock),
        )
        .expect("producer");
        let mut acked: Vec<(i64, String)> = Vec::new();
        let mut last_ack = tokio::time::Instant::now();
        // The longest gap between acknowledgements after each kill.
        let mut gaps = [Duration::ZERO; 2];
        let mut killed: Option<usize> = None;
        for i in 0..RECORDS {
            // At 100 acks kill the partition leader; at 250 bring it back;
            // at 350 kill the active controller; at 450 bring it back.
            match i {
                100 => killed = Some(kill_partition_leader(&mut nodes, &bootstrap_all, "ledger")),
                350 => {
                    let live = nodes.iter().find(|n| n.child.is_some()).unwrap();
                    let (controller, _) = wait_for_leader(&live.address, None);
                    let index = nodes.iter().position(|n| n.id == controller).unwrap();
                    nodes[index].kill();
                    killed = Some(index);
                }
                250 | 450 => {
                    if let Some(index) = killed.take() {
                        nodes[index].start();
                    }
                }
                _ => {}
            }
            let value = format!("v{i}");
            let record = ProducerRecord::new(
                "ledger",
                Some(bytes::Bytes::from(format!("k{}", i % 7))),
                Some(bytes::Bytes::from(value.clone())),
            );
            let metadata = producer
                .send(record)
                .await
                .unwrap_or_else(|error| panic!("send {i} failed: {error}"));
            let now = tokio::time::Instant::now();
            let phase = usize::from(i >= 350);
            gaps[phase] = gaps[phase].max(now - last_ack);
            last_ack = now;
            acked.push((metadata.offset, value));
        }
        producer.close().await;
        (acked, gaps)
    });
    eprintln!(
        "longest gap between acks=all acknowledgements: {:?} after the partition leader's kill, \
         {:?} after the active controller's",
        gaps[0], gaps[1]
    );

    // Every acknowledged record, exactly once, at its offset, in order.
    let records = runtime.block_on(read_partition(&bootstrap_all, "ledger", RECORDS));
    assert_eq!(
        records.len(),
        RECORDS,
        "read {} of {RECORDS}",
        records.len()
    );
    assert_eq!(records, acked, "the log differs from what was acknowledged");

    if std::env::var("SLUICE_INTEROP").as_deref() == Ok("1") {
        kafka_python_through_failover(&mut nodes, &bootstrap_all, &runtime);
        kcat_through_failover(&mut nodes, &bootstrap_all, &runtime);
    }
}

/// Partition 0 of `topic` from the start, as (offset, value), until
/// `expected` records are read (or the polls run out).
async fn read_partition(bootstrap: &str, topic: &str, expected: usize) -> Vec<(i64, String)> {
    use sluice::client::consumer::{Consumer, ConsumerConfig};
    use sluice::client::TopicPartition;
    let mut consumer = Consumer::new(
        ConsumerConfig {
            bootstrap_servers: bootstrap.to_string(),
            ..ConsumerConfig::default()
        },
        std::sync::Arc::new(sluice::net::TcpConnector),
        std::sync::Arc::new(sluice::clock::SystemClock),
    )
    .expect("consumer");
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(vec![tp.clone()]).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let mut records = Vec::new();
    let mut polls = 0;
    while records.len() < expected && polls < 200 {
        polls += 1;
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value =
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
            records.push((record.offset, value));
        }
    }
    records
}

/// Creates `topic` with one partition and three replicas, retrying while
/// the cluster settles.
fn create_replicated_topic(bootstrap: &str, topic: &str) {
    let mut patience = Patience::new(ELECTION_WAIT, Duration::from_millis(300));
    loop {
        let output = sluice(
            &[
                "topics",
                "--create",
                "--topic",
                topic,
                "--partitions",
                "1",
                "--replication-factor",
                "3",
                "--bootstrap-server",
                bootstrap,
            ],
            None,
        );
        if output.status.success() {
            return;
        }
        assert!(
            !patience.exhausted(),
            "creating {topic}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        patience.pause();
    }
}

/// Kills `topic`'s partition leader; returns its index in `nodes`.
fn kill_partition_leader(nodes: &mut [Node], bootstrap: &str, topic: &str) -> usize {
    let leader = partition_leader(bootstrap, topic, None);
    let index = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[index].kill();
    index
}

/// kafka-python's idempotent acks=all producer while the partition leader
/// is SIGKILLed and restarted: every value it saw acknowledged is in the
/// log once, at the offset it was told.
fn kafka_python_through_failover(
    nodes: &mut [Node],
    bootstrap: &str,
    runtime: &tokio::runtime::Runtime,
) {
    use std::io::BufRead;
    const COUNT: usize = 300;
    create_replicated_topic(bootstrap, "ledger-py");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kafka_python_failover.py");
    let mut child = Command::new("timeout")
        .args(["300", "python3"])
        .arg(&script)
        .args([bootstrap, "ledger-py", &COUNT.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut killed = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (offset, value) = ack.split_once(' ').expect("ACK offset value");
        acked.push((offset.parse::<i64>().unwrap(), value.to_string()));
        match acked.len() {
            100 => killed = Some(kill_partition_leader(nodes, bootstrap, "ledger-py")),
            200 => nodes[killed.take().unwrap()].start(),
            _ => {}
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && acked.len() == COUNT,
        "kafka-python acknowledged {} of {COUNT}: {}",
        acked.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    let records = runtime.block_on(read_partition(bootstrap, "ledger-py", COUNT));
    assert_eq!(
        records, acked,
        "kafka-python's acknowledged records differ from the log"
    );
}

/// kcat (librdkafka) with acks=all and idempotence, fed lines while the
/// partition leader is SIGKILLed and restarted: it reports every message
/// delivered, and each is in the log once, in the order written.
fn kcat_through_failover(nodes: &mut [Node], bootstrap: &str, runtime: &tokio::runtime::Runtime) {
    const COUNT: usize = 300;
    create_replicated_topic(bootstrap, "ledger-kcat");
    let mut child = Command::new("timeout")
        .args([
            "300",
            "kcat",
            "-P",
            "-b",
            bootstrap,
            "-t",
            "ledger-kcat",
            "-p",
            "0",
        ])
        .args(["-X", "acks=all", "-X", "enable.idempotence=true"])
        .args(["-X", "message.timeout.ms=120000", "-X", "linger.ms=5"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat");
    let mut stdin = child.stdin.take().unwrap();
    let mut killed = None;
    for i in 0..COUNT {
        writeln!(stdin, "kcat-{i}").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(10));
        match i {
            100 => killed = Some(kill_partition_leader(nodes, bootstrap, "ledger-kcat")),
            200 => nodes[killed.take().unwrap()].start(),
            _ => {}
        }
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kcat failed: {stderr}");
    let records = runtime.block_on(read_partition(bootstrap, "ledger-kcat", COUNT));
    let values: Vec<String> = records.into_iter().map(|(_, value)| value).collect();
    let written: Vec<String> = (0..COUNT).map(|i| format!("kcat-{i}")).collect();
    assert_eq!(
        values, written,
        "kcat's records are not in the log once each, in order"
    );
}

#[test]
fn committed_offsets_survive_the_group_coordinators_kill() {
    use sluice::client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, bootstrap_all) = start_replicated_cluster(
        dir.path(),
        "min.insync.replicas=2\nbroker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n",
    );
    create_replicated_topic(&bootstrap_all, "jobs");
    let lines: String = (0..40).map(|i| format!("k:v{i}\n")).collect();
    produce(&bootstrap_all, "jobs", &lines);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let consumer = |bootstrap: &str| {
        Consumer::new(
            ConsumerConfig {
                bootstrap_servers: bootstrap.to_string(),
                group_id: Some("workers".to_string()),
                enable_auto_commit: false,
                auto_offset_reset: AutoOffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
            Arc::new(sluice::net::TcpConnector),
            Arc::new(sluice::clock::SystemClock),
        )
        .expect("consumer")
    };
    // Read and commit the first 25 records, one commit each.
    runtime.block_on(async {
        let mut first = consumer(&bootstrap_all);
        first.subscribe(vec!["jobs".to_string()], None).unwrap();
        let mut read = 0;
        let mut polls = 0;
        while read < 25 && polls < 200 {
            polls += 1;
            for record in first.poll(Duration::from_millis(500)).await.unwrap() {
                if read < 25 {
                    read += 1;
                    let next = std::collections::BTreeMap::from([(
                        sluice::client::TopicPartition::new("jobs", 0),
                        record.offset + 1,
                    )]);
                    first.commit_sync(Some(next)).await.expect("commit");
                }
            }
        }
        assert_eq!(read, 25, "read {read} of 25 before the kill");
        first.close().await.expect("close");
    });

    // Kill the coordinator: the leader of the offsets partition.
    let coordinator = partition_leader(&bootstrap_all, "__consumer_offsets", None);
    let index = nodes.iter().position(|n| n.id == coordinator).unwrap();
    nodes[index].kill();
    let new_coordinator = partition_leader(&bootstrap_all, "__consumer_offsets", Some(coordinator));
    assert_ne!(new_coordinator, coordinator);

    // A new member of the group starts exactly where the commits left off.
    runtime.block_on(async {
        let mut second = consumer(&bootstrap_all);
        second.subscribe(vec!["jobs".to_string()], None).unwrap();
        let mut offsets = Vec::new();
        let mut polls = 0;
        while offsets.len() < 15 && polls < 200 {
            polls += 1;
            match second.poll(Duration::from_millis(500)).await {
                Ok(records) => offsets.extend(records.iter().map(|r| r.offset)),
                Err(error) => panic!("poll after the coordinator's kill: {error}"),
            }
        }
        assert_eq!(offsets, (25..40).collect::<Vec<i64>>());
        let tp = sluice::client::TopicPartition::new("jobs", 0);
        second
            .commit_sync(Some(std::collections::BTreeMap::from([(tp.clone(), 40)])))
            .await
            .expect("commit to the new coordinator");
        assert_eq!(second.committed(&tp).await.unwrap(), Some(40));
        second.close().await.expect("close");
    });
}

/// Three nodes with `extra` settings (a short broker session and min ISR 2
/// among them), started, with a controller elected; and the bootstrap list
/// of all three.
fn start_replicated_cluster(dir: &Path, extra: &str) -> (Vec<Node>, String) {
    let mut nodes = cluster_with(dir, extra);
    for node in &mut nodes {
        node.start();
    }
    let bootstrap_all = nodes
        .iter()
        .map(|n| n.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    wait_for_leader(&nodes[0].address, None);
    (nodes, bootstrap_all)
}

/// The ISR of `topic`'s partition 0, from `sluice topics --describe`.
fn isr(bootstrap: &str, topic: &str) -> Vec<i32> {
    describe(bootstrap, topic)
        .lines()
        .filter_map(|line| line.split("Isr: ").nth(1))
        .flat_map(|list| {
            list.trim()
                .split(',')
                .filter_map(|id| id.trim().parse().ok())
        })
        .collect()
}

#[test]
fn a_follower_that_fell_below_the_leaders_log_start_starts_over_there_and_rejoins_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    // Smallest segments Kafka allows, two kept, retention checked each
    // second: a few MiB written while a follower is down move the leader's
    // log start past everything that follower holds.
    let (mut nodes, bootstrap_all) = start_replicated_cluster(
        dir.path(),
        "min.insync.replicas=2\nbroker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n\
         log.segment.bytes=1048576\nlog.retention.bytes=2097152\nlog.retention.check.interval.ms=1000\n",
    );
    create_replicated_topic(&bootstrap_all, "events");
    let line = |i: usize| format!("k{i}:{}\n", "x".repeat(1000));
    let first: String = (0..100).map(line).collect();
    produce(&bootstrap_all, "events", &first);

    let leader = partition_leader(&bootstrap_all, "events", None);
    let follower = nodes.iter().position(|n| n.id != leader).unwrap();
    let follower_id = nodes[follower].id;
    nodes[follower].kill();
    // About 5 MiB: the leader keeps the last two segments or so.
    let more: String = (100..5_100).map(line).collect();
    produce(&bootstrap_all, "events", &more);
    let mut patience = Patience::new(Duration::from_secs(20), Duration::from_millis(500));
    loop {
        let without: Vec<i32> = isr(&bootstrap_all, "events");
        if !without.contains(&follower_id) {
            break;
        }
        assert!(
            !patience.exhausted(),
            "the stopped follower stayed in the ISR"
        );
        patience.pause();
    }

    // Wait until retention on the leader has moved its log start past the
    // 100 records the follower holds: its oldest segment file is named by
    // its base offset.
    let leader_dir = dir.path().join(format!("data-{leader}")).join("events-0");
    let mut patience = Patience::new(Duration::from_secs(30), Duration::from_millis(500));
    loop {
        let log_start = std::fs::read_dir(&leader_dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        let name = entry.ok()?.file_name().into_string().ok()?;
                        name.strip_suffix(".log")?.parse::<i64>().ok()
                    })
                    .min()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if log_start > 100 {
            break;
        }
        assert!(
            !patience.exhausted(),
            "retention never moved the leader's log start past 100"
        );
        patience.pause();
    }

    nodes[follower].start();
    let mut patience = Patience::new(Duration::from_secs(60), Duration::from_millis(500));
    loop {
        if isr(&bootstrap_all, "events").contains(&follower_id) {
            break;
        }
        assert!(
            !patience.exhausted(),
            "node {follower_id} never caught up from the leader's log start"
        );
        patience.pause();
    }
    let log = std::fs::read_to_string(&nodes[follower].log).unwrap_or_default();
    assert!(
        log.contains("log emptied to start at the leader's log start"),
        "the follower did not start over at the leader's log start"
    );
}
