//! The library API tests and `spinpay-host up` use: load and validate an app, compile its
//! components once, serve it on a loopback port, stop it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use spinpay_host::app::{AppOptions, start};
//! let mut opts = AppOptions::new("spin.toml");
//! opts.kv_default_path = Some(std::env::temp_dir().join("kv-test.db"));
//! opts.variables.insert("admin_token".into(), "test-token".into());
//! let app = start(opts).await?;          // validated, compiled, bound to 127.0.0.1:<free>
//! let url = format!("{}/v1/payments", app.base_url());
//! # let _ = url;
//! app.shutdown().await;                  // stop accepting, drain, close stores
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full};
use wasmtime::component::{GuestTaskId, Linker};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, ProxyHandler, ProxyPre,
    ShouldAccept, TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::manifest::Manifest;
use crate::outbound::AllowedHosts;
use crate::outbound_http::{OutboundHooks, OutboundPolicy};
use crate::routes::{RouteMatch, Router};
use crate::runtime_config::{KvStoreConfig, RuntimeConfig};
use crate::state::{ComponentEnv, HostState, new_store};
use crate::variables::ResolvedVariables;

/// Spin 4.1's default: requests one instance serves before it is dropped.
pub const DEFAULT_MAX_INSTANCE_REUSE_COUNT: u32 = 128;
/// Spin 4.1's default: requests one instance serves at the same time.
pub const DEFAULT_MAX_CONCURRENT_REUSE_COUNT: u32 = 16;
/// Spin 4.1's default: how long an idle instance is kept for reuse.
pub const DEFAULT_IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a guest may take to produce a response head.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may take to send a request head, counted from when the host
/// starts waiting for one: a client that sends part of a head and stalls (slowloris), or
/// a keep-alive connection left idle, is closed after it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests beyond their deadline (the request
/// timeout): a request waiting on a payment channel is never cut off before the time it
/// was given, after the channel may have acted on it.
pub const SHUTDOWN_DRAIN_MARGIN: Duration = Duration::from_secs(2);

