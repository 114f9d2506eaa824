//! One MTS request's life, top to bottom, for every input: admission (the limits and an
//! endpoint of the connector's pool), prepare (the input: an ODK window is pre-counted
//! and split, a registry page read again by id), submit and classify MTS's answer, track
//! the request on the endpoint that took it, and the end. **This is the only place a
//! request is submitted, retried or resubmitted.**
//!
//! Every state change is durable before the next outside call, so a crash at any point
//! resumes safely: a run that never got a request identifier is submitted again, one
//! that did is tracked on its endpoint, never resubmitted. Several runs of a connector go
//! through here at once, up to its `mts_max_parallel`.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rand::Rng;
use serde_json::Value;

use super::Engine;
use super::input::{Input, Prepared, Stop};
use super::pool::{self, Admission};
use super::runs::{self, state, time};
use crate::clients::mts::{StatusOutcome, SubmitOutcome, is_terminal};
use crate::model::connector::{self, ONETIME_RUN};
use crate::model::fields::Record;
use crate::mts::{RelayTarget, Secrets, build_request, endpoint_url};
use crate::relay::intake::TOKEN_HASHES;
use crate::store::StoreError;

/// The run field naming the MTS endpoint that took (or is taking) the request.
pub const ENDPOINT: &str = "mts_endpoint";

fn connector_of(engine: &Engine, run: &Record) -> Option<Record> {
    engine.store.get(connector::MODEL, runs::connector_id(run)).map(|c| (*c).clone())
}

/// The endpoint a submitted run is tracked on: where it went, else (runs stored before
/// endpoints were recorded) the connector's first MTS URL.
fn endpoint_of(run: &Record, c: &Record) -> String {
    run.str(ENDPOINT).map(str::to_string).or_else(|| pool::endpoints(c).into_iter().next()).unwrap_or_default()
}

/// Drives request-carrying run `id` as far as it can go now: until it is terminal,
/// waits for a retry (the scheduler dispatches it again when due), or the engine stops.
/// `admission` is the place in flight the scheduler got for it (a run MTS already holds
/// is tracked where it went, counted without one).
pub async fn request<I: Input>(
    engine: &Engine,
    id: u64,
    input: &I,
    admission: Option<Admission>,
) -> Result<(), StoreError> {
    let Some(run) = engine.run(id) else { return Ok(()) };
    let Some(c) = connector_of(engine, &run) else {
        return engine.cancel(id, "the connector was deleted").await;
    };
    let admission = if state(&run) == "submitted" {
        drop(admission);
        engine.pool.track(c.id, &endpoint_of(&run, &c))
    } else {
        let admission = match admission {
            Some(a) => a,
            // The scheduler admits every request it starts; a run reaching here without a
            // place counts on its first endpoint rather than go unbounded by it.
            None => match pool::endpoints(&c).first() {
                Some(first) => engine.pool.track(c.id, first),
                None => return engine.fail(id, "", "the connector names no MTS URL").await,
            },
        };
        match submit(engine, id, input, &admission).await? {
            Next::Track => {}
            Next::Stop => return finished(engine, id).await,
        }
        admission
    };
    track(engine, id, input, &admission).await?;
    drop(admission);
    finished(engine, id).await
}

enum Next {
    Track,
    Stop,
}

