//! The VID clean-up (the `g2p_mts` "Delete MOSIP VID Ids" job): unlink the VID ids of
//! registrants that hold a non-empty token, counting every deletion on a run.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{PARTNER, REG_ID, Registry, Stop, int_id, json_list, odoo};
use crate::engine::{Engine, life, runs};
use crate::model::fields::Record;
use crate::model::{connector, format_datetime, parse_datetime};
use crate::store::StoreError;

/// Where a connector keeps the time of its next clean-up: an engine value, not a field
/// of the model (like a timer, it is not shown or written by clients).
const NEXT_AT: &str = "vid_delete_next_at";

/// Whether [`vid_cleanup_due`] has anything to do for `c`: a clean-up to run or a
/// leftover timer to clear.
pub fn vid_cleanup_concerns(c: &Record) -> bool {
    c.values.contains_key(NEXT_AT)
        || (c.str("input_type") == Some("custom")
            && c.values.get("delete_vid_after_token").and_then(Value::as_bool) == Some(true))
}

/// Called on every scheduler pass for each connector it concerns: queues a `vid_cleanup` run when
/// one is due and answers when the next one is. Only registry connectors with
/// `delete_vid_after_token` that are started or running clean up.
pub async fn vid_cleanup_due(
    engine: &Engine,
    c: &Record,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let wanted = c.str("input_type") == Some("custom")
        && c.values.get("delete_vid_after_token").and_then(Value::as_bool) == Some(true)
        && matches!(c.str("job_status"), Some("running" | "started"));
    let due = c.str(NEXT_AT).and_then(|s| parse_datetime(s).ok());
    if !wanted {
        if due.is_some() {
            engine.update_connector(c.id, |rec| rec.set(NEXT_AT, Value::Null)).await?;
        }
        return Ok(None);
    }
    if let Some(due) = due.filter(|d| *d > now) {
        return Ok(Some(due));
    }
    let open = engine
        .open_runs(c.id)
        .into_iter()
        .filter_map(|r| engine.run(r))
        .any(|r| r.str("trigger") == Some("vid_cleanup"));
    if !open {
        engine.create_run(c.id, "vid_cleanup", now, now, |_| {}).await?;
    }
    let every = c.int("vid_delete_interval_minutes").unwrap_or(5).max(1);
    let next = now + engine.config.minute() * every as i32;
    engine.update_connector(c.id, |rec| rec.set(NEXT_AT, format_datetime(next))).await?;
    Ok(Some(next))
}

/// Runs (or resumes) clean-up run `id` to its end.
pub async fn cleanup(engine: &Engine, id: u64) -> Result<(), StoreError> {
    let Some(run) = engine.run(id) else { return Ok(()) };
    let Some(c) = engine.store.get(connector::MODEL, runs::connector_id(&run)).map(|c| (*c).clone()) else {
        return engine.cancel(id, "the connector was deleted").await;
    };
    engine.update_run(id, |r| r.set("state", "submitting")).await?;
    let attempts = run.int("attempts").unwrap_or(0) + 1;
    match cleanup_inner(engine, id, &c).await {
        Ok(()) => Ok(()),
        Err(stop) => life::stopped(engine, id, attempts, stop).await,
    }
}