/// Everything needed to run an app. [`AppOptions::new`] gives the defaults. Its `Debug`
/// shows variable names but not their values, and whether a Redis URL is set but not
/// the URL (either may hold a secret).
#[derive(Clone)]
pub struct AppOptions {
    /// The `spin.toml`.
    pub manifest: PathBuf,
    /// Address to listen on; port 0 picks a free port (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Spin runtime-config file (`[key_value_store.*]`, `[[variables_provider]]`).
    pub runtime_config_file: Option<PathBuf>,
    /// Use this SQLite file for the `default` store (tests: a temp file).
    pub kv_default_path: Option<PathBuf>,
    /// Use this Redis URL for the `default` store (wins over `kv_default_path`).
    pub kv_redis_url: Option<String>,
    /// Tests only: wraps every store opened (see [`crate::kv::KvWrap`]).
    pub kv_wrap: Option<crate::kv::KvWrap>,
    /// Variable values that win over every provider (tests need not touch the env).
    pub variables: BTreeMap<String, String>,
    /// Run each component's `[component.<id>.build]` command before loading.
    pub build: bool,
    /// Requests per instance before it is dropped; 1 = a fresh instance per request.
    pub max_instance_reuse_count: u32,
    /// Requests one instance serves concurrently.
    pub max_concurrent_reuse_count: u32,
    /// How long an idle instance is kept for reuse.
    pub idle_instance_timeout: Duration,
    /// Deadline for a guest to answer; past it the guest is cut off and the client gets 500.
    pub request_timeout: Duration,
    /// Threads that accept and serve requests (default: one per available core). Each
    /// runs its own single-threaded async runtime with its own component instances, so a
    /// request, the guest answering it and the chained calls it makes all stay on one
    /// thread instead of waking another core at every hand-off.
    pub serving_threads: usize,
    /// How long a connection may take to send a request head (from when the host starts
    /// waiting for it, so also how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("manifest", &self.manifest)
            .field("listen", &self.listen)
            .field("runtime_config_file", &self.runtime_config_file)
            .field("kv_default_path", &self.kv_default_path)
            .field("kv_redis_url", &self.kv_redis_url.as_ref().map(|_| "<set>"))
            .field("kv_wrap", &self.kv_wrap.as_ref().map(|_| "<set>"))
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("build", &self.build)
            .field("max_instance_reuse_count", &self.max_instance_reuse_count)
            .field(
                "max_concurrent_reuse_count",
                &self.max_concurrent_reuse_count,
            )
            .field("idle_instance_timeout", &self.idle_instance_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("serving_threads", &self.serving_threads)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

impl AppOptions {
    /// Defaults for `manifest`: ephemeral loopback port, Spin 4.1's reuse settings.
    pub fn new(manifest: impl Into<PathBuf>) -> AppOptions {
        AppOptions {
            manifest: manifest.into(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            runtime_config_file: None,
            kv_default_path: None,
            kv_redis_url: None,
            kv_wrap: None,
            variables: BTreeMap::new(),
            build: false,
            max_instance_reuse_count: DEFAULT_MAX_INSTANCE_REUSE_COUNT,
            max_concurrent_reuse_count: DEFAULT_MAX_CONCURRENT_REUSE_COUNT,
            idle_instance_timeout: DEFAULT_IDLE_INSTANCE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            serving_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// An app serving on its socket. Drop without [`RunningApp::shutdown`] aborts it.
pub struct RunningApp {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<Stop>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Weak, so the last serving thread still closes the stores.
    stores: BTreeMap<String, std::sync::Weak<dyn crate::kv::KvBackend>>,
}

/// What the serving threads are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep serving.
    No,
    /// Stop accepting and drain (bounded) in-flight requests.
    Gracefully,
    /// Stop now, abandoning in-flight requests.
    Now,
}

impl RunningApp {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key-value store `label` the components use, while the app runs: for tests and
    /// tools that inspect (or age) what the app stored. Holding it past
    /// [`RunningApp::shutdown`] keeps the store open.
    pub fn key_value_store(&self, label: &str) -> Option<Arc<dyn crate::kv::KvBackend>> {
        self.stores.get(label).and_then(std::sync::Weak::upgrade)
    }

    /// Stop accepting, let in-flight requests finish (bounded), close the stores.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(Stop::Gracefully);
        self.join().await;
    }

    /// Wait until the server stops on its own (it does not, short of an I/O failure).
    pub async fn wait(mut self) {
        self.join().await;
    }

    /// Wait for every serving thread to end (the last one closes the stores).
    async fn join(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        // A no-op after shutdown/wait (the threads have ended).
        let _ = self.stop.send(Stop::Now);
    }
}

/// Validate, compile and serve the app described by `opts`. Every configuration mistake
/// is reported (one line, naming the file and field) before the socket is bound.
pub async fn start(opts: AppOptions) -> anyhow::Result<RunningApp> {
    let app = Arc::new(load(&opts).await?);
    let stores = app
        .stores
        .iter()
        .map(|(label, store)| (label.to_string(), Arc::downgrade(store)))
        .collect();
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("making the socket on {} non-blocking", opts.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopping) = tokio::sync::watch::channel(Stop::No);
    let mut threads = Vec::new();
    let mut senders = Vec::new();
    for i in 0..opts.serving_threads.max(1) {
        let (lane, sender) = crate::server::lane();
        senders.push(sender);
        let app = app.clone();
        let stopping = stopping.clone();
        let head_timeout = opts.header_read_timeout;
        let thread = std::thread::Builder::new()
            .name(format!("spinpay-serve-{i}"))
            .spawn(move || serve_thread(&app, lane, head_timeout, stopping))
            .context("starting a serving thread")?;
        threads.push(thread);
    }
    let serving = threads.len();
    let accepting = stopping.clone();
    let acceptor = std::thread::Builder::new()
        .name("spinpay-accept".into())
        .spawn(move || accept_thread(listener, senders, accepting))
        .context("starting the accepting thread")?;
    threads.push(acceptor);
    tracing::info!(%addr, threads = serving, "serving http://{addr}");
    Ok(RunningApp {
        addr,
        stop,
        threads,
        stores,
    })
}

/// An app loaded and compiled but bound to no socket: each request goes straight to one
/// [`Dispatcher`] on the caller's runtime, the way a serving thread hands it on after
/// hyper parsed it. The host benchmark times the host's own work per request with it
/// (routing, Spin's headers, instance reuse or instantiation, the guest, collecting the
/// body), without the client, TCP and the wake-ups around them.
pub struct InProcessApp {
    dispatcher: Arc<Dispatcher>,
    /// Keeps the stores open while the dispatcher is used.
    _app: LoadedApp,
}

/// The client address an [`InProcessApp`] reports for every request.
pub const IN_PROCESS_CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);

impl InProcessApp {
    /// Load, validate and compile the app as [`start`] does, without binding.
    pub async fn load(opts: &AppOptions) -> anyhow::Result<InProcessApp> {
        let app = load(opts).await?;
        Ok(InProcessApp {
            dispatcher: app.dispatcher(),
            _app: app,
        })
    }

    /// Handle `req` as an inbound request from [`IN_PROCESS_CLIENT_ADDR`] and collect the
    /// whole response body. Call it on a single-threaded runtime to match a serving thread:
    /// instances run on the runtime that handles their requests.
    pub async fn handle(&self, req: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        let req = req.map(full_body);
        let resp = self
            .dispatcher
            .dispatch(
                req,
                Origin::Inbound {
                    client_addr: IN_PROCESS_CLIENT_ADDR,
                },
            )
            .await;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the response body: {e:?}"))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

impl Drop for InProcessApp {
    fn drop(&mut self) {
        self.dispatcher.begin_shutdown();
    }
}

/// A single-threaded runtime for one of the app's threads.
fn thread_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread's async runtime");
            None
        }
    }
}

/// The accepting thread: hands each connection to a serving thread until told to stop.
fn accept_thread(
    listener: std::net::TcpListener,
    lanes: Vec<crate::server::LaneSender>,
    stopping: tokio::sync::watch::Receiver<Stop>,
) {
    let Some(runtime) = thread_runtime() else {
        return;
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the listening socket");
                return;
            }
        };
        crate::server::accept(listener, lanes, stop_requested(stopping)).await;
    });
}

