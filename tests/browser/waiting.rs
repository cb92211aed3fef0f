//! The waiting room in the page.

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
