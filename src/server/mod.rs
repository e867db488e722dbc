//! The HTTP server: listener, connection handling, graceful shutdown.

mod admin;
pub mod auth;
mod explain;
mod handlers;
pub mod keys;
mod meter;
mod mirror;
mod probes;
pub mod relay;
pub mod reload;
mod respond;
pub mod stack;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

pub use state::Gateway;

/// Serves until `shutdown` resolves; then `/ready` fails at once, new
/// connections are still accepted for `server.shutdown_delay` (so load
/// balancers that poll `/ready` move away first), then the listener closes
/// and in-flight requests and streams get `server.shutdown_grace` to finish.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let app = stack::app(gw.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own hard caps stay above the configured header limit, so the
    // limit answers an OpenAI-shaped 431 rather than hyper's empty one.
    let hard_header_cap = gw.settings.max_header_bytes.saturating_mul(2).max(16 << 10);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(hard_header_cap);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(hard_header_cap).unwrap_or(u32::MAX));
    let accept = |stream: TcpStream| {
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    };

    let discovery = if gw.router.load().discovers() {
        // The first list before /ready says yes, so discovered names answer at once;
        // bounded, so an unreachable Ollama does not hold the gateway back.
        let _ = tokio::time::timeout(FIRST_DISCOVERY, gw.router.load_full().refresh()).await;
        Some(tokio::spawn(discover_models(gw.clone())))
    } else {
        None
    };
    let probes = tokio::spawn(probes::run(gw.clone()));
    gw.set_ready(true);
    tokio::pin!(shutdown);
    // Armed by the shutdown signal: the end of `shutdown_delay`.
    let stop_accepting = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(stop_accepting);
    let mut draining = false;
    loop {
        tokio::select! {
            () = &mut stop_accepting, if draining => break,
            () = &mut shutdown, if !draining => {
                gw.set_ready(false);
                let delay = gw.settings.shutdown_delay;
                if delay.is_zero() {
                    break;
                }
                tracing::info!(delay_secs = delay.as_secs_f64(), "shutting down: /ready fails, still accepting");
                stop_accepting.as_mut().reset(tokio::time::Instant::now() + delay);
                draining = true;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream),
                Err(e) => backoff(e).await,
            },
        }
    }
    drop(listener);
    if let Some(task) = discovery {
        task.abort();
    }
    probes.abort();
    tracing::info!(
        grace_secs = gw.settings.shutdown_grace.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    match tokio::time::timeout(gw.settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("drain deadline passed; closing the remaining connections"),
    }
    Ok(())
}

/// How often providers that list their own models are asked again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
/// How long start-up waits for the first model lists.
const FIRST_DISCOVERY: Duration = Duration::from_secs(2);

/// Keeps the discovered models current, until shutdown.
async fn discover_models(gw: Arc<Gateway>) {
    let first = tokio::time::Instant::now() + DISCOVERY_INTERVAL;
    let mut every = tokio::time::interval_at(first, DISCOVERY_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        gw.router.load_full().refresh().await;
    }
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn backoff(error: std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