/// Completes once any stop (graceful or immediate) is requested, or the sender is gone.
async fn stop_requested(mut stopping: tokio::sync::watch::Receiver<Stop>) {
    let _ = stopping.wait_for(|s| *s != Stop::No).await;
}

/// One serving thread: a single-threaded runtime with its own [`Dispatcher`] (its own
/// instances of every component) serving the connections of its lane until told to stop.
fn serve_thread(
    app: &Arc<LoadedApp>,
    lane: crate::server::Lane,
    header_read_timeout: Duration,
    mut stopping: tokio::sync::watch::Receiver<Stop>,
) {
    let Some(runtime) = thread_runtime() else {
        return;
    };
    runtime.block_on(async {
        let serve = crate::server::serve(
            lane,
            app.dispatcher(),
            header_read_timeout,
            stop_requested(stopping.clone()),
            app.settings.shutdown_drain(),
        );
        tokio::select! {
            () = serve => {}
            _ = stopping.wait_for(|s| *s == Stop::Now) => {}
        }
    });
    // Dropping the runtime drops whatever is left (abandoned requests, idle instances)
    // before the thread ends, so a joined thread holds nothing.
    drop(runtime);
}

/// A loaded, validated and compiled app, from which each serving thread builds its own
/// [`Dispatcher`]. Shared by the threads: the stores, the compiled components, the
/// request-id counter and the inbound request limit.
pub(crate) struct LoadedApp {
    router: Router,
    components: Vec<(String, Arc<ComponentEnv>, ServicePre<HostState>)>,
    engine: Engine,
    policy: Arc<OutboundPolicy>,
    settings: InstanceSettings,
    shutting_down: Arc<AtomicBool>,
    next_request_id: Arc<AtomicU64>,
    inbound_permits: Arc<tokio::sync::Semaphore>,
    stores: crate::kv::KvStores,
}

