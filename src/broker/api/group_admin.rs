//! DeleteGroups and OffsetDelete: removing a group, or some of its
//! committed offsets, durably.
//!
//! Both go to the group's coordinator (NOT_COORDINATOR elsewhere). The
//! coordinator decides what may go (`GroupCoordinator::delete_group`,
//! `GroupCoordinator::delete_offsets`) and writes tombstones to
//! `__consumer_offsets`; the answer waits until they are durable, so a
//! restart never brings back what a client was told is gone.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::*;

use super::{RequestContext, Versions};
use crate::broker::Broker;
use crate::group::{Effect, GroupCoordinator, WaiterId};

/// 0 through 2.
pub(super) const DELETE_GROUPS: Versions = (ApiKey::DeleteGroups, 0, 2);

/// Version 0, the only one.
pub(super) const OFFSET_DELETE: Versions = (ApiKey::OffsetDelete, 0, 0);

/// How long a deletion waits for its tombstones to be durable (they wait
/// on the offsets partition's ISR in a cluster) before answering
/// REQUEST_TIMED_OUT; the outcome is then unknown, as after any timeout.
const TOMBSTONE_WAIT_MS: u64 = 10_000;

impl Broker {
    /// Runs `act` on the coordinator with a fresh waiter and waits for its
    /// [`Effect::CompletePersist`].
    async fn await_persisted(
        &self,
        act: impl FnOnce(&mut GroupCoordinator, WaiterId) -> Vec<Effect>,
    ) -> Result<(), i16> {
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .persists
            .insert(waiter, sender);
        self.coordinate(|coordinator, _| act(coordinator, waiter));
        self.await_answer(
            receiver,
            Duration::from_millis(TOMBSTONE_WAIT_MS),
            |waiters| {
                waiters.persists.remove(&waiter);
            },
            Err(ResponseError::RequestTimedOut.code()),
        )
        .await
    }

    pub(super) async fn delete_groups(
        &self,
        request: DeleteGroupsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DeleteGroupsResponse> {
        let mut results = Vec::new();
        for group_id in request.groups_names {
            let outcome = match self.group_coordinator_error(&group_id) {
                Some(code) => Err(code),
                None => {
                    let id = group_id.to_string();
                    self.await_persisted(|coordinator, waiter| {
                        coordinator.delete_group(&id, waiter)
                    })
                    .await
                }
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(outcome.err().unwrap_or(0)),
            );
        }
        Some(DeleteGroupsResponse::default().with_results(results))
    }

    pub(super) async fn offset_delete(
        &self,
        request: OffsetDeleteRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<OffsetDeleteResponse> {
        if let Some(code) = self.group_coordinator_error(&request.group_id) {
            return Some(OffsetDeleteResponse::default().with_error_code(code));
        }
        let group_id = request.group_id.to_string();
        let partitions: Vec<(String, i32)> = request
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| (topic.name.to_string(), p.partition_index))
            })
            .collect();
        let mut decided = None;
        let persisted = self
            .await_persisted(|coordinator, waiter| {
                let (codes, effects) = coordinator.delete_offsets(&group_id, &partitions, waiter);
                decided = Some(codes);
                effects
            })
            .await;
        let codes = match decided.expect("the coordinator decides at once") {
            Err(code) => return Some(OffsetDeleteResponse::default().with_error_code(code)),
            Ok(codes) => codes,
        };
        // A failed or timed-out write leaves the deletions' outcome unknown:
        // the shared error goes on every partition that was to be deleted.
        let shared = persisted.err();
        let mut codes = codes.into_iter();
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let code = codes.next().unwrap_or(0);
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(if code == 0 { shared.unwrap_or(0) } else { code })
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        Some(OffsetDeleteResponse::default().with_topics(topics))
    }
}
