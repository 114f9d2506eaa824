//! One run's life, top to bottom: wait for a submission slot, pre-count the ODK
//! window (empty -> `empty`, too big -> split), submit to MTS and classify the answer,
//! then track the request to a terminal status. Every state change is durable before
//! the next outside call, so a crash at any point resumes safely: a run that never got
//! a request identifier is submitted again, one that did is tracked, never resubmitted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rand::Rng;

use super::Engine;
use super::runs::{self, state, time};
use crate::clients::mts::{StatusOutcome, SubmitOutcome, is_terminal};
use crate::clients::odk::OdkError;
use crate::model::fields::Record;
use crate::model::{connector, format_datetime};
use crate::mts::{Input, RelayTarget, Secrets, build_request, endpoint_url};
use crate::relay::intake::TOKEN_HASHES;
use crate::store::StoreError;

/// Exponential backoff with full jitter in [d/2, d).
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let d = exp.min(cap);
    let half = d / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
}

/// What the submit phase decided.
enum Next {
    Track,
    Stop,
}

/// Drives run `id` as far as it can go now. Returns when the run is terminal, waits
/// for a retry (the scheduler dispatches it again when due), or the engine stops.
pub async fn drive(engine: Arc<Engine>, id: u64) {
    let result = drive_inner(&engine, id).await;
    if let Err(e) = result {
        tracing::error!(run_id = id, error = %e, "run paused: the store failed; it resumes on the next start");
    }
    engine.index().deactivate(id);
    engine.wake.notify_one();
}

async fn drive_inner(engine: &Engine, id: u64) -> Result<(), StoreError> {
    let Some(run) = engine.run(id) else { return Ok(()) };
    let next = match state(&run) {
        "queued" | "retrying" | "submitting" => submit_phase(engine, run).await?,
        "submitted" => Next::Track,
        _ => Next::Stop,
    };
    if let Next::Track = next {
        track_phase(engine, id).await?;
    }
    if let Some(run) = engine.run(id)
        && runs::is_terminal(&run)
    {
        finished(engine, &run).await?;
    }
    Ok(())
}

fn connector_of(engine: &Engine, run: &Record) -> Option<Record> {
    engine.store.get(connector::MODEL, runs::connector_id(run)).map(|c| (*c).clone())
}

