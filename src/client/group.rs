//! Consumer group membership as a plain state machine.
//!
//! [`Membership`] holds what a member knows (member id, generation, whether it
//! must rejoin) and decides, from time and coordinator answers, what to do
//! next. It does no I/O: the consumer's `poll` drives JoinGroup/SyncGroup from
//! its decisions, and the heartbeat task asks [`Membership::heartbeat_action`]
//! when to send a Heartbeat or to leave the group, then reports the answer
//! back. Both share it behind a mutex.

use std::time::Duration;

use tokio::time::Instant;

use super::{codes, is_coordinator_error, ClientError};

/// Where the member is in the group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Not in a generation: never joined, left, or kicked out.
    Unjoined,
    /// JoinGroup/SyncGroup under way (driven by `poll`).
    Rebalancing,
    /// Has an assignment for `generation_id`; heartbeats flow.
    Stable,
}

/// The group timing settings the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimers {
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `session.timeout.ms`: heartbeats failing this long mean the
    /// coordinator has already expelled us.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
}

/// What the heartbeat task should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Nothing before this instant.
    WaitUntil(Instant),
    /// Send a Heartbeat for this generation.
    Send {
        generation_id: i32,
        member_id: String,
    },
    /// `poll` was not called within `max.poll.interval.ms`: leave the group,
    /// as the Java client does, so the others can take over the partitions.
    Leave { member_id: String },
}

/// How to recover from an error code in a group response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Try the same request again after the backoff.
    Retry,
    /// The coordinator moved or is not ready: find it again, then retry.
    FindCoordinator,
    /// The generation is over: join again with the same member id.
    Rejoin,
    /// The coordinator no longer knows this member: join with no member id.
    ResetMemberAndRejoin,
    /// Not recoverable by the client (authorization, bad configuration).
    Fatal,
}

/// The recovery Java's `AbstractCoordinator` applies to `code`.
pub fn recovery_for(code: i16) -> Recovery {
    match code {
        codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => Recovery::Rejoin,
        codes::UNKNOWN_MEMBER_ID => Recovery::ResetMemberAndRejoin,
        // Another consumer with our group.instance.id took our membership:
        // fatal, as in Java, so two processes never share one identity.
        codes::FENCED_INSTANCE_ID => Recovery::Fatal,
        c if is_coordinator_error(c) => Recovery::FindCoordinator,
        c => match kafka_protocol::error::ResponseError::try_from_code(c) {
            Some(e) if e.is_retriable() => Recovery::Retry,
            Some(_) => Recovery::Fatal,
            None => Recovery::Retry,
        },
    }
}

/// The recovery for any error from a group request: broker codes as above,
/// connection failures mean the coordinator may have moved.
pub fn recovery_for_error(error: &ClientError) -> Recovery {
    match error {
        ClientError::Broker(e) => recovery_for(e.code()),
        ClientError::Network { .. } | ClientError::Timeout { .. } | ClientError::Metadata(_) => {
            Recovery::FindCoordinator
        }
        ClientError::Protocol { .. } => Recovery::FindCoordinator,
        ClientError::UnsupportedVersion { .. }
        | ClientError::CorruptRecords { .. }
        | ClientError::UnreadableRecords { .. }
        | ClientError::Invalid(_)
        | ClientError::Config(_)
        | ClientError::Closed => Recovery::Fatal,
    }
}

/// One member's view of its group.
#[derive(Debug, Clone)]
pub struct Membership {
    pub state: MemberState,
    /// Empty until the coordinator assigns one.
    pub member_id: String,
    /// -1 outside a generation.
    pub generation_id: i32,
    /// The assignor the coordinator chose for this generation.
    pub protocol_name: Option<String>,
    /// Set by the heartbeat task (or a failed commit) when the coordinator
    /// says a new generation is forming; `poll` rejoins.
    pub rejoin_needed: bool,
    /// Set when the coordinator looks gone; `poll` and the heartbeat task
    /// look it up again.
    pub coordinator_unknown: bool,
    /// The last `poll` call, for `max.poll.interval.ms`.
    pub last_poll: Instant,
    /// The last Heartbeat sent, for `heartbeat.interval.ms`.
    pub last_heartbeat_sent: Instant,
    /// The last Heartbeat answered without error, for `session.timeout.ms`.
    pub last_heartbeat_ok: Instant,
    /// Why the member left on its own, for the log and for tests.
    pub left_for_poll_timeout: bool,
}

