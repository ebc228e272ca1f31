//! What the `sluice` command-line tools do, as testable async functions.
//!
//! Each mirrors one of Kafka's shell tools (`kafka-topics.sh`,
//! `kafka-console-producer.sh`, `kafka-console-consumer.sh`,
//! `kafka-consumer-groups.sh`) closely enough that a Kafka user recognises the
//! output. They take the bootstrap address and the network seam, and write to
//! a caller-supplied writer so tests can read what a user would see.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::client::{
    Acks, Admin, AutoOffsetReset, ConfigResource, ConnectionConfig, Consumer, ConsumerConfig,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use crate::clock::SharedClock;
use crate::net::Connector;

/// Where the tools write: stdout in the binary, a buffer in tests.
pub type Output<'a> = &'a mut (dyn Write + Send);

/// Lines read by `produce_lines` before it waits for their acknowledgements.
/// Bounds the deliveries held in memory; the producer's own buffer.memory
/// bounds the bytes.
const PRODUCE_LINES_IN_FLIGHT_MAX: usize = 10_000;

/// Longest accepted input line. Kafka's default max.request.size is 1 MiB,
/// so a longer line could not be sent anyway.
const LINE_BYTES_MAX: usize = 1_048_576;

fn admin(bootstrap: &str, connector: Arc<dyn Connector>) -> Admin {
    Admin::new(bootstrap, connector, ConnectionConfig::default())
}

/// How `topics --create` places a topic's replicas.
pub enum TopicPlacement {
    /// `--partitions` and `--replication-factor`: the controller spreads them.
    Spread {
        partitions: i32,
        replication_factor: i16,
    },
    /// `--replica-assignment`: `(partition, replica broker ids)`.
    Assigned(Vec<(i32, Vec<i32>)>),
}

/// kafka-topics' `--replica-assignment`: partitions separated by commas, a
/// partition's replica broker ids by colons, e.g. `1:2,2:0`.
pub fn parse_replica_assignment(text: &str) -> anyhow::Result<Vec<(i32, Vec<i32>)>> {
    text.split(',')
        .enumerate()
        .map(|(partition, replicas)| {
            let ids = replicas
                .split(':')
                .map(|id| {
                    id.trim().parse::<i32>().with_context(|| {
                        format!("--replica-assignment: {id:?} in {text:?} is not a broker id")
                    })
                })
                .collect::<anyhow::Result<Vec<i32>>>()?;
            Ok((i32::try_from(partition)?, ids))
        })
        .collect()
}

/// `kafka-topics.sh --create`.
pub async fn topics_create(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    name: &str,
    placement: TopicPlacement,
    configs: &[(String, String)],
    if_not_exists: bool,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let created = match placement {
        TopicPlacement::Spread {
            partitions,
            replication_factor,
        } => {
            admin
                .create_topic(name, partitions, replication_factor, configs)
                .await
        }
        TopicPlacement::Assigned(assignment) => {
            admin
                .create_topic_with_assignment(name, &assignment, configs)
                .await
        }
    };
    // `--if-not-exists`: an existing topic is no error (and nothing is
    // printed, as kafka-topics does).
    let exists = kafka_protocol::error::ResponseError::TopicAlreadyExists.code();
    if if_not_exists && matches!(&created, Err(error) if error.code() == Some(exists)) {
        return Ok(());
    }
    created.with_context(|| format!("creating topic {name}"))?;
    writeln!(out, "Created topic {name}.")?;
    Ok(())
}

/// Kafka's ConfigSource for a topic's own override.
const CONFIG_SOURCE_TOPIC: i8 = 1;

/// Kafka's ConfigSource names, as kafka-configs prints them.
fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

/// kafka-configs' `--add-config`: `k1=v1,k2=v2`, a value holding commas
/// written in square brackets (`cleanup.policy=[compact,delete]`).
pub fn parse_add_config(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut push = |entry: &str| -> anyhow::Result<()> {
        if entry.trim().is_empty() {
            return Ok(());
        }
        let (key, value) = entry
            .split_once('=')
            .with_context(|| format!("--add-config: {entry:?} is not key=value"))?;
        let value = value.trim();
        let value = value
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(value);
        entries.push((key.trim().to_string(), value.to_string()));
        Ok(())
    };
    for ch in text.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                push(&current)?;
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    push(&current)?;
    Ok(entries)
}

/// What `configs` acts on: kafka-configs' `--entity-type` and
/// `--entity-name`.
pub fn config_resource(entity_type: &str, entity_name: &str) -> anyhow::Result<ConfigResource> {
    match entity_type {
        "topics" => Ok(ConfigResource::Topic(entity_name.to_string())),
        "brokers" => Ok(ConfigResource::Broker(entity_name.parse().with_context(
            || format!("--entity-name {entity_name:?} is not a broker id"),
        )?)),
        other => bail!("--entity-type {other:?}: sluice serves topics and brokers"),
    }
}

