//! Turns for the connections: `connections` permits, and requests waiting for one are served
//! by priority, first come first served within a priority.
//!
//! Why priorities: the generator offers a hundred thousand buyers through a few dozen
//! connections. With one first-come queue, a buyer who has just been admitted waits behind every
//! sign-in and poll queued before it, and the sell-out time measures the generator's queue, not
//! the server. Real buyers each have their own browser; serving the requests that complete a
//! purchase first (hold, top-up, payment) keeps the connection limit from reordering the flow.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Priorities, highest first.
pub const LEVELS: usize = 4;

pub struct Pool {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: [VecDeque<oneshot::Sender<()>>; LEVELS],
}

/// A connection turn; handed on to the next waiter when dropped.
pub struct Turn<'a> {
    pool: &'a Pool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.pool.release();
    }
}

/// Gives a turn back when a waiter is dropped after its turn was handed to it but before it saw it.
struct Waiting<'a> {
    pool: &'a Pool,
    receiver: oneshot::Receiver<()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.pool.release();
        }
    }
}

impl Pool {
    pub fn new(permits: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: permits,
                waiting: Default::default(),
            }),
        }
    }

    /// Waits for a turn; `level` 0 is served first.
    pub async fn turn(&self, level: usize) -> Turn<'_> {
        let receiver = {
            let mut state = self.state.lock();
            if state.free > 0 {
                state.free -= 1;
                return Turn { pool: self };
            }
            let (sender, receiver) = oneshot::channel();
            state.waiting[level.min(LEVELS - 1)].push_back(sender);
            receiver
        };
        let mut waiting = Waiting {
            pool: self,
            receiver,
        };
        // The sender is only dropped unsent when the pool is, which outlives every waiter.
        let _ = (&mut waiting.receiver).await;
        // The turn is ours now: forget the guard without giving it back.
        std::mem::forget(waiting);
        Turn { pool: self }
    }

    fn release(&self) {
        let mut state = self.state.lock();
        for queue in state.waiting.iter_mut() {
            while let Some(sender) = queue.pop_front() {
                if sender.send(()).is_ok() {
                    return;
                }
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_served_by_priority_then_in_order() {
        let pool = std::sync::Arc::new(Pool::new(1));
        let first = pool.turn(3).await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, level) in [("low", 3), ("high", 0), ("high2", 0), ("mid", 1)] {
            let (pool, order) = (pool.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = pool.turn(level).await;
                order.lock().push(name);
            }));
            tokio::task::yield_now().await;
        }
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock(), ["high", "high2", "mid", "low"]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_lose_the_turn() {
        let pool = Pool::new(1);
        let first = pool.turn(0).await;
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(10), pool.turn(0));
        assert!(abandoned.await.is_err());
        drop(first);
        let again = tokio::time::timeout(std::time::Duration::from_secs(1), pool.turn(0)).await;
        assert!(again.is_ok(), "the turn came back to the pool");
    }
}
