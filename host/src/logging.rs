//! Host logs (tracing, `RUST_LOG`-style filter, default `info`) and guest stdout/stderr,
//! written line by line with the component id in front: `[authorize] text`.
//!
//! Host log lines are written by a background thread in bursts: waking a parked thread is a
//! futex call and a context switch, too much to pay per request line (see [`BatchedLines`]).

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;

/// Longest partial line kept while waiting for its newline; longer output is flushed as is.
const PENDING_LINE_BYTES_MAX: usize = 64 * 1024;

/// How long the log writer thread lets a burst of lines gather after the first one woke
/// it, so a burst costs one wake-up and one `write`, not one per line.
const LOG_BATCH_WAIT_MS: u64 = 3;
/// How long [`flush`] waits for the writer thread before giving up.
const LOG_FLUSH_WAIT_MAX_S: u64 = 5;
/// Starting capacity of each of the writer's two buffers (they keep what they grew to).
const LOG_BATCH_CAPACITY_BYTES: usize = 64 * 1024;

/// Install the global tracing subscriber (`RUST_LOG`, default `info`). Safe to call twice.
///
/// Lines go to stderr through [`BackgroundStderr`]: a request's log line costs appending to
/// a buffer, not a `write` system call (nor a thread wake-up) on the request path. Call
/// [`flush`] before exiting.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(BackgroundStderr)
        .try_init();
}

/// Waits until every log line handed to [`BackgroundStderr`] so far is written (at most
/// 5 s: a stuck stderr must not keep the process from exiting).
pub fn flush() {
    if let Some(lines) = log_lines() {
        lines.flush(Duration::from_secs(LOG_FLUSH_WAIT_MAX_S));
    }
}

/// The log writer thread of stderr, started on first use; `None` if it could not start.
fn log_lines() -> Option<&'static BatchedLines> {
    static LINES: OnceLock<Option<Arc<BatchedLines>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            BatchedLines::start(Box::new(std::io::stderr()))
                .inspect_err(|e| {
                    // No thread: lines are written directly instead; say so once.
                    eprintln!("log writer thread could not start: {e}");
                })
                .ok()
        })
        .as_deref()
}

/// Lines handed over by any thread, written to a sink by one background thread.
///
/// Only the line that makes the buffer non-empty wakes the thread; the thread then waits
/// [`LOG_BATCH_WAIT_MS`] for the rest of the burst, swaps the buffer out and writes it
/// with one `write_all`. Idle, the thread sleeps on a condition variable: no periodic
/// wake-ups.
struct BatchedLines {
    state: Mutex<BatchState>,
    /// Wakes the writer thread when the buffer stops being empty.
    line_ready: Condvar,
    /// Wakes [`BatchedLines::flush`] callers when a batch is written.
    batch_written: Condvar,
}

struct BatchState {
    buffer: Vec<u8>,
    /// Lines handed over since the start.
    lines_handed: u64,
    /// Lines written to the sink since the start (or dropped on a write error).
    lines_written: u64,
    /// Callers waiting in `flush` (the writer thread notifies only when there are some).
    flushers: u32,
}

impl BatchedLines {
    /// Start the writer thread for `sink`.
    fn start(sink: Box<dyn std::io::Write + Send>) -> std::io::Result<Arc<BatchedLines>> {
        let lines = Arc::new(BatchedLines {
            state: Mutex::new(BatchState {
                buffer: Vec::with_capacity(LOG_BATCH_CAPACITY_BYTES),
                lines_handed: 0,
                lines_written: 0,
                flushers: 0,
            }),
            line_ready: Condvar::new(),
            batch_written: Condvar::new(),
        });
        let thread_lines = lines.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || thread_lines.write_forever(sink))?;
        Ok(lines)
    }

    /// A log line never fails the caller, so a poisoned lock (a panic while appending)
    /// is used as is: at worst one line is half there.
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand `line` over; wakes the writer thread only if the buffer was empty.
    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        let was_empty = state.buffer.is_empty();
        state.buffer.extend_from_slice(line);
        state.lines_handed += 1;
        drop(state);
        if was_empty {
            self.line_ready.notify_one();
        }
    }

    /// Wait (at most `wait_max`) until every line handed over before the call is written.
    fn flush(&self, wait_max: Duration) {
        let deadline = Instant::now() + wait_max;
        let mut state = self.lock();
        let target = state.lines_handed;
        state.flushers += 1;
        while state.lines_written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .batch_written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.flushers -= 1;
    }

    /// The writer thread: sleep until a line arrives, let the burst gather, write it all.
    fn write_forever(&self, mut sink: Box<dyn std::io::Write + Send>) {
        let mut batch = Vec::with_capacity(LOG_BATCH_CAPACITY_BYTES);
        loop {
            let mut state = self.lock();
            while state.buffer.is_empty() {
                state = self
                    .line_ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(LOG_BATCH_WAIT_MS));
            let mut state = self.lock();
            std::mem::swap(&mut state.buffer, &mut batch);
            let upto = state.lines_handed;
            drop(state);
            // A closed stderr loses the lines; nothing better to do with them.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            let mut state = self.lock();
            state.lines_written = upto;
            let flushers = state.flushers;
            drop(state);
            if flushers > 0 {
                self.batch_written.notify_all();
            }
        }
    }
}

