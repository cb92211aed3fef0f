//! Users and sessions. Password hashes are computed outside (they are slow on purpose) and come
//! in as strings; session secrets are compared by digest in constant time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::DomainError;
use super::events::Event;
use super::types::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    user: UserId,
    verifier_digest: [u8; 32],
    expires_at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    /// Index `id - 1`.
    users: Vec<User>,
    by_name: HashMap<String, UserId>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
}

impl Accounts {
    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get((id.0 as usize).checked_sub(1)?)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name).and_then(|id| self.user(*id))
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn register(
        &self,
        username: Username,
        password_hash: String,
        now: Timestamp,
    ) -> Result<Event, DomainError> {
        if self.by_name.contains_key(username.as_str()) {
            return Err(DomainError::UsernameTaken);
        }
        Ok(Event::UserRegistered {
            user: UserId(self.users.len() as u64 + 1),
            username,
            password_hash,
            at: now,
        })
    }

    pub fn open_session(
        &self,
        user: UserId,
        verifier_digest: [u8; 32],
        now: Timestamp,
        ttl_ms: i64,
    ) -> Event {
        Event::SessionOpened {
            session: self.next_session + 1,
            verifier_digest,
            user,
            expires_at: now.plus_millis(ttl_ms),
        }
    }

    pub fn close_session(&self, session: u64) -> Result<Event, DomainError> {
        if !self.sessions.contains_key(&session) {
            return Err(DomainError::Unauthenticated);
        }
        Ok(Event::SessionClosed { session })
    }

    /// The user behind a session token, if the token is live at `now`.
    pub fn authenticate(
        &self,
        session: u64,
        verifier_digest: &[u8; 32],
        now: Timestamp,
    ) -> Result<UserId, DomainError> {
        let found = self
            .sessions
            .get(&session)
            .ok_or(DomainError::Unauthenticated)?;
        let matches: bool = found.verifier_digest.ct_eq(verifier_digest).into();
        if !matches || found.expires_at <= now {
            return Err(DomainError::Unauthenticated);
        }
        Ok(found.user)
    }

    /// Sessions past their expiry, as events that forget them.
    pub fn expired_sessions(&self, now: Timestamp) -> Vec<Event> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| Event::SessionClosed { session: *id })
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::UserRegistered {
                user,
                username,
                password_hash,
                ..
            } => {
                assert_eq!(user.0 as usize, self.users.len() + 1);
                self.by_name.insert(username.as_str().to_owned(), *user);
                self.users.push(User {
                    id: *user,
                    username: username.clone(),
                    password_hash: password_hash.clone(),
                });
            }
            Event::SessionOpened {
                session,
                verifier_digest,
                user,
                expires_at,
            } => {
                self.next_session = self.next_session.max(*session);
                self.sessions.insert(
                    *session,
                    Session {
                        user: *user,
                        verifier_digest: *verifier_digest,
                        expires_at: *expires_at,
                    },
                );
            }
            Event::SessionClosed { session } => {
                self.sessions.remove(session);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user() -> Accounts {
        let mut a = Accounts::default();
        let e = a
            .register(
                Username::parse("alice").unwrap(),
                "hash".into(),
                Timestamp(0),
            )
            .unwrap();
        a.apply(&e);
        a
    }

    #[test]
    fn a_username_is_taken_once() {
        let a = with_user();
        assert_eq!(
            a.register(Username::parse("alice").unwrap(), "h".into(), Timestamp(1)),
            Err(DomainError::UsernameTaken)
        );
        assert_eq!(a.user_by_name("alice").unwrap().id, UserId(1));
    }

    #[test]
    fn a_session_works_until_it_expires_or_closes() {
        let mut a = with_user();
        let e = a.open_session(UserId(1), [7; 32], Timestamp(0), 1_000);
        a.apply(&e);
        assert_eq!(a.authenticate(1, &[7; 32], Timestamp(999)), Ok(UserId(1)));
        assert_eq!(
            a.authenticate(1, &[8; 32], Timestamp(0)),
            Err(DomainError::Unauthenticated)
        );
        assert_eq!(
            a.authenticate(1, &[7; 32], Timestamp(1_000)),
            Err(DomainError::Unauthenticated)
        );
        assert_eq!(a.expired_sessions(Timestamp(1_000)).len(), 1);
        let close = a.close_session(1).unwrap();
        a.apply(&close);
        assert_eq!(
            a.authenticate(1, &[7; 32], Timestamp(0)),
            Err(DomainError::Unauthenticated)
        );
    }
}
