//! The metadata image: the cluster as the request handlers see it. Its
//! brokers and their endpoints, the active controller, and every topic's
//! partitions with their leader, leader epoch, replicas and in-sync replicas.
//!
//! Metadata, FindCoordinator and CreateTopics read the image; they never look
//! at which directories happen to be on disk. A single-node broker builds it
//! from the logs it recovered and changes it as topics come and go; a
//! replicated cluster will build it by replaying its metadata log, so the
//! image is plain data with no I/O, clock or locking of its own.
//!
//! [`MetadataRecord`]s are the changes a controller will write to the
//! metadata log; [`MetadataImage::apply`] replays them.
//!
//! Invariant: every partition's leader is one of its replicas, and its ISR
//! is a non-empty subset of its replicas that holds the leader; a record that
//! would break this is refused and changes nothing.

use std::collections::BTreeMap;

use crate::topic_config::TopicConfigs;

/// The topic that keeps committed offsets and group generations.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Where a broker can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// One partition's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub leader_id: i32,
    /// Bumped on every leader change; requests naming an older one are fenced.
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl PartitionImage {
    /// A partition whose only replica, and leader, is `node_id`.
    pub fn single_replica(node_id: i32) -> PartitionImage {
        PartitionImage {
            leader_id: node_id,
            leader_epoch: 0,
            replicas: vec![node_id],
            isr: vec![node_id],
        }
    }

    /// Whether the leader is a replica in the ISR and the ISR is among the
    /// replicas.
    fn is_valid(&self) -> bool {
        self.replicas.contains(&self.leader_id)
            && self.isr.contains(&self.leader_id)
            && self.isr.iter().all(|id| self.replicas.contains(id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    /// Internal topics (`__consumer_offsets`) are listed only when asked for
    /// by name.
    pub internal: bool,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionImage>,
    /// The topic's configuration overrides ([`crate::topic_config`]).
    pub configs: TopicConfigs,
}

/// Why the image refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    TopicExists,
    UnknownTopic,
    NoPartitions,
    UnknownPartition,
    /// The leader is not in the ISR, or the ISR not among the replicas.
    InvalidLeadership,
}

/// A change to the cluster as the controller will write it to the metadata
/// log, named after KIP-631's record types. Replaying a log of these from an
/// empty image rebuilds the cluster's image on every broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker registered, or registered again at a new address.
    RegisterBroker(BrokerEndpoint),
    /// A topic and its partitions (KIP-631's TopicRecord and
    /// PartitionRecords together), with the configuration overrides it was
    /// created with (its ConfigRecords), so a topic never exists without
    /// them.
    Topic {
        name: String,
        internal: bool,
        partitions: Vec<PartitionImage>,
        configs: TopicConfigs,
    },
    /// A partition's leader or ISR changed. A new leader bumps the leader
    /// epoch; an ISR change alone does not.
    PartitionChange {
        topic: String,
        partition: i32,
        leader_id: i32,
        isr: Vec<i32>,
    },
    RemoveTopic {
        name: String,
    },
    /// A broker registered from a new process (its persisted start count,
    /// which it sends as its incarnation id). A broker leads nothing until
    /// its current incarnation is recorded; before recording a restart the
    /// controller takes the broker out of the ISRs it shares and moves its
    /// leaderships, since it may have lost what it had not synced (KIP-903).
    /// What it still leads (an ISR of its own) moves to a new leader epoch.
    BrokerIncarnation {
        node_id: i32,
        incarnation: u64,
    },
    /// A topic's configuration overrides, all of them: keys it lacks go
    /// back to the broker's settings (KIP-631's ConfigRecords for one
    /// topic, written together).
    TopicConfigs {
        name: String,
        configs: TopicConfigs,
    },
    /// Partitions added to a topic (CreatePartitions), numbered on from
    /// its last (KIP-631's PartitionRecords for them).
    AddPartitions {
        topic: String,
        partitions: Vec<PartitionImage>,
    },
}

/// A topic's id, for the requests that name topics by id (AlterPartition).
/// Derived from the name, so every broker computes the same one without a
/// record carrying it; a topic deleted and created again keeps its id, and
/// the leader epoch check is what fences requests meant for the old one.
pub fn topic_id(name: &str) -> uuid::Uuid {
    // Two FNV-1a passes with different offsets make the 128 bits.
    let fnv = |basis: u64| {
        name.bytes().fold(basis, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    uuid::Uuid::from_u64_pair(fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142))
}

/// The format of an encoded [`MetadataRecord`], its first byte.
const RECORD_FORMAT_VERSION: u8 = 0;

/// Why bytes did not decode to a [`MetadataRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable metadata record: {0}")]
pub struct RecordDecodeError(&'static str);

impl MetadataRecord {
    /// Encodes the record as a metadata log entry's value: a format byte, a
    /// type byte, then the fields, integers big-endian and strings and lists
    /// prefixed with their 32-bit length.
    pub fn encode(&self) -> bytes::Bytes {
        use bytes::BufMut;
        let mut out = bytes::BytesMut::with_capacity(64);
        out.put_u8(RECORD_FORMAT_VERSION);
        let put_str = |out: &mut bytes::BytesMut, text: &str| {
            out.put_u32(text.len() as u32);
            out.put_slice(text.as_bytes());
        };
        let put_ids = |out: &mut bytes::BytesMut, ids: &[i32]| {
            out.put_u32(ids.len() as u32);
            ids.iter().for_each(|id| out.put_i32(*id));
        };
        let put_partitions = |out: &mut bytes::BytesMut, partitions: &[PartitionImage]| {
            out.put_u32(partitions.len() as u32);
            for partition in partitions {
                out.put_i32(partition.leader_id);
                out.put_i32(partition.leader_epoch);
                put_ids(out, &partition.replicas);
                put_ids(out, &partition.isr);
            }
        };
        let put_configs = |out: &mut bytes::BytesMut, configs: &TopicConfigs| {
            out.put_u32(configs.len() as u32);
            for (key, value) in configs {
                put_str(out, key);
                put_str(out, value);
            }
        };
        match self {
            MetadataRecord::RegisterBroker(endpoint) => {
                out.put_u8(0);
                out.put_i32(endpoint.node_id);
                put_str(&mut out, &endpoint.host);
                out.put_i32(endpoint.port);
            }
            MetadataRecord::Topic {
                name,
                internal,
                partitions,
                configs,
            } => {
                // Type 1 is a topic without overrides, as sluice wrote
                // before topics had any; type 5 adds them at the end.
                out.put_u8(if configs.is_empty() { 1 } else { 5 });
                put_str(&mut out, name);
                out.put_u8(u8::from(*internal));
                put_partitions(&mut out, partitions);
                if !configs.is_empty() {
                    put_configs(&mut out, configs);
                }
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader_id,
                isr,
            } => {
                out.put_u8(2);
                put_str(&mut out, topic);
                out.put_i32(*partition);
                out.put_i32(*leader_id);
                put_ids(&mut out, isr);
            }
            MetadataRecord::RemoveTopic { name } => {
                out.put_u8(3);
                put_str(&mut out, name);
            }
            MetadataRecord::BrokerIncarnation {
                node_id,
                incarnation,
            } => {
                out.put_u8(4);
                out.put_i32(*node_id);
                out.put_u64(*incarnation);
            }
            MetadataRecord::TopicConfigs { name, configs } => {
                out.put_u8(6);
                put_str(&mut out, name);
                put_configs(&mut out, configs);
            }
            MetadataRecord::AddPartitions { topic, partitions } => {
                out.put_u8(7);
                put_str(&mut out, topic);
                put_partitions(&mut out, partitions);
            }
        }
        out.freeze()
    }

    /// Decodes what [`MetadataRecord::encode`] wrote. Lengths are checked
    /// against the bytes left before anything is allocated.
    pub fn decode(mut bytes: &[u8]) -> Result<MetadataRecord, RecordDecodeError> {
        use bytes::Buf;
        fn need(bytes: &[u8], count: usize) -> Result<(), RecordDecodeError> {
            if bytes.remaining() < count {
                return Err(RecordDecodeError("truncated"));
            }
            Ok(())
        }
        fn get_i32(bytes: &mut &[u8]) -> Result<i32, RecordDecodeError> {
            need(bytes, 4)?;
            Ok(bytes.get_i32())
        }
        fn get_len(bytes: &mut &[u8], item_bytes: usize) -> Result<usize, RecordDecodeError> {
            need(bytes, 4)?;
            let len = bytes.get_u32() as usize;
            need(bytes, len.saturating_mul(item_bytes))?;
            Ok(len)
        }
        fn get_str(bytes: &mut &[u8]) -> Result<String, RecordDecodeError> {
            let len = get_len(bytes, 1)?;
            let text = std::str::from_utf8(&bytes[..len])
                .map_err(|_| RecordDecodeError("a string is not UTF-8"))?
                .to_string();
            bytes.advance(len);
            Ok(text)
        }
        fn get_ids(bytes: &mut &[u8]) -> Result<Vec<i32>, RecordDecodeError> {
            let len = get_len(bytes, 4)?;
            (0..len).map(|_| get_i32(bytes)).collect()
        }
        fn get_partitions(bytes: &mut &[u8]) -> Result<Vec<PartitionImage>, RecordDecodeError> {
            // A partition takes at least 16 bytes.
            let count = get_len(bytes, 16)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push(PartitionImage {
                    leader_id: get_i32(bytes)?,
                    leader_epoch: get_i32(bytes)?,
                    replicas: get_ids(bytes)?,
                    isr: get_ids(bytes)?,
                });
            }
            Ok(partitions)
        }
        fn get_configs(bytes: &mut &[u8]) -> Result<TopicConfigs, RecordDecodeError> {
            // A key and a value take at least 8 bytes.
            let len = get_len(bytes, 8)?;
            (0..len)
                .map(|_| Ok((get_str(bytes)?, get_str(bytes)?)))
                .collect()
        }
        need(bytes, 2)?;
        if bytes.get_u8() != RECORD_FORMAT_VERSION {
            return Err(RecordDecodeError("unknown format version"));
        }
        let record = match bytes.get_u8() {
            0 => MetadataRecord::RegisterBroker(BrokerEndpoint {
                node_id: get_i32(&mut bytes)?,
                host: get_str(&mut bytes)?,
                port: get_i32(&mut bytes)?,
            }),
            kind @ (1 | 5) => {
                let name = get_str(&mut bytes)?;
                need(bytes, 1)?;
                let internal = bytes.get_u8() != 0;
                let partitions = get_partitions(&mut bytes)?;
                let configs = if kind == 5 {
                    get_configs(&mut bytes)?
                } else {
                    TopicConfigs::new()
                };
                MetadataRecord::Topic {
                    name,
                    internal,
                    partitions,
                    configs,
                }
            }
            2 => MetadataRecord::PartitionChange {
                topic: get_str(&mut bytes)?,
                partition: get_i32(&mut bytes)?,
                leader_id: get_i32(&mut bytes)?,
                isr: get_ids(&mut bytes)?,
            },
            3 => MetadataRecord::RemoveTopic {
                name: get_str(&mut bytes)?,
            },
            4 => {
                let node_id = get_i32(&mut bytes)?;
                need(bytes, 8)?;
                MetadataRecord::BrokerIncarnation {
                    node_id,
                    incarnation: bytes.get_u64(),
                }
            }
            6 => MetadataRecord::TopicConfigs {
                name: get_str(&mut bytes)?,
                configs: get_configs(&mut bytes)?,
            },
            7 => MetadataRecord::AddPartitions {
                topic: get_str(&mut bytes)?,
                partitions: get_partitions(&mut bytes)?,
            },
            _ => return Err(RecordDecodeError("unknown record type")),
        };
        if bytes.has_remaining() {
            return Err(RecordDecodeError("trailing bytes"));
        }
        Ok(record)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    cluster_id: String,
    controller_id: i32,
    brokers: BTreeMap<i32, BrokerEndpoint>,
    /// Each broker's incarnation, as it last registered.
    incarnations: BTreeMap<i32, u64>,
    /// Each partition's epoch: the number of PartitionChange records applied
    /// to it since its topic was created (absent: 0). An ISR change names the
    /// epoch it was computed against, so a stale one is refused.
    partition_epochs: BTreeMap<(String, i32), i32>,
    topics: BTreeMap<String, TopicImage>,
}

impl MetadataImage {
    /// A one-broker cluster in which `endpoint`'s broker is also the
    /// controller and leads the offsets topic's one partition.
    pub fn single_node(cluster_id: &str, endpoint: BrokerEndpoint) -> MetadataImage {
        let node_id = endpoint.node_id;
        let mut image = MetadataImage {
            cluster_id: cluster_id.to_string(),
            controller_id: node_id,
            brokers: BTreeMap::from([(node_id, endpoint)]),
            incarnations: BTreeMap::new(),
            partition_epochs: BTreeMap::new(),
            topics: BTreeMap::new(),
        };
        image
            .add_topic(
                OFFSETS_TOPIC,
                true,
                vec![PartitionImage::single_replica(node_id)],
            )
            .expect("a new image has no topics");
        image
    }

    /// A cluster image before any metadata record is replayed: no brokers,
    /// no topics, no controller known (-1).
    pub fn empty(cluster_id: &str) -> MetadataImage {
        MetadataImage {
            cluster_id: cluster_id.to_string(),
            controller_id: -1,
            brokers: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            partition_epochs: BTreeMap::new(),
            topics: BTreeMap::new(),
        }
    }

    /// The active controller, as the quorum reports it (-1: none known).
    pub fn set_controller_id(&mut self, controller_id: i32) {
        self.controller_id = controller_id;
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerEndpoint> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerEndpoint> {
        self.brokers.get(&node_id)
    }

    /// Records where a broker can be reached (a new broker, or a changed
    /// address).
    pub fn set_endpoint(&mut self, endpoint: BrokerEndpoint) {
        self.brokers.insert(endpoint.node_id, endpoint);
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// Names of the topics a client lists: every topic but the internal ones.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics
            .values()
            .filter(|topic| !topic.internal)
            .map(|topic| topic.name.clone())
            .collect()
    }

    /// Every topic's name, internal ones included, in name order.
    pub fn all_topic_names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    /// The topic whose id ([`topic_id`]) is `id`.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicImage> {
        self.topics
            .values()
            .find(|topic| topic_id(&topic.name) == id)
    }

    pub fn add_topic(
        &mut self,
        name: &str,
        internal: bool,
        partitions: Vec<PartitionImage>,
    ) -> Result<(), ImageError> {
        self.add_topic_with_configs(name, internal, partitions, TopicConfigs::new())
    }

    pub fn add_topic_with_configs(
        &mut self,
        name: &str,
        internal: bool,
        partitions: Vec<PartitionImage>,
        configs: TopicConfigs,
    ) -> Result<(), ImageError> {
        if partitions.is_empty() {
            return Err(ImageError::NoPartitions);
        }
        if self.topics.contains_key(name) {
            return Err(ImageError::TopicExists);
        }
        if !partitions.iter().all(PartitionImage::is_valid) {
            return Err(ImageError::InvalidLeadership);
        }
        self.topics.insert(
            name.to_string(),
            TopicImage {
                name: name.to_string(),
                internal,
                partitions,
                configs,
            },
        );
        Ok(())
    }

    pub fn remove_topic(&mut self, name: &str) -> Result<TopicImage, ImageError> {
        let removed = self.topics.remove(name).ok_or(ImageError::UnknownTopic)?;
        self.partition_epochs.retain(|(topic, _), _| topic != name);
        Ok(removed)
    }

    /// Adds partitions to a topic, numbered on from its last.
    pub fn add_partitions(
        &mut self,
        name: &str,
        partitions: Vec<PartitionImage>,
    ) -> Result<(), ImageError> {
        let topic = self.topics.get_mut(name).ok_or(ImageError::UnknownTopic)?;
        if partitions.is_empty() {
            return Err(ImageError::NoPartitions);
        }
        if !partitions.iter().all(PartitionImage::is_valid) {
            return Err(ImageError::InvalidLeadership);
        }
        topic.partitions.extend(partitions);
        Ok(())
    }

    /// Replaces a topic's configuration overrides.
    pub fn set_topic_configs(
        &mut self,
        name: &str,
        configs: TopicConfigs,
    ) -> Result<(), ImageError> {
        self.topics
            .get_mut(name)
            .ok_or(ImageError::UnknownTopic)?
            .configs = configs;
        Ok(())
    }

    /// A partition's epoch: how many PartitionChange records it has seen.
    pub fn partition_epoch(&self, topic: &str, partition: i32) -> i32 {
        self.partition_epochs
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Applies one record. A refused record leaves the image as it was.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::RegisterBroker(endpoint) => {
                self.set_endpoint(endpoint.clone());
                Ok(())
            }
            MetadataRecord::Topic {
                name,
                internal,
                partitions,
                configs,
            } => self.add_topic_with_configs(name, *internal, partitions.clone(), configs.clone()),
            MetadataRecord::TopicConfigs { name, configs } => {
                self.set_topic_configs(name, configs.clone())
            }
            MetadataRecord::AddPartitions { topic, partitions } => {
                self.add_partitions(topic, partitions.clone())
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader_id,
                isr,
            } => {
                let current = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ImageError::UnknownTopic)?
                    .partitions
                    .get_mut(usize::try_from(*partition).map_err(|_| ImageError::UnknownPartition)?)
                    .ok_or(ImageError::UnknownPartition)?;
                let changed = PartitionImage {
                    leader_id: *leader_id,
                    leader_epoch: if *leader_id == current.leader_id
                        || crate::planted!(LeaderEpochNotBumped)
                    {
                        current.leader_epoch
                    } else {
                        current.leader_epoch + 1
                    },
                    replicas: current.replicas.clone(),
                    isr: isr.clone(),
                };
                if !changed.is_valid() {
                    return Err(ImageError::InvalidLeadership);
                }
                *current = changed;
                *self
                    .partition_epochs
                    .entry((topic.clone(), *partition))
                    .or_insert(0) += 1;
                Ok(())
            }
            MetadataRecord::RemoveTopic { name } => self.remove_topic(name).map(|_| ()),
            MetadataRecord::BrokerIncarnation {
                node_id,
                incarnation,
            } => {
                let previous = self.incarnations.insert(*node_id, *incarnation);
                if previous.is_some_and(|previous| previous != *incarnation) {
                    self.bump_leader_epochs_of(*node_id);
                }
                Ok(())
            }
        }
    }

    /// A broker that restarted leads what it still leads (the partitions
    /// whose ISR held no one else) in a new leader epoch: it may have lost
    /// records it had not synced, and the records it writes now must not
    /// share (offset, leader epoch) with the ones it lost, or a follower
    /// holding those could not tell them apart.
    fn bump_leader_epochs_of(&mut self, node_id: i32) {
        for (name, topic) in self.topics.iter_mut() {
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if partition.leader_id != node_id {
                    continue;
                }
                partition.leader_epoch += 1;
                *self
                    .partition_epochs
                    .entry((name.clone(), index as i32))
                    .or_insert(0) += 1;
            }
        }
    }

    /// The incarnation `node_id` last registered with.
    pub fn incarnation(&self, node_id: i32) -> Option<u64> {
        self.incarnations.get(&node_id).copied()
    }

    /// The broker that coordinates `group_id`: the leader of the offsets
    /// topic's partition that holds the group. There is one such partition
    /// today, so it is the same broker for every group.
    pub fn group_coordinator(&self, _group_id: &str) -> Option<&BrokerEndpoint> {
        let offsets = self.topics.get(OFFSETS_TOPIC)?;
        let partition = offsets.partitions.first()?;
        self.brokers.get(&partition.leader_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(node_id: i32) -> BrokerEndpoint {
        BrokerEndpoint {
            node_id,
            host: format!("broker-{node_id}"),
            port: 9092,
        }
    }

    #[test]
    fn a_single_node_image_coordinates_groups_and_hides_internal_topics() {
        let mut image = MetadataImage::single_node("sluice", endpoint(3));
        assert_eq!(image.controller_id(), 3);
        assert_eq!(image.group_coordinator("g").map(|b| b.node_id), Some(3));
        assert!(image.topic_names().is_empty());
        assert!(image.topic(OFFSETS_TOPIC).is_some_and(|t| t.internal));

        image
            .add_topic("orders", false, vec![PartitionImage::single_replica(3); 2])
            .expect("new topic");
        assert_eq!(image.topic_names(), ["orders"]);
        assert_eq!(
            image.add_topic("orders", false, vec![PartitionImage::single_replica(3)]),
            Err(ImageError::TopicExists)
        );
        assert_eq!(
            image.add_topic("empty", false, Vec::new()),
            Err(ImageError::NoPartitions)
        );
        assert_eq!(
            image.remove_topic("orders").map(|t| t.partitions.len()),
            Ok(2)
        );
        assert_eq!(image.remove_topic("orders"), Err(ImageError::UnknownTopic));
    }

    #[test]
    fn a_moved_broker_is_advertised_at_its_new_address() {
        let mut image = MetadataImage::single_node("sluice", endpoint(0));
        image.set_endpoint(BrokerEndpoint {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 40_000,
        });
        let coordinator = image.group_coordinator("g").expect("coordinator");
        assert_eq!(
            (coordinator.host.as_str(), coordinator.port),
            ("127.0.0.1", 40_000)
        );
        assert_eq!(image.brokers().count(), 1);
    }

    #[test]
    fn replaying_records_builds_the_image_and_leader_changes_bump_the_epoch() {
        let replicas = |leader_id, isr: &[i32]| PartitionImage {
            leader_id,
            leader_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        let mut image = MetadataImage::single_node("sluice", endpoint(1));
        let records = [
            MetadataRecord::RegisterBroker(endpoint(2)),
            MetadataRecord::RegisterBroker(endpoint(3)),
            MetadataRecord::Topic {
                name: "orders".into(),
                internal: false,
                partitions: vec![replicas(1, &[1, 2, 3]), replicas(2, &[2, 3])],
                configs: TopicConfigs::new(),
            },
            // ISR shrinks: same leader, same epoch.
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 0,
                leader_id: 1,
                isr: vec![1, 2],
            },
            // Failover: a new leader, the next epoch.
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 0,
                leader_id: 2,
                isr: vec![2],
            },
        ];
        for record in &records {
            image.apply(record).expect("valid record");
        }
        assert_eq!(image.brokers().count(), 3);
        let partition = &image.topic("orders").expect("topic").partitions[0];
        assert_eq!((partition.leader_id, partition.leader_epoch), (2, 1));
        assert_eq!(partition.isr, [2]);

        // Refused records change nothing.
        let before = image.clone();
        let bad = [
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 0,
                leader_id: 3,
                isr: vec![2],
            },
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 0,
                leader_id: 4,
                isr: vec![4],
            },
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 7,
                leader_id: 2,
                isr: vec![2],
            },
            MetadataRecord::PartitionChange {
                topic: "gone".into(),
                partition: 0,
                leader_id: 2,
                isr: vec![2],
            },
        ];
        let errors: Vec<ImageError> = bad
            .iter()
            .map(|record| image.apply(record).expect_err("refused"))
            .collect();
        assert_eq!(
            errors,
            [
                ImageError::InvalidLeadership,
                ImageError::InvalidLeadership,
                ImageError::UnknownPartition,
                ImageError::UnknownTopic
            ]
        );
        assert_eq!(image, before);
        image
            .apply(&MetadataRecord::RemoveTopic {
                name: "orders".into(),
            })
            .expect("remove");
        assert!(image.topic_names().is_empty());
    }

    #[test]
    fn a_restarted_broker_leads_on_in_a_new_leader_epoch() {
        let mut image = MetadataImage::single_node("sluice", endpoint(1));
        let partition = |leader_id, isr: &[i32]| PartitionImage {
            leader_id,
            leader_epoch: 3,
            replicas: vec![1, 2],
            isr: isr.to_vec(),
        };
        let records = [
            MetadataRecord::RegisterBroker(endpoint(2)),
            MetadataRecord::Topic {
                name: "t".into(),
                internal: false,
                partitions: vec![partition(1, &[1]), partition(2, &[2, 1])],
                configs: TopicConfigs::new(),
            },
            MetadataRecord::BrokerIncarnation {
                node_id: 1,
                incarnation: 1,
            },
        ];
        for record in &records {
            image.apply(record).expect("valid record");
        }
        let epochs = |image: &MetadataImage| {
            let topic = image.topic("t").expect("topic");
            (
                topic.partitions[0].leader_epoch,
                topic.partitions[1].leader_epoch,
                image.partition_epoch("t", 0),
            )
        };
        // A first registration, or the same incarnation again, bumps nothing.
        assert_eq!(epochs(&image), (3, 3, 0));
        image.apply(&records[2]).expect("same incarnation");
        assert_eq!(epochs(&image), (3, 3, 0));
        // A restart: only what it leads moves to the next epoch.
        image
            .apply(&MetadataRecord::BrokerIncarnation {
                node_id: 1,
                incarnation: 2,
            })
            .expect("restart");
        assert_eq!(epochs(&image), (4, 3, 1));
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let records = [
            MetadataRecord::RegisterBroker(endpoint(2)),
            MetadataRecord::Topic {
                name: "orders".into(),
                internal: false,
                partitions: vec![
                    PartitionImage::single_replica(1),
                    PartitionImage {
                        leader_id: 2,
                        leader_epoch: 4,
                        replicas: vec![2, 3, 1],
                        isr: vec![2, 3],
                    },
                ],
                configs: TopicConfigs::new(),
            },
            MetadataRecord::Topic {
                name: "configured".into(),
                internal: false,
                partitions: vec![PartitionImage::single_replica(1)],
                configs: TopicConfigs::from([("retention.ms".into(), "60000".into())]),
            },
            MetadataRecord::TopicConfigs {
                name: "orders".into(),
                configs: TopicConfigs::from([
                    ("retention.ms".into(), "60000".into()),
                    ("cleanup.policy".into(), "delete".into()),
                ]),
            },
            MetadataRecord::TopicConfigs {
                name: "orders".into(),
                configs: TopicConfigs::new(),
            },
            MetadataRecord::AddPartitions {
                topic: "orders".into(),
                partitions: vec![PartitionImage::single_replica(3)],
            },
            MetadataRecord::PartitionChange {
                topic: "orders".into(),
                partition: 1,
                leader_id: 3,
                isr: vec![3],
            },
            MetadataRecord::RemoveTopic {
                name: "orders".into(),
            },
        ];
        for record in &records {
            let bytes = record.encode();
            assert_eq!(MetadataRecord::decode(&bytes).as_ref(), Ok(record));
            for cut in 0..bytes.len() {
                assert!(MetadataRecord::decode(&bytes[..cut]).is_err(), "{cut}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(MetadataRecord::decode(&longer).is_err());
        }
        // A list length far beyond the bytes is refused before allocating.
        let huge = [0u8, 3, 0xff, 0xff, 0xff, 0xff];
        assert!(MetadataRecord::decode(&huge).is_err());
        assert!(MetadataRecord::decode(&[1, 0]).is_err());
        assert!(MetadataRecord::decode(&[0, 9]).is_err());
    }

    #[test]
    fn an_isr_without_its_leader_is_refused() {
        let mut image = MetadataImage::single_node("sluice", endpoint(0));
        let refused = image.add_topic(
            "t",
            false,
            vec![PartitionImage {
                leader_id: 0,
                leader_epoch: 0,
                replicas: vec![0, 1],
                isr: vec![1],
            }],
        );
        assert_eq!(refused, Err(ImageError::InvalidLeadership));
        assert!(image.topic("t").is_none());
    }
}
