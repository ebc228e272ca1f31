//! The Rust producer and consumer against an in-process broker over real
//! loopback TCP: keyed ordering, idempotent offsets, group rebalances, offset
//! commits, seeks and lag. Every wait is a condition awaited under a timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice::client::partitioner::partition_for_key;
use sluice::client::{
    Acks, Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, ConsumerRecord,
    GroupEvent, Producer, ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use sluice::clock::SystemClock;
use sluice::net::{Connector, TcpConnector};
use sluice::testing::{start_broker, test_config, TestBroker};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bound on any single awaited condition. Generous: CI machines are slow,
/// and a hang must fail rather than block the suite.
const WAIT: Duration = Duration::from_secs(30);

fn connector() -> Arc<dyn Connector> {
    Arc::new(TcpConnector)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn broker_with_topic(topic: &str, partitions: i32) -> (TestBroker, Admin) {
    let broker = start_broker(test_config()).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    admin
        .create_topic(topic, partitions, 1, &[])
        .await
        .expect("create topic");
    (broker, admin)
}

#[tokio::test]
async fn a_topic_created_with_a_replica_assignment_has_it_and_a_bad_one_is_refused() {
    let broker = start_broker(test_config()).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    let node_id = test_config().node_id;
    within(
        "a topic with a replica assignment",
        admin.create_topic_with_assignment(
            "placed",
            &[(1, vec![node_id]), (0, vec![node_id])],
            &[],
        ),
    )
    .await
    .expect("a valid assignment is taken");
    let described = within(
        "its description",
        admin.describe_topics(Some(&["placed".to_string()])),
    )
    .await
    .expect("describe");
    let partitions = &described[0].partitions;
    assert_eq!(partitions.len(), 2);
    for partition in partitions {
        assert_eq!(
            (partition.leader, &partition.replicas),
            (node_id, &vec![node_id])
        );
    }
    let invalid_replica_assignment =
        Some(kafka_protocol::error::ResponseError::InvalidReplicaAssignment.code());
    for bad in [
        vec![(0, vec![node_id + 7])],
        vec![(0, vec![node_id]), (2, vec![node_id])],
        vec![(0, vec![node_id, node_id])],
    ] {
        let refused = within(
            "a bad assignment",
            admin.create_topic_with_assignment("bad", &bad, &[]),
        )
        .await
        .expect_err("refused");
        assert_eq!(
            refused.code(),
            invalid_replica_assignment,
            "{bad:?}: {refused}"
        );
    }
}

fn producer(address: &str) -> Producer {
    let config = ProducerConfig {
        bootstrap_servers: address.to_string(),
        linger_ms: 2,
        seed: 7,
        ..ProducerConfig::default()
    };
    Producer::new(config, connector(), Arc::new(SystemClock)).expect("producer")
}

fn consumer_config(address: &str, group: Option<&str>) -> ConsumerConfig {
    ConsumerConfig {
        bootstrap_servers: address.to_string(),
        group_id: group.map(str::to_string),
        auto_offset_reset: AutoOffsetReset::Earliest,
        // Short group timers so rebalances finish quickly; the broker's
        // test config allows sessions down to 100 ms.
        heartbeat_interval_ms: 100,
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    }
}

fn consumer(config: ConsumerConfig) -> Consumer {
    Consumer::new(config, connector(), Arc::new(SystemClock)).expect("consumer")
}

fn value(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

/// Polls until `count` records have arrived.
async fn poll_until(consumer: &mut Consumer, count: usize) -> Vec<ConsumerRecord> {
    within("records", async {
        let mut records = Vec::new();
        while records.len() < count {
            records.extend(
                consumer
                    .poll(Duration::from_millis(200))
                    .await
                    .expect("poll"),
            );
        }
        records
    })
    .await
}

#[tokio::test]
async fn keyed_records_come_back_in_order_per_partition() {
    let (broker, _admin) = broker_with_topic("orders", 3).await;
    let producer = producer(&broker.address);
    let mut deliveries = Vec::new();
    for i in 0..30 {
        let key = format!("k{}", i % 10);
        let record = ProducerRecord::new("orders", value(&key), value(&format!("{key}-{i}")));
        deliveries.push((key, producer.enqueue(record).await.expect("enqueue")));
    }
    let mut sent: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (key, delivery) in deliveries {
        let metadata = within("ack", delivery).await.expect("delivered");
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), 3),
            "murmur2 placement of {key}"
        );
        sent.entry(metadata.partition)
            .or_default()
            .push((metadata.offset, key));
    }
    producer.close().await;

    let mut consumer = consumer(consumer_config(&broker.address, None));
    consumer
        .assign((0..3).map(|p| TopicPartition::new("orders", p)).collect())
        .unwrap();
    let records = poll_until(&mut consumer, 30).await;
    assert_eq!(records.len(), 30);
    for (partition, expected) in sent {
        let got: Vec<(i64, String)> = records
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "partition {partition}");
    }
    // Values of one key arrive in send order.
    let k3: Vec<String> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(&b"k3"[..]))
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(k3, vec!["k3-3", "k3-13", "k3-23"]);
}

#[tokio::test]
async fn idempotent_producer_gets_dense_offsets_and_headers_survive() {
    let (broker, _admin) = broker_with_topic("events", 1).await;
    let producer = producer(&broker.address);
    let mut deliveries = Vec::new();
    for i in 0..50 {
        let mut record = ProducerRecord::new("events", None, value(&format!("v{i}")));
        record.partition = Some(0);
        record.timestamp = Some(1_000 + i);
        record.headers = vec![sluice::client::Header {
            key: "i".into(),
            value: value(&i.to_string()),
        }];
        deliveries.push(producer.enqueue(record).await.expect("enqueue"));
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let metadata = within("ack", delivery).await.expect("delivered");
        assert_eq!(metadata.offset, i64::try_from(i).unwrap());
        assert_eq!(metadata.timestamp, 1_000 + i64::try_from(i).unwrap());
    }
    producer.flush().await;
    producer.close().await;
    assert!(producer
        .send(ProducerRecord::new("events", None, None))
        .await
        .is_err());

    let mut consumer = consumer(consumer_config(&broker.address, None));
    consumer
        .assign(vec![TopicPartition::new("events", 0)])
        .unwrap();
    let records = poll_until(&mut consumer, 50).await;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());
    assert_eq!(records[7].headers[0].value, value("7"));
    assert_eq!(records[7].timestamp, 1_007);
}

