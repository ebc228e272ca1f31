//! Adding partitions to a topic (CreatePartitions).
//!
//! In a cluster the active controller places the new partitions
//! (`controller::added_partitions`) and writes an `AddPartitions` record;
//! every broker opens the replicas it is given as it applies the record. A
//! single node creates the new partition directories itself, each running
//! with the topic's configs, and then adds them to its image.
//!
//! Adding partitions moves keys: the default partitioner hashes a key over
//! the partition count, so records with a key written after the change can
//! land in another partition than the same key's earlier records, and
//! per-key order across the change is lost. Kafka behaves the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::partition::Partition;
use super::{Broker, Topic, MAX_PARTITIONS_PER_TOPIC};
use crate::controller::AddPartitionsError;
use crate::metadata::{MetadataRecord, PartitionImage, OFFSETS_TOPIC};

impl Broker {
    /// Grows `name` to `count` partitions, placed as `assignments` says
    /// (one replica list per new partition) or spread by the controller.
    /// Errors are Kafka's codes, with its messages.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let _admin = self.topic_admin.lock().await;
        let code = |error: ResponseError| (error.code(), String::new());
        if name == OFFSETS_TOPIC {
            return Err((
                ResponseError::InvalidPartitions.code(),
                format!("sluice keeps {OFFSETS_TOPIC} at one partition"),
            ));
        }
        if self.cluster.is_some() && !self.is_active_controller() {
            return Err(code(ResponseError::NotController));
        }
        let (current, brokers) = self.with_metadata(|image| {
            (
                image.topic(name).map(|topic| topic.partitions.clone()),
                image.brokers().map(|b| b.node_id).collect::<Vec<_>>(),
            )
        });
        let current = current.ok_or_else(|| code(ResponseError::UnknownTopicOrPartition))?;
        let added = crate::controller::added_partitions(
            &current,
            count,
            MAX_PARTITIONS_PER_TOPIC,
            assignments.as_deref(),
            &brokers,
        )
        .map_err(|error| match error {
            AddPartitionsError::Count(message) => {
                (ResponseError::InvalidPartitions.code(), message)
            }
            AddPartitionsError::Assignment(message) => {
                (ResponseError::InvalidReplicaAssignment.code(), message)
            }
        })?;
        if validate_only {
            return Ok(());
        }
        if self.cluster.is_some() {
            let record = MetadataRecord::AddPartitions {
                topic: name.to_string(),
                partitions: added,
            };
            return self
                .controller_write(record)
                .await
                .map(|_| ())
                .map_err(|error| (error, String::new()));
        }
        self.add_local_partitions(name, current.len(), added.len())
            .await
    }

    /// A single node's CreatePartitions: opens partitions `first` to
    /// `first + added - 1` of `name` with the topic's settings, then serves
    /// them. A crash part-way leaves some of the directories, which the
    /// next start opens as the topic's partitions.
    async fn add_local_partitions(
        &self,
        name: &str,
        first: usize,
        added: usize,
    ) -> Result<(), (i16, String)> {
        let settings = self.topic_settings(&self.topic_configs(name).unwrap_or_default());
        let mut partitions: BTreeMap<i32, Arc<Partition>> = self
            .topic(name)
            .map(|topic| topic.partitions.clone())
            .unwrap_or_default();
        let indexes = first as i32..(first + added) as i32;
        let opened = self
            .open_local_partitions(name, indexes, &settings)
            .await
            .map_err(|()| (ResponseError::KafkaStorageError.code(), String::new()))?;
        partitions.extend(opened);
        self.topics.write().expect("topics lock").insert(
            name.to_string(),
            Arc::new(Topic {
                name: name.to_string(),
                partitions,
            }),
        );
        self.metadata
            .write()
            .expect("metadata lock")
            .add_partitions(
                name,
                vec![PartitionImage::single_replica(self.config.node_id); added],
            )
            .expect("topic admin is serialised, so the topic is still in the image");
        tracing::info!(topic = name, partitions = first + added, "added partitions");
        Ok(())
    }
}
