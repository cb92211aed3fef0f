//! Secrets: password hashing (Argon2id, cost from config) and unguessable tokens from the OS
//! CSPRNG. Hashing is slow on purpose, so callers run it on the blocking pool, never in an actor.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::domain::admission::OpeningSeed;
use crate::domain::Password;

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Verified against when the username is unknown, so a login takes as long either way.
    decoy_hash: String,
}

impl PasswordHasher {
    pub fn new(settings: &AuthSettings) -> Self {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .expect("validated with the rest of the configuration");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_hash = hash_with(&argon2, "decoy password, never valid");
        Self { argon2, decoy_hash }
    }

    pub fn hash(&self, password: &Password) -> String {
        hash_with(&self.argon2, password.expose())
    }

    /// Checks `password` against `stored`, or against a decoy when there is no user.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let hash = stored.unwrap_or(&self.decoy_hash);
        let verified = PasswordHash::new(hash)
            .map(|parsed| {
                self.argon2
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        verified && stored.is_some()
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with valid params does not fail")
        .to_string()
}

/// `bos_<session>_<32 hex digits of secret>`: the session number finds the record, the 128-bit
/// secret proves possession and is compared by digest in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub session: u64,
    secret: [u8; 16],
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionToken({}, <redacted>)", self.session)
    }
}

impl SessionToken {
    pub fn random_secret() -> [u8; 16] {
        let mut secret = [0u8; 16];
        OsRng.fill_bytes(&mut secret);
        secret
    }

    pub fn new(session: u64, secret: [u8; 16]) -> Self {
        Self { session, secret }
    }

    pub fn digest_of(secret: &[u8; 16]) -> [u8; 32] {
        Sha256::digest(secret).into()
    }

    pub fn verifier_digest(&self) -> [u8; 32] {
        Self::digest_of(&self.secret)
    }

    pub fn encode(&self) -> String {
        format!("bos_{}_{}", self.session, hex::encode(self.secret))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let (session, secret_hex) = raw.strip_prefix("bos_")?.split_once('_')?;
        if session.is_empty() || session.len() > 20 || !session.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut secret = [0u8; 16];
        hex::decode_to_slice(secret_hex, &mut secret).ok()?;
        Some(Self {
            session: session.parse().ok()?,
            secret,
        })
    }
}

/// The seed that orders a room's pre-queue at its opening.
pub fn random_opening_seed() -> OpeningSeed {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    OpeningSeed(seed)
}

/// The random part of a new queue token (`QueueTokenId::secret`).
pub fn random_token_secret() -> u128 {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(&AuthSettings {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..AuthSettings::default()
        })
    }

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hasher = cheap();
        let hash = hasher.hash(&Password::parse("correct horse").unwrap());
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse", Some(&hash)));
        assert!(!hasher.verify("correct horsf", Some(&hash)));
        assert!(!hasher.verify("decoy password, never valid", None));
    }

    #[test]
    fn session_tokens_round_trip_and_reject_tampering() {
        let token = SessionToken::new(42, SessionToken::random_secret());
        let encoded = token.encode();
        assert_eq!(SessionToken::parse(&encoded), Some(token.clone()));
        assert!(SessionToken::parse(&encoded[..encoded.len() - 1]).is_none());
        assert!(SessionToken::parse("bos__00").is_none());
        assert!(SessionToken::parse("bos_-1_00000000000000000000000000000000").is_none());
        assert!(!format!("{token:?}").contains(&encoded[7..]));
    }

    #[test]
    fn secrets_differ_every_time() {
        let a = SessionToken::random_secret();
        let b = SessionToken::random_secret();
        assert_ne!(a, b);
        assert_ne!(random_token_secret(), random_token_secret());
    }
}