/// `kafka-configs.sh --describe`: a resource's overrides (all its configs
/// with `all`), one per line with their synonyms' sources.
pub async fn configs_describe(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    resource: ConfigResource,
    all: bool,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let entries = admin(bootstrap, connector)
        .describe_configs(resource.clone())
        .await
        .with_context(|| format!("describing {resource:?}"))?;
    let (kind, name) = match &resource {
        ConfigResource::Topic(name) => ("topic", name.clone()),
        ConfigResource::Broker(id) => ("broker", id.to_string()),
    };
    let dynamic = |source: i8| (1..=3).contains(&source);
    writeln!(
        out,
        "{} configs for {kind} {name} are:",
        if all { "All" } else { "Dynamic" }
    )?;
    for entry in entries.iter().filter(|e| all || dynamic(e.source)) {
        writeln!(
            out,
            "  {}={} sensitive=false synonyms={{{}:{}={}}}",
            entry.name,
            entry.value.as_deref().unwrap_or(""),
            config_source_name(entry.source),
            entry.name,
            entry.value.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `kafka-configs.sh --alter --add-config ... --delete-config ...`.
pub async fn configs_alter(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    resource: ConfigResource,
    add: &[(String, String)],
    delete: &[String],
    out: Output<'_>,
) -> anyhow::Result<()> {
    if add.is_empty() && delete.is_empty() {
        bail!("--alter needs --add-config or --delete-config");
    }
    let changes: Vec<(String, Option<String>)> = add
        .iter()
        .map(|(key, value)| (key.clone(), Some(value.clone())))
        .chain(delete.iter().map(|key| (key.clone(), None)))
        .collect();
    admin(bootstrap, connector)
        .alter_configs(resource.clone(), &changes)
        .await
        .with_context(|| format!("altering {resource:?}"))?;
    let name = match &resource {
        ConfigResource::Topic(name) => format!("topic {name}"),
        ConfigResource::Broker(id) => format!("broker {id}"),
    };
    writeln!(out, "Completed updating config for {name}.")?;
    Ok(())
}

/// `kafka-topics.sh --alter --partitions N`: grows a topic. Like Kafka's
/// tool it warns that keys move to other partitions.
pub async fn topics_alter(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    name: &str,
    partitions: i32,
    out: Output<'_>,
) -> anyhow::Result<()> {
    admin(bootstrap, connector)
        .create_partitions(name, partitions)
        .await
        .with_context(|| format!("adding partitions to {name}"))?;
    writeln!(
        out,
        "WARNING: If partitions are increased for a topic that has a key, the partition logic \
         or ordering of the messages will be affected"
    )?;
    writeln!(out, "Adding partitions succeeded!")?;
    Ok(())
}

/// `kafka-delete-records.sh`: moves one partition's log start to
/// `offset` (-1: its high watermark).
pub async fn delete_records(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    tp: &TopicPartition,
    offset: i64,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let low_watermark = admin(bootstrap, connector)
        .delete_records(tp, offset)
        .await
        .with_context(|| format!("deleting records of {tp}"))?;
    writeln!(out, "Records delete operation completed:")?;
    writeln!(out, "partition: {tp}\tlow_watermark: {low_watermark}")?;
    Ok(())
}

/// `kafka-get-offsets.sh --topic T [--time -1|-2|ms]`: `topic:partition:offset`
/// per partition, the latest offsets by default.
pub async fn get_offsets(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    topic: &str,
    partitions: Option<Vec<i32>>,
    time: i64,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let described = admin.describe_topics(Some(&[topic.to_string()])).await?;
    let info = described
        .first()
        .filter(|info| info.error_code == 0)
        .with_context(|| format!("topic {topic} does not exist"))?;
    let wanted: Vec<TopicPartition> = info
        .partitions
        .iter()
        .map(|p| p.partition)
        .filter(|p| partitions.as_ref().is_none_or(|only| only.contains(p)))
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let found = admin
        .cluster()
        .list_offsets(&wanted, time, Duration::from_secs(30))
        .await?;
    for (tp, (offset, _)) in found {
        writeln!(out, "{}:{}:{offset}", tp.topic, tp.partition)?;
    }
    Ok(())
}

/// `kafka-leader-election.sh --election-type PREFERRED|UNCLEAN`, for
/// `partitions` or (None) every partition. Fails if any election failed
/// for another reason than not being needed.
pub async fn leader_election(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    unclean: bool,
    partitions: Option<Vec<TopicPartition>>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    use kafka_protocol::error::ResponseError;
    let results = admin(bootstrap, connector)
        .elect_leaders(unclean, partitions.as_deref())
        .await
        .context("electing leaders")?;
    let kind = if unclean { "UNCLEAN" } else { "PREFERRED" };
    let list = |code: i16| {
        results
            .iter()
            .filter(|(_, c, _)| *c == code)
            .map(|(tp, _, _)| tp.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let elected = list(0);
    if !elected.is_empty() {
        writeln!(
            out,
            "Successfully completed leader election ({kind}) for partitions {elected}"
        )?;
    }
    let not_needed = list(ResponseError::ElectionNotNeeded.code());
    if !not_needed.is_empty() {
        writeln!(
            out,
            "Valid replica already elected for partitions {not_needed}"
        )?;
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, code, _)| *code != 0 && *code != ResponseError::ElectionNotNeeded.code())
        .map(|(tp, code, message)| {
            format!("{tp}: code {code} {}", message.as_deref().unwrap_or(""))
        })
        .collect();
    if !failed.is_empty() {
        bail!("leader election failed for {}", failed.join("; "));
    }
    Ok(())
}

/// `kafka-topics.sh --list`: one name per line, sorted.
pub async fn topics_list(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    for name in admin(bootstrap, connector).list_topics().await? {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

/// `kafka-topics.sh --describe [--topic name]`.
pub async fn topics_describe(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    name: Option<&str>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let names = name.map(|n| vec![n.to_string()]);
    let admin = admin(bootstrap, connector);
    let topics = admin.describe_topics(names.as_deref()).await?;
    for topic in topics.iter().filter(|t| !t.is_internal || name.is_some()) {
        if topic.error_code != 0 {
            bail!(
                "topic {}: {}",
                topic.name,
                crate::client::ClientError::check(topic.error_code)
                    .err()
                    .map_or_else(String::new, |e| e.to_string())
            );
        }
        let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
        // The topic's own overrides, as kafka-topics prints them.
        let overrides: Vec<String> = admin
            .describe_configs(ConfigResource::Topic(topic.name.clone()))
            .await
            .with_context(|| format!("describing the configs of {}", topic.name))?
            .into_iter()
            .filter(|entry| entry.source == CONFIG_SOURCE_TOPIC)
            .map(|entry| format!("{}={}", entry.name, entry.value.unwrap_or_default()))
            .collect();
        writeln!(
            out,
            "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
            topic.name,
            topic.partitions.len(),
            replication_factor,
            overrides.join(",")
        )?;
        for p in &topic.partitions {
            writeln!(
                out,
                "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                topic.name,
                p.partition,
                p.leader,
                join_ids(&p.replicas),
                join_ids(&p.isr)
            )?;
        }
    }
    Ok(())
}

/// `kafka-metadata-quorum.sh describe --status`: the metadata quorum as its
/// leader sees it.
pub async fn metadata_quorum_status(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let response = admin
        .describe_quorum()
        .await
        .context("describing the metadata quorum")?;
    let Some(partition) = response.topics.first().and_then(|t| t.partitions.first()) else {
        bail!("DescribeQuorum answered without the metadata partition");
    };
    let leader_end = partition
        .current_voters
        .iter()
        .find(|v| v.replica_id == partition.leader_id)
        .map_or(partition.high_watermark, |v| v.log_end_offset);
    let leader_fetch_ms = partition
        .current_voters
        .iter()
        .map(|v| v.last_fetch_timestamp)
        .max()
        .unwrap_or(-1);
    let max_lag = partition
        .current_voters
        .iter()
        .map(|v| (leader_end - v.log_end_offset).max(0))
        .max()
        .unwrap_or(0);
    let max_lag_ms = partition
        .current_voters
        .iter()
        .filter(|v| v.last_fetch_timestamp >= 0)
        .map(|v| (leader_fetch_ms - v.last_fetch_timestamp).max(0))
        .max()
        .unwrap_or(0);
    let voters: Vec<i32> = partition
        .current_voters
        .iter()
        .map(|v| v.replica_id.0)
        .collect();
    let observers: Vec<i32> = partition.observers.iter().map(|v| v.replica_id.0).collect();
    writeln!(out, "ClusterId:              sluice")?;
    writeln!(out, "LeaderId:               {}", partition.leader_id.0)?;
    writeln!(out, "LeaderEpoch:            {}", partition.leader_epoch)?;
    writeln!(out, "HighWatermark:          {}", partition.high_watermark)?;
    writeln!(out, "MaxFollowerLag:         {max_lag}")?;
    writeln!(out, "MaxFollowerLagTimeMs:   {max_lag_ms}")?;
    writeln!(out, "CurrentVoters:          [{}]", join_ids(&voters))?;
    writeln!(out, "CurrentObservers:       [{}]", join_ids(&observers))?;
    Ok(())
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `kafka-topics.sh --delete`.
pub async fn topics_delete(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    name: &str,
    out: Output<'_>,
) -> anyhow::Result<()> {
    admin(bootstrap, connector)
        .delete_topic(name)
        .await
        .with_context(|| format!("deleting topic {name}"))?;
    writeln!(out, "Deleted topic {name}.")?;
    Ok(())
}

/// Options of [`produce_lines`], as `kafka-console-producer.sh` flags.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    /// `--property parse.key=true`: split each line into key and value.
    pub parse_key: bool,
    /// `--property key.separator=...` (Kafka's default is a tab).
    pub key_separator: String,
    /// `--producer-property acks=...`; idempotence is on only with acks=all.
    pub acks: Acks,
    /// `--timeout-ms`: how long to wait for the cluster and the topic, and
    /// for each record's delivery (Kafka's `max.block.ms` and
    /// `delivery.timeout.ms`, 60 s by default).
    pub timeout: Duration,
    /// `--producer-property key=value`: producer settings by Kafka key,
    /// applied last.
    pub producer_properties: Vec<(String, String)>,
}

/// Fails within `timeout`, with a message that says what is missing, when
/// no broker answers or the topic does not exist (and is not auto-created).
async fn await_topic(
    cluster: &crate::client::Cluster,
    bootstrap: &str,
    topic: &str,
    allow_auto_create: bool,
    timeout: Duration,
) -> anyhow::Result<crate::client::TopicInfo> {
    use crate::client::ClientError;
    let waited = timeout.as_millis();
    match cluster.topic_info(topic, allow_auto_create, timeout).await {
        Ok(info) => Ok(info),
        Err(ClientError::Network { message, .. }) => {
            bail!("no broker at {bootstrap} answered within {waited} ms: {message}")
        }
        Err(ClientError::Timeout { .. }) => {
            bail!("no broker at {bootstrap} answered within {waited} ms")
        }
        Err(ClientError::Broker(error)) => bail!("topic {topic}: {error:?}"),
        Err(error) => {
            // Reachable (or not) but no usable topic: say which.
            let reachable = cluster.refresh(None, false).await.is_ok();
            if reachable {
                bail!(
                    "topic {topic} does not exist (or has no leader) after {waited} ms; create it \
                     with `sluice topics --create --topic {topic}`"
                )
            }
            bail!("no broker at {bootstrap} answered within {waited} ms ({error})")
        }
    }
}

/// `kafka-console-producer.sh`: each line of `reader` becomes a record; with
/// `parse_key`, the text before the first `key_separator` is the key. Returns
/// the number of records acknowledged; fails on the first failed record.
pub async fn produce_lines<R: AsyncBufRead + Unpin>(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    clock: SharedClock,
    options: &ProduceOptions,
    reader: R,
) -> anyhow::Result<usize> {
    let ProduceOptions {
        topic,
        parse_key,
        key_separator,
        acks,
        timeout,
        producer_properties,
    } = options;
    let (topic, parse_key, key_separator, acks) =
        (topic.as_str(), *parse_key, key_separator.as_str(), *acks);
    if parse_key && key_separator.is_empty() {
        bail!("key separator must not be empty");
    }
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let defaults = ProducerConfig::default();
    let mut config = ProducerConfig {
        bootstrap_servers: bootstrap.to_string(),
        client_id: "console-producer".to_string(),
        acks,
        enable_idempotence: acks == Acks::All,
        max_block_ms: timeout_ms,
        delivery_timeout_ms: timeout_ms.max(defaults.request_timeout_ms + defaults.linger_ms),
        ..defaults
    };
    for (key, value) in producer_properties {
        if !config.set(key, value)? {
            bail!("--producer-property {key}: not a producer setting sluice knows");
        }
    }
    let producer = Producer::new(config, connector, clock)?;
    if let Err(error) = await_topic(producer.cluster(), bootstrap, topic, true, *timeout).await {
        producer.close().await;
        return Err(error);
    }
    let mut reader = reader;
    let mut pending = Vec::new();
    let mut acknowledged = 0usize;
    let result: anyhow::Result<()> = async {
        while let Some(line) = read_line_bounded(&mut reader).await? {
            let (key, value) = if parse_key {
                match line.split_once(key_separator) {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                    None => bail!("no key separator {key_separator:?} in line {line:?}"),
                }
            } else {
                (None, line)
            };
            let record = ProducerRecord::new(topic, key, Some(Bytes::from(value)));
            pending.push(producer.enqueue(record).await?);
            if pending.len() >= PRODUCE_LINES_IN_FLIGHT_MAX {
                for delivery in pending.drain(..) {
                    delivery.await?;
                    acknowledged += 1;
                }
            }
        }
        for delivery in pending.drain(..) {
            delivery.await?;
            acknowledged += 1;
        }
        Ok(())
    }
    .await;
    producer.close().await;
    result.map(|()| acknowledged)
}

/// The next line without its `\n` (or `\r\n`), reading at most
/// `LINE_BYTES_MAX` bytes of it so a newline-free input cannot grow memory.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> anyhow::Result<Option<String>> {
    let mut line = Vec::new();
    let limit = u64::try_from(LINE_BYTES_MAX + 2).unwrap_or(u64::MAX);
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > LINE_BYTES_MAX {
        bail!("a line exceeds {LINE_BYTES_MAX} bytes");
    }
    Ok(Some(String::from_utf8(line).context("input is not UTF-8")?))
}

/// Options of [`consume`], as `kafka-console-consumer.sh` flags.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub topic: String,
    /// `--from-beginning`: start at the log start when there is no
    /// committed offset (else at the end).
    pub from_beginning: bool,
    /// `--group`: join this group (subscribe, commit). Without it the
    /// consumer reads every partition by itself and commits nothing.
    pub group: Option<String>,
    /// `--max-messages`.
    pub max_messages: Option<usize>,
    /// `--timeout-ms`: stop after this long without a record.
    pub timeout: Option<Duration>,
    /// `--partition`: read this partition alone (no group).
    pub partition: Option<i32>,
    /// `--offset`: where `--partition` starts (else where
    /// `--from-beginning` says).
    pub offset: Option<StartOffset>,
    /// `--property print.*` and `key.separator`: what each line shows.
    pub format: RecordFormat,
    /// `--consumer-property key=value`: consumer settings by Kafka key.
    pub consumer_properties: Vec<(String, String)>,
}

/// kafka-console-consumer's `--offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    At(i64),
}

impl StartOffset {
    pub fn parse(text: &str) -> anyhow::Result<StartOffset> {
        match text {
            "earliest" => Ok(StartOffset::Earliest),
            "latest" => Ok(StartOffset::Latest),
            number => match number.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(StartOffset::At(offset)),
                _ => bail!("--offset {text:?}: a non-negative offset, earliest or latest"),
            },
        }
    }
}

/// What kafka-console-consumer prints per record (its
/// `DefaultMessageFormatter` properties): the timestamp, partition, offset
/// and key when asked, each followed by `key.separator`, then the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFormat {
    pub print_timestamp: bool,
    pub print_partition: bool,
    pub print_offset: bool,
    pub print_key: bool,
    pub print_value: bool,
    pub key_separator: String,
}

impl Default for RecordFormat {
    fn default() -> Self {
        Self {
            print_timestamp: false,
            print_partition: false,
            print_offset: false,
            print_key: false,
            print_value: true,
            key_separator: "\t".to_string(),
        }
    }
}

impl RecordFormat {
    /// Applies one `--property key=value`; an unknown key is an error.
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let flag = || -> anyhow::Result<bool> {
            value
                .trim()
                .parse()
                .with_context(|| format!("--property {key}={value}: true or false"))
        };
        match key {
            "print.timestamp" => self.print_timestamp = flag()?,
            "print.partition" => self.print_partition = flag()?,
            "print.offset" => self.print_offset = flag()?,
            "print.key" => self.print_key = flag()?,
            "print.value" => self.print_value = flag()?,
            "key.separator" => self.key_separator = value.to_string(),
            other => bail!(
                "--property {other}: sluice knows print.timestamp, print.partition, \
                 print.offset, print.key, print.value and key.separator"
            ),
        }
        Ok(())
    }

    fn line(&self, record: &crate::client::ConsumerRecord) -> String {
        let mut fields = Vec::new();
        if self.print_timestamp {
            fields.push(if record.timestamp >= 0 {
                format!("CreateTime:{}", record.timestamp)
            } else {
                "NO_TIMESTAMP".to_string()
            });
        }
        if self.print_partition {
            fields.push(format!("Partition:{}", record.partition));
        }
        if self.print_offset {
            fields.push(format!("Offset:{}", record.offset));
        }
        if self.print_key {
            fields.push(display_bytes(record.key.as_deref()));
        }
        if self.print_value {
            fields.push(display_bytes(record.value.as_deref()));
        }
        fields.join(&self.key_separator)
    }
}

