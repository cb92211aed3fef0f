//! A recorded history of real clients against the real binary, and its check by stateright's
//! linearizability tester (an implementation of Wing–Gong–Lowe that this project did not write).
//!
//! Linearizability is local: a history is linearizable when its projection onto every object is.
//! The objects are each seat of the date (hold / cancel / pay / refund / read) and each user's
//! balance (charge / pay / refund / read). A payment or a refund touches a seat and a balance, and
//! a seat listing reads every seat at once, so checking the projections is necessary rather than
//! sufficient for the whole; it is what catches a lost write, a seat sold twice or a read of a
//! change that a crash then took back.
//!
//! An operation whose answer never came (the server was killed under it) stays in flight: the
//! tester may place it anywhere after its start or leave it out, exactly the two fates a request
//! has when the process dies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use todc_utils::linearizability::history::{Action, History as Actions};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Hold {
        seat: u32,
    },
    Cancel {
        seat: u32,
        reservation: String,
    },
    Pay {
        seat: u32,
        reservation: String,
        price: u64,
    },
    Refund {
        seat: u32,
        reservation: String,
        credit: u64,
    },
    Charge {
        amount: u64,
    },
    ReadSeats,
    ReadBalance,
}

/// What it was answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Held {
        reservation: String,
    },
    Cancelled,
    Paid {
        balance: u64,
    },
    Refunded {
        balance: u64,
    },
    Charged {
        balance: u64,
    },
    /// Seat statuses in seat order, seat 1 first.
    Seats(Vec<String>),
    Balance(u64),
    /// A 4xx or 503 with its error code.
    Refused {
        status: u16,
        code: String,
    },
}

/// One request: who sent it, what, what came back, and where its start and end fall in one
/// total order of all starts and ends (a single counter taken under one lock), so that "A ended
/// before B started" is `a.returned < b.invoked`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub client: u32,
    pub user: u32,
    pub op: Op,
    pub invoked: u64,
    /// `None`: no answer came; the request may or may not have taken effect.
    pub returned: Option<u64>,
    pub ret: Option<Ret>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub seats: u32,
    pub entries: Vec<Entry>,
    /// Where each SIGKILL falls in the order of starts and ends: a request left unanswered by
    /// one ended there, whatever its fate.
    pub kills: Vec<u64>,
}

/// `balance.max_balance` as the recording server was configured.
pub const MAX_BALANCE: u64 = 100_000_000;

/// The codes an answer may carry without saying anything about the object: the request was
/// turned away before it reached the seat or the balance (its queue token, the user's limits,
/// the server's load), so it changed nothing and may sit anywhere in the order.
const BESIDE_THE_POINT: &[&str] = &[
    "queue_token_invalid",
    "queue_token_expired",
    "not_admitted",
    "hold_limit",
    "rehold_cooldown",
    "overloaded",
    "rate_limited",
];

fn beside_the_point(ret: &Ret) -> bool {
    matches!(ret, Ret::Refused { code, .. } if BESIDE_THE_POINT.contains(&code.as_str()))
}

fn refused_with(ret: &Ret, expected: &str) -> bool {
    matches!(ret, Ret::Refused { code, .. } if code == expected)
}

/// An object of the contract, one step at a time.
pub trait Contract: Clone + Ord + std::fmt::Debug {
    type Op: Clone + std::fmt::Debug;
    type Ret: Clone + std::fmt::Debug + PartialEq;

    /// Whether `op` may be answered `ret` from this state; if so, takes its effect.
    fn answered(&mut self, op: &Self::Op, ret: &Self::Ret) -> bool;

    /// The effect of `op` when it takes effect without anyone seeing the answer.
    fn took_effect(&mut self, op: &Self::Op);
}

/// An answer, or none: the server was killed while the request was in it.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<R> {
    Known(R),
    Lost,
}

/// The states an object may be in. A request the kill left unanswered either took effect
/// before the kill or never did; the checker sees it ended at the kill with `Answer::Lost`, and
/// this spec keeps both fates until later answers rule one out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Possible<C>(Vec<C>);

