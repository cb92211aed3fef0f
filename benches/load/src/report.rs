//! The report: one serialisable value, printed as a table for people or as JSON for machines.

use serde::Serialize;
use serde_json::Value;

use crate::audit::Audit;
use crate::rss::RssReport;
use crate::siege::{RunReport, SiegeReport};
use crate::stats::MeasuredSummary;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub mode: &'static str,
    pub url: String,
    /// Every invariant held and every check of the mode passed (always true for `ceiling`,
    /// which checks none).
    pub ok: bool,
    pub settings: Value,
    pub setup: Phase,
    pub measured: MeasuredSummary,
    /// Why the measured phase ended: `finished`, `duration` or `max_requests`.
    pub stopped_by: &'static str,
    /// The mode's own figures (e.g. `sold_out_seconds`, `holds_per_second`).
    pub outcome: Value,
    pub invariants: Option<Audit>,
    /// The mode's own checks of what the server answered (`polls`: positions exact).
    pub checks: Vec<Check>,
    pub audit: Phase,
    /// Queue tokens handed back after the audit (the run's leftovers), so the next run finds
    /// the waiting room free.
    pub queue_tokens_left: u64,
    /// soak: the server's RSS during the measured phase, every sample, and the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<RssReport>,
    /// siege: the baseline and the run under attack side by side, and the goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siege: Option<SiegeReport>,
}

/// A check a mode makes of the answers of its measured phase; one that fails fails the run.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// The first few answers that failed it.
    pub examples: Vec<String>,
}

/// An unmeasured phase: how long it took and how many requests it sent.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub seconds: f64,
    pub requests: u64,
}

pub fn print_table(report: &Report) {
    let m = &report.measured;
    println!("boxoffice-load {} against {}", report.mode, report.url);
    println!("  settings  {}", compact(&report.settings));
    println!(
        "  setup     {:.2} s, {} requests (not measured)",
        report.setup.seconds, report.setup.requests
    );
    println!(
        "  measured  {} requests in {:.2} s = {:.0} req/s (stopped: {})",
        m.requests, m.seconds, m.requests_per_second, report.stopped_by
    );
    println!("  outcome   {}", compact(&report.outcome));
    print_rates(&report.outcome);
    for line in opening_lines(&report.outcome) {
        println!("{line}");
    }
    if let Some(rss) = &report.rss {
        print_rss(rss);
    }
    if let Some(siege) = &report.siege {
        print_siege(siege);
    }
    let w = &m.connection_wait_ms;
    println!(
        "  waits     for a free connection (not in the latencies below): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        w.p50, w.p99, w.max
    );
    println!();
    println!(
        "{:<52} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "endpoint", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for e in &m.endpoints {
        let l = &e.latency_ms;
        println!(
            "{:<52} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            e.endpoint, e.requests, e.requests_per_second, l.p50, l.p90, l.p99, l.p99_9, l.max
        );
    }
    println!();
    if m.errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors (status 0: no answer)");
        for e in &m.errors {
            println!(
                "  {:<50} {:>3} {:<26} {:>9}",
                e.endpoint, e.status, e.code, e.count
            );
        }
    }
    println!();
    for check in &report.checks {
        println!(
            "check: {} {}: {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        );
        for example in &check.examples {
            println!("  - {example}");
        }
    }
    match &report.invariants {
        None => println!("invariants: none checked in this mode"),
        Some(a) => {
            println!("invariants: {}", if a.ok { "OK" } else { "FAILED" });
            let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
            println!(
                "  {} no seat sold twice: {} oversold; {} seats paid on the server, {} recorded by buyers",
                mark(a.oversold_seats == 0),
                a.oversold_seats,
                a.paid_seats_server,
                a.paid_seats_recorded
            );
            println!(
                "  {} seat listing agrees with payments: {} sold, {} held, {} available of {}",
                mark(a.listing_matches_payments),
                a.listing_sold,
                a.listing_held,
                a.listing_available,
                a.seats_total
            );
            if let Some(holds) = a.listing_matches_holds {
                println!(
                    "  {} seat listing agrees with live holds ({} seats in two holds)",
                    mark(holds && a.double_held_seats == 0),
                    a.double_held_seats
                );
            }
            println!(
                "  {} money conserved: top-ups {} (+{} unknown) = balances {} + paid {}",
                mark(a.money_conserved),
                a.topups,
                a.topups_uncertain,
                a.balances,
                a.paid_amount_server
            );
            println!(
                "  {} audit complete: {} buyers audited, {} failed audit requests ({:.2} s, {} requests)",
                mark(a.audit_errors == 0),
                a.buyers_audited,
                a.audit_errors,
                report.audit.seconds,
                report.audit.requests
            );
            for failure in &a.failures {
                println!("  - {failure}");
            }
            for seat in &a.mismatched_seats {
                println!("    {seat}");
            }
        }
    }
}

