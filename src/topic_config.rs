//! Topic configurations: the keys a topic may override, with Kafka's names,
//! types, validation, broker synonyms and defaults; the settings a
//! partition runs with once a topic's overrides are laid over the broker's;
//! and what DescribeConfigs reports for a topic or a broker.
//!
//! Overrides are kept as the strings a client sent, validated before they
//! are stored (in the metadata log in a cluster, in the data directory's
//! `topic_configs` file on a single node), so laying them over the broker's
//! settings never fails. Plain data: no I/O, clock or locking.
//!
//! Invariant: a key this module does not know, or a value it would refuse,
//! is never stored; a setting sluice cannot honour (broker-side
//! recompression, `unclean.leader.election.enable=true`) is refused, never
//! accepted and ignored.

use std::collections::BTreeMap;

use crate::config::{BrokerConfig, LOG_SEGMENT_BYTES_MIN};
use crate::log::{CleanupPolicy, LogConfig, TimestampType};

/// A topic's overrides: key to value, as the client set them.
pub type TopicConfigs = BTreeMap<String, String>;

/// Kafka's type of a configuration value, as DescribeConfigs v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a described value comes from: Kafka's `ConfigSource` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// A topic's own override.
    DynamicTopic = 1,
    /// Set in the broker's `server.properties` (or on its command line).
    StaticBroker = 4,
    /// Kafka's default.
    Default = 5,
}

/// A key a topic may override.
#[derive(Debug)]
pub struct TopicKey {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// The broker setting that gives the default (Kafka's synonym).
    pub broker_synonym: &'static str,
    pub documentation: &'static str,
}

/// Every key a topic may override, in name order.
pub const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        broker_synonym: "log.cleanup.policy",
        documentation: "delete: old segments are deleted by retention. compact: the log cleaner keeps the latest record per key. compact,delete: both.",
    },
    TopicKey {
        name: "compression.type",
        config_type: ConfigType::String,
        broker_synonym: "compression.type",
        documentation: "producer: batches are stored as producers compressed them. sluice does not recompress, so other codecs are refused.",
    },
    TopicKey {
        name: "delete.retention.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.cleaner.delete.retention.ms",
        documentation: "How long a compacted topic keeps tombstones (no effect under cleanup.policy=delete).",
    },
    TopicKey {
        name: "flush.messages",
        config_type: ConfigType::Long,
        broker_synonym: "log.flush.interval.messages",
        documentation: "fsync the log after this many unflushed records.",
    },
    TopicKey {
        name: "flush.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.flush.interval.ms",
        documentation: "fsync the log when its oldest unflushed write is this old.",
    },
    TopicKey {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "message.max.bytes",
        documentation: "The largest record batch the topic accepts.",
    },
    TopicKey {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        broker_synonym: "log.message.timestamp.type",
        documentation: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock.",
    },
    TopicKey {
        name: "min.cleanable.dirty.ratio",
        config_type: ConfigType::Double,
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        documentation: "The dirty share of a compacted log that makes it eligible for cleaning (no effect under cleanup.policy=delete).",
    },
    TopicKey {
        name: "min.compaction.lag.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        documentation: "How long a record stays uncompacted (no effect under cleanup.policy=delete).",
    },
    TopicKey {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        broker_synonym: "min.insync.replicas",
        documentation: "In-sync replicas an acks=all produce needs.",
    },
    TopicKey {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        broker_synonym: "log.retention.bytes",
        documentation: "Delete old segments while a partition is larger than this; -1 for no limit.",
    },
    TopicKey {
        name: "retention.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.retention.ms",
        documentation: "Delete segments whose newest record is older than this; -1 keeps them forever.",
    },
    TopicKey {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        broker_synonym: "log.segment.bytes",
        documentation: "Roll to a new segment when the active one would grow past this.",
    },
    TopicKey {
        name: "segment.ms",
        config_type: ConfigType::Long,
        broker_synonym: "log.roll.ms",
        documentation: "Roll a non-empty active segment older than this.",
    },
    TopicKey {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        broker_synonym: "unclean.leader.election.enable",
        documentation: "Always false: sluice never elects a replica outside the ISR.",
    },
];

/// The settings a topic's partitions run with.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: LogConfig,
    pub min_insync_replicas: usize,
}

/// Why an override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    /// INVALID_CONFIG, with Kafka's message.
    #[error("Unknown topic config name: {0}")]
    Unknown(String),
    /// INVALID_CONFIG.
    #[error("Invalid value {value} for configuration {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    /// INVALID_REQUEST: the request itself is malformed (a null value, a
    /// key twice, an operation a key's type does not allow).
    #[error("{0}")]
    Request(String),
}

