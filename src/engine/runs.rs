//! Run records: creation, durable state changes (one structured log line each), the
//! state transitions every run shares (fail, cancel, retry later), the derived index
//! (open runs, live tasks, watermarks, gaps) and retention.
//!
//! **Watermark and gaps.** The windows of a recurring ODK connector tile time. The
//! watermark is not stored: it is the end of the latest scheduled window MTS
//! *acknowledged* (a request identifier, or "no submissions"). The parts of a split
//! window go to MTS concurrently, so a part can fail while a later one was
//! acknowledged: the failed part is then a *gap* below the watermark. A scheduled window
//! that ends without being acknowledged is marked as a gap candidate ([`GAP`]); the next
//! fire sends every gap below the watermark again as a window of its own, and then
//! `[watermark, now)`, so no window is lost and none is sent twice.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde_json::Value;

use super::{Engine, Index};
use crate::model::fields::Record;
use crate::model::run::MODEL;
use crate::model::{connector, format_datetime, parse_datetime};
use crate::store::{Store, StoreError};

pub use crate::model::run::{CREATED_MS, GAP, acknowledged, is_terminal, state};
use crate::model::run::{advances_watermark, is_gap};

/// Hidden value: a `retry` run resubmitting a scheduled window (it tiles time too).
pub const TILES: &str = "_tiles";
/// Hidden value: how many times MTS lost this window before (a resubmission carries it).
pub const LOST: &str = "_lost";
/// Hidden value: a scheduled run stored ahead of its fire time waits until then
/// (milliseconds since the epoch; see [`crate::engine::scheduler`]).
pub const NOT_BEFORE_MS: &str = "_not_before_ms";

pub fn time(run: &Record, field: &str) -> Option<DateTime<Utc>> {
    run.str(field).and_then(|s| parse_datetime(s).ok())
}

pub fn connector_id(run: &Record) -> u64 {
    run.int("connector_id").unwrap_or(0) as u64
}

/// Whether `run` is part of its connector's tiling of time (a scheduled window, or a
/// resubmission of one).
pub fn tiles(run: &Record) -> bool {
    run.str("trigger") == Some("schedule") || run.values.get(TILES) == Some(&Value::Bool(true))
}

/// Where a run that is open and has no task waits for the scheduler: in the admission
/// group of its connector's MTS endpoints (`""` when it needs no admission: a walk, a
/// VID clean-up, a request MTS already holds), now or once its retry is due. `None` for
/// an ended run.
pub fn place_of(store: &Store, run: &Record) -> Option<(String, Option<DateTime<Utc>>)> {
    if is_terminal(run) {
        return None;
    }
    let due = match state(run) {
        "retrying" => time(run, "next_attempt_at"),
        "queued" => run.int(NOT_BEFORE_MS).and_then(DateTime::from_timestamp_millis),
        _ => None,
    };
    let c = store.get(connector::MODEL, connector_id(run));
    let needs_room = run.str("trigger") != Some("vid_cleanup")
        && state(run) != "submitted"
        && c.as_ref().is_some_and(|c| c.str("input_type") != Some("custom") || run.str("registrant_ids").is_some());
    let group = match (&c, needs_room) {
        (Some(c), true) => crate::engine::pool::endpoints(c).join(","),
        _ => String::new(),
    };
    Some((group, due))
}

fn index_run(index: &mut Index, run: &Record, place: Option<(String, Option<DateTime<Utc>>)>) {
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
    match (is_gap(run), time(run, "window_start"), time(run, "window_end")) {
        (true, Some(start), Some(end)) => {
            index.gaps.entry(connector).or_default().insert(run.id, (start, end));
        }
        _ => {
            if let Some(gaps) = index.gaps.get_mut(&connector) {
                gaps.remove(&run.id);
                if gaps.is_empty() {
                    index.gaps.remove(&connector);
                }
            }
        }
    }
    index.place(run.id, connector, place);
}

