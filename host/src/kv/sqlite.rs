//! SQLite backend, Spin-compatible file and schema:
//! `spin_key_value(store TEXT, key TEXT, value BLOB, PRIMARY KEY(store, key))`.
//!
//! One file may hold many labels (the `store` column is the label), exactly like Spin's
//! `.spin/sqlite_key_value.db`, so `spin up` and this host can take turns on the same data.
//!
//! Concurrency design:
//! - Every write (set, delete, increment, compare-and-swap, batches) is a job for ONE writer
//!   thread that owns the writer connection, so writers inside this process never fight for
//!   SQLite's write lock (no busy-wait sleeps under contention).
//! - **Group commit**: the writer takes every job waiting at that moment (up to
//!   [`SQLITE_GROUP_COMMIT_MAX`]) and runs them, one after another, inside ONE
//!   `BEGIN IMMEDIATE … COMMIT` transaction, each in its own savepoint (a failing job rolls
//!   back only itself). With `synchronous = FULL` that is one fsync for the whole group. No
//!   job is answered before the `COMMIT` that contains it returned: an acknowledged write is
//!   durable, and a failed commit fails every job of the group (none of them happened).
//!   Jobs of one group see each other's writes in order, so read-modify-writes (increment,
//!   compare-and-swap) keep their meaning; `BEGIN IMMEDIATE` keeps another process using
//!   the same file (a concurrent `spin up`) from interleaving.
//! - Plain reads run on the calling thread with a connection of a small reader pool (WAL
//!   lets readers run beside the writer and a point read takes microseconds), which avoids
//!   a thread hand-off per read; when every reader is busy the read waits for one on
//!   tokio's blocking pool instead of blocking an async worker.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{KvBackend, KvError, KvResult};

/// Reader connections per database file.
pub const SQLITE_READERS_MAX: u32 = 4;
/// How long a statement waits for another process's lock before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;
/// Bytes of one counter value (`increment`): a little-endian i64, as Spin stores it.
pub const COUNTER_BYTES: u32 = 8;
/// The most write jobs one group commit takes.
pub const SQLITE_GROUP_COMMIT_MAX: u32 = 256;

/// The path that selects an in-memory database (Spin's `type = "spin"` without a `path`).
pub const IN_MEMORY_PATH: &str = ":memory:";

const CREATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,

    PRIMARY KEY (store, key)
)";
const SELECT_VALUE_SQL: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT_SQL: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";
const DELETE_SQL: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// What a job hands back after running: called once with the outcome of the `COMMIT` of
/// its group, it answers the waiting caller.
type Completion = Box<dyn FnOnce(KvResult<()>) + Send>;
/// A unit of work for the writer thread: given the writer connection inside an open
/// transaction and the file's path for error messages (or the error that kept the
/// transaction from opening), it does its SQL and returns its completion.
type Job = Box<dyn FnOnce(Result<(&Connection, &Path), KvError>) -> Completion + Send>;

/// One SQLite file shared by every label stored in it.
pub struct SqliteDb {
    path: PathBuf,
    in_memory: bool,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: ReaderPool,
}

/// A fixed set of reader connections handed out one at a time.
struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    available: Condvar,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for SqliteDb {
    /// Closing: the writer finishes the jobs it has, closes its connection and ends.
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut thread) = self.writer_thread.lock()
            && let Some(handle) = thread.take()
        {
            let _ = handle.join();
        }
    }
}

