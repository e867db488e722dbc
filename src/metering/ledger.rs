//! The usage ledger: one row per request, written off the request path.
//!
//! A request's meter hands its row to a bounded queue and moves on; one
//! background task takes rows in batches (up to `batch` rows, or whatever
//! arrived within `flush_interval`) and inserts each batch in one
//! transaction. A full queue drops the row, and the drop is counted and
//! logged, never silent. On shutdown the queue is closed and drained: every
//! row queued is written before the process exits.
//!
//! SQLite (a file) or PostgreSQL, through one code path (sqlx's `Any`
//! driver, portable SQL, integer timestamps and costs). The schema is
//! created and migrated at start.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::Usage;
use crate::metering::cost::Pico;

/// Schema versions, applied in order once each; a version is never edited
/// once released, only followed by another.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS tollgate_usage (
        id TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        key_id TEXT,
        team TEXT,
        route TEXT NOT NULL,
        backend TEXT NOT NULL,
        provider TEXT NOT NULL,
        requested_model TEXT NOT NULL,
        served_model TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        usage_source TEXT NOT NULL,
        cost_pico BIGINT NOT NULL,
        cost_source TEXT NOT NULL,
        ttft_ms BIGINT,
        duration_ms BIGINT NOT NULL,
        status INTEGER NOT NULL,
        error_kind TEXT,
        stream INTEGER NOT NULL,
        shadow INTEGER NOT NULL
    )",
    ),
    (
        2,
        "CREATE INDEX IF NOT EXISTS tollgate_usage_ts ON tollgate_usage (ts_ms)",
    ),
    (
        3,
        // Gateway keys: the digest only, never the key.
        "CREATE TABLE IF NOT EXISTS tollgate_keys (
        id TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        team TEXT,
        budget_daily_pico BIGINT,
        budget_monthly_pico BIGINT,
        rpm BIGINT,
        tpm BIGINT,
        created_ms BIGINT NOT NULL,
        revoked_ms BIGINT
    )",
    ),
];

/// One request, as the ledger keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub id: String,
    pub ts_ms: i64,
    /// A digest prefix of the gateway key, never the key.
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub route: String,
    pub backend: String,
    pub provider: String,
    pub requested_model: String,
    pub served_model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    /// `reported`, `estimated` or `none`.
    pub usage_source: &'static str,
    pub cost_pico: i64,
    /// `catalog` or `none` (the model has no price).
    pub cost_source: &'static str,
    pub ttft_ms: Option<i64>,
    pub duration_ms: i64,
    pub status: i64,
    pub error_kind: Option<String>,
    pub stream: bool,
    pub shadow: bool,
}

impl Row {
    /// Fills the token, usage-source and cost columns.
    pub fn set_usage(&mut self, usage: Option<&Usage>, cost: Option<Pico>) {
        let u = usage.copied().unwrap_or_default();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.prompt_tokens = count(u.prompt_tokens);
        self.completion_tokens = count(u.completion_tokens);
        self.cached_tokens = count(u.cached_tokens);
        self.cache_write_tokens = count(u.cache_write_tokens);
        self.reasoning_tokens = count(u.reasoning_tokens);
        self.usage_source = match usage {
            None => "none",
            Some(u) if u.estimated => "estimated",
            Some(_) => "reported",
        };
        self.cost_pico = cost.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX));
        self.cost_source = if cost.is_some() { "catalog" } else { "none" };
    }

    /// Sets the start time (`ts_ms`) and `duration_ms` of a request that took `elapsed` until now.
    pub fn set_timing(&mut self, elapsed: Duration) {
        self.ts_ms = SystemTime::now()
            .checked_sub(elapsed)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        self.duration_ms = elapsed.as_millis() as i64;
    }
}

#[derive(Clone)]
pub struct LedgerSettings {
    /// `sqlite://path` (created if missing) or `postgres://...`.
    pub url: String,
    pub queue: usize,
    pub batch: usize,
    pub flush_interval: Duration,
}

/// The URL may hold a database password: debug output shows its scheme only.
impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split("://").next().unwrap_or("?");
        f.debug_struct("LedgerSettings")
            .field("url", &format_args!("{scheme}://…"))
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("flush_interval", &self.flush_interval)
            .finish()
    }
}

/// What became of rows: `tollgate_ledger_rows_total{result}`.
#[derive(Clone)]
pub struct LedgerCounters {
    pub written: prometheus::IntCounter,
    pub dropped: prometheus::IntCounter,
    pub failed: prometheus::IntCounter,
}

/// Where meters send their rows. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Row>,
    counters: LedgerCounters,
    /// Drops, for rate-limiting the log.
    drops: Arc<AtomicU64>,
}

