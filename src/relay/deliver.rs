//! The delivery queue: every pending record is rendered with the connector's output
//! format, sent to its callback target with the connector's auth, an idempotency
//! header and bounded concurrency per target, and retried with backoff until it is
//! delivered, refused for good, or too old. Failed deliveries stay visible and can be
//! replayed (`action_retry_failed`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::AuthError;
use crate::clients::excerpt;
use crate::clients::mts::error_chain;
use crate::engine::Engine;
use crate::engine::runs::backoff;
use crate::model::fields::Record;
use crate::model::{connector, delivery, format_datetime, parse_datetime, run};
use crate::store::StoreError;

/// The header that carries each record's idempotency key to the target.
pub const DELIVERY_HEADER: &str = "X-MTS-Connector-Delivery";

/// How one attempt ended.
enum Outcome {
    Delivered,
    /// Worth another try later.
    Retry {
        status: Option<u16>,
        error: String,
    },
    /// Retrying will not help.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Runs the delivery queue until the engine stops.
pub async fn run(engine: Arc<Engine>) {
    let mut last_purge = DateTime::<Utc>::MIN_UTC;
    // How often old failed payloads are looked for: hourly, or more often when the
    // retention is short (a quarter of it).
    let purge_every = TimeDelta::from_std(engine.relay.config.failed_retention / 4)
        .unwrap_or(TimeDelta::hours(1))
        .clamp(TimeDelta::seconds(1), TimeDelta::hours(1));
    loop {
        let next = dispatch(&engine);
        let now = Utc::now();
        if now - last_purge >= purge_every {
            last_purge = now;
            match engine.purge_failed_payloads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "purged the data of old failed deliveries"),
                Err(e) => tracing::warn!(error = %e, "purging old failed deliveries failed"),
            }
        }
        let mut sleep = (last_purge + purge_every - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if engine.relay.pending().is_empty() {
            let busy: std::collections::HashSet<u64> =
                engine.relay.in_flight().iter().filter_map(|d| connector_of_delivery(&engine, *d)).collect();
            if let Some(at) = engine.relay.sessions.log_out_idle(&busy, &engine.store).await {
                sleep = sleep.min(at.saturating_duration_since(std::time::Instant::now()));
            }
        }
        if let Some(t) = next {
            sleep = sleep.min((t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        }
        tokio::select! {
            () = tokio::time::sleep(sleep.min(Duration::from_secs(60))) => {}
            () = engine.relay.wake.notified() => {}
            () = engine.cancel.cancelled() => return,
        }
    }
}

fn connector_of_delivery(engine: &Engine, id: u64) -> Option<u64> {
    engine.store.get(delivery::MODEL, id).and_then(|d| d.int("connector_id")).map(|c| c as u64)
}

/// Starts every due delivery that has a free slot at its target; answers when the
/// next one not started becomes due (a finishing delivery wakes the loop too).
fn dispatch(engine: &Arc<Engine>) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    let heads = engine.relay.pending().heads();
    let mut next: Option<DateTime<Utc>> = None;
    for (target, first) in heads {
        if first > now {
            next = Some(next.map_or(first, |n| n.min(first)));
            continue;
        }
        let slots = engine.relay.target_slot(&target);
        loop {
            let Ok(permit) = slots.clone().try_acquire_owned() else { break };
            let Some(id) = engine.relay.pending().pop_due(&target, now) else { break };
            engine.relay.in_flight().insert(id);
            let engine2 = engine.clone();
            engine.tasks.spawn(async move {
                if let Err(e) = deliver_one(&engine2, id, permit).await {
                    tracing::error!(delivery_id = id, error = %e, "delivery paused: the store failed");
                }
                engine2.relay.in_flight().remove(&id);
                engine2.relay.wake.notify_one();
            });
        }
    }
    next
}

/// One delivery; `slot` is its place among the target's calls in flight.
async fn deliver_one(engine: &Engine, id: u64, slot: OwnedSemaphorePermit) -> Result<(), StoreError> {
    let Some(d) = engine.store.get(delivery::MODEL, id).map(|d| (*d).clone()) else { return Ok(()) };
    if d.str("state") != Some("pending") {
        return Ok(());
    }
    let mut used = Vec::new();
    let outcome = attempt(engine, &d, &mut used).await;
    let outcome = scrubbed(engine, &d, outcome, &used);
    finish(engine, d, outcome, slot).await
}

/// The outcome with every secret of the connector, and the auth values just used, cut
/// out of its error (the target's answer may echo the request): what is stored and shown.
fn scrubbed(engine: &Engine, d: &Record, outcome: Outcome, used: &[String]) -> Outcome {
    let connector = d.int("connector_id").and_then(|c| engine.store.get(connector::MODEL, c as u64));
    let mut s = connector.map_or_else(crate::scrub::Scrubber::known, |c| crate::scrub::Scrubber::for_connector(&c));
    for value in used {
        s = s.with(value);
    }
    let clean = |error: String| s.scrub(&error).into_owned();
    match outcome {
        Outcome::Delivered => Outcome::Delivered,
        Outcome::Retry { status, error } => Outcome::Retry { status, error: clean(error) },
        Outcome::Failed { status, error } => Outcome::Failed { status, error: clean(error) },
    }
}

/// One attempt to deliver `d`; the auth header values it sent are added to `used`.
async fn attempt(engine: &Engine, d: &Record, used_auth: &mut Vec<String>) -> Outcome {
    let Some(c) = d.int("connector_id").and_then(|c| engine.store.get(connector::MODEL, c as u64)) else {
        return Outcome::Failed { status: None, error: "the connector was deleted".into() };
    };
    let Some(payload) = d.secret("payload") else {
        return Outcome::Failed { status: None, error: "the record's data is no longer held (purged)".into() };
    };
    let source = c.str("output_format").unwrap_or_default();
    if !source.trim().is_empty()
        && let Err(e) = engine.relay.program(source)
    {
        return Outcome::Failed { status: None, error: format!("output format: {e}") };
    }
    // Evaluated in the jq sandbox (worker processes with a time and memory budget): a
    // program that spins or recurses fails its record, never the service.
    let body = match crate::jq::sandbox::global().render(source, payload.expose()).await {
        Ok(body) => body,
        Err(e @ crate::jq::JqError::Unavailable(_)) => {
            return Outcome::Retry { status: None, error: format!("output format: {e}") };
        }
        Err(e) => return Outcome::Failed { status: None, error: format!("output format: {e}") },
    };
    if c.str("delivery_target") == Some("registry") {
        // The token goes into the registry's g2p.reg.id itself, not to a callback URL.
        use super::registry_target::{TargetError, deliver};
        let Ok(payload) = serde_json::from_str::<Value>(payload.expose()) else {
            return Outcome::Failed { status: None, error: "the record's data is not JSON".into() };
        };
        return match deliver(&c, &payload, &body).await {
            Ok(_) => Outcome::Delivered,
            Err(TargetError::Transient(error)) => Outcome::Retry { status: None, error },
            Err(TargetError::Refused(error)) => Outcome::Failed { status: None, error },
        };
    }
    let timeout = Duration::from_secs(c.int("callback_timeout").unwrap_or(10).max(1) as u64);
    // One fresh login when the target refuses the session: it may have expired.
    for fresh_login in [false, true] {
        let auth = match engine.relay.sessions.header(&c, timeout).await {
            Ok(h) => h,
            Err(e @ AuthError::Refused(_)) => return Outcome::Retry { status: None, error: e.to_string() },
            Err(e) => return Outcome::Retry { status: None, error: e.to_string() },
        };
        let used = auth.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
        used_auth.push(used.clone());
        let outcome = send(engine, &c, d, &body, auth, timeout).await;
        match outcome {
            Outcome::Retry { status: Some(401 | 403), .. } | Outcome::Failed { status: Some(401 | 403), .. }
                if !fresh_login && matches!(c.str("callback_authtype"), Some("odoo" | "oauth")) =>
            {
                engine.relay.sessions.invalidate(&c, &used);
            }
            other => return other,
        }
    }
    Outcome::Retry { status: Some(401), error: "the target refused a fresh session".into() }
}

async fn send(
    engine: &Engine,
    c: &Record,
    d: &Record,
    body: &Value,
    auth: Option<(&'static str, String)>,
    timeout: Duration,
) -> Outcome {
    let url = c.str("callback_url").unwrap_or_default();
    let method = reqwest::Method::from_bytes(c.str("callback_httpmethod").unwrap_or("POST").as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let mut req = engine.relay.http.request(method, url).json(body).timeout(timeout);
    if let Some(headers) = connector::extra_headers(c).and_then(|h| serde_json::from_str::<Value>(h).ok())
        && let Some(map) = headers.as_object()
    {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
    }
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    req = req.header(DELIVERY_HEADER, d.str("key").unwrap_or_default());
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Outcome::Delivered;
            }
            let text = resp.text().await.unwrap_or_default();
            let error = format!("HTTP {status}: {}", excerpt(&text));
            match status {
                408 | 429 | 401 | 403 | 500..=599 => Outcome::Retry { status: Some(status), error },
                _ => Outcome::Failed { status: Some(status), error },
            }
        }
        Err(e) => Outcome::Retry { status: None, error: format!("cannot reach {url}: {}", error_chain(&e)) },
    }
}

