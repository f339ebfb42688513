//! A merchant's notification endpoint for tests: a real HTTP server (hyper) on
//! 127.0.0.1 that answers 500 to the first N POSTs and 200 after (with a short, a large
//! or a never-ending body), and records every request, so a test can check what arrived,
//! how often, and with which signature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The path the receiver listens on (any path is accepted; this one is in [`Receiver::url`]).
pub const HOOK_PATH: &str = "/hooks/spinpay";

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lower-case, with their values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }
}

/// The body a receiver answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnswerBody {
    /// `ok`.
    #[default]
    Short,
    /// This many bytes, with their `content-length`.
    Large(usize),
    /// A first chunk, then nothing more for as long as the connection stays open.
    Endless,
}

#[derive(Debug, Default)]
struct State {
    fail_next: u32,
    body: AnswerBody,
    received: Vec<Received>,
}

/// The running receiver (stops when dropped).
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on an ephemeral loopback port; the first `fail_first` POSTs get 500.
    pub async fn start(fail_first: u32) -> Receiver {
        Receiver::answering(fail_first, AnswerBody::Short).await
    }

    /// [`Receiver::start`] whose answers carry `body`.
    pub async fn answering(fail_first: u32, body: AnswerBody) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(Mutex::new(State {
            fail_next: fail_first,
            body,
            received: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&state), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    /// `http://127.0.0.1:<port>/hooks/spinpay`.
    pub fn url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.addr)
    }

    /// Every POST so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The ids of the events answered 2xx, deduplicated as a merchant would (by the
    /// event id in the body), in first-arrival order.
    pub fn delivered_event_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for r in self.received().iter().filter(|r| r.status == 200) {
            let id = r.json()["id"].as_str().unwrap_or_default().to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Makes the next `n` POSTs fail with 500.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<BoxBody<Bytes, hyper::Error>>, hyper::Error> {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = v.to_str().unwrap_or_default().to_string();
            (n.as_str().to_string(), value)
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes().to_vec();
    let (status, answer) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let status = if s.fail_next > 0 {
            s.fail_next -= 1;
            500
        } else {
            200
        };
        s.received.push(Received {
            headers,
            body,
            status,
        });
        (status, s.body)
    };
    let body = match answer {
        AnswerBody::Short => Full::new(Bytes::from_static(b"ok"))
            .map_err(|never| match never {})
            .boxed(),
        AnswerBody::Large(n) => Full::new(Bytes::from(vec![b'x'; n]))
            .map_err(|never| match never {})
            .boxed(),
        AnswerBody::Endless => {
            let first = futures::stream::once(async {
                Ok::<_, hyper::Error>(hyper::body::Frame::data(Bytes::from_static(b"<html>")))
            });
            let endless = futures::StreamExt::chain(first, futures::stream::pending());
            StreamBody::new(endless).boxed()
        }
    };
    let resp = hyper::Response::builder()
        .status(status)
        .body(body)
        .expect("a static response");
    Ok(resp)
}