async fn submit_phase(engine: &Engine, run: Record) -> Result<Next, StoreError> {
    let id = run.id;
    let Some(connector) = connector_of(engine, &run) else {
        cancel(engine, id, "the connector was deleted").await?;
        return Ok(Next::Stop);
    };
    let mts_url = connector.str("mts_url").unwrap_or_default().to_string();
    let Some(global_slot) = (tokio::select! {
        slot = engine.global_slot() => slot,
        () = engine.cancel.cancelled() => None,
    }) else {
        return Ok(Next::Stop);
    };
    // The connector may have changed while this run waited for its slot.
    let Some(connector) = connector_of(engine, &run) else {
        cancel(engine, id, "the connector was deleted").await?;
        return Ok(Next::Stop);
    };
    let Some(mut run) = engine.run(id) else { return Ok(Next::Stop) };
    if runs::is_terminal(&run) {
        return Ok(Next::Stop);
    }
    if state(&run) == "submitting" {
        // The service stopped mid-submission: MTS may or may not have the request.
        engine
            .update_run(id, |r| {
                r.set("error_message", "the service stopped while submitting this window; it is submitted again");
            })
            .await?;
    }
    let (Some(start), Some(end)) = (time(&run, "window_start"), time(&run, "window_end")) else {
        fail(engine, id, "", "the run has no window").await?;
        return Ok(Next::Stop);
    };
    if connector.str("input_type") == Some("custom") {
        // A registry walk reads Odoo between its pages: each page takes its own slots.
        drop(global_slot);
        super::registry::run(engine, run, connector).await?;
        return Ok(Next::Stop);
    }

    // Pre-count: how many submissions MTS would pull, split when too many.
    let max = connector.int("max_records_per_request").unwrap_or(500).max(1) as u64;
    let (start, end, expected) = match precount_and_split(engine, &connector, &run, start, end, max).await? {
        Some(window) => window,
        None => return Ok(Next::Stop),
    };

    // MTS works one request at a time (and blocks while it pulls ODK): only the call
    // itself holds the MTS URL's slot, not the ODK pre-count.
    let Some(_mts_slot) = (tokio::select! {
        slot = engine.mts_url_slot(&mts_url) => slot,
        () = engine.cancel.cancelled() => None,
    }) else {
        return Ok(Next::Stop);
    };
    let relay = relay_target(engine, id, &connector).await?;
    let now = Utc::now();
    let body = build_request(&connector, Input::Odk { start, end }, relay.as_ref(), Secrets::Reveal, now);
    let url = endpoint_url(&connector);
    let timeout = Duration::from_secs(connector.int("mts_timeout").unwrap_or(300).max(1) as u64);
    if let Some(r) = engine
        .update_run(id, |r| {
            r.set("state", "submitting");
            r.set("records_expected", expected as i64);
        })
        .await?
    {
        run = r;
    }
    if runs::is_terminal(&run) {
        // Cancelled (the connector was stopped) while it waited for its slot.
        return Ok(Next::Stop);
    }
    let outcome = engine.mts.submit(&url, &body, timeout).await;
    drop(body);
    let attempts = run.int("attempts").unwrap_or(0) + 1;
    match outcome {
        SubmitOutcome::Accepted { request_id } => {
            engine
                .update_run(id, |r| {
                    r.set("state", "submitted");
                    r.set("mts_request_id", request_id);
                    r.set("mts_status", "submitted");
                    r.set("attempts", attempts);
                    r.set("error_code", Value::Null);
                    r.set("error_message", Value::Null);
                    r.set("next_attempt_at", Value::Null);
                })
                .await?;
            Ok(Next::Track)
        }
        SubmitOutcome::AllInvalid { request_id, message } => {
            engine
                .update_run(id, |r| {
                    r.set("state", "submitted");
                    r.set("mts_request_id", request_id);
                    r.set("mts_status", "submitted_with_errors");
                    r.set("attempts", attempts);
                    r.set("error_code", "ATS-REQ-101");
                    r.set("error_message", message);
                })
                .await?;
            Ok(Next::Track)
        }
        SubmitOutcome::Empty => {
            engine
                .update_run(id, |r| {
                    r.set("state", "empty");
                    r.set("attempts", attempts);
                    r.set("error_code", Value::Null);
                    r.set("error_message", "no submissions in this window (ATS-REQ-23)");
                })
                .await?;
            Ok(Next::Stop)
        }
        SubmitOutcome::Rejected { status, code, message } => {
            let text = format!("MTS refused the request (HTTP {status}): {message}");
            engine.update_run(id, |r| r.set("attempts", attempts)).await?;
            fail(engine, id, &code, &text).await?;
            Ok(Next::Stop)
        }
        SubmitOutcome::Transient { message, .. } => {
            retry_later(engine, id, attempts, "", &message).await?;
            Ok(Next::Stop)
        }
    }
}

use serde_json::Value;

