//! `allowed_outbound_hosts`: parsing (scheme, host, port, wildcards, `{{ var }}` templates)
//! and matching, with Spin's helpful denial message.
//!
//! Entry grammar, as Spin parses it: `<scheme>://<host>[:<port>]` where
//! - scheme is a name or `*`;
//! - host is a name, an IP address, a CIDR block (`10.0.0.0/8`), `*`, `*.<domain>`
//!   (any subdomain), `self` (the app itself: relative requests) — `*.spin.internal` /
//!   `<id>.spin.internal` allow service chaining;
//! - port is a number, `*`, or a range `start..end` (end excluded, as in Spin); without a
//!   port the scheme's well-known port applies (http 80, https 443, redis 6379, ...).
//!
//! Templated entries are rendered from app variables once at start-up; one that renders
//! to "" (or a bare `http://`) is skipped, which is Spin's "optional endpoint" idiom.

use std::net::IpAddr;

use url::Host;

use crate::manifest::ConfigError;
use crate::variables::Template;

/// A component's resolved allow-list.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    component_id: String,
    entries: Vec<AllowedHost>,
}

/// Why a request was denied, with the entry that would allow it
/// (e.g. `add "http://localhost:8080" to allowed_outbound_hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Human-readable explanation, logged by the host.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemeRule {
    Any,
    Is(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    /// `*.example.com` stored as `.example.com`.
    AnySubdomain(String),
    ToSelf,
    Literal(Host<String>),
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Any,
    Port(u16),
    /// `start..end`, end excluded.
    Range(u16, u16),
}

/// Service chaining domain.
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// The well-known port of a scheme, as Spin knows them.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// The component a `<id>.spin.internal` host addresses, if it is one.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let (first, rest) = host.split_once('.')?;
    (rest == &SERVICE_CHAINING_SUFFIX[1..] && !first.is_empty()).then_some(first)
}

/// Whether `host` names the app itself (`self`, as Spin spells relative requests).
pub fn is_self_host(host: &str) -> bool {
    host == "self" || host == "self.alt"
}

/// Check one raw manifest entry without variable values: template syntax, variables it
/// refers to (`known`), and, when it has no template, the entry itself.
pub fn validate_entry(entry: &str, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if entry.trim() == "insecure:allow-all" {
        return Err(
            "'insecure:allow-all' is not allowed; use '*://*:*' if you really mean every host"
                .into(),
        );
    }
    let template = Template::parse(entry)?;
    if let Some(unknown) = template.references().find(|r| !known(r)) {
        return Err(format!(
            "template refers to unknown variable {unknown:?}; declare it under [variables]"
        ));
    }
    if template.is_literal() {
        AllowedHost::parse(entry)?;
    }
    Ok(())
}

impl AllowedHosts {
    /// Parse the entries of component `component_id`; `resolve` gives variable values for
    /// templates. A malformed entry is a [`ConfigError`].
    pub fn parse(
        manifest_file: &str,
        component_id: &str,
        entries: &[String],
        resolve: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AllowedHosts, ConfigError> {
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("component.{component_id}.allowed_outbound_hosts[{i}]");
            let err = |m: String| ConfigError::new(manifest_file, &field, m);
            validate_entry(entry, &|_| true).map_err(err)?;
            let template = Template::parse(entry).map_err(err)?;
            let rendered = template.render(resolve).map_err(|name| {
                err(format!(
                    "template refers to variable {name:?}, which has no value"
                ))
            })?;
            if rendered.is_empty() || rendered == "http://" || rendered == "https://" {
                continue;
            }
            let host = AllowedHost::parse(&rendered).map_err(|m| {
                if template.is_literal() {
                    err(m)
                } else {
                    // The rendered text may hold a secret variable's value: do not echo it.
                    err(format!(
                        "{entry:?} does not render to a valid <scheme>://<host>[:<port>] \
                         entry; check the values of the variables it uses"
                    ))
                }
            })?;
            parsed.push(host);
        }
        Ok(AllowedHosts {
            component_id: component_id.to_string(),
            entries: parsed,
        })
    }

