//! One key-value conformance suite, run against every backend: SQLite (a temporary file in
//! Spin's format) and Redis (a private `redis-server` on a free loopback port).
//!
//! Redis runs need `redis-server` on PATH (Debian: `apt-get install redis-server`). Without
//! it the Redis tests print a skip notice, unless `SPINPAY_REQUIRE_REDIS=1`, which makes
//! them fail instead (CI sets it).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spinpay_host::kv::redis::RedisStore;
use spinpay_host::kv::sqlite::SqliteStore;
use spinpay_host::kv::{KvBackend, KvStores};
use spinpay_host::runtime_config::{KvStoreConfig, RuntimeConfig};

/// Tasks hammering one key in the concurrency checks.
const TASKS: u32 = 32;
/// Updates per task.
const UPDATES_PER_TASK: u32 = 100;

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

/// Every check, in order, on an empty store.
async fn conformance_suite(store: Arc<dyn KvBackend>) {
    basic_operations(&*store).await;
    batch_operations(&*store).await;
    compare_and_swap(&*store).await;
    increment(&*store).await;
    concurrent_cas_increments_lose_no_update(store.clone()).await;
    concurrent_increments_lose_no_update(store).await;
}

async fn basic_operations(store: &dyn KvBackend) {
    let binary = vec![0u8, 255, 10, 13, 0];
    assert_eq!(store.get("missing").await.unwrap(), None);
    assert!(!store.exists("missing").await.unwrap());
    store
        .delete("missing")
        .await
        .expect("deleting an absent key is not an error");

    store.set("a", b"one".to_vec()).await.unwrap();
    store.set("b", binary.clone()).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(
        store.get("b").await.unwrap(),
        Some(binary),
        "values are binary-safe"
    );
    assert!(store.exists("a").await.unwrap());

    store.set("a", b"two".to_vec()).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().as_deref(),
        Some(&b"two"[..]),
        "set overwrites"
    );
    store.set("empty", Vec::new()).await.unwrap();
    assert_eq!(
        store.get("empty").await.unwrap(),
        Some(Vec::new()),
        "empty is not absent"
    );

    let keys: BTreeSet<String> = store.get_keys().await.unwrap().into_iter().collect();
    assert_eq!(keys, set(&["a", "b", "empty"]));

    for key in ["a", "b", "empty"] {
        store.delete(key).await.unwrap();
        assert!(!store.exists(key).await.unwrap());
    }
    assert!(store.get_keys().await.unwrap().is_empty());
}

async fn batch_operations(store: &dyn KvBackend) {
    store
        .set_many(vec![
            ("m1".into(), b"v1".to_vec()),
            ("m2".into(), b"v2".to_vec()),
            ("m3".into(), b"v3".to_vec()),
        ])
        .await
        .unwrap();
    let got = store
        .get_many(vec!["m3".into(), "absent".into(), "m1".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            ("m3".to_string(), Some(b"v3".to_vec())),
            ("absent".to_string(), None),
            ("m1".to_string(), Some(b"v1".to_vec())),
        ],
        "get_many answers in the order asked, None for absent keys"
    );
    store
        .delete_many(vec!["m1".into(), "m3".into(), "absent".into()])
        .await
        .unwrap();
    let keys: BTreeSet<String> = store.get_keys().await.unwrap().into_iter().collect();
    assert_eq!(keys, set(&["m2"]));
    store.set_many(Vec::new()).await.unwrap();
    assert!(store.get_many(Vec::new()).await.unwrap().is_empty());
    store.delete_many(Vec::new()).await.unwrap();
    store.delete("m2").await.unwrap();
}