impl SqliteDb {
    /// Open (creating the parent directory, the file and Spin's table when missing) with
    /// WAL and a busy timeout, and start its writer thread. [`IN_MEMORY_PATH`] opens a
    /// private in-memory database (its reads then go through the writer too).
    pub fn open(path: &Path) -> KvResult<Arc<SqliteDb>> {
        let in_memory = path.as_os_str() == IN_MEMORY_PATH;
        if !in_memory && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                KvError::Other(format!(
                    "cannot create key-value directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let writer = open_connection(path, in_memory, false)?;
        writer
            .execute(CREATE_TABLE_SQL, [])
            .map_err(|e| sql_error(path, e))?;
        // An in-memory database exists only inside its one connection: no readers then.
        let mut readers = Vec::new();
        if !in_memory {
            for _ in 0..SQLITE_READERS_MAX {
                readers.push(open_connection(path, false, true)?);
            }
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let thread_path = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(&writer, &thread_path, &receiver))
            .map_err(|e| KvError::Other(format!("cannot start the sqlite writer: {e}")))?;
        Ok(Arc::new(SqliteDb {
            path: path.to_path_buf(),
            in_memory,
            jobs: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(handle)),
            readers: ReaderPool {
                idle: Mutex::new(readers),
                available: Condvar::new(),
            },
        }))
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the writer inside the next group commit; answers once that group's
    /// `COMMIT` returned (an `Ok` is durable).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<KvResult<T>> + Send + 'static,
    ) -> KvResult<T> {
        let (reply, answer) = oneshot::channel::<KvResult<T>>();
        let job: Job = Box::new(move |writer| {
            let result = match writer {
                Err(e) => Err(e),
                Ok((conn, path)) => in_savepoint(conn, f).map_err(|e| sql_error(path, e)),
            };
            Box::new(move |commit: KvResult<()>| {
                let outcome = match (result, commit) {
                    (Ok(value), Ok(())) => value,
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                };
                let _ = reply.send(outcome);
            })
        });
        {
            let jobs = self
                .jobs
                .lock()
                .map_err(|_| KvError::Other("sqlite writer queue poisoned".into()))?;
            let sender = jobs
                .as_ref()
                .ok_or_else(|| KvError::Other("sqlite store is closed".into()))?;
            sender
                .send(job)
                .map_err(|_| KvError::Other("sqlite writer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| KvError::Other("sqlite writer dropped the request".into()))?
    }

    /// Run the read `f` on a reader connection: on this thread when one is idle, else on
    /// the blocking pool once one frees up. An in-memory database reads through the writer
    /// (its only connection), inside the group's transaction.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> KvResult<T> {
        if self.in_memory {
            return self.write(move |conn| f(conn).map(Ok)).await;
        }
        let idle = self
            .readers
            .idle
            .lock()
            .map_err(|_| KvError::Other("sqlite reader pool poisoned".into()))?
            .pop();
        match idle {
            Some(conn) => self.read_with(conn, f),
            None => {
                let db = self.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = db.wait_for_reader()?;
                    db.read_with(conn, f)
                })
                .await
                .map_err(|e| KvError::Other(format!("sqlite read task failed: {e}")))?
            }
        }
    }

    fn wait_for_reader(&self) -> KvResult<Connection> {
        let mut idle = self
            .readers
            .idle
            .lock()
            .map_err(|_| KvError::Other("sqlite reader pool poisoned".into()))?;
        loop {
            if let Some(conn) = idle.pop() {
                return Ok(conn);
            }
            idle = self
                .readers
                .available
                .wait(idle)
                .map_err(|_| KvError::Other("sqlite reader pool poisoned".into()))?;
        }
    }

    fn read_with<T>(
        &self,
        conn: Connection,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> KvResult<T> {
        let result = f(&conn);
        if let Ok(mut idle) = self.readers.idle.lock() {
            idle.push(conn);
        }
        self.readers.available.notify_one();
        result.map_err(|e| sql_error(&self.path, e))
    }
}

/// The writer thread: take every waiting job, run them in one transaction, commit once,
/// then answer them all. Ends when the database is dropped (the queue closes).
fn writer_loop(conn: &Connection, path: &Path, jobs: &mpsc::Receiver<Job>) {
    let group_max = usize::try_from(SQLITE_GROUP_COMMIT_MAX).unwrap_or(usize::MAX);
    let mut group: Vec<Job> = Vec::with_capacity(group_max);
    let mut completions: Vec<Completion> = Vec::with_capacity(group_max);
    while let Ok(first) = jobs.recv() {
        group.push(first);
        while group.len() < group_max {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                for job in group.drain(..) {
                    completions.push(job(Ok((conn, path))));
                }
                let commit = conn.execute_batch("COMMIT").map_err(|e| {
                    // A failed COMMIT leaves the transaction open: undo it so the next
                    // group starts clean, and fail every job of this one.
                    let _ = conn.execute_batch("ROLLBACK");
                    sql_error(path, e)
                });
                for done in completions.drain(..) {
                    done(commit.clone());
                }
            }
            Err(e) => {
                let e = sql_error(path, e);
                for job in group.drain(..) {
                    job(Err(e.clone()))(Err(e.clone()));
                }
            }
        }
    }
}

/// Run one job's SQL in its own savepoint: an error (or a refusal) undoes only this job.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<KvResult<T>>,
) -> rusqlite::Result<KvResult<T>> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let outcome = f(conn);
    match &outcome {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => {
            conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    outcome
}

fn open_connection(path: &Path, in_memory: bool, read_only: bool) -> KvResult<Connection> {
    let conn = if in_memory {
        Connection::open_in_memory()
    } else {
        Connection::open(path)
    }
    .map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))
        .map_err(|e| sql_error(path, e))?;
    if read_only {
        // A reader never writes; enforce it so a bug cannot bypass the single writer.
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| sql_error(path, e))?;
    } else if !in_memory {
        // WAL: readers never block the writer and vice versa; the mode is stored in the file.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sql_error(path, e))?;
        // FULL: a committed write (a captured payment) survives power loss, not just a
        // crash. Group commit shares one fsync among every write waiting at that moment.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sql_error(path, e))?;
    }
    Ok(conn)
}

