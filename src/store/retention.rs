//! Retention: old runs and old finished deliveries are dropped, by count per connector
//! and by age, through the indexes (a pass reads what it drops, plus the few runs it
//! must keep), in chunks of at most [`CHUNK`] records per commit.
//!
//! Runs: per connector the newest `runs_per_connector` stay, and beyond them every open
//! run, every failed run, every gap (a scheduled window the next fire sends again) and
//! the run holding the watermark (`run::watermark_run`). With an age limit, ended runs
//! created before it go too, failed ones included; open runs, gaps and the watermark run
//! never do.
//!
//! Deliveries: pending ones always stay. Delivered and failed ones whose last change is
//! older than `delivery_max_age` go; beyond `deliveries_per_connector` delivered ones
//! per connector, the oldest go too, but never one younger than `delivery_min_age`:
//! its idempotency key must outlive any resubmission of its window (a resubmitted record
//! whose key is gone is delivered again).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::{Store, StoreError};
use crate::model::fields::Record;
use crate::model::{delivery, parse_datetime, run};

/// Records removed per commit.
pub const CHUNK: usize = 1000;

/// What is kept (see the module doc).
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    pub runs_per_connector: usize,
    /// `None`: runs are not dropped by age.
    pub run_max_age: Option<Duration>,
    pub deliveries_per_connector: usize,
    pub delivery_max_age: Duration,
    pub delivery_min_age: Duration,
    /// How often a pass runs.
    pub every: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            runs_per_connector: 1000,
            run_max_age: Some(Duration::from_secs(90 * 86400)),
            deliveries_per_connector: 100_000,
            delivery_max_age: Duration::from_secs(30 * 86400),
            delivery_min_age: Duration::from_secs(86400),
            every: Duration::from_secs(600),
        }
    }
}

/// What a pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub deliveries: usize,
}

const TERMINAL: &[&str] = run::TERMINAL;

fn terminal(r: &Record) -> bool {
    TERMINAL.contains(&r.str("state").unwrap_or("queued"))
}

fn time(r: &Record, field: &str) -> Option<DateTime<Utc>> {
    r.str(field).and_then(|s| parse_datetime(s).ok())
}

fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Removes `ids` of `model` in chunks, each durable before the next.
async fn remove(store: &Store, model: &str, ids: &mut Vec<u64>, force: bool) -> Result<usize, StoreError> {
    if ids.is_empty() || (!force && ids.len() < CHUNK) {
        return Ok(0);
    }
    let n = ids.len();
    store.remove_all(model, ids)?;
    store.flush().await?;
    ids.clear();
    Ok(n)
}

