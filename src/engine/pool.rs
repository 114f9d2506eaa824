//! The MTS endpoints a connector names and the limits on requests in flight.
//!
//! A connector's `mts_url` holds one or more MTS base URLs (the pods of a StatefulSet, or
//! separate installations). A request is *in flight* from its admission (before the ODK
//! pre-count or the registry read) until MTS ended it; three limits bound how many:
//! per connector (`mts_max_parallel`), per endpoint (`--max-per-mts`) and over all
//! (`--max-in-flight`). Admission is oldest run first, on the least busy endpoint that
//! is up. An endpoint whose calls fail is skipped for a backoff and then tried again by
//! one request; one that has answered nothing for a while has lost what it held
//! ([`Pool::failing_for`]; the run life resubmits those requests elsewhere).
//!
//! Counts live here, not in semaphores: a request tracked after a restart counts at
//! once, without waiting, even if the limits were lowered meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

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

struct Waiter {
    connector: u64,
    limit: usize,
    endpoints: Vec<String>,
    grant: oneshot::Sender<String>,
}

#[derive(Default)]
struct State {
    endpoints: HashMap<String, Endpoint>,
    connectors: HashMap<u64, usize>,
    total: usize,
    /// Runs waiting for admission, by run id: the oldest is served first.
    waiters: BTreeMap<u64, Waiter>,
}

struct Inner {
    state: Mutex<State>,
    per_endpoint: usize,
    total: usize,
    backoff_base: Duration,
    backoff_cap: Duration,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Poison means a panic elsewhere; every update keeps the counts consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits every waiter that fits now, oldest first. A waiter whose connector or
    /// endpoints are full does not hold up younger ones that fit.
    fn grant(&self, st: &mut State) {
        let now = Instant::now();
        let ids: Vec<u64> = st.waiters.keys().copied().collect();
        for id in ids {
            if st.total >= self.total {
                break;
            }
            let Some(w) = st.waiters.get(&id) else { continue };
            if w.grant.is_closed() {
                st.waiters.remove(&id);
                continue;
            }
            if st.connectors.get(&w.connector).copied().unwrap_or(0) >= w.limit {
                continue;
            }
            let Some(endpoint) = choose(&st.endpoints, &w.endpoints, self.per_endpoint, now) else { continue };
            let Some(w) = st.waiters.remove(&id) else { continue };
            let connector = w.connector;
            if w.grant.send(endpoint.clone()).is_ok() {
                count(st, connector, &endpoint, 1);
            }
        }
    }
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
        let mut st = self.inner.state();
        count(&mut st, self.connector, &self.endpoint, -1);
        self.inner.grant(&mut st);
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
    /// `backoff_cap`.
    pub fn new(per_endpoint: usize, total: usize, backoff_base: Duration, backoff_cap: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                per_endpoint: per_endpoint.max(1),
                total: total.max(1),
                backoff_base,
                backoff_cap,
            }),
        }
    }

    /// Waits until run `run` of `connector` may have a request in flight, and answers on
    /// which of `endpoints`. Oldest run first; dropping the future gives up its turn.
    pub async fn admit(&self, run: u64, connector: u64, limit: usize, endpoints: Vec<String>) -> Option<Admission> {
        if endpoints.is_empty() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.state();
            st.waiters.insert(run, Waiter { connector, limit: limit.max(1), endpoints, grant: tx });
            self.inner.grant(&mut st);
        }
        let endpoint = rx.await.ok()?;
        Some(Admission { inner: self.inner.clone(), connector, endpoint })
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
        if was_down {
            tracing::info!(endpoint = %label(endpoint), "MTS endpoint answers again");
            self.inner.grant(&mut st);
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
        Pool::new(per_endpoint, total, Duration::from_secs(60), Duration::from_secs(60))
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

    #[tokio::test]
    async fn requests_spread_over_the_least_busy_endpoint_within_every_limit() {
        let p = pool(2, 10);
        let eps = urls(&["http://a", "http://b"]);
        let a1 = p.admit(1, 7, 10, eps.clone()).await.unwrap();
        let b1 = p.admit(2, 7, 10, eps.clone()).await.unwrap();
        assert_ne!(a1.endpoint, b1.endpoint, "the least busy endpoint first");
        let _x = p.admit(3, 7, 10, eps.clone()).await.unwrap();
        let _y = p.admit(4, 7, 10, eps.clone()).await.unwrap();
        // Both endpoints are full: the next waits until one is released.
        let waiting = tokio::spawn({
            let (p, eps) = (p.clone(), eps.clone());
            async move { p.admit(5, 7, 10, eps).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let freed = b1.endpoint.clone();
        drop(b1);
        let admitted = waiting.await.unwrap().unwrap();
        assert_eq!(admitted.endpoint, freed);
        assert_eq!(p.in_flight(7), 4);
    }

    #[tokio::test]
    async fn the_connector_limit_holds_and_the_oldest_run_goes_first() {
        let p = pool(10, 10);
        let eps = urls(&["http://a"]);
        let first = p.admit(10, 1, 1, eps.clone()).await.unwrap();
        let later = tokio::spawn({
            let (p, eps) = (p.clone(), eps.clone());
            async move { p.admit(30, 1, 1, eps).await }
        });
        let older = tokio::spawn({
            let (p, eps) = (p.clone(), eps.clone());
            async move { p.admit(20, 1, 1, eps).await }
        });
        // Another connector is not held up by connector 1's limit.
        let other = p.admit(40, 2, 1, eps.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let admitted = older.await.unwrap();
        assert!(admitted.is_some(), "run 20 is older than run 30");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!later.is_finished());
        drop(other);
        assert_eq!(p.in_flight(1), 1);
        drop(admitted);
        assert!(later.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_skipped_until_it_answers_again() {
        let p = pool(10, 10);
        let eps = urls(&["http://a", "http://b"]);
        p.failed("http://a");
        for run in 1..=3 {
            assert_eq!(p.admit(run, 1, 10, eps.clone()).await.unwrap().endpoint, "http://b");
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
        assert_eq!(p.admit(9, 1, 10, eps).await.unwrap().endpoint, "http://a");
    }

    #[tokio::test]
    async fn tracked_requests_count_at_once_beyond_the_limits() {
        let p = pool(1, 1);
        let _a = p.track(1, "http://a");
        let _b = p.track(1, "http://a");
        assert_eq!(p.in_flight(1), 2);
        assert_eq!(p.stats()[0].in_flight, 2);
    }
}
