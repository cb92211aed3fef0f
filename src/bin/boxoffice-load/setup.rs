//! The unmeasured setup phase: unique usernames for the run, concurrent sign-ups (slow by
//! design: argon2), and for the modes that want them, buyers signed in and admitted up front.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::task::JoinSet;

use crate::api::{self, Admission, Fail};
use crate::client::Client;
use crate::progress::Display;

pub const PASSWORD: &str = "boxoffice-load-password";

/// Names of one run: `lg<8 hex>_<n>`, unique across runs against the same server.
#[derive(Clone)]
pub struct Names {
    run: String,
}

impl Names {
    pub fn new(run: u32) -> Self {
        Self {
            run: format!("{run:08x}"),
        }
    }
    pub fn run(&self) -> &str {
        &self.run
    }
    pub fn buyer(&self, index: usize) -> String {
        format!("lg{}_{index}", self.run)
    }
    pub fn auditor(&self) -> String {
        format!("lg{}_audit", self.run)
    }
}

/// A signed-in user with an active queue token, ready for the measured phase.
pub struct Admitted {
    pub index: usize,
    pub session: String,
    pub token: String,
}

/// Signs up `buyers` buyers plus the auditor, all at once (the pool bounds the concurrency).
pub async fn sign_up_all(
    client: &Client,
    display: Display,
    names: &Names,
    buyers: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut usernames: Vec<String> = (0..buyers).map(|i| names.buyer(i)).collect();
    usernames.push(names.auditor());
    let total = usernames.len() as u64;
    for username in usernames {
        let (client, done) = (client.clone(), done.clone());
        tasks.spawn(async move {
            let outcome = api::sign_up(&client, &username, PASSWORD).await;
            done.fetch_add(1, Ordering::Relaxed);
            outcome
        });
    }
    let status = {
        let done = done.clone();
        move || {
            let n = done.load(Ordering::Relaxed);
            (n, "signing up (argon2; not measured)".to_owned())
        }
    };
    let all = async {
        let mut first_failure = None;
        let mut failures = 0u64;
        while let Some(joined) = tasks.join_next().await {
            if let Err(fail) = joined.context("a sign-up task panicked")? {
                failures += 1;
                first_failure.get_or_insert(fail);
            }
        }
        anyhow::Ok((failures, first_failure))
    };
    let outcome = display
        .run("sign-up", total, status, tokio::time::timeout(timeout, all))
        .await;
    let Ok(outcome) = outcome else {
        bail!(
            "signing up {total} users took longer than --setup-timeout ({} s): \
             make hashing cheap on the server for load runs (auth.argon2_memory_kib, \
             auth.argon2_iterations) or use fewer --buyers",
            timeout.as_secs()
        );
    };
    let (failures, first) = outcome?;
    if let Some(fail) = first {
        let hint = if fail.is(429, "rate_limited") {
            "; the server limits sign-ups per IP: set limits.auth_attempts_per_minute_per_ip = 0 for load runs"
        } else {
            ""
        };
        bail!("{failures} of {total} sign-ups failed, the first with {fail}{hint}");
    }
    Ok(())
}

/// Signs in the buyers `0..count` and admits each through the waiting room (bounded by
/// `max_wait`). Buyers not admitted in time leave the queue and sit the run out.
pub async fn sign_in_and_admit(
    client: &Client,
    display: Display,
    names: &Names,
    count: usize,
    max_wait: Duration,
) -> anyhow::Result<Vec<Admitted>> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let (client, done) = (client.clone(), done.clone());
        let username = names.buyer(index);
        tasks.spawn(async move {
            let outcome = admit_one(&client, &username, max_wait).await;
            done.fetch_add(1, Ordering::Relaxed);
            outcome.map(|(session, token)| Admitted {
                index,
                session,
                token,
            })
        });
    }
    let status = move || {
        (
            done.load(Ordering::Relaxed),
            "signing in, admitting (not measured)".to_owned(),
        )
    };
    let admitted = display
        .run("admit", count as u64, status, async {
            let mut admitted = Vec::with_capacity(count);
            let mut first_failure = None;
            while let Some(joined) = tasks.join_next().await {
                match joined.context("an admission task panicked")? {
                    Ok(buyer) => admitted.push(buyer),
                    Err(why) => {
                        first_failure.get_or_insert(why);
                    }
                }
            }
            anyhow::Ok((admitted, first_failure))
        })
        .await?;
    let (mut admitted, first_failure) = admitted;
    if admitted.is_empty() {
        bail!(
            "no buyer was admitted: {}",
            first_failure.unwrap_or_else(|| "no buyers".to_owned())
        );
    }
    if let Some(why) = first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers were not admitted in {} s and sit out \
             (first: {why}); raise queue.max_active / queue.admit_per_second for load runs",
            count - admitted.len(),
            max_wait.as_secs()
        );
    }
    admitted.sort_by_key(|a| a.index);
    Ok(admitted)
}

