//! The socket as hyper sees it, with two guards hyper does not have: a write that makes no
//! progress for `write_timeout` fails the connection (a client that asks and never reads
//! cannot pin a response in memory), and hyper's own bodiless answer to a request it could not
//! parse is replaced by a problem+json one, as every other error is.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::http::error::problem_json;

pub struct GuardedIo {
    stream: TcpStream,
    stall: Stall,
    rewrite: Option<Rewrite>,
}

impl GuardedIo {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Self {
            stream,
            stall: Stall {
                timeout: write_timeout,
                deadline: None,
            },
            rewrite: None,
        }
    }
}

/// The deadline of a write the socket has not accepted yet. Armed at the first `Pending`,
/// cleared by any progress, so a slow reader that keeps reading is never cut off.
struct Stall {
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self.deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not read its response in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// A replacement being written in place of the bytes hyper handed over (`claimed`).
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    claimed: usize,
}

/// hyper answers a request it cannot parse itself, with a head and no body, and closes. The
/// application never sends a 400, 414 or 431 without a body, so such a head is hyper's.
fn parser_answer_in_problem_json(head: &[u8]) -> Option<Vec<u8>> {
    const PREFIXES: [(&[u8], StatusCode, &str, &str); 3] = [
        (
            b"HTTP/1.1 400 ",
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the request is not valid HTTP/1.1: check the request line and headers",
        ),
        (
            b"HTTP/1.1 414 ",
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is too long",
        ),
        (
            b"HTTP/1.1 431 ",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request headers are too large or too many",
        ),
    ];
    let (_, status, code, detail) = PREFIXES
        .iter()
        .find(|(prefix, ..)| head.starts_with(prefix))?;
    let bodiless = head
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let body = problem_json(*status, code, detail);
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl GuardedIo {
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Self {
            stream,
            stall,
            rewrite,
        } = self;
        let Some(pending) = rewrite.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while pending.written < pending.bytes.len() {
            let polled = Pin::new(&mut *stream).poll_write(cx, &pending.bytes[pending.written..]);
            match ready!(stall.guard(cx, polled)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => pending.written += n,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        let claimed = pending.claimed;
        *rewrite = None;
        Poll::Ready(Ok(claimed))
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none() {
            if let Some(bytes) = parser_answer_in_problem_json(buf) {
                this.rewrite = Some(Rewrite {
                    bytes,
                    written: 0,
                    claimed: buf.len(),
                });
            }
        }
        if this.rewrite.is_some() {
            return this.poll_rewrite(cx);
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none() && bufs.len() == 1 {
            if let Some(bytes) = parser_answer_in_problem_json(&bufs[0]) {
                this.rewrite = Some(Rewrite {
                    bytes,
                    written: 0,
                    claimed: bufs[0].len(),
                });
            }
        }
        if this.rewrite.is_some() {
            return this.poll_rewrite(cx);
        }
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.stall.guard(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_parse_error_becomes_problem_json() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(parser_answer_in_problem_json(head).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(
            answer.contains("\"code\":\"headers_too_large\""),
            "{answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }

    #[test]
    fn an_application_400_with_a_body_is_left_alone() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 120\r\n\r\n";
        assert!(parser_answer_in_problem_json(head).is_none());
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let head = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert!(parser_answer_in_problem_json(head).is_none());
    }
}
