//! The unmeasured setup phase: unique usernames for the run, concurrent sign-ups (slow by
//! design: argon2), and for the modes that want them, buyers signed in and admitted up front.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
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
    /// The siege's user with long lists.
    pub fn listed(&self) -> String {
        format!("lg{}_listed", self.run)
    }
}

/// A signed-in user with an active queue token, ready for the measured phase.
pub struct Admitted {
    pub index: usize,
    pub session: String,
    pub token: String,
}

/// What a setup step over many users gave: the successes in user order, and how many failed
/// with which first failure.
pub struct Fanned<T, E> {
    pub done: Vec<T>,
    pub failures: u64,
    pub first_failure: Option<E>,
}

/// Runs `step` for each `(index, username)` at once (the client's pool bounds the
/// concurrency) under a progress bar; `None` when `timeout` passes first.
pub async fn fan_out<T, E, Fut>(
    display: Display,
    title: &'static str,
    doing: &'static str,
    users: Vec<(usize, String)>,
    timeout: Option<Duration>,
    step: impl Fn(usize, String) -> Fut,
) -> anyhow::Result<Option<Fanned<T, E>>>
where
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let total = users.len() as u64;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (index, username) in users {
        let (work, done) = (step(index, username), done.clone());
        tasks.spawn(async move {
            let outcome = work.await;
            done.fetch_add(1, Ordering::Relaxed);
            (index, outcome)
        });
    }
    let status = move || (done.load(Ordering::Relaxed), doing.to_owned());
    let all = async {
        let mut fanned = Fanned {
            done: Vec::new(),
            failures: 0,
            first_failure: None,
        };
        let mut ordered = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.with_context(|| format!("a {title} task panicked"))? {
                (index, Ok(value)) => ordered.push((index, value)),
                (_, Err(fail)) => {
                    fanned.failures += 1;
                    fanned.first_failure.get_or_insert(fail);
                }
            }
        }
        ordered.sort_by_key(|(index, _)| *index);
        fanned.done = ordered.into_iter().map(|(_, value)| value).collect();
        anyhow::Ok(fanned)
    };
    match timeout {
        Some(limit) => match display
            .run(title, total, status, tokio::time::timeout(limit, all))
            .await
        {
            Ok(fanned) => fanned.map(Some),
            Err(_) => Ok(None),
        },
        None => display.run(title, total, status, all).await.map(Some),
    }
}

fn buyers(names: &Names, count: usize) -> Vec<(usize, String)> {
    (0..count).map(|i| (i, names.buyer(i))).collect()
}

/// Signs up `buyers` buyers plus the auditor, all at once (the pool bounds the concurrency).
pub async fn sign_up_all(
    client: &Client,
    display: Display,
    names: &Names,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut users = buyers(names, count);
    users.push((count, names.auditor()));
    let total = users.len();
    let step = |_, username: String| {
        let client = client.clone();
        async move { api::sign_up(&client, &username, PASSWORD).await }
    };
    let doing = "signing up (argon2; not measured)";
    let Some(fanned) = fan_out(display, "sign-up", doing, users, Some(timeout), step).await? else {
        bail!(
            "signing up {total} users took longer than --setup-timeout ({} s): \
             make hashing cheap on the server for load runs (auth.argon2_memory_kib, \
             auth.argon2_iterations) or use fewer --buyers",
            timeout.as_secs()
        );
    };
    if let Some(fail) = fanned.first_failure {
        let hint = if fail.is(429, "rate_limited") {
            "; the server limits sign-ups per IP: set limits.auth_attempts_per_minute_per_ip = 0 for load runs"
        } else {
            ""
        };
        bail!(
            "{} of {total} sign-ups failed, the first with {fail}{hint}",
            fanned.failures
        );
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
    let step = |index, username: String| {
        let client = client.clone();
        async move {
            let (session, token) = admit_one(&client, &username, max_wait).await?;
            Ok::<_, String>(Admitted {
                index,
                session,
                token,
            })
        }
    };
    let doing = "signing in, admitting (not measured)";
    let Some(fanned) = fan_out(display, "admit", doing, buyers(names, count), None, step).await?
    else {
        unreachable!("no timeout was set");
    };
    if fanned.done.is_empty() {
        bail!(
            "no buyer was admitted: {}",
            fanned
                .first_failure
                .unwrap_or_else(|| "no buyers".to_owned())
        );
    }
    if let Some(why) = fanned.first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers were not admitted in {} s and sit out \
             (first: {why}); raise queue.max_active / queue.admit_per_second for load runs",
            fanned.failures,
            max_wait.as_secs()
        );
    }
    Ok(fanned.done)
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
    let step = |index, username: String| {
        let client = client.clone();
        async move {
            let session = api::sign_in(&client, &username, PASSWORD, None).await?;
            Ok::<_, Fail>(SignedIn { index, session })
        }
    };
    let doing = "signing in (argon2; not measured)";
    let users = buyers(names, count);
    let Some(fanned) = fan_out(display, "sign-in", doing, users, Some(timeout), step).await? else {
        bail!(
            "signing in {count} users took longer than --setup-timeout ({} s)",
            timeout.as_secs()
        );
    };
    if fanned.done.is_empty() {
        bail!(
            "no buyer could sign in: {}",
            fanned
                .first_failure
                .map_or_else(|| "no buyers".to_owned(), |f| f.to_string())
        );
    }
    if let Some(fail) = fanned.first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers could not sign in and sit out (first: {fail})",
            fanned.failures
        );
    }
    Ok(fanned.done)
}