/// A signed-in user, not yet in the waiting room.
pub struct SignedIn {
    pub index: usize,
    pub session: String,
}

/// Signs in the buyers `0..count` (the pool bounds the concurrency). Buyers whose sign-in
/// fails sit the run out; none signed in is an error.
pub async fn sign_in_all(
    client: &Client,
    display: Display,
    names: &Names,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<SignedIn>> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let (client, done) = (client.clone(), done.clone());
        let username = names.buyer(index);
        tasks.spawn(async move {
            let outcome = api::sign_in(&client, &username, PASSWORD, None).await;
            done.fetch_add(1, Ordering::Relaxed);
            outcome.map(|session| SignedIn { index, session })
        });
    }
    let status = move || {
        (
            done.load(Ordering::Relaxed),
            "signing in (argon2; not measured)".to_owned(),
        )
    };
    let all = async {
        let mut signed_in = Vec::with_capacity(count);
        let mut first_failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined.context("a sign-in task panicked")? {
                Ok(buyer) => signed_in.push(buyer),
                Err(fail) => {
                    first_failure.get_or_insert(fail);
                }
            }
        }
        anyhow::Ok((signed_in, first_failure))
    };
    let Ok(outcome) = display
        .run(
            "sign-in",
            count as u64,
            status,
            tokio::time::timeout(timeout, all),
        )
        .await
    else {
        bail!(
            "signing in {count} users took longer than --setup-timeout ({} s)",
            timeout.as_secs()
        );
    };
    let (mut signed_in, first_failure) = outcome?;
    if signed_in.is_empty() {
        bail!(
            "no buyer could sign in: {}",
            first_failure.map_or_else(|| "no buyers".to_owned(), |f| f.to_string())
        );
    }
    if let Some(fail) = first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers could not sign in and sit out (first: {fail})",
            count - signed_in.len()
        );
    }
    signed_in.sort_by_key(|b| b.index);
    Ok(signed_in)
}

/// Signs `username` in and admits it; returns `(session, active queue token)`.
pub async fn admit_one(
    client: &Client,
    username: &str,
    max_wait: Duration,
) -> Result<(String, String), String> {
    let session = api::sign_in(client, username, PASSWORD, None)
        .await
        .map_err(|fail| format!("sign-in: {fail}"))?;
    let token = admit_session(client, &session, max_wait).await?;
    Ok((session, token))
}

/// Admits an already signed-in user; leaves the queue again when that does not work out.
pub async fn admit_session(
    client: &Client,
    session: &str,
    max_wait: Duration,
) -> Result<String, String> {
    match api::admit(client, session, max_wait, || false).await {
        Admission::Active(token) => Ok(token),
        Admission::GaveUp(token) => {
            if let Some(token) = token {
                let _ = api::leave_queue(client, session, &token).await;
            }
            Err(format!("not admitted within {} s", max_wait.as_secs()))
        }
        Admission::Failed(token, fail) => {
            if let Some(token) = token {
                let _ = api::leave_queue(client, session, &token).await;
            }
            Err(format!("queue: {fail}"))
        }
    }
}

/// A concert with one date of `seats` seats at `price` won a seat; returns the date id.
pub async fn concert_with_date(
    client: &Client,
    admin: &str,
    names: &Names,
    seats: u32,
    price: u64,
) -> anyhow::Result<(String, String)> {
    let concert = api::create_concert(client, admin, &format!("load run {}", names.run()))
        .await
        .map_err(admin_failure)?;
    let date = api::create_date(client, admin, &concert, seats, price)
        .await
        .map_err(admin_failure)?;
    Ok((concert, date))
}

pub fn admin_failure(fail: Fail) -> anyhow::Error {
    match fail {
        Fail::Refused { status: 401, .. } => {
            anyhow::anyhow!(
                "the admin API refused --admin-token (401); pass the server's admin.token"
            )
        }
        Fail::Refused { status: 404, .. } => anyhow::anyhow!(
            "the admin API answered 404: the server's admin.token is empty, which disables it"
        ),
        other => anyhow::anyhow!("admin API: {other}"),
    }
}
