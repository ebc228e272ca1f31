//! The nemesis: starts faults between simulation steps, from the seed or a
//! scripted schedule, and undoes them when they are due or the heal phase
//! begins. It aims at hosts by role through the run's [`Topology`].

use std::time::Duration;

use crate::history::{Event, Kind};
use crate::recorder::Recorder;
use crate::scenario::{child_seed, Aim, Draw, FaultKind, Resolved, ScheduledFault};
use crate::seams::DiskFault;
use crate::topology::Topology;
use crate::world::{Shared, LINK_MAX_LATENCY_MS};

/// A slow link: seconds, beyond the clients' request timeout.
const SLOW_LINK_MAX_LATENCY_MS: u64 = 4_000;

/// A fault in progress and how to undo it.
struct ActiveFault {
    heal_at_ms: u64,
    kind: FaultKind,
    target: String,
    /// The hosts a link fault cuts, slows or holds the target off from.
    peers: Vec<String>,
}

/// Cuts every link of `target`. Done before a crash or restart: tearing a
/// host down drops its sockets in an order tokio derives from process-wide
/// task ids, and each FIN or RST would draw from the simulation's random
/// generator, so the run would depend on what ran before it in the process.
/// A machine losing power sends nothing anyway; its peers find out by
/// timeout, as in production.
fn cut_links(sim: &mut turmoil::Sim<'_>, topology: &Topology, target: &str) {
    for peer in topology.peers_of(target) {
        sim.partition(target, peer.as_str());
    }
}

fn mend_links(sim: &mut turmoil::Sim<'_>, topology: &Topology, target: &str) {
    for peer in topology.peers_of(target) {
        sim.repair(target, peer.as_str());
    }
}

/// The hosts a link fault on `target` acts against: every other broker for a
/// partition, delay or slow link; every other broker and client for
/// isolation; none for faults that are not about links.
fn link_peers(topology: &Topology, kind: FaultKind, target: &str) -> Vec<String> {
    let mut peers = match kind {
        FaultKind::Partition
        | FaultKind::PartitionOneway
        | FaultKind::Delay
        | FaultKind::SlowNetwork => topology.brokers().to_vec(),
        FaultKind::Isolate | FaultKind::PauseBroker => topology.targets(),
        // One other broker, drawn when the fault starts.
        FaultKind::PartitionPair
        | FaultKind::IsrSqueeze
        | FaultKind::CrashReplicas
        | FaultKind::RestartThenCrash
        | FaultKind::SwizzleClog
        | FaultKind::PowerCycleFollower
        | FaultKind::CrashBroker
        | FaultKind::CrashClient
        | FaultKind::RestartBroker
        | FaultKind::PauseConsumer
        | FaultKind::DiskFull
        | FaultKind::DiskErrors => Vec::new(),
    };
    peers.retain(|peer| peer != target);
    peers
}

