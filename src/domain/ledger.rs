//! Prepaid balances. A balance is never negative, never above `max_balance`, and always equals
//! charges − payments + refunds (invariant 2).
//!
//! The history behind a balance is not kept here: every charge and payment is an event, and
//! `LedgerEntry::made_by` turns it into its history entries, which the store keeps beside the
//! event (numbered by the log's sequence number). Memory holds one number per user.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use smallvec::SmallVec;

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
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Charge => "charge",
            EntryKind::Payment => "payment",
            EntryKind::Refund => "refund",
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
    /// Entries one event may make: a date's cancellation refunds each of its at most 100,000
    /// seats' reservations.
    pub const PER_EVENT: u64 = 1 << 17;

    /// The id of the `index`th entry of the event logged as `seq`: ids follow the log.
    pub fn id_of(seq: u64, index: usize) -> u64 {
        seq * Self::PER_EVENT + index as u64
    }

    /// The history entries a money event makes, each for its user, numbered from the event's
    /// log sequence `seq` (`id_of`); none for other events. A refund of nothing (a free seat,
    /// or a fee of all of it) leaves no entry.
    pub fn made_by(seq: u64, event: &Event) -> SmallVec<[(UserId, Self); 1]> {
        let entry = |user, kind, amount, balance_after, at, reference| {
            (
                user,
                Self {
                    entry_id: Self::id_of(seq, 0),
                    kind,
                    amount,
                    balance_after,
                    at,
                    reference,
                },
            )
        };
        match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                balance_after,
                at,
                ..
            } => smallvec::smallvec![entry(
                *user,
                EntryKind::Charge,
                *amount,
                *balance_after,
                *at,
                EntryReference::Charge(*charge),
            )],
            Event::PaymentCompleted {
                reservation,
                user,
                amount,
                balance_after,
                at,
                ..
            } => smallvec::smallvec![entry(
                *user,
                EntryKind::Payment,
                *amount,
                *balance_after,
                *at,
                EntryReference::Reservation(*reservation),
            )],
            Event::RefundCompleted {
                reservation,
                payer,
                amount,
                balance_after,
                at,
                ..
            } if *amount > 0 => smallvec::smallvec![entry(
                *payer,
                EntryKind::Refund,
                *amount,
                *balance_after,
                *at,
                EntryReference::Reservation(*reservation),
            )],
            Event::DateCancelled {
                date, at, refunds, ..
            } => refunds
                .iter()
                .filter(|refund| refund.amount > 0)
                .enumerate()
                .map(|(index, refund)| {
                    (
                        refund.payer,
                        Self {
                            entry_id: Self::id_of(seq, index),
                            kind: EntryKind::Refund,
                            amount: refund.amount,
                            balance_after: refund.balance_after,
                            at: *at,
                            reference: EntryReference::Reservation(ReservationId {
                                date: *date,
                                seq: refund.seq,
                            }),
                        },
                    )
                })
                .collect(),
            _ => SmallVec::new(),
        }
    }
}

