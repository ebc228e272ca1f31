use super::*;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join_request(member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        connection: NO_CONNECTION,
        require_known_member_id: false,
    }
}

fn static_join(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_request(member_id)
    }
}

fn commit(generation_id: i32, member_id: &str, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        connection: NO_CONNECTION,
        offsets: vec![(
            "t".into(),
            0,
            CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
            },
        )],
    }
}

/// The coordinator with a shell that makes every write durable at once,
/// unless told to hold writes back.
struct Shell {
    coordinator: GroupCoordinator,
    /// Writes the shell has not made durable yet, in order.
    held: Vec<(PersistId, Durable)>,
    hold: bool,
    /// Everything persisted, in order.
    persisted: Vec<Durable>,
}

impl Shell {
    fn new(config: GroupConfig) -> Self {
        Self {
            coordinator: GroupCoordinator::new(config),
            held: Vec::new(),
            hold: false,
            persisted: Vec::new(),
        }
    }

    /// Carries out `effects` as the broker does; returns the rest.
    fn drive(&mut self, now_ms: i64, effects: Vec<Effect>) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Persist(id, durable) if self.hold => self.held.push((id, durable)),
                Effect::Persist(id, durable) => {
                    self.persisted.push(durable);
                    queue.extend(self.coordinator.on_persisted(now_ms, id, true));
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Releases the held writes, each durable (`ok`) or failed.
    fn release(&mut self, now_ms: i64, ok: bool) -> Vec<Effect> {
        self.hold = false;
        let mut out = Vec::new();
        for (id, durable) in std::mem::take(&mut self.held) {
            if ok {
                self.persisted.push(durable);
            }
            let effects = self.coordinator.on_persisted(now_ms, id, ok);
            out.extend(self.drive(now_ms, effects));
        }
        out
    }

    fn join(&mut self, now_ms: i64, waiter: WaiterId, request: JoinRequest) -> Vec<Effect> {
        let effects = self.coordinator.join(now_ms, waiter, request);
        self.drive(now_ms, effects)
    }

    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        now_ms: i64,
        waiter: WaiterId,
        generation_id: i32,
        member_id: &str,
        instance: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Vec<Effect> {
        let effects = self.coordinator.sync(
            now_ms,
            waiter,
            "g",
            generation_id,
            member_id,
            instance,
            assignments,
        );
        self.drive(now_ms, effects)
    }

    fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let effects = self.coordinator.tick(now_ms);
        self.drive(now_ms, effects)
    }

    fn leave(&mut self, now_ms: i64, leaving: &[LeavingMember]) -> (Vec<i16>, Vec<Effect>) {
        let (codes, effects) = self.coordinator.leave(now_ms, "g", leaving);
        (codes, self.drive(now_ms, effects))
    }

    fn commit(&mut self, now_ms: i64, waiter: WaiterId, request: CommitRequest) -> Vec<Effect> {
        let effects = self.coordinator.offset_commit(waiter, request);
        self.drive(now_ms, effects)
    }

    fn heartbeat(&mut self, now_ms: i64, generation_id: i32, member_id: &str) -> i16 {
        self.coordinator
            .heartbeat(now_ms, "g", generation_id, member_id, None)
    }
}

fn by_member(member_id: &str) -> LeavingMember {
    LeavingMember {
        member_id: member_id.into(),
        group_instance_id: None,
    }
}

fn joins(effects: &[Effect]) -> Vec<(WaiterId, JoinResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CompleteJoin(w, r) => Some((*w, r.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> Vec<(WaiterId, SyncResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CompleteSync(w, r) => Some((*w, r.clone())),
            _ => None,
        })
        .collect()
}

fn commits(effects: &[Effect]) -> Vec<(WaiterId, Result<(), i16>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CompleteCommit(w, r) => Some((*w, *r)),
            _ => None,
        })
        .collect()
}

fn facts(effects: &[Effect]) -> Vec<Fact> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Report(fact) => Some(fact.clone()),
            _ => None,
        })
        .collect()
}

fn removals(effects: &[Effect]) -> Vec<(String, RemovalReason)> {
    facts(effects)
        .into_iter()
        .filter_map(|fact| match fact {
            Fact::MemberRemoved { member, reason, .. } => Some((member, reason)),
            _ => None,
        })
        .collect()
}

