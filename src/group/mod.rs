//! The consumer-group coordinator for Kafka's classic protocol, as a plain
//! state machine: it takes requests and the current time, and returns what
//! the shell must do as [`Effect`] values. Invariant: nothing under
//! `src/group` awaits, spawns or reads a clock.
//!
//! Group states follow Kafka: Empty -> PreparingRebalance ->
//! CompletingRebalance -> Stable, and back to PreparingRebalance when a member
//! joins, leaves or expires. A member that does not rejoin before the
//! rebalance deadline (its `rebalance.timeout.ms`, which the Java client sets
//! to `max.poll.interval.ms`) is removed, which is how a consumer slower than
//! `max.poll.interval.ms` loses its partitions.
//!
//! Durability is ordered here, not in the shell, in the manner of raft-rs's
//! `Ready`: a new generation and an offset commit come out as
//! [`Effect::Persist`], and the answers that depend on them are held back
//! until the shell reports the write durable with
//! [`GroupCoordinator::on_persisted`]. While a group has an offset commit
//! being persisted, its rebalance cannot complete, so a commit validated for
//! one generation is always applied before the next generation's members
//! can read the group's offsets.
//!
//! Static members (KIP-345) carry a `group.instance.id`: one that rejoins
//! under a new member id takes over its old membership and assignment
//! without a rebalance, and the old member id is fenced with
//! FENCED_INSTANCE_ID.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use crate::observe::{Fact, RemovalReason};

mod offsets;
#[cfg(test)]
mod tests;

pub use offsets::{CommitRequest, CommittedOffset};

/// Identifies a parked JoinGroup, SyncGroup or OffsetCommit call in the shell.
pub type WaiterId = u64;

/// Identifies one write the shell must make durable.
pub type PersistId = u64;

/// Sentinel values Kafka uses for "no generation / no member".
pub const NO_GENERATION: i32 = -1;

/// Caps the members of one group, so one group cannot take the broker's memory.
pub const MAX_MEMBERS_PER_GROUP: usize = 1000;

/// Connection id of a request whose connection is unknown (replay, tests):
/// never fenced.
pub const NO_CONNECTION: u64 = 0;

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
    /// Distinguishes this coordinator from every other that ran or will
    /// run: the broker's start count on a single node, and in a cluster the
    /// node, its start count and the offsets partition's leader epoch it
    /// loaded in. Member ids handed out by one coordinator then never repeat
    /// another's, so a member left over from an earlier coordinator can
    /// never pass for a newer one.
    pub member_id_scope: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            member_id_scope: "0".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    /// `group.instance.id`: set by static members.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// The connection the request arrived on (see [`NO_CONNECTION`]).
    pub connection: u64,
    /// KIP-394 (JoinGroup v4+): a dynamic member joining without a member id
    /// gets one with MEMBER_ID_REQUIRED and must join again with it, so a
    /// join whose answer is lost never leaves a member behind.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its instance id and its
    /// metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A write the shell makes durable (in `__consumer_offsets`) before the