/// Records the outcome of an attempt on the delivery and its run. When the record was
/// delivered, the target's slot is given back as soon as the outcome is written, before
/// it is durable: the next call to the target does not wait for this commit, and
/// outcomes share commits (at most [`super::UNFLUSHED_OUTCOMES`] wait for one at a
/// time). A retry is queued only once its outcome is durable.
async fn finish(
    engine: &Engine,
    mut d: Record,
    outcome: Outcome,
    slot: OwnedSemaphorePermit,
) -> Result<(), StoreError> {
    let _unflushed = engine.relay.unflushed.clone().acquire_owned().await.ok();
    // Only a delivered record gives its slot back early: a target that fails keeps its
    // attempts paced by the commits of their outcomes, as before.
    let mut slot = Some(slot);
    let delivered = matches!(outcome, Outcome::Delivered);
    let now = Utc::now();
    let attempts = d.int("attempts").unwrap_or(0) + 1;
    d.set("attempts", attempts);
    d.set("write_date", format_datetime(now));
    let age = d.str("create_date").and_then(|t| parse_datetime(t).ok()).map_or(TimeDelta::zero(), |t| now - t);
    let give_up = TimeDelta::from_std(engine.relay.config.give_up_after).unwrap_or(TimeDelta::days(1));
    let (counter, next) = match outcome {
        Outcome::Delivered => {
            d.set("state", "delivered");
            d.set("delivered_at", format_datetime(now));
            d.set("next_attempt_at", Value::Null);
            d.set("last_error", Value::Null);
            // The record's data is not kept once delivered: only the key and outcome.
            d.secrets.remove("payload");
            (Some("records_delivered"), None)
        }
        Outcome::Retry { status, error } if age < give_up => {
            let wait = backoff(engine.relay.config.retry_base, engine.relay.config.retry_cap, attempts as u32);
            let at = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(5));
            d.set("last_status", status.map(Value::from).unwrap_or(Value::Null));
            d.set("last_error", error);
            d.set("next_attempt_at", format_datetime(at));
            (None, Some(at))
        }
        Outcome::Retry { status, error } | Outcome::Failed { status, error } => {
            d.set("state", "failed");
            d.set("last_status", status.map(Value::from).unwrap_or(Value::Null));
            d.set(
                "last_error",
                if age >= give_up { format!("gave up after {attempts} attempts: {error}") } else { error },
            );
            d.set("next_attempt_at", Value::Null);
            (Some("records_failed"), None)
        }
    };
    let run_id = d.int("run_id").unwrap_or(0) as u64;
    let id = d.id;
    let target = super::target_of(&engine.store, d.int("connector_id").unwrap_or(0) as u64);
    {
        let _guard = engine.store.write_lock();
        engine.store.put(delivery::MODEL, d)?;
        if let Some(counter) = counter
            && let Some(r) = engine.store.get(run::MODEL, run_id)
        {
            let mut r = (*r).clone();
            r.set(counter, r.int(counter).unwrap_or(0) + 1);
            engine.store.put(run::MODEL, r)?;
        }
    }
    if delivered {
        drop(slot.take());
        engine.relay.wake.notify_one();
    }
    engine.store.flush().await?;
    drop(slot);
    if let Some(at) = next {
        engine.relay.pending().insert(id, &target, at);
    }
    Ok(())
}

