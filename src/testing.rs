//! An in-process broker on loopback with in-memory storage, for tests of the
//! clients and the wire protocol.

use std::sync::Arc;

use crate::broker::Broker;
use crate::clock::SystemClock;
use crate::config::BrokerConfig;
use crate::net::{Listener, TcpListener};
use crate::storage::mem::MemStorage;

pub struct TestBroker {
    /// `127.0.0.1:<port>`.
    pub address: String,
    pub broker: Arc<Broker>,
    pub storage: MemStorage,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A config suited to tests: an in-memory data dir, no initial rebalance
/// delay, short group timeouts allowed.
pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        listener: "127.0.0.1:0".to_string(),
        log_dirs: "/sluice-test".into(),
        group_initial_rebalance_delay_ms: 0,
        group_min_session_timeout_ms: 100,
        ..BrokerConfig::default()
    }
}

/// Starts a broker on an ephemeral loopback port. Must run inside a tokio runtime.
pub async fn start_broker(config: BrokerConfig) -> TestBroker {
    start_broker_on(config, MemStorage::new()).await
}

/// Starts a broker over existing storage, e.g. to test a restart.
pub async fn start_broker_on(config: BrokerConfig, storage: MemStorage) -> TestBroker {
    let listener = TcpListener::bind(&config.listener)
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    let broker = Broker::open(config, Arc::new(storage.clone()), Arc::new(SystemClock))
        .await
        .expect("open broker");
    let mut tasks = broker.spawn_background();
    let serving = Arc::clone(&broker);
    tasks.push(tokio::spawn(async move {
        if let Err(error) = crate::server::serve(serving, Box::new(listener)).await {
            tracing::error!(%error, "test broker stopped serving");
        }
    }));
    TestBroker {
        address,
        broker,
        storage,
        tasks,
    }
}
