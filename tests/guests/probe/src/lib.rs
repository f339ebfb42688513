//! `guest-probe`: a Spin HTTP component the host's integration tests drive. The operation
//! is chosen by the `op` query parameter (default `echo`); every answer is JSON.
//!
//! | op | what it does |
//! |---|---|
//! | `echo` | `COMPONENT` env var, request method, URI, `spin-*` headers (repeated ones joined by `, `) and body length |
//! | `kv-set` / `kv-get` / `kv-delete` / `kv-exists` / `kv-keys` | `spin:key-value` on `store` (default `default`) |
//! | `wkv-set` / `wkv-get` / `wkv-delete` / `wkv-exists` / `wkv-keys` | the same through `wasi:keyvalue/store` |
//! | `incr` | `wasi:keyvalue/atomics.increment(key, delta)` |
//! | `cas-add` | read-modify-write of a decimal counter with `cas` + `swap`, retried until it lands |
//! | `batch` | `set-many` of `k1=v1,k2=v2`, `get-many`, then `delete-many` of the first |
//! | `var` | `spin:variables.get(name)` |
//! | `fetch` | outbound GET of `url`; answers with the status and body, or the error |
//! | `print` | writes a line to stdout and one to stderr |
//! | `loop` | sets `key` (when given) to `looping` in `store`, then spins forever (the host's deadline must cut it off) |
//! | `trap` | panics |

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use spin_sdk::experimental::wasi::keyvalue::{atomics, batch, store};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

/// Attempts of one `cas-add` before giving up (each failure means another writer won).
const CAS_ATTEMPTS_MAX: u32 = 10_000;

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let query = parse_query(req.uri().query().unwrap_or(""));
    let op = query_get(&query, "op").unwrap_or("echo").to_string();
    let (status, body) = match op.as_str() {
        "echo" => echo(req).await,
        "kv-set" | "kv-get" | "kv-delete" | "kv-exists" | "kv-keys" => spin_kv(&op, &query).await,
        "wkv-set" | "wkv-get" | "wkv-delete" | "wkv-exists" | "wkv-keys" => wasi_kv(&op, &query),
        "incr" => incr(&query),
        "cas-add" => cas_add(&query),
        "batch" => batch_ops(&query),
        "var" => var(&query).await,
        "fetch" => fetch(&query).await,
        "print" => {
            println!("probe says hello on stdout");
            eprintln!("probe says hello on stderr");
            (200, json!({"printed": true}))
        }
        "loop" => spin_forever(&query),
        "kv-tick" => tick_forever(&query).await,
        "slow" => slow(&query).await,
        "trap" => panic!("probe was asked to trap"),
        other => (400, json!({"error": format!("unknown op {other}")})),
    };
    http_json(status, &body)
}

fn http_json(status: u16, body: &Value) -> Response<http_body_util::Full<Bytes>> {
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = spin_sdk::http::StatusCode::from_u16(status)
        .unwrap_or(spin_sdk::http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        "content-type",
        spin_sdk::http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn echo(req: Request) -> (u16, Value) {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        if name.as_str().starts_with("spin-") || name.as_str() == "host" {
            // A header sent more than once shows every value, in order, joined by ", ".
            let value = value.to_str().unwrap_or("<binary>");
            let shown = match headers.get(name.as_str()).and_then(Value::as_str) {
                Some(earlier) => format!("{earlier}, {value}"),
                None => value.to_string(),
            };
            headers.insert(name.to_string(), Value::String(shown));
        }
    }
    let body_len = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(e) => return (500, json!({"error": format!("reading body: {e:?}")})),
    };
    (
        200,
        json!({
            "component": std::env::var("COMPONENT").unwrap_or_default(),
            "method": method,
            "uri": uri,
            "headers": headers,
            "body_len": body_len,
        }),
    )
}

