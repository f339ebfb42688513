//! Local simulators of the real payment channels, for the end-to-end channel tests.
//!
//! Each simulator is a small hyper server on `127.0.0.1:<ephemeral>` that plays the
//! channel's side of its published protocol, written here independently of the adapters
//! in `shared/channels` (its own canonical strings, its own RSA and AES-GCM calls): it
//! verifies OUR request signatures, answers signed like the channel, and posts signed
//! notifications to the app's webhook. [`ChannelWorld`] starts the three simulators (and
//! [`twilio`], which sends the one-time codes) and one app whose Spin variables point the
//! adapters at them.
//!
//! Magic amounts (minor units) select a fault, so tests running in parallel never
//! disturb each other: see [`Fault::for_amount`].

pub mod alipay;
pub mod twilio;
pub mod unionpay;
pub mod wechatpay;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::{TestApp, runtime};

/// The public origin the app is told it has: notify URLs sent to the channels must be
/// `{PUBLIC_BASE_URL}/v1/webhooks/<channel>` (the simulators check it, then deliver to
/// the app's real loopback address).
pub const PUBLIC_BASE_URL: &str = "https://pay.spinpay.test";
/// How long a simulator sits on a request in [`Fault::Timeout`] (the adapters give up
/// after 2.5 s).
pub const SLOW_ANSWER: Duration = Duration::from_secs(4);

/// A fault the simulators play for a payment (or refund) amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave like the channel.
    None,
    /// Do the work, then answer only after [`SLOW_ANSWER`] (the adapter times out).
    Timeout,
    /// HTTP 500 without doing anything (the Alipay simulator's create and refund: on
    /// the first such call about a trade only).
    ServerError,
    /// HTTP 200 with a body that is not the protocol's.
    Garbage,
    /// Do the work and answer signed with a key that is not the channel's.
    BadSignature,
    /// The customer pays at once: the notification reaches the webhook before the
    /// answer to the authorize call.
    NotifyFirst,
    /// WeChat Pay: a well-formed 2xx answer without signature headers.
    Unsigned,
}

impl Fault {
    /// The magic amounts: 601 timeout, 602 server error, 603 garbage, 604 bad signature,
    /// 605 notification first, 606 unsigned; anything else behaves.
    pub fn for_amount(amount_minor: i64) -> Fault {
        match amount_minor {
            601 => Fault::Timeout,
            602 => Fault::ServerError,
            603 => Fault::Garbage,
            604 => Fault::BadSignature,
            605 => Fault::NotifyFirst,
            606 => Fault::Unsigned,
            _ => Fault::None,
        }
    }

    /// Sits on the answer for [`SLOW_ANSWER`] under [`Fault::Timeout`] (the work is done
    /// by then); returns at once otherwise.
    pub async fn stall(self) {
        if self == Fault::Timeout {
            tokio::time::sleep(SLOW_ANSWER).await;
        }
    }
}

/// An RSA key pair of one party.
#[derive(Clone)]
pub struct KeyPair {
    private: RsaPrivateKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(***)")
    }
}

impl KeyPair {
    /// A fresh 2048-bit key.
    pub fn generate() -> KeyPair {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA keygen");
        KeyPair { private }
    }

    /// The private key as PKCS#8 PEM (what the app's variables take).
    pub fn private_pem(&self) -> String {
        self.private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string()
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.public()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI encoding")
    }

    /// The public key.
    pub fn public(&self) -> RsaPublicKey {
        self.private.to_public_key()
    }

    /// SHA256withRSA (PKCS#1 v1.5) of `message`, base64.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        let key = SigningKey::<Sha256>::new(self.private.clone());
        let sig = key.sign_with_rng(&mut rand::thread_rng(), message);
        B64.encode(sig.to_bytes())
    }

    /// True if `sig_b64` is this key's SHA256withRSA signature of `message`.
    pub fn verify_b64(&self, message: &[u8], sig_b64: &str) -> bool {
        verify_b64(&self.public(), message, sig_b64)
    }
}

