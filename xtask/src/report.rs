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

/// Whether the current revision is slower or faster than the baseline: by
/// more than the threshold in the medians, and in every pair of runs, so that
/// one noisy run on a shared machine cannot make a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Slower,
    Faster,
    Within,
}

/// `speed` is current speed over baseline speed (above 1: faster); the
/// spreads are of quantities where bigger is slower (times).
fn judge_times(baseline: &Spread, current: &Spread, threshold_percent: f64) -> Change {
    let speed = baseline.median / current.median;
    let threshold = threshold_percent / 100.0;
    if speed < 1.0 - threshold && current.min > baseline.max {
        Change::Slower
    } else if speed > 1.0 + threshold && current.max < baseline.min {
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
    pub baseline: Option<Spread>,
    pub current: Option<Spread>,
    pub change: Change,
}

impl BenchRow {
    /// Current speed over baseline speed.
    pub fn speed_ratio(&self) -> Option<f64> {
        Some(self.baseline.as_ref()?.median / self.current.as_ref()?.median)
    }

    /// The lowest and highest speed ratio any pair of runs gives.
    pub fn speed_ratio_range(&self) -> Option<(f64, f64)> {
        let (base, cur) = (self.baseline.as_ref()?, self.current.as_ref()?);
        Some((base.min / cur.max, base.max / cur.min))
    }
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
        baseline: Vec<f64>,
        current: Vec<f64>,
    }
    let mut by_id: BTreeMap<String, Sides> = BTreeMap::new();
    for (samples, is_current) in [(baseline, false), (current, true)] {
        for sample in samples {
            let sides = by_id.entry(sample.id.clone()).or_default();
            sides.group = sample.group.clone();
            if is_current || sides.throughput.is_none() {
                sides.throughput = sample.throughput;
            }
            if is_current {
                sides.current.push(sample.median_ns);
            } else {
                sides.baseline.push(sample.median_ns);
            }
        }
    }
    by_id
        .into_iter()
        .map(|(id, sides)| {
            let baseline = Spread::of(&sides.baseline);
            let current = Spread::of(&sides.current);
            let control = is_control(&id);
            let change = match (&baseline, &current) {
                (Some(base), Some(cur)) if !control => judge_times(base, cur, threshold_percent),
                _ => Change::Within,
            };
            BenchRow {
                id,
                group: sides.group,
                control,
                throughput: sides.throughput,
                baseline,
                current,
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
            let minutes = |samples: &[SweepSample]| -> Vec<f64> {
                samples
                    .iter()
                    .filter(|s| s.scenario == scenario)
                    .map(|s| s.wall_ms as f64)
                    .collect()
            };
            let base_ms = Spread::of(&minutes(baseline))?;
            let cur_ms = Spread::of(&minutes(current))?;
            let runs = baseline.iter().find(|s| s.scenario == scenario)?.runs;
            let per_minute = |ms: &Spread| Spread {
                median: runs as f64 * 60_000.0 / ms.median,
                min: runs as f64 * 60_000.0 / ms.max,
                max: runs as f64 * 60_000.0 / ms.min,
                runs: ms.runs,
            };
            Some(SweepRow {
                scenario: scenario.to_string(),
                runs_per_sweep: runs,
                baseline: per_minute(&base_ms),
                current: per_minute(&cur_ms),
                change: judge_times(&base_ms, &cur_ms, threshold_percent),
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
             {threshold_percent}% in every round; {faster} faster."
        )
    } else {
        format!(
            "**Verdict: REGRESSION.** {} of {compared} comparisons slower by more than \
             {threshold_percent}% in every round: {}.",
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
         - Method: both revisions built in release mode and run alternately, {} rounds \
         (baseline, current, baseline, current, ...). Each benchmark's median is the median \
         of criterion's per-round medians; ± is half the range over the rounds. The ratio is \
         current speed over baseline speed (above 1 is faster). A comparison counts as slower \
         or faster only beyond {}% and in every pair of rounds. Rows marked *control* time \
         the machine itself (a plain `write`, `pread` or socket pair): when they move, the \
         machine drifted, not the code.\n\n",
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
            "| benchmark | {} | {} | ratio | |\n| --- | --- | --- | --- | --- |\n",
            context.baseline_label, context.current_label
        ));
        for row in benches.iter().filter(|row| row.group == group) {
            let ratio = row
                .speed_ratio()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
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
            text.push_str(&format!(
                "| {} | {} | {} | {ratio} | {note} |\n",
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
                "| {} | {:.1} (±{:.1}%) | {:.1} (±{:.1}%) | {:.2} | {} |\n",
                row.scenario,
                row.baseline.median,
                row.baseline.spread_percent() / 2.0,
                row.current.median,
                row.current.spread_percent() / 2.0,
                row.current.median / row.baseline.median,
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

    fn sample(id: &str, median_ns: f64) -> BenchSample {
        BenchSample {
            id: id.to_string(),
            group: id.split('/').next().unwrap().to_string(),
            median_ns,
            throughput: Some(Throughput::Bytes(16_000)),
        }
    }

    #[test]
    fn a_consistent_slowdown_beyond_the_threshold_is_a_regression() {
        let baseline = [
            sample("append/log_page_cache/100", 20_000.0),
            sample("append/log_page_cache/100", 21_000.0),
        ];
        let current = [
            sample("append/log_page_cache/100", 24_000.0),
            sample("append/log_page_cache/100", 25_000.0),
        ];
        let rows = bench_rows(&baseline, &current, 10.0);
        assert_eq!(rows[0].change, Change::Slower);
        let ratio = rows[0].speed_ratio().unwrap();
        assert!((ratio - 20_500.0 / 24_500.0).abs() < 1e-9);
        assert!(verdict(&rows, &[], 10.0).contains("REGRESSION"));
    }

    #[test]
    fn overlapping_rounds_or_a_small_change_are_within_noise() {
        // Median 15% slower, but one current round beat a baseline round.
        let baseline = [
            sample("fetch/log_fetch/100", 10_000.0),
            sample("fetch/log_fetch/100", 12_500.0),
        ];
        let current = [
            sample("fetch/log_fetch/100", 12_000.0),
            sample("fetch/log_fetch/100", 14_000.0),
        ];
        let rows = bench_rows(&baseline, &current, 10.0);
        assert_eq!(rows[0].change, Change::Within);
        // Consistent but only 5% slower.
        let current = [
            sample("fetch/log_fetch/100", 13_000.0),
            sample("fetch/log_fetch/100", 13_200.0),
        ];
        let baseline = [
            sample("fetch/log_fetch/100", 12_400.0),
            sample("fetch/log_fetch/100", 12_600.0),
        ];
        let rows = bench_rows(&baseline, &current, 10.0);
        assert_eq!(rows[0].change, Change::Within);
        assert!(verdict(&rows, &[], 10.0).contains("no regression"));
    }

    #[test]
    fn controls_never_make_the_verdict_and_one_sided_rows_are_shown() {
        let baseline = [sample("append/raw_write/100", 10_000.0)];
        let current = [
            sample("append/raw_write/100", 20_000.0),
            sample("e2e/acks_all_1p/100", 5_000.0),
        ];
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
            rounds: 1,
            seeds: (0, 3),
            threshold_percent: 10.0,
            plots: BTreeMap::new(),
        };
        let text = render(&context, &rows, &[]);
        assert!(
            text.contains(
                "| raw_write/100 | 1.600 GB/s (±0.0%) | 800.000 MB/s (±0.0%) | 0.50 | control |"
            ),
            "{text}"
        );
        assert!(text.contains("| acks_all_1p/100 | - |"), "{text}");
    }

    #[test]
    fn sweeps_compare_seeds_per_minute() {
        let sweep = |scenario: &str, wall_ms| SweepSample {
            scenario: scenario.into(),
            runs: 5,
            wall_ms,
        };
        let rows = sweep_rows(
            &[sweep("orders", 60_000), sweep("orders", 62_000)],
            &[sweep("orders", 10_000), sweep("orders", 11_000)],
            10.0,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].change, Change::Faster);
        assert!((rows[0].baseline.median - 5.0 * 60_000.0 / 61_000.0).abs() < 1e-9);
    }
}
