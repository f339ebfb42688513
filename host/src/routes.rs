//! Spin's HTTP routing (crates/routes semantics): exact routes beat parameterised ones,
//! which beat wildcards; longer/more specific wins; private routes never match.
//!
//! Spin delegates to `routefinder` 0.5: each route becomes a sequence of segments
//! (`Exact`, `Param`, trailing `Wildcard`, separated by `Slash`), and routes are tried most
//! specific first. Specificity compares the segment sequences position by position with
//! `Exact > Param > Wildcard`; at the first difference the stronger segment wins; if one
//! route is a prefix of the other, the shorter one wins (so `/a` beats `/a/...` and
//! `/:x` beats `/:x/...`); otherwise manifest order decides. Paths are compared after
//! trimming leading and trailing slashes, as routefinder does. This module reproduces
//! that order exactly (see the tests), but refuses what Spin only warns about: two
//! triggers whose routes match exactly the same paths are a configuration error.

use std::cmp::Ordering;

use crate::manifest::{ConfigError, HttpTrigger, RouteSpec};

/// Prefix Spin reserves for its own endpoints.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The routing table built from the manifest's triggers.
#[derive(Debug, Clone)]
pub struct Router {
    /// Most specific first.
    routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Exact(String),
    Param(String),
    Wildcard,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Exact(_) => 2,
            Segment::Param(_) => 1,
            Segment::Wildcard => 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    component: String,
    /// With the base, trailing slash stripped (`spin-matched-route`).
    based_route: String,
    /// As written in the manifest.
    raw_route: String,
    segments: Vec<Segment>,
    /// Index of the trigger, for messages.
    trigger_index: usize,
}

/// What a request path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Component id.
    pub component: String,
    /// The route as written in the manifest, e.g. `/v1/payments/:id/capture` or `/v1/...`
    /// (`spin-matched-route`).
    pub matched_route: String,
    /// The route without its trailing `/...` (`spin-component-route`).
    pub component_route: String,
    /// Path after the matched route prefix (`spin-path-info`), "" for an exact match.
    pub path_info: String,
    /// `:name` captures, in order (`spin-path-match-<name>`).
    pub params: Vec<(String, String)>,
}

impl RouteMatch {
    /// The match Spin synthesises for service chaining (`http://<id>.spin.internal/p`):
    /// as if `path` hit the component's `/...` route.
    pub fn synthetic(component: &str, path: &str) -> RouteMatch {
        RouteMatch {
            component: component.to_string(),
            matched_route: "/...".to_string(),
            component_route: String::new(),
            path_info: path.to_string(),
            params: Vec::new(),
        }
    }
}

impl Router {
    /// Build from triggers; a bad or duplicate route is a [`ConfigError`] (file: `manifest_file`).
    pub fn build(manifest_file: &str, triggers: &[HttpTrigger]) -> Result<Router, ConfigError> {
        Router::build_with_base(manifest_file, "/", triggers)
    }

    /// Build with `[application.trigger.http] base` prepended to every route.
    pub fn build_with_base(
        manifest_file: &str,
        base: &str,
        triggers: &[HttpTrigger],
    ) -> Result<Router, ConfigError> {
        let mut routes: Vec<Route> = Vec::new();
        for (i, trigger) in triggers.iter().enumerate() {
            let RouteSpec::Path(raw) = &trigger.route else {
                continue;
            };
            let field = format!("trigger.http[{i}].route");
            let err = |m: String| ConfigError::new(manifest_file, &field, m);
            let based_route = format!(
                "{}{}",
                strip_one_slash(base),
                strip_one_slash(&absolutize(raw))
            );
            if format!("{based_route}/").starts_with(WELL_KNOWN_PREFIX) {
                return Err(err(format!(
                    "route {raw:?} is under {WELL_KNOWN_PREFIX}, which Spin reserves"
                )));
            }
            let segments =
                parse_segments(&based_route).map_err(|m| err(format!("route {raw:?}: {m}")))?;
            if let Some(other) = routes.iter().find(|r| same_shape(&r.segments, &segments)) {
                return Err(err(format!(
                    "route {raw:?} matches exactly the same paths as trigger.http[{}] \
                     (route {:?}, component {:?}); remove one or make them distinct",
                    other.trigger_index, other.raw_route, other.component
                )));
            }
            routes.push(Route {
                component: trigger.component.clone(),
                based_route,
                raw_route: raw.clone(),
                segments,
                trigger_index: i,
            });
        }
        // Stable: routes of equal specificity keep manifest order.
        routes.sort_by(|a, b| specificity(&a.segments, &b.segments));
        Ok(Router { routes })
    }

