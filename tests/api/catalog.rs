//! The public catalogue's one date (`GET /api/v1/dates/{date_id}`): what a reservation, which
//! names only its date, is for.

use serde_json::json;

use crate::helpers::*;

const SEATS: u64 = 6;
const PRICE: u64 = 45_000;

/// A date answers with its concert's title and venue, its start, seats and price, to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_names_its_concert_venue_start_seats_and_price() {
    let app = spawn_app().await;
    // Two concerts, so the date's concert is not simply the first one.
    app.concert_with_date(3, 10).await;
    let concert = app
        .create_concert("Autumn Recital", "Seoul Arts Center")
        .await;
    let date = app.create_date(&concert, SEATS, PRICE).await;

    let response = app
        .get(&format!("/api/v1/dates/{date}"))
        .send()
        .await
        .unwrap();
    let body = assert_json(response, 200).await;
    let starts_at = body["starts_at"].as_str().expect("starts_at is a string");
    assert_eq!(rfc3339_ms(starts_at), rfc3339_ms(STARTS_AT), "{body}");
    let closes = body["refunds_close_at"]
        .as_str()
        .expect("refunds_close_at is a string");
    assert_eq!(
        rfc3339_ms(closes),
        rfc3339_ms(STARTS_AT) - 24 * 3_600_000,
        "refunds close refunds.window_closes_hours_before_start before the start"
    );
    assert_eq!(
        body,
        json!({
            "date_id": date,
            "concert_id": concert,
            "title": "Autumn Recital",
            "venue": "Seoul Arts Center",
            "starts_at": starts_at,
            "status": "on_sale",
            "refund_fee_percent": 10,
            "refunds_close_at": closes,
            "total_seats": SEATS,
            "available_seats": SEATS,
            "price": PRICE,
            "sections": [{"name": "General", "price": PRICE, "total_seats": SEATS, "available_seats": SEATS}],
            "waiting_room": "general",
            "sale_opens_at": null,
            "max_tickets_per_user": null,
        })
    );
}

/// `available_seats` counts as the concert's dates list does: a hold takes its seats off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dates_available_seats_drop_when_seats_are_held() {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(SEATS, PRICE).await;
    let (buyer, queue_token) = app.admitted_buyer().await;
    app.hold_ok(&buyer, &queue_token, &date, &[1, 2]).await;

    let url = format!("/api/v1/dates/{date}");
    let one = eventually("the date to count the hold", || async {
        let body = assert_json(app.get(&url).send().await.unwrap(), 200).await;
        (body["available_seats"] == json!(SEATS - 2)).then_some(body)
    })
    .await;
    assert_eq!(one["total_seats"], json!(SEATS), "{one}");
    let listed = app
        .get(&format!("/api/v1/concerts/{concert}/dates"))
        .send()
        .await
        .unwrap();
    let listed = assert_json(listed, 200).await;
    assert_eq!(
        listed["dates"][0]["available_seats"], one["available_seats"],
        "the list and the date agree: {listed}"
    );
}

/// An unknown date and an id that is no date id are both 404 `not_found`, and the date's seat
/// routes beside it still ask for their credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_malformed_date_is_not_found() {
    let app = spawn_app().await;
    let (concert, date) = app.concert_with_date(SEATS, PRICE).await;
    for id in [
        "d_999".to_owned(),
        "d_0".to_owned(),
        "d_01".to_owned(),
        "d_".to_owned(),
        "d_-1".to_owned(),
        "d_99999999999999999999".to_owned(),
        "x".to_owned(),
        concert.clone(),
        "%E2%9C%93".to_owned(),
    ] {
        let response = app
            .get(&format!("/api/v1/dates/{id}"))
            .send()
            .await
            .unwrap();
        assert_problem_for(response, 404, "not_found", &id).await;
    }
    for path in ["seats", "seats/events"] {
        let response = app
            .get(&format!("/api/v1/dates/{date}/{path}"))
            .send()
            .await
            .unwrap();
        assert_problem_for(response, 401, "unauthenticated", path).await;
    }
}
