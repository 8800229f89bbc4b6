//! Layered configuration: the embedded `config/default.toml`, then `default.toml` and
//! `<CHAT_ENV>.toml` from `CHAT_CONFIG_DIR` (default `./config`) when present, then environment
//! variables `CHAT__SECTION__KEY`. A bad value stops the start with a message naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;

const BUILT_IN_DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub assistant: AssistantSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub cors: CorsSettings,
    pub limits: LimitSettings,
    pub web: WebSettings,
    pub security: SecuritySettings,
    pub rate_limit: RateLimitSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub keep_alive_secs: u64,
    pub client_request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub max_connections_per_worker: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// May hold a password (PostgreSQL), so `Debug` never prints it.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
    /// PostgreSQL: longest a statement may run; 0 for no limit.
    pub statement_timeout_secs: u64,
    pub write_queue_capacity: usize,
    pub max_batch: usize,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("backend", &self.backend)
            .field("url", &"[redacted]")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .field("write_queue_capacity", &self.write_queue_capacity)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistantKind {
    Dummy,
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DummyModeSetting {
    Canned,
    Deterministic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DummySettings {
    pub mode: DummyModeSetting,
    pub word_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantSettings {
    pub kind: AssistantKind,
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<SecretString>,
    pub system_prompt: String,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub context_messages: usize,
    pub max_concurrency: usize,
    pub max_queue: usize,
    pub dummy: DummySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    None,
    Memory,
    Redis,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub kind: CacheKind,
    /// May hold a password, so `Debug` never prints it.
    pub url: String,
    pub key_prefix: String,
    pub ttl_secs: u64,
    pub max_entries: usize,
    pub stream_log_ttl_secs: u64,
}

impl std::fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSettings")
            .field("kind", &self.kind)
            .field("url", &"[redacted]")
            .field("key_prefix", &self.key_prefix)
            .field("ttl_secs", &self.ttl_secs)
            .field("max_entries", &self.max_entries)
            .field("stream_log_ttl_secs", &self.stream_log_ttl_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector's base URL, or the full `.../v1/traces` URL; empty for no export.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// Share of new traces exported, from 0 to 1.
    pub sample_ratio: f64,
    pub export_timeout_secs: u64,
    pub batch_size: usize,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_message_chars: usize,
    pub max_body_bytes: usize,
    /// Event streams one client address may have open at once; 0 for no limit.
    pub max_streams_per_client: usize,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per second per client address; 0 turns rate limiting off.
    pub per_second: f64,
    /// Requests a client may make at once after being idle.
    pub burst: u32,
    /// Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    pub dist_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub hsts: bool,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

fn invalid(key: &str, why: impl std::fmt::Display) -> SettingsError {
    SettingsError(format!("invalid value for `{key}`: {why}"))
}

impl Settings {
    /// Reads the layers from the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        let directory = std::env::var("CHAT_CONFIG_DIR").unwrap_or_else(|_| "config".to_owned());
        let environment = std::env::var("CHAT_ENV")
            .ok()
            .filter(|name| !name.is_empty());
        Self::load_from(
            Path::new(&directory),
            environment.as_deref(),
            Environment::default(),
        )
    }

    /// Reads the layers from `directory`, the named environment file and `variables`.
    pub fn load_from(
        directory: &Path,
        environment: Option<&str>,
        variables: Environment,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(BUILT_IN_DEFAULTS, FileFormat::Toml))
            .add_source(File::from(directory.join("default.toml")).required(false));
        if let Some(name) = environment {
            builder = builder
                .add_source(File::from(directory.join(format!("{name}.toml"))).required(false));
        }
        let settings: Settings = builder
            .add_source(
                variables
                    .prefix("CHAT")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("cors.allowed_origins")
                    .with_list_parse_key("rate_limit.trusted_proxies")
                    .try_parsing(true),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|error| SettingsError(format!("configuration error: {error}")))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if self.server.max_connections_per_worker == 0 {
            return Err(invalid(
                "server.max_connections_per_worker",
                "must be at least 1",
            ));
        }
        if self.server.client_request_timeout_secs == 0 {
            return Err(invalid(
                "server.client_request_timeout_secs",
                "must be at least 1",
            ));
        }
        self.storage.validate()?;
        if self.limits.max_message_chars == 0 {
            return Err(invalid("limits.max_message_chars", "must be at least 1"));
        }
        if self.limits.max_header_bytes < 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 1024"));
        }
        if self.limits.max_body_bytes < 64 {
            return Err(invalid("limits.max_body_bytes", "must be at least 64"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a level or filter such as \"info\"",
                    self.log.level
                ),
            ));
        }
        for origin in &self.cors.allowed_origins {
            let well_formed = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/'));
            if !well_formed {
                return Err(invalid(
                    "cors.allowed_origins",
                    format!("{origin:?} is not an origin like \"https://chat.example.com\""),
                ));
            }
        }
        if self.cache.kind == CacheKind::Redis
            && !(self.cache.url.starts_with("redis://") || self.cache.url.starts_with("rediss://"))
        {
            return Err(invalid("cache.url", "must be a redis:// or rediss:// URL"));
        }
        if self.cache.kind == CacheKind::Memory && self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be at least 1"));
        }
        self.rate_limit.validate()?;
        self.telemetry.validate()?;
        self.assistant.validate()
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }
}

