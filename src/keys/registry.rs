//! The keys and teams a running gateway knows, in memory: requests look a
//! key up by its digest without touching the database. The key list is
//! reloaded from the store every `auth.key_refresh` (and at once after an
//! admin API change), spend from the ledger every minute. Limiters and spend
//! survive both, and config reloads, for keys and teams that remain.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::KeyRecord;
use super::budget::{Budget, Now, Period, Spend, used_ratio};
use super::store::KeyStore;
use crate::routing::limits::Limits;

/// A team from the config: its limits and budget apply to all its keys together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamSpec {
    pub name: String,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub budget: Budget,
}

pub struct Team {
    pub spec: TeamSpec,
    pub limits: Option<Arc<Limits>>,
    pub spend: Arc<Spend>,
}

/// A managed key, ready for requests.
pub struct ManagedKey {
    pub record: KeyRecord,
    pub limits: Option<Arc<Limits>>,
    pub spend: Arc<Spend>,
    /// Its team, when the config defines that team.
    pub team: Option<Arc<Team>>,
}

/// Who sent a request: put into the request by the edge layer.
#[derive(Clone)]
pub enum Caller {
    /// A key from `auth.keys`: its id only.
    Static(Arc<str>),
    Managed(Arc<ManagedKey>),
    /// Any string presented to an open gateway: named in the ledger by its
    /// id, but never a metric label (there is no bound on how many there are).
    Anonymous(Arc<str>),
}

impl Caller {
    pub fn id(&self) -> &str {
        match self {
            Caller::Static(id) | Caller::Anonymous(id) => id,
            Caller::Managed(k) => &k.record.id,
        }
    }

    pub fn team(&self) -> Option<&str> {
        match self {
            Caller::Static(_) | Caller::Anonymous(_) => None,
            Caller::Managed(k) => k.record.team.as_deref(),
        }
    }

    pub fn managed(&self) -> Option<&Arc<ManagedKey>> {
        match self {
            Caller::Managed(k) => Some(k),
            Caller::Static(_) | Caller::Anonymous(_) => None,
        }
    }

    /// Whether the key is one the operator made (so a bounded label).
    pub fn is_known(&self) -> bool {
        !matches!(self, Caller::Anonymous(_))
    }
}

#[derive(Default)]
pub struct KeyRegistry {
    keys: ArcSwap<HashMap<[u8; 32], Arc<ManagedKey>>>,
    teams: ArcSwap<HashMap<String, Arc<Team>>>,
    /// The last records read from the store, to rebuild from when teams change.
    records: ArcSwap<Vec<KeyRecord>>,
    /// One rebuild at a time: teams and keys swapped together, never a stale list over a newer one.
    rebuilding: std::sync::Mutex<()>,
    /// One refresh at a time: a list read before a revoke cannot land after it.
    refreshing: tokio::sync::Mutex<()>,
}

/// One budget's use, for `tollgate_budget_used_ratio`.
pub struct BudgetUse<'a> {
    pub scope: &'static str,
    pub name: &'a str,
    pub period: Period,
    pub ratio: f64,
}

impl KeyRegistry {
    /// The managed key with this digest (of the presented key), if active.
    ///
    /// A hash-map lookup by digest is not constant-time, and need not be:
    /// what it could leak is how close a guess's SHA-256 came to a stored
    /// digest, which says nothing about any key.
    pub fn find(&self, digest: &[u8; 32]) -> Option<Arc<ManagedKey>> {
        self.keys.load().get(digest).cloned()
    }