impl TopicConfigError {
    /// The Kafka error code a client gets.
    pub fn code(&self) -> i16 {
        use kafka_protocol::error::ResponseError;
        match self {
            TopicConfigError::Unknown(_) | TopicConfigError::Invalid { .. } => {
                ResponseError::InvalidConfig.code()
            }
            TopicConfigError::Request(_) => ResponseError::InvalidRequest.code(),
        }
    }
}

pub fn key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|key| key.name == name)
}

fn invalid(key: &str, value: &str, reason: &str) -> TopicConfigError {
    TopicConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    key: &str,
    value: &str,
    at_least: T,
) -> Result<T, TopicConfigError> {
    let parsed: T = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number of the key's type"))?;
    if parsed < at_least {
        return Err(invalid(
            key,
            value,
            &format!("Value must be at least {at_least}"),
        ));
    }
    Ok(parsed)
}

/// Lays one override over `settings`, or says why it is refused.
fn set(settings: &mut TopicSettings, key: &str, value: &str) -> Result<(), TopicConfigError> {
    let log = &mut settings.log;
    match key {
        "retention.ms" => log.retention_ms = number(key, value, -1i64)?,
        "retention.bytes" => log.retention_bytes = number(key, value, i64::MIN)?,
        "segment.bytes" => {
            let min = i32::try_from(LOG_SEGMENT_BYTES_MIN).expect("a 1 MiB minimum fits");
            log.segment_bytes = number(key, value, min)? as u64;
        }
        "segment.ms" => log.roll_ms = number(key, value, 1i64)?,
        "cleanup.policy" => {
            log.cleanup_policy =
                CleanupPolicy::parse(value).map_err(|reason| invalid(key, value, &reason))?;
        }
        "compression.type" => match value.trim() {
            "producer" => {}
            "gzip" | "snappy" | "lz4" | "zstd" | "uncompressed" => {
                return Err(invalid(
                    key,
                    value,
                    "sluice stores batches as producers compressed them and does not \
                     recompress: only producer is supported",
                ))
            }
            _ => {
                return Err(invalid(
                    key,
                    value,
                    "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
                ))
            }
        },
        "delete.retention.ms" => log.delete_retention_ms = number(key, value, 0i64)?,
        "min.compaction.lag.ms" => log.min_compaction_lag_ms = number(key, value, 0i64)?,
        "min.cleanable.dirty.ratio" => {
            let ratio: f64 = number(key, value, 0.0f64)?;
            if ratio > 1.0 {
                return Err(invalid(key, value, "Value must be no more than 1"));
            }
            log.min_cleanable_dirty_ratio = ratio;
        }
        "max.message.bytes" => log.message_max_bytes = number(key, value, 0i32)? as usize,
        "message.timestamp.type" => {
            log.timestamp_type = match value.trim() {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => {
                    return Err(invalid(
                        key,
                        value,
                        "String must be one of: CreateTime, LogAppendTime",
                    ))
                }
            }
        }
        "min.insync.replicas" => settings.min_insync_replicas = number(key, value, 1i32)? as usize,
        "unclean.leader.election.enable" => {
            match value.trim().to_ascii_lowercase().as_str() {
                "false" => {}
                "true" => return Err(invalid(
                    key,
                    value,
                    "unclean leader election is not supported: it can lose acknowledged records",
                )),
                _ => {
                    return Err(invalid(
                        key,
                        value,
                        "Expected value to be either true or false",
                    ))
                }
            }
        }
        "flush.messages" => log.flush_messages = number(key, value, 1i64)? as u64,
        "flush.ms" => log.flush_ms = number(key, value, 0i64)?,
        _ => return Err(TopicConfigError::Unknown(key.to_string())),
    }
    Ok(())
}

/// Checks one override without applying it anywhere.
pub fn validate(key: &str, value: &str) -> Result<(), TopicConfigError> {
    let mut scratch = TopicSettings {
        log: LogConfig::default(),
        min_insync_replicas: 1,
    };
    set(&mut scratch, key, value)
}

/// Checks a whole set of overrides, the first refusal winning.
pub fn validate_all(configs: &TopicConfigs) -> Result<(), TopicConfigError> {
    configs
        .iter()
        .try_for_each(|(key, value)| validate(key, value))
}

