//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, DescribeGroups and ListGroups. Each hands the
//! request to the group coordinator core and waits, bounded, for its answer.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;

use crate::group::{JoinRequest, LeavingMember};

/// JoinGroup and SyncGroup wait for the rebalance; past this margin beyond
/// the rebalance timeout the broker answers rather than hold the connection.
const GROUP_WAIT_MARGIN_MS: u64 = 5_000;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;

/// All versions, 4 with batched keys.
pub(super) const FIND_COORDINATOR: Versions = (ApiKey::FindCoordinator, 0, 4);

/// All versions, KIP-394 member ids and KIP-345 static members included.
pub(super) const JOIN_GROUP: Versions = (ApiKey::JoinGroup, 0, 9);

/// All versions.
pub(super) const HEARTBEAT: Versions = (ApiKey::Heartbeat, 0, 4);

/// All versions, batched leaves by instance id included.
pub(super) const LEAVE_GROUP: Versions = (ApiKey::LeaveGroup, 0, 5);

/// All versions.
pub(super) const SYNC_GROUP: Versions = (ApiKey::SyncGroup, 0, 5);

/// All versions.
pub(super) const DESCRIBE_GROUPS: Versions = (ApiKey::DescribeGroups, 0, 5);

/// 0 through 4 (the state filter); 5 adds a type filter, not served yet.
/// 0 through 5; v5 filters by group type (KIP-848), and every sluice group
/// is a classic one.
pub(super) const LIST_GROUPS: Versions = (ApiKey::ListGroups, 0, 5);

/// The group type ListGroups v5 reports for every group: sluice speaks the
/// classic consumer group protocol only.
const CLASSIC_GROUP_TYPE: &str = "classic";

