//! The buyer's own reservations and hold, found on the server: reloads, second tabs, sign-out.

use serde_json::json;

use crate::support::*;

/// A long list of reservations comes a page at a time: the newest 100, then "Show older" for the
/// rest, and the button goes once the list is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_reservations_come_a_page_at_a_time() {
    let (server, first_date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &first_date, &unique("longlist")).await;

    // 101 reservations, made over the API with the page's own session, each on its own seat.
    let (token, _) = browser.stored_tokens().await;
    let auth = format!("Bearer {}", token.expect("a signed-in page"));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let date = add_date(&server, 101, "2031-03-02T19:00:00Z").await;
    let date = date.as_str();
    let queue = json_of(
        client
            .post(api("/queue/tokens"))
            .header("authorization", &auth),
    )
    .await;
    let queue_token = queue["queue_token"].as_str().unwrap();
    for seat in 1..=101 {
        let held = json_of(
            client
                .post(api("/reservations"))
                .header("authorization", &auth)
                .header("x-queue-token", queue_token)
                .json(&json!({"date_id": date, "seat_no": seat})),
        )
        .await;
        let id = held["reservation_id"].as_str().expect("a hold");
        let cancelled = client
            .delete(api(&format!("/reservations/{id}")))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), 204);
    }

    browser.click("#my-reservations").await;
    wait_for_count(&browser, 100).await;
    browser.click("#older-reservations").await;
    wait_for_count(&browser, 101).await;
    let hidden = browser
        .script(
            "return document.getElementById('older-reservations').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true), "nothing older is left");
    browser.close().await;
}

/// The hold lives on the server, so the page finds it again after a reload and in a second
/// tab, with its countdown, and can pay it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_or_a_second_tab_finds_the_live_hold_and_can_pay_it() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("reloader")).await;
    browser.click("[data-seat=\"6\"]").await;
    browser.click("[data-seat=\"7\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;

    browser.reload().await;
    browser.find("#hold-panel").await;
    browser
        .wait_until("the hold's seats", "#hold-summary", |text, _| {
            text.contains("6, 7") && text.contains("Aurora Live")
        })
        .await;
    browser
        .wait_until(
            "my seats are mine after the reload",
            "[data-seat=\"6\"]",
            |_, class| class.contains("mine"),
        )
        .await;
    browser
        .wait_until("the countdown goes on", "#countdown", |text, _| {
            text.starts_with("4:")
        })
        .await;

    browser.new_tab().await;
    browser.open(&format!("{}/", server.base)).await;
    browser.find("#hold-panel").await;
    browser
        .wait_until(
            "the second tab shows the hold",
            "#hold-summary",
            |text, _| text.contains("6, 7"),
        )
        .await;
    browser.click("#top-up").await;
    browser
        .wait_until("the top-up", "#message", |text, _| {
            text.contains("Added 3,000 won")
        })
        .await;
    browser.click("#pay").await;
    browser
        .wait_until("paid from the second tab", "#confirmation", |text, _| {
            text.contains("Seats 6, 7") && text.contains("Aurora Live")
        })
        .await;

    // The paid seats are the buyer's own on the map.
    browser.click("#home").await;
    browser.click(&format!("[data-date=\"{date}\"]")).await;
    browser
        .wait_until(
            "seat 6 shows as mine, paid",
            "[data-seat=\"6\"]",
            |_, class| class.contains("owned"),
        )
        .await;
    browser.close().await;
}

/// "My reservations" says which concert, venue, date and seats each reservation is for, and
/// pays a held one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_reservations_say_what_each_is_for_and_pay_a_held_one() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("lister")).await;
    browser.click("[data-seat=\"10\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    browser.click("#top-up").await;
    browser
        .wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    browser.click("#my-reservations").await;
    browser
        .wait_until("the reservation in full", "#reservation-list", |text, _| {
            text.contains("Aurora Live at Riverside Hall")
                && text.contains("2031")
                && text.contains("Seat 10")
                && text.contains("held until")
        })
        .await;
    browser.check_accessibility("my reservations").await;
    browser.click(".pay-reservation").await;
    browser
        .wait_until("paid from the list", "#confirmation", |text, _| {
            text.contains("Seat 10 ")
        })
        .await;
    browser.click("#see-reservations").await;
    browser
        .wait_until("now paid", "#reservation-list", |text, _| {
            text.contains("paid")
        })
        .await;
    browser.close().await;
}

/// On a shared computer: signing out leaves the waiting room, ends the session and wipes the
/// page; the next buyer in the same tab sees nothing of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_leaves_nothing_for_the_next_buyer() {
    // One place in the shop: the next buyer gets in only if sign-out gave it up.
    let (server, date) = server_with(|settings| {
        settings.queue.max_active = 1;
        settings.queue.admit_per_second = 100;
    })
    .await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("firstbuyer")).await;
    browser.click("[data-seat=\"4\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    browser.click("[data-seat=\"11\"]").await;
    let (session, queue_token) = browser.stored_tokens().await;
    let (session, queue_token) = (session.unwrap(), queue_token.unwrap());

    browser.click("#sign-out").await;
    browser
        .wait_until("signed out", "#message", |text, _| {
            text.contains("signed out")
        })
        .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let queue = client
        .get(format!("{}/api/v1/queue/tokens/current", server.base))
        .header("authorization", format!("Bearer {session}"))
        .header("x-queue-token", &queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 401, "the session is over");
    assert_eq!(browser.stored_tokens().await, (None, None));
    let checker = ApiBuyer::admitted(&server, &unique("checker")).await;
    checker.leave().await;
    let traces = browser
        .script(
            "return [document.getElementById('hold-panel').hidden, \
                     document.getElementById('who').textContent, \
                     document.querySelectorAll('#seat-grid [data-seat]').length, \
                     document.getElementById('hold-summary').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(traces, json!([true, "", 0, ""]));

    let second = unique("nextbuyer");
    browser.click("#sign-in-entry").await;
    browser.sign_up(&second).await;
    browser
        .wait_until("the next buyer", "#who", |text, _| text == second)
        .await;
    browser.click(&format!("[data-date=\"{date}\"]")).await;
    browser.find("[data-seat=\"12\"]").await;
    assert!(seat_class(&browser, 4).await.contains("held"));
    assert!(!seat_class(&browser, 4).await.contains("mine"));
    assert!(seat_class(&browser, 11).await.contains("available"));
    let hidden = browser
        .script(
            "return document.getElementById('hold-panel').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true), "no hold of the first buyer");
    browser.click("#my-reservations").await;
    browser
        .wait_until(
            "none of the first buyer's",
            "#reservation-list",
            |text, _| text.contains("no reservations yet"),
        )
        .await;
    browser.close().await;
}