impl LoadedApp {
    /// A dispatcher with instance handlers of its own, for one serving thread.
    pub(crate) fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::new_cyclic(|weak: &Weak<Dispatcher>| {
            let handlers = self
                .components
                .iter()
                .map(|(id, env, pre)| {
                    let handler = ProxyHandler::new(ComponentHandler {
                        env: env.clone(),
                        pre: ProxyPre::P3(pre.clone()),
                        engine: self.engine.clone(),
                        dispatcher: weak.clone(),
                        policy: self.policy.clone(),
                        settings: self.settings,
                        shutting_down: self.shutting_down.clone(),
                    });
                    (id.clone(), handler)
                })
                .collect();
            Dispatcher {
                router: self.router.clone(),
                handlers,
                next_request_id: self.next_request_id.clone(),
                shutting_down: self.shutting_down.clone(),
                inbound_permits: self.inbound_permits.clone(),
            }
        })
    }
}

/// Load, validate and compile the app; nothing is bound yet.
pub(crate) async fn load(opts: &AppOptions) -> anyhow::Result<LoadedApp> {
    let manifest = Manifest::load(&opts.manifest)?;
    if opts.build {
        run_builds(&manifest)?;
    }
    manifest.check_sources()?;
    let mut runtime = RuntimeConfig::load(opts.runtime_config_file.as_deref(), &manifest.app_dir)?;
    override_default_store(&mut runtime, opts);
    runtime.validate_against(&manifest)?;
    let variables = Arc::new(ResolvedVariables::resolve(
        &manifest,
        &runtime,
        &opts.variables,
    )?);
    let manifest_file = opts.manifest.display().to_string();
    let router = Router::build(&manifest_file, &manifest.http_triggers)?;
    let mut allowed = BTreeMap::new();
    for (id, component) in &manifest.components {
        let resolve = |name: &str| variables.app_value(name);
        let hosts = AllowedHosts::parse(
            &manifest_file,
            id,
            &component.allowed_outbound_hosts,
            &resolve,
        )?;
        allowed.insert(id.clone(), hosts);
    }
    let mut kv = runtime.open_stores().await?;
    if let Some(wrap) = &opts.kv_wrap {
        kv = kv.wrapped(wrap);
    }
    let engine = crate::engine::engine()?;
    let linker = new_linker(&engine).map_err(wasm_err)?;
    let settings = InstanceSettings::from(opts);
    let policy = Arc::new(OutboundPolicy::new(runtime.blocked_networks.clone()));
    let shutting_down = Arc::new(AtomicBool::new(false));
    let shared = Shared {
        manifest_file: &manifest_file,
        engine: &engine,
        linker: &linker,
        kv: &kv,
        variables: &variables,
    };
    let mut prepared = Vec::new();
    for (id, component) in &manifest.components {
        let hosts = allowed
            .remove(id)
            .expect("allow-list parsed above for every component");
        prepared.push(prepare_component(&shared, id, component, hosts).await?);
    }
    Ok(LoadedApp {
        router,
        components: prepared,
        engine,
        policy,
        settings,
        shutting_down,
        next_request_id: Arc::new(AtomicU64::new(1)),
        inbound_permits: Arc::new(tokio::sync::Semaphore::new(INBOUND_REQUESTS_MAX)),
        stores: kv,
    })
}

/// wasmtime errors do not implement `std::error::Error`; keep their full chain, on one line.
pub(crate) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", one_line(&e))
}

fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:?}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Caused by:")
        .collect::<Vec<_>>()
        .join(": ")
}

/// What every component of one app is prepared with.
struct Shared<'a> {
    manifest_file: &'a str,
    engine: &'a Engine,
    linker: &'a Linker<HostState>,
    kv: &'a crate::kv::KvStores,
    variables: &'a Arc<ResolvedVariables>,
}

/// Compile (or fetch from the cache), link and pre-instantiate one component.
async fn prepare_component(
    shared: &Shared<'_>,
    id: &str,
    component: &crate::manifest::ComponentConfig,
    allowed_hosts: AllowedHosts,
) -> anyhow::Result<(String, Arc<ComponentEnv>, ServicePre<HostState>)> {
    let file = shared.manifest_file;
    let source = component.source.display().to_string();
    let path = component.source.clone();
    let engine = shared.engine.clone();
    let compiled =
        tokio::task::spawn_blocking(move || crate::engine::load_component(&engine, &path))
            .await
            .context("compiling a component")?
            .map_err(|e| anyhow::anyhow!("{file}: component.{id}.source: {e:#}"))?;
    let pre = shared.linker.instantiate_pre(&compiled).map_err(|e| {
        anyhow::anyhow!(
            "{file}: component.{id}.source: cannot link {source}: {}",
            one_line(&e)
        )
    })?;
    let pre = ServicePre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "{file}: component.{id}.source: {source} does not export wasi:http/handler@0.3.0 (build it with spin-sdk 7): {}",
            one_line(&e)
        )
    })?;
    let env = Arc::new(ComponentEnv {
        id: id.to_string(),
        kv_allowed: component
            .key_value_stores
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        kv: shared.kv.clone(),
        variables: shared.variables.clone(),
        allowed_hosts,
        environment: component
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    });
    Ok((id.to_string(), env, pre))
}

fn override_default_store(runtime: &mut RuntimeConfig, opts: &AppOptions) {
    let replacement = match (&opts.kv_redis_url, &opts.kv_default_path) {
        (Some(url), _) => KvStoreConfig::Redis { url: url.clone() },
        (None, Some(path)) => KvStoreConfig::Spin { path: path.clone() },
        (None, None) => return,
    };
    runtime
        .key_value_stores
        .retain(|(label, _)| label != "default");
    runtime
        .key_value_stores
        .push(("default".to_string(), replacement));
}

fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    crate::kv_host::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Run every component's build command (like `spin up --build`), stopping at the first
/// failure.
pub fn run_builds(manifest: &Manifest) -> anyhow::Result<()> {
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            continue;
        };
        tracing::info!(component = %id, command = %build.command, "building");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&build.workdir)
            .status()
            .with_context(|| format!("running the build command of component.{id}"))?;
        if !status.success() {
            anyhow::bail!(
                "{}: component.{id}.build: `{}` failed ({status})",
                manifest.path.display(),
                build.command
            );
        }
    }
    Ok(())
}

/// Instance reuse and deadline settings of every component of an app.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstanceSettings {
    max_reuse: u32,
    max_concurrent: u32,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl InstanceSettings {
    /// How long shutdown waits for in-flight requests: their deadline and a margin.
    fn shutdown_drain(&self) -> Duration {
        self.request_timeout.saturating_add(SHUTDOWN_DRAIN_MARGIN)
    }
}

impl From<&AppOptions> for InstanceSettings {
    fn from(opts: &AppOptions) -> Self {
        InstanceSettings {
            max_reuse: opts.max_instance_reuse_count.max(1),
            max_concurrent: opts.max_concurrent_reuse_count.max(1),
            idle_timeout: opts.idle_instance_timeout,
            request_timeout: opts.request_timeout,
        }
    }
}

/// How a request reached the dispatcher; decides `spin-client-addr` and the routing.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// From a socket.
    Inbound { client_addr: SocketAddr },
    /// A guest called `http://self/...`: routed like an inbound request.
    SelfRequest,
    /// A guest called `http://<component>.spin.internal/...`.
    Chained { component: String },
}

