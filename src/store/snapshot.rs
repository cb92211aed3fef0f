//! Snapshot files: `<dir>/<owner>-<seq>.bin`, written to a temp file, fsynced, then renamed, so a
//! crash leaves either the old snapshot or the new one, never half of one.
//!
//! Layout: a 32-byte header — magic `BOXSNAP\0`, format version (u32 LE), reserved (u32),
//! the log sequence the snapshot covers (u64 LE), payload length (u64 LE) — then a SHA-256
//! checksum (first 8 bytes, u64 LE) and the bincode payload.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{FileKind, SnapshotDamage, StoreError};
use super::log::EventLog;
use super::private;
use super::rows;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"BOXSNAP\0";
/// The only format version this build reads and writes; a file of any other version stops
/// recovery with `StoreError::UnsupportedFormat`. Changing any owner's layout means a new
/// version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8;

fn checksum(payload: &[u8]) -> u64 {
    let digest = Sha256::digest(payload);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// `date-17` → `date`, so per-date snapshots share one histogram.
fn owner_kind(owner: &str) -> String {
    owner.split('-').next().unwrap_or(owner).to_owned()
}

/// Serializes `state` into a complete snapshot file image (header + payload).
pub fn encode<T: Serialize>(state: &T, seq: u64) -> Vec<u8> {
    let payload = rows::encode(state);
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&checksum(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Checks and decodes a snapshot file image; returns the state and the sequence it covers.
pub fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<(T, u64), StoreError> {
    let damaged = |damage| StoreError::Snapshot {
        path: path.to_owned(),
        damage,
    };
    if bytes.len() < HEADER_LEN || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(damaged(SnapshotDamage::NotASnapshot));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(StoreError::UnsupportedFormat {
            file: FileKind::Snapshot,
            path: path.to_owned(),
            found: i64::from(version),
            expected: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let seq = u64_at(16);
    let len = u64_at(24) as usize;
    let sum = u64_at(32);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(damaged(SnapshotDamage::Truncated));
    }
    if checksum(payload) != sum {
        return Err(damaged(SnapshotDamage::Checksum));
    }
    let (state, _) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| damaged(SnapshotDamage::Undecodable(e)))?;
    Ok((state, seq))
}

pub fn file_name(owner: &str, seq: u64) -> String {
    format!("{owner}-{seq:020}.bin")
}

/// How many snapshots each owner keeps: the newest, and one to fall back on if it is damaged.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Writes `bytes` as `<dir>/<owner>-<seq>.bin` atomically and durably, then removes the
/// owner's snapshots beyond the `SNAPSHOTS_KEPT` newest.
pub fn write_atomically(
    dir: &Path,
    owner: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<PathBuf, StoreError> {
    let path = dir.join(file_name(owner, seq));
    let io = |source| StoreError::Io {
        action: "write the snapshot",
        path: path.clone(),
        source,
    };
    let temp = dir.join(format!(".{}.tmp", file_name(owner, seq)));
    {
        let mut file = private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    fs::rename(&temp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    for (_, older) in list(dir, owner).into_iter().skip(SNAPSHOTS_KEPT) {
        let _ = fs::remove_file(older);
    }
    Ok(path)
}

/// The owner's snapshot files, newest first.
pub fn list(dir: &Path, owner: &str) -> Vec<(u64, PathBuf)> {
    let prefix = format!("{owner}-");
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let seq = name
                .strip_prefix(&prefix)?
                .strip_suffix(".bin")?
                .parse()
                .ok()?;
            Some((seq, entry.path()))
        })
        .collect();
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    found
}

/// Every owner's snapshot files, newest first, from one read of the directory: recovery looks
/// up each owner here rather than reading the directory once per owner (a store with thousands
/// of dates would read it thousands of times).
pub struct Listing(std::collections::HashMap<String, Vec<(u64, PathBuf)>>);

impl Listing {
    pub fn read(dir: &Path) -> Self {
        let mut owners: std::collections::HashMap<String, Vec<(u64, PathBuf)>> =
            std::collections::HashMap::new();
        for entry in fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // `<owner>-<seq>.bin`; an owner's name may hold dashes, a temporary file starts
            // with a dot.
            let parsed = name
                .strip_suffix(".bin")
                .and_then(|stem| stem.rsplit_once('-'))
                .filter(|(owner, _)| !owner.starts_with('.'))
                .and_then(|(owner, seq)| Some((owner.to_owned(), seq.parse::<u64>().ok()?)));
            if let Some((owner, seq)) = parsed {
                owners.entry(owner).or_default().push((seq, entry.path()));
            }
        }
        for files in owners.values_mut() {
            files.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        }
        Self(owners)
    }

    /// `owner`'s snapshot files, newest first.
    pub fn of(&self, owner: &str) -> &[(u64, PathBuf)] {
        self.0.get(owner).map_or(&[], Vec::as_slice)
    }
}

/// The newest snapshot of `owner` that reads back whole. Corrupt or truncated ones are reported
/// and skipped; a snapshot of another format version stops recovery (refusing beats guessing).
pub fn load_newest<T: DeserializeOwned>(
    dir: &Path,
    owner: &str,
) -> Result<Option<(T, u64)>, StoreError> {
    load_newest_listed(&Listing::read(dir), owner)
}

/// `load_newest` from a listing already read.
pub fn load_newest_listed<T: DeserializeOwned>(
    listing: &Listing,
    owner: &str,
) -> Result<Option<(T, u64)>, StoreError> {
    for (_, path) in listing.of(owner) {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read snapshot; skipping it");
                continue;
            }
        };
        match decode(path, &bytes) {
            Ok(found) => return Ok(Some(found)),
            Err(error @ StoreError::UnsupportedFormat { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "skipping snapshot; falling back to an older one or the log")
            }
        }
    }
    Ok(None)
}

/// Writes owners' snapshots off their mailboxes and prunes the log below what every owner has.
///
/// An owner hands over a copy of its state and the log sequence it covers; the file is written
/// only after the log has committed that far, so a snapshot never holds a change the log lacks.
#[derive(Clone)]
pub struct Snapshotter {
    dir: Arc<PathBuf>,
    log: EventLog,
    prune_log: bool,
    /// Every live owner and the sequences of the snapshots it keeps (oldest first).
    kept: Arc<DashMap<String, Vec<u64>>>,
}

impl Snapshotter {
    pub fn new(dir: PathBuf, log: EventLog, prune_log: bool) -> Self {
        Self {
            dir: Arc::new(dir),
            log,
            prune_log,
            kept: Arc::new(DashMap::new()),
        }
    }

    /// Registers an owner (with the snapshots it already has) so the log is never pruned past it.
    pub fn register(&self, owner: &str) {
        let mut seqs: Vec<u64> = list(&self.dir, owner)
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        seqs.sort_unstable();
        self.kept.insert(owner.to_owned(), seqs);
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Serializes and writes `state` as `owner`'s snapshot at `seq`, then prunes the log.
    pub async fn write<T: Serialize + Send + 'static>(&self, owner: String, seq: u64, state: T) {
        self.log.wait_committed(seq).await;
        let dir = self.dir.clone();
        let name = owner.clone();
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = encode(&state, seq);
            write_atomically(&dir, &name, seq, &bytes).map(|_| bytes.len())
        })
        .await;
        match written {
            Ok(Ok(size_bytes)) => {
                metrics::histogram!("boxoffice_snapshot_duration_seconds", "owner" => owner_kind(&owner))
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!("boxoffice_snapshot_bytes", "owner" => owner.clone())
                    .set(size_bytes as f64);
                tracing::debug!(
                    owner,
                    seq,
                    size_bytes,
                    millis = started.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                keep(&mut self.kept.entry(owner).or_default(), seq);
                self.prune();
            }
            Ok(Err(error)) => {
                let error = &error as &dyn std::error::Error;
                tracing::error!(error, "snapshot failed; the log keeps everything it needs")
            }
            Err(error) => tracing::error!(%error, "snapshot task failed"),
        }
    }

    /// Rows below every owner's older kept snapshot are no longer needed, even to fall back on.
    fn prune(&self) {
        if !self.prune_log {
            return;
        }
        let floor = self
            .kept
            .iter()
            .map(|seqs| prune_floor(&seqs))
            .min()
            .unwrap_or(0);
        if floor > 0 {
            self.log.prune_through(floor);
        }
    }
}