/// Joins a first member and syncs it into a Stable generation 1.
fn stable_single_member(shell: &mut Shell) -> String {
    stable_single(shell, join_request(""))
}

fn stable_single(shell: &mut Shell, request: JoinRequest) -> String {
    let instance = request.group_instance_id.clone();
    let effects = shell.join(0, 1, request);
    let (_, result) = joins(&effects)
        .pop()
        .expect("a lone member completes at once");
    assert_eq!(result.error_code, 0);
    assert_eq!(result.generation_id, 1);
    assert_eq!(result.leader, result.member_id);
    let effects = shell.sync(
        0,
        2,
        1,
        &result.member_id,
        instance.as_deref(),
        vec![(result.member_id.clone(), Bytes::from_static(b"all"))],
    );
    assert_eq!(syncs(&effects)[0].1.assignment, Bytes::from_static(b"all"));
    result.member_id
}

#[test]
fn a_second_member_triggers_a_rebalance_that_completes_when_the_first_rejoins() {
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    let effects = shell.join(10, 3, join_request(""));
    assert!(
        joins(&effects).is_empty(),
        "waits for the first member to rejoin"
    );
    assert!(facts(&effects).iter().any(|fact| matches!(
        fact,
        Fact::RebalanceStarted {
            rebalance_timeout_ms: 30_000,
            deadline_ms: 30_010,
            ..
        }
    )));
    assert_eq!(
        shell.heartbeat(20, 1, &first),
        ResponseError::RebalanceInProgress.code()
    );
    let effects = shell.join(30, 4, join_request(&first));
    let completed = joins(&effects);
    assert_eq!(completed.len(), 2);
    for (_, result) in &completed {
        assert_eq!(result.generation_id, 2);
        assert_eq!(
            result.leader, first,
            "the leader is kept across generations"
        );
    }
    let leader_view = completed.iter().find(|(w, _)| *w == 4).unwrap();
    assert_eq!(leader_view.1.members.len(), 2);
    let follower = completed
        .iter()
        .find(|(w, _)| *w == 3)
        .unwrap()
        .1
        .member_id
        .clone();
    // The follower's sync parks until the leader syncs.
    assert!(syncs(&shell.sync(40, 5, 2, &follower, None, vec![])).is_empty());
    let effects = shell.sync(
        50,
        6,
        2,
        &first,
        None,
        vec![
            (first.clone(), Bytes::from_static(b"p0")),
            (follower.clone(), Bytes::from_static(b"p1")),
        ],
    );
    let delivered = syncs(&effects);
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        delivered
            .iter()
            .find(|(w, _)| *w == 5)
            .unwrap()
            .1
            .assignment,
        Bytes::from_static(b"p1")
    );
    assert_eq!(shell.coordinator.describe("g").state, GroupState::Stable);
}

#[test]
fn a_member_that_does_not_rejoin_before_the_rebalance_timeout_is_removed() {
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    shell.join(10, 3, join_request(""));
    // A slow consumer: its heartbeat thread keeps the session alive, but its
    // application never polls, so it never rejoins.
    for at in (1_000..29_000).step_by(1_000) {
        shell.heartbeat(at, 1, &first);
        assert!(
            joins(&shell.tick(at)).is_empty(),
            "deadline not reached at {at}"
        );
    }
    let effects = shell.tick(10 + 30_000);
    let completed = joins(&effects);
    assert_eq!(completed.len(), 1);
    assert_ne!(completed[0].1.member_id, first);
    assert_eq!(completed[0].1.generation_id, 2);
    assert_eq!(
        removals(&effects),
        vec![(first.clone(), RemovalReason::RebalanceTimeout)]
    );
    // The slow member is fenced from committing with its old generation.
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&commit(1, &first, 0)),
        Err(ResponseError::UnknownMemberId.code())
    );
}

