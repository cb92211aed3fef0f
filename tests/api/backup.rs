//! Online backup and restore: a backup taken while serving restores, as it is, to exactly the
//! state it was taken at.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_to_the_state_it_was_taken_at() {
    let app = spawn_app().await;
    let (_, date) = app.concert_with_date(10, 1_500).await;
    let (buyer, queue) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 5_000).await;
    let paid = app.hold_ok(&buyer, &queue, &date, &[1, 2]).await;
    let paid = string_field(&paid, "reservation_id");
    assert_json(app.pay(&buyer, &queue, &paid).await, 201).await;
    let (holder, holder_queue) = app.admitted_buyer().await;
    let held = app.hold_ok(&holder, &holder_queue, &date, &[7]).await;
    let held = string_field(&held, "reservation_id");

    let admin = format!("Bearer {}", app.admin_token);
    let response = app
        .post("/api/v1/admin/backups")
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let report = assert_json(response, 201).await;
    let dir = PathBuf::from(string_field(&report, "backup_dir"));
    assert!(dir.join("boxoffice.db").is_file(), "{report}");
    assert!(dir.join("boxoffice.history.db").is_file(), "{report}");
    let snapshots: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(
        snapshots.len() as u64,
        u64_field(&report, "snapshot_files"),
        "{report}"
    );
    assert!(
        !snapshots.is_empty(),
        "every owner snapshots before the copy"
    );
    assert!(u64_field(&report, "log_sequence") > 0);

    // After the backup: not in it.
    app.charge_ok(&buyer, 777).await;
    let response = app
        .delete(&format!("/api/v1/reservations/{held}"))
        .session(&holder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // Restore: a new server started on the backup's files, as they are.
    let restored = spawn_app_with(|settings| {
        settings.storage.sqlite_path = dir.join("boxoffice.db");
        settings.storage.snapshot_dir = dir.join("snapshots");
    })
    .await;
    let buyer_again = Buyer {
        token: string_field(
            &assert_json(restored.sign_in(&buyer.username, PASSWORD).await, 201).await,
            "session_token",
        ),
        ..buyer.clone()
    };
    assert_eq!(restored.balance(&buyer_again).await, 5_000 - 3_000);
    assert_eq!(
        restored.reservation_status(&buyer_again, &paid).await,
        "paid"
    );
    let holder_again = Buyer {
        token: string_field(
            &assert_json(restored.sign_in(&holder.username, PASSWORD).await, 201).await,
            "session_token",
        ),
        ..holder.clone()
    };
    assert_eq!(
        restored.reservation_status(&holder_again, &held).await,
        "held",
        "the cancel came after the backup"
    );
    let (reader, reader_queue) = restored.admitted_buyer().await;
    let seats = restored.seat_statuses(&reader, &reader_queue, &date).await;
    assert_eq!(seats[&1], "sold");
    assert_eq!(seats[&2], "sold");
    assert_eq!(seats[&7], "held");
    assert_eq!(seats[&3], "available");
    let stats = restored.stats().await;
    assert_eq!(stats["seats_sold"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_need_the_admin_token_and_never_overwrite_each_other() {
    let app = spawn_app().await;
    let response = app.post("/api/v1/admin/backups").send().await.unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    let admin = format!("Bearer {}", app.admin_token);
    let mut dirs = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let response = app
            .post("/api/v1/admin/backups")
            .header("authorization", &admin)
            .send()
            .await
            .unwrap();
        let report = assert_json(response, 201).await;
        assert!(dirs.insert(string_field(&report, "backup_dir")), "{report}");
    }
}