fn print_siege(siege: &SiegeReport) {
    println!();
    let kinds: Vec<String> = siege
        .per_kind
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    println!(
        "  siege     {} attackers from {} ({})",
        siege.attackers,
        siege.source_addresses,
        kinds.join(", ")
    );
    println!(
        "            the listed user: {} reservations, {} balance-history entries",
        siege.listed_reservations, siege.listed_history_entries
    );
    let files = &siege.open_files;
    let limit = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
    println!(
        "  files     open-files limit {} (was {}, hard {}), the run needs up to {}{}",
        limit(files.soft),
        limit(files.soft_before),
        limit(files.hard),
        files.needed,
        files
            .problem
            .as_ref()
            .map_or(String::new(), |p| format!(" — {p}"))
    );
    let (base, attacked) = (&siege.baseline, &siege.under_attack);
    let row = |name: &str, cell: &dyn Fn(&RunReport) -> String| {
        println!("  {name:<40} {:>28} {:>28}", cell(base), cell(attacked));
    };
    println!();
    row("", &|r| r.label.to_owned());
    row("seconds", &|r| format!("{:.1}", r.seconds));
    row("attacking connections", &|r| r.attackers.to_string());
    row("  open when the buyers came / min / end", &|r| {
        r.open_attacking_connections
            .as_ref()
            .map_or("-".to_owned(), |o| {
                format!("{} / {} / {}", o.at_start, o.min, o.at_end)
            })
    });
    row("buyers who paid", &|r| {
        format!("{}/{} ({:.2}%)", r.buyers_paid, r.buyers, r.success_percent)
    });
    row("buyers' requests", &|r| r.requests.to_string());
    row("  p50 / p99 / max ms", &|r| {
        let l = &r.latency_ms;
        format!("{:.1} / {:.1} / {:.1}", l.p50, l.p99, l.max)
    });
    row("  no answer / 5xx", &|r| {
        format!("{} / {}", r.no_response, r.status_5xx)
    });
    row("/healthz 200 within 1 s", &|r| {
        let h = &r.healthz;
        format!("{}/{} ({:.2}%)", h.ok, h.sent, 100.0 * h.ok_fraction)
    });
    row("  p99 / max ms of those", &|r| {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        format!("{} / {}", ms(r.healthz.p99_ms), ms(r.healthz.max_ms))
    });
    row("generator's own lag p50 / p99 / max ms", &|r| {
        let l = &r.generator_lag_ms;
        format!("{:.1} / {:.1} / {:.1}", l.p50, l.p99, l.max)
    });
    row("server RSS start / peak MiB", &|r| match &r.rss {
        None => "not sampled".to_owned(),
        Some(rss) => {
            let mib = |kib: Option<u64>| {
                kib.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
            };
            format!("{} / {}", mib(rss.start_kib), mib(rss.peak_kib))
        }
    });
    for run in [base, attacked] {
        for (why, n) in &run.failures {
            println!("  {} did not pay: {n} × {why}", run.label);
        }
        if let Some(rss) = &run.rss {
            if let Some(error) = &rss.error {
                println!("  {}: RSS sampling stopped early: {error}", run.label);
            }
        }
        for (why, n) in &run.healthz.failures {
            println!("  {} /healthz failed: {n} × {why}", run.label);
        }
    }
    if let Some(ramp) = &attacked.ramp {
        println!(
            "  ramp      {} of {} attackers connected in {:.1} s",
            ramp.connected, attacked.attackers, ramp.seconds
        );
    }
    if !attacked.attack.is_empty() {
        println!();
        println!(
            "  {:<20} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>16}",
            "attackers",
            "count",
            "connected",
            "connects",
            "failed",
            "closed by",
            "answered",
            "held p50/max s"
        );
        for k in &attacked.attack {
            let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            println!(
                "  {:<20} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>16}",
                k.kind,
                k.attackers,
                k.connected_once,
                k.connects,
                k.connect_failures,
                k.closed_by_server,
                k.answered_before_close,
                format!("{}/{}", s(k.held_seconds_p50), s(k.held_seconds_max))
            );
            if let Some(error) = &k.first_connect_error {
                println!("    first connect failure: {error}");
            }
        }
    }
    let goal = &siege.goal;
    println!();
    println!(
        "  goal      under attack ({} attacking connections): {}",
        goal.attackers_goal,
        if goal.met { "MET" } else { "NOT MET" }
    );
    for line in &goal.lines {
        println!(
            "    {} {:<42} {:<32} goal {}",
            if line.pass { "PASS" } else { "FAIL" },
            line.name,
            line.measured,
            line.target
        );
    }
    for note in &goal.notes {
        println!("    note: {note}");
    }
    println!("  (the per-endpoint figures below are the run under attack's)");
    println!();
}

