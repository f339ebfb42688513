//! Per-store data ([`HostState`]) and the one function that owns every per-store limit
//! ([`new_store`]): memory, resource table size, epoch yielding for the request deadline.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::GUEST_MEMORY_BYTES_MAX;
use crate::kv::KvStores;
use crate::logging::{GuestOutput, OutputKind};
use crate::outbound::AllowedHosts;
use crate::outbound_http::OutboundHooks;
use crate::variables::ResolvedVariables;

/// Resources (streams, requests, key-value handles, ...) one store may hold at once.
pub const RESOURCES_MAX: usize = 10_000;

/// Core instances, tables and table elements one store may create.
const INSTANCES_MAX: usize = 64;
const TABLES_MAX: usize = 64;
const TABLE_ELEMENTS_MAX: usize = 100_000;

/// What a component is allowed to see, shared by all its instances.
pub struct ComponentEnv {
    /// Component id from the manifest.
    pub id: String,
    /// `key_value_stores` labels this component may open.
    pub kv_allowed: BTreeSet<String>,
    /// Every store of the app, by label.
    pub kv: KvStores,
    /// Resolved variables of the app.
    pub variables: Arc<ResolvedVariables>,
    /// Resolved `allowed_outbound_hosts`.
    pub allowed_hosts: AllowedHosts,
    /// `environment` entries for WASI.
    pub environment: Vec<(String, String)>,
}

/// The data of one wasmtime store (one component instance).
pub struct HostState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: OutboundHooks,
    pub(crate) limits: StoreLimits,
    pub(crate) env: Arc<ComponentEnv>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A fresh store for one instance of `env`'s component, with every per-store limit set.
pub fn new_store(
    engine: &Engine,
    env: Arc<ComponentEnv>,
    hooks: OutboundHooks,
) -> Store<HostState> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(GuestOutput::new(&env.id, OutputKind::Stdout));
    wasi.stderr(GuestOutput::new(&env.id, OutputKind::Stderr));
    wasi.envs(&env.environment);
    let mut table = ResourceTable::new();
    table.set_max_capacity(RESOURCES_MAX);
    let limits = StoreLimitsBuilder::new()
        .memory_size(GUEST_MEMORY_BYTES_MAX)
        .instances(INSTANCES_MAX)
        .tables(TABLES_MAX)
        .table_elements(TABLE_ELEMENTS_MAX)
        .trap_on_grow_failure(false)
        .build();
    let state = HostState {
        table,
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        hooks,
        limits,
        env,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // Yield to the executor on every epoch tick: a guest in a busy loop then gives the
    // worker a chance to notice the request deadline and drop the instance.
    store.epoch_deadline_async_yield_and_update(1);
    store.set_epoch_deadline(1);
    store
}
