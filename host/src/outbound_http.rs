//! Outbound HTTP from guests ([`WasiHttpHooks::send_request`]): the
//! `allowed_outbound_hosts` check, service chaining (`http://<id>.spin.internal`) and self
//! requests (`http://self`, `http://self.alt`, relative URLs) served in-process, and
//! everything else over the network ([`crate::outbound_network`]) with connect and
//! response timeouts and the runtime config's `block_networks`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::app::{Dispatcher, Origin};
use crate::blocked_networks::BlockedNetworks;
use crate::state::ComponentEnv;

/// Time allowed to open a TCP (and TLS) connection to an outside host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an outside host to start answering, and between two body chunks.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Suffix of service-chaining hosts.
const CHAINING_SUFFIX: &str = ".spin.internal";

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
)>;

/// Most (component, origin) denials remembered as already logged.
pub const DENIALS_REMEMBERED_MAX: usize = 1024;

/// The app-wide rules of outbound HTTP beyond each component's allow-list.
pub struct OutboundPolicy {
    /// The runtime config's `block_networks`.
    pub(crate) blocked: BlockedNetworks,
    /// Which denials were already logged, so each (component, origin) is explained once
    /// rather than on every request.
    denials: Mutex<BTreeSet<(String, String)>>,
    /// The app's idle keep-alive connections.
    pub(crate) pool: Arc<crate::outbound_network::Pool>,
}

impl OutboundPolicy {
    /// A policy that refuses connections to `blocked`, with a connection pool pruned on
    /// the current runtime.
    pub(crate) fn new(blocked: BlockedNetworks) -> Self {
        let pool = Arc::default();
        crate::outbound_network::spawn_pruner(&pool, crate::outbound_network::POOL_PRUNE_EVERY);
        OutboundPolicy {
            blocked,
            denials: Mutex::default(),
            pool,
        }
    }

    /// Whether this denial is the first of (`component`, `origin`) to be logged. The set
    /// is bounded (origins may come from merchants' notify URLs): once full, it starts
    /// again, so a denial may be logged again, never more than once per
    /// [`DENIALS_REMEMBERED_MAX`] others.
    fn first_denial(&self, component: &str, origin: &str) -> bool {
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        let key = (component.to_string(), origin.to_string());
        if denials.contains(&key) {
            return false;
        }
        if denials.len() >= DENIALS_REMEMBERED_MAX {
            denials.clear();
        }
        denials.insert(key)
    }
}

/// The hooks of one store: which component is calling, and the app to chain into.
pub struct OutboundHooks {
    pub(crate) env: Arc<ComponentEnv>,
    pub(crate) dispatcher: Weak<Dispatcher>,
    pub(crate) policy: Arc<OutboundPolicy>,
}

/// Where an outbound request goes.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// `http://<id>.spin.internal`: component `id`, in-process.
    Chained(String),
    /// `http://self` (or a relative URL): the app's own router, in-process.
    SelfApp,
    /// Anything else: the network.
    Network,
}

/// Where `uri` goes, judged on its host as the allow-list judges it: host names are
/// case-insensitive, so `http://SELF:6379` is the app itself (and allowed only as `self`
/// is), never a DNS name `SELF` reached on a port nobody checked.
fn destination(uri: &http::Uri) -> Destination {
    let host = uri.host().map(str::to_ascii_lowercase);
    match host.as_deref() {
        None | Some("") | Some("self") | Some("self.alt") => Destination::SelfApp,
        Some(host) => match host.strip_suffix(CHAINING_SUFFIX) {
            Some(id) if !id.is_empty() => Destination::Chained(id.to_string()),
            _ => Destination::Network,
        },
    }
}

/// The URL the allow-list judges: relative and `self.alt` requests count as `self`.
fn url_for_check(uri: &http::Uri, dest: &Destination) -> Option<url::Url> {
    let text = match dest {
        Destination::SelfApp => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let paq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            format!("{scheme}://self{paq}")
        }
        Destination::Chained(_) | Destination::Network => uri.to_string(),
    };
    url::Url::parse(&text).ok()
}

impl OutboundHooks {
    fn check_allowed(&self, uri: &http::Uri, dest: &Destination) -> Result<(), HttpError> {
        let Some(url) = url_for_check(uri, dest) else {
            return Err(HttpError::HttpRequestUriInvalid);
        };
        match self.env.allowed_hosts.check(&url) {
            Ok(()) => Ok(()),
            Err(denied) => {
                let origin = url.origin().ascii_serialization();
                if self.policy.first_denial(&self.env.id, &origin) {
                    tracing::warn!(component = %self.env.id, url = %origin, "outbound request denied: {}", denied.message);
                }
                Err(HttpError::HttpRequestDenied)
            }
        }
    }
}