impl Membership {
    pub fn new(now: Instant) -> Self {
        Self {
            state: MemberState::Unjoined,
            member_id: String::new(),
            generation_id: -1,
            protocol_name: None,
            rejoin_needed: false,
            coordinator_unknown: true,
            last_poll: now,
            last_heartbeat_sent: now,
            last_heartbeat_ok: now,
            left_for_poll_timeout: false,
        }
    }

    /// Whether `poll` must run JoinGroup/SyncGroup before fetching.
    pub fn needs_join(&self) -> bool {
        self.state != MemberState::Stable || self.rejoin_needed
    }

    pub fn on_poll(&mut self, now: Instant) {
        self.last_poll = now;
    }

    pub fn on_rebalance_started(&mut self) {
        self.state = MemberState::Rebalancing;
        self.rejoin_needed = false;
    }

    /// JoinGroup asked for a member id (MEMBER_ID_REQUIRED) or gave one.
    pub fn on_member_id(&mut self, member_id: String) {
        self.member_id = member_id;
    }

    /// SyncGroup succeeded: the member has an assignment for `generation_id`.
    pub fn on_joined(&mut self, generation_id: i32, protocol_name: Option<String>, now: Instant) {
        self.state = MemberState::Stable;
        // Errors during the join asked for the rejoin that just finished.
        self.rejoin_needed = false;
        self.generation_id = generation_id;
        self.protocol_name = protocol_name;
        self.last_heartbeat_sent = now;
        self.last_heartbeat_ok = now;
        self.left_for_poll_timeout = false;
    }

    /// Applies a [`Recovery`] decided from a group response.
    pub fn apply(&mut self, recovery: Recovery) {
        match recovery {
            Recovery::Retry | Recovery::Fatal => {}
            Recovery::FindCoordinator => self.coordinator_unknown = true,
            Recovery::Rejoin => self.rejoin_needed = true,
            Recovery::ResetMemberAndRejoin => {
                self.reset_member();
                self.rejoin_needed = true;
            }
        }
    }

    /// Forgets member id and generation (after leaving or being expelled).
    pub fn reset_member(&mut self) {
        self.member_id.clear();
        self.generation_id = -1;
        self.protocol_name = None;
        self.state = MemberState::Unjoined;
    }

    /// The next thing the heartbeat task should do.
    pub fn heartbeat_action(&self, now: Instant, timers: &GroupTimers) -> HeartbeatAction {
        if self.state != MemberState::Stable {
            return HeartbeatAction::WaitUntil(now + timers.heartbeat_interval);
        }
        if now.saturating_duration_since(self.last_poll) > timers.max_poll_interval {
            return HeartbeatAction::Leave {
                member_id: self.member_id.clone(),
            };
        }
        if self.rejoin_needed || self.coordinator_unknown {
            // `poll` is about to rejoin or look the coordinator up; heartbeats
            // would only repeat the same news.
            return HeartbeatAction::WaitUntil(now + timers.heartbeat_interval);
        }
        let due = self.last_heartbeat_sent + timers.heartbeat_interval;
        if now >= due {
            HeartbeatAction::Send {
                generation_id: self.generation_id,
                member_id: self.member_id.clone(),
            }
        } else {
            HeartbeatAction::WaitUntil(
                due.min(self.last_poll + timers.max_poll_interval + Duration::from_millis(1)),
            )
        }
    }

    pub fn on_heartbeat_sent(&mut self, now: Instant) {
        self.last_heartbeat_sent = now;
    }

    /// The answer to a Heartbeat for `generation_id`.
    pub fn on_heartbeat_result(
        &mut self,
        generation_id: i32,
        result: Result<(), ClientError>,
        now: Instant,
        timers: &GroupTimers,
    ) {
        if generation_id != self.generation_id || self.state != MemberState::Stable {
            // An answer about a generation we already left behind.
            return;
        }
        match result {
            Ok(()) => self.last_heartbeat_ok = now,
            Err(error) => {
                let recovery = recovery_for_error(&error);
                self.apply(recovery);
                if now.saturating_duration_since(self.last_heartbeat_ok) > timers.session_timeout {
                    // The coordinator has expelled us by now; start over.
                    self.apply(Recovery::ResetMemberAndRejoin);
                }
            }
        }
    }

