//! The run engine: when connectors fire, which window a run covers, and one run's life.
//!
//! - [`window`]: delta windows and fire times (pure).
//! - [`runs`]: run records: creation, durable state changes, shared transitions, the
//!   derived index (open runs, watermarks, gaps) and retention.
//! - [`scheduler`]: the one task that fires connectors and dispatches runs.
//! - [`pool`]: a connector's MTS endpoints, and the limits on requests in flight.
//! - [`life`]: one MTS request from queued to its end, for every input (the only place a
//!   request is submitted, tracked, retried or resubmitted).
//! - [`input`]: what differs by input: the ODK window (pre-count and split); the
//!   registry page lives in [`registry`].
//! - [`registry`]: registry walks (which create page runs) and the VID clean-up.
//! - [`actions`]: what the API's connector actions ask of the engine.

pub mod actions;
pub mod input;
pub mod life;
pub mod pool;
pub mod registry;
pub mod runs;
pub mod scheduler;
pub mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::mts::MtsClient;
use crate::clients::odk::OdkClient;
use crate::model::fields::Record;
use crate::store::Store;

/// Tunables of the engine (see `serve --help`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// MTS requests in flight at once, over all connectors and endpoints.
    pub max_in_flight: usize,
    /// MTS requests in flight at once on one MTS endpoint (one MTS's default workers).
    pub max_per_mts: usize,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: i64,
    /// First and longest wait between two status polls of a submitted request.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A request still `submitted` after this long was lost by MTS.
    pub lost_after: Duration,
    /// An MTS endpoint that answered no call for this long lost the requests it held.
    pub gone_after: Duration,
    /// Runs kept per connector (failed ones are always kept).
    pub retention: usize,
    /// How long one "minute" of `interval_minutes` lasts (tests shorten it).
    pub minute: Duration,
    /// Timeout of ODK Central calls.
    pub odk_timeout: Duration,
    /// The URL MTS reaches this service at, for relay-mode callbacks.
    pub public_url: String,
    pub relay: crate::relay::RelayConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_in_flight: 64,
            max_per_mts: 4,
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(3600),
            max_attempts: 10,
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            lost_after: Duration::from_secs(3600),
            gone_after: Duration::from_secs(600),
            retention: 1000,
            minute: Duration::from_secs(60),
            odk_timeout: Duration::from_secs(60),
            public_url: String::new(),
            relay: crate::relay::RelayConfig::default(),
        }
    }
}

impl EngineConfig {
    pub fn minute(&self) -> TimeDelta {
        TimeDelta::from_std(self.minute).unwrap_or(TimeDelta::minutes(1))
    }
}

/// What the engine derives from the runs and keeps in memory (rebuilt at start).
#[derive(Debug, Default)]
pub struct Index {
    /// Non-terminal runs of each connector.
    pub open: HashMap<u64, HashSet<u64>>,
    /// The end of the last window MTS acknowledged, per recurring connector.
    pub watermark: HashMap<u64, DateTime<Utc>>,
    /// Gap candidates per connector: scheduled windows that ended unacknowledged and
    /// were not sent again yet (`run id -> window`), see [`runs`].
    pub gaps: HashMap<u64, BTreeMap<u64, window::Window>>,
    /// Runs that have a live task, with their connector.
    pub active: HashMap<u64, u64>,
    /// Open runs without a live task, ready now, by admission group (their connector's
    /// MTS endpoints; `""` for runs that need no admission), in id order: what a
    /// scheduler pass looks at, group by group, so that it costs what it starts.
    ready: BTreeMap<String, BTreeSet<u64>>,
    /// Retrying runs without a live task, by when they are due.
    timed: BTreeSet<(DateTime<Utc>, u64)>,
    /// Where each run of `ready` or `timed` is: its connector, group and due time.
    places: HashMap<u64, (u64, String, Option<DateTime<Utc>>)>,
    /// The first run id made after each connector was last stopped: an older run (a
    /// smaller id) which fails transiently is cancelled instead of retried (it was
    /// mid-call during the stop). Ids, not clock times: a run made after a stop but in
    /// the same millisecond (a restart right after it) is not older.
    pub stopped: HashMap<u64, u64>,
}

impl Index {
    /// Sets where run `run` of `connector` waits for a task: nowhere (`None`: it ended or
    /// has one), ready in `group`, or in `group` once `due`.
    pub fn place(&mut self, run: u64, connector: u64, place: Option<(String, Option<DateTime<Utc>>)>) {
        if let Some((_, group, due)) = self.places.remove(&run) {
            match due {
                Some(at) => {
                    self.timed.remove(&(at, run));
                }
                None => {
                    if let Some(set) = self.ready.get_mut(&group) {
                        set.remove(&run);
                        if set.is_empty() {
                            self.ready.remove(&group);
                        }
                    }
                }
            }
        }
        let Some((group, due)) = place else { return };
        if self.active.contains_key(&run) {
            return;
        }
        match due {
            Some(at) => {
                self.timed.insert((at, run));
            }
            None => {
                self.ready.entry(group.clone()).or_default().insert(run);
            }
        }
        self.places.insert(run, (connector, group, due));
    }

