//! Every screen read by axe-core, times and announcements, the page's icon.

use serde_json::json;

use crate::support::*;

/// Every screen of the flow has no critical or serious axe finding; times are shown without
/// seconds and with their zone; the waiting room has an estimate and a way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_screen_passes_axe_and_speaks_plainly() {
    let (server, date) = server_with(|settings| {
        settings.queue.max_active = 1;
        settings.queue.admit_per_second = 1;
    })
    .await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.open(&format!("{}/", server.base)).await;
    browser.find(&format!("[data-date=\"{date}\"]")).await;
    browser.check_accessibility("catalogue").await;
    let times = browser
        .script(
            "const zone = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' }) \
               .formatToParts(new Date('2031-03-01T19:00:00Z')) \
               .find(p => p.type === 'timeZoneName').value; \
             const text = document.querySelector('.dates li span').textContent; \
             return [text, zone];",
            json!([]),
        )
        .await;
    let (text, zone) = (times[0].as_str().unwrap(), times[1].as_str().unwrap());
    assert!(text.contains(zone), "{text:?} names its zone {zone:?}");
    assert!(
        !regex::Regex::new(r"\d:\d\d:\d\d").unwrap().is_match(text),
        "{text:?} shows no seconds"
    );

    browser.click(&format!("[data-date=\"{date}\"]")).await;
    browser.find("#auth-form").await;
    browser.check_accessibility("sign-in").await;
    browser.sign_up(&unique("axe")).await;
    browser.find("[data-seat=\"12\"]").await;
    browser.click("[data-seat=\"1\"]").await;
    browser.check_accessibility("seat map with a choice").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    browser.check_accessibility("hold").await;
    // A second buyer waits behind the first: the waiting room and its way out.
    let waiting = driver.browser().await;
    waiting.open(&format!("{}/", server.base)).await;
    waiting.click(&format!("[data-date=\"{date}\"]")).await;
    waiting.sign_up(&unique("waiter")).await;
    waiting
        .wait_until("in line", "#queue-status", |text, _| {
            text.contains("number 1 in line")
        })
        .await;
    waiting
        .wait_until("an estimate", "#queue-wait", |text, _| {
            text.contains("wait")
        })
        .await;
    waiting.check_accessibility("waiting room").await;
    waiting.screenshot("waiting-room").await;
    let (session, queue_token) = waiting.stored_tokens().await;
    waiting.click("#leave-queue").await;
    waiting
        .wait_until("left", "#message", |text, _| {
            text.contains("You left the line")
        })
        .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let gone = client
        .get(format!("{}/api/v1/queue/tokens/current", server.base))
        .header("authorization", format!("Bearer {}", session.unwrap()))
        .header("x-queue-token", queue_token.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401, "the place in line was given up");
    waiting.close().await;

    browser.click("#top-up").await;
    browser
        .wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    browser.check_accessibility("top-up").await;
    browser.click("#pay").await;
    browser.find("#confirmation").await;
    browser.check_accessibility("confirmation").await;
    browser.close().await;
}

/// The icon the browser asks for exists, and the page logs no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_has_an_icon_and_no_failed_requests() {
    let (server, date) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("icon")).await;
    let icon = browser
        .script_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/favicon.ico').then(r => done(r.status));",
            json!([]),
        )
        .await;
    assert_eq!(icon, json!(200));
    let failures: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .filter(|message| message.contains("Failed to load") || message.contains(" 404"))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    browser.close().await;
}

/// The countdown is announced politely at a few steps, not every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_countdown_is_announced_at_a_few_steps() {
    let (server, date) = server(12).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    to_seat_map(&browser, &server, &date, &unique("listener")).await;
    browser.click("[data-seat=\"1\"]").await;
    browser.click("#hold").await;
    browser.find("#hold-panel").await;
    let live = browser
        .script(
            "return document.getElementById('countdown-announcer').getAttribute('aria-live');",
            json!([]),
        )
        .await;
    assert_eq!(live, json!("polite"));
    assert_eq!(browser.text("#countdown-announcer").await, "");
    browser
        .wait_until(
            "the countdown is announced",
            "#countdown-announcer",
            |text, _| text == "10 seconds left to pay.",
        )
        .await;
    browser.close().await;
}