/// The settings a topic runs with: the broker's, with the topic's overrides
/// laid over them. Overrides were validated when stored; one that is refused
/// now (stored by a newer sluice) is skipped with a warning.
pub fn settings(broker: &BrokerConfig, overrides: &TopicConfigs) -> TopicSettings {
    let mut settings = TopicSettings {
        log: broker.log.clone(),
        min_insync_replicas: broker.min_insync_replicas,
    };
    for (key, value) in overrides {
        if let Err(error) = set(&mut settings, key, value) {
            tracing::warn!(key, value, %error, "skipping a stored topic config");
        }
    }
    settings
}

/// Builds a topic's overrides from `(key, value)` pairs as CreateTopics and
/// AlterConfigs carry them: every key known, every value valid, no key
/// twice, no null value.
pub fn from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicConfigs, TopicConfigError> {
    let mut configs = TopicConfigs::new();
    for (key, value) in pairs {
        let Some(value) = value else {
            return Err(TopicConfigError::Request(format!(
                "Null value not supported for topic configs: {key}"
            )));
        };
        validate(key, value)?;
        if configs.insert(key.to_string(), value.to_string()).is_some() {
            return Err(TopicConfigError::Request(format!(
                "Error due to duplicate config keys: {key}"
            )));
        }
    }
    Ok(configs)
}

/// IncrementalAlterConfigs' operations (KIP-339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl AlterOp {
    pub fn from_code(code: i8) -> Option<AlterOp> {
        match code {
            0 => Some(AlterOp::Set),
            1 => Some(AlterOp::Delete),
            2 => Some(AlterOp::Append),
            3 => Some(AlterOp::Subtract),
            _ => None,
        }
    }
}

/// Applies IncrementalAlterConfigs' operations to `current`, giving the
/// new overrides, or why they are refused (then nothing changes).
/// APPEND and SUBTRACT work on list keys, starting from the default when
/// the topic has no override; `defaults` gives that value.
pub fn incremental<'a>(
    current: &TopicConfigs,
    operations: impl IntoIterator<Item = (&'a str, AlterOp, Option<&'a str>)>,
    defaults: impl Fn(&str) -> String,
) -> Result<TopicConfigs, TopicConfigError> {
    let mut next = current.clone();
    let mut seen = std::collections::BTreeSet::new();
    for (name, operation, value) in operations {
        if !seen.insert(name) {
            return Err(TopicConfigError::Request(format!(
                "Error due to duplicate config keys: {name}"
            )));
        }
        let topic_key = key(name).ok_or_else(|| TopicConfigError::Unknown(name.to_string()))?;
        let needs_value = || {
            value.ok_or_else(|| {
                TopicConfigError::Request(format!("Null value not supported for : {name}"))
            })
        };
        match operation {
            AlterOp::Set => {
                next.insert(name.to_string(), needs_value()?.to_string());
            }
            AlterOp::Delete => {
                next.remove(name);
            }
            AlterOp::Append | AlterOp::Subtract => {
                if topic_key.config_type != ConfigType::List {
                    return Err(TopicConfigError::Request(format!(
                        "Config value append/subtract is not allowed for config key: {name}"
                    )));
                }
                let base = next.get(name).cloned().unwrap_or_else(|| defaults(name));
                let mut items: Vec<String> = base
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect();
                for item in needs_value()?.split(',').map(str::trim) {
                    if operation == AlterOp::Append {
                        if !items.iter().any(|existing| existing == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|existing| existing != item);
                    }
                }
                next.insert(name.to_string(), items.join(","));
            }
        }
    }
    validate_all(&next)?;
    Ok(next)
}

/// One configuration as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    /// Where the value could come from, most specific first (Kafka's
    /// synonyms): the topic's override, the broker's setting, the default.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// The value a topic gets for `key` without an override: the broker's.
