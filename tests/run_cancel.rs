//! `mts.connector.run.action_cancel`: a queued or retrying run is cancelled whatever
//! the connector's job status (the run "Run now" queued on a stopped connector used to
//! retry forever: Stop is refused on a completed connector); a run MTS already took is
//! refused with a UserError and tracked to its end.

mod common;

use std::time::Duration;

use common::world::{World, fast, now_s, until};
use common::{Service, valid_connector};
use serde_json::{Value, json};

async fn run(svc: &Service, id: u64) -> Value {
    svc.ok("mts.connector.run", "read", json!([[id]]), json!({"fields": ["state", "error_message", "attempts"]})).await
        [0]
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_run_of_a_stopped_connector_can_be_cancelled_and_stays_cancelled() {
    let svc = Service::start_with(fast(60.0)).await;
    // MTS and ODK are a closed port: every run retries.
    let c = svc.create(&valid_connector()).await;
    svc.connector("action_start", json!([[c]])).await;
    svc.connector("action_stop", json!([[c]])).await;
    assert_eq!(svc.read(c).await["job_status"], "completed");
    let ids = svc.connector("action_run_now", json!([[c]])).await;
    let id = ids[0].as_u64().expect("run id");
    until(20, "the run retrying", || async { (run(&svc, id).await["state"] == "retrying").then_some(()) }).await;
    // Stop cannot reach it: the connector is completed already.
    let e = svc.err("mts.connector", "action_stop", json!([[c]]), json!({})).await;
    assert_eq!(e["data"]["name"], "odoo.exceptions.UserError", "{e}");

    assert_eq!(svc.ok("mts.connector.run", "action_cancel", json!([[id]]), json!({})).await, json!(true));
    let r = run(&svc, id).await;
    assert_eq!(r["state"], "cancelled", "{r}");
    assert_eq!(r["error_message"], "cancelled by the user");
    let attempts = r["attempts"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(run(&svc, id).await["attempts"], attempts, "no attempt after the cancel");
    // The connector has no open run any more: Run now works again.
    assert!(svc.connector("action_run_now", json!([[c]])).await.is_array());

    // An ended run, or an unknown one, is refused and nothing changes.
    let e = svc.err("mts.connector.run", "action_cancel", json!([[id]]), json!({})).await;
    assert_eq!(e["data"]["name"], "odoo.exceptions.UserError", "{e}");
    assert!(e["data"]["message"].as_str().unwrap_or_default().contains("has ended (cancelled)"), "{e}");
    let e = svc.err("mts.connector.run", "action_cancel", json!([[999_999]]), json!({})).await;
    assert_eq!(e["data"]["name"], "odoo.exceptions.MissingError", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_mts_has_taken_is_refused_and_followed_to_its_end() {
    let w = World::start(fast(60.0)).await;
    let now = now_s();
    let (from, to) = (now - chrono::TimeDelta::minutes(30), now - chrono::TimeDelta::minutes(20));
    w.odk.add_generated_submissions(common::world::PROJECT, common::world::FORM, 3, from, to);
    w.mts.hold_processing(true);
    let c = w.svc.create(&w.connector(json!({"interval_minutes": 60}))).await;
    w.svc.connector("action_start", json!([[c]])).await;
    let id = until(20, "a submitted run", || async {
        w.runs(c).await.iter().find(|r| r["state"] == "submitted").and_then(|r| r["id"].as_u64())
    })
    .await;
    let e = w.svc.err("mts.connector.run", "action_cancel", json!([[id]]), json!({})).await;
    assert_eq!(e["data"]["name"], "odoo.exceptions.UserError", "{e}");
    assert!(e["data"]["message"].as_str().unwrap_or_default().contains("MTS has taken its request"), "{e}");
    assert_eq!(run(&w.svc, id).await["state"], "submitted");
    w.mts.hold_processing(false);
    until(30, "the run done", || async { (run(&w.svc, id).await["state"] == "done").then_some(()) }).await;
}
