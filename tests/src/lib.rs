//! The integration-test harness: the whole spinpay app of the workspace's `spin.toml` (the
//! real `.wasm` components) served by `spinpay-host` on a loopback port with a fresh
//! temporary key-value store, and an HTTP client that talks to it the way a merchant, an
//! admin or a sandbox customer would.
//!
//! Compiling the components is the expensive part of a start and happens once per process
//! (the host caches compiled components), so each test binary shares ONE app
//! ([`shared_app`], kept alive with its own multi-thread runtime) and isolates tests with
//! fresh merchants instead of fresh apps:
//!
//! ```no_run
//! spinpay_tests::run(|app| async move {
//!     let m = app.new_merchant().await;
//!     let (status, payment) = m.create_payment(&spinpay_tests::payment_request(
//!         1250,
//!         serde_json::json!({"type": "qr_merchant"}),
//!     )).await;
//!     assert_eq!(status, 200, "{payment}");
//! });
//! ```
//!
//! Environment: `SPINPAY_TEST_REDIS=1` puts the key-value stores on a running Redis
//! server instead of temporary SQLite files (`SPINPAY_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/0`, for `default`; `SPINPAY_TEST_REDIS_<LABEL>_URL` for any other
//! label); `SPINPAY_TEST_MANIFEST` runs the suite against another manifest; `RUST_LOG` turns
//! on the host's logs.

pub mod contention;
pub mod receiver;
pub mod sim;
pub mod spin_stores;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use spinpay_host::app::{AppOptions, RunningApp, start};
use spinpay_host::manifest::Manifest;

/// The admin token of every test app (the secret variable `admin_token`).
pub const ADMIN_TOKEN: &str = "test-admin-token-4f1c9a7e2b";
/// The AES-256-GCM key of every test app (the secret variable `encryption_key`).
pub const ENCRYPTION_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The HMAC secret shared with the sandbox channel (the secret variable `sandbox_secret`).
pub const SANDBOX_SECRET: &str = "test-sandbox-secret-9d3e51";
/// The command that builds the components `spin.toml` points at.
pub const BUILD_COMMAND: &str = "./scripts/build-wasm.sh";
/// How many times a poll asks before giving up.
pub const POLL_ATTEMPTS_MAX: u32 = 50;
/// Pause between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The longest any single HTTP exchange may take (a 777 channel timeout takes a few s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Worker threads of the harness runtime (the app and every concurrent test task).
const RUNTIME_WORKERS: usize = 4;

/// `(HTTP status, body as JSON)`; a body that is not JSON comes back as a JSON string.
pub type Reply = (u16, Value);

/// The workspace's `spin.toml`, or the manifest named by `SPINPAY_TEST_MANIFEST`.
pub fn manifest_path() -> PathBuf {
    match std::env::var_os("SPINPAY_TEST_MANIFEST") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("spin.toml"),
    }
}

/// The process-wide runtime the shared app and every [`run`] future execute on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKERS)
            .enable_all()
            .thread_name("spinpay-tests")
            .build()
            .expect("building the test runtime")
    })
}

/// The app shared by every test of this process, started on first use.
pub fn shared_app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| runtime().block_on(TestApp::start(BTreeMap::new())))
}

