//! Application and component variables: `[variables]`, `[component.x.variables]` templates
//! (`"{{ name }}"`, literal text around them), providers (env `SPIN_VARIABLE_<NAME>`,
//! dotenv). Secrets never reach logs.
//!
//! Semantics follow Spin: a guest's `variables::get(name)` sees only the variables its
//! component declares (each a template over app variables); app variables resolve from
//! the providers in order, then their `default`. Everything is resolved once at start-up,
//! so a missing required variable stops the host before it binds.

use std::collections::BTreeMap;
use std::path::Path;

use crate::manifest::{ConfigError, Manifest, validate_variable_name};
use crate::runtime_config::{RuntimeConfig, VariablesProvider};

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A `"prefix-{{ name }}-suffix"` template (Spin's expression syntax: `{{ }}` around a
/// variable name, any literal text around it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parse; an unclosed `{{` or a bad variable name is an error message.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("{{") {
                let Some((expr, tail)) = after.split_once("}}") else {
                    return Err(format!("unmatched '{{{{' in template {text:?}"));
                };
                let name = expr.trim();
                validate_variable_name(name).map_err(|m| format!("in template {text:?}: {m}"))?;
                parts.push(Part::Variable(name.to_string()));
                rest = tail;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Literal(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        Ok(Template { parts })
    }

    /// Whether the template contains no `{{ }}` expression.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Variable names referred to, in order.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Substitute every variable; the first unknown one is returned as the error.
    pub fn render(&self, resolve: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Variable(v) => match resolve(v) {
                    Some(value) => out.push_str(&value),
                    None => return Err(v.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// A value that must not be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
struct Value {
    text: String,
    secret: bool,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret {
            f.write_str("***")
        } else {
            write!(f, "{:?}", self.text)
        }
    }
}

/// Every variable resolved at start-up.
#[derive(Debug, Clone)]
pub struct ResolvedVariables {
    app: BTreeMap<String, Value>,
    /// component id → variable name → value.
    components: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Why a guest's `variables::get` failed (maps to `spin:variables` errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableError {
    /// Name not a valid variable name (lowercase letters, digits, underscores).
    InvalidName(String),
    /// Not defined for this component.
    Undefined(String),
}

/// The environment variable the env provider reads for `name`: `<PREFIX>_<NAME>`.
pub fn env_var_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_ascii_uppercase()
    } else {
        format!("{prefix}_{}", name.to_ascii_uppercase())
    }
}

/// A provider ready to answer: the process environment plus its dotenv file.
struct LoadedProvider {
    prefix: String,
    dotenv: BTreeMap<String, String>,
}

impl LoadedProvider {
    fn get(&self, name: &str) -> Option<String> {
        let key = env_var_name(&self.prefix, name);
        std::env::var(&key)
            .ok()
            .or_else(|| self.dotenv.get(&key).cloned())
    }
}

impl ResolvedVariables {
    /// Resolve app variables from providers (first provider that has it wins, then the
    /// default); a missing required variable is a [`ConfigError`] naming `variables.<name>`
    /// and the env var to set. Component templates referring to unknown variables too.
    /// `overrides` (name → value) win over every provider: the library API uses them so
    /// tests need not touch the process environment.
    pub fn resolve(
        manifest: &Manifest,
        runtime: &RuntimeConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<ResolvedVariables, ConfigError> {
        let file = manifest.file_name();
        for name in overrides.keys() {
            if !manifest.variables.contains_key(name) {
                return Err(ConfigError::new(
                    &file,
                    format!("variables.{name}"),
                    "a value was supplied for a variable the manifest does not declare",
                ));
            }
        }
        let providers = load_providers(runtime)?;
        let env_names = |name: &str| -> String {
            let mut names: Vec<String> = Vec::new();
            for p in &providers {
                let n = env_var_name(&p.prefix, name);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            if names.is_empty() {
                names.push(env_var_name(
                    crate::runtime_config::DEFAULT_ENV_PREFIX,
                    name,
                ));
            }
            names.join(" or ")
        };

        let mut app = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, var) in &manifest.variables {
            let found = overrides
                .get(name)
                .cloned()
                .or_else(|| providers.iter().find_map(|p| p.get(name)))
                .or_else(|| var.default.clone());
            let Some(text) = found else {
                missing.push(ConfigError::new(
                    &file,
                    format!("variables.{name}"),
                    format!(
                        "required variable has no value; set the environment variable {} \
                         (or add it to a dotenv file of a [[variables_provider]])",
                        env_names(name)
                    ),
                ));
                continue;
            };
            app.insert(
                name.clone(),
                Value {
                    text,
                    secret: var.secret,
                },
            );
        }

        ConfigError::all(missing)?;

        let mut components = BTreeMap::new();
        for (id, component) in &manifest.components {
            let mut values = BTreeMap::new();
            for (name, raw) in &component.variables {
                let field = format!("component.{id}.variables.{name}");
                let template =
                    Template::parse(raw).map_err(|m| ConfigError::new(&file, &field, m))?;
                // A component value is secret when any variable it is made of is.
                let secret = template
                    .references()
                    .any(|r| manifest.variables.get(r).is_some_and(|v| v.secret));
                let text = template
                    .render(&|r| app.get(r).map(|v: &Value| v.text.clone()))
                    .map_err(|unknown| {
                        ConfigError::new(
                            &file,
                            &field,
                            format!(
                                "template refers to unknown variable {unknown:?}; declare it \
                                 under [variables]"
                            ),
                        )
                    })?;
                values.insert(name.clone(), Value { text, secret });
            }
            components.insert(id.clone(), values);
        }
        Ok(ResolvedVariables { app, components })
    }

    /// An app variable's value (used for `allowed_outbound_hosts` templates).
    pub fn app_value(&self, name: &str) -> Option<String> {
        self.app.get(name).map(|v| v.text.clone())
    }

    /// Whether app variable `name` is secret (its value must not be logged).
    pub fn is_secret(&self, name: &str) -> bool {
        self.app.get(name).is_some_and(|v| v.secret)
    }

    /// What the guest of `component` gets for `variables::get(name)`.
    pub fn component_get(&self, component: &str, name: &str) -> Result<String, VariableError> {
        if validate_variable_name(name).is_err() {
            return Err(VariableError::InvalidName(name.to_string()));
        }
        self.components
            .get(component)
            .and_then(|vars| vars.get(name))
            .map(|v| v.text.clone())
            .ok_or_else(|| VariableError::Undefined(name.to_string()))
    }
}

/// Load every provider's dotenv file once (a missing file is an error: it was configured).
fn load_providers(runtime: &RuntimeConfig) -> Result<Vec<LoadedProvider>, ConfigError> {
    let mut out = Vec::new();
    for (i, provider) in runtime.variables_providers.iter().enumerate() {
        match provider {
            VariablesProvider::Env {
                prefix,
                dotenv_path,
            } => {
                let dotenv = match dotenv_path {
                    Some(path) => read_dotenv(path).map_err(|m| {
                        ConfigError::new(
                            &runtime.file_name(),
                            format!("variables_provider[{i}].dotenv_path"),
                            m,
                        )
                    })?,
                    None => BTreeMap::new(),
                };
                out.push(LoadedProvider {
                    prefix: prefix.clone(),
                    dotenv,
                });
            }
        }
    }
    Ok(out)
}

fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read dotenv file {}: {e}", path.display()))?;
    parse_dotenv(&text).map_err(|m| format!("{}: {m}", path.display()))
}

/// Parse a dotenv file: `KEY=VALUE` lines, optional `export `, `#` comments, blank lines,
/// single-quoted (literal) and double-quoted (with `\n`, `\"`, `\\` escapes) values.
/// Errors name the line but never echo its value (it may be a secret).
pub fn parse_dotenv(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line_no}: expected KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("line {line_no}: invalid key {key:?}"));
        }
        let value = parse_dotenv_value(value.trim())
            .map_err(|m| format!("line {line_no} (key {key}): {m}"))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn parse_dotenv_value(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let Some(end) = rest.find('\'') else {
            return Err("unterminated single quote".into());
        };
        return trailing_comment_only(&rest[end + 1..]).map(|()| rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return trailing_comment_only(&rest[i + 1..]).map(|()| out),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => return Err("unterminated double quote".into()),
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    // Unquoted: an inline comment starts at " #".
    let value = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(value.trim_end().to_string())
}

fn trailing_comment_only(rest: &str) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the closing quote".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_config::RuntimeConfig;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse_str("spin.toml", text, Path::new("/app")).unwrap()
    }

    const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[variables]
