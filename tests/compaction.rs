//! Log compaction through the broker and the Rust clients: a compacted topic
//! keeps each key's latest record at its offset, refuses keyless records,
//! and survives a restart; `__consumer_offsets` is compacted, so a
//! coordinator's load replays about one record per key, and the offsets it
//! serves are unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice::client::{
    Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use sluice::clock::SystemClock;
use sluice::config::BrokerConfig;
use sluice::log::{LogConfig, PartitionLog};
use sluice::net::{Connector, TcpConnector};
use sluice::testing::{start_broker_on, test_config};

const WAIT: Duration = Duration::from_secs(20);

fn connector() -> Arc<dyn Connector> {
    Arc::new(TcpConnector)
}

/// Every append rolls the segment before it (`log.roll.ms` 1 and a pause
/// between sends), so everything but the last batch is cleanable at once.
fn rolling_config() -> BrokerConfig {
    let mut config = test_config();
    config.log.roll_ms = 1;
    config
}

fn producer(address: &str) -> Producer {
    Producer::new(
        ProducerConfig {
            bootstrap_servers: address.to_string(),
            linger_ms: 0,
            seed: 3,
            ..ProducerConfig::default()
        },
        connector(),
        Arc::new(SystemClock),
    )
    .expect("producer")
}

/// Reads partition 0 of `topic` from its start to its end.
async fn read_all(address: &str, topic: &str) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut consumer = Consumer::new(
        ConsumerConfig {
            bootstrap_servers: address.to_string(),
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait_ms: 50,
            ..ConsumerConfig::default()
        },
        connector(),
        Arc::new(SystemClock),
    )
    .expect("consumer");
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(vec![tp.clone()]).expect("assign");
    let end = consumer
        .end_offsets(std::slice::from_ref(&tp))
        .await
        .expect("end")[&tp];
    let mut records = Vec::new();
    tokio::time::timeout(WAIT, async {
        while consumer.position(&tp).await.expect("position") < end {
            for record in consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll")
            {
                records.push((record.offset, record.key, record.value));
            }
        }
    })
    .await
    .expect("the whole partition is read in time");
    records
}

#[tokio::test]
async fn a_compacted_topic_keeps_each_keys_latest_record_at_its_offset() {
    let storage = sluice::storage::mem::MemStorage::new();
    let broker = start_broker_on(rolling_config(), storage.clone()).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    admin
        .create_topic(
            "accounts",
            1,
            1,
            &[("cleanup.policy".to_string(), "compact".to_string())],
        )
        .await
        .expect("a compacted topic is accepted");
    let producer = producer(&broker.address);
    // Key k<i % 3> gets value v<i>; k0's last word is a tombstone.
    let mut latest: BTreeMap<String, (i64, Option<Bytes>)> = BTreeMap::new();
    for i in 0..13 {
        let key = format!("k{}", i % 3);
        let value = (i != 12).then(|| Bytes::from(format!("v{i}")));
        let record = ProducerRecord::new("accounts", Some(Bytes::from(key.clone())), value.clone());
        let delivery = producer.enqueue(record).await.expect("enqueue");
        let metadata = delivery.await.expect("acknowledged");
        latest.insert(key, (metadata.offset, value));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let keyless = ProducerRecord::new("accounts", None, Some(Bytes::from_static(b"x")));
    let refused = producer.enqueue(keyless).await.expect("enqueue").await;
    assert!(
        refused.is_err(),
        "a record without a key is refused on a compacted topic"
    );

    broker.broker.clean_logs().await;
    let read = read_all(&broker.address, "accounts").await;
    assert!(
        read.len() < 13,
        "the cleaner removed superseded records: {read:?}"
    );
    for (key, (offset, value)) in &latest {
        let last = read
            .iter()
            .rev()
            .find(|(_, k, _)| k.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} is gone: {read:?}"));
        assert_eq!(
            (last.0, &last.2),
            (*offset, value),
            "{key}'s latest record, at its original offset"
        );
    }
    for pair in read.windows(2) {
        assert!(pair[0].0 < pair[1].0, "offsets rise: {read:?}");
    }

    // A restart serves the same compacted log.
    producer.close().await;
    drop(broker);
    let broker = start_broker_on(rolling_config(), storage).await;
    assert_eq!(read_all(&broker.address, "accounts").await, read);
}

#[tokio::test]
async fn the_offsets_log_is_compacted_and_its_load_serves_the_same_offsets() {
    let storage = sluice::storage::mem::MemStorage::new();
    let broker = start_broker_on(rolling_config(), storage.clone()).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    admin
        .create_topic("events", 2, 1, &[])
        .await
        .expect("topic");
    let mut consumer = Consumer::new(
        ConsumerConfig {
            bootstrap_servers: broker.address.clone(),
            group_id: Some("ledger".to_string()),
            enable_auto_commit: false,
            ..ConsumerConfig::default()
        },
        connector(),
        Arc::new(SystemClock),
    )
    .expect("consumer");
    let tps = [
        TopicPartition::new("events", 0),
        TopicPartition::new("events", 1),
    ];
    consumer.assign(tps.to_vec()).expect("assign");
    const COMMITS: i64 = 30;
    for offset in 1..=COMMITS {
        let offsets: BTreeMap<TopicPartition, i64> =
            tps.iter().map(|tp| (tp.clone(), offset)).collect();
        tokio::time::timeout(WAIT, consumer.commit_sync(Some(offsets)))
            .await
            .expect("commit in time")
            .expect("commit");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    broker.broker.clean_logs().await;
    drop(consumer);
    drop(broker);

    // What a load replays: the records left in the offsets log.
    let log = PartitionLog::open(
        Arc::new(storage.clone()),
        Path::new("/sluice-test/__consumer_offsets-0"),
        LogConfig::default(),
        0,
    )
    .await
    .expect("the offsets log opens");
    let mut records = 0usize;
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let mut bytes = log
            .read(offset, 1 << 20, log.log_end_offset())
            .await
            .expect("read");
        let mut walk = &bytes[..];
        while let Ok(header) = sluice::log::batch::parse_header(walk) {
            offset = offset.max(header.next_offset());
            walk = &walk[header.size_bytes..];
        }
        for set in
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).expect("decode")
        {
            records += set.records.len();
        }
    }
    // Two offset keys and the group's generation key, plus at most the
    // active segment's batch: far fewer than the 60 offsets committed.
    assert!(
        records <= 4,
        "the compacted offsets log still holds {records} records of {}",
        log.log_end_offset()
    );
    drop(log);

    let broker = start_broker_on(rolling_config(), storage).await;
    let admin = Admin::new(&broker.address, connector(), ConnectionConfig::default());
    let offsets = tokio::time::timeout(WAIT, admin.group_offsets("ledger"))
        .await
        .expect("offsets in time")
        .expect("offsets");
    for tp in &tps {
        assert_eq!(offsets.get(tp), Some(&COMMITS), "{tp:?} after the load");
    }
}
