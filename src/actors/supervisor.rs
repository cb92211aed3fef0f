//! No owner dies silently. Every owner is spawned linked to one `Supervisor`, and when an
//! owner fails (a panic in a handler, or an error returned from one) the supervisor stops the
//! whole process with `EXIT_OWNER_FAILED`, loudly, so the service manager starts it again and
//! recovery rebuilds every owner from its snapshot and the log.
//!
//! Why the process and not only the owner: a change that spans owners (a payment: the ledger
//! logs it, then the date applies it) can leave a failed owner's memory anywhere between two
//! events, and the others may already have acted on what it told them. Recovery from disk is the
//! one path that is known to give a consistent state, it is fast (snapshots plus a short log),
//! and every acknowledged change is on disk before it was acknowledged, so nothing a client was
//! told is lost. Rebuilding one owner in place would need a second, rarely exercised path to
//! the same guarantee.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

/// The exit code when an owner failed; distinct from a failed commit's (70).
pub const EXIT_OWNER_FAILED: i32 = 71;

/// Watches every owner; see the module docs for what it does when one fails.
pub struct Supervisor;

impl Supervisor {
    /// Starts the supervisor the owners are spawned under.
    pub async fn start() -> anyhow::Result<ActorRef<()>> {
        let (supervisor, _) = Actor::spawn(None, Supervisor, ()).await?;
        Ok(supervisor)
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _arguments: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A stopped owner (`ActorTerminated`) is the engine shutting down; only failures stop us.
        if let SupervisionEvent::ActorFailed(owner, error) = event {
            owner_failed(&owner, &error);
        }
        Ok(())
    }
}

fn owner_failed(owner: &ActorCell, error: &ActorProcessingErr) -> ! {
    let message = format!(
        "an owner failed ({}: {error}); stopping so that recovery rebuilds every owner from disk. \
         No acknowledged change is lost: start the server again (a service manager does so by itself)",
        owner.get_name().unwrap_or_else(|| owner.get_id().to_string())
    );
    tracing::error!(exit_code = EXIT_OWNER_FAILED, "{message}");
    eprintln!("boxoffice: {message}");
    std::process::exit(EXIT_OWNER_FAILED);
}

/// A fault for tests of the policy above, compiled only into debug builds: with
/// `BOXOFFICE_TEST_PANIC_ON_SEAT=N` in the environment, a date's actor panics right after it
/// has applied and logged a hold that includes seat `N`, before it answers.
#[cfg(debug_assertions)]
pub(crate) fn injected_panic_on_seats(seats: &[crate::domain::SeatNo]) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<u32>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("BOXOFFICE_TEST_PANIC_ON_SEAT")
            .ok()
            .and_then(|seat| seat.parse().ok())
    });
    if let Some(armed) = *armed {
        if seats.iter().any(|seat| seat.0 == armed) {
            panic!("injected panic: a hold of seat {armed} (BOXOFFICE_TEST_PANIC_ON_SEAT)");
        }
    }
}
