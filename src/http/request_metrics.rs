//! Per-request counters and latency histograms, by method, route template and status.
//!
//! Registering a labelled metric builds its key (label strings, a hash) each time; this keeps
//! the handles, so a request only looks up its route and records. Labels stay bounded whatever
//! a client sends: routes are the router's templates (one `unmatched` for the rest), methods the
//! standard ones (one `other`), statuses the three-digit codes.

use std::sync::OnceLock;

use axum::http::Method;
use dashmap::DashMap;
use metrics::{Counter, Histogram};

const METHODS: [&str; 8] = [
    "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "other",
];
const UNMATCHED: &str = "unmatched";

#[derive(Default)]
pub struct RequestMetrics {
    routes: DashMap<Box<str>, RouteMetrics>,
}

#[derive(Default)]
struct RouteMetrics {
    by_method: [MethodMetrics; METHODS.len()],
}

#[derive(Default)]
struct MethodMetrics {
    duration: OnceLock<Histogram>,
    by_status: DashMap<u16, Counter>,
}

fn method_index(method: &Method) -> usize {
    let name = method.as_str();
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|known| *known == name)
        .unwrap_or(METHODS.len() - 1)
}

impl RequestMetrics {
    /// Counts one request and records how long it took. `route` is the matched template.
    pub fn record(&self, method: &Method, route: Option<&str>, status: u16, seconds: f64) {
        let route = route.unwrap_or(UNMATCHED);
        let method = method_index(method);
        if let Some(known) = self.routes.get(route) {
            known.by_method[method].record(METHODS[method], route, status, seconds);
            return;
        }
        let entry = self.routes.entry(route.into()).or_default();
        entry.by_method[method].record(METHODS[method], route, status, seconds);
    }
}

impl MethodMetrics {
    fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        self.duration
            .get_or_init(|| {
                metrics::histogram!(
                    "boxoffice_http_request_duration_seconds",
                    "method" => method,
                    "route" => route.to_owned()
                )
            })
            .record(seconds);
        if let Some(counter) = self.by_status.get(&status) {
            counter.increment(1);
            return;
        }
        self.by_status
            .entry(status)
            .or_insert_with(|| {
                metrics::counter!(
                    "boxoffice_http_requests_total",
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::DELETE)], "DELETE");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHODS[method_index(&invented)], "other");
        let metrics = RequestMetrics::default();
        for name in ["BREW", "STEEP", "POUR"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            metrics.record(&method, None, 404, 0.001);
        }
        assert_eq!(metrics.routes.len(), 1);
        let unmatched = metrics.routes.get(UNMATCHED).unwrap();
        assert_eq!(unmatched.by_method[METHODS.len() - 1].by_status.len(), 1);
    }
}
