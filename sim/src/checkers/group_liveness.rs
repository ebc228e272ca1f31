//! `group-liveness` (liveness): consumer groups make progress within bounds
//! taken from their own configuration, as the coordinator reported it. The
//! safety checkers cannot see a group that waits for ever; `unseen` only
//! notices if a whole partition never drains. Sub-checks, named by the
//! description's prefix:
//!
//! - `rebalance-stuck`: a rebalance (`rebalance_started`) ends with the
//!   group's next `generation` event within the largest
//!   `rebalance_timeout_ms` its members joined with (or the broker's
//!   `group.initial.rebalance.delay.ms` from `meta`, if larger) plus
//!   [`SLACK_MS`]. The bound comes from the members' own settings, not from
//!   the deadline the coordinator computed, which a bug could get wrong.
//!   A commit of the group in flight at that deadline extends it to the
//!   commit's answer plus [`SLACK_MS`] (for an unknown outcome, to
//!   [`OFFSET_COMMIT_TIMEOUT_MS`] after it was sent, if later): the
//!   coordinator applies a commit before the next generation begins, and in
//!   a cluster the commit's write waits for replication.
//!   Excused when a fault stops the broker before then, or the history ends
//!   first.
//! - `member-not-expired`: a consumer process that crashes (a `crash-client`
//!   fault) stops heartbeating, so the coordinator removes its member
//!   (`member_removed`, any reason) within the member's `session_timeout_ms`
//!   (from its latest `member_joined`) plus [`SLACK_MS`]; if the member had
//!   joined a rebalance still in progress, or a JoinGroup it sent before the
//!   crash arrives after it, the coordinator holds it alive until that
//!   rebalance ends, so its `rebalance_timeout_ms` is added (from the late
//!   join's arrival). Same excuses, and a member whose coordinator handed
//!   over after its latest join is not judged: the new one never knew it.
//! - `commits-stalled`: a group that consumed a partition commits up to the
//!   end of the partition's final read, or at least keeps committing it, once
//!   nothing stands in its way: after the heal, and after the latest crashed
//!   member's session and rebalance timeouts (its partitions are stuck with
//!   it until the coordinator expires it), and after the latest fault that
//!   can drop messages between members and the broker (a broker stop, a
//!   partition, an isolation, as it begins and as it heals) plus the
//!   members' largest rebalance timeout and [`JOIN_TIMEOUT_MARGIN_MS`] (a
//!   member whose JoinGroup answer was lost hears nothing until its join
//!   times out), plus [`SLACK_MS`]. A group whose last commit of the partition is behind the
//!   end and older than that moment has stopped. Not judged when the history
//!   ends less than [`DRAIN_MS`] after it.
//!
//! In a cluster the coordinator moves with the leadership of the offsets
//! partition (`coordinator_loaded`, `coordinator_resigned`). A handover
//! excuses a deadline it falls before, as a broker stop does: the new
//! coordinator starts every group's membership over. Rebalances and
//! generations reported by a broker other than the one that loaded latest
//! (in the highest offsets epoch) are set aside: such a broker, cut off from
//! the cluster, may still believe it coordinates, but no generation it
//! starts becomes durable.
//!
//! The bounds come from the coordinator's facts, so this checker needs them:
//! a history with group operations but no `rebalance_started` or
//! `member_joined` events fails with `missing-facts`.

use std::collections::BTreeMap;

use super::facts::{show, verdict, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, FaultKind, Kind, Op};

/// Time beyond a coordinator deadline before a missed one counts: the
/// broker checks its timers every 100 ms, and a rebalance may also wait for
/// a commit's fsync before completing. A second covers both many times over.
pub const SLACK_MS: u64 = 1_000;

/// How long a group gets, once unblocked, to commit something before a
/// partition behind its end counts as stalled.
pub const DRAIN_MS: u64 = 5_000;

/// What a client adds to its rebalance timeout to bound a JoinGroup (Java's
/// margin, and sluice's): a member parked in JoinGroup when its coordinator
/// dies without closing the connection (a power loss) waits that long
/// before it tries again.
pub const JOIN_TIMEOUT_MARGIN_MS: u64 = 5_000;

pub struct GroupLiveness;