    /// Route a request path (no query string). `None` → 404.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let trimmed = path.trim_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        self.routes.iter().find_map(|route| {
            let (params, wildcard) = match_segments(&route.segments, trimmed, &parts)?;
            let path_info = match wildcard {
                None => String::new(),
                // Spin keeps the trailing slash routefinder trims.
                Some(rest) => match (rest.is_empty(), path.ends_with('/')) {
                    (true, false) => String::new(),
                    (true, true) => "/".to_string(),
                    (false, false) => format!("/{rest}"),
                    (false, true) => format!("/{rest}/"),
                },
            };
            Some(RouteMatch {
                component: route.component.clone(),
                matched_route: route.based_route.clone(),
                component_route: route
                    .raw_route
                    .strip_suffix("/...")
                    .unwrap_or(&route.raw_route)
                    .to_string(),
                path_info,
                params,
            })
        })
    }

    /// The public routes, most specific first: (route as written, component).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes
            .iter()
            .map(|r| (r.raw_route.as_str(), r.component.as_str()))
    }
}

fn absolutize(route: &str) -> String {
    if route.starts_with('/') {
        route.to_string()
    } else {
        format!("/{route}")
    }
}

/// Spin strips one trailing slash from the base and from the route.
fn strip_one_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

fn parse_segments(based_route: &str) -> Result<Vec<Segment>, String> {
    let trimmed = based_route.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let words: Vec<&str> = trimmed.split('/').collect();
    let mut segments = Vec::with_capacity(words.len());
    let mut names: Vec<&str> = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let segment = match *word {
            "" => return Err("empty path segment ('//')".into()),
            "..." | "*" if last => Segment::Wildcard,
            "..." | "*" => return Err("a wildcard (`/...`) may only end a route".into()),
            w if w.starts_with(':') => {
                let name = &w[1..];
                if name.is_empty() {
                    return Err("`:` must be followed by a parameter name".into());
                }
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "parameter name {name:?} may contain only letters, digits, '_' and '-'"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter `:{name}` appears twice"));
                }
                names.push(name);
                Segment::Param(name.to_string())
            }
            w if w.contains('*') || w.contains("...") => {
                return Err(format!(
                    "segment {w:?}: a wildcard must be a whole final segment (`/...`)"
                ));
            }
            w if w.contains(':') => {
                return Err(format!(
                    "segment {w:?}: a `:name` parameter must be a whole segment"
                ));
            }
            w => Segment::Exact(w.to_string()),
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// routefinder's order: `Less` = `a` is tried before `b`.
fn specificity(a: &[Segment], b: &[Segment]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match y.rank().cmp(&x.rank()) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Whether two routes match exactly the same set of paths.
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Exact(p), Segment::Exact(q)) => p == q,
            (Segment::Param(_), Segment::Param(_)) | (Segment::Wildcard, Segment::Wildcard) => true,
            (Segment::Exact(_), _) | (Segment::Param(_), _) | (Segment::Wildcard, _) => false,
        })
}

