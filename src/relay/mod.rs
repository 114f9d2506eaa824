//! The durable callback relay: for a `relay`-mode connector MTS calls back the service
//! (`POST /relay/{run_id}`), which stores each record durably before answering,
//! de-duplicates it by an idempotency key, and forwards it to the real target with
//! retries, so that every token reaches Odoo exactly once whatever MTS does.
//!
//! - [`intake`]: the endpoint: token check, size limit, parsing, durable storage.
//! - [`deliver`]: the delivery queue: rendering with jq, auth, retries, dead letters.
//! - [`auth`]: the target's auth (Odoo session, OAuth token, static bearer).
//!
//! A delivery is a record of `mts.connector.delivery`. Its `{input, output}` payload
//! (personal data) lives in the record's secrets, which nothing renders or logs, and is
//! dropped as soon as the record is delivered; only the key and the outcome remain.

pub mod auth;
pub mod deliver;
pub mod intake;
pub mod registry_target;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::model::delivery::MODEL;
use crate::model::parse_datetime;
use crate::store::Store;

/// Tunables of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Deliveries in flight to one target URL.
    pub per_target: usize,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long a delivery is retried before it is `failed`.
    pub give_up_after: Duration,
    /// Failed deliveries' payloads are purged after this long.
    pub failed_retention: Duration,
    /// After MTS ends a request, how long to wait for missing records before the
    /// window is resubmitted.
    pub grace: Duration,
    /// Largest body accepted on `/relay/{run_id}`.
    pub max_body: usize,
    /// An Odoo session at a target unused this long is logged out.
    pub idle_logout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            per_target: 4,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            failed_retention: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(60),
            max_body: 32 << 20,
            idle_logout: Duration::from_secs(30),
        }
    }
}

/// Pending deliveries, one time-ordered queue per target URL, so that dispatching
/// costs what it starts, however long a backlog a dead target has built up.
#[derive(Default)]
pub struct Queue {
    by_target: HashMap<String, BTreeSet<(DateTime<Utc>, u64)>>,
    entries: HashMap<u64, (String, DateTime<Utc>)>,
}

impl Queue {
    pub fn insert(&mut self, id: u64, target: &str, at: DateTime<Utc>) {
        self.remove(id);
        self.by_target.entry(target.to_string()).or_default().insert((at, id));
        self.entries.insert(id, (target.to_string(), at));
    }

    pub fn remove(&mut self, id: u64) {
        if let Some((target, at)) = self.entries.remove(&id)
            && let Some(set) = self.by_target.get_mut(&target)
        {
            set.remove(&(at, id));
            if set.is_empty() {
                self.by_target.remove(&target);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The targets and the first (earliest) entry of each.
    fn heads(&self) -> Vec<(String, DateTime<Utc>)> {
        self.by_target.iter().filter_map(|(t, set)| set.first().map(|(at, _)| (t.clone(), *at))).collect()
    }

    /// Takes the first entry of `target` if it is due.
    fn pop_due(&mut self, target: &str, now: DateTime<Utc>) -> Option<u64> {
        let (at, id) = *self.by_target.get(target)?.first()?;
        if at > now {
            return None;
        }
        self.remove(id);
        Some(id)
    }
}

/// The callback URL of a delivery's connector (the registry's URL for a registry
/// target): its queue.
pub fn target_of(store: &Store, connector: u64) -> String {
    store
        .get(crate::model::connector::MODEL, connector)
        .and_then(|c| {
            let field = if c.str("delivery_target") == Some("registry") { "odoo_url" } else { "callback_url" };
            c.str(field).map(str::to_string)
        })
        .unwrap_or_default()
}

/// The relay's in-memory state, rebuilt from the deliveries at start.
pub struct Relay {
    pub config: RelayConfig,
    http: reqwest::Client,
    /// Pending deliveries not being sent right now, and when each is due.
    pending: Mutex<Queue>,
    /// Deliveries being sent right now.
    in_flight: Mutex<std::collections::HashSet<u64>>,
    /// Compiled output formats, by source.
    programs: Mutex<HashMap<String, crate::jq::Program>>,
    targets: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub sessions: auth::Sessions,
    /// Wakes the delivery loop: a record arrived or a delivery finished.
    pub wake: Notify,
    /// Delivery outcomes written and not yet durable (see [`UNFLUSHED_OUTCOMES`]).
    pub(crate) unflushed: Arc<Semaphore>,
}

/// Delivery outcomes that may wait for a commit at once. They share commits; after a
/// crash, at most this many records plus the calls in flight are sent again (with their
/// idempotency header), since their outcome was not yet durable.
pub const UNFLUSHED_OUTCOMES: usize = 256;

/// SHA-256 in hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Relay {
    pub fn new(store: &Store, config: RelayConfig, http: reqwest::Client) -> Relay {
        // The pending deliveries only, through the state index: de-duplication reads the
        // key index on disk, so nothing here grows with the history.
        let mut pending = Queue::default();
        let mut targets: HashMap<u64, String> = HashMap::new();
        let ids = store.index_ids(MODEL, "state_time", &[&serde_json::Value::from("pending")], false);
        match ids {
            Ok(ids) => {
                for id in ids {
                    let d = match id.map(|id| store.get(MODEL, id)) {
                        Ok(Some(d)) => d,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the pending deliveries");
                            break;
                        }
                    };
                    let at = d.str("next_attempt_at").and_then(|t| parse_datetime(t).ok()).unwrap_or_else(Utc::now);
                    let connector = d.int("connector_id").unwrap_or(0) as u64;
                    let target = targets.entry(connector).or_insert_with(|| target_of(store, connector));
                    pending.insert(d.id, target, at);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the pending deliveries"),
        }
        let sessions = auth::Sessions::new(http.clone(), config.idle_logout);
        Relay {
            config,
            http: http.clone(),
            pending: Mutex::new(pending),
            in_flight: Mutex::new(Default::default()),
            programs: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            sessions,
            wake: Notify::new(),
            unflushed: Arc::new(Semaphore::new(UNFLUSHED_OUTCOMES)),
        }
    }

    pub fn pending(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compiled output format (compiled once per distinct source).
    fn program(&self, source: &str) -> Result<crate::jq::Program, crate::jq::JqError> {
        let mut cache = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(source) {
            return Ok(p.clone());
        }
        let program = crate::jq::Program::compile(source)?;
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(source.to_string(), program.clone());
        Ok(program)
    }

    fn target_slot(&self, url: &str) -> Arc<Semaphore> {
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.entry(url.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.config.per_target.max(1)))).clone()
    }
}
