use std::path::PathBuf;
use std::sync::Arc;

use domain::{ChatService, GenerationLog};

use crate::generations::Generations;

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP layer itself needs to know.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` allows any); credentials are never allowed.
    pub cors_allowed_origins: Vec<String>,
    /// The built web client served at `/`, if any.
    pub web_dist_dir: Option<PathBuf>,
    /// Send `Strict-Transport-Security` (only behind HTTPS).
    pub hsts: bool,
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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