impl Engine {
    /// Puts the failed deliveries of `connectors` back in the queue; answers how many.
    pub async fn retry_failed_deliveries(&self, connectors: &[u64]) -> Result<usize, StoreError> {
        let now = Utc::now();
        let mut changed = Vec::new();
        {
            let _guard = self.store.write_lock();
            let mut failed = Vec::new();
            for c in connectors {
                let prefix = [&Value::from(*c), &Value::from("failed")];
                failed.extend(self.store.find(delivery::MODEL, "connector_state", &prefix, false, usize::MAX)?);
            }
            for d in failed {
                if d.str("state") != Some("failed") || d.secret("payload").is_none() {
                    continue;
                }
                let mut d = (*d).clone();
                d.set("state", "pending");
                d.set("attempts", 0);
                d.set("create_date", format_datetime(now));
                d.set("next_attempt_at", format_datetime(now));
                d.set("write_date", format_datetime(now));
                changed.push(d);
            }
            // The run counts them as failed no more: they are on their way again.
            for d in &changed {
                if let Some(r) = d.int("run_id").and_then(|r| self.store.get(run::MODEL, r as u64)) {
                    let mut r = (*r).clone();
                    r.set("records_failed", (r.int("records_failed").unwrap_or(0) - 1).max(0));
                    self.store.put(run::MODEL, r)?;
                }
            }
            self.store.put_all(delivery::MODEL, changed.clone())?;
        }
        let ids: Vec<u64> = changed.iter().map(|d| d.id).collect();
        self.store.flush().await?;
        let targets: Vec<String> = connectors.iter().map(|c| super::target_of(&self.store, *c)).collect::<Vec<_>>();
        let mut pending = self.relay.pending();
        for d in &changed {
            let c = d.int("connector_id").unwrap_or(0) as u64;
            let target = connectors.iter().position(|x| *x == c).map(|i| targets[i].as_str()).unwrap_or_default();
            pending.insert(d.id, target, now);
        }
        drop(pending);
        self.relay.wake.notify_one();
        Ok(ids.len())
    }

