//! The walk: page through the registry, send each page to MTS as its own page run,
//! keep a few pages in flight, track them to their end, resume after a restart.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::page::{Prepared, prepare, read_rows};
use super::{PAGES_IN_FLIGHT, PARTNER, Registry, Stop, encode_ids, odoo, page_ids, stopped};
use crate::clients::mts::SubmitOutcome;
use crate::engine::runs::{self, state};
use crate::engine::{Engine, runner};
use crate::model::fields::Record;
use crate::model::{connector, delivery, run as run_model};
use crate::mts::{Input, Secrets, build_request, endpoint_url};
use crate::store::StoreError;

/// How MTS took a page.
enum Sent {
    Accepted,
    /// Ended without a request (no record left to send).
    Ended,
    /// MTS refused it (4xx): the page run failed; `(code, message)`.
    Rejected(String, String),
    /// MTS unreachable or 5xx: the page run is left `submitting` for the caller.
    Transient(String),
    Shutdown,
}

/// Submits page run `page_id` carrying `authdata` to MTS and classifies the answer
/// (the same classes as ODK windows). The page run is `submitting` on entry.
async fn submit_page(engine: &Engine, c: &Record, page_id: u64, authdata: &[Value]) -> Result<Sent, StoreError> {
    let mts_url = c.str("mts_url").unwrap_or_default().to_string();
    let Some(_slots) = (tokio::select! {
        slots = engine.submission_slot(&mts_url) => slots,
        () = engine.cancel.cancelled() => None,
    }) else {
        return Ok(Sent::Shutdown);
    };
    let relay = runner::relay_target(engine, page_id, c).await?;
    let attempts = engine.run(page_id).and_then(|r| r.int("attempts")).unwrap_or(0) + 1;
    engine.update_run(page_id, |r| r.set("attempts", attempts)).await?;
    let body = build_request(c, Input::Records(authdata), relay.as_ref(), Secrets::Reveal, Utc::now());
    let timeout = Duration::from_secs(c.int("mts_timeout").unwrap_or(300).max(1) as u64);
    let outcome = engine.mts.submit(&endpoint_url(c), &body, timeout).await;
    drop(body);
    Ok(match outcome {
        SubmitOutcome::Accepted { request_id } => {
            accepted(engine, page_id, &request_id, None).await?;
            Sent::Accepted
        }
        SubmitOutcome::AllInvalid { request_id, message } => {
            accepted(engine, page_id, &request_id, Some(&message)).await?;
            Sent::Accepted
        }
        SubmitOutcome::Empty => {
            engine
                .update_run(page_id, |r| {
                    r.set("state", "empty");
                    r.set("error_message", "MTS found no record in this page (ATS-REQ-23)");
                })
                .await?;
            Sent::Ended
        }
        SubmitOutcome::Rejected { status, code, message } => {
            let text = format!("MTS refused the request (HTTP {status}): {message}");
            runner::fail(engine, page_id, &code, &text).await?;
            Sent::Rejected(code, text)
        }
        SubmitOutcome::Transient { message, .. } => Sent::Transient(message),
    })
}