impl<C: Contract> Possible<C> {
    fn after(&self, op: &C::Op, ret: &Answer<C::Ret>) -> Self {
        let mut next = Vec::with_capacity(self.0.len() * 2);
        for state in &self.0 {
            match ret {
                Answer::Known(ret) => {
                    let mut state = state.clone();
                    if state.answered(op, ret) {
                        next.push(state);
                    }
                }
                Answer::Lost => {
                    let mut changed = state.clone();
                    changed.took_effect(op);
                    next.push(state.clone());
                    next.push(changed);
                }
            }
        }
        next.sort_unstable();
        next.dedup();
        Possible(next)
    }
}

/// The checker's view of an object: operations carry their answers.
struct Spec<C>(std::marker::PhantomData<C>);

impl<C: Contract + Default + std::hash::Hash> Specification for Spec<C> {
    type State = Possible<C>;
    type Operation = (C::Op, Answer<C::Ret>);

    fn init() -> Possible<C> {
        Possible(vec![C::default()])
    }

    fn apply((op, ret): &Self::Operation, state: &Possible<C>) -> (bool, Possible<C>) {
        let next = state.after(op, ret);
        (!next.0.is_empty(), next)
    }
}

/// One seat as the contract describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seat {
    #[default]
    Available,
    /// `None`: held by a request whose answer never came, so nobody knows the reservation.
    Held(Option<String>),
    Sold(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatOp {
    Hold,
    Cancel(String),
    Pay(String),
    Refund(String),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatRet {
    Answer(Ret),
    Status(String),
}

impl Seat {
    fn status(&self) -> &'static str {
        match self {
            Seat::Available => "available",
            Seat::Held(_) => "held",
            Seat::Sold(_) => "sold",
        }
    }

    fn held_as(&self, reservation: &str) -> bool {
        matches!(self, Seat::Held(Some(r)) if r == reservation)
    }

    fn sold_as(&self, reservation: &str) -> bool {
        matches!(self, Seat::Sold(r) if r == reservation)
    }
}

impl Contract for Seat {
    type Op = SeatOp;
    type Ret = SeatRet;

    fn took_effect(&mut self, op: &SeatOp) {
        let next = match (op, &*self) {
            (SeatOp::Hold, Seat::Available) => Some(Seat::Held(None)),
            (SeatOp::Cancel(r), s) if s.held_as(r) => Some(Seat::Available),
            (SeatOp::Pay(r), s) if s.held_as(r) => Some(Seat::Sold(r.clone())),
            (SeatOp::Refund(r), s) if s.sold_as(r) => Some(Seat::Available),
            _ => None,
        };
        if let Some(next) = next {
            *self = next;
        }
    }

    fn answered(&mut self, op: &SeatOp, ret: &SeatRet) -> bool {
        let answer = match ret {
            SeatRet::Status(status) => return *op == SeatOp::Read && status == self.status(),
            SeatRet::Answer(answer) => answer,
        };
        if beside_the_point(answer) {
            return true;
        }
        match op {
            SeatOp::Hold => match answer {
                Ret::Held { reservation } if *self == Seat::Available => {
                    *self = Seat::Held(Some(reservation.clone()));
                    true
                }
                _ => refused_with(answer, "seat_unavailable") && *self != Seat::Available,
            },
            SeatOp::Cancel(r) => match answer {
                Ret::Cancelled if self.held_as(r) => {
                    *self = Seat::Available;
                    true
                }
                _ => refused_with(answer, "reservation_not_held") && !self.held_as(r),
            },
            SeatOp::Pay(r) => match answer {
                Ret::Paid { .. } if self.held_as(r) => {
                    *self = Seat::Sold(r.clone());
                    true
                }
                // The balance's projection judges this one; the hold stays as it was.
                _ if refused_with(answer, "insufficient_balance") => true,
                _ if refused_with(answer, "already_paid") => self.sold_as(r),
                _ => {
                    (refused_with(answer, "reservation_not_held")
                        || refused_with(answer, "hold_expired"))
                        && !self.held_as(r)
                }
            },
            SeatOp::Refund(r) => match answer {
                Ret::Refunded { .. } if self.sold_as(r) => {
                    *self = Seat::Available;
                    true
                }
                _ => refused_with(answer, "reservation_not_paid") && !self.sold_as(r),
            },
            SeatOp::Read => false,
        }
    }
}

/// One user's balance as a bank account.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Account {
    balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountOp {
    Charge(u64),
    Pay(u64),
    Refund(u64),
    Read,
}

impl Contract for Account {
    type Op = AccountOp;
    type Ret = Ret;

    /// (A payment or refund refused for its seat's sake is the other fate, no effect.)
    fn took_effect(&mut self, op: &AccountOp) {
        match *op {
            AccountOp::Charge(amount) if self.balance + amount <= MAX_BALANCE => {
                self.balance += amount
            }
            AccountOp::Pay(price) if self.balance >= price => self.balance -= price,
            AccountOp::Refund(credit) => self.balance += credit,
            _ => {}
        }
    }

    fn answered(&mut self, op: &AccountOp, ret: &Ret) -> bool {
        if beside_the_point(ret) {
            return true;
        }
        match (op, ret) {
            (AccountOp::Read, Ret::Balance(b)) => *b == self.balance,
            (AccountOp::Charge(amount), Ret::Charged { balance }) => {
                let fits = self.balance + amount == *balance && *balance <= MAX_BALANCE;
                self.balance = *balance;
                fits
            }
            (AccountOp::Charge(amount), _) => {
                refused_with(ret, "balance_limit") && self.balance + amount > MAX_BALANCE
            }
            (AccountOp::Pay(price), Ret::Paid { balance }) => {
                let fits = self.balance.checked_sub(*price) == Some(*balance);
                self.balance = *balance;
                fits
            }
            (AccountOp::Pay(price), _) if refused_with(ret, "insufficient_balance") => {
                self.balance < *price
            }
            // Refused for its seat's sake (not held, already paid): the seat's projection
            // judges it, and the balance did not move.
            (AccountOp::Pay(_), Ret::Refused { .. }) => true,
            (AccountOp::Refund(credit), Ret::Refunded { balance }) => {
                let fits = self.balance + credit == *balance;
                self.balance = *balance;
                fits
            }
            (AccountOp::Refund(_), Ret::Refused { .. }) => true,
            _ => false,
        }
    }
}

/// The first object whose projection is not linearizable, with that projection.
#[derive(Debug)]
pub struct Violation {
    pub object: String,
    pub projection: Vec<String>,
}

/// An entry as one object sees it: the entry, its operation there, and its answer there.
type Share<'a, O, R> = (&'a Entry, O, Option<R>);

