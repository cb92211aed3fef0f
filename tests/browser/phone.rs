//! The flow on a 360 px phone.

use crate::support::*;

/// At 360 px every screen of the flow fits without sideways scrolling, the Hold and Pay buttons
/// are on screen, and there are no serious accessibility findings at this size either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_a_phone() {
    let (server, _) = server(300).await;
    let hall = add_date(&server, 20_000, "2031-04-03T19:00:00Z").await;
    let driver = Driver::start().await;
    let phone = driver.phone().await;
    phone.open(&format!("{}/", server.base)).await;
    phone.find(&format!("[data-date=\"{hall}\"]")).await;
    phone.check_fits_width("catalogue").await;
    phone.screenshot("phone-catalogue").await;
    phone.click("#sign-in-entry").await;
    phone.find("#auth-form").await;
    phone.check_fits_width("sign-in").await;
    phone.sign_up(&unique("phone")).await;
    phone.click(&format!("[data-date=\"{hall}\"]")).await;
    phone.find("[data-seat=\"1\"]").await;
    phone.check_fits_width("seat map").await;
    assert!(phone.in_view("#hold").await, "Hold is on screen");
    phone.click("[data-seat=\"2\"]").await;
    phone.click("[data-seat=\"3\"]").await;
    phone.check_accessibility("seat map on a phone").await;
    phone.screenshot("phone-seat-map").await;
    phone.click("#hold").await;
    phone.find("#hold-panel").await;
    assert!(phone.in_view("#pay").await, "Pay is on screen");
    phone.check_fits_width("hold").await;
    phone.screenshot("phone-hold").await;
    phone.click("#top-up").await;
    phone
        .wait_until("the top-up", "#message", |text, _| text.contains("Added"))
        .await;
    phone.click("#pay").await;
    phone.find("#confirmation").await;
    phone.check_fits_width("confirmation").await;
    phone.click("#see-reservations").await;
    wait_for_count(&phone, 1).await;
    phone.check_fits_width("reservations").await;
    phone.check_accessibility("reservations on a phone").await;
    phone.close().await;
}
