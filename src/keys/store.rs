//! Keys in the ledger's database (`tollgate_keys`), through the same sqlx
//! `Any` pool code path as the ledger: SQLite or PostgreSQL.

use sqlx::{AnyPool, Row as _};

use super::KeyRecord;
use super::budget::{Now, Spent};
use crate::metering::cost::Pico;

/// What `keys create` takes.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    /// USD, exactly as typed (`"12.50"` or a JSON number).
    #[serde(default, deserialize_with = "usd")]
    pub budget_daily_usd: Option<Pico>,
    #[serde(default, deserialize_with = "usd")]
    pub budget_monthly_usd: Option<Pico>,
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u32>,
}

/// An amount of USD, a string or a number (null: none), parsed exactly as the config's are.
fn usd<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Pico>, D::Error> {
    let amount: Option<crate::config::schema::Usd> = serde::Deserialize::deserialize(d)?;
    Ok(amount.map(|u| u.0))
}

impl NewKey {
    /// The mistakes a client can make, as one message naming the field.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(("`name` must be 1 to 128 printable characters".into(), "name"));
        }
        if let Some(team) = &self.team
            && (team.is_empty() || team.len() > 128 || team.chars().any(char::is_control))
        {
            return Err(("`team` must be 1 to 128 printable characters".into(), "team"));
        }
        for (value, field) in [(self.rpm, "rpm"), (self.tpm, "tpm")] {
            if value == Some(0) {
                return Err((
                    format!("`{field}` must be at least 1 (leave it out for no limit)"),
                    field,
                ));
            }
        }
        Ok(())
    }
}

/// The keys table of one database.
#[derive(Clone)]
pub struct KeyStore {
    pool: AnyPool,
}

fn now_ms() -> i64 {
    Now::current().ms
}

fn to_i64(p: Option<Pico>) -> Option<i64> {
    p.map(|p| i64::try_from(p).unwrap_or(i64::MAX))
}

impl KeyStore {
    /// Opens (and migrates) the database at `url`, the ledger's.
    pub async fn open(url: &str) -> Result<KeyStore, sqlx::Error> {
        Ok(KeyStore {
            pool: crate::metering::ledger::connect(url, 2).await?,
        })
    }

