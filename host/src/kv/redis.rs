//! Redis backend: keys as plain strings (no label prefix, like Spin's Redis store), so a
//! label is a whole Redis database; increment is `INCRBY` (counters are ASCII decimal, like
//! Spin); compare-and-swap is one Lua script that compares the current value and writes in
//! the same atomic step, so it reports commits truthfully and needs no dedicated
//! connection (Spin 4.1 opens a connection per CAS and reports every swap as failed).
//!
//! Connections: one multiplexed connection per thread that uses the store (the host's
//! serving threads, plus the thread that opened it). A multiplexed connection pipelines
//! any number of concurrent requests, so that bounds sockets, not concurrency; and since
//! a connection is driven by a task on the runtime that dialled it, a serving thread's
//! commands never wait for another core to wake up. A connection that fails with an I/O
//! error is dropped and re-dialled on next use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::{KvBackend, KvError, KvResult};

/// Time allowed to dial the server.
pub const REDIS_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Time allowed for one command's answer.
pub const REDIS_RESPONSE_TIMEOUT_MS: u64 = 10_000;
/// Keys asked for per `SCAN` step of `get_keys`.
pub const REDIS_SCAN_COUNT: u32 = 1_000;

/// KEYS[1] = key; ARGV[1] = "1" when a current value is expected ("0": key must be
/// absent), ARGV[2] = expected value, ARGV[3] = new value. Returns 1 when swapped.
/// Lua strings are byte strings, so the comparison is binary-safe.
const CAS_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current == false or current ~= ARGV[2] then return 0 end
else
  if current ~= false then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"#;

/// One label backed by a Redis server.
pub struct RedisStore {
    client: Client,
    /// Display form of the server address, without credentials.
    address: String,
    /// The connection of each thread that has used the store.
    connections: Mutex<HashMap<ThreadId, MultiplexedConnection>>,
    cas: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .finish()
    }
}

impl RedisStore {
    /// Connect to `url` (`redis://[user:password@]host[:port][/db]`) and `PING` it.
    /// Errors never include the password.
    pub async fn open(url: &str) -> KvResult<RedisStore> {
        let address = redacted_address(url);
        let client = Client::open(url)
            .map_err(|e| KvError::Other(format!("invalid Redis URL {address}: {e}")))?;
        let store = RedisStore {
            client,
            address,
            connections: Mutex::new(HashMap::new()),
            cas: Script::new(CAS_SCRIPT),
        };
        let pong: String = store.run(&mut redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(KvError::Other(format!(
                "Redis at {} answered PING with {pong:?}",
                store.address
            )));
        }
        Ok(store)
    }

    /// The server address (no credentials), for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// This thread's connection, dialling it if needed.
    async fn connection(&self) -> KvResult<(ThreadId, MultiplexedConnection)> {
        let thread = std::thread::current().id();
        if let Some(conn) = self.lock_connections()?.get(&thread) {
            return Ok((thread, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_millis(REDIS_CONNECT_TIMEOUT_MS))
            .set_response_timeout(Duration::from_millis(REDIS_RESPONSE_TIMEOUT_MS));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))?;
        let mut connections = self.lock_connections()?;
        // Another task of this thread may have dialled meanwhile: keep one.
        let conn = connections.entry(thread).or_insert(conn).clone();
        Ok((thread, conn))
    }

    fn lock_connections(
        &self,
    ) -> KvResult<std::sync::MutexGuard<'_, HashMap<ThreadId, MultiplexedConnection>>> {
        self.connections
            .lock()
            .map_err(|_| KvError::Other("redis connection pool poisoned".into()))
    }

    /// Forget a connection that failed at the transport level.
    fn discard_if_broken(&self, thread: ThreadId, e: &RedisError) {
        if (e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error())
            && let Ok(mut connections) = self.lock_connections()
        {
            connections.remove(&thread);
        }
    }

    fn error(&self, e: RedisError) -> KvError {
        KvError::Other(format!("redis {}: {e}", self.address))
    }

    /// Run one command.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> KvResult<T> {
        let (thread, mut conn) = self.connection().await?;
        match cmd.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.discard_if_broken(thread, &e);
                Err(self.error(e))
            }
        }
    }
}

/// `redis://user:secret@host:6379/0` → `host:6379/0`: never log credentials.
fn redacted_address(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[async_trait::async_trait]
impl KvBackend for RedisStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()> {
        self.run(redis::cmd("SET").arg(key).arg(value)).await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.run::<i64>(redis::cmd("DEL").arg(key)).await.map(drop)
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.run(redis::cmd("EXISTS").arg(key)).await
    }

    /// Walks the keyspace with `SCAN` (O(keys) overall, but in steps that never block the
    /// server the way `KEYS *` does). Keys added or removed during the walk may or may not
    /// be listed; `SCAN` may repeat a key, so the result is de-duplicated.
    async fn get_keys(&self) -> KvResult<Vec<String>> {
        let mut cursor: u64 = 0;
        let mut keys = std::collections::BTreeSet::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(REDIS_SCAN_COUNT),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(keys.into_iter().collect())
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.run(redis::cmd("MGET").arg(&keys)).await?;
        if values.len() != keys.len() {
            return Err(KvError::Other(format!(
                "redis {}: MGET of {} keys returned {} values",
                self.address,
                keys.len(),
                values.len()
            )));
        }
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in &entries {
            cmd.arg(key).arg(value);
        }
        self.run(&mut cmd).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run::<i64>(redis::cmd("DEL").arg(&keys))
            .await
            .map(drop)
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.run(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        let (thread, mut conn) = self.connection().await?;
        let (flag, expected) = match expected {
            Some(v) => ("1", v),
            None => ("0", Vec::new()),
        };
        let result = self
            .cas
            .key(key)
            .arg(flag)
            .arg(expected)
            .arg(new)
            .invoke_async::<i64>(&mut conn)
            .await;
        match result {
            Ok(1) => Ok(true),
            Ok(0) => Ok(false),
            Ok(other) => Err(KvError::Other(format!(
                "redis {}: compare-and-swap script returned {other}",
                self.address
            ))),
            Err(e) => {
                self.discard_if_broken(thread, &e);
                Err(self.error(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_addresses_in_messages_never_carry_the_password() {
        // Proves redacted_address strips user and password from a Redis URL.
        let shown = redacted_address("redis://user:hunter2@cache.internal:6380/2");
        assert_eq!(shown, "redis://cache.internal:6380/2");
        assert!(!shown.contains("hunter2"));
    }
}