    /// Retries due by `now` become ready; answers when the next one is due.
    pub fn due(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        while let Some(&(at, run)) = self.timed.first() {
            if at > now {
                return Some(at);
            }
            self.timed.remove(&(at, run));
            if let Some(entry) = self.places.get_mut(&run) {
                entry.2 = None;
                let group = entry.1.clone();
                self.ready.entry(group).or_default().insert(run);
            }
        }
        None
    }

    /// The admission groups that have ready runs.
    pub fn groups(&self) -> Vec<String> {
        self.ready.keys().cloned().collect()
    }

    /// The first ready run of `group` after run `after`, with its connector.
    pub fn next_ready(&self, group: &str, after: u64) -> Option<(u64, u64)> {
        let run = *self.ready.get(group)?.range(after + 1..).next()?;
        Some((run, self.places.get(&run).map_or(0, |p| p.0)))
    }

    /// Marks `run` of `connector` as having a live task; false if it already has one.
    pub fn activate(&mut self, run: u64, connector: u64) -> bool {
        if self.active.insert(run, connector).is_some() {
            return false;
        }
        self.place(run, connector, None);
        true
    }

    /// The task of `run` ended (the caller places the run again if it is still open).
    pub fn deactivate(&mut self, run: u64) {
        self.active.remove(&run);
    }
}

pub struct Engine {
    pub store: Arc<Store>,
    pub config: EngineConfig,
    pub mts: MtsClient,
    pub odk: OdkClient,
    pub relay: crate::relay::Relay,
    pub index: Mutex<Index>,
    /// Wakes the scheduler: a connector or run changed, or room freed up in the pool.
    pub wake: Arc<Notify>,
    /// Woken (all waiters) whenever a run ends: a walk waits on its pages with it.
    pub run_ended: Notify,
    /// The MTS endpoints and the requests in flight on them.
    pub pool: pool::Pool,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// The runtime run tasks are spawned on (the scheduler has a thread of its own).
    runtime: tokio::runtime::Handle,
}

impl Engine {
    /// Must be called within the tokio runtime that will run the engine's tasks.
    pub fn new(
        store: Arc<Store>,
        config: EngineConfig,
        http: reqwest::Client,
    ) -> Result<Arc<Engine>, crate::store::StoreError> {
        let index = runs::build_index(&store)?;
        let relay = crate::relay::Relay::new(&store, config.relay.clone(), http.clone());
        let wake = Arc::new(Notify::new());
        Ok(Arc::new(Engine {
            relay,
            store,
            pool: pool::Pool::new(
                config.max_per_mts,
                config.max_in_flight,
                config.retry_base.min(Duration::from_secs(5)),
                config.retry_cap.min(Duration::from_secs(300)),
                wake.clone(),
            ),
            wake,
            config,
            mts: MtsClient::new(http.clone()),
            odk: OdkClient::new(http),
            index: Mutex::new(index),
            run_ended: Notify::new(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    pub fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A poisoned lock means a panic elsewhere; the index is still consistent
        // because every update is a single insert or remove.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a run task (or any engine task) on the engine's runtime, from any thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn_on(task, &self.runtime);
    }

    /// Stops the scheduler and the run tasks, and waits for them (up to `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("some runs did not stop in time; they resume after the restart");
        }
    }
}

/// Drives run `id` as far as it can go now, by its kind: a request (an ODK window or a
/// registry page, with the admission the scheduler got for it) through the run life, a
/// registry walk, or a VID clean-up. Returns when the run is terminal, waits for a retry
/// (the scheduler dispatches it again when due), or the engine stops.
pub async fn drive(engine: Arc<Engine>, id: u64, admission: Option<pool::Admission>) {
    let result = match engine.run(id) {
        Some(run) if run.str("trigger") == Some("vid_cleanup") => registry::cleanup(&engine, id).await,
        Some(run) if registry::is_page(&run) => life::request(&engine, id, &registry::RegistryPage, admission).await,
        Some(run) if is_registry(&engine, &run) => registry::walk(&engine, id).await,
        Some(_) => life::request(&engine, id, &input::OdkWindow, admission).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(run_id = id, error = %e, "run paused: the store failed; it resumes on the next start");
    }
    engine.index().deactivate(id);
    if let Some(run) = engine.run(id) {
        let place = runs::place_of(&engine.store, &run);
        engine.index().place(id, runs::connector_id(&run), place);
    }
    engine.wake.notify_one();
}

fn is_registry(engine: &Engine, run: &Record) -> bool {
    engine
        .store
        .get(crate::model::connector::MODEL, runs::connector_id(run))
        .is_some_and(|c| c.str("input_type") == Some("custom"))
}
