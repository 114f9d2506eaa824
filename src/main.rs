use clap::Parser;
use mts_connector::config::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat, default: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // jsonrpsee logs whole request bodies (API keys, passwords) at debug and trace: cap
    // its targets whatever RUST_LOG asks for.
    for target in ["jsonrpsee-http", "jsonrpsee-server", "jsonrpsee_server", "jsonrpsee_core", "jsonrpsee-core"] {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A jq worker evaluates output formats for a running service: no runtime, no logging.
    if let Command::JqWorker(args) = &cli.command {
        let limits =
            mts_connector::jq::worker::Limits { cpu_seconds: args.cpu_seconds, memory_bytes: args.memory_bytes };
        return mts_connector::jq::worker::main(limits);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("mts-connector: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Command::Serve(args) => match args.resolve() {
            Ok(config) => {
                init_tracing(config.log_format, "info");
                mts_connector::server::serve(config, mts_connector::server::shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Demo => {
            // The demo prints its own story; the service's log would drown it.
            init_tracing(LogFormat::Text, "warn");
            mts_connector::demo::run().await
        }
        Command::FakeOdk(args) => {
            mts_connector::fakes::serve_fake_odk(args, mts_connector::server::shutdown_signal()).await
        }
        // The operator commands print their own messages and choose their exit code.
        operator @ (Command::Connectors(_) | Command::Import(_) | Command::Runs(_)) => {
            return mts_connector::cli::run(operator).await;
        }
        Command::JqWorker(_) => Err("the jq worker runs without the async runtime".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mts-connector: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
