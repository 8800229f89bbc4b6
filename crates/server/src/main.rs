use std::process::ExitCode;

use server::{telemetry, Application, Settings};

fn main() -> ExitCode {
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
    // After serving: the spans of the last requests, those answered during the grace period
    // included, are queued by now.
    if let Some(export) = trace_export {
        export.shutdown();
    }
    exit_code
}
