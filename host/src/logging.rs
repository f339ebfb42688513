//! Host logs (tracing, `RUST_LOG`-style filter, default `info`) and guest stdout/stderr,
//! written line by line with the component id in front: `[authorize] text`.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Longest partial line kept while waiting for its newline; longer output is flushed as is.
const PENDING_LINE_BYTES_MAX: usize = 64 * 1024;

/// Install the global tracing subscriber (`RUST_LOG`, default `info`). Safe to call twice.
///
/// Lines go to stderr through [`BackgroundStderr`]: a request's log line costs a channel
/// send, not a `write` system call on the request path. Call [`flush`] before exiting.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(BackgroundStderr)
        .try_init();
}

/// Waits until every log line handed to [`BackgroundStderr`] so far is written.
pub fn flush() {
    let (done, wait) = std::sync::mpsc::channel();
    if log_lines().send(LogMessage::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(std::time::Duration::from_secs(5));
    }
}

/// What the log writer thread receives.
enum LogMessage {
    Line(Vec<u8>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The queue of the log writer thread, started on first use. The thread writes every line
/// waiting at that moment with one `write_all`, so a burst of requests costs one system call.
fn log_lines() -> &'static std::sync::mpsc::Sender<LogMessage> {
    static SENDER: std::sync::OnceLock<std::sync::mpsc::Sender<LogMessage>> =
        std::sync::OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<LogMessage>();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(64 * 1024);
                let mut flushes = Vec::new();
                while let Ok(first) = receiver.recv() {
                    let mut next = Some(first);
                    while let Some(message) = next {
                        match message {
                            LogMessage::Line(line) => batch.extend_from_slice(&line),
                            LogMessage::Flush(done) => flushes.push(done),
                        }
                        next = if batch.len() < PENDING_LINE_BYTES_MAX {
                            receiver.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if !batch.is_empty() {
                        let _ = std::io::stderr().lock().write_all(&batch);
                        batch.clear();
                    }
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            // No thread: lines written now are lost; say so once, on stderr directly.
            eprintln!("log writer thread could not start: {e}");
        }
        sender
    })
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
        if !self.0.is_empty() {
            let line = std::mem::take(&mut self.0);
            if let Err(std::sync::mpsc::SendError(LogMessage::Line(line))) =
                log_lines().send(LogMessage::Line(line))
            {
                let _ = std::io::stderr().lock().write_all(&line);
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
        let mut out = Vec::new();
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend(pending.drain(..=i));
        }
        if pending.len() > PENDING_LINE_BYTES_MAX {
            out.extend_from_slice(self.prefix.as_bytes());
            out.append(&mut pending);
            out.push(b'\n');
        }
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
}