/// Ids under an index prefix, in order, read in one go (ids only: 8 bytes each).
fn ids(store: &Store, model: &str, index: &str, prefix: &[&Value], desc: bool) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    store.scan_index(model, index, prefix, desc, |id| {
        out.push(id);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

impl Store {
    /// One retention pass at `now`.
    pub async fn prune(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        if self.inner.tables.contains_key(run::MODEL) {
            for connector in self.index_heads(run::MODEL, "connector")? {
                pruned.runs += self.prune_runs_of(&connector, policy, now).await?;
            }
        }
        if self.inner.tables.contains_key(delivery::MODEL) {
            pruned.deliveries += self.prune_deliveries(policy, now).await?;
        }
        Ok(pruned)
    }

    async fn prune_runs_of(
        &self,
        connector: &Value,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let model = run::MODEL;
        let newest_first = ids(self, model, "connector", &[connector], true)?;
        let read = |id: u64| self.peek(model, id);
        // The run holding the watermark (read from the runs made since it).
        let mut failed = None;
        let newest = newest_first.iter().map_while(|id| match read(*id) {
            Ok(r) => r,
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let latest_ack = run::watermark_run(newest).map(|(id, _)| id);
        if let Some(e) = failed {
            return Err(e);
        }
        let cutoff = policy.run_max_age.map(|d| ago(now, d));
        let mut doomed = Vec::new();
        let mut removed = 0;
        // Beyond the count: ended runs but failed ones.
        for id in newest_first.iter().skip(policy.runs_per_connector) {
            let Some(r) = read(*id)? else { continue };
            let old = cutoff.is_some_and(|c| time(&r, "create_date").is_some_and(|t| t < c));
            if terminal(&r) && Some(*id) != latest_ack && !run::is_gap(&r) && (r.str("state") != Some("failed") || old)
            {
                doomed.push(*id);
                removed += remove(self, model, &mut doomed, false).await?;
            }
        }
        // Within the count: ended runs older than the age limit, oldest first (runs are
        // numbered in creation order, so the first young one ends the pass).
        if let Some(cutoff) = cutoff {
            let kept = newest_first.len().min(policy.runs_per_connector);
            for id in newest_first[..kept].iter().rev() {
                let Some(r) = read(*id)? else { continue };
                if time(&r, "create_date").is_none_or(|t| t >= cutoff) {
                    break;
                }
                if terminal(&r) && Some(*id) != latest_ack && !run::is_gap(&r) {
                    doomed.push(*id);
                    removed += remove(self, model, &mut doomed, false).await?;
                }
            }
        }
        removed += remove(self, model, &mut doomed, true).await?;
        Ok(removed)
    }

    async fn prune_deliveries(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let model = delivery::MODEL;
        let mut doomed = Vec::new();
        let mut removed = 0;
        let cutoff = ago(now, policy.delivery_max_age);
        for state in ["delivered", "failed"] {
            // Oldest change first, a chunk at a time (each chunk removed and durable
            // before the next is read); the first young one ends the pass.
            loop {
                let mut chunk = Vec::new();
                self.scan_index(model, "state_time", &[&Value::from(state)], false, |id| {
                    chunk.push(id);
                    if chunk.len() >= CHUNK { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                })?;
                let full = chunk.len() == CHUNK;
                let mut young = false;
                for id in chunk {
                    let Some(d) = self.peek(model, id)? else { continue };
                    if time(&d, "write_date").is_none_or(|t| t >= cutoff) {
                        young = true;
                        break;
                    }
                    doomed.push(id);
                }
                let n = remove(self, model, &mut doomed, true).await?;
                removed += n;
                if young || !full || n < CHUNK {
                    break;
                }
            }
        }
        let floor = ago(now, policy.delivery_min_age);
        for connector in self.index_heads(model, "connector_state")? {
            let delivered = ids(self, model, "connector_state", &[&connector, &Value::from("delivered")], true)?;
            for id in delivered.into_iter().skip(policy.deliveries_per_connector) {
                let Some(d) = self.peek(model, id)? else { continue };
                if time(&d, "write_date").is_some_and(|t| t < floor) {
                    doomed.push(id);
                    removed += remove(self, model, &mut doomed, false).await?;
                }
            }
        }
        removed += remove(self, model, &mut doomed, true).await?;
        Ok(removed)
    }

    /// A record without putting it in the cache (retention reads old records once).
    fn peek(&self, model: &str, id: u64) -> Result<Option<Arc<Record>>, StoreError> {
        let inner = &self.inner;
        let table = inner.table(model)?;
        if let Some(hit) = super::lock(&inner.overlay).record(model, id) {
            return Ok(hit);
        }
        Ok(inner.read_record(table, id)?.map(Arc::new))
    }
}

/// Runs a pass now and then every `policy.every` until `cancel`. A pass is left where it
/// is when `cancel` comes (a shutdown does not wait for a long first pass over a large
/// history): each chunk it removed is durable already, the next start goes on.
pub async fn run(store: Arc<Store>, policy: RetentionPolicy, cancel: tokio_util::sync::CancellationToken) {
    loop {
        let pass = tokio::select! {
            pass = store.prune(&policy, Utc::now()) => pass,
            () = cancel.cancelled() => return,
        };
        match pass {
            Ok(Pruned { runs: 0, deliveries: 0 }) => {}
            Ok(p) => tracing::info!(runs = p.runs, deliveries = p.deliveries, "retention: old records removed"),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(policy.every) => {}
            () = cancel.cancelled() => return,
        }
    }
}