/// answers that depend on it go out.
#[derive(Debug, Clone, PartialEq)]
pub enum Durable {
    /// A rebalance completed with this generation.
    Generation {
        group_id: String,
        generation_id: i32,
    },
    /// Committed offsets.
    Offsets {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// Offsets deleted with their topic, or by OffsetDelete: tombstones,
    /// so a restart does not bring them back.
    OffsetTombstones {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    /// A group deleted (DeleteGroups): its offsets' tombstones, then its
    /// generation's, after which a restart knows nothing of it.
    GroupTombstone {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
}

/// What the shell must do after a call, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CompleteJoin(WaiterId, JoinResult),
    CompleteSync(WaiterId, SyncResult),
    /// The answer to an OffsetCommit: `Ok` when every accepted partition is
    /// durable, else the error code for all of them.
    CompleteCommit(WaiterId, Result<(), i16>),
    /// The answer to a caller waiting for tombstones (topic deletion).
    CompletePersist(WaiterId, Result<(), i16>),
    /// Make this durable, then call [`GroupCoordinator::on_persisted`].
    Persist(PersistId, Durable),
    /// Tell the observer.
    Report(Fact),
}

#[derive(Debug, Clone)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    join_waiter: Option<WaiterId>,
    sync_waiter: Option<WaiterId>,
    /// The newest connection this member's requests arrived on. A commit
    /// arriving on an older connection was sent before the client gave that
    /// connection up (a request delayed in the network past the client's
    /// timeout); applying it would move the group's offset back under a
    /// newer commit, so it is refused.
    connection: u64,
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` -> member id of the static members.
    static_members: BTreeMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, not yet
    /// joined, with when they lapse (a session timeout after).
    pending_members: BTreeMap<String, i64>,
    /// When the current PreparingRebalance ends regardless of stragglers.
    rebalance_deadline_ms: i64,
    /// True while a group that was Empty waits out
    /// `group.initial.rebalance.delay.ms` for more members to arrive.
    in_initial_delay: bool,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Writes of this group not yet durable. While any is pending the
    /// rebalance may not complete (see the module comment).
    persists_pending: usize,
    /// The rebalance is due to complete (everyone rejoined, or its deadline
    /// passed) and waits only for writes in flight. New commits are refused
    /// with REBALANCE_IN_PROGRESS meanwhile, or a member committing without
    /// pause (each commit waiting on replication) could hold the rebalance
    /// off for ever.
    completion_due: bool,
    /// DeleteGroups is writing this group's tombstones: joins and commits
    /// are refused (COORDINATOR_NOT_AVAILABLE, which clients retry) until
    /// the group is gone, or back if the write failed.
    deleting: bool,
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
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            in_initial_delay: false,
            offsets: BTreeMap::new(),
            persists_pending: 0,
            completion_due: false,
            deleting: false,
        }
    }

    /// Whether `member_id` is fenced as the old id of a static member.
    fn fenced_instance(&self, instance: Option<&str>, member_id: &str) -> bool {
        instance
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|current| current != member_id)
    }
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
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

/// One member named in a LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A write in flight and what waits on it.
#[derive(Debug, Clone)]
enum Pending {
    Generation {
        group_id: String,
        generation_id: i32,
        answers: Vec<(WaiterId, JoinResult)>,
    },
    Commit {
        group_id: String,
        waiter: WaiterId,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    Tombstones {
        group_id: String,
        waiter: Option<WaiterId>,
    },
    GroupDeletion {
        group_id: String,
        waiter: WaiterId,
    },
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// When a rebalance that starts at `now_ms` ends whoever has rejoined.
fn rebalance_deadline(now_ms: i64, wait_ms: i64) -> i64 {
    if crate::planted!(RebalanceDeadlineIgnored) && wait_ms > 0 {
        // Planted: a multiplication where an addition belongs, so the
        // deadline lies far in the future.
        return now_ms.saturating_mul(wait_ms);
    }
    now_ms + wait_ms
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Member ids are `<client.id>-<member_id_scope>-<counter>`: unique
    /// across restarts and deterministic.
    next_member_number: u64,
    next_persist: PersistId,
    pending: BTreeMap<PersistId, Pending>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            ..Self::default()
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

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member_number += 1;
        format!(
            "{client_id}-{}-{}",
            self.config.member_id_scope, self.next_member_number
        )
    }

    fn persist(&mut self, pending: Pending, durable: Durable) -> Effect {
        self.next_persist += 1;
        let id = self.next_persist;
        self.pending.insert(id, pending);
        Effect::Persist(id, durable)
    }

    /// JoinGroup. The answer comes back as an [`Effect::CompleteJoin`] for
    /// `waiter`, now or from a later call.
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
        if request.group_instance_id.as_deref() == Some("") {
            return fail(ResponseError::InvalidRequest);
        }
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if group.deleting {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
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
        let instance = request.group_instance_id.clone();
        let known_static = instance
            .as_ref()
            .and_then(|instance| group.static_members.get(instance))
            .cloned();
        if !request.member_id.is_empty() {
            if group.fenced_instance(instance.as_deref(), &request.member_id) {
                return fail(ResponseError::FencedInstanceId);
            }
            if group.pending_members.remove(&request.member_id).is_some() {
                let member_id = request.member_id.clone();
                return self.add_member(now_ms, waiter, request, member_id);
            }
            if !group.members.contains_key(&request.member_id) {
                return fail(ResponseError::UnknownMemberId);
            }
            return self.rejoin(now_ms, waiter, request);
        }
        if known_static.is_none()
            && group.members.len() + group.pending_members.len() >= MAX_MEMBERS_PER_GROUP
        {
            return fail(ResponseError::GroupMaxSizeReached);
        }
        let member_id = self.new_member_id(&request.client_id);
        if instance.is_none() && request.require_known_member_id {
            let group = self
                .groups
                .get_mut(&request.group_id)
                .expect("inserted above");
            group.pending_members.insert(
                member_id.clone(),
                now_ms + i64::from(request.session_timeout_ms),
            );
            return vec![Effect::CompleteJoin(
                waiter,
                Self::join_error(&member_id, ResponseError::MemberIdRequired),
            )];
        }
        match known_static {
            Some(old_member_id) => {
                self.replace_static(now_ms, waiter, request, old_member_id, member_id)
            }
            None => self.add_member(now_ms, waiter, request, member_id),
        }
    }

    /// A member new to the group joins under `member_id`.
    fn add_member(
        &mut self,
        now_ms: i64,
        waiter: WaiterId,
        request: JoinRequest,
        member_id: String,
    ) -> Vec<Effect> {
        let group = self
            .groups
            .get_mut(&request.group_id)
            .expect("the caller created the group");
        let instance = request.group_instance_id.clone();
        if let Some(instance) = &instance {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.members.insert(
            member_id.clone(),
            Member {
                group_instance_id: instance,
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                join_waiter: None,
                sync_waiter: None,
                connection: request.connection,
            },
        );
        let request = JoinRequest {
            member_id,
            ..request
        };
        self.rejoin(now_ms, waiter, request)
    }

    /// A join by a member the group knows: record it and move the rebalance
    /// on.
    fn rejoin(&mut self, now_ms: i64, waiter: WaiterId, request: JoinRequest) -> Vec<Effect> {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let group_id = request.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("caller checked");
        let member_id = request.member_id.clone();
        let mut effects = Vec::new();
        let member = group.members.get_mut(&member_id).expect("caller checked");
        member.session_timeout_ms = request.session_timeout_ms;
        // Kafka's rule: the rebalance waits the member's own rebalance timeout
        // (its max.poll.interval.ms), which may be shorter than its session.
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.protocols = request.protocols;
        member.last_heartbeat_ms = now_ms;
        member.connection = member.connection.max(request.connection);
        if let Some(previous) = member.join_waiter.replace(waiter) {
            // The same member joined twice (a retry after a timeout): the older
            // call is told to rejoin rather than left hanging.
            effects.push(Effect::CompleteJoin(
                previous,
                Self::join_error(&member_id, ResponseError::RebalanceInProgress),
            ));
        }
        effects.push(Effect::Report(Fact::MemberJoined {
            group: group_id.clone(),
            member: member_id.clone(),
            instance: member.group_instance_id.clone(),
            session_timeout_ms: member.session_timeout_ms,
            rebalance_timeout_ms: member.rebalance_timeout_ms,
        }));
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(request.protocol_type);
        }
        match group.state {
            GroupState::PreparingRebalance => {}
            GroupState::Empty => {
                group.state = GroupState::PreparingRebalance;
                group.rebalance_deadline_ms = rebalance_deadline(now_ms, initial_delay_ms);
                group.in_initial_delay = initial_delay_ms > 0;
                effects.push(Self::rebalance_started(&group_id, group, now_ms));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                Self::prepare_rebalance(&group_id, group, now_ms, &mut effects);
            }
            GroupState::Dead => unreachable!("dead groups are reset on join"),
        }
        self.maybe_complete_join(&group_id, now_ms, &mut effects);
        effects
    }

    /// KIP-345: a static member came back under a new member id. It takes
    /// over the old membership; a Stable group keeps its generation and
    /// assignment, so nobody else rebalances.
    fn replace_static(
        &mut self,
        now_ms: i64,
        waiter: WaiterId,
        request: JoinRequest,
        old_member_id: String,
        member_id: String,
    ) -> Vec<Effect> {
        let group_id = request.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("caller checked");
        let mut effects = Vec::new();
        let mut member = group
            .members
            .remove(&old_member_id)
            .expect("a static member id maps to a member");
        for (old_waiter, is_join) in [
            (member.join_waiter.take(), true),
            (member.sync_waiter.take(), false),
        ] {
            if let Some(old_waiter) = old_waiter {
                effects.push(if is_join {
                    Effect::CompleteJoin(
                        old_waiter,
                        Self::join_error(&old_member_id, ResponseError::FencedInstanceId),
                    )
                } else {
                    Effect::CompleteSync(
                        old_waiter,
                        Self::sync_error(ResponseError::FencedInstanceId),
                    )
                });
            }
        }
        effects.push(Effect::Report(Fact::MemberRemoved {
            group: group_id.clone(),
            member: old_member_id.clone(),
            reason: RemovalReason::Replaced,
        }));
        let current_leader = group.leader.clone().unwrap_or_default();
        if group.leader.as_deref() == Some(old_member_id.as_str()) {
            group.leader = Some(member_id.clone());
        }
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.connection = request.connection;
        let protocols_unchanged = member.protocols == request.protocols;
        let instance = request
            .group_instance_id
            .clone()
            .expect("static members have an instance id");
        group.static_members.insert(instance, member_id.clone());
        group.members.insert(member_id.clone(), member);
        if group.state == GroupState::Stable && protocols_unchanged {
            let member = group.members.get_mut(&member_id).expect("inserted");
            member.session_timeout_ms = request.session_timeout_ms;
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            member.last_heartbeat_ms = now_ms;
            effects.push(Effect::Report(Fact::MemberJoined {
                group: group_id.clone(),
                member: member_id.clone(),
                instance: member.group_instance_id.clone(),
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
            }));
            // The old leader id goes back, so the returning member never
            // believes it must compute an assignment a Stable group would
            // not hand out; its SyncGroup returns the stored assignment.
            effects.push(Effect::CompleteJoin(
                waiter,
                JoinResult {
                    error_code: 0,
                    generation_id: group.generation_id,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    leader: current_leader,
                    member_id,
                    members: Vec::new(),
                },
            ));
            return effects;
        }
        let request = JoinRequest {
            member_id,
            ..request
        };
        effects.extend(self.rejoin(now_ms, waiter, request));
        effects
    }

    fn rebalance_started(group_id: &str, group: &Group, now_ms: i64) -> Effect {
        Effect::Report(Fact::RebalanceStarted {
            group: group_id.to_string(),
            generation: group.generation_id,
            now_ms,
            rebalance_timeout_ms: group.rebalance_deadline_ms - now_ms,
            deadline_ms: group.rebalance_deadline_ms,
        })
    }

    fn prepare_rebalance(
        group_id: &str,
        group: &mut Group,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
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
        group.rebalance_deadline_ms = rebalance_deadline(now_ms, longest);
        effects.push(Self::rebalance_started(group_id, group, now_ms));
    }

    /// Completes the rebalance of `group_id` if everyone has rejoined (or
    /// the deadline passed) and no write of the group is in flight.
    fn maybe_complete_join(&mut self, group_id: &str, now_ms: i64, effects: &mut Vec<Effect>) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let all_rejoined = group.members.values().all(|m| m.join_waiter.is_some());
        let due = group.state == GroupState::PreparingRebalance
            && ((!group.in_initial_delay && all_rejoined) || now_ms >= group.rebalance_deadline_ms);
        group.completion_due = due;
        if due && group.persists_pending == 0 {
            self.complete_join(group_id, now_ms, effects);
        }
    }

    /// Ends PreparingRebalance: members that did not rejoin are removed, the
    /// generation moves on and is persisted, and the parked JoinGroup
    /// answers wait for that write.
    fn complete_join(&mut self, group_id: &str, now_ms: i64, effects: &mut Vec<Effect>) {
        let group = self.groups.get_mut(group_id).expect("caller checked");
        group.in_initial_delay = false;
        group.completion_due = false;
        let stragglers: Vec<String> = group
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in stragglers {
            tracing::info!(
                group_id,
                member_id,
                "member removed: did not rejoin in time"
            );
            Self::remove_member(
                group_id,
                group,
                &member_id,
                RemovalReason::RebalanceTimeout,
                effects,
            );
        }
        group.generation_id += 1;
        let generation_id = group.generation_id;
        effects.push(Effect::Report(Fact::Generation {
            group: group_id.to_string(),
            generation: generation_id,
        }));
        let mut answers = Vec::new();
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader = None;
            group.protocol_name = None;
        } else {
            // The first protocol, in the order of the first member's
            // preference, that every member supports.
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
            let roster: Vec<(String, Option<String>, Bytes)> = group
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == chosen)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default();
                    (id.clone(), m.group_instance_id.clone(), metadata)
                })
                .collect();
            for (member_id, member) in &mut group.members {
                member.last_heartbeat_ms = now_ms;
                member.assignment = Bytes::new();
                let waiter = member.join_waiter.take().expect("all members rejoined");
                answers.push((
                    waiter,
                    JoinResult {
                        error_code: 0,
                        generation_id,
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
        }
        group.persists_pending += 1;
        let effect = self.persist(
            Pending::Generation {
                group_id: group_id.to_string(),
                generation_id,
                answers,
            },
            Durable::Generation {
                group_id: group_id.to_string(),
                generation_id,
            },
        );
        effects.push(effect);
    }

    /// Removes a member, answering its parked calls, and reports why.
    fn remove_member(
        group_id: &str,
        group: &mut Group,
        member_id: &str,
        reason: RemovalReason,
        effects: &mut Vec<Effect>,
    ) {
        let Some(member) = group.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.group_instance_id {
            if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
                group.static_members.remove(instance);
            }
        }
        let error = match reason {
            RemovalReason::Replaced => ResponseError::FencedInstanceId,
            _ => ResponseError::UnknownMemberId,
        };
        if let Some(waiter) = member.join_waiter {
            effects.push(Effect::CompleteJoin(
                waiter,
                Self::join_error(member_id, error),
            ));
        }
        if let Some(waiter) = member.sync_waiter {
            effects.push(Effect::CompleteSync(waiter, Self::sync_error(error)));
        }
        effects.push(Effect::Report(Fact::MemberRemoved {
            group: group_id.to_string(),
            member: member_id.to_string(),
            reason,
        }));
    }

    /// The shell made `persist` durable (`ok`) or failed to. Releases what
    /// waited on it, in order.
    pub fn on_persisted(&mut self, now_ms: i64, persist: PersistId, ok: bool) -> Vec<Effect> {
        let Some(pending) = self.pending.remove(&persist) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let group_id = match &pending {
            Pending::Generation { group_id, .. }
            | Pending::Commit { group_id, .. }
            | Pending::Tombstones { group_id, .. }
            | Pending::GroupDeletion { group_id, .. } => group_id.clone(),
        };
        if let Some(group) = self.groups.get_mut(&group_id) {
            group.persists_pending = group.persists_pending.saturating_sub(1);
        }
        match pending {
            Pending::Generation {
                group_id,
                generation_id,
                answers,
            } => {
                if !ok {
                    // A generation must be durable before any member hears of
                    // it, or a restart would hand the same number out again
                    // with another assignment. The members retry.
                    tracing::error!(
                        group_id,
                        generation_id,
                        "persisting a group generation failed; its members must rejoin"
                    );
                }
                for (waiter, mut result) in answers {
                    if !ok {
                        result = Self::join_error(
                            &result.member_id,
                            ResponseError::CoordinatorNotAvailable,
                        );
                    }
                    effects.push(Effect::CompleteJoin(waiter, result));
                }
            }
            Pending::Commit {
                group_id,
                waiter,
                offsets,
            } => {
                if ok {
                    self.apply_offset_commit(&group_id, offsets);
                    effects.push(Effect::CompleteCommit(waiter, Ok(())));
                } else {
                    effects.push(Effect::CompleteCommit(
                        waiter,
                        Err(code(ResponseError::CoordinatorNotAvailable)),
                    ));
                }
            }
            Pending::Tombstones { waiter, .. } => {
                if let Some(waiter) = waiter {
                    let result = if ok {
                        Ok(())
                    } else {
                        Err(code(ResponseError::KafkaStorageError))
                    };
                    effects.push(Effect::CompletePersist(waiter, result));
                }
            }
            Pending::GroupDeletion { group_id, waiter } => {
                let result = if ok {
                    self.groups.remove(&group_id);
                    Ok(())
                } else {
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        group.deleting = false;
                    }
                    Err(code(ResponseError::CoordinatorNotAvailable))
                };
                effects.push(Effect::CompletePersist(waiter, result));
                return effects;
            }
        }
        self.maybe_complete_join(&group_id, now_ms, &mut effects);
        effects
    }

    /// The coordinator hands its groups over: this broker stopped leading
    /// the offsets partition. Every parked JoinGroup, SyncGroup,
    /// OffsetCommit and tombstone write is answered NOT_COORDINATOR, so its
    /// caller looks the coordinator up again instead of waiting out its
    /// timeout. A write already in the offsets log may still land; its
    /// caller treats the outcome as unknown, as after a timeout. The shell
    /// drops this coordinator afterwards.
    pub fn resign(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for group in self.groups.values_mut() {
            for (member_id, member) in &mut group.members {
                if let Some(waiter) = member.join_waiter.take() {
                    effects.push(Effect::CompleteJoin(
                        waiter,
                        Self::join_error(member_id, ResponseError::NotCoordinator),
                    ));
                }
                if let Some(waiter) = member.sync_waiter.take() {
                    effects.push(Effect::CompleteSync(
                        waiter,
                        Self::sync_error(ResponseError::NotCoordinator),
                    ));
                }
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Generation { answers, .. } => {
                    for (waiter, answer) in answers {
                        effects.push(Effect::CompleteJoin(
                            waiter,
                            Self::join_error(&answer.member_id, ResponseError::NotCoordinator),
                        ));
                    }
                }
                Pending::Commit { waiter, .. } => effects.push(Effect::CompleteCommit(
                    waiter,
                    Err(code(ResponseError::NotCoordinator)),
                )),
                Pending::Tombstones {
                    waiter: Some(waiter),
                    ..
                }
                | Pending::GroupDeletion { waiter, .. } => effects.push(Effect::CompletePersist(
                    waiter,
                    Err(code(ResponseError::NotCoordinator)),
                )),
                Pending::Tombstones { waiter: None, .. } => {}
            }
        }
        self.groups.clear();
        effects
    }

    /// SyncGroup. The leader's call carries every member's assignment.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        now_ms: i64,
        waiter: WaiterId,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Vec<Effect> {
        let fail = |error| vec![Effect::CompleteSync(waiter, Self::sync_error(error))];
        let Some(group) = self.groups.get_mut(group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if group.fenced_instance(group_instance_id, member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
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
        group_instance_id: Option<&str>,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if group.fenced_instance(group_instance_id, member_id) {
            return code(ResponseError::FencedInstanceId);
        }
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

    /// LeaveGroup for some members, by member id or (static members) by
    /// instance id. Returns an error code per member.
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        leaving: &[LeavingMember],
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (
                vec![code(ResponseError::UnknownMemberId); leaving.len()],
                effects,
            );
        };
        let mut codes = Vec::with_capacity(leaving.len());
        let mut removed_any = false;
        for member in leaving {
            let target = match member.group_instance_id.as_deref() {
                Some(instance) => match group.static_members.get(instance) {
                    Some(current)
                        if !member.member_id.is_empty() && *current != member.member_id =>
                    {
                        codes.push(code(ResponseError::FencedInstanceId));
                        continue;
                    }
                    Some(current) => Some(current.clone()),
                    None => None,
                },
                None => group
                    .members
                    .contains_key(&member.member_id)
                    .then(|| member.member_id.clone()),
            };
            match target {
                Some(member_id) => {
                    Self::remove_member(
                        group_id,
                        group,
                        &member_id,
                        RemovalReason::Left,
                        &mut effects,
                    );
                    removed_any = true;
                    codes.push(0);
                }
                None => codes.push(code(ResponseError::UnknownMemberId)),
            }
        }
        if removed_any {
            self.membership_changed(group_id, now_ms, &mut effects);
        }
        (codes, effects)
    }

    fn membership_changed(&mut self, group_id: &str, now_ms: i64, effects: &mut Vec<Effect>) {
        let group = self.groups.get_mut(group_id).expect("caller checked");
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if group.members.is_empty() {
                    group.state = GroupState::Empty;
                    group.leader = None;
                    group.generation_id += 1;
                    let generation_id = group.generation_id;
                    group.persists_pending += 1;
                    effects.push(Effect::Report(Fact::Generation {
                        group: group_id.to_string(),
                        generation: generation_id,
                    }));
                    let effect = self.persist(
                        Pending::Generation {
                            group_id: group_id.to_string(),
                            generation_id,
                            answers: Vec::new(),
                        },
                        Durable::Generation {
                            group_id: group_id.to_string(),
                            generation_id,
                        },
                    );
                    effects.push(effect);
                } else {
                    Self::prepare_rebalance(group_id, group, now_ms, effects);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group_id, now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Advances time: expires members whose session lapsed and completes
    /// rebalances whose deadline passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let group_ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in group_ids {
            let group = self.groups.get_mut(&group_id).expect("listed above");
            group
                .pending_members
                .retain(|_, lapses_ms| *lapses_ms >= now_ms);
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
                        && !crate::planted!(SessionExpirySkipped)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in &expired {
                tracing::info!(group_id, member_id, "member session expired");
                Self::remove_member(
                    &group_id,
                    group,
                    member_id,
                    RemovalReason::SessionExpired,
                    &mut effects,
                );
            }
            if group.state == GroupState::PreparingRebalance
                && now_ms >= group.rebalance_deadline_ms
            {
                self.maybe_complete_join(&group_id, now_ms, &mut effects);
            } else if !expired.is_empty() {
                self.membership_changed(&group_id, now_ms, &mut effects);
            }
        }
        effects
    }

    /// DeleteGroups for one group: only an empty one (no members, no
    /// rebalance), else NON_EMPTY_GROUP; an unknown one is
    /// GROUP_ID_NOT_FOUND. Its offsets' and generation's tombstones are
    /// written (offsets still being committed included), and
    /// [`Effect::CompletePersist`] for `waiter` comes once they are durable
    /// and the group is gone.
    pub fn delete_group(&mut self, group_id: &str, waiter: WaiterId) -> Vec<Effect> {
        let refuse = |error| vec![Effect::CompletePersist(waiter, Err(code(error)))];
        if group_id.is_empty() {
            return refuse(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return refuse(ResponseError::GroupIdNotFound);
        };
        if group.deleting {
            return refuse(ResponseError::CoordinatorNotAvailable);
        }
        if !group.members.is_empty()
            || !group.pending_members.is_empty()
            || !matches!(group.state, GroupState::Empty | GroupState::Dead)
        {
            return refuse(ResponseError::NonEmptyGroup);
        }
        group.deleting = true;
        group.persists_pending += 1;
        let mut partitions: std::collections::BTreeSet<(String, i32)> =
            group.offsets.keys().cloned().collect();
        for pending in self.pending.values() {
            if let Pending::Commit {
                group_id: committing,
                offsets,
                ..
            } = pending
            {
                if committing == group_id {
                    partitions.extend(offsets.iter().map(|(t, p, _)| (t.clone(), *p)));
                }
            }
        }
        let effect = self.persist(
            Pending::GroupDeletion {
                group_id: group_id.to_string(),
                waiter,
            },
            Durable::GroupTombstone {
                group_id: group_id.to_string(),
                partitions: partitions.into_iter().collect(),
            },
        );
        vec![effect]
    }

    /// Forgets a group entirely: its generation's tombstone, read back on
    /// start.
    pub fn forget_group(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Restores a persisted generation on start, so generations never repeat.
    pub fn restore_generation(&mut self, group_id: &str, generation_id: i32) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        group.generation_id = group.generation_id.max(generation_id);
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
                    group_instance_id: m.group_instance_id.clone(),
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
