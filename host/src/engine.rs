//! The process-wide wasmtime [`Engine`] (pooling allocator, epoch interruption, WASIp3
//! async) and a cache of compiled [`Component`]s keyed by path, size and mtime, so a test
//! process that starts many apps compiles each `.wasm` once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// How often the epoch ticker thread advances the engine's epoch. Every tick a running
/// guest yields to the executor, which is what lets a request deadline cut off a guest
/// stuck in a loop.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory one guest may grow to (enforced by the pool and by `StoreLimits`).
pub const GUEST_MEMORY_BYTES_MAX: usize = 256 << 20;

/// Component instances alive at once across the whole process (all apps, all components).
const COMPONENT_INSTANCES_MAX: u32 = 512;

/// Async stacks (one per in-flight guest call) alive at once across the process.
const STACKS_MAX: u32 = 1024;

/// Environment variable that turns on a profiler for guest code: `perfmap` writes
/// `/tmp/perf-<pid>.map` so `perf record` / `perf report` name the guests' functions
/// instead of `[JIT]` addresses (what `wasmtime serve --profile=perfmap` does).
pub const WASM_PROFILE_ENV: &str = "SPINPAY_WASM_PROFILE";

static ENGINE: OnceLock<Engine> = OnceLock::new();

type CacheKey = (PathBuf, u64, SystemTime);
static COMPONENTS: OnceLock<Mutex<HashMap<CacheKey, Component>>> = OnceLock::new();

/// The engine every app of this process uses; created (with its epoch ticker thread) on
/// first use.
pub fn engine() -> anyhow::Result<Engine> {
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let engine = new_engine()?;
    // Another thread may have won the race; keep the first and let ours drop unticked.
    let engine = ENGINE.get_or_init(|| {
        spawn_epoch_ticker(engine.clone());
        engine
    });
    Ok(engine.clone())
}

fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    config.profiler(profiling_strategy()?);
    // Compiled code is cached on disk (wasmtime's default cache directory), so a restart or
    // a new test process skips Cranelift for components that did not change. A cache that
    // cannot be set up only costs speed.
    match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(e) => tracing::warn!(error = %e, "wasmtime compile cache unavailable"),
    }
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(COMPONENT_INSTANCES_MAX);
    pool.total_core_instances(COMPONENT_INSTANCES_MAX * 2);
    pool.total_memories(COMPONENT_INSTANCES_MAX * 2);
    pool.total_tables(COMPONENT_INSTANCES_MAX * 2);
    pool.total_stacks(STACKS_MAX);
    pool.max_memory_size(GUEST_MEMORY_BYTES_MAX);
    pool.max_unused_warm_slots(32);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(pool_err) => {
            // Some machines cap virtual memory; fall back to on-demand allocation rather
            // than refusing to start.
            tracing::warn!(error = %pool_err, "pooling allocator unavailable; using on-demand allocation");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:?}"))
        }
    }
}

fn profiling_strategy() -> anyhow::Result<ProfilingStrategy> {
    match std::env::var(WASM_PROFILE_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(ProfilingStrategy::None),
        Ok(v) if v.is_empty() || v == "none" => Ok(ProfilingStrategy::None),
        Ok(v) if v == "perfmap" => Ok(ProfilingStrategy::PerfMap),
        Ok(v) => anyhow::bail!("{WASM_PROFILE_ENV}={v:?}: expected `perfmap` or `none`"),
        Err(e) => anyhow::bail!("{WASM_PROFILE_ENV}: {e}"),
    }
}

fn spawn_epoch_ticker(engine: Engine) {
    std::thread::Builder::new()
        .name("spinpay-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// The compiled component at `path`, compiled at most once per (path, size, mtime) in this
/// process.
pub fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let key: CacheKey = (path.to_path_buf(), meta.len(), meta.modified()?);
    let cache = COMPONENTS.get_or_init(Default::default);
    if let Some(component) = cache.lock().expect("component cache poisoned").get(&key) {
        return Ok(component.clone());
    }
    let started = std::time::Instant::now();
    let component = Component::from_file(engine, path).map_err(|e| {
        let detail = format!("{e:?}").replace('\n', " ");
        anyhow::anyhow!("compiling {}: {detail}", path.display())
    })?;
    tracing::info!(path = %path.display(), ms = started.elapsed().as_millis() as u64, "compiled component");
    cache
        .lock()
        .expect("component cache poisoned")
        .insert(key, component.clone());
    Ok(component)
}