/// The writer task, closed and awaited at shutdown.
pub struct Writer {
    task: JoinHandle<()>,
    close: oneshot::Sender<()>,
}

impl Writer {
    /// Closes the queue and waits until every row in it is written (or `within` passes).
    pub async fn finish(self, within: Duration) -> bool {
        let _ = self.close.send(());
        tokio::time::timeout(within, self.task).await.is_ok()
    }
}

impl Ledger {
    /// Connects, migrates, and starts the writer.
    pub async fn open(settings: &LedgerSettings, counters: LedgerCounters) -> Result<(Ledger, Writer), sqlx::Error> {
        let pool = connect(&settings.url, 2).await?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(write_batches(pool, rx, closed, settings.clone(), counters.clone()));
        let ledger = Ledger {
            tx,
            counters,
            drops: Arc::new(AtomicU64::new(0)),
        };
        Ok((ledger, Writer { task, close }))
    }

    /// Queues a row; never waits. A full (or closed) queue drops it, counted and logged.
    pub fn record(&self, row: Row) {
        if self.tx.try_send(row).is_err() {
            self.counters.dropped.inc();
            let dropped = self.drops.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at the first drop and every thousandth after, not once per row.
            if dropped == 1 || dropped % 1000 == 0 {
                tracing::error!(dropped, "usage ledger queue full: rows dropped");
            }
        }
    }