/// Match `parts` (the trimmed path split on '/'); returns the params and, for a wildcard
/// route, the rest of the path it captured.
#[allow(clippy::type_complexity)]
fn match_segments(
    segments: &[Segment],
    trimmed: &str,
    parts: &[&str],
) -> Option<(Vec<(String, String)>, Option<String>)> {
    let mut params = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Wildcard => {
                // Everything after the first i parts (and their separators).
                let consumed: usize = parts[..i.min(parts.len())]
                    .iter()
                    .map(|p| p.len() + 1)
                    .sum();
                if i > parts.len() {
                    return None;
                }
                let rest = trimmed.get(consumed.min(trimmed.len())..).unwrap_or("");
                return Some((params, Some(rest.to_string())));
            }
            Segment::Exact(lit) => {
                if parts.get(i) != Some(&lit.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => match parts.get(i) {
                Some(value) if !value.is_empty() => {
                    params.push((name.clone(), (*value).to_string()));
                }
                Some(_) | None => return None,
            },
        }
    }
    (segments.len() == parts.len()).then_some((params, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let triggers: Vec<HttpTrigger> = routes
            .iter()
            .map(|(component, route)| HttpTrigger {
                route: RouteSpec::Path(route.to_string()),
                component: component.to_string(),
            })
            .collect();
        Router::build("spin.toml", &triggers).unwrap()
    }

    fn component(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_beats_parameterised_beats_wildcard_for_payments() {
        // Proves the DESIGN.md case in every manifest order: exact > :id/capture > wildcard.
        let routes = [
            ("authorize", "/v1/payments"),
            ("authorize-capture", "/v1/payments/:id/capture"),
            ("query", "/v1/payments/..."),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let r = router(&order.map(|i| routes[i]));
            assert_eq!(component(&r, "/v1/payments").as_deref(), Some("authorize"));
            let m = r.route("/v1/payments/pay_1/capture").unwrap();
            assert_eq!(m.component, "authorize-capture");
            assert_eq!(m.params, vec![("id".to_string(), "pay_1".to_string())]);
            assert_eq!(m.path_info, "");
            let m = r.route("/v1/payments/pay_1").unwrap();
            assert_eq!(m.component, "query");
            assert_eq!(m.path_info, "/pay_1");
            assert_eq!(m.matched_route, "/v1/payments/...");
            assert_eq!(m.component_route, "/v1/payments");
        }
    }

    #[test]
    fn the_longest_wildcard_prefix_wins_regardless_of_order() {
        // Proves Spin's longest-match rule among wildcards, in both manifest orders.
        for routes in [
            [
                ("one", "/one/..."),
                ("two", "/one/two/..."),
                ("three", "/one/two/three/..."),
            ],
            [
                ("three", "/one/two/three/..."),
                ("two", "/one/two/..."),
                ("one", "/one/..."),
            ],
        ] {
            let r = router(&routes);
            assert_eq!(
                component(&r, "/one/two/three/four").as_deref(),
                Some("three")
            );
            assert_eq!(component(&r, "/one/two/x").as_deref(), Some("two"));
            assert_eq!(component(&r, "/one").as_deref(), Some("one"));
        }
    }

    #[test]
    fn an_exact_segment_beats_a_parameter_at_the_first_difference() {
        // Proves segment-wise comparison: /a/:b beats /:a/b, /:x beats /:x/..., root wildcard last.
        let r = router(&[
            ("param-first", "/:a/b"),
            ("exact-first", "/a/:b"),
            ("all", "/..."),
            ("x", "/:x"),
            ("x-wild", "/:x/..."),
        ]);
        assert_eq!(component(&r, "/a/b").as_deref(), Some("exact-first"));
        assert_eq!(component(&r, "/z/b").as_deref(), Some("param-first"));
        assert_eq!(component(&r, "/z").as_deref(), Some("x"));
        assert_eq!(component(&r, "/z/q/r").as_deref(), Some("x-wild"));
        assert_eq!(component(&r, "/").as_deref(), Some("all"));
    }

    #[test]
    fn trailing_wildcards_report_path_info_like_spin() {
        // Proves spin-path-info keeps Spin's trailing-slash behaviour for /test/....
        let r = router(&[("comp", "/test/...")]);
        let info = |p: &str| r.route(p).unwrap().path_info;
        assert_eq!(info("/test"), "");
        assert_eq!(info("/test/"), "/");
        assert_eq!(info("/test/hello"), "/hello");
        assert_eq!(info("/test/hello/"), "/hello/");
        assert!(r.route("/testing").is_none());
        let root = router(&[("comp", "/...")]);
        assert_eq!(root.route("/1/2/3").unwrap().path_info, "/1/2/3");
    }

    #[test]
    fn exact_routes_ignore_trailing_slashes_and_unknown_paths_miss() {
        // Proves /foo matches /foo/ (routefinder trims) and unmatched paths give None (404).
        let r = router(&[("foo", "/foo"), ("root", "/")]);
        assert_eq!(component(&r, "/foo/").as_deref(), Some("foo"));
        assert_eq!(component(&r, "/").as_deref(), Some("root"));
        assert_eq!(component(&r, "/bar"), None);
        assert_eq!(r.route("/").unwrap().matched_route, "");
    }

    #[test]
    fn private_routes_never_match() {
        // Proves a `{ private = true }` trigger is absent from routing.
        let triggers = vec![
            HttpTrigger {
                route: RouteSpec::Private,
                component: "internal".into(),
            },
            HttpTrigger {
                route: RouteSpec::Path("/public".into()),
                component: "public".into(),
            },
        ];
        let r = Router::build("spin.toml", &triggers).unwrap();
        assert_eq!(component(&r, "/public").as_deref(), Some("public"));
        assert_eq!(component(&r, "/internal"), None);
        assert_eq!(r.routes().count(), 1);
    }

    #[test]
    fn the_application_base_prefixes_every_route() {
        // Proves `base` is prepended to routes and shows in spin-matched-route only.
        let triggers = vec![HttpTrigger {
            route: RouteSpec::Path("/foo/...".into()),
            component: "foo".into(),
        }];
        let r = Router::build_with_base("spin.toml", "/base/", &triggers).unwrap();
        let m = r.route("/base/foo/bar").unwrap();
        assert_eq!(m.matched_route, "/base/foo/...");
        assert_eq!(m.component_route, "/foo");
        assert_eq!(m.path_info, "/bar");
        assert!(r.route("/foo/bar").is_none());
    }

    #[test]
    fn duplicate_and_malformed_routes_are_configuration_errors() {
        // Proves duplicates (also /foo vs /foo/ and :a vs :b) and bad patterns name the field.
        let build = |routes: &[&str]| {
            let triggers: Vec<HttpTrigger> = routes
                .iter()
                .map(|r| HttpTrigger {
                    route: RouteSpec::Path(r.to_string()),
                    component: "c".into(),
                })
                .collect();
            Router::build("spin.toml", &triggers)
        };
        for dup in [
            ["/foo", "/foo"],
            ["/foo", "/foo/"],
            ["/a/:x", "/a/:y"],
            ["/a/...", "/a/*"],
        ] {
            let err = build(&dup).unwrap_err();
            assert_eq!(err.field, "trigger.http[1].route", "{dup:?}");
        }
        for bad in ["/a/.../b", "/:", "/a/*b", "/a/x:y", "/a//b", "/:id/:id"] {
            let err = build(&[bad]).unwrap_err();
            assert_eq!(err.field, "trigger.http[0].route", "{bad}");
        }
        assert!(build(&["/.well-known/spin/x"]).is_err());
        assert!(build(&["/foo", "/foo/..."]).is_ok());
    }
}
