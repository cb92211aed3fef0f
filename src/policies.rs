//! Where settings become what the layers below take: the domain's policies and the store's
//! setup. Neither `domain` nor `store` reads configuration; the application's wiring
//! (`actors::Engine::start`, `app::Application::build`) hands them these values.

use crate::config::{Settings, Synchronous};
use crate::domain::ledger::BalancePolicy;
use crate::domain::seat_map::{DatePolicy, RefundPolicy};
use crate::store::{Policies, StoreSetup, SyncMode};

pub fn date_policy(settings: &Settings) -> DatePolicy {
    DatePolicy {
        ttl_ms: (settings.holds.ttl_seconds as i64).saturating_mul(1000),
        max_seats_per_user: settings.holds.max_seats_per_user,
        max_seats_per_user_total: settings.holds.max_seats_per_user_total,
        rehold_cooldown_ms: (settings.holds.rehold_cooldown_seconds as i64).saturating_mul(1000),
        offer_ttl_ms: (settings.waitlist.offer_ttl_seconds as i64).saturating_mul(1000),
        refunds: RefundPolicy {
            fee_percent: settings.refunds.fee_percent,
            window_closes_ms_before_start: (settings.refunds.window_closes_hours_before_start
                as i64)
                .saturating_mul(3_600_000),
        },
    }
}

pub fn balance_policy(settings: &Settings) -> BalancePolicy {
    BalancePolicy {
        max_charge: settings.balance.max_charge,
        max_balance: settings.balance.max_balance,
    }
}

/// Every policy recovered state runs under.
pub fn policies(settings: &Settings) -> Policies {
    Policies {
        dates: date_policy(settings),
        balance: balance_policy(settings),
    }
}

pub fn sync_mode(synchronous: Synchronous) -> SyncMode {
    match synchronous {
        Synchronous::Full => SyncMode::Full,
        Synchronous::Normal => SyncMode::Normal,
    }
}

/// Where the store keeps its files, and how its log syncs.
pub fn store_setup(settings: &Settings) -> StoreSetup {
    StoreSetup {
        sqlite_path: settings.storage.sqlite_path.clone(),
        snapshot_dir: settings.storage.snapshot_dir.clone(),
        sync: sync_mode(settings.storage.synchronous),
    }
}
