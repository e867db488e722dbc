//! Config hot reload: on SIGHUP, or when the file changes (checked every two
//! seconds), the file is loaded and validated whole; a good one is swapped
//! in atomically (requests in flight finish on the config they started
//! with), a bad one is logged with every mistake and counted, and the running
//! config stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::state::Gateway;
use crate::config;

/// How often the file's modification time and size are compared.
const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Runs until the process ends. `listen` is the address being served (a
/// reload cannot move it), for the exposure check.
pub async fn watch(gw: Arc<Gateway>, path: PathBuf, listen: SocketAddr) {
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let why = tokio::select! {
            () = hangup => "SIGHUP",
            _ = tick.tick() => {
                if stamp(&path) == seen {
                    continue;
                }
                "the file changed"
            }
        };
        // The version just read is not read again by the next poll.
        seen = stamp(&path);
        apply(&gw, &path, listen, why).await;
    }
}

async fn apply(gw: &Gateway, path: &Path, listen: SocketAddr, why: &str) {
    let loaded = match config::load(path) {
        Ok(mut cfg) => {
            cfg.server.listen = listen;
            match cfg.exposure_problem() {
                Some(problem) => Err(problem.to_string()),
                None => Ok(cfg),
            }
        }
        Err(errors) => Err(errors.to_string()),
    };
    match loaded {
        Ok(cfg) => {
            gw.reload(&cfg);
            gw.metrics.config_reload(true);
            tracing::info!(config = %path.display(), trigger = why, models = cfg.models.len(), routes = cfg.routes.len(), "config reloaded");
            let router = gw.router.load_full();
            if router.discovers() {
                router.refresh().await;
            }
        }
        Err(problem) => {
            gw.metrics.config_reload(false);
            tracing::error!(config = %path.display(), trigger = why, %problem, "config rejected; the running config stays");
        }
    }
}
