//! `spin.toml` (manifest version 2): parsing and validation.
//!
//! The manifest is walked as a TOML table rather than deserialised with serde so that every
//! mistake names its exact dotted field (`component.authorize.key_value_stores[1]`), the
//! way an operator reads it. Like Spin, unknown fields are errors (a typo must not silently
//! drop a capability); Spin fields this host does not implement (SQLite databases, AI
//! models, component dependencies, ...) are errors that say so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::outbound;
use crate::routes::Router;
use crate::variables::Template;

/// A configuration mistake: one line naming the file and the field (and one more line
/// for each mistake of the same kind found with it, [`ConfigError::also`]).
/// Display: `spin.toml: component.authorize.source: file target/x.wasm not found; run \`cargo build ...\``
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}{}", more_lines(.also))]
pub struct ConfigError {
    /// File the mistake is in (as given by the user).
    pub file: String,
    /// Dotted path of the field, e.g. `component.authorize.key_value_stores`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Further mistakes found in the same check (every missing variable, every
    /// component not built), so one run reports them all.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    /// Build an error for `file`, `field`.
    pub fn new(file: &str, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            field: field.into(),
            message: message.into(),
            also: Vec::new(),
        }
    }

    /// `Err` of the first of `errors` carrying the rest, or `Ok` when there are none.
    pub fn all(errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(first) => Err(ConfigError {
                also: errors.collect(),
                ..first
            }),
        }
    }
}

/// One line per further mistake.
fn more_lines(also: &[ConfigError]) -> String {
    also.iter().map(|e| format!("\n{e}")).collect()
}

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file, as the user named it (errors quote it).
    pub path: PathBuf,
    /// Directory containing the manifest (absolute); relative paths resolve against it.
    pub app_dir: PathBuf,
    /// `[application] name`.
    pub name: String,
    /// `[variables]`.
    pub variables: BTreeMap<String, AppVariable>,
    /// `[[trigger.http]]` in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[component.<id>]` by id.
    pub components: BTreeMap<String, ComponentConfig>,
    /// `[application.trigger.http] base` (default `/`).
    pub http_base: String,
}

/// One application variable.
#[derive(Clone, PartialEq, Eq)]
pub struct AppVariable {
    /// Default value, when not required.
    pub default: Option<String>,
    /// Must be supplied by a provider.
    pub required: bool,
    /// Never logged.
    pub secret: bool,
}

impl std::fmt::Debug for AppVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let default = match (&self.default, self.secret) {
            (Some(_), true) => Some("***"),
            (Some(v), false) => Some(v.as_str()),
            (None, _) => None,
        };
        f.debug_struct("AppVariable")
            .field("default", &default)
            .field("required", &self.required)
            .field("secret", &self.secret)
            .finish()
    }
}

/// `route = "/path"` or `route = { private = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSpec {
    /// A public route pattern (`/exact`, `/:name/x`, `/prefix/...`).
    Path(String),
    /// Reachable only through service chaining.
    Private,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// Its route.
    pub route: RouteSpec,
    /// Component id it invokes.
    pub component: String,
}

/// One `[component.<id>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentConfig {
    /// Component id.
    pub id: String,
    /// Absolute path of the `.wasm` (`source` resolved against `app_dir`).
    pub source: PathBuf,
    /// `allowed_outbound_hosts`, raw (templates unresolved).
    pub allowed_outbound_hosts: Vec<String>,
    /// `key_value_stores` labels.
    pub key_value_stores: Vec<String>,
    /// `[component.<id>.variables]`, raw templates.
    pub variables: BTreeMap<String, String>,
    /// `environment` for WASI.
    pub environment: BTreeMap<String, String>,
    /// `[component.<id>.build]`.
    pub build: Option<BuildConfig>,
}

/// `[component.<id>.build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// Shell command (several `command = [..]` entries are joined with ` && `).
    pub command: String,
    /// Working directory (absolute), default `app_dir`.
    pub workdir: PathBuf,
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "spin_manifest_version",
    "application",
    "variables",
    "trigger",
    "component",
];
const APPLICATION_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "authors",
    "trigger",
    "tool",
];
const VARIABLE_FIELDS: &[&str] = &["description", "required", "default", "secret"];
const HTTP_TRIGGER_FIELDS: &[&str] = &["route", "component", "id", "executor"];
const COMPONENT_FIELDS: &[&str] = &[
    "source",
    "description",
    "variables",
    "environment",
    "files",
    "exclude_files",
    "allowed_outbound_hosts",
    "key_value_stores",
    "build",
    "tool",
];
/// Spin component fields this host does not implement: named as such, not as typos.
const UNSUPPORTED_COMPONENT_FIELDS: &[&str] = &[
    "allowed_http_hosts",
    "sqlite_databases",
    "ai_models",
    "targets",
    "dependencies",
    "dependencies_inherit_configuration",
    "profile",
];
const BUILD_FIELDS: &[&str] = &["command", "workdir", "watch"];

