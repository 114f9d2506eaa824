//! The operations routes: `GET /health` (liveness), `GET /ready` (readiness) and
//! `GET /metrics` (Prometheus). None needs credentials and none shows a record's data:
//! only counts, states and the version.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::{Value, json};

use super::App;
use crate::metrics::{Gauge, METRICS};
use crate::model::{connector, delivery, run};

/// Liveness: the process answers and its store is open. `(healthy, body)`.
pub fn health(app: &App) -> (bool, Value) {
    let store_open = app.store.path().exists();
    let uptime = METRICS.uptime().num_seconds().max(0);
    (
        store_open,
        json!({
            "status": if store_open { "ok" } else { "failing" },
            "version": env!("CARGO_PKG_VERSION"),
            "store": if store_open { "open" } else { "data dir missing" },
            "uptime_seconds": uptime,
        }),
    )
}

/// Readiness: the store can write (no failed commit, free space on its disk) and the
/// scheduler loop is alive. `(ready, body)`. Cheap: it writes nothing (the free space
/// is read with one `statvfs`, cached for a second).
pub async fn ready(app: &App) -> (bool, Value) {
    let store = match app.store.write_health().ready() {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let scheduler = match METRICS.scheduler.alive(Utc::now()) {
        Ok(detail) => json!({"ok": true, "detail": detail}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let ok = store["ok"] == true && scheduler["ok"] == true;
    (ok, json!({"status": if ok { "ready" } else { "not ready" }, "checks": {"store": store, "scheduler": scheduler}}))
}

/// The Prometheus text: the counted metrics plus what the store and engine hold now.
pub fn metrics(app: &App) -> String {
    METRICS.render(&gauges(app))
}

fn count_by<'a>(
    records: impl Iterator<Item = &'a crate::model::fields::Record>,
    field: &str,
    states: &[(&str, &str)],
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = states.iter().map(|(s, _)| (s.to_string(), 0)).collect();
    for r in records {
        // Only known selection values become labels.
        if let Some(n) = r.str(field).and_then(|s| out.get_mut(s)) {
            *n += 1;
        }
    }
    out
}

/// Per MTS endpoint of every connector: up, requests in flight, requests accepted since
/// the start. The label is the endpoint's `host:port` (bounded by the configuration).
fn endpoint_gauges(app: &App, connectors: &[std::sync::Arc<crate::model::fields::Record>]) -> Vec<Gauge> {
    let stats = app.engine.pool.stats();
    let mut urls: Vec<String> = connectors.iter().flat_map(|c| crate::engine::pool::endpoints(c)).collect();
    urls.extend(stats.iter().map(|s| s.url.clone()));
    urls.sort();
    urls.dedup();
    let mut out = Vec::new();
    for url in urls {
        let s = stats.iter().find(|s| s.url == url);
        let label = crate::engine::pool::label(&url);
        let (up, in_flight, accepted) = s.map_or((true, 0, 0), |s| (s.up, s.in_flight, s.accepted));
        out.push(
            Gauge::new(
                "mtsc_mts_endpoint_up",
                "1 while the MTS endpoint answers (0: skipped after failures)",
                f64::from(up),
            )
            .label("endpoint", label.clone()),
        );
        out.push(
            Gauge::new(
                "mtsc_mts_endpoint_in_flight",
                "MTS requests of this service in flight on the endpoint",
                in_flight as f64,
            )
            .label("endpoint", label.clone()),
        );
        out.push(
            Gauge::new(
                "mtsc_mts_endpoint_accepted",
                "MTS requests the endpoint accepted since the service started",
                accepted as f64,
            )
            .label("endpoint", label),
        );
    }
    out
}

/// Counts by state with every known state present (0 when none) and only those: label
/// values come from the fixed list.
fn known(counts: BTreeMap<String, i64>, states: &[(&str, &str)]) -> BTreeMap<String, u64> {
    states.iter().map(|(s, _)| (s.to_string(), counts.get(*s).copied().unwrap_or(0).max(0) as u64)).collect()
}

fn gauges(app: &App) -> Vec<Gauge> {
    let mut out = Vec::new();
    let connectors = app.store.list(connector::MODEL);
    let by_status = count_by(connectors.iter().map(|c| c.as_ref()), "job_status", connector::JOB_STATUS);
    for (status, n) in by_status {
        out.push(Gauge::new("mtsc_connectors", "Connectors by job status", n as f64).label("job_status", status));
    }

    out.extend(endpoint_gauges(app, &connectors));

    // Runs and deliveries: the store's counts, kept current by every commit (no scan).
    let by_state = known(app.store.counts(run::MODEL, "state"), run::STATES);
    for (state, n) in &by_state {
        out.push(Gauge::new("mtsc_runs", "Runs the store keeps, by state", *n as f64).label("state", state));
    }
    for stage in ["expected", "received", "delivered", "failed"] {
        let sum = app.store.sum(run::MODEL, &format!("records_{stage}"));
        out.push(
            Gauge::new(
                "mtsc_records",
                "Records over the runs the store keeps: expected (pre-counted in ODK), received, delivered and failed (relay mode)",
                sum as f64,
            )
            .label("stage", stage),
        );
    }

    let by_delivery = known(app.store.counts(delivery::MODEL, "state"), delivery::STATES);

    let (open, active) = {
        let index = app.engine.index();
        (index.open.values().map(|s| s.len()).sum::<usize>(), index.active.len())
    };
    let queue = |name: &str, n: u64| {
        Gauge::new("mtsc_queue_depth", "Work waiting or in progress, by queue", n as f64).label("queue", name)
    };
    let state = |s: &str| by_state.get(s).copied().unwrap_or(0);
    out.push(queue("runs_queued", state("queued")));
    out.push(queue("runs_retrying", state("retrying")));
    out.push(queue("runs_submitting", state("submitting")));
    out.push(queue("runs_tracking", state("submitted")));
    out.push(queue("runs_open", open as u64));
    out.push(queue("run_tasks", active as u64));
    out.push(queue("deliveries_pending", by_delivery.get("pending").copied().unwrap_or(0)));
    for (state, n) in by_delivery {
        out.push(Gauge::new("mtsc_deliveries", "Relayed callback records, by state", n as f64).label("state", state));
    }

    let now = Utc::now();
    let alive = METRICS.scheduler.alive(now).is_ok();
    out.push(Gauge::new(
        "mtsc_scheduler_alive",
        "1 when the scheduler loop is alive (as /ready checks)",
        f64::from(alive),
    ));
    if let Some(until) = METRICS.scheduler.sleeping_until() {
        out.push(Gauge::new(
            "mtsc_scheduler_sleeping_until_seconds",
            "When the sleeping scheduler wakes next at the latest, since the Unix epoch",
            until.timestamp_millis() as f64 / 1000.0,
        ));
    }
    out
}
