//! The `quantd` binary: parse the command line, set up logging, run the library.

use clap::Parser;
use quantd::config::{Cli, Command, LogFormat, Settings};
use quantd::startup::{open_store, shutdown_signal, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(Settings::from_env()?).await,
        Some(Command::Serve(settings)) => serve(settings).await,
        Some(Command::Migrate(settings)) => {
            quantd::telemetry::init(settings.log_format);
            std::fs::create_dir_all(&settings.data_dir)?;
            open_store(&settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::Quantize(args)) => {
            quantd::telemetry::init(LogFormat::Text);
            quantd::offline::run(args)
        }
        Some(Command::Openapi) => {
            quantd::telemetry::init(LogFormat::Text);
            println!("{}", quantd::http::openapi().to_pretty_json()?);
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    quantd::telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    app.run().await
}
