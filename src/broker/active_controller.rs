//! What the active controller does beyond topic records: it keeps the
//! brokers' sessions from their heartbeats, fences a broker whose session
//! lapsed and moves its leaderships to other in-sync replicas, records the
//! ISR changes leaders ask for (AlterPartition), and records a broker's new
//! incarnation when it registers after a restart.
//!
//! The decisions are `crate::controller`'s pure functions; this is the
//! shell that feeds them the image and the time and writes what they
//! return. Every write that was decided against the image holds the
//! `topic_admin` lock until it is applied, so the next decision sees it:
//! without that, an ISR change checked before a fencing was applied could
//! hand leadership back to the fenced broker.

use std::sync::Weak;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::Broker;
use crate::controller::{self, AlterIsrError, BrokerSessions, LogReport};
use crate::metadata::{BrokerEndpoint, MetadataRecord};
use crate::observe::Fact;

/// How often the active controller looks for lapsed sessions.
const CONTROLLER_TICK_MS: u64 = 250;

/// At most this many ISR and leadership changes are written for one
/// restarted broker's registration.
const CONTROLLER_WRITES_PER_REGISTRATION_MAX: usize = 1024;

/// At most this many leadership changes are written per round, so one
/// round stays short; a broker leading more partitions is finished in the
/// next rounds.
const CONTROLLER_WRITES_PER_TICK_MAX: usize = 64;

impl Broker {
    /// The brokers a leadership may go to now, if this broker is the
    /// active controller (ElectLeaders asks).
    pub(super) fn electable_brokers(&self) -> Option<std::collections::BTreeSet<i32>> {
        if !self.is_active_controller() {
            return None;
        }
        self.with_sessions(|sessions| sessions.electable())
    }

    /// Runs `f` on the brokers' sessions if this broker is the active
    /// controller and has applied the metadata log it was elected with. A
    /// controller in a new quorum epoch starts every registered broker's
    /// session afresh.
    fn with_sessions<R>(&self, f: impl FnOnce(&mut BrokerSessions) -> R) -> Option<R> {
        let cluster = self.cluster.as_ref()?;
        let status = cluster.quorum.current_status();
        let mut sessions = cluster.sessions.lock().expect("sessions lock");
        if status.leader_id != Some(self.config.node_id) {
            *sessions = None;
            return None;
        }
        // A new controller's image may trail the log it leads until it has
        // applied what it was elected with; until then it decides nothing.
        if cluster
            .caught_up_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            != status.epoch
        {
            return None;
        }
        let now_ms = self.clock.now_ms();
        let stale = sessions
            .as_ref()
            .is_none_or(|(epoch, _)| *epoch != status.epoch);
        if stale {
            let brokers: Vec<i32> =
                self.with_metadata(|image| image.brokers().map(|b| b.node_id).collect());
            *sessions = Some((status.epoch, BrokerSessions::starting(brokers, now_ms)));
        }
        let (_, sessions) = sessions.as_mut().expect("just set");
        Some(f(sessions))
    }

    /// A heartbeat from `node_id` in `incarnation`. False when this broker
    /// is not the active controller.
    pub(super) fn heartbeat_received(&self, node_id: i32, incarnation: u64) -> bool {
        let now_ms = self.clock.now_ms();
        let current = self.with_metadata(|image| image.incarnation(node_id) == Some(incarnation));
        let Some(was_fenced) = self.with_sessions(|sessions| {
            sessions.forget_stale_report(node_id, incarnation);
            sessions.heartbeat(node_id, current, now_ms)
        }) else {
            return false;
        };
        if was_fenced {
            self.observed.report(|| Fact::BrokerUnfenced {
                node_id,
                incarnation,
            });
        }
        true
    }