fn with_default_timeouts(options: Option<RequestOptions>) -> RequestOptions {
    let mut options = options.unwrap_or_default();
    options.connect_timeout = Some(
        options
            .connect_timeout
            .unwrap_or(CONNECT_TIMEOUT)
            .min(CONNECT_TIMEOUT),
    );
    options.first_byte_timeout = Some(
        options
            .first_byte_timeout
            .unwrap_or(RESPONSE_TIMEOUT)
            .min(RESPONSE_TIMEOUT),
    );
    options.between_bytes_timeout = Some(
        options
            .between_bytes_timeout
            .unwrap_or(RESPONSE_TIMEOUT)
            .min(RESPONSE_TIMEOUT),
    );
    options
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let dest = destination(request.uri());
        if let Err(e) = self.check_allowed(request.uri(), &dest) {
            return Box::new(async move { Err(e) });
        }
        let caller = self.env.id.clone();
        match dest {
            Destination::Network => {
                let policy = self.policy.clone();
                Box::new(async move {
                    let options = with_default_timeouts(options);
                    crate::outbound_network::send(request, options, &policy.blocked, &policy.pool)
                        .await
                })
            }
            Destination::Chained(_) | Destination::SelfApp => {
                let Some(dispatcher) = self.dispatcher.upgrade() else {
                    return Box::new(async { Err(HttpError::DestinationUnavailable) });
                };
                let origin = match dest {
                    Destination::Chained(id) => {
                        if !dispatcher.has_component(&id) {
                            return Box::new(async { Err(HttpError::DestinationNotFound) });
                        }
                        Origin::Chained { component: id }
                    }
                    Destination::SelfApp | Destination::Network => Origin::SelfRequest,
                };
                Box::new(async move {
                    tracing::debug!(%caller, ?origin, "in-process request");
                    let resp = dispatcher.dispatch(request, origin).await;
                    Ok((
                        resp,
                        Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaining_self_and_network_hosts_are_told_apart() {
        // Proves the destination is read from the host part alone, Spin's way.
        let d = |s: &str| destination(&s.parse::<http::Uri>().unwrap());
        assert_eq!(
            d("http://query.spin.internal/x"),
            Destination::Chained("query".into())
        );
        assert_eq!(d("http://self/x"), Destination::SelfApp);
        assert_eq!(d("http://self.alt/x"), Destination::SelfApp);
        assert_eq!(d("/relative"), Destination::SelfApp);
        assert_eq!(d("http://.spin.internal/x"), Destination::Network);
        assert_eq!(d("https://example.com/x"), Destination::Network);
        // Host names are case-insensitive, as the allow-list reads them.
        assert_eq!(d("http://SELF:6379/x"), Destination::SelfApp);
        assert_eq!(d("http://Self.Alt/x"), Destination::SelfApp);
        assert_eq!(
            d("http://Query.SPIN.internal/x"),
            Destination::Chained("query".into())
        );
    }

    #[test]
    fn the_logged_denials_are_bounded() {
        // Proves the set of denials already logged never grows past its cap however many
        // origins are denied, and that a denial is logged once while remembered.
        let policy = OutboundPolicy::new(BlockedNetworks::default());
        assert!(policy.first_denial("c", "https://a.test"));
        assert!(!policy.first_denial("c", "https://a.test"));
        for i in 0..3 * DENIALS_REMEMBERED_MAX {
            policy.first_denial("c", &format!("https://{i}.test"));
            assert!(policy.denials.lock().unwrap().len() <= DENIALS_REMEMBERED_MAX);
        }
    }

    #[test]
    fn relative_requests_are_checked_as_self() {
        // Proves a relative URL is judged by the allow-list as http://self.
        let uri: http::Uri = "/a?b=1".parse().unwrap();
        let url = url_for_check(&uri, &Destination::SelfApp).unwrap();
        assert_eq!(url.as_str(), "http://self/a?b=1");
    }

    #[test]
    fn guest_timeouts_are_capped_by_the_host() {
        // Proves a guest cannot ask for longer timeouts than the host allows.
        let asked = RequestOptions {
            connect_timeout: Some(Duration::from_secs(3600)),
            first_byte_timeout: Some(Duration::from_millis(5)),
            between_bytes_timeout: None,
        };
        let got = with_default_timeouts(Some(asked));
        assert_eq!(got.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(got.first_byte_timeout, Some(Duration::from_millis(5)));
        assert_eq!(got.between_bytes_timeout, Some(RESPONSE_TIMEOUT));
    }
}