#[test]
fn an_expired_session_removes_the_member_and_empties_the_group() {
    let mut shell = Shell::new(config());
    let member = stable_single_member(&mut shell);
    assert!(
        shell.tick(10_000).is_empty(),
        "exactly the session timeout is still alive"
    );
    let effects = shell.tick(10_001);
    assert_eq!(
        removals(&effects),
        vec![(member.clone(), RemovalReason::SessionExpired)]
    );
    let description = shell.coordinator.describe("g");
    assert_eq!(description.state, GroupState::Empty);
    assert!(description.members.is_empty());
    assert_eq!(
        shell.heartbeat(10_002, 1, &member),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn offset_commits_are_fenced_by_generation_and_membership() {
    let mut shell = Shell::new(config());
    let simple = CommitRequest {
        group_id: "fresh".into(),
        ..commit(-1, "", 5)
    };
    assert_eq!(
        shell.coordinator.validate_offset_commit(&simple),
        Ok(()),
        "simple commit to a new group"
    );
    let member = stable_single_member(&mut shell);
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&commit(1, &member, 5)),
        Ok(())
    );
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&commit(0, &member, 5)),
        Err(ResponseError::IllegalGeneration.code())
    );
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&commit(1, "stranger", 5)),
        Err(ResponseError::UnknownMemberId.code())
    );
    assert_eq!(
        shell.coordinator.validate_offset_commit(&commit(-1, "", 5)),
        Err(ResponseError::UnknownMemberId.code())
    );
    let effects = shell.commit(0, 9, commit(1, &member, 5));
    assert_eq!(commits(&effects), vec![(9, Ok(()))]);
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .unwrap()
            .offset,
        5
    );
}

#[test]
fn a_commit_is_answered_and_applied_only_once_durable() {
    let mut shell = Shell::new(config());
    let member = stable_single_member(&mut shell);
    shell.hold = true;
    let effects = shell.commit(0, 9, commit(1, &member, 5));
    assert!(commits(&effects).is_empty(), "held until durable");
    assert_eq!(shell.coordinator.committed_offset("g", "t", 0), None);
    let effects = shell.release(1, true);
    assert_eq!(commits(&effects), vec![(9, Ok(()))]);
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .unwrap()
            .offset,
        5
    );
    // A failed write is not applied and the committer hears why.
    shell.hold = true;
    shell.commit(2, 10, commit(1, &member, 7));
    let effects = shell.release(3, false);
    assert_eq!(
        commits(&effects),
        vec![(10, Err(ResponseError::CoordinatorNotAvailable.code()))]
    );
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .unwrap()
            .offset,
        5
    );
}

#[test]
fn a_rebalance_waits_for_a_commit_being_persisted() {
    // The race: a commit validated for generation 1 is being made durable
    // when the rebalance could complete. The new generation's members must
    // not hear of their assignment (and read the group's offsets) before the
    // commit is applied.
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    shell.join(10, 3, join_request(""));
    shell.hold = true;
    let effects = shell.commit(11, 9, commit(1, &first, 42));
    assert!(commits(&effects).is_empty());
    let effects = shell.join(12, 4, join_request(&first));
    assert!(
        joins(&effects).is_empty(),
        "everyone rejoined, but the commit is not durable yet"
    );
    assert!(shell.held.len() == 1);
    let effects = shell.release(13, true);
    assert_eq!(commits(&effects), vec![(9, Ok(()))]);
    let completed = joins(&effects);
    assert_eq!(
        completed.len(),
        2,
        "the rebalance completes after the commit"
    );
    let position_of_commit = effects
        .iter()
        .position(|e| matches!(e, Effect::CompleteCommit(..)))
        .unwrap();
    let position_of_join = effects
        .iter()
        .position(|e| matches!(e, Effect::CompleteJoin(..)))
        .unwrap();
    assert!(position_of_commit < position_of_join);
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .unwrap()
            .offset,
        42
    );
    assert!(matches!(
        shell.persisted.as_slice(),
        [
            Durable::Generation {
                generation_id: 1,
                ..
            },
            Durable::Offsets { .. },
            Durable::Generation {
                generation_id: 2,
                ..
            }
        ]
    ));
}

#[test]
fn join_answers_wait_for_the_generation_to_be_durable_and_fail_if_it_is_not() {
    let mut shell = Shell::new(config());
    shell.hold = true;
    let effects = shell.join(0, 1, join_request(""));
    assert!(joins(&effects).is_empty());
    assert!(matches!(
        facts(&effects).last(),
        Some(Fact::Generation { generation: 1, .. })
    ));
    let effects = shell.release(1, false);
    let answered = joins(&effects);
    assert_eq!(
        answered[0].1.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );
    assert_eq!(answered[0].1.generation_id, NO_GENERATION);
}

