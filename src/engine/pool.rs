//! The MTS endpoints a connector names and the limits on requests in flight.
//!
//! A connector's `mts_url` holds one or more MTS base URLs (the pods of a StatefulSet, or
//! separate installations). A request is *in flight* from its admission (before the ODK
//! pre-count or the registry read) until MTS ended it; three limits bound how many:
//! per connector (`mts_max_parallel`), per endpoint (`--max-per-mts`) and over all
//! (`--max-in-flight`). A run is admitted on the least busy endpoint that is up. An
//! endpoint whose calls fail is skipped for a backoff and then tried again by one
//! request; one that has answered nothing for a while has lost what it held
//! ([`Pool::failing_for`]; the run life resubmits those requests elsewhere).
//!
//! Admission never waits: the scheduler asks ([`Pool::try_admit`]) before it starts a
//! run's task, oldest run first, so no task waits for room; an [`Admission`] that ends
//! wakes the scheduler to admit the next. Counts live here, not in semaphores: a
//! request tracked after a restart counts at once, even if the limits were lowered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::model::connector;
use crate::model::fields::Record;

/// The MTS base URLs of a connector (see [`connector::mts_urls`]).
pub fn endpoints(c: &Record) -> Vec<String> {
    connector::mts_urls(c)
}

/// How a connector's requests are bounded.
pub fn max_parallel(c: &Record) -> usize {
    c.int("mts_max_parallel").unwrap_or(connector::DEFAULT_MAX_PARALLEL).max(1) as usize
}

/// An endpoint's label in metrics: `host:port`, never a path, query or credentials.
pub fn label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    host.rsplit_once('@').map_or(host, |(_, h)| h).to_string()
}

#[derive(Debug, Default)]
struct Endpoint {
    in_flight: usize,
    /// Failed calls since the last answer.
    failures: u32,
    /// Skipped for new requests until then.
    down_until: Option<Instant>,
    /// The first failed call since the last answer.
    failing_since: Option<Instant>,
    accepted: u64,
}

impl Endpoint {
    fn up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| t <= now)
    }
}

#[derive(Default)]
struct State {
    endpoints: HashMap<String, Endpoint>,
    connectors: HashMap<u64, usize>,
    total: usize,
}

struct Inner {
    state: Mutex<State>,
    per_endpoint: usize,
    total: usize,
    backoff_base: Duration,
    backoff_cap: Duration,
    /// Woken when room frees up (the scheduler's wake-up).
    room: Arc<Notify>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Poison means a panic elsewhere; every update keeps the counts consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a run cannot have a request in flight now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// Its connector has `mts_max_parallel` requests in flight.
    Connector,
    /// Its endpoints (or the service, `--max-in-flight`) are full: no run using these
    /// endpoints can be admitted now.
    Endpoints,
    /// The connector names no MTS URL.
    NoEndpoint,
}

/// The least busy endpoint with room that is up; when every endpoint of the list is
/// down, the one that comes back first (a probe: if it fails too, the run retries with
/// the engine's backoff, as with a single MTS).
fn choose(all: &HashMap<String, Endpoint>, list: &[String], per_endpoint: usize, now: Instant) -> Option<String> {
    let none = Endpoint::default();
    let get = |u: &String| all.get(u).unwrap_or(&none);
    let with_room = || list.iter().filter(|u| get(u).in_flight < per_endpoint);
    if let Some(best) = with_room().filter(|u| get(u).up(now)).min_by_key(|u| (get(u).in_flight, get(u).failures)) {
        return Some(best.clone());
    }
    if list.iter().any(|u| get(u).up(now)) {
        // An endpoint is up but full: wait for it rather than send to one that is down.
        return None;
    }
    with_room().min_by_key(|u| get(u).down_until).cloned()
}

fn count(st: &mut State, connector: u64, endpoint: &str, delta: isize) {
    let add = |n: &mut usize| *n = n.saturating_add_signed(delta);
    add(&mut st.total);
    add(st.connectors.entry(connector).or_default());
    add(&mut st.endpoints.entry(endpoint.to_string()).or_default().in_flight);
    if st.connectors.get(&connector) == Some(&0) {
        st.connectors.remove(&connector);
    }
}

