//! Committed offsets: validating an OffsetCommit against the group, holding
//! it until it is durable, applying it, and forgetting a deleted topic's
//! offsets with tombstones.

use kafka_protocol::error::ResponseError;

use super::{
    code, Durable, Effect, Group, GroupCoordinator, GroupState, Pending, WaiterId, NO_CONNECTION,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// An OffsetCommit, as far as the group is concerned.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The connection the request arrived on (see [`NO_CONNECTION`]).
    pub connection: u64,
    /// The partitions that passed the shell's own checks (the topic exists).
    pub offsets: Vec<(String, i32, CommittedOffset)>,
}

impl GroupCoordinator {
    /// Checks that an OffsetCommit may be applied, per Kafka's rules: a
    /// simple (generation -1, no member) commit only to a group without
    /// members; otherwise a known member of the current generation, and not
    /// while the group awaits its assignment. A member's commit that arrives
    /// on a connection older than one it has since used is refused too (see
    /// `Member::connection`).
    pub fn validate_offset_commit(&self, request: &CommitRequest) -> Result<(), i16> {
        if request.group_id.is_empty() {
            return Err(code(ResponseError::InvalidGroupId));
        }
        if self
            .groups
            .get(&request.group_id)
            .is_some_and(|group| group.deleting)
        {
            return Err(code(ResponseError::CoordinatorNotAvailable));
        }
        let Some(group) = self.groups.get(&request.group_id) else {
            return if request.generation_id < 0 {
                Ok(())
            } else {
                Err(code(ResponseError::IllegalGeneration))
            };
        };
        if request.generation_id < 0 && request.member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(code(ResponseError::UnknownMemberId))
            };
        }
        if crate::planted!(StaleGenerationCommit) && request.generation_id >= 0 {
            // Planted: any member id and generation will do.
            return Ok(());
        }
        if group.fenced_instance(request.group_instance_id.as_deref(), &request.member_id) {
            return Err(code(ResponseError::FencedInstanceId));
        }
        let Some(member) = group.members.get(&request.member_id) else {
            return Err(code(ResponseError::UnknownMemberId));
        };
        if request.generation_id != group.generation_id {
            return Err(code(ResponseError::IllegalGeneration));
        }
        if group.state == GroupState::CompletingRebalance
            || (group.state == GroupState::PreparingRebalance && group.completion_due)
        {
            return Err(code(ResponseError::RebalanceInProgress));
        }
        if request.connection != NO_CONNECTION && request.connection < member.connection {
            // The client timed this request out and moved to a newer
            // connection; what it sends there supersedes this.
            return Err(code(ResponseError::RequestTimedOut));
        }
        Ok(())
    }

    /// OffsetCommit. On success the offsets come out as an
    /// [`Effect::Persist`], and the answer, [`Effect::CompleteCommit`] for
    /// `waiter`, waits until they are durable and applied.
    pub fn offset_commit(&mut self, waiter: WaiterId, request: CommitRequest) -> Vec<Effect> {
        if let Err(error) = self.validate_offset_commit(&request) {
            return vec![Effect::CompleteCommit(waiter, Err(error))];
        }
        if request.offsets.is_empty() {
            return vec![Effect::CompleteCommit(waiter, Ok(()))];
        }
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if let Some(member) = group.members.get_mut(&request.member_id) {
            member.connection = member.connection.max(request.connection);
        }
        group.persists_pending += 1;
        let effect = self.persist(
            Pending::Commit {
                group_id: request.group_id.clone(),
                waiter,
                offsets: request.offsets.clone(),
            },
            Durable::Offsets {
                group_id: request.group_id,
                offsets: request.offsets,
            },
        );
        vec![effect]
    }

    /// Applies committed offsets (once durable, or while replaying them on
    /// start).
    pub fn apply_offset_commit(
        &mut self,
        group_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        for (topic, partition, committed) in offsets {
            group.offsets.insert((topic, partition), committed);
        }
    }

    /// Forgets one committed offset (a tombstone read back on start).
    pub fn apply_offset_tombstone(&mut self, group_id: &str, topic: &str, partition: i32) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.offsets.remove(&(topic.to_string(), partition));
        }
    }

    pub fn committed_offset(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group, in (topic, partition) order.
    pub fn committed_offsets(&self, group_id: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.groups
            .get(group_id)
            .map(|group| {
                group
                    .offsets
                    .iter()
                    .map(|((topic, partition), committed)| {
                        (topic.clone(), *partition, committed.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every group's offsets of a deleted topic at once, and emits
    /// their tombstones so a restart cannot bring them back. `waiter`, if
    /// any, hears [`Effect::CompletePersist`] once the last group's
    /// tombstones are durable (at once when there were none).
    pub fn remove_topic(&mut self, topic: &str, waiter: Option<WaiterId>) -> Vec<Effect> {
        let mut writes = Vec::new();
        for (group_id, group) in &mut self.groups {
            let partitions: Vec<(String, i32)> = group
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            if partitions.is_empty() {
                continue;
            }
            for key in &partitions {
                group.offsets.remove(key);
            }
            group.persists_pending += 1;
            writes.push((group_id.clone(), partitions));
        }
        let last = writes.len();
        let mut effects = Vec::new();
        for (index, (group_id, partitions)) in writes.into_iter().enumerate() {
            let effect = self.persist(
                Pending::Tombstones {
                    group_id: group_id.clone(),
                    waiter: waiter.filter(|_| index + 1 == last),
                },
                Durable::OffsetTombstones {
                    group_id,
                    partitions,
                },
            );
            effects.push(effect);
        }
        if last == 0 {
            if let Some(waiter) = waiter {
                effects.push(Effect::CompletePersist(waiter, Ok(())));
            }
        }
        effects
    }

    /// OffsetDelete: forgets a group's committed offsets for `partitions`,
    /// as Kafka allows it. The group must exist (else GROUP_ID_NOT_FOUND);
    /// a group with members may lose only offsets of topics no member
    /// subscribes to (others are GROUP_SUBSCRIBED_TO_TOPIC), and only if
    /// it uses the consumer protocol (else NON_EMPTY_GROUP). Returns each
    /// partition's error code (0: deleted, or there was nothing to delete)
    /// and the effects: the tombstones, then [`Effect::CompletePersist`]
    /// for `waiter` once they are durable (at once when there are none).
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        waiter: WaiterId,
    ) -> (Result<Vec<i16>, i16>, Vec<Effect>) {
        let refuse = |error: ResponseError| {
            (
                Err(code(error)),
                vec![Effect::CompletePersist(waiter, Ok(()))],
            )
        };
        let Some(group) = self.groups.get_mut(group_id) else {
            return refuse(ResponseError::GroupIdNotFound);
        };
        if group.deleting {
            return refuse(ResponseError::CoordinatorNotAvailable);
        }
        let subscribed: Option<std::collections::BTreeSet<String>> = if group.members.is_empty() {
            Some(std::collections::BTreeSet::new())
        } else if group.protocol_type.as_deref() == Some("consumer") {
            let protocol = group.protocol_name.clone().unwrap_or_default();
            Some(
                group
                    .members
                    .values()
                    .filter_map(|member| {
                        let (_, metadata) = member
                            .protocols
                            .iter()
                            .find(|(name, _)| *name == protocol)?;
                        crate::client::assignor::decode_subscription(metadata).ok()
                    })
                    .flat_map(|subscription| subscription.topics)
                    .collect(),
            )
        } else {
            None
        };
        let Some(subscribed) = subscribed else {
            return refuse(ResponseError::NonEmptyGroup);
        };
        let mut codes = Vec::with_capacity(partitions.len());
        let mut deleted = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(topic) {
                codes.push(code(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            codes.push(0);
            if group.offsets.remove(&(topic.clone(), *partition)).is_some() {
                deleted.push((topic.clone(), *partition));
            }
        }
        if deleted.is_empty() {
            return (Ok(codes), vec![Effect::CompletePersist(waiter, Ok(()))]);
        }
        group.persists_pending += 1;
        let effect = self.persist(
            Pending::Tombstones {
                group_id: group_id.to_string(),
                waiter: Some(waiter),
            },
            Durable::OffsetTombstones {
                group_id: group_id.to_string(),
                partitions: deleted,
            },
        );
        (Ok(codes), vec![effect])
    }
}
