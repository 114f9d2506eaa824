//! Run records: creation, durable state changes (one structured log line each), the
//! derived index (open runs, watermarks) and retention.
//!
//! The watermark of a recurring connector is not stored: it is the end of the latest
//! scheduled window MTS acknowledged (a request identifier, or "no submissions"). A
//! connector has at most one open scheduled window at a time and a failed window
//! cancels the rest of its split, so the acknowledged windows always form one
//! contiguous stretch and their latest end is where the next window starts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Engine, Index};
use crate::model::fields::Record;
use crate::model::run::{MODEL, TERMINAL};
use crate::model::{connector, format_datetime, parse_datetime};
use crate::store::{Store, StoreError};

pub fn state(run: &Record) -> &str {
    run.str("state").unwrap_or("queued")
}

pub fn is_terminal(run: &Record) -> bool {
    TERMINAL.contains(&state(run))
}

pub fn time(run: &Record, field: &str) -> Option<DateTime<Utc>> {
    run.str(field).and_then(|s| parse_datetime(s).ok())
}

pub fn connector_id(run: &Record) -> u64 {
    run.int("connector_id").unwrap_or(0) as u64
}

/// MTS took the window: it has a request identifier, or it held no submissions.
pub fn acknowledged(run: &Record) -> bool {
    run.str("mts_request_id").is_some() || state(run) == "empty"
}

fn advances_watermark(run: &Record) -> bool {
    run.str("trigger") == Some("schedule") && acknowledged(run)
}

fn index_run(index: &mut Index, run: &Record) {
    let connector = connector_id(run);
    if is_terminal(run) {
        if let Some(open) = index.open.get_mut(&connector) {
            open.remove(&run.id);
            if open.is_empty() {
                index.open.remove(&connector);
            }
        }
    } else {
        index.open.entry(connector).or_default().insert(run.id);
    }
    if advances_watermark(run)
        && let Some(end) = time(run, "window_end")
    {
        let w = index.watermark.entry(connector).or_insert(end);
        *w = (*w).max(end);
    }
    index.settle(connector);
}

/// Rebuilds the index from the stored runs.
pub fn build_index(store: &Store) -> Index {
    let mut index = Index::default();
    for run in store.list(MODEL) {
        index_run(&mut index, &run);
    }
    index
}

/// One structured line per run state change (and one metric count); `duration_s` is
/// the time since the run was created.
fn log_change(run: &Record, from: &str) {
    let duration_s = time(run, "create_date").map_or(0, |t| (Utc::now() - t).num_seconds().max(0));
    let acknowledged = (state(run) == "submitted").then(|| run.int("records_expected").unwrap_or(0));
    crate::metrics::METRICS.run_state(state(run), acknowledged);
    tracing::info!(
        connector_id = connector_id(run),
        run_id = run.id,
        trigger = run.str("trigger").unwrap_or_default(),
        window_start = run.str("window_start").unwrap_or_default(),
        window_end = run.str("window_end").unwrap_or_default(),
        from,
        state = state(run),
        attempts = run.int("attempts").unwrap_or(0),
        records_expected = run.int("records_expected").unwrap_or(-1),
        mts_request_id = run.str("mts_request_id").unwrap_or_default(),
        error = run.str("error_message").unwrap_or_default(),
        duration_s,
        "run state"
    );
}

/// A new queued run record.
fn new_run(id: u64, connector: u64, trigger: &str, start: DateTime<Utc>, end: DateTime<Utc>, now: &str) -> Record {
    let mut run = Record { id, ..Default::default() };
    run.set("name", format!("#{id}"));
    run.set("connector_id", connector);
    run.set("trigger", trigger);
    run.set("window_start", format_datetime(start));
    run.set("window_end", format_datetime(end));
    run.set("state", "queued");
    run.set("attempts", 0);
    run.set("create_date", now);
    run.set("write_date", now);
    // Milliseconds, kept beside the Odoo-shaped date (whole seconds) for the engine only:
    // not a field, so never shown.
    run.set(CREATED_MS, Utc::now().timestamp_millis());
    run
}

/// The hidden value holding a run's creation time in milliseconds.
pub const CREATED_MS: &str = "_created_ms";

impl Engine {
    /// Stores a new queued run and makes it durable.
    pub async fn create_run(
        &self,
        connector: u64,
        trigger: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        extra: impl FnOnce(&mut Record),
    ) -> Result<Record, StoreError> {
        let now = format_datetime(Utc::now());
        let run = {
            let _guard = self.store.write_lock();
            let mut run = new_run(self.store.next_id(MODEL)?, connector, trigger, start, end, &now);
            extra(&mut run);
            crate::scrub::run_record(&self.store, &mut run);
            self.store.put(MODEL, run.clone())?;
            if let Some(c) = self.store.get(connector::MODEL, connector) {
                let mut c = (*c).clone();
                c.set("last_run_id", run.id);
                self.store.put(connector::MODEL, c)?;
            }
            index_run(&mut self.index(), &run);
            run
        };
        self.store.flush().await?;
        log_change(&run, "new");
        self.wake.notify_one();
        Ok(run)
    }