impl Broker {
    pub(super) async fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<FindCoordinatorResponse> {
        /// FindCoordinator key types: consumer groups, transactions.
        const GROUP_KEY_TYPE: i8 = 0;
        const TRANSACTION_KEY_TYPE: i8 = 1;
        // Transactions are not implemented. A retryable code would have
        // transactional clients wait out their timeouts; this fatal one
        // (the one InitProducerId answers) fails them at once.
        let (error_code, message) = match request.key_type {
            GROUP_KEY_TYPE => (0, None),
            TRANSACTION_KEY_TYPE => (
                ResponseError::TransactionalIdAuthorizationFailed.code(),
                Some("sluice does not implement transactions"),
            ),
            _ => (
                ResponseError::InvalidRequest.code(),
                Some("unknown key type"),
            ),
        };
        // The key's coordinator, from the metadata image; when none is known
        // yet, COORDINATOR_NOT_AVAILABLE, which clients retry.
        let answer = |key: &str| {
            let found = self.with_metadata(|image| {
                image.group_coordinator(key).map(|broker| {
                    (
                        BrokerId(broker.node_id),
                        str_bytes(&broker.host),
                        broker.port,
                    )
                })
            });
            let (error_code, message) = match (&found, error_code) {
                (None, 0) => (
                    ResponseError::CoordinatorNotAvailable.code(),
                    Some("no coordinator is known yet"),
                ),
                _ => (error_code, message),
            };
            let (node_id, host, port) =
                found.unwrap_or_else(|| (BrokerId(-1), StrBytes::default(), -1));
            (
                error_code,
                message.map(StrBytes::from_static_str),
                node_id,
                host,
                port,
            )
        };
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let (error_code, message, node_id, host, port) = answer(key.as_str());
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(node_id)
                        .with_host(host)
                        .with_port(port)
                        .with_error_code(error_code)
                        .with_error_message(message)
                })
                .collect();
        } else {
            let (error_code, message, node_id, host, port) = answer(request.key.as_str());
            response.error_code = error_code;
            response.error_message = message;
            response.node_id = node_id;
            response.host = host;
            response.port = port;
        }
        Some(response)
    }

    /// Parks a caller until the coordinator answers `waiter`, or `wait`
    /// passes (then `timed_out`).
    pub(super) async fn await_answer<T>(
        &self,
        receiver: tokio::sync::oneshot::Receiver<T>,
        wait: Duration,
        forget: impl FnOnce(&mut crate::broker::Waiters),
        timed_out: T,
    ) -> T {
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(result)) => result,
            _ => {
                forget(&mut self.waiters.lock().expect("waiters lock"));
                timed_out
            }
        }
    }

    pub(super) async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<JoinGroupResponse> {
        if let Some(code) = self.group_coordinator_error(&request.group_id) {
            return Some(
                JoinGroupResponse::default()
                    .with_error_code(code)
                    .with_generation_id(-1)
                    .with_protocol_name(Some(str_bytes("")))
                    .with_member_id(request.member_id.clone()),
            );
        }
        let rebalance_timeout_ms = if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        let join = JoinRequest {
            group_id: request.group_id.to_string(),
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
            client_id: context.client_id.clone(),
            client_host: context.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            connection: context.connection,
            require_known_member_id: version >= 4,
        };
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .joins
            .insert(waiter, sender);
        self.coordinate(|coordinator, now_ms| coordinator.join(now_ms, waiter, join));
        // The coordinator answers by the rebalance deadline, which is the
        // largest rebalance timeout of the group's members (maybe longer
        // than this one's); this bound only keeps a connection from being
        // parked for ever if something went wrong.
        let wait = Duration::from_millis(
            (rebalance_timeout_ms.max(request.session_timeout_ms).max(0) as u64).saturating_mul(2)
                + GROUP_WAIT_MARGIN_MS,
        );
        let result = self
            .await_answer(
                receiver,
                wait,
                |waiters| {
                    waiters.joins.remove(&waiter);
                },
                crate::group::JoinResult {
                    error_code: ResponseError::RebalanceInProgress.code(),
                    generation_id: -1,
                    protocol_type: None,
                    protocol_name: None,
                    leader: String::new(),
                    member_id: request.member_id.to_string(),
                    members: Vec::new(),
                },
            )
            .await;
        Some(
            JoinGroupResponse::default()
                .with_error_code(result.error_code)
                .with_generation_id(result.generation_id)
                .with_protocol_type(result.protocol_type.map(|t| str_bytes(&t)))
                .with_protocol_name(Some(str_bytes(&result.protocol_name.unwrap_or_default())))
                .with_leader(str_bytes(&result.leader))
                .with_member_id(str_bytes(&result.member_id))
                .with_members(
                    result
                        .members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str_bytes(&id))
                                .with_group_instance_id(instance.map(|i| str_bytes(&i)))
                                .with_metadata(metadata)
                        })
                        .collect(),
                ),
        )
    }

    pub(super) async fn sync_group(
        &self,
        request: SyncGroupRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<SyncGroupResponse> {
        if let Some(code) = self.group_coordinator_error(&request.group_id) {
            return Some(SyncGroupResponse::default().with_error_code(code));
        }
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .syncs
            .insert(waiter, sender);
        let assignments = request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        let instance = request.group_instance_id.as_ref().map(|id| id.to_string());
        self.coordinate(|coordinator, now_ms| {
            coordinator.sync(
                now_ms,
                waiter,
                &request.group_id,
                request.generation_id,
                &request.member_id,
                instance.as_deref(),
                assignments,
            )
        });
        // A follower waits for the leader, which must sync within its session.
        let wait = Duration::from_millis(
            self.config.group_max_session_timeout_ms.max(0) as u64 + GROUP_WAIT_MARGIN_MS,
        );
        let result = self
            .await_answer(
                receiver,
                wait,
                |waiters| {
                    waiters.syncs.remove(&waiter);
                },
                crate::group::SyncResult {
                    error_code: ResponseError::RebalanceInProgress.code(),
                    protocol_type: None,
                    protocol_name: None,
                    assignment: Bytes::new(),
                },
            )
            .await;
        Some(
            SyncGroupResponse::default()
                .with_error_code(result.error_code)
                .with_protocol_type(result.protocol_type.map(|t| str_bytes(&t)))
                .with_protocol_name(result.protocol_name.map(|n| str_bytes(&n)))
                .with_assignment(result.assignment),
        )
    }

    pub(super) async fn heartbeat(
        &self,
        request: HeartbeatRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<HeartbeatResponse> {
        if let Some(code) = self.group_coordinator_error(&request.group_id) {
            return Some(HeartbeatResponse::default().with_error_code(code));
        }
        let instance = request.group_instance_id.as_ref().map(|id| id.to_string());
        let now_ms = self.clock.now_ms();
        let error_code = self
            .coordinator
            .lock()
            .expect("coordinator lock")
            .heartbeat(
                now_ms,
                &request.group_id,
                request.generation_id,
                &request.member_id,
                instance.as_deref(),
            );
        Some(HeartbeatResponse::default().with_error_code(error_code))
    }

    pub(super) async fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<LeaveGroupResponse> {
        if let Some(code) = self.group_coordinator_error(&request.group_id) {
            return Some(LeaveGroupResponse::default().with_error_code(code));
        }
        let leaving: Vec<LeavingMember> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| LeavingMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|id| id.to_string()),
                })
                .collect()
        } else {
            vec![LeavingMember {
                member_id: request.member_id.to_string(),
                group_instance_id: None,
            }]
        };
        let mut codes = Vec::new();
        self.coordinate(|coordinator, now_ms| {
            let (answered, effects) = coordinator.leave(now_ms, &request.group_id, &leaving);
            codes = answered;
            effects
        });
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response.members = leaving
                .iter()
                .zip(&codes)
                .map(|(member, code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(str_bytes))
                        .with_error_code(*code)
                })
                .collect();
        } else {
            response.error_code = codes.first().copied().unwrap_or(0);
        }
        Some(response)
    }

    pub(super) async fn describe_groups(
        &self,
        request: DescribeGroupsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DescribeGroupsResponse> {
        let coordinator = self.coordinator.lock().expect("coordinator lock");
        let groups = request
            .groups
            .iter()
            .map(|group_id| {
                let description = coordinator.describe(group_id);
                DescribedGroup::default()
                    .with_group_id(group_id.clone())
                    .with_group_state(StrBytes::from_static_str(description.state.name()))
                    .with_protocol_type(str_bytes(&description.protocol_type))
                    .with_protocol_data(str_bytes(&description.protocol_name))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_group_instance_id(
                                        m.group_instance_id.as_deref().map(str_bytes),
                                    )
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(DescribeGroupsResponse::default().with_groups(groups))
    }

    pub(super) async fn list_groups(
        &self,
        request: ListGroupsRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<ListGroupsResponse> {
        let states: BTreeSet<String> = request
            .states_filter
            .iter()
            .map(|s| s.to_lowercase())
            .collect();
        // A type filter that leaves out the classic type leaves out every
        // group (Kafka matches types case-insensitively).
        let classic_wanted = request.types_filter.is_empty()
            || request
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(CLASSIC_GROUP_TYPE));
        let groups = self
            .coordinator
            .lock()
            .expect("coordinator lock")
            .list()
            .into_iter()
            .filter(|(_, _, state)| {
                classic_wanted
                    && (states.is_empty() || states.contains(&state.name().to_lowercase()))
            })
            .map(|(id, protocol_type, state)| {
                let listed = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&id)))
                    .with_protocol_type(str_bytes(&protocol_type))
                    .with_group_state(StrBytes::from_static_str(state.name()));
                if version >= 5 {
                    listed.with_group_type(StrBytes::from_static_str(CLASSIC_GROUP_TYPE))
                } else {
                    listed
                }
            })
            .collect();
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}
