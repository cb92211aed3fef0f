//! The seam between owners and the event log. Owners hand every event they apply to the sink,
//! in the order they applied it; the sink gives it its global sequence number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::domain::Event;

#[derive(Clone, Default)]
pub struct EventSink {
    sequence: Arc<AtomicU64>,
}

impl EventSink {
    /// Records an applied event and returns its sequence number.
    pub fn record(&self, event: &Event) -> u64 {
        let seq = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::trace!(seq, kind = event.kind(), "event");
        seq
    }

    /// The sequence number of the newest recorded event.
    pub fn last_sequence(&self) -> u64 {
        self.sequence.load(Ordering::SeqCst)
    }
}