#[test]
fn a_commit_from_a_connection_the_member_replaced_is_refused() {
    // A client timed out a commit on connection 1 and moved to connection 2;
    // the delayed request then arrives on connection 1 after newer commits.
    let mut shell = Shell::new(config());
    let member = stable_single(
        &mut shell,
        JoinRequest {
            connection: 1,
            ..join_request("")
        },
    );
    let on = |connection, offset| CommitRequest {
        connection,
        ..commit(1, &member, offset)
    };
    assert_eq!(commits(&shell.commit(10, 7, on(2, 52))), vec![(7, Ok(()))]);
    assert_eq!(
        commits(&shell.commit(11, 8, on(1, 42))),
        vec![(8, Err(ResponseError::RequestTimedOut.code()))]
    );
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .unwrap()
            .offset,
        52
    );
    // The newest connection and unnumbered ones (replays) still commit.
    assert_eq!(commits(&shell.commit(12, 9, on(2, 60))), vec![(9, Ok(()))]);
    assert_eq!(
        commits(&shell.commit(13, 10, on(NO_CONNECTION, 61))),
        vec![(10, Ok(()))]
    );
}

#[test]
fn leaving_rebalances_the_rest_and_bad_joins_get_errors() {
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    let (codes, effects) = shell.leave(5, &[by_member(&first), by_member("ghost")]);
    assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
    assert!(facts(&effects)
        .iter()
        .any(|fact| matches!(fact, Fact::Generation { generation: 2, .. })));
    assert_eq!(removals(&effects), vec![(first, RemovalReason::Left)]);
    assert_eq!(shell.coordinator.describe("g").state, GroupState::Empty);
    let mut bad = join_request("");
    bad.session_timeout_ms = 1;
    assert_eq!(
        joins(&shell.join(6, 9, bad))[0].1.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(
        joins(&shell.join(6, 9, join_request("nobody")))[0]
            .1
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn the_initial_rebalance_delay_applies_whenever_the_group_leaves_empty() {
    let mut shell = Shell::new(GroupConfig {
        initial_rebalance_delay_ms: 3000,
        ..GroupConfig::default()
    });
    for round in 0..2 {
        let start = round * 100_000;
        assert!(
            joins(&shell.join(start, 1, join_request(""))).is_empty(),
            "round {round}: waits out the delay"
        );
        let completed = joins(&shell.tick(start + 3000));
        assert_eq!(
            completed.len(),
            1,
            "round {round}: completes at the deadline"
        );
        let member = completed[0].1.member_id.clone();
        shell.leave(start + 3001, &[by_member(&member)]);
        assert_eq!(shell.coordinator.describe("g").state, GroupState::Empty);
    }
}

#[test]
fn a_member_that_dies_during_a_rebalance_expires_after_its_session_not_the_rebalance_timeout() {
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    // A second member joins; the first must rejoin but has crashed.
    shell.join(10, 3, join_request(""));
    assert_eq!(
        shell.coordinator.describe("g").state,
        GroupState::PreparingRebalance
    );
    // Its session (10 s) lapses long before the rebalance timeout (30 s).
    let effects = shell.tick(10_001);
    let completed = joins(&effects);
    assert_eq!(
        completed.len(),
        1,
        "the rebalance completes with the live member"
    );
    assert_ne!(completed[0].1.member_id, first);
    assert!(shell
        .coordinator
        .describe("g")
        .members
        .iter()
        .all(|m| m.member_id != first));
}

#[test]
fn member_ids_carry_the_coordinators_scope_so_a_restart_never_repeats_one() {
    let scope = |member_id_scope: &str| GroupConfig {
        member_id_scope: member_id_scope.to_string(),
        ..config()
    };
    let mut before = Shell::new(scope("1"));
    let mut after = Shell::new(scope("2"));
    let a = stable_single_member(&mut before);
    let b = stable_single_member(&mut after);
    assert_eq!(a, "c-1-1");
    assert_eq!(b, "c-2-1");
}

#[test]
fn a_static_member_rejoining_takes_over_without_a_rebalance() {
    let mut shell = Shell::new(config());
    let old = stable_single(&mut shell, static_join("", "i-1"));
    // A dynamic member joins: one rebalance, led by the static member.
    let effects = shell.join(10, 3, join_request(""));
    assert!(joins(&effects).is_empty());
    shell.join(11, 4, static_join(&old, "i-1"));
    let effects = shell.sync(
        12,
        5,
        2,
        &old,
        Some("i-1"),
        vec![(old.clone(), Bytes::from_static(b"all"))],
    );
    assert!(syncs(&effects).iter().all(|(_, r)| r.error_code == 0));
    assert_eq!(shell.coordinator.describe("g").state, GroupState::Stable);
    let generation = shell.coordinator.describe("g").generation_id;
    // The static member restarts: it joins with no member id and its instance.
    let effects = shell.join(20, 6, static_join("", "i-1"));
    let answer = joins(&effects).pop().expect("answered at once").1;
    assert_eq!(answer.error_code, 0);
    assert_eq!(answer.generation_id, generation, "no rebalance");
    assert_ne!(answer.member_id, old);
    assert_ne!(answer.leader, answer.member_id, "it is not asked to assign");
    assert_eq!(
        removals(&effects),
        vec![(old.clone(), RemovalReason::Replaced)]
    );
    assert_eq!(shell.coordinator.describe("g").state, GroupState::Stable);
    // Its SyncGroup returns the stored assignment.
    let effects = shell.sync(21, 7, generation, &answer.member_id, Some("i-1"), vec![]);
    assert_eq!(syncs(&effects)[0].1.error_code, 0);
    assert_eq!(syncs(&effects)[0].1.assignment, Bytes::from_static(b"all"));
    // The old member id is fenced everywhere.
    assert_eq!(
        shell
            .coordinator
            .heartbeat(22, "g", generation, &old, Some("i-1")),
        ResponseError::FencedInstanceId.code()
    );
    let stale = CommitRequest {
        group_instance_id: Some("i-1".into()),
        ..commit(generation, &old, 3)
    };
    assert_eq!(
        shell.coordinator.validate_offset_commit(&stale),
        Err(ResponseError::FencedInstanceId.code())
    );
    let description = shell.coordinator.describe("g");
    assert!(description
        .members
        .iter()
        .any(|m| m.group_instance_id.as_deref() == Some("i-1") && m.member_id == answer.member_id));
    // LeaveGroup by instance id removes it; a stale member id is fenced.
    let (codes, _) = shell.leave(
        23,
        &[LeavingMember {
            member_id: old.clone(),
            group_instance_id: Some("i-1".into()),
        }],
    );
    assert_eq!(codes, vec![ResponseError::FencedInstanceId.code()]);
    let (codes, effects) = shell.leave(
        24,
        &[LeavingMember {
            member_id: String::new(),
            group_instance_id: Some("i-1".into()),
        }],
    );
    assert_eq!(codes, vec![0]);
    assert_eq!(
        removals(&effects),
        vec![(answer.member_id, RemovalReason::Left)]
    );
}

#[test]
fn deleting_a_topic_tombstones_its_offsets_durably() {
    let mut shell = Shell::new(config());
    let member = stable_single_member(&mut shell);
    shell.commit(1, 9, commit(1, &member, 5));
    let effects = shell.coordinator.remove_topic("t", Some(11));
    let effects = shell.drive(2, effects);
    assert!(effects.contains(&Effect::CompletePersist(11, Ok(()))));
    assert_eq!(shell.coordinator.committed_offset("g", "t", 0), None);
    assert!(matches!(
        shell.persisted.last(),
        Some(Durable::OffsetTombstones { partitions, .. }) if partitions == &vec![("t".to_string(), 0)]
    ));
    // A topic nobody committed to needs no write.
    let effects = shell.coordinator.remove_topic("other", Some(12));
    assert_eq!(effects, vec![Effect::CompletePersist(12, Ok(()))]);
}

#[test]
fn a_new_member_must_join_again_with_the_id_it_is_given() {
    // KIP-394: the first JoinGroup only hands out a member id, so a join
    // whose answer is lost leaves no member behind to expire later.
    let mut shell = Shell::new(config());
    let first = JoinRequest {
        require_known_member_id: true,
        ..join_request("")
    };
    let answer = joins(&shell.join(0, 1, first)).pop().unwrap().1;
    assert_eq!(answer.error_code, ResponseError::MemberIdRequired.code());
    assert!(!answer.member_id.is_empty());
    assert!(shell.coordinator.describe("g").members.is_empty());
    let again = JoinRequest {
        require_known_member_id: true,
        ..join_request(&answer.member_id)
    };
    let joined = joins(&shell.join(1, 2, again)).pop().unwrap().1;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.member_id, answer.member_id);
    // An id handed out and never used lapses after a session timeout.
    let unused = JoinRequest {
        require_known_member_id: true,
        ..join_request("")
    };
    let unused = joins(&shell.join(2, 3, unused)).pop().unwrap().1.member_id;
    shell.tick(20_000);
    let late = JoinRequest {
        require_known_member_id: true,
        ..join_request(&unused)
    };
    assert_eq!(
        joins(&shell.join(20_001, 4, late))
            .pop()
            .unwrap()
            .1
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn the_rebalance_waits_the_members_own_rebalance_timeout_even_below_its_session() {
    let mut shell = Shell::new(config());
    let short = |member: &str| JoinRequest {
        rebalance_timeout_ms: 5_000,
        session_timeout_ms: 10_000,
        ..join_request(member)
    };
    let first = stable_single(&mut shell, short(""));
    let effects = shell.join(100, 3, short(""));
    assert!(facts(&effects).iter().any(|fact| matches!(
        fact,
        Fact::RebalanceStarted {
            rebalance_timeout_ms: 5_000,
            ..
        }
    )));
    // `first` keeps heartbeating but never rejoins: out at 5 s, not 10 s.
    shell.heartbeat(2_000, 1, &first);
    let effects = shell.tick(5_100);
    assert_eq!(joins(&effects).len(), 1);
    assert_eq!(
        removals(&effects),
        vec![(first, RemovalReason::RebalanceTimeout)]
    );
}

#[test]
fn resigning_answers_every_parked_caller_not_coordinator_and_forgets_the_groups() {
    let mut shell = Shell::new(config());
    let first = stable_single_member(&mut shell);
    // A second member's join parks until the first rejoins; the first's
    // commit parks until its write is durable.
    assert!(joins(&shell.join(10, 3, join_request(""))).is_empty());
    shell.hold = true;
    assert!(commits(&shell.commit(20, 4, commit(1, &first, 7))).is_empty());
    let effects = shell.coordinator.resign();
    let not_coordinator = ResponseError::NotCoordinator.code();
    let parked_joins = joins(&effects);
    assert_eq!(parked_joins.len(), 1);
    assert_eq!(parked_joins[0].0, 3);
    assert_eq!(parked_joins[0].1.error_code, not_coordinator);
    assert_eq!(commits(&effects), vec![(4, Err(not_coordinator))]);
    assert!(shell.coordinator.list().is_empty(), "no group is kept");
    // The held write's late outcome finds nothing waiting on it.
    assert!(shell.release(30, true).is_empty());
    assert!(shell.coordinator.committed_offset("g", "t", 0).is_none());
}

#[test]
fn a_rebalance_due_to_complete_refuses_new_commits_until_the_ones_in_flight_land() {
    let mut shell = Shell::new(config());
    // A session long enough to outlast the rebalance's deadline.
    let first = stable_single(
        &mut shell,
        JoinRequest {
            session_timeout_ms: 60_000,
            ..join_request("")
        },
    );
    shell.hold = true;
    assert!(commits(&shell.commit(10, 3, commit(1, &first, 5))).is_empty());
    // A second member starts a rebalance; the first never rejoins, and
    // its deadline passes while its commit is still in flight.
    assert!(joins(&shell.join(20, 4, join_request(""))).is_empty());
    assert!(
        joins(&shell.tick(40_000)).is_empty(),
        "a write is in flight"
    );
    assert_eq!(
        commits(&shell.commit(40_010, 5, commit(1, &first, 6))),
        vec![(5, Err(ResponseError::RebalanceInProgress.code()))],
        "a commit that would hold the rebalance off further is refused"
    );
    let effects = shell.release(40_020, true);
    assert_eq!(commits(&effects), vec![(3, Ok(()))]);
    let completed = joins(&effects);
    assert_eq!(completed.len(), 1, "the rebalance completes: {completed:?}");
    assert_eq!(completed[0].1.generation_id, 2);
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .map(|c| c.offset),
        Some(5)
    );
}

fn persists(effects: &[Effect]) -> Vec<(WaiterId, Result<(), i16>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CompletePersist(waiter, result) => Some((*waiter, *result)),
            _ => None,
        })
        .collect()
}

/// A simple (member-less) commit to group "g".
fn simple_commit(partition: i32, offset: i64) -> CommitRequest {
    let mut request = commit(-1, "", offset);
    request.offsets[0].1 = partition;
    request
}

#[test]
fn only_an_empty_group_is_deleted_and_its_tombstones_cover_commits_in_flight() {
    let mut shell = Shell::new(config());
    let effects = shell.coordinator.delete_group("nope", 1);
    assert_eq!(
        persists(&effects),
        [(1, Err(ResponseError::GroupIdNotFound.code()))]
    );
    let member = stable_single_member(&mut shell);
    let effects = shell.coordinator.delete_group("g", 2);
    assert_eq!(
        persists(&effects),
        [(2, Err(ResponseError::NonEmptyGroup.code()))]
    );
    let (_, _) = shell.leave(1, &[by_member(&member)]);
    shell.commit(2, 3, simple_commit(0, 5));
    // A commit still being written when the deletion starts: its partition
    // is tombstoned too, and the group refuses joins and commits meanwhile.
    shell.hold = true;
    shell.commit(3, 4, simple_commit(1, 9));
    let effects = shell.coordinator.delete_group("g", 5);
    let effects = shell.drive(4, effects);
    assert!(persists(&effects).is_empty(), "held until durable");
    let join = shell.coordinator.join(5, 6, join_request(""));
    assert_eq!(
        joins(&join)[0].1.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&simple_commit(0, 7)),
        Err(ResponseError::CoordinatorNotAvailable.code())
    );
    let effects = shell.release(6, true);
    assert_eq!(persists(&effects), [(5, Ok(()))]);
    assert_eq!(
        shell.persisted.last(),
        Some(&Durable::GroupTombstone {
            group_id: "g".into(),
            partitions: vec![("t".into(), 0), ("t".into(), 1)],
        })
    );
    assert!(shell.coordinator.list().is_empty(), "the group is gone");
    assert_eq!(shell.coordinator.committed_offset("g", "t", 1), None);
}

