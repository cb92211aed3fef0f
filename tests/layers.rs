//! The layers of DESIGN.md, checked on the source: each module names only the layers below it.
//! `domain` is pure (no async, no IO, no clock, no randomness); `store` knows the domain and
//! nothing above it; `http` reaches state only through the engine the actors expose.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join(format!("{dir}.rs"))];
    let mut pending = vec![root.join(dir)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 2, "{dir} has source files");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

/// Every line of `dir`'s code (comments left out) that contains one of `forbidden`.
fn offending_lines(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources(dir) {
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(word) = forbidden.iter().find(|word| code.contains(*word)) {
                found.push(format!(
                    "{}:{}: {word}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn the_domain_is_pure() {
    let found = offending_lines(
        "domain",
        &[
            "crate::actors",
            "crate::http",
            "crate::store",
            "crate::config",
            "crate::clock",
            "tokio",
            "async ",
            "std::fs",
            "std::net",
            "std::thread",
            "SystemTime",
            "Instant::now",
            "thread_rng",
            "OsRng",
            "rusqlite",
            "axum",
            "StatusCode",
        ],
    );
    assert!(
        found.is_empty(),
        "the domain reaches out:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_store_knows_only_the_domain() {
    let found = offending_lines(
        "store",
        &[
            "crate::actors",
            "crate::http",
            "crate::config",
            "crate::app",
            "axum",
        ],
    );
    assert!(
        found.is_empty(),
        "the store reaches up:\n{}",
        found.join("\n")
    );
}

#[test]
fn http_reaches_state_only_through_the_engine() {
    let found = offending_lines(
        "http",
        &["crate::store", "store::", ".durability", "rusqlite"],
    );
    assert!(
        found.is_empty(),
        "http reaches past the engine:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_actors_never_speak_http() {
    let found = offending_lines("actors", &["crate::http", "axum", "StatusCode"]);
    assert!(
        found.is_empty(),
        "an actor knows HTTP:\n{}",
        found.join("\n")
    );
}