pub fn broker_default(broker: &BrokerConfig, key: &str) -> String {
    let log = &broker.log;
    match key {
        "retention.ms" => log.retention_ms.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.roll_ms.to_string(),
        "cleanup.policy" => log.cleanup_policy.name().to_string(),
        "compression.type" => "producer".to_string(),
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        "min.compaction.lag.ms" => log.min_compaction_lag_ms.to_string(),
        "min.cleanable.dirty.ratio" => log.min_cleanable_dirty_ratio.to_string(),
        "max.message.bytes" => log.message_max_bytes.to_string(),
        "message.timestamp.type" => match log.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
        .to_string(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "unclean.leader.election.enable" => "false".to_string(),
        // Kafka's "never" is Long.MAX_VALUE; sluice's count is unsigned.
        "flush.messages" => log.flush_messages.min(i64::MAX as u64).to_string(),
        "flush.ms" => log.flush_ms.to_string(),
        _ => String::new(),
    }
}

/// What DescribeConfigs reports for a topic with `overrides`: every key in
/// [`TOPIC_KEYS`] (or only those in `only`), with its value and source.
pub fn describe_topic(
    broker: &BrokerConfig,
    overrides: &TopicConfigs,
    only: Option<&[String]>,
) -> Vec<Described> {
    let kafka_defaults = BrokerConfig::default();
    TOPIC_KEYS
        .iter()
        .filter(|key| only.is_none_or(|only| only.iter().any(|name| name == key.name)))
        .map(|key| {
            let broker_value = broker_default(broker, key.name);
            let default_value = broker_default(&kafka_defaults, key.name);
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(key.name) {
                synonyms.push((
                    key.name.to_string(),
                    value.clone(),
                    ConfigSource::DynamicTopic,
                ));
            }
            if broker_value != default_value {
                synonyms.push((
                    key.broker_synonym.to_string(),
                    broker_value.clone(),
                    ConfigSource::StaticBroker,
                ));
            }
            synonyms.push((
                key.broker_synonym.to_string(),
                default_value,
                ConfigSource::Default,
            ));
            let (_, value, source) = synonyms[0].clone();
            Described {
                name: key.name.to_string(),
                value,
                source,
                read_only: false,
                config_type: key.config_type,
                documentation: key.documentation,
                synonyms,
            }
        })
        .collect()
}

/// What DescribeConfigs reports for a broker: its settings, read-only
/// (sluice changes none of them at run time), each marked as set in
/// `server.properties` where it differs from Kafka's default.
pub fn describe_broker(broker: &BrokerConfig, only: Option<&[String]>) -> Vec<Described> {
    let defaults: BTreeMap<&str, String> =
        BrokerConfig::default().described().into_iter().collect();
    broker
        .described()
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|only| only.iter().any(|wanted| wanted == name)))
        .map(|(name, value)| {
            let source = if defaults.get(name) == Some(&value) {
                ConfigSource::Default
            } else {
                ConfigSource::StaticBroker
            };
            Described {
                name: name.to_string(),
                value: value.clone(),
                source,
                read_only: true,
                config_type: ConfigType::String,
                documentation: "",
                synonyms: vec![(name.to_string(), value, source)],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&'static str, &'static str)]) -> Result<TopicConfigs, TopicConfigError> {
        from_pairs(items.iter().map(|(k, v)| (*k, Some(*v))))
    }

    #[test]
    fn overrides_lay_over_the_broker_settings() {
        let mut broker = BrokerConfig::default();
        broker.log.retention_ms = 1000;
        broker.min_insync_replicas = 2;
        let overrides = pairs(&[
            ("retention.ms", "60000"),
            ("segment.bytes", "2097152"),
            ("max.message.bytes", "5000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("flush.messages", "1"),
        ])
        .expect("valid");
        let settings = settings(&broker, &overrides);
        assert_eq!(settings.log.retention_ms, 60_000);
        assert_eq!(settings.log.segment_bytes, 2_097_152);
        assert_eq!(settings.log.message_max_bytes, 5000);
        assert_eq!(settings.log.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(settings.log.flush_messages, 1);
        // Not overridden: the broker's.
        assert_eq!(settings.min_insync_replicas, 2);
        assert_eq!(settings.log.retention_bytes, -1);
    }

    #[test]
    fn unknown_keys_bad_values_and_unsupported_settings_are_refused() {
        let refused = |key: &'static str, value: &'static str| {
            pairs(&[(key, value)]).expect_err(&format!("{key}={value}"))
        };
        assert_eq!(
            refused("retention.mss", "1"),
            TopicConfigError::Unknown("retention.mss".into())
        );
        for (key, value) in [
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("segment.bytes", "1000"),
            ("segment.bytes", "4294967296"),
            ("segment.ms", "0"),
            ("cleanup.policy", "archive"),
            ("cleanup.policy", "compact,archive"),
            ("compression.type", "lz4"),
            ("compression.type", "brotli"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.insync.replicas", "0"),
            ("message.timestamp.type", "BrokerTime"),
            ("unclean.leader.election.enable", "true"),
            ("unclean.leader.election.enable", "maybe"),
            ("flush.messages", "0"),
            ("delete.retention.ms", "-1"),
        ] {
            let error = refused(key, value);
            assert!(
                matches!(error, TopicConfigError::Invalid { .. }),
                "{key}={value}: {error:?}"
            );
            assert_eq!(error.code(), 40, "{key}={value} is INVALID_CONFIG");
        }
        let twice = from_pairs([("retention.ms", Some("1")), ("retention.ms", Some("2"))]);
        assert!(matches!(twice, Err(TopicConfigError::Request(_))));
        let null = from_pairs([("retention.ms", None)]);
        assert_eq!(null.expect_err("null").code(), 42);
        // Everything Kafka accepts and sluice honours.
        pairs(&[("cleanup.policy", "compact")]).expect("valid");
        pairs(&[("cleanup.policy", "compact,delete")]).expect("valid");
        pairs(&[
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("min.cleanable.dirty.ratio", "0.9"),
            ("unclean.leader.election.enable", "false"),
            ("delete.retention.ms", "0"),
            ("min.compaction.lag.ms", "10"),
            ("flush.ms", "0"),
        ])
        .expect("valid");
    }

    #[test]
    fn incremental_operations_set_delete_append_and_subtract() {
        let current = pairs(&[("retention.ms", "1000"), ("segment.ms", "5000")]).expect("valid");
        let defaults = |key: &str| broker_default(&BrokerConfig::default(), key);
        let next = incremental(
            &current,
            [
                ("retention.ms", AlterOp::Set, Some("2000")),
                ("segment.ms", AlterOp::Delete, None),
                ("cleanup.policy", AlterOp::Append, Some("delete")),
            ],
            defaults,
        )
        .expect("valid");
        assert_eq!(
            next,
            pairs(&[("retention.ms", "2000"), ("cleanup.policy", "delete")]).expect("valid")
        );
        // APPEND on a scalar key is a malformed request; nothing changes.
        let error = incremental(
            &current,
            [("retention.ms", AlterOp::Append, Some("1"))],
            defaults,
        )
        .expect_err("scalar append");
        assert_eq!(error.code(), 42);
        // The result is validated as a whole: an unknown policy cannot be
        // appended, compact can.
        let error = incremental(
            &next,
            [("cleanup.policy", AlterOp::Append, Some("archive"))],
            defaults,
        )
        .expect_err("archive");
        assert_eq!(error.code(), 40);
        let both = incremental(
            &next,
            [("cleanup.policy", AlterOp::Append, Some("compact"))],
            defaults,
        )
        .expect("compact appended");
        let settings = settings(&BrokerConfig::default(), &both);
        assert_eq!(settings.log.cleanup_policy.name(), "compact,delete");
        let emptied = incremental(
            &next,
            [("cleanup.policy", AlterOp::Subtract, Some("delete"))],
            defaults,
        );
        assert!(emptied.is_err(), "an empty cleanup.policy is refused");
    }

    #[test]
    fn describing_a_topic_names_each_values_source() {
        let mut broker = BrokerConfig::default();
        broker.log.retention_bytes = 1 << 30;
        let overrides = pairs(&[("retention.ms", "60000")]).expect("valid");
        let described = describe_topic(&broker, &overrides, None);
        assert_eq!(described.len(), TOPIC_KEYS.len());
        let find = |name: &str| {
            described
                .iter()
                .find(|d| d.name == name)
                .unwrap_or_else(|| panic!("{name} described"))
        };
        let retention = find("retention.ms");
        assert_eq!(
            (retention.value.as_str(), retention.source),
            ("60000", ConfigSource::DynamicTopic)
        );
        assert_eq!(
            retention.synonyms.len(),
            2,
            "the override, then Kafka's default"
        );
        let bytes = find("retention.bytes");
        assert_eq!(
            (bytes.value.as_str(), bytes.source),
            ("1073741824", ConfigSource::StaticBroker)
        );
        assert_eq!(bytes.synonyms[0].0, "log.retention.bytes");
        let policy = find("cleanup.policy");
        assert_eq!(
            (policy.value.as_str(), policy.source),
            ("delete", ConfigSource::Default)
        );
        let only = describe_topic(&broker, &overrides, Some(&["segment.ms".to_string()]));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].value, "604800000");

        let described = describe_broker(&broker, None);
        let bytes = described
            .iter()
            .find(|d| d.name == "log.retention.bytes")
            .expect("described");
        assert_eq!(
            (bytes.source, bytes.read_only),
            (ConfigSource::StaticBroker, true)
        );
        let node = described
            .iter()
            .find(|d| d.name == "node.id")
            .expect("node.id");
        assert_eq!(
            (node.value.as_str(), node.source),
            ("0", ConfigSource::Default)
        );
    }
}