impl Manifest {
    /// Parse and validate (routes, variable references, templates). Does NOT check that
    /// `.wasm` files exist (see [`Manifest::check_sources`]), so `--build` can run first.
    pub fn load(path: &Path) -> Result<Manifest, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&file, "(file)", format!("cannot read: {e}")))?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let app_dir = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Manifest::parse_str(&file, &text, &app_dir).map(|mut m| {
            m.path = path.to_path_buf();
            m
        })
    }

    /// Parse and validate manifest text; `file` names it in errors, relative paths resolve
    /// against `app_dir`.
    pub fn parse_str(file: &str, text: &str, app_dir: &Path) -> Result<Manifest, ConfigError> {
        let w = Walker { file };
        let doc: Table = toml::from_str(text).map_err(|e| w.syntax(text, &e))?;
        w.check_fields(&doc, "", TOP_LEVEL_FIELDS, &[])?;
        check_version(&w, &doc)?;

        let app = w.table(w.required(&doc, "", "application")?, "application")?;
        w.check_fields(app, "application", APPLICATION_FIELDS, &[])?;
        let name = w.string(w.required(app, "application", "name")?, "application.name")?;
        for key in ["version", "description"] {
            if let Some(v) = app.get(key) {
                w.string(v, &format!("application.{key}"))?;
            }
        }
        if let Some(v) = app.get("authors") {
            w.strings(v, "application.authors")?;
        }
        let http_base = parse_app_trigger(&w, app)?;

        let variables = parse_variables(&w, &doc)?;
        let components = parse_components(&w, &doc, app_dir, &variables)?;
        let http_triggers = parse_triggers(&w, &doc, &components)?;
        Router::build_with_base(file, &http_base, &http_triggers)?;

        Ok(Manifest {
            path: app_dir.join("spin.toml"),
            app_dir: app_dir.to_path_buf(),
            name: name.to_string(),
            variables,
            http_triggers,
            components,
            http_base,
        })
    }

    /// The manifest file as the user named it, for [`ConfigError::file`].
    pub fn file_name(&self) -> String {
        self.path.display().to_string()
    }

    /// The routing table of the HTTP triggers.
    pub fn router(&self) -> Result<Router, ConfigError> {
        Router::build_with_base(&self.file_name(), &self.http_base, &self.http_triggers)
    }

    /// Every component's `.wasm` exists; otherwise an error naming the build command.
    pub fn check_sources(&self) -> Result<(), ConfigError> {
        let mut missing = Vec::new();
        for component in self.components.values() {
            if component.source.is_file() {
                continue;
            }
            let shown = component
                .source
                .strip_prefix(&self.app_dir)
                .unwrap_or(&component.source)
                .display()
                .to_string();
            let how = match &component.build {
                Some(build) => {
                    let dir = match build.workdir.strip_prefix(&self.app_dir) {
                        Ok(rel) if rel.as_os_str().is_empty() => String::new(),
                        Ok(rel) => format!(" in {}", rel.display()),
                        Err(_) => format!(" in {}", build.workdir.display()),
                    };
                    format!(
                        "build it with `{}`{dir}, or run `spinpay-host up --build`",
                        build.command
                    )
                }
                None => format!(
                    "build the component first (component.{}.build declares no command)",
                    component.id
                ),
            };
            missing.push(ConfigError::new(
                &self.file_name(),
                format!("component.{}.source", component.id),
                format!("file {shown} not found; {how}"),
            ));
        }
        ConfigError::all(missing)
    }
}

fn check_version(w: &Walker<'_>, doc: &Table) -> Result<(), ConfigError> {
    let field = "spin_manifest_version";
    match w.required(doc, "", field)? {
        Value::Integer(2) => Ok(()),
        Value::String(s) if s == "1" => Err(w.err(
            field,
            "manifest version 1 is not supported; use version 2 (`spin doctor` converts it)",
        )),
        other => Err(w.err(field, format!("expected 2, found {other}"))),
    }
}

