//! The waiting room in the page.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_shows_the_place_in_line_and_lets_the_buyer_in_when_a_place_frees() {
    let (server, date) = server_with(|settings| {
        settings.queue.max_active = 1;
        settings.queue.admit_per_second = 1;
    })
    .await;
    let driver = Driver::start().await;
    let first = driver.browser().await;
    let second = driver.browser().await;
    to_seat_map(&first, &server, &date, &unique("first")).await;

    second.open(&format!("{}/", server.base)).await;
    second.click(&format!("[data-date=\"{date}\"]")).await;
    second.sign_up(&unique("second")).await;
    second
        .wait_until("the place in line", "#queue-status", |text, _| {
            text.contains("You are number 1 in line")
        })
        .await;

    // The first buyer leaves by buying: their admission ends and the next in line gets it.
    first.click("[data-seat=\"1\"]").await;
    first.click("#hold").await;
    first.find("#hold-panel").await;
    first.click("#top-up").await;
    first
        .wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    first.click("#pay").await;
    first.find("#confirmation").await;
    second.find("#seat-grid [data-seat=\"12\"]").await;
    assert!(seat_class(&second, 1).await.contains("sold"));
    first.close().await;
    second.close().await;
}

/// A concert whose sale opens in a few seconds, with a room of its own for one buyer at a
/// time: the page counts down to the opening and says the place will be drawn; at the opening
/// the buyer gets a place without reloading, and is let in when the one ahead leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_opening_the_page_counts_down_and_lets_the_buyer_in_at_their_turn() {
    let (server, _) = server(300).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = format!("{}/api/v1", server.base);
    let opens_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let concert = json_of(
        client
            .post(format!("{api}/admin/concerts"))
            .header("authorization", ADMIN)
            .json(&json!({
                "title": "Opening Night", "venue": "Harbour Arena",
                "sale_opens_at": opens_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "waiting_room": {"max_active": 1, "admit_per_second": 10},
            })),
    )
    .await;
    let concert = concert["concert_id"].as_str().unwrap().to_owned();
    let date = json_of(
        client
            .post(format!("{api}/admin/concerts/{concert}/dates"))
            .header("authorization", ADMIN)
            .json(&json!({"starts_at": "2031-03-01T19:00:00Z", "seat_count": 12, "price": 1500})),
    )
    .await;
    let date = date["date_id"].as_str().unwrap().to_owned();
    // Another fan, over the API, is in the pre-queue too.
    let account = json!({"username": unique("rival"), "password": PASSWORD});
    client
        .post(format!("{api}/users"))
        .json(&account)
        .send()
        .await
        .unwrap();
    let session = json_of(client.post(format!("{api}/sessions")).json(&account)).await;
    let session = format!("Bearer {}", session["session_token"].as_str().unwrap());
    let rival = json_of(
        client
            .post(format!("{api}/queue/tokens"))
            .header("authorization", &session)
            .json(&json!({ "concert_id": concert })),
    )
    .await;
    assert_eq!(rival["status"], "pre_queue", "{rival}");
    let rival_token = rival["queue_token"].as_str().unwrap().to_owned();

    let driver = Driver::start().await;
    let phone = driver.phone().await;
    phone.open(&format!("{}/", server.base)).await;
    phone
        .wait_until("the opening in the catalogue", "#concerts", |text, _| {
            text.contains("The sale opens")
        })
        .await;
    phone.click(&format!("[data-date=\"{date}\"]")).await;
    phone.sign_up(&unique("fan")).await;
    phone
        .wait_until("the pre-queue", "#queue-status", |text, _| {
            text.contains("in the pre-queue with 1 other")
        })
        .await;
    phone
        .wait_until("the countdown", "#queue-wait", |text, _| {
            text.contains("The sale opens in")
        })
        .await;
    phone.check_fits_width("pre-queue").await;
    phone.check_accessibility("pre-queue").await;
    phone.screenshot("pre-queue-phone").await;

    // The opening: one of the two is let in, the other is first in line. If the page's buyer
    // is the one waiting, the rival leaves and the page lets its buyer in, never reloaded.
    let admitted_or_first = |text: &str, _: &str| {
        text.contains("It's your turn") || text.contains("You are number 1 in line")
    };
    phone
        .wait_until(
            "a place drawn at the opening",
            "#queue-status",
            admitted_or_first,
        )
        .await;
    if phone.text("#queue-status").await.contains("number 1") {
        let left = client
            .delete(format!("{api}/queue/tokens/current"))
            .header("authorization", &session)
            .header("x-queue-token", &rival_token)
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 204);
    }
    phone.find("#seat-grid [data-seat=\"12\"]").await;
    phone.close().await;
}
