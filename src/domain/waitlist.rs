//! A date's waiting list: buyers who found it sold out, in the order they joined. Seats that
//! come back go to the first entry they fit before anyone else can hold them: the date offers
//! them as a hold of that entry's user (`SeatMap::offer_hold`), and the entry is `offered`
//! until that hold is paid (`purchased`), runs out or is cancelled (`lapsed`), or the user
//! leaves (`left`).
//!
//! The list keeps only the entries still on it; an entry that has ended lives on in the
//! history the store keeps (`WaitlistChange`), where its status is read beside its offer's
//! reservation.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::events::Event;
use super::types::*;

/// Names an entry of a date's list: the date, and the entry's place in the order of joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    pub date: DateId,
    pub seq: u32,
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w_{}_{}", self.date.0, self.seq)
    }
}

impl std::str::FromStr for EntryId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let rest = s.strip_prefix("w_").ok_or(())?;
        let (date, seq) = rest.split_once('_').ok_or(())?;
        Ok(Self {
            date: DateId(parse_decimal(date)?),
            seq: parse_decimal(seq)?,
        })
    }
}

/// An entry still on the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    pub user: UserId,
    pub quantity: u32,
    /// The section (by index) its offers come from; any when `None`.
    pub section: Option<u32>,
    pub joined_at: Timestamp,
    /// The hold offered to it, once offered.
    pub offer: Option<ReservationId>,
}

impl Entry {
    /// The entry a `WaitlistJoined` event puts on the list.
    pub fn joined_by(event: &Event) -> Option<Self> {
        let Event::WaitlistJoined {
            entry,
            user,
            quantity,
            section,
            at,
        } = event
        else {
            return None;
        };
        Some(Self {
            id: *entry,
            user: *user,
            quantity: *quantity,
            section: *section,
            joined_at: *at,
            offer: None,
        })
    }
}

/// What a client sees of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    Waiting,
    Offered,
    Purchased,
    Lapsed,
    Left,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Waiting => "waiting",
            EntryStatus::Offered => "offered",
            EntryStatus::Purchased => "purchased",
            EntryStatus::Lapsed => "lapsed",
            EntryStatus::Left => "left",
        }
    }
}

/// What the store keeps of where an entry stands; an offered one's fate is its hold's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    Waiting,
    Offered,
    Left,
    Lapsed,
}

/// An entry as its user lists it: what it asked for, where it stands, and its offer's hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    pub entry: Entry,
    pub state: StoredState,
    pub offer: Option<super::seat_map::Reservation>,
}

impl ListedEntry {
    /// Its status at `now`: an offer is `offered` while its hold is live, `purchased` once
    /// paid (refunded later or not), `lapsed` once it expired or was cancelled.
    pub fn status_at(&self, now: Timestamp) -> EntryStatus {
        use super::seat_map::ReservationStatus;
        match self.state {
            StoredState::Waiting => EntryStatus::Waiting,
            StoredState::Left => EntryStatus::Left,
            StoredState::Lapsed => EntryStatus::Lapsed,
            StoredState::Offered => match self.offer.as_ref().map(|r| r.status_at(now)) {
                Some(ReservationStatus::Held) => EntryStatus::Offered,
                Some(ReservationStatus::Paid | ReservationStatus::Refunded) => {
                    EntryStatus::Purchased
                }
                Some(ReservationStatus::Expired | ReservationStatus::Cancelled) | None => {
                    EntryStatus::Lapsed
                }
            },
        }
    }
}

/// How an event changes the entries a user can list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitlistChange {
    Joined(Entry),
    /// Offered the hold `reservation`; what becomes of the offer is read from that
    /// reservation.
    Offered {
        id: EntryId,
        reservation: ReservationId,
    },
    Left(EntryId),
    /// The date was called off: its waiting entries lapse (offered ones lapse with their
    /// cancelled holds).
    DateCancelled(DateId),
}

impl WaitlistChange {
    pub fn made_by(event: &Event) -> Option<Self> {
        Some(match event {
            Event::WaitlistJoined { .. } => Self::Joined(Entry::joined_by(event)?),
            Event::HoldPlaced {
                reservation,
                offer: Some(entry),
                ..
            } => Self::Offered {
                id: EntryId {
                    date: reservation.date,
                    seq: *entry,
                },
                reservation: *reservation,
            },
            Event::WaitlistLeft { entry, .. } => Self::Left(*entry),
            Event::DateCancelled { date, .. } => Self::DateCancelled(*date),
            _ => return None,
        })
    }
}