/// Routes requests to the components' [`ProxyHandler`]s (one per component).
pub struct Dispatcher {
    router: Router,
    handlers: HashMap<String, ProxyHandler<ComponentHandler>>,
    /// Shared by every serving thread's dispatcher: request ids are unique per app.
    next_request_id: Arc<AtomicU64>,
    shutting_down: Arc<AtomicBool>,
    /// Inbound requests in flight at once, across all serving threads (chained ones ride
    /// on their caller's permit).
    pub(crate) inbound_permits: Arc<tokio::sync::Semaphore>,
}

/// Inbound requests the host works on at once; more wait for a permit.
pub const INBOUND_REQUESTS_MAX: usize = 1024;

/// Spin reports chained callers with this address.
const CHAINED_CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// Self requests come from the app itself.
const SELF_CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl Dispatcher {
    /// Mark the app as stopping (instances dropped from now on are not failures).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub(crate) fn has_component(&self, id: &str) -> bool {
        self.handlers.contains_key(id)
    }

    /// Route `req`, run the component, and log one line for it. Never fails: errors
    /// become 404 / 500 responses.
    pub(crate) async fn dispatch(
        &self,
        mut req: http::Request<WasiBody>,
        origin: Origin,
    ) -> http::Response<WasiBody> {
        let started = Instant::now();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_string();
        let (route, client_addr) = match &origin {
            Origin::Chained { component } => {
                (Some(synthetic_match(component, &path)), CHAINED_CLIENT_ADDR)
            }
            Origin::SelfRequest => (self.router.route(&path), SELF_CLIENT_ADDR),
            Origin::Inbound { client_addr } => (self.router.route(&path), *client_addr),
        };
        let Some(route) = route else {
            let resp = plain(StatusCode::NOT_FOUND, "Not Found\n");
            log_request(request_id, "-", "-", &origin, resp.status(), started);
            return resp;
        };
        let Some(handler) = self.handlers.get(&route.component) else {
            let resp = internal_error(request_id);
            log_request(
                request_id,
                &route.component,
                &route.matched_route,
                &origin,
                resp.status(),
                started,
            );
            return resp;
        };
        prepare_request(&mut req, &route, &origin, client_addr);
        let resp = match handler.handle(request_id, req).await {
            Ok(resp) => resp,
            Err(e) => {
                let reason = failure_reason(&e);
                tracing::error!(request_id, component = %route.component, reason, error = ?e, "request failed");
                internal_error(request_id)
            }
        };
        log_request(
            request_id,
            &route.component,
            &route.matched_route,
            &origin,
            resp.status(),
            started,
        );
        resp
    }
}

fn failure_reason(e: &wasmtime::Error) -> &'static str {
    if e.downcast_ref::<ExpirationError>().is_some() {
        "deadline exceeded"
    } else if e.downcast_ref::<TrapOrPanicError>().is_some() {
        "instance trapped or was cut off"
    } else if e.downcast_ref::<InstantiationError<u64>>().is_some() {
        "instantiation failed"
    } else {
        "guest error"
    }
}

fn log_request(
    request_id: u64,
    component: &str,
    route: &str,
    origin: &Origin,
    status: StatusCode,
    started: Instant,
) {
    let via = match origin {
        Origin::Inbound { .. } => "inbound",
        Origin::SelfRequest => "self",
        Origin::Chained { .. } => "chained",
    };
    tracing::info!(
        request_id,
        component,
        route,
        via,
        status = status.as_u16(),
        duration_us = started.elapsed().as_micros() as u64,
        "request"
    );
}

/// Spin's match for a chained request: the whole path is the path info of a `/...` route.
fn synthetic_match(component: &str, path: &str) -> RouteMatch {
    RouteMatch {
        component: component.to_string(),
        matched_route: "/...".to_string(),
        component_route: String::new(),
        path_info: path.to_string(),
        params: Vec::new(),
    }
}