/// `[application.trigger.http] base = "/"`.
fn parse_app_trigger(w: &Walker<'_>, app: &Table) -> Result<String, ConfigError> {
    let Some(triggers) = app.get("trigger") else {
        return Ok("/".to_string());
    };
    let triggers = w.table(triggers, "application.trigger")?;
    w.check_fields(triggers, "application.trigger", &["http"], &[])?;
    let Some(http) = triggers.get("http") else {
        return Ok("/".to_string());
    };
    let http = w.table(http, "application.trigger.http")?;
    w.check_fields(http, "application.trigger.http", &["base"], &[])?;
    match http.get("base") {
        None => Ok("/".to_string()),
        Some(v) => {
            let base = w.string(v, "application.trigger.http.base")?;
            if !base.starts_with('/') {
                return Err(w.err(
                    "application.trigger.http.base",
                    format!("{base:?} must start with '/'"),
                ));
            }
            Ok(base.to_string())
        }
    }
}

fn parse_variables(
    w: &Walker<'_>,
    doc: &Table,
) -> Result<BTreeMap<String, AppVariable>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(vars) = doc.get("variables") else {
        return Ok(out);
    };
    for (name, def) in w.table(vars, "variables")? {
        let field = format!("variables.{name}");
        validate_variable_name(name).map_err(|m| w.err(&field, m))?;
        let def = w.table(def, &field)?;
        w.check_fields(def, &field, VARIABLE_FIELDS, &[])?;
        let flag = |key: &str| -> Result<bool, ConfigError> {
            def.get(key)
                .map(|v| w.boolean(v, &format!("{field}.{key}")))
                .transpose()
                .map(|b| b.unwrap_or(false))
        };
        let required = flag("required")?;
        let secret = flag("secret")?;
        if let Some(v) = def.get("description") {
            w.string(v, &format!("{field}.description"))?;
        }
        let default = def
            .get("default")
            .map(|v| w.string(v, &format!("{field}.default")).map(str::to_string))
            .transpose()?;
        // Spin: a variable is either `required = true` or has a `default`, never both.
        match (required, default.is_some()) {
            (true, true) => {
                return Err(w.err(
                    &field,
                    "`required = true` and `default` are mutually exclusive; remove one",
                ));
            }
            (false, false) => {
                return Err(w.err(
                    &field,
                    "must be `required = true` or have a `default` value",
                ));
            }
            (true, false) | (false, true) => {}
        }
        out.insert(
            name.clone(),
            AppVariable {
                default,
                required,
                secret,
            },
        );
    }
    Ok(out)
}

fn parse_components(
    w: &Walker<'_>,
    doc: &Table,
    app_dir: &Path,
    variables: &BTreeMap<String, AppVariable>,
) -> Result<BTreeMap<String, ComponentConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(components) = doc.get("component") else {
        return Ok(out);
    };
    for (id, def) in w.table(components, "component")? {
        let field = format!("component.{id}");
        validate_component_id(id).map_err(|m| w.err(&field, m))?;
        let def = w.table(def, &field)?;
        let component = parse_component(w, id, def, app_dir, variables)?;
        out.insert(id.clone(), component);
    }
    Ok(out)
}

