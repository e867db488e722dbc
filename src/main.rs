//! The `tollgate` command line: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tollgate::config::{self, LogFormat};
use tollgate::server::{self, Gateway};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An OpenAI-compatible LLM gateway: one endpoint, many backends, every token metered."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file.
        #[arg(
            short,
            long,
            env = "TOLLGATE_CONFIG",
            default_value = "config/tollgate.yaml"
        )]
        config: PathBuf,
        /// Listen on this address instead of the config's `server.listen`.
        #[arg(short, long, env = "TOLLGATE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config file and report every mistake with its line.
    Check {
        /// The config file.
        config: PathBuf,
    },
    /// Exit 0 if a running gateway answers GET /health (for container health checks).
    Healthcheck {
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:4000")]
        addr: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Healthcheck { addr } => healthcheck(addr),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            let missing: Vec<String> = cfg
                .providers
                .iter()
                .filter_map(|p| match &p.kind {
                    config::ProviderKind::OpenAi(h)
                    | config::ProviderKind::Azure { http: h, .. } => match &h.key {
                        config::KeyState::Missing(vars) => Some(format!(
                            "  provider `{}`: {} not set; its models will answer 503 until it is",
                            p.name,
                            vars.join(", ")
                        )),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            println!(
                "{}: ok ({} providers, {} models)",
                path.display(),
                cfg.providers.len(),
                cfg.models.len()
            );
            for line in missing {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{} error{} in {}",
                errors.errors.len(),
                if errors.errors.len() == 1 { "" } else { "s" },
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> ExitCode {
    let mut cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "tollgate did not start: fix the config and run `tollgate check {}`",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = listen {
        cfg.server.listen = addr;
    }
    init_logging(cfg.logging.format, cfg.logging.level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %cfg.server.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or_else(|_| cfg.server.listen.to_string(), |a| a.to_string());
        let gateway = Arc::new(Gateway::from_config(&cfg));
        tracing::info!(%addr, config = %path.display(), models = cfg.models.len(), providers = cfg.providers.len(), "tollgate listening");
        match server::serve(listener, gateway, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// A blocking one-shot GET, so that minimal images need no curl.
fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let result = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        s.write_all(
            format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head)
    });
    match result {
        Ok(head) if head.starts_with(b"HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!("unhealthy: {}", String::from_utf8_lossy(&head));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}