    /// BrokerRegistration, on the active controller: records the broker's
    /// address and incarnation where they changed, and starts its session.
    /// The answer's broker epoch is its incarnation.
    pub(super) async fn register_broker(
        &self,
        endpoint: BrokerEndpoint,
        incarnation: u64,
        report: LogReport,
    ) -> Result<i64, i16> {
        let _admin = self.topic_admin.lock().await;
        if !self.heartbeat_received(endpoint.node_id, incarnation) {
            return Err(ResponseError::NotController.code());
        }
        let node_id = endpoint.node_id;
        let (known_endpoint, known_incarnation) = self.with_metadata(|image| {
            (
                image.broker(node_id) == Some(&endpoint),
                image.incarnation(node_id) == Some(incarnation),
            )
        });
        if !known_endpoint {
            self.controller_write(MetadataRecord::RegisterBroker(endpoint))
                .await?;
        }
        if !known_incarnation {
            self.with_sessions(|sessions| {
                sessions.record_report(node_id, incarnation, report.clone())
            });
            self.leave_isrs_on_restart(node_id, incarnation, &report)
                .await?;
            self.controller_write(MetadataRecord::BrokerIncarnation {
                node_id,
                incarnation,
            })
            .await?;
            // Registered now: its session counts it electable.
            self.heartbeat_received(node_id, incarnation);
        }
        Ok(incarnation as i64)
    }

    /// A broker registering a new incarnation restarted and may have lost
    /// what it had not synced: before its registration is recorded (it
    /// leads nothing until then) it leaves every ISR that has another
    /// member, and its leaderships go to electable in-sync replicas, one
    /// record at a time, as fencing would do. Where an ISR holds no
    /// electable replica but other restarted ones that reported their logs,
    /// the one whose log holds most leads it (`controller::restart_handovers`,
    /// from `report`, what this broker's logs hold). Its first registration
    /// changes nothing.
    async fn leave_isrs_on_restart(
        &self,
        node_id: i32,
        incarnation: u64,
        report: &LogReport,
    ) -> Result<(), i16> {
        if self.with_metadata(|image| image.incarnation(node_id).is_none()) {
            return Ok(());
        }
        let now_ms = self.clock.now_ms();
        let session_timeout_ms = self.config.broker_session_timeout_ms;
        for _ in 0..CONTROLLER_WRITES_PER_REGISTRATION_MAX {
            let next = self.with_sessions(|sessions| {
                let tie_break =
                    sessions.restart_waited_ms(node_id, incarnation, now_ms) > session_timeout_ms;
                let mut electable = sessions.electable();
                electable.remove(&node_id);
                let image = self.metadata.read().expect("metadata lock");
                let unheard = sessions.unheard();
                let mut restarting = sessions.restarting();
                restarting.remove(&node_id);
                let others = (&electable, &unheard, &restarting);
                let reported = |broker: i32, topic: &str, partition: i32| {
                    sessions.reported(broker, topic, partition)
                };
                if controller::restart_must_wait(&image, node_id, others, tie_break, reported) {
                    return Err(());
                }
                let fenced: std::collections::BTreeSet<i32> = image
                    .brokers()
                    .map(|broker| broker.node_id)
                    .filter(|id| sessions.is_fenced(*id))
                    .collect();
                let peers = (&electable, &fenced);
                let handover =
                    controller::restart_handovers(&image, node_id, report, peers, reported);
                if let Some(record) = handover.first() {
                    tracing::info!(
                        broker = node_id,
                        ?record,
                        "restarted replicas compared: the one holding most leads"
                    );
                }
                Ok(handover
                    .into_iter()
                    .chain(controller::fence_changes(&image, node_id, &electable))
                    .next())
            });
            tracing::debug!(broker = node_id, ?next, "a restarted broker registers");
            match next {
                None => return Err(ResponseError::NotController.code()),
                // The broker retries its registration; by then the other
                // replicas have heartbeated, or stay away and the partition
                // stays offline.
                Some(Err(())) => return Err(ResponseError::RequestTimedOut.code()),
                Some(Ok(None)) => return Ok(()),
                Some(Ok(Some(record))) => {
                    self.controller_write(record).await?;
                }
            }
        }
        // More partitions than one registration writes: the broker retries
        // and the next attempt carries on.
        Err(ResponseError::RequestTimedOut.code())
    }

