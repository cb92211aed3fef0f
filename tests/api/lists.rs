//! A user's lists come in pages: `?limit=N` (1–1000, default 100) and `?cursor=C`, with
//! `next_cursor` beside the list. A walk sees every entry once, newest first, even while new
//! entries arrive; a bad `limit` or `cursor` is 400 `malformed_request`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

const RESERVATIONS: &str = "/api/v1/reservations";
const HISTORY: &str = "/api/v1/balance/history";

/// One page of `path` (`query` appended as is), and its `next_cursor`.
async fn page(app: &TestApp, buyer: &Buyer, path: &str, field: &str, query: &str) -> Page {
    let url = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let body = assert_json(app.get(&url).session(buyer).send().await.unwrap(), 200).await;
    let ids = body[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is an array: {body}"))
        .iter()
        .map(|entry| {
            let id = if field == "reservations" {
                "reservation_id"
            } else {
                "entry_id"
            };
            string_field(entry, id)
        })
        .collect();
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) if !cursor.is_empty() => Some(cursor.clone()),
        other => panic!("next_cursor is a string or null, got {other}: {body}"),
    };
    Page { ids, next }
}

struct Page {
    ids: Vec<String>,
    next: Option<String>,
}

/// A walk over `path` in pages of `limit`, one page per `next` call.
struct Walk {
    path: &'static str,
    field: &'static str,
    limit: usize,
    cursor: Option<String>,
    done: bool,
    rounds: usize,
}

impl Walk {
    fn new(path: &'static str, field: &'static str, limit: usize) -> Self {
        Self {
            path,
            field,
            limit,
            cursor: None,
            done: false,
            rounds: 0,
        }
    }

    /// The next page's ids, or `None` once the last page was read.
    async fn next(&mut self, app: &TestApp, buyer: &Buyer) -> Option<Vec<String>> {
        if self.done {
            return None;
        }
        self.rounds += 1;
        assert!(self.rounds < 1_000, "the walk ends");
        let query = match &self.cursor {
            None => format!("limit={}", self.limit),
            Some(c) => format!("limit={}&cursor={c}", self.limit),
        };
        let page = page(app, buyer, self.path, self.field, &query).await;
        assert!(page.ids.len() <= self.limit, "a page holds at most limit");
        if page.next.is_some() {
            assert_eq!(page.ids.len(), self.limit, "only the last page is short");
        }
        self.done = page.next.is_none();
        self.cursor = page.next;
        Some(page.ids)
    }
}

/// `ids` newest first: reversed creation order.
fn newest_first(created: &[String]) -> Vec<String> {
    created.iter().rev().cloned().collect()
}

fn assert_each_once(walked: &[String], what: &str) {
    let distinct: BTreeSet<&String> = walked.iter().collect();
    assert_eq!(
        distinct.len(),
        walked.len(),
        "{what}: no entry on two pages"
    );
}