/// Samples printed per line of the table.
const SAMPLES_PER_LINE: usize = 8;

fn print_rss(rss: &RssReport) {
    if !rss.sampled {
        println!("  rss       not sampled: pass --server-pid PID of the server");
        return;
    }
    let mib =
        |kib: Option<u64>| kib.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let mean = |kib: Option<f64>| kib.map_or("-".to_owned(), |k| format!("{:.1} MiB", k / 1024.0));
    println!(
        "  rss       pid {}: start {}, end {}, max {}; first third mean {}, last third mean {} ({})",
        rss.pid.map_or("-".to_owned(), |p| p.to_string()),
        mib(rss.start_kib),
        mib(rss.end_kib),
        mib(rss.max_kib),
        mean(rss.first_third_mean_kib),
        mean(rss.last_third_mean_kib),
        rss.growth_percent
            .map_or("growth -".to_owned(), |g| format!("{g:+.1}%")),
    );
    println!("  verdict   {} (rule: {})", rss.verdict, rss.rule);
    if let Some(error) = &rss.error {
        println!("  sampling  stopped early: {error}");
    }
    for (n, line) in rss.samples.chunks(SAMPLES_PER_LINE).enumerate() {
        let cells: Vec<String> = line
            .iter()
            .map(|s| format!("{:>4.0}s {:>6.1}", s.seconds, s.rss_kib as f64 / 1024.0))
            .collect();
        let label = if n == 0 { "samples" } else { "" };
        println!("  {label:<9} {} (MiB)", cells.join("  "));
    }
}