/// The MTS endpoints of every connector and the requests in flight on them.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// One request's place in flight: released (and the next waiter admitted) on drop.
pub struct Admission {
    inner: Arc<Inner>,
    connector: u64,
    pub endpoint: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        count(&mut self.inner.state(), self.connector, &self.endpoint, -1);
        self.inner.room.notify_one();
    }
}

/// What `/metrics` and `action_test_connection` report of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    pub url: String,
    pub in_flight: usize,
    pub up: bool,
    pub failures: u32,
    pub accepted: u64,
}

impl Pool {
    /// `per_endpoint` and `total` are the `--max-per-mts` and `--max-in-flight` limits; a
    /// failing endpoint is skipped for `backoff_base` doubled per failure, up to
    /// `backoff_cap`; `room` is notified whenever a request leaves.
    pub fn new(
        per_endpoint: usize,
        total: usize,
        backoff_base: Duration,
        backoff_cap: Duration,
        room: Arc<Notify>,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                per_endpoint: per_endpoint.max(1),
                total: total.max(1),
                backoff_base,
                backoff_cap,
                room,
            }),
        }
    }

    /// A place in flight for a request of `connector` (whose limit is `limit`) on the
    /// least busy of `endpoints` that is up, if there is room now.
    pub fn try_admit(&self, connector: u64, limit: usize, endpoints: &[String]) -> Result<Admission, NoRoom> {
        if endpoints.is_empty() {
            return Err(NoRoom::NoEndpoint);
        }
        let mut st = self.inner.state();
        if st.total >= self.inner.total {
            return Err(NoRoom::Endpoints);
        }
        if st.connectors.get(&connector).copied().unwrap_or(0) >= limit.max(1) {
            return Err(NoRoom::Connector);
        }
        let endpoint =
            choose(&st.endpoints, endpoints, self.inner.per_endpoint, Instant::now()).ok_or(NoRoom::Endpoints)?;
        count(&mut st, connector, &endpoint, 1);
        Ok(Admission { inner: self.inner.clone(), connector, endpoint })
    }

    /// A request MTS already holds (tracked after a restart): counted at once.
    pub fn track(&self, connector: u64, endpoint: &str) -> Admission {
        count(&mut self.inner.state(), connector, endpoint, 1);
        Admission { inner: self.inner.clone(), connector, endpoint: endpoint.to_string() }
    }

    /// `endpoint` answered (any HTTP answer that is not a server error).
    pub fn ok(&self, endpoint: &str) {
        let mut st = self.inner.state();
        let e = st.endpoints.entry(endpoint.to_string()).or_default();
        let was_down = e.down_until.is_some();
        e.failures = 0;
        e.down_until = None;
        e.failing_since = None;
        drop(st);
        if was_down {
            tracing::info!(endpoint = %label(endpoint), "MTS endpoint answers again");
            self.inner.room.notify_one();
        }
    }

    /// MTS accepted a request on `endpoint`.
    pub fn accepted(&self, endpoint: &str) {
        self.ok(endpoint);
        self.inner.state().endpoints.entry(endpoint.to_string()).or_default().accepted += 1;
    }

    /// A call to `endpoint` failed (unreachable, timed out or a server error): it is
    /// skipped by new requests for a backoff.
    pub fn failed(&self, endpoint: &str) {
        let mut st = self.inner.state();
        let e = st.endpoints.entry(endpoint.to_string()).or_default();
        let now = Instant::now();
        e.failures = e.failures.saturating_add(1);
        e.failing_since.get_or_insert(now);
        let wait = self.inner.backoff_base.saturating_mul(1 << (e.failures - 1).min(16)).min(self.inner.backoff_cap);
        if e.down_until.is_none() {
            tracing::warn!(endpoint = %label(endpoint), "MTS endpoint failing: new requests go elsewhere for now");
        }
        e.down_until = Some(now + wait);
    }

    /// How long `endpoint` has failed every call, if it does.
    pub fn failing_for(&self, endpoint: &str) -> Option<Duration> {
        self.inner.state().endpoints.get(endpoint).and_then(|e| e.failing_since).map(|t| t.elapsed())
    }

    /// Every endpoint seen so far, by URL.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let st = self.inner.state();
        let now = Instant::now();
        let mut out: Vec<EndpointStats> = st
            .endpoints
            .iter()
            .map(|(url, e)| EndpointStats {
                url: url.clone(),
                in_flight: e.in_flight,
                up: e.up(now),
                failures: e.failures,
                accepted: e.accepted,
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// Requests in flight for `connector`.
    pub fn in_flight(&self, connector: u64) -> usize {
        self.inner.state().connectors.get(&connector).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(per_endpoint: usize, total: usize) -> Pool {
        Pool::new(per_endpoint, total, Duration::from_secs(60), Duration::from_secs(60), Arc::new(Notify::new()))
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn endpoints_are_split_trimmed_and_deduplicated() {
        let mut c = Record::default();
        c.set("mts_url", "http://a:1/, http://b:2\nhttp://a:1  http://c:3/x/");
        assert_eq!(endpoints(&c), urls(&["http://a:1", "http://b:2", "http://c:3/x"]));
        assert_eq!(label("https://user:pw@mts-0.seeder:8080/v1?x=1"), "mts-0.seeder:8080");
    }

    #[test]
    fn requests_spread_over_the_least_busy_endpoint_within_every_limit() {
        let p = pool(2, 10);
        let eps = urls(&["http://a", "http://b"]);
        let a1 = p.try_admit(7, 10, &eps).unwrap();
        let b1 = p.try_admit(7, 10, &eps).unwrap();
        assert_ne!(a1.endpoint, b1.endpoint, "the least busy endpoint first");
        let _x = p.try_admit(7, 10, &eps).unwrap();
        let _y = p.try_admit(7, 10, &eps).unwrap();
        assert_eq!(p.try_admit(7, 10, &eps).err(), Some(NoRoom::Endpoints), "both endpoints are full");
        let freed = b1.endpoint.clone();
        drop(b1);
        let again = p.try_admit(7, 10, &eps).unwrap();
        assert_eq!(again.endpoint, freed);
        assert_eq!(p.in_flight(7), 4);
    }

    #[tokio::test]
    async fn the_connector_and_service_limits_hold_and_a_release_wakes_the_scheduler() {
        let room = Arc::new(Notify::new());
        let p = Pool::new(10, 3, Duration::from_secs(60), Duration::from_secs(60), room.clone());
        let eps = urls(&["http://a"]);
        let first = p.try_admit(1, 1, &eps).unwrap();
        assert_eq!(p.try_admit(1, 1, &eps).err(), Some(NoRoom::Connector));
        // Another connector is not held up by connector 1's limit.
        let _other = p.try_admit(2, 5, &eps).unwrap();
        let _third = p.try_admit(2, 5, &eps).unwrap();
        assert_eq!(p.try_admit(3, 5, &eps).err(), Some(NoRoom::Endpoints), "--max-in-flight 3");
        let woken = room.notified();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), woken).await.expect("the scheduler is woken");
        assert!(p.try_admit(1, 1, &eps).is_ok());
        assert_eq!(p.try_admit(9, 1, &[]).err(), Some(NoRoom::NoEndpoint));
    }

    #[test]
    fn a_failing_endpoint_is_skipped_until_it_answers_again() {
        let p = pool(10, 10);
        let eps = urls(&["http://a", "http://b"]);
        p.failed("http://a");
        for _ in 1..=3 {
            assert_eq!(p.try_admit(1, 10, &eps).unwrap().endpoint, "http://b");
        }
        assert!(p.failing_for("http://a").is_some());
        p.ok("http://a");
        assert!(p.failing_for("http://a").is_none());
        let stats = p.stats();
        assert!(stats.iter().all(|s| s.up), "{stats:?}");
        // Every endpoint down: the one that comes back first is probed.
        p.failed("http://a");
        p.failed("http://b");
        p.failed("http://b");
        assert_eq!(p.try_admit(1, 10, &eps).unwrap().endpoint, "http://a");
    }

    #[test]
    fn tracked_requests_count_at_once_beyond_the_limits() {
        let p = pool(1, 1);
        let _a = p.track(1, "http://a");
        let _b = p.track(1, "http://a");
        assert_eq!(p.in_flight(1), 2);
        assert_eq!(p.stats()[0].in_flight, 2);
    }
}