/// Holds a seat and cancels it at once, so a user can gather many reservations without passing
/// a hold limit; a new seat each time.
async fn hold_and_cancel(
    app: &TestApp,
    buyer: &Buyer,
    token: &str,
    date: &str,
    seat: u64,
) -> String {
    let held = app.hold_ok(buyer, token, date, &[seat]).await;
    let id = string_field(&held, "reservation_id");
    let cancelled = app
        .delete(&format!("{RESERVATIONS}/{id}"))
        .session(buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_come_in_pages_and_a_walk_sees_each_once_newest_first() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(300, 10).await;
    let (buyer, token) = app.admitted_buyer().await;
    let mut created = Vec::new();
    for seat in 1..=250 {
        created.push(hold_and_cancel(&app, &buyer, &token, &date, seat).await);
    }
    let expected = newest_first(&created);

    // No parameters: the newest 100, and a cursor to the rest.
    let first = page(&app, &buyer, RESERVATIONS, "reservations", "").await;
    assert_eq!(first.ids.len(), 100, "the default page is 100");
    assert_eq!(first.ids, expected[..100]);
    assert!(first.next.is_some(), "more to come");

    // Pages of 7, while new holds arrive between pages: the walk sees the 250 that were there
    // when it began, each once, newest first; the new ones are newer than its first page.
    let mut added = Vec::new();
    let mut walked = Vec::new();
    let mut walk = Walk::new(RESERVATIONS, "reservations", 7);
    while let Some(ids) = walk.next(&app, &buyer).await {
        walked.extend(ids);
        if added.len() < 3 {
            let seat = 251 + added.len() as u64;
            added.push(hold_and_cancel(&app, &buyer, &token, &date, seat).await);
        }
    }
    assert_each_once(&walked, "reservations");
    assert_eq!(walked, expected, "every reservation, newest first");

    // The largest page holds everything, new ones first, and ends the walk.
    let all = page(&app, &buyer, RESERVATIONS, "reservations", "limit=1000").await;
    assert_eq!(all.next, None);
    let mut everything = created.clone();
    everything.extend(added);
    assert_eq!(all.ids, newest_first(&everything));

    // A list that fits one page says so.
    let (other, _) = app.admitted_buyer().await;
    let empty = page(&app, &other, RESERVATIONS, "reservations", "").await;
    assert_eq!((empty.ids.len(), empty.next), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_history_comes_in_pages_and_a_walk_sees_each_once_newest_first() {
    let app = spawn_app().await;
    let buyer = app.new_buyer().await;
    let mut created = Vec::new();
    for amount in 1..=250 {
        created.push(string_field(
            &app.charge_ok(&buyer, amount).await,
            "charge_id",
        ));
    }
    // History entries name their charge in `reference`; the walk compares entry ids, which
    // come from the first full listing.
    let all = assert_json(
        app.get(&format!("{HISTORY}?limit=1000"))
            .session(&buyer)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(all["next_cursor"], Value::Null);
    let references: Vec<String> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| string_field(e, "reference"))
        .collect();
    assert_eq!(references, newest_first(&created), "newest first");
    let expected: Vec<String> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| string_field(e, "entry_id"))
        .collect();

    let first = page(&app, &buyer, HISTORY, "entries", "").await;
    assert_eq!(first.ids.len(), 100, "the default page is 100");
    assert_eq!(first.ids, expected[..100]);
    assert!(first.next.is_some(), "more to come");

    let mut walked = Vec::new();
    let mut walk = Walk::new(HISTORY, "entries", 7);
    while let Some(ids) = walk.next(&app, &buyer).await {
        walked.extend(ids);
        if walk.rounds <= 3 {
            app.charge_ok(&buyer, 1_000).await;
        }
    }
    assert_each_once(&walked, "history");
    assert_eq!(walked, expected, "every entry, newest first");
    assert_eq!(app.balance(&buyer).await, 250 * 251 / 2 + 3_000);
}

/// Every way a `limit` or `cursor` can be wrong, on both lists: 400 `malformed_request`.
async fn expect_malformed(app: &TestApp, buyer: &Buyer, path: &str, query: &str) {
    let response = app
        .get(&format!("{path}?{query}"))
        .session(buyer)
        .send()
        .await
        .unwrap();
    assert_problem_for(
        response,
        400,
        "malformed_request",
        &format!("{path}?{query}"),
    )
    .await;
}

/// Every way a `limit` or `cursor` can be wrong, on both lists: 400 `malformed_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_limit_or_cursor_is_malformed() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 10).await;
    let (buyer, token) = app.admitted_buyer().await;
    for seat in 1..=3 {
        hold_and_cancel(&app, &buyer, &token, &date, seat).await;
        app.charge_ok(&buyer, 10).await;
    }
    let long = format!("cursor={}", "A".repeat(5_000));
    for path in [RESERVATIONS, HISTORY] {
        for query in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=x",
            "limit=1.5",
            "limit=",
            "limit=1e2",
            "limit=%2B5",
            "limit=%205",
            "limit=99999999999999999999999",
            "limit=5&limit=5",
            "cursor=",
            "cursor=x",
            "cursor=!!!!",
            "cursor=AAAAAAAAAAAAAA",
            "cursor=__________________",
            &long,
        ] {
            expect_malformed(&app, &buyer, path, query).await;
        }
    }

    // Real cursors, tampered with or used on the other list.
    let reservations_cursor = page(&app, &buyer, RESERVATIONS, "reservations", "limit=1")
        .await
        .next
        .expect("a cursor");
    let history_cursor = page(&app, &buyer, HISTORY, "entries", "limit=1")
        .await
        .next
        .expect("a cursor");
    for (path, own, foreign) in [
        (RESERVATIONS, &reservations_cursor, &history_cursor),
        (HISTORY, &history_cursor, &reservations_cursor),
    ] {
        for query in [
            format!("cursor={foreign}"),
            format!("cursor={own}A"),
            format!("cursor={}", &own[..own.len() - 1]),
            format!("cursor={own}&cursor={own}"),
        ] {
            expect_malformed(&app, &buyer, path, &query).await;
        }
        // The edges of the range, and a cursor, are fine; so is an unrelated parameter.
        for query in [
            "limit=1".to_owned(),
            "limit=1000".to_owned(),
            format!("cursor={own}"),
            format!("limit=2&cursor={own}&other=1"),
        ] {
            let response = app
                .get(&format!("{path}?{query}"))
                .session(&buyer)
                .send()
                .await
                .unwrap();
            assert_json(response, 200).await;
        }
    }
    // The session is checked first.
    let response = app
        .get(&format!("{RESERVATIONS}?limit=0"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
}
