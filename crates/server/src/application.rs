use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api_actix::{ApiSettings, AppState, ClientLimits, Generations, HttpSettings};
use domain::{ChatService, ChatServiceConfig};

use crate::settings::Settings;
use crate::telemetry;
use crate::wiring::{build_assistant, build_generation_log, build_repository};

/// The running service: what `main` runs and what tests start on port 0.
pub struct Application {
    port: u16,
    server: api_actix::Server,
    service: Arc<ChatService>,
    generations: Generations,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener, builds the assistant and the generation log, then opens storage
    /// (running migrations). Storage comes last so that a start that fails (the port taken,
    /// Redis down) leaves it as it was; the bound listener answers nothing until serving starts.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let address = (settings.server.host.as_str(), settings.server.port);
        let listener = TcpListener::bind(address).with_context(|| {
            format!(
                "cannot listen on {}:{} (server.host, server.port)",
                settings.server.host, settings.server.port
            )
        })?;
        let port = listener.local_addr()?.port();
        // The recorder comes before the adapters, so they can describe their metrics as they are
        // built.
        let metrics = telemetry::metrics_renderer();
        let assistant = build_assistant(&settings.assistant, &settings.cache)?;
        let generation_log = build_generation_log(&settings.cache).await?;
        let repository = build_repository(&settings.storage).await?;
        let service = Arc::new(ChatService::new(
            repository,
            assistant,
            ChatServiceConfig {
                max_message_chars: settings.limits.max_message_chars,
            },
        ));
        service
            .ensure_default_conversation()
            .await
            .context("cannot create the default conversation")?;

        let web_dist_dir = Some(settings.web.dist_dir.clone()).filter(|dir| dir.is_dir());
        if web_dist_dir.is_none() {
            tracing::info!(
                dist_dir = %settings.web.dist_dir.display(),
                "no built web client there; serving the API only"
            );
        }
        let generations = Generations::new(tokio::runtime::Handle::current());
        let api_settings = ApiSettings {
            max_body_bytes: settings.limits.max_body_bytes,
            body_timeout: Duration::from_secs(settings.server.client_request_timeout_secs),
            cors_allowed_origins: settings.cors.allowed_origins.clone(),
            web_dist_dir,
            hsts: settings.security.hsts,
            allowed_hosts: settings.allowed_hosts(),
            metrics_through_proxies: settings.security.metrics_through_proxies,
            rate_limit: settings.rate_limit.limit(),
            trusted_proxies: settings.rate_limit.trusted_proxy_networks()?,
            max_streams_per_client: settings.limits.max_streams_per_client,
            max_header_bytes: settings.limits.max_header_bytes,
            // A second past the longest a storage call waits for a connection.
            readiness_deadline: Duration::from_secs(settings.storage.connect_timeout_secs + 1),
            stream_keep_alive: (settings.server.stream_keep_alive_secs > 0)
                .then(|| Duration::from_secs(settings.server.stream_keep_alive_secs)),
        };
        let state = AppState {
            service: Arc::clone(&service),
            generations: generations.clone(),
            generation_log,
            metrics,
            limits: ClientLimits::from(&api_settings),
            settings: Arc::new(api_settings),
        };
        let http = HttpSettings {
            workers: settings.server.workers,
            keep_alive: Duration::from_secs(settings.server.keep_alive_secs),
            client_request_timeout: Duration::from_secs(
                settings.server.client_request_timeout_secs,
            ),
            shutdown_grace: settings.shutdown_grace(),
            max_connections: settings.server.max_connections_per_worker,
        };
        let server = api_actix::serve(listener, state, &http)?;
        Ok(Self {
            port,
            server,
            service,
            generations,
            shutdown_grace: settings.shutdown_grace(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests and replies finish within
    /// one grace period counted from the signal. Every acknowledged write is committed by then:
    /// each request waited for its commit before it was answered. Replies still being generated
    /// near the end of the grace period are cut short, so that what they have is stored and
    /// their streams end with `done` before the connections close. A second signal stops at
    /// once: replies are cut short and connections closed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // Listening from here on, so that no signal is lost between the first and the second.
        let mut signals = StopSignals::listen();
        let stop_requested = Arc::new(std::sync::OnceLock::new());
        let signal_seen = Arc::clone(&stop_requested);
        let generations = self.generations.clone();
        let server = self.server.handle();
        let grace = self.shutdown_grace;
        let (forced, forced_stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let signal = signals.next().await;
            let _ = signal_seen.set(Instant::now());
            tracing::info!(
                signal,
                grace_secs = grace.as_secs(),
                "stopping: no new connections; in-flight requests and replies get the grace period (a second signal stops at once)"
            );
            // Sends the stop at once; the returned future only tells when it is done.
            tokio::spawn(server.stop(true));
            let cut_time =
                tokio::time::sleep(grace.saturating_sub(time_to_store_cut_replies(grace)));
            tokio::pin!(cut_time);
            let mut cut = false;
            loop {
                tokio::select! {
                    () = &mut cut_time, if !cut => {
                        cut = true;
                        generations.cut_short();
                    }
                    signal = signals.next() => {
                        tracing::warn!(signal, "second signal: not waiting for open connections");
                        generations.cut_short();
                        let _ = forced.send(());
                        return;
                    }
                }
            }
        });
        let forced_stop = async {
            if forced_stop.await.is_err() {
                // No second signal came: the graceful stop runs to its end.
                std::future::pending::<()>().await;
            }
        };
        // Dropping the server future on a forced stop stops its workers at once, closing their
        // connections; requests they were serving may still have writes queued.
        let graceful = tokio::select! {
            served = self.server => {
                served?;
                true
            }
            () = forced_stop => false,
        };
        let in_flight = self.generations.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for replies in progress");
        }
        let spent = stop_requested
            .get()
            .map_or(Duration::ZERO, |signalled: &Instant| signalled.elapsed());
        let remaining = self.shutdown_grace.saturating_sub(spent);
        // Stopped at once by a second signal: replies cut short get the time kept for storing
        // them, not the rest of the grace period (one waiting for room in a full queue would
        // take it all).
        let remaining = if graceful {
            remaining
        } else {
            remaining.min(time_to_store_cut_replies(self.shutdown_grace))
        };
        let idle = self.generations.wait_idle(remaining).await;
        if !idle {
            tracing::warn!(
                unfinished = self.generations.in_flight(),
                "grace period over; replies that could not be stored in time are abandoned"
            );
        }
        if graceful && idle {
            self.service.close().await;
        } else {
            // Writes may still be on their way to storage: closing it now could not say so.
            tracing::warn!("stopped without closing storage; the next start recovers it");
        }
        Ok(())
    }
}

/// The end of the grace period kept for replies cut short to store what they have and send their
/// last event: a quarter of it, at most 3 s (a commit takes milliseconds; an outage fails in 2 s).
fn time_to_store_cut_replies(grace: Duration) -> Duration {
    (grace / 4).min(Duration::from_secs(3))
}

/// SIGTERM and SIGINT (Ctrl-C), listened to from creation on, so that one arriving between two
/// waits is not lost. The HTTP server does not watch signals itself: it would treat SIGINT as a
/// forced stop, dropping every stream.
struct StopSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}; it will not stop the server gracefully");
                    None
                }
            };
            Self {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The name of the next signal; never resolves when none can be listened to.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
                if let Some(signal) = signal {
                    if signal.recv().await.is_some() {
                        return;
                    }
                }
                std::future::pending().await
            }
            tokio::select! {
                () = received(self.terminate.as_mut()) => "SIGTERM",
                () = received(self.interrupt.as_mut()) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}
