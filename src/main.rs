//! The `tollgate` command line: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tollgate::config::{self, LogFormat};
use tollgate::metering::ledger::Ledger;
use tollgate::server::{self, Gateway};
use tracing_subscriber::EnvFilter;

// A request allocates and frees many small objects (headers, JSON values, the
// ledger row), often on another task: glibc's malloc took about a sixth of
// the gateway's instructions. jemalloc cut a request by 8% of its instructions
// and lowered peak RSS under load; mimalloc cut more but held 16-34 MiB more
// (docs/benchmarks.md). jemalloc does not build for MSVC targets.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = "config/tollgate.yaml")]
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
    /// Print usage from the ledger: requests, errors, tokens, cost, latency, by group.
    Report {
        /// The config file (its `ledger.url` is read).
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = "config/tollgate.yaml")]
        config: PathBuf,
        /// How far back: 30m, 24h, 7d...
        #[arg(long, default_value = "24h")]
        since: String,
        /// backend, model, route, key or team.
        #[arg(long, default_value = "backend")]
        by: String,
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Manage gateway keys (stored hashed in the ledger's database; needs `auth.managed_keys: true` to be accepted).
    Keys {
        /// The config file (its `ledger.url` is read).
        #[arg(
            short,
            long,
            env = "TOLLGATE_CONFIG",
            default_value = "config/tollgate.yaml",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Exit 0 if a running gateway answers GET /health (for container health checks).
    Healthcheck {
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:4000")]
        addr: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a key; it is printed once and only its digest is stored.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Its team (limits and budgets of `teams.<name>` in the config apply too).
        #[arg(long)]
        team: Option<String>,
        /// USD per UTC day.
        #[arg(long, value_name = "USD")]
        budget_daily: Option<String>,
        /// USD per UTC month.
        #[arg(long, value_name = "USD")]
        budget_monthly: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
        /// Print the key and its settings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves: ids, names, teams, limits).
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Revoke a key by its id: running gateways refuse it from their next refresh (`auth.key_refresh`) on.
    Revoke {
        /// The key's id, `k-` and 12 hex digits, as `keys list` shows it.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Healthcheck { addr } => healthcheck(addr),
        Command::Report {
            config,
            since,
            by,
            format,
        } => report(&config, &since, &by, &format),
        Command::Keys { config, action } => keys(&config, action),
    }
}

/// Connects to the config's ledger database (creating and migrating it if
/// needed) and runs `f` with it: reports read it, keys are kept in it.
fn with_store<T>(
    path: &std::path::Path,
    f: impl AsyncFnOnce(&tollgate::keys::KeyStore, &config::Config) -> Result<T, String>,
) -> Result<T, String> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    let Some(ledger) = &cfg.ledger else {
        return Err(format!(
            "{}: no `ledger` is configured (reports read it, and keys are kept in its database)",
            path.display()
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let store = tollgate::keys::KeyStore::open(&ledger.url)
            .await
            .map_err(|e| format!("cannot open the ledger's database: {e}"))?;
        let out = f(&store, &cfg).await;
        store.pool().close().await;
        out
    })
}

fn keys(path: &std::path::Path, action: KeysAction) -> ExitCode {
    use tollgate::keys::{NewKey, budget::parse_usd, store::key_table};
    let result = match action {
        KeysAction::Create {
            name,
            team,
            budget_daily,
            budget_monthly,
            rpm,
            tpm,
            json,
        } => {
            let usd = |flag: &str, v: Option<String>| {
                v.map(|t| parse_usd(&t).map_err(|e| format!("--{flag}: {e}")))
                    .transpose()
            };
            let new = (|| {
                Ok::<_, String>(NewKey {
                    name,
                    team,
                    budget_daily_usd: usd("budget-daily", budget_daily)?,
                    budget_monthly_usd: usd("budget-monthly", budget_monthly)?,
                    rpm,
                    tpm,
                })
            })();
            new.and_then(|new| {
                new.validate().map_err(|(message, _)| message)?;
                with_store(path, async |store, cfg| {
                    let (record, secret) = store
                        .create(&new)
                        .await
                        .map_err(|e| format!("cannot store the key: {e}"))?;
                    if json {
                        let mut v = serde_json::to_value(&record).unwrap_or_default();
                        v["key"] = secret.into();
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        println!("{secret}");
                        eprintln!(
                            "key {} ({}) created; it is shown only this once.",
                            record.id, record.name
                        );
                    }
                    if !cfg.managed_keys {
                        eprintln!(
                            "note: auth.managed_keys is off in {}: the gateway accepts this key once it is on",
                            path.display()
                        );
                    }
                    Ok(())
                })
            })
        }
        KeysAction::List { all, format } => {
            if !matches!(format.as_str(), "table" | "json") {
                eprintln!("--format: `{format}` is not table or json");
                return ExitCode::FAILURE;
            }
            with_store(path, async |store, _| {
                let keys = store
                    .list(all)
                    .await
                    .map_err(|e| format!("cannot read the keys: {e}"))?;
                if format == "json" {
                    println!("{}", serde_json::to_string_pretty(&keys).unwrap_or_default());
                } else {
                    print!("{}", key_table(&keys));
                }
                Ok(())
            })
        }
        KeysAction::Revoke { id } => with_store(path, async |store, _| {
            match store.revoke(&id).await.map_err(|e| format!("cannot revoke: {e}"))? {
                true => {
                    println!("revoked {id}");
                    Ok(())
                }
                false => Err(format!("no active key has the id {id}")),
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn report(path: &std::path::Path, since: &str, by: &str, format: &str) -> ExitCode {
    use tollgate::metering::report;
    let checked = (|| {
        let window = tollgate::config::parse_window(since).map_err(|e| format!("--since: {e}"))?;
        let by =
            report::By::parse(by).ok_or_else(|| format!("--by: `{by}` is not backend, model, route, key or team"))?;
        if !matches!(format, "table" | "json" | "csv") {
            return Err(format!("--format: `{format}` is not table, json or csv"));
        }
        Ok((report::since_ms(window), by))
    })();
    let result = checked.and_then(|(since_ms, by)| {
        with_store(path, async |store, _| {
            report::groups(store.pool(), since_ms, by)
                .await
                .map_err(|e| format!("cannot read the ledger: {e}"))
        })
    });
    match result {
        Ok(groups) => {
            let out = match format {
                "json" => serde_json::to_string_pretty(&groups).unwrap_or_default() + "\n",
                "csv" => report::csv(&groups),
                _ => report::table(&groups),
            };
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            if let Some(problem) = cfg.exposure_problem() {
                eprintln!("{}: {problem}", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} providers, {} models)",
                path.display(),
                cfg.providers.len(),
                cfg.models.len()
            );
            for (provider, vars) in cfg.providers_without_keys() {
                println!(
                    "  provider `{provider}`: {} not set; its models will answer 503 until it is",
                    vars.join(", ")
                );
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

/// How long shutdown waits for the usage ledger to write its queue.
const LEDGER_FLUSH: std::time::Duration = std::time::Duration::from_secs(15);

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
    if let Some(problem) = cfg.exposure_problem() {
        eprintln!("tollgate did not start: {problem}");
        return ExitCode::FAILURE;
    }
    let _log_flush = init_logging(cfg.logging.format, cfg.logging.level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        let gateway = Gateway::from_config(&cfg);
        let (ledger, writer) = match &cfg.ledger {
            None => (None, None),
            Some(settings) => match Ledger::open(settings, gateway.metrics.ledger_counters()).await {
                Ok((ledger, writer)) => (Some(ledger), Some(writer)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the usage ledger");
                    return ExitCode::FAILURE;
                }
            },
        };
        let store = match &cfg.ledger {
            // Managed keys, and the spend that budgets start from: their own pool, so
            // reports and refreshes never wait on the writer's connections; the
            // writer's pool has just migrated the schema.
            Some(settings) => match tollgate::keys::KeyStore::attach(&settings.url).await {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the key store (the ledger's database)");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let gateway = Arc::new(gateway.with_ledger(ledger).with_store(store));
        if let Err(e) = server::keys::load(&gateway).await {
            tracing::error!(error = %e, "cannot read the managed keys");
            return ExitCode::FAILURE;
        }
        if gateway.store.is_some() {
            tokio::spawn(server::keys::keep_current(gateway.clone(), cfg.key_refresh));
        }
        tokio::spawn(server::reload::watch(
            gateway.clone(),
            path.to_path_buf(),
            cfg.server.listen,
        ));
        for (provider, vars) in cfg.providers_without_keys() {
            tracing::warn!(provider, missing = %vars.join(", "), "provider has no API key: its models answer 503 until it is set");
        }
        if cfg.auth_keys.is_empty() && !cfg.managed_keys {
            tracing::warn!("auth.keys is empty: any client that reaches the gateway can use it");
        }
        tracing::info!(%addr, config = %path.display(), models = cfg.models.len(), providers = cfg.providers.len(), "tollgate listening");
        // The first SIGTERM/SIGINT drains; a second one exits at once.
        let (first_signal, drained) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            server::shutdown_signal().await;
            let _ = first_signal.send(());
            server::shutdown_signal().await;
            tracing::warn!("second signal: exiting without waiting for in-flight requests");
            std::process::exit(130);
        });
        let shutdown = async {
            let _ = drained.await;
        };
        let served = server::serve(listener, gateway, shutdown).await;
        if let Some(writer) = writer {
            // Every request has ended: the rows still queued are written before exit.
            if writer.finish(LEDGER_FLUSH).await {
                tracing::info!("usage ledger flushed");
            } else {
                tracing::error!("usage ledger: rows still queued after the flush deadline were lost");
            }
        }
        match served {
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
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
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

/// Logs go to stderr through a background writer thread, so a slow log
/// reader never stalls the request path; the returned guard flushes on exit.
fn init_logging(format: LogFormat, level: Option<&str>) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    // The default queue (128k lines) is allocated up front: 4 MiB of RSS for nothing.
    // 16k lines is far more than a burst between two writes; beyond it lines are dropped, not waited for.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(16_384)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
