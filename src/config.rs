//! Broker settings, read from a Kafka-style `server.properties` file.
//!
//! Keys and defaults are Kafka's wherever Kafka has the setting; the few
//! sluice-only keys say so. Unknown keys are logged and ignored, as Kafka does,
//! so an existing `server.properties` can be pointed at sluice as it is.

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
    /// Per-log settings (`log.segment.bytes`, `log.retention.ms`, ...).
    pub log: LogConfig,
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
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("line {line}: expected key=value, got {text:?}")]
    Syntax { line: usize, text: String },
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

fn strip_scheme(listener: &str) -> String {
    let first = listener.split(',').next().unwrap_or(listener).trim();
    first
        .split_once("://")
        .map_or(first, |(_, address)| address)
        .to_string()
}

impl BrokerConfig {
    /// Applies one setting. Returns `Ok(false)` for a key sluice does not know.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let value = value.trim();
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "listeners" => self.listener = strip_scheme(value),
            "advertised.listeners" => self.advertised_listener = Some(strip_scheme(value)),
            "log.dirs" | "log.dir" => {
                self.log_dirs = PathBuf::from(value.split(',').next().unwrap_or(value).trim())
            }
            "num.partitions" => self.num_partitions = parse(key, value)?,
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
            "log.segment.bytes" => self.log.segment_bytes = parse(key, value)?,
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
        for (_, key, value) in entries {
            if !config.set(&key, &value)? {
                tracing::warn!(key, "ignoring a setting sluice does not know");
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_server_properties_file_parses() {
        let text = "# comment\nbroker.id=3\nlisteners=PLAINTEXT://127.0.0.1:19092\n\
                    log.dirs=/var/kafka,/var/kafka2\nlog.retention.ms=1000\nlog.retention.hours=1\n\
                    zookeeper.connect=localhost:2181\nlog.segment.bytes = 4096\n";
        let config = BrokerConfig::from_properties(text).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.listener, "127.0.0.1:19092");
        assert_eq!(config.log_dirs, PathBuf::from("/var/kafka"));
        assert_eq!(config.log.retention_ms, 1000, "ms wins over hours");
        assert_eq!(config.log.segment_bytes, 4096);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let error = BrokerConfig::from_properties("num.partitions=many").unwrap_err();
        assert!(error.to_string().contains("num.partitions"));
        assert!(BrokerConfig::from_properties("just-a-word").is_err());
    }
}