    /// Fires many recurring connectors at once: each gets its `next_run_at` and, when
    /// `window` is given, a new scheduled run, all stored in one batch with one flush
    /// (a pass in which 10,000 connectors are due costs one fsync, not 20,000).
    pub async fn fire_batch(
        &self,
        fires: Vec<(u64, Option<super::window::Window>, DateTime<Utc>)>,
    ) -> Result<Vec<Record>, StoreError> {
        let now = format_datetime(Utc::now());
        let runs = {
            let _guard = self.store.write_lock();
            let mut runs = Vec::new();
            let mut connectors = Vec::with_capacity(fires.len());
            let mut ids = self.store.next_ids(MODEL, fires.iter().filter(|f| f.1.is_some()).count() as u64)?;
            for (id, window, next_at) in fires {
                let Some(c) = self.store.get(connector::MODEL, id) else { continue };
                let mut c = (*c).clone();
                c.set("next_run_at", format_datetime(next_at));
                if let Some((start, end)) = window
                    && let Some(run_id) = ids.next()
                {
                    let run = new_run(run_id, id, "schedule", start, end, &now);
                    c.set("last_run_id", run.id);
                    runs.push(run);
                }
                connectors.push(c);
            }
            self.store.put_all(MODEL, runs.clone())?;
            self.store.put_all(connector::MODEL, connectors)?;
            let mut index = self.index();
            for run in &runs {
                index_run(&mut index, run);
            }
            runs
        };
        self.store.flush().await?;
        for run in &runs {
            log_change(run, "new");
        }
        if !runs.is_empty() {
            self.wake.notify_one();
        }
        Ok(runs)
    }

    /// Applies `change` to a stored run and makes it durable before returning, so the
    /// caller's next side effect happens only once the new state is safe on disk.
    pub async fn update_run(&self, id: u64, change: impl FnOnce(&mut Record)) -> Result<Option<Record>, StoreError> {
        let (run, from) = {
            let _guard = self.store.write_lock();
            let Some(old) = self.store.get(MODEL, id) else { return Ok(None) };
            let mut run = (*old).clone();
            change(&mut run);
            crate::scrub::run_record(&self.store, &mut run);
            if is_terminal(&old) && !is_terminal(&run) {
                // An ended run stays ended (e.g. cancelled by a stop while its task was
                // waiting): the caller sees the stored state and stops.
                return Ok(Some((*old).clone()));
            }
            if is_terminal(&run) && !is_terminal(&old) {
                run.set("done_date", format_datetime(Utc::now()));
            }
            run.set("write_date", format_datetime(Utc::now()));
            self.store.put(MODEL, run.clone())?;
            index_run(&mut self.index(), &run);
            (run, state(&old).to_string())
        };
        self.store.flush().await?;
        if from != state(&run) {
            log_change(&run, &from);
        }
        Ok(Some(run))
    }

    pub fn run(&self, id: u64) -> Option<Record> {
        self.store.get(MODEL, id).map(|r| (*r).clone())
    }

    pub fn watermark(&self, connector: u64) -> Option<DateTime<Utc>> {
        self.index().watermark.get(&connector).copied()
    }

    pub fn open_runs(&self, connector: u64) -> Vec<u64> {
        let mut ids: Vec<u64> =
            self.index().open.get(&connector).map(|s| s.iter().copied().collect()).unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Sets engine-owned fields of a connector (never the client's).
    pub async fn update_connector(&self, id: u64, change: impl FnOnce(&mut Record)) -> Result<(), StoreError> {
        {
            let _guard = self.store.write_lock();
            let Some(c) = self.store.get(connector::MODEL, id) else { return Ok(()) };
            let mut c = (*c).clone();
            change(&mut c);
            self.store.put(connector::MODEL, c)?;
        }
        self.store.flush().await
    }

    /// Drops old runs beyond the retention: per connector the newest `retention` runs,
    /// every failed run, every open run and the latest acknowledged scheduled run stay.
    pub async fn prune_runs(&self) -> Result<usize, StoreError> {
        let mut by_connector: HashMap<u64, Vec<std::sync::Arc<Record>>> = HashMap::new();
        for run in self.store.list(MODEL) {
            by_connector.entry(connector_id(&run)).or_default().push(run);
        }
        let mut doomed = Vec::new();
        for (_, mut runs) in by_connector {
            if runs.len() <= self.config.retention {
                continue;
            }
            runs.sort_by_key(|r| std::cmp::Reverse(r.id));
            let latest_ack = runs.iter().find(|r| advances_watermark(r)).map(|r| r.id);
            for run in runs.iter().skip(self.config.retention) {
                if is_terminal(run) && state(run) != "failed" && Some(run.id) != latest_ack {
                    doomed.push(run.id);
                }
            }
        }
        if !doomed.is_empty() {
            self.store.remove_all(MODEL, &doomed)?;
            self.store.flush().await?;
        }
        Ok(doomed.len())
    }
}
