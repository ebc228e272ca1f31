//! Broker settings, read from a Kafka-style `server.properties` file.
//!
//! Keys and defaults are Kafka's wherever Kafka has the setting; the few
//! sluice-only keys say so. A key sluice does not know is an error, in the
//! file as on the command line, so a typo never goes unnoticed; the Kafka
//! tuning keys that have no meaning here (thread counts, socket buffers,
//! ZooKeeper) are accepted with a warning, so a stock `server.properties`
//! still starts. Values Kafka refuses are refused.

use std::path::PathBuf;

use crate::log::{LogConfig, TimestampType};

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// `node.id` (also read from `broker.id`).
    pub node_id: i32,
    /// `listeners`: the address to bind, as `host:port` (a `PLAINTEXT://`
    /// prefix is accepted and dropped).
    pub listener: String,
    /// `advertised.listeners`: what Metadata tells clients; the bound address
    /// when unset.
    pub advertised_listener: Option<String>,
    /// `log.dirs` (also `log.dir`): where partition directories live.
    pub log_dirs: PathBuf,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `socket.request.max.bytes`: a larger request closes its connection.
    pub socket_request_max_bytes: usize,
    /// `connections.max.idle.ms`: idle connections are closed after this.
    pub connections_max_idle_ms: u64,
    /// `max.connections`: further connections wait to be accepted.
    pub max_connections: usize,
    /// `group.initial.rebalance.delay.ms`: how long an empty group waits for
    /// more members before its first rebalance completes.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.flush.scheduler.interval.ms`: how often `log.flush.interval.ms` is checked.
    pub log_flush_scheduler_interval_ms: u64,
    /// `log.cleaner.enable`: run the log cleaner for compacted topics.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no log
    /// is due for cleaning.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: the memory one cleaning pass may
    /// use for its map of keys to their latest offsets.
    pub log_cleaner_dedupe_buffer_size: usize,
    /// Per-log settings (`log.segment.bytes`, `log.retention.ms`, ...).
    pub log: LogConfig,
    /// `controller.quorum.voters`: every voter as `(node id, host:port)`,
    /// the address its quorum requests go to. Empty: this broker is a
    /// one-node cluster and its own only voter. sluice runs in combined
    /// mode, so this broker must be one of the voters.
    pub controller_quorum_voters: Vec<(i32, String)>,
    /// The `CONTROLLER` entry of `listeners`, if any: a second address that
    /// serves the same requests, for the other voters to reach.
    pub controller_listener: Option<String>,
    /// `default.replication.factor`: replicas of a topic created without an
    /// explicit replication factor (auto-created ones too).
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`.
    /// In a cluster the controller creates it once this many brokers have
    /// registered; a single node is its one replica whatever this says.
    pub offsets_topic_replication_factor: i16,
    /// `auto.leader.rebalance.enable`: the active controller moves each
    /// partition's leadership back to its preferred replica (the first)
    /// once that replica is in sync again.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often it looks.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `min.insync.replicas`: an acks=all produce needs at least this many
    /// in-sync replicas, and the high watermark moves only while there are.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long a leader holds a follower's
    /// fetch that finds nothing new.
    pub replica_fetch_wait_max_ms: i32,
    /// `broker.session.timeout.ms`: the controller fences a broker whose
    /// heartbeats stopped this long ago, and moves its leaderships.
    pub broker_session_timeout_ms: i64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Seeds the controller quorum's randomised election timeouts. Not a
    /// Kafka setting: the binary draws it at start, the simulation from its
    /// run seed, so runs replay.
    pub quorum_seed: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listener: "127.0.0.1:9092".to_string(),
            advertised_listener: None,
            log_dirs: PathBuf::from("/tmp/sluice-logs"),
            num_partitions: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 104_857_600,
            connections_max_idle_ms: 600_000,
            max_connections: 4096,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            log_retention_check_interval_ms: 300_000,
            log_flush_scheduler_interval_ms: 1000,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 134_217_728,
            log: LogConfig::default(),
            controller_quorum_voters: Vec::new(),
            controller_listener: None,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            quorum_seed: 0,
        }
    }
}

/// Kafka keys sluice accepts and ignores: they tune what sluice does not
/// have (network and I/O thread pools, socket buffers, ZooKeeper, the
/// replication of internal topics on a single node), so honouring them
/// changes nothing.
pub const NO_EFFECT_KEYS: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
    "listener.security.protocol.map",
];

fn out_of_range(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Kafka's smallest `log.segment.bytes` (since Kafka 4.0, KIP-1030).
pub const LOG_SEGMENT_BYTES_MIN: u64 = 1_048_576;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("line {line}: expected key=value, got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("{key}: not a setting sluice knows (see the README's configuration table)")]
    Unknown { key: String },
    #[error("line {line}: {error}")]
    AtLine {
        line: usize,
        error: Box<ConfigError>,
    },
    #[error("{key}: invalid value {value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|error: T::Err| ConfigError::Value {
            key: key.to_string(),
            value: value.to_string(),
            reason: error.to_string(),
        })
}

/// Parses `listeners` / `advertised.listeners`: `PLAINTEXT://host:port`
/// (an empty host means every interface: `PLAINTEXT://:9092`), or a bare
/// `host:port`, and at most one `CONTROLLER://host:port` beside it (only
/// `listeners` takes one). TLS and SASL are refused rather than served as
/// plaintext. Returns the plaintext address and the controller's.
fn parse_listeners(
    key: &str,
    value: &str,
    controller_allowed: bool,
) -> Result<(String, Option<String>), ConfigError> {
    let refuse = |reason: String| ConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let mut plaintext = None;
    let mut controller = None;
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (scheme, address) = match entry.split_once("://") {
            Some((scheme, address)) => (scheme, address),
            None => ("PLAINTEXT", entry),
        };
        let slot = match scheme {
            "PLAINTEXT" => &mut plaintext,
            "CONTROLLER" if controller_allowed => &mut controller,
            "CONTROLLER" => {
                return Err(refuse(
                    "the CONTROLLER listener is not advertised to clients".to_string(),
                ))
            }
            "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => {
                return Err(refuse(format!(
                    "{scheme} listeners are not supported (no TLS or SASL); use PLAINTEXT"
                )))
            }
            other => {
                return Err(refuse(format!(
                    "listener {other:?}: sluice serves PLAINTEXT and CONTROLLER only"
                )))
            }
        };
        if slot.is_some() {
            return Err(refuse(format!("more than one {scheme} listener")));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(refuse("expected host:port".to_string()));
        };
        if port.parse::<u16>().is_err() {
            return Err(refuse(format!("{port:?} is not a port")));
        }
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        *slot = Some(format!("{host}:{port}"));
    }
    let Some(plaintext) = plaintext else {
        return Err(refuse("a PLAINTEXT listener is required".to_string()));
    };
    Ok((plaintext, controller))
}

