//! Seats that come back, on the page: a refund with its fee and window shown first, seats that
//! return to another buyer's map, a reservation given to a friend, and a cancelled date.

use serde_json::{json, Value};

use crate::support::*;

/// Pays for `seats` of `date` over the API with a session the page signed in.
async fn buy(server: &Server, session: &str, date: &str, seats: &[u32]) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let auth = format!("Bearer {session}");
    let queue = json_of(
        client
            .post(api("/queue/tokens"))
            .header("authorization", &auth),
    )
    .await;
    let queue_token = queue["queue_token"].as_str().unwrap();
    let held = json_of(
        client
            .post(api("/reservations"))
            .header("authorization", &auth)
            .header("x-queue-token", queue_token)
            .json(&json!({"date_id": date, "seat_nos": seats})),
    )
    .await;
    let id = held["reservation_id"].as_str().expect("a hold").to_owned();
    let paid: Value = json_of(
        client
            .post(api("/payments"))
            .header("authorization", &auth)
            .header("x-queue-token", queue_token)
            .json(&json!({ "reservation_id": id })),
    )
    .await;
    assert_eq!(paid["reservation_id"], json!(id), "{paid}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_shows_its_terms_and_returns_the_seats_to_another_buyers_map() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    let bob_name = unique("friendbob");
    sign_up_from_header(&alice, &server, &unique("refunder")).await;
    let (token, _) = alice.stored_tokens().await;
    let token = token.expect("a signed-in page");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let charged = client
        .post(format!("{}/api/v1/balance/charges", server.base))
        .bearer_auth(&token)
        .json(&json!({"amount": 10_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(charged.status(), 201);
    let pair = buy(&server, &token, &date, &[3, 4]).await;
    let single = buy(&server, &token, &date, &[6]).await;
    to_seat_map(&bob, &server, &date, &bob_name).await;
    assert!(seat_class(&bob, 3).await.contains("sold"));

    alice.click("#my-reservations").await;
    wait_for_count(&alice, 2).await;
    alice
        .click(&format!(
            "[data-reservation=\"{pair}\"] .refund-reservation"
        ))
        .await;
    alice
        .wait_until("the refund's terms", ".refund-terms", |text, _| {
            text.contains("2,700 won goes back") && text.contains("300 won (10%)")
        })
        .await;
    let terms = alice.text(".refund-terms").await;
    assert!(terms.contains("close"), "the window is shown: {terms}");
    alice.check_accessibility("a refund's confirmation").await;
    let terms_shot = alice.screenshot("refund-terms").await;
    alice.click(".confirm-refund").await;
    alice
        .wait_until("the refund is confirmed", "#message", |text, _| {
            text.contains("Refunded: 2,700 won went back to your balance")
        })
        .await;
    alice
        .wait_until("the list says refunded", "#reservation-list", |text, _| {
            text.contains("Seats 3, 4") && text.contains("refunded")
        })
        .await;
    // Bob's map gets the seats back while he watches.
    bob.wait_until("seat 3 is free again", "[data-seat=\"3\"]", |_, class| {
        class.contains("available")
    })
    .await;
    assert!(seat_class(&bob, 4).await.contains("available"));

    // Seat 6 goes to Bob, who finds it in his own list.
    alice
        .click(&format!(
            "[data-reservation=\"{single}\"] .give-reservation"
        ))
        .await;
    alice.type_into(".give-form input", &bob_name).await;
    alice.click(".give-form button[type=submit]").await;
    alice
        .wait_until("the gift is confirmed", "#message", |text, _| {
            text.contains(&format!("Given to {bob_name}"))
        })
        .await;
    wait_for_count(&alice, 1).await;
    bob.click("#my-reservations").await;
    bob.wait_until("Bob holds seat 6", "#reservation-list", |text, _| {
        text.contains("Seat 6") && text.contains("paid")
    })
    .await;
    let shot = alice.screenshot("refunded").await;
    eprintln!("screenshots: {} {}", terms_shot.display(), shot.display());
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_date_says_so_in_the_catalogue() {
    let (server, date) = server(300).await;
    let cancelled = add_date(&server, 10, "2031-04-01T19:00:00Z").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!(
            "{}/api/v1/admin/dates/{cancelled}/cancellation",
            server.base
        ))
        .header("authorization", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    sign_up_from_header(&browser, &server, &unique("toolate")).await;
    browser.find(&format!("[data-date=\"{date}\"]")).await;
    let button = browser
        .script(
            "const b = document.querySelector(`[data-date=\"${arguments[0]}\"]`); return [b.textContent, b.disabled];",
            json!([cancelled]),
        )
        .await;
    assert_eq!(button, json!(["Cancelled", true]));
    // A link to it, from before the cancellation, says why instead of opening the waiting
    // room.
    browser
        .open(&format!("{}/#/dates/{cancelled}", server.base))
        .await;
    browser
        .wait_until("the page explains", "#message", |text, _| {
            text.contains("This date was cancelled")
        })
        .await;
    browser.close().await;
}

/// A buyer who finds a date sold out joins its waiting list on the page; when a seat comes
/// back it appears as their own hold with its countdown, and they pay for it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_list_offer_reaches_the_buyers_page_and_is_paid_there() {
    let (server, _) = server(300).await;
    let date = add_date(&server, 1, "2031-06-01T19:00:00Z").await;
    let seller = ApiBuyer::admitted(&server, &unique("seller")).await;
    let charged = seller
        .client
        .post(format!("{}/balance/charges", seller.base))
        .header("authorization", &seller.session)
        .json(&json!({"amount": 2_500}))
        .send()
        .await
        .unwrap();
    assert_eq!(charged.status(), 201);
    let held = seller.hold(&date, &[1]).await;
    let reservation = held["reservation_id"].as_str().unwrap().to_owned();
    let paid = seller
        .client
        .post(format!("{}/payments", seller.base))
        .header("authorization", &seller.session)
        .header("x-queue-token", &seller.queue_token)
        .json(&json!({ "reservation_id": reservation }))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 201);

    let driver = Driver::start().await;
    let fan = driver.browser().await;
    sign_up_from_header(&fan, &server, &unique("patientfan")).await;
    let button = fan
        .script(
            "return document.querySelector(`[data-date=\"${arguments[0]}\"]`).textContent;",
            json!([date]),
        )
        .await;
    assert_eq!(button, json!("Sold out: join the waiting list"));
    fan.click(&format!("[data-date=\"{date}\"]")).await;
    fan.find("#waitlist-form").await;
    fan.check_accessibility("a sold-out date's waiting list")
        .await;
    fan.click("#join-waitlist").await;
    fan.wait_until("the place on the list", "#waitlist-place", |text, _| {
        text.contains("You are first on the waiting list")
    })
    .await;

    // The seat comes back: it is the fan's hold, with its countdown, without a word from them.
    let refunded = seller
        .client
        .post(format!("{}/refunds", seller.base))
        .header("authorization", &seller.session)
        .json(&json!({ "reservation_id": reservation }))
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), 201);
    fan.find("#hold-panel").await;
    fan.wait_until("the offer is announced", "#message", |text, _| {
        text.contains("Seat 1 came back for you from the waiting list")
    })
    .await;
    assert!(seat_class(&fan, 1).await.contains("mine"));
    fan.wait_until("a countdown", "#countdown", |text, _| text.contains(':'))
        .await;
    let shot = fan.screenshot("waitlist-offer").await;
    fan.click("#top-up").await;
    fan.wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    fan.click("#pay").await;
    fan.wait_until("the confirmation", "#confirmation", |text, _| {
        text.contains("Seat 1")
    })
    .await;
    eprintln!("screenshot: {}", shot.display());
    fan.close().await;
}
