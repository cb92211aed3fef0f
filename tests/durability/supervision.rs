//! No owner dies silently: a panic in a date's actor stops the process loudly (exit code 71),
//! no request waits past its timeout for the dead owner, and a restart recovers every
//! acknowledged change. The panic comes from a fault compiled only into debug builds.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::server::{data_dir, Api, Server};
use super::{bearer, observable_state, some_history};

const EXIT_OWNER_FAILED: i32 = 71;
/// A seat `some_history` leaves free on its 50-seat date.
const FAULTY_SEAT: u64 = 49;

fn seat_status(state: &Value, seat: u64) -> String {
    state["seats"]["seats"]
        .as_array()
        .expect("the listing has seats")
        .iter()
        .find(|s| s["seat_no"] == seat)
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .expect("the seat is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_date_actor_stops_the_process_loudly_and_loses_nothing_acknowledged() {
    let dir = data_dir("owner-panic");
    let mut server = Server::start(
        &dir,
        &[("BOXOFFICE_TEST_PANIC_ON_SEAT", FAULTY_SEAT.to_string())],
    );
    let api = Api::new(&server.base);
    let (date, sessions, keyed) = some_history(&api).await;
    let before = observable_state(&api, &date, &sessions).await;
    assert_eq!(seat_status(&before, FAULTY_SEAT), "available");

    let cy = api.new_user("cyd").await;
    let token = api.admitted(&cy).await.unwrap();
    let auth = bearer(&cy);
    let sent = Instant::now();
    let fatal = api.hold(&cy, &token, &date, FAULTY_SEAT).await;
    // The owner never answered: the client sees the connection end, not a hold.
    assert!(
        fatal
            .as_ref()
            .is_none_or(|(status, _)| !status.is_success()),
        "the hold that panicked its owner was not acknowledged: {fatal:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "the request ended within the call timeout, not after {:?}",
        sent.elapsed()
    );
    let code = server.wait_for_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(EXIT_OWNER_FAILED),
        "a failed owner stops the process with its own exit code; output:\n{}",
        server.output()
    );
    let output = server.output();
    assert!(
        output.contains("an owner failed") && output.contains("injected panic"),
        "the log says which owner failed and why:\n{output}"
    );

    // Recovery rebuilds every owner: what was acknowledged is all there, retries replay, and
    // the hold that was logged but never answered landed whole or not at all.
    let restarted = Server::start(&dir, &[]);
    let api = Api::new(&restarted.base);
    let after = observable_state(&api, &date, &sessions).await;
    assert_eq!(after["buyers"], before["buyers"]);
    for request in &keyed {
        request.assert_replayed(&api).await;
    }
    let (status, cy_reservations) = api
        .get("/api/v1/reservations", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let cy_reservations = cy_reservations["reservations"].as_array().unwrap();
    match seat_status(&after, FAULTY_SEAT).as_str() {
        "available" => assert!(cy_reservations.is_empty(), "{cy_reservations:?}"),
        "held" => {
            assert_eq!(cy_reservations.len(), 1, "{cy_reservations:?}");
            assert_eq!(cy_reservations[0]["seat_nos"], json!([FAULTY_SEAT]));
            assert_eq!(cy_reservations[0]["status"], "held");
        }
        other => panic!("seat {FAULTY_SEAT} is {other} after recovery"),
    }
    let mut seats_before = before["seats"].clone();
    let mut seats_after = after["seats"].clone();
    for seats in [&mut seats_before, &mut seats_after] {
        seats["seats"]
            .as_array_mut()
            .unwrap()
            .retain(|s| s["seat_no"] != FAULTY_SEAT);
    }
    assert_eq!(seats_after, seats_before, "every other seat is as it was");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
