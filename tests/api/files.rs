//! The files the server writes hold password hashes, sessions and balances: only the server's
//! own user may read them, whatever the process's umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::helpers::*;

/// Every file and directory under `dir` (not `dir` itself), with its permission bits.
fn modes_under(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let metadata = std::fs::symlink_metadata(entry.path()).unwrap();
            let mode = metadata.permissions().mode() & 0o777;
            if metadata.is_dir() {
                pending.push(entry.path());
            }
            found.push((entry.path(), metadata.is_dir(), mode));
        }
    }
    found
}

fn assert_private(dir: &Path) {
    let found = modes_under(dir);
    let loose: Vec<String> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(
        loose.is_empty(),
        "files must be 0600 and directories 0700; these are not: {loose:#?}"
    );
}

fn data_dir(app: &TestApp) -> PathBuf {
    app.settings
        .storage
        .snapshot_dir
        .parent()
        .expect("the test's data directory")
        .to_owned()
}

/// The event log and history databases (with their `-wal` and `-shm`), the lock file,
/// snapshots and backups are 0600, the directories the server makes 0700.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_the_server_writes_is_readable_by_its_user_only() {
    let app = spawn_app_with(|settings| {
        // A directory the server has to make for the log.
        let dir = settings.storage.sqlite_path.parent().unwrap().to_owned();
        settings.storage.sqlite_path = dir.join("log").join("boxoffice.db");
    })
    .await;
    let (buyer, _) = app.admitted_buyer().await;
    app.charge_ok(&buyer, 1_000).await;
    let response = app
        .post("/api/v1/admin/backups")
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_json(response, 201).await;

    let dir = data_dir(&app);
    let names: Vec<String> = modes_under(&dir)
        .iter()
        .map(|(path, _, _)| path.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    for expected in [
        "log",
        "log/boxoffice.db",
        "log/boxoffice.db-wal",
        "log/boxoffice.db-shm",
        "log/boxoffice.db.lock",
        "log/boxoffice.history.db",
        "log/boxoffice.history.db-wal",
        "snapshots",
        "backups",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:#?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("snapshots/") && n.ends_with(".bin")),
        "{names:#?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("backups/") && n.ends_with("boxoffice.history.db")),
        "{names:#?}"
    );
    assert_private(&dir);
}

/// Files and directories left with looser modes (by an older build, or a copy) are tightened
/// when the server opens them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looser_modes_found_at_start_are_tightened() {
    let app = spawn_app_with(|settings| {
        let loose = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let log = &settings.storage.sqlite_path;
        std::fs::write(log, b"").unwrap();
        loose(log, 0o644);
        let mut wal = log.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::write(&wal, b"").unwrap();
        loose(Path::new(&wal), 0o666);
        std::fs::create_dir_all(&settings.storage.snapshot_dir).unwrap();
        loose(&settings.storage.snapshot_dir, 0o755);
    })
    .await;
    let buyer = app.new_buyer().await;
    app.charge_ok(&buyer, 1_000).await;
    assert_private(&data_dir(&app));
}