impl Checker for GroupLiveness {
    fn name(&self) -> &'static str {
        "group-liveness"
    }

    fn property(&self) -> Property {
        Property::Liveness
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let end_ms = history.last().map_or(0, |entry| entry.time_ms);
        let broker_stops: Vec<u64> = history
            .iter()
            .filter_map(|entry| match &entry.kind {
                Kind::Event {
                    event:
                        Event::Fault {
                            kind,
                            healed: false,
                            ..
                        },
                } if kind.restarts_broker() => Some(entry.time_ms),
                // A disk fault's heal restarts the broker too.
                Kind::Event {
                    event:
                        Event::Fault {
                            kind: FaultKind::DiskFull | FaultKind::DiskErrors,
                            healed: true,
                            ..
                        },
                } => Some(entry.time_ms),
                _ => None,
            })
            .chain(handovers(history).into_iter().map(|(_, at)| at))
            .collect();
        // A deadline at `due` counts only if the history went on past it and
        // no broker stop or coordinator handover came between `from` and
        // `due`.
        let judged = |from: u64, due: u64| {
            due <= end_ms && !broker_stops.iter().any(|&stop| from <= stop && stop <= due)
        };
        let stale = super::facts::stale_coordinator_facts(history);
        let current: Vec<&Entry> = history
            .iter()
            .filter(|entry| !stale.contains(&entry.index))
            .collect();
        let mut anomalies = Vec::new();
        let mut counts = Counts::default();
        missing_facts(history, &mut anomalies);
        rebalances(&current, &judged, &mut anomalies, &mut counts);
        expiries(&current, &judged, &mut anomalies, &mut counts);
        catch_up(history, &mut anomalies, &mut counts);
        let summary = format!(
            "{} rebalances ({} judged), {} crashed members ({} judged), {} group-partitions \
             after the heal ({} behind but still committing, or caught up by a commit of \
             unknown outcome)",
            counts.rebalances,
            counts.rebalances_judged,
            counts.crashed_members,
            counts.crashed_members_judged,
            counts.group_partitions,
            counts.catching_up,
        );
        verdict(self, anomalies, summary)
    }
}

/// How long the coordinator may keep a commit's write in flight: Kafka's
/// `offsets.commit.timeout.ms`, sluice's bound on waiting for replication.
/// A client that timed out sooner (an `info` outcome) leaves the write in
/// flight up to this long after it sent the commit.
pub const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// Each group's commits as (invoked, write landed) times: the answer, or for
/// an unknown outcome the coordinator's own bound; one never answered counts
/// as landed at the end of the history.
fn commit_spans<'a>(history: &[&'a Entry]) -> BTreeMap<&'a str, Vec<(u64, u64)>> {
    let end_ms = history.last().map_or(0, |entry| entry.time_ms);
    let mut open: BTreeMap<(&str, u64), (&str, u64)> = BTreeMap::new();
    let mut spans: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for entry in history {
        match &entry.kind {
            Kind::Invoke {
                op: Op::Commit { group, .. },
            } => {
                open.insert(
                    (entry.process.as_str(), entry.id),
                    (group.as_str(), entry.time_ms),
                );
            }
            Kind::Ok {
                op: Op::Commit { .. },
            }
            | Kind::Fail {
                op: Op::Commit { .. },
                ..
            } => {
                if let Some((group, invoked)) = open.remove(&(entry.process.as_str(), entry.id)) {
                    spans
                        .entry(group)
                        .or_default()
                        .push((invoked, entry.time_ms));
                }
            }
            Kind::Info {
                op: Op::Commit { .. },
                ..
            } => {
                if let Some((group, invoked)) = open.remove(&(entry.process.as_str(), entry.id)) {
                    let landed = entry.time_ms.max(invoked + OFFSET_COMMIT_TIMEOUT_MS);
                    spans.entry(group).or_default().push((invoked, landed));
                }
            }
            _ => {}
        }
    }
    for (group, invoked) in open.into_values() {
        spans.entry(group).or_default().push((invoked, end_ms));
    }
    spans
}

/// When group coordination moved, as (entry, time): a broker loaded as
/// coordinator (after the first) or resigned.
fn handovers<'a>(history: impl IntoIterator<Item = &'a Entry>) -> Vec<(u64, u64)> {
    history
        .into_iter()
        .filter(|entry| {
            matches!(
                entry.kind,
                Kind::Event {
                    event: Event::CoordinatorLoaded { .. } | Event::CoordinatorResigned { .. }
                }
            )
        })
        .skip(1)
        .map(|entry| (entry.index, entry.time_ms))
        .collect()
}

#[derive(Default)]
struct Counts {
    rebalances: usize,
    rebalances_judged: usize,
    crashed_members: usize,
    crashed_members_judged: usize,
    group_partitions: usize,
    catching_up: usize,
}

