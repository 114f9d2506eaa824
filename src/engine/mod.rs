//! The run engine: when connectors fire, which window a run covers, and one run's life.
//!
//! - [`window`]: delta windows and fire times (pure).
//! - [`runs`]: run records: creation, durable state changes, the derived watermark.
//! - [`scheduler`]: the one task that fires connectors and dispatches runs.
//! - [`runner`]: one run from queued to its end (pre-count, split, submit, track).
//! - [`actions`]: what the API's connector actions ask of the engine.

pub mod actions;
pub mod registry;
pub mod runner;
pub mod runs;
pub mod scheduler;
pub mod window;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::mts::MtsClient;
use crate::clients::odk::OdkClient;
use crate::store::Store;

/// Tunables of the engine (see `serve --help`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Runs submitting at once, over all connectors.
    pub max_in_flight: usize,
    /// Runs submitting at once to one MTS URL (MTS works one request at a time).
    pub max_per_mts: usize,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: i64,
    /// First and longest wait between two status polls of a submitted request.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A request still `submitted` after this long was lost by MTS.
    pub lost_after: Duration,
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
            max_in_flight: 4,
            max_per_mts: 1,
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(3600),
            max_attempts: 10,
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(30),
            lost_after: Duration::from_secs(3600),
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
    /// Runs that have a live task (submitting or tracking), with their connector.
    pub active: HashMap<u64, u64>,
    /// Connectors with open runs none of which has a live task: what the scheduler may
    /// dispatch. Kept up to date by [`Index::settle`], so that a scheduler pass looks at
    /// these only, not at every open run.
    pub waiting: HashSet<u64>,
    /// When each connector was last stopped: a run created before that which fails
    /// transiently is cancelled instead of retried (it was mid-call during the stop).
    pub stopped: HashMap<u64, DateTime<Utc>>,
}

impl Index {
    /// Re-derives whether `connector` waits for a task.
    pub fn settle(&mut self, connector: u64) {
        let active = &self.active;
        if self.open.get(&connector).is_some_and(|runs| !runs.iter().any(|r| active.contains_key(r))) {
            self.waiting.insert(connector);
        } else {
            self.waiting.remove(&connector);
        }
    }

    /// Marks `run` of `connector` as having a live task; false if it already has one.
    pub fn activate(&mut self, run: u64, connector: u64) -> bool {
        if self.active.insert(run, connector).is_some() {
            return false;
        }
        self.settle(connector);
        true
    }

    /// The task of `run` ended.
    pub fn deactivate(&mut self, run: u64) {
        if let Some(connector) = self.active.remove(&run) {
            self.settle(connector);
        }
    }
}

pub struct Engine {
    pub store: Arc<Store>,
    pub config: EngineConfig,
    pub mts: MtsClient,
    pub odk: OdkClient,
    pub relay: crate::relay::Relay,
    pub index: Mutex<Index>,
    /// Wakes the scheduler: a connector or run changed.
    pub wake: Notify,
    global_slots: Arc<Semaphore>,
    mts_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// The runtime run tasks are spawned on (the scheduler has a thread of its own).
    runtime: tokio::runtime::Handle,
}

impl Engine {
    /// Must be called within the tokio runtime that will run the engine's tasks.
    pub fn new(store: Arc<Store>, config: EngineConfig, http: reqwest::Client) -> Arc<Engine> {
        let index = runs::build_index(&store);
        let relay = crate::relay::Relay::new(&store, config.relay.clone(), http.clone());
        Arc::new(Engine {
            relay,
            store,
            global_slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            mts: MtsClient::new(http.clone()),
            odk: OdkClient::new(http),
            index: Mutex::new(index),
            wake: Notify::new(),
            mts_slots: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A poisoned lock means a panic elsewhere; the index is still consistent
        // because every update is a single insert or remove.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The semaphore bounding submissions to one MTS URL.
    fn mts_slot(&self, url: &str) -> Arc<Semaphore> {
        let mut slots = self.mts_slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(url.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_mts.max(1)))).clone()
    }

    /// One of the `max_in_flight` slots for a run's submit phase (pre-count included).
    /// Always taken before an MTS URL's slot, so the two can never deadlock.
    pub async fn global_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.global_slots.clone().acquire_owned().await.ok()
    }

    /// The slot of one MTS URL, held only around the call to MTS itself.
    pub async fn mts_url_slot(&self, mts_url: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.mts_slot(mts_url).acquire_owned().await.ok()
    }

    /// Both slots, global first, in request order (tokio's semaphores are fair), so
    /// queued runs go oldest first.
    pub async fn submission_slot(
        &self,
        mts_url: &str,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)> {
        let global = self.global_slot().await?;
        let per_url = self.mts_url_slot(mts_url).await?;
        Some((per_url, global))
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