fn parse_component(
    w: &Walker<'_>,
    id: &str,
    def: &Table,
    app_dir: &Path,
    variables: &BTreeMap<String, AppVariable>,
) -> Result<ComponentConfig, ConfigError> {
    let field = format!("component.{id}");
    w.check_fields(def, &field, COMPONENT_FIELDS, UNSUPPORTED_COMPONENT_FIELDS)?;
    let source_field = format!("{field}.source");
    let source = match w.required(def, &field, "source")? {
        Value::String(s) if !s.is_empty() => app_dir.join(s),
        Value::Table(_) => {
            return Err(w.err(
                &source_field,
                "only a local file path is supported (not a URL or registry package)",
            ));
        }
        other => {
            return Err(w.err(
                &source_field,
                format!("expected a file path, found {other}"),
            ));
        }
    };
    if let Some(v) = def.get("description") {
        w.string(v, &format!("{field}.description"))?;
    }
    for key in ["files", "exclude_files"] {
        if let Some(v) = def.get(key) {
            w.array(v, &format!("{field}.{key}"))?;
        }
    }
    if let Some(v) = def.get("tool") {
        w.table(v, &format!("{field}.tool"))?;
    }

    let allowed_outbound_hosts = match def.get("allowed_outbound_hosts") {
        Some(v) => w.strings(v, &format!("{field}.allowed_outbound_hosts"))?,
        None => Vec::new(),
    };
    for (i, entry) in allowed_outbound_hosts.iter().enumerate() {
        let entry_field = format!("{field}.allowed_outbound_hosts[{i}]");
        outbound::validate_entry(entry, &|name| variables.contains_key(name))
            .map_err(|m| w.err(&entry_field, m))?;
    }

    let key_value_stores = match def.get("key_value_stores") {
        Some(v) => w.strings(v, &format!("{field}.key_value_stores"))?,
        None => Vec::new(),
    };
    for (i, label) in key_value_stores.iter().enumerate() {
        validate_store_label(label)
            .map_err(|m| w.err(format!("{field}.key_value_stores[{i}]"), m))?;
    }

    let component_vars = parse_component_variables(w, &field, def, variables)?;
    let environment = match def.get("environment") {
        Some(v) => w.string_map(v, &format!("{field}.environment"))?,
        None => BTreeMap::new(),
    };
    let build = match def.get("build") {
        Some(v) => Some(parse_build(w, &field, v, app_dir)?),
        None => None,
    };
    Ok(ComponentConfig {
        id: id.to_string(),
        source,
        allowed_outbound_hosts,
        key_value_stores,
        variables: component_vars,
        environment,
        build,
    })
}

fn parse_component_variables(
    w: &Walker<'_>,
    component_field: &str,
    def: &Table,
    variables: &BTreeMap<String, AppVariable>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(v) = def.get("variables") else {
        return Ok(out);
    };
    for (name, value) in w.table(v, &format!("{component_field}.variables"))? {
        let field = format!("{component_field}.variables.{name}");
        validate_variable_name(name).map_err(|m| w.err(&field, m))?;
        let raw = w.string(value, &field)?;
        let template = Template::parse(raw).map_err(|m| w.err(&field, m))?;
        for reference in template.references() {
            if !variables.contains_key(reference) {
                return Err(w.err(
                    &field,
                    format!(
                        "template refers to unknown variable {reference:?}; declare it under \
                         [variables]"
                    ),
                ));
            }
        }
        out.insert(name.clone(), raw.to_string());
    }
    Ok(out)
}

fn parse_build(
    w: &Walker<'_>,
    component_field: &str,
    v: &Value,
    app_dir: &Path,
) -> Result<BuildConfig, ConfigError> {
    let field = format!("{component_field}.build");
    let build = w.table(v, &field)?;
    w.check_fields(build, &field, BUILD_FIELDS, &[])?;
    let command_field = format!("{field}.command");
    let command = match w.required(build, &field, "command")? {
        Value::String(s) => s.clone(),
        v @ Value::Array(_) => w.strings(v, &command_field)?.join(" && "),
        other => {
            return Err(w.err(
                &command_field,
                format!("expected a string or an array of strings, found {other}"),
            ));
        }
    };
    if command.trim().is_empty() {
        return Err(w.err(&command_field, "must not be empty"));
    }
    let workdir = match build.get("workdir") {
        Some(v) => app_dir.join(w.string(v, &format!("{field}.workdir"))?),
        None => app_dir.to_path_buf(),
    };
    if let Some(v) = build.get("watch") {
        w.strings(v, &format!("{field}.watch"))?;
    }
    Ok(BuildConfig { command, workdir })
}

