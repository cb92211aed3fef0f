//! A venue of sections, rows and prices on the page, and a best-available hold from it.

use serde_json::{json, Value};

use crate::support::*;

/// A date of `sections` for the server's one concert.
async fn add_venue(server: &Server, sections: Value) -> String {
    add_date_from(
        server,
        json!({"starts_at": "2031-05-01T19:00:00Z", "sections": sections}),
    )
    .await
}

fn rows(labels: &[&str], seats: u32) -> Value {
    labels
        .iter()
        .map(|label| json!({"row": label, "seats": seats}))
        .collect()
}

/// Two sections draw under the stage with their names, prices and row labels, each in its own
/// price colour with a legend; "best available" holds the middle pair of the front row, shown
/// as the buyer's own seats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_section_venue_draws_its_rows_and_prices_and_holds_the_best_pair() {
    let (server, _) = server(300).await;
    let venue = add_venue(
        &server,
        json!([
            {"name": "Floor", "price": 150_000, "rows": rows(&["A", "B", "C"], 10)},
            {"name": "Balcony", "price": 80_000, "rows": rows(&["1", "2"], 12)}
        ]),
    )
    .await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    sign_up_from_header(&browser, &server, &unique("venuebuyer")).await;
    // The catalogue says what each section has left, at its price.
    let sections = browser
        .script(
            "return [...document.querySelectorAll('.sections li')].map(l => l.textContent);",
            json!([]),
        )
        .await;
    assert_eq!(
        sections,
        json!([
            "Floor: 30 of 30 left · 150,000 won",
            "Balcony: 24 of 24 left · 80,000 won"
        ])
    );
    browser
        .check_accessibility("a catalogue with sections")
        .await;
    browser.click(&format!("[data-date=\"{venue}\"]")).await;
    browser.find("#seat-grid [data-seat=\"54\"]").await;

    assert_eq!(browser.text("#stage").await, "Stage");
    let heads = browser
        .script(
            "return [...document.querySelectorAll('.section-head')].map(h => h.textContent);",
            json!([]),
        )
        .await;
    assert_eq!(
        heads,
        json!(["Floor · 150,000 won", "Balcony · 80,000 won"])
    );
    let legend = browser.text("#categories").await;
    assert!(
        legend.contains("Floor · 150,000 won") && legend.contains("Balcony · 80,000 won"),
        "{legend}"
    );
    let labels = browser
        .script(
            "return [...document.querySelectorAll('.row-label')].map(l => l.textContent).filter(t => t);",
            json!([]),
        )
        .await;
    assert_eq!(labels, json!(["A", "B", "C", "1", "2"]));
    // Seat 11 opens row B, on a line of its own under row A.
    let (a, b) = (
        browser
            .script(
                "return document.querySelector('[data-seat=\"1\"]').getBoundingClientRect().top;",
                json!([]),
            )
            .await,
        browser
            .script(
                "return document.querySelector('[data-seat=\"11\"]').getBoundingClientRect().top;",
                json!([]),
            )
            .await,
    );
    assert!(
        b.as_f64().unwrap() > a.as_f64().unwrap(),
        "row B is below row A"
    );
    let (floor, balcony) = (
        seat_class(&browser, 1).await,
        seat_class(&browser, 31).await,
    );
    assert!(floor.contains("available c0"), "{floor}");
    assert!(balcony.contains("available c1"), "{balcony}");
    let colours = browser
        .script(
            "const c = s => getComputedStyle(document.querySelector(`[data-seat=\"${s}\"]`)).borderTopColor; \
             return [c(1), c(31)];",
            json!([]),
        )
        .await;
    assert_ne!(colours[0], colours[1], "two price categories, two colours");
    let picker = browser
        .script(
            "return [document.getElementById('best-section-field').hidden, \
                     [...document.getElementById('best-section').options].map(o => o.textContent)];",
            json!([]),
        )
        .await;
    assert_eq!(
        picker,
        json!([
            false,
            ["Any section", "Floor (150,000 won)", "Balcony (80,000 won)"]
        ])
    );
    browser.check_accessibility("a venue of two sections").await;

    browser.click("#best-submit").await;
    browser.find("#hold-panel").await;
    for seat in [5, 6] {
        assert!(
            seat_class(&browser, seat).await.contains("mine"),
            "seat {seat}"
        );
    }
    let summary = browser.text("#hold-summary").await;
    assert!(
        summary.contains("5, 6") && summary.contains("300,000 won"),
        "{summary}"
    );
    browser.close().await;
}

/// A hall of a few thousand seats in five price categories, for the README: looked at, not
/// measured; the test checks it drew every section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hall_of_a_few_thousand_seats_is_drawn_section_by_section() {
    let (server, _) = server(300).await;
    let labels: Vec<String> = (b'A'..=b'T').map(|c| (c as char).to_string()).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let hall = add_venue(
        &server,
        json!([
            {"name": "VIP", "price": 220_000, "rows": rows(&labels[..2], 24)},
            {"name": "Floor", "price": 165_000, "rows": rows(&labels[..20], 40)},
            {"name": "Mezzanine", "price": 121_000, "rows": rows(&labels[..12], 60)},
            {"name": "Balcony", "price": 88_000, "rows": rows(&labels[..16], 70)},
            {"name": "Gallery", "price": 55_000, "rows": rows(&labels[..8], 80)}
        ]),
    )
    .await;
    let total = 2 * 24 + 20 * 40 + 12 * 60 + 16 * 70 + 8 * 80;
    let driver = Driver::start().await;
    let browser = driver.browser_with(json!({}), "1280,1000").await;
    sign_up_from_header(&browser, &server, &unique("hallviewer")).await;
    browser.click(&format!("[data-date=\"{hall}\"]")).await;
    browser.find("#seat-grid [data-seat=\"60\"]").await;
    let rival = ApiBuyer::admitted(&server, &unique("hallrival")).await;
    rival.hold(&hall, &[50, 51]).await;
    assert_eq!(total, 3_328);
    browser
        .wait_until("the rival's hold shows", "#availability", |text, _| {
            text.contains("3,326 of 3,328")
        })
        .await;
    // The VIP's last row and the Floor's first ones, with the rival's hold, under the page's
    // own top.
    browser
        .script(
            "const m = state.map; m.scroller.scrollTop = m.lineOf[m.position[25]] * m.rowHeight; \
             m.draw(); window.scrollTo(0, 0);",
            json!([]),
        )
        .await;
    let legend = browser.text("#categories").await;
    for name in ["VIP", "Floor", "Mezzanine", "Balcony", "Gallery"] {
        assert!(legend.contains(name), "{legend}");
    }
    let shot = browser.screenshot("venue").await;
    eprintln!("the venue: {}", shot.display());
    browser.close().await;
}