    /// The store on the ledger's database, which the ledger writer opened and migrated.
    pub async fn attach(url: &str) -> Result<KeyStore, sqlx::Error> {
        Ok(KeyStore {
            pool: crate::metering::ledger::connect_without_migrating(url, 2).await?,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates a key; the returned string is the only time it exists outside the client.
    pub async fn create(&self, new: &NewKey) -> Result<(KeyRecord, String), sqlx::Error> {
        let secret = super::generate().map_err(|e| sqlx::Error::Protocol(format!("no random bytes: {e}")))?;
        let digest = crate::server::auth::digest(secret.as_bytes());
        let record = KeyRecord {
            id: crate::server::auth::id_of_digest(&digest),
            name: new.name.trim().to_owned(),
            team: new.team.clone(),
            budget_daily_usd: new.budget_daily_usd,
            budget_monthly_usd: new.budget_monthly_usd,
            rpm: new.rpm,
            tpm: new.tpm,
            created_ms: now_ms(),
            revoked_ms: None,
            digest,
        };
        sqlx::query(
            "INSERT INTO tollgate_keys (id, digest, name, team, budget_daily_pico, budget_monthly_pico, rpm, tpm, \
             created_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(&record.id)
        .bind(super::hex(&digest))
        .bind(&record.name)
        .bind(record.team.as_deref())
        .bind(to_i64(record.budget_daily_usd))
        .bind(to_i64(record.budget_monthly_usd))
        .bind(record.rpm.map(i64::from))
        .bind(record.tpm.map(i64::from))
        .bind(record.created_ms)
        .execute(&self.pool)
        .await?;
        Ok((record, secret))
    }

    /// Every key, revoked ones too when `revoked`; oldest first.
    pub async fn list(&self, revoked: bool) -> Result<Vec<KeyRecord>, sqlx::Error> {
        let sql = if revoked {
            "SELECT * FROM tollgate_keys ORDER BY created_ms, id"
        } else {
            "SELECT * FROM tollgate_keys WHERE revoked_ms IS NULL ORDER BY created_ms, id"
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(record).collect()
    }

    /// Revokes a key by id; false if there is no such active key.
    pub async fn revoke(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE tollgate_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// What each key and each team spent today and this month (UTC), from the
    /// ledger: `(key ids, teams)`. Shadow traffic is the operator's, not theirs.
    pub async fn spend(&self, now: Now) -> Result<(Vec<(String, Spent)>, Vec<(String, Spent)>), sqlx::Error> {
        Ok((
            self.spent_by(now, "key_id", false).await?,
            self.spent_by(now, "team", false).await?,
        ))
    }

    /// What each backend (`provider/model`) cost today and this month (UTC),
    /// shadow traffic included: it was spent on that backend.
    pub async fn backend_spend(&self, now: Now) -> Result<Vec<(String, Spent)>, sqlx::Error> {
        self.spent_by(now, "backend", true).await
    }

    /// Today's and this month's cost by one of the ledger's columns (a fixed
    /// name from this module, never input); rows without a value are left out.
    async fn spent_by(&self, now: Now, column: &str, shadow: bool) -> Result<Vec<(String, Spent)>, sqlx::Error> {
        let sql = format!(
            "SELECT {column} AS who, \
             CAST(SUM(CASE WHEN ts_ms >= $1 THEN cost_pico ELSE 0 END) AS BIGINT) AS day, \
             CAST(SUM(cost_pico) AS BIGINT) AS month \
             FROM tollgate_usage WHERE ts_ms >= $2 AND cost_pico > 0 {} AND {column} IS NOT NULL \
             GROUP BY {column}",
            if shadow { "" } else { "AND shadow = 0" }
        );
        let rows = sqlx::query(&sql)
            .bind(now.day_start_ms())
            .bind(now.month_start_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("who")?,
                    Spent {
                        day: row.try_get::<i64, _>("day")?.max(0) as Pico,
                        month: row.try_get::<i64, _>("month")?.max(0) as Pico,
                    },
                ))
            })
            .collect()
    }
}

fn record(row: &sqlx::any::AnyRow) -> Result<KeyRecord, sqlx::Error> {
    let digest_hex: String = row.try_get("digest")?;
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = digest_hex
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| sqlx::Error::Decode("a key digest is not 64 hex digits".into()))?;
    }
    let pico = |col: &str| -> Result<Option<Pico>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(col)?.map(|v| v.max(0) as Pico))
    };
    let per_minute = |col: &str| -> Result<Option<u32>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(col)?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    };
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        team: row.try_get("team")?,
        budget_daily_usd: pico("budget_daily_pico")?,
        budget_monthly_usd: pico("budget_monthly_pico")?,
        rpm: per_minute("rpm")?,
        tpm: per_minute("tpm")?,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        digest,
    })
}

/// The keys as a text table, for `tollgate keys list`.
pub fn key_table(keys: &[KeyRecord]) -> String {
    use std::fmt::Write;
    let usd = |p: Option<Pico>| p.map_or_else(|| "-".to_owned(), crate::metering::cost::usd_text);
    let num = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.name.clone(),
                k.team.clone().unwrap_or_else(|| "-".into()),
                usd(k.budget_daily_usd),
                usd(k.budget_monthly_usd),
                num(k.rpm),
                num(k.tpm),
                if k.revoked_ms.is_some() { "revoked" } else { "active" }.to_owned(),
            ]
        })
        .collect();
    let head = ["id", "name", "team", "usd/day", "usd/month", "rpm", "tpm", "state"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let line: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
