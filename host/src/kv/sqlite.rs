//! SQLite backend, Spin-compatible file and schema:
//! `spin_key_value(store TEXT, key TEXT, value BLOB, PRIMARY KEY(store, key))`.
//!
//! One file may hold many labels (the `store` column is the label), exactly like Spin's
//! `.spin/sqlite_key_value.db`, so `spin up` and this host can take turns on the same data.
//!
//! Concurrency design:
//! - Every write (set, delete, increment, compare-and-swap, batches) is a job in ONE queue
//!   per file, and at most one **leader** at a time uses the writer connection, so writers
//!   inside this process never fight for SQLite's write lock (no busy-wait sleeps under
//!   contention).
//! - **Group commit**: the leader takes the jobs waiting at that moment (up to
//!   [`SQLITE_GROUP_COMMIT_MAX`], oldest first) and runs them, one after another, inside ONE
//!   `BEGIN IMMEDIATE … COMMIT` transaction, each in its own savepoint (a failing job rolls
//!   back only itself; a job alone in its group needs none: if it fails, the transaction
//!   is rolled back instead of committed). With `synchronous = FULL` that is one fsync for
//!   the whole group. No job is answered before the `COMMIT` that contains it returned: an
//!   acknowledged write is durable, and a failed commit fails every job of the group (none
//!   of them happened).
//!   Jobs of one group see each other's writes in order, so read-modify-writes (increment,
//!   compare-and-swap) keep their meaning; `BEGIN IMMEDIATE` keeps another process using
//!   the same file (a concurrent `spin up`) from interleaving.
//! - **Who leads**: a dedicated writer thread, or the caller itself. Handing a job to a
//!   thread and waking the caller back costs two context switches, which on tmpfs or in
//!   memory is more than the commit (tens of µs). So a caller that finds no leader, while
//!   a group's own cost (`BEGIN` + `COMMIT`, a moving average) is under
//!   [`SQLITE_INLINE_COMMIT_MAX_US`], commits its write right there on its own thread. On a
//!   real disk the commit is an fsync (milliseconds): then, or when a leader is already
//!   busy, the job waits for the writer thread, which keeps async workers free during the
//!   fsync and batches every writer that arrives meanwhile. A caller leads one group only:
//!   jobs queued behind it go to the writer thread, never to a loop on the caller's thread.
//! - Plain reads run on the calling thread, which avoids a thread hand-off per read: on
//!   the writer connection when nobody leads it (its page cache survives its own commits,
//!   while a reader connection drops its cache after every commit by another), else with
//!   a connection of a small reader pool (WAL lets readers run beside the writer and a
//!   point read takes microseconds); when every reader is busy the read waits for one on
//!   tokio's blocking pool instead of blocking an async worker.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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
/// A caller commits its own write on its own thread only while a group's own cost
/// (`BEGIN IMMEDIATE` + `COMMIT` of the groups that wrote, moving average, µs) is below
/// this; above it (an fsync on a real disk) writes wait for the writer thread, so async
/// workers never block that long.
pub const SQLITE_INLINE_COMMIT_MAX_US: u64 = 500;
/// A new measurement weighs 1/this in the moving average of a group's own cost.
const COMMIT_COST_EWMA_WEIGHT: u64 = 8;

const _: () = assert!(SQLITE_GROUP_COMMIT_MAX >= 1);
const _: () = assert!(COMMIT_COST_EWMA_WEIGHT >= 1);

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

/// What a job hands back after running: called once with the outcome of the end of its
/// group's transaction, it answers the waiting caller.
type Completion = Box<dyn FnOnce(KvResult<()>) + Send>;
/// A unit of work for the leader: given the writer connection inside an open transaction
/// (or the error that kept the transaction from opening), it does its SQL and reports
/// how that went.
type Job = Box<dyn FnOnce(Result<Slot<'_>, KvError>) -> Ran + Send>;

/// Where a job runs: the writer connection inside its group's open transaction.
struct Slot<'a> {
    conn: &'a Connection,
    /// The file, for error messages.
    path: &'a Path,
    /// The job is its group's only one: it runs without a savepoint of its own, and
    /// whether its writes stay is decided for the whole transaction (see [`Ran::undo`]).
    alone: bool,
}

/// A job that has run, waiting for its group's transaction to end.
struct Ran {
    /// Its writes must not stay: it failed or refused. Inside a bigger group its
    /// savepoint has already undone them; a job running alone has the whole transaction
    /// rolled back instead of committed.
    undo: bool,
    done: Completion,
}

/// One SQLite file shared by every label stored in it.
pub struct SqliteDb {
    path: PathBuf,
    in_memory: bool,
    writer: Arc<Writer>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: ReaderPool,
}

/// The write side of one file, shared by the callers and the writer thread.
struct Writer {
    path: PathBuf,
    /// Locked only by the current leader, so never contended; the lock is what lets the
    /// connection move between the callers' threads and the writer thread.
    conn: Mutex<Connection>,
    queue: Mutex<WriteQueue>,
    /// Wakes the writer thread when it is made leader or the database closes.
    thread_wake: Condvar,
}