/// A signed-in user with a queue token, and the status its token was issued with.
pub struct Queued {
    pub index: usize,
    pub session: String,
    pub status: api::QueueStatus,
}

/// Takes a queue token for each signed-in user, all at once (the pool bounds the concurrency);
/// returns them in user order, each with the status the server issued it with. Users whose
/// token could not be taken sit out; none queued is an error.
pub async fn take_queue_tokens(
    client: &Client,
    display: Display,
    signed_in: Vec<SignedIn>,
    timeout: Duration,
) -> anyhow::Result<Vec<Queued>> {
    let count = signed_in.len();
    let users = signed_in
        .into_iter()
        .map(|s| (s.index, s.session))
        .collect();
    let step = |index, session: String| {
        let client = client.clone();
        async move {
            let status = api::take_queue_token(&client, &session).await?;
            Ok::<_, Fail>(Queued {
                index,
                session,
                status,
            })
        }
    };
    let doing = "taking queue tokens (not measured)";
    let Some(fanned) = fan_out(display, "queue", doing, users, Some(timeout), step).await? else {
        bail!(
            "taking {count} queue tokens took longer than --setup-timeout ({} s)",
            timeout.as_secs()
        );
    };
    if fanned.done.is_empty() {
        bail!(
            "no buyer could take a queue token: {}",
            fanned
                .first_failure
                .map_or_else(|| "no buyers".to_owned(), |f| f.to_string())
        );
    }
    if let Some(fail) = fanned.first_failure {
        eprintln!(
            "boxoffice-load: {} of {count} buyers could not take a queue token and sit out (first: {fail})",
            fanned.failures
        );
    }
    Ok(fanned.done)
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
    let concert = new_concert(client, admin, names).await?;
    let date = api::create_date(client, admin, &concert, seats, price)
        .await
        .map_err(admin_failure)?;
    Ok((concert, date))
}

/// A concert with one date of `seats` seats laid out in sections of rows of varied lengths:
/// rows of 18 to 60 seats in a repeating pattern, sections of 100 rows (the last ones shorter),
/// priced from twice `price` in the front section down to half of it at the back.
pub async fn concert_with_varied_layout(
    client: &Client,
    admin: &str,
    names: &Names,
    seats: u32,
    price: u64,
) -> anyhow::Result<(String, String)> {
    let concert = new_concert(client, admin, names).await?;
    let date =
        api::create_date_with_sections(client, admin, &concert, &varied_sections(seats, price))
            .await
            .map_err(admin_failure)?;
    Ok((concert, date))
}

/// The run's concert, named after the run.
async fn new_concert(client: &Client, admin: &str, names: &Names) -> anyhow::Result<String> {
    api::create_concert(client, admin, &format!("load run {}", names.run()))
        .await
        .map_err(admin_failure)
}

/// Row lengths cycle through these, so rows of odd and even length, short and long, mix.
const ROW_LENGTHS: [u32; 12] = [18, 23, 27, 30, 34, 37, 41, 44, 48, 51, 55, 60];
const ROWS_PER_SECTION: usize = 100;

pub fn varied_sections(seats: u32, price: u64) -> Value {
    let mut rows = Vec::new();
    let mut left = seats;
    while left > 0 {
        let length = ROW_LENGTHS[rows.len() % ROW_LENGTHS.len()].min(left);
        rows.push(length);
        left -= length;
    }
    let sections: Vec<&[u32]> = rows.chunks(ROWS_PER_SECTION).collect();
    let count = sections.len() as u64;
    let sections: Vec<Value> = sections
        .iter()
        .enumerate()
        .map(|(s, rows)| {
            // From 2 × price at the front to price / 2 at the back.
            let section_price = if count <= 1 {
                price
            } else {
                price * 2 - (price * 3 / 2) * s as u64 / (count - 1)
            };
            let rows: Vec<Value> = rows
                .iter()
                .enumerate()
                .map(|(r, seats)| json!({"row": format!("{}", r + 1), "seats": seats}))
                .collect();
            json!({"name": format!("Section {}", s + 1), "price": section_price, "rows": rows})
        })
        .collect();
    Value::Array(sections)
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
