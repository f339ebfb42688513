//! Every manifest / runtime-config mistake is one `ConfigError` naming the file and the
//! exact field, found before anything binds. Each test writes the files to a temporary
//! app directory and loads them the way `spinpay-host up` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spinpay_host::manifest::{ConfigError, Manifest};
use spinpay_host::runtime_config::RuntimeConfig;
use spinpay_host::variables::ResolvedVariables;

/// A valid manifest; tests replace one piece of it.
const BASE: &str = r#"spin_manifest_version = 2

[application]
name = "shop"
version = "0.1.0"

[variables]
channel_host = { default = "127.0.0.1" }

[[trigger.http]]
route = "/v1/payments"
component = "web"

[[trigger.http]]
route = "/v1/..."
component = "web"

[component.web]
source = "target/web.wasm"
allowed_outbound_hosts = ["http://{{ channel_host }}:8080"]
key_value_stores = ["default"]
[component.web.variables]
channel_url = "http://{{ channel_host }}:8080"
[component.web.build]
command = "cargo build --target wasm32-wasip2 --release"
workdir = "web"
"#;

struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new(manifest: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
        App { dir }
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("spin.toml")
    }

    fn load(&self) -> Result<Manifest, ConfigError> {
        Manifest::load(&self.manifest_path())
    }

    fn runtime(&self, text: &str) -> Result<RuntimeConfig, ConfigError> {
        let path = self.dir.path().join("runtime-config.toml");
        std::fs::write(&path, text).unwrap();
        RuntimeConfig::load(Some(&path), self.dir.path())
    }
}