/// Prepares and submits the request of run `id` on the admitted endpoint, and classifies
/// MTS's answer.
async fn submit<I: Input>(engine: &Engine, id: u64, input: &I, admission: &Admission) -> Result<Next, StoreError> {
    // The run may have ended (a stop) or the connector changed while it waited.
    let Some(run) = engine.run(id).filter(|r| !runs::is_terminal(r)) else { return Ok(Next::Stop) };
    let Some(c) = connector_of(engine, &run) else {
        engine.cancel(id, "the connector was deleted").await?;
        return Ok(Next::Stop);
    };
    if state(&run) == "submitting" {
        // The service stopped mid-submission: MTS may or may not have the request.
        engine
            .update_run(id, |r| {
                r.set("error_message", "the service stopped while submitting this request; it is submitted again");
            })
            .await?;
    }
    let attempts = run.int("attempts").unwrap_or(0) + 1;
    let (records, start, end, expected) = match input.prepare(engine, &run, &c).await {
        Ok(Prepared::Send { records, start, end, expected }) => (records, start, end, expected),
        Ok(Prepared::Empty(message)) => {
            engine
                .update_run(id, move |r| {
                    r.set("state", "empty");
                    r.set("records_expected", 0);
                    r.set("error_code", Value::Null);
                    r.set("error_message", message);
                })
                .await?;
            return Ok(Next::Stop);
        }
        Err(stop) => {
            stopped(engine, id, attempts, stop).await?;
            return Ok(Next::Stop);
        }
    };
    let endpoint = admission.endpoint.clone();
    let relay = relay_target(engine, id, &c).await?;
    let Some(run) = engine
        .update_run(id, move |r| {
            r.set("state", "submitting");
            r.set("records_expected", expected as i64);
            r.set(ENDPOINT, endpoint);
        })
        .await?
        .filter(|r| !runs::is_terminal(r))
    else {
        // Cancelled (the connector was stopped) while it was prepared.
        return Ok(Next::Stop);
    };
    let mts_input = match &records {
        Some(records) => crate::mts::Input::Records(records),
        None => crate::mts::Input::Odk { start, end },
    };
    let body = build_request(&c, mts_input, relay.as_ref(), Secrets::Reveal, Utc::now());
    drop(records);
    let url = endpoint_url(&c, &admission.endpoint);
    let timeout = Duration::from_secs(c.int("mts_timeout").unwrap_or(300).max(1) as u64);
    let outcome = engine.mts.submit(&url, &body, timeout).await;
    drop(body);
    match &outcome {
        SubmitOutcome::Accepted { .. } | SubmitOutcome::AllInvalid { .. } => engine.pool.accepted(&admission.endpoint),
        SubmitOutcome::Transient { .. } => engine.pool.failed(&admission.endpoint),
        SubmitOutcome::Empty | SubmitOutcome::Rejected { .. } => engine.pool.ok(&admission.endpoint),
    }
    let (request_id, invalid) = match outcome {
        SubmitOutcome::Accepted { request_id } => (request_id, None),
        SubmitOutcome::AllInvalid { request_id, message } => (request_id, Some(message)),
        SubmitOutcome::Empty => {
            engine
                .update_run(id, move |r| {
                    r.set("state", "empty");
                    r.set("attempts", attempts);
                    r.set("error_code", Value::Null);
                    r.set("error_message", "MTS found no record to tokenise (ATS-REQ-23)");
                })
                .await?;
            return Ok(Next::Stop);
        }
        SubmitOutcome::Rejected { status, code, message } => {
            engine.update_run(id, move |r| r.set("attempts", attempts)).await?;
            engine.fail(id, &code, &format!("MTS refused the request (HTTP {status}): {message}")).await?;
            return Ok(Next::Stop);
        }
        SubmitOutcome::Transient { message, .. } => {
            engine.retry_later(id, attempts, "", &message).await?;
            return Ok(Next::Stop);
        }
    };
    let mut changes: Vec<(u64, runs::Change)> = vec![(
        id,
        Box::new(move |r: &mut Record| {
            r.set("state", "submitted");
            r.set("mts_request_id", request_id);
            r.set("mts_status", if invalid.is_some() { "submitted_with_errors" } else { "submitted" });
            r.set("attempts", attempts);
            r.set("error_code", if invalid.is_some() { Value::from("ATS-REQ-101") } else { Value::Null });
            r.set("error_message", invalid.map_or(Value::Null, Value::from));
            r.set("next_attempt_at", Value::Null);
        }),
    )];
    if let Some((parent, n)) = input.counts_on(&run) {
        changes.push((
            parent,
            Box::new(move |r: &mut Record| {
                r.set("records_sent", r.int("records_sent").unwrap_or(0) + n);
                r.set("pages_done", r.int("pages_done").unwrap_or(0) + 1);
            }),
        ));
    }
    engine.update_runs(changes).await?;
    Ok(Next::Track)
}

/// Ends the attempt of run `id` as `stop` says: failed, retried later, or left for the
/// restart.
pub async fn stopped(engine: &Engine, id: u64, attempts: i64, stop: Stop) -> Result<(), StoreError> {
    match stop {
        Stop::Config { code, message } => engine.fail(id, &code, &message).await,
        Stop::Transient(message) => engine.retry_later(id, attempts, "", &message).await,
        Stop::Shutdown => Ok(()),
        Stop::Store(e) => Err(e),
    }
}

