use std::process::ExitCode;
use std::time::Duration;

use server::{telemetry, Application, Settings};

const USAGE: &str = "\
chat-server: a self-hostable chat service (HTTP API and web client).

Usage: chat-server [--help | --version]

It takes no other arguments. Settings come from the built-in defaults, then
default.toml and $CHAT_ENV.toml in $CHAT_CONFIG_DIR (./config when unset), then
CHAT__SECTION__KEY environment variables (e.g. CHAT__SERVER__PORT=8080), each
layer over the ones before; see docs/configuration.md.";

/// How long the exit waits for database calls still running on blocking threads.
const BLOCKED_CALLS_WAIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // Arguments are no way to configure it: one that is not understood must not start a server
    // (and create a database) as if it had been.
    if let Some(argument) = std::env::args_os().nth(1) {
        return match argument.to_str() {
            Some("--help" | "-h") => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
            Some("--version" | "-V") => {
                println!("chat-server {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!(
                    "chat-server: unexpected argument {argument:?}; it takes none (see --help)"
                );
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("chat-server: {error}");
            return ExitCode::from(2);
        }
    };
    let trace_export = match telemetry::init_tracing(&settings.log, &settings.telemetry) {
        Ok(export) => export,
        Err(error) => {
            eprintln!("chat-server: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let exit_code = runtime.block_on(async {
        let application = match Application::build(settings).await {
            Ok(application) => application,
            Err(error) => {
                tracing::error!("cannot start: {error:#}");
                eprintln!("chat-server: cannot start: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(port = application.port(), "chat-server listening");
        match application.run_until_stopped().await {
            Ok(()) => {
                tracing::info!("chat-server stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "server failed");
                ExitCode::FAILURE
            }
        }
    });
    // A database call still running on a blocking thread (a batch behind a hung database after a
    // second signal, or a reply's store that outlived the grace period, a readiness check) would
    // hold the exit for as long as the database hangs, if the runtime were dropped: dropping waits
    // for them. Nothing such a call holds was acknowledged: every request is answered only after
    // its commit, so a reply still being stored now is lost as the grace period said it would be.
    runtime.shutdown_timeout(BLOCKED_CALLS_WAIT);
    // After serving: the spans of the last requests, those answered during the grace period
    // included, are queued by now.
    if let Some(export) = trace_export {
        export.shutdown();
    }
    exit_code
}
