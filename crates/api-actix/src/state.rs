use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::{ChatService, GenerationLog};

use crate::client_ip::IpNetwork;
use crate::generations::Generations;
use crate::rate_limit::{ClientLimits, RateLimit};

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP layer itself needs to know.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a client has to send a request body once its head is in; slower gets 408.
    pub body_timeout: Duration,
    /// Origins allowed by CORS (`*` allows any); credentials are never allowed.
    pub cors_allowed_origins: Vec<String>,
    /// The built web client served at `/`, if any.
    pub web_dist_dir: Option<PathBuf>,
    /// Send `Strict-Transport-Security` (only behind HTTPS).
    pub hsts: bool,
    /// Host names (lower case, no port) a request's `Host` may name; `*` for any. Others get 421.
    pub allowed_hosts: Vec<String>,
    /// Answer `/metrics` to requests a proxy forwarded; otherwise they get 404.
    pub metrics_through_proxies: bool,
    /// Requests per client (an IPv4 address or an IPv6 /64); `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Proxies whose `X-Forwarded-For` names the client; empty to always use the peer address.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Event streams a client (an IPv4 address or an IPv6 /64) may have open at once; 0 for no
    /// limit.
    pub max_streams_per_client: usize,
    /// Largest request target plus headers, in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// How long `/readyz` waits for storage's check before it answers 503. Longer than storage's
    /// own wait for a connection, so a busy storage (which still counts as ready) says so first.
    pub readiness_deadline: Duration,
    /// Silence in an event stream after which a comment line is sent, so that proxies keep an idle
    /// stream open and a client gone away is noticed; `None` for never.
    pub stream_keep_alive: Option<Duration>,
}

/// Shared by every worker: the use cases, the background generations and the metrics.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<ChatService>,
    pub generations: Generations,
    /// Where streamed replies are logged so clients can resume them.
    pub generation_log: Arc<dyn GenerationLog>,
    pub metrics: Option<MetricsRenderer>,
    pub settings: Arc<ApiSettings>,
    /// Per-client limiters, shared by every worker; build with `ClientLimits::from(&settings)`.
    pub limits: ClientLimits,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