/// Make the URI absolute and add Spin's `spin-*` headers. As Spin 4.1 does
/// (`trigger-http`'s `prepare_request_headers`), a client's own `spin-*` headers are kept
/// and come first, so a guest reading one gets the client's value: guests must take what
/// the route matched from the URI, never from these headers. Runs on every request, so
/// fixed header names are constants and values are built once.
fn prepare_request(
    req: &mut http::Request<WasiBody>,
    route: &RouteMatch,
    origin: &Origin,
    client_addr: SocketAddr,
) {
    let headers = req.headers_mut();
    if matches!(origin, Origin::Chained { .. }) {
        headers.remove(http::header::HOST);
    }
    let full_url = {
        let uri = req.uri();
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        let scheme = uri.scheme_str().unwrap_or("http");
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut url = String::with_capacity(scheme.len() + 3 + host.len() + path_and_query.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(host);
        url.push_str(path_and_query);
        url
    };
    if let Ok(uri) = full_url.parse::<http::Uri>() {
        *req.uri_mut() = uri;
    }
    let headers = req.headers_mut();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    };
    set(SPIN_FULL_URL, &full_url);
    set(SPIN_PATH_INFO, &route.path_info);
    set(SPIN_MATCHED_ROUTE, &route.matched_route);
    set(SPIN_RAW_COMPONENT_ROUTE, &route.matched_route);
    set(SPIN_COMPONENT_ROUTE, &route.component_route);
    set(SPIN_CLIENT_ADDR, &client_addr.to_string());
    set(SPIN_BASE_PATH, "/");
    for (name, value) in &route.params {
        // Spin names it `SPIN_PATH_MATCH_<NAME>` and turns `_` into `-`, as for every
        // header it sets: `:user_id` → `spin-path-match-user-id`.
        let name = format!(
            "spin-path-match-{}",
            name.replace('_', "-").to_ascii_lowercase()
        );
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            set(name, value);
        }
    }
}

const SPIN_FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
const SPIN_PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
const SPIN_MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
const SPIN_BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
const SPIN_RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
const SPIN_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
const SPIN_CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");

