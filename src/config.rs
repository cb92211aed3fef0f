//! Typed configuration: `config.toml` (or `--config PATH`), then `BOXOFFICE__SECTION__KEY`
//! environment overrides. Every key has a default so an empty file is a valid deployment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub holds: HoldSettings,
    pub queue: QueueSettings,
    pub balance: BalanceSettings,
    pub auth: AuthSettings,
    pub admin: AdminSettings,
    pub seed: SeedSettings,
    pub limits: LimitSettings,
    pub refunds: RefundSettings,
    pub waitlist: WaitlistSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Bound on requests being worked on at once; past it clients get 503 `overloaded`.
    pub max_in_flight: usize,
    /// Live-update streams open at once; each idle one holds a connection (about 20–30 KiB).
    /// At most `max_connections`, since each stream is a connection.
    pub max_streams: usize,
    /// Live-update streams one session may hold open at once, so one session cannot take
    /// every place under `max_streams`.
    pub max_streams_per_session: usize,
    pub request_timeout_seconds: u64,
    /// Connections open at once; past it new ones wait in the listen backlog. Lowered at start
    /// to fit the descriptor limit, with a warning.
    pub max_connections: usize,
    /// Connections open at once from one client address; more are closed on accept.
    pub max_connections_per_ip: u32,
    /// A connection must deliver a complete request head within this long of opening or of its
    /// previous response, or it is closed: this bounds idle keep-alive connections and slow heads.
    pub header_read_timeout_seconds: u64,
    /// A request's body must arrive whole within this long of its head (else 408, and closed).
    pub body_read_timeout_seconds: u64,
    /// A response the client stops reading for this long is abandoned and its connection closed.
    pub write_timeout_seconds: u64,
    /// On SIGTERM, how long the server keeps serving with `/readyz` at 503 before it stops
    /// accepting, so a load balancer sends new clients elsewhere first.
    pub shutdown_drain_seconds: u64,
    /// Then, how long connections get to finish their current response before they are
    /// dropped; the stop then drains the owners and writes snapshots.
    pub shutdown_grace_seconds: u64,
    /// Threads for blocking work (password hashing, history reads, snapshot writes). Each one
    /// hashing holds `auth.argon2_memory_kib`, so this bounds that memory too; work past it waits.
    pub blocking_threads: usize,
    /// How often freed heap memory is handed back to the system (glibc `malloc_trim`); 0 never.
    pub memory_trim_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub sqlite_path: PathBuf,
    pub snapshot_dir: PathBuf,
    pub snapshot_interval_seconds: u64,
    pub synchronous: Synchronous,
    /// Delete log rows that every owner's snapshots cover; `false` keeps the whole history
    /// (an audit trail, at the cost of disk).
    pub prune_log: bool,
    /// Where `POST /api/v1/admin/backups` writes its copies (created if missing).
    pub backup_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoldSettings {
    pub ttl_seconds: u64,
    pub max_seats_per_user: u32,
    /// Seats one user may hold at once over every date (422 `hold_limit` past it).
    pub max_seats_per_user_total: u32,
    /// After a user's hold on a seat is cancelled or expires, that user may not hold that seat
    /// again for this long (409 `rehold_cooldown`); 0 disables.
    pub rehold_cooldown_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    pub max_active: u32,
    pub admit_per_second: u32,
    pub active_ttl_seconds: u64,
    pub waiting_ttl_seconds: u64,
    /// Ended tokens remembered (each at most an hour) to answer `reissued`.
    pub ended_tokens_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceSettings {
    pub max_charge: u64,
    pub max_balance: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub session_ttl_seconds: u64,
    /// Argon2id memory cost. The default follows OWASP's recommendation; tests lower it.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

/// Shorter admin tokens are refused at start: the token is the whole of the admin API's
/// protection, and 32 characters of `openssl rand -hex 32` are 128 bits and more.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 32;

#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    pub token: String,
}

/// The token is a credential: a settings dump in a log or a panic message must not carry it.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.token.is_empty() {
            "unset"
        } else {
            "set, redacted"
        };
        f.debug_struct("AdminSettings")
            .field("token", &token)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedSettings {
    pub demo: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefundSettings {
    /// Refunds are refused this many hours before a date starts, and later.
    pub window_closes_hours_before_start: u64,
    /// Share of a reservation's price kept on a refund, 0–99.
    pub fee_percent: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitlistSettings {
    /// How long a waiting-list offer (a hold) lasts.
    pub offer_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub session_requests_per_second: u32,
    pub auth_attempts_per_minute_per_ip: u32,
    /// Failed sign-ins one account takes per minute from addresses it has not signed in from
    /// (and, each on its own, from every address it has); 0 disables.
    pub failed_logins_per_account_per_minute: u32,
    /// Wrong admin tokens one client address may present per minute; 0 disables.
    pub admin_failures_per_minute_per_ip: u32,
    pub body_bytes_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `boxoffice=debug,tower_http=info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_in_flight: 4096,
            max_streams: 10_000,
            max_streams_per_session: 4,
            blocking_threads: 16,
            memory_trim_seconds: 10,
            request_timeout_seconds: 10,
            max_connections: 16_384,
            max_connections_per_ip: 512,
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 10,
            write_timeout_seconds: 10,
            shutdown_drain_seconds: 0,
            shutdown_grace_seconds: 3,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            sqlite_path: PathBuf::from("boxoffice.db"),
            snapshot_dir: PathBuf::from("snapshots"),
            snapshot_interval_seconds: 60,
            synchronous: Synchronous::Full,
            prune_log: true,
            backup_dir: PathBuf::from("backups"),
        }
    }
}

impl Default for HoldSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 300,
            max_seats_per_user: 4,
            max_seats_per_user_total: 8,
            rehold_cooldown_seconds: 60,
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_active: 1000,
            admit_per_second: 100,
            active_ttl_seconds: 600,
            waiting_ttl_seconds: 60,
            ended_tokens_max: 100_000,
        }
    }
}

impl Default for BalanceSettings {
    fn default() -> Self {
        Self {
            max_charge: 10_000_000,
            max_balance: 100_000_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 86_400,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        }
    }
}

impl Default for RefundSettings {
    fn default() -> Self {
        Self {
            window_closes_hours_before_start: 24,
            fee_percent: 10,
        }
    }
}

impl Default for WaitlistSettings {
    fn default() -> Self {
        Self {
            offer_ttl_seconds: 600,
        }
    }
}

impl Default for SeedSettings {
    fn default() -> Self {
        Self { demo: true }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            session_requests_per_second: 50,
            auth_attempts_per_minute_per_ip: 300,
            failed_logins_per_account_per_minute: 10,
            admin_failures_per_minute_per_ip: 10,
            body_bytes_max: 65_536,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Ten years: more would overflow no clock, but is surely a typo.
const MAX_REFUND_WINDOW_HOURS: u64 = 87_600;

/// A longer cooldown would keep a seat from its last holder for good, and keep its memory as long.
const MAX_REHOLD_COOLDOWN_SECONDS: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read configuration: {0} (check the file's TOML syntax and BOXOFFICE__* variables)"
    )]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads `path` (which may be missing only when it is the default `config.toml`) and applies
    /// `BOXOFFICE__SECTION__KEY` overrides from the environment.
    pub fn load(path: &Path, path_is_explicit: bool) -> Result<Self, ConfigError> {
        if path_is_explicit && !path.exists() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist; pass an existing file to --config",
                path.display()
            )));
        }
        let loaded = config::Config::builder()
            .add_source(config::File::from(path).required(false))
            .add_source(
                config::Environment::with_prefix("BOXOFFICE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?;
        let settings: Settings = loaded.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values that would make the engine misbehave rather than fail loudly later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.holds.ttl_seconds == 0 {
            return invalid("holds.ttl_seconds must be at least 1");
        }
        if self.server.blocking_threads == 0 {
            return invalid("server.blocking_threads must be at least 1");
        }
        if self.holds.max_seats_per_user == 0 {
            return invalid("holds.max_seats_per_user must be at least 1");
        }
        if self.holds.max_seats_per_user_total < self.holds.max_seats_per_user {
            return Err(ConfigError::Invalid(format!(
                "holds.max_seats_per_user_total ({}) is below holds.max_seats_per_user ({}), so no \
                 user could ever hold a full per-date allowance: raise holds.max_seats_per_user_total \
                 to at least {} or lower holds.max_seats_per_user",
                self.holds.max_seats_per_user_total,
                self.holds.max_seats_per_user,
                self.holds.max_seats_per_user
            )));
        }
        if self.holds.rehold_cooldown_seconds > MAX_REHOLD_COOLDOWN_SECONDS {
            return Err(ConfigError::Invalid(format!(
                "holds.rehold_cooldown_seconds must be at most {MAX_REHOLD_COOLDOWN_SECONDS} (a day); \
                 each date remembers every seat let go of for that long (0 disables the cooldown)"
            )));
        }
        if self.queue.max_active == 0 || self.queue.admit_per_second == 0 {
            return invalid("queue.max_active and queue.admit_per_second must be at least 1");
        }
        if self.queue.active_ttl_seconds == 0 || self.queue.waiting_ttl_seconds == 0 {
            return invalid(
                "queue.active_ttl_seconds and queue.waiting_ttl_seconds must be at least 1",
            );
        }
        if self.balance.max_charge == 0 || self.balance.max_charge > self.balance.max_balance {
            return invalid("balance.max_charge must be between 1 and balance.max_balance");
        }
        if self.balance.max_balance > crate::domain::MAX_MONEY {
            return invalid("balance.max_balance must not exceed 2^53-1");
        }
        if self.refunds.fee_percent > 99 {
            return invalid("refunds.fee_percent must be 0 to 99");
        }
        if self.refunds.window_closes_hours_before_start > MAX_REFUND_WINDOW_HOURS {
            return invalid(
                "refunds.window_closes_hours_before_start must be at most 87600 (ten years)",
            );
        }
        if self.waitlist.offer_ttl_seconds == 0 || self.waitlist.offer_ttl_seconds > 86_400 {
            return invalid("waitlist.offer_ttl_seconds must be 1 to 86400 (a day)");
        }
        if self.auth.session_ttl_seconds == 0 {
            return invalid("auth.session_ttl_seconds must be at least 1");
        }
        if argon2::Params::new(
            self.auth.argon2_memory_kib,
            self.auth.argon2_iterations,
            self.auth.argon2_parallelism,
            None,
        )
        .is_err()
        {
            return invalid(
                "auth.argon2_* are out of range (memory_kib >= 8 * parallelism, iterations >= 1, parallelism >= 1)",
            );
        }
        if self.limits.body_bytes_max < 64 {
            return invalid("limits.body_bytes_max must be at least 64");
        }
        if self.server.max_streams_per_session == 0 {
            return invalid("server.max_streams_per_session must be at least 1");
        }
        let admin_token_chars = self.admin.token.chars().count();
        if admin_token_chars > 0 && admin_token_chars < ADMIN_TOKEN_CHARS_MIN {
            return Err(ConfigError::Invalid(format!(
                "admin.token is {admin_token_chars} characters long; it must be at least \
                 {ADMIN_TOKEN_CHARS_MIN} (or empty, which disables the admin API). Make one with \
                 `openssl rand -hex 32` and set admin.token or BOXOFFICE__ADMIN__TOKEN to it"
            )));
        }
        if self.server.max_in_flight == 0 || self.server.request_timeout_seconds == 0 {
            return invalid(
                "server.max_in_flight and server.request_timeout_seconds must be at least 1",
            );
        }
        let server = &self.server;
        if server.max_connections == 0 || server.max_connections_per_ip == 0 {
            return invalid(
                "server.max_connections and server.max_connections_per_ip must be at least 1",
            );
        }
        if server.max_streams > server.max_connections {
            return invalid(
                "server.max_streams must not exceed server.max_connections: every stream is a connection, and buyers need connections left for their requests",
            );
        }
        if server.header_read_timeout_seconds == 0
            || server.body_read_timeout_seconds == 0
            || server.write_timeout_seconds == 0
        {
            return invalid(
                "server.header_read_timeout_seconds, server.body_read_timeout_seconds and server.write_timeout_seconds must be at least 1",
            );
        }
        Ok(())
    }

    /// Settings for tests and benches: cheap password hashing, no demo data, storage in a fresh
    /// temporary directory of its own, otherwise defaults.
    pub fn for_tests() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The process id alone repeats across runs, and a directory an earlier run left behind
        // would hand this one its store: the start time makes the name new.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("boxoffice-{}-{started}-{n}", std::process::id()));
        let mut settings = Self::default();
        settings.storage.sqlite_path = dir.join("boxoffice.db");
        settings.storage.snapshot_dir = dir.join("snapshots");
        settings.storage.backup_dir = dir.join("backups");
        settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.auth.argon2_memory_kib = 8;
        settings.auth.argon2_iterations = 1;
        settings.seed.demo = false;
        settings.admin.token = "test-admin-token-0123456789abcdef".to_owned();
        settings.limits.session_requests_per_second = 0;
        settings.limits.auth_attempts_per_minute_per_ip = 0;
        // Every test client connects from 127.0.0.1; tests of the bound set it themselves.
        settings.server.max_connections_per_ip = settings.server.max_connections as u32;
        settings.limits.failed_logins_per_account_per_minute = 0;
        settings.limits.admin_failures_per_minute_per_ip = 0;
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_file_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config.toml at the top level");
        let from_file: Settings = toml_from_str(&text);
        // Every key, so a default changed in one place and not the other is caught.
        assert_eq!(
            format!("{from_file:#?}"),
            format!("{:#?}", Settings::default())
        );
    }

    fn toml_from_str(text: &str) -> Settings {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("valid config")
    }

    #[test]
    fn environment_variables_override_the_file() {
        // The only test that touches BOXOFFICE__* variables, so no other test sees them.
        std::env::set_var("BOXOFFICE__HOLDS__TTL_SECONDS", "42");
        std::env::set_var("BOXOFFICE__SERVER__LISTEN", "127.0.0.1:9123");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let loaded = Settings::load(&path, true);
        std::env::remove_var("BOXOFFICE__HOLDS__TTL_SECONDS");
        std::env::remove_var("BOXOFFICE__SERVER__LISTEN");
        let settings = loaded.expect("config.toml with overrides loads");
        assert_eq!(settings.holds.ttl_seconds, 42);
        assert_eq!(settings.server.listen.port(), 9123);
    }

    #[test]
    fn the_admin_token_never_shows_in_a_settings_dump() {
        let mut settings = Settings::default();
        settings.admin.token = "s3cret-admin-token".to_owned();
        let dump = format!("{settings:?}");
        assert!(!dump.contains("s3cret-admin-token"), "{dump}");
        assert!(dump.contains("set, redacted"), "{dump}");
    }

    #[test]
    fn a_short_admin_token_is_refused_with_a_way_to_make_a_good_one() {
        let mut settings = Settings::default();
        settings.admin.token = "s3cret-admin-token".to_owned();
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("admin.token"), "{error}");
        assert!(error.contains("32"), "{error}");
        assert!(error.contains("openssl rand -hex 32"), "{error}");
        assert!(!error.contains("s3cret-admin-token"), "{error}");

        settings.admin.token = "x".repeat(32);
        settings.validate().expect("32 characters are enough");
        settings.admin.token = String::new();
        settings.validate().expect("empty disables the admin API");
        Settings::for_tests()
            .validate()
            .expect("the tests' token is long enough");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error_that_says_so() {
        let error = Settings::load(Path::new("/nonexistent/boxoffice.toml"), true).unwrap_err();
        assert!(error.to_string().contains("does not exist"));
    }

    #[test]
    fn a_total_hold_cap_below_the_per_date_one_is_rejected_with_what_to_do() {
        let mut settings = Settings::default();
        settings.holds.max_seats_per_user = 6;
        settings.holds.max_seats_per_user_total = 5;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("holds.max_seats_per_user_total (5)"),
            "{error}"
        );
        assert!(
            error.contains("raise holds.max_seats_per_user_total to at least 6"),
            "{error}"
        );
        settings.holds.max_seats_per_user_total = 6;
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn a_rehold_cooldown_past_a_day_is_rejected_and_zero_disables_it() {
        let mut settings = Settings::default();
        settings.holds.rehold_cooldown_seconds = 86_401;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("holds.rehold_cooldown_seconds"), "{error}");
        settings.holds.rehold_cooldown_seconds = 0;
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn streams_past_the_connection_bound_and_clockless_phases_are_refused() {
        let mut settings = Settings::default();
        settings.server.max_streams = settings.server.max_connections + 1;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("server.max_streams"), "{error}");
        for zero in [
            |s: &mut ServerSettings| s.header_read_timeout_seconds = 0,
            |s: &mut ServerSettings| s.body_read_timeout_seconds = 0,
            |s: &mut ServerSettings| s.write_timeout_seconds = 0,
            |s: &mut ServerSettings| s.max_connections_per_ip = 0,
        ] {
            let mut settings = Settings::default();
            zero(&mut settings.server);
            assert!(settings.validate().is_err(), "{:?}", settings.server);
        }
        let defaults = ServerSettings::default();
        assert!(defaults.max_streams < defaults.max_connections);
    }

    #[test]
    fn a_zero_hold_ttl_is_rejected() {
        let mut settings = Settings::default();
        settings.holds.ttl_seconds = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn no_blocking_threads_is_rejected_and_the_default_bounds_hashing_memory() {
        let mut settings = Settings::default();
        settings.server.blocking_threads = 0;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("server.blocking_threads"), "{error}");
        let defaults = Settings::default();
        let hashing_kib =
            defaults.server.blocking_threads as u64 * defaults.auth.argon2_memory_kib as u64;
        assert!(
            hashing_kib <= 512 * 1024,
            "{hashing_kib} KiB of concurrent argon2 memory"
        );
    }

    #[test]
    fn the_default_argon2_cost_is_production_grade() {
        let auth = AuthSettings::default();
        assert!(auth.argon2_memory_kib >= 19_456 && auth.argon2_iterations >= 2);
    }
}