/// For a relay-mode connector: where MTS must call back for run `id`, with a fresh
/// random token whose hash is stored on the run (durably, before MTS sees the token).
pub(super) async fn relay_target(
    engine: &Engine,
    id: u64,
    connector: &Record,
) -> Result<Option<RelayTarget>, StoreError> {
    if connector.str("callback_mode") != Some("relay") {
        return Ok(None);
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = crate::relay::sha256_hex(&token);
    engine
        .update_run(id, |r| {
            // Earlier attempts' tokens stay valid: MTS may still call back with them.
            let hashes = match r.secret(TOKEN_HASHES) {
                Some(old) => format!("{} {hash}", old.expose()),
                None => hash,
            };
            r.secrets.insert(TOKEN_HASHES.into(), crate::secret::Secret::new(hashes));
        })
        .await?;
    let url = format!("{}/relay/{id}", engine.config.public_url.trim_end_matches('/'));
    Ok(Some(RelayTarget { url, token }))
}

/// Counts the window in ODK; `None` when the run ended (empty, failed, retrying).
/// Splits a window holding more than `max` submissions by bisecting time: this run
/// keeps the first half, a new queued run takes the second.
async fn precount_and_split(
    engine: &Engine,
    connector: &Record,
    run: &Record,
    start: chrono::DateTime<Utc>,
    mut end: chrono::DateTime<Utc>,
    max: u64,
) -> Result<Option<(chrono::DateTime<Utc>, chrono::DateTime<Utc>, u64)>, StoreError> {
    let id = run.id;
    let attempts = run.int("attempts").unwrap_or(0) + 1;
    let timeout = engine.config.odk_timeout;
    let base = connector.str("odk_base_url").unwrap_or_default();
    let odata = connector.str("odk_odata_url").unwrap_or_default();
    let email = connector.str("odk_email").unwrap_or_default();
    let password = connector.secret("odk_password").cloned().unwrap_or_default();
    let token = match engine.odk.session(base, email, &password, timeout).await {
        Ok(t) => t,
        Err(e) => {
            retry_later(engine, id, attempts, "ODK", &odk_message(&e)).await?;
            return Ok(None);
        }
    };
    loop {
        let count = match engine.odk.count(odata, &token, start, end, timeout).await {
            Ok(n) => n,
            Err(e) => {
                retry_later(engine, id, attempts, "ODK", &odk_message(&e)).await?;
                return Ok(None);
            }
        };
        if count == 0 {
            engine
                .update_run(id, |r| {
                    r.set("state", "empty");
                    r.set("records_expected", 0);
                    r.set("window_end", format_datetime(end));
                    r.set("error_message", "ODK Central holds no submissions in this window");
                })
                .await?;
            return Ok(None);
        }
        let span = end - start;
        if count <= max || span <= TimeDelta::seconds(2) {
            if count > max {
                tracing::warn!(run_id = id, count, max, "window cannot be split further; submitting it whole");
            }
            return Ok(Some((start, end, count)));
        }
        // Bisect on whole seconds: windows travel as YYYY-MM-DD HH:MM:SS.
        let mid = start + TimeDelta::seconds(span.num_seconds() / 2);
        let root = run.int("split_of_id").unwrap_or(id as i64);
        engine
            .create_run(runs::connector_id(run), run.str("trigger").unwrap_or("manual"), mid, end, |r| {
                r.set("split_of_id", root);
                if let Some(retry_of) = run.int("retry_of_id") {
                    r.set("retry_of_id", retry_of);
                }
            })
            .await?;
        end = mid;
        engine.update_run(id, |r| r.set("window_end", format_datetime(mid))).await?;
        tracing::info!(run_id = id, count, max, "window split in two");
    }
}

fn odk_message(e: &OdkError) -> String {
    e.to_string()
}

pub(super) async fn retry_later(
    engine: &Engine,
    id: u64,
    attempts: i64,
    code: &str,
    message: &str,
) -> Result<(), StoreError> {
    if let Some(run) = engine.run(id) {
        let created = run.int(runs::CREATED_MS);
        let stopped = engine.index().stopped.get(&runs::connector_id(&run)).copied();
        if let (Some(created), Some(stopped)) = (created, stopped)
            && created <= stopped.timestamp_millis()
        {
            return cancel(engine, id, &format!("the connector was stopped; last attempt: {message}")).await;
        }
    }
    if attempts >= engine.config.max_attempts {
        let text = format!("gave up after {attempts} attempts: {message}");
        engine.update_run(id, |r| r.set("attempts", attempts)).await?;
        return fail(engine, id, code, &text).await;
    }
    let wait = backoff(engine.config.retry_base, engine.config.retry_cap, attempts as u32);
    let at = Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(30));
    engine
        .update_run(id, |r| {
            r.set("state", "retrying");
            r.set("attempts", attempts);
            r.set("next_attempt_at", format_datetime(at));
            r.set("error_code", if code.is_empty() { Value::Null } else { Value::from(code) });
            r.set("error_message", message);
        })
        .await?;
    Ok(())
}

