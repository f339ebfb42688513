//! Host benchmark (not a test). Run with
//!   cargo build --target wasm32-wasip2 --release -p guest-hello
//!   cargo bench -p spinpay-host --bench host
//!
//! (a) instantiate-and-handle time of a trivial component, fresh instance per request vs
//!     instance reuse, in µs: in process (the request handed straight to the host's
//!     dispatcher on a single-threaded runtime, as a serving thread does once hyper has
//!     parsed it; no socket) and over loopback (sequential requests over one keep-alive
//!     connection, against a native hyper hello-world: the added round-trip time);
//! (b) requests/s and p50/p99 of the same handler at 32 connections with `wrk`
//!     (Debian package `wrk`), and
//! (c) a native hyper hello-world measured in the same run, as the baseline;
//! plus the process RSS with six components loaded and idle.
//!
//! `BENCH_SECONDS` (default 10) sets the length of each wrk run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spinpay_host::app::{AppOptions, InProcessApp, RunningApp, start};

/// The allocator `spinpay-host` itself uses (host/src/main.rs), so both sides of the
/// ratio (the native baseline runs in this same process) are measured with it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUESTS_SEQUENTIAL: usize = 2_000;
const CONNECTIONS: u32 = 32;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/guest_hello.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `cargo build --target wasm32-wasip2 --release -p guest-hello`",
        wasm.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(&dir, &wasm);
    let reuse = start_app(&manifest, &dir, 128).await;
    println!(
        "process rss with one app of six components loaded, idle: {} MiB",
        rss_mib()
    );
    let fresh = start_app(&manifest, &dir, 1).await;
    let native = start_native().await;

    println!("\n(a) in process, no socket ({REQUESTS_SEQUENTIAL} sequential requests each)");
    let in_reuse = in_process(&manifest, &dir, 128);
    let in_fresh = in_process(&manifest, &dir, 1);
    print_seq("wasm, instance reuse", &in_reuse);
    print_seq("wasm, fresh instance", &in_fresh);
    println!(
        "  in-process handle time p50: reuse {} µs, fresh {} µs (target <= 100 µs)",
        in_reuse.p50, in_fresh.p50
    );

    println!("\n(a) sequential requests over one connection ({REQUESTS_SEQUENTIAL} each)");
    let native_seq = sequential(&format!("http://{native}/")).await;
    let reuse_seq = sequential(&format!("{}/", reuse.base_url())).await;
    let fresh_seq = sequential(&format!("{}/", fresh.base_url())).await;
    print_seq("native hyper", &native_seq);
    print_seq("wasm, instance reuse", &reuse_seq);
    print_seq("wasm, fresh instance", &fresh_seq);
    println!(
        "  added round trip p50 (reuse - native): {} µs; instantiate cost p50 (fresh - reuse): {} µs",
        reuse_seq.p50.saturating_sub(native_seq.p50),
        fresh_seq.p50.saturating_sub(reuse_seq.p50)
    );

    println!("\n(b)/(c) wrk, {CONNECTIONS} connections");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let Some(native_wrk) = wrk(&format!("http://{native}/"), seconds) else {
        println!("  wrk not found on PATH (apt-get install wrk); skipping (b) and (c)");
        return;
    };
    let reuse_wrk = wrk(&format!("{}/", reuse.base_url()), seconds).expect("wrk ran once");
    let fresh_wrk = wrk(&format!("{}/", fresh.base_url()), seconds).expect("wrk ran once");
    print_wrk("native hyper", &native_wrk);
    print_wrk("wasm, instance reuse", &reuse_wrk);
    print_wrk("wasm, fresh instance", &fresh_wrk);
    println!(
        "  ratio reuse/native req/s: {:.2}; fresh/native: {:.2}",
        reuse_wrk.rps / native_wrk.rps,
        fresh_wrk.rps / native_wrk.rps
    );
    reuse.shutdown().await;
    fresh.shutdown().await;
}

fn write_manifest(dir: &tempfile::TempDir, wasm: &std::path::Path) -> PathBuf {
    let mut text = String::from(
        "spin_manifest_version = 2\n[application]\nname = \"bench\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c0\"\n",
    );
    for i in 0..6 {
        if i > 0 {
            text.push_str(&format!(
                "[[trigger.http]]\nroute = \"/c{i}/...\"\ncomponent = \"c{i}\"\n"
            ));
        }
        text.push_str(&format!(
            "[component.c{i}]\nsource = \"{}\"\n",
            wasm.display()
        ));
    }
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, text).expect("write manifest");
    path
}

async fn start_app(manifest: &std::path::Path, dir: &tempfile::TempDir, reuse: u32) -> RunningApp {
    let mut opts = AppOptions::new(manifest);
    opts.kv_default_path = Some(dir.path().join(format!("kv-{reuse}.db")));
    opts.max_instance_reuse_count = reuse;
    start(opts).await.expect("bench app starts")
}

async fn start_native() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"hello"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Seq {
    p50: u64,
    p99: u64,
    mean: u64,
}

/// Time [`REQUESTS_SEQUENTIAL`] requests handed one after another straight to the app's
/// dispatcher, on a thread with a single-threaded runtime of its own (a serving thread's
/// setup), after 100 unmeasured ones.
fn in_process(manifest: &std::path::Path, dir: &tempfile::TempDir, reuse: u32) -> Seq {
    let mut opts = AppOptions::new(manifest);
    opts.kv_default_path = Some(dir.path().join(format!("kv-in-process-{reuse}.db")));
    opts.max_instance_reuse_count = reuse;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let app = InProcessApp::load(&opts).await.expect("bench app loads");
                    let mut times = Vec::with_capacity(REQUESTS_SEQUENTIAL);
                    for i in 0..REQUESTS_SEQUENTIAL + 100 {
                        let req = http::Request::get("/")
                            .header(http::header::HOST, "bench.local")
                            .body(Bytes::new())
                            .expect("request");
                        let started = Instant::now();
                        let resp = app.handle(req).await.expect("response");
                        assert_eq!(resp.status(), 200);
                        if i >= 100 {
                            times.push(started.elapsed().as_micros() as u64);
                        }
                    }
                    summarize(times)
                })
            })
            .join()
            .expect("in-process bench thread")
    })
}

async fn sequential(url: &str) -> Seq {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut times = Vec::with_capacity(REQUESTS_SEQUENTIAL);
    for i in 0..REQUESTS_SEQUENTIAL + 100 {
        let req = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let started = Instant::now();
        let resp = client.request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await.expect("body");
        if i >= 100 {
            times.push(started.elapsed().as_micros() as u64);
        }
    }
    summarize(times)
}

fn summarize(mut times: Vec<u64>) -> Seq {
    times.sort_unstable();
    Seq {
        p50: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
        mean: times.iter().sum::<u64>() / times.len() as u64,
    }
}

fn print_seq(name: &str, s: &Seq) {
    println!(
        "  {name:<22} p50 {:>6} µs  p99 {:>6} µs  mean {:>6} µs",
        s.p50, s.p99, s.mean
    );
}

struct Wrk {
    rps: f64,
    p50: String,
    p99: String,
}

fn wrk(url: &str, seconds: u64) -> Option<Wrk> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> String {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let rps = field("Requests/sec:").parse().unwrap_or(0.0);
    std::thread::sleep(Duration::from_millis(500));
    Some(Wrk {
        rps,
        p50: field("50%"),
        p99: field("99%"),
    })
}

fn print_wrk(name: &str, w: &Wrk) {
    println!(
        "  {name:<22} {:>10.0} req/s  p50 {:>8}  p99 {:>8}",
        w.rps, w.p50, w.p99
    );
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}
