//! runtime-config.toml in Spin's own format:
//! `[key_value_store.<label>] type = "spin" (path = ...) | "redis" (url = ...)` and
//! `[[variables_provider]] type = "env" (prefix, dotenv_path)` and
//! `[outbound_networking] block_networks = ["private", "<cidr>", ...]`.
//!
//! Spin's rules kept here so the same file works under `spin up --runtime-config-file`:
//! a relative `path` resolves against the runtime-config file's directory; `type = "spin"`
//! without `path` is an in-memory store; label `default` is a SQLite file at
//! `<app_dir>/.spin/sqlite_key_value.db` unless the file configures it; the env provider
//! (prefix `SPIN_VARIABLE`) is always consulted after the configured providers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::{Table, Value};

use crate::blocked_networks::BlockedNetworks;
use crate::kv::redis::RedisStore;
use crate::kv::sqlite::{IN_MEMORY_PATH, SqliteDb, SqliteStore};
use crate::kv::{KvBackend, KvStores};
use crate::manifest::{ConfigError, Manifest, Walker, validate_store_label};
use crate::variables::parse_dotenv;

/// The label every app has.
pub const DEFAULT_STORE_LABEL: &str = "default";
/// Spin's state directory under the app dir, and the default store's file in it.
pub const DEFAULT_STATE_DIR: &str = ".spin";
/// File name of the default SQLite store.
pub const DEFAULT_SQLITE_FILE: &str = "sqlite_key_value.db";
/// Prefix of the always-present env provider.
pub const DEFAULT_ENV_PREFIX: &str = "SPIN_VARIABLE";

/// Parsed runtime config (defaults when no file is given: label `default` → SQLite at
/// `<app_dir>/.spin/sqlite_key_value.db`, env provider with prefix `SPIN_VARIABLE`).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Key-value stores by label.
    pub key_value_stores: Vec<(String, KvStoreConfig)>,
    /// Variable providers, in order.
    pub variables_providers: Vec<VariablesProvider>,
    /// `[outbound_networking] block_networks`: where outbound HTTP may not connect.
    pub blocked_networks: BlockedNetworks,
}

/// One `[key_value_store.<label>]`. `Debug` hides a Redis URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum KvStoreConfig {
    /// SQLite file (absolute path; [`IN_MEMORY_PATH`] for Spin's path-less in-memory store).
    Spin { path: PathBuf },
    /// Redis server URL.
    Redis { url: String },
}

impl std::fmt::Debug for KvStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvStoreConfig::Spin { path } => f.debug_struct("Spin").field("path", path).finish(),
            KvStoreConfig::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redact_url_password(url))
                .finish(),
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// One `[[variables_provider]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariablesProvider {
    /// Environment variables `<prefix>_<NAME>` (upper-cased), plus an optional dotenv file.
    Env {
        prefix: String,
        dotenv_path: Option<PathBuf>,
    },
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "key_value_store",
    "variables_provider",
    "config_provider",
    "outbound_networking",
];
const UNSUPPORTED_TOP_LEVEL: &[&str] = &[
    "state_dir",
    "log_dir",
    "sqlite_database",
    "llm_compute",
    "client_tls",
    "otel",
];
/// Spin's `[outbound_networking]` connection limits, which this host does not enforce.
const UNSUPPORTED_OUTBOUND_NETWORKING: &[&str] =
    &["max_socket_connections", "max_total_connections"];