fn sql_error(path: &Path, e: rusqlite::Error) -> KvError {
    KvError::Other(format!("sqlite {}: {e}", path.display()))
}

/// One label of a SQLite key-value file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Arc<SqliteDb>,
    label: Arc<str>,
}

impl SqliteStore {
    /// Open the file at `path` (see [`SqliteDb::open`]) and serve label `label` from it.
    pub fn open(path: &Path, label: &str) -> KvResult<SqliteStore> {
        Ok(SqliteStore::new(SqliteDb::open(path)?, label))
    }

    /// Serve `label` from an already open database (several labels may share one file).
    pub fn new(db: Arc<SqliteDb>, label: &str) -> SqliteStore {
        SqliteStore {
            db,
            label: Arc::from(label),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// A read of this label.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> rusqlite::Result<T> + Send + 'static,
    ) -> KvResult<T> {
        let label = self.label.clone();
        self.db.read(move |conn| f(conn, &label)).await
    }

    /// A write of this label (see [`SqliteDb::write`]).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> rusqlite::Result<KvResult<T>> + Send + 'static,
    ) -> KvResult<T> {
        let label = self.label.clone();
        self.db.write(move |conn| f(conn, &label)).await
    }
}

/// Decode a counter written by `increment`; anything else is an error, not a panic.
fn decode_counter(key: &str, value: &[u8]) -> Result<i64, String> {
    let bytes: [u8; COUNTER_BYTES as usize] = value.try_into().map_err(|_| {
        format!(
            "value at key {key:?} is not a counter ({} bytes; counters are {COUNTER_BYTES}-byte \
             little-endian integers written by increment)",
            value.len()
        )
    })?;
    Ok(i64::from_le_bytes(bytes))
}

fn select_value(conn: &Connection, label: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(SELECT_VALUE_SQL)?
        .query_row(params![label, key], |row| row.get::<_, Vec<u8>>(0))
        .optional()
}

fn upsert(conn: &Connection, label: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(UPSERT_SQL)?
        .execute(params![label, key, value])
        .map(drop)
}

fn delete_key(conn: &Connection, label: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(DELETE_SQL)?
        .execute(params![label, key])
        .map(drop)
}