pub(super) async fn fail(engine: &Engine, id: u64, code: &str, message: &str) -> Result<(), StoreError> {
    engine
        .update_run(id, |r| {
            r.set("state", "failed");
            r.set("error_code", if code.is_empty() { Value::Null } else { Value::from(code) });
            r.set("error_message", message);
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    Ok(())
}

pub async fn cancel(engine: &Engine, id: u64, why: &str) -> Result<(), StoreError> {
    engine
        .update_run(id, |r| {
            r.set("state", "cancelled");
            r.set("error_message", why);
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    Ok(())
}

/// Polls the request's status with backoff until it is terminal; a request MTS lost
/// (404, or `submitted` far too long) is resubmitted as a `retry` run.
pub(super) async fn track_phase(engine: &Engine, id: u64) -> Result<(), StoreError> {
    let mut wait = engine.config.poll_min;
    loop {
        let Some(run) = engine.run(id) else { return Ok(()) };
        if state(&run) != "submitted" {
            return Ok(());
        }
        let Some(connector) = connector_of(engine, &run) else {
            // Nothing to report to any more; the request is MTS's business now.
            return cancel(engine, id, "the connector was deleted while MTS processed the request").await;
        };
        let mts_url = connector.str("mts_url").unwrap_or_default();
        let request_id = run.str("mts_request_id").unwrap_or_default().to_string();
        let outcome = engine.mts.status(mts_url, &request_id, Duration::from_secs(30)).await;
        let submitted_for = time(&run, "write_date").map(|t| Utc::now() - t).unwrap_or_default();
        match outcome {
            StatusOutcome::Status(status) if is_terminal(&status) => {
                if connector.str("callback_mode") == Some("relay")
                    && let Some(short) = missing_records(engine, id).await
                {
                    let why = format!("MTS reported {status} but only {short}; the relay did not get every record");
                    return resubmit(engine, &run, &why, &status).await;
                }
                let relayed_all = connector.str("callback_mode") == Some("relay");
                let (new_state, message) = match status.as_str() {
                    // Every record reached the relay, which delivers them itself.
                    "error_making_callback_request" if relayed_all => ("done", None),
                    "processed" => ("done", None),
                    "processed_with_errors" | "submitted_with_errors" => ("done_with_errors", None),
                    "error_making_callback_request" => (
                        "failed",
                        Some(
                            "MTS made the tokens but its callback failed (error_making_callback_request); MTS does not retry callbacks",
                        ),
                    ),
                    _ => ("failed", Some("MTS ended the request with an unknown status")),
                };
                engine
                    .update_run(id, |r| {
                        r.set("state", new_state);
                        r.set("mts_status", status.as_str());
                        if let Some(m) = message {
                            r.set("error_message", m);
                        }
                    })
                    .await?;
                return Ok(());
            }
            StatusOutcome::Status(status) => {
                let stuck = status == "submitted"
                    && TimeDelta::from_std(engine.config.lost_after).is_ok_and(|limit| submitted_for > limit);
                if stuck {
                    return resubmit(engine, &run, "MTS kept the request 'submitted' past the limit", "lost").await;
                }
                if run.str("mts_status") != Some(status.as_str()) {
                    engine.update_run(id, |r| r.set("mts_status", status.as_str())).await?;
                    wait = engine.config.poll_min;
                }
            }
            StatusOutcome::Unknown => {
                return resubmit(
                    engine,
                    &run,
                    "MTS no longer knows the request (HTTP 404; it probably restarted)",
                    "lost",
                )
                .await;
            }
            StatusOutcome::Transient(message) => {
                tracing::debug!(run_id = id, %message, "status poll failed; polling again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = engine.cancel.cancelled() => return Ok(()),
        }
        wait = (wait * 2).min(engine.config.poll_max);
    }
}

/// After MTS ended a relay-mode request: waits up to the grace period for the relay to
/// hold as many records as expected; `Some("R of E records")` when some never came.
async fn missing_records(engine: &Engine, id: u64) -> Option<String> {
    let deadline = tokio::time::Instant::now() + engine.relay.config.grace;
    loop {
        let run = engine.run(id)?;
        let expected = run.int("records_expected")?;
        let received = run.int("records_received").unwrap_or(0);
        if received >= expected {
            return None;
        }
        if tokio::time::Instant::now() >= deadline || engine.cancel.is_cancelled() {
            return Some(format!("{received} of {expected} records"));
        }
        tokio::time::sleep(engine.config.poll_min.min(Duration::from_secs(1))).await;
    }
}

/// MTS lost an acknowledged request, or did not deliver all of it: the run is closed
/// and its window resubmitted as a `retry` run (the relay de-duplicates what already
/// arrived).
async fn resubmit(engine: &Engine, run: &Record, why: &str, mts_status: &str) -> Result<(), StoreError> {
    let (Some(start), Some(end)) = (time(run, "window_start"), time(run, "window_end")) else {
        return fail(engine, run.id, "", why).await;
    };
    let retry = engine
        .create_run(runs::connector_id(run), "retry", start, end, |r| {
            r.set("retry_of_id", run.id);
            r.set("error_message", format!("resubmits run #{}: {why}", run.id));
        })
        .await?;
    engine
        .update_run(run.id, |r| {
            r.set("state", "cancelled");
            r.set("mts_status", mts_status);
            r.set("error_message", format!("{why}; the window is resubmitted as run #{}", retry.id));
        })
        .await?;
    Ok(())
}

/// After a run's end: cancel the rest of a failed scheduled split, complete a one-time
/// connector.
async fn finished(engine: &Engine, run: &Record) -> Result<(), StoreError> {
    let connector = runs::connector_id(run);
    if state(run) == "failed" && run.str("trigger") == Some("schedule") {
        let root = run.int("split_of_id").unwrap_or(run.id as i64);
        for other in engine.open_runs(connector) {
            if let Some(o) = engine.run(other)
                && o.int("split_of_id") == Some(root)
                && matches!(state(&o), "queued" | "retrying")
            {
                cancel(engine, other, &format!("an earlier part of this window failed (run #{})", run.id)).await?;
            }
        }
    }
    if engine.open_runs(connector).is_empty() {
        let onetime = engine
            .store
            .get(connector::MODEL, connector)
            .is_some_and(|c| c.str("is_recurring") == Some("onetime") && c.str("job_status") == Some("started"));
        if onetime {
            engine.update_connector(connector, |c| c.set("job_status", "completed")).await?;
            tracing::info!(connector_id = connector, "one-time job completed");
        }
    }
    Ok(())
}