    /// The heartbeat task left the group because `poll` stalled.
    pub fn on_left_for_poll_timeout(&mut self) {
        self.reset_member();
        self.left_for_poll_timeout = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError;

    fn timers() -> GroupTimers {
        GroupTimers {
            heartbeat_interval: Duration::from_millis(3_000),
            session_timeout: Duration::from_millis(45_000),
            max_poll_interval: Duration::from_millis(300_000),
        }
    }

    fn stable(now: Instant) -> Membership {
        let mut m = Membership::new(now);
        m.on_rebalance_started();
        m.on_member_id("m-1".into());
        m.on_joined(7, Some("range".into()), now);
        m.coordinator_unknown = false;
        m
    }

    #[test]
    fn heartbeats_every_interval_while_stable() {
        let t0 = Instant::now();
        let mut m = stable(t0);
        assert_eq!(
            m.heartbeat_action(t0, &timers()),
            HeartbeatAction::WaitUntil(t0 + Duration::from_millis(3_000))
        );
        let t1 = t0 + Duration::from_millis(3_000);
        assert_eq!(
            m.heartbeat_action(t1, &timers()),
            HeartbeatAction::Send {
                generation_id: 7,
                member_id: "m-1".into()
            }
        );
        m.on_heartbeat_sent(t1);
        m.on_heartbeat_result(7, Ok(()), t1, &timers());
        assert!(!m.needs_join());
    }

    #[test]
    fn rebalance_in_progress_means_rejoin_and_unknown_member_resets() {
        let t0 = Instant::now();
        let mut m = stable(t0);
        m.on_heartbeat_result(
            7,
            Err(ClientError::Broker(ResponseError::RebalanceInProgress)),
            t0,
            &timers(),
        );
        assert!(m.needs_join());
        assert_eq!(m.member_id, "m-1");

        let mut m = stable(t0);
        m.on_heartbeat_result(
            7,
            Err(ClientError::Broker(ResponseError::UnknownMemberId)),
            t0,
            &timers(),
        );
        assert!(m.needs_join());
        assert_eq!(m.member_id, "");
        assert_eq!(m.generation_id, -1);

        let mut m = stable(t0);
        m.on_heartbeat_result(
            7,
            Err(ClientError::Broker(ResponseError::IllegalGeneration)),
            t0,
            &timers(),
        );
        assert!(m.needs_join());
    }

    #[test]
    fn stale_heartbeat_answers_are_ignored() {
        let t0 = Instant::now();
        let mut m = stable(t0);
        m.on_heartbeat_result(
            6,
            Err(ClientError::Broker(ResponseError::UnknownMemberId)),
            t0,
            &timers(),
        );
        assert!(!m.needs_join());
    }

    #[test]
    fn coordinator_errors_mark_it_unknown_and_session_expiry_resets() {
        let t0 = Instant::now();
        let mut m = stable(t0);
        let lost = ClientError::Timeout {
            addr: "b:9092".into(),
            timeout_ms: 30_000,
        };
        m.on_heartbeat_result(7, Err(lost.clone()), t0 + Duration::from_secs(1), &timers());
        assert!(m.coordinator_unknown);
        assert!(!m.needs_join());
        m.on_heartbeat_result(7, Err(lost), t0 + Duration::from_secs(46), &timers());
        assert!(m.needs_join());
        assert_eq!(m.member_id, "");
    }

    #[test]
    fn poll_stall_leaves_the_group() {
        let t0 = Instant::now();
        let m = stable(t0);
        let late = t0 + Duration::from_millis(300_001);
        assert_eq!(
            m.heartbeat_action(late, &timers()),
            HeartbeatAction::Leave {
                member_id: "m-1".into()
            }
        );
        let mut m = m;
        m.on_left_for_poll_timeout();
        assert!(m.needs_join());
        assert!(matches!(
            m.heartbeat_action(late, &timers()),
            HeartbeatAction::WaitUntil(_)
        ));
    }

    #[test]
    fn recovery_table() {
        assert_eq!(
            recovery_for(codes::NOT_COORDINATOR),
            Recovery::FindCoordinator
        );
        assert_eq!(
            recovery_for(codes::COORDINATOR_LOAD_IN_PROGRESS),
            Recovery::FindCoordinator
        );
        assert_eq!(recovery_for(codes::REBALANCE_IN_PROGRESS), Recovery::Rejoin);
        assert_eq!(
            recovery_for(codes::UNKNOWN_MEMBER_ID),
            Recovery::ResetMemberAndRejoin
        );
        assert_eq!(recovery_for(30), Recovery::Fatal); // GROUP_AUTHORIZATION_FAILED
        assert_eq!(recovery_for(codes::FENCED_INSTANCE_ID), Recovery::Fatal);
    }
}