#[tokio::test]
async fn acks_zero_and_one_without_idempotence() {
    let (broker, _admin) = broker_with_topic("loose", 1).await;
    for (acks, expect_offsets) in [(Acks::Leader, true), (Acks::None, false)] {
        let config = ProducerConfig {
            bootstrap_servers: broker.address.clone(),
            acks,
            enable_idempotence: false,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(config, connector(), Arc::new(SystemClock)).unwrap();
        let metadata = within(
            "ack",
            producer.send(ProducerRecord::new("loose", None, value("x"))),
        )
        .await
        .unwrap();
        assert_eq!(metadata.offset >= 0, expect_offsets, "{acks:?}");
        producer.close().await;
    }
    let mut consumer = consumer(consumer_config(&broker.address, None));
    consumer
        .assign(vec![TopicPartition::new("loose", 0)])
        .unwrap();
    assert_eq!(poll_until(&mut consumer, 2).await.len(), 2);
}

/// A consumer polling in its own task, publishing its assignment.
struct Running {
    assignment: Arc<std::sync::Mutex<Vec<TopicPartition>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Consumer>,
}

impl Running {
    fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.lock().unwrap().clone()
    }
}

/// Runs `consumer` in a task; every assignment change bumps `changes`.
fn run(mut consumer: Consumer, changes: Arc<watch::Sender<u64>>) -> Running {
    let assignment = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (published, stopping) = (assignment.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !stopping.load(Ordering::SeqCst) {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
            let current = consumer.assignment().to_vec();
            let changed = {
                let mut a = published.lock().unwrap();
                let changed = *a != current;
                *a = current;
                changed
            };
            if changed {
                changes.send_modify(|n| *n += 1);
            }
        }
        consumer
    });
    Running {
        assignment,
        stop,
        task,
    }
}

/// Waits until the consumers' assignments are non-empty, disjoint and
/// cover `partitions`.
async fn until_balanced(
    changes: &mut watch::Receiver<u64>,
    running: &[&Running],
    partitions: &[TopicPartition],
) {
    within("a balanced group", async {
        loop {
            let assignments: Vec<Vec<TopicPartition>> =
                running.iter().map(|r| r.assignment()).collect();
            let mut all: Vec<TopicPartition> = assignments.iter().flatten().cloned().collect();
            all.sort();
            if assignments.iter().all(|a| !a.is_empty()) && all == partitions {
                return;
            }
            changes.changed().await.expect("consumers alive");
        }
    })
    .await;
}

struct Recording(Arc<std::sync::Mutex<Vec<String>>>);

impl RebalanceListener for Recording {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("revoked {}", partitions.len()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("assigned {}", partitions.len()));
    }
}

#[tokio::test]
async fn group_members_split_partitions_and_a_third_triggers_rebalance() {
    let (broker, admin) = broker_with_topic("shared", 4).await;
    let partitions: Vec<TopicPartition> =
        (0..4).map(|p| TopicPartition::new("shared", p)).collect();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));

    let (changes_tx, mut changes) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);

    let mut a = consumer(consumer_config(&broker.address, Some("g")));
    a.subscribe(
        vec!["shared".into()],
        Some(Box::new(Recording(events.clone()))),
    )
    .unwrap();
    let a = run(a, changes_tx.clone());
    let mut b = consumer(consumer_config(&broker.address, Some("g")));
    b.subscribe(vec!["shared".into()], None).unwrap();
    let b = run(b, changes_tx.clone());
    until_balanced(&mut changes, &[&a, &b], &partitions).await;
    assert_eq!(a.assignment().len(), 2);

    let mut c = consumer(consumer_config(&broker.address, Some("g")));
    c.subscribe(vec!["shared".into()], None).unwrap();
    let c = run(c, changes_tx.clone());
    until_balanced(&mut changes, &[&a, &b, &c], &partitions).await;
    let sizes: Vec<usize> = [&a, &b, &c].iter().map(|r| r.assignment().len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 4);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("revoked")),
        "{events:?}"
    );

    let description = admin.describe_group("g").await.unwrap();
    assert_eq!(description.members.len(), 3);
    assert_eq!(description.protocol, "range");

    for running in [a, b, c] {
        running.stop.store(true, Ordering::SeqCst);
        let mut consumer = within("consumer task", running.task).await.unwrap();
        consumer.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_new_member_resumes_from_the_committed_offset() {
    let (broker, admin) = broker_with_topic("resume", 1).await;
    let producer = producer(&broker.address);
    for i in 0..10 {
        let mut record = ProducerRecord::new("resume", None, value(&format!("v{i}")));
        record.partition = Some(0);
        producer.enqueue(record).await.unwrap();
    }
    producer.flush().await;
    let tp = TopicPartition::new("resume", 0);

    let config = ConsumerConfig {
        enable_auto_commit: false,
        max_poll_records: 4,
        ..consumer_config(&broker.address, Some("resumers"))
    };
    let mut first = consumer(config.clone());
    first.subscribe(vec!["resume".into()], None).unwrap();
    let records = poll_until(&mut first, 1).await;
    assert_eq!(records.first().map(|r| r.offset), Some(0));
    let consumed = records.len();
    assert!(consumed <= 4);
    first.commit_sync(None).await.unwrap();
    assert_eq!(
        first.committed(&tp).await.unwrap(),
        Some(i64::try_from(consumed).unwrap())
    );
    assert_eq!(
        first.position(&tp).await.unwrap(),
        i64::try_from(consumed).unwrap()
    );
    first.close().await.unwrap();

    let mut second = consumer(config);
    second.subscribe(vec!["resume".into()], None).unwrap();
    let records = poll_until(&mut second, 1).await;
    assert_eq!(records[0].offset, i64::try_from(consumed).unwrap());
    // Async commit of an explicit offset, then the admin view agrees.
    let mut explicit = BTreeMap::new();
    explicit.insert(tp.clone(), 9);
    within("async commit", second.commit_async(Some(explicit)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        admin.group_offsets("resumers").await.unwrap().get(&tp),
        Some(&9)
    );
    second.close().await.unwrap();
    producer.close().await;
}

#[tokio::test]
async fn seek_offsets_for_times_position_and_lag() {
    let (broker, _admin) = broker_with_topic("timeline", 1).await;
    let producer = producer(&broker.address);
    for i in 0..10 {
        let mut record = ProducerRecord::new("timeline", None, value(&format!("v{i}")));
        record.partition = Some(0);
        record.timestamp = Some(10_000 + i * 10);
        producer.enqueue(record).await.unwrap();
    }
    producer.flush().await;
    let tp = TopicPartition::new("timeline", 0);

    let mut consumer = consumer(ConsumerConfig {
        max_poll_records: 2,
        ..consumer_config(&broker.address, None)
    });
    consumer.assign(vec![tp.clone()]).unwrap();
    consumer.seek(&tp, 5).unwrap();
    let records = poll_until(&mut consumer, 1).await;
    assert_eq!(records[0].offset, 5);
    assert_eq!(records.len(), 2);
    assert_eq!(consumer.position(&tp).await.unwrap(), 7);
    assert_eq!(consumer.lag(&tp), Some(3));

    let mut query = BTreeMap::new();
    query.insert(tp.clone(), 10_031);
    let found = consumer.offsets_for_times(&query).await.unwrap();
    assert_eq!(found.get(&tp), Some(&Some((4, 10_040))));
    query.insert(tp.clone(), 99_999);
    assert_eq!(
        consumer.offsets_for_times(&query).await.unwrap().get(&tp),
        Some(&None)
    );

    consumer
        .seek_to_time(std::slice::from_ref(&tp), 10_031)
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 4);
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 0);
    let ends = consumer
        .end_offsets(std::slice::from_ref(&tp))
        .await
        .unwrap();
    assert_eq!(ends.get(&tp), Some(&10));
    let starts = consumer
        .beginning_offsets(std::slice::from_ref(&tp))
        .await
        .unwrap();
    assert_eq!(starts.get(&tp), Some(&0));
    consumer
        .seek_to_end(std::slice::from_ref(&tp))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 10);
    assert!(consumer
        .poll(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.lag(&tp), Some(0));
    producer.close().await;
}