/// Runs one test body against the shared app on the harness runtime. Panics propagate
/// to the calling test.
pub fn run<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(&'static TestApp) -> Fut,
    Fut: Future,
{
    let app = shared_app();
    runtime().block_on(body(app))
}

/// Loads `manifest`; panics with the build command when a component's `.wasm` is missing.
pub fn require_components(manifest: &Path) -> Manifest {
    let loaded = Manifest::load(manifest)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", manifest.display()));
    let missing: Vec<String> = loaded
        .components
        .iter()
        .filter(|(_, c)| !c.source.is_file())
        .map(|(id, c)| format!("{id} ({})", c.source.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "component .wasm missing: {}; run ./scripts/build-wasm.sh (from the workspace root) first",
        missing.join(", ")
    );
    loaded
}

/// Writes a runtime config giving every key-value label the manifest's components use a
/// fresh store: a SQLite file in `dir`, or with `SPINPAY_TEST_REDIS=1` a Redis database:
/// with `SPINPAY_TEST_REDIS_BASE` (`redis://host:port`, a server of its own with enough
/// databases) the next unused database of that server for each label, so every app of
/// the test process has stores of its own; else `SPINPAY_TEST_REDIS_URL` for `default`
/// (default `redis://127.0.0.1:6379/0`) and `SPINPAY_TEST_REDIS_<LABEL>_URL` for another
/// label (default database 1, 2, …). Returns its path.
pub fn write_runtime_config(manifest: &Manifest, dir: &Path) -> PathBuf {
    write_runtime_config_with(manifest, dir, "")
}

/// [`write_runtime_config`] with `extra` (TOML tables other than the key-value stores,
/// e.g. `[outbound_networking]`) at the end of the file.
pub fn write_runtime_config_with(manifest: &Manifest, dir: &Path, extra: &str) -> PathBuf {
    let redis = std::env::var("SPINPAY_TEST_REDIS").as_deref() == Ok("1");
    let mut labels: Vec<&str> = manifest
        .components
        .values()
        .flat_map(|c| c.key_value_stores.iter().map(String::as_str))
        .collect();
    labels.sort_unstable_by_key(|l| (*l != "default", *l));
    labels.dedup();
    let redis_base = std::env::var("SPINPAY_TEST_REDIS_BASE").ok();
    let mut text = String::new();
    for (index, label) in labels.iter().enumerate() {
        let table = if let (true, Some(base)) = (redis, &redis_base) {
            static NEXT_DATABASE: std::sync::atomic::AtomicUsize =
                std::sync::atomic::AtomicUsize::new(0);
            let db = NEXT_DATABASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("[key_value_store.{label}]\ntype = \"redis\"\nurl = \"{base}/{db}\"\n\n")
        } else if redis {
            let var = match *label {
                "default" => "SPINPAY_TEST_REDIS_URL".to_string(),
                other => format!(
                    "SPINPAY_TEST_REDIS_{}_URL",
                    other.to_ascii_uppercase().replace('-', "_")
                ),
            };
            let url =
                std::env::var(&var).unwrap_or_else(|_| format!("redis://127.0.0.1:6379/{index}"));
            format!("[key_value_store.{label}]\ntype = \"redis\"\nurl = {url:?}\n\n")
        } else {
            let path = dir.join(format!("{label}_key_value.db"));
            format!(
                "[key_value_store.{label}]\ntype = \"spin\"\npath = {:?}\n\n",
                path.display().to_string()
            )
        };
        text.push_str(&table);
    }
    text.push_str(extra);
    let path = dir.join("runtime-config.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// A running app plus the HTTP client that talks to it.
pub struct TestApp {
    base_url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    running: Option<RunningApp>,
    _kv_dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the whole app on `127.0.0.1:0` with a fresh SQLite store (or Redis, see the
    /// crate docs), the test secrets, and `variables` overriding any of them. Must run on
    /// a runtime that outlives the app (e.g. [`runtime`]).
    pub async fn start(variables: BTreeMap<String, String>) -> TestApp {
        TestApp::start_manifest(&manifest_path(), variables).await
    }

    /// [`TestApp::start`] for another manifest (e.g. a reduced one).
    pub async fn start_manifest(manifest: &Path, variables: BTreeMap<String, String>) -> TestApp {
        TestApp::start_configured(manifest, variables, "").await
    }

    /// [`TestApp::start_manifest`] with `runtime_config` (TOML tables other than the
    /// key-value stores, e.g. `[outbound_networking]`) added to the runtime config.
    pub async fn start_configured(
        manifest: &Path,
        variables: BTreeMap<String, String>,
        runtime_config: &str,
    ) -> TestApp {
        TestApp::start_with(manifest, variables, runtime_config, None).await
    }

    /// [`TestApp::start`] with every key-value store wrapped by `wrap` (e.g. to behave
    /// like Spin's own stores, see [`spin_stores`]).
    pub async fn start_wrapped(wrap: spinpay_host::kv::KvWrap) -> TestApp {
        TestApp::start_with(&manifest_path(), BTreeMap::new(), "", Some(wrap)).await
    }

    async fn start_with(
        manifest: &Path,
        variables: BTreeMap<String, String>,
        runtime_config: &str,
        kv_wrap: Option<spinpay_host::kv::KvWrap>,
    ) -> TestApp {
        let loaded = require_components(manifest);
        if std::env::var_os("RUST_LOG").is_some() {
            spinpay_host::logging::init_tracing();
        }
        let kv_dir = tempfile::tempdir().expect("creating the key-value temp dir");
        let mut opts = AppOptions::new(manifest);
        let rc = write_runtime_config_with(&loaded, kv_dir.path(), runtime_config);
        opts.runtime_config_file = Some(rc);
        opts.kv_wrap = kv_wrap;
        for (name, value) in [
            ("admin_token", ADMIN_TOKEN),
            ("encryption_key", ENCRYPTION_KEY),
            ("sandbox_secret", SANDBOX_SECRET),
        ] {
            opts.variables.insert(name.to_string(), value.to_string());
        }
        // Merchant notifications may only reach loopback receivers in tests (never the
        // https hosts a fuzzed notify_url names).
        if loaded.variables.contains_key("notify_outbound_hosts") {
            let loopback = "http://127.0.0.1:*".to_string();
            opts.variables
                .insert("notify_outbound_hosts".into(), loopback);
        }
        opts.variables.extend(variables);
        let running = start(opts)
            .await
            .unwrap_or_else(|e| panic!("starting the app of {}: {e:#}", manifest.display()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        TestApp {
            base_url: running.base_url(),
            client,
            running: Some(running),
            _kv_dir: kv_dir,
        }
    }

    /// A client for an app served elsewhere (e.g. a host in a child process) at `base_url`.
    pub fn connect(base_url: &str) -> TestApp {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        TestApp {
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
            running: None,
            _kv_dir: tempfile::tempdir().expect("creating a temp dir"),
        }
    }

    /// The app's `default` key-value store, to inspect (or age) what the components
    /// stored. Only for apps started in this process.
    pub fn store(&self) -> Arc<dyn spinpay_host::kv::KvBackend> {
        self.running
            .as_ref()
            .expect("an app started in this process")
            .key_value_store("default")
            .expect("the app's default store is open")
    }

    /// Stops the app (for apps started with [`TestApp::start`], not the shared one).
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Any request: `headers` as given, `body` as raw bytes.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.try_request(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestApp::request`] that reports a transport failure or a timeout as `Err` instead
    /// of panicking (for tests that kill the server).
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|e| panic!("building {method} {path}: {e}"));
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e:#}"))?;
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, json))
    }

    /// `POST path` with a JSON body, an optional bearer key and an optional Idempotency-Key.
    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        idempotency_key: Option<&str>,
        json: &Value,
    ) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        if let Some(k) = idempotency_key {
            headers.push(("idempotency-key", k));
        }
        self.request("POST", path, &headers, json.to_string().into_bytes())
            .await
    }

    /// `GET path` with an optional bearer key.
    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.request("GET", path, &headers, Vec::new()).await
    }

    /// `PUT path` with a JSON body and a bearer key.
    pub async fn put(&self, path: &str, key: &str, json: &Value) -> Reply {
        let auth = format!("Bearer {key}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        self.request("PUT", path, &headers, json.to_string().into_bytes())
            .await
    }

    /// Onboards a merchant with the admin token: `(merchant_id, secret_key, webhook_secret)`.
    pub async fn admin_create_merchant(&self) -> (String, String, String) {
        let body = json!({"name": unique("Test merchant")});
        let idem = unique("onboard");
        let (status, v) = self
            .post("/v1/admin/merchants", Some(ADMIN_TOKEN), Some(&idem), &body)
            .await;
        assert_eq!(status, 200, "POST /v1/admin/merchants: {v}");
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("merchant response without {name}: {v}"))
                .to_string()
        };
        (field("id"), field("secret_key"), field("webhook_secret"))
    }

    /// A fresh merchant, for isolation between tests.
    pub async fn new_merchant(&self) -> Merchant<'_> {
        let (id, secret_key, webhook_secret) = self.admin_create_merchant().await;
        Merchant {
            app: self,
            id,
            secret_key,
            webhook_secret,
        }
    }

    /// The customer pays in the sandbox: `POST /sandbox/customer/pay {"payment_ref"}`.
    pub async fn customer_pay(&self, payment_ref: &str) -> Reply {
        self.post(
            "/sandbox/customer/pay",
            None,
            None,
            &json!({"payment_ref": payment_ref}),
        )
        .await
    }

    /// Posts a channel notification to `POST /v1/webhooks/sandbox` exactly as `body`
    /// bytes, with the `Sandbox-Signature` header when given.
    pub async fn post_sandbox_notification(&self, body: &[u8], signature: Option<&str>) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(sig) = signature {
            headers.push(("sandbox-signature", sig));
        }
        self.request("POST", "/v1/webhooks/sandbox", &headers, body.to_vec())
            .await
    }

    /// The six-digit code of the last SMS the sandbox sent to `phone`.
    pub async fn sms_code(&self, phone: &str) -> String {
        let path = format!("/sandbox/sms/{}", phone.replace('+', "%2B"));
        let (status, v) = self.get(&path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        let text = v["text"]
            .as_str()
            .unwrap_or_else(|| panic!("SMS without text: {v}"));
        text.split(|c: char| !c.is_ascii_digit())
            .rfind(|w| w.len() == 6)
            .unwrap_or_else(|| panic!("no 6-digit code in the SMS {text:?}"))
            .to_string()
    }
}

/// A merchant of a [`TestApp`] with its credentials; requests carry its secret key.
pub struct Merchant<'a> {
    /// The app.
    pub app: &'a TestApp,
    /// `mch_…`.
    pub id: String,
    /// `sk_…`.
    pub secret_key: String,
    /// `whsec_…`.
    pub webhook_secret: String,
}

impl Merchant<'_> {
    /// `POST path` with a fresh Idempotency-Key.
    pub async fn post(&self, path: &str, json: &Value) -> Reply {
        let idem = unique("idem");
        self.post_with_key(path, Some(&idem), json).await
    }

    /// `POST path` with the given Idempotency-Key (or none).
    pub async fn post_with_key(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        json: &Value,
    ) -> Reply {
        self.app
            .post(path, Some(&self.secret_key), idempotency_key, json)
            .await
    }

    /// `POST path` with a raw body and the merchant's key (malformed-input tests).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        let auth = format!("Bearer {}", self.secret_key);
        let idem = unique("idem");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
            ("idempotency-key", idem.as_str()),
        ];
        self.app.request("POST", path, &headers, body).await
    }

    /// `GET path` with the merchant's key.
    pub async fn get(&self, path: &str) -> Reply {
        self.app.get(path, Some(&self.secret_key)).await
    }

    /// `POST /v1/payments`.
    pub async fn create_payment(&self, body: &Value) -> Reply {
        self.post("/v1/payments", body).await
    }

    /// `POST /v1/payments`, asserting 200; returns the payment.
    pub async fn create_payment_ok(&self, body: &Value) -> Value {
        let (status, v) = self.create_payment(body).await;
        assert_eq!(status, 200, "POST /v1/payments {body}: {v}");
        assert_eq!(v["object"], "payment", "{v}");
        v
    }

    /// `GET /v1/payments/{id}`, asserting 200.
    pub async fn payment(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/v1/payments/{id}")).await;
        assert_eq!(status, 200, "GET /v1/payments/{id}: {v}");
        v
    }

    /// `GET /v1/payments?{query}`, asserting 200; returns the list object.
    pub async fn list_payments(&self, query: &str) -> Value {
        let (status, v) = self.get(&format!("/v1/payments?{query}")).await;
        assert_eq!(status, 200, "GET /v1/payments?{query}: {v}");
        assert_eq!(v["object"], "list", "{v}");
        v
    }

    /// How many payments the merchant has (walks every page).
    pub async fn count_payments(&self) -> usize {
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let query = match &after {
                Some(id) => format!("limit=100&starting_after={id}"),
                None => "limit=100".to_string(),
            };
            let page = self.list_payments(&query).await;
            let data = page["data"].as_array().expect("list data").clone();
            count += data.len();
            if page["has_more"] != json!(true) || data.is_empty() {
                return count;
            }
            after = data
                .last()
                .and_then(|p| p["id"].as_str())
                .map(str::to_string);
        }
    }

    /// Polls `GET /v1/payments/{id}` (at most [`POLL_ATTEMPTS_MAX`] times) until the
    /// payment has `status`; panics with the last payment otherwise.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..POLL_ATTEMPTS_MAX {
            last = self.payment(id).await;
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!("payment {id} did not reach {status} after {POLL_ATTEMPTS_MAX} polls: {last}");
    }
}

/// The `Sandbox-Signature` header value for `body` signed at `t_unix_s` with `secret`:
/// `t=<unix s>,v1=<hex HMAC-SHA256(secret, "t.body")>` (docs/sandbox.md).
pub fn sandbox_signature(secret: &str, t_unix_s: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{t_unix_s}.").as_bytes());
    mac.update(body);
    format!(
        "t={t_unix_s},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A sandbox payment request in CNY with `method`, automatic capture.
pub fn payment_request(amount_minor: i64, method: Value) -> Value {
    json!({
        "amount_minor": amount_minor,
        "currency": "CNY",
        "channel": "sandbox",
        "method": method,
    })
}

/// The same request with manual capture.
pub fn manual_payment_request(amount_minor: i64, method: Value) -> Value {
    let mut v = payment_request(amount_minor, method);
    v["capture"] = json!("manual");
    v
}

/// A customer-presented qr_customer method with a fresh auth code the sandbox pays at once.
pub fn qr_customer() -> Value {
    json!({"type": "qr_customer", "auth_code": unique_token()})
}

/// Asserts an error reply: exact status, `error.code`, and the documented error shape.
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    let (got_status, body) = reply;
    assert_eq!(
        (*got_status, body["error"]["code"].as_str()),
        (status, Some(code)),
        "expected {status} {code}, got {got_status}: {body}"
    );
    let err = &body["error"];
    assert!(err["type"].is_string(), "error without type: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    assert!(
        err.get("param").is_some(),
        "error without a param field (null when none): {body}"
    );
}

/// Asserts an error reply and the field it names.
pub fn assert_error_param(reply: &Reply, status: u16, code: &str, param: &str) {
    assert_error(reply, status, code);
    assert_eq!(
        reply.1["error"]["param"].as_str(),
        Some(param),
        "wrong param: {}",
        reply.1
    );
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A unique reference `prefix-<hex>` (valid as an order id, refund id or Idempotency-Key).
pub fn unique(prefix: &str) -> String {
    format!("{}-{:016x}", prefix.replace(' ', "-"), random_u64())
}

/// A fresh E.164 phone number (+86 and 13 digits) that the sandbox delivers SMS to.
pub fn unique_phone() -> String {
    format!("+861{:08}2876", random_u64() % 100_000_000)
}

/// A fresh 18-digit customer code the sandbox pays at once (does not end in the magic
/// `0000` decline or `1111` wait suffixes).
pub fn unique_token() -> String {
    format!("28{:012}2876", random_u64() % 1_000_000_000_000)
}

/// The lower-case hex SHA-256 of `text`: how the store names an Idempotency-Key
/// (`mch/{mid}/idem/{hash}`) or a channel notification's replay key.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
}

/// Moves the millisecond fields `fields` of the stored record at `key` by `delta_ms`
/// (records are JSON envelopes `{"version", "write_ids", "json": {...}}`), as if the
/// record had been written that much earlier.
pub async fn shift_record_time(
    store: &dyn spinpay_host::kv::KvBackend,
    key: &str,
    fields: &[&str],
    delta_ms: i64,
) {
    let raw = store
        .get(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} is stored"));
    let mut envelope: Value = serde_json::from_slice(&raw).unwrap();
    for field in fields {
        if let Some(t) = envelope["json"][field].as_i64() {
            envelope["json"][field] = json!(t + delta_ms);
        }
    }
    store
        .set(key, serde_json::to_vec(&envelope).unwrap())
        .await
        .unwrap();
}

/// The key of the slot naming `id` in a queue whose counter is at `seq_key` and whose
/// slot `n` is at `slot_key(n)` (slots are JSON envelopes with `json.id`); panics when no
/// slot names it.
pub async fn queue_slot_naming(
    store: &dyn spinpay_host::kv::KvBackend,
    seq_key: &str,
    slot_key: impl Fn(i64) -> String,
    id: &str,
) -> String {
    let last = store.increment(seq_key, 0).await.unwrap();
    for seq in 1..=last {
        let key = slot_key(seq);
        if let Some(raw) = store.get(&key).await.unwrap() {
            let v: Value = serde_json::from_slice(&raw).unwrap();
            if v["json"]["id"] == id {
                return key;
            }
        }
    }
    panic!("no slot of {seq_key} names {id}")
}