/// Load `manifest` and return its error, checking it names the manifest file.
fn manifest_error(manifest: &str) -> ConfigError {
    let app = App::new(manifest);
    let err = app.load().expect_err("the manifest should be rejected");
    assert_eq!(err.file, app.manifest_path().display().to_string());
    err
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_manifest_is_valid() {
    // Proves the fixture every other test mutates is itself accepted, with paths resolved.
    let app = App::new(BASE);
    let m = app.load().unwrap();
    let web = &m.components["web"];
    assert_eq!(web.source, app.dir.path().join("target/web.wasm"));
    assert_eq!(
        web.build.as_ref().unwrap().workdir,
        app.dir.path().join("web")
    );
    assert_eq!(m.http_triggers.len(), 2);
}

#[test]
fn an_unconfigured_key_value_label_names_the_component_field() {
    // Proves a label without [key_value_store.<label>] fails at component.<id>.key_value_stores.
    let app = App::new(&replace(r#"["default"]"#, r#"["default", "sessions"]"#));
    let m = app.load().unwrap();
    let rc = RuntimeConfig::load(None, app.dir.path()).unwrap();
    let err = rc.validate_against(&m).unwrap_err();
    assert_eq!(err.field, "component.web.key_value_stores");
    assert!(
        err.message.contains("\"sessions\"") && err.message.contains("[key_value_store.sessions]"),
        "{err}"
    );

    let rc = app
        .runtime("[key_value_store.sessions]\ntype = \"spin\"\npath = \"s.db\"\n")
        .unwrap();
    rc.validate_against(&m).expect("configured label passes");
}

#[test]
fn a_missing_required_variable_names_the_variable_and_env_var() {
    // Proves a required variable with no provider value stops start-up, naming SPIN_VARIABLE_<NAME>.
    let app = App::new(&replace(
        "channel_host = { default = \"127.0.0.1\" }",
        "channel_host = { default = \"127.0.0.1\" }\nspinpay_cfgtest_token = { required = true, secret = true }",
    ));
    let m = app.load().unwrap();
    let rc = RuntimeConfig::load(None, app.dir.path()).unwrap();
    let err = ResolvedVariables::resolve(&m, &rc, &BTreeMap::new()).unwrap_err();
    assert_eq!(err.field, "variables.spinpay_cfgtest_token");
    assert!(
        err.message.contains("SPIN_VARIABLE_SPINPAY_CFGTEST_TOKEN"),
        "{err}"
    );

    let overrides =
        BTreeMap::from([("spinpay_cfgtest_token".to_string(), "t0ps3cret".to_string())]);
    let vars = ResolvedVariables::resolve(&m, &rc, &overrides).unwrap();
    assert!(
        !format!("{vars:?}").contains("t0ps3cret"),
        "secrets never reach Debug output"
    );
}

#[test]
fn a_dotenv_provider_supplies_a_required_variable() {
    // Proves [[variables_provider]] type = "env" with a prefix and dotenv file resolves variables.
    let app = App::new(&replace(
        "channel_host = { default = \"127.0.0.1\" }",
        "channel_host = { default = \"127.0.0.1\" }\nadmin_token = { required = true, secret = true }",
    ));
    std::fs::write(
        app.dir.path().join("vars.env"),
        "# test\nSPINPAY_CFGTEST_ADMIN_TOKEN=\"abc 123\"\n",
    )
    .unwrap();
    let rc = app
        .runtime("[[variables_provider]]\ntype = \"env\"\nprefix = \"SPINPAY_CFGTEST\"\ndotenv_path = \"vars.env\"\n")
        .unwrap();
    let m = app.load().unwrap();
    let vars = ResolvedVariables::resolve(&m, &rc, &BTreeMap::new()).unwrap();
    assert_eq!(vars.app_value("admin_token").as_deref(), Some("abc 123"));
    assert_eq!(
        vars.component_get("web", "channel_url").unwrap(),
        "http://127.0.0.1:8080"
    );
}

#[test]
fn a_bad_route_names_the_trigger_route_field() {
    // Proves malformed route patterns fail at trigger.http[<i>].route.
    for bad in ["/v1/.../x", "/v1/:", "/v1/*rest", "/v1/pay:id"] {
        let err = manifest_error(&replace("route = \"/v1/...\"", &format!("route = {bad:?}")));
        assert_eq!(err.field, "trigger.http[1].route", "{bad}: {err}");
    }
    let err = manifest_error(&replace(
        "route = \"/v1/...\"",
        "route = { private = false }",
    ));
    assert_eq!(err.field, "trigger.http[1].route");
    let err = manifest_error(&replace("route = \"/v1/...\"", "route = 7"));
    assert_eq!(err.field, "trigger.http[1].route");
}

#[test]
fn a_duplicate_route_names_the_second_trigger() {
    // Proves two triggers matching the same paths fail at the later trigger's route.
    let err = manifest_error(&replace("route = \"/v1/...\"", "route = \"/v1/payments/\""));
    assert_eq!(err.field, "trigger.http[1].route");
    assert!(err.message.contains("trigger.http[0]"), "{err}");
}

#[test]
fn a_trigger_for_an_unknown_component_names_the_component_field() {
    // Proves a trigger must reference a declared [component.<id>].
    let err = manifest_error(&replace("component = \"web\"", "component = \"wbe\""));
    assert_eq!(err.field, "trigger.http[0].component");
    assert!(
        err.message.contains("wbe") && err.message.contains("web"),
        "{err}"
    );
}

#[test]
fn a_missing_wasm_names_the_build_command() {
    // Proves check_sources names component.<id>.source, the build command and `up --build`.
    let app = App::new(BASE);
    let m = app.load().unwrap();
    let err = m.check_sources().unwrap_err();
    assert_eq!(err.field, "component.web.source");
    assert!(err.message.contains("target/web.wasm"), "{err}");
    assert!(
        err.message
            .contains("cargo build --target wasm32-wasip2 --release"),
        "{err}"
    );
    assert!(err.message.contains("spinpay-host up --build"), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with(&format!(
        "{}: component.web.source: ",
        app.manifest_path().display()
    )));

    std::fs::create_dir_all(app.dir.path().join("target")).unwrap();
    std::fs::write(app.dir.path().join("target/web.wasm"), b"\0asm").unwrap();
    m.check_sources().expect("present sources pass");
}

#[test]
fn unknown_fields_are_rejected_at_their_path() {
    // Proves typos anywhere (top level, application, variable, component, build) name the field.
    let cases = [
        (
            "[application]\n",
            "[application]\ncolour = \"blue\"\n",
            "application.colour",
        ),
        (
            "spin_manifest_version = 2\n",
            "spin_manifest_version = 2\nextra = 1\n",
            "extra",
        ),
        (
            "{ default = \"127.0.0.1\" }",
            "{ default = \"127.0.0.1\", secert = true }",
            "variables.channel_host.secert",
        ),
        (
            "key_value_stores = [\"default\"]",
            "key_value_store = [\"default\"]",
            "component.web.key_value_store",
        ),
        (
            "workdir = \"web\"",
            "workdir = \"web\"\nwatchh = []",
            "component.web.build.watchh",
        ),
        (
            "component = \"web\"\n\n[[trigger.http]]",
            "component = \"web\"\nmethod = \"GET\"\n\n[[trigger.http]]",
            "trigger.http[0].method",
        ),
        (
            "key_value_stores = [\"default\"]",
            "sqlite_databases = [\"default\"]",
            "component.web.sqlite_databases",
        ),
    ];
    for (from, to, field) in cases {
        let err = manifest_error(&replace(from, to));
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn a_bad_allowed_host_names_the_entry() {
    // Proves a malformed allowed_outbound_hosts entry fails at its index.
    for bad in [
        "example.com",
        "https://example.com/path",
        "https://example.com:port",
        "https://a.*.com",
    ] {
        let err = manifest_error(&replace(
            "allowed_outbound_hosts = [\"http://{{ channel_host }}:8080\"]",
            &format!("allowed_outbound_hosts = [\"https://ok.example.com\", {bad:?}]"),
        ));
        assert_eq!(
            err.field, "component.web.allowed_outbound_hosts[1]",
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_template_referring_to_an_unknown_variable_names_its_field() {
    // Proves templates in component variables and allowed hosts must use declared variables.
    let err = manifest_error(&replace(
        "channel_url = \"http://{{ channel_host }}:8080\"",
        "channel_url = \"http://{{ chanel_host }}:8080\"",
    ));
    assert_eq!(err.field, "component.web.variables.channel_url");
    assert!(err.message.contains("chanel_host"), "{err}");

    let err = manifest_error(&replace(
        "[\"http://{{ channel_host }}:8080\"]",
        "[\"http://{{ nope }}:8080\"]",
    ));
    assert_eq!(err.field, "component.web.allowed_outbound_hosts[0]");

    let err = manifest_error(&replace(
        "channel_url = \"http://{{ channel_host }}:8080\"",
        "channel_url = \"http://{{ channel_host :8080\"",
    ));
    assert_eq!(err.field, "component.web.variables.channel_url");
}

#[test]
fn variable_declarations_follow_spins_rules() {
    // Proves required+default, neither, and bad names are rejected at variables.<name>.
    let both = manifest_error(&replace(
        "{ default = \"127.0.0.1\" }",
        "{ default = \"x\", required = true }",
    ));
    assert_eq!(both.field, "variables.channel_host");
    let neither = manifest_error(&replace("{ default = \"127.0.0.1\" }", "{ secret = true }"));
    assert_eq!(neither.field, "variables.channel_host");
    let name = manifest_error(&replace(
        "channel_host = {",
        "channel_host = { default = \"a\" }\nChannel-Host = {",
    ));
    assert_eq!(name.field, "variables.Channel-Host");
}

#[test]
fn component_ids_and_versions_are_validated() {
    // Proves bad component ids and unsupported manifest versions name their field.
    let err = manifest_error(
        &BASE
            .replace("component = \"web\"", "component = \"Web_1\"")
            .replace("[component.web", "[component.Web_1"),
    );
    assert_eq!(err.field, "component.Web_1");
    let err = manifest_error(&replace(
        "spin_manifest_version = 2",
        "spin_manifest_version = 3",
    ));
    assert_eq!(err.field, "spin_manifest_version");
    let err = manifest_error(&replace("name = \"shop\"\n", ""));
    assert_eq!(err.field, "application.name");
    let err = manifest_error("spin_manifest_version = 2\n[application\n");
    assert!(err.field.starts_with("line 2"), "{err}");
}

#[test]
fn runtime_config_mistakes_name_their_field() {
    // Proves unknown store types, unknown fields, bad Redis URLs, providers and blocked
    // networks are rejected, and Spin fields this host does not enforce are refused.
    let app = App::new(BASE);
    let file = app
        .dir
        .path()
        .join("runtime-config.toml")
        .display()
        .to_string();
    let cases = [
        (
            "[key_value_store.default]\ntype = \"dynamo\"\n",
            "key_value_store.default.type",
        ),
        (
            "[key_value_store.default]\ntype = \"spin\"\npth = \"x.db\"\n",
            "key_value_store.default.pth",
        ),
        (
            "[key_value_store.default]\ntype = \"redis\"\n",
            "key_value_store.default.url",
        ),
        (
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"http://localhost\"\n",
            "key_value_store.default.url",
        ),
        (
            "[key_value_store.default]\npath = \"x.db\"\n",
            "key_value_store.default.type",
        ),
        (
            "[key_value_stor.default]\ntype = \"spin\"\n",
            "key_value_stor",
        ),
        (
            "[[variables_provider]]\ntype = \"vault\"\n",
            "variables_provider[0].type",
        ),
        (
            "[[variables_provider]]\ntype = \"env\"\nprefx = \"X\"\n",
            "variables_provider[0].prefx",
        ),
        (
            "[[variables_provider]]\ntype = \"env\"\ndotenv_path = \"missing.env\"\n",
            "variables_provider[0].dotenv_path",
        ),
        (
            "[outbound_networking]\nblock_networks = [\"private\", \"10.0.0.1\"]\n",
            "outbound_networking.block_networks[1]",
        ),
        (
            "[outbound_networking]\nblock_networks = \"private\"\n",
            "outbound_networking.block_networks",
        ),
        (
            "[outbound_networking]\nblock_networks = [\"private\", 10]\n",
            "outbound_networking.block_networks[1]",
        ),
        (
            "[outbound_networking]\nblock_network = [\"private\"]\n",
            "outbound_networking.block_network",
        ),
        (
            "[outbound_networking]\nmax_total_connections = 100\n",
            "outbound_networking.max_total_connections",
        ),
        ("[[client_tls]]\ncomponent_ids = [\"c\"]\n", "client_tls"),
    ];
    for (text, field) in cases {
        let err = app.runtime(text).expect_err(text);
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.file, file);
    }
}

#[test]
fn relative_store_paths_resolve_against_the_runtime_config_directory() {
    // Proves Spin's rule: `path` is relative to the runtime-config file, not the working dir.
    let app = App::new(BASE);
    let infra = app.dir.path().join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    let path = infra.join("rc.toml");
    std::fs::write(
        &path,
        "[key_value_store.default]\ntype = \"spin\"\npath = \"../.spin/kv.db\"\n",
    )
    .unwrap();
    let rc = RuntimeConfig::load(Some(&path), app.dir.path()).unwrap();
    assert_eq!(
        rc.store("default"),
        Some(&spinpay_host::runtime_config::KvStoreConfig::Spin {
            path: infra.join("../.spin/kv.db")
        })
    );
    assert!(Path::new(&infra).is_dir());
}

#[test]
fn the_projects_own_spin_toml_and_runtime_configs_are_valid() {
    // Proves the repository's spin.toml and infra runtime configs pass every check, with DESIGN.md's routing.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let m = Manifest::load(&root.join("spin.toml")).unwrap_or_else(|e| panic!("{e}"));
    for name in ["runtime-config.sqlite.toml", "runtime-config.redis.toml"] {
        let path = root.join("infra").join(name);
        if !path.is_file() {
            continue;
        }
        let rc = RuntimeConfig::load(Some(&path), &m.app_dir).unwrap_or_else(|e| panic!("{e}"));
        rc.validate_against(&m).unwrap_or_else(|e| panic!("{e}"));
        // The production configuration keeps outbound HTTP out of the cluster's network.
        let metadata_service = "169.254.169.254".parse().unwrap();
        let production = name == "runtime-config.redis.toml";
        assert_eq!(
            rc.blocked_networks.is_blocked(metadata_service),
            production,
            "{name}"
        );
    }
    let router = m.router().unwrap();
    let component = |p: &str| router.route(p).map(|r| r.component);
    assert_eq!(component("/v1/payments").as_deref(), Some("authorize"));
    assert_eq!(
        component("/v1/payments/pay_1/capture").as_deref(),
        Some("authorize")
    );
    assert_eq!(component("/v1/payments/pay_1").as_deref(), Some("query"));
}
