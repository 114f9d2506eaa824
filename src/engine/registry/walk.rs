//! The walk: page through the matching registrants by id, make each page a page run
//! (the run life sends it: see [`super::RegistryPage`]), keep a bounded number of pages
//! open, and end when every page ended. The walk itself never calls MTS.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::page::{check_vid_access, prepare};
use super::{PARTNER, Registry, Stop, int_id, odoo, page_ids};
use crate::engine::runs::{self, state};
use crate::engine::{Engine, life, pool};
use crate::model::fields::Record;
use crate::model::{connector, delivery, run as run_model};
use crate::store::StoreError;

/// Runs (or resumes) walk `id` to its end, or until it fails, waits for a retry, or the
/// engine stops.
pub async fn walk(engine: &Engine, id: u64) -> Result<(), StoreError> {
    let Some(run) = engine.run(id) else { return Ok(()) };
    let Some(c) = engine.store.get(connector::MODEL, runs::connector_id(&run)).map(|c| (*c).clone()) else {
        return engine.cancel(id, "the connector was deleted").await;
    };
    let resumed = state(&run) == "submitting";
    let after = run.int("last_id").unwrap_or(0);
    engine
        .update_run(id, move |r| {
            if resumed {
                r.set(
                    "error_message",
                    format!("the service stopped during this walk; it resumes after registrant #{after}"),
                );
            }
            r.set("state", "submitting");
        })
        .await?;
    let attempts = run.int("attempts").unwrap_or(0) + 1;
    match walk_inner(engine, id, &c).await {
        Ok(()) => Ok(()),
        Err(stop) => life::stopped(engine, id, attempts, stop).await,
    }
}

/// The pages of walk `id` that are still open.
fn open_pages(engine: &Engine, connector: u64, id: u64) -> Vec<u64> {
    engine
        .open_runs(connector)
        .into_iter()
        .filter(|r| engine.run(*r).is_some_and(|p| p.int("split_of_id") == Some(id as i64)))
        .collect()
}

/// Waits until at most `most` pages of walk `id` are open (a page ending wakes it).
async fn wait_for_pages(engine: &Engine, connector: u64, id: u64, most: usize) -> Result<(), Stop> {
    loop {
        let ended = engine.run_ended.notified();
        if open_pages(engine, connector, id).len() <= most {
            return Ok(());
        }
        tokio::select! {
            () = ended => {}
            // A page may end in another process's view (a restart); look again anyway.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = engine.cancel.cancelled() => return Err(Stop::Shutdown),
        }
    }
}

async fn walk_inner(engine: &Engine, id: u64, c: &Record) -> Result<(), Stop> {
    let reg = Registry::of(c)?;
    prepare(&reg).await?;
    check_vid_access(&reg).await?;
    let Some(walk) = engine.run(id) else { return Ok(()) };
    if walk.int("records_expected").is_none() {
        let count = odoo()?.search_count(&reg.creds, PARTNER, &Value::Array(reg.domain.clone())).await?;
        engine.update_run(id, move |r| r.set("records_expected", count as i64)).await?;
        tracing::info!(connector_id = c.id, run_id = id, count, "registry walk started");
    }
    // Pages waiting for MTS besides those in it, so that MTS never waits for Odoo.
    let most_open = pool::max_parallel(c) * 2;
    let skip = in_flight(engine, c)?;
    let mut last_id = walk.int("last_id").unwrap_or(0).max(0) as u64;
    let status_at_start = c.str("job_status").map(str::to_string);
    let mut stopped_by_user = false;
    // This walk's pages not seen ended yet: a page MTS refused stops the walk.
    let mut watched = open_pages(engine, c.id, id);
    loop {
        if engine.cancel.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        wait_for_pages(engine, c.id, id, most_open - 1).await?;
        let mut refused = false;
        watched.retain(|p| match engine.run(*p) {
            Some(page) if runs::is_terminal(&page) => {
                refused |= state(&page) == "failed";
                false
            }
            Some(_) => true,
            None => false,
        });
        if refused {
            break;
        }
        if connector_stopped(engine, c.id, status_at_start.as_deref()) {
            stopped_by_user = true;
            break;
        }
        let domain = reg.domain_and(json!(["id", ">", last_id]));
        let rows = odoo()?.search_read(&reg.creds, PARTNER, &domain, &["id"], Some("id"), Some(reg.page_size)).await?;
        let read: Vec<u64> = rows.iter().filter_map(|r| int_id(&r["id"])).collect();
        let Some(&last_read) = read.iter().max() else { break };
        let ids: Vec<u64> = read.iter().copied().filter(|r| !skip.contains(r)).collect();
        let Some(walk) = engine.run(id) else { return Ok(()) };
        if let Some(page) = engine.create_page(&walk, &ids, last_read, (read.len() - ids.len()) as i64).await? {
            watched.push(page);
        }
        last_id = last_read;
        if (rows.len() as u64) < reg.page_size {
            break;
        }
    }
    wait_for_pages(engine, c.id, id, 0).await?;
    finish_walk(engine, id, stopped_by_user).await?;
    Ok(())
}