/// A `tracing` writer whose lines are written to stderr by a background thread.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundStderr;

/// One log line being formatted; handed to the writer thread when dropped.
#[derive(Debug, Default)]
pub struct PendingLine(Vec<u8>);

impl std::io::Write for PendingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        match log_lines() {
            Some(lines) => lines.push(&self.0),
            None => {
                let _ = std::io::stderr().lock().write_all(&self.0);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BackgroundStderr {
    type Writer = PendingLine;
    fn make_writer(&'a self) -> PendingLine {
        PendingLine(Vec::with_capacity(256))
    }
}

/// Which host stream guest output goes to.
#[derive(Clone, Copy, Debug)]
pub enum OutputKind {
    /// The host's stdout.
    Stdout,
    /// The host's stderr.
    Stderr,
}

/// A guest's stdout or stderr: complete lines are written to the host's stream prefixed
/// with `[<component id>] `.
#[derive(Clone)]
pub struct GuestOutput {
    prefix: Arc<str>,
    kind: OutputKind,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// Output of component `id` going to `kind`.
    pub fn new(id: &str, kind: OutputKind) -> GuestOutput {
        GuestOutput {
            prefix: Arc::from(format!("[{id}] ")),
            kind,
            pending: Arc::default(),
        }
    }

    fn write_lines(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        let out = take_lines(self.prefix.as_bytes(), &mut pending);
        drop(pending);
        if !out.is_empty() {
            // Losing guest output because the host's stream is closed is not worth failing
            // the guest's write for.
            let _ = match self.kind {
                OutputKind::Stdout => std::io::stdout().lock().write_all(&out),
                OutputKind::Stderr => std::io::stderr().lock().write_all(&out),
            };
        }
    }
}

/// The complete lines at the front of `pending`, each after `prefix`, taken out of it
/// (and a partial line grown past [`PENDING_LINE_BYTES_MAX`], ended with a newline). One
/// pass and one drain: draining line by line would move the rest of a large write once
/// per line, quadratic in its size.
fn take_lines(prefix: &[u8], pending: &mut Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
        out.extend_from_slice(prefix);
        out.extend_from_slice(&pending[start..=start + i]);
        start += i + 1;
    }
    pending.drain(..start);
    if pending.len() > PENDING_LINE_BYTES_MAX {
        out.extend_from_slice(prefix);
        out.append(pending);
        out.push(b'\n');
    }
    out
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        // The last clone flushes an unterminated last line.
        if Arc::strong_count(&self.pending) == 1 {
            let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !rest.is_empty() {
                let mut line = rest;
                line.push(b'\n');
                self.write_lines(&line);
            }
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_lines(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_wait_for_their_newline() {
        // Proves a write without a newline is held back and completed by the next write.
        let out = GuestOutput::new("probe", OutputKind::Stderr);
        out.write_lines(b"hel");
        assert_eq!(&*out.pending.lock().unwrap(), b"hel");
        out.write_lines(b"lo\nwor");
        assert_eq!(&*out.pending.lock().unwrap(), b"wor");
    }

    #[test]
    fn every_line_of_a_write_is_prefixed_and_the_partial_tail_kept() {
        // Proves one write of many lines comes out line by line, each prefixed, in order,
        // with the unfinished last line held back; and that a partial line past the cap is
        // let out whole with a newline.
        let mut pending = b"held\n".to_vec();
        for i in 0..10_000 {
            pending.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        pending.extend_from_slice(b"tail");
        let out = String::from_utf8(take_lines(b"[c] ", &mut pending)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 10_001);
        assert_eq!(lines[0], "[c] held");
        assert_eq!(lines[10_000], "[c] line 9999");
        assert!(
            lines[1..]
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("[c] line {i}"))
        );
        assert_eq!(pending, b"tail");

        let mut long = vec![b'x'; PENDING_LINE_BYTES_MAX + 1];
        let out = take_lines(b"[c] ", &mut long);
        assert_eq!(out.len(), 4 + PENDING_LINE_BYTES_MAX + 2);
        assert!(out.starts_with(b"[c] x") && out.ends_with(b"x\n"));
        assert!(long.is_empty());
    }

    #[test]
    fn flush_returns_once_every_line_from_every_thread_is_written() {
        // Proves flush waits for the batches: 4 threads hand over 100 lines each to a writer
        // with an in-memory sink, and right after flush the sink holds all 400 lines.
        let sink = SharedSink::default();
        let lines = BatchedLines::start(Box::new(sink.clone())).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        lines.push(format!("thread {t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        lines.flush(Duration::from_secs(LOG_FLUSH_WAIT_MAX_S));
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 400);
        for t in 0..4 {
            for i in 0..100 {
                assert!(
                    written.contains(&format!("thread {t} line {i}\n")),
                    "{t}/{i}"
                );
            }
        }
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct SharedSink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