    /// Check an outbound URL (`scheme://host[:port]/...`). `http://self` and
    /// `http://<id>.spin.internal` must be listed like any other host
    /// (`http://self`, `http://*.spin.internal` or `http://<id>.spin.internal`).
    pub fn check(&self, url: &url::Url) -> Result<(), Denied> {
        let scheme = url.scheme();
        let Some(host) = url.host() else {
            return Err(Denied {
                message: format!(
                    "Component {:?} tried an outbound request to {url}, which has no host.",
                    self.component_id
                ),
            });
        };
        let port = url.port().or_else(|| well_known_port(scheme));
        let to_self = matches!(&host, Host::Domain(d) if is_self_host(d));
        let allowed = self.entries.iter().any(|e| {
            e.scheme.allows(scheme)
                && if to_self {
                    // Spin: requests to the app itself ignore the port.
                    matches!(e.host, HostRule::Any | HostRule::ToSelf)
                } else {
                    e.host.allows(&host) && e.port.allows(port)
                }
        });
        if allowed {
            return Ok(());
        }
        let authority = match (to_self, url.port()) {
            (true, _) => "self".to_string(),
            (false, Some(p)) => format!("{host}:{p}"),
            (false, None) => host.to_string(),
        };
        let suggestion = format!("{scheme}://{authority}");
        Err(Denied {
            message: format!(
                "Component {:?} tried an outbound request to non-allowed host '{suggestion}'. \
                 To allow requests, add 'allowed_outbound_hosts = [\"{suggestion}\"]' to the \
                 manifest component section [component.{}].",
                self.component_id, self.component_id
            ),
        })
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<AllowedHost, String> {
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} has no scheme; write <scheme>://<host>[:<port>], e.g. \
                 \"https://api.example.com\" (use '*' as a wildcard for each part)"
            ));
        };
        let (host, port) = split_host_port(rest)?;
        let port = PortRule::parse(port, scheme).map_err(|m| format!("{url:?}: {m}"))?;
        let scheme = SchemeRule::parse(scheme).map_err(|m| format!("{url:?}: {m}"))?;
        let host = HostRule::parse(host).map_err(|m| format!("{url:?}: {m}"))?;
        Ok(AllowedHost { scheme, host, port })
    }
}

/// Split `host[:port][/]` like Spin: the last ':' starts the port unless the whole text
/// is a host (an IPv6 literal).
fn split_host_port(rest: &str) -> Result<(&str, &str), String> {
    match rest.rsplit_once(':') {
        None => Ok((rest, "")),
        Some((h, "")) => Ok((h, "")),
        Some((h, tail)) => {
            if HostRule::parse(rest).is_ok() {
                return Ok((rest, ""));
            }
            let port = match tail.split_once('/') {
                Some((port, "")) => port,
                Some(_) => return Err(format!("{rest:?} has a path, which is not allowed")),
                None => tail,
            };
            Ok((h, port))
        }
    }
}

impl SchemeRule {
    fn parse(scheme: &str) -> Result<SchemeRule, String> {
        if scheme == "*" {
            return Ok(SchemeRule::Any);
        }
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("invalid scheme {scheme:?}: letters only, or '*'"));
        }
        Ok(SchemeRule::Is(scheme.to_ascii_lowercase()))
    }

    fn allows(&self, scheme: &str) -> bool {
        match self {
            SchemeRule::Any => true,
            SchemeRule::Is(s) => s == scheme,
        }
    }
}

impl HostRule {
    fn parse(host: &str) -> Result<HostRule, String> {
        let host = host.trim();
        if host == "*" {
            return Ok(HostRule::Any);
        }
        if is_self_host(host) {
            return Ok(HostRule::ToSelf);
        }
        if host.starts_with('{') {
            return Err("host lists are not supported; write one entry per host".into());
        }
        if let Some(cidr) = parse_cidr(host) {
            return cidr;
        }
        let host = host.strip_suffix('/').unwrap_or(host);
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        if host.contains('/') {
            return Err("an allowed host must not include a path".into());
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.contains('*') {
                return Err(
                    "a wildcard is allowed only as the first label (`*.example.com`)".into(),
                );
            }
            return match Host::parse(domain) {
                Ok(Host::Domain(d)) => Ok(HostRule::AnySubdomain(format!(".{d}"))),
                Ok(_) => Err(format!(
                    "`*.{domain}`: the wildcard suffix must be a domain"
                )),
                Err(e) => Err(format!("invalid wildcard host `*.{domain}`: {e}")),
            };
        }
        if host.contains('*') {
            return Err("a wildcard is allowed only as the first label (`*.example.com`)".into());
        }
        Host::parse(host)
            .map(HostRule::Literal)
            .map_err(|e| format!("invalid host {host:?}: {e}"))
    }

