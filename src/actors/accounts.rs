//! Owner of users and sessions. Session checks (every authenticated request) read the shared
//! view under a read lock; only this actor writes it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask, every, EngineError, EventSink};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::accounts::Accounts;
use crate::domain::{DomainError, Event, Timestamp, UserId, Username};

const SESSION_SWEEP_PERIOD: Duration = Duration::from_secs(60);

pub enum AccountsMsg {
    Register {
        username: Username,
        password_hash: String,
        reply: RpcReplyPort<Result<UserId, DomainError>>,
    },
    OpenSession {
        user: UserId,
        verifier_digest: [u8; 32],
        reply: RpcReplyPort<(u64, Timestamp)>,
    },
    CloseSession {
        session: u64,
        reply: RpcReplyPort<Result<(), DomainError>>,
    },
    SweepSessions,
}

pub struct AccountsActor;

pub struct AccountsState {
    accounts: Arc<RwLock<Accounts>>,
    clock: SharedClock,
    events: EventSink,
    session_ttl_ms: i64,
}

impl AccountsState {
    fn commit(&self, event: &Event) {
        self.accounts.write().apply(event);
        self.events.record(event);
    }
}

impl Actor for AccountsActor {
    type Msg = AccountsMsg;
    type State = AccountsState;
    type Arguments = AccountsState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: AccountsState,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.clock.now();
        match msg {
            AccountsMsg::Register {
                username,
                password_hash,
                reply,
            } => {
                let decided = state.accounts.read().register(username, password_hash, now);
                let outcome = decided.map(|event| {
                    state.commit(&event);
                    match event {
                        Event::UserRegistered { user, .. } => user,
                        _ => unreachable!("register decides a registration"),
                    }
                });
                let _ = reply.send(outcome);
            }
            AccountsMsg::OpenSession {
                user,
                verifier_digest,
                reply,
            } => {
                let event = state.accounts.read().open_session(
                    user,
                    verifier_digest,
                    now,
                    state.session_ttl_ms,
                );
                state.commit(&event);
                if let Event::SessionOpened {
                    session,
                    expires_at,
                    ..
                } = event
                {
                    let _ = reply.send((session, expires_at));
                }
            }
            AccountsMsg::CloseSession { session, reply } => {
                let decided = state.accounts.read().close_session(session);
                let _ = reply.send(decided.map(|event| state.commit(&event)));
            }
            AccountsMsg::SweepSessions => {
                let expired = state.accounts.read().expired_sessions(now);
                for event in &expired {
                    state.commit(event);
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct AccountsHandle {
    actor: ActorRef<AccountsMsg>,
    view: Arc<RwLock<Accounts>>,
}

impl AccountsHandle {
    pub async fn spawn(
        settings: &Settings,
        clock: SharedClock,
        events: EventSink,
    ) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(Accounts::default()));
        let state = AccountsState {
            accounts: view.clone(),
            clock,
            events,
            session_ttl_ms: (settings.auth.session_ttl_seconds as i64).saturating_mul(1000),
        };
        let (actor, _) = Actor::spawn(None, AccountsActor, state).await?;
        every(actor.clone(), SESSION_SWEEP_PERIOD, || {
            AccountsMsg::SweepSessions
        });
        Ok(Self { actor, view })
    }

    pub async fn register(
        &self,
        username: Username,
        password_hash: String,
    ) -> Result<UserId, EngineError> {
        Ok(ask(&self.actor, |reply| AccountsMsg::Register {
            username,
            password_hash,
            reply,
        })
        .await??)
    }

    pub async fn open_session(
        &self,
        user: UserId,
        verifier_digest: [u8; 32],
    ) -> Result<(u64, Timestamp), EngineError> {
        ask(&self.actor, |reply| AccountsMsg::OpenSession {
            user,
            verifier_digest,
            reply,
        })
        .await
    }

    pub async fn close_session(&self, session: u64) -> Result<(), EngineError> {
        Ok(ask(&self.actor, |reply| AccountsMsg::CloseSession {
            session,
            reply,
        })
        .await??)
    }

    /// No mailbox round trip: this runs on every authenticated request.
    pub fn authenticate(
        &self,
        session: u64,
        verifier_digest: &[u8; 32],
        now: Timestamp,
    ) -> Result<UserId, DomainError> {
        self.view.read().authenticate(session, verifier_digest, now)
    }

    /// The user and password hash behind a username, for a login check done off the actor.
    pub fn credentials(&self, username: &str) -> Option<(UserId, String)> {
        self.view
            .read()
            .user_by_name(username)
            .map(|u| (u.id, u.password_hash.clone()))
    }

    pub fn username(&self, user: UserId) -> Option<String> {
        self.view
            .read()
            .user(user)
            .map(|u| u.username.as_str().to_owned())
    }

    pub fn user_count(&self) -> usize {
        self.view.read().user_count()
    }

    pub async fn stop(&self) {
        let _ = self.actor.drain_and_wait(Some(super::CALL_TIMEOUT)).await;
    }
}