/// True if `sig_b64` is `key`'s SHA256withRSA signature of `message`.
pub fn verify_b64(key: &RsaPublicKey, message: &[u8], sig_b64: &str) -> bool {
    let Ok(bytes) = B64.decode(sig_b64.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(message, &sig)
        .is_ok()
}

/// A request as a simulator sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl SimRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A simulator's answer.
#[derive(Debug, Clone)]
pub struct SimResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl SimResponse {
    /// An answer with a content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> SimResponse {
        SimResponse {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }
}

type Handler =
    Arc<dyn Fn(SimRequest) -> Pin<Box<dyn Future<Output = SimResponse> + Send>> + Send + Sync>;

/// Serves `handler` on `127.0.0.1:0` on the harness runtime; returns the address.
pub async fn serve(handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a simulator");
    let addr = listener.local_addr().expect("simulator address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                        let req = SimRequest {
                            method: parts.method.to_string(),
                            path: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts
                                .headers
                                .iter()
                                .filter_map(|(n, v)| {
                                    Some((n.to_string(), v.to_str().ok()?.to_string()))
                                })
                                .collect(),
                            body: body.unwrap_or_default(),
                        };
                        let resp = handler(req).await;
                        let mut builder = hyper::Response::builder().status(resp.status);
                        for (n, v) in &resp.headers {
                            builder = builder.header(n.as_str(), v.as_str());
                        }
                        Ok::<_, Infallible>(
                            builder
                                .body(Full::new(Bytes::from(resp.body)))
                                .expect("simulator response"),
                        )
                    }
                });
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// A channel simulator as [`listen`] serves it.
pub trait Simulator: Send + Sync + 'static {
    /// Answers one request, as the channel would.
    fn handle(self: Arc<Self>, req: SimRequest) -> impl Future<Output = SimResponse> + Send;
    /// Where its `http://127.0.0.1:<port>` is recorded once it listens.
    fn origin_cell(&self) -> &OnceLock<String>;
}

/// Serves `sim` on `127.0.0.1:0` (see [`serve`]) and records its origin; returns it.
pub async fn listen<S: Simulator>(sim: S) -> Arc<S> {
    let sim = Arc::new(sim);
    let served = sim.clone();
    let addr = serve(Arc::new(move |req| {
        let sim = served.clone();
        Box::pin(async move { sim.handle(req).await })
    }))
    .await;
    sim.origin_cell()
        .set(format!("http://{addr}"))
        .expect("set once");
    sim
}

/// Where simulators deliver notifications: the app's loopback address, set once the app
/// has started.
#[derive(Debug, Default)]
pub struct Webhook {
    base: OnceLock<String>,
}

impl Webhook {
    /// Posts `body` with `headers` to the app's `/v1/webhooks/{channel}`:
    /// `(status, body text)`.
    pub async fn post(
        &self,
        channel: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let base = self.base.get().expect("the app has started");
        let url = format!("{base}/v1/webhooks/{channel}");
        let headers = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let sent = send_post(&url, headers, body);
        let resp = tokio::time::timeout(crate::REQUEST_TIMEOUT, sent)
            .await
            .expect("the webhook answers in time")
            .expect("the webhook answers");
        status_and_text(resp).await
    }
}

/// How often a simulator re-sends a notification the webhook did not acknowledge (the
/// real channels retry for hours; a 5xx from us means "not recorded, send again").
pub const REDELIVERIES_MAX: u32 = 5;

impl Webhook {
    /// [`Webhook::post`], re-sent (after a pause) while the answer is not 2xx, like a
    /// real channel's retry schedule; the last answer.
    pub async fn deliver(
        &self,
        channel: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut answer = self.post(channel, headers, body.clone()).await;
        for _ in 0..REDELIVERIES_MAX {
            if (200..300).contains(&answer.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            answer = self.post(channel, headers, body.clone()).await;
        }
        answer
    }
}

/// Posts `body` to any loopback `url` (a simulator, directly): `(status, body text)`.
pub async fn post_to(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let sent = send_post(url, headers.iter().copied(), body);
    status_and_text(sent.await.expect("the simulator answers")).await
}

/// POSTs `body` with `headers` to `url` on a fresh plain-HTTP client.
fn send_post<'a>(
    url: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: Vec<u8>,
) -> ResponseFuture {
    let mut builder = hyper::Request::builder().method("POST").uri(url);
    for (n, v) in headers {
        builder = builder.header(n, v);
    }
    let req = builder.body(Full::new(Bytes::from(body))).expect("request");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    client.request(req)
}