    /// AlterPartition for one partition, on the active controller.
    pub(super) async fn alter_partition_here(
        &self,
        key: (&str, i32),
        leader: (i32, i32, i32),
        isr: &[(i32, i64)],
    ) -> Result<(), i16> {
        let _admin = self.topic_admin.lock().await;
        let decided = self.with_sessions(|sessions| {
            let image = self.metadata.read().expect("metadata lock");
            controller::alter_isr(&image, key, leader, isr, sessions)
        });
        let record = match decided {
            None => return Err(ResponseError::NotController.code()),
            Some(Err(error)) => {
                return Err(match error {
                    AlterIsrError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
                    AlterIsrError::NotLeader => ResponseError::NotLeaderOrFollower,
                    AlterIsrError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
                    AlterIsrError::StalePartitionEpoch => ResponseError::InvalidUpdateVersion,
                    AlterIsrError::Invalid => ResponseError::InvalidRequest,
                    AlterIsrError::IneligibleReplica => ResponseError::IneligibleReplica,
                }
                .code())
            }
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(record))) => record,
        };
        self.controller_write(record).await.map(|_| ())
    }

    /// One controller round: fences brokers whose sessions lapsed and writes
    /// the leadership changes fencing calls for, and gives offline
    /// partitions a leader once an in-sync replica is back. Each change is
    /// decided against the image as the previous one left it.
    async fn controller_tick(&self) {
        let _admin = self.topic_admin.lock().await;
        let now_ms = self.clock.now_ms();
        let timeout_ms = self.config.broker_session_timeout_ms;
        let node_id = self.config.node_id;
        let current =
            self.with_metadata(|image| image.incarnation(node_id) == Some(self.incarnation));
        let expired = self.with_sessions(|sessions| {
            sessions.heartbeat(node_id, current, now_ms);
            sessions.expire(now_ms, timeout_ms)
        });
        for fenced in expired.into_iter().flatten() {
            tracing::warn!(broker = fenced, "broker session expired: fenced");
            let incarnation = self.with_metadata(|image| image.incarnation(fenced));
            self.observed.report(|| Fact::BrokerFenced {
                node_id: fenced,
                incarnation,
            });
        }
        let preferred_due = self.preferred_election_due(now_ms);
        for _ in 0..CONTROLLER_WRITES_PER_TICK_MAX {
            let Some(Some(record)) =
                self.with_sessions(|sessions| self.next_leadership_change(sessions, preferred_due))
            else {
                return;
            };
            if let Err(code) = self.controller_write(record).await {
                tracing::info!(code, "a leadership change did not commit; will retry");
                return;
            }
        }
    }

    /// Whether this tick looks for partitions to hand back to their
    /// preferred leaders: once per `leader.imbalance.check.interval.seconds`,
    /// the first an interval after this broker's first tick as controller.
    fn preferred_election_due(&self, now_ms: i64) -> bool {
        if !self.config.auto_leader_rebalance_enable {
            return false;
        }
        let interval_ms = i64::try_from(
            self.config
                .leader_imbalance_check_interval_seconds
                .saturating_mul(1_000),
        )
        .unwrap_or(i64::MAX);
        let next = &self.cluster().next_preferred_election_ms;
        let due_at = next.load(std::sync::atomic::Ordering::Acquire);
        if due_at == i64::MIN {
            next.store(
                now_ms.saturating_add(interval_ms),
                std::sync::atomic::Ordering::Release,
            );
            return false;
        }
        if now_ms < due_at {
            return false;
        }
        next.store(
            now_ms.saturating_add(interval_ms),
            std::sync::atomic::Ordering::Release,
        );
        true
    }

    fn next_leadership_change(
        &self,
        sessions: &BrokerSessions,
        preferred_due: bool,
    ) -> Option<MetadataRecord> {
        let image = self.metadata.read().expect("metadata lock");
        let electable = sessions.electable();
        let fenced_changes = image
            .brokers()
            .map(|b| b.node_id)
            .filter(|id| sessions.is_fenced(*id))
            .flat_map(|fenced| controller::fence_changes(&image, fenced, &electable))
            .next();
        fenced_changes
            .or_else(|| {
                controller::offline_recoveries(&image, sessions)
                    .into_iter()
                    .next()
            })
            .or_else(|| {
                preferred_due
                    .then(|| controller::preferred_leader_changes(&image, &electable))
                    .and_then(|changes| changes.into_iter().next())
            })
    }
}

/// The active controller's timer.
pub(super) async fn controller_loop(broker: Weak<Broker>) {
    loop {
        {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if broker.is_active_controller() {
                broker.controller_tick().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(CONTROLLER_TICK_MS)).await;
    }
}
