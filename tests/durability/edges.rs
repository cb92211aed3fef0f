//! The process's own edges: a stop that does not wait for the slowest client, and a start
//! under a low open-files limit that does not fall over at a thousand idle connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::bearer;
use super::server::{command, data_dir, Api, Server};

fn addr_of(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_slow_clients_and_exits_within_seconds() {
    let dir = data_dir("stop-bounded");
    let mut server = Server::start(&dir, &[]);
    let api = Api::new(&server.base);
    let date = api.create_date(10, 1_000).await;
    let session = api.new_user("streamer").await;
    let token = api.admitted(&session).await.unwrap();
    let addr = addr_of(&server);

    // An open live stream that never ends by itself.
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /api/v1/dates/{date}/seats/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {session}\r\nx-queue-token: {token}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 256];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = stream.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    // A slowloris connection, dripping one header line at a time.
    let mut slowloris = TcpStream::connect(&addr).unwrap();
    slowloris.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let dripping = std::thread::spawn(move || {
        for i in 0..100 {
            std::thread::sleep(Duration::from_millis(200));
            if write!(slowloris, "x-drip-{i}: 1\r\n").is_err() {
                return;
            }
        }
    });
    // Idle connections that never send a byte.
    let idle: Vec<_> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();

    let asked = Instant::now();
    server.send_sigterm();
    let exit = server.wait_for_exit(Duration::from_secs(5));
    let took = asked.elapsed();
    assert_eq!(
        exit,
        Some(0),
        "no clean exit within 5 s of SIGTERM ({took:?}):\n{}",
        server.output()
    );
    assert!(server.output().contains("stopped"), "{}", server.output());
    drop((stream, idle));
    dripping.join().unwrap();

    // Nothing acknowledged was lost on the way out.
    let restarted = Server::start(&dir, &[]);
    let api = Api::new(&restarted.base);
    let (status, me) = api
        .get("/api/v1/users/me", &[("authorization", &bearer(&session))])
        .await
        .unwrap();
    assert_eq!(status, 200, "{me}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_under_a_low_soft_descriptor_limit_serves_a_thousand_idle_connections() {
    use std::os::unix::process::CommandExt;

    let dir = data_dir("nofile");
    // All from 127.0.0.1 here, so the per-address bound is lifted: descriptors are the point.
    let mut start = command(
        &dir,
        &[(
            "BOXOFFICE__SERVER__MAX_CONNECTIONS_PER_IP",
            "5000".to_owned(),
        )],
    );
    // SAFETY: only setrlimit runs between fork and exec; it is async-signal-safe.
    unsafe {
        start.pre_exec(|| {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = 1_024.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::try_start_command(start).unwrap();
    let addr = addr_of(&server);
    // This test process needs the descriptors too.
    let hard = raise_own_soft_limit();
    if hard < 2_500 {
        eprintln!("skipped: the hard open-files limit here is {hard}");
        return;
    }
    let idle: Vec<_> = (0..1_100)
        .map(|_| TcpStream::connect(&addr).expect("connect while others idle"))
        .collect();
    let api = Api::new(&server.base);
    let (status, _) = api
        .get("/healthz", &[])
        .await
        .expect("the server answers with 1,100 idle connections open");
    assert_eq!(status, 200);
    assert!(
        !server.output().contains("Too many open files"),
        "{}",
        server.output()
    );
    drop(idle);
}

fn raise_own_soft_limit() -> u64 {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_max as u64
    }
}