fn overflow() -> DomainError {
    DomainError::InvalidInput("this refund would overflow a balance".into())
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

    /// Completes an event a date's seat map prepared that moves money: a payment, a refund or
    /// a cancellation.
    pub fn settle(&self, prepared: &Event) -> Result<Event, DomainError> {
        match prepared {
            Event::PaymentCompleted { .. } => self.settle_payment(prepared),
            Event::RefundCompleted { .. } => self.settle_refund(prepared),
            Event::DateCancelled { .. } => self.settle_cancellation(prepared),
            _ => Err(DomainError::InvalidInput(
                "only payments, refunds and cancellations are settled".into(),
            )),
        }
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

    /// Completes a refund the seat map has prepared with the payer's balance after the credit
    /// and the holder's (the same user's, or unchanged). The credit may take the balance above
    /// `max_balance`, which bounds charges only.
    pub fn settle_refund(&self, prepared: &Event) -> Result<Event, DomainError> {
        let mut settled = prepared.clone();
        let Event::RefundCompleted {
            payer,
            holder,
            amount,
            balance_after,
            holder_balance,
            ..
        } = &mut settled
        else {
            return Err(DomainError::InvalidInput("not a refund".into()));
        };
        *balance_after = self.credited(*payer, *amount)?;
        *holder_balance = if holder == payer {
            *balance_after
        } else {
            self.balance(*holder)
        };
        Ok(settled)
    }

    /// Completes a date's cancellation the seat map has prepared with each payer's balance
    /// after each refund, in order.
    pub fn settle_cancellation(&self, prepared: &Event) -> Result<Event, DomainError> {
        let mut settled = prepared.clone();
        let Event::DateCancelled { refunds, .. } = &mut settled else {
            return Err(DomainError::InvalidInput("not a cancellation".into()));
        };
        let mut running: HashMap<UserId, u64> = HashMap::new();
        for refund in refunds.iter_mut() {
            let before = *running
                .entry(refund.payer)
                .or_insert_with(|| self.balance(refund.payer));
            let after = before.checked_add(refund.amount).ok_or_else(overflow)?;
            running.insert(refund.payer, after);
            refund.balance_after = after;
        }
        Ok(settled)
    }

    fn credited(&self, user: UserId, amount: u64) -> Result<u64, DomainError> {
        self.balance(user).checked_add(amount).ok_or_else(overflow)
    }

    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }

    /// Limits come from configuration, not from a snapshot written under older settings.
    pub fn set_policy(&mut self, policy: BalancePolicy) {
        self.policy = policy;
    }

    /// Applies the events this ledger owns; says whether `event` was one.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                balance_after,
                ..
            } => {
                assert_eq!(charge.0, self.next_charge, "charges apply in decided order");
                self.next_charge += 1;
                self.set(*user, *amount as i128, *balance_after);
            }
            Event::PaymentCompleted {
                user,
                amount,
                balance_after,
                ..
            } => self.set(*user, -(*amount as i128), *balance_after),
            Event::RefundCompleted {
                payer,
                amount,
                balance_after,
                ..
            } => self.set(*payer, *amount as i128, *balance_after),
            Event::DateCancelled { refunds, .. } => {
                for refund in refunds {
                    self.set(refund.payer, refund.amount as i128, refund.balance_after);
                }
            }
            _ => return false,
        }
        true
    }

    /// Moves `user`'s balance by `signed_amount`; the event that does it carries the result.
    fn set(&mut self, user: UserId, signed_amount: i128, decided: u64) {
        let balance = self.balances.entry(user).or_default();
        let balance_after = u64::try_from(*balance as i128 + signed_amount)
            .expect("decide checked that the balance stays in range");
        debug_assert_eq!(balance_after, decided);
        *balance = balance_after;
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
        assert!(l.apply(&e));
        Ok(l.balance(ALICE))
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

    fn refund(holder: UserId, payer: UserId, amount: u64) -> Event {
        Event::RefundCompleted {
            reservation: ReservationId {
                date: DateId(1),
                seq: 1,
            },
            holder,
            payer,
            seats: smallvec::smallvec![SeatNo(1)],
            amount,
            fee: 77,
            balance_after: 0,
            holder_balance: 0,
            at: Timestamp(5),
            idempotency: None,
        }
    }

    #[test]
    fn a_refund_credits_the_payer_above_max_balance_and_writes_a_refund_entry() {
        let mut l = ledger();
        charge(&mut l, 1_000).unwrap();
        charge(&mut l, 500).unwrap();
        assert_eq!(l.balance(ALICE), 1_500);
        let settled = l.settle_refund(&refund(UserId(2), ALICE, 700)).unwrap();
        assert!(l.apply(&settled));
        assert_eq!(
            l.balance(ALICE),
            2_200,
            "above max_balance: the cap bounds charges"
        );
        assert_eq!(l.balance(UserId(2)), 0, "the holder is not credited");
        let Event::RefundCompleted {
            balance_after,
            holder_balance,
            ..
        } = &settled
        else {
            unreachable!()
        };
        assert_eq!((*balance_after, *holder_balance), (2_200, 0));
        let (user, entry) = LedgerEntry::made_by(9, &settled)[0].clone();
        assert_eq!(
            (user, entry.kind, entry.amount),
            (ALICE, EntryKind::Refund, 700)
        );
        assert!(LedgerEntry::made_by(10, &refund(ALICE, ALICE, 0)).is_empty());
        let own = l.settle_refund(&refund(ALICE, ALICE, 100)).unwrap();
        assert!(matches!(
            own,
            Event::RefundCompleted {
                balance_after: 2_300,
                holder_balance: 2_300,
                ..
            }
        ));
    }

    #[test]
    fn a_cancellation_credits_each_payer_in_order_with_an_entry_per_refund() {
        let mut l = ledger();
        charge(&mut l, 100).unwrap();
        let bob = UserId(2);
        let refund = |seq, payer, amount| crate::domain::CancellationRefund {
            seq,
            payer,
            amount,
            balance_after: 0,
        };
        let prepared = Event::DateCancelled {
            date: DateId(3),
            at: Timestamp(9),
            refunds: vec![
                refund(1, ALICE, 50),
                refund(2, bob, 0),
                refund(4, ALICE, 2_000),
            ],
            cancelled_holds: vec![3],
        };
        let settled = l.settle_cancellation(&prepared).unwrap();
        let Event::DateCancelled { refunds, .. } = &settled else {
            unreachable!()
        };
        let after: Vec<u64> = refunds.iter().map(|r| r.balance_after).collect();
        assert_eq!(after, vec![150, 0, 2_150]);
        assert!(l.apply(&settled));
        assert_eq!((l.balance(ALICE), l.balance(bob)), (2_150, 0));
        let entries = LedgerEntry::made_by(5, &settled);
        let ids: Vec<(UserId, u64, u64)> = entries
            .iter()
            .map(|(user, e)| (*user, e.entry_id, e.amount))
            .collect();
        assert_eq!(
            ids,
            vec![
                (ALICE, LedgerEntry::id_of(5, 0), 50),
                (ALICE, LedgerEntry::id_of(5, 1), 2_000)
            ],
            "no entry for a refund of nothing; ids stay below the next event's"
        );
        assert!(LedgerEntry::id_of(5, 99_999) < LedgerEntry::id_of(6, 0));
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
        assert!(l.apply(&settled));
        assert_eq!(l.balance(ALICE), 0);
        let (user, entry) = LedgerEntry::made_by(42, &settled)[0].clone();
        assert_eq!(user, ALICE);
        assert_eq!(entry.entry_id, LedgerEntry::id_of(42, 0));
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
        let (_, entry) = LedgerEntry::made_by(7, &charge)[0].clone();
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
        assert!(LedgerEntry::made_by(8, &cancel).is_empty());
    }
}