    /// Drops the data of failed deliveries older than the retention (keeps key and outcome).
    pub async fn purge_failed_payloads(&self) -> Result<usize, StoreError> {
        let limit = Utc::now() - TimeDelta::from_std(self.relay.config.failed_retention).unwrap_or(TimeDelta::days(30));
        let mut changed = Vec::new();
        {
            let _guard = self.store.write_lock();
            // Failed deliveries by last change, oldest first: the first recent one ends it.
            let mut old_failed = Vec::new();
            self.store.scan_index(delivery::MODEL, "state_time", &[&Value::from("failed")], false, |id| match self
                .store
                .get(delivery::MODEL, id)
            {
                Some(d) if d.str("write_date").and_then(|t| parse_datetime(t).ok()).is_some_and(|t| t < limit) => {
                    old_failed.push(d);
                    std::ops::ControlFlow::Continue(())
                }
                Some(_) => std::ops::ControlFlow::Break(()),
                None => std::ops::ControlFlow::Continue(()),
            })?;
            for d in old_failed {
                if d.str("state") == Some("failed") && d.secret("payload").is_some() {
                    let mut d = (*d).clone();
                    d.secrets.remove("payload");
                    let error = d.str("last_error").unwrap_or_default().to_string();
                    d.set("last_error", format!("{error} (data purged: it cannot be replayed)").trim_start());
                    changed.push(d);
                }
            }
        }
        let n = changed.len();
        if n > 0 {
            self.store.put_all(delivery::MODEL, changed)?;
            self.store.flush().await?;
        }
        Ok(n)
    }
}