channel_host = { default = "localhost" }
admin_token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
[component.web.variables]
channel_url = "http://{{ channel_host }}:8080/pay"
token = "{{admin_token}}"
"#;

    fn runtime_without_env() -> RuntimeConfig {
        let mut rc = RuntimeConfig::load(None, Path::new("/app")).unwrap();
        rc.variables_providers = vec![VariablesProvider::Env {
            prefix: "SPINPAY_TEST_UNSET_PREFIX_7Q".into(),
            dotenv_path: None,
        }];
        rc
    }

    #[test]
    fn templates_keep_literal_text_around_variables() {
        // Proves a template renders literal text around each substituted variable.
        let t = Template::parse("http://{{ host }}:{{port}}/x").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["host", "port"]);
        let out = t
            .render(&|n| Some(if n == "host" { "h".into() } else { "1".into() }))
            .unwrap();
        assert_eq!(out, "http://h:1/x");
        assert!(Template::parse("{{ open").is_err());
        assert!(Template::parse("{{ Bad-Name }}").is_err());
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn overrides_beat_defaults_and_components_see_only_their_variables() {
        // Proves resolution order (override > default) and component-scoped lookups.
        let m = manifest(APP);
        let overrides = BTreeMap::from([("admin_token".to_string(), "s3cret".to_string())]);
        let vars = ResolvedVariables::resolve(&m, &runtime_without_env(), &overrides).unwrap();
        assert_eq!(
            vars.component_get("web", "channel_url").unwrap(),
            "http://localhost:8080/pay"
        );
        assert_eq!(vars.component_get("web", "token").unwrap(), "s3cret");
        assert_eq!(
            vars.component_get("web", "admin_token"),
            Err(VariableError::Undefined("admin_token".into()))
        );
        assert_eq!(
            vars.component_get("web", "Bad"),
            Err(VariableError::InvalidName("Bad".into()))
        );
        assert_eq!(vars.app_value("channel_host").as_deref(), Some("localhost"));
    }

    #[test]
    fn secret_values_never_appear_in_debug_output() {
        // Proves the Debug output of resolved variables masks secrets, including templated ones.
        let m = manifest(APP);
        let overrides = BTreeMap::from([("admin_token".to_string(), "s3cret".to_string())]);
        let vars = ResolvedVariables::resolve(&m, &runtime_without_env(), &overrides).unwrap();
        let shown = format!("{vars:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***"));
        assert!(shown.contains("localhost"));
    }

    #[test]
    fn a_missing_required_variable_names_the_field_and_env_var() {
        // Proves a required variable without a value fails with variables.<name> and the
        // env var, one line, and that every missing one is reported in the same run (a
        // line each), not one per run.
        let m = manifest(APP);
        let err =
            ResolvedVariables::resolve(&m, &runtime_without_env(), &BTreeMap::new()).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.also.len()),
            ("variables.admin_token", 0)
        );
        assert!(
            err.message
                .contains("SPINPAY_TEST_UNSET_PREFIX_7Q_ADMIN_TOKEN"),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
        let two = APP.replace(
            "admin_token = { required = true, secret = true }",
            "admin_token = { required = true, secret = true }\napi_key = { required = true }",
        );
        let err =
            ResolvedVariables::resolve(&manifest(&two), &runtime_without_env(), &BTreeMap::new())
                .unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("variables.admin_token"), "{text}");
        assert!(lines[1].contains("variables.api_key"), "{text}");
        assert!(
            lines[1].contains("SPINPAY_TEST_UNSET_PREFIX_7Q_API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn dotenv_files_parse_comments_quotes_and_exports() {
        // Proves the dotenv parser handles comments, export, both quote styles and escapes.
        let text =
            "# comment\n\nA=1\nexport B = two words # note\nC='lit # \\n'\nD=\"x\\ny\\\"z\"\n";
        let env = parse_dotenv(text).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "lit # \\n");
        assert_eq!(env["D"], "x\ny\"z");
        let err = parse_dotenv("GOOD=1\nSECRET=\"hunter2").unwrap_err();
        assert!(err.contains("line 2") && !err.contains("hunter2"), "{err}");
    }
}
