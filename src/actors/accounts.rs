//! Owner of users and sessions. Session checks (every authenticated request) read the shared
//! view under a read lock; only this actor writes it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ask_durably, every, snapshot_later, Decided, Durability, EngineError};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::accounts::Accounts;
use crate::domain::{DomainError, Event, Timestamp, UserId, Username};
use crate::store::recovery::ACCOUNTS_OWNER;
use crate::store::Durable;

const SESSION_SWEEP_PERIOD: Duration = Duration::from_secs(60);

pub enum AccountsMsg {
    Register {
        username: Username,
        password_hash: String,
        reply: RpcReplyPort<Decided<UserId, DomainError>>,
    },
    OpenSession {
        user: UserId,
        verifier_digest: [u8; 32],
        reply: RpcReplyPort<Decided<(u64, Timestamp), DomainError>>,
    },
    CloseSession {
        session: u64,
        reply: RpcReplyPort<Decided<(), DomainError>>,
    },
    SweepSessions,
    Snapshot(Option<RpcReplyPort<()>>),
}

pub struct AccountsActor;

pub struct AccountsState {
    accounts: Arc<RwLock<Accounts>>,
    clock: SharedClock,
    durability: Durability,
    session_ttl_ms: i64,
}

impl AccountsState {
    fn commit(&self, event: &Event) -> Durable {
        self.accounts.write().apply(event);
        self.durability.log.append(event)
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
                    let durable = state.commit(&event);
                    match event {
                        Event::UserRegistered { user, .. } => (user, durable),
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
                let durable = state.commit(&event);
                let Event::SessionOpened {
                    session,
                    expires_at,
                    ..
                } = event
                else {
                    unreachable!("open_session decides a session")
                };
                let _ = reply.send(Ok(((session, expires_at), durable)));
            }
            AccountsMsg::CloseSession { session, reply } => {
                let decided = state.accounts.read().close_session(session);
                let _ = reply.send(decided.map(|event| ((), state.commit(&event))));
            }
            AccountsMsg::SweepSessions => {
                let expired = state.accounts.read().expired_sessions(now);
                for event in &expired {
                    state.commit(event);
                }
            }
            AccountsMsg::Snapshot(done) => {
                let copy = state.accounts.read().clone();
                snapshot_later(
                    &state.durability.snapshots,
                    ACCOUNTS_OWNER.to_owned(),
                    copy,
                    done,
                );
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
        durability: Durability,
        recovered: Accounts,
    ) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(recovered));
        let every_snapshot = durability.snapshot_every;
        let owners = durability.clone();
        let state = AccountsState {
            accounts: view.clone(),
            clock,
            durability,
            session_ttl_ms: (settings.auth.session_ttl_seconds as i64).saturating_mul(1000),
        };
        let actor = owners.spawn_owner(AccountsActor, state).await?;
        every(actor.clone(), SESSION_SWEEP_PERIOD, || {
            AccountsMsg::SweepSessions
        });
        every(actor.clone(), every_snapshot, || {
            AccountsMsg::Snapshot(None)
        });
        Ok(Self { actor, view })
    }

    pub async fn register(
        &self,
        username: Username,
        password_hash: String,
    ) -> Result<UserId, EngineError> {
        ask_durably(&self.actor, |reply| AccountsMsg::Register {
            username,
            password_hash,
            reply,
        })
        .await
    }

    pub async fn open_session(
        &self,
        user: UserId,
        verifier_digest: [u8; 32],
    ) -> Result<(u64, Timestamp), EngineError> {
        ask_durably(&self.actor, |reply| AccountsMsg::OpenSession {
            user,
            verifier_digest,
            reply,
        })
        .await
    }

    pub async fn close_session(&self, session: u64) -> Result<(), EngineError> {
        ask_durably(&self.actor, |reply| AccountsMsg::CloseSession {
            session,
            reply,
        })
        .await
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

    /// The user with this name, if any.
    pub fn user_named(&self, username: &str) -> Option<UserId> {
        self.view.read().user_by_name(username).map(|u| u.id)
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

    /// A copy of the state, for tests that compare live state with replayed state.
    pub fn state(&self) -> Accounts {
        self.view.read().clone()
    }

    pub fn snapshot(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::snapshot_now(&self.actor, AccountsMsg::Snapshot)
    }

    pub async fn stop(&self) {
        super::stop_draining(&self.actor).await;
    }
}
