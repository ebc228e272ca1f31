//! `offset-commits` (safety): consumer-group offset commits mean what they
//! say. A committed offset is the promise "every record before this one has
//! been handled"; the next owner of the partition resumes from it, so a wrong
//! commit silently loses or repeats records. Sub-checks, named by the
//! description's prefix:
//!
//! - `commit-not-next`: a member commits offset o > 0 only after its process
//!   handled o - 1 (a `Process` ok before the commit's invoke), or when o is
//!   where it started reading after its last Assign or Seek (it re-commits its
//!   position without having handled anything yet; before its first poll
//!   that is the group's latest ok commit, or a newer one of unknown outcome).
//! - `commit-above-high-watermark`: nobody can have read past the high
//!   watermark, so a commit above the latest `HighWatermark` event at its
//!   completion is invented. Skipped for partitions without such events.
//!   With replicas, a new leader may advertise a high watermark below its
//!   predecessor's until its followers catch up, so there the bound is the
//!   highest high watermark advertised so far.
//! - `commit-unprocessed`: commit-before-process: the commit covers an offset
//!   the member polled since its last Assign or Seek but had not processed
//!   when it invoked the commit.
//! - `commit-behind`: the committed offset is the next one to read, so a
//!   member never commits an offset it has itself processed since its last
//!   Assign or Seek (that record would be delivered again: an off-by-one).
//! - `poll-unowned`: a group member's poll returns only partitions it holds
//!   (assigned and not revoked since); anything else is a partition another
//!   member may be processing at the same time.
//! - `poll-above-high-watermark`: consumers see only records below the high
//!   watermark (what is durable, and later what is replicated), so a poll
//!   returning an offset at or above the latest `HighWatermark` event before
//!   its completion read data that may yet vanish. Skipped for partitions
//!   without such events.
//! - `commit-went-back`: a group's successive ok commits for a partition, in
//!   completion order, never decrease unless the group sought that partition
//!   in between (after the earlier commit's invoke). Two commits whose
//!   invoke-to-ok spans overlap may have been applied in either order (a
//!   held response arrives late), so only one invoked after the other's ok
//!   is judged against it; of two such concurrent commits, the lower offset
//!   is the one later commits are judged against.
//! - `stale-commit-accepted`: the coordinator must fence zombies: a commit
//!   from a generation older than the group's latest `Generation` event before
//!   the commit's invoke must fail. Commits with generation -1 (no group
//!   management) are not checked.
//! - `new-owner-start`: a member newly given a partition must resume at the
//!   group's last ok commit for it before the Assign, unless it sought first,
//!   there was no commit, or retention removed that offset (or, on a
//!   compacted topic, the cleaner removed every offset in between).
//! - `double-ownership`: one generation of a group assigns each partition to
//!   at most one member, except that a static member rejoining under a new
//!   member id takes over its old id's partitions (after a `member_removed`
//!   event with reason `replaced`, which fences the old id).
//!
//! With `flush_on_ack` false a broker power loss may lose unsynced commits and
//! records, so a commit going back, a high watermark going down and a new owner
//! resuming elsewhere are excused (and counted) across one.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{record_tp, show, verdict, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{
    Entry, Event, FaultKind, Kind, Op, PartitionOffset, Record, RemovalReason, TopicPartition,
};

pub struct OffsetCommits;

impl Checker for OffsetCommits {
    fn name(&self) -> &'static str {
        "offset-commits"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let mut state = State::new(&facts);
        state.failed_calls = history
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
        // A stale coordinator's generations are not the group's.
        let stale = super::facts::stale_coordinator_facts(history);
        for entry in history {
            if !stale.contains(&entry.index) {
                state.step(entry);
            }
        }
        state.missing_facts(history);
        let summary = format!(
            "{} ok commits of {} partition offsets, {} assigns ({} new owners' first polls \
             checked, {} resumed at an unfinished commit){}; {} excused by a power loss \
             (flush_on_ack={}); {} below a higher high watermark advertised before a leader change",
            state.counts.commits,
            state.counts.commit_offsets,
            state.counts.assigns,
            state.counts.new_owner_polls,
            state.counts.resumed_at_unfinished,
            facts.settings_note(),
            state.counts.excused,
            facts.settings.flush_on_ack,
            state.counts.below_earlier_high_watermark,
        );
        verdict(self, state.anomalies, summary)
    }
}

/// A consumer's view of one partition since its last reset (process start,
/// Assign, Seek): where it started and what it polled.
#[derive(Default)]
struct PartitionState {
    /// The offset it started reading from: the Seek's target, or the first
    /// offset polled. `None` until known.
    start: Option<i64>,
    /// Offsets polled since the reset and not yet processed, to the index of
    /// the latest poll. Processed offsets leave at once, so a commit's check
    /// costs a range lookup, not a scan of everything the consumer read.
    unprocessed: BTreeMap<i64, u64>,
    /// The highest offset processed since the reset, and its entry.
    processed_max: Option<(i64, u64)>,
}

#[derive(Default)]
struct Consumer<'a> {
    /// Partitions held: assigned and not revoked since the process started.
    owned: BTreeSet<Tp<'a>>,
    partitions: BTreeMap<Tp<'a>, PartitionState>,
    /// Every record the process ever processed. Kept across restarts: the
    /// handling happened, whatever became of the process.
    processed: BTreeSet<(Tp<'a>, i64)>,
    /// The group of its latest Assign, for Seeks that do not name one.
    group: Option<&'a str>,
}