/// Splits `key=value` (`--property`, `--consumer-property`,
/// `--producer-property`).
pub fn parse_property(text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("{text:?} is not key=value"))?;
    Ok((key.trim().to_string(), value.to_string()))
}

/// How long `consume` waits for the cluster and the topic when no
/// `--timeout-ms` is given: Kafka's `default.api.timeout.ms`.
const CONSUME_STARTUP_WAIT: Duration = Duration::from_millis(60_000);

/// How long one poll waits; also how often `timeout` is checked.
const CONSUME_POLL: Duration = Duration::from_millis(500);

/// `kafka-console-consumer.sh`: prints each value (and key) on a line,
/// until `--max-messages`, `--timeout-ms` or `stop` (Ctrl-C) ends it; then it
/// commits what it printed (in a group) and leaves. Returns the number of
/// records printed.
pub async fn consume(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    clock: SharedClock,
    options: &ConsumeOptions,
    out: Output<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<usize> {
    if options.partition.is_some() && options.group.is_some() {
        bail!("--partition reads one partition by itself: leave out --group");
    }
    if options.offset.is_some() && options.partition.is_none() {
        bail!("--offset needs --partition");
    }
    let mut config = ConsumerConfig {
        bootstrap_servers: bootstrap.to_string(),
        client_id: "console-consumer".to_string(),
        group_id: options.group.clone(),
        auto_offset_reset: if options.from_beginning {
            AutoOffsetReset::Earliest
        } else {
            AutoOffsetReset::Latest
        },
        enable_auto_commit: options.group.is_some(),
        ..ConsumerConfig::default()
    };
    for (key, value) in &options.consumer_properties {
        if !config.set(key, value)? {
            bail!("--consumer-property {key}: not a consumer setting sluice knows");
        }
    }
    let mut consumer = Consumer::new(config, connector, clock)?;
    let startup = options.timeout.unwrap_or(CONSUME_STARTUP_WAIT);
    let info = await_topic(
        consumer.cluster(),
        bootstrap,
        &options.topic,
        false,
        startup,
    )
    .await?;
    if let Some(partition) = options.partition {
        if !info.partitions.iter().any(|p| p.partition == partition) {
            bail!("topic {} has no partition {partition}", options.topic);
        }
        let tp = TopicPartition::new(options.topic.clone(), partition);
        consumer.assign(vec![tp.clone()])?;
        match options.offset {
            Some(StartOffset::At(offset)) => consumer.seek(&tp, offset)?,
            Some(StartOffset::Earliest) => consumer.seek_to_beginning(&[tp]).await?,
            Some(StartOffset::Latest) => consumer.seek_to_end(&[tp]).await?,
            None => {}
        }
    } else if options.group.is_some() {
        consumer.subscribe(vec![options.topic.clone()], None)?;
    } else {
        consumer.assign(
            info.partitions
                .iter()
                .map(|p| TopicPartition::new(options.topic.clone(), p.partition))
                .collect(),
        )?;
    }
    let mut printed = 0usize;
    let mut idle = Duration::ZERO;
    let mut stop = std::pin::pin!(stop);
    let result: anyhow::Result<()> = async {
        loop {
            if options.max_messages.is_some_and(|max| printed >= max) {
                return Ok(());
            }
            let poll = options
                .timeout
                .map_or(CONSUME_POLL, |t| CONSUME_POLL.min(t.saturating_sub(idle)));
            let started = tokio::time::Instant::now();
            // A poll cut short hands out no records (positions move only as
            // records are returned), so stopping loses nothing printed.
            let records = tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                polled = consumer.poll(poll) => polled?,
            };
            if records.is_empty() {
                idle += started.elapsed();
                if options.timeout.is_some_and(|t| idle >= t) {
                    return Ok(());
                }
                continue;
            }
            idle = Duration::ZERO;
            let mut rewound = BTreeSet::new();
            for record in records {
                if options.max_messages.is_some_and(|max| printed >= max) {
                    // Not printed, so not consumed: rewind each partition to
                    // its first unprinted record before the commit on close.
                    let tp = TopicPartition::new(record.topic.clone(), record.partition);
                    if rewound.insert(tp.clone()) {
                        consumer.seek(&tp, record.offset)?;
                    }
                    continue;
                }
                writeln!(out, "{}", options.format.line(&record))?;
                printed += 1;
            }
        }
    }
    .await;
    out.flush()?;
    let closed = consumer.close().await;
    result?;
    closed?;
    Ok(printed)
}