/// Pages through the clean-up domain and unlinks the VIDs of registrants that hold a
/// non-empty token. Never a token, never a registrant without one.
async fn cleanup_inner(engine: &Engine, id: u64, c: &Record) -> Result<(), Stop> {
    let reg = Registry::of(c)?;
    let domain = json_list(
        c.str("vid_delete_search_domain").unwrap_or(connector::DEFAULT_VID_DELETE_DOMAIN),
        "vid_delete_search_domain",
    )?;
    let odoo = odoo()?;
    odoo.authenticate(&reg.creds).await?;
    let mut last = engine.run(id).and_then(|r| r.int("last_id")).unwrap_or(0).max(0) as u64;
    loop {
        if engine.cancel.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        let mut d = domain.clone();
        d.push(json!(["id", ">", last]));
        let rows =
            odoo.search_read(&reg.creds, PARTNER, &Value::Array(d), &["id"], Some("id"), Some(reg.page_size)).await?;
        let ids: Vec<u64> = rows.iter().filter_map(|r| int_id(&r["id"])).collect();
        let Some(&max) = ids.iter().max() else { break };
        let reg_domain = json!([["partner_id", "in", ids], ["id_type.name", "in", [reg.vid_type, reg.token_type]]]);
        let reg_rows = odoo
            .search_read(&reg.creds, REG_ID, &reg_domain, &["partner_id", "id_type", "value"], Some("id"), None)
            .await?;
        let doomed = doomed_vids(&reg_rows, reg.vid_type, reg.token_type);
        if !doomed.is_empty() {
            odoo.unlink(&reg.creds, REG_ID, &doomed).await?;
            tracing::info!(
                connector_id = c.id,
                run_id = id,
                deleted = doomed.len(),
                "VIDs of tokenised registrants deleted"
            );
        }
        last = max;
        let n = doomed.len() as i64;
        engine
            .update_run(id, move |r| {
                r.set("last_id", last as i64);
                r.set("vids_deleted", r.int("vids_deleted").unwrap_or(0) + n);
                r.set("pages_done", r.int("pages_done").unwrap_or(0) + 1);
                r.set("attempts", 0);
            })
            .await?;
        if (rows.len() as u64) < reg.page_size {
            break;
        }
    }
    let deleted = engine.run(id).and_then(|r| r.int("vids_deleted")).unwrap_or(0);
    engine
        .update_run(id, move |r| {
            if deleted > 0 {
                r.set("state", "done");
                r.set("error_message", format!("{deleted} VIDs of registrants holding a token deleted"));
            } else {
                r.set("state", "empty");
                r.set("error_message", "no VID to delete");
            }
            r.set("next_attempt_at", Value::Null);
        })
        .await?;
    Ok(())
}

/// From `g2p.reg.id` rows (`partner_id`, `id_type`, `value`): the VID ids of partners
/// that also hold a token with a non-empty value.
fn doomed_vids(rows: &[Value], vid_type: &str, token_type: &str) -> Vec<u64> {
    let type_name =
        |r: &Value| r["id_type"].as_array().and_then(|a| a.get(1)).and_then(Value::as_str).map(str::to_string);
    let tokenised: HashSet<u64> = rows
        .iter()
        .filter(|r| type_name(r).as_deref() == Some(token_type))
        .filter(|r| r["value"].as_str().is_some_and(|v| !v.trim().is_empty()))
        .filter_map(|r| int_id(&r["partner_id"]))
        .collect();
    rows.iter()
        .filter(|r| type_name(r).as_deref() == Some(vid_type) && vid_type != token_type)
        .filter(|r| int_id(&r["partner_id"]).is_some_and(|p| tokenised.contains(&p)))
        .filter_map(|r| r["id"].as_u64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vids_of_registrants_with_a_token_are_doomed() {
        let rows = vec![
            json!({"id": 1, "partner_id": [1, "A"], "id_type": [1, "MOSIP VID"], "value": "41"}),
            json!({"id": 9, "partner_id": [1, "A"], "id_type": [2, "MOSIP UIN TOKEN"], "value": "tok"}),
            json!({"id": 2, "partner_id": [2, "B"], "id_type": [1, "MOSIP VID"], "value": "42"}),
            json!({"id": 3, "partner_id": [3, "C"], "id_type": [1, "MOSIP VID"], "value": "43"}),
            json!({"id": 10, "partner_id": [3, "C"], "id_type": [2, "MOSIP UIN TOKEN"], "value": false}),
        ];
        assert_eq!(doomed_vids(&rows, "MOSIP VID", "MOSIP UIN TOKEN"), vec![1]);
        assert!(doomed_vids(&rows, "MOSIP UIN TOKEN", "MOSIP UIN TOKEN").is_empty(), "never a token");
    }
}