/// One object's share of an entry: its client, start, end, operation and answer.
type Projected<O, R> = (u32, u64, Option<u64>, O, Answer<R>);

fn linearizable<C>(ops: Vec<Projected<C::Op, C::Ret>>) -> bool
where
    C: Contract + Default + std::hash::Hash,
{
    if ops.is_empty() {
        return true;
    }
    // Starts and ends in their one total order; an end that never came is put last.
    let mut events: Vec<(u64, usize, bool)> = Vec::new();
    for (i, (_, invoked, returned, _, _)) in ops.iter().enumerate() {
        events.push((*invoked, i, true));
        events.push((returned.unwrap_or(u64::MAX), i, false));
    }
    events.sort_unstable();
    let actions = events
        .into_iter()
        .map(|(_, i, is_call)| {
            let (client, _, _, op, ret) = &ops[i];
            let operation = (op.clone(), ret.clone());
            let action = if is_call {
                Action::Call(operation)
            } else {
                Action::Response(operation)
            };
            (*client as usize, action)
        })
        .collect();
    WGLChecker::<Spec<C>>::is_linearizable(Actions::from_actions(actions))
}

impl History {
    /// When `e` ended, and with what: its answer, or the kill that came after its start.
    fn ended<R: Clone>(&self, e: &Entry, ret: Option<R>) -> (Option<u64>, Answer<R>) {
        match (e.returned, ret) {
            (Some(returned), Some(ret)) => (Some(returned), Answer::Known(ret)),
            _ => (
                self.kills.iter().copied().find(|k| *k > e.invoked),
                Answer::Lost,
            ),
        }
    }

