//! The rate over time: completions (holds, payments) counted per wall-clock second of a measured
//! phase, so a rate that falls as the server's state grows shows, where one average over the
//! whole phase would hide it.
//!
//! The report gives the counts of every whole second, the part of a second the phase ended in
//! apart (its count is not a rate), and a summary over the whole seconds: min, median, max, and
//! the mean of the first quarter of them against the mean of the last quarter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Completions of one measured phase, one counter per second since its start.
pub struct Series {
    started: Instant,
    counts: Vec<AtomicU64>,
}

impl Series {
    /// Counters for a phase that started at `started` and may last up to `longest` (its
    /// duration and the grace its last requests get): a fixed array, so recording never
    /// allocates. A completion past the last counter (it cannot come: the work is aborted
    /// by then) would be counted in it.
    pub fn new(started: Instant, longest: Duration) -> Self {
        let seconds = longest.as_secs().saturating_add(2).min(SECONDS_MAX) as usize;
        Self {
            started,
            counts: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One completion, now.
    pub fn record(&self) {
        self.record_at(Instant::now());
    }

    fn record_at(&self, at: Instant) {
        let second = at.saturating_duration_since(self.started).as_secs() as usize;
        let last = self.counts.len() - 1;
        self.counts[second.min(last)].fetch_add(1, Ordering::Relaxed);
    }

    /// The per-second figures of a phase that lasted `seconds`.
    pub fn report(&self, seconds: f64) -> PerSecond {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        PerSecond::of(&counts, seconds)
    }
}

/// More seconds than any run is given (`--duration` is bounded by the request budget anyway).
const SECONDS_MAX: u64 = 7 * 24 * 3_600;

/// The counts of one phase, split into whole seconds and the part of a second it ended in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerSecond {
    /// Completions in each whole second of the phase, in order.
    pub series: Vec<u64>,
    /// The part of a second after the last whole one (0 ≤ it < 1), and its completions, which
    /// also take in any counted past the phase's end.
    pub tail_seconds: f64,
    pub tail_count: u64,
    /// `None` when the phase lasted less than one second.
    pub summary: Option<Summary>,
}

impl PerSecond {
    /// `counts[i]` completions in second `i` of a phase of `seconds`.
    pub fn of(counts: &[u64], seconds: f64) -> Self {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let whole = (seconds.floor() as usize).min(counts.len());
        let series = counts[..whole].to_vec();
        let tail_count = counts[whole..].iter().sum();
        PerSecond {
            summary: Summary::of(&series),
            tail_seconds: (seconds - whole as f64).clamp(0.0, 1.0),
            tail_count,
            series,
        }
    }

    /// Every completion counted, in the whole seconds and the tail.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.series.iter().sum::<u64>() + self.tail_count
    }
}

/// What a series of per-second counts says about the rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Whole seconds summarised.
    pub seconds: usize,
    pub min: u64,
    /// The middle count; of an even number, the mean of the two middle ones.
    pub median: f64,
    pub max: u64,
    pub mean: f64,
    /// The mean of the first and of the last `quarter_seconds` seconds: a quarter of them,
    /// at least one.
    pub quarter_seconds: usize,
    pub first_quarter_mean: f64,
    pub last_quarter_mean: f64,
    /// How far the last quarter is from the first, in percent (negative: it fell). `None`
    /// when the first quarter completed nothing.
    pub last_vs_first_percent: Option<f64>,
}

impl Summary {
    pub fn of(series: &[u64]) -> Option<Self> {
        let n = series.len();
        if n == 0 {
            return None;
        }
        let mut sorted = series.to_vec();
        sorted.sort_unstable();
        let median = if n % 2 == 1 {
            sorted[n / 2] as f64
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
        };
        let mean = |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len() as f64;
        let quarter = (n / 4).max(1);
        let first = mean(&series[..quarter]);
        let last = mean(&series[n - quarter..]);
        Some(Summary {
            seconds: n,
            min: sorted[0],
            median,
            max: sorted[n - 1],
            mean: mean(series),
            quarter_seconds: quarter,
            first_quarter_mean: first,
            last_quarter_mean: last,
            last_vs_first_percent: (first > 0.0).then(|| 100.0 * (last / first - 1.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_fall_in_the_second_they_came_in() {
        let started = Instant::now();
        let series = Series::new(started, Duration::from_secs(3));
        for millis in [0, 999, 1_000, 1_500, 2_999, 3_200] {
            series.record_at(started + Duration::from_millis(millis));
        }
        let report = series.report(3.25);
        assert_eq!(report.series, vec![2, 2, 1]);
        assert_eq!(report.tail_count, 1);
        assert!((report.tail_seconds - 0.25).abs() < 1e-9);
        assert_eq!(report.total(), 6);
    }

    #[test]
    fn a_completion_past_the_last_counter_is_counted_in_it() {
        let started = Instant::now();
        let series = Series::new(started, Duration::from_secs(1));
        series.record_at(started + Duration::from_secs(3_600));
        // Counters for 1 s + 2 s of margin; the straggler is in the tail, not lost.
        let report = series.report(1.5);
        assert_eq!(report.series, vec![0]);
        assert_eq!(report.tail_count, 1);
    }

    #[test]
    fn a_phase_shorter_than_a_second_has_a_tail_and_no_summary() {
        let report = PerSecond::of(&[7, 0, 0], 0.4);
        assert!(report.series.is_empty());
        assert_eq!(report.tail_count, 7);
        assert_eq!(report.summary, None);
    }

    #[test]
    fn the_summary_gives_min_median_max_and_the_quarters() {
        // Eight seconds: the quarters are the first two and the last two.
        let summary = Summary::of(&[100, 120, 90, 110, 80, 95, 70, 60]).unwrap();
        assert_eq!(summary.seconds, 8);
        assert_eq!(summary.min, 60);
        assert_eq!(summary.max, 120);
        // Sorted: 60 70 80 90 95 100 110 120, so the median is (90 + 95) / 2.
        assert!((summary.median - 92.5).abs() < 1e-9);
        assert!((summary.mean - 90.625).abs() < 1e-9);
        assert_eq!(summary.quarter_seconds, 2);
        assert!((summary.first_quarter_mean - 110.0).abs() < 1e-9);
        assert!((summary.last_quarter_mean - 65.0).abs() < 1e-9);
        let change = summary.last_vs_first_percent.unwrap();
        assert!(
            (change - 100.0 * (65.0 / 110.0 - 1.0)).abs() < 1e-9,
            "{change}"
        );
    }

    #[test]
    fn an_odd_series_has_its_middle_as_median_and_short_ones_quarter_one_second() {
        let summary = Summary::of(&[5, 1, 3]).unwrap();
        assert!((summary.median - 3.0).abs() < 1e-9);
        // Fewer than four seconds: a quarter is the first and the last second.
        assert_eq!(summary.quarter_seconds, 1);
        assert!((summary.first_quarter_mean - 5.0).abs() < 1e-9);
        assert!((summary.last_quarter_mean - 3.0).abs() < 1e-9);
        assert!((summary.last_vs_first_percent.unwrap() + 40.0).abs() < 1e-9);
    }

    #[test]
    fn a_first_quarter_without_completions_has_no_change_and_an_empty_series_no_summary() {
        let summary = Summary::of(&[0, 0, 0, 0, 4, 4, 4, 4]).unwrap();
        assert_eq!(summary.last_vs_first_percent, None);
        assert_eq!(summary.min, 0);
        assert_eq!(Summary::of(&[]), None);
    }
}
