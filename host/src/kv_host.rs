//! `spin:key-value@3.0.0` and `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` served
//! from the app's [`KvBackend`]s. Both interfaces open the same backend for a label, so a
//! value written through one is read (and compare-and-swapped) through the other.
//!
//! Access control is Spin's: a label missing from the component's `key_value_stores` is
//! `access-denied` whether or not the app defines it (so a component cannot learn which
//! other stores exist); a granted label always has a store (start-up checks it), else it
//! would be `no-such-store`.

use std::sync::Arc;

use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use crate::bindings::spin::key_value::key_value as spin_kv;
use crate::bindings::spin::variables::variables as spin_vars;
use crate::bindings::wasi::keyvalue::{atomics, batch, store as wasi_store};
use crate::kv::{KvBackend, KvError};
use crate::state::HostState;
use crate::variables::VariableError;

/// An open store (a `spin:key-value` `store` or a `wasi:keyvalue` `bucket`).
pub struct OpenStore {
    label: String,
    backend: Arc<dyn KvBackend>,
}

/// A `wasi:keyvalue/atomics.cas` handle: the value `current` saw, which `swap` compares
/// against.
pub struct CasHandle {
    store: Arc<dyn KvBackend>,
    label: String,
    key: String,
    current: Option<Vec<u8>>,
}

/// Why opening a label failed, before it is turned into either interface's error.
enum OpenError {
    NoSuchStore,
    AccessDenied,
}

impl HostState {
    fn open_backend(&self, label: &str) -> Result<Arc<dyn KvBackend>, OpenError> {
        if !self.env.kv_allowed.contains(label) {
            return Err(OpenError::AccessDenied);
        }
        self.env.kv.get(label).ok_or(OpenError::NoSuchStore)
    }

    fn open_store(&self, label: &str) -> Result<OpenStore, OpenError> {
        let backend = self.open_backend(label)?;
        Ok(OpenStore {
            label: label.to_string(),
            backend,
        })
    }

    fn store_backend(&self, handle: &Resource<OpenStore>) -> wasmtime::Result<Arc<dyn KvBackend>> {
        Ok(self.table.get(handle)?.backend.clone())
    }
}

/// The `HasData` marker the bindings are linked with; its data is the store's [`HostState`].
pub struct SpinHost;

impl HasData for SpinHost {
    type Data<'a> = &'a mut HostState;
}

/// Register Spin's interfaces in `linker`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::bindings::SpinpayHost::add_to_linker::<HostState, SpinHost>(linker, |s| s)
}

fn other(e: KvError) -> String {
    match e {
        KvError::Other(message) => message,
    }
}

// ---------------------------------------------------------------- spin:key-value

fn spin_err(e: KvError) -> spin_kv::Error {
    spin_kv::Error::Other(other(e))
}

fn backend_of(
    accessor: &Accessor<HostState, SpinHost>,
    handle: &Resource<OpenStore>,
) -> wasmtime::Result<Arc<dyn KvBackend>> {
    accessor.with(|mut access| access.get().store_backend(handle))
}

impl spin_kv::HostStoreWithStore<HostState> for SpinHost {
    async fn open(
        accessor: &Accessor<HostState, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, spin_kv::Error>> {
        accessor.with(|mut access| {
            let state = access.get();
            let store = match state.open_store(&label) {
                Ok(store) => store,
                Err(OpenError::NoSuchStore) => return Ok(Err(spin_kv::Error::NoSuchStore)),
                Err(OpenError::AccessDenied) => return Ok(Err(spin_kv::Error::AccessDenied)),
            };
            match state.table.push(store) {
                Ok(handle) => Ok(Ok(handle)),
                Err(_) => Ok(Err(spin_kv::Error::StoreTableFull)),
            }
        })
    }

    async fn get(
        accessor: &Accessor<HostState, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let backend = backend_of(accessor, &self_)?;
        Ok(backend.get(&key).await.map_err(spin_err))
    }

    async fn set(
        accessor: &Accessor<HostState, Self>,
        self_: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let backend = backend_of(accessor, &self_)?;
        Ok(backend.set(&key, value).await.map_err(spin_err))
    }

    async fn delete(
        accessor: &Accessor<HostState, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let backend = backend_of(accessor, &self_)?;
        Ok(backend.delete(&key).await.map_err(spin_err))
    }

    async fn exists(
        accessor: &Accessor<HostState, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let backend = backend_of(accessor, &self_)?;
        Ok(backend.exists(&key).await.map_err(spin_err))
    }

    async fn get_keys(
        accessor: &Accessor<HostState, Self>,
        self_: Resource<OpenStore>,
    ) -> wasmtime::Result<(
        StreamReader<String>,
        FutureReader<Result<(), spin_kv::Error>>,
    )> {
        let backend = backend_of(accessor, &self_)?;
        let (keys, result) = match backend.get_keys().await {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(spin_err(e))),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(
                &mut access,
                std::future::ready(Ok::<_, wasmtime::Error>(result)),
            )?;
            Ok((stream, done))
        })
    }
}