async fn compare_and_swap(store: &dyn KvBackend) {
    // Absent key: only "expect absent" succeeds.
    assert!(
        !store
            .compare_and_swap("cas", Some(b"x".to_vec()), b"y".to_vec())
            .await
            .unwrap(),
        "expecting a value on an absent key fails"
    );
    assert_eq!(
        store.get("cas").await.unwrap(),
        None,
        "a failed CAS writes nothing"
    );
    assert!(
        store
            .compare_and_swap("cas", None, b"v1".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(store.get("cas").await.unwrap().as_deref(), Some(&b"v1"[..]));

    // Present key: expecting absence fails, a stale value fails, the current value wins.
    assert!(
        !store
            .compare_and_swap("cas", None, b"zz".to_vec())
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap("cas", Some(b"v0".to_vec()), b"zz".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("cas").await.unwrap().as_deref(),
        Some(&b"v1"[..]),
        "conflict writes nothing"
    );
    assert!(
        store
            .compare_and_swap("cas", Some(b"v1".to_vec()), b"v2".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(store.get("cas").await.unwrap().as_deref(), Some(&b"v2"[..]));

    // Binary and empty values compare exactly.
    assert!(
        store
            .compare_and_swap("cas", Some(b"v2".to_vec()), vec![0, 1, 0])
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap("cas", Some(vec![0, 1]), Vec::new())
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap("cas", Some(vec![0, 1, 0]), Vec::new())
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap("cas", None, b"x".to_vec())
            .await
            .unwrap(),
        "empty is present"
    );
    store.delete("cas").await.unwrap();
}

async fn increment(store: &dyn KvBackend) {
    assert_eq!(
        store.increment("n", 0).await.unwrap(),
        0,
        "absent counter reads as 0"
    );
    assert_eq!(store.increment("n", 5).await.unwrap(), 5);
    assert_eq!(store.increment("n", -7).await.unwrap(), -2);
    assert_eq!(store.increment("n", 0).await.unwrap(), -2);
    assert!(store.exists("n").await.unwrap());

    store.set("text", b"hello".to_vec()).await.unwrap();
    let err = store
        .increment("text", 1)
        .await
        .expect_err("incrementing a value that is not a counter is an error");
    assert!(!err.to_string().is_empty());
    assert_eq!(
        store.get("text").await.unwrap().as_deref(),
        Some(&b"hello"[..]),
        "a failed increment leaves the value alone"
    );
    store
        .delete_many(vec!["n".into(), "text".into()])
        .await
        .unwrap();
}

/// 32 tasks × 100 read-CAS-retry increments of a decimal text counter = exactly 3200.
/// Every task makes its first read before any task swaps (a barrier), so the swaps do
/// race: all but one of those first swaps must be refused.
async fn concurrent_cas_increments_lose_no_update(store: Arc<dyn KvBackend>) {
    let key = "cas-counter";
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts: u64 = 0;
            let mut first = true;
            for _ in 0..UPDATES_PER_TASK {
                loop {
                    attempts += 1;
                    let current = store.get(key).await.unwrap();
                    if std::mem::take(&mut first) {
                        barrier.wait().await;
                    }
                    let n: u64 = match &current {
                        None => 0,
                        Some(bytes) => std::str::from_utf8(bytes).unwrap().parse().unwrap(),
                    };
                    let next = (n + 1).to_string().into_bytes();
                    if store.compare_and_swap(key, current, next).await.unwrap() {
                        break;
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for t in tasks {
        attempts += t.await.unwrap();
    }
    let total = TASKS * UPDATES_PER_TASK;
    let value = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&value).unwrap(),
        total.to_string(),
        "every CAS reported as committed committed exactly once ({attempts} attempts)"
    );
    assert!(
        attempts >= u64::from(total + TASKS - 1),
        "the racing first swaps were refused ({attempts} attempts for {total} updates)"
    );
    store.delete(key).await.unwrap();
}

/// 32 tasks × 100 `increment(1)` = exactly 3200.
async fn concurrent_increments_lose_no_update(store: Arc<dyn KvBackend>) {
    let key = "atomic-counter";
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..UPDATES_PER_TASK {
                store.increment(key, 1).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected = i64::from(TASKS * UPDATES_PER_TASK);
    assert_eq!(store.increment(key, 0).await.unwrap(), expected);
    store.delete(key).await.unwrap();
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_conformance_suite() {
    // Proves the SQLite backend (temp file, Spin's schema) passes the shared suite.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".spin").join("sqlite_key_value.db");
    let store = SqliteStore::open(&path, "default").unwrap();
    conformance_suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_sqlite_store_passes_the_conformance_suite() {
    // Proves Spin's path-less `type = "spin"` store (in memory) passes the shared suite.
    let store = SqliteStore::open(std::path::Path::new(":memory:"), "default").unwrap();
    conformance_suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_and_schema_match_spins_default_store() {
    // Proves rows land in Spin's table/columns (store = label, LE counters, WAL), read back by raw SQL.
    let dir = tempfile::tempdir().unwrap();
    let rc = RuntimeConfig::load(None, dir.path()).unwrap();
    let stores = rc.open_stores().await.unwrap();
    let store = stores.get("default").unwrap();
    store.set("greeting", b"hello".to_vec()).await.unwrap();
    store.increment("hits", 5).await.unwrap();

    let path = dir.path().join(".spin").join("sqlite_key_value.db");
    assert!(
        path.is_file(),
        "the default store is Spin's .spin/sqlite_key_value.db"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let columns: Vec<(String, String, i64, i64)> = conn
        .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info('spin_key_value')")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        vec![
            ("store".into(), "TEXT".into(), 1, 1),
            ("key".into(), "TEXT".into(), 1, 2),
            ("value".into(), "BLOB".into(), 1, 0),
        ]
    );
    let row: (String, Vec<u8>) = conn
        .query_row(
            "SELECT store, value FROM spin_key_value WHERE key = 'greeting'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(row, ("default".to_string(), b"hello".to_vec()));
    let counter: Vec<u8> = conn
        .query_row(
            "SELECT value FROM spin_key_value WHERE key = 'hits'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        counter,
        5i64.to_le_bytes().to_vec(),
        "counters are 8-byte little-endian"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");

    // A row written the way Spin writes it is read by our store.
    conn.execute(
        "INSERT INTO spin_key_value (store, key, value) VALUES ('default', 'from-spin', x'01ff')",
        [],
    )
    .unwrap();
    assert_eq!(
        store.get("from-spin").await.unwrap(),
        Some(vec![0x01, 0xff])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_independent_openers_of_one_sqlite_file_lose_no_update() {
    // Proves CAS/increment stay exact when two separately opened handles (as two processes,
    // e.g. `spin up` and this host) share the file: IMMEDIATE transactions plus busy timeout.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let first: Arc<dyn KvBackend> = Arc::new(SqliteStore::open(&path, "default").unwrap());
    let second: Arc<dyn KvBackend> = Arc::new(SqliteStore::open(&path, "default").unwrap());
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..UPDATES_PER_TASK {
                store.increment("shared", 1).await.unwrap();
                loop {
                    let current = store.get("cas").await.unwrap();
                    let n = current.as_deref().map_or(0, |b| {
                        u16::from_be_bytes(b.try_into().expect("2-byte counter"))
                    });
                    let next = (n + 1).to_be_bytes().to_vec();
                    if store.compare_and_swap("cas", current, next).await.unwrap() {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = TASKS * UPDATES_PER_TASK;
    assert_eq!(
        first.increment("shared", 0).await.unwrap(),
        i64::from(total)
    );
    let cas = second.get("cas").await.unwrap().unwrap();
    let cas = u16::from_be_bytes(cas.as_slice().try_into().unwrap());
    assert_eq!(u32::from(cas), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_sharing_one_sqlite_file_are_isolated() {
    // Proves two labels in one file see only their own keys (the `store` column is the label).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let mut rc = RuntimeConfig::load(None, dir.path()).unwrap();
    rc.set_store("default", KvStoreConfig::Spin { path: path.clone() });
    rc.set_store("cache", KvStoreConfig::Spin { path });
    let stores: KvStores = rc.open_stores().await.unwrap();
    let (a, b) = (stores.get("default").unwrap(), stores.get("cache").unwrap());
    a.set("k", b"from-default".to_vec()).await.unwrap();
    b.set("k", b"from-cache".to_vec()).await.unwrap();
    assert_eq!(
        a.get("k").await.unwrap().as_deref(),
        Some(&b"from-default"[..])
    );
    assert_eq!(
        b.get("k").await.unwrap().as_deref(),
        Some(&b"from-cache"[..])
    );
    b.delete("k").await.unwrap();
    assert_eq!(a.get_keys().await.unwrap(), vec!["k".to_string()]);
    assert!(b.get_keys().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// A private `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    /// Start one, or `None` (after printing a notice) when redis-server is not installed
    /// and `SPINPAY_REQUIRE_REDIS` is not `1`.
    async fn start(test: &str) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("SPINPAY_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("{test}: redis-server is not on PATH and SPINPAY_REQUIRE_REDIS=1");
            }
            eprintln!("SKIPPED {test}: redis-server is not on PATH (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_the_conformance_suite() {
    // Proves the Redis backend (real redis-server on loopback) passes the shared suite.
    let Some(server) = RedisServer::start("redis_store_passes_the_conformance_suite").await else {
        return;
    };
    let store = RedisStore::open(&server.url).await.unwrap();
    conformance_suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_plain_strings_and_counters_ascii_decimal() {
    // Proves Spin's Redis layout: no label prefix, INCRBY counters readable as decimal text.
    let Some(server) =
        RedisServer::start("redis_keys_are_plain_strings_and_counters_ascii_decimal").await
    else {
        return;
    };
    let mut rc = RuntimeConfig::load(None, std::path::Path::new("/nonexistent")).unwrap();
    rc.set_store(
        "default",
        KvStoreConfig::Redis {
            url: server.url.clone(),
        },
    );
    let stores = rc.open_stores().await.unwrap();
    let store = stores.get("default").unwrap();
    store.set("plain", b"v".to_vec()).await.unwrap();
    store.increment("hits", 42).await.unwrap();

    let client = redis::Client::open(server.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys, vec!["hits".to_string(), "plain".to_string()]);
    let hits: String = redis::cmd("GET")
        .arg("hits")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hits, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_unreachable_redis_fails_with_the_address() {
    // Proves open() PINGs: a closed port is an error naming the address, not a later surprise.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let err = RedisStore::open(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect_err("nothing listens there");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
