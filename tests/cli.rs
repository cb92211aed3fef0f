//! The binary as an operator meets it: `--help`, clear startup errors, the ready line, and a
//! graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_boxoffice");

fn cheap_server() -> Command {
    let mut command = Command::new(BINARY);
    command
        .env("BOXOFFICE__SERVER__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE__AUTH__ARGON2_MEMORY_KIB", "8")
        .env("BOXOFFICE__AUTH__ARGON2_ITERATIONS", "1")
        .env("BOXOFFICE__LOG__FORMAT", "text")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    command
}

/// Starts `command` in `dir` and hands every line it writes to stdout to the receiver.
fn spawn_with_log_lines(
    mut command: Command,
    dir: &std::path::Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn help_names_the_config_flag_and_the_environment_overrides() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("--config"), "{text}");
    assert!(text.contains("BOXOFFICE__SECTION__KEY"), "{text}");
}

#[test]
fn a_missing_config_file_is_a_clear_error_not_a_panic() {
    let output = Command::new(BINARY)
        .args(["--config", "/nonexistent/boxoffice.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("does not exist"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn an_invalid_setting_is_refused_with_the_key_named() {
    let output = cheap_server()
        .env("BOXOFFICE__HOLDS__TTL_SECONDS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("holds.ttl_seconds"), "{text}");
}

#[test]
fn the_server_says_where_it_listens_serves_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("boxoffice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, lines) = spawn_with_log_lines(cheap_server(), &dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server logs `listening on http://ADDR`");

    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let answer = http_get(&addr, "/readyz");
        if answer.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let concerts = http_get(&addr, "/api/v1/concerts");
    assert!(
        concerts.contains("boxoffice demo night"),
        "demo seed: {concerts}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn with_the_json_flag_every_log_line_is_a_json_object() {
    let dir = std::env::temp_dir().join(format!("boxoffice-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = cheap_server();
    command.arg("--log-format").arg("json");
    let (mut child, rx) = spawn_with_log_lines(command, &dir);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let listening = line.contains("listening on http://");
            lines.push(line);
            if listening {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        lines.iter().any(|l| l.contains("listening on http://")),
        "{lines:?}"
    );
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
}

/// The trim runs from main's own thread, outside the library, so only the binary can show it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_heap_is_handed_back_on_the_configured_interval() {
    let dir = std::env::temp_dir().join(format!("boxoffice-cli-trim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = cheap_server();
    command
        .env("BOXOFFICE__SERVER__MEMORY_TRIM_SECONDS", "1")
        .env("BOXOFFICE__LOG__LEVEL", "info,boxoffice::memory_trim=debug");
    let (mut child, lines) = spawn_with_log_lines(command, &dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut trims = Vec::new();
    while trims.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if line.contains("trimmed the heap") {
                trims.push(line);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(trims.len(), 2, "two trims a second apart: {trims:?}");
    assert!(trims[0].contains("elapsed_us="), "{}", trims[0]);
}

/// Runs `command` in `dir` until it exits (at most `within`); kills it otherwise.
fn exit_within(
    mut command: Command,
    dir: &std::path::Path,
    within: Duration,
) -> Option<(std::process::ExitStatus, String)> {
    let mut child = command
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    status.map(|status| (status, stderr))
}

#[test]
fn a_short_admin_token_stops_the_start_with_the_config_exit_code() {
    let dir = std::env::temp_dir().join(format!("boxoffice-cli-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = cheap_server();
    command.env("BOXOFFICE__ADMIN__TOKEN", "secret");
    let exited = exit_within(command, &dir, Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    let (status, stderr) = exited.expect("the server refuses to start, it does not serve");
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the token is not echoed: {stderr}"
    );
}

/// A full disk is not a permissions problem: the start-up error says the disk is full, which
/// path, and what to do. `/dev/full` answers every write with ENOSPC; the server's write
/// check in the snapshot directory is pointed at it.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_at_start_up_is_named_as_such() {
    let dir = std::env::temp_dir().join(format!("boxoffice-cli-full-{}", std::process::id()));
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    std::os::unix::fs::symlink("/dev/full", snapshots.join(".boxoffice-write-probe")).unwrap();
    let exited = exit_within(cheap_server(), &dir, Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    let (status, stderr) = exited.expect("the server stops at start-up");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("disk is full"), "{stderr}");
    assert!(stderr.contains("snapshots"), "{stderr}");
    assert!(stderr.contains("free space"), "{stderr}");
    assert!(!stderr.contains("permissions"), "{stderr}");
}
