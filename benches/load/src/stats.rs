//! What the measured phase saw: per endpoint a request count and an HDR latency histogram,
//! errors counted by endpoint, HTTP status and API error `code`.
//!
//! One histogram per endpoint behind a short lock: a record is a few nanoseconds, far below
//! the cost of the request it times, and per-connection histograms would cost megabytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::api::Endpoint;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;
const LATENCY_SIGFIG: u8 = 3;

/// The pseudo-status of a request that got no HTTP answer (refused, reset, timed out).
pub const NO_RESPONSE: u16 = 0;

pub struct Stats {
    endpoints: Vec<EndpointStats>,
    errors: Mutex<BTreeMap<(Endpoint, u16, String), u64>>,
    /// How long requests waited for a free connection (all endpoints).
    pool_wait_us: Mutex<Histogram<u64>>,
    pub requests: AtomicU64,
    pub errors_total: AtomicU64,
}

struct EndpointStats {
    requests: AtomicU64,
    ok: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Self {
        let endpoints = Endpoint::ALL
            .iter()
            .map(|_| EndpointStats {
                requests: AtomicU64::new(0),
                ok: AtomicU64::new(0),
                latency_us: Mutex::new(latency_histogram()),
            })
            .collect();
        Self {
            endpoints,
            errors: Mutex::new(BTreeMap::new()),
            pool_wait_us: Mutex::new(latency_histogram()),
            requests: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
        }
    }

    pub fn record_pool_wait(&self, wait_us: u64) {
        self.pool_wait_us.lock().saturating_record(wait_us.max(1));
    }

    /// One answered request (`status` ≥ 100) or one that got no answer (`NO_RESPONSE`).
    pub fn record(&self, endpoint: Endpoint, status: u16, code: Option<&str>, latency_us: u64) {
        let stats = &self.endpoints[endpoint as usize];
        self.requests.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if status != NO_RESPONSE {
            stats.latency_us.lock().saturating_record(latency_us.max(1));
        }
        if (200..300).contains(&status) {
            stats.ok.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        let code = code.unwrap_or("-").to_owned();
        *self
            .errors
            .lock()
            .entry((endpoint, status, code))
            .or_insert(0) += 1;
    }

    /// Forgets everything recorded, so the next measured phase is summarised on its own
    /// (`siege`: the run under attack after the baseline).
    pub fn reset(&self) {
        for stats in &self.endpoints {
            stats.requests.store(0, Ordering::Relaxed);
            stats.ok.store(0, Ordering::Relaxed);
            stats.latency_us.lock().reset();
        }
        self.errors.lock().clear();
        self.pool_wait_us.lock().reset();
        self.requests.store(0, Ordering::Relaxed);
        self.errors_total.store(0, Ordering::Relaxed);
    }

    /// The latencies of every answered request, whatever its endpoint.
    pub fn overall_latency(&self) -> LatencySummary {
        let mut all = latency_histogram();
        for stats in &self.endpoints {
            all.add(&*stats.latency_us.lock())
                .expect("histograms of the same bounds add up");
        }
        LatencySummary::of(&all)
    }

    /// Requests of the measured phase to `endpoint` so far, answered or not.
    pub fn endpoint_requests(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint as usize]
            .requests
            .load(Ordering::Relaxed)
    }

    /// The figures over a measured phase of `seconds`. An endpoint listed in `endpoint_seconds`
    /// had sub-phases of its own (the ceiling's slices around `holds`, or alternating with
    /// `polls`): its requests per second are over their time instead.
    pub fn summary(&self, seconds: f64, endpoint_seconds: &[(Endpoint, f64)]) -> MeasuredSummary {
        let seconds = seconds.max(1e-9);
        let endpoints: Vec<EndpointSummary> = Endpoint::ALL
            .iter()
            .zip(&self.endpoints)
            .filter(|(_, s)| s.requests.load(Ordering::Relaxed) > 0)
            .map(|(endpoint, s)| {
                let requests = s.requests.load(Ordering::Relaxed);
                let histogram = s.latency_us.lock();
                let own_seconds = endpoint_seconds
                    .iter()
                    .find(|(e, _)| e == endpoint)
                    .map_or(seconds, |(_, s)| s.max(1e-9));
                EndpointSummary {
                    endpoint: endpoint.label(),
                    requests,
                    ok: s.ok.load(Ordering::Relaxed),
                    requests_per_second: requests as f64 / own_seconds,
                    latency_ms: LatencySummary::of(&histogram),
                }
            })
            .collect();
        let errors: Vec<ErrorCount> = self
            .errors
            .lock()
            .iter()
            .map(|((endpoint, status, code), count)| ErrorCount {
                endpoint: endpoint.label(),
                status: *status,
                code: code.clone(),
                count: *count,
            })
            .collect();
        let requests = self.requests.load(Ordering::Relaxed);
        let count_where = |keep: fn(u16) -> bool| -> u64 {
            errors
                .iter()
                .filter(|e| keep(e.status))
                .map(|e| e.count)
                .sum()
        };
        MeasuredSummary {
            seconds,
            requests,
            requests_per_second: requests as f64 / seconds,
            status_5xx: count_where(|s| s >= 500),
            status_5xx_other_than_503: count_where(|s| s >= 500 && s != 503),
            no_response: count_where(|s| s == NO_RESPONSE),
            connection_wait_ms: LatencySummary::of(&self.pool_wait_us.lock()),
            endpoints,
            errors,
        }
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG).expect("valid histogram bounds")
}

