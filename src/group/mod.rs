//! The consumer-group coordinator for Kafka's classic protocol, as a plain
//! state machine: it takes requests and the current time, and returns the
//! responses to deliver to parked JoinGroup and SyncGroup callers as values.
//! The broker shell owns the waiting (oneshot channels) and the persistence
//! of offsets. Invariant: nothing under `src/group` awaits, spawns or reads a
//! clock.
//!
//! Group states follow Kafka: Empty -> PreparingRebalance ->
//! CompletingRebalance -> Stable, and back to PreparingRebalance when a member
//! joins, leaves or expires. A member that does not rejoin before the
//! rebalance deadline (its `rebalance.timeout.ms`, which the Java client sets
//! to `max.poll.interval.ms`) is removed, which is how a consumer slower than
//! `max.poll.interval.ms` loses its partitions.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

/// Identifies a parked JoinGroup or SyncGroup call in the shell.
pub type WaiterId = u64;

/// Sentinel values Kafka uses for "no generation / no member".
pub const NO_GENERATION: i32 = -1;

/// Caps the members of one group, so one group cannot take the broker's memory.
pub const MAX_MEMBERS_PER_GROUP: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as DescribeGroups and ListGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the
    /// chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// What the shell must do after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CompleteJoin(WaiterId, JoinResult),
    CompleteSync(WaiterId, SyncResult),
    /// A rebalance completed: persist the generation so it survives a restart.
    GenerationChanged {
        group_id: String,
        generation_id: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    join_waiter: Option<WaiterId>,
    sync_waiter: Option<WaiterId>,
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When the current PreparingRebalance ends regardless of stragglers.
    rebalance_deadline_ms: i64,
    /// True while a group that was Empty waits out
    /// `group.initial.rebalance.delay.ms` for more members to arrive.
    in_initial_delay: bool,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            in_initial_delay: false,
            offsets: BTreeMap::new(),
        }
    }
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Member ids are `<client.id>-<counter>`: unique and deterministic.
    next_member_number: u64,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            next_member_number: 0,
        }
    }

    fn join_error(member_id: &str, error: ResponseError) -> JoinResult {
        JoinResult {
            error_code: code(error),
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }

    fn sync_error(error: ResponseError) -> SyncResult {
        SyncResult {
            error_code: code(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }

    /// JoinGroup. The answer comes back as an [`Effect::CompleteJoin`] for
    /// `waiter`, now or from a later call or [`GroupCoordinator::tick`].
    pub fn join(&mut self, now_ms: i64, waiter: WaiterId, request: JoinRequest) -> Vec<Effect> {
        let fail = |error| {
            vec![Effect::CompleteJoin(
                waiter,
                Self::join_error(&request.member_id, error),
            )]
        };
        if request.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            *group = Group::new();
        }
        if !group.members.is_empty() {
            if group.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
            let shares_a_protocol = request.protocols.iter().any(|(name, _)| {
                group
                    .members
                    .iter()
                    .filter(|(id, _)| **id != request.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(other, _)| other == name))
            });
            if !shares_a_protocol {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        let member_id = if request.member_id.is_empty() {
            if group.members.len() >= MAX_MEMBERS_PER_GROUP {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            self.next_member_number += 1;
            format!("{}-{}", request.client_id, self.next_member_number)
        } else if group.members.contains_key(&request.member_id) {
            request.member_id.clone()
        } else {
            return fail(ResponseError::UnknownMemberId);
        };
        let group = self
            .groups
            .get_mut(&request.group_id)
            .expect("inserted above");
        let mut effects = Vec::new();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms.max(request.session_timeout_ms);
        member.protocols = request.protocols;
        member.last_heartbeat_ms = now_ms;
        if let Some(previous) = member.join_waiter.replace(waiter) {
            // The same member joined twice (a retry after a timeout): the older
            // call is told to rejoin rather than left hanging.
            effects.push(Effect::CompleteJoin(
                previous,
                Self::join_error(&member_id, ResponseError::RebalanceInProgress),
            ));
        }
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(request.protocol_type);
        }
        match group.state {
            GroupState::PreparingRebalance => {}
            GroupState::Empty => {
                group.state = GroupState::PreparingRebalance;
                group.rebalance_deadline_ms = now_ms + self.config.initial_rebalance_delay_ms;
                group.in_initial_delay = self.config.initial_rebalance_delay_ms > 0;
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                Self::prepare_rebalance(group, now_ms, &mut effects);
            }
            GroupState::Dead => unreachable!("dead groups are reset above"),
        }
        if !group.in_initial_delay && group.members.values().all(|m| m.join_waiter.is_some()) {
            effects.extend(Self::complete_join(&request.group_id, group, now_ms));
        }
        effects
    }

    fn prepare_rebalance(group: &mut Group, now_ms: i64, effects: &mut Vec<Effect>) {
        for member in group.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                effects.push(Effect::CompleteSync(
                    waiter,
                    Self::sync_error(ResponseError::RebalanceInProgress),
                ));
            }
        }
        let longest = group
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        group.state = GroupState::PreparingRebalance;
        group.rebalance_deadline_ms = now_ms + longest;
    }

    /// Ends PreparingRebalance: members that did not rejoin are removed, the
    /// generation moves on, and every parked JoinGroup is answered.
    fn complete_join(group_id: &str, group: &mut Group, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        group.in_initial_delay = false;
        group.members.retain(|member_id, member| {
            let rejoined = member.join_waiter.is_some();
            if !rejoined {
                tracing::info!(
                    group_id,
                    member_id,
                    "member removed: did not rejoin in time"
                );
            }
            rejoined
        });
        group.generation_id += 1;
        effects.push(Effect::GenerationChanged {
            group_id: group_id.to_string(),
            generation_id: group.generation_id,
        });
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader = None;
            group.protocol_name = None;
            return effects;
        }
        // The first protocol, in the order of the first member's preference,
        // that every member supports.
        let first = group.members.values().next().expect("non-empty");
        let chosen = first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                group
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(other, _)| other == name))
            })
            .expect("join admits only members sharing a protocol");
        if !group
            .leader
            .as_ref()
            .is_some_and(|leader| group.members.contains_key(leader))
        {
            group.leader = group.members.keys().next().cloned();
        }
        let leader = group
            .leader
            .clone()
            .expect("a non-empty group has a leader");
        group.protocol_name = Some(chosen.clone());
        group.state = GroupState::CompletingRebalance;
        let roster: Vec<(String, Bytes)> = group
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == chosen)
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default();
                (id.clone(), metadata)
            })
            .collect();
        for (member_id, member) in &mut group.members {
            member.last_heartbeat_ms = now_ms;
            member.assignment = Bytes::new();
            let waiter = member.join_waiter.take().expect("all members rejoined");
            effects.push(Effect::CompleteJoin(
                waiter,
                JoinResult {
                    error_code: 0,
                    generation_id: group.generation_id,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: Some(chosen.clone()),
                    leader: leader.clone(),
                    member_id: member_id.clone(),
                    members: if *member_id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
        effects
    }

    /// SyncGroup. The leader's call carries every member's assignment.
    pub fn sync(
        &mut self,
        now_ms: i64,
        waiter: WaiterId,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Vec<Effect> {
        let fail = |error| vec![Effect::CompleteSync(waiter, Self::sync_error(error))];
        let Some(group) = self.groups.get_mut(group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if generation_id != group.generation_id {
            return fail(ResponseError::IllegalGeneration);
        }
        member.last_heartbeat_ms = now_ms;
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => vec![Effect::CompleteSync(
                waiter,
                SyncResult {
                    error_code: 0,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                },
            )],
            GroupState::CompletingRebalance => {
                let mut effects = Vec::new();
                if let Some(previous) = member.sync_waiter.replace(waiter) {
                    effects.push(Effect::CompleteSync(
                        previous,
                        Self::sync_error(ResponseError::RebalanceInProgress),
                    ));
                }
                if group.leader.as_deref() != Some(member_id) {
                    return effects;
                }
                let mut assignments: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in &mut group.members {
                    member.assignment = assignments.remove(id).unwrap_or_default();
                }
                group.state = GroupState::Stable;
                for member in group.members.values_mut() {
                    if let Some(waiter) = member.sync_waiter.take() {
                        effects.push(Effect::CompleteSync(
                            waiter,
                            SyncResult {
                                error_code: 0,
                                protocol_type: group.protocol_type.clone(),
                                protocol_name: group.protocol_name.clone(),
                                assignment: member.assignment.clone(),
                            },
                        ));
                    }
                }
                effects
            }
        }
    }

    /// Heartbeat. Returns the error code.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        member.last_heartbeat_ms = now_ms;
        if generation_id != group.generation_id {
            return code(ResponseError::IllegalGeneration);
        }
        match group.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            _ => 0,
        }
    }

    /// LeaveGroup for some members. Returns an error code per member.
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_ids: &[String],
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (
                vec![code(ResponseError::UnknownMemberId); member_ids.len()],
                effects,
            );
        };
        let mut codes = Vec::with_capacity(member_ids.len());
        let mut removed_any = false;
        for member_id in member_ids {
            match group.members.remove(member_id) {
                Some(member) => {
                    removed_any = true;
                    if let Some(waiter) = member.join_waiter {
                        effects.push(Effect::CompleteJoin(
                            waiter,
                            Self::join_error(member_id, ResponseError::UnknownMemberId),
                        ));
                    }
                    if let Some(waiter) = member.sync_waiter {
                        effects.push(Effect::CompleteSync(
                            waiter,
                            Self::sync_error(ResponseError::UnknownMemberId),
                        ));
                    }
                    codes.push(0);
                }
                None => codes.push(code(ResponseError::UnknownMemberId)),
            }
        }
        if removed_any {
            effects.extend(Self::membership_changed(group_id, group, now_ms));
        }
        (codes, effects)
    }

    fn membership_changed(group_id: &str, group: &mut Group, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if group.members.is_empty() {
                    group.state = GroupState::Empty;
                    group.leader = None;
                    group.generation_id += 1;
                    effects.push(Effect::GenerationChanged {
                        group_id: group_id.to_string(),
                        generation_id: group.generation_id,
                    });
                } else {
                    Self::prepare_rebalance(group, now_ms, &mut effects);
                }
            }
            GroupState::PreparingRebalance => {
                if !group.in_initial_delay
                    && group.members.values().all(|m| m.join_waiter.is_some())
                {
                    effects.extend(Self::complete_join(group_id, group, now_ms));
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
        effects
    }

    /// Advances time: expires members whose session lapsed and completes
    /// rebalances whose deadline passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (group_id, group) in &mut self.groups {
            // A member parked in JoinGroup is alive by definition; any other
            // member whose session lapsed is gone, in every state. (During a
            // rebalance this is what lets it finish without waiting for the
            // full rebalance timeout when a member crashed.)
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in &expired {
                tracing::info!(group_id, member_id, "member session expired");
                let member = group.members.remove(member_id).expect("listed above");
                if let Some(waiter) = member.sync_waiter {
                    effects.push(Effect::CompleteSync(
                        waiter,
                        Self::sync_error(ResponseError::UnknownMemberId),
                    ));
                }
            }
            if group.state == GroupState::PreparingRebalance
                && now_ms >= group.rebalance_deadline_ms
            {
                effects.extend(Self::complete_join(group_id, group, now_ms));
            } else if !expired.is_empty() {
                effects.extend(Self::membership_changed(group_id, group, now_ms));
            }
        }
        effects
    }

    /// Checks that an OffsetCommit may be applied, per Kafka's rules: a
    /// simple (generation -1, no member) commit only to a group without
    /// members; otherwise a known member of the current generation, and not
    /// while the group awaits its assignment.
    pub fn validate_offset_commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
    ) -> Result<(), i16> {
        if group_id.is_empty() {
            return Err(code(ResponseError::InvalidGroupId));
        }
        let Some(group) = self.groups.get(group_id) else {
            return if generation_id < 0 {
                Ok(())
            } else {
                Err(code(ResponseError::IllegalGeneration))
            };
        };
        if generation_id < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(code(ResponseError::UnknownMemberId))
            };
        }
        if crate::planted!(StaleGenerationCommit) && generation_id >= 0 {
            // Planted: any member id and generation will do.
            return Ok(());
        }
        if !group.members.contains_key(member_id) {
            return Err(code(ResponseError::UnknownMemberId));
        }
        if generation_id != group.generation_id {
            return Err(code(ResponseError::IllegalGeneration));
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(code(ResponseError::RebalanceInProgress));
        }
        Ok(())
    }

    /// Applies committed offsets (after the shell has made them durable, or
    /// while replaying them on start).
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

    /// Restores a persisted generation on start, so generations never repeat.
    pub fn restore_generation(&mut self, group_id: &str, generation_id: i32) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        group.generation_id = group.generation_id.max(generation_id);
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

    /// Forgets offsets of a deleted topic.
    pub fn remove_topic(&mut self, topic: &str) {
        for group in self.groups.values_mut() {
            group.offsets.retain(|(t, _), _| t != topic);
        }
    }

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                generation_id: NO_GENERATION,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol_name = group.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group_id.to_string(),
            state: group.state,
            generation_id: group.generation_id,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol_name.clone(),
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol_name)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Every group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