pub(crate) fn plain(status: StatusCode, text: &'static str) -> http::Response<WasiBody> {
    let mut resp = http::Response::new(full_body(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn internal_error(request_id: u64) -> http::Response<WasiBody> {
    let mut resp = http::Response::new(full_body(Bytes::from(format!(
        "Internal Server Error (request id {request_id})\n"
    ))));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn full_body(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// One component's instance factory for [`ProxyHandler`].
pub struct ComponentHandler {
    env: Arc<ComponentEnv>,
    pre: ProxyPre<HostState>,
    engine: Engine,
    dispatcher: Weak<Dispatcher>,
    policy: Arc<OutboundPolicy>,
    settings: InstanceSettings,
    shutting_down: Arc<AtomicBool>,
}

impl HandlerState for ComponentHandler {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, Worker>> {
        let hooks = OutboundHooks {
            env: self.env.clone(),
            dispatcher: self.dispatcher.clone(),
            policy: self.policy.clone(),
        };
        let mut store = new_store(&self.engine, self.env.clone(), hooks);
        let proxy = match tokio::time::timeout(
            self.settings.request_timeout,
            self.pre.instantiate_async(&mut store),
        )
        .await
        {
            Ok(proxy) => proxy?,
            Err(_) => wasmtime::bail!("instantiating component {} timed out", self.env.id),
        };
        let request_expired = Arc::new(AtomicBool::new(false));
        Ok(Instance {
            store,
            proxy,
            view: <HostState as wasmtime_wasi_http::WasiHttpView>::http,
            expiration: Expiration {
                idle_timeout: self.settings.idle_timeout,
                request_timeout: self.settings.request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
                request_expired: request_expired.clone(),
            },
            state: Worker {
                component: self.env.id.clone(),
                settings: self.settings,
                shutting_down: self.shutting_down.clone(),
                request_expired,
            },
        })
    }
}

/// How long an instance whose request was cut off at its deadline keeps running once its
/// other requests have answered: time for their response bodies to stream out.
pub const EXPIRED_POST_RETURN_GRACE: Duration = Duration::from_secs(1);

/// When a worker (one instance) must go: idle too long, a request past its deadline, or
/// shortly after the end of its requests once one of them expired.
pub struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set by [`Worker::on_request_start`]'s deadline when it fires.
    request_expired: Arc<AtomicBool>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        // A request cut off at its deadline was answered 500, and its guest task may still
        // be running (writing, calling a channel). Once the instance's other requests have
        // answered, the worker gives them only EXPIRED_POST_RETURN_GRACE to finish
        // streaming their bodies (a WASIp3 response body is written after the handler
        // returns) instead of another request deadline, then goes, so what the client was
        // told failed stops soon after (an idempotency key's lock is only held for about
        // one request deadline).
        let timeout = match status {
            WorkerStatus::Idle => me.idle_timeout,
            WorkerStatus::PostReturn if me.request_expired.load(Ordering::Acquire) => {
                me.request_timeout.min(EXPIRED_POST_RETURN_GRACE)
            }
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.request_timeout,
        };
        let Some(deadline) = start.checked_add(timeout) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        me.sleep.as_mut().poll(cx)
    }
}

/// Reuse policy and per-request deadline of one instance.
pub struct Worker {
    component: String,
    settings: InstanceSettings,
    shutting_down: Arc<AtomicBool>,
    /// Shared with the instance's [`Expiration`].
    request_expired: Arc<AtomicBool>,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = u64;

    fn should_accept_request(&self, concurrent_count: usize, total_count: usize) -> ShouldAccept {
        if total_count >= self.settings.max_reuse as usize {
            ShouldAccept::Never
        } else if concurrent_count >= self.settings.max_concurrent as usize {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, HostState>,
        request_id: u64,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        tracing::trace!(request_id, component = %self.component, "instance accepted request");
        let (timeout, expired) = (self.settings.request_timeout, self.request_expired.clone());
        // Resolves only if the guest has not answered by then (the handler drops it once
        // the guest answers).
        Box::pin(async move {
            tokio::time::sleep(timeout).await;
            expired.store(true, Ordering::Release);
        })
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            if self.shutting_down.load(Ordering::Relaxed) {
                // Shutdown aborts idle workers; that is not a failure worth a warning.
                tracing::debug!(component = %self.component, error = ?e, "instance dropped at shutdown");
            } else {
                tracing::warn!(component = %self.component, error = ?e, "instance dropped after a failure");
            }
        }
        drop(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_waits_for_in_flight_requests_past_their_deadline() {
        // Proves the drain covers the request timeout, default or set, so shutdown never
        // cuts off a request before its own deadline (a channel call may be under way).
        let mut opts = AppOptions::new("spin.toml");
        for timeout in [DEFAULT_REQUEST_TIMEOUT, Duration::from_secs(90)] {
            opts.request_timeout = timeout;
            let drain = InstanceSettings::from(&opts).shutdown_drain();
            assert!(drain > timeout, "{drain:?} for {timeout:?}");
        }
    }

    #[test]
    fn debug_output_names_variables_but_shows_no_secret() {
        // Proves a logged AppOptions keeps variable values and the Redis URL (with its
        // password) out of the log, while naming what is set.
        let mut opts = AppOptions::new("spin.toml");
        opts.variables
            .insert("admin_token".into(), "tok_very_secret".into());
        opts.kv_redis_url = Some("redis://:hunter2@127.0.0.1:6379".into());
        let shown = format!("{opts:?}");
        assert!(shown.contains("admin_token"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
        assert!(!shown.contains("tok_very_secret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