/// Fails loudly when the history has group members but not the
/// coordinator's facts the bounds come from.
fn missing_facts(history: &[Entry], anomalies: &mut Vec<Anomaly>) {
    let first_assign = history.iter().find(|entry| {
        matches!(
            &entry.kind,
            Kind::Ok {
                op: Op::Assign { .. }
            }
        )
    });
    let Some(assign) = first_assign else {
        return;
    };
    let has = |wanted: fn(&Event) -> bool| {
        history.iter().any(|entry| match &entry.kind {
            Kind::Event { event } => wanted(event),
            _ => false,
        })
    };
    for (name, present) in [
        (
            "rebalance_started",
            has(|e| matches!(e, Event::RebalanceStarted { .. })),
        ),
        (
            "member_joined",
            has(|e| matches!(e, Event::MemberJoined { .. })),
        ),
    ] {
        if !present {
            anomalies.push(Anomaly {
                description: format!(
                    "missing-facts: the history has group assignments but no {name} events, \
                     which the coordinator reports and this checker needs"
                ),
                entries: vec![assign.index],
            });
        }
    }
}

fn rebalances(
    history: &[&Entry],
    judged: &dyn Fn(u64, u64) -> bool,
    anomalies: &mut Vec<Anomaly>,
    counts: &mut Counts,
) {
    let initial_delay_ms = history
        .iter()
        .find_map(|entry| match &entry.kind {
            Kind::Event {
                event:
                    Event::Meta {
                        group_initial_rebalance_delay_ms,
                        ..
                    },
            } => Some(*group_initial_rebalance_delay_ms),
            _ => None,
        })
        .unwrap_or(0);
    let commits = commit_spans(history);
    // A rebalance whose deadline passes while a commit of the group is in
    // flight completes once that commit's write lands (the coordinator
    // applies a commit validated in one generation before the next begins,
    // and a write in a cluster waits for replication): the bound extends
    // to the latest such commit's answer.
    let in_flight_until = |group: &str, deadline: u64| {
        commits
            .get(group)
            .into_iter()
            .flatten()
            .filter(|&&(invoked, answered)| invoked <= deadline && answered > deadline)
            .map(|&(_, answered)| answered)
            .max()
    };
    // Each group's members and the rebalance timeout they joined with.
    let mut members: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    // Per group, the rebalance in progress: (entry, start, bound).
    let mut open: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut report =
        |group: &str, (index, start, bound): (u64, u64, u64), ended: Option<(u64, u64)>| {
            counts.rebalances += 1;
            let deadline = start + bound + SLACK_MS;
            let due = in_flight_until(group, deadline)
                .map_or(deadline, |answered| answered.max(deadline) + SLACK_MS);
            let late = match ended {
                Some((_, at)) => at > due,
                None => true,
            };
            if !judged(start, due) {
                return;
            }
            counts.rebalances_judged += 1;
            if late {
                let mut entries = vec![index];
                entries.extend(ended.map(|(end, _)| end));
                anomalies.push(Anomaly {
                    description: format!(
                        "rebalance-stuck: {group}'s rebalance from {start} ms, due within its \
                     members' largest rebalance timeout of {bound} ms, {}",
                        match ended {
                            Some((_, at)) => format!("took {} ms", at - start),
                            None => "never completed".to_string(),
                        }
                    ),
                    entries,
                });
            }
        };
    for entry in history {
        let Kind::Event { event } = &entry.kind else {
            continue;
        };
        match event {
            Event::MemberJoined {
                group,
                member,
                rebalance_timeout_ms,
                ..
            } => {
                members
                    .entry(group)
                    .or_default()
                    .insert(member, u64::try_from(*rebalance_timeout_ms).unwrap_or(0));
            }
            Event::MemberRemoved { group, member, .. } => {
                if let Some(members) = members.get_mut(group.as_str()) {
                    members.remove(member.as_str());
                }
            }
            Event::RebalanceStarted { group, .. } => {
                let longest = members
                    .get(group.as_str())
                    .and_then(|members| members.values().max().copied())
                    .unwrap_or(0);
                let started = (entry.index, entry.time_ms, longest.max(initial_delay_ms));
                if let Some(previous) = open.insert(group, started) {
                    // A new start without a generation between: the broker
                    // restarted and forgot the old one.
                    report(group, previous, None);
                }
            }
            Event::Generation { group, .. } => {
                if let Some(started) = open.remove(group.as_str()) {
                    report(group, started, Some((entry.index, entry.time_ms)));
                }
            }
            _ => {}
        }
    }
    for (group, started) in open {
        report(group, started, None);
    }
}