/// Run `f` in one read transaction when `conn` is not already in one (a consistent
/// snapshot across several statements).
fn snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if !conn.is_autocommit() {
        return f(conn);
    }
    let tx = conn.unchecked_transaction()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[async_trait::async_trait]
impl KvBackend for SqliteStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let key = key.to_string();
        self.read(move |c, label| select_value(c, label, &key))
            .await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()> {
        let key = key.to_string();
        self.write(move |c, label| upsert(c, label, &key, &value).map(Ok))
            .await
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        let key = key.to_string();
        self.write(move |c, label| delete_key(c, label, &key).map(Ok))
            .await
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        let key = key.to_string();
        self.read(move |c, label| {
            c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .exists(params![label, key])
        })
        .await
    }

    async fn get_keys(&self) -> KvResult<Vec<String>> {
        self.read(move |c, label| {
            let mut stmt = c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
            let rows = stmt.query_map(params![label], |row| row.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    async fn get_many(&self, keys: Vec<String>) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.read(move |c, label| {
            snapshot(c, |c| {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = select_value(c, label, &key)?;
                    out.push((key, value));
                }
                Ok(out)
            })
        })
        .await
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        self.write(move |c, label| {
            for (key, value) in &entries {
                upsert(c, label, key, value)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn delete_many(&self, keys: Vec<String>) -> KvResult<()> {
        self.write(move |c, label| {
            for key in &keys {
                delete_key(c, label, key)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let key = key.to_string();
        self.write(move |c, label| {
            let current = match select_value(c, label, &key)? {
                None => 0,
                Some(bytes) => match decode_counter(&key, &bytes) {
                    Ok(n) => n,
                    Err(msg) => return Ok(Err(KvError::Other(msg))),
                },
            };
            let Some(next) = current.checked_add(delta) else {
                return Ok(Err(KvError::Other(format!(
                    "increment of key {key:?} by {delta} overflows i64 (current {current})"
                ))));
            };
            upsert(c, label, &key, &next.to_le_bytes())?;
            Ok(Ok(next))
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        let key = key.to_string();
        self.write(move |c, label| {
            let current = select_value(c, label, &key)?;
            if current != expected {
                return Ok(Ok(false));
            }
            upsert(c, label, &key, &new)?;
            Ok(Ok(true))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_must_be_exactly_eight_bytes() {
        // Proves decode_counter accepts 8-byte LE values and rejects other lengths with a message.
        assert_eq!(decode_counter("k", &42i64.to_le_bytes()), Ok(42));
        let err = decode_counter("k", b"hello").unwrap_err();
        assert!(err.contains("not a counter"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_in_a_group_commit_undoes_only_itself() {
        // Proves jobs committed together stay independent: 64 concurrent writes, half of
        // them refused (incrementing a value that is not a counter), leave exactly the 32
        // good increments and the refused key untouched.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("kv.db"), "default").unwrap();
        store.set("text", b"hello".to_vec()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i % 2 == 0 { "n" } else { "text" };
                store.increment(key, 1).await
            }));
        }
        let mut refused = 0;
        for task in tasks {
            if task.await.unwrap().is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 32);
        assert_eq!(
            store.get("n").await.unwrap(),
            Some(32i64.to_le_bytes().to_vec())
        );
        assert_eq!(store.get("text").await.unwrap(), Some(b"hello".to_vec()));
    }

    #[tokio::test]
    async fn an_acknowledged_write_is_visible_to_the_next_read_and_to_a_new_opener() {
        // Proves a write is answered only after its commit: the reader pool and a fresh
        // connection both see it as soon as the call returned.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let store = SqliteStore::open(&path, "default").unwrap();
        for i in 0..20u8 {
            store.set("k", vec![i]).await.unwrap();
            assert_eq!(store.get("k").await.unwrap(), Some(vec![i]));
            let other = Connection::open(&path).unwrap();
            assert_eq!(select_value(&other, "default", "k").unwrap(), Some(vec![i]));
        }
    }
}