/// Rebuilds the index at start through the store's indexes: the open runs, the gaps, and
/// each connector's watermark (from its scheduled runs made since it, see
/// [`crate::model::run::watermark_run`]), never the whole history.
pub fn build_index(store: &Store) -> Result<Index, StoreError> {
    let mut index = Index::default();
    let mut ids = Vec::new();
    for open in ["queued", "submitting", "submitted", "retrying"] {
        store.scan_index(MODEL, "state", &[&Value::from(open)], false, |id| {
            ids.push(id);
            ControlFlow::Continue(())
        })?;
    }
    store.scan_index(MODEL, "gap", &[&Value::Bool(true)], false, |id| {
        ids.push(id);
        ControlFlow::Continue(())
    })?;
    for id in ids {
        if let Some(run) = store.try_get(MODEL, id)? {
            index_run(&mut index, &run, place_of(store, &run));
        }
    }
    let schedule = Value::from("schedule");
    for connector in store.index_heads(MODEL, "connector")? {
        let mut failed = None;
        let scheduled = store.index_ids(MODEL, "connector_trigger", &[&connector, &schedule], true)?;
        let newest_first = scheduled.map_while(|id| match id.and_then(|id| store.try_get(MODEL, id)) {
            Ok(run) => run,
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let watermark = crate::model::run::watermark_run(newest_first);
        if let Some(e) = failed {
            return Err(e);
        }
        if let (Some(c), Some((_, end))) = (connector.as_u64(), watermark) {
            index.watermark.insert(c, end);
        }
    }
    Ok(index)
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

/// A new queued run record, made now.
fn new_run(id: u64, connector: u64, trigger: &str, start: DateTime<Utc>, end: DateTime<Utc>, now: &str) -> Record {
    new_run_at(id, connector, trigger, start, end, now, Utc::now().timestamp_millis())
}

/// A new queued run record made at `created` (milliseconds) and `now` (Odoo's format).
fn new_run_at(
    id: u64,
    connector: u64,
    trigger: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: &str,
    created: i64,
) -> Record {
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
    run.set(CREATED_MS, created);
    run
}

/// A change of one stored run.
pub type Change = Box<dyn FnOnce(&mut Record) + Send>;

/// One window a fire queues: `covers` is the gap run it sends again, if it does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FireWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub covers: Option<u64>,
}

/// What firing one recurring connector stores (see [`Engine::fire_batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub connector: u64,
    pub windows: Vec<FireWindow>,
    /// Gap runs this fire settles (sent again, or covered by `[watermark, now)`).
    pub settles: Vec<u64>,
    /// The connector's next fire (`None`: unchanged, as for *Run now*).
    pub next_at: Option<DateTime<Utc>>,
    /// The runs wait until then (a fire stored ahead of its due time).
    pub not_before: Option<DateTime<Utc>>,
}

/// What [`Engine::fire_batch`] stored: the new runs' ids, and when they were durable.
#[derive(Debug, Clone)]
pub struct Fired {
    pub runs: Vec<u64>,
    pub queued_at: DateTime<Utc>,
}

/// Exponential backoff with full jitter in [d/2, d).
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let d = exp.min(cap);
    let half = d / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
}