fn expiries(
    history: &[&Entry],
    judged: &dyn Fn(u64, u64) -> bool,
    anomalies: &mut Vec<Anomaly>,
    counts: &mut Counts,
) {
    // Each process's member, from its latest Assign: (group, member id).
    let mut member_of: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    // Each member's timeouts from its latest join: (session, rebalance).
    let mut timeouts: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    // Removals: (group, member) -> times.
    let mut removals: BTreeMap<(&str, &str), Vec<(u64, u64)>> = BTreeMap::new();
    // Every join of each member, in order: (entry, time).
    let mut all_joins: BTreeMap<(&str, &str), Vec<(u64, u64)>> = BTreeMap::new();
    // Each group's latest generation, and each member's latest join: a join
    // after the group's latest generation is parked in a rebalance.
    let mut generations: BTreeMap<&str, u64> = BTreeMap::new();
    let mut joins: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let handed_over = handovers(history.iter().copied());
    for entry in history {
        match &entry.kind {
            Kind::Event {
                event: Event::MemberRemoved { group, member, .. },
            } => removals
                .entry((group.as_str(), member.as_str()))
                .or_default()
                .push((entry.index, entry.time_ms)),
            Kind::Event {
                event: Event::MemberJoined { group, member, .. },
            } => all_joins
                .entry((group.as_str(), member.as_str()))
                .or_default()
                .push((entry.index, entry.time_ms)),
            _ => {}
        }
    }
    for entry in history {
        match &entry.kind {
            Kind::Ok {
                op: Op::Assign { group, member, .. },
            } => {
                member_of.insert(entry.process.as_str(), (group.as_str(), member.as_str()));
            }
            Kind::Event {
                event:
                    Event::MemberJoined {
                        group,
                        member,
                        session_timeout_ms,
                        rebalance_timeout_ms,
                        ..
                    },
            } => {
                timeouts.insert(
                    (group.as_str(), member.as_str()),
                    (
                        u64::try_from(*session_timeout_ms).unwrap_or(0),
                        u64::try_from(*rebalance_timeout_ms).unwrap_or(0),
                    ),
                );
                joins.insert((group.as_str(), member.as_str()), entry.index);
            }
            Kind::Event {
                event: Event::Generation { group, .. },
            } => {
                generations.insert(group.as_str(), entry.index);
            }
            Kind::Event {
                event:
                    Event::Fault {
                        kind: FaultKind::CrashClient,
                        target,
                        healed: false,
                        ..
                    },
            } => {
                let Some(&(group, member)) = member_of.get(target.as_str()) else {
                    continue;
                };
                member_of.remove(target.as_str());
                let Some(&(session, rebalance)) = timeouts.get(&(group, member)) else {
                    continue;
                };
                counts.crashed_members += 1;
                let crash = entry.time_ms;
                let parked = joins.get(&(group, member)).copied().unwrap_or(0)
                    > generations.get(group).copied().unwrap_or(0);
                // A JoinGroup the member sent before it crashed may still
                // arrive (it was in flight): it parks the member too, from
                // its arrival.
                let late_join = all_joins.get(&(group, member)).and_then(|joins| {
                    joins
                        .iter()
                        .filter(|&&(index, _)| index > entry.index)
                        .map(|&(_, at)| at)
                        .next_back()
                });
                let (alive_until, rebalance) = match (late_join, parked) {
                    (Some(at), _) => (at.max(crash), rebalance),
                    (None, true) => (crash, rebalance),
                    (None, false) => (crash, 0),
                };
                let due = alive_until + rebalance + session + SLACK_MS;
                let removed = removals
                    .get(&(group, member))
                    .and_then(|times| times.iter().find(|&&(index, _)| index > entry.index))
                    .copied();
                // Removed before the crash (it had left): nothing to expire.
                let already_gone = removals
                    .get(&(group, member))
                    .is_some_and(|times| times.iter().any(|&(index, _)| index < entry.index))
                    && removed.is_none();
                // Coordination moved after its latest join: the coordinator
                // now serving never knew the member, so it has none to expire.
                let joined_at = joins.get(&(group, member)).copied().unwrap_or(0);
                let forgotten = handed_over
                    .iter()
                    .any(|&(index, _)| joined_at < index && index < entry.index);
                if forgotten {
                    continue;
                }
                if already_gone || !judged(crash, due) {
                    continue;
                }
                counts.crashed_members_judged += 1;
                if removed.is_none_or(|(_, at)| at > due) {
                    let mut entries = vec![entry.index];
                    entries.extend(removed.map(|(index, _)| index));
                    anomalies.push(Anomaly {
                        description: format!(
                            "member-not-expired: {member} of {group} crashed ({target}) at \
                             {crash} ms and was {} (session {session} ms, rebalance {rebalance} ms \
                             counted)",
                            match removed {
                                Some((_, at)) => format!("removed only after {} ms", at - crash),
                                None => "never removed".to_string(),
                            }
                        ),
                        entries,
                    });
                }
            }
            _ => {}
        }
    }
}