    fn allows(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (HostRule::Any, _) => true,
            (HostRule::AnySubdomain(suffix), Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (HostRule::AnySubdomain(_), Host::Ipv4(_) | Host::Ipv6(_)) => false,
            (HostRule::Literal(lit), h) => *lit == h.to_owned(),
            (HostRule::Cidr(net, bits), Host::Ipv4(ip)) => {
                cidr_contains(*net, *bits, IpAddr::V4(*ip))
            }
            (HostRule::Cidr(net, bits), Host::Ipv6(ip)) => {
                cidr_contains(*net, *bits, IpAddr::V6(*ip))
            }
            (HostRule::Cidr(..), Host::Domain(_)) => false,
            // Self is matched separately: it addresses the app, not a network host.
            (HostRule::ToSelf, _) => false,
        }
    }
}

fn parse_cidr(host: &str) -> Option<Result<HostRule, String>> {
    let (addr, bits) = host.split_once('/')?;
    let addr: IpAddr = addr.trim_matches(['[', ']']).parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    Some(match bits.parse::<u8>() {
        Ok(b) if b <= max => Ok(HostRule::Cidr(addr, b)),
        _ => Err(format!("invalid CIDR prefix length {bits:?} (0..={max})")),
    })
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

impl PortRule {
    fn parse(port: &str, scheme: &str) -> Result<PortRule, String> {
        if port.is_empty() {
            return well_known_port(scheme).map(PortRule::Port).ok_or_else(|| {
                format!("no port given and scheme {scheme:?} has no well-known port; add one")
            });
        }
        if port == "*" {
            return Ok(PortRule::Any);
        }
        if port.starts_with('{') {
            return Err("port lists are not supported; write one entry per port".into());
        }
        if let Some((start, end)) = port.split_once("..") {
            let parse = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| format!("port range {port:?} contains a non-number"))
            };
            let (start, end) = (parse(start)?, parse(end)?);
            if start >= end {
                return Err(format!(
                    "port range {port:?} is empty (the end is excluded)"
                ));
            }
            return Ok(PortRule::Range(start, end));
        }
        port.parse::<u16>()
            .map(PortRule::Port)
            .map_err(|_| format!("port {port:?} is not a number in 0..=65535"))
    }

    fn allows(&self, port: Option<u16>) -> bool {
        match (self, port) {
            (PortRule::Any, _) => true,
            (PortRule::Port(p), Some(q)) => *p == q,
            (PortRule::Range(start, end), Some(q)) => (*start..*end).contains(&q),
            (PortRule::Port(_) | PortRule::Range(..), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        let resolve = |name: &str| match name {
            "channel_host" => Some("pay.example.com".to_string()),
            "channel_port" => Some("8443".to_string()),
            "optional_endpoint" => Some(String::new()),
            _ => None,
        };
        AllowedHosts::parse("spin.toml", "authorize", &entries, &resolve).unwrap()
    }

    fn allows(h: &AllowedHosts, url: &str) -> bool {
        h.check(&url::Url::parse(url).unwrap()).is_ok()
    }

    #[test]
    fn listed_hosts_are_allowed_with_default_ports() {
        // Proves a plain entry allows its host on the scheme's default port only.
        let h = hosts(&["https://api.example.com", "http://localhost:8080"]);
        assert!(allows(&h, "https://api.example.com/v1/pay"));
        assert!(allows(&h, "https://api.example.com:443/"));
        assert!(!allows(&h, "https://api.example.com:8443/"));
        assert!(!allows(&h, "http://api.example.com/"));
        assert!(allows(&h, "http://localhost:8080/x"));
        assert!(!allows(&h, "http://localhost/x"));
    }

    #[test]
    fn denied_requests_name_the_entry_to_add() {
        // Proves denial is the default and the message suggests the exact manifest entry.
        let h = hosts(&[]);
        let denied = h
            .check(&url::Url::parse("http://localhost:8080/x").unwrap())
            .unwrap_err();
        assert!(
            denied
                .message
                .contains("allowed_outbound_hosts = [\"http://localhost:8080\"]"),
            "{}",
            denied.message
        );
        assert!(denied.message.contains("authorize"));
        let denied = h
            .check(&url::Url::parse("https://api.example.com/").unwrap())
            .unwrap_err();
        assert!(
            denied.message.contains("[\"https://api.example.com\"]"),
            "{}",
            denied.message
        );
    }

    #[test]
    fn templated_entries_render_from_variables() {
        // Proves `{{ var }}` templates resolve, and an empty rendering is skipped.
        let h = hosts(&[
            "https://{{ channel_host }}:{{channel_port}}",
            "{{ optional_endpoint }}",
        ]);
        assert!(allows(&h, "https://pay.example.com:8443/notify"));
        assert!(!allows(&h, "https://pay.example.com/notify"));
        let entries = vec!["https://{{ missing }}".to_string()];
        let err = AllowedHosts::parse("spin.toml", "authorize", &entries, &|_| None).unwrap_err();
        assert_eq!(err.field, "component.authorize.allowed_outbound_hosts[0]");
    }

    #[test]
    fn wildcard_hosts_match_subdomains_only() {
        // Proves `*.example.com` matches subdomains but not the bare domain or look-alikes.
        let h = hosts(&["https://*.example.com"]);
        assert!(allows(&h, "https://api.example.com/"));
        assert!(allows(&h, "https://a.b.example.com/"));
        assert!(!allows(&h, "https://example.com/"));
        assert!(!allows(&h, "https://evilexample.com/"));
    }

    #[test]
    fn wildcard_ports_schemes_and_ranges() {
        // Proves `*` ports/schemes and `start..end` ranges (end excluded).
        let h = hosts(&["*://example.com:*", "http://127.0.0.1:3000..3010"]);
        assert!(allows(&h, "http://example.com:1234/"));
        assert!(allows(&h, "https://example.com/"));
        assert!(allows(&h, "http://127.0.0.1:3009/"));
        assert!(!allows(&h, "http://127.0.0.1:3010/"));
        let all = hosts(&["*://*:*"]);
        assert!(allows(&all, "https://anything.test:9/"));
    }

    #[test]
    fn self_requests_need_a_self_entry() {
        // Proves http://self is allowed by `http://self` (any port) and denied otherwise.
        let h = hosts(&["http://self"]);
        assert!(allows(&h, "http://self/v1/payments"));
        assert!(!allows(&h, "http://localhost/"));
        let denied = hosts(&["http://localhost"])
            .check(&url::Url::parse("http://self/x").unwrap())
            .unwrap_err();
        assert!(
            denied.message.contains("[\"http://self\"]"),
            "{}",
            denied.message
        );
    }

    #[test]
    fn service_chaining_hosts_are_listed_like_any_other() {
        // Proves `*.spin.internal` allows every component and `<id>.spin.internal` only one.
        let any = hosts(&["http://*.spin.internal"]);
        assert!(allows(&any, "http://query.spin.internal/v1/payments"));
        let one = hosts(&["http://risk-check.spin.internal"]);
        assert!(allows(&one, "http://risk-check.spin.internal/x"));
        assert!(!allows(&one, "http://query.spin.internal/x"));
        assert_eq!(
            service_chaining_target("query.spin.internal"),
            Some("query")
        );
        assert_eq!(service_chaining_target("query.example.com"), None);
    }

    #[test]
    fn cidr_and_ip_literals_match_addresses() {
        // Proves IP literals and CIDR blocks match the right addresses.
        let h = hosts(&["http://10.0.0.0/8:*", "http://[::1]:8080"]);
        assert!(allows(&h, "http://10.1.2.3:99/"));
        assert!(!allows(&h, "http://11.0.0.1:99/"));
        assert!(allows(&h, "http://[::1]:8080/"));
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        // Proves bad entries fail: no scheme, path, bad port, mid wildcard, allow-all keyword.
        for bad in [
            "example.com",
            "https://example.com/path",
            "https://example.com:http",
            "https://ex*ample.com",
            "ftp2://x",
            "insecure:allow-all",
            "foo://example.com",
            "https://example.com:90..80",
        ] {
            assert!(validate_entry(bad, &|_| true).is_err(), "{bad}");
        }
        assert!(validate_entry("https://{{ nope }}", &|_| false).is_err());
        assert!(validate_entry("https://{{ yes }}", &|_| true).is_ok());
    }
}