#[derive(Clone, Copy)]
struct Committed {
    offset: i64,
    invoke: u64,
    ok: u64,
}

/// A member newly given a partition, waiting for its first poll of it.
/// A commit that may have reached the broker: its invoke, its offset for one
/// partition, and the call (process, id) that completes it.
struct PossibleCommit<'a> {
    invoke: u64,
    offset: i64,
    call: (&'a str, u64),
}

struct NewOwner<'a> {
    group: &'a str,
    assign: u64,
    generation: i32,
    committed: Committed,
}

struct HighWatermark {
    latest: i64,
    latest_index: u64,
    max: i64,
    max_index: u64,
}

#[derive(Default)]
struct Counts {
    commits: usize,
    commit_offsets: usize,
    assigns: usize,
    new_owner_polls: usize,
    /// New owners that started at a commit whose outcome the history does
    /// not know (it may have reached the broker).
    resumed_at_unfinished: usize,
    excused: usize,
    /// Reads and commits between a new leader's high watermark and the
    /// highest its predecessor advertised.
    below_earlier_high_watermark: usize,
}

struct State<'f, 'a> {
    facts: &'f Facts<'a>,
    consumers: BTreeMap<&'a str, Consumer<'a>>,
    /// Each group's latest ok commit per partition, by completion order.
    committed: BTreeMap<(&'a str, Tp<'a>), Committed>,
    high_watermarks: BTreeMap<Tp<'a>, HighWatermark>,
    /// Each group's latest `Generation` event: generation and index.
    generations: BTreeMap<&'a str, (i32, u64)>,
    last_seek: BTreeMap<(&'a str, Tp<'a>), u64>,
    /// Findings made at a commit's invoke, reported if it completes ok.
    pending: BTreeMap<(&'a str, u64), Vec<Anomaly>>,
    /// Commits that may have been applied: invoked, and never completed with
    /// `fail` (anywhere in the history: a `fail` logged after a new owner's
    /// first poll still means the commit did not happen). An unfinished
    /// commit (its consumer crashed, or it timed out) may have reached the
    /// broker, so a new owner may resume at its offset.
    possibly_applied: BTreeMap<(&'a str, Tp<'a>), Vec<PossibleCommit<'a>>>,
    /// Every commit call that completed with `fail`, from a pass over the
    /// whole history before the check.
    failed_calls: BTreeSet<(&'a str, u64)>,
    new_owners: BTreeMap<(&'a str, Tp<'a>), NewOwner<'a>>,
    /// Each (group, generation, partition)'s assignee and its Assign.
    owners: BTreeMap<(&'a str, i32, Tp<'a>), (&'a str, u64)>,
    /// Members a static member's rejoin replaced (KIP-345): their
    /// assignment passes to the new member id in the same generation.
    replaced: BTreeSet<(&'a str, &'a str)>,
    anomalies: Vec<Anomaly>,
    counts: Counts,
}

fn tp_of(target: &TopicPartition) -> Tp<'_> {
    (target.topic.as_str(), target.partition)
}

fn offset_tp(offset: &PartitionOffset) -> Tp<'_> {
    (offset.topic.as_str(), offset.partition)
}

impl<'f, 'a> State<'f, 'a> {
    fn new(facts: &'f Facts<'a>) -> Self {
        Self {
            facts,
            consumers: BTreeMap::new(),
            committed: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            generations: BTreeMap::new(),
            last_seek: BTreeMap::new(),
            pending: BTreeMap::new(),
            possibly_applied: BTreeMap::new(),
            failed_calls: BTreeSet::new(),
            new_owners: BTreeMap::new(),
            owners: BTreeMap::new(),
            replaced: BTreeSet::new(),
            anomalies: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn step(&mut self, entry: &'a Entry) {
        let process = entry.process.as_str();
        match &entry.kind {
            Kind::Invoke {
                op: op @ Op::Commit { group, offsets, .. },
            } => {
                let findings = self.check_at_invoke(process, op, entry.index);
                self.pending.insert((process, entry.id), findings);
                for offset in offsets {
                    self.possibly_applied
                        .entry((group.as_str(), offset_tp(offset)))
                        .or_default()
                        .push(PossibleCommit {
                            invoke: entry.index,
                            offset: offset.offset,
                            call: (process, entry.id),
                        });
                }
            }
            Kind::Fail {
                op: Op::Commit { group, offsets, .. },
                ..
            } => {
                self.pending.remove(&(process, entry.id));
                for offset in offsets {
                    if let Some(candidates) = self
                        .possibly_applied
                        .get_mut(&(group.as_str(), offset_tp(offset)))
                    {
                        candidates.retain(|candidate| candidate.call != (process, entry.id));
                    }
                }
            }
            Kind::Info {
                op: Op::Commit { .. },
                ..
            } => {
                self.pending.remove(&(process, entry.id));
            }
            Kind::Ok { op } => self.ok(entry, op),
            Kind::Event { event } => self.event(entry, event),
            _ => {}
        }
    }

    fn ok(&mut self, entry: &'a Entry, op: &'a Op) {
        let process = entry.process.as_str();
        match op {
            Op::Commit { .. } => self.commit_ok(entry, op),
            Op::Assign {
                group,
                generation,
                member,
                partitions,
            } => self.assign(entry, group, *generation, member, partitions),
            Op::Revoke { partitions, .. } => {
                let consumer = self.consumers.entry(process).or_default();
                for tp in partitions.iter().map(tp_of) {
                    consumer.owned.remove(&tp);
                    consumer.partitions.remove(&tp);
                    self.new_owners.remove(&(process, tp));
                }
            }
            Op::Seek { group, target } => {
                let tp = offset_tp(target);
                let consumer = self.consumers.entry(process).or_default();
                if let Some(group) = group.as_deref().or(consumer.group) {
                    self.last_seek.insert((group, tp), entry.index);
                }
                consumer.partitions.insert(
                    tp,
                    PartitionState {
                        start: Some(target.offset),
                        ..PartitionState::default()
                    },
                );
                self.new_owners.remove(&(process, tp));
            }
            Op::Poll { records, .. } => self.poll(entry, records),
            Op::Process { record, .. } => {
                let tp = record_tp(record);
                let consumer = self.consumers.entry(process).or_default();
                consumer.processed.insert((tp, record.offset));
                if let Some(partition) = consumer.partitions.get_mut(&tp) {
                    partition.unprocessed.remove(&record.offset);
                    if partition
                        .processed_max
                        .is_none_or(|(max, _)| record.offset > max)
                    {
                        partition.processed_max = Some((record.offset, entry.index));
                    }
                }
            }
            _ => {}
        }
    }

    fn event(&mut self, entry: &'a Entry, event: &'a Event) {
        match event {
            Event::Generation {
                group, generation, ..
            } => {
                self.generations.insert(group, (*generation, entry.index));
            }
            Event::MemberRemoved {
                group,
                member,
                reason: RemovalReason::Replaced,
                ..
            } => {
                self.replaced.insert((group.as_str(), member.as_str()));
            }
            Event::HighWatermark {
                topic,
                partition,
                high_watermark,
                ..
            } => {
                let hw = self
                    .high_watermarks
                    .entry((topic.as_str(), *partition))
                    .or_insert(HighWatermark {
                        latest: *high_watermark,
                        latest_index: entry.index,
                        max: *high_watermark,
                        max_index: entry.index,
                    });
                hw.latest = *high_watermark;
                hw.latest_index = entry.index;
                if *high_watermark > hw.max {
                    hw.max = *high_watermark;
                    hw.max_index = entry.index;
                }
            }
            // A restarted consumer process starts from nothing: it holds no
            // partitions and has polled nothing.
            Event::Fault {
                kind: FaultKind::CrashClient,
                target,
                healed: false,
                ..
            } => {
                if let Some(consumer) = self.consumers.get_mut(target.as_str()) {
                    consumer.owned.clear();
                    consumer.partitions.clear();
                }
                self.new_owners.retain(|key, _| key.0 != target.as_str());
            }
            _ => {}
        }
    }

    /// The high-watermark and stale-generation checks need the broker's
    /// facts; a history with polls or commits but without them cannot be
    /// judged on those points, and says so rather than pass silently.
    fn missing_facts(&mut self, history: &[Entry]) {
        let mut first_poll = None;
        let mut first_member_commit = None;
        let (mut high_watermarks, mut generations) = (false, false);
        for entry in history {
            match &entry.kind {
                Kind::Ok {
                    op: Op::Poll { records, .. },
                } if !records.is_empty() => {
                    first_poll.get_or_insert(entry.index);
                }
                Kind::Ok {
                    op: Op::Commit { generation, .. },
                } if *generation >= 0 => {
                    first_member_commit.get_or_insert(entry.index);
                }
                Kind::Event {
                    event: Event::HighWatermark { .. } | Event::Recovered { .. },
                } => high_watermarks = true,
                Kind::Event {
                    event: Event::Generation { .. },
                } => generations = true,
                _ => {}
            }
        }
        if let (Some(poll), false) = (first_poll, high_watermarks) {
            self.anomalies.push(Anomaly {
                description: "missing-facts: the history has polls but no high_watermark \
                              events, so poll-above-high-watermark and \
                              commit-above-high-watermark cannot be checked"
                    .to_string(),
                entries: vec![poll],
            });
        }
        if let (Some(commit), false) = (first_member_commit, generations) {
            self.anomalies.push(Anomaly {
                description: "missing-facts: the history has group members' commits but no \
                              generation events, so stale-commit-accepted cannot be checked"
                    .to_string(),
                entries: vec![commit],
            });
        }
    }

    /// Sub-checks about what the member knew when it sent the commit:
    /// commit-not-next, commit-unprocessed, stale-commit-accepted.
    fn check_at_invoke(&mut self, process: &'a str, op: &'a Op, invoke: u64) -> Vec<Anomaly> {
        let Op::Commit {
            group,
            generation,
            member,
            offsets,
        } = op
        else {
            unreachable!("only commits are checked at invoke");
        };
        let mut findings = Vec::new();
        if let Some(&(latest, event)) = self.generations.get(group.as_str()) {
            if *generation >= 0 && *generation < latest {
                findings.push(Anomaly {
                    description: format!(
                        "stale-commit-accepted: {member} committed to {group} with generation \
                         {generation} after the group moved to generation {latest}"
                    ),
                    entries: vec![event, invoke],
                });
            }
        }
        let consumer = self.consumers.entry(process).or_default();
        for commit in offsets.iter().filter(|commit| commit.offset >= 0) {
            let tp = offset_tp(commit);
            let offset = commit.offset;
            let partition = consumer.partitions.get(&tp);
            let start = partition.and_then(|partition| partition.start);
            if offset > 0 && !consumer.processed.contains(&(tp, offset.saturating_sub(1))) {
                // Without a poll or Seek since the reset, the member's
                // position is the group's committed offset, if any.
                // That is the latest ok commit, or a newer one whose outcome
                // the history does not know (it may have reached the broker).
                let at_start = match start {
                    Some(start) => start == offset,
                    None => {
                        let committed = self.committed.get(&(group.as_str(), tp));
                        committed.is_none_or(|committed| committed.offset == offset)
                            || self
                                .possibly_applied
                                .get(&(group.as_str(), tp))
                                .is_some_and(|candidates| {
                                    candidates.iter().any(|candidate| {
                                        candidate.offset == offset
                                            && candidate.invoke < invoke
                                            && committed.is_none_or(|c| candidate.invoke > c.invoke)
                                            && !self.failed_calls.contains(&candidate.call)
                                    })
                                })
                    }
                };
                if !at_start {
                    findings.push(Anomaly {
                        description: format!(
                            "commit-not-next: {member} committed {}@{offset} but {process} had \
                             not processed @{} (it started from {})",
                            show(tp),
                            offset.saturating_sub(1),
                            start.map_or("an unknown offset".to_string(), |s| format!("@{s}"))
                        ),
                        entries: vec![invoke],
                    });
                }
            }
            if let Some(&(processed, process_entry)) =
                partition.and_then(|partition| partition.processed_max.as_ref())
            {
                if offset <= processed {
                    findings.push(Anomaly {
                        description: format!(
                            "commit-behind: {member} committed {}@{offset} after {process} had \
                             processed up to @{processed}; the next offset to read is @{}",
                            show(tp),
                            processed.saturating_add(1)
                        ),
                        entries: vec![process_entry, invoke],
                    });
                }
            }
            if let Some(partition) = partition {
                let mut unprocessed = partition.unprocessed.range(..offset);
                if let Some((&first, &poll)) = unprocessed.next() {
                    findings.push(Anomaly {
                        description: format!(
                            "commit-unprocessed: {member} committed {}@{offset} while {} polled \
                             offsets from @{first} on were not processed",
                            show(tp),
                            1 + unprocessed.count()
                        ),
                        entries: vec![poll, invoke],
                    });
                }
            }
        }
        findings
    }

    fn commit_ok(&mut self, entry: &'a Entry, op: &'a Op) {
        let Op::Commit {
            group,
            member,
            offsets,
            ..
        } = op
        else {
            unreachable!("commit_ok is called for commits");
        };
        let process = entry.process.as_str();
        let invoke = self.facts.invoke_of(entry);
        let findings = match self.pending.remove(&(process, entry.id)) {
            Some(findings) => findings,
            // Logged without an invoke: judge it as of its completion.
            None => self.check_at_invoke(process, op, entry.index),
        };
        for mut finding in findings {
            finding.entries.push(entry.index);
            self.anomalies.push(finding);
        }
        self.counts.commits += 1;

        for commit in offsets.iter().filter(|commit| commit.offset >= 0) {
            self.counts.commit_offsets += 1;
            let tp = offset_tp(commit);
            let offset = commit.offset;
            if let Some(hw) = self.high_watermarks.get(&tp) {
                if offset > hw.latest {
                    if offset <= hw.max && self.facts.settings.replicated {
                        self.counts.below_earlier_high_watermark += 1;
                    } else if offset <= hw.max
                        && self.facts.loss_permitted_between(hw.max_index, entry.index)
                    {
                        self.counts.excused += 1;
                    } else {
                        self.anomalies.push(Anomaly {
                            description: format!(
                                "commit-above-high-watermark: {member} committed {}@{offset} \
                                 above the high watermark {}",
                                show(tp),
                                hw.latest
                            ),
                            entries: vec![hw.latest_index, entry.index],
                        });
                    }
                }
            }

            let key = (group.as_str(), tp);
            if let Some(&previous) = self.committed.get(&key) {
                let sought = self
                    .last_seek
                    .get(&key)
                    .is_some_and(|&seek| seek > previous.invoke);
                // Invoked before the previous one's ok: the coordinator may
                // have applied either first.
                let concurrent = invoke < previous.ok;
                if offset < previous.offset && !sought && !concurrent {
                    if self
                        .facts
                        .loss_permitted_between(previous.invoke, entry.index)
                    {
                        self.counts.excused += 1;
                    } else {
                        self.anomalies.push(Anomaly {
                            description: format!(
                                "commit-went-back: {group}'s committed offset for {} went from \
                                 {} to {offset} ({member}) without a seek",
                                show(tp),
                                previous.offset
                            ),
                            entries: vec![previous.ok, entry.index],
                        });
                    }
                }
            }
            let keep_previous = self
                .committed
                .get(&key)
                .is_some_and(|previous| invoke < previous.ok && previous.offset < offset);
            if !keep_previous {
                self.committed.insert(
                    key,
                    Committed {
                        offset,
                        invoke,
                        ok: entry.index,
                    },
                );
            }
        }
    }

    fn assign(
        &mut self,
        entry: &'a Entry,
        group: &'a str,
        generation: i32,
        member: &'a str,
        partitions: &'a [TopicPartition],
    ) {
        let process = entry.process.as_str();
        self.counts.assigns += 1;
        let consumer = self.consumers.entry(process).or_default();
        consumer.group = Some(group);
        for tp in partitions.iter().map(tp_of) {
            match self.owners.get(&(group, generation, tp)) {
                Some(&(owner, _)) if owner != member && self.replaced.contains(&(group, owner)) => {
                    self.owners
                        .insert((group, generation, tp), (member, entry.index));
                }
                Some(&(owner, first)) if owner != member => self.anomalies.push(Anomaly {
                    description: format!(
                        "double-ownership: {group} generation {generation} assigned {} to {owner} \
                         and {member}",
                        show(tp)
                    ),
                    entries: vec![first, entry.index],
                }),
                Some(_) => {}
                None => {
                    self.owners
                        .insert((group, generation, tp), (member, entry.index));
                }
            }
            // A partition it already held keeps its position; only a new
            // one is fetched from the committed offsets.
            if !consumer.owned.contains(&tp) {
                match self.committed.get(&(group, tp)) {
                    Some(&committed) => {
                        self.new_owners.insert(
                            (process, tp),
                            NewOwner {
                                group,
                                assign: entry.index,
                                generation,
                                committed,
                            },
                        );
                    }
                    None => {
                        self.new_owners.remove(&(process, tp));
                    }
                }
            }
            consumer.owned.insert(tp);
            consumer.partitions.insert(tp, PartitionState::default());
        }
    }

    fn poll(&mut self, entry: &'a Entry, records: &'a [Record]) {
        let process = entry.process.as_str();
        let consumer = self.consumers.entry(process).or_default();
        // A consumer whose partition's log came back shorter after a power
        // loss is reset to an offset that survived: as if it had sought
        // there, what it processed beyond no longer bounds its commits.
        let mut reset_to: BTreeMap<Tp<'a>, i64> = BTreeMap::new();
        for record in records {
            reset_to.entry(record_tp(record)).or_insert(record.offset);
        }
        for (tp, first) in reset_to {
            let Some(partition) = consumer.partitions.get(&tp) else {
                continue;
            };
            let previous = partition
                .processed_max
                .map(|(max, _)| max)
                .into_iter()
                .chain(partition.unprocessed.keys().next_back().copied())
                .max();
            let Some(previous) = previous.filter(|previous| first <= *previous) else {
                continue;
            };
            if self.facts.reset_permitted(tp, entry.index, previous, first) {
                self.counts.excused += 1;
                if let Some(group) = consumer.group {
                    self.last_seek.insert((group, tp), entry.index);
                }
                consumer.partitions.insert(
                    tp,
                    PartitionState {
                        start: Some(first),
                        ..PartitionState::default()
                    },
                );
            }
        }
        let mut firsts: BTreeMap<Tp<'a>, i64> = BTreeMap::new();
        let mut unowned_reported = BTreeSet::new();
        let mut above_reported = BTreeSet::new();
        for record in records {
            let tp = record_tp(record);
            if let Some(hw) = self.high_watermarks.get(&tp) {
                if record.offset >= hw.latest && above_reported.insert(tp) {
                    if record.offset < hw.max && self.facts.settings.replicated {
                        self.counts.below_earlier_high_watermark += 1;
                    } else if record.offset < hw.max
                        && self.facts.loss_permitted_between(hw.max_index, entry.index)
                    {
                        self.counts.excused += 1;
                    } else {
                        self.anomalies.push(Anomaly {
                            description: format!(
                                "poll-above-high-watermark: {process} polled {}@{} at or above \
                                 the high watermark {}",
                                show(tp),
                                record.offset,
                                hw.latest
                            ),
                            entries: vec![hw.latest_index, entry.index],
                        });
                    }
                }
            }
            // Only group members hold partitions; a consumer that assigns
            // partitions itself has no Assign.
            if consumer.group.is_some()
                && !consumer.owned.contains(&tp)
                && unowned_reported.insert(tp)
            {
                self.anomalies.push(Anomaly {
                    description: format!(
                        "poll-unowned: {process} polled {}@{} without holding the partition",
                        show(tp),
                        record.offset
                    ),
                    entries: vec![entry.index],
                });
            }
            firsts.entry(tp).or_insert(record.offset);
            let partition = consumer.partitions.entry(tp).or_default();
            partition.start.get_or_insert(record.offset);
            // A record processed before (a replay after a Seek or a
            // rebalance) counts as handled.
            if !consumer.processed.contains(&(tp, record.offset)) {
                partition.unprocessed.insert(record.offset, entry.index);
            }
        }
        for (tp, first) in firsts {
            let Some(owner) = self.new_owners.remove(&(process, tp)) else {
                continue;
            };
            self.counts.new_owner_polls += 1;
            let expected = owner.committed.offset;
            if first == expected || expected < self.facts.log_start_offset(tp) {
                continue;
            }
            // On a compacted topic the committed offset's record may be gone:
            // the consumer resumes at the next record still there.
            if first > expected && self.facts.compacted_gap(tp, expected, first) {
                continue;
            }
            // A commit newer than the one the Assign saw, ok or unfinished,
            // may be what the broker held when the new owner asked.
            let newer_commit =
                self.possibly_applied
                    .get(&(owner.group, tp))
                    .is_some_and(|candidates| {
                        candidates.iter().any(|candidate| {
                            candidate.invoke > owner.committed.invoke
                                && candidate.invoke < entry.index
                                && (candidate.offset == first
                                    || (candidate.offset < first
                                        && self.facts.compacted_gap(tp, candidate.offset, first)))
                                && !self.failed_calls.contains(&candidate.call)
                        })
                    });
            if newer_commit {
                self.counts.resumed_at_unfinished += 1;
                continue;
            }
            if self
                .facts
                .loss_permitted_between(owner.committed.invoke, entry.index)
            {
                self.counts.excused += 1;
                continue;
            }
            self.anomalies.push(Anomaly {
                description: format!(
                    "new-owner-start: {process}, assigned {} in generation {}, started at @{first}, \
                     not at the committed @{expected}",
                    show(tp),
                    owner.generation
                ),
                entries: vec![owner.committed.ok, owner.assign, entry.index],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{commit_op, record, H};

    const G: &str = "g";
    const C0: &str = "consumer-0";
    const C1: &str = "consumer-1";

    fn prefixes(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.description.split(':').next().unwrap())
            .collect()
    }

    /// consumer-0 joins generation 1 with partition 0 and polls offsets 0..3.
    fn started() -> (H, u64) {
        let mut h = H::new(true, true);
        h.high_watermark(0, 100);
        h.high_watermark(1, 100);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0]);
        let poll = h.poll(
            C0,
            G,
            vec![
                record(0, 0, None, "a"),
                record(0, 1, None, "b"),
                record(0, 2, None, "c"),
            ],
        );
        (h, poll)
    }

    /// A consumer processed @0..@2, its partition's power-lost log came
    /// back ending at @1, and it was reset to @0: committing what it
    /// processes anew is not behind. Without the loss it is.
    #[test]
    fn commits_after_a_reset_to_a_surviving_offset_are_not_behind() {
        for shown in [true, false] {
            let mut h = H::new(false, true);
            h.high_watermark(0, 100);
            h.generation(G, 1);
            h.assign(C0, G, 1, &[0]);
            let records: Vec<_> = (0..3).map(|o| record(0, o, None, "v")).collect();
            h.poll(C0, G, records.clone());
            for record in records {
                h.process(C0, G, record);
            }
            h.commit(C0, G, 1, &[(0, 3)]);
            h.fault(FaultKind::CrashBroker, "broker-1", true);
            if shown {
                h.recovered("broker-1", 0, 1);
            }
            h.poll(C0, G, vec![record(0, 0, None, "w")]);
            h.process(C0, G, record(0, 0, None, "w"));
            h.commit(C0, G, 1, &[(0, 1)]);
            let verdict = OffsetCommits.check(&h.build());
            if shown {
                assert!(verdict.valid, "{verdict:?}");
            } else {
                assert_eq!(prefixes(&verdict), vec!["commit-behind"], "{verdict:?}");
            }
        }
    }

    #[test]
    fn committing_past_what_was_processed_is_not_next() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.process(C0, G, record(0, 1, None, "b"));
        h.process(C0, G, record(0, 2, None, "c"));
        let commit = h.commit(C0, G, 1, &[(0, 5)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-not-next"]);
        assert_eq!(verdict.anomalies[0].entries, vec![commit.0, commit.1]);
    }

    #[test]
    fn committing_above_the_high_watermark_is_reported() {
        let mut h = H::new(true, true);
        let hw = h.high_watermark(0, 3);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0]);
        h.seek(C0, G, 0, 7);
        let commit = h.commit(C0, G, 1, &[(0, 7)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-above-high-watermark"]);
        assert_eq!(verdict.anomalies[0].entries, vec![hw, commit.1]);
    }

    #[test]
    fn committing_before_processing_is_reported() {
        let (mut h, poll) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        // Offset 1 was skipped by the application, 2 processed.
        h.process(C0, G, record(0, 2, None, "c"));
        let commit = h.commit(C0, G, 1, &[(0, 3)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-unprocessed"]);
        assert_eq!(verdict.anomalies[0].entries, vec![poll, commit.0, commit.1]);
    }

    #[test]
    fn processing_after_the_invoke_does_not_count() {
        let (mut h, poll) = started();
        for (offset, value) in [(0, "a"), (1, "b")] {
            h.process(C0, G, record(0, offset, None, value));
        }
        let op = commit_op(C0, G, 1, &[(0, 3)]);
        let (invoke, id) = h.invoke(C0, op.clone());
        h.process(C0, G, record(0, 2, None, "c"));
        let ok = h.ok(C0, id, op);
        let verdict = OffsetCommits.check(&h.build());
        // History order: the unprocessed offset's poll comes first.
        assert_eq!(
            prefixes(&verdict),
            vec!["commit-unprocessed", "commit-not-next"]
        );
        assert_eq!(verdict.anomalies[0].entries, vec![poll, invoke, ok]);
        assert_eq!(verdict.anomalies[1].entries, vec![invoke, ok]);
    }

    #[test]
    fn a_commit_going_back_without_a_seek_is_reported() {
        let (mut h, _) = started();
        for (offset, value) in [(0, "a"), (1, "b"), (2, "c")] {
            h.process(C0, G, record(0, offset, None, value));
        }
        let high = h.commit(C0, G, 1, &[(0, 3)]);
        // A second process, behind the first, commits what it handled.
        h.poll(C1, G, vec![record(0, 1, None, "b")]);
        h.process(C1, G, record(0, 1, None, "b"));
        let low = h.commit(C1, G, 1, &[(0, 2)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-went-back"]);
        assert_eq!(verdict.anomalies[0].entries, vec![high.1, low.1]);
    }

    #[test]
    fn a_late_answer_to_an_earlier_commit_is_not_going_back() {
        // C1's commit of 2 is invoked first, but its answer is held and
        // arrives after C0's commit of 3: either may have been applied last.
        let (mut h, _) = started();
        for (offset, value) in [(0, "a"), (1, "b"), (2, "c")] {
            h.process(C0, G, record(0, offset, None, value));
        }
        h.poll(C1, G, vec![record(0, 1, None, "b")]);
        h.process(C1, G, record(0, 1, None, "b"));
        let late = commit_op(C1, G, 1, &[(0, 2)]);
        let (_, late_id) = h.invoke(C1, late.clone());
        h.commit(C0, G, 1, &[(0, 3)]);
        h.ok(C1, late_id, late);
        let verdict = OffsetCommits.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn committing_the_last_processed_offset_is_behind() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        let last = h.process(C0, G, record(0, 1, None, "b"));
        let commit = h.commit(C0, G, 1, &[(0, 1)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-behind"]);
        assert_eq!(verdict.anomalies[0].entries, vec![last, commit.0, commit.1]);
    }

    #[test]
    fn polling_above_the_high_watermark_is_reported() {
        let mut h = H::new(true, true);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0]);
        let hw = h.high_watermark(0, 1);
        let poll = h.poll(
            C0,
            G,
            vec![record(0, 0, None, "a"), record(0, 1, None, "b")],
        );
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["poll-above-high-watermark"]);
        assert_eq!(verdict.anomalies[0].entries, vec![hw, poll]);
    }

    #[test]
    fn polling_a_revoked_partition_is_reported() {
        let (mut h, _) = started();
        h.revoke(C0, G, 1, &[0]);
        h.generation(G, 2);
        h.assign(C0, G, 2, &[1]);
        let poll = h.poll(C0, G, vec![record(0, 3, None, "d")]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["poll-unowned"]);
        assert_eq!(verdict.anomalies[0].entries, vec![poll]);
    }

    #[test]
    fn a_stale_generations_commit_must_not_succeed() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        let bump = h.generation(G, 2);
        let commit = h.commit(C0, G, 1, &[(0, 1)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["stale-commit-accepted"]);
        assert_eq!(verdict.anomalies[0].entries, vec![bump, commit.0, commit.1]);
    }

    #[test]
    fn a_stale_coordinators_generation_fences_nobody() {
        // broker-1 takes over coordination; broker-0, cut off, still counts
        // its generation up (it can never make it durable).
        for bumped_by in ["broker-0", "broker-1"] {
            let (mut h, _) = started();
            h.process(C0, G, record(0, 0, None, "a"));
            h.event(Event::CoordinatorLoaded {
                broker: "broker-1".into(),
                leader_epoch: 1,
            });
            h.event(Event::Generation {
                broker: bumped_by.into(),
                group: G.into(),
                generation: 2,
            });
            h.commit(C0, G, 1, &[(0, 1)]);
            let verdict = OffsetCommits.check(&h.build());
            if bumped_by == "broker-0" {
                assert!(verdict.valid, "{:?}", verdict.anomalies);
            } else {
                assert_eq!(prefixes(&verdict), vec!["stale-commit-accepted"]);
            }
        }
    }

    #[test]
    fn a_new_owner_may_resume_at_an_unfinished_newer_commit() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.process(C0, G, record(0, 1, None, "b"));
        h.commit(C0, G, 1, &[(0, 2)]);
        h.process(C0, G, record(0, 2, None, "c"));
        // The old owner's next commit never completes (it crashed), but it
        // reached the broker: the new owner resumes at 3, not at 2.
        h.invoke(
            C0,
            crate::checkers::facts::build::commit_op(C0, G, 1, &[(0, 3)]),
        );
        h.generation(G, 2);
        h.assign(C1, G, 2, &[0]);
        h.poll(C1, G, vec![record(0, 3, None, "d")]);
        let verdict = OffsetCommits.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_new_owner_may_recommit_an_unfinished_newer_commit_before_polling() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.process(C0, G, record(0, 1, None, "b"));
        h.commit(C0, G, 1, &[(0, 2)]);
        h.process(C0, G, record(0, 2, None, "c"));
        // The old owner's commit of 3 never completes, but may have been
        // applied: the new owner's position is 3, and it commits it back
        // before polling anything.
        h.invoke(
            C0,
            crate::checkers::facts::build::commit_op(C0, G, 1, &[(0, 3)]),
        );
        h.generation(G, 2);
        h.assign(C1, G, 2, &[0]);
        h.commit(C1, G, 2, &[(0, 3)]);
        let verdict = OffsetCommits.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");

        // An offset nobody committed is still an invented start.
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.commit(C0, G, 1, &[(0, 1)]);
        h.generation(G, 2);
        h.assign(C1, G, 2, &[0]);
        h.commit(C1, G, 2, &[(0, 3)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["commit-not-next"]);
    }

    #[test]
    fn a_commit_that_failed_excuses_no_new_owner_even_if_the_fail_comes_later() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.process(C0, G, record(0, 1, None, "b"));
        let (_, committed) = h.commit(C0, G, 1, &[(0, 2)]);
        h.process(C0, G, record(0, 2, None, "c"));
        let late = crate::checkers::facts::build::commit_op(C0, G, 1, &[(0, 3)]);
        let (_, id) = h.invoke(C0, late.clone());
        h.generation(G, 2);
        let assign = h.assign(C1, G, 2, &[0]);
        let poll = h.poll(C1, G, vec![record(0, 3, None, "d")]);
        // The commit of 3 is refused, but only after the new owner started:
        // it never happened, so the start at 3 skipped @2.
        h.fail(C0, id, late);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["new-owner-start"]);
        assert_eq!(verdict.anomalies[0].entries, vec![committed, assign, poll]);
    }

    #[test]
    fn polls_and_commits_without_the_brokers_facts_fail_loudly() {
        let mut h = H::new(true, true);
        h.assign(C0, G, 1, &[0]);
        h.poll(C0, G, vec![record(0, 0, None, "a")]);
        h.process(C0, G, record(0, 0, None, "a"));
        h.commit(C0, G, 1, &[(0, 1)]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["missing-facts", "missing-facts"]);
    }

    #[test]
    fn a_new_owner_must_resume_at_the_committed_offset() {
        let (mut h, _) = started();
        h.process(C0, G, record(0, 0, None, "a"));
        h.process(C0, G, record(0, 1, None, "b"));
        let (_, commit) = h.commit(C0, G, 1, &[(0, 2)]);
        h.revoke(C0, G, 1, &[0]);
        h.generation(G, 2);
        h.assign(C0, G, 2, &[]);
        let assign = h.assign(C1, G, 2, &[0]);
        let poll = h.poll(C1, G, vec![record(0, 3, None, "d")]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["new-owner-start"]);
        assert_eq!(verdict.anomalies[0].entries, vec![commit, assign, poll]);
    }

    #[test]
    fn two_members_owning_a_partition_in_one_generation_is_reported() {
        let mut h = H::new(true, true);
        h.generation(G, 1);
        let first = h.assign(C0, G, 1, &[0, 1]);
        let second = h.assign(C1, G, 1, &[1]);
        let verdict = OffsetCommits.check(&h.build());
        assert_eq!(prefixes(&verdict), vec!["double-ownership"]);
        assert_eq!(verdict.anomalies[0].entries, vec![first, second]);
    }

    #[test]
    fn a_static_member_taking_over_its_old_id_is_not_double_ownership() {
        let mut h = H::new(true, true);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0]);
        h.event(Event::MemberRemoved {
            broker: "broker-0".into(),
            group: G.into(),
            member: "consumer-0-member".into(),
            reason: RemovalReason::Replaced,
        });
        let takeover = |member: &str| Op::Assign {
            group: G.into(),
            generation: 1,
            member: member.into(),
            partitions: vec![crate::checkers::facts::build::tp(0)],
        };
        h.ok(C0, 0, takeover("consumer-0-restarted"));
        assert!(OffsetCommits.check(&h.build()).valid);
        // Without the replacement it is two owners.
        let mut h = H::new(true, true);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0]);
        h.ok(C0, 0, takeover("consumer-0-restarted"));
        assert_eq!(
            prefixes(&OffsetCommits.check(&h.build())),
            vec!["double-ownership"]
        );
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(true, true);
        h.generation(G, 1);
        h.assign(C0, G, 1, &[0, 1]);
        h.high_watermark(0, 3);
        h.poll(
            C0,
            G,
            vec![
                record(0, 0, None, "a"),
                record(0, 1, None, "b"),
                record(0, 2, None, "c"),
            ],
        );
        for (offset, value) in [(0, "a"), (1, "b")] {
            h.process(C0, G, record(0, offset, None, value));
            h.commit(C0, G, 1, &[(0, offset + 1)]);
        }
        // A failed commit proves nothing either way.
        let failed = commit_op(C0, G, 1, &[(0, 9)]);
        let (_, id) = h.invoke(C0, failed.clone());
        h.fail(C0, id, failed);
        // The eager rebalance: revoke, new generation, partition 0 moves.
        h.revoke(C0, G, 1, &[0, 1]);
        h.generation(G, 2);
        h.assign(C0, G, 2, &[1]);
        h.assign(C1, G, 2, &[0]);
        // Nothing processed yet: re-committing its start is fine.
        h.commit(C1, G, 2, &[(0, 2)]);
        h.poll(C1, G, vec![record(0, 2, None, "c")]);
        h.process(C1, G, record(0, 2, None, "c"));
        h.commit(C1, G, 2, &[(0, 3)]);
        // Replaying after a seek may commit a lower offset.
        h.seek(C1, G, 0, 0);
        h.commit(C1, G, 2, &[(0, 0)]);
        let verdict = OffsetCommits.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