impl StorageSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let is_postgres_url =
            self.url.starts_with("postgres://") || self.url.starts_with("postgresql://");
        match self.backend {
            StorageBackend::Sqlite
                if self.url.contains("://") && !self.url.starts_with("sqlite://") =>
            {
                Err(invalid(
                    "storage.url",
                    "the sqlite backend takes a file path such as \"chat.db\", not this URL",
                ))
            }
            StorageBackend::Postgres if !is_postgres_url => Err(invalid(
                "storage.url",
                "the postgres backend takes a URL such as \"postgres://user@host:5432/db\"",
            )),
            _ if self.url.trim().is_empty() => Err(invalid("storage.url", "must not be empty")),
            _ if self.pool_size == 0 => Err(invalid("storage.pool_size", "must be at least 1")),
            _ if self.write_queue_capacity == 0 => Err(invalid(
                "storage.write_queue_capacity",
                "must be at least 1",
            )),
            _ if self.max_batch == 0 => Err(invalid("storage.max_batch", "must be at least 1")),
            _ if self.connect_timeout_secs == 0 => Err(invalid(
                "storage.connect_timeout_secs",
                "must be at least 1",
            )),
            _ => Ok(()),
        }
    }

    /// The SQLite file; accepts a bare path or the `sqlite://` spelling some tools use.
    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(self.url.strip_prefix("sqlite://").unwrap_or(&self.url))
    }
}

impl RateLimitSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            return Err(invalid(
                "rate_limit.per_second",
                "must be 0 (off) or a positive number",
            ));
        }
        if self.per_second > 0.0 && self.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1"));
        }
        self.trusted_proxy_networks().map(|_| ())
    }

    /// The limit, or `None` when rate limiting is off.
    pub fn limit(&self) -> Option<api_actix::RateLimit> {
        (self.per_second > 0.0).then_some(api_actix::RateLimit {
            per_second: self.per_second,
            burst: self.burst,
        })
    }

    pub fn trusted_proxy_networks(&self) -> Result<Vec<api_actix::IpNetwork>, SettingsError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<api_actix::IpNetwork>()
                    .map_err(|error| invalid("rate_limit.trusted_proxies", error))
            })
            .collect()
    }
}

/// Where OTLP/HTTP collectors take traces, below their base URL.
const OTLP_TRACES_PATH: &str = "/v1/traces";

impl TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.otlp_endpoint.is_empty() {
            let url = reqwest::Url::parse(&self.otlp_endpoint)
                .map_err(|error| invalid("telemetry.otlp_endpoint", error))?;
            let is_base_url = matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none();
            if !is_base_url {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    "must be an http:// or https:// URL such as \"http://otel-collector:4318\"",
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.export_timeout_secs == 0 {
            return Err(invalid(
                "telemetry.export_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("telemetry.batch_size", "must be at least 1"));
        }
        if self.queue_capacity < self.batch_size {
            return Err(invalid(
                "telemetry.queue_capacity",
                "must be at least telemetry.batch_size",
            ));
        }
        Ok(())
    }

    /// Where to POST spans, or `None` when export is off.
    pub fn traces_url(&self) -> Option<String> {
        if self.otlp_endpoint.is_empty() {
            return None;
        }
        let base = self.otlp_endpoint.trim_end_matches('/');
        Some(if base.ends_with(OTLP_TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{OTLP_TRACES_PATH}")
        })
    }

    pub fn export_timeout(&self) -> Duration {
        Duration::from_secs(self.export_timeout_secs)
    }
}

impl AssistantSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.kind == AssistantKind::Openai {
            if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
                return Err(invalid(
                    "assistant.base_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if self.model.trim().is_empty() {
                return Err(invalid("assistant.model", "must not be empty"));
            }
            if self.max_concurrency == 0 {
                return Err(invalid("assistant.max_concurrency", "must be at least 1"));
            }
            if self.timeout_secs == 0 {
                return Err(invalid("assistant.timeout_secs", "must be at least 1"));
            }
        }
        Ok(())
    }
}