fn code_value(code: &str) -> Value {
    if code.is_empty() { Value::Null } else { Value::from(code) }
}

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
            index_run(&mut self.index(), &run, place_of(&self.store, &run));
            run
        };
        self.store.flush().await?;
        log_change(&run, "new");
        self.wake.notify_one();
        Ok(run)
    }

    /// Fires many recurring connectors at once: each gets its next fire time (in the
    /// store's schedule table, apart from the connector record) and its new scheduled
    /// runs, and its settled gaps are marked, all stored in one batch with one flush (a
    /// pass in which 10,000 connectors are due costs one commit).
    pub async fn fire_batch(&self, fires: Vec<Fire>) -> Result<Fired, StoreError> {
        if fires.is_empty() {
            return Ok(Fired { runs: Vec::new(), queued_at: Utc::now() });
        }
        let now = format_datetime(Utc::now());
        let created = Utc::now().timestamp_millis();
        let runs = {
            let _guard = self.store.write_lock();
            let mut writes = Vec::new();
            let mut schedule = Vec::with_capacity(fires.len());
            let mut ids = self.store.next_ids(MODEL, fires.iter().map(|f| f.windows.len()).sum::<usize>() as u64)?;
            let mut new_ids = Vec::new();
            for fire in fires {
                // A scheduled fire (not Run now) of a connector stopped since the pass read
                // it stores nothing: the stop cancelled the connector's open runs before
                // this write lock was taken, so a run written now would be left queued,
                // and its schedule entry, cleared by the stop, would come back.
                if fire.next_at.is_some()
                    && self
                        .store
                        .get(connector::MODEL, fire.connector)
                        .is_none_or(|c| c.str("job_status") != Some("running"))
                {
                    continue;
                }
                if let Some(at) = fire.next_at {
                    schedule.push((fire.connector, Some(at)));
                }
                let mut sent_again = HashMap::new();
                for w in &fire.windows {
                    let Some(run_id) = ids.next() else { break };
                    let mut run = new_run_at(run_id, fire.connector, "schedule", w.start, w.end, &now, created);
                    if let Some(at) = fire.not_before {
                        run.set(NOT_BEFORE_MS, at.timestamp_millis());
                    }
                    if let Some(gap) = w.covers {
                        run.set("retry_of_id", gap);
                        run.set("error_message", format!("sends again the window of run #{gap}"));
                        sent_again.insert(gap, run_id);
                    }
                    writes.push(run);
                    new_ids.push(run_id);
                }
                for gap in fire.settles {
                    let Some(old) = self.store.get(MODEL, gap) else { continue };
                    let mut old = (*old).clone();
                    old.set(GAP, Value::Null);
                    if let Some(by) = sent_again.get(&gap) {
                        let text = old.str("error_message").unwrap_or_default().to_string();
                        old.set("error_message", format!("{text} (its window is sent again as run #{by})").trim());
                    }
                    writes.push(old);
                }
            }
            {
                let mut index = self.index();
                for run in &writes {
                    index_run(&mut index, run, place_of(&self.store, run));
                }
            }
            self.store.put_all(MODEL, writes)?;
            self.store.schedule_set(&schedule)?;
            // The stored runs, shared (not copied) for the log lines after the commit.
            new_ids.iter().filter_map(|id| self.store.get(MODEL, *id)).collect::<Vec<_>>()
        };
        self.store.flush().await?;
        let queued_at = Utc::now();
        for run in &runs {
            log_change(run, "new");
        }
        if !runs.is_empty() {
            self.wake.notify_one();
        }
        Ok(Fired { runs: runs.iter().map(|r| r.id).collect(), queued_at })
    }

    /// Applies `change` to a stored run and makes it durable before returning, so the
    /// caller's next side effect happens only once the new state is safe on disk.
    pub async fn update_run(
        &self,
        id: u64,
        change: impl FnOnce(&mut Record) + Send + 'static,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self.update_runs(vec![(id, Box::new(change))]).await?.into_iter().next().flatten())
    }

    /// Applies several run changes atomically (one batch, one flush); answers each run
    /// as stored (`None` for a run that does not exist).
    pub async fn update_runs(&self, changes: Vec<(u64, Change)>) -> Result<Vec<Option<Record>>, StoreError> {
        let (out, logs) = {
            let _guard = self.store.write_lock();
            let mut out = Vec::with_capacity(changes.len());
            let mut writes = Vec::with_capacity(changes.len());
            let mut logs = Vec::new();
            for (id, change) in changes {
                let Some(old) = self.store.get(MODEL, id) else {
                    out.push(None);
                    continue;
                };
                let mut run = (*old).clone();
                change(&mut run);
                crate::scrub::run_record(&self.store, &mut run);
                if is_terminal(&old) && !is_terminal(&run) {
                    // An ended run stays ended (e.g. cancelled by a stop while its task was
                    // waiting): the caller sees the stored state and stops.
                    out.push(Some((*old).clone()));
                    continue;
                }
                if is_terminal(&run) && !is_terminal(&old) {
                    run.set("done_date", format_datetime(Utc::now()));
                    if tiles(&run) && !acknowledged(&run) && self.has_windows(connector_id(&run)) {
                        run.set(GAP, true);
                    }
                }
                run.set("write_date", format_datetime(Utc::now()));
                if state(&old) != state(&run) {
                    logs.push((run.clone(), state(&old).to_string()));
                }
                writes.push(run.clone());
                out.push(Some(run));
            }
            self.store.put_all(MODEL, writes.clone())?;
            let mut index = self.index();
            for run in &writes {
                index_run(&mut index, run, place_of(&self.store, run));
            }
            (out, logs)
        };
        self.store.flush().await?;
        let mut ended = false;
        for (run, from) in &logs {
            log_change(run, from);
            ended |= is_terminal(run);
        }
        if ended {
            self.run_ended.notify_waiters();
        }
        Ok(out)
    }

    /// Whether the connector's runs cover time windows (ODK input; a registry walk's
    /// window is only a label).
    fn has_windows(&self, connector: u64) -> bool {
        self.store.get(connector::MODEL, connector).is_some_and(|c| c.str("input_type") != Some("custom"))
    }

    pub fn run(&self, id: u64) -> Option<Record> {
        self.store.get(MODEL, id).map(|r| (*r).clone())
    }

    pub fn watermark(&self, connector: u64) -> Option<DateTime<Utc>> {
        self.index().watermark.get(&connector).copied()
    }

    /// The connector's gap candidates: `(run id, (start, end))` by run id.
    pub fn gaps(&self, connector: u64) -> BTreeMap<u64, (DateTime<Utc>, DateTime<Utc>)> {
        self.index().gaps.get(&connector).cloned().unwrap_or_default()
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

    /// Closes `run` as `mts_status` (MTS lost it, or did not deliver all of it) and queues
    /// a `retry` run for its window carrying what `carry` copies, in one durable batch:
    /// after a crash either both exist or neither.
    pub async fn resubmit(
        &self,
        run: &Record,
        why: &str,
        mts_status: &str,
        carry: impl FnOnce(&Record, &mut Record),
    ) -> Result<(), StoreError> {
        let (Some(start), Some(end)) = (time(run, "window_start"), time(run, "window_end")) else {
            return self.fail(run.id, "", why).await;
        };
        let lost = run.int(LOST).unwrap_or(0) + 1;
        if lost >= self.config.max_attempts {
            let message = format!(
                "{why}; MTS lost this window {lost} times, so it is not resubmitted again (if MTS's cleanup deletes requests before they are processed, raise its cleanupExpirySeconds)"
            );
            self.update_run(run.id, move |r| r.set("mts_status", "lost")).await?;
            return self.fail(run.id, "", &message).await;
        }
        let now = format_datetime(Utc::now());
        let (retry, closed) = {
            let _guard = self.store.write_lock();
            let Some(current) = self.store.get(MODEL, run.id) else { return Ok(()) };
            if is_terminal(&current) {
                return Ok(());
            }
            let mut retry = new_run(self.store.next_id(MODEL)?, connector_id(run), "retry", start, end, &now);
            retry.set("retry_of_id", run.id);
            retry.set(LOST, lost);
            retry.set("error_message", format!("resubmits run #{}: {why}", run.id));
            if tiles(run) {
                retry.set(TILES, true);
            }
            carry(run, &mut retry);
            let mut closed = (*current).clone();
            closed.set("state", "cancelled");
            closed.set("mts_status", mts_status);
            closed.set("error_message", format!("{why}; the window is resubmitted as run #{}", retry.id));
            closed.set("next_attempt_at", Value::Null);
            closed.set("done_date", now.clone());
            closed.set("write_date", now.clone());
            crate::scrub::run_record(&self.store, &mut retry);
            crate::scrub::run_record(&self.store, &mut closed);
            self.store.put_all(MODEL, vec![retry.clone(), closed.clone()])?;
            let mut index = self.index();
            index_run(&mut index, &retry, place_of(&self.store, &retry));
            index_run(&mut index, &closed, place_of(&self.store, &closed));
            (retry, closed)
        };
        self.store.flush().await?;
        log_change(&closed, state(run));
        log_change(&retry, "new");
        self.run_ended.notify_waiters();
        self.wake.notify_one();
        Ok(())
    }

    /// Creates a page run of walk `walk` carrying registrant `ids` and moves the walk's
    /// progress (`last_id`, `records_skipped`) in the same durable batch. No page is
    /// created when every registrant read was skipped (`ids` empty).
    pub async fn create_page(
        &self,
        walk: &Record,
        ids: &[u64],
        last_id: u64,
        skipped: i64,
    ) -> Result<Option<u64>, StoreError> {
        let now = Utc::now();
        let stamp = format_datetime(now);
        let page = {
            let _guard = self.store.write_lock();
            let Some(current) = self.store.get(MODEL, walk.id) else { return Ok(None) };
            let mut w = (*current).clone();
            w.set("last_id", last_id as i64);
            w.set("records_skipped", w.int("records_skipped").unwrap_or(0) + skipped);
            w.set("attempts", 0);
            w.set("next_attempt_at", Value::Null);
            w.set("write_date", stamp.clone());
            let mut writes = vec![w.clone()];
            let page = if ids.is_empty() {
                None
            } else {
                let (start, end) = (time(walk, "window_start").unwrap_or(now), time(walk, "window_end").unwrap_or(now));
                let trigger = walk.str("trigger").unwrap_or("schedule");
                let mut p = new_run(self.store.next_id(MODEL)?, connector_id(walk), trigger, start, end, &stamp);
                p.set("split_of_id", walk.id);
                p.set("registrant_ids", crate::engine::registry::encode_ids(ids));
                p.set("records_expected", ids.len() as i64);
                writes.push(p.clone());
                Some(p)
            };
            self.store.put_all(MODEL, writes)?;
            let mut index = self.index();
            index_run(&mut index, &w, place_of(&self.store, &w));
            if let Some(p) = &page {
                index_run(&mut index, p, place_of(&self.store, p));
            }
            page
        };
        self.store.flush().await?;
        Ok(page.map(|p| {
            log_change(&p, "new");
            self.wake.notify_one();
            p.id
        }))
    }

    /// Ends run `id` as `failed` with MTS's (or our) error.
    pub async fn fail(&self, id: u64, code: &str, message: &str) -> Result<(), StoreError> {
        let (code, message) = (code_value(code), message.to_string());
        self.update_run(id, move |r| {
            r.set("state", "failed");
            r.set("error_code", code);
            r.set("error_message", message);
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
        Ok(())
    }

    pub async fn cancel(&self, id: u64, why: &str) -> Result<(), StoreError> {
        let why = why.to_string();
        self.update_run(id, move |r| {
            r.set("state", "cancelled");
            r.set("error_message", why);
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
        Ok(())
    }

    /// After a transient failure (attempt number `attempts`): `retrying` with backoff and
    /// jitter, `failed` after `--max-attempts`, or `cancelled` when the connector was
    /// stopped after the run was created (it was mid-call during the stop).
    pub async fn retry_later(&self, id: u64, attempts: i64, code: &str, message: &str) -> Result<(), StoreError> {
        if let Some(run) = self.run(id) {
            let stopped = self.index().stopped.get(&connector_id(&run)).copied();
            if stopped.is_some_and(|first_after| run.id < first_after) {
                return self.cancel(id, &format!("the connector was stopped; last attempt: {message}")).await;
            }
        }
        if attempts >= self.config.max_attempts {
            self.update_run(id, move |r| r.set("attempts", attempts)).await?;
            return self.fail(id, code, &format!("gave up after {attempts} attempts: {message}")).await;
        }
        let wait = backoff(self.config.retry_base, self.config.retry_cap, attempts as u32);
        let at = Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(30));
        let (code, message) = (code_value(code), message.to_string());
        self.update_run(id, move |r| {
            r.set("state", "retrying");
            r.set("attempts", attempts);
            r.set("next_attempt_at", format_datetime(at));
            r.set("error_code", code);
            r.set("error_message", message);
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[tokio::test]
    async fn a_scheduled_fire_of_a_connector_stopped_meanwhile_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path(), &[connector::MODEL, MODEL]).unwrap());
        let engine = Engine::new(store.clone(), EngineConfig::default(), reqwest::Client::new()).unwrap();
        for (id, status) in [(1, "running"), (2, "completed")] {
            let mut c = Record { id, ..Default::default() };
            c.set("job_status", status);
            store.put(connector::MODEL, c).unwrap();
        }
        let end = Utc::now();
        let window = FireWindow { start: end - TimeDelta::minutes(5), end, covers: None };
        let fire =
            |connector, next_at| Fire { connector, windows: vec![window], settles: vec![], next_at, not_before: None };
        let next = Some(end + TimeDelta::minutes(5));
        let fired = engine.fire_batch(vec![fire(1, next), fire(2, next)]).await.unwrap();
        assert_eq!(fired.runs.len(), 1);
        assert_eq!(engine.run(fired.runs[0]).map(|r| connector_id(&r)), Some(1));
        assert!(engine.open_runs(2).is_empty());
        assert!(store.schedule_get(1).is_some() && store.schedule_get(2).is_none());
        // Run now (no next fire) still queues a run for a stopped connector.
        let fired = engine.fire_batch(vec![fire(2, None)]).await.unwrap();
        assert_eq!(engine.open_runs(2), fired.runs);
        assert!(store.schedule_get(2).is_none());
    }
}