impl RuntimeConfig {
    /// Parse `file` (or defaults when `None`), resolving paths against `app_dir`.
    pub fn load(file: Option<&Path>, app_dir: &Path) -> Result<RuntimeConfig, ConfigError> {
        let mut config = match file {
            None => RuntimeConfig {
                key_value_stores: Vec::new(),
                variables_providers: Vec::new(),
                blocked_networks: BlockedNetworks::default(),
            },
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new(&name, "(file)", format!("cannot read: {e}")))?;
                let base = std::path::absolute(path)
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or_else(|| app_dir.to_path_buf());
                RuntimeConfig::parse_str(&name, &text, &base)?
            }
        };
        if !config
            .key_value_stores
            .iter()
            .any(|(label, _)| label == DEFAULT_STORE_LABEL)
        {
            config.key_value_stores.insert(
                0,
                (
                    DEFAULT_STORE_LABEL.to_string(),
                    KvStoreConfig::Spin {
                        path: default_store_path(app_dir),
                    },
                ),
            );
        }
        // Spin always adds the env provider last; its dotenv is `.env` when present.
        let dotenv = app_dir.join(".env");
        config.variables_providers.push(VariablesProvider::Env {
            prefix: DEFAULT_ENV_PREFIX.to_string(),
            dotenv_path: dotenv.is_file().then_some(dotenv),
        });
        Ok(config)
    }

    /// Parse runtime-config text; `file` names it in errors; relative paths resolve
    /// against `base_dir` (the file's directory, as in Spin). Adds no defaults.
    pub fn parse_str(
        file: &str,
        text: &str,
        base_dir: &Path,
    ) -> Result<RuntimeConfig, ConfigError> {
        let w = Walker { file };
        let doc: Table = toml::from_str(text).map_err(|e| w.syntax(text, &e))?;
        w.check_fields(&doc, "", TOP_LEVEL_FIELDS, UNSUPPORTED_TOP_LEVEL)?;
        let mut key_value_stores = Vec::new();
        if let Some(stores) = doc.get("key_value_store") {
            for (label, def) in w.table(stores, "key_value_store")? {
                let field = format!("key_value_store.{label}");
                validate_store_label(label).map_err(|m| w.err(&field, m))?;
                let store = parse_store(&w, &field, w.table(def, &field)?, base_dir)?;
                key_value_stores.push((label.clone(), store));
            }
        }
        let mut variables_providers = Vec::new();
        for key in ["variables_provider", "config_provider"] {
            let Some(list) = doc.get(key) else { continue };
            let Value::Array(list) = list else {
                return Err(w.err(key, format!("expected an array of tables `[[{key}]]`")));
            };
            for (i, def) in list.iter().enumerate() {
                let field = format!("{key}[{i}]");
                let provider = parse_provider(&w, &field, w.table(def, &field)?, base_dir)?;
                variables_providers.push(provider);
            }
        }
        let blocked_networks = match doc.get("outbound_networking") {
            Some(def) => parse_outbound_networking(&w, w.table(def, "outbound_networking")?)?,
            None => BlockedNetworks::default(),
        };
        Ok(RuntimeConfig {
            key_value_stores,
            variables_providers,
            blocked_networks,
        })
    }

    /// Where the default store lives when the runtime config does not configure it.
    pub fn default_store_path(app_dir: &Path) -> PathBuf {
        default_store_path(app_dir)
    }

    /// The configuration of `label`, if any.
    pub fn store(&self, label: &str) -> Option<&KvStoreConfig> {
        self.key_value_stores
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c)
    }

    /// Replace (or add) the store of `label` — the library API points `default` at a
    /// temporary file or a Redis URL this way.
    pub fn set_store(&mut self, label: &str, config: KvStoreConfig) {
        match self.key_value_stores.iter_mut().find(|(l, _)| l == label) {
            Some(slot) => slot.1 = config,
            None => self.key_value_stores.push((label.to_string(), config)),
        }
    }

    /// Name used for this config in errors raised after loading.
    pub fn file_name(&self) -> String {
        "runtime config".to_string()
    }

    /// Check every label the manifest's components use is configured (label `default`
    /// always is); error names `component.<id>.key_value_stores`.
    pub fn validate_against(&self, manifest: &Manifest) -> Result<(), ConfigError> {
        for component in manifest.components.values() {
            for label in &component.key_value_stores {
                if label == DEFAULT_STORE_LABEL || self.store(label).is_some() {
                    continue;
                }
                return Err(ConfigError::new(
                    &manifest.file_name(),
                    format!("component.{}.key_value_stores", component.id),
                    format!(
                        "key-value store label {label:?} is not configured; add \
                         `[key_value_store.{label}]` (type = \"spin\" or \"redis\") to the \
                         runtime config and pass it with --runtime-config-file"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Open every configured store (SQLite: create dir + file, WAL, Spin's schema; Redis:
    /// connect with a bounded pool and PING). Labels sharing a file share its connections.
    pub async fn open_stores(&self) -> anyhow::Result<KvStores> {
        let mut stores = KvStores::default();
        let mut files: BTreeMap<PathBuf, Arc<SqliteDb>> = BTreeMap::new();
        let mut servers: BTreeMap<String, Arc<RedisStore>> = BTreeMap::new();
        for (label, config) in &self.key_value_stores {
            let backend: Arc<dyn KvBackend> = match config {
                KvStoreConfig::Spin { path } => {
                    let in_memory = path.as_os_str() == IN_MEMORY_PATH;
                    let db = match files.get(path) {
                        Some(db) if !in_memory => db.clone(),
                        _ => {
                            let opened = path.clone();
                            let db = tokio::task::spawn_blocking(move || SqliteDb::open(&opened))
                                .await?
                                .map_err(|e| anyhow::anyhow!("key-value store {label:?}: {e}"))?;
                            files.insert(path.clone(), db.clone());
                            db
                        }
                    };
                    Arc::new(SqliteStore::new(db, label))
                }
                KvStoreConfig::Redis { url } => match servers.get(url) {
                    Some(store) => store.clone(),
                    None => {
                        let store = Arc::new(
                            RedisStore::open(url)
                                .await
                                .map_err(|e| anyhow::anyhow!("key-value store {label:?}: {e}"))?,
                        );
                        servers.insert(url.clone(), store.clone());
                        store
                    }
                },
            };
            stores.insert(label, backend);
        }
        Ok(stores)
    }
}

fn default_store_path(app_dir: &Path) -> PathBuf {
    app_dir.join(DEFAULT_STATE_DIR).join(DEFAULT_SQLITE_FILE)
}

fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn parse_store(
    w: &Walker<'_>,
    field: &str,
    def: &Table,
    base_dir: &Path,
) -> Result<KvStoreConfig, ConfigError> {
    let kind = w.string(w.required(def, field, "type")?, &format!("{field}.type"))?;
    match kind {
        "spin" => {
            w.check_fields(def, field, &["type", "path"], &[])?;
            let path = match def.get("path") {
                Some(v) => {
                    let raw = w.string(v, &format!("{field}.path"))?;
                    if raw.is_empty() {
                        return Err(w.err(format!("{field}.path"), "must not be empty"));
                    }
                    resolve_path(base_dir, raw)
                }
                None => PathBuf::from(IN_MEMORY_PATH),
            };
            Ok(KvStoreConfig::Spin { path })
        }
        "redis" => {
            w.check_fields(def, field, &["type", "url"], &[])?;
            let url_field = format!("{field}.url");
            let url = w.string(w.required(def, field, "url")?, &url_field)?;
            let parsed = url::Url::parse(url)
                .map_err(|e| w.err(&url_field, format!("not a valid URL: {e}")))?;
            if parsed.scheme() != "redis" {
                return Err(w.err(
                    &url_field,
                    format!(
                        "scheme {:?} is not supported; use redis://host:port",
                        parsed.scheme()
                    ),
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(w.err(&url_field, "the URL has no host"));
            }
            Ok(KvStoreConfig::Redis {
                url: url.to_string(),
            })
        }
        other => Err(w.err(
            format!("{field}.type"),
            format!("unknown key-value store type {other:?}; expected \"spin\" or \"redis\""),
        )),
    }
}

fn parse_outbound_networking(w: &Walker<'_>, def: &Table) -> Result<BlockedNetworks, ConfigError> {
    let field = "outbound_networking";
    w.check_fields(
        def,
        field,
        &["block_networks"],
        UNSUPPORTED_OUTBOUND_NETWORKING,
    )?;
    let Some(list) = def.get("block_networks") else {
        return Ok(BlockedNetworks::default());
    };
    let field = "outbound_networking.block_networks";
    let Value::Array(list) = list else {
        return Err(w.err(field, "expected an array of strings"));
    };
    let mut blocked = BlockedNetworks::default();
    for (i, entry) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let entry = w.string(entry, &field)?;
        blocked.add(entry).map_err(|m| w.err(&field, m))?;
    }
    Ok(blocked)
}

fn parse_provider(
    w: &Walker<'_>,
    field: &str,
    def: &Table,
    base_dir: &Path,
) -> Result<VariablesProvider, ConfigError> {
    let kind = w.string(w.required(def, field, "type")?, &format!("{field}.type"))?;
    if kind != "env" {
        return Err(w.err(
            format!("{field}.type"),
            format!("variables provider type {kind:?} is not supported; expected \"env\""),
        ));
    }
    w.check_fields(def, field, &["type", "prefix", "dotenv_path"], &[])?;
    let prefix = match def.get("prefix") {
        Some(v) => w.string(v, &format!("{field}.prefix"))?.to_string(),
        None => DEFAULT_ENV_PREFIX.to_string(),
    };
    let dotenv_path = match def.get("dotenv_path") {
        Some(v) => {
            let dotenv_field = format!("{field}.dotenv_path");
            let path = resolve_path(base_dir, w.string(v, &dotenv_field)?);
            // Read it now so a missing or malformed file is reported against this field.
            let text = std::fs::read_to_string(&path).map_err(|e| {
                w.err(
                    &dotenv_field,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            parse_dotenv(&text).map_err(|m| w.err(&dotenv_field, m))?;
            Some(path)
        }
        None => None,
    };
    Ok(VariablesProvider::Env {
        prefix,
        dotenv_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_never_appear_in_debug_output() {
        // Proves KvStoreConfig's Debug masks the password of a Redis URL.
        let c = KvStoreConfig::Redis {
            url: "redis://app:hunter2@cache:6379/0".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn without_a_file_the_default_store_is_spins_sqlite_file() {
        // Proves the defaults: label default at <app>/.spin/sqlite_key_value.db, env provider last.
        let rc = RuntimeConfig::load(None, Path::new("/app")).unwrap();
        assert_eq!(
            rc.store("default"),
            Some(&KvStoreConfig::Spin {
                path: PathBuf::from("/app/.spin/sqlite_key_value.db")
            })
        );
        assert!(matches!(
            rc.variables_providers.last(),
            Some(VariablesProvider::Env { prefix, .. }) if prefix == "SPIN_VARIABLE"
        ));
    }

    #[test]
    fn spin_and_redis_stores_parse_with_paths_relative_to_the_file() {
        // Proves both store types parse, relative paths join the file's dir, no path = memory.
        let text = r#"
[key_value_store.default]
type = "redis"
url = "redis://127.0.0.1:6379"
[key_value_store.cache]
type = "spin"
path = "data/cache.db"
[key_value_store.scratch]
type = "spin"
[[variables_provider]]
type = "env"
prefix = "PAY"
"#;
        let rc = RuntimeConfig::parse_str("rc.toml", text, Path::new("/etc/app")).unwrap();
        assert_eq!(
            rc.store("default"),
            Some(&KvStoreConfig::Redis {
                url: "redis://127.0.0.1:6379".into()
            })
        );
        assert_eq!(
            rc.store("cache"),
            Some(&KvStoreConfig::Spin {
                path: PathBuf::from("/etc/app/data/cache.db")
            })
        );
        assert_eq!(
            rc.store("scratch"),
            Some(&KvStoreConfig::Spin {
                path: PathBuf::from(IN_MEMORY_PATH)
            })
        );
        assert_eq!(
            rc.variables_providers,
            vec![VariablesProvider::Env {
                prefix: "PAY".into(),
                dotenv_path: None
            }]
        );
    }
}
