//! Topic configurations on the broker: where they are kept, how an
//! alteration reaches the partitions while they run, and the settings each
//! partition opens with.
//!
//! The metadata image holds every topic's overrides, so DescribeConfigs
//! reads them the same way on one node and in a cluster. What makes them
//! durable differs:
//! - in a cluster, the controller writes them to the metadata log (with the
//!   topic record when a topic is created with them, a `TopicConfigs`
//!   record when they change), and each broker applies them as it replays;
//! - a single node keeps them in its data directory's `topic_configs` file,
//!   rewritten whole (temporary file, fsync, rename, directory fsync) before
//!   a change is applied or answered.
//!
//! Invariant: an altered configuration is durable before the client hears
//! it succeeded, and every hosted partition of the topic runs with it
//! before then too (on a single node; in a cluster, as each broker applies
//! the record).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use kafka_protocol::error::ResponseError;

use super::Broker;
use crate::metadata::{MetadataRecord, OFFSETS_TOPIC};
use crate::storage::Storage;
use crate::topic_config::{self, TopicConfigs, TopicSettings};

/// A single node's topic overrides, in its data directory.
pub(super) const TOPIC_CONFIGS_FILE: &str = "topic_configs";

/// The longest `topic_configs` file read: far beyond any real set of
/// overrides (a topic has at most one per key of `TOPIC_KEYS`), so a damaged length cannot
/// make recovery allocate without bound.
const TOPIC_CONFIGS_FILE_BYTES_MAX: usize = 64 << 20;

/// Reads a single node's overrides: one per line, `topic key=value`. Lines
/// that do not parse, or that name a key or value this sluice refuses, are
/// skipped with a warning: the file is only ever written whole by
/// [`save`], so such a line means a newer sluice wrote it.
pub(super) async fn load(
    storage: &dyn Storage,
    dir: &Path,
) -> io::Result<BTreeMap<String, TopicConfigs>> {
    let path = dir.join(TOPIC_CONFIGS_FILE);
    let file = storage.open(&path).await?;
    let len = usize::try_from(file.len()).unwrap_or(usize::MAX);
    if len > TOPIC_CONFIGS_FILE_BYTES_MAX {
        return Err(io::Error::other(format!(
            "{} is {len} bytes, more than any set of topic configs",
            path.display()
        )));
    }
    let bytes = file.read_at(0, len).await?;
    let mut all: BTreeMap<String, TopicConfigs> = BTreeMap::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(topic, entry)| Some((topic, entry.split_once('=')?)));
        match parsed {
            Some((topic, (key, value))) if topic_config::validate(key, value).is_ok() => {
                all.entry(topic.to_string())
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            }
            _ => tracing::warn!(line, "skipping a topic config line sluice cannot use"),
        }
    }
    Ok(all)
}

/// Replaces a single node's overrides file with `all`, atomically.
async fn save(
    storage: &dyn Storage,
    dir: &Path,
    all: &BTreeMap<String, TopicConfigs>,
) -> io::Result<()> {
    let mut text = String::new();
    for (topic, configs) in all {
        for (key, value) in configs {
            text.push_str(&format!("{topic} {key}={value}\n"));
        }
    }
    let temporary = dir.join(format!("{TOPIC_CONFIGS_FILE}.tmp"));
    let _ = storage.remove(&temporary).await;
    let file = storage.open(&temporary).await?;
    file.append(bytes::Bytes::from(text)).await?;
    file.sync().await?;
    storage
        .rename(&temporary, &dir.join(TOPIC_CONFIGS_FILE))
        .await?;
    storage.sync_dir(dir).await
}