fn parse_triggers(
    w: &Walker<'_>,
    doc: &Table,
    components: &BTreeMap<String, ComponentConfig>,
) -> Result<Vec<HttpTrigger>, ConfigError> {
    let triggers = w.table(w.required(doc, "", "trigger")?, "trigger")?;
    for kind in triggers.keys() {
        if kind != "http" {
            return Err(w.err(
                format!("trigger.{kind}"),
                "only HTTP triggers (`[[trigger.http]]`) are supported by spinpay-host",
            ));
        }
    }
    let Some(http) = triggers.get("http") else {
        return Err(w.err("trigger.http", "no `[[trigger.http]]` declared"));
    };
    let Value::Array(entries) = http else {
        return Err(w.err(
            "trigger.http",
            "expected an array of tables `[[trigger.http]]`",
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("trigger.http[{i}]");
        let entry = w.table(entry, &field)?;
        w.check_fields(entry, &field, HTTP_TRIGGER_FIELDS, &[])?;
        if let Some(v) = entry.get("id") {
            w.string(v, &format!("{field}.id"))?;
        }
        if let Some(v) = entry.get("executor") {
            parse_executor(w, &field, v)?;
        }
        let route = parse_route(w, &field, w.required(entry, &field, "route")?)?;
        let component_field = format!("{field}.component");
        let component = match w.required(entry, &field, "component")? {
            Value::String(s) => s.clone(),
            Value::Table(_) => {
                return Err(w.err(
                    &component_field,
                    "inline components are not supported; declare [component.<id>] and \
                     reference it by id",
                ));
            }
            other => {
                return Err(w.err(
                    &component_field,
                    format!("expected a component id, found {other}"),
                ));
            }
        };
        if !components.contains_key(&component) {
            let known: Vec<&str> = components.keys().map(String::as_str).collect();
            return Err(w.err(
                &component_field,
                format!(
                    "no component {component:?} (declared: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        out.push(HttpTrigger { route, component });
    }
    Ok(out)
}

fn parse_route(w: &Walker<'_>, field: &str, v: &Value) -> Result<RouteSpec, ConfigError> {
    let route_field = format!("{field}.route");
    match v {
        Value::String(s) => Ok(RouteSpec::Path(s.clone())),
        Value::Table(t) => {
            w.check_fields(t, &route_field, &["private"], &[])?;
            let private = w.boolean(
                w.required(t, &route_field, "private")?,
                &format!("{route_field}.private"),
            )?;
            if private {
                Ok(RouteSpec::Private)
            } else {
                Err(w.err(
                    &route_field,
                    "route must be a string pattern or `{ private = true }`",
                ))
            }
        }
        other => Err(w.err(
            &route_field,
            format!("expected a route string or `{{ private = true }}`, found {other}"),
        )),
    }
}

fn parse_executor(w: &Walker<'_>, field: &str, v: &Value) -> Result<(), ConfigError> {
    let field = format!("{field}.executor");
    let t = w.table(v, &field)?;
    w.check_fields(t, &field, &["type"], &[])?;
    let kind = w.string(w.required(t, &field, "type")?, &format!("{field}.type"))?;
    if kind != "spin" {
        return Err(w.err(
            format!("{field}.type"),
            format!("executor {kind:?} is not supported; only \"spin\" (the default)"),
        ));
    }
    Ok(())
}

/// Spin's variable names (`LowerSnakeId` and its expression `Key` rules): lowercase ASCII
/// words separated by single underscores, each word starting with a letter.
pub fn validate_variable_name(name: &str) -> Result<(), String> {
    validate_id(name, '_', "variable names").map_err(|m| {
        format!("invalid variable name {name:?}: {m} (e.g. `api_key`, `channel_url2`)")
    })
}

/// Spin's component ids, lower-case kebab: `risk-check`, `authorize`.
pub fn validate_component_id(id: &str) -> Result<(), String> {
    validate_id(id, '-', "component ids")
        .map_err(|m| format!("invalid component id {id:?}: {m} (e.g. `risk-check`)"))
}

/// Key-value store labels: lower-case kebab or snake words (`default`, `rate-limits`).
pub fn validate_store_label(label: &str) -> Result<(), String> {
    let delim = if label.contains('_') { '_' } else { '-' };
    validate_id(label, delim, "store labels")
        .map_err(|m| format!("invalid store label {label:?}: {m}"))
}

fn validate_id(id: &str, delim: char, what: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    let wrong = if delim == '_' { '-' } else { '_' };
    if id.contains(wrong) {
        return Err(format!(
            "{what} separate words with {delim:?}, not {wrong:?}"
        ));
    }
    for word in id.split(delim) {
        let mut chars = word.chars();
        match chars.next() {
            None => return Err(format!("{delim:?}-separated words must not be empty")),
            Some(c) if c.is_ascii_lowercase() => {}
            Some(c) => {
                return Err(format!(
                    "each word must start with a lowercase ASCII letter; got {c:?}"
                ));
            }
        }
        if let Some(c) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit())) {
            return Err(format!(
                "only lowercase ASCII letters and digits are allowed in words; got {c:?}"
            ));
        }
    }
    Ok(())
}

/// Typed access to a TOML table, every failure a [`ConfigError`] naming the field.
pub(crate) struct Walker<'a> {
    pub(crate) file: &'a str,
}

impl Walker<'_> {
    pub(crate) fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, field, message)
    }

    /// A TOML syntax error, located by line and column.
    pub(crate) fn syntax(&self, text: &str, e: &toml::de::Error) -> ConfigError {
        let field = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line} column {column}")
            }
            None => "(toml)".to_string(),
        };
        self.err(field, format!("invalid TOML: {}", e.message().trim()))
    }

    fn join(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    }

    /// Reject keys outside `allowed`; keys in `unsupported` get a "not supported" message.
    pub(crate) fn check_fields(
        &self,
        t: &Table,
        prefix: &str,
        allowed: &[&str],
        unsupported: &[&str],
    ) -> Result<(), ConfigError> {
        for key in t.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let field = Self::join(prefix, key);
            if unsupported.contains(&key.as_str()) {
                return Err(self.err(field, "this Spin field is not supported by spinpay-host"));
            }
            return Err(self.err(
                field,
                format!(
                    "unknown field `{key}`; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn required<'t>(
        &self,
        t: &'t Table,
        prefix: &str,
        key: &str,
    ) -> Result<&'t Value, ConfigError> {
        t.get(key)
            .ok_or_else(|| self.err(Self::join(prefix, key), "missing required field"))
    }

    pub(crate) fn table<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Table, ConfigError> {
        match v {
            Value::Table(t) => Ok(t),
            other => Err(self.err(
                field,
                format!("expected a table, found {}", other.type_str()),
            )),
        }
    }

    pub(crate) fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str, ConfigError> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(self.err(
                field,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    pub(crate) fn boolean(&self, v: &Value, field: &str) -> Result<bool, ConfigError> {
        match v {
            Value::Boolean(b) => Ok(*b),
            other => Err(self.err(
                field,
                format!("expected true or false, found {}", other.type_str()),
            )),
        }
    }

    fn array<'v>(&self, v: &'v Value, field: &str) -> Result<&'v [Value], ConfigError> {
        match v {
            Value::Array(a) => Ok(a),
            other => Err(self.err(
                field,
                format!("expected an array, found {}", other.type_str()),
            )),
        }
    }

    pub(crate) fn strings(&self, v: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
        self.array(v, field)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                self.string(item, &format!("{field}[{i}]"))
                    .map(str::to_string)
            })
            .collect()
    }

    fn string_map(&self, v: &Value, field: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        self.table(v, field)?
            .iter()
            .map(|(k, v)| {
                self.string(v, &format!("{field}.{k}"))
                    .map(|s| (k.clone(), s.to_string()))
            })
            .collect()
    }
}