mod cli {
    use super::*;
    use sluice::cli_tools::{self, ConsumeOptions, ProduceOptions};

    fn text(buf: &[u8]) -> String {
        String::from_utf8(buf.to_vec()).unwrap()
    }

    /// `sluice configs`, as kafka-configs: overrides added and deleted,
    /// described alone or with every config, broker configs read-only, and
    /// refusals that say why.
    #[tokio::test]
    async fn configs_describe_and_alter_like_kafka_configs() {
        let broker = start_broker(test_config()).await;
        let addr = broker.address.as_str();
        let spread = cli_tools::TopicPlacement::Spread {
            partitions: 1,
            replication_factor: 1,
        };
        cli_tools::topics_create(addr, connector(), "t", spread, &[], false, &mut Vec::new())
            .await
            .unwrap();
        let topic = || cli_tools::config_resource("topics", "t").unwrap();
        let add =
            cli_tools::parse_add_config("retention.ms=60000,cleanup.policy=[delete]").unwrap();
        assert_eq!(
            add,
            [
                ("retention.ms".to_string(), "60000".to_string()),
                ("cleanup.policy".to_string(), "delete".to_string())
            ]
        );
        let mut out = Vec::new();
        cli_tools::configs_alter(addr, connector(), topic(), &add, &[], &mut out)
            .await
            .unwrap();
        assert_eq!(text(&out), "Completed updating config for topic t.\n");
        let mut out = Vec::new();
        cli_tools::configs_describe(addr, connector(), topic(), false, &mut out)
            .await
            .unwrap();
        assert_eq!(
            text(&out),
            "Dynamic configs for topic t are:\n  \
             cleanup.policy=delete sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete}\n  \
             retention.ms=60000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=60000}\n"
        );
        cli_tools::configs_alter(
            addr,
            connector(),
            topic(),
            &[],
            &["cleanup.policy".to_string()],
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        cli_tools::configs_describe(addr, connector(), topic(), true, &mut out)
            .await
            .unwrap();
        let all = text(&out);
        assert!(all.starts_with("All configs for topic t are:\n"), "{all}");
        assert!(
            all.contains("  cleanup.policy=delete sensitive=false synonyms={DEFAULT_CONFIG:"),
            "{all}"
        );
        assert!(all.contains("  segment.bytes=1073741824 "), "{all}");

        let archive = [("cleanup.policy".to_string(), "archive".to_string())];
        let refused =
            cli_tools::configs_alter(addr, connector(), topic(), &archive, &[], &mut Vec::new())
                .await
                .unwrap_err();
        assert!(
            format!("{refused:#}").contains("must be one of: compact, delete"),
            "{refused:#}"
        );

        let node = test_config().node_id.to_string();
        let brokers = || cli_tools::config_resource("brokers", &node).unwrap();
        let mut out = Vec::new();
        cli_tools::configs_describe(addr, connector(), brokers(), true, &mut out)
            .await
            .unwrap();
        assert!(
            text(&out).contains(&format!("  node.id={node} ")),
            "{}",
            text(&out)
        );
        let segment = [("log.segment.bytes".to_string(), "2097152".to_string())];
        let refused =
            cli_tools::configs_alter(addr, connector(), brokers(), &segment, &[], &mut Vec::new())
                .await
                .unwrap_err();
        assert!(
            format!("{refused:#}").contains("server.properties"),
            "{refused:#}"
        );
        assert!(cli_tools::config_resource("users", "x").is_err());
    }

    #[tokio::test]
    async fn topics_produce_consume_and_groups_like_the_kafka_tools() {
        let broker = start_broker(test_config()).await;
        let addr = broker.address.as_str();
        let mut out = Vec::new();
        let spread = || cli_tools::TopicPlacement::Spread {
            partitions: 2,
            replication_factor: 1,
        };
        let retention = [("retention.ms".to_string(), "3600000".to_string())];
        cli_tools::topics_create(
            addr,
            connector(),
            "lines",
            spread(),
            &retention,
            false,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(text(&out), "Created topic lines.\n");
        assert!(cli_tools::topics_create(
            addr,
            connector(),
            "lines",
            spread(),
            &[],
            false,
            &mut Vec::new()
        )
        .await
        .is_err());
        // --if-not-exists: the same create is no error, and says nothing.
        let mut out = Vec::new();
        cli_tools::topics_create(addr, connector(), "lines", spread(), &[], true, &mut out)
            .await
            .unwrap();
        assert!(out.is_empty());
        // --replica-assignment, as kafka-topics spells it.
        let node = test_config().node_id;
        let assignment = cli_tools::parse_replica_assignment(&format!("{node},{node}")).unwrap();
        assert_eq!(assignment, [(0, vec![node]), (1, vec![node])]);
        let placed = cli_tools::TopicPlacement::Assigned(assignment);
        cli_tools::topics_create(
            addr,
            connector(),
            "placed",
            placed,
            &[],
            false,
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            cli_tools::parse_replica_assignment("1:2,2:0").unwrap(),
            [(0, vec![1, 2]), (1, vec![2, 0])]
        );
        assert!(cli_tools::parse_replica_assignment("1:x").is_err());

        // --alter --partitions, as kafka-topics: only upwards.
        let mut out = Vec::new();
        cli_tools::topics_alter(addr, connector(), "placed", 4, &mut out)
            .await
            .unwrap();
        assert!(
            text(&out).ends_with("Adding partitions succeeded!\n"),
            "{}",
            text(&out)
        );
        let refused = cli_tools::topics_alter(addr, connector(), "placed", 3, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("Topic currently has 4 partitions"),
            "{refused:#}"
        );
        cli_tools::topics_delete(addr, connector(), "placed", &mut Vec::new())
            .await
            .unwrap();
        let mut out = Vec::new();
        cli_tools::topics_list(addr, connector(), &mut out)
            .await
            .unwrap();
        assert_eq!(text(&out), "lines\n");

        let mut out = Vec::new();
        cli_tools::topics_describe(addr, connector(), Some("lines"), &mut out)
            .await
            .unwrap();
        let described = text(&out);
        assert!(
            described.starts_with(
                "Topic: lines\tPartitionCount: 2\tReplicationFactor: 1\tConfigs: retention.ms=3600000\n"
            ),
            "{described}"
        );
        assert!(
            described.contains("\tTopic: lines\tPartition: 1\tLeader: "),
            "{described}"
        );

        let input: &[u8] = b"a:1\nb:2\na:3\n";
        let produce = ProduceOptions {
            topic: "lines".into(),
            parse_key: true,
            key_separator: ":".into(),
            acks: Acks::All,
            timeout: WAIT,
            producer_properties: Vec::new(),
        };
        let produced =
            cli_tools::produce_lines(addr, connector(), Arc::new(SystemClock), &produce, input)
                .await
                .unwrap();
        assert_eq!(produced, 3);

        let options = ConsumeOptions {
            topic: "lines".into(),
            from_beginning: true,
            group: Some("console".into()),
            max_messages: Some(3),
            timeout: Some(WAIT),
            partition: None,
            offset: None,
            format: cli_tools::RecordFormat {
                print_key: true,
                ..Default::default()
            },
            consumer_properties: Vec::new(),
        };
        let mut out = Vec::new();
        let consumed = within(
            "console consumer",
            cli_tools::consume(
                addr,
                connector(),
                Arc::new(SystemClock),
                &options,
                &mut out,
                std::future::pending(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(consumed, 3);
        let mut lines: Vec<String> = text(&out).lines().map(str::to_string).collect();
        // Key "a" keeps its order within its partition.
        let a: Vec<&String> = lines.iter().filter(|l| l.starts_with("a\t")).collect();
        assert_eq!(a, vec!["a\t1", "a\t3"]);
        lines.sort();
        assert_eq!(lines, vec!["a\t1", "a\t3", "b\t2"]);

        let mut out = Vec::new();
        cli_tools::groups_list(addr, connector(), &mut out)
            .await
            .unwrap();
        assert!(text(&out).lines().any(|l| l == "console"), "{}", text(&out));

        let mut out = Vec::new();
        cli_tools::groups_describe(addr, connector(), "console", &mut out)
            .await
            .unwrap();
        let table = text(&out);
        let mut rows = table.lines();
        let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID"
            ]
        );
        let mut committed_total = 0;
        for row in rows {
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[0], "console");
            assert_eq!(cells[3], cells[4], "everything consumed: {table}");
            assert_eq!(cells[5], "0");
            committed_total += cells[3].parse::<i64>().unwrap();
        }
        assert_eq!(committed_total, 3, "{table}");

        // --describe --state and --members, as kafka-consumer-groups.
        let mut out = Vec::new();
        cli_tools::groups_describe_state(addr, connector(), "console", &mut out)
            .await
            .unwrap();
        let state = text(&out);
        let row: Vec<&str> = state.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            (row[0], row[row.len() - 2], row[row.len() - 1]),
            ("console", "Empty", "0"),
            "{state}"
        );
        let mut out = Vec::new();
        cli_tools::groups_describe_members(addr, connector(), "console", &mut out)
            .await
            .unwrap();
        assert_eq!(
            text(&out),
            "Consumer group 'console' has no active members.\n"
        );
        assert_eq!(
            cli_tools::group_ids(addr, connector()).await.unwrap(),
            ["console"]
        );

        // --reset-offsets: a dry run prints and changes nothing; --execute
        // commits, kept inside the log.
        let offsets = || async {
            Admin::new(addr, connector(), ConnectionConfig::default())
                .group_offsets("console")
                .await
                .unwrap()
        };
        let before = offsets().await;
        let mut out = Vec::new();
        cli_tools::groups_reset_offsets(
            addr,
            connector(),
            "console",
            cli_tools::OffsetReset {
                topic: "lines".into(),
                partitions: None,
                to: cli_tools::ResetTo::Earliest,
                execute: false,
            },
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(
            text(&out)
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().last().unwrap().to_string())
                .collect::<Vec<_>>(),
            ["0", "0"]
        );
        assert_eq!(offsets().await, before, "a dry run commits nothing");
        cli_tools::groups_reset_offsets(
            addr,
            connector(),
            "console",
            cli_tools::OffsetReset {
                topic: "lines".into(),
                partitions: None,
                to: cli_tools::ResetTo::ShiftBy(-1),
                execute: true,
            },
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let after = offsets().await;
        for (tp, offset) in &before {
            assert_eq!(after[tp], (offset - 1).max(0), "{tp}");
        }
        cli_tools::groups_reset_offsets(
            addr,
            connector(),
            "console",
            cli_tools::OffsetReset {
                topic: "lines".into(),
                partitions: Some(vec![0]),
                to: cli_tools::ResetTo::Offset(1_000),
                execute: true,
            },
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let end = Admin::new(addr, connector(), ConnectionConfig::default())
            .cluster()
            .list_offsets(&[TopicPartition::new("lines", 0)], -1, WAIT)
            .await
            .unwrap()[&TopicPartition::new("lines", 0)]
            .0;
        assert_eq!(
            offsets().await[&TopicPartition::new("lines", 0)],
            end,
            "clamped to the log end"
        );
        assert_eq!(
            cli_tools::parse_datetime_ms("1970-01-01T00:00:01.5Z").unwrap(),
            1_500
        );
        assert_eq!(
            cli_tools::parse_datetime_ms("2024-02-29T12:00:00").unwrap(),
            1_709_208_000_000
        );
        assert!(cli_tools::parse_datetime_ms("2024-13-01T00:00:00").is_err());
        cli_tools::groups_reset_offsets(
            addr,
            connector(),
            "console",
            cli_tools::OffsetReset {
                topic: "lines".into(),
                partitions: None,
                to: cli_tools::ResetTo::Datetime(0),
                execute: true,
            },
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert!(
            offsets().await.values().all(|offset| *offset == 0),
            "every record is after 1970"
        );
        // A committed offset past the log end shows as a negative lag.
        let past = BTreeMap::from([(TopicPartition::new("lines", 0), end + 5)]);
        Admin::new(addr, connector(), ConnectionConfig::default())
            .commit_group_offsets("console", &past)
            .await
            .unwrap();
        let mut out = Vec::new();
        cli_tools::groups_describe(addr, connector(), "console", &mut out)
            .await
            .unwrap();
        let row = text(&out)
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("0"))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(row[5], "-5", "{row:?}");

        // --delete-offsets, then --delete, as kafka-consumer-groups does.
        assert_eq!(
            cli_tools::parse_topic_partitions("lines:0,1").unwrap(),
            ("lines".to_string(), Some(vec![0, 1]))
        );
        let mut out = Vec::new();
        cli_tools::groups_delete_offsets(
            addr,
            connector(),
            "console",
            "lines",
            Some(vec![0]),
            &mut out,
        )
        .await
        .unwrap();
        assert!(
            text(&out).ends_with("lines 0         Successful\n"),
            "{}",
            text(&out)
        );
        let left = Admin::new(addr, connector(), ConnectionConfig::default())
            .group_offsets("console")
            .await
            .unwrap();
        assert_eq!(
            left.keys().cloned().collect::<Vec<_>>(),
            [TopicPartition::new("lines", 1)]
        );
        let mut out = Vec::new();
        cli_tools::groups_delete(addr, connector(), "console", &mut out)
            .await
            .unwrap();
        assert_eq!(
            text(&out),
            "Deletion of requested consumer groups ('console') was successful.\n"
        );
        let mut out = Vec::new();
        cli_tools::groups_list(addr, connector(), &mut out)
            .await
            .unwrap();
        assert!(!text(&out).contains("console"), "{}", text(&out));
        let refused = cli_tools::groups_delete(addr, connector(), "console", &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("GroupIdNotFound"),
            "{refused:#}"
        );

        let mut out = Vec::new();
        cli_tools::topics_delete(addr, connector(), "lines", &mut out)
            .await
            .unwrap();
        let mut out = Vec::new();
        cli_tools::topics_list(addr, connector(), &mut out)
            .await
            .unwrap();
        assert_eq!(text(&out), "");
    }

    /// kafka-console-consumer's `--partition`, `--offset` and `--property
    /// print.*`/`key.separator`, and the producer's `--producer-property`.
    #[tokio::test]
    async fn console_tools_take_kafkas_partition_offset_and_property_flags() {
        let (broker, _admin) = broker_with_topic("fmt", 1).await;
        let addr = broker.address.as_str();
        let produce = |properties: Vec<(String, String)>| ProduceOptions {
            topic: "fmt".into(),
            parse_key: true,
            key_separator: ":".into(),
            acks: Acks::All,
            timeout: WAIT,
            producer_properties: properties,
        };
        let input: &[u8] = b"a:1\nb:2\nc:3\n";
        let linger = vec![("linger.ms".to_string(), "0".to_string())];
        let sent = cli_tools::produce_lines(
            addr,
            connector(),
            Arc::new(SystemClock),
            &produce(linger),
            input,
        )
        .await
        .unwrap();
        assert_eq!(sent, 3);
        let bogus = vec![("no.such.setting".to_string(), "1".to_string())];
        assert!(cli_tools::produce_lines(
            addr,
            connector(),
            Arc::new(SystemClock),
            &produce(bogus),
            &b""[..]
        )
        .await
        .is_err());

        let mut format = cli_tools::RecordFormat::default();
        for property in [
            "print.partition=true",
            "print.offset=true",
            "print.key=true",
            "key.separator=|",
        ] {
            let (key, value) = cli_tools::parse_property(property).unwrap();
            format.set(&key, &value).unwrap();
        }
        assert!(format.set("print.nothing", "true").is_err());
        let options = |partition, offset, group: Option<&str>, format: cli_tools::RecordFormat| {
            ConsumeOptions {
                topic: "fmt".into(),
                from_beginning: false,
                group: group.map(str::to_string),
                max_messages: Some(2),
                timeout: Some(Duration::from_millis(1_000)),
                partition,
                offset,
                format,
                consumer_properties: vec![("fetch.max.wait.ms".to_string(), "100".to_string())],
            }
        };
        let mut out = Vec::new();
        let from_one = options(
            Some(0),
            Some(cli_tools::StartOffset::parse("1").unwrap()),
            None,
            format.clone(),
        );
        let read = cli_tools::consume(
            addr,
            connector(),
            Arc::new(SystemClock),
            &from_one,
            &mut out,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(read, 2);
        assert_eq!(
            text(&out),
            "Partition:0|Offset:1|b|2\nPartition:0|Offset:2|c|3\n"
        );

        let mut timestamps = cli_tools::RecordFormat::default();
        timestamps.set("print.timestamp", "true").unwrap();
        let mut out = Vec::new();
        let earliest = options(
            Some(0),
            Some(cli_tools::StartOffset::Earliest),
            None,
            timestamps,
        );
        cli_tools::consume(
            addr,
            connector(),
            Arc::new(SystemClock),
            &earliest,
            &mut out,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(text(&out).starts_with("CreateTime:"), "{}", text(&out));
        assert!(
            text(&out).ends_with("\t1\n") || text(&out).contains("\t1\n"),
            "{}",
            text(&out)
        );

        assert!(cli_tools::StartOffset::parse("soon").is_err());
        assert!(cli_tools::StartOffset::parse("-3").is_err());
        for bad in [
            options(
                None,
                Some(cli_tools::StartOffset::Latest),
                None,
                format.clone(),
            ),
            options(Some(0), None, Some("g"), format.clone()),
            options(Some(7), None, None, format.clone()),
        ] {
            let refused = cli_tools::consume(
                addr,
                connector(),
                Arc::new(SystemClock),
                &bad,
                &mut Vec::new(),
                std::future::pending(),
            )
            .await;
            assert!(refused.is_err(), "{:?} {:?}", bad.partition, bad.offset);
        }
    }

    #[tokio::test]
    async fn console_consumer_without_group_stops_after_idle_timeout() {
        let (broker, _admin) = broker_with_topic("quiet", 1).await;
        let options = ConsumeOptions {
            topic: "quiet".into(),
            from_beginning: true,
            group: None,
            max_messages: None,
            timeout: Some(Duration::from_millis(300)),
            partition: None,
            offset: None,
            format: cli_tools::RecordFormat::default(),
            consumer_properties: Vec::new(),
        };
        let mut out = Vec::new();
        let consumed = within(
            "idle timeout",
            cli_tools::consume(
                &broker.address,
                connector(),
                Arc::new(SystemClock),
                &options,
                &mut out,
                std::future::pending(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(consumed, 0);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn the_console_tools_fail_fast_and_clearly_without_a_broker_or_a_topic() {
        // Nothing listens on this port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let nowhere = format!("127.0.0.1:{port}");
        let produce = ProduceOptions {
            topic: "t".into(),
            parse_key: false,
            key_separator: ":".into(),
            acks: Acks::All,
            timeout: Duration::from_millis(1_500),
            producer_properties: Vec::new(),
        };
        let started = tokio::time::Instant::now();
        let error = within(
            "the producer to give up",
            cli_tools::produce_lines(
                &nowhere,
                connector(),
                Arc::new(SystemClock),
                &produce,
                &b"x\n"[..],
            ),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            error.contains(&format!("no broker at {nowhere} answered")),
            "{error}"
        );

        // A reachable broker without the topic, and without auto-creation.
        let config = sluice::config::BrokerConfig {
            auto_create_topics_enable: false,
            ..test_config()
        };
        let broker = start_broker(config).await;
        let options = ConsumeOptions {
            topic: "missing".into(),
            from_beginning: true,
            group: None,
            max_messages: None,
            timeout: Some(Duration::from_millis(1_000)),
            partition: None,
            offset: None,
            format: cli_tools::RecordFormat::default(),
            consumer_properties: Vec::new(),
        };
        let error = within(
            "the consumer to give up",
            cli_tools::consume(
                &broker.address,
                connector(),
                Arc::new(SystemClock),
                &options,
                &mut Vec::new(),
                std::future::pending(),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("topic missing does not exist"), "{error}");
    }

    #[tokio::test]
    async fn stopping_the_console_consumer_commits_what_it_printed_and_leaves() {
        let (broker, admin) = broker_with_topic("stop", 1).await;
        let producer = producer(&broker.address);
        for i in 0..5 {
            let record = ProducerRecord::new("stop", None, value(&format!("v{i}")));
            within("ack", producer.send(record)).await.unwrap();
        }
        producer.close().await;
        let options = ConsumeOptions {
            topic: "stop".into(),
            from_beginning: true,
            group: Some("stopper".into()),
            max_messages: None,
            timeout: None,
            partition: None,
            offset: None,
            format: cli_tools::RecordFormat::default(),
            consumer_properties: Vec::new(),
        };
        // "Ctrl-C" once all five are printed.
        let mut out = Vec::new();
        let stop = tokio::time::sleep(Duration::from_secs(3));
        let printed = within(
            "the consumer to stop",
            cli_tools::consume(
                &broker.address,
                connector(),
                Arc::new(SystemClock),
                &options,
                &mut out,
                stop,
            ),
        )
        .await
        .unwrap();
        assert_eq!(printed, 5);
        assert_eq!(text(&out), "v0\nv1\nv2\nv3\nv4\n");
        let committed = admin.group_offsets("stopper").await.unwrap();
        assert_eq!(committed.get(&TopicPartition::new("stop", 0)), Some(&5));
        let group = admin.describe_group("stopper").await.unwrap();
        assert!(group.members.is_empty(), "left the group: {group:?}");
    }
}

/// A TCP connector whose links can be cut: while cut, writes are swallowed
/// and reads never complete, as a network partition in the simulation.
mod partition {
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use sluice::net::{BoxFuture, BoxStream, Connector, TcpConnector};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    #[derive(Clone, Default)]
    pub struct Cuttable {
        pub cut: Arc<AtomicBool>,
    }

    struct Link {
        inner: BoxStream,
        cut: Arc<AtomicBool>,
    }

    impl AsyncRead for Link {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.cut.load(Ordering::SeqCst) {
                // Nothing arrives; the client's timeout must notice.
                return Poll::Pending;
            }
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Link {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.cut.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(buf.len()));
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Connector for Cuttable {
        fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
            Box::pin(async move {
                let inner = TcpConnector.connect(addr).await?;
                Ok(Box::new(Link {
                    inner,
                    cut: self.cut.clone(),
                }) as BoxStream)
            })
        }
    }
}

#[tokio::test]
async fn a_partition_fails_deliveries_in_bounded_time_and_clients_recover_after() {
    let (broker, _admin) = broker_with_topic("cut", 1).await;
    let link = partition::Cuttable::default();
    let config = ProducerConfig {
        bootstrap_servers: broker.address.clone(),
        linger_ms: 0,
        request_timeout_ms: 300,
        delivery_timeout_ms: 1_000,
        max_block_ms: 1_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config, Arc::new(link.clone()), Arc::new(SystemClock)).unwrap();
    let record = || {
        let mut r = ProducerRecord::new("cut", None, value("v"));
        r.partition = Some(0);
        r
    };
    assert_eq!(
        within("first ack", producer.send(record()))
            .await
            .unwrap()
            .offset,
        0
    );

    let mut consumer = Consumer::new(
        ConsumerConfig {
            request_timeout_ms: 300,
            ..consumer_config(&broker.address, None)
        },
        Arc::new(link.clone()),
        Arc::new(SystemClock),
    )
    .unwrap();
    consumer
        .assign(vec![TopicPartition::new("cut", 0)])
        .unwrap();
    assert_eq!(poll_until(&mut consumer, 1).await[0].offset, 0);

    link.cut.store(true, Ordering::SeqCst);
    let error = within("delivery timeout", producer.send(record()))
        .await
        .unwrap_err();
    assert!(
        error.outcome_unknown(),
        "a timed-out send may have been written"
    );
    assert!(
        matches!(error, sluice::client::ProduceError::DeliveryTimeout(_)),
        "{error}"
    );
    let polled = within(
        "poll during partition",
        consumer.poll(Duration::from_millis(500)),
    )
    .await;
    assert!(polled.unwrap().is_empty());

    link.cut.store(false, Ordering::SeqCst);
    let metadata = within("ack after heal", producer.send(record()))
        .await
        .unwrap();
    assert!(metadata.offset >= 1, "{metadata:?}");
    let records = poll_until(&mut consumer, 1).await;
    assert_eq!(records.last().unwrap().offset, metadata.offset);
    producer.close().await;
}

#[tokio::test]
async fn enqueue_gives_up_after_max_block_without_a_broker() {
    // A port nobody listens on: bind, learn the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let config = ProducerConfig {
        bootstrap_servers: address,
        max_block_ms: 300,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config, connector(), Arc::new(SystemClock)).unwrap();
    let error = within(
        "max.block.ms",
        producer.enqueue(ProducerRecord::new("nowhere", None, value("v"))),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, sluice::client::ProduceError::MaxBlockExpired(_)),
        "{error}"
    );
}

#[tokio::test]
async fn a_stalled_consumer_leaves_the_group_and_rejoins_on_the_next_poll() {
    let (broker, admin) = broker_with_topic("stall", 2).await;
    let mut consumer = consumer(ConsumerConfig {
        max_poll_interval_ms: 600,
        ..consumer_config(&broker.address, Some("stallers"))
    });
    consumer.subscribe(vec!["stall".into()], None).unwrap();
    within("first assignment", async {
        while consumer.assignment().is_empty() {
            consumer.poll(Duration::from_millis(50)).await.unwrap();
        }
    })
    .await;
    let (_, first_generation) = consumer.group_generation().expect("in a generation");

    // Do not poll: the heartbeat task must leave the group by itself.
    within("the member to leave", async {
        loop {
            let members = admin
                .describe_group("stallers")
                .await
                .unwrap()
                .members
                .len();
            if members == 0 && consumer.group_generation().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    within("rejoin", async {
        while consumer.group_generation().is_none() {
            consumer.poll(Duration::from_millis(50)).await.unwrap();
        }
    })
    .await;
    let (_, generation) = consumer.group_generation().unwrap();
    assert!(generation > first_generation);
    assert_eq!(consumer.assignment().len(), 2);
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn auto_commit_happens_before_partitions_are_revoked() {
    let (broker, admin) = broker_with_topic("handover", 2).await;
    let producer = producer(&broker.address);
    for i in 0..20 {
        let mut record = ProducerRecord::new("handover", None, value(&format!("v{i}")));
        record.partition = Some(i % 2);
        producer.enqueue(record).await.unwrap();
    }
    producer.flush().await;
    // A long interval: no periodic commit happens during the test, so the
    // committed offsets can only come from the commit before revocation.
    let config = ConsumerConfig {
        auto_commit_interval_ms: 600_000,
        ..consumer_config(&broker.address, Some("handover"))
    };
    let mut first = consumer(config.clone());
    first.subscribe(vec!["handover".into()], None).unwrap();
    assert_eq!(poll_until(&mut first, 20).await.len(), 20);
    assert!(admin.group_offsets("handover").await.unwrap().is_empty());

    let (changes_tx, mut changes) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);
    let first = run(first, changes_tx.clone());
    let mut second = consumer(config);
    second.subscribe(vec!["handover".into()], None).unwrap();
    let second = run(second, changes_tx);
    let partitions: Vec<TopicPartition> =
        (0..2).map(|p| TopicPartition::new("handover", p)).collect();
    until_balanced(&mut changes, &[&first, &second], &partitions).await;

    let committed = admin.group_offsets("handover").await.unwrap();
    assert_eq!(committed.get(&partitions[0]), Some(&10), "{committed:?}");
    assert_eq!(committed.get(&partitions[1]), Some(&10), "{committed:?}");
    for running in [first, second] {
        running.stop.store(true, Ordering::SeqCst);
        let mut consumer = within("consumer task", running.task).await.unwrap();
        consumer.close().await.unwrap();
        let events = consumer.drain_group_events();
        // Each member's history: assigned, then on every later rebalance a
        // commit and a revocation in the old generation before the new one.
        let mut generation = None;
        for event in &events {
            match event {
                GroupEvent::Assigned { generation_id, .. } => {
                    assert!(generation < Some(*generation_id), "{events:?}");
                    generation = Some(*generation_id);
                }
                GroupEvent::CommitSent { generation_id, .. }
                | GroupEvent::Revoked { generation_id, .. } => {
                    assert_eq!(Some(*generation_id), generation, "{events:?}");
                }
                GroupEvent::CommitDone { outcome, .. } => {
                    assert_eq!(
                        *outcome,
                        sluice::client::CommitOutcome::Applied,
                        "{events:?}"
                    );
                }
            }
        }
        assert!(
            matches!(events.first(), Some(GroupEvent::Assigned { .. })),
            "{events:?}"
        );
        assert!(
            matches!(events.last(), Some(GroupEvent::Revoked { .. })),
            "close revokes: {events:?}"
        );
    }

    producer.close().await;
}

#[tokio::test]
async fn a_full_buffer_blocks_enqueue_until_space_frees_or_max_block_passes() {
    let (broker, _admin) = broker_with_topic("tight", 1).await;
    let link = partition::Cuttable::default();
    let config = ProducerConfig {
        bootstrap_servers: broker.address.clone(),
        // Room for a handful of small records only.
        buffer_memory: 400,
        batch_size: 200,
        max_block_ms: 500,
        request_timeout_ms: 300,
        delivery_timeout_ms: 1_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config, Arc::new(link.clone()), Arc::new(SystemClock)).unwrap();
    let record = |i: usize| {
        let mut r = ProducerRecord::new("tight", None, value(&format!("value-{i:04}")));
        r.partition = Some(0);
        r
    };
    // Far more than fits: enqueue waits for acknowledgements to free space.
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            within("enqueue", producer.enqueue(record(i)))
                .await
                .unwrap(),
        );
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        assert_eq!(
            within("ack", delivery).await.unwrap().offset,
            i64::try_from(i).unwrap()
        );
    }

    // Nothing drains while the link is cut: enqueue gives up after max.block.ms.
    link.cut.store(true, Ordering::SeqCst);
    let mut stuck = Vec::new();
    let error = within("max.block.ms", async {
        loop {
            match producer.enqueue(record(0)).await {
                Ok(delivery) => stuck.push(delivery),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(
        matches!(error, sluice::client::ProduceError::MaxBlockExpired(_)),
        "{error}"
    );
    assert!(!stuck.is_empty());
    for delivery in stuck {
        assert!(within("expiry", delivery).await.is_err());
    }
}

/// A TCP connector that can break every link dialled so far, as a broker
/// process dying would.
mod killable {
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use sluice::net::{BoxFuture, BoxStream, Connector, TcpConnector};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    #[derive(Clone, Default)]
    pub struct Killable {
        epoch: Arc<AtomicU64>,
    }

    impl Killable {
        /// Every existing link fails from now on; new dials work.
        pub fn kill_links(&self) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Link {
        inner: BoxStream,
        born: u64,
        epoch: Arc<AtomicU64>,
    }

    impl Link {
        fn dead(&self) -> bool {
            self.epoch.load(Ordering::SeqCst) != self.born
        }
    }

    fn reset() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "broker died")
    }

    impl AsyncRead for Link {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.dead() {
                return Poll::Ready(Err(reset()));
            }
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if polled.is_pending() {
                // Re-check soon so a kill is noticed without traffic.
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    waker.wake();
                });
            }
            polled
        }
    }

    impl AsyncWrite for Link {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.dead() {
                return Poll::Ready(Err(reset()));
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Connector for Killable {
        fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
            Box::pin(async move {
                let inner = TcpConnector.connect(addr).await?;
                Ok(Box::new(Link {
                    inner,
                    born: self.epoch.load(Ordering::SeqCst),
                    epoch: self.epoch.clone(),
                }) as BoxStream)
            })
        }
    }
}

#[tokio::test]
async fn the_idempotent_producer_reconnects_across_a_broker_restart() {
    let storage = sluice::storage::mem::MemStorage::new();
    let broker = sluice::testing::start_broker_on(test_config(), storage.clone()).await;
    let address = broker.address.clone();
    let admin = Admin::new(&address, connector(), ConnectionConfig::default());
    admin.create_topic("durable", 1, 1, &[]).await.unwrap();

    let links = killable::Killable::default();
    let config = ProducerConfig {
        bootstrap_servers: address.clone(),
        request_timeout_ms: 2_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config, Arc::new(links.clone()), Arc::new(SystemClock)).unwrap();
    let record = |i: i64| {
        let mut r = ProducerRecord::new("durable", None, value(&format!("v{i}")));
        r.partition = Some(0);
        r
    };
    for i in 0..5 {
        assert_eq!(
            within("ack", producer.send(record(i)))
                .await
                .unwrap()
                .offset,
            i
        );
    }

    // Restart on the same address and storage; the client's links die with it.
    links.kill_links();
    drop(broker);
    // The aborted accept loop releases the port once the runtime drops it.
    within("the old listener to close", async {
        while std::net::TcpListener::bind(&address).is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let config = sluice::config::BrokerConfig {
        listener: address.clone(),
        ..test_config()
    };
    let _broker = sluice::testing::start_broker_on(config, storage).await;
    for i in 5..10 {
        assert_eq!(
            within("ack after restart", producer.send(record(i)))
                .await
                .unwrap()
                .offset,
            i
        );
    }
    producer.close().await;

    let mut consumer = consumer(consumer_config(&address, None));
    consumer
        .assign(vec![TopicPartition::new("durable", 0)])
        .unwrap();
    let values: Vec<Option<Bytes>> = poll_until(&mut consumer, 10)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    let expected: Vec<Option<Bytes>> = (0..10).map(|i| value(&format!("v{i}"))).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn offset_out_of_range_resets_by_policy_or_fails_with_none() {
    let (broker, _admin) = broker_with_topic("short", 1).await;
    let producer = producer(&broker.address);
    for i in 0..3 {
        let mut record = ProducerRecord::new("short", None, value(&format!("v{i}")));
        record.partition = Some(0);
        producer.enqueue(record).await.unwrap();
    }
    producer.flush().await;
    let tp = TopicPartition::new("short", 0);

    let mut earliest = consumer(consumer_config(&broker.address, None));
    earliest.assign(vec![tp.clone()]).unwrap();
    earliest.seek(&tp, 1_000).unwrap();
    assert_eq!(poll_until(&mut earliest, 3).await[0].offset, 0);

    let mut strict = consumer(ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::None,
        ..consumer_config(&broker.address, None)
    });
    strict.assign(vec![tp.clone()]).unwrap();
    // No committed offset and no reset policy: an error, not a guess.
    assert!(strict.poll(Duration::from_millis(100)).await.is_err());
    strict.seek(&tp, 1_000).unwrap();
    let error = within("out of range", async {
        loop {
            match strict.poll(Duration::from_millis(100)).await {
                Ok(records) => assert!(records.is_empty()),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert_eq!(error.code(), Some(1), "OFFSET_OUT_OF_RANGE: {error}");
    producer.close().await;
}

#[tokio::test]
async fn round_robin_groups_deal_partitions_alternately() {
    let (broker, admin) = broker_with_topic("dealt", 4).await;
    let config = ConsumerConfig {
        partition_assignment_strategy: vec![sluice::client::AssignmentStrategy::RoundRobin],
        ..consumer_config(&broker.address, Some("dealers"))
    };
    let (changes_tx, mut changes) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);
    let mut a = consumer(config.clone());
    a.subscribe(vec!["dealt".into()], None).unwrap();
    let a = run(a, changes_tx.clone());
    let mut b = consumer(config);
    b.subscribe(vec!["dealt".into()], None).unwrap();
    let b = run(b, changes_tx);
    let partitions: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("dealt", p)).collect();
    until_balanced(&mut changes, &[&a, &b], &partitions).await;
    for running in [&a, &b] {
        let mine: Vec<i32> = running.assignment().iter().map(|tp| tp.partition).collect();
        assert!(mine == vec![0, 2] || mine == vec![1, 3], "{mine:?}");
    }
    assert_eq!(
        admin.describe_group("dealers").await.unwrap().protocol,
        "roundrobin"
    );

    // B unsubscribes: A takes everything over.
    b.stop.store(true, Ordering::SeqCst);
    let mut b = within("consumer task", b.task).await.unwrap();
    b.unsubscribe().await.unwrap();
    assert!(b.assignment().is_empty());
    until_balanced(&mut changes, &[&a], &partitions).await;

    a.stop.store(true, Ordering::SeqCst);
    let mut a = within("consumer task", a.task).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_rejected_batch_fails_alone_and_later_records_still_flow() {
    let mut config = test_config();
    config.log.message_max_bytes = 1_000;
    let broker = start_broker(config).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    admin.create_topic("strict", 1, 1, &[]).await.unwrap();
    let producer = producer(&broker.address);
    let record = |size: usize| {
        let mut r = ProducerRecord::new("strict", None, Some(Bytes::from(vec![b'x'; size])));
        r.partition = Some(0);
        r
    };
    assert_eq!(
        within("ack", producer.send(record(10)))
            .await
            .unwrap()
            .offset,
        0
    );
    // MESSAGE_TOO_LARGE is not retriable: this record fails at once...
    let error = within("rejection", producer.send(record(2_000)))
        .await
        .unwrap_err();
    assert!(
        !error.outcome_unknown(),
        "a rejected record was certainly not written"
    );
    assert!(
        matches!(error, sluice::client::ProduceError::Client(_)),
        "{error}"
    );
    // ...and the sequence numbers it used do not poison the partition.
    for expected in 1..4 {
        assert_eq!(
            within("ack", producer.send(record(10)))
                .await
                .unwrap()
                .offset,
            expected
        );
    }
    producer.close().await;
}

/// The clients' futures can move between tasks (the simulation spawns them).
#[allow(dead_code)]
fn client_futures_are_send(producer: &'static Producer, consumer: &'static mut Consumer) {
    fn is_send<T: Send>(_: T) {}
    is_send(producer.send(ProducerRecord::default()));
    is_send(producer.enqueue(ProducerRecord::default()));
    is_send(producer.flush());
    is_send(consumer.poll(Duration::ZERO));
}

#[test]
fn clients_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Producer>();
    is_send_sync::<Consumer>();
    is_send_sync::<Admin>();
    is_send_sync::<sluice::client::DeliveryFuture>();
}

#[tokio::test]
async fn the_group_leader_notices_a_subscribed_topic_that_appears_later() {
    let broker = start_broker(test_config()).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    let mut consumer = consumer(consumer_config(&broker.address, Some("early")));
    consumer.subscribe(vec!["later".into()], None).unwrap();
    within("joined with nothing to read", async {
        while consumer.group_generation().is_none() {
            assert!(consumer
                .poll(Duration::from_millis(50))
                .await
                .unwrap()
                .is_empty());
        }
    })
    .await;
    assert!(consumer.assignment().is_empty());

    admin.create_topic("later", 2, 1, &[]).await.unwrap();
    within("assignment of the new topic", async {
        while consumer.assignment().len() < 2 {
            consumer.poll(Duration::from_millis(50)).await.unwrap();
        }
    })
    .await;
    consumer.close().await.unwrap();
}