/// A group's latest ok commit of a partition: offset, entry, time.
type LastCommit = (i64, u64, u64);

fn catch_up(history: &[Entry], anomalies: &mut Vec<Anomaly>, counts: &mut Counts) {
    let Some(heal) = history
        .iter()
        .find(|entry| matches!(entry.kind, Kind::Event { event: Event::Heal }))
    else {
        return;
    };
    let end_ms = history.last().map_or(0, |entry| entry.time_ms);
    // Per group, when nothing stands in its way any more: the heal, or a
    // crashed member's expiry, whichever is later.
    let mut unblocked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut member_of: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut timeouts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    // The largest rebalance timeout each group's members joined with.
    let mut longest_rebalance: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last_message_loss: Option<u64> = None;
    // Each group's partitions (from assignments), and its last ok commit per
    // partition: (offset, entry, time).
    let mut consumed: BTreeMap<(&str, Tp<'_>), Option<LastCommit>> = BTreeMap::new();
    let mut ends: BTreeMap<Tp<'_>, i64> = BTreeMap::new();
    // A commit attempt whose outcome is unknown (its consumer crashed, or it
    // timed out) may have been applied: then the group may be caught up
    // without an ok commit saying so. The highest such offset per partition.
    let failed: std::collections::BTreeSet<(&str, u64)> = history
        .iter()
        .filter(|entry| {
            matches!(
                entry.kind,
                Kind::Fail {
                    op: Op::Commit { .. },
                    ..
                }
            )
        })
        .map(|entry| (entry.process.as_str(), entry.id))
        .collect();
    let mut possibly: BTreeMap<(&str, Tp<'_>), i64> = BTreeMap::new();
    for entry in history {
        match &entry.kind {
            Kind::Invoke {
                op: Op::Commit { group, offsets, .. },
            } if !failed.contains(&(entry.process.as_str(), entry.id)) => {
                for commit in offsets {
                    let key = (group.as_str(), (commit.topic.as_str(), commit.partition));
                    let highest = possibly.entry(key).or_insert(commit.offset);
                    *highest = (*highest).max(commit.offset);
                }
            }
            Kind::Ok {
                op:
                    Op::Assign {
                        group,
                        member,
                        partitions,
                        ..
                    },
            } => {
                member_of.insert(entry.process.as_str(), (group.as_str(), member.as_str()));
                unblocked.entry(group.as_str()).or_insert(0);
                for tp in partitions {
                    consumed
                        .entry((group.as_str(), (tp.topic.as_str(), tp.partition)))
                        .or_insert(None);
                }
            }
            Kind::Event {
                event:
                    Event::MemberJoined {
                        group,
                        member,
                        session_timeout_ms,
                        rebalance_timeout_ms,
                        ..
                    },
            } => {
                let rebalance = u64::try_from(*rebalance_timeout_ms).unwrap_or(0);
                let wait = u64::try_from(*session_timeout_ms).unwrap_or(0) + rebalance;
                timeouts.insert((group.as_str(), member.as_str()), wait);
                let longest = longest_rebalance.entry(group.as_str()).or_insert(0);
                *longest = (*longest).max(rebalance);
            }
            // A fault that can drop messages between members and their
            // coordinator: a JoinGroup answer sent while it lasts may be lost,
            // and the member waits out its join timeout before trying again.
            // (In the simulation a partition drops messages outright; real
            // TCP would resend them once the network heals.)
            Kind::Event {
                event: Event::Fault { kind, .. },
            } if kind.restarts_broker()
                || matches!(
                    kind,
                    FaultKind::Partition | FaultKind::PartitionOneway | FaultKind::Isolate
                ) =>
            {
                last_message_loss = Some(entry.time_ms);
            }
            // A coordinator handover: the members find the new coordinator
            // and rejoin, a rebalance that may take as long.
            Kind::Event {
                event: Event::CoordinatorLoaded { .. } | Event::CoordinatorResigned { .. },
            } => {
                last_message_loss = Some(entry.time_ms);
            }
            Kind::Event {
                event:
                    Event::Fault {
                        kind: FaultKind::CrashClient,
                        target,
                        healed: false,
                        ..
                    },
            } => {
                if let Some(&(group, member)) = member_of.get(target.as_str()) {
                    let wait = timeouts.get(&(group, member)).copied().unwrap_or(0);
                    let free = entry.time_ms + wait;
                    let at = unblocked.entry(group).or_insert(0);
                    *at = (*at).max(free);
                }
            }
            Kind::Ok {
                op: Op::Commit { group, offsets, .. },
            } => {
                for commit in offsets {
                    let key = (group.as_str(), (commit.topic.as_str(), commit.partition));
                    consumed.insert(key, Some((commit.offset, entry.index, entry.time_ms)));
                }
            }
            Kind::Ok {
                op:
                    Op::FinalRead {
                        target,
                        log_start_offset,
                        records,
                    },
            } => {
                let end = records
                    .iter()
                    .map(|record| record.offset.saturating_add(1))
                    .max()
                    .unwrap_or(0)
                    .max(*log_start_offset);
                ends.insert((target.topic.as_str(), target.partition), end);
            }
            _ => {}
        }
    }
    for ((group, tp), last) in consumed {
        let Some(&end) = ends.get(&tp) else {
            continue;
        };
        let after_stop = last_message_loss.map_or(0, |at| {
            at + longest_rebalance.get(group).copied().unwrap_or(0) + JOIN_TIMEOUT_MARGIN_MS
        });
        let free_ms = unblocked
            .get(group)
            .copied()
            .unwrap_or(0)
            .max(heal.time_ms)
            .max(after_stop)
            + SLACK_MS;
        if free_ms + DRAIN_MS > end_ms {
            continue;
        }
        counts.group_partitions += 1;
        let (committed, index, at) = match last {
            Some((offset, index, at)) => (offset, Some(index), at),
            None => (0, None, 0),
        };
        if committed >= end {
            continue;
        }
        if possibly
            .get(&(group, tp))
            .is_some_and(|&offset| offset >= end)
        {
            counts.catching_up += 1;
            continue;
        }
        if at >= free_ms {
            counts.catching_up += 1;
            continue;
        }
        anomalies.push(Anomaly {
            description: format!(
                "commits-stalled: {group} committed {} only up to @{committed}, below the end \
                 @{end}, and made no commit of it from {free_ms} ms (after the heal and any \
                 crashed member's expiry) to the end of the run at {end_ms} ms",
                show(tp)
            ),
            entries: index.into_iter().chain([heal.index]).collect(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{record, H};
    use crate::history::{Builder, FaultKind, RemovalReason};

    const G: &str = "g";

    fn prefixes(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.description.split(':').next().unwrap())
            .collect()
    }

    fn event(b: &mut Builder, at: u64, event: Event) {
        b.event(at, "broker-0", event);
    }

    fn rebalance(b: &mut Builder, at: u64, timeout: i64) {
        event(
            b,
            at,
            Event::RebalanceStarted {
                broker: "broker-0".into(),
                group: G.into(),
                generation: 1,
                rebalance_timeout_ms: timeout,
            },
        );
    }

    fn generation(b: &mut Builder, at: u64, generation: i32) {
        event(
            b,
            at,
            Event::Generation {
                broker: "broker-0".into(),
                group: G.into(),
                generation,
            },
        );
    }

    fn joined(b: &mut Builder, at: u64, member: &str) {
        event(
            b,
            at,
            Event::MemberJoined {
                broker: "broker-0".into(),
                group: G.into(),
                member: member.into(),
                instance: None,
                session_timeout_ms: 6_000,
                rebalance_timeout_ms: 5_000,
            },
        );
    }

    fn assign(b: &mut Builder, at: u64, process: &str, member: &str) {
        b.ok(
            at,
            process,
            0,
            Op::Assign {
                group: G.into(),
                generation: 2,
                member: member.into(),
                partitions: vec![crate::checkers::facts::build::tp(0)],
            },
        );
    }

    fn crash(b: &mut Builder, at: u64, target: &str) {
        b.event(
            at,
            "nemesis",
            Event::Fault {
                kind: FaultKind::CrashClient,
                target: target.into(),
                peer: None,
                power_loss: false,
                healed: false,
            },
        );
    }

    fn removed(b: &mut Builder, at: u64, member: &str) {
        event(
            b,
            at,
            Event::MemberRemoved {
                broker: "broker-0".into(),
                group: G.into(),
                member: member.into(),
                reason: RemovalReason::SessionExpired,
            },
        );
    }

    #[test]
    fn a_rebalance_past_its_deadline_is_stuck() {
        let mut b = Builder::new();
        joined(&mut b, 90, "m1");
        // The coordinator's own deadline says a year; the members' settings
        // say 5 s, and those are what the check trusts.
        rebalance(&mut b, 100, 31_536_000_000);
        generation(&mut b, 20_000, 2);
        let verdict = GroupLiveness.check(&b.build());
        assert_eq!(prefixes(&verdict), vec!["rebalance-stuck"]);
        assert_eq!(verdict.anomalies[0].entries, vec![1, 2]);
    }

    #[test]
    fn a_rebalance_that_never_ends_is_stuck_unless_the_broker_stopped_or_time_ran_out() {
        let mut b = Builder::new();
        joined(&mut b, 90, "m1");
        rebalance(&mut b, 100, 5_000);
        event(&mut b, 30_000, Event::Heal);
        assert_eq!(
            prefixes(&GroupLiveness.check(&b.build())),
            vec!["rebalance-stuck"]
        );
        // The broker crashed before the deadline: its coordinator forgot.
        let mut b = Builder::new();
        joined(&mut b, 90, "m1");
        rebalance(&mut b, 100, 5_000);
        b.event(
            2_000,
            "nemesis",
            Event::Fault {
                kind: FaultKind::CrashBroker,
                target: "broker-0".into(),
                peer: None,
                power_loss: true,
                healed: false,
            },
        );
        event(&mut b, 30_000, Event::Heal);
        assert!(GroupLiveness.check(&b.build()).valid);
        // The history ends before the deadline: nothing to judge.
        let mut b = Builder::new();
        joined(&mut b, 90, "m1");
        rebalance(&mut b, 100, 5_000);
        event(&mut b, 3_000, Event::Heal);
        assert!(GroupLiveness.check(&b.build()).valid);
    }

    fn coordinator(b: &mut Builder, at: u64, broker: &str, leader_epoch: i32, loaded: bool) {
        let event = if loaded {
            Event::CoordinatorLoaded {
                broker: broker.into(),
                leader_epoch,
            }
        } else {
            Event::CoordinatorResigned {
                broker: broker.into(),
                leader_epoch,
            }
        };
        b.event(at, broker, event);
    }

    #[test]
    fn a_coordinator_handover_excuses_the_rebalance_it_interrupts_but_not_a_later_one() {
        // broker-0 coordinates, a rebalance starts, leadership of the
        // offsets partition moves to broker-1, which starts over.
        let interrupted = |resigns: bool| {
            let mut b = Builder::new();
            coordinator(&mut b, 0, "broker-0", 0, true);
            joined(&mut b, 90, "m1");
            rebalance(&mut b, 100, 5_000);
            if resigns {
                coordinator(&mut b, 2_000, "broker-0", 0, false);
            }
            coordinator(&mut b, 2_500, "broker-1", 1, true);
            b
        };
        let healed = |mut b: Builder| {
            event(&mut b, 30_000, Event::Heal);
            b.build()
        };
        assert!(GroupLiveness.check(&healed(interrupted(true))).valid);
        // The old coordinator never heard it lost leadership (cut off): the
        // new one's load is the handover.
        assert!(GroupLiveness.check(&healed(interrupted(false))).valid);
        // The stale broker-0 goes on starting rebalances that never end:
        // set aside, not judged.
        let mut b = interrupted(false);
        rebalance(&mut b, 3_000, 5_000);
        assert!(GroupLiveness.check(&healed(b)).valid);
        // A rebalance the new coordinator starts after the handover is
        // judged as ever.
        let mut b = interrupted(false);
        b.event(
            3_000,
            "broker-1",
            Event::RebalanceStarted {
                broker: "broker-1".into(),
                group: G.into(),
                generation: 1,
                rebalance_timeout_ms: 5_000,
            },
        );
        assert_eq!(
            prefixes(&GroupLiveness.check(&healed(b))),
            vec!["rebalance-stuck"]
        );
    }

    #[test]
    fn a_commit_in_flight_at_the_deadline_extends_it_to_the_commits_answer() {
        let history = |completed: u64| {
            let mut b = Builder::new();
            joined(&mut b, 90, "m1");
            rebalance(&mut b, 100, 5_000);
            // A commit sent before the deadline waits on replication (a
            // follower cut off) until 8 s; the rebalance completes after it.
            let op = crate::checkers::facts::build::commit_op("consumer-0", G, 1, &[(0, 5)]);
            let id = b.invoke(5_000, "consumer-0", op.clone());
            b.ok(8_000, "consumer-0", id, op.clone());
            // One the client gave up on: its write may stay in flight for
            // the coordinator's commit timeout.
            let id = b.invoke(5_050, "consumer-1", op.clone());
            b.info(8_050, "consumer-1", id, op, "timed out");
            generation(&mut b, completed, 2);
            event(&mut b, 30_000, Event::Heal);
            b.build()
        };
        assert!(GroupLiveness.check(&history(8_500)).valid);
        assert!(GroupLiveness.check(&history(10_500)).valid);
        assert_eq!(
            prefixes(&GroupLiveness.check(&history(12_500))),
            vec!["rebalance-stuck"]
        );
    }

    #[test]
    fn a_crashed_member_must_be_removed_within_its_timeouts() {
        let mut b = Builder::new();
        joined(&mut b, 0, "m1");
        rebalance(&mut b, 10, 5_000);
        generation(&mut b, 20, 2);
        assign(&mut b, 30, "consumer-0", "m1");
        let crashed = 4; // the fifth entry
        crash(&mut b, 1_000, "consumer-0");
        event(&mut b, 60_000, Event::Heal);
        let verdict = GroupLiveness.check(&b.build());
        assert_eq!(prefixes(&verdict), vec!["member-not-expired"]);
        assert_eq!(verdict.anomalies[0].entries, vec![crashed]);

        let mut b = Builder::new();
        joined(&mut b, 0, "m1");
        rebalance(&mut b, 10, 5_000);
        generation(&mut b, 20, 2);
        assign(&mut b, 30, "consumer-0", "m1");
        crash(&mut b, 1_000, "consumer-0");
        removed(&mut b, 7_050, "m1");
        event(&mut b, 60_000, Event::Heal);
        assert!(GroupLiveness.check(&b.build()).valid);

        // A JoinGroup sent before the crash arrives after it: the member is
        // parked until the rebalance ends (5 s), then its session runs.
        let mut b = Builder::new();
        joined(&mut b, 0, "m1");
        rebalance(&mut b, 10, 5_000);
        generation(&mut b, 20, 2);
        assign(&mut b, 30, "consumer-0", "m1");
        crash(&mut b, 1_000, "consumer-0");
        joined(&mut b, 1_000, "m1");
        removed(&mut b, 11_900, "m1");
        event(&mut b, 60_000, Event::Heal);
        let verdict = GroupLiveness.check(&b.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_member_the_new_coordinator_never_knew_has_nothing_to_expire() {
        // m1 joined at broker-0's coordinator; coordination moved to
        // broker-1 before m1's process crashed, so no coordinator holds it.
        let history = |handover: bool| {
            let mut b = Builder::new();
            coordinator(&mut b, 0, "broker-0", 0, true);
            joined(&mut b, 0, "m1");
            rebalance(&mut b, 10, 5_000);
            generation(&mut b, 20, 2);
            assign(&mut b, 30, "consumer-0", "m1");
            if handover {
                coordinator(&mut b, 500, "broker-1", 1, true);
            }
            crash(&mut b, 1_000, "consumer-0");
            event(&mut b, 60_000, Event::Heal);
            b.build()
        };
        assert!(GroupLiveness.check(&history(true)).valid);
        assert_eq!(
            prefixes(&GroupLiveness.check(&history(false))),
            vec!["member-not-expired"]
        );
    }

    #[test]
    fn a_group_that_stops_committing_short_of_the_end_has_stalled() {
        let history = |last_commit_at: u64| {
            let mut b = Builder::new();
            rebalance(&mut b, 0, 5_000);
            joined(&mut b, 10, "m1");
            generation(&mut b, 20, 2);
            assign(&mut b, 30, "consumer-0", "m1");
            let commit = crate::checkers::facts::build::commit_op("consumer-0", G, 2, &[(0, 1)]);
            let id = b.invoke(last_commit_at, "consumer-0", commit.clone());
            b.ok(last_commit_at, "consumer-0", id, commit);
            b.event(10_000, "nemesis", Event::Heal);
            let read = |records| Op::FinalRead {
                target: crate::checkers::facts::build::tp(0),
                log_start_offset: 0,
                records,
            };
            let id = b.invoke(30_000, "final-reader", read(Vec::new()));
            b.ok(
                30_001,
                "final-reader",
                id,
                read(vec![record(0, 0, None, "a"), record(0, 1, None, "b")]),
            );
            b.build()
        };
        let verdict = GroupLiveness.check(&history(5_000));
        assert_eq!(prefixes(&verdict), vec!["commits-stalled"]);
        // Still committing after the heal: slow, not stuck.
        assert!(GroupLiveness.check(&history(12_000)).valid);
    }

    #[test]
    fn group_histories_without_the_coordinators_facts_fail_loudly() {
        let mut h = H::new(true, true);
        h.assign("consumer-0", G, 1, &[0]);
        let verdict = GroupLiveness.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["missing-facts", "missing-facts"]);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut b = Builder::new();
        joined(&mut b, 0, "m1");
        rebalance(&mut b, 10, 5_000);
        generation(&mut b, 4_000, 2);
        assign(&mut b, 4_010, "consumer-0", "m1");
        crash(&mut b, 5_000, "consumer-0");
        removed(&mut b, 11_000, "m1");
        rebalance(&mut b, 11_000, 5_000);
        generation(&mut b, 11_001, 3);
        event(&mut b, 60_000, Event::Heal);
        let verdict = GroupLiveness.check(&b.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
