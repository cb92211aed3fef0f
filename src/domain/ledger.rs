//! Prepaid balances. A balance is never negative, never above `max_balance`, and always equals
//! charges − payments + refunds (invariant 2).
//!
//! The history behind a balance is not kept here: every charge and payment is an event, and
//! `LedgerEntry::made_by` turns it into its history entry, which the store keeps beside the event
//! (the log's sequence number is the entry's id). Memory holds one number per user.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::events::{Event, IdempotencyStamp};
use super::types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancePolicy {
    pub max_charge: u64,
    pub max_balance: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Charge,
    Payment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Charge => "charge",
            EntryKind::Payment => "payment",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryReference {
    Charge(ChargeId),
    Reservation(ReservationId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub entry_id: u64,
    pub kind: EntryKind,
    /// Always positive; `kind` gives the direction.
    pub amount: u64,
    pub balance_after: u64,
    pub at: Timestamp,
    pub reference: EntryReference,
}

impl LedgerEntry {
    /// The history entry a money event makes for its user, with `entry_id` as its id (the
    /// event's log sequence); `None` for other events.
    pub fn made_by(entry_id: u64, event: &Event) -> Option<(UserId, Self)> {
        let (user, kind, amount, balance_after, at, reference) = match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                balance_after,
                at,
                ..
            } => (
                *user,
                EntryKind::Charge,
                *amount,
                *balance_after,
                *at,
                EntryReference::Charge(*charge),
            ),
            Event::PaymentCompleted {
                reservation,
                user,
                amount,
                balance_after,
                at,
                ..
            } => (
                *user,
                EntryKind::Payment,
                *amount,
                *balance_after,
                *at,
                EntryReference::Reservation(*reservation),
            ),
            _ => return None,
        };
        Some((
            user,
            Self {
                entry_id,
                kind,
                amount,
                balance_after,
                at,
                reference,
            },
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    policy: BalancePolicy,
    balances: HashMap<UserId, u64>,
    next_charge: u64,
}

impl Ledger {
    pub fn new(policy: BalancePolicy) -> Self {
        Self {
            policy,
            balances: HashMap::new(),
            next_charge: 1,
        }
    }

    pub fn balance(&self, user: UserId) -> u64 {
        self.balances.get(&user).copied().unwrap_or(0)
    }

    /// Decides a top-up. `amount` is any integer the client sent, however large.
    pub fn charge(
        &self,
        user: UserId,
        amount: i128,
        now: Timestamp,
        idempotency: Option<IdempotencyStamp>,
    ) -> Result<Event, DomainError> {
        let max = self.policy.max_charge;
        let amount = u64::try_from(amount)
            .ok()
            .filter(|a| (1..=max).contains(a))
            .ok_or(DomainError::InvalidAmount { max })?;
        let max_balance = self.policy.max_balance;
        let balance_after = self
            .balance(user)
            .checked_add(amount)
            .filter(|b| *b <= max_balance)
            .ok_or(DomainError::BalanceLimit { max: max_balance })?;
        Ok(Event::BalanceCharged {
            charge: ChargeId(self.next_charge),
            user,
            amount,
            balance_after,
            at: now,
            idempotency,
        })
    }

    /// Decides the money side of a payment the seat map has prepared, and completes the
    /// event with the balance after it.
    pub fn settle_payment(&self, prepared: &Event) -> Result<Event, DomainError> {
        let Event::PaymentCompleted { user, amount, .. } = prepared else {
            return Err(DomainError::InvalidInput("not a payment".into()));
        };
        let balance = self.balance(*user);
        let balance_after =
            balance
                .checked_sub(*amount)
                .ok_or(DomainError::InsufficientBalance {
                    balance,
                    price: *amount,
                })?;
        let mut settled = prepared.clone();
        if let Event::PaymentCompleted {
            balance_after: slot,
            ..
        } = &mut settled
        {
            *slot = balance_after;
        }
        Ok(settled)
    }

    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }

    /// Limits come from configuration, not from a snapshot written under older settings.
    pub fn set_policy(&mut self, policy: BalancePolicy) {
        self.policy = policy;
    }

    /// Returns the balance right after the event for the events this ledger owns.
    pub fn apply(&mut self, event: &Event) -> Option<u64> {
        let (user, signed_amount) = match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                ..
            } => {
                assert_eq!(charge.0, self.next_charge, "charges apply in decided order");
                self.next_charge += 1;
                (*user, *amount as i128)
            }
            Event::PaymentCompleted { user, amount, .. } => (*user, -(*amount as i128)),
            _ => return None,
        };
        let balance = self.balances.entry(user).or_default();
        let balance_after = u64::try_from(*balance as i128 + signed_amount)
            .expect("decide checked that the balance stays in range");
        debug_assert!(matches!(
            event,
            Event::BalanceCharged { balance_after: b, .. } | Event::PaymentCompleted { balance_after: b, .. }
                if *b == balance_after
        ));
        *balance = balance_after;
        Some(balance_after)
    }

    /// Every user's balance; used by tests and the admin view.
    pub fn balances(&self) -> impl Iterator<Item = (&UserId, &u64)> {
        self.balances.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(1);

    fn ledger() -> Ledger {
        Ledger::new(BalancePolicy {
            max_charge: 1_000,
            max_balance: 1_500,
        })
    }

    fn charge(l: &mut Ledger, amount: i128) -> Result<u64, DomainError> {
        let e = l.charge(ALICE, amount, Timestamp(0), None)?;
        Ok(l.apply(&e).unwrap())
    }

    fn payment(amount: u64) -> Event {
        Event::PaymentCompleted {
            reservation: ReservationId {
                date: DateId(1),
                seq: 1,
            },
            user: ALICE,
            seats: smallvec::smallvec![SeatNo(1)],
            amount,
            balance_after: 0,
            at: Timestamp(1),
            idempotency: None,
            queue_token: None,
        }
    }

    #[test]
    fn charges_outside_one_to_max_charge_are_invalid_amounts() {
        let mut l = ledger();
        for bad in [0, -1, 1_001, 1 << 64, i128::MAX] {
            assert_eq!(
                charge(&mut l, bad),
                Err(DomainError::InvalidAmount { max: 1_000 })
            );
        }
        assert_eq!(l.balance(ALICE), 0);
    }

    #[test]
    fn a_balance_never_goes_above_max_balance() {
        let mut l = ledger();
        assert_eq!(charge(&mut l, 1_000), Ok(1_000));
        assert_eq!(
            charge(&mut l, 501),
            Err(DomainError::BalanceLimit { max: 1_500 })
        );
        assert_eq!(charge(&mut l, 500), Ok(1_500));
    }

    #[test]
    fn a_payment_larger_than_the_balance_is_refused() {
        let mut l = ledger();
        charge(&mut l, 100).unwrap();
        assert_eq!(
            l.settle_payment(&payment(101)),
            Err(DomainError::InsufficientBalance {
                balance: 100,
                price: 101
            })
        );
        let settled = l.settle_payment(&payment(100)).unwrap();
        assert_eq!(l.apply(&settled), Some(0));
        let (user, entry) = LedgerEntry::made_by(42, &settled).unwrap();
        assert_eq!(user, ALICE);
        assert_eq!(entry.entry_id, 42);
        assert_eq!(entry.kind, EntryKind::Payment);
        assert_eq!(entry.amount, 100);
        assert_eq!(entry.balance_after, 0);
        assert_eq!(
            entry.reference,
            EntryReference::Reservation(ReservationId {
                date: DateId(1),
                seq: 1
            })
        );
    }

    #[test]
    fn only_money_events_make_history_entries() {
        let charge = ledger().charge(ALICE, 5, Timestamp(9), None).unwrap();
        let (_, entry) = LedgerEntry::made_by(7, &charge).unwrap();
        assert_eq!(
            (entry.kind, entry.amount, entry.balance_after, entry.at),
            (EntryKind::Charge, 5, 5, Timestamp(9))
        );
        let cancel = Event::HoldCancelled {
            reservation: ReservationId {
                date: DateId(1),
                seq: 1,
            },
            at: Timestamp(0),
        };
        assert!(LedgerEntry::made_by(8, &cancel).is_none());
    }
}
