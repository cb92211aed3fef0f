//! Picking, holding and paying, with other buyers on the same date.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_completes_a_purchase_through_the_page() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("pagebuyer")).await;

    browser.click("[data-seat=\"3\"]").await;
    browser.click("[data-seat=\"4\"]").await;
    browser
        .wait_until("two seats chosen", "#selection", |text, _| {
            text.contains("2 of 4")
        })
        .await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    assert!(seat_class(&browser, 3).await.contains("mine"));
    assert!(
        browser.in_view("#pay").await,
        "Pay is on screen at 1280×800"
    );
    browser
        .wait_until("a countdown from five minutes", "#countdown", |text, _| {
            text.starts_with("4:5") || text == "5:00"
        })
        .await;
    let seat_map = browser.screenshot("seat-map").await;

    // The page suggests the missing amount; top it up and pay.
    let amount = browser
        .script("return document.getElementById('amount').value;", json!([]))
        .await;
    assert_eq!(amount, json!("3000"));
    browser.click("#top-up").await;
    browser
        .wait_until("the top-up is confirmed", "#message", |text, _| {
            text.contains("Added 3,000 won")
        })
        .await;
    browser.click("#pay").await;
    browser
        .wait_until("the confirmation", "#confirmation", |text, _| {
            text.contains("Seats 3, 4")
        })
        .await;
    let confirmation = browser.text("#confirmation").await;
    assert!(confirmation.contains("3,000 won"), "{confirmation}");
    let receipt = browser.screenshot("confirmation").await;

    browser.click("#see-reservations").await;
    browser
        .wait_until(
            "my reservations list the paid seats",
            "#reservation-list",
            |text, _| text.contains("Seats 3, 4") && text.contains("paid"),
        )
        .await;
    eprintln!("screenshots: {} {}", seat_map.display(), receipt.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_one_page_appears_on_anothers_within_a_second() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    to_seat_map(&alice, &server, &date, &unique("alice")).await;
    to_seat_map(&bob, &server, &date, &unique("bob")).await;
    assert!(seat_class(&bob, 5).await.contains("available"));

    alice.click("[data-seat=\"5\"]").await;
    alice.click("#hold").await;
    alice.find("#hold-panel").await;
    let held_at = Instant::now();
    bob.wait_until(
        "Alice's hold shows on Bob's map",
        "[data-seat=\"5\"]",
        |_, class| class.contains("held"),
    )
    .await;
    assert!(
        held_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        held_at.elapsed()
    );
    let label = bob
        .script(
            "return document.querySelector('[data-seat=\"5\"]').getAttribute('aria-label');",
            json!([]),
        )
        .await;
    assert_eq!(label, json!("Seat 5, held by someone else"));

    bob.click("[data-seat=\"8\"]").await;
    bob.click("[data-seat=\"9\"]").await;
    bob.wait_until("Bob's choice shows", "#selection", |text, _| {
        text.contains("8, 9")
    })
    .await;
    let shot = bob.screenshot("seat-map-two-buyers").await;
    eprintln!("screenshot: {}", shot.display());

    // Bob cannot take it: the page says why, and the seat is not selected.
    bob.click("[data-seat=\"5\"]").await;
    bob.wait_until("Bob is told", "#message", |text, _| {
        text.contains("Seat 5 is held by someone else")
    })
    .await;
    assert!(!seat_class(&bob, 5).await.contains("selected"));
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_expires_on_the_page_returns_the_seat() {
    let (server, date) = server(2).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("expirer")).await;
    browser.click("[data-seat=\"2\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    assert!(seat_class(&browser, 2).await.contains("mine"));
    browser
        .wait_until("the page says the hold expired", "#message", |text, _| {
            text.contains("hold expired")
        })
        .await;
    browser
        .wait_until(
            "the seat is available again",
            "[data-seat=\"2\"]",
            |_, class| class.contains("available"),
        )
        .await;
    let hidden = browser
        .script(
            "return document.getElementById('hold-panel').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true));
    browser.close().await;
}

/// A seat picked on one date is not picked on the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_dates_clears_the_selection() {
    let (server, first) = server(300).await;
    let second = add_date(&server, 12, "2031-03-05T19:00:00Z").await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &first, &unique("switcher")).await;
    browser.click("[data-seat=\"3\"]").await;
    browser
        .wait_until("picked", "#selection", |text, _| text.contains("1 of 4"))
        .await;
    browser.click("#home").await;
    browser.click(&format!("[data-date=\"{second}\"]")).await;
    browser.find("[data-seat=\"12\"]").await;
    assert!(seat_class(&browser, 3).await.contains("available"));
    browser
        .wait_until("nothing picked", "#selection", |text, _| {
            text.contains("Pick up to")
        })
        .await;
    browser.close().await;
}

/// When someone else wins the race for a picked seat, the page names the seat and redraws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_names_the_seat_and_refreshes_the_map() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("racer")).await;
    browser.click("[data-seat=\"8\"]").await;
    browser.click("[data-seat=\"9\"]").await;
    // Freeze the live updates so the page still believes seat 9 is free when it asks.
    browser.script("stopStreams();", json!([])).await;
    let rival = ApiBuyer::admitted(&server, &unique("rival")).await;
    rival.hold(&date, &[9]).await;
    browser.click("#hold").await;
    browser
        .wait_until("the seat is named", "#message", |text, _| {
            text.contains("seat 9 was just taken")
        })
        .await;
    assert!(seat_class(&browser, 9).await.contains("held"));
    assert!(seat_class(&browser, 8).await.contains("selected"));
    browser.close().await;
}
