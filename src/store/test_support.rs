//! What the store's own tests share: an event to log, and a fresh place for a log.

use std::path::PathBuf;

use crate::domain::{ConcertId, Event};

/// A small event, distinct per `n`.
pub(crate) fn concert(n: u32) -> Event {
    Event::ConcertCreated {
        concert: ConcertId(n),
        title: format!("t{n}"),
        venue: "v".into(),
        room: None,
        max_tickets_per_user: None,
    }
}

/// `log.db` in an empty directory of its own, named after the test.
pub(crate) fn scratch_log(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("boxoffice-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("log.db")
}
