//! Several MTS requests of one connector in flight at once, and pools of MTS endpoints:
//! the real binary against fake ODK Central, MTS (one or several) and Odoo. Every test
//! checks what matters to a user: each submission tokenised and delivered exactly once,
//! windows that tile time, and the limits holding.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::world::*;
use common::{Options, Service};
use mts_connector::fakes::FakeMts;
use mts_connector::model::format_datetime as fmt;
use serde_json::{Value, json};

/// Starts an import of `[start, end)` on connector `id`.
async fn import(w: &World, id: u64, start: DateTime<Utc>, end: DateTime<Utc>) {
    w.svc.connector("action_import", json!([[id], fmt(start), fmt(end)])).await;
}

async fn all_ended(w: &World, id: u64, secs: u64) -> Vec<Value> {
    until(secs, "every run ended", || async {
        let runs = w.runs(id).await;
        (!runs.is_empty() && runs.iter().all(terminal)).then_some(runs)
    })
    .await
}

/// The windows MTS was asked to pull, as `(startdate, enddate)`: none may repeat.
fn windows_sent(mts: &FakeMts) -> Vec<(String, String)> {
    mts.submissions()
        .iter()
        .map(|s| {
            let odk = &s.body["request"]["odkconfig"];
            (odk["startdate"].as_str().unwrap_or("").to_string(), odk["enddate"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn assert_no_window_twice(windows: &[(String, String)]) {
    let mut seen = HashMap::new();
    for w in windows {
        *seen.entry(w.clone()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a window went to MTS twice: {seen:?}");
}

/// While MTS holds its queue, exactly `n` requests reach it and no more come.
async fn exactly_in_flight(mts: &FakeMts, n: usize) {
    until(30, &format!("{n} requests in MTS"), || async { (mts.submissions().len() >= n).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mts.submissions().len(), n, "the limit is {n} requests in flight");
}

/// 400 submissions in an hour two hours ago, MTS holding what it takes, and a connector
/// started on them with requests of at most 50, `parallel` in flight: its scheduled
/// window is split into 8 parts. Answers the world, the connector, the submissions and
/// the window's start.
async fn started_split(parallel: usize) -> (World, u64, Vec<String>, DateTime<Utc>) {
    let w = World::start(fast(60.0)).await;
    let t = now_s() - TimeDelta::hours(2);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 400, t, t + TimeDelta::hours(1));
    w.mts.hold_processing(true);
    let c = json!({"start_datetime": fmt(t), "max_records_per_request": 50, "mts_max_parallel": parallel});
    let id = w.svc.create(&w.connector(c)).await;
    w.svc.connector("action_start", json!([[id]])).await;
    (w, id, ids, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_of_a_split_window_go_to_mts_at_once_and_each_record_goes_once() {
    let (w, id, ids, t) = started_split(4).await;
    // The scheduled window is split into parts; four of them are in MTS together.
    exactly_in_flight(&w.mts, 4).await;
    w.mts.hold_processing(false);
    let runs = all_ended(&w, id, 120).await;
    // The window reaches past the submissions: some parts are empty.
    assert!(runs.iter().all(|r| matches!(r["state"].as_str(), Some("done" | "empty"))), "{:?}", states(&runs));
    assert!(runs.len() >= 8, "split into parts of at most 50: {}", runs.len());
    let mut sorted = runs.clone();
    sorted.sort_by_key(|r| at(&r["window_start"]));
    assert_tiled(&sorted);
    assert_eq!(sorted[0]["window_start"], json!(fmt(t)));
    // Progress is exact: the parts' expected records add up to what ODK holds.
    assert_eq!(runs.iter().map(|r| r["records_expected"].as_i64().unwrap_or(0)).sum::<i64>(), 400);
    assert_no_window_twice(&windows_sent(&w.mts));
    until(60, "400 callbacks", || async { (w.delivered().len() >= 400).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
    // The connector shows its top-level run, not a part.
    let c = &w.svc.connector("read", json!([[id], ["last_run_id"]])).await[0];
    let last = runs.iter().find(|r| r["id"] == c["last_run_id"][0]).expect("last run");
    assert_eq!(last["split_of_id"], false, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_keeps_at_most_mts_max_parallel_requests_in_flight() {
    let w = World::start(fast(60.0)).await;
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::days(10);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 300, start, end);
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 40, "mts_max_parallel": 3}))).await;
    import(&w, id, start, end).await;
    exactly_in_flight(&w.mts, 3).await;
    w.mts.hold_processing(false);
    let runs = all_ended(&w, id, 120).await;
    assert!(runs.iter().all(|r| r["state"] == "done" && r["trigger"] == "manual"), "{:?}", states(&runs));
    assert_no_window_twice(&windows_sent(&w.mts));
    until(60, "300 callbacks", || async { (w.delivered().len() >= 300).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_several_requests_in_flight_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(fast(60.0).data_dir(&data)).await;
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::days(2);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 400, start, end);
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 50, "mts_max_parallel": 4}))).await;
    import(&w, id, start, end).await;
    exactly_in_flight(&w.mts, 4).await;
    let before = w.runs(id).await;
    assert!(before.iter().filter(|r| r["state"] == "submitted").count() == 4, "{:?}", states(&before));
    w.svc.kill9();
    w.svc = Service::start_with(fast(60.0).data_dir(&data)).await;
    w.mts.hold_processing(false);
    let runs = all_ended(&w, id, 120).await;
    assert!(runs.iter().all(|r| r["state"] == "done"), "{:?}", states(&runs));
    // The four MTS had acknowledged are tracked again, never sent again; the rest go once.
    let sent = windows_sent(&w.mts);
    assert_no_window_twice(&sent);
    assert_eq!(sent.len(), runs.len(), "one MTS request per part");
    let mut sorted = runs.clone();
    sorted.sort_by_key(|r| at(&r["window_start"]));
    assert_tiled(&sorted);
    until(60, "400 callbacks", || async { (w.delivered().len() >= 400).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_fails_below_the_watermark_is_sent_again_exactly() {
    let w = World::start(fast(3.0)).await;
    let t = now_s() - TimeDelta::hours(2);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 200, t, t + TimeDelta::hours(1));
    // The first request MTS receives is refused; the later parts go through.
    w.mts.fail_next_submits(1, 400);
    let id = w
        .svc
        .create(&w.connector(json!({"start_datetime": fmt(t), "max_records_per_request": 50, "mts_max_parallel": 4})))
        .await;
    w.svc.connector("action_start", json!([[id]])).await;
    let runs = until(60, "the failed part sent again and done", || async {
        let runs = w.runs(id).await;
        let failed = runs.iter().find(|r| r["state"] == "failed")?;
        let again = runs.iter().find(|r| r["retry_of_id"][0] == failed["id"] && r["state"] == "done")?;
        Some((runs.clone(), failed.clone(), again.clone()))
    })
    .await;
    let (runs, failed, again) = runs;
    assert_eq!(again["trigger"], "schedule");
    assert_eq!((&again["window_start"], &again["window_end"]), (&failed["window_start"], &failed["window_end"]));
    assert!(failed["error_message"].as_str().unwrap_or("").contains("sent again as run"), "{failed}");
    // Windows MTS acknowledged tile time; none was sent twice.
    let mut acked: Vec<Value> =
        runs.iter().filter(|r| r["state"] == "done" || r["state"] == "empty").cloned().collect();
    acked.sort_by_key(|r| at(&r["window_start"]));
    assert_eq!(acked[0]["window_start"], json!(fmt(t)));
    assert_tiled(&acked);
    let sent = windows_sent(&w.mts);
    assert_no_window_twice(&sent);
    until(60, "200 callbacks", || async { (w.delivered().len() >= 200).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cancels_the_parts_not_sent_and_a_restart_sends_exactly_those() {
    let (w, id, ids, _) = started_split(2).await;
    exactly_in_flight(&w.mts, 2).await;
    w.svc.connector("action_stop", json!([[id]])).await;
    w.mts.hold_processing(false);
    let runs = all_ended(&w, id, 60).await;
    // What MTS took is tracked to its end; what it had not is cancelled.
    assert_eq!(runs.iter().filter(|r| r["state"] == "done").count(), 2, "{:?}", states(&runs));
    let rest = |s: &str| matches!(s, "done" | "empty" | "cancelled");
    assert!(runs.iter().all(|r| rest(r["state"].as_str().unwrap_or(""))), "{:?}", states(&runs));
    assert!(runs.iter().any(|r| r["state"] == "cancelled"), "{:?}", states(&runs));
    assert_eq!(w.mts.submissions().len(), 2);
    // Started again, the connector sends what the stop cancelled, once.
    w.svc.connector("action_restart", json!([[id]])).await;
    until(120, "400 callbacks", || async { (w.delivered().len() >= 400).then_some(()) }).await;
    all_ended(&w, id, 60).await;
    w.assert_each_delivered_once(&ids);
    assert_no_window_twice(&windows_sent(&w.mts));
}

/// A fake MTS with `workers` token workers.
async fn mts_with(workers: usize) -> FakeMts {
    let mts = FakeMts::start().await.expect("fake mts");
    mts.set_workers(workers);
    mts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_spreads_requests_past_an_endpoint_down_one_slow_and_one_that_loses_its_queue() {
    let options = fast(60.0).arg("--max-per-mts").arg("2").arg("--mts-gone-after-seconds").arg("600");
    let w = World::start(options).await;
    let (down, slow, lost) = (mts_with(2).await, mts_with(2).await, mts_with(2).await);
    down.set_down(true);
    slow.set_time_per_record(Duration::from_millis(20));
    lost.hold_processing(true);
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::days(2);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 400, start, end);
    let pool = format!("{}, {}, {}", down.url(), slow.url(), lost.url());
    let id = w
        .svc
        .create(&w.connector(json!({"mts_url": pool, "max_records_per_request": 50, "mts_max_parallel": 4})))
        .await;
    import(&w, id, start, end).await;
    // The lost endpoint takes requests, then restarts and forgets them (404).
    until(30, "the lost endpoint holding requests", || async { (!lost.submissions().is_empty()).then_some(()) }).await;
    lost.restart();
    lost.hold_processing(false);
    let runs = until(120, "every run ended, a retry among them", || async {
        let runs = w.runs(id).await;
        let ended = !runs.is_empty() && runs.iter().all(terminal);
        (ended && runs.iter().any(|r| r["trigger"] == "retry")).then_some(runs)
    })
    .await;
    until(60, "400 callbacks", || async { (w.delivered().len() >= 400).then_some(()) }).await;
    // The Odoo target sees each submission once, whichever endpoint tokenised it.
    let mut delivered = HashMap::new();
    for cb in w.odoo.received() {
        let body = cb.body.expect("callback body");
        *delivered.entry(body["id"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
        let token = body["token"].as_str().unwrap_or("");
        assert_eq!(token, slow.token_for(body["vid"].as_str().unwrap_or("")), "the mock token");
    }
    assert!(ids.iter().all(|i| delivered.get(i) == Some(&1)), "each submission delivered once");
    // Nothing went to the endpoint that was down (it was tried, and skipped after).
    assert!(down.submissions().is_empty());
    assert!(!down.requests().is_empty(), "the down endpoint was tried");
    assert!(!slow.submissions().is_empty());
    // A request the lost endpoint forgot was resubmitted, and tracked where it went.
    let cancelled: Vec<&Value> = runs.iter().filter(|r| r["state"] == "cancelled").collect();
    assert!(!cancelled.is_empty() && cancelled.iter().all(|r| r["mts_status"] == "lost"), "{:?}", states(&runs));
    // The service reports each endpoint.
    let metrics = w.svc.get("/metrics").await.body;
    for m in [&down, &slow, &lost] {
        let host = m.url().trim_start_matches("http://").to_string();
        assert!(metrics.contains(&format!("mtsc_mts_endpoint_up{{endpoint=\"{host}\"}}")), "{host} in {metrics}");
    }
    let report = w.svc.connector("action_test_connection", json!([[id]])).await;
    let report = report.as_str().unwrap_or_default();
    assert_eq!(report.matches("FAILED: MTS at").count(), 1, "{report}");
    assert_eq!(report.matches("OK: MTS at").count(), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_gone_silent_has_its_requests_resubmitted_elsewhere() {
    let options: Options = fast(60.0).arg("--mts-gone-after-seconds").arg("2");
    let w = World::start(options).await;
    let (gone, other) = (mts_with(1).await, mts_with(1).await);
    gone.hold_processing(true);
    other.set_down(true);
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::hours(1);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 20, start, end);
    let pool = format!("{},{}", gone.url(), other.url());
    let id = w.svc.create(&w.connector(json!({"mts_url": pool}))).await;
    import(&w, id, start, end).await;
    until(30, "the request taken by the first endpoint", || async { (gone.submissions().len() == 1).then_some(()) })
        .await;
    // The first endpoint stops answering at all; the other comes up.
    gone.set_down(true);
    other.set_down(false);
    let runs = until(60, "the request resubmitted and done", || async {
        let runs = w.runs(id).await;
        runs.iter().any(|r| r["trigger"] == "retry" && r["state"] == "done").then_some(runs)
    })
    .await;
    let lost = &runs[0];
    assert_eq!(lost["mts_status"], "lost", "{lost}");
    assert!(lost["error_message"].as_str().unwrap_or("").contains("answered nothing"), "{lost}");
    until(30, "20 callbacks", || async { (w.delivered().len() >= 20).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
    assert_eq!(other.submissions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_mts_keeps_deleting_fails_after_max_attempts_with_the_reason() {
    // MTS's cleanup deletes every request before a worker takes it.
    let w = World::start(fast_with(60.0, 3)).await;
    w.mts.hold_processing(true);
    w.mts.set_cleanup_expiry(Duration::from_millis(300));
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::hours(1);
    w.odk.add_generated_submissions(PROJECT, FORM, 5, start, end);
    let id = w.svc.create(&w.connector(json!({}))).await;
    import(&w, id, start, end).await;
    let runs = all_ended(&w, id, 60).await;
    let failed = runs.iter().find(|r| r["state"] == "failed").expect("a failed run");
    let message = failed["error_message"].as_str().unwrap_or("");
    assert!(message.contains("MTS lost this window 3 times") && message.contains("cleanupExpirySeconds"), "{message}");
    assert_eq!(runs.iter().filter(|r| r["mts_status"] == "lost").count(), 3, "{:?}", states(&runs));
    assert_eq!(w.mts.submissions().len(), 3);
}