#[derive(Debug, Serialize)]
pub struct MeasuredSummary {
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Answers with a 5xx status (503 `overloaded` included).
    pub status_5xx: u64,
    /// 5xx other than 503 `overloaded`: API.md promises none.
    pub status_5xx_other_than_503: u64,
    /// Requests that got no HTTP answer at all (connection refused or reset, timeout).
    pub no_response: u64,
    /// Time requests waited for a free connection before being sent; not part of the
    /// endpoints' latencies, which run from sending the request to the last byte of the answer.
    pub connection_wait_ms: LatencySummary,
    pub endpoints: Vec<EndpointSummary>,
    pub errors: Vec<ErrorCount>,
}

#[derive(Debug, Serialize)]
pub struct EndpointSummary {
    pub endpoint: &'static str,
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    pub requests_per_second: f64,
    pub latency_ms: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorCount {
    pub endpoint: &'static str,
    /// HTTP status; 0 when no answer came at all.
    pub status: u16,
    /// The problem+json `code`, `-` when the body had none, or `no_response` / `timeout`.
    pub code: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_per_endpoint_and_errors_by_status_and_code() {
        let stats = Stats::new();
        stats.record(Endpoint::Hold, 201, None, 1_000);
        stats.record(Endpoint::Hold, 409, Some("seat_unavailable"), 2_000);
        stats.record(Endpoint::Hold, 409, Some("seat_unavailable"), 3_000);
        stats.record(Endpoint::Pay, NO_RESPONSE, Some("timeout"), 9_000);
        let summary = stats.summary(2.0, &[]);
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.no_response, 1);
        assert_eq!(summary.status_5xx, 0);
        let hold = &summary.endpoints[0];
        assert_eq!(
            (hold.endpoint, hold.requests, hold.ok),
            (Endpoint::Hold.label(), 3, 1)
        );
        assert!((hold.requests_per_second - 1.5).abs() < 1e-9);
        assert!(hold.latency_ms.max >= 2.99 && hold.latency_ms.max <= 3.01);
        let timed = stats.summary(2.0, &[(Endpoint::Hold, 0.5)]);
        assert!((timed.endpoints[0].requests_per_second - 6.0).abs() < 1e-9);
        assert!((timed.requests_per_second - 2.0).abs() < 1e-9);
        assert_eq!(stats.endpoint_requests(Endpoint::Pay), 1);
        let seat = summary
            .errors
            .iter()
            .find(|e| e.code == "seat_unavailable")
            .unwrap();
        assert_eq!((seat.status, seat.count), (409, 2));
        // Every answered request, over all endpoints: 1, 2, 3 ms (the unanswered one is not timed).
        let overall = stats.overall_latency();
        assert!(overall.max >= 2.99 && overall.max <= 3.01, "{overall:?}");
        assert!(overall.p50 >= 1.99 && overall.p50 <= 2.01, "{overall:?}");
    }

    #[test]
    fn a_reset_forgets_every_request_and_error() {
        let stats = Stats::new();
        stats.record(Endpoint::Hold, 201, None, 1_000);
        stats.record(Endpoint::Pay, 503, Some("overloaded"), 9_000);
        stats.record_pool_wait(500);
        stats.reset();
        let summary = stats.summary(1.0, &[]);
        assert_eq!(summary.requests, 0);
        assert!(summary.endpoints.is_empty());
        assert!(summary.errors.is_empty());
        assert_eq!(summary.connection_wait_ms.max, 0.0);
        assert_eq!(stats.overall_latency().max, 0.0);
        stats.record(Endpoint::Pay, 201, None, 2_000);
        assert_eq!(stats.summary(1.0, &[]).requests, 1);
    }
}