fn display_bytes(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_string(),
        Some(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Where kafka-consumer-groups' `--reset-offsets` moves a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// A time in ms since the epoch: the first offset at or after it.
    Datetime(i64),
    /// From the committed offset (or the log end without one), by this much.
    ShiftBy(i64),
}

/// What `--reset-offsets` does: to which partitions (every partition of
/// `topic` when `partitions` is None), where, and whether it commits
/// (`--execute`) or only prints (a dry run, Kafka's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetReset {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
    pub to: ResetTo,
    pub execute: bool,
}

/// kafka-consumer-groups' `--to-datetime`: `YYYY-MM-DDTHH:mm:SS[.sss]`,
/// UTC, optionally ending in `Z`.
pub fn parse_datetime_ms(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--to-datetime {text:?}: expected YYYY-MM-DDTHH:mm:SS.sss (UTC)");
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let date: Vec<i64> = date
        .split('-')
        .map(|p| p.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let (clock, millis) = match time.split_once('.') {
        Some((clock, fraction)) => (
            clock,
            format!("{fraction:0<3}")[..3]
                .parse::<i64>()
                .map_err(|_| bad())?,
        ),
        None => (time, 0),
    };
    let clock: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [year, month, day] = <[i64; 3]>::try_from(date).map_err(|_| bad())?;
    let [hour, minute, second] = <[i64; 3]>::try_from(clock).map_err(|_| bad())?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    // Days from the civil date (the proleptic Gregorian calendar).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + millis)
}

/// `kafka-consumer-groups.sh --reset-offsets`: the new offset of each of
/// `partitions` (every partition of `topic` when None), printed; committed
/// only with `execute` (else a dry run, as Kafka's default). The group must
/// have no active members.
pub async fn groups_reset_offsets(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group: &str,
    reset: OffsetReset,
    out: Output<'_>,
) -> anyhow::Result<()> {
    use crate::client::metadata::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
    let OffsetReset {
        topic,
        partitions,
        to,
        execute,
    } = reset;
    let topic = topic.as_str();
    let admin = admin(bootstrap, connector);
    let description = admin.describe_group(group).await?;
    if !description.members.is_empty() {
        bail!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current \
             state is {}.",
            description.state
        );
    }
    let described = admin.describe_topics(Some(&[topic.to_string()])).await?;
    let info = described
        .first()
        .filter(|info| info.error_code == 0)
        .with_context(|| format!("topic {topic} does not exist"))?;
    let wanted: Vec<TopicPartition> = info
        .partitions
        .iter()
        .map(|p| p.partition)
        .filter(|p| partitions.as_ref().is_none_or(|only| only.contains(p)))
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let wait = Duration::from_millis(ConsumerConfig::default().default_api_timeout_ms);
    let cluster = admin.cluster();
    let earliest = cluster
        .list_offsets(&wanted, EARLIEST_TIMESTAMP, wait)
        .await?;
    let latest = cluster
        .list_offsets(&wanted, LATEST_TIMESTAMP, wait)
        .await?;
    let committed = admin.group_offsets(group).await?;
    let at_time = match to {
        ResetTo::Datetime(ms) => Some(cluster.list_offsets(&wanted, ms, wait).await?),
        _ => None,
    };
    let mut targets = BTreeMap::new();
    for tp in &wanted {
        let low = earliest.get(tp).map_or(0, |(offset, _)| *offset);
        let high = latest.get(tp).map_or(0, |(offset, _)| *offset);
        let target = match &to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Offset(offset) => *offset,
            ResetTo::ShiftBy(by) => committed
                .get(tp)
                .copied()
                .unwrap_or(high)
                .saturating_add(*by),
            ResetTo::Datetime(_) => at_time
                .as_ref()
                .and_then(|found| found.get(tp))
                .map(|(offset, _)| *offset)
                .filter(|offset| *offset >= 0)
                .unwrap_or(high),
        };
        // Kafka keeps a reset inside the log.
        targets.insert(tp.clone(), target.clamp(low, high));
    }
    let mut rows = vec![vec![
        "GROUP".to_string(),
        "TOPIC".to_string(),
        "PARTITION".to_string(),
        "NEW-OFFSET".to_string(),
    ]];
    for (tp, offset) in &targets {
        rows.push(vec![
            group.to_string(),
            tp.topic.clone(),
            tp.partition.to_string(),
            offset.to_string(),
        ]);
    }
    write_table(out, &rows)?;
    if execute {
        admin
            .commit_group_offsets(group, &targets)
            .await
            .with_context(|| format!("committing the reset offsets of {group}"))?;
    }
    Ok(())
}

