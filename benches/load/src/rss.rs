//! The server's resident memory during a soak: `VmRSS` of `/proc/PID/status`, sampled every
//! `--sample-seconds`, and the verdict on whether it stayed flat.
//!
//! The rule: split the measured phase into thirds by time; the run is **flat** when the mean of
//! the samples in the last third is less than `--rss-growth-max-percent` (10 by default) above the
//! mean of those in the first third. Means, not single samples, so one allocator spike does not
//! decide; thirds, not start and end, so a slow climb is seen even if the last sample dips.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::client::Client;

/// Said in `--help` and in every report, so a reader knows what "flat" meant.
pub fn rule(threshold_percent: f64) -> String {
    format!(
        "flat when the mean RSS of the samples in the last third of the measured phase is less \
         than {threshold_percent}% above the mean of those in the first third"
    )
}

/// The resident set of `pid` in KiB, from `VmRSS` in `/proc/PID/status`.
pub fn read_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| format!("{path} has no VmRSS line"))
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Since the start of the measured phase.
    pub seconds: f64,
    pub rss_kib: u64,
}

/// Samples `pid` until told to stop; shares the latest value with the progress bar.
pub struct Sampler {
    pid: u32,
    started: Instant,
    samples: Mutex<Vec<Sample>>,
    /// The first read that failed (the process exited?); sampling stops there.
    error: Mutex<Option<String>>,
}

impl Sampler {
    pub fn new(pid: u32, started: Instant) -> Self {
        Self {
            pid,
            started,
            samples: Mutex::new(Vec::new()),
            error: Mutex::new(None),
        }
    }

    /// Takes one sample now; `false` once a read has failed.
    pub fn sample(&self) -> bool {
        if self.error.lock().is_some() {
            return false;
        }
        match read_kib(self.pid) {
            Ok(rss_kib) => {
                self.samples.lock().push(Sample {
                    seconds: self.started.elapsed().as_secs_f64(),
                    rss_kib,
                });
                true
            }
            Err(why) => {
                *self.error.lock() = Some(why);
                false
            }
        }
    }

    pub fn latest_kib(&self) -> Option<u64> {
        self.samples.lock().last().map(|s| s.rss_kib)
    }

    /// One sample every `every` until the client halts (`nap` wakes on the halt). The caller
    /// takes the last sample once the measured work has stopped.
    pub async fn run(&self, client: &Client, every: Duration) {
        while !client.halted() && self.sample() {
            client.nap(every).await;
        }
    }

    pub fn report(&self, every: Duration, threshold_percent: f64) -> RssReport {
        let samples = self.samples.lock().clone();
        let mut report = judge(&samples, threshold_percent);
        report.pid = Some(self.pid);
        report.sample_seconds = Some(every.as_secs_f64());
        report.error = self.error.lock().clone();
        report.samples = samples;
        report
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RssReport {
    /// `false` without `--server-pid`: nothing below was measured.
    pub sampled: bool,
    pub pid: Option<u32>,
    pub sample_seconds: Option<f64>,
    /// After setup and the warm-up, when the measured phase began.
    pub start_kib: Option<u64>,
    /// When the measured phase had ended, before the audit.
    pub end_kib: Option<u64>,
    pub max_kib: Option<u64>,
    pub first_third_mean_kib: Option<f64>,
    pub last_third_mean_kib: Option<f64>,
    /// Last third's mean over the first third's, in percent.
    pub growth_percent: Option<f64>,
    pub threshold_percent: f64,
    /// `flat`, `growing`, `too few samples`, or `not sampled`.
    pub verdict: &'static str,
    pub rule: String,
    /// Why sampling stopped early, if it did.
    pub error: Option<String>,
    pub samples: Vec<Sample>,
}

impl RssReport {
    pub fn not_sampled(threshold_percent: f64) -> Self {
        Self {
            threshold_percent,
            verdict: "not sampled",
            rule: "RSS was not sampled: pass --server-pid PID of the server".to_owned(),
            ..Self::default()
        }
    }
}

/// The verdict over `samples` (in time order), by the rule above.
pub fn judge(samples: &[Sample], threshold_percent: f64) -> RssReport {
    let mut report = RssReport {
        sampled: true,
        threshold_percent,
        verdict: "too few samples",
        rule: rule(threshold_percent),
        start_kib: samples.first().map(|s| s.rss_kib),
        end_kib: samples.last().map(|s| s.rss_kib),
        max_kib: samples.iter().map(|s| s.rss_kib).max(),
        ..RssReport::default()
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return report;
    };
    let span = last.seconds - first.seconds;
    let mean = |keep: &dyn Fn(&Sample) -> bool| -> Option<f64> {
        let kept: Vec<u64> = samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.rss_kib)
            .collect();
        (!kept.is_empty()).then(|| kept.iter().sum::<u64>() as f64 / kept.len() as f64)
    };
    let first_third = mean(&|s| s.seconds <= first.seconds + span / 3.0);
    let last_third = mean(&|s| s.seconds >= last.seconds - span / 3.0);
    report.first_third_mean_kib = first_third;
    report.last_third_mean_kib = last_third;
    // At least three samples, so the thirds are not the same one sample.
    if samples.len() < 3 || span <= 0.0 {
        return report;
    }
    if let (Some(a), Some(b)) = (first_third, last_third) {
        let growth = (b / a.max(1.0) - 1.0) * 100.0;
        report.growth_percent = Some(growth);
        report.verdict = if growth < threshold_percent {
            "flat"
        } else {
            "growing"
        };
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(kib: &[u64]) -> Vec<Sample> {
        kib.iter()
            .enumerate()
            .map(|(i, &rss_kib)| Sample {
                seconds: i as f64 * 10.0,
                rss_kib,
            })
            .collect()
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tboxoffice\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(51_234));
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn a_plateau_is_flat_and_a_climb_is_growing() {
        let plateau = judge(&samples(&[100, 104, 103, 105, 104, 106, 105]), 10.0);
        assert_eq!(plateau.verdict, "flat");
        assert_eq!(plateau.start_kib, Some(100));
        assert_eq!(plateau.end_kib, Some(105));
        assert_eq!(plateau.max_kib, Some(106));
        let climb = judge(&samples(&[100, 105, 110, 115, 120, 125, 130]), 10.0);
        assert_eq!(climb.verdict, "growing");
        // First third: 0, 10, 20 s → 105; last third: 40, 50, 60 s → 125.
        let growth = climb.growth_percent.unwrap();
        assert!(
            (growth - 100.0 * (125.0 / 105.0 - 1.0)).abs() < 1e-9,
            "{growth}"
        );
    }

    #[test]
    fn two_samples_are_too_few_to_judge() {
        assert_eq!(
            judge(&samples(&[100, 300]), 10.0).verdict,
            "too few samples"
        );
        assert_eq!(judge(&[], 10.0).verdict, "too few samples");
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(read_kib(std::process::id()).unwrap() > 0);
    }
}