/// A date's list: the entries on it, in the order they joined.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Waitlist {
    live: BTreeMap<u32, Entry>,
    /// Entries made so far; numbers are dense and start at 1.
    joined: u32,
    /// Offered entries, by the sequence number of their hold.
    offers: HashMap<u32, u32>,
    /// When each user's latest entry lapsed, for the wait before joining again.
    lapsed_at: HashMap<UserId, Timestamp>,
    /// Something happened that may let an entry be offered: seats came back, an entry joined,
    /// left or lapsed. Derived: set again when a snapshot is restored.
    #[serde(skip)]
    pending: bool,
}

impl PartialEq for Waitlist {
    fn eq(&self, other: &Self) -> bool {
        self.live == other.live
            && self.joined == other.joined
            && self.offers == other.offers
            && self.lapsed_at == other.lapsed_at
    }
}

impl Eq for Waitlist {}

impl Waitlist {
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Entries still waiting (not offered), in list order.
    pub fn waiting(&self) -> impl Iterator<Item = &Entry> {
        self.live.values().filter(|e| e.offer.is_none())
    }

    pub fn waiting_count(&self) -> usize {
        self.live.len() - self.offers.len()
    }

    pub fn entry(&self, seq: u32) -> Option<&Entry> {
        self.live.get(&seq)
    }

    /// The user's entry on the list, if any.
    pub fn entry_of(&self, user: UserId) -> Option<&Entry> {
        self.live.values().find(|e| e.user == user)
    }

    /// 1 for the first waiting entry; 0 for one offered or not on the list.
    pub fn position(&self, seq: u32) -> u32 {
        match self.live.get(&seq) {
            Some(entry) if entry.offer.is_none() => {
                self.live
                    .range(..seq)
                    .filter(|(_, e)| e.offer.is_none())
                    .count() as u32
                    + 1
            }
            _ => 0,
        }
    }

    pub fn next_seq(&self) -> Option<u32> {
        self.joined.checked_add(1)
    }

    pub fn lapsed_at(&self, user: UserId) -> Option<Timestamp> {
        self.lapsed_at.get(&user).copied()
    }

    /// The entry a held reservation was offered to.
    pub fn offered_to(&self, reservation_seq: u32) -> Option<u32> {
        self.offers.get(&reservation_seq).copied()
    }

    pub fn is_pending(&self) -> bool {
        self.pending && !self.live.is_empty()
    }

    pub fn settle_pending(&mut self) {
        self.pending = false;
    }

    /// Something may now be offered.
    pub fn wake(&mut self) {
        self.pending = true;
    }

    pub(super) fn join(&mut self, entry: Entry) {
        self.joined = entry.id.seq;
        self.live.insert(entry.id.seq, entry);
        self.pending = true;
    }

    /// Takes the entry off the list; returns its offer's hold, to be cancelled.
    pub(super) fn leave(&mut self, seq: u32) -> Option<ReservationId> {
        let entry = self.live.remove(&seq)?;
        self.pending = true;
        let offer = entry.offer?;
        self.offers.remove(&offer.seq);
        Some(offer)
    }

    pub(super) fn offered(&mut self, seq: u32, reservation: ReservationId) {
        if let Some(entry) = self.live.get_mut(&seq) {
            entry.offer = Some(reservation);
            self.offers.insert(reservation.seq, seq);
        }
    }

    /// The hold `reservation_seq` ended: paid (the entry is done) or let go of (it lapsed at
    /// `lapsed_at`).
    pub(super) fn offer_ended(&mut self, reservation_seq: u32, lapsed_at: Option<Timestamp>) {
        let Some(seq) = self.offers.remove(&reservation_seq) else {
            return;
        };
        if let Some(entry) = self.live.remove(&seq) {
            if let Some(at) = lapsed_at {
                self.lapsed_at.insert(entry.user, at);
            }
        }
        self.pending = true;
    }

    /// Every entry lapses at `at`: the date was called off.
    pub(super) fn lapse_all(&mut self, at: Timestamp) {
        for entry in std::mem::take(&mut self.live).into_values() {
            self.lapsed_at.insert(entry.user, at);
        }
        self.offers.clear();
    }
}