async fn spin_kv(op: &str, query: &[(String, String)]) -> (u16, Value) {
    let label = query_get(query, "store").unwrap_or("default");
    let key = query_get(query, "key").unwrap_or("");
    let store = match spin_sdk::key_value::Store::open(label).await {
        Ok(store) => store,
        Err(e) => return (409, json!({"error": format!("{e:?}")})),
    };
    let result = match op {
        "kv-set" => {
            let value = query_get(query, "value").unwrap_or("");
            store
                .set(key, value.as_bytes())
                .await
                .map(|()| json!({"ok": true}))
        }
        "kv-get" => store.get(key).await.map(|v| json!({"value": v.map(lossy)})),
        "kv-delete" => store.delete(key).await.map(|()| json!({"ok": true})),
        "kv-exists" => store.exists(key).await.map(|b| json!({"exists": b})),
        _ => match store.get_keys().await.collect().await {
            Ok(mut keys) => {
                keys.sort();
                Ok(json!({"keys": keys}))
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(v) => (200, v),
        Err(e) => (500, json!({"error": format!("{e:?}")})),
    }
}

fn open_bucket(query: &[(String, String)]) -> Result<store::Bucket, (u16, Value)> {
    let label = query_get(query, "store").unwrap_or("default");
    store::open(label).map_err(|e| (409, json!({"error": format!("{e:?}")})))
}

fn wasi_kv(op: &str, query: &[(String, String)]) -> (u16, Value) {
    let bucket = match open_bucket(query) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let key = query_get(query, "key").unwrap_or("");
    let result = match op {
        "wkv-set" => {
            let value = query_get(query, "value").unwrap_or("");
            bucket
                .set(key, value.as_bytes())
                .map(|()| json!({"ok": true}))
        }
        "wkv-get" => bucket.get(key).map(|v| json!({"value": v.map(lossy)})),
        "wkv-delete" => bucket.delete(key).map(|()| json!({"ok": true})),
        "wkv-exists" => bucket.exists(key).map(|b| json!({"exists": b})),
        _ => bucket.list_keys(None).map(|r| {
            let mut keys = r.keys;
            keys.sort();
            json!({"keys": keys})
        }),
    };
    match result {
        Ok(v) => (200, v),
        Err(e) => (500, json!({"error": format!("{e:?}")})),
    }
}

fn incr(query: &[(String, String)]) -> (u16, Value) {
    let bucket = match open_bucket(query) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let key = query_get(query, "key").unwrap_or("counter");
    let delta: i64 = query_get(query, "delta")
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    match atomics::increment(&bucket, key, delta) {
        Ok(v) => (200, json!({"value": v})),
        Err(e) => (500, json!({"error": format!("{e:?}")})),
    }
}

fn cas_add(query: &[(String, String)]) -> (u16, Value) {
    let bucket = match open_bucket(query) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let key = query_get(query, "key").unwrap_or("cas-counter");
    let delta: i64 = query_get(query, "delta")
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    let mut cas = match atomics::Cas::new(&bucket, key) {
        Ok(cas) => cas,
        Err(e) => return (500, json!({"error": format!("{e:?}")})),
    };
    for attempt in 1..=CAS_ATTEMPTS_MAX {
        let current = match cas.current() {
            Ok(v) => v,
            Err(e) => return (500, json!({"error": format!("{e:?}")})),
        };
        let n: i64 = current
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let next = (n + delta).to_string();
        match atomics::swap(cas, next.as_bytes()) {
            Ok(()) => return (200, json!({"value": n + delta, "attempts": attempt})),
            Err(atomics::CasError::CasFailed(fresh)) => cas = fresh,
            Err(atomics::CasError::StoreError(e)) => {
                return (500, json!({"error": format!("{e:?}")}));
            }
        }
    }
    (503, json!({"error": "too much contention"}))
}

fn batch_ops(query: &[(String, String)]) -> (u16, Value) {
    let bucket = match open_bucket(query) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let pairs: Vec<(String, Vec<u8>)> = query_get(query, "pairs")
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    if let Err(e) = batch::set_many(&bucket, &pairs) {
        return (500, json!({"error": format!("{e:?}")}));
    }
    let got = match batch::get_many(&bucket, &keys) {
        Ok(got) => got,
        Err(e) => return (500, json!({"error": format!("{e:?}")})),
    };
    let first: Vec<String> = keys.iter().take(1).cloned().collect();
    if let Err(e) = batch::delete_many(&bucket, &first) {
        return (500, json!({"error": format!("{e:?}")}));
    }
    let after = match batch::get_many(&bucket, &keys) {
        Ok(got) => got,
        Err(e) => return (500, json!({"error": format!("{e:?}")})),
    };
    let show = |items: Vec<(String, Option<Vec<u8>>)>| -> Vec<Value> {
        items
            .into_iter()
            .map(|(k, v)| json!([k, v.map(lossy)]))
            .collect()
    };
    (200, json!({"got": show(got), "after_delete": show(after)}))
}

async fn var(query: &[(String, String)]) -> (u16, Value) {
    let name = query_get(query, "name").unwrap_or("");
    match spin_sdk::variables::get(name).await {
        Ok(v) => (200, json!({"value": v})),
        Err(e) => (404, json!({"error": format!("{e:?}")})),
    }
}

async fn fetch(query: &[(String, String)]) -> (u16, Value) {
    let Some(url) = query_get(query, "url") else {
        return (400, json!({"error": "url is required"}));
    };
    match spin_sdk::http::get(url).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers: serde_json::Map<String, Value> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value::String(v.to_str().unwrap_or("").into()),
                    )
                })
                .collect();
            match resp.into_body().collect().await {
                Ok(body) => (
                    200,
                    json!({"status": status, "headers": headers, "body": lossy(body.to_bytes().to_vec())}),
                ),
                Err(e) => (502, json!({"error": format!("reading body: {e:?}")})),
            }
        }
        Err(e) => (502, json!({"error": format!("{e:?}")})),
    }
}

fn spin_forever(query: &[(String, String)]) -> (u16, Value) {
    // The marker tells a test the guest is running before it relies on that.
    if let Some(key) = query_get(query, "key") {
        let marked = open_bucket(query).map(|bucket| bucket.set(key, b"looping"));
        if !matches!(marked, Ok(Ok(()))) {
            return (500, json!({"error": "cannot set the loop marker"}));
        }
    }
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Writes 1, 2, 3, … to `key` of the default store, one write after another, never
/// answering: a guest that keeps working (and yielding to the host at every write) past
/// its request's deadline.
async fn tick_forever(query: &[(String, String)]) -> (u16, Value) {
    let key = query_get(query, "key").unwrap_or("ticks");
    let store = match spin_sdk::key_value::Store::open("default").await {
        Ok(store) => store,
        Err(e) => return (409, json!({"error": format!("{e:?}")})),
    };
    let mut n: u64 = 0;
    loop {
        n += 1;
        if let Err(e) = store.set(key, n.to_string().as_bytes()).await {
            return (500, json!({"error": format!("{e:?}")}));
        }
    }
}

/// Waits `ms` milliseconds, then answers `{"pad": "xxx…"}` with `bytes` x's: a slow
/// answer with a body of a known size.
async fn slow(query: &[(String, String)]) -> (u16, Value) {
    let number = |name: &str| query_get(query, name).and_then(|v| v.parse::<u64>().ok());
    let (Some(ms), Some(bytes)) = (number("ms"), number("bytes")) else {
        return (400, json!({"error": "slow needs ms and bytes"}));
    };
    spin_sdk::wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
    let pad = "x".repeat(usize::try_from(bytes).unwrap_or(0));
    (200, json!({ "pad": pad }))
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn query_get<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