    fn seat_projection(&self, seat: u32) -> Vec<Share<'_, SeatOp, SeatRet>> {
        self.entries
            .iter()
            .filter_map(|e| {
                let op = match &e.op {
                    Op::Hold { seat: s } if *s == seat => SeatOp::Hold,
                    Op::Cancel {
                        seat: s,
                        reservation,
                    } if *s == seat => SeatOp::Cancel(reservation.clone()),
                    Op::Pay {
                        seat: s,
                        reservation,
                        ..
                    } if *s == seat => SeatOp::Pay(reservation.clone()),
                    Op::Refund {
                        seat: s,
                        reservation,
                        ..
                    } if *s == seat => SeatOp::Refund(reservation.clone()),
                    Op::ReadSeats => SeatOp::Read,
                    _ => return None,
                };
                let ret = e.ret.as_ref().map(|ret| match ret {
                    Ret::Seats(statuses) => SeatRet::Status(statuses[(seat - 1) as usize].clone()),
                    other => SeatRet::Answer(other.clone()),
                });
                // A listing refused for its token read nothing.
                if op == SeatOp::Read && !matches!(ret, Some(SeatRet::Status(_))) {
                    return None;
                }
                Some((e, op, ret))
            })
            .collect()
    }

    fn account_projection(&self, user: u32) -> Vec<Share<'_, AccountOp, Ret>> {
        self.entries
            .iter()
            .filter(|e| e.user == user)
            .filter_map(|e| {
                let op = match &e.op {
                    Op::Charge { amount } => AccountOp::Charge(*amount),
                    Op::Pay { price, .. } => AccountOp::Pay(*price),
                    Op::Refund { credit, .. } => AccountOp::Refund(*credit),
                    Op::ReadBalance => AccountOp::Read,
                    _ => return None,
                };
                Some((e, op, e.ret.clone()))
            })
            .collect()
    }

    /// Every object checked; the first that fails, or `None` when the history is linearizable.
    pub fn check(&self) -> Option<Violation> {
        // The tester recurses once per operation of an object.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(1 << 30)
                .spawn_scoped(scope, || self.check_each_object())
                .unwrap()
                .join()
                .unwrap()
        })
    }

    fn check_each_object(&self) -> Option<Violation> {
        let users: std::collections::BTreeSet<u32> = self.entries.iter().map(|e| e.user).collect();
        (1..=self.seats)
            .find_map(|seat| {
                self.check_object::<Seat>(format!("seat {seat}"), self.seat_projection(seat))
            })
            .or_else(|| {
                users.into_iter().find_map(|user| {
                    self.check_object::<Account>(
                        format!("user {user}'s balance"),
                        self.account_projection(user),
                    )
                })
            })
    }

    /// One object's projection through the checker; the violation, if it has no order.
    fn check_object<C: Contract + Default + std::hash::Hash>(
        &self,
        object: String,
        projection: Vec<Share<'_, C::Op, C::Ret>>,
    ) -> Option<Violation> {
        let ops = projection
            .iter()
            .map(|(e, op, ret)| {
                let (returned, answer) = self.ended(e, ret.clone());
                (e.client, e.invoked, returned, op.clone(), answer)
            })
            .collect();
        (!linearizable::<C>(ops)).then(|| Violation {
            object,
            projection: projection.iter().map(|(e, ..)| describe(e)).collect(),
        })
    }

    /// How many entries were answered, and how many were left in flight by a kill.
    pub fn counts(&self) -> (usize, usize) {
        let answered = self.entries.iter().filter(|e| e.ret.is_some()).count();
        (answered, self.entries.len() - answered)
    }

    pub fn save(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().expect("a file path")).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(self).unwrap()).unwrap();
    }

    pub fn load(path: &Path) -> Self {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read the history {}: {e}", path.display()));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a saved history: {e}", path.display()))
    }
}

fn describe(e: &Entry) -> String {
    let end = e
        .returned
        .map_or("(no answer)".to_owned(), |r| format!("..{r}"));
    format!(
        "[{}{end}] client {} user {}: {:?} -> {:?}",
        e.invoked, e.client, e.user, e.op, e.ret
    )
}

/// Where a failing history is written: beside the build, named by the test and the process.
pub fn failure_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target
        .join("linearizability")
        .join(format!("{name}-{}.json", std::process::id()))
}

/// Histories kept with the tests: each file's name says whether it must pass or fail.
pub fn fixtures() -> BTreeMap<PathBuf, bool> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durability/histories");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let linearizable = !name.contains("not-linearizable");
            (p, linearizable)
        })
        .collect()
}
