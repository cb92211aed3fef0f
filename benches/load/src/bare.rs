//! `bare`: the no-work server the ceiling floods unless told to flood `GET /healthz`.
//!
//! It runs on the server's HTTP stack — axum on hyper on a multi-threaded tokio runtime, the
//! versions the workspace pins for both packages — and does nothing else: `POST /` reads a
//! small JSON body, parses it and answers it back as JSON, with no state, no middleware and no
//! logging. Its requests per second are what the stack itself allows this client on this
//! machine, the ceiling every other rate is set against.
//!
//! It runs in a process of its own, so it shares no runtime with the generator: the generator
//! starts itself again with `--serve-bare` (`BareServer::start`); that process binds
//! 127.0.0.1:0, prints its address on stdout and serves until its stdin closes (the generator
//! ended, however it ended) or it is killed, as `BareServer` does when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The flag that makes this binary the bare server.
pub const SERVE_FLAG: &str = "--serve-bare";
/// The bare server's one route.
pub const PATH: &str = "/";

/// The body the bare server reads and answers back.
#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}

/// `POST /`: the body parsed and answered back, nothing else.
async fn echo(Json(body): Json<Echo>) -> Json<Echo> {
    Json(body)
}

/// The bare server's process: serves until stdin closes.
pub fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    let stdin_closed = stdin_closed();
    runtime.block_on(async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr().context("the bound address")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addr}")
            .and_then(|()| stdout.flush())
            .context("printing the address")?;
        drop(stdout);
        let router = Router::new().route(PATH, post(echo));
        tokio::select! {
            served = axum::serve(listener, router) => served.context("serving"),
            _ = stdin_closed => Ok(()),
        }
    })?;
    // Connections may still be open; do not wait for them.
    runtime.shutdown_background();
    Ok(())
}

/// Resolves once stdin reaches its end (or fails): the generator is gone or done.
fn stdin_closed() -> oneshot::Receiver<()> {
    let (closed, on_close) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    on_close
}

/// The bare server as the generator sees it: a child process, killed when this is dropped.
pub struct BareServer {
    child: Child,
    addr: SocketAddr,
}

impl BareServer {
    /// Starts this binary again as the bare server and waits for its address.
    pub fn start() -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().context("this binary's path, to start the bare server")?;
        let mut child = Command::new(exe)
            .arg(SERVE_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the bare server")?;
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let Some(addr) = read.ok().and_then(|_| line.trim().parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the bare server did not print its address (it printed {line:?})");
        };
        Ok(Self { child, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