/// Voters beyond this make every metadata write wait on more fsyncs for no
/// gain in what the cluster survives that users ask for.
pub const CONTROLLER_QUORUM_VOTERS_MAX: usize = 9;

/// Parses `controller.quorum.voters`: `id@host:port,...`, ids distinct.
fn parse_voters(key: &str, value: &str) -> Result<Vec<(i32, String)>, ConfigError> {
    let refuse = |reason: &str| ConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let mut voters: Vec<(i32, String)> = Vec::new();
    for voter in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, address) = voter
            .split_once('@')
            .ok_or_else(|| refuse("expected id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| refuse("the voter id must be a number"))?;
        if id < 0 {
            return Err(refuse("voter ids are not negative"));
        }
        if !address.contains(':') {
            return Err(refuse("expected id@host:port"));
        }
        if voters.iter().any(|(other, _)| *other == id) {
            return Err(refuse("a voter id appears twice"));
        }
        voters.push((id, address.trim().to_string()));
    }
    if voters.is_empty() {
        return Err(refuse("expected id@host:port,..."));
    }
    if voters.len() > CONTROLLER_QUORUM_VOTERS_MAX {
        return Err(refuse("at most 9 voters"));
    }
    Ok(voters)
}

impl BrokerConfig {
    /// Checks what no single setting can: run once all are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let voters = &self.controller_quorum_voters;
        if !voters.is_empty() && !voters.iter().any(|(id, _)| *id == self.node_id) {
            return Err(ConfigError::Value {
                key: "controller.quorum.voters".to_string(),
                value: voters
                    .iter()
                    .map(|(id, address)| format!("{id}@{address}"))
                    .collect::<Vec<_>>()
                    .join(","),
                reason: format!(
                    "sluice runs in combined mode, so this broker (node.id={}) must be a voter",
                    self.node_id
                ),
            });
        }
        Ok(())
    }

    /// Applies one setting: an error for a bad value or an unknown key; a
    /// warning for a Kafka key with no effect here ([`NO_EFFECT_KEYS`]).
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if self.set(key, value)? {
            return Ok(());
        }
        if NO_EFFECT_KEYS.contains(&key) {
            tracing::warn!(
                key,
                "accepting a Kafka setting that has no effect in sluice"
            );
            return Ok(());
        }
        Err(ConfigError::Unknown {
            key: key.to_string(),
        })
    }

    /// Applies one setting. Returns `Ok(false)` for a key sluice does not know.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let value = value.trim();
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "process.roles" => {
                let mut roles: Vec<&str> = value.split(',').map(str::trim).collect();
                roles.sort_unstable();
                if roles != ["broker", "controller"] {
                    return Err(ConfigError::Value {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason:
                            "sluice runs in combined mode only: process.roles=broker,controller"
                                .to_string(),
                    });
                }
            }
            "controller.quorum.voters" => self.controller_quorum_voters = parse_voters(key, value)?,
            "controller.listener.names" => {
                if value != "CONTROLLER" {
                    return Err(ConfigError::Value {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason: "sluice names its controller listener CONTROLLER".to_string(),
                    });
                }
            }
            "listeners" => {
                (self.listener, self.controller_listener) = parse_listeners(key, value, true)?
            }
            "advertised.listeners" => {
                self.advertised_listener = Some(parse_listeners(key, value, false)?.0)
            }
            "log.dirs" | "log.dir" => {
                let dirs: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .collect();
                let [dir] = dirs.as_slice() else {
                    return Err(ConfigError::Value {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason: "sluice keeps its data in exactly one directory".to_string(),
                    });
                };
                self.log_dirs = PathBuf::from(dir);
            }
            "num.partitions" => {
                self.num_partitions = parse(key, value)?;
                if self.num_partitions < 1 {
                    return Err(ConfigError::Value {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason: "must be at least 1".to_string(),
                    });
                }
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = parse(key, value)?;
                if self.offsets_topic_replication_factor < 1 {
                    return Err(out_of_range(key, value, "at least 1"));
                }
            }
            "auto.leader.rebalance.enable" => {
                self.auto_leader_rebalance_enable = parse(key, value)?
            }
            "leader.imbalance.check.interval.seconds" => {
                self.leader_imbalance_check_interval_seconds = parse(key, value)?;
                if self.leader_imbalance_check_interval_seconds < 1 {
                    return Err(out_of_range(key, value, "at least 1"));
                }
            }
            "offsets.topic.num.partitions" => {
                if parse::<i32>(key, value)? != 1 {
                    return Err(out_of_range(
                        key,
                        value,
                        "sluice keeps every group in one offsets partition; only 1 is supported",
                    ));
                }
            }
            "default.replication.factor" => {
                self.default_replication_factor = parse(key, value)?;
                if self.default_replication_factor < 1 {
                    return Err(out_of_range(key, value, "at least 1"));
                }
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = parse(key, value)?;
                if self.min_insync_replicas < 1 {
                    return Err(out_of_range(key, value, "at least 1"));
                }
            }
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse(key, value)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = parse(key, value)?,
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = parse(key, value)?,
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = parse(key, value)?
            }
            "unclean.leader.election.enable" => {
                if parse::<bool>(key, value)? {
                    return Err(out_of_range(
                        key,
                        value,
                        "unclean leader election is not supported: it can lose acknowledged records",
                    ));
                }
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse(key, value)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = parse(key, value)?,
            "connections.max.idle.ms" => self.connections_max_idle_ms = parse(key, value)?,
            "max.connections" => self.max_connections = parse(key, value)?,
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = parse(key, value)?
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = parse(key, value)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = parse(key, value)?
            }
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = parse(key, value)?
            }
            "log.flush.scheduler.interval.ms" => {
                self.log_flush_scheduler_interval_ms = parse(key, value)?
            }
            "log.cleaner.enable" => self.log_cleaner_enable = parse(key, value)?,
            "log.cleaner.backoff.ms" => self.log_cleaner_backoff_ms = parse(key, value)?,
            "log.cleaner.dedupe.buffer.size" => {
                self.log_cleaner_dedupe_buffer_size = parse(key, value)?;
                if self.log_cleaner_dedupe_buffer_size
                    < crate::log::cleaner::DEDUPE_BUFFER_BYTES_MIN
                {
                    return Err(out_of_range(key, value, "at least 1 MiB"));
                }
            }
            "log.cleanup.policy" => {
                self.log.cleanup_policy = crate::log::CleanupPolicy::parse(value)
                    .map_err(|reason| out_of_range(key, value, &reason))?
            }
            "log.cleaner.delete.retention.ms" => self.log.delete_retention_ms = parse(key, value)?,
            "log.cleaner.min.compaction.lag.ms" => {
                self.log.min_compaction_lag_ms = parse(key, value)?
            }
            "log.cleaner.min.cleanable.ratio" => {
                let ratio: f64 = parse(key, value)?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(out_of_range(key, value, "between 0 and 1"));
                }
                self.log.min_cleanable_dirty_ratio = ratio;
            }
            "log.segment.bytes" => {
                self.log.segment_bytes = parse(key, value)?;
                if self.log.segment_bytes < LOG_SEGMENT_BYTES_MIN {
                    return Err(ConfigError::Value {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason: format!("Kafka's minimum is {LOG_SEGMENT_BYTES_MIN}"),
                    });
                }
            }
            "log.roll.ms" => self.log.roll_ms = parse(key, value)?,
            "log.roll.hours" => self.log.roll_ms = parse::<i64>(key, value)? * 3_600_000,
            "log.retention.ms" => self.log.retention_ms = parse(key, value)?,
            "log.retention.minutes" => {
                self.log.retention_ms = parse::<i64>(key, value)?.saturating_mul(60_000)
            }
            "log.retention.hours" => {
                self.log.retention_ms = parse::<i64>(key, value)?.saturating_mul(3_600_000)
            }
            "log.retention.bytes" => self.log.retention_bytes = parse(key, value)?,
            "log.index.interval.bytes" => self.log.index_interval_bytes = parse(key, value)?,
            "log.flush.interval.messages" => self.log.flush_messages = parse(key, value)?,
            "log.flush.interval.ms" => self.log.flush_ms = parse(key, value)?,
            "log.flush.on.ack" => self.log.flush_on_ack = parse(key, value)?,
            "message.max.bytes" => self.log.message_max_bytes = parse(key, value)?,
            "log.message.timestamp.type" => {
                self.log.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => {
                        return Err(ConfigError::Value {
                            key: key.to_string(),
                            value: value.to_string(),
                            reason: "expected CreateTime or LogAppendTime".to_string(),
                        })
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The settings DescribeConfigs reports for this broker, by Kafka key,
    /// in key order.
    pub fn described(&self) -> Vec<(&'static str, String)> {
        let log = &self.log;
        let voters = self
            .controller_quorum_voters
            .iter()
            .map(|(id, address)| format!("{id}@{address}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut described = vec![
            (
                "advertised.listeners",
                self.advertised_listener.clone().unwrap_or_default(),
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics_enable.to_string(),
            ),
            (
                "auto.leader.rebalance.enable",
                self.auto_leader_rebalance_enable.to_string(),
            ),
            (
                "broker.heartbeat.interval.ms",
                self.broker_heartbeat_interval_ms.to_string(),
            ),
            (
                "broker.session.timeout.ms",
                self.broker_session_timeout_ms.to_string(),
            ),
            (
                "connections.max.idle.ms",
                self.connections_max_idle_ms.to_string(),
            ),
            ("controller.quorum.voters", voters),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            (
                "leader.imbalance.check.interval.seconds",
                self.leader_imbalance_check_interval_seconds.to_string(),
            ),
            ("listeners", self.listener.clone()),
            (
                "log.cleaner.backoff.ms",
                self.log_cleaner_backoff_ms.to_string(),
            ),
            (
                "log.cleaner.dedupe.buffer.size",
                self.log_cleaner_dedupe_buffer_size.to_string(),
            ),
            (
                "log.cleaner.delete.retention.ms",
                log.delete_retention_ms.to_string(),
            ),
            ("log.cleaner.enable", self.log_cleaner_enable.to_string()),
            (
                "log.cleaner.min.cleanable.ratio",
                log.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                log.min_compaction_lag_ms.to_string(),
            ),
            ("log.cleanup.policy", log.cleanup_policy.name().to_string()),
            ("log.dirs", self.log_dirs.display().to_string()),
            (
                "log.flush.interval.messages",
                log.flush_messages.min(i64::MAX as u64).to_string(),
            ),
            ("log.flush.interval.ms", log.flush_ms.to_string()),
            ("log.flush.on.ack", log.flush_on_ack.to_string()),
            (
                "log.flush.scheduler.interval.ms",
                self.log_flush_scheduler_interval_ms.to_string(),
            ),
            (
                "log.index.interval.bytes",
                log.index_interval_bytes.to_string(),
            ),
            (
                "log.message.timestamp.type",
                match log.timestamp_type {
                    TimestampType::CreateTime => "CreateTime",
                    TimestampType::LogAppendTime => "LogAppendTime",
                }
                .to_string(),
            ),
            ("log.retention.bytes", log.retention_bytes.to_string()),
            (
                "log.retention.check.interval.ms",
                self.log_retention_check_interval_ms.to_string(),
            ),
            ("log.retention.ms", log.retention_ms.to_string()),
            ("log.roll.ms", log.roll_ms.to_string()),
            ("log.segment.bytes", log.segment_bytes.to_string()),
            ("max.connections", self.max_connections.to_string()),
            ("message.max.bytes", log.message_max_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("node.id", self.node_id.to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            (
                "offsets.topic.replication.factor",
                self.offsets_topic_replication_factor.to_string(),
            ),
            (
                "replica.fetch.wait.max.ms",
                self.replica_fetch_wait_max_ms.to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
            ),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ),
            ("unclean.leader.election.enable", "false".to_string()),
        ];
        described.sort_by_key(|(key, _)| *key);
        described
    }

    /// Parses `server.properties` text on top of the defaults.
    pub fn from_properties(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        // Kafka gives log.retention.ms precedence over minutes over hours,
        // whatever their order in the file.
        let mut entries: Vec<(usize, String, String)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(ConfigError::Syntax {
                    line: index + 1,
                    text: raw.to_string(),
                });
            };
            entries.push((index + 1, key.trim().to_string(), value.trim().to_string()));
        }
        let precedence = |key: &str| match key {
            "log.retention.hours" | "log.roll.hours" => 0,
            "log.retention.minutes" => 1,
            _ => 2,
        };
        entries.sort_by_key(|(line, key, _)| (precedence(key), *line));
        for (line, key, value) in entries {
            config
                .apply(&key, &value)
                .map_err(|error| ConfigError::AtLine {
                    line,
                    error: Box::new(error),
                })?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_mode_voters_and_the_controller_listener_parse_and_bad_ones_are_refused() {
        let config = BrokerConfig::from_properties(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@localhost:9093\n",
        )
        .expect("a one-node KRaft configuration");
        assert_eq!(
            config.controller_quorum_voters,
            [(1, "localhost:9093".to_string())]
        );
        assert_eq!(config.validate(), Ok(()));

        let config = BrokerConfig::from_properties(
            "process.roles=broker,controller\nnode.id=2\n\
             controller.quorum.voters=1@a:9093, 2@b:9093,3@c:9093\n\
             listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n\
             controller.listener.names=CONTROLLER\n",
        )
        .expect("a three-voter configuration");
        assert_eq!(config.controller_quorum_voters.len(), 3);
        assert_eq!(
            config.controller_quorum_voters[1],
            (2, "b:9093".to_string())
        );
        assert_eq!(config.listener, "0.0.0.0:9092");
        assert_eq!(config.controller_listener.as_deref(), Some("0.0.0.0:9093"));
        assert_eq!(config.validate(), Ok(()));

        let mut other = config.clone();
        other.apply("node.id", "4").expect("node.id");
        assert!(other.validate().is_err(), "this broker is not a voter");

        let mut config = BrokerConfig::default();
        for (key, value) in [
            ("process.roles", "broker"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", "1@a:9093,1@b:9093"),
            ("controller.quorum.voters", "localhost:9093"),
            ("controller.quorum.voters", "x@localhost:9093"),
            ("controller.quorum.voters", "-1@localhost:9093"),
            ("controller.listener.names", "CTRL"),
            ("listeners", "CONTROLLER://:9093"),
            (
                "listeners",
                "PLAINTEXT://:9092,CONTROLLER://:9093,CONTROLLER://:9094",
            ),
            (
                "advertised.listeners",
                "PLAINTEXT://a:9092,CONTROLLER://a:9093",
            ),
        ] {
            let error = config.apply(key, value).expect_err(value);
            assert!(
                matches!(error, ConfigError::Value { .. }),
                "{key}={value}: {error}"
            );
        }
    }

    #[test]
    fn a_kafka_server_properties_file_parses() {
        let text = "# comment\nbroker.id=3\nlisteners=PLAINTEXT://127.0.0.1:19092\n\
                    log.dirs=/var/kafka\nlog.retention.ms=1000\nlog.retention.hours=1\n\
                    num.network.threads=3\nzookeeper.connect=localhost:2181\n\
                    log.segment.bytes = 2097152\n";
        let config = BrokerConfig::from_properties(text).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.listener, "127.0.0.1:19092");
        assert_eq!(config.log_dirs, PathBuf::from("/var/kafka"));
        assert_eq!(config.log.retention_ms, 1000, "ms wins over hours");
        assert_eq!(config.log.segment_bytes, 2_097_152);
    }

    #[test]
    fn listeners_take_kafkas_forms_and_refuse_tls_and_sasl() {
        let listener = |value: &str| {
            let mut config = BrokerConfig::default();
            config.apply("listeners", value).map(|()| config.listener)
        };
        assert_eq!(listener("PLAINTEXT://:9092").unwrap(), "0.0.0.0:9092");
        assert_eq!(listener("PLAINTEXT://host:9093").unwrap(), "host:9093");
        assert_eq!(listener("127.0.0.1:9094").unwrap(), "127.0.0.1:9094");
        for refused in [
            "SSL://:9093",
            "SASL_PLAINTEXT://:9094",
            "SASL_SSL://:9095",
            "PLAINTEXT://:9092,SSL://:9093",
            "PLAINTEXT://nohost",
        ] {
            let error = listener(refused).unwrap_err().to_string();
            assert!(error.starts_with("listeners:"), "{refused}: {error}");
        }
        assert!(listener("SSL://:9093")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }

    #[test]
    fn values_kafka_refuses_are_refused() {
        for (key, value) in [
            ("num.partitions", "0"),
            ("log.segment.bytes", "4096"),
            ("log.dirs", "/a,/b"),
        ] {
            let mut config = BrokerConfig::default();
            let error = config.apply(key, value).unwrap_err().to_string();
            assert!(error.starts_with(key), "{key}={value}: {error}");
        }
    }

    #[test]
    fn an_unknown_key_is_an_error_in_a_file_as_in_an_override() {
        let error = BrokerConfig::from_properties("log.retenton.ms=5\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("line 1: log.retenton.ms: not a setting sluice knows"),
            "{error}"
        );
        let mut config = BrokerConfig::default();
        assert!(matches!(
            config.apply("log.retenton.ms", "5"),
            Err(ConfigError::Unknown { .. })
        ));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let error = BrokerConfig::from_properties("num.partitions=many").unwrap_err();
        assert!(error.to_string().contains("num.partitions"));
        assert!(BrokerConfig::from_properties("just-a-word").is_err());
    }
}
