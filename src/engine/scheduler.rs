//! The scheduler: one task that fires recurring connectors when due, starts one-time
//! jobs, and dispatches every runnable run (oldest first; the pool's limits decide how
//! many requests of a connector are in MTS at once). It sleeps on a tokio timer until
//! the next thing is due or something changes; it never polls.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::pool::NoRoom;
use super::runs::{Fire, FireWindow};
use super::{Engine, window};
use crate::metrics::METRICS;
use crate::model::fields::Record;
use crate::model::{connector, parse_datetime};

/// What the scheduler needs to know of the connectors. It is rebuilt only when a
/// connector changed: run state changes wake the scheduler far more often than that,
/// and then a pass costs what is due, not the number of connectors.
#[derive(Default)]
struct Plan {
    /// The connector table's generation this plan was built from.
    generation: Option<u64>,
    /// Running recurring connectors by due time (`None`: never fired, due now).
    recurring: BTreeSet<(Option<DateTime<Utc>>, u64)>,
    /// Started one-time connectors.
    onetime: Vec<u64>,
    /// Connectors with a VID clean-up to run or to switch off.
    cleanup: Vec<u64>,
}

impl Plan {
    fn refresh(&mut self, engine: &Engine) {
        // Read before listing: a write in between only causes one more rebuild.
        let generation = engine.store.generation(connector::MODEL);
        if self.generation == Some(generation) {
            return;
        }
        *self = Plan { generation: Some(generation), ..Plan::default() };
        for c in engine.store.list(connector::MODEL) {
            match (c.str("is_recurring"), c.str("job_status")) {
                (Some("recurring"), Some("running")) => {
                    // The schedule table holds the next fire (a store written by an
                    // earlier version kept it on the connector record).
                    let due = engine
                        .store
                        .schedule_get(c.id)
                        .or_else(|| c.str("next_run_at").and_then(|s| parse_datetime(s).ok()));
                    self.recurring.insert((due, c.id));
                }
                (Some("onetime"), Some("started")) => self.onetime.push(c.id),
                _ => {}
            }
            if super::registry::vid_cleanup_concerns(&c) {
                self.cleanup.push(c.id);
            }
        }
    }
}

/// Runs the scheduler on a thread of its own until the engine is cancelled; the
/// receiver resolves when it has stopped. Its own thread keeps fires on time while the
/// runtime's workers are busy with thousands of run tasks (it only decides and writes
/// to the store; the run tasks it dispatches go to the engine's runtime).
pub fn start(engine: Arc<Engine>) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, stopped) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("mtsc-scheduler".into()).spawn(move || {
        runtime.block_on(run(engine));
        let _ = done.send(());
    })?;
    Ok(stopped)
}

/// How far ahead of its due time a recurring connector's fire is stored: its runs are
/// written then and wait (queued) until the due time, when they are only released, so
/// thousands of connectors due in the same second are not queued one write after the
/// other after it. A tenth of the (configurable, for tests) minute, at most 1 s.
fn lead(engine: &Engine) -> TimeDelta {
    (engine.config.minute() / 10).min(TimeDelta::seconds(1))
}

/// Fires stored ahead of their due time and not released yet: their lateness is known
/// when the pass at (or after) the due time has released them.
#[derive(Default)]
struct Ahead(std::collections::BTreeMap<DateTime<Utc>, u32>);

impl Ahead {
    /// Counts the lateness of every fire due by `now` (their runs are released).
    fn released(&mut self, now: DateTime<Utc>) {
        while let Some(entry) = self.0.first_entry() {
            if *entry.key() > now {
                break;
            }
            let (due, n) = entry.remove_entry();
            for _ in 0..n {
                METRICS.scheduler_fired(now - due);
            }
        }
    }
}