/// For a relay-mode connector: where MTS must call back for run `id`, with a fresh
/// random token whose hash is stored on the run (durably, before MTS sees the token).
async fn relay_target(engine: &Engine, id: u64, connector: &Record) -> Result<Option<RelayTarget>, StoreError> {
    if connector.str("callback_mode") != Some("relay") {
        return Ok(None);
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = crate::relay::sha256_hex(&token);
    engine
        .update_run(id, move |r| {
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

/// Polls the request's status on its endpoint, with backoff, until it is terminal. A
/// request MTS lost (404, `submitted` far too long, or an endpoint that has answered
/// nothing for `--mts-gone-after-seconds`) is resubmitted as a `retry` run, which may go
/// to another endpoint of the pool.
async fn track<I: Input>(engine: &Engine, id: u64, input: &I, admission: &Admission) -> Result<(), StoreError> {
    let endpoint = admission.endpoint.as_str();
    let mut wait = engine.config.poll_min;
    loop {
        // While MTS works on the request, poll at the shortest interval: the sooner its
        // end is seen, the sooner the next request takes its place. While it waits in
        // MTS's queue, back off.
        let mut processing = false;
        let Some(run) = engine.run(id) else { return Ok(()) };
        if state(&run) != "submitted" {
            return Ok(());
        }
        let Some(c) = connector_of(engine, &run) else {
            // Nothing to report to any more; the request is MTS's business now.
            return engine.cancel(id, "the connector was deleted while MTS processed the request").await;
        };
        let request_id = run.str("mts_request_id").unwrap_or_default().to_string();
        let outcome = engine.mts.status(endpoint, &request_id, Duration::from_secs(30)).await;
        let submitted_for = time(&run, "write_date").map(|t| Utc::now() - t).unwrap_or_default();
        let relay = c.str("callback_mode") == Some("relay");
        match outcome {
            StatusOutcome::Status(status) if is_terminal(&status) => {
                engine.pool.ok(endpoint);
                if relay && let Some(short) = missing_records(engine, id).await {
                    let why = format!("MTS reported {status} but only {short}; the relay did not get every record");
                    return engine.resubmit(&run, &why, &status, |lost, retry| input.carry(lost, retry)).await;
                }
                let (new_state, message) = match status.as_str() {
                    // Every record reached the relay, which delivers them itself.
                    "error_making_callback_request" if relay => ("done", None),
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
                    .update_run(id, move |r| {
                        r.set("state", new_state);
                        r.set("mts_status", status);
                        if let Some(m) = message {
                            r.set("error_message", m);
                        }
                    })
                    .await?;
                return Ok(());
            }
            StatusOutcome::Status(status) => {
                engine.pool.ok(endpoint);
                let stuck = status == "submitted"
                    && TimeDelta::from_std(engine.config.lost_after).is_ok_and(|limit| submitted_for > limit);
                if stuck {
                    let why = "MTS kept the request 'submitted' past the limit";
                    return engine.resubmit(&run, why, "lost", |lost, retry| input.carry(lost, retry)).await;
                }
                processing = status == "processing";
                if run.str("mts_status") != Some(status.as_str()) {
                    engine.update_run(id, move |r| r.set("mts_status", status)).await?;
                }
            }
            StatusOutcome::Unknown => {
                engine.pool.ok(endpoint);
                let all_relayed =
                    relay && run.int("records_expected").is_some_and(|n| run.int("records_received").unwrap_or(0) >= n);
                if all_relayed {
                    // MTS's cleanup deleted a request whose records all reached the relay.
                    engine
                        .update_run(id, |r| {
                            r.set("state", "done");
                            r.set("mts_status", "deleted_by_mts");
                            r.set(
                                "error_message",
                                "MTS no longer knows the request, but the relay received all of its records",
                            );
                        })
                        .await?;
                    return Ok(());
                }
                let why =
                    "MTS no longer knows the request (HTTP 404; it restarted, or its cleanup deleted the request)";
                return engine.resubmit(&run, why, "lost", |lost, retry| input.carry(lost, retry)).await;
            }
            StatusOutcome::Transient(message) => {
                engine.pool.failed(endpoint);
                tracing::debug!(run_id = id, %message, "status poll failed; polling again");
                if engine.pool.failing_for(endpoint).is_some_and(|d| d > engine.config.gone_after) {
                    let why = format!(
                        "the MTS endpoint that took the request has answered nothing for over {} s",
                        engine.config.gone_after.as_secs()
                    );
                    return engine.resubmit(&run, &why, "lost", |lost, retry| input.carry(lost, retry)).await;
                }
            }
        }
        let sleep = if processing { engine.config.poll_min } else { wait };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = engine.cancel.cancelled() => return Ok(()),
        }
        wait = if processing { engine.config.poll_min } else { (wait * 2).min(engine.config.poll_max) };
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

/// After a request's end: a started one-time connector whose runs have all ended is
/// completed.
async fn finished(engine: &Engine, id: u64) -> Result<(), StoreError> {
    let Some(run) = engine.run(id).filter(runs::is_terminal) else { return Ok(()) };
    complete_onetime(engine, runs::connector_id(&run)).await
}

/// A started one-time connector whose run (the one its latest start queued, with the
/// parts and retries it grew) has ended is `completed`. Decided on the record as it is
/// when written: a run of an earlier start that ends after a restart, or a scheduler pass
/// that read the connector before the restart, completes nothing.
pub async fn complete_onetime(engine: &Engine, connector: u64) -> Result<(), StoreError> {
    let queued = engine.store.get(connector::MODEL, connector).and_then(|c| c.int(ONETIME_RUN));
    if queued.is_none() || !engine.open_runs(connector).is_empty() {
        return Ok(());
    }
    let mut completed = false;
    engine
        .update_connector(connector, |c| {
            completed = c.str("is_recurring") == Some("onetime")
                && c.str("job_status") == Some("started")
                && c.int(ONETIME_RUN) == queued;
            if completed {
                c.set("job_status", "completed");
            }
        })
        .await?;
    if completed {
        tracing::info!(connector_id = connector, "one-time job completed");
    }
    Ok(())
}