/// The jobs waiting for a leader, and who leads. Invariant (between critical sections):
/// jobs are waiting only while someone leads, so whoever releases leadership with jobs
/// left hands them on, and a job pushed after that release finds no leader and takes
/// care of itself: no job is ever left without someone to run it.
struct WriteQueue {
    jobs: VecDeque<Job>,
    leader: Leader,
    /// Moving average of a group's own cost (`BEGIN` + `COMMIT`), µs; starts at 0
    /// (optimistic: the first writes commit inline and measure).
    commit_cost_us: u64,
    /// [`SQLITE_INLINE_COMMIT_MAX_US`], or what a test forces.
    inline_commit_max_us: u64,
    /// The database is being dropped: the writer thread ends once no job is left.
    closed: bool,
    /// The writer thread has ended (closed, or a job panicked on it): writes fail.
    stopped: bool,
    /// The most jobs one group has taken, to let tests see that groups do form.
    #[cfg(test)]
    largest_group: usize,
}

/// Who uses the writer connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    /// Nobody; the queue is empty.
    Nobody,
    /// A caller running one group on its own thread.
    Caller,
    /// The writer thread (running, or woken to run).
    Thread,
}

/// What [`Writer::submit`] decided for a job.
enum Submitted {
    /// The caller leads: it runs this job now, as a group of its own.
    RunInline(Job),
    /// Queued; a leader will run it.
    Queued,
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
    /// Closing: the writer thread finishes the jobs queued, closes its connection and ends.
    fn drop(&mut self) {
        self.writer.lock_queue().closed = true;
        self.writer.thread_wake.notify_all();
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
        let conn = open_connection(path, in_memory, false)?;
        conn.execute(CREATE_TABLE_SQL, [])
            .map_err(|e| sql_error(path, e))?;
        // An in-memory database exists only inside its one connection: no readers then.
        let mut readers = Vec::new();
        if !in_memory {
            for _ in 0..SQLITE_READERS_MAX {
                readers.push(open_connection(path, false, true)?);
            }
        }
        let writer = Arc::new(Writer {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            queue: Mutex::new(WriteQueue {
                jobs: VecDeque::new(),
                leader: Leader::Nobody,
                commit_cost_us: 0,
                inline_commit_max_us: SQLITE_INLINE_COMMIT_MAX_US,
                closed: false,
                stopped: false,
                #[cfg(test)]
                largest_group: 0,
            }),
            thread_wake: Condvar::new(),
        });
        let thread_writer = writer.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(&thread_writer))
            .map_err(|e| KvError::Other(format!("cannot start the sqlite writer: {e}")))?;
        Ok(Arc::new(SqliteDb {
            path: path.to_path_buf(),
            in_memory,
            writer,
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

    /// Run `f` on the writer inside a group commit — on this thread when commits are cheap
    /// and no leader is busy, else in the writer thread's next group; answers once that
    /// group's `COMMIT` returned (an `Ok` is durable).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<KvResult<T>> + Send + 'static,
    ) -> KvResult<T> {
        let (reply, answer) = oneshot::channel::<KvResult<T>>();
        let job: Job = Box::new(move |slot| {
            let result = match slot {
                Err(e) => Err(e),
                Ok(Slot { conn, path, alone }) => if alone {
                    f(conn)
                } else {
                    in_savepoint(conn, f)
                }
                .map_err(|e| sql_error(path, e)),
            };
            Ran {
                undo: !matches!(result, Ok(Ok(_))),
                done: Box::new(move |end: KvResult<()>| {
                    let outcome = match (result, end) {
                        (Ok(value), Ok(())) => value,
                        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                    };
                    let _ = reply.send(outcome);
                }),
            }
        });
        match self.writer.submit(job)? {
            // Answered before the await below, which then returns at once.
            Submitted::RunInline(job) => self.writer.run_inline(job),
            Submitted::Queued => {}
        }
        answer
            .await
            .map_err(|_| KvError::Other("sqlite writer dropped the request".into()))?
    }

    /// Force the inline threshold (0: always the writer thread; `u64::MAX`: inline
    /// whenever no leader is busy).
    #[cfg(test)]
    fn set_inline_commit_max_us(&self, max_us: u64) {
        self.writer.lock_queue().inline_commit_max_us = max_us;
    }

    /// Run the read `f`: on the writer connection, on this thread, when no leader is using
    /// it; else on a reader connection, on this thread when one is idle, else on the
    /// blocking pool once one frees up. An in-memory database reads through the writer
    /// (its only connection), inside a group's transaction.
    ///
    /// Why the writer first: a reader connection drops its whole page cache whenever
    /// another connection has committed since its last read (SQLite's WAL change check),
    /// and a payment commits between almost every two reads, so every reader read went
    /// back to the file for each page of its B-tree path. The writer's cache survives
    /// its own commits.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> KvResult<T> {
        if self.in_memory {
            return self.write(move |conn| f(conn).map(Ok)).await;
        }
        if let Some(turn) = self.writer.lead_a_read() {
            let result = match self.writer.conn.lock() {
                Ok(conn) => f(&conn).map_err(|e| sql_error(&self.path, e)),
                Err(_) => Err(self.writer.unusable()),
            };
            drop(turn);
            return result;
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

impl Writer {
    /// The queue, even after a panic elsewhere: every critical section leaves it consistent
    /// (a push, a take or a change of leader), so a poisoned lock holds nothing half-done.
    fn lock_queue(&self) -> MutexGuard<'_, WriteQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `job`, or make the caller the leader of a group of just this job when nobody
    /// leads and commits are cheap. Nobody leading and commits expensive: the writer thread
    /// is made leader and woken (only here and on a hand-off, so one wake-up per burst).
    fn submit(&self, job: Job) -> KvResult<Submitted> {
        let mut queue = self.lock_queue();
        if queue.stopped {
            return Err(KvError::Other("sqlite writer has stopped".into()));
        }
        match queue.leader {
            Leader::Caller | Leader::Thread => {
                queue.jobs.push_back(job);
                Ok(Submitted::Queued)
            }
            Leader::Nobody if queue.commit_cost_us < queue.inline_commit_max_us => {
                // Nobody leads, so the queue is empty: this job is the whole group.
                assert!(queue.jobs.is_empty(), "sqlite jobs queued without a leader");
                queue.leader = Leader::Caller;
                Ok(Submitted::RunInline(job))
            }
            Leader::Nobody => {
                queue.jobs.push_back(job);
                queue.leader = Leader::Thread;
                drop(queue);
                self.thread_wake.notify_one();
                Ok(Submitted::Queued)
            }
        }
    }

    /// The caller leads one group, `job` alone, then hands any jobs queued meanwhile to
    /// the writer thread (also if the job panics).
    fn run_inline(&self, job: Job) {
        let mut turn = LeaderTurn {
            writer: self,
            by: Leader::Caller,
            cost: None,
        };
        turn.cost = self.run_group(&mut vec![job], &mut Vec::with_capacity(1));
    }

    /// Run `jobs` as one group commit on the writer connection and answer each of them;
    /// returns the group's own cost as [`commit_group`] measures it, `None` also when the
    /// connection is unusable (a job panicked while holding it: every later job fails,
    /// none hangs).
    fn run_group(
        &self,
        jobs: &mut Vec<Job>,
        completions: &mut Vec<Completion>,
    ) -> Option<Duration> {
        let Ok(conn) = self.conn.lock() else {
            let e = self.unusable();
            for job in jobs.drain(..) {
                (job(Err(e.clone())).done)(Err(e.clone()));
            }
            return None;
        };
        commit_group(&conn, &self.path, jobs, completions)
    }

    /// Lead the writer connection for one read, when nobody leads: the turn's end hands
    /// any write queued meanwhile to the writer thread, as after an inline write. `None`
    /// while a leader is busy (or the writer has stopped): read elsewhere then.
    fn lead_a_read(&self) -> Option<LeaderTurn<'_>> {
        let mut queue = self.lock_queue();
        if queue.stopped || queue.leader != Leader::Nobody {
            return None;
        }
        queue.leader = Leader::Caller;
        Some(LeaderTurn {
            writer: self,
            by: Leader::Caller,
            cost: None,
        })
    }

    /// The error for every use of a connection that a panicking job left poisoned.
    fn unusable(&self) -> KvError {
        KvError::Other(format!(
            "sqlite {}: writer connection unusable after a panic",
            self.path.display()
        ))
    }

    /// End a leader's turn: record the group's cost, then give leadership up — to nobody
    /// when no job is left, else to the writer thread (woken unless it is the one
    /// releasing). Under the queue lock, so a job pushed concurrently either was queued
    /// before (and is handed on here) or comes after (and finds the new leader state).
    fn release(&self, by: Leader, cost: Option<Duration>) {
        let mut queue = self.lock_queue();
        if let Some(cost) = cost {
            queue.record_cost(cost);
        }
        if queue.jobs.is_empty() {
            queue.leader = Leader::Nobody;
            return;
        }
        queue.leader = Leader::Thread;
        drop(queue);
        // The writer thread releasing keeps leading: it checks the queue before it waits.
        if by != Leader::Thread {
            self.thread_wake.notify_one();
        }
    }

    /// Test knob: lead as a caller without running anything, so writes queue up behind it
    /// until the returned turn is dropped (deterministic groups and closing with jobs
    /// queued).
    #[cfg(test)]
    fn hold(&self) -> LeaderTurn<'_> {
        let mut queue = self.lock_queue();
        assert_eq!(queue.leader, Leader::Nobody, "hold needs an idle writer");
        queue.leader = Leader::Caller;
        LeaderTurn {
            writer: self,
            by: Leader::Caller,
            cost: None,
        }
    }
}

impl WriteQueue {
    /// Move the oldest waiting jobs, at most [`SQLITE_GROUP_COMMIT_MAX`], into `group`.
    fn take_group(&mut self, group: &mut Vec<Job>) {
        let group_max = usize::try_from(SQLITE_GROUP_COMMIT_MAX).unwrap_or(usize::MAX);
        let take = self.jobs.len().min(group_max);
        group.extend(self.jobs.drain(..take));
        #[cfg(test)]
        {
            self.largest_group = self.largest_group.max(take);
        }
    }

    /// Fold one group's cost into the moving average.
    fn record_cost(&mut self, cost: Duration) {
        let sample_us = u64::try_from(cost.as_micros()).unwrap_or(u64::MAX);
        let kept = self.commit_cost_us - self.commit_cost_us / COMMIT_COST_EWMA_WEIGHT;
        self.commit_cost_us = kept.saturating_add(sample_us / COMMIT_COST_EWMA_WEIGHT);
    }
}

/// One leader's turn; dropping it (also while unwinding from a panicking job) releases
/// leadership, so queued jobs are never stranded behind a leader that is gone.
struct LeaderTurn<'a> {
    writer: &'a Writer,
    by: Leader,
    cost: Option<Duration>,
}

impl Drop for LeaderTurn<'_> {
    fn drop(&mut self) {
        self.writer.release(self.by, self.cost.take());
    }
}