/// What DescribeConfigs shows as `__consumer_offsets`'s overrides: what
/// sluice runs it with (it keeps every record; `super::offsets::log_config`).
pub(super) fn offsets_topic_overrides() -> TopicConfigs {
    TopicConfigs::from([
        ("retention.bytes".to_string(), "-1".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ])
}

impl Broker {
    /// A topic's overrides, as the metadata image holds them.
    pub(super) fn topic_configs(&self, name: &str) -> Option<TopicConfigs> {
        if name == OFFSETS_TOPIC {
            return self
                .with_metadata(|image| image.topic(name).map(|_| offsets_topic_overrides()));
        }
        self.with_metadata(|image| image.topic(name).map(|topic| topic.configs.clone()))
    }

    /// The settings a topic's partitions run with.
    pub(super) fn topic_settings(&self, configs: &TopicConfigs) -> TopicSettings {
        topic_config::settings(&self.config, configs)
    }

    /// Writes a single node's overrides file from the metadata image, with
    /// `name`'s overrides replaced by `configs` when given (a topic being
    /// created, or altered). Called with `topic_admin` held. Skipped when
    /// it would not change which topics the file names and `name` has no
    /// overrides: most topics never have any, and creating or deleting one
    /// then costs no file write.
    pub(super) async fn save_topic_configs(
        &self,
        changed: Option<(&str, &TopicConfigs)>,
    ) -> io::Result<()> {
        if let Some((name, configs)) = changed {
            let named = self
                .config_file_topics
                .lock()
                .expect("config file lock")
                .contains(name);
            if configs.is_empty() && !named {
                return Ok(());
            }
        }
        let mut all: BTreeMap<String, TopicConfigs> = self.with_metadata(|image| {
            image
                .all_topic_names()
                .into_iter()
                .filter(|name| name != OFFSETS_TOPIC)
                .filter_map(|name| {
                    let configs = image.topic(&name)?.configs.clone();
                    Some((name, configs))
                })
                .collect()
        });
        if let Some((name, configs)) = changed {
            all.insert(name.to_string(), configs.clone());
        }
        all.retain(|_, configs| !configs.is_empty());
        let named: std::collections::BTreeSet<String> = all.keys().cloned().collect();
        if changed.is_none() && named == *self.config_file_topics.lock().expect("config file lock")
        {
            return Ok(());
        }
        save(self.storage.as_ref(), &self.config.log_dirs, &all).await?;
        *self.config_file_topics.lock().expect("config file lock") = named;
        Ok(())
    }

    /// Brings every partition of `name` hosted here in line with the
    /// topic's overrides in the image.
    pub(super) async fn apply_topic_settings(&self, name: &str) {
        if name == OFFSETS_TOPIC {
            return;
        }
        let (Some(topic), Some(configs)) = (self.topic(name), self.topic_configs(name)) else {
            return;
        };
        let settings = self.topic_settings(&configs);
        for partition in topic.partitions.values() {
            partition.apply_settings(&settings).await;
        }
        tracing::info!(topic = name, ?configs, "topic configs applied");
    }

    /// Replaces a topic's overrides with `configs` (already validated):
    /// AlterConfigs and IncrementalAlterConfigs end here. In a cluster only
    /// the active controller changes them (others answer NOT_CONTROLLER,
    /// and the request handler forwards before it gets here).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let _admin = self.topic_admin.lock().await;
        let code = |error: ResponseError| (error.code(), String::new());
        if name == OFFSETS_TOPIC {
            return Err((
                ResponseError::InvalidConfig.code(),
                format!("sluice runs {OFFSETS_TOPIC} with settings of its own"),
            ));
        }
        if self.cluster.is_some() && !self.is_active_controller() {
            return Err(code(ResponseError::NotController));
        }
        if self.with_metadata(|image| image.topic(name).is_none()) {
            return Err(code(ResponseError::UnknownTopicOrPartition));
        }
        if validate_only {
            return Ok(());
        }
        if self.cluster.is_some() {
            let record = MetadataRecord::TopicConfigs {
                name: name.to_string(),
                configs,
            };
            return self
                .controller_write(record)
                .await
                .map(|_| ())
                .map_err(|error| (error, String::new()));
        }
        if let Err(error) = self.save_topic_configs(Some((name, &configs))).await {
            tracing::error!(topic = name, %error, "persisting topic configs failed");
            return Err(code(ResponseError::KafkaStorageError));
        }
        self.metadata
            .write()
            .expect("metadata lock")
            .set_topic_configs(name, configs)
            .expect("topic admin is serialised, so the topic is still in the image");
        self.apply_topic_settings(name).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_overrides_file_round_trips_and_skips_what_it_cannot_use() {
        let storage = crate::storage::mem::MemStorage::new();
        let dir = Path::new("/data");
        storage.create_dir(dir).await.expect("dir");
        assert!(load(&storage, dir).await.expect("empty").is_empty());
        let all = BTreeMap::from([
            (
                "orders".to_string(),
                TopicConfigs::from([
                    ("retention.ms".to_string(), "60000".to_string()),
                    ("cleanup.policy".to_string(), "delete".to_string()),
                ]),
            ),
            (
                "audit".to_string(),
                TopicConfigs::from([("segment.bytes".to_string(), "2097152".to_string())]),
            ),
        ]);
        save(&storage, dir, &all).await.expect("save");
        assert_eq!(load(&storage, dir).await.expect("load"), all);
        // A line a newer sluice might write is skipped, not fatal.
        let file = storage
            .open(&dir.join(TOPIC_CONFIGS_FILE))
            .await
            .expect("open");
        file.append(bytes::Bytes::from(
            "orders compression.type=zstd\ngarbage\n",
        ))
        .await
        .expect("append");
        assert_eq!(load(&storage, dir).await.expect("load"), all);
    }
}
