//! Turning both revisions' samples into the comparison a person reads: per
//! benchmark medians, spreads and ratios, the simulation's seeds per minute,
//! and one verdict line. Pure: the shell gathers samples and writes files.

use std::collections::BTreeMap;

use crate::measure::{BenchSample, SweepSample, Throughput};

/// Several runs of one thing on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }

    /// (max - min) / median, in percent: how far the runs disagree.
    pub fn spread_percent(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) * 100.0 / self.median
        }
    }
}

/// Whether the current revision is slower or faster than the baseline.
///
/// Judged from paired speed ratios: each round runs a benchmark on the
/// baseline and then on the current revision, seconds apart, so the pair
/// shares the machine's state of that moment; drift between rounds (tens of
/// percent on shared VMs) cancels out of the ratio. A change counts only when
/// the median ratio is beyond the threshold and every pair points the same
/// way, and never from fewer than two pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Slower,
    Faster,
    Within,
}

pub const PAIRS_MIN: usize = 2;

/// `ratios` are current speed over baseline speed, one per round.
pub fn judge(ratios: &[f64], threshold_percent: f64) -> Change {
    let Some(spread) = Spread::of(ratios) else {
        return Change::Within;
    };
    let threshold = threshold_percent / 100.0;
    if ratios.len() < PAIRS_MIN {
        Change::Within
    } else if spread.median < 1.0 - threshold && spread.max < 1.0 {
        Change::Slower
    } else if spread.median > 1.0 + threshold && spread.min > 1.0 {
        Change::Faster
    } else {
        Change::Within
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub id: String,
    pub group: String,
    /// Raw baselines (a plain `write`, `pread`, socket pair) measure the
    /// machine, not sluice: they show drift between the runs and never make
    /// the verdict.
    pub control: bool,
    pub throughput: Option<Throughput>,
    /// Criterion's median time per iteration, over the rounds.
    pub baseline: Option<Spread>,
    pub current: Option<Spread>,
    /// Current speed over baseline speed, per round both sides ran.
    pub ratios: Option<Spread>,
    /// Speed over the row's own control in the same round (1.0 = as fast as
    /// the plain `write`, `pread` or socket pair), per side. Unlike the
    /// ratio between revisions, this holds even when the two revisions'
    /// bench code differs, since each side measures its control the same way
    /// it measures the row.
    pub of_control: [Option<Spread>; 2],
    pub change: Change,
}

/// Which control each measured row is set against: (group, function,
/// control function), with `*` for any function. A row and its control share
/// the group and the parameter (the record size).
const CONTROLS: &[(&str, &str, &str)] = &[
    ("append", "log_page_cache", "raw_write"),
    ("append", "log_fsync", "raw_write_fsync"),
    ("append_records", "log_page_cache", "raw_write"),
    ("fetch", "log_fetch", "raw_pread"),
    ("e2e", "*", "socket_pair"),
];

/// The id of the control row `id` (`group/function/.../parameter`) is set
/// against, if it has one.
pub fn control_of(id: &str) -> Option<String> {
    let mut parts = id.split('/');
    let group = parts.next()?;
    let function = parts.next()?;
    let parameter = id.rsplit('/').next()?;
    CONTROLS
        .iter()
        .find(|(g, f, _)| *g == group && (*f == "*" || *f == function))
        .filter(|_| !is_control(id))
        .map(|(_, _, control)| format!("{group}/{control}/{parameter}"))
}

pub fn is_control(id: &str) -> bool {
    let function = id.split('/').nth(1).unwrap_or(id);
    function.starts_with("raw_") || function.starts_with("socket_")
}

pub fn bench_rows(
    baseline: &[BenchSample],
    current: &[BenchSample],
    threshold_percent: f64,
) -> Vec<BenchRow> {
    #[derive(Default)]
    struct Sides {
        group: String,
        throughput: Option<Throughput>,
        /// Median nanoseconds by round, per side.
        baseline: BTreeMap<usize, f64>,
        current: BTreeMap<usize, f64>,
    }
    let mut by_id: BTreeMap<String, Sides> = BTreeMap::new();
    for (samples, is_current) in [(baseline, false), (current, true)] {
        for sample in samples {
            let sides = by_id.entry(sample.id.clone()).or_default();
            sides.group = sample.group.clone();
            if is_current || sides.throughput.is_none() {
                sides.throughput = sample.throughput;
            }
            let side = if is_current {
                &mut sides.current
            } else {
                &mut sides.baseline
            };
            side.insert(sample.round, sample.median_ns);
        }
    }
    // Per side, the row's speed over its control's in each round.
    let of_control = |id: &str, pick: fn(&Sides) -> &BTreeMap<usize, f64>| -> Option<Spread> {
        let control = by_id.get(&control_of(id)?)?;
        let row = by_id.get(id)?;
        let ratios: Vec<f64> = pick(row)
            .iter()
            .filter_map(|(round, row_ns)| Some(pick(control).get(round)? / row_ns))
            .collect();
        Spread::of(&ratios)
    };
    let of_controls: BTreeMap<String, [Option<Spread>; 2]> = by_id
        .keys()
        .map(|id| {
            (
                id.clone(),
                [
                    of_control(id, |sides| &sides.baseline),
                    of_control(id, |sides| &sides.current),
                ],
            )
        })
        .collect();
    by_id
        .into_iter()
        .map(|(id, sides)| {
            let ratios: Vec<f64> = sides
                .baseline
                .iter()
                .filter_map(|(round, base)| Some(base / sides.current.get(round)?))
                .collect();
            let control = is_control(&id);
            let change = if control {
                Change::Within
            } else {
                judge(&ratios, threshold_percent)
            };
            BenchRow {
                baseline: Spread::of(&sides.baseline.values().copied().collect::<Vec<_>>()),
                current: Spread::of(&sides.current.values().copied().collect::<Vec<_>>()),
                ratios: Spread::of(&ratios),
                of_control: of_controls.get(&id).cloned().unwrap_or_default(),
                id,
                group: sides.group,
                control,
                throughput: sides.throughput,
                change,
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub scenario: String,
    pub runs_per_sweep: u64,
    /// Seeds per minute, over the rounds.
    pub baseline: Spread,
    pub current: Spread,
    /// Current seeds per minute over baseline's, per round.
    pub ratios: Spread,
    pub change: Change,
}

pub fn sweep_rows(
    baseline: &[SweepSample],
    current: &[SweepSample],
    threshold_percent: f64,
) -> Vec<SweepRow> {
    let mut scenarios: Vec<&str> = baseline.iter().map(|s| s.scenario.as_str()).collect();
    scenarios.sort();
    scenarios.dedup();
    scenarios
        .into_iter()
        .filter_map(|scenario| {
            let per_minute = |samples: &[SweepSample]| -> BTreeMap<usize, f64> {
                samples
                    .iter()
                    .filter(|s| s.scenario == scenario)
                    .map(|s| (s.round, s.runs as f64 * 60_000.0 / s.wall_ms.max(1) as f64))
                    .collect()
            };
            let (base, cur) = (per_minute(baseline), per_minute(current));
            let ratios: Vec<f64> = base
                .iter()
                .filter_map(|(round, b)| Some(cur.get(round)? / b))
                .collect();
            Some(SweepRow {
                scenario: scenario.to_string(),
                runs_per_sweep: baseline.iter().find(|s| s.scenario == scenario)?.runs,
                baseline: Spread::of(&base.values().copied().collect::<Vec<_>>())?,
                current: Spread::of(&cur.values().copied().collect::<Vec<_>>())?,
                change: judge(&ratios, threshold_percent),
                ratios: Spread::of(&ratios)?,
            })
        })
        .collect()
}

/// The one line a reader looks at first.
pub fn verdict(benches: &[BenchRow], sweeps: &[SweepRow], threshold_percent: f64) -> String {
    let slower: Vec<&str> = benches
        .iter()
        .filter(|row| row.change == Change::Slower)
        .map(|row| row.id.as_str())
        .chain(
            sweeps
                .iter()
                .filter(|row| row.change == Change::Slower)
                .map(|row| row.scenario.as_str()),
        )
        .collect();
    let faster = benches
        .iter()
        .filter(|row| row.change == Change::Faster)
        .count()
        + sweeps
            .iter()
            .filter(|row| row.change == Change::Faster)
            .count();
    let compared = benches
        .iter()
        .filter(|row| !row.control && row.baseline.is_some() && row.current.is_some())
        .count()
        + sweeps.len();
    if slower.is_empty() {
        format!(
            "**Verdict: no regression.** None of {compared} comparisons is slower by more than \
             {threshold_percent}% with every round agreeing; {faster} faster."
        )
    } else {
        format!(
            "**Verdict: REGRESSION.** {} of {compared} comparisons slower by more than \
             {threshold_percent}% with every round agreeing: {}.",
            slower.len(),
            slower.join(", ")
        )
    }
}

pub fn format_rate(per_second: f64, unit: &str) -> String {
    let (value, prefix) = if per_second >= 1e9 {
        (per_second / 1e9, "G")
    } else if per_second >= 1e6 {
        (per_second / 1e6, "M")
    } else if per_second >= 1e3 {
        (per_second / 1e3, "K")
    } else {
        (per_second, "")
    };
    format!("{value:.3} {prefix}{unit}/s")
}

fn format_side(spread: Option<&Spread>, throughput: Option<Throughput>) -> String {
    let Some(spread) = spread else {
        return "-".to_string();
    };
    let value = match throughput {
        Some(Throughput::Bytes(bytes)) => format_rate(bytes as f64 * 1e9 / spread.median, "B"),
        Some(Throughput::Elements(count)) => {
            format_rate(count as f64 * 1e9 / spread.median, "records")
        }
        None => format!("{:.1} µs", spread.median / 1e3),
    };
    format!("{value} (±{:.1}%)", spread.spread_percent() / 2.0)
}

/// What the report says about how it was made.
pub struct Context {
    pub baseline_label: String,
    pub baseline_commit: String,
    pub current_label: String,
    pub current_commit: String,
    pub command: String,
    pub machine: String,
    pub rounds: usize,
    pub seeds: (u64, u64),
    pub threshold_percent: f64,
    /// Plot file names relative to the report, by group.
    pub plots: BTreeMap<String, String>,
}

pub fn render(context: &Context, benches: &[BenchRow], sweeps: &[SweepRow]) -> String {
    let mut text = format!(
        "# Performance: {} against {}\n\n",
        context.current_label, context.baseline_label
    );
    text.push_str(&format!(
        "- Baseline: {} at `{}`\n- Current: {} at `{}`\n- Command: `{}`\n- Machine: {}\n\
         - Method: both revisions built in release mode. Each benchmark runs {} rounds, and \
         in each round on the baseline and then on the current revision, seconds apart; \
         each sweep likewise. A side's figure is the median of its rounds (criterion's \
         median per round), ± half their range. The ratio is current speed over baseline \
         speed (above 1 is faster), paired within each round: the median pair, and the \
         lowest and highest pair in brackets. A comparison counts as slower or faster only \
         when the median pair is beyond {}% and every pair agrees, from at least two \
         rounds. Rows marked *control* time the machine itself (a plain `write`, `pread` or \
         socket pair): when they move, the machine drifted, not the code. *Of control* is \
         each side's speed over its own control in the same round (baseline → current); \
         it stays meaningful where a revision changed the bench code itself.\n\n",
        context.baseline_label,
        context.baseline_commit,
        context.current_label,
        context.current_commit,
        context.command,
        context.machine,
        context.rounds,
        context.threshold_percent
    ));
    text.push_str(&verdict(benches, sweeps, context.threshold_percent));
    text.push_str("\n\n");
    let mut groups: Vec<&str> = benches.iter().map(|row| row.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        text.push_str(&format!("## {group}\n\n"));
        if let Some(plot) = context.plots.get(group) {
            text.push_str(&format!(
                "![{group}: current speed over baseline]({plot})\n\n"
            ));
        }
        text.push_str(&format!(
            "| benchmark | {} | {} | ratio | of control | |\n| --- | --- | --- | --- | --- | --- |\n",
            context.baseline_label, context.current_label
        ));
        for row in benches.iter().filter(|row| row.group == group) {
            let ratio = row.ratios.as_ref().map_or_else(
                || "-".to_string(),
                |r| format!("{:.2} ({:.2}–{:.2})", r.median, r.min, r.max),
            );
            let note = if row.control {
                "control"
            } else {
                match (row.change, &row.baseline, &row.current) {
                    (_, None, _) => "new",
                    (_, _, None) => "gone",
                    (Change::Slower, ..) => "**slower**",
                    (Change::Faster, ..) => "faster",
                    (Change::Within, ..) => "",
                }
            };
            let of_control = match &row.of_control {
                [None, None] => String::new(),
                [baseline, current] => {
                    let side = |spread: &Option<Spread>| {
                        spread
                            .as_ref()
                            .map_or_else(|| "-".to_string(), |s| format!("{:.2}", s.median))
                    };
                    format!("{} → {}", side(baseline), side(current))
                }
            };
            text.push_str(&format!(
                "| {} | {} | {} | {ratio} | {of_control} | {note} |\n",
                row.id.strip_prefix(&format!("{group}/")).unwrap_or(&row.id),
                format_side(row.baseline.as_ref(), row.throughput),
                format_side(row.current.as_ref(), row.throughput),
            ));
        }
        text.push('\n');
    }
    if !sweeps.is_empty() {
        text.push_str(&format!(
            "## Simulation sweep\n\nEach revision's own `sim sweep <scenario> --seeds {}..{} \
             --jobs 1` on its own scenario files, timed end to end: seeds per minute is the \
             harness's bug-finding throughput on one core. Scenarios changed between \
             revisions (more checkers, more knobs), so this compares what a user of each \
             revision gets, not identical work.\n\n| scenario | {} seeds/min | {} seeds/min | \
             ratio | |\n| --- | --- | --- | --- | --- |\n",
            context.seeds.0, context.seeds.1, context.baseline_label, context.current_label
        ));
        for row in sweeps {
            text.push_str(&format!(
                "| {} | {:.1} (±{:.1}%) | {:.1} (±{:.1}%) | {:.2} ({:.2}–{:.2}) | {} |\n",
                row.scenario,
                row.baseline.median,
                row.baseline.spread_percent() / 2.0,
                row.current.median,
                row.current.spread_percent() / 2.0,
                row.ratios.median,
                row.ratios.min,
                row.ratios.max,
                match row.change {
                    Change::Slower => "**slower**",
                    Change::Faster => "faster",
                    Change::Within => "",
                }
            ));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, round: usize, median_ns: f64) -> BenchSample {
        BenchSample {
            round,
            id: id.to_string(),
            group: id.split('/').next().unwrap().to_string(),
            median_ns,
            throughput: Some(Throughput::Bytes(16_000)),
        }
    }

    fn rounds(id: &str, times: &[f64]) -> Vec<BenchSample> {
        times
            .iter()
            .enumerate()
            .map(|(round, t)| sample(id, round, *t))
            .collect()
    }

    const ID: &str = "append/log_page_cache/100";

    #[test]
    fn a_slowdown_every_pair_agrees_on_is_a_regression_despite_drift_between_rounds() {
        // The machine got 40% slower between rounds 0 and 2; within each
        // round the current revision is 20% slower.
        let baseline = rounds(ID, &[20_000.0, 24_000.0, 28_000.0]);
        let current = rounds(ID, &[25_000.0, 30_000.0, 35_000.0]);
        let rows = bench_rows(&baseline, &current, 10.0);
        assert_eq!(rows[0].change, Change::Slower);
        assert!((rows[0].ratios.as_ref().unwrap().median - 0.8).abs() < 1e-9);
        assert!(verdict(&rows, &[], 10.0).contains("REGRESSION"));
    }

    #[test]
    fn a_pair_that_disagrees_a_small_change_or_a_single_round_is_within_noise() {
        let baseline = rounds(ID, &[20_000.0, 20_000.0, 20_000.0]);
        // Median pair 0.8, but one pair faster.
        let current = rounds(ID, &[25_000.0, 25_000.0, 19_000.0]);
        assert_eq!(
            bench_rows(&baseline, &current, 10.0)[0].change,
            Change::Within
        );
        // Every pair slower, but by 5%.
        let current = rounds(ID, &[21_000.0, 21_000.0, 21_000.0]);
        assert_eq!(
            bench_rows(&baseline, &current, 10.0)[0].change,
            Change::Within
        );
        // One round cannot tell a change from noise.
        let rows = bench_rows(&baseline[..1], &rounds(ID, &[40_000.0]), 10.0);
        assert_eq!(rows[0].change, Change::Within);
        assert!(verdict(&rows, &[], 10.0).contains("no regression"));
        // Faster works the same way.
        let current = rounds(ID, &[15_000.0, 16_000.0, 15_500.0]);
        assert_eq!(
            bench_rows(&baseline, &current, 10.0)[0].change,
            Change::Faster
        );
    }

    #[test]
    fn controls_never_make_the_verdict_and_one_sided_rows_are_shown() {
        let baseline = rounds("append/raw_write/100", &[10_000.0, 10_000.0]);
        let mut current = rounds("append/raw_write/100", &[20_000.0, 20_000.0]);
        current.extend(rounds("e2e/acks=all/partitions=1/100", &[5_000.0, 5_000.0]));
        let rows = bench_rows(&baseline, &current, 10.0);
        assert!(rows.iter().all(|row| row.change == Change::Within));
        assert!(rows[0].control);
        assert!(rows[1].baseline.is_none());
        let context = Context {
            baseline_label: "0.1.0".into(),
            baseline_commit: "abc".into(),
            current_label: "def".into(),
            current_commit: "def".into(),
            command: "cargo xtask perf-report --baseline 0.1.0".into(),
            machine: "test".into(),
            rounds: 2,
            seeds: (0, 3),
            threshold_percent: 10.0,
            plots: BTreeMap::new(),
        };
        let text = render(&context, &rows, &[]);
        assert!(
            text.contains(
                "| raw_write/100 | 1.600 GB/s (±0.0%) | 800.000 MB/s (±0.0%) | 0.50 (0.50–0.50) |  | control |"
            ),
            "{text}"
        );
        assert!(text.contains("| acks=all/partitions=1/100 | - |"), "{text}");
    }

    #[test]
    fn each_side_is_set_against_its_own_control_round_by_round() {
        assert_eq!(
            control_of("append/log_fsync/100").as_deref(),
            Some("append/raw_write_fsync/100")
        );
        assert_eq!(
            control_of("e2e/acks=all/partitions=3/1024").as_deref(),
            Some("e2e/socket_pair/1024")
        );
        assert_eq!(control_of("append/raw_write/100"), None);
        assert_eq!(control_of("codec/produce_encode/100"), None);
        // The baseline's log ran at half its control's speed; the current's
        // at four fifths, in a round where the machine was slower overall.
        let mut baseline = rounds("append/raw_write/100", &[10_000.0, 12_000.0]);
        baseline.extend(rounds(ID, &[20_000.0, 24_000.0]));
        let mut current = rounds("append/raw_write/100", &[8_000.0, 16_000.0]);
        current.extend(rounds(ID, &[10_000.0, 20_000.0]));
        let rows = bench_rows(&baseline, &current, 10.0);
        let row = rows.iter().find(|row| row.id == ID).expect("row");
        let [before, after] = &row.of_control;
        assert!((before.as_ref().unwrap().median - 0.5).abs() < 1e-9);
        assert!((after.as_ref().unwrap().median - 0.8).abs() < 1e-9);
    }

    #[test]
    fn sweeps_compare_seeds_per_minute_pair_by_pair() {
        let sweep = |round, wall_ms| SweepSample {
            scenario: "orders".into(),
            round,
            runs: 5,
            wall_ms,
        };
        let rows = sweep_rows(
            &[sweep(0, 60_000), sweep(1, 62_000)],
            &[sweep(0, 10_000), sweep(1, 11_000)],
            10.0,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].change, Change::Faster);
        assert!((rows[0].baseline.median - (5.0 + 5.0 * 60.0 / 62.0) / 2.0).abs() < 1e-9);
    }
}