    /// Rows waiting to be written.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Opens the ledger's database (a SQLite file is created if missing) and
/// brings its schema up to date; used by the writer, reports and key store.
pub async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    let pool = connect_without_migrating(url, max_connections).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Opens a database whose schema is already up to date (the ledger writer's
/// pool migrated it at start-up): a second pool, so that reports and key
/// refreshes never take the writer's connections, without migrating twice.
pub async fn connect_without_migrating(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    install_default_drivers();
    let url = sqlite_create_mode(url);
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // A write-ahead log and normal syncing: a commit costs no fsync of the
                    // database file, and readers (reports) do not block the writer.
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA synchronous=NORMAL").await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
}

/// SQLite creates a missing file only when asked (`mode=rwc`); its directory is created here.
fn sqlite_create_mode(url: &str) -> String {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return url.to_owned();
    };
    let file = path.split('?').next().unwrap_or(path);
    if let Some(dir) = std::path::Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = std::fs::create_dir_all(dir);
    }
    if path.contains("mode=") {
        url.to_owned()
    } else if path.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    pool.execute("CREATE TABLE IF NOT EXISTS tollgate_migrations (version BIGINT PRIMARY KEY)")
        .await?;
    for (version, sql) in MIGRATIONS {
        let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM tollgate_migrations WHERE version = $1")
            .bind(*version)
            .fetch_optional(pool)
            .await?;
        if done.is_none() {
            let mut tx = pool.begin().await?;
            sqlx::query(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO tollgate_migrations (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

const COLUMNS: usize = 23;

async fn write_batches(
    pool: AnyPool,
    mut rx: mpsc::Receiver<Row>,
    mut closed: oneshot::Receiver<()>,
    settings: LedgerSettings,
    counters: LedgerCounters,
) {
    let batch_size = settings.batch.clamp(1, 1000);
    let sql = Statements::for_url(&settings.url);
    let mut batch = Vec::with_capacity(batch_size);
    let mut closing = false;
    let gather = tokio::time::sleep(settings.flush_interval);
    tokio::pin!(gather);
    loop {
        // Wait for a row; then gather what else arrives within the interval.
        let first = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                row = rx.recv() => row,
                _ = &mut closed => {
                    // Shutdown: no new rows; the queued ones are still received.
                    closing = true;
                    rx.close();
                    continue;
                }
            }
        };
        match first {
            Some(row) => batch.push(row),
            None => break,
        }
        // One timer for the batch, and every row already queued taken at each
        // wake-up: not a timer armed and cancelled per row.
        gather
            .as_mut()
            .reset(tokio::time::Instant::now() + settings.flush_interval);
        while batch.len() < batch_size {
            let room = batch_size - batch.len();
            tokio::select! {
                biased;
                taken = rx.recv_many(&mut batch, room) => if taken == 0 { break },
                () = gather.as_mut() => break,
            }
        }
        insert(&pool, &sql, &mut batch, &counters).await;
    }
    // Closed: whatever is left was already drained by recv; flush the last batch.
    if !batch.is_empty() {
        insert(&pool, &sql, &mut batch, &counters).await;
    }
    pool.close().await;
}

async fn insert(pool: &AnyPool, sql: &Statements, batch: &mut Vec<Row>, counters: &LedgerCounters) {
    let rows = batch.len() as u64;
    match insert_rows(pool, sql, batch).await {
        Ok(()) => counters.written.inc_by(rows),
        Err(e) => {
            counters.failed.inc_by(rows);
            tracing::error!(rows, error = %e, "usage ledger write failed: rows lost");
        }
    }
    batch.clear();
}

/// Rows per multi-row INSERT, largest first: 23 columns × 40 rows = 920
/// parameters, within both SQLite's (999 in old builds) and PostgreSQL's
/// (65 535) limits. A batch is cut greedily into these sizes, so any batch
/// takes at most five statements beyond its full chunks (not one per leftover
/// row), and each size is one fixed text, prepared once and cached.
const STATEMENT_ROWS: [usize; 6] = [40, 16, 8, 4, 2, 1];

/// The statements, as indexes into `STATEMENT_ROWS`, that cover `rows` rows in order.
fn statements_for(mut rows: usize) -> impl Iterator<Item = usize> {
    let mut size = 0;
    std::iter::from_fn(move || {
        while rows < STATEMENT_ROWS[size] {
            size += 1;
            if size == STATEMENT_ROWS.len() {
                return None;
            }
        }
        rows -= STATEMENT_ROWS[size];
        Some(size)
    })
}

/// `dollar`: PostgreSQL's `$1, $2...`; else SQLite's plain `?`, bound in
/// order (sqlx looks up the name of every `$N` parameter in SQLite, a scan
/// per parameter that made large inserts quadratic).
fn insert_sql(rows: usize, dollar: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO tollgate_usage (id, ts_ms, key_id, team, route, backend, provider, requested_model, \
         served_model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, \
         usage_source, cost_pico, cost_source, ttft_ms, duration_ms, status, error_kind, stream, shadow) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..COLUMNS {
            if c > 0 {
                sql.push(',');
            }
            if dollar {
                let _ = write!(sql, "${}", r * COLUMNS + c + 1);
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// The INSERT statements of a database, one per size in `STATEMENT_ROWS`.
struct Statements {
    by_size: [String; STATEMENT_ROWS.len()],
}

impl Statements {
    fn for_url(url: &str) -> Self {
        let dollar = !url.starts_with("sqlite:");
        Statements {
            by_size: STATEMENT_ROWS.map(|n| insert_sql(n, dollar)),
        }
    }
}

/// One batch, one transaction: one commit for all its rows.
async fn insert_rows(pool: &AnyPool, sql: &Statements, batch: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rest = batch;
    for i in statements_for(batch.len()) {
        let (chunk, tail) = rest.split_at(STATEMENT_ROWS[i]);
        bind_rows(sqlx::query(&sql.by_size[i]), chunk).execute(&mut *tx).await?;
        rest = tail;
    }
    tx.commit().await
}

fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    rows: &'q [Row],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for row in rows {
        q = q
            .bind(row.id.as_str())
            .bind(row.ts_ms)
            .bind(row.key_id.as_deref())
            .bind(row.team.as_deref())
            .bind(row.route.as_str())
            .bind(row.backend.as_str())
            .bind(row.provider.as_str())
            .bind(row.requested_model.as_str())
            .bind(row.served_model.as_str())
            .bind(row.prompt_tokens)
            .bind(row.completion_tokens)
            .bind(row.cached_tokens)
            .bind(row.cache_write_tokens)
            .bind(row.reasoning_tokens)
            .bind(row.usage_source)
            .bind(row.cost_pico)
            .bind(row.cost_source)
            .bind(row.ttft_ms)
            .bind(row.duration_ms)
            .bind(row.status)
            .bind(row.error_kind.as_deref())
            .bind(i64::from(row.stream))
            .bind(i64::from(row.shadow));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_few_statements_of_the_prepared_sizes() {
        for rows in 0..=200 {
            let sizes: Vec<usize> = statements_for(rows).map(|i| STATEMENT_ROWS[i]).collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows, "{rows}: {sizes:?}");
            assert!(sizes.iter().all(|s| STATEMENT_ROWS.contains(s)), "{rows}: {sizes:?}");
            let full = rows / STATEMENT_ROWS[0];
            assert!(sizes.len() <= full + 5, "{rows} rows took {} statements", sizes.len());
        }
        let sizes = |rows| statements_for(rows).map(|i| STATEMENT_ROWS[i]).collect::<Vec<_>>();
        assert_eq!(sizes(39), [16, 16, 4, 2, 1]);
        assert_eq!(sizes(500).iter().filter(|&&s| s == 40).count(), 12);
    }

    #[test]
    fn sqlite_files_are_created_with_their_directory() {
        assert_eq!(sqlite_create_mode("sqlite://data/t.db"), "sqlite://data/t.db?mode=rwc");
        assert_eq!(
            sqlite_create_mode("sqlite://t.db?cache=shared"),
            "sqlite://t.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_create_mode("postgres://h/db"), "postgres://h/db");
    }
}