/// Marks the writer stopped when its thread ends (closed, or a job panicked on it) and
/// fails what is still queued (their callers get an error, not a wait forever).
struct ThreadExit<'a>(&'a Writer);

impl Drop for ThreadExit<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock_queue();
        queue.stopped = true;
        queue.leader = Leader::Nobody;
        // Dropping a job drops its reply: its caller gets "dropped the request".
        queue.jobs.clear();
    }
}

/// The writer thread: whenever it is made leader, take the waiting jobs, run them in one
/// transaction, commit once, answer them all, and lead again while jobs are left. Ends
/// when the database is dropped and no job is left.
fn writer_loop(writer: &Writer) {
    let _exit = ThreadExit(writer);
    let group_max = usize::try_from(SQLITE_GROUP_COMMIT_MAX).unwrap_or(usize::MAX);
    let mut group: Vec<Job> = Vec::with_capacity(group_max);
    let mut completions: Vec<Completion> = Vec::with_capacity(group_max);
    loop {
        {
            let mut queue = writer.lock_queue();
            loop {
                match queue.leader {
                    Leader::Thread => break,
                    Leader::Nobody if queue.closed => return,
                    Leader::Nobody | Leader::Caller => {
                        queue = writer
                            .thread_wake
                            .wait(queue)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
            }
            queue.take_group(&mut group);
        }
        let mut turn = LeaderTurn {
            writer,
            by: Leader::Thread,
            cost: None,
        };
        turn.cost = writer.run_group(&mut group, &mut completions);
    }
}

/// Run `jobs` inside one `BEGIN IMMEDIATE … COMMIT`, then answer each with the commit's
/// outcome. A job alone in its group runs without a savepoint (two statements fewer for
/// every uncontended write); if it fails or refuses, the transaction is rolled back
/// instead. Returns the group's own cost: the `BEGIN` and `COMMIT` statements, not the
/// jobs' SQL, so a big group under load does not look like an expensive commit. `None`
/// when the group changed no row: committing nothing skips the fsync, so its cost would
/// make a disk look fast (failed compare-and-swaps, in-memory reads through the writer).
fn commit_group(
    conn: &Connection,
    path: &Path,
    jobs: &mut Vec<Job>,
    completions: &mut Vec<Completion>,
) -> Option<Duration> {
    if !conn.is_autocommit() {
        // A transaction left open by a failed COMMIT or ROLLBACK: never build on it.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let alone = jobs.len() == 1;
    let changes_before = conn.total_changes();
    let begin_started = Instant::now();
    let begin = run_cached(conn, "BEGIN IMMEDIATE");
    let mut cost = begin_started.elapsed();
    match begin {
        Ok(()) => {
            let mut undo = false;
            let mut queued = jobs.drain(..);
            for job in queued.by_ref() {
                let ran = job(Ok(Slot { conn, path, alone }));
                undo |= ran.undo;
                completions.push(ran.done);
                if conn.is_autocommit() {
                    break;
                }
            }
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back after an error (a full disk,
                // an I/O error, no memory): the writes of the jobs run so far are gone,
                // and a job run now would start and commit a transaction of its own
                // outside the group. So none of the group is written, and every job,
                // run or not, is told so.
                let e = KvError::Other(format!(
                    "sqlite {}: the transaction was rolled back after an error; nothing was written",
                    path.display()
                ));
                for job in queued {
                    (job(Err(e.clone())).done)(Err(e.clone()));
                }
                for done in completions.drain(..) {
                    done(Err(e.clone()));
                }
                return None;
            }
            drop(queued);
            if alone && undo {
                // The job's own error or refusal is its answer; none of its writes stay.
                let rollback = run_cached(conn, "ROLLBACK").map_err(|e| sql_error(path, e));
                for done in completions.drain(..) {
                    done(rollback.clone());
                }
                return None;
            }
            let wrote = conn.total_changes() != changes_before;
            let commit_started = Instant::now();
            let commit = run_cached(conn, "COMMIT").map_err(|e| {
                // A failed COMMIT leaves the transaction open: undo it so the next
                // group starts clean, and fail every job of this one.
                let _ = conn.execute_batch("ROLLBACK");
                sql_error(path, e)
            });
            cost += commit_started.elapsed();
            for done in completions.drain(..) {
                done(commit.clone());
            }
            if !wrote {
                return None;
            }
        }
        Err(e) => {
            // A busy `BEGIN` (another process holds the lock) counts: it is what a caller
            // committing inline would wait for.
            let e = sql_error(path, e);
            for job in jobs.drain(..) {
                (job(Err(e.clone())).done)(Err(e.clone()));
            }
        }
    }
    Some(cost)
}

/// Run a statement without parameters through the connection's statement cache
/// (`execute_batch` would parse it again on every call).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Run one job's SQL in its own savepoint: an error (or a refusal) undoes only this job.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<KvResult<T>>,
) -> rusqlite::Result<KvResult<T>> {
    run_cached(conn, "SAVEPOINT job")?;
    let outcome = f(conn);
    match &outcome {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => run_cached(conn, "ROLLBACK TO job")?,
    }
    run_cached(conn, "RELEASE job")?;
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
    // Cached statements: `Connection::transaction` parses BEGIN and COMMIT on every call.
    run_cached(conn, "BEGIN")?;
    let out = f(conn);
    let ended = if out.is_ok() {
        run_cached(conn, "COMMIT")
    } else {
        Ok(())
    };
    if (out.is_err() || ended.is_err()) && !conn.is_autocommit() {
        // Never leave a snapshot open: it would pin the WAL and hide later writes.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let out = out?;
    ended?;
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
    use futures::FutureExt as _;

    /// Concurrent tasks in the counting tests.
    const TASKS: u32 = 32;
    /// Compare-and-swap increments per task in the counting tests.
    const INCREMENTS_PER_TASK: u32 = 100;
    /// Attempts one increment may take before the test calls it starved (a liveness bound,
    /// far above what contention between `TASKS` tasks needs).
    const CAS_ATTEMPTS_MAX: u32 = 100_000;
    /// Bound of every wait for a condition.
    const WAIT_MAX: Duration = Duration::from_secs(30);

    #[test]
    fn a_counter_must_be_exactly_eight_bytes() {
        // Proves decode_counter accepts 8-byte LE values and rejects other lengths with a message.
        assert_eq!(decode_counter("k", &42i64.to_le_bytes()), Ok(42));
        let err = decode_counter("k", b"hello").unwrap_err();
        assert!(err.contains("not a counter"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_fails_alone_in_its_transaction_leaves_nothing_behind() {
        // Proves the savepoint-free path of a job alone in its group: a job that writes
        // and then refuses (or fails in SQL) is rolled back whole, on a file and in memory,
        // inline and on the writer thread; the caller gets its own error, and the next
        // write commits normally.
        let dir = tempfile::tempdir().unwrap();
        for (path, inline_max_us) in [
            (dir.path().join("inline.db"), u64::MAX),
            (dir.path().join("thread.db"), 0),
            (PathBuf::from(IN_MEMORY_PATH), u64::MAX),
        ] {
            let db = SqliteDb::open(&path).unwrap();
            db.set_inline_commit_max_us(inline_max_us);
            let refused = db
                .write(|conn| {
                    upsert(conn, "default", "half", b"written")?;
                    Ok(Err::<(), _>(KvError::Other("refused after writing".into())))
                })
                .await;
            assert_eq!(
                refused,
                Err(KvError::Other("refused after writing".into())),
                "{path:?}"
            );
            let failed = db
                .write(|conn| {
                    upsert(conn, "default", "half", b"written")?;
                    conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                    Ok(Ok(()))
                })
                .await;
            assert!(
                failed.unwrap_err().to_string().contains("no_such_table"),
                "{path:?}"
            );
            let store = SqliteStore::new(db.clone(), "default");
            assert_eq!(store.get("half").await.unwrap(), None, "{path:?}");
            store.set("after", b"ok".to_vec()).await.unwrap();
            assert_eq!(
                store.get("after").await.unwrap(),
                Some(b"ok".to_vec()),
                "{path:?}"
            );
            assert!(db.writer.conn.lock().unwrap().is_autocommit(), "{path:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_in_a_group_commit_undoes_only_itself() {
        // Proves jobs committed together stay independent: 64 writes queued behind a held
        // leader run as ONE group, half of them refused (incrementing a value that is not
        // a counter); exactly the 32 good increments remain and the refused key is untouched.
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        let writer = db.writer.clone();
        let store = SqliteStore::new(db, "default");
        store.set("text", b"hello".to_vec()).await.unwrap();
        let held = writer.hold();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i % 2 == 0 { "n" } else { "text" };
                store.increment(key, 1).await
            }));
        }
        wait_until(|| writer.lock_queue().jobs.len() == 64).await;
        drop(held);
        let mut refused = 0;
        for task in tasks {
            if task.await.unwrap().is_err() {
                refused += 1;
            }
        }
        assert_eq!(
            writer.lock_queue().largest_group,
            64,
            "one group of 64 jobs"
        );
        assert_eq!(refused, 32);
        assert_eq!(
            store.get("n").await.unwrap(),
            Some(32i64.to_le_bytes().to_vec())
        );
        assert_eq!(store.get("text").await.unwrap(), Some(b"hello".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_whose_transaction_sqlite_rolled_back_writes_nothing_and_says_so() {
        // Proves every answer of a group tells the truth when SQLite itself rolls the
        // group's transaction back after an error (as it may on a full disk or an I/O
        // error; simulated by a job running ROLLBACK): the write before it is gone, the
        // write after it is not run outside the group, all three callers get an error,
        // and the next write commits normally.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let db = SqliteDb::open(&path).unwrap();
        let writer = db.writer.clone();
        let held = writer.hold();
        let mut tasks = Vec::new();
        for (i, key) in ["before", "rollback", "after"].into_iter().enumerate() {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |conn| {
                    if key == "rollback" {
                        conn.execute_batch("ROLLBACK")?;
                    } else {
                        upsert(conn, "default", key, b"v")?;
                    }
                    Ok(Ok(()))
                })
                .await
            }));
            wait_until(|| writer.lock_queue().jobs.len() == i + 1).await;
        }
        drop(held);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let file = Connection::open(&path).unwrap();
        for (key, answer) in ["before", "rollback", "after"].iter().zip(&answers) {
            let stored = select_value(&file, "default", key).unwrap();
            assert_eq!(stored, None, "{key} must not be written");
            assert!(answer.is_err(), "{key}: {answer:?}");
        }
        assert!(
            answers[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("rolled back"),
            "{answers:?}"
        );
        let store = SqliteStore::new(db.clone(), "default");
        store.set("next", b"ok".to_vec()).await.unwrap();
        assert_eq!(
            select_value(&file, "default", "next").unwrap(),
            Some(b"ok".to_vec())
        );
    }

    #[tokio::test]
    async fn an_acknowledged_write_is_visible_to_the_next_read_and_to_a_new_opener() {
        // Proves a write is answered only after its commit: a read through the idle
        // writer, a read from the reader pool (while a leader holds the writer) and a
        // fresh connection all see it as soon as the call returned.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let db = SqliteDb::open(&path).unwrap();
        let store = SqliteStore::new(db.clone(), "default");
        for i in 0..20u8 {
            store.set("k", vec![i]).await.unwrap();
            assert_eq!(store.get("k").await.unwrap(), Some(vec![i]));
            // The writer thread may still be ending the group that answered the write.
            wait_until(|| db.writer.lock_queue().leader == Leader::Nobody).await;
            let held = db.writer.hold();
            assert_eq!(store.get("k").await.unwrap(), Some(vec![i]));
            drop(held);
            let other = Connection::open(&path).unwrap();
            assert_eq!(select_value(&other, "default", "k").unwrap(), Some(vec![i]));
        }
    }

    #[tokio::test]
    async fn a_read_uses_the_idle_writer_and_never_waits_for_a_busy_one() {
        // Proves the read routing: with every reader connection taken away, reads still
        // answer at once while nobody leads (they run on the writer connection); while a
        // leader holds the writer (a group commit, an fsync on disk), a read answers from
        // a reader connection instead of waiting for it.
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        let store = SqliteStore::new(db.clone(), "default");
        store.set("k", b"v".to_vec()).await.unwrap();
        wait_until(|| db.writer.lock_queue().leader == Leader::Nobody).await;
        let taken: Vec<Connection> = std::mem::take(&mut *db.readers.idle.lock().unwrap());
        assert_eq!(taken.len(), SQLITE_READERS_MAX as usize);
        let read = tokio::time::timeout(Duration::from_secs(5), store.get("k")).await;
        let many = store.get_many(vec!["k".into(), "absent".into()]);
        let many = tokio::time::timeout(Duration::from_secs(5), many).await;
        // Back before asserting, so a read stuck waiting for a reader ends with the test.
        db.readers.idle.lock().unwrap().extend(taken);
        db.readers.available.notify_all();
        assert_eq!(
            read.expect("read through the idle writer").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            many.expect("batch read through the idle writer").unwrap(),
            vec![
                ("k".to_string(), Some(b"v".to_vec())),
                ("absent".to_string(), None)
            ]
        );
        assert!(
            db.writer.conn.lock().unwrap().is_autocommit(),
            "no snapshot left open"
        );
        wait_until(|| db.writer.lock_queue().leader == Leader::Nobody).await;
        let held = db.writer.hold();
        let read = tokio::time::timeout(Duration::from_secs(5), store.get("k")).await;
        assert_eq!(
            read.expect("read beside a busy writer").unwrap(),
            Some(b"v".to_vec())
        );
        drop(held);
    }

    #[test]
    fn a_batch_read_never_leaves_its_snapshot_open() {
        // Proves snapshot() ends its read transaction whether its reads succeed or fail:
        // one left open would pin the WAL and hide later commits from that connection.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute(CREATE_TABLE_SQL, []).unwrap();
        let found = snapshot(&conn, |c| select_value(c, "default", "k")).unwrap();
        assert_eq!(found, None);
        assert!(conn.is_autocommit(), "committed after a read");
        let failed = snapshot(&conn, |c| {
            select_value(c, "default", "k")?;
            c.prepare("SELECT value FROM no_such_table").map(drop)
        });
        assert!(failed.is_err());
        assert!(conn.is_autocommit(), "rolled back after a failed read");
    }

    #[tokio::test]
    async fn writes_queued_behind_a_read_on_the_writer_are_handed_on() {
        // Proves a read leading the writer strands no write: writes arriving during it
        // queue, and its end hands them to the writer thread, which commits them all.
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        let store = SqliteStore::new(db.clone(), "default");
        let turn = db
            .writer
            .lead_a_read()
            .expect("nobody leads a fresh database");
        assert!(db.writer.lead_a_read().is_none(), "one leader at a time");
        let mut tasks = Vec::new();
        for i in 0..8i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.increment("n", i).await }));
        }
        wait_until(|| db.writer.lock_queue().jobs.len() == 8).await;
        drop(turn);
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            store.get("n").await.unwrap(),
            Some(28i64.to_le_bytes().to_vec())
        );
    }

    #[tokio::test]
    async fn a_lone_write_commits_on_the_callers_thread_only_while_commits_are_cheap() {
        // Proves the routing: with the threshold forced high, sequential writes never reach
        // the writer thread (it runs no group); forced to 0, each write is a thread group.
        let db = SqliteDb::open(Path::new(IN_MEMORY_PATH)).unwrap();
        let writer = db.writer.clone();
        let store = SqliteStore::new(db.clone(), "default");
        db.set_inline_commit_max_us(u64::MAX);
        for i in 0..10u8 {
            store.set("k", vec![i]).await.unwrap();
        }
        assert_eq!(
            writer.lock_queue().largest_group,
            0,
            "no group ran on the thread"
        );
        db.set_inline_commit_max_us(0);
        store.set("k", vec![10]).await.unwrap();
        assert_eq!(
            writer.lock_queue().largest_group,
            1,
            "the write went to the thread"
        );
        assert_eq!(store.get("k").await.unwrap(), Some(vec![10]));
    }

    #[test]
    fn expensive_commits_turn_inline_commits_off_and_cheap_ones_turn_them_back_on() {
        // Proves the moving average reacts both ways: two fsync-sized samples (3.4 ms) push
        // it over the threshold, a run of tmpfs-sized ones (20 µs) brings it back under.
        let db = SqliteDb::open(Path::new(IN_MEMORY_PATH)).unwrap();
        let mut queue = db.writer.lock_queue();
        assert!(
            queue.commit_cost_us < SQLITE_INLINE_COMMIT_MAX_US,
            "starts optimistic"
        );
        for _ in 0..2 {
            queue.record_cost(Duration::from_micros(3_400));
        }
        assert!(queue.commit_cost_us >= SQLITE_INLINE_COMMIT_MAX_US);
        for _ in 0..30 {
            queue.record_cost(Duration::from_micros(20));
        }
        assert!(queue.commit_cost_us < SQLITE_INLINE_COMMIT_MAX_US);
    }

    #[tokio::test]
    async fn a_group_that_changes_nothing_leaves_the_commit_cost_alone() {
        // Proves a commit without a write (a failed compare-and-swap, an in-memory read)
        // is not taken as a sign of cheap commits: the moving average stays where it was.
        let db = SqliteDb::open(Path::new(IN_MEMORY_PATH)).unwrap();
        let store = SqliteStore::new(db.clone(), "default");
        let expensive_us = SQLITE_INLINE_COMMIT_MAX_US * 2;
        db.writer.lock_queue().commit_cost_us = expensive_us;
        let swapped = store
            .compare_and_swap("k", Some(b"not there".to_vec()), b"new".to_vec())
            .await
            .unwrap();
        assert!(!swapped);
        assert_eq!(store.get("k").await.unwrap(), None);
        let queue = db.writer.lock_queue();
        assert_eq!(queue.largest_group, 1, "both ran as writer thread groups");
        assert_eq!(queue.commit_cost_us, expensive_us);
    }

    #[test]
    fn a_file_commits_with_an_fsync_and_in_wal_mode() {
        // Proves the durability promise the README makes: the writer connection of a file
        // runs `synchronous = FULL` (2), so an acknowledged write survives power loss and
        // not only the process's death (which the crash tests cover). The setting belongs
        // to the connection, not the file, so only the writer itself can show it.
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        let conn = db.writer.conn.lock().unwrap();
        let synchronous: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "synchronous = FULL on the writer");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_swap_increments_on_a_file_lose_no_update() {
        // Proves group commit plus inline commits keep compare-and-swap exact: 32 tasks x 100
        // increments of one key in a file end at exactly 3200.
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        assert_eq!(count_by_compare_and_swap(db).await, expected_count());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_swap_increments_in_memory_lose_no_update() {
        // Proves the same exact count for an in-memory database, whose reads go through the
        // writer too.
        let db = SqliteDb::open(Path::new(IN_MEMORY_PATH)).unwrap();
        assert_eq!(count_by_compare_and_swap(db).await, expected_count());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_are_exact_whether_writes_commit_inline_or_on_the_thread() {
        // Proves both paths alone keep the count exact: the threshold forced to 0 (every
        // write on the writer thread) and to the maximum (inline whenever nobody leads), on
        // a file and in memory.
        let dir = tempfile::tempdir().unwrap();
        for (i, max_us) in [0, u64::MAX].into_iter().enumerate() {
            let file = SqliteDb::open(&dir.path().join(format!("kv{i}.db"))).unwrap();
            let memory = SqliteDb::open(Path::new(IN_MEMORY_PATH)).unwrap();
            for db in [file, memory] {
                db.set_inline_commit_max_us(max_us);
                let path = db.path().to_path_buf();
                assert_eq!(
                    count_by_compare_and_swap(db).await,
                    expected_count(),
                    "{} with threshold {max_us}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn dropping_the_store_with_writes_queued_commits_them_and_returns() {
        // Proves closing neither strands nor hangs: 50 writes queued behind a held leader
        // while the store is being dropped are all committed once it lets go, the drop
        // returns, and a write after that fails with a clear error.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let db = SqliteDb::open(&path).unwrap();
        let writer = db.writer.clone();
        let held = writer.hold();
        let store = SqliteStore::new(db, "default");
        for i in 0..50u8 {
            // One poll queues the job; dropping the future leaves it queued, unanswered.
            let queued = store.set(&format!("k{i}"), vec![i]).now_or_never();
            assert!(queued.is_none(), "write {i} waits behind the held leader");
        }
        assert_eq!(writer.lock_queue().jobs.len(), 50);
        let (dropped, wait_dropped) = std::sync::mpsc::channel();
        let closer = std::thread::spawn(move || {
            drop(store);
            let _ = dropped.send(());
        });
        wait_until_blocking(|| writer.lock_queue().closed);
        drop(held);
        wait_dropped
            .recv_timeout(WAIT_MAX)
            .expect("dropping the store returns");
        closer.join().unwrap();
        let check = Connection::open(&path).unwrap();
        for i in 0..50u8 {
            let key = format!("k{i}");
            assert_eq!(
                select_value(&check, "default", &key).unwrap(),
                Some(vec![i])
            );
        }
        let late: Job = Box::new(|_| Ran {
            undo: false,
            done: Box::new(|_: KvResult<()>| {}),
        });
        let Err(KvError::Other(message)) = writer.submit(late) else {
            panic!("a write after closing must fail");
        };
        assert!(message.contains("stopped"), "{message}");
    }

    fn expected_count() -> u64 {
        u64::from(TASKS) * u64::from(INCREMENTS_PER_TASK)
    }

    /// `TASKS` tasks each add 1 to one counter `INCREMENTS_PER_TASK` times by read +
    /// compare-and-swap through the public API, retrying on conflict; the final count.
    /// Every task makes its first read before any task swaps (a barrier), so the swaps
    /// do race: all but one of those first swaps must be refused.
    async fn count_by_compare_and_swap(db: Arc<SqliteDb>) -> u64 {
        let store = SqliteStore::new(db, "default");
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let store = store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut refused = increment_by_compare_and_swap(&store, Some(&barrier)).await;
                for _ in 1..INCREMENTS_PER_TASK {
                    refused += increment_by_compare_and_swap(&store, None).await;
                }
                refused
            }));
        }
        let mut refused = 0;
        for task in tasks {
            refused += task.await.unwrap();
        }
        assert!(
            refused >= TASKS - 1,
            "the racing first swaps were refused ({refused} refusals)"
        );
        read_count(&store).await
    }

    /// Add 1 by read + compare-and-swap, retrying on conflict (after waiting at `barrier`
    /// between the first read and its swap); how many swaps were refused.
    async fn increment_by_compare_and_swap(
        store: &SqliteStore,
        mut barrier: Option<&tokio::sync::Barrier>,
    ) -> u32 {
        for refused in 0..CAS_ATTEMPTS_MAX {
            let current = store.get("count").await.unwrap();
            if let Some(barrier) = barrier.take() {
                barrier.wait().await;
            }
            let next = read_count_value(current.as_deref()) + 1;
            let swapped = store
                .compare_and_swap("count", current, next.to_le_bytes().to_vec())
                .await
                .unwrap();
            if swapped {
                return refused;
            }
        }
        panic!("an increment lost {CAS_ATTEMPTS_MAX} compare-and-swaps in a row");
    }

    async fn read_count(store: &SqliteStore) -> u64 {
        read_count_value(store.get("count").await.unwrap().as_deref())
    }

    fn read_count_value(value: Option<&[u8]>) -> u64 {
        value.map_or(0, |bytes| {
            u64::from_le_bytes(bytes.try_into().expect("the count is 8 bytes"))
        })
    }

    /// Wait (bounded by [`WAIT_MAX`]) until `done` holds, yielding to other tasks.
    async fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT_MAX;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "condition not met within {WAIT_MAX:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Wait (bounded by [`WAIT_MAX`]) until `done` holds, on a thread without a runtime.
    fn wait_until_blocking(done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT_MAX;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "condition not met within {WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