/// MTS took the page (`all_invalid`: every record was invalid, ATS-REQ-101).
async fn accepted(
    engine: &Engine,
    page_id: u64,
    request_id: &str,
    all_invalid: Option<&str>,
) -> Result<(), StoreError> {
    engine
        .update_run(page_id, |r| {
            r.set("state", "submitted");
            r.set("mts_request_id", request_id);
            r.set("mts_status", if all_invalid.is_some() { "submitted_with_errors" } else { "submitted" });
            r.set("error_code", if all_invalid.is_some() { Value::from("ATS-REQ-101") } else { Value::Null });
            r.set("error_message", all_invalid.map_or(Value::Null, Value::from));
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    Ok(())
}

/// Runs (or resumes) walk `run` of registry connector `c` to its end, or until it
/// fails, waits for a retry, or the engine stops.
pub(super) async fn walk(engine: &Engine, run: Record, c: Record) -> Result<(), StoreError> {
    let id = run.id;
    engine
        .update_run(id, |r| {
            if state(&run) == "submitting" {
                let after = run.int("last_id").unwrap_or(0);
                r.set(
                    "error_message",
                    format!("the service stopped during this walk; it resumes after registrant #{after}"),
                );
            }
            r.set("state", "submitting");
        })
        .await?;
    match walk_inner(engine, id, &c).await {
        Ok(()) => Ok(()),
        Err(stop) => stopped(engine, id, stop).await,
    }
}

async fn walk_inner(engine: &Engine, id: u64, c: &Record) -> Result<(), Stop> {
    let reg = Registry::of(c)?;
    let prepared = prepare(&reg).await?;
    let Some(walk) = engine.run(id) else { return Ok(()) };
    if walk.int("records_expected").is_none() {
        let count = odoo()?.search_count(&reg.creds, PARTNER, &Value::Array(reg.domain.clone())).await?;
        engine.update_run(id, |r| r.set("records_expected", count as i64)).await?;
        tracing::info!(connector_id = c.id, run_id = id, count, "registry walk started");
    }
    let mut pages = adopt(engine, &reg, &prepared, c, id).await?;
    let skip = in_flight(engine, c);
    let Some(walk) = engine.run(id) else { return Ok(()) };
    let mut last_id = walk.int("last_id").unwrap_or(0).max(0) as u64;
    let status_at_start = c.str("job_status").map(str::to_string);
    let mut stopped_by_user = false;
    loop {
        if engine.cancel.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        while pages.len() >= PAGES_IN_FLIGHT {
            settle(engine, &reg, &prepared, c, id, &mut pages).await?;
        }
        if connector_stopped(engine, c.id, status_at_start.as_deref()) {
            stopped_by_user = true;
            break;
        }
        let domain = reg.domain_and(json!(["id", ">", last_id]));
        let page = read_rows(&reg, &prepared, &domain, Some(reg.page_size), &skip).await?;
        if page.read == 0 {
            break;
        }
        let skipped = (page.read - page.ids.len()) as i64;
        let n = page.ids.len() as i64;
        let mut sent = false;
        if n > 0 {
            let page_run = new_page(engine, &walk, &page.ids).await?;
            match submit_page(engine, c, page_run, &page.authdata).await? {
                Sent::Accepted => {
                    pages.push_back(page_run);
                    sent = true;
                }
                Sent::Ended => {}
                Sent::Rejected(code, message) => {
                    return Err(Stop::Config { code, message: format!("page run #{page_run}: {message}") });
                }
                Sent::Transient(message) => {
                    runner::cancel(engine, page_run, &format!("{message}; the walk reads these registrants again"))
                        .await?;
                    return Err(Stop::Transient(message));
                }
                Sent::Shutdown => return Err(Stop::Shutdown),
            }
        }
        last_id = page.last_read;
        engine
            .update_run(id, |r| {
                r.set("last_id", last_id as i64);
                if sent {
                    r.set("records_sent", r.int("records_sent").unwrap_or(0) + n);
                    r.set("pages_done", r.int("pages_done").unwrap_or(0) + 1);
                }
                r.set("records_skipped", r.int("records_skipped").unwrap_or(0) + skipped);
                r.set("attempts", 0);
                r.set("next_attempt_at", Value::Null);
            })
            .await?;
        if (page.read as u64) < reg.page_size {
            break;
        }
    }
    while !pages.is_empty() {
        settle(engine, &reg, &prepared, c, id, &mut pages).await?;
    }
    finish_walk(engine, id, stopped_by_user).await?;
    Ok(())
}

/// The connector was stopped (or deleted) since the walk started: the walk sends no
/// further page. A walk started on a stopped connector (run now) is not affected.
fn connector_stopped(engine: &Engine, id: u64, at_start: Option<&str>) -> bool {
    engine
        .store
        .get(connector::MODEL, id)
        .is_none_or(|c| c.str("job_status") == Some("completed") && at_start != Some("completed"))
}

/// Creates a page run of `walk` carrying `ids`, `submitting`, durably.
async fn new_page(engine: &Engine, walk: &Record, ids: &[u64]) -> Result<u64, StoreError> {
    let (start, end) = (runs::time(walk, "window_start"), runs::time(walk, "window_end"));
    let now = Utc::now();
    let page = engine
        .create_run(
            runs::connector_id(walk),
            walk.str("trigger").unwrap_or("schedule"),
            start.unwrap_or(now),
            end.unwrap_or(now),
            |r| {
                r.set("split_of_id", walk.id);
                r.set("state", "submitting");
                r.set("registrant_ids", encode_ids(ids));
                r.set("records_expected", ids.len() as i64);
            },
        )
        .await?;
    Ok(page.id)
}

/// Registrant ids that must not be sent now: those of open page runs of the connector
/// and, in relay mode, of pages whose deliveries are still pending.
fn in_flight(engine: &Engine, c: &Record) -> HashSet<u64> {
    let mut runs_in_flight: HashSet<u64> = engine.open_runs(c.id).into_iter().collect();
    if c.str("callback_mode") == Some("relay") {
        for d in engine.store.list(delivery::MODEL) {
            if d.int("connector_id") == Some(c.id as i64) && d.str("state") == Some("pending") {
                runs_in_flight.extend(d.int("run_id").map(|r| r as u64));
            }
        }
    }
    let mut ids = HashSet::new();
    for run_id in runs_in_flight {
        if let Some(ids_of) = engine.run(run_id).as_ref().and_then(page_ids) {
            ids.extend(ids_of);
        }
    }
    ids
}

/// After a restart: the walk's open pages. Acknowledged ones are tracked (oldest
/// first); the others never reached MTS for sure and are read again and resubmitted.
/// A page acknowledged after the walk last saved its progress is counted now.
async fn adopt(
    engine: &Engine,
    reg: &Registry<'_>,
    prepared: &Prepared,
    c: &Record,
    walk_id: u64,
) -> Result<VecDeque<u64>, Stop> {
    let mut pages = VecDeque::new();
    for page_id in engine.open_runs(c.id) {
        let Some(page) = engine.run(page_id) else { continue };
        if page.int("split_of_id") != Some(walk_id as i64) {
            continue;
        }
        if runs::acknowledged(&page) {
            count_if_unsaved(engine, walk_id, &page).await?;
            pages.push_back(page_id);
            continue;
        }
        match resend(engine, reg, prepared, c, &page).await? {
            Sent::Accepted => {
                if let Some(page) = engine.run(page_id) {
                    count_if_unsaved(engine, walk_id, &page).await?;
                }
                pages.push_back(page_id);
            }
            Sent::Ended => {}
            Sent::Rejected(code, message) => {
                return Err(Stop::Config { code, message: format!("page run #{page_id}: {message}") });
            }
            Sent::Transient(message) => {
                runner::cancel(engine, page_id, &format!("{message}; the walk reads these registrants again")).await?;
                return Err(Stop::Transient(message));
            }
            Sent::Shutdown => return Err(Stop::Shutdown),
        }
    }
    Ok(pages)
}

/// Counts a page in the walk's progress when the walk had not saved it yet (the
/// service stopped between the page's acknowledgment and the walk's update).
async fn count_if_unsaved(engine: &Engine, walk_id: u64, page: &Record) -> Result<(), StoreError> {
    let ids = page_ids(page).unwrap_or_default();
    let Some(&max) = ids.iter().max() else { return Ok(()) };
    let saved = engine.run(walk_id).and_then(|w| w.int("last_id")).unwrap_or(0).max(0) as u64;
    if max <= saved {
        return Ok(());
    }
    let n = ids.len() as i64;
    engine
        .update_run(walk_id, |r| {
            r.set("last_id", max as i64);
            r.set("records_sent", r.int("records_sent").unwrap_or(0) + n);
            r.set("pages_done", r.int("pages_done").unwrap_or(0) + 1);
        })
        .await?;
    Ok(())
}

/// Reads a page's registrants again by id (only those still matching the domain) and
/// submits them. A page none of whose registrants still matches ends `empty`.
async fn resend(
    engine: &Engine,
    reg: &Registry<'_>,
    prepared: &Prepared,
    c: &Record,
    page: &Record,
) -> Result<Sent, Stop> {
    let ids = page_ids(page).unwrap_or_default();
    let domain = reg.domain_and(json!(["id", "in", ids]));
    let fresh = read_rows(reg, prepared, &domain, None, &HashSet::new()).await?;
    if fresh.ids.is_empty() {
        engine
            .update_run(page.id, |r| {
                r.set("state", "empty");
                r.set("error_message", "none of this page's registrants matches the domain any more");
            })
            .await?;
        return Ok(Sent::Ended);
    }
    let n = fresh.ids.len();
    engine
        .update_run(page.id, |r| {
            r.set("state", "submitting");
            r.set("registrant_ids", encode_ids(&fresh.ids));
            r.set("records_expected", n as i64);
        })
        .await?;
    Ok(submit_page(engine, c, page.id, &fresh.authdata).await?)
}

/// Tracks the oldest page to its end. A page MTS lost comes back as an open `retry`
/// run: it becomes a page of this walk and is sent again.
async fn settle(
    engine: &Engine,
    reg: &Registry<'_>,
    prepared: &Prepared,
    c: &Record,
    walk_id: u64,
    pages: &mut VecDeque<u64>,
) -> Result<(), Stop> {
    let Some(page_id) = pages.pop_front() else { return Ok(()) };
    runner::track_phase(engine, page_id).await?;
    let Some(page) = engine.run(page_id) else { return Ok(()) };
    if !runs::is_terminal(&page) {
        // The engine is stopping; the walk tracks the page again after the restart.
        return Err(Stop::Shutdown);
    }
    let retry = engine
        .open_runs(c.id)
        .into_iter()
        .filter_map(|r| engine.run(r))
        .find(|r| r.int("retry_of_id") == Some(page_id as i64));
    if let Some(retry) = retry {
        let ids = page_ids(&page).unwrap_or_default();
        let Some(retry) = engine
            .update_run(retry.id, |r| {
                r.set("split_of_id", walk_id);
                r.set("registrant_ids", encode_ids(&ids));
                r.set("state", "submitting");
            })
            .await?
        else {
            return Ok(());
        };
        match resend(engine, reg, prepared, c, &retry).await? {
            Sent::Accepted => pages.push_back(retry.id),
            Sent::Ended => {}
            Sent::Rejected(code, message) => {
                return Err(Stop::Config { code, message: format!("page run #{}: {message}", retry.id) });
            }
            Sent::Transient(message) => {
                let attempts = retry.int("attempts").unwrap_or(0) + 1;
                runner::retry_later(engine, retry.id, attempts, "", &message).await?;
            }
            Sent::Shutdown => return Err(Stop::Shutdown),
        }
    }
    Ok(())
}

/// Ends a walk whose pages are all sent and ended (`stopped`: the connector was
/// stopped before the walk read everything).
async fn finish_walk(engine: &Engine, id: u64, stopped: bool) -> Result<(), StoreError> {
    let Some(walk) = engine.run(id) else { return Ok(()) };
    let pages: Vec<_> =
        engine.store.list(run_model::MODEL).into_iter().filter(|r| r.int("split_of_id") == Some(id as i64)).collect();
    let bad: Vec<String> = pages
        .iter()
        .filter(|p| matches!(state(p), "failed" | "done_with_errors"))
        .map(|p| format!("#{} ({})", p.id, state(p)))
        .collect();
    let sent = walk.int("records_sent").unwrap_or(0);
    let skipped = walk.int("records_skipped").unwrap_or(0);
    let (new_state, message) = if stopped {
        ("cancelled", format!("the connector was stopped: the walk ends after {sent} registrants"))
    } else if sent == 0 && skipped == 0 {
        ("empty", "no registrant matches the domain".to_string())
    } else if sent == 0 {
        ("empty", format!("every matching registrant ({skipped}) is already in an open request"))
    } else if !bad.is_empty() {
        let mut list = bad.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if bad.len() > 5 {
            list.push_str(", ...");
        }
        ("done_with_errors", format!("{} of {} pages ended with errors: {list}", bad.len(), pages.len()))
    } else {
        ("done", format!("{sent} registrants sent in {} pages", walk.int("pages_done").unwrap_or(0)))
    };
    engine
        .update_run(id, |r| {
            r.set("state", new_state);
            r.set("error_message", message.as_str());
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    Ok(())
}

/// A page run the runner drives on its own (a page MTS lost after its walk ended, or
/// one left over by a walk that failed): read its registrants again and send them.
pub(super) async fn lone_page(
    engine: &Engine,
    run: Record,
    c: Record,
    original: Option<Record>,
) -> Result<(), StoreError> {
    let id = run.id;
    if page_ids(&run).is_none() {
        let ids = original.as_ref().and_then(page_ids).unwrap_or_default();
        let split = original.as_ref().and_then(|o| o.int("split_of_id"));
        engine
            .update_run(id, |r| {
                r.set("registrant_ids", encode_ids(&ids));
                if let Some(s) = split {
                    r.set("split_of_id", s);
                }
            })
            .await?;
    }
    let result = async {
        let reg = Registry::of(&c)?;
        let prepared = prepare(&reg).await?;
        let Some(page) = engine.run(id) else { return Ok(()) };
        match resend(engine, &reg, &prepared, &c, &page).await? {
            Sent::Accepted => {
                runner::track_phase(engine, id).await?;
                Ok(())
            }
            Sent::Ended | Sent::Rejected(..) | Sent::Shutdown => Ok(()),
            Sent::Transient(message) => Err(Stop::Transient(message)),
        }
    }
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(stop) => stopped(engine, id, stop).await,
    }
}