#[test]
fn a_failed_deletion_leaves_the_group_as_it_was() {
    let mut shell = Shell::new(config());
    shell.commit(0, 1, simple_commit(0, 5));
    shell.hold = true;
    let effects = shell.coordinator.delete_group("g", 2);
    shell.drive(1, effects);
    let effects = shell.release(2, false);
    assert_eq!(
        persists(&effects),
        [(2, Err(ResponseError::CoordinatorNotAvailable.code()))]
    );
    assert_eq!(
        shell
            .coordinator
            .committed_offset("g", "t", 0)
            .map(|c| c.offset),
        Some(5)
    );
    assert_eq!(
        shell
            .coordinator
            .validate_offset_commit(&simple_commit(0, 6)),
        Ok(())
    );
}

#[test]
fn offsets_of_topics_a_member_subscribes_to_are_not_deleted() {
    use crate::client::assignor;
    let mut shell = Shell::new(config());
    let mut request = join_request("");
    let subscription = assignor::encode_subscription(&["t".to_string()]);
    request.protocols = vec![("range".into(), subscription)];
    stable_single(&mut shell, request);
    // Simple commits cannot reach a group with members; seed by replay.
    shell.coordinator.apply_offset_commit(
        "g",
        vec![
            (
                "t".into(),
                0,
                CommittedOffset {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: String::new(),
                },
            ),
            (
                "u".into(),
                0,
                CommittedOffset {
                    offset: 2,
                    leader_epoch: -1,
                    metadata: String::new(),
                },
            ),
        ],
    );
    let partitions = [
        ("t".to_string(), 0),
        ("u".to_string(), 0),
        ("u".to_string(), 7),
    ];
    let (codes, effects) = shell.coordinator.delete_offsets("g", &partitions, 1);
    assert_eq!(
        codes,
        Ok(vec![ResponseError::GroupSubscribedToTopic.code(), 0, 0])
    );
    let effects = shell.drive(1, effects);
    assert_eq!(persists(&effects), [(1, Ok(()))]);
    assert_eq!(
        shell.persisted.last(),
        Some(&Durable::OffsetTombstones {
            group_id: "g".into(),
            partitions: vec![("u".into(), 0)],
        })
    );
    assert!(shell.coordinator.committed_offset("g", "t", 0).is_some());
    assert!(shell.coordinator.committed_offset("g", "u", 0).is_none());
    let (codes, _) = shell.coordinator.delete_offsets("nope", &partitions, 2);
    assert_eq!(codes, Err(ResponseError::GroupIdNotFound.code()));
}