/// Records a snapshot written at `seq` among an owner's kept ones. An owner with nothing new
/// writes the same `seq` again (the same file, rewritten): it must not count twice, or the log
/// would be pruned up to the newest file with nothing older left to fall back on.
fn keep(seqs: &mut Vec<u64>, seq: u64) {
    if !seqs.contains(&seq) {
        seqs.push(seq);
        seqs.sort_unstable();
    }
    let excess = seqs.len().saturating_sub(SNAPSHOTS_KEPT);
    seqs.drain(..excess);
}

/// The log rows an owner no longer needs: those through its older kept snapshot, once it has
/// as many as it keeps (0: none). `seqs`: its kept snapshots' sequence numbers, oldest first.
pub fn prune_floor(seqs: &[u64]) -> u64 {
    if seqs.len() >= SNAPSHOTS_KEPT {
        seqs[0]
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("boxoffice-snap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_snapshot_reads_back_what_was_written() {
        let bytes = encode(&vec![1u32, 2, 3], 42);
        let (state, seq): (Vec<u32>, u64) = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!((state, seq), (vec![1, 2, 3], 42));
    }

    #[test]
    fn a_flipped_bit_or_a_cut_is_detected() {
        let bytes = encode(&vec![7u64; 100], 1);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            decode::<Vec<u64>>(Path::new("x"), &flipped),
            Err(StoreError::Snapshot { .. })
        ));
        for cut in [0, 10, HEADER_LEN, bytes.len() - 1] {
            assert!(matches!(
                decode::<Vec<u64>>(Path::new("x"), &bytes[..cut]),
                Err(StoreError::Snapshot { .. })
            ));
        }
    }

    #[test]
    fn a_future_format_version_is_refused_by_name() {
        let mut bytes = encode(&1u8, 1);
        bytes[8..12].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
        let error = decode::<u8>(Path::new("x"), &bytes).unwrap_err();
        assert!(
            matches!(error, StoreError::UnsupportedFormat { found, .. } if found == i64::from(SNAPSHOT_FORMAT_VERSION) + 1)
        );
        assert!(error.to_string().contains("format version"));
    }

    #[test]
    fn a_snapshot_of_another_format_version_stops_loading_instead_of_being_skipped() {
        let dir = scratch("other-version");
        write_atomically(&dir, "ledger", 5, &encode(&"old", 5)).unwrap();
        for version in [0, 2, 3, 99] {
            let mut bytes = encode(&"new", 9);
            bytes[8..12].copy_from_slice(&u32::to_le_bytes(version));
            write_atomically(&dir, "ledger", 9, &bytes).unwrap();
            let error = load_newest::<String>(&dir, "ledger").unwrap_err();
            assert!(
                matches!(error, StoreError::UnsupportedFormat { found, .. } if found == i64::from(version)),
                "{error}"
            );
            assert!(error.to_string().contains("move the file away"), "{error}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn loading_falls_back_past_a_damaged_newest_snapshot() {
        let dir = scratch("fallback");
        write_atomically(&dir, "ledger", 5, &encode(&"old", 5)).unwrap();
        write_atomically(&dir, "ledger", 9, &encode(&"new", 9)).unwrap();
        let newest = dir.join(file_name("ledger", 9));
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        let loaded: Option<(String, u64)> = load_newest(&dir, "ledger").unwrap();
        assert_eq!(loaded, Some(("old".to_owned(), 5)));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_listing_tells_each_owner_its_own_files_newest_first() {
        let dir = scratch("listing");
        for (owner, seq) in [("date-1", 5), ("date-10", 7), ("date-1", 9), ("ledger", 3)] {
            write_atomically(&dir, owner, seq, &encode(&"state", seq)).unwrap();
        }
        // A write a crash cut short leaves only its temporary file.
        fs::write(
            dir.join(format!(".{}.tmp", file_name("date-1", 11))),
            b"torn",
        )
        .unwrap();
        let listing = Listing::read(&dir);
        let seqs = |owner| {
            listing
                .of(owner)
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs("date-1"), vec![9, 5]);
        assert_eq!(seqs("date-10"), vec![7]);
        assert_eq!(seqs("ledger"), vec![3]);
        assert!(seqs("date-2").is_empty());
        let (_, seq): (String, u64) = load_newest_listed(&listing, "date-1").unwrap().unwrap();
        assert_eq!(seq, 9);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_rewritten_at_the_same_sequence_does_not_raise_the_prune_floor() {
        let mut seqs = Vec::new();
        keep(&mut seqs, 5);
        assert_eq!(
            prune_floor(&seqs),
            0,
            "one snapshot: nothing to fall back on yet"
        );
        keep(&mut seqs, 9);
        assert_eq!(
            prune_floor(&seqs),
            5,
            "rows through the older snapshot may go"
        );
        keep(&mut seqs, 9);
        keep(&mut seqs, 9);
        assert_eq!(seqs, vec![5, 9], "the older file is still the fallback");
        assert_eq!(prune_floor(&seqs), 5);
        keep(&mut seqs, 12);
        assert_eq!((seqs.clone(), prune_floor(&seqs)), (vec![9, 12], 9));
    }

    #[test]
    fn only_the_two_newest_snapshots_are_kept() {
        let dir = scratch("keep");
        for seq in [1, 2, 3, 4] {
            write_atomically(&dir, "catalog", seq, &encode(&seq, seq)).unwrap();
        }
        let seqs: Vec<u64> = list(&dir, "catalog").into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![4, 3]);
        assert!(list(&dir, "catalo").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