/// `key value, key value` of a JSON object's plain fields, numbers rounded for reading. Arrays
/// and objects (the per-second series, the fill, the first slice) have lines of their own.
fn compact(value: &Value) -> String {
    let Some(object) = value.as_object() else {
        return value.to_string();
    };
    object
        .iter()
        .filter(|(_, value)| !value.is_array() && !value.is_object())
        .map(|(key, value)| match value {
            Value::Number(n) if n.is_f64() => format!("{key} {:.2}", n.as_f64().unwrap_or(0.0)),
            Value::String(s) => format!("{key} {s}"),
            other => format!("{key} {other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines of the rate over time (`holds`, `payments`) and of a fill run (`holds
/// --fill-holds`), from the outcome.
fn print_rates(outcome: &Value) {
    if let Some(empty) = outcome.get("empty_slice") {
        println!("  empty     {}", compact(empty));
        for line in rate_lines(empty, "(empty server)") {
            println!("  rate      {line}");
        }
    }
    let label = if outcome.get("empty_slice").is_some() {
        "(after the fill)"
    } else {
        ""
    };
    for line in rate_lines(outcome, label) {
        println!("  rate      {line}");
    }
    if let Some(fill) = outcome.get("fill") {
        println!("  fill      {}", fill_line(fill));
    }
    if let Some(line) = flat_line(outcome) {
        println!("  flat      {line}");
    }
}

/// One line per `<what>_per_second_summary` of `outcome`.
fn rate_lines(outcome: &Value, label: &str) -> Vec<String> {
    let Some(object) = outcome.as_object() else {
        return Vec::new();
    };
    let label = if label.is_empty() {
        String::new()
    } else {
        format!(" {label}")
    };
    object
        .iter()
        .filter_map(|(key, summary)| {
            let what = key.strip_suffix("_per_second_summary")?;
            Some(match summary {
                Value::Null => format!("{what}/s by second{label}: under a second, no summary"),
                summary => summary_line(what, &label, summary),
            })
        })
        .collect()
}

fn summary_line(what: &str, label: &str, s: &Value) -> String {
    let n = |key: &str| s[key].as_f64().unwrap_or(f64::NAN);
    let change = s["last_vs_first_percent"]
        .as_f64()
        .map_or("-".to_owned(), |p| format!("{p:+.1}%"));
    format!(
        "{what}/s by second{label}: min {:.0}, median {:.0}, max {:.0} over {} s; first {q} s \
         {:.0}, last {q} s {:.0} ({change})",
        n("min"),
        n("median"),
        n("max"),
        s["seconds"],
        n("first_quarter_mean"),
        n("last_quarter_mean"),
        q = s["quarter_seconds"],
    )
}

/// `opening`: the waits and the room's own figures, from the outcome.
fn opening_lines(outcome: &Value) -> Vec<String> {
    let (Some(wait), Some(seen)) = (
        outcome.get("wait_seconds"),
        outcome.get("seen_wait_seconds"),
    ) else {
        return Vec::new();
    };
    let waits = |w: &Value| {
        let s = |key: &str| w[key].as_f64().unwrap_or(f64::NAN);
        format!(
            "p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s",
            s("p50"),
            s("p90"),
            s("p99"),
            s("max")
        )
    };
    let mut lines = vec![
        format!(
            "  in line   opening to admission (the server's stamp): {} over {} buyers",
            waits(wait),
            wait["count"]
        ),
        format!(
            "            opening to the answer that told the buyer: {}",
            waits(seen)
        ),
    ];
    let room = &outcome["room"];
    lines.push(match room["error"].as_str() {
        Some(error) => format!("  room      the server's figures could not be read: {error}"),
        None => format!(
            "  room      the server's: {} admitted, order_violations {}, wait p50 {:.1} s, p99 \
             {:.1} s; at the end {} in the pre-queue, {} waiting, {} active",
            room["admitted_total"],
            room["order_violations"],
            room["wait_seconds_p50"].as_f64().unwrap_or(f64::NAN),
            room["wait_seconds_p99"].as_f64().unwrap_or(f64::NAN),
            room["pre_queue"],
            room["waiting"],
            room["active"],
        ),
    });
    lines
}

fn fill_line(fill: &Value) -> String {
    let rss = &fill["rss"];
    let rss = if rss["sampled"] == Value::Bool(true) {
        let mib = |key: &str| rss[key].as_f64().unwrap_or(f64::NAN) / 1024.0;
        format!(
            "; server RSS {:.1} -> {:.1} MiB = {} bytes per live hold added",
            mib("before_kib"),
            mib("after_kib"),
            rss["bytes_per_live_hold"]
                .as_f64()
                .map_or("-".to_owned(), |b| format!("{b:.1}"))
        )
    } else {
        match rss["error"].as_str() {
            Some(error) => format!("; RSS not sampled: {error}"),
            None => "; RSS not sampled (--server-pid)".to_owned(),
        }
    };
    format!(
        "{} holds in {:.1} s ({:.0}/s, not measured, no idempotency keys), {} conflicts; live \
         holds on the server {} -> {} (target {}){rss}",
        fill["holds"],
        fill["seconds"].as_f64().unwrap_or(f64::NAN),
        fill["holds_per_second"].as_f64().unwrap_or(f64::NAN),
        fill["conflicts"],
        fill["live_before"],
        fill["live_after"],
        fill["fill_holds"],
    )
}

fn flat_line(outcome: &Value) -> Option<String> {
    let ratio = outcome.get("flat_ratio")?;
    let number = |key: &str, digits: usize| {
        outcome[key]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.digits$}"))
    };
    let verdict = match outcome["flat"].as_bool() {
        Some(true) => "FLAT",
        Some(false) => "NOT FLAT",
        None => "not judged",
    };
    Some(format!(
        "{} holds/s on the empty server, {} after the fill: ratio {} (of the ratios to the \
         ceiling: {}); {verdict} — {}",
        number("rate_empty", 0),
        number("rate_after_fill", 0),
        ratio.as_f64().map_or("-".to_owned(), |r| format!("{r:.3}")),
        number("flat_ratio_against_ceiling", 3),
        outcome["flat_rule"].as_str().unwrap_or("-"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_outcome_line_leaves_the_series_and_nested_figures_to_lines_of_their_own() {
        let outcome = json!({"holds": 10, "rate": 2.5, "holds_per_second_series": [1, 2],
            "fill": {"holds": 3}});
        assert_eq!(compact(&outcome), "holds 10, rate 2.50");
    }

    #[test]
    fn an_opening_prints_its_waits_and_the_rooms_figures() {
        let waits = json!({"count": 3, "p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0});
        let outcome = json!({"wait_seconds": waits, "seen_wait_seconds": waits,
            "room": {"admitted_total": 3, "order_violations": 0, "wait_seconds_p50": 1.0,
                "wait_seconds_p99": 3.0, "pre_queue": 0, "waiting": 0, "active": 1}});
        let lines = opening_lines(&outcome);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("p50 1.0 s, p90 2.0 s, p99 3.0 s, max 4.0 s over 3 buyers"));
        assert!(
            lines[2].contains("3 admitted, order_violations 0"),
            "{lines:?}"
        );
        assert!(opening_lines(&json!({"holds": 1})).is_empty());
    }

    #[test]
    fn a_summary_prints_its_rates_and_the_change_between_the_quarters() {
        let summary = crate::series::Summary::of(&[100, 120, 90, 110, 80, 96, 70, 60]);
        let outcome = json!({"holds_per_second_summary": summary});
        assert_eq!(
            rate_lines(&outcome, "(after the fill)"),
            vec![
                "holds/s by second (after the fill): min 60, median 93, max 120 over 8 s; first \
                 2 s 110, last 2 s 65 (-40.9%)"
                    .to_owned()
            ]
        );
        let none = json!({"payments_per_second_summary": null});
        assert_eq!(
            rate_lines(&none, ""),
            vec!["payments/s by second: under a second, no summary".to_owned()]
        );
    }
}