/// Applies `link` to the link between `target` and each of `peers`.
fn each_link(
    sim: &mut turmoil::Sim<'_>,
    target: &str,
    peers: &[String],
    mut link: impl FnMut(&mut turmoil::Sim<'_>, &str, &str),
) {
    for peer in peers {
        link(sim, target, peer.as_str());
    }
}

/// A fault to start: what, on whom (drawn when `None`), for how long.
struct FaultPlan {
    kind: FaultKind,
    target: Option<String>,
    duration_ms: u64,
    /// Whether it goes into the replayable script: not when a schedule
    /// fault started it (the schedule is there instead).
    record: bool,
}

/// A primitive fault a schedule fault starts, `at_ms` into the run.
struct Followup {
    at_ms: u64,
    kind: FaultKind,
    target: String,
    duration_ms: u64,
}

/// The primitive faults of the schedule fault `kind` on `target`, started
/// at `now_ms` for `duration_ms`. What it draws comes from the schedule's
/// own seed, so a replayed script (which names the schedule and its
/// target) starts the same primitives.
fn expand_schedule(
    topology: &Topology,
    seed: u64,
    (kind, target, now_ms, duration_ms): (FaultKind, &str, u64, u64),
) -> Vec<Followup> {
    let mut draw = Draw::new(child_seed(
        seed,
        &format!("schedule/{}/{target}/{now_ms}", kind.name()),
    ));
    let others: Vec<String> = topology
        .brokers()
        .iter()
        .filter(|broker| *broker != target)
        .cloned()
        .collect();
    let at = |offset_ms: u64, kind: FaultKind, target: &str, duration_ms: u64| Followup {
        at_ms: now_ms + offset_ms,
        kind,
        target: target.to_string(),
        duration_ms,
    };
    match kind {
        FaultKind::IsrSqueeze => vec![
            at(0, FaultKind::Partition, target, duration_ms),
            at(duration_ms, FaultKind::CrashBroker, target, duration_ms),
        ],
        FaultKind::CrashReplicas => {
            let also = draw.range(0, others.len() as u64) as usize;
            let mut crashed = vec![at(0, FaultKind::CrashBroker, target, duration_ms)];
            let mut rest = others;
            for _ in 0..also {
                let index = draw.range(0, rest.len() as u64 - 1) as usize;
                let other = rest.remove(index);
                crashed.push(at(0, FaultKind::CrashBroker, &other, duration_ms));
            }
            crashed
        }
        FaultKind::RestartThenCrash => {
            if others.is_empty() {
                return Vec::new();
            }
            let follower = draw.pick(&others).clone();
            // Within one replica fetch round trip of the restart.
            let crash_after_ms = draw.range(RESTART_THEN_CRASH_MS[0], RESTART_THEN_CRASH_MS[1]);
            vec![
                at(0, FaultKind::RestartBroker, &follower, 1),
                at(crash_after_ms, FaultKind::CrashBroker, target, duration_ms),
            ]
        }
        FaultKind::SwizzleClog => {
            // Clog one broker every `step_ms`, then unclog them in reverse:
            // the i-th clogged is held for (2n - 1 - 2i) steps.
            let brokers = topology.brokers();
            let count = brokers.len() as u64;
            let step_ms = (duration_ms / (2 * count).max(1)).max(1);
            brokers
                .iter()
                .enumerate()
                .map(|(i, broker)| {
                    let i = i as u64;
                    at(
                        i * step_ms,
                        FaultKind::Delay,
                        broker,
                        (2 * count - 1 - 2 * i) * step_ms,
                    )
                })
                .collect()
        }
        FaultKind::PowerCycleFollower => {
            if others.is_empty() {
                return Vec::new();
            }
            let follower = draw.pick(&others).clone();
            vec![at(0, FaultKind::CrashBroker, &follower, duration_ms)]
        }
        _ => unreachable!("{kind} is not a schedule"),
    }
}

/// How long after restarting a follower `restart-then-crash` power-loses
/// its target: within a replica fetch round trip (the fetch wait is 500 ms).
const RESTART_THEN_CRASH_MS: [u64; 2] = [10, 400];

pub(crate) struct Nemesis {
    topology: Topology,
    draw: Draw,
    next_fault_ms: u64,
    schedule: Vec<ScheduledFault>,
    active: Vec<ActiveFault>,
    /// Primitive faults that started schedule faults still have to start,
    /// latest first.
    followups: Vec<Followup>,
    healed: bool,
    pub(crate) faults: u32,
    /// Every fault started, as a script that replays it.
    pub(crate) started: Vec<ScheduledFault>,
}

/// The broker `resolved.fault_aim` names, from the facts recorded so far:
/// the latest quorum leader, or the latest leader of a partition drawn from
/// the seed. None when aiming at any broker or before any such fact.
fn aimed(draw: &mut Draw, resolved: &Resolved, recorder: &Recorder) -> Option<String> {
    let partition = match resolved.fault_aim {
        Aim::Any => return None,
        Aim::Controller => None,
        Aim::Leader => Some(draw.range(0, resolved.partitions.max(1) as u64 - 1) as i32),
    };
    recorder
        .entries()
        .iter()
        .rev()
        .find_map(|entry| match (&entry.kind, partition) {
            (
                Kind::Event {
                    event: Event::QuorumLeader { broker, .. },
                },
                None,
            ) => Some(broker.clone()),
            (
                Kind::Event {
                    event:
                        Event::PartitionLeader {
                            broker,
                            topic,
                            partition: led,
                            ..
                        },
                },
                Some(wanted),
            ) if *topic == resolved.topic && *led == wanted => Some(broker.clone()),
            _ => None,
        })
}

impl Nemesis {
    pub(crate) fn new(resolved: &Resolved) -> Self {
        let mut draw = Draw::new(child_seed(resolved.seed, "nemesis"));
        let first = draw.range(resolved.fault_interval_ms[0], resolved.fault_interval_ms[1]);
        let mut schedule = resolved.schedule.clone();
        schedule.sort_by_key(|fault| std::cmp::Reverse(fault.at_ms));
        Self {
            topology: Topology::of(resolved),
            draw,
            next_fault_ms: first,
            schedule,
            active: Vec::new(),
            followups: Vec::new(),
            healed: false,
            faults: 0,
            started: Vec::new(),
        }
    }

    fn start(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
        plan: FaultPlan,
    ) {
        let FaultPlan {
            kind,
            target,
            duration_ms,
            record,
        } = plan;
        let topology = &self.topology;
        let pick = |draw: &mut Draw, from: &[String]| -> Option<String> {
            (!from.is_empty()).then(|| draw.pick(from).clone())
        };
        let target = match (&target, kind) {
            (Some(target), _) => Some(target.clone()),
            (
                None,
                FaultKind::CrashBroker
                | FaultKind::RestartBroker
                | FaultKind::PartitionPair
                | FaultKind::DiskFull
                | FaultKind::DiskErrors
                | FaultKind::PauseBroker
                | FaultKind::IsrSqueeze
                | FaultKind::CrashReplicas
                | FaultKind::RestartThenCrash
                | FaultKind::SwizzleClog
                | FaultKind::PowerCycleFollower,
            ) => aimed(&mut self.draw, resolved, recorder)
                .or_else(|| pick(&mut self.draw, topology.brokers())),
            // Aimed at a broker, a link fault cuts it from the other brokers
            // only: clients still reach it, a zombie leader or controller.
            (None, FaultKind::Partition | FaultKind::PartitionOneway | FaultKind::Delay)
                if resolved.fault_aim != Aim::Any =>
            {
                aimed(&mut self.draw, resolved, recorder)
                    .or_else(|| pick(&mut self.draw, &topology.clients()))
            }
            (None, FaultKind::PauseConsumer) => pick(&mut self.draw, topology.consumers()),
            (None, FaultKind::Isolate) => pick(&mut self.draw, &topology.targets()),
            (None, _) => pick(&mut self.draw, &topology.clients()),
        };
        let Some(target) = target else { return };
        // Never stack two faults on one host: undoing them would interleave.
        if self.active.iter().any(|fault| fault.target == target) {
            return;
        }
        if kind.is_schedule() {
            if !self.followups.is_empty() {
                return;
            }
            self.started.push(ScheduledFault {
                at_ms: now_ms,
                kind,
                target: Some(target.clone()),
                duration_ms,
            });
            let mut followups = expand_schedule(
                topology,
                resolved.seed,
                (kind, &target, now_ms, duration_ms),
            );
            followups.sort_by_key(|followup| std::cmp::Reverse(followup.at_ms));
            self.followups = followups;
            return;
        }
        let mut peers = link_peers(topology, kind, &target);
        if kind == FaultKind::PartitionPair {
            let others: Vec<String> = topology
                .brokers()
                .iter()
                .filter(|broker| **broker != target)
                .cloned()
                .collect();
            if others.is_empty() {
                return;
            }
            // Drawn from the fault's own seed, so a replayed script (which
            // names only the target) cuts the same pair.
            let mut draw = Draw::new(child_seed(
                resolved.seed,
                &format!("partition-pair/{target}/{now_ms}"),
            ));
            peers.push(draw.pick(&others).clone());
        }
        let mut power_loss = false;
        match kind {
            FaultKind::Partition | FaultKind::PartitionPair | FaultKind::Isolate => {
                each_link(sim, &target, &peers, |sim, a, b| sim.partition(a, b))
            }
            FaultKind::PartitionOneway => {
                each_link(sim, &target, &peers, |sim, a, b| sim.partition_oneway(a, b))
            }
            FaultKind::Delay | FaultKind::PauseBroker => {
                each_link(sim, &target, &peers, |sim, a, b| sim.hold(a, b))
            }
            FaultKind::CrashBroker | FaultKind::CrashClient => {
                power_loss = kind == FaultKind::CrashBroker;
                cut_links(sim, topology, &target);
                sim.crash(target.as_str());
                if power_loss {
                    // The machine loses power: its disk keeps only what was
                    // synced (and torn blocks of what was being written).
                    let mut draw = Draw::new(child_seed(
                        resolved.seed,
                        &format!("power-loss/{target}/{now_ms}"),
                    ));
                    shared
                        .drive(&target)
                        .power_loss(resolved.block_size, &mut draw);
                }
            }
            FaultKind::RestartBroker => {
                cut_links(sim, topology, &target);
                sim.bounce(target.as_str());
                mend_links(sim, topology, &target);
            }
            FaultKind::PauseConsumer => {
                shared
                    .paused_until_ms
                    .lock()
                    .expect("pause lock")
                    .insert(target.clone(), now_ms + duration_ms);
            }
            FaultKind::SlowNetwork => {
                let slow = Duration::from_millis(SLOW_LINK_MAX_LATENCY_MS);
                each_link(sim, &target, &peers, |sim, a, b| {
                    sim.set_link_max_message_latency(a, b, slow)
                })
            }
            FaultKind::DiskFull => shared.disks.set(&target, Some(DiskFault::Full)),
            FaultKind::DiskErrors => shared.disks.set(&target, Some(DiskFault::IoErrors)),
            FaultKind::IsrSqueeze
            | FaultKind::CrashReplicas
            | FaultKind::RestartThenCrash
            | FaultKind::SwizzleClog
            | FaultKind::PowerCycleFollower => unreachable!("schedules were expanded above"),
        }
        self.faults += 1;
        if record {
            self.started.push(ScheduledFault {
                at_ms: now_ms,
                kind,
                target: Some(target.clone()),
                duration_ms,
            });
        }
        recorder.event_at(
            now_ms,
            "nemesis",
            Event::Fault {
                kind,
                target: target.clone(),
                peer: (kind == FaultKind::PartitionPair).then(|| peers[0].clone()),
                power_loss,
                healed: false,
            },
        );
        self.active.push(ActiveFault {
            heal_at_ms: now_ms + duration_ms,
            kind,
            target,
            peers,
        });
    }

    fn undo(
        sim: &mut turmoil::Sim<'_>,
        topology: &Topology,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
        fault: ActiveFault,
    ) {
        let target = fault.target.as_str();
        match fault.kind {
            FaultKind::Partition | FaultKind::PartitionPair | FaultKind::Isolate => {
                each_link(sim, target, &fault.peers, |sim, a, b| sim.repair(a, b))
            }
            FaultKind::PartitionOneway => each_link(sim, target, &fault.peers, |sim, a, b| {
                sim.repair_oneway(a, b)
            }),
            FaultKind::Delay | FaultKind::PauseBroker => {
                each_link(sim, target, &fault.peers, |sim, a, b| sim.release(a, b))
            }
            FaultKind::CrashBroker | FaultKind::CrashClient => {
                sim.bounce(fault.target.as_str());
                mend_links(sim, topology, &fault.target);
            }
            FaultKind::RestartBroker => {}
            FaultKind::PauseConsumer => {
                shared
                    .paused_until_ms
                    .lock()
                    .expect("pause lock")
                    .remove(&fault.target);
            }
            FaultKind::SlowNetwork => {
                let normal = Duration::from_millis(LINK_MAX_LATENCY_MS);
                each_link(sim, target, &fault.peers, |sim, a, b| {
                    sim.set_link_max_message_latency(a, b, normal)
                })
            }
            FaultKind::DiskFull | FaultKind::DiskErrors => {
                // A partition that hit a storage error stays offline until
                // the broker restarts and recovers it, as in Kafka.
                shared.disks.set(&fault.target, None);
                cut_links(sim, topology, &fault.target);
                sim.bounce(fault.target.as_str());
                mend_links(sim, topology, &fault.target);
            }
            FaultKind::IsrSqueeze
            | FaultKind::CrashReplicas
            | FaultKind::RestartThenCrash
            | FaultKind::SwizzleClog
            | FaultKind::PowerCycleFollower => unreachable!("schedules are never active"),
        }
        recorder.event_at(
            now_ms,
            "nemesis",
            Event::Fault {
                kind: fault.kind,
                peer: (fault.kind == FaultKind::PartitionPair).then(|| fault.peers[0].clone()),
                target: fault.target,
                power_loss: false,
                healed: true,
            },
        );
    }

    pub(crate) fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
    ) {
        let (due, remaining): (Vec<ActiveFault>, Vec<ActiveFault>) =
            std::mem::take(&mut self.active)
                .into_iter()
                .partition(|f| f.heal_at_ms <= now_ms || now_ms >= resolved.fault_ms);
        self.active = remaining;
        for fault in due {
            Self::undo(sim, &self.topology, shared, recorder, now_ms, fault);
        }
        if now_ms >= resolved.fault_ms {
            if !self.healed {
                self.healed = true;
                recorder.event_at(now_ms, "nemesis", Event::Heal);
            }
            return;
        }
        while self.schedule.last().is_some_and(|f| f.at_ms <= now_ms) {
            let fault = self.schedule.pop().expect("checked");
            self.start(
                sim,
                resolved,
                shared,
                recorder,
                now_ms,
                FaultPlan {
                    kind: fault.kind,
                    target: fault.target,
                    duration_ms: fault.duration_ms,
                    record: true,
                },
            );
        }
        if resolved.schedule.is_empty()
            && !resolved.fault_kinds.is_empty()
            && now_ms >= self.next_fault_ms
        {
            let kind = *self.draw.pick(&resolved.fault_kinds);
            let duration = self
                .draw
                .range(resolved.fault_duration_ms[0], resolved.fault_duration_ms[1]);
            self.start(
                sim,
                resolved,
                shared,
                recorder,
                now_ms,
                FaultPlan {
                    kind,
                    target: None,
                    duration_ms: duration,
                    record: true,
                },
            );
            self.next_fault_ms = now_ms
                + self
                    .draw
                    .range(resolved.fault_interval_ms[0], resolved.fault_interval_ms[1]);
        }
        self.start_due_followups(sim, resolved, shared, recorder, now_ms);
    }

    /// Starts the primitives of a schedule fault that are due, in order. One
    /// whose host is still under an earlier fault (a step may end that fault
    /// a tick after the next was due) waits for it, and so do those after.
    fn start_due_followups(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        resolved: &Resolved,
        shared: &Shared,
        recorder: &Recorder,
        now_ms: u64,
    ) {
        while let Some(next) = self.followups.last() {
            let busy = self.active.iter().any(|fault| fault.target == next.target);
            if next.at_ms > now_ms || busy {
                return;
            }
            let followup = self.followups.pop().expect("checked");
            let plan = FaultPlan {
                kind: followup.kind,
                target: Some(followup.target),
                duration_ms: followup.duration_ms,
                record: false,
            };
            self.start(sim, resolved, shared, recorder, now_ms, plan);
        }
    }
}