/// Runs until the engine is cancelled.
pub async fn run(engine: Arc<Engine>) {
    let mut plan = Plan::default();
    let mut ahead = Ahead::default();
    loop {
        let now = Utc::now();
        // The heartbeat `/ready` reads: working since `now`, then sleeping until a deadline.
        METRICS.scheduler.busy(now);
        let started = std::time::Instant::now();
        let next = match tick(&engine, &mut plan, &mut ahead, now).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "scheduler: store failure; trying again in 5 s");
                Some(now + TimeDelta::seconds(5))
            }
        };
        let sleep = next.map_or(Duration::from_secs(600), |t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let sleep = sleep.min(Duration::from_secs(600));
        METRICS.scheduler_tick(started.elapsed());
        METRICS.scheduler.sleeping(Utc::now() + TimeDelta::from_std(sleep).unwrap_or(TimeDelta::seconds(600)));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = engine.wake.notified() => {}
            () = engine.cancel.cancelled() => return,
        }
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One pass: fire what is due (or due within [`lead`] and free to be stored ahead),
/// dispatch what can run. Returns when to look again.
async fn tick(
    engine: &Arc<Engine>,
    plan: &mut Plan,
    ahead: &mut Ahead,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, crate::store::StoreError> {
    plan.refresh(engine);
    let lead = lead(engine);
    let mut next: Option<DateTime<Utc>> = None;
    let mut fires = Vec::new();
    let mut fired = Vec::new();
    for &(due, id) in &plan.recurring {
        if let Some(due) = due.filter(|d| *d > now + lead) {
            next = earliest(next, due - lead);
            break;
        }
        // Due soon: stored ahead only while no run of the connector is open (one that
        // ends before the due time would otherwise skip this fire); else fired when due.
        let early = due.filter(|d| *d > now);
        if let Some(due) = early
            && !engine.open_runs(id).is_empty()
        {
            next = earliest(next, due);
            continue;
        }
        let Some(c) = engine.store.get(connector::MODEL, id) else { continue };
        let fire = plan_fire(engine, &c, due, early.unwrap_or(now));
        if let Some(at) = fire.next_at {
            next = earliest(next, at - lead);
        }
        fired.push((due, id, fire.next_at));
        fires.push(fire);
    }
    for &id in &plan.onetime {
        if let Some(c) = engine.store.get(connector::MODEL, id)
            && engine.open_runs(id).is_empty()
        {
            start_onetime(engine, &c).await?;
        }
    }
    for &id in &plan.cleanup {
        if let Some(c) = engine.store.get(connector::MODEL, id)
            && let Some(at) = super::registry::vid_cleanup_due(engine, &c, now).await?
        {
            next = earliest(next, at);
        }
    }
    if !fires.is_empty() {
        // Lateness: from when each was due until its run was queued (durable) and free to
        // start; for a fire stored ahead, until the pass that released it. The plan moves
        // each fired connector to its next due time (a fire does not touch the connector
        // record, so the plan is not rebuilt for it).
        let queued = engine.fire_batch(fires).await?.queued_at;
        for (due, id, next_at) in fired {
            match due {
                Some(due) if due > queued => *ahead.0.entry(due).or_default() += 1,
                Some(due) => METRICS.scheduler_fired(queued - due),
                None => {}
            }
            plan.recurring.remove(&(due, id));
            plan.recurring.insert((next_at.or(due), id));
        }
    }
    // Runs stored ahead wait in the index until their due time (that wakes this task).
    if let Some(at) = dispatch_ready(engine, Utc::now()) {
        next = earliest(next, at);
    }
    ahead.released(Utc::now());
    Ok(next)
}

/// What firing a recurring connector does: its next windows, unless a run is still open
/// (missed fires are not replayed: the next window covers the gap), and its next fire
/// time. [`Engine::fire_batch`] stores them for every due connector at once. `now` is
/// the fire's time: the due time for a fire stored ahead of it (its runs wait until then).
fn plan_fire(engine: &Engine, c: &Record, due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Fire {
    let minute = engine.config.minute();
    let mut next_at = window::next_fire(c, due.unwrap_or(now), minute);
    if next_at <= now {
        next_at = window::next_fire(c, now, minute);
    }
    let (windows, settles) = if due.is_some() && engine.open_runs(c.id).is_empty() {
        next_windows(engine, c, now)
    } else {
        (vec![], vec![])
    };
    // No `next_run_at` yet (just started): the first fire is now for an interval, at
    // the next cron time for a cron expression.
    let next_at = match due {
        None if c.str("cron_expression").is_none() => now,
        _ => next_at,
    };
    let not_before = due.filter(|d| *d > Utc::now());
    Fire { connector: c.id, windows, settles, next_at: Some(next_at), not_before }
}

/// The windows a recurring connector's next fire (or *Run now*) queues: every gap below
/// the watermark again, exactly, then `[watermark, now - settle)`; and the gap runs this
/// settles. A registry walk reads every matching registrant: its window is only a label.
pub fn next_windows(engine: &Engine, c: &Record, now: DateTime<Utc>) -> (Vec<FireWindow>, Vec<u64>) {
    let minute = engine.config.minute();
    let custom = c.str("input_type") == Some("custom");
    let gaps = if custom { Default::default() } else { engine.gaps(c.id) };
    // Never acknowledged yet: start where the first windows started.
    let watermark = engine.watermark(c.id).or_else(|| gaps.values().map(|(s, _)| *s).min());
    let mut windows = Vec::new();
    for (&gap, &(start, end)) in &gaps {
        if let Some(w) = watermark.filter(|w| start < *w) {
            windows.push(FireWindow { start, end: end.min(w), covers: Some(gap) });
        }
    }
    let (start, end) = window::delta_window(c, watermark, now, minute);
    if start < end || custom {
        windows.push(FireWindow { start: start.min(end - TimeDelta::seconds(1)), end, covers: None });
    }
    (windows, gaps.keys().copied().collect())
}

/// A started one-time job without an open run: queue its window once, or complete it
/// when its run already ended.
async fn start_onetime(engine: &Engine, c: &Record) -> Result<(), crate::store::StoreError> {
    if c.int(connector::ONETIME_RUN).is_some() {
        return super::life::complete_onetime(engine, c.id).await;
    }
    if let Some((start, end)) = window::onetime_window(c) {
        let run = engine.create_run(c.id, "onetime", start, end, |_| {}).await?;
        engine.update_connector(c.id, |rec| rec.set(connector::ONETIME_RUN, run.id)).await?;
    }
    Ok(())
}

/// Starts the task of every ready run that may run now, oldest first in each admission
/// group: a run needing a place in flight gets it from the pool before its task starts
/// (none waits for room), and a group whose endpoints are full is left at once, so a pass
/// costs what it starts. Answers when the next retry is due.
fn dispatch_ready(engine: &Arc<Engine>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (next_retry, groups) = {
        let mut index = engine.index();
        (index.due(now), index.groups())
    };
    for group in groups {
        let endpoints: Vec<String> = group.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
        let mut after = 0;
        loop {
            let Some((run, connector)) = engine.index().next_ready(&group, after) else { break };
            after = run;
            let admission = if endpoints.is_empty() {
                None
            } else {
                let limit = engine.store.get(connector::MODEL, connector).map_or(1, |c| super::pool::max_parallel(&c));
                match engine.pool.try_admit(connector, limit, &endpoints) {
                    Ok(admission) => Some(admission),
                    Err(NoRoom::Connector) => continue,
                    Err(NoRoom::Endpoints | NoRoom::NoEndpoint) => break,
                }
            };
            if engine.index().activate(run, connector) {
                let engine2 = engine.clone();
                engine.spawn(super::drive(engine2, run, admission));
            }
        }
    }
    next_retry
}
