//! The group coordinator through the Rust clients, across broker restarts:
//! a deleted topic's offsets stay deleted, member ids never repeat, and a
//! static member (KIP-345) that restarts takes its partitions back without a
//! rebalance.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice::client::{
    Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, TopicPartition,
};
use sluice::clock::SystemClock;
use sluice::net::{Connector, TcpConnector};
use sluice::storage::mem::MemStorage;
use sluice::testing::{start_broker_on, test_config, TestBroker};

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn connector() -> Arc<dyn Connector> {
    Arc::new(TcpConnector)
}

fn admin(broker: &TestBroker) -> Admin {
    Admin::new(&broker.address, connector(), ConnectionConfig::default())
}

fn consumer(broker: &TestBroker, group: &str, client_id: &str, instance: Option<&str>) -> Consumer {
    let config = ConsumerConfig {
        bootstrap_servers: broker.address.clone(),
        client_id: client_id.to_string(),
        group_id: Some(group.to_string()),
        group_instance_id: instance.map(str::to_string),
        auto_offset_reset: AutoOffsetReset::Earliest,
        enable_auto_commit: false,
        heartbeat_interval_ms: 100,
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    };
    Consumer::new(config, connector(), Arc::new(SystemClock)).expect("consumer")
}

/// Polls until the consumer is in a generation with an assignment.
async fn joined(consumer: &mut Consumer) -> (String, i32) {
    within("a generation", async {
        loop {
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll");
            if let Some(generation) = consumer.group_generation() {
                if !consumer.assignment().is_empty() {
                    return generation;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_deleted_topics_committed_offsets_stay_deleted_across_a_restart() {
    let storage = MemStorage::new();
    let broker = start_broker_on(test_config(), storage.clone()).await;
    let admin = admin(&broker);
    admin.create_topic("t", 1, 1, &[]).await.unwrap();
    let tp = TopicPartition::new("t", 0);
    // A simple (memberless) commit, as an admin tool makes.
    let mut committer = consumer(&broker, "g", "c", None);
    committer.assign(vec![tp.clone()]).unwrap();
    committer
        .commit_sync(Some(BTreeMap::from([(tp.clone(), 3)])))
        .await
        .unwrap();
    assert_eq!(admin.group_offsets("g").await.unwrap().get(&tp), Some(&3));
    admin.delete_topic("t").await.unwrap();
    assert_eq!(admin.group_offsets("g").await.unwrap().get(&tp), None);
    drop(committer);
    drop(broker);

    // Restart on the same storage and recreate the topic: the group must not
    // resume at the old incarnation's offset (it would skip records).
    let broker = start_broker_on(test_config(), storage).await;
    let admin = self::admin(&broker);
    admin.create_topic("t", 1, 1, &[]).await.unwrap();
    let offsets = admin.group_offsets("g").await.unwrap();
    assert_eq!(
        offsets.get(&tp),
        None,
        "stale offsets came back: {offsets:?}"
    );
}

#[tokio::test]
async fn member_ids_never_repeat_across_a_broker_restart() {
    let storage = MemStorage::new();
    let broker = start_broker_on(test_config(), storage.clone()).await;
    admin(&broker).create_topic("t", 1, 1, &[]).await.unwrap();
    let mut first = consumer(&broker, "g", "shared-client-id", None);
    first.subscribe(vec!["t".into()], None).unwrap();
    let (before, _) = joined(&mut first).await;
    drop(first);
    drop(broker);

    let broker = start_broker_on(test_config(), storage).await;
    let mut second = consumer(&broker, "g", "shared-client-id", None);
    second.subscribe(vec!["t".into()], None).unwrap();
    let (after, _) = joined(&mut second).await;
    assert_ne!(before, after, "a member id was handed out twice");
    assert!(
        before.starts_with("shared-client-id-") && after.starts_with("shared-client-id-"),
        "{before} {after}"
    );
}

#[tokio::test]
async fn a_static_member_that_restarts_keeps_its_partitions_without_a_rebalance() {
    let broker = start_broker_on(test_config(), MemStorage::new()).await;
    let admin = admin(&broker);
    admin.create_topic("t", 2, 1, &[]).await.unwrap();
    let mut a = consumer(&broker, "g", "app", Some("instance-a"));
    let mut b = consumer(&broker, "g", "app", Some("instance-b"));
    a.subscribe(vec!["t".into()], None).unwrap();
    b.subscribe(vec!["t".into()], None).unwrap();
    // Poll both (together: a rebalance waits for every member) until each
    // holds one partition in the same generation.
    let (generation, a_partitions) = within("a balanced group", async {
        loop {
            let (polled_a, polled_b) = tokio::join!(
                a.poll(Duration::from_millis(50)),
                b.poll(Duration::from_millis(50))
            );
            polled_a.expect("poll a");
            polled_b.expect("poll b");
            if let (Some((_, ga)), Some((_, gb))) = (a.group_generation(), b.group_generation()) {
                if ga == gb && a.assignment().len() == 1 && b.assignment().len() == 1 {
                    return (ga, a.assignment().to_vec());
                }
            }
        }
    })
    .await;
    let old_member = a.group_generation().unwrap().0;

    // `a` restarts: a static member does not leave on close.
    a.close().await.unwrap();
    drop(a);
    let description = admin.describe_group("g").await.unwrap();
    assert!(
        description
            .members
            .iter()
            .any(|m| m.group_instance_id.as_deref() == Some("instance-a")),
        "{description:?}"
    );
    let mut a = consumer(&broker, "g", "app", Some("instance-a"));
    a.subscribe(vec!["t".into()], None).unwrap();
    let (new_member, new_generation) = within("the restarted member", async {
        loop {
            let (polled_a, polled_b) = tokio::join!(
                a.poll(Duration::from_millis(50)),
                b.poll(Duration::from_millis(50))
            );
            polled_a.expect("poll a");
            polled_b.expect("poll b");
            if let Some(generation) = a.group_generation() {
                if !a.assignment().is_empty() {
                    return generation;
                }
            }
        }
    })
    .await;
    assert_ne!(
        new_member, old_member,
        "the restart joined under a new member id"
    );
    assert_eq!(new_generation, generation, "no rebalance");
    assert_eq!(
        a.assignment(),
        a_partitions.as_slice(),
        "same partitions back"
    );
    // The other member never had to rejoin.
    b.poll(Duration::from_millis(300)).await.expect("poll b");
    assert_eq!(b.group_generation().map(|(_, g)| g), Some(generation));
    let description = admin.describe_group("g").await.unwrap();
    assert_eq!(description.state, "Stable");
    assert!(
        description
            .members
            .iter()
            .any(|m| m.member_id == new_member
                && m.group_instance_id.as_deref() == Some("instance-a")),
        "{description:?}"
    );
}
