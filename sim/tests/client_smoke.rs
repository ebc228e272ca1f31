//! The Rust clients under turmoil against one simulated broker: a keyed
//! producer whose link is partitioned mid-run, then a group consumer. Two
//! runs with the same seed must record the same history, and every
//! acknowledged record must be read back. A smoke test of the client side of
//! the simulation seams, not a checker.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice::client::{
    Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use sluice::config::BrokerConfig;
use sluice_sim::disk::{DiskStorage, SimDisk};
use sluice_sim::seams::{DiskFaults, FsyncLatency, SimClock, SimConnector, SimListener};

fn run(seed: u64) -> Vec<String> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .rng_seed(seed)
        .build();
    sim.host("broker", move || async move {
        let config = BrokerConfig {
            listener: "0.0.0.0:9092".into(),
            log_dirs: "/data".into(),
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 100,
            ..BrokerConfig::default()
        };
        let listener = SimListener::bind("broker", 9092).await?;
        let broker = sluice::broker::Broker::open(
            config,
            Arc::new(DiskStorage::new(
                SimDisk::default(),
                Arc::new(DiskFaults::default()),
                "broker",
                FsyncLatency::new(seed),
            )),
            Arc::new(SimClock),
        )
        .await?;
        let _tasks = broker.spawn_background();
        sluice::server::serve(broker, Box::new(listener)).await?;
        Ok(())
    });
    let out = log.clone();
    sim.client("client", async move {
        let connector = Arc::new(SimConnector);
        let admin = Admin::new(
            "broker:9092",
            connector.clone(),
            ConnectionConfig::default(),
        );
        loop {
            match admin.create_topic("t", 3, 1, &[]).await {
                Ok(()) => break,
                Err(e) => {
                    out.lock().unwrap().push(format!("create: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let producer = Producer::new(
            ProducerConfig {
                bootstrap_servers: "broker:9092".into(),
                request_timeout_ms: 1_000,
                delivery_timeout_ms: 5_000,
                seed,
                ..ProducerConfig::default()
            },
            connector.clone(),
            Arc::new(SimClock),
        )?;
        let mut pending = Vec::new();
        for i in 0..50 {
            if i == 20 {
                turmoil::partition("client", "broker");
            }
            if i == 30 {
                turmoil::repair("client", "broker");
            }
            let record = ProducerRecord::new(
                "t",
                Some(Bytes::from(format!("k{}", i % 7))),
                Some(Bytes::from(format!("v{i}"))),
            );
            match producer.enqueue(record).await {
                Ok(d) => pending.push((i, d)),
                Err(e) => out.lock().unwrap().push(format!("enqueue {i}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut acked = 0;
        for (i, d) in pending {
            match d.await {
                Ok(m) => {
                    acked += 1;
                    out.lock()
                        .unwrap()
                        .push(format!("sent {i} -> {}:{}", m.partition, m.offset))
                }
                Err(e) => out.lock().unwrap().push(format!(
                    "send {i} failed: {e} unknown={}",
                    e.outcome_unknown()
                )),
            }
        }
        producer.close().await;
        let mut consumer = Consumer::new(
            ConsumerConfig {
                bootstrap_servers: "broker:9092".into(),
                group_id: Some("g".into()),
                auto_offset_reset: AutoOffsetReset::Earliest,
                heartbeat_interval_ms: 100,
                session_timeout_ms: 3_000,
                request_timeout_ms: 1_000,
                ..ConsumerConfig::default()
            },
            connector,
            Arc::new(SimClock),
        )?;
        consumer.subscribe(vec!["t".into()], None)?;
        let mut got = 0;
        for _ in 0..100 {
            let records = consumer.poll(Duration::from_millis(200)).await?;
            for r in &records {
                out.lock()
                    .unwrap()
                    .push(format!("got {}:{} {:?}", r.partition, r.offset, r.value));
            }
            got += records.len();
            if got >= acked {
                break;
            }
        }
        consumer.commit_sync(None).await?;
        for e in consumer.drain_group_events() {
            out.lock().unwrap().push(format!("{e:?}"));
        }
        consumer.close().await?;
        out.lock()
            .unwrap()
            .push(format!("done after {:?}", turmoil::elapsed()));
        Ok(())
    });
    sim.run().unwrap();
    let v = log.lock().unwrap().clone();
    v
}

#[test]
fn clients_under_turmoil_are_deterministic() {
    let first = run(42);
    assert_eq!(first, run(42), "same seed, same history");
    let acked: Vec<&String> = first.iter().filter(|l| l.starts_with("sent ")).collect();
    let read: Vec<&String> = first.iter().filter(|l| l.starts_with("got ")).collect();
    assert!(
        first
            .iter()
            .all(|l| !l.contains("failed") || l.contains("unknown=true")),
        "only timeouts may fail a send across a healed partition: {first:?}"
    );
    assert!(acked.len() >= 40, "{first:?}");
    assert_eq!(read.len(), acked.len(), "{first:?}");
}