    /// Takes the config's teams; limiters and spend of teams that remain are kept.
    pub fn set_teams(&self, specs: &[TeamSpec]) {
        let _one = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.teams.load();
        let teams = specs
            .iter()
            .map(|spec| {
                let kept = old.get(&spec.name);
                let team = match kept {
                    Some(t) if t.spec == *spec => t.clone(),
                    _ => Arc::new(Team {
                        spec: spec.clone(),
                        limits: match kept {
                            Some(t) if t.limits.as_ref().is_some_and(|l| l.same(spec.rpm, spec.tpm)) => {
                                t.limits.clone()
                            }
                            _ => Limits::new(spec.rpm, spec.tpm).map(Arc::new),
                        },
                        spend: kept.map_or_else(Arc::default, |t| t.spend.clone()),
                    }),
                };
                (spec.name.clone(), team)
            })
            .collect();
        self.teams.store(Arc::new(teams));
        self.rebuild(&self.records.load());
    }

    /// Takes the store's active keys; limiters and spend of keys that remain are kept.
    pub fn set_keys(&self, records: Vec<KeyRecord>) {
        let _one = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        self.rebuild(&records);
        self.records.store(Arc::new(records));
    }

    /// Stops accepting a key at once (revoked here), whatever the next refresh brings.
    pub fn forget(&self, id: &str) {
        let _one = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let records: Vec<KeyRecord> = self.records.load().iter().filter(|r| r.id != id).cloned().collect();
        self.rebuild(&records);
        self.records.store(Arc::new(records));
    }

    fn rebuild(&self, records: &[KeyRecord]) {
        let old = self.keys.load();
        let teams = self.teams.load();
        let keys = records
            .iter()
            .filter(|r| r.revoked_ms.is_none())
            .map(|r| {
                let team = r.team.as_ref().and_then(|t| teams.get(t)).cloned();
                let kept = old.get(&r.digest);
                let key = match kept {
                    // Unchanged: the very same key, with the team as configured now.
                    Some(k) if k.record == *r && same_team(&k.team, &team) => k.clone(),
                    _ => Arc::new(ManagedKey {
                        record: r.clone(),
                        limits: match kept {
                            Some(k) if k.limits.as_ref().is_some_and(|l| l.same(r.rpm, r.tpm)) => k.limits.clone(),
                            _ => Limits::new(r.rpm, r.tpm).map(Arc::new),
                        },
                        spend: kept.map_or_else(Arc::default, |k| k.spend.clone()),
                        team,
                    }),
                };
                (r.digest, key)
            })
            .collect();
        self.keys.store(Arc::new(keys));
    }

    /// Reads the active keys from the store.
    pub async fn refresh(&self, store: &KeyStore) -> Result<(), sqlx::Error> {
        let _one = self.refreshing.lock().await;
        let records = store.list(false).await?;
        self.set_keys(records);
        Ok(())
    }

    /// Raises every key's and team's spend to the ledger's totals.
    pub async fn sync_spend(&self, store: &KeyStore) -> Result<(), sqlx::Error> {
        let now = Now::current();
        let (by_key, by_team) = store.spend(now).await?;
        let keys = self.keys.load();
        for (id, spent) in by_key {
            if let Some(k) = keys.values().find(|k| k.record.id == id) {
                k.spend.at_least(now, spent);
            }
        }
        let teams = self.teams.load();
        for (name, spent) in by_team {
            if let Some(t) = teams.get(&name) {
                t.spend.at_least(now, spent);
            }
        }
        Ok(())
    }

    /// The share of every budget spent, for the metrics.
    pub fn budget_use(&self, now: Now, mut each: impl FnMut(BudgetUse<'_>)) {
        let keys = self.keys.load();
        for k in keys.values() {
            for (period, limit, spent) in k.record.budget().against(k.spend.spent(now)) {
                each(BudgetUse {
                    scope: "key",
                    name: &k.record.id,
                    period,
                    ratio: used_ratio(spent, limit),
                });
            }
        }
        let teams = self.teams.load();
        for t in teams.values() {
            for (period, limit, spent) in t.spec.budget.against(t.spend.spent(now)) {
                each(BudgetUse {
                    scope: "team",
                    name: &t.spec.name,
                    period,
                    ratio: used_ratio(spent, limit),
                });
            }
        }
    }
}

fn same_team(a: &Option<Arc<Team>>, b: &Option<Arc<Team>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