/// `kafka-consumer-groups.sh --describe --members`: one row per member.
pub async fn groups_describe_members(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group: &str,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let description = admin(bootstrap, connector).describe_group(group).await?;
    if description.members.is_empty() {
        writeln!(out, "Consumer group '{group}' has no active members.")?;
        return Ok(());
    }
    let mut rows = vec![["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
        .map(str::to_string)
        .to_vec()];
    for member in &description.members {
        rows.push(vec![
            group.to_string(),
            member.member_id.clone(),
            member.client_host.clone(),
            member.client_id.clone(),
            member.assignment.len().to_string(),
        ]);
    }
    write_table(out, &rows)?;
    Ok(())
}

/// `kafka-consumer-groups.sh --describe --state`: the group's coordinator,
/// assignor, state and member count.
pub async fn groups_describe_state(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group: &str,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let description = admin.describe_group(group).await?;
    let coordinator = admin.cluster().find_coordinator(group).await?.0;
    let address = admin
        .cluster()
        .brokers()
        .get(&coordinator)
        .cloned()
        .unwrap_or_default();
    let rows = vec![
        [
            "GROUP",
            "COORDINATOR (ID)",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "#MEMBERS",
        ]
        .map(str::to_string)
        .to_vec(),
        vec![
            group.to_string(),
            format!("{address} ({coordinator})"),
            description.protocol.clone(),
            description.state.clone(),
            description.members.len().to_string(),
        ],
    ];
    write_table(out, &rows)?;
    Ok(())
}

/// Every group's id, for `--all-groups`.
pub async fn group_ids(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
) -> anyhow::Result<Vec<String>> {
    Ok(admin(bootstrap, connector)
        .list_groups()
        .await?
        .into_iter()
        .map(|group| group.group_id)
        .collect())
}

/// `kafka-consumer-groups.sh --delete --group G`.
pub async fn groups_delete(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group_id: &str,
    out: Output<'_>,
) -> anyhow::Result<()> {
    admin(bootstrap, connector)
        .delete_group(group_id)
        .await
        .with_context(|| format!("deleting group {group_id}"))?;
    writeln!(
        out,
        "Deletion of requested consumer groups ('{group_id}') was successful."
    )?;
    Ok(())
}

/// kafka-consumer-groups' `--topic` for `--delete-offsets`: `topic` (every
/// partition the group has committed) or `topic:0,2`.
pub fn parse_topic_partitions(text: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    match text.split_once(':') {
        None => Ok((text.to_string(), None)),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .with_context(|| format!("--topic {text:?}: {p:?} is not a partition"))
                })
                .collect::<anyhow::Result<Vec<i32>>>()?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

/// `kafka-consumer-groups.sh --delete-offsets --group G --topic T[:P,...]`.
pub async fn groups_delete_offsets(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group_id: &str,
    topic: &str,
    partitions: Option<Vec<i32>>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let partitions: Vec<TopicPartition> = match partitions {
        Some(partitions) => partitions
            .into_iter()
            .map(|p| TopicPartition::new(topic, p))
            .collect(),
        None => admin
            .group_offsets(group_id)
            .await?
            .into_keys()
            .filter(|tp| tp.topic == topic)
            .collect(),
    };
    admin
        .delete_offsets(group_id, &partitions)
        .await
        .with_context(|| format!("deleting offsets of group {group_id}"))?;
    writeln!(
        out,
        "Request succeed for deleting offsets from group {group_id}."
    )?;
    write_table(
        out,
        &std::iter::once(vec![
            "TOPIC".to_string(),
            "PARTITION".to_string(),
            "STATUS".to_string(),
        ])
        .chain(partitions.iter().map(|tp| {
            vec![
                tp.topic.clone(),
                tp.partition.to_string(),
                "Successful".to_string(),
            ]
        }))
        .collect::<Vec<_>>(),
    )?;
    Ok(())
}

/// `kafka-consumer-groups.sh --list`.
pub async fn groups_list(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    out: Output<'_>,
) -> anyhow::Result<()> {
    for group in admin(bootstrap, connector).list_groups().await? {
        writeln!(out, "{}", group.group_id)?;
    }
    Ok(())
}

/// `kafka-consumer-groups.sh --describe --group g`: one row per partition
/// that the group has committed or that a member owns.
pub async fn groups_describe(
    bootstrap: &str,
    connector: Arc<dyn Connector>,
    group: &str,
    out: Output<'_>,
) -> anyhow::Result<()> {
    let admin = admin(bootstrap, connector);
    let description = admin.describe_group(group).await?;
    let committed = admin.group_offsets(group).await?;
    let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for member in &description.members {
        for tp in &member.assignment {
            owners.insert(tp.clone(), member.member_id.clone());
        }
    }
    let mut partitions: Vec<TopicPartition> =
        committed.keys().chain(owners.keys()).cloned().collect();
    partitions.sort();
    partitions.dedup();
    let wait = Duration::from_millis(ConsumerConfig::default().default_api_timeout_ms);
    let ends = admin
        .cluster()
        .list_offsets(&partitions, crate::client::metadata::LATEST_TIMESTAMP, wait)
        .await?;
    if partitions.is_empty() {
        writeln!(
            out,
            "Consumer group '{group}' has no active members and no committed offsets."
        )?;
        return Ok(());
    }
    let mut rows = vec![vec![
        "GROUP".to_string(),
        "TOPIC".to_string(),
        "PARTITION".to_string(),
        "CURRENT-OFFSET".to_string(),
        "LOG-END-OFFSET".to_string(),
        "LAG".to_string(),
        "CONSUMER-ID".to_string(),
    ]];
    for tp in &partitions {
        let current = committed.get(tp).copied();
        let end = ends.get(tp).map(|(offset, _)| *offset);
        // As kafka-consumer-groups computes it: a committed offset past the
        // log end (the log was truncated or deleted under it) shows as a
        // negative lag rather than hiding behind 0.
        let lag = match (current, end) {
            (Some(c), Some(e)) => e.saturating_sub(c).to_string(),
            _ => "-".to_string(),
        };
        rows.push(vec![
            group.to_string(),
            tp.topic.clone(),
            tp.partition.to_string(),
            current.map_or_else(|| "-".to_string(), |c| c.to_string()),
            end.map_or_else(|| "-".to_string(), |e| e.to_string()),
            lag,
            owners.get(tp).cloned().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    write_table(out, &rows)?;
    Ok(())
}

/// Writes rows as space-separated columns padded to the widest cell.
fn write_table(out: Output<'_>, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join(" ").trim_end())?;
    }
    Ok(())
}

/// Lets a closed stdout (`sluice consume | head`) end the process quietly,
/// as it ends other Unix tools: Rust ignores SIGPIPE, so a write to a closed
/// pipe would otherwise fail and `println!` would panic. Call first in `main`.
pub fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of one signal before any
    // other thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_without_terminators_and_bounded() {
        let mut input: &[u8] = b"a\r\nb\n\nlast";
        let mut lines = Vec::new();
        while let Some(line) = read_line_bounded(&mut input).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(lines, ["a", "b", "", "last"]);

        let long = vec![b'x'; LINE_BYTES_MAX + 10];
        let mut input: &[u8] = &long;
        assert!(read_line_bounded(&mut input).await.is_err());
        let mut exact = vec![b'x'; LINE_BYTES_MAX];
        exact.push(b'\n');
        let mut input: &[u8] = &exact;
        assert_eq!(
            read_line_bounded(&mut input)
                .await
                .unwrap()
                .map(|l| l.len()),
            Some(LINE_BYTES_MAX)
        );
    }

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["GROUP".to_string(), "LAG".to_string()],
            vec!["a-long-group".to_string(), "7".to_string()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GROUP        LAG\na-long-group 7\n"
        );
    }
}