/// An answer's status and body text (lossy UTF-8).
async fn status_and_text(resp: hyper::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `application/x-www-form-urlencoded` encoding of `pairs` in the given order.
pub fn form_encode(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// Decodes a form body.
pub fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A field of a decoded form.
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `k=v&…` of the non-empty fields, byte-sorted by key, without `exclude` (the string
/// Alipay and UnionPay sign).
pub fn sorted_string(pairs: &[(String, String)], exclude: &[&str]) -> String {
    let mut kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, v)| !v.is_empty() && !exclude.contains(&k.as_str()))
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A random alphanumeric string.
/// A channel's Beijing wall-clock time as Unix ms: Alipay's `yyyy-MM-dd HH:mm:ss`,
/// UnionPay's `yyyyMMddHHmmss` or WeChat Pay's RFC 3339 with `+08:00`; `None` if it is
/// none of them.
pub fn beijing_unix_ms(text: &str) -> Option<i64> {
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    let known = match shape.as_str() {
        "dddd-dd-dd dd:dd:dd" | "dddddddddddddd" => true,
        "dddd-dd-ddTdd:dd:dd+dd:dd" => text.ends_with("+08:00"),
        _other => false,
    };
    if !known {
        return None;
    }
    let digits: Vec<i64> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| i64::from(b - b'0'))
        .collect();
    let num = |from: usize, len: usize| digits[from..from + len].iter().fold(0, |n, d| n * 10 + d);
    let (y, m, d) = (num(0, 4), num(4, 2), num(6, 2));
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let local_s = days * 86_400 + num(8, 2) * 3600 + num(10, 2) * 60 + num(12, 2);
    Some((local_s - 8 * 3600) * 1000)
}

pub fn random_alnum(len: usize) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// The three simulators and the app configured against them, shared by a test binary.
pub struct ChannelWorld {
    /// The app.
    pub app: TestApp,
    /// Alipay.
    pub alipay: Arc<alipay::AlipaySim>,
    /// WeChat Pay.
    pub wechatpay: Arc<wechatpay::WechatpaySim>,
    /// UnionPay.
    pub unionpay: Arc<unionpay::UnionpaySim>,
    /// Twilio, which sends the app's one-time codes.
    pub twilio: Arc<twilio::TwilioSim>,
}

impl ChannelWorld {
    /// Starts the simulators, then the app with the channel variables pointing at them.
    pub async fn start() -> ChannelWorld {
        let webhook = Arc::new(Webhook::default());
        let keys = tokio::task::spawn_blocking(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..6).map(|_| s.spawn(KeyPair::generate)).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("keygen"))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .expect("keygen task");
        let [a_ours, a_theirs, w_ours, w_theirs, u_ours, u_theirs]: [KeyPair; 6] =
            keys.try_into().expect("six keys");
        let alipay = alipay::AlipaySim::start(a_ours, a_theirs, webhook.clone()).await;
        let wechatpay = wechatpay::WechatpaySim::start(w_ours, w_theirs, webhook.clone()).await;
        let unionpay = unionpay::UnionpaySim::start(u_ours, u_theirs, webhook.clone()).await;
        let twilio = twilio::TwilioSim::start().await;
        let mut vars = BTreeMap::new();
        vars.insert("public_base_url".to_string(), PUBLIC_BASE_URL.to_string());
        vars.extend(alipay.app_variables());
        vars.extend(wechatpay.app_variables());
        vars.extend(unionpay.app_variables());
        vars.extend(twilio.app_variables());
        let app = TestApp::start(vars).await;
        webhook
            .base
            .set(app.base_url().to_string())
            .expect("set once");
        ChannelWorld {
            app,
            alipay,
            wechatpay,
            unionpay,
            twilio,
        }
    }
}

/// The world shared by every test of this process, started on first use.
pub fn world() -> &'static ChannelWorld {
    static WORLD: OnceLock<ChannelWorld> = OnceLock::new();
    WORLD.get_or_init(|| runtime().block_on(ChannelWorld::start()))
}

/// Runs one test body against the shared [`ChannelWorld`] on the harness runtime.
pub fn run_world<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(&'static ChannelWorld) -> Fut,
    Fut: Future,
{
    let w = world();
    runtime().block_on(body(w))
}

/// Runs one test body against a [`ChannelWorld`] of its own, for a test that must not
/// share the app's queues with the other tests of its process (left running until the
/// process ends, like the shared one).
pub fn run_own_world<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(&'static ChannelWorld) -> Fut,
    Fut: Future,
{
    let w: &'static ChannelWorld = Box::leak(Box::new(runtime().block_on(ChannelWorld::start())));
    runtime().block_on(body(w))
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_channels_beijing_time_reads_as_the_same_instant() {
        // Proves Alipay's, UnionPay's and WeChat Pay's spellings of 2024-03-01 00:30:05
        // Beijing (a leap day's next day) are 2024-02-29 16:30:05 UTC, the epoch reads
        // back, and other shapes are refused.
        let want = Some(1_709_224_205_000);
        assert_eq!(super::beijing_unix_ms("2024-03-01 00:30:05"), want);
        assert_eq!(super::beijing_unix_ms("20240301003005"), want);
        assert_eq!(super::beijing_unix_ms("2024-03-01T00:30:05+08:00"), want);
        assert_eq!(super::beijing_unix_ms("1970-01-01 08:00:00"), Some(0));
        for bad in [
            "2024-03-01T00:30:05Z",
            "2024-03-01 00:30",
            "",
            "x024-03-01 00:30:05",
        ] {
            assert_eq!(super::beijing_unix_ms(bad), None, "{bad}");
        }
    }
}