impl spin_kv::HostStore for HostState {
    async fn drop(&mut self, rep: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl spin_kv::Host for HostState {}

// ---------------------------------------------------------------- spin:variables

impl spin_vars::HostWithStore<HostState> for SpinHost {
    async fn get(
        accessor: &Accessor<HostState, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, spin_vars::Error>> {
        accessor.with(|mut access| {
            let state = access.get();
            Ok(
                match state.env.variables.component_get(&state.env.id, &name) {
                    Ok(value) => Ok(value),
                    Err(VariableError::InvalidName(n)) => Err(spin_vars::Error::InvalidName(n)),
                    Err(VariableError::Undefined(n)) => Err(spin_vars::Error::Undefined(n)),
                },
            )
        })
    }
}

impl spin_vars::Host for HostState {}

// ---------------------------------------------------------------- wasi:keyvalue

fn wasi_err(e: KvError) -> wasi_store::Error {
    wasi_store::Error::Other(other(e))
}

impl wasi_store::HostBucket for HostState {
    async fn get(
        &mut self,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        let backend = self.store_backend(&self_)?;
        Ok(backend.get(&key).await.map_err(wasi_err))
    }

    async fn set(
        &mut self,
        self_: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let backend = self.store_backend(&self_)?;
        Ok(backend.set(&key, value).await.map_err(wasi_err))
    }

    async fn delete(
        &mut self,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let backend = self.store_backend(&self_)?;
        Ok(backend.delete(&key).await.map_err(wasi_err))
    }

    async fn exists(
        &mut self,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        let backend = self.store_backend(&self_)?;
        Ok(backend.exists(&key).await.map_err(wasi_err))
    }

    async fn list_keys(
        &mut self,
        self_: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        // Every key in one page: the cursor is never needed (Spin does the same).
        let backend = self.store_backend(&self_)?;
        Ok(backend
            .get_keys()
            .await
            .map(|keys| wasi_store::KeyResponse { keys, cursor: None })
            .map_err(wasi_err))
    }

    async fn drop(&mut self, rep: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl wasi_store::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, wasi_store::Error>> {
        let store = match self.open_store(&identifier) {
            Ok(store) => store,
            Err(OpenError::NoSuchStore) => return Ok(Err(wasi_store::Error::NoSuchStore)),
            Err(OpenError::AccessDenied) => return Ok(Err(wasi_store::Error::AccessDenied)),
        };
        match self.table.push(store) {
            Ok(handle) => Ok(Ok(handle)),
            Err(_) => Ok(Err(wasi_store::Error::Other(
                "too many open buckets".to_string(),
            ))),
        }
    }
}

impl HostState {
    async fn new_cas(
        &mut self,
        backend: Arc<dyn KvBackend>,
        label: String,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, wasi_store::Error>> {
        let current = match backend.get(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(wasi_err(e))),
        };
        let handle = CasHandle {
            store: backend,
            label,
            key,
            current,
        };
        match self.table.push(handle) {
            Ok(h) => Ok(Ok(h)),
            Err(_) => Ok(Err(wasi_store::Error::Other(
                "too many open cas handles".to_string(),
            ))),
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<atomics::Cas>, wasi_store::Error>> {
        let open = self.table.get(&bucket)?;
        let (backend, label) = (open.backend.clone(), open.label.clone());
        self.new_cas(backend, label, key).await
    }

    async fn current(
        &mut self,
        self_: Resource<atomics::Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(Ok(self.table.get(&self_)?.current.clone()))
    }

    async fn drop(&mut self, rep: Resource<atomics::Cas>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_store::Error>> {
        let backend = self.store_backend(&bucket)?;
        Ok(backend.increment(&key, delta).await.map_err(wasi_err))
    }

    async fn swap(
        &mut self,
        cas: Resource<atomics::Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let CasHandle {
            store,
            label,
            key,
            current,
        } = self.table.delete(cas)?;
        match store.compare_and_swap(&key, current, value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match self.new_cas(store, label, key).await? {
                Ok(fresh) => Ok(Err(atomics::CasError::CasFailed(fresh))),
                Err(e) => Ok(Err(atomics::CasError::StoreError(e))),
            },
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_err(e)))),
        }
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_store::Error>> {
        let backend = self.store_backend(&bucket)?;
        Ok(backend.get_many(keys).await.map_err(wasi_err))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let backend = self.store_backend(&bucket)?;
        Ok(backend.set_many(key_values).await.map_err(wasi_err))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        let backend = self.store_backend(&bucket)?;
        Ok(backend.delete_many(keys).await.map_err(wasi_err))
    }
}
