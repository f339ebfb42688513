//! Host bindings for Spin's own interfaces, generated from the vendored WIT in `wit/deps`
//! (Apache-2.0 WITH LLVM-exception, license kept beside it).

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    inline: "
        package spinpay:host;
        world spinpay-host {
            import spin:key-value/key-value@3.0.0;
            import spin:variables/variables@3.0.0;
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
        }
    ",
    path: [
        "../wit/deps/spin-key-value@3.0.0",
        "../wit/deps/spin-variables@3.0.0",
        "../wit/deps/wasi-keyvalue@0.2.0-draft2",
    ],
    imports: { default: async | trappable },
    with: {
        "spin:key-value/key-value.store": crate::kv_host::OpenStore,
        "wasi:keyvalue/store.bucket": crate::kv_host::OpenStore,
        "wasi:keyvalue/atomics.cas": crate::kv_host::CasHandle,
    },
});
