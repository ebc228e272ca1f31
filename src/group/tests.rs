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
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
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

/// Joins a first member and syncs it into a Stable generation 1.
fn stable_single_member(coordinator: &mut GroupCoordinator) -> String {
    let effects = coordinator.join(0, 1, join_request(""));
    let (_, result) = joins(&effects)
        .pop()
        .expect("a lone member completes at once");
    assert_eq!(result.error_code, 0);
    assert_eq!(result.generation_id, 1);
    assert_eq!(result.leader, result.member_id);
    let effects = coordinator.sync(
        0,
        2,
        "g",
        1,
        &result.member_id,
        vec![(result.member_id.clone(), Bytes::from_static(b"all"))],
    );
    assert_eq!(syncs(&effects)[0].1.assignment, Bytes::from_static(b"all"));
    result.member_id
}

#[test]
fn a_second_member_triggers_a_rebalance_that_completes_when_the_first_rejoins() {
    let mut coordinator = GroupCoordinator::new(config());
    let first = stable_single_member(&mut coordinator);
    let effects = coordinator.join(10, 3, join_request(""));
    assert!(
        joins(&effects).is_empty(),
        "waits for the first member to rejoin"
    );
    assert_eq!(
        coordinator.heartbeat(20, "g", 1, &first),
        ResponseError::RebalanceInProgress.code()
    );
    let effects = coordinator.join(30, 4, join_request(&first));
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
    assert!(syncs(&coordinator.sync(40, 5, "g", 2, &follower, vec![])).is_empty());
    let effects = coordinator.sync(
        50,
        6,
        "g",
        2,
        &first,
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
    assert_eq!(coordinator.describe("g").state, GroupState::Stable);
}

#[test]
fn a_member_that_does_not_rejoin_before_the_rebalance_timeout_is_removed() {
    let mut coordinator = GroupCoordinator::new(config());
    let first = stable_single_member(&mut coordinator);
    coordinator.join(10, 3, join_request(""));
    // A slow consumer: its heartbeat thread keeps the session alive, but its
    // application never polls, so it never rejoins.
    for at in (1_000..29_000).step_by(1_000) {
        coordinator.heartbeat(at, "g", 1, &first);
        assert!(
            joins(&coordinator.tick(at)).is_empty(),
            "deadline not reached at {at}"
        );
    }
    let effects = coordinator.tick(10 + 30_000);
    let completed = joins(&effects);
    assert_eq!(completed.len(), 1);
    assert_ne!(completed[0].1.member_id, first);
    assert_eq!(completed[0].1.generation_id, 2);
    // The slow member is fenced from committing with its old generation.
    assert_eq!(
        coordinator.validate_offset_commit("g", 1, &first),
        Err(ResponseError::UnknownMemberId.code())
    );
}

#[test]
fn an_expired_session_removes_the_member_and_empties_the_group() {
    let mut coordinator = GroupCoordinator::new(config());
    let member = stable_single_member(&mut coordinator);
    assert!(
        coordinator.tick(10_000).is_empty(),
        "exactly the session timeout is still alive"
    );
    coordinator.tick(10_001);
    let description = coordinator.describe("g");
    assert_eq!(description.state, GroupState::Empty);
    assert!(description.members.is_empty());
    assert_eq!(
        coordinator.heartbeat(10_002, "g", 1, &member),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn offset_commits_are_fenced_by_generation_and_membership() {
    let mut coordinator = GroupCoordinator::new(config());
    assert_eq!(
        coordinator.validate_offset_commit("fresh", -1, ""),
        Ok(()),
        "simple commit to a new group"
    );
    let member = stable_single_member(&mut coordinator);
    assert_eq!(coordinator.validate_offset_commit("g", 1, &member), Ok(()));
    assert_eq!(
        coordinator.validate_offset_commit("g", 0, &member),
        Err(ResponseError::IllegalGeneration.code())
    );
    assert_eq!(
        coordinator.validate_offset_commit("g", 1, "stranger"),
        Err(ResponseError::UnknownMemberId.code())
    );
    assert_eq!(
        coordinator.validate_offset_commit("g", -1, ""),
        Err(ResponseError::UnknownMemberId.code())
    );
    coordinator.apply_offset_commit(
        "g",
        vec![(
            "t".into(),
            0,
            CommittedOffset {
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
            },
        )],
    );
    assert_eq!(coordinator.committed_offset("g", "t", 0).unwrap().offset, 5);
}

#[test]
fn leaving_rebalances_the_rest_and_bad_joins_get_errors() {
    let mut coordinator = GroupCoordinator::new(config());
    let first = stable_single_member(&mut coordinator);
    let (codes, effects) = coordinator.leave(5, "g", &[first.clone(), "ghost".to_string()]);
    assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::GenerationChanged {
            generation_id: 2,
            ..
        }
    )));
    assert_eq!(coordinator.describe("g").state, GroupState::Empty);
    let mut bad = join_request("");
    bad.session_timeout_ms = 1;
    assert_eq!(
        joins(&coordinator.join(6, 9, bad))[0].1.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(
        joins(&coordinator.join(6, 9, join_request("nobody")))[0]
            .1
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn the_initial_rebalance_delay_applies_whenever_the_group_leaves_empty() {
    let mut coordinator = GroupCoordinator::new(GroupConfig {
        initial_rebalance_delay_ms: 3000,
        ..GroupConfig::default()
    });
    for round in 0..2 {
        let start = round * 100_000;
        assert!(
            joins(&coordinator.join(start, 1, join_request(""))).is_empty(),
            "round {round}: waits out the delay"
        );
        let completed = joins(&coordinator.tick(start + 3000));
        assert_eq!(
            completed.len(),
            1,
            "round {round}: completes at the deadline"
        );
        let member = completed[0].1.member_id.clone();
        coordinator.leave(start + 3001, "g", &[member]);
        assert_eq!(coordinator.describe("g").state, GroupState::Empty);
    }
}

#[test]
fn a_member_that_dies_during_a_rebalance_expires_after_its_session_not_the_rebalance_timeout() {
    let mut coordinator = GroupCoordinator::new(config());
    let first = stable_single_member(&mut coordinator);
    // A second member joins; the first must rejoin but has crashed.
    coordinator.join(10, 3, join_request(""));
    assert_eq!(
        coordinator.describe("g").state,
        GroupState::PreparingRebalance
    );
    // Its session (10 s) lapses long before the rebalance timeout (30 s).
    let effects = coordinator.tick(10_001);
    let completed = joins(&effects);
    assert_eq!(
        completed.len(),
        1,
        "the rebalance completes with the live member"
    );
    assert_ne!(completed[0].1.member_id, first);
    assert!(coordinator
        .describe("g")
        .members
        .iter()
        .all(|m| m.member_id != first));
}
