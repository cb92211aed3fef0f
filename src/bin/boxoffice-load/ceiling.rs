//! `ceiling`: `GET /healthz` — a request that does no work — on every connection as fast as
//! the server answers. Its requests per second are the HTTP ceiling this client and this machine
//! reach; compare every other mode's figures against it.

use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::task::JoinSet;

use crate::api::{self, Fail};
use crate::{Context, ModeRun};

pub async fn run(ctx: &Context) -> anyhow::Result<ModeRun> {
    let client = &ctx.client;
    let started = client.begin_measured(ctx.duration(), ctx.max_requests());
    let work = {
        let client = client.clone();
        let connections = ctx.cli.connections;
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for _ in 0..connections {
                let client = client.clone();
                tasks.spawn(async move {
                    loop {
                        match api::health(&client).await {
                            Err(Fail::Stopped) => break,
                            Err(Fail::NoResponse(_)) if client.halted() => break,
                            _ => {}
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let status = {
        let client = client.clone();
        move || {
            let requests = client.stats().requests.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            (
                requests,
                format!("requests · {:.0} req/s", requests as f64 / elapsed),
            )
        }
    };
    let length = ctx.max_requests();
    ctx.display
        .run("ceiling", length, status, ctx.bounded(work))
        .await;
    let measured_seconds = started.elapsed().as_secs_f64();
    client.end_measured();
    let requests = client.stats().requests.load(Ordering::Relaxed);
    Ok(ModeRun {
        setup_seconds: 0.0,
        measured_seconds,
        outcome: json!({
            "endpoint": api::Endpoint::Health.label(),
            "requests": requests,
            "requests_per_second": requests as f64 / measured_seconds.max(1e-9),
        }),
        records: Vec::new(),
        dates: Vec::new(),
        auditor: None,
        check_holds: false,
        rss: None,
    })
}