/// What the pages of a walk came to, read through the store's index one page at a time.
#[derive(Default)]
struct Pages {
    count: usize,
    /// Pages that ended `failed` or `done_with_errors`: how many, and the first few.
    bad: usize,
    bad_list: Vec<String>,
    /// The first page MTS refused (its first send, not a resubmission).
    refused: Option<Record>,
    /// A page a stop cancelled before MTS took it.
    cancelled: bool,
}

fn pages_of(engine: &Engine, id: u64) -> Result<Pages, StoreError> {
    let mut out = Pages::default();
    for page in engine.store.index_ids(run_model::MODEL, "split_of", &[&Value::from(id)], false)? {
        let Some(p) = engine.store.try_get(run_model::MODEL, page?)? else { continue };
        out.count += 1;
        if matches!(state(&p), "failed" | "done_with_errors") {
            out.bad += 1;
            if out.bad_list.len() < 5 {
                out.bad_list.push(format!("#{} ({})", p.id, state(&p)));
            }
        }
        if out.refused.is_none() && state(&p) == "failed" && p.int("retry_of_id").is_none() {
            out.refused = Some((*p).clone());
        }
        out.cancelled |= state(&p) == "cancelled" && !runs::acknowledged(&p);
    }
    Ok(out)
}

/// The connector was stopped (or deleted) since the walk started: the walk creates no
/// further page. A walk started on a stopped connector (run now) is not affected.
fn connector_stopped(engine: &Engine, id: u64, at_start: Option<&str>) -> bool {
    engine
        .store
        .get(connector::MODEL, id)
        .is_none_or(|c| c.str("job_status") == Some("completed") && at_start != Some("completed"))
}

/// Registrant ids that must not be sent now: those of open page runs of the connector
/// and, in relay mode, of pages whose deliveries are still pending.
fn in_flight(engine: &Engine, c: &Record) -> Result<HashSet<u64>, StoreError> {
    let mut runs_in_flight: HashSet<u64> = engine.open_runs(c.id).into_iter().collect();
    if c.str("callback_mode") == Some("relay") {
        let (connector, pending) = (Value::from(c.id), Value::from("pending"));
        for id in engine.store.index_ids(delivery::MODEL, "connector_state", &[&connector, &pending], false)? {
            if let Some(d) = engine.store.try_get(delivery::MODEL, id?)? {
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
    Ok(ids)
}

/// Ends a walk whose pages have all ended (`stopped`: the connector was stopped before
/// the walk read everything).
async fn finish_walk(engine: &Engine, id: u64, stopped: bool) -> Result<(), StoreError> {
    let Some(walk) = engine.run(id) else { return Ok(()) };
    let pages = pages_of(engine, id)?;
    let sent = walk.int("records_sent").unwrap_or(0);
    let skipped = walk.int("records_skipped").unwrap_or(0);
    // Pages a stop cancelled before MTS took them: the walk did not read everything out.
    let stopped = stopped || pages.cancelled;
    let (new_state, code, message) = if let Some(page) = &pages.refused {
        let why = page.str("error_message").unwrap_or("MTS refused it");
        ("failed", page.str("error_code").map(str::to_string), format!("page run #{}: {why}", page.id))
    } else if stopped {
        ("cancelled", None, format!("the connector was stopped: the walk ends after {sent} registrants"))
    } else if sent == 0 && skipped == 0 {
        ("empty", None, "no registrant matches the domain".to_string())
    } else if sent == 0 {
        ("empty", None, format!("every matching registrant ({skipped}) is already in an open request"))
    } else if pages.bad > 0 {
        let mut list = pages.bad_list.join(", ");
        if pages.bad > pages.bad_list.len() {
            list.push_str(", ...");
        }
        ("done_with_errors", None, format!("{} of {} pages ended with errors: {list}", pages.bad, pages.count))
    } else {
        ("done", None, format!("{sent} registrants sent in {} pages", walk.int("pages_done").unwrap_or(0)))
    };
    engine
        .update_run(id, move |r| {
            r.set("state", new_state);
            r.set("error_code", code.map_or(Value::Null, Value::from));
            r.set("error_message", message);
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    life::complete_onetime(engine, runs::connector_id(&walk)).await
}
