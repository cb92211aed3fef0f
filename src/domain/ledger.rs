//! Prepaid balances and their history. A balance is never negative, never above
//! `max_balance`, and always equals charges − payments + refunds (invariant 2).

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub history: Vec<LedgerEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    policy: BalancePolicy,
    accounts: HashMap<UserId, Account>,
    next_charge: u64,
    next_entry: u64,
}

impl Ledger {
    pub fn new(policy: BalancePolicy) -> Self {
        Self {
            policy,
            accounts: HashMap::new(),
            next_charge: 1,
            next_entry: 1,
        }
    }

    pub fn balance(&self, user: UserId) -> u64 {
        self.accounts.get(&user).map_or(0, |a| a.balance)
    }

    /// History entries over every account.
    pub fn entry_count(&self) -> usize {
        self.accounts.values().map(|a| a.history.len()).sum()
    }

    pub fn account(&self, user: UserId) -> Option<&Account> {
        self.accounts.get(&user)
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
        let (user, kind, signed_amount, at, reference) = match event {
            Event::BalanceCharged {
                charge,
                user,
                amount,
                at,
                ..
            } => {
                assert_eq!(charge.0, self.next_charge, "charges apply in decided order");
                self.next_charge += 1;
                (
                    *user,
                    EntryKind::Charge,
                    *amount as i128,
                    *at,
                    EntryReference::Charge(*charge),
                )
            }
            Event::PaymentCompleted {
                reservation,
                user,
                amount,
                at,
                ..
            } => (
                *user,
                EntryKind::Payment,
                -(*amount as i128),
                *at,
                EntryReference::Reservation(*reservation),
            ),
            _ => return None,
        };
        let account = self.accounts.entry(user).or_default();
        let balance_after = u64::try_from(account.balance as i128 + signed_amount)
            .expect("decide checked that the balance stays in range");
        debug_assert!(matches!(
            event,
            Event::BalanceCharged { balance_after: b, .. } | Event::PaymentCompleted { balance_after: b, .. }
                if *b == balance_after
        ));
        account.balance = balance_after;
        account.history.push(LedgerEntry {
            entry_id: self.next_entry,
            kind,
            amount: signed_amount.unsigned_abs() as u64,
            balance_after,
            at,
            reference,
        });
        self.next_entry += 1;
        Some(balance_after)
    }

    /// Balances of every account; used by tests and the admin view.
    pub fn accounts(&self) -> impl Iterator<Item = (&UserId, &Account)> {
        self.accounts.iter()
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
            seats: vec![SeatNo(1)],
            amount,
            balance_after: 0,
            at: Timestamp(1),
            idempotency: None,
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
        let history = &l.account(ALICE).unwrap().history;
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].kind, EntryKind::Payment);
        assert_eq!(history[1].amount, 100);
        assert_eq!(history[1].balance_after, 0);
    }
}