/// Labels every component of `manifest` uses, with the first component using each.
pub fn used_store_labels(manifest: &Manifest) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for c in manifest.components.values() {
        for label in &c.key_value_stores {
            out.insert((label.clone(), c.id.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
"#;

    #[test]
    fn a_minimal_manifest_parses_with_defaults() {
        // Proves a manifest with one component and route parses, with base "/" and app_dir joins.
        let m = Manifest::parse_str("spin.toml", MINIMAL, Path::new("/app")).unwrap();
        assert_eq!(m.name, "app");
        assert_eq!(m.http_base, "/");
        assert_eq!(m.components["web"].source, PathBuf::from("/app/web.wasm"));
        assert_eq!(m.http_triggers[0].route, RouteSpec::Path("/...".into()));
    }

    #[test]
    fn component_ids_must_be_lowercase_kebab() {
        // Proves ids with underscores, capitals or a leading digit are rejected and valid ones pass.
        assert!(validate_component_id("risk-check").is_ok());
        assert!(validate_component_id("v2-api").is_ok());
        assert!(validate_component_id("risk_check").is_err());
        assert!(validate_component_id("Risk").is_err());
        assert!(validate_component_id("1api").is_err());
        assert!(validate_component_id("a--b").is_err());
    }

    #[test]
    fn variable_names_follow_spins_rules() {
        // Proves Spin's lower-snake variable rule: letters first in each word, no dashes.
        assert!(validate_variable_name("api_key").is_ok());
        assert!(validate_variable_name("channel_url2").is_ok());
        assert!(validate_variable_name("api-key").is_err());
        assert!(validate_variable_name("_x").is_err());
        assert!(validate_variable_name("x__y").is_err());
        assert!(validate_variable_name("Key").is_err());
    }

    #[test]
    fn secret_defaults_are_masked_in_debug_output() {
        // Proves AppVariable's Debug never prints a secret default.
        let v = AppVariable {
            default: Some("hunter2".into()),
            required: false,
            secret: true,
        };
        let shown = format!("{v:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }
}
