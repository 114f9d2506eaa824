//! End-to-end tests of the run engine: the real binary against the fake ODK Central,
//! MTS and Odoo, asserting what a user of OpenG2P would notice (windows, runs, tokens
//! delivered exactly once).

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::world::*;
use common::{Options, Service};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_windows_tile_time_and_every_submission_gets_one_token() {
    let w = World::start(fast(2.0)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let mut ids = Vec::new();
    // Submissions arrive while the connector runs; each lands in the window open then.
    for _ in 0..3 {
        let t = Utc::now();
        ids.extend(w.odk.add_generated_submissions(PROJECT, FORM, 4, t, t + TimeDelta::milliseconds(500)));
        tokio::time::sleep(Duration::from_millis(2200)).await;
    }
    let last = now_s();
    let runs = until(60, "windows past the last submission done", || async {
        let runs = w.runs(id).await;
        let done: Vec<Value> = runs.iter().take_while(|r| terminal(r)).cloned().collect();
        (done.len() >= 3 && done.last().is_some_and(|r| at(&r["window_end"]) > last)).then_some(done)
    })
    .await;
    assert!(runs.len() >= 3, "{:?}", states(&runs));
    assert_tiled(&runs);
    assert!(runs.iter().all(|r| matches!(r["state"].as_str(), Some("done" | "empty"))), "{:?}", states(&runs));
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"));
    until(30, "all 12 callbacks", || async { (w.delivered().len() >= 12).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
    // The connector shows its last run and next fire.
    let c = &w.svc.connector("read", json!([[id], ["job_status", "last_run_id", "next_run_at"]])).await[0];
    assert_eq!(c["job_status"], "running");
    assert!(c["last_run_id"].is_array(), "{c}");
    assert!(c["next_run_at"].is_string(), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_window_is_empty_and_advances_without_calling_mts() {
    let w = World::start(fast(1.0)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let runs = until(30, "two empty runs", || async {
        let runs = w.runs(id).await;
        (runs.iter().filter(|r| r["state"] == "empty").count() >= 2).then_some(runs)
    })
    .await;
    let empty: Vec<Value> = runs.into_iter().filter(|r| r["state"] == "empty").collect();
    assert_tiled(&empty[..2]);
    assert_eq!(empty[0]["records_expected"], 0);
    assert!(w.mts.submissions().is_empty(), "MTS must not be asked about an empty window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mts_down_for_several_fires_then_back_tokenises_everything_once() {
    let w = World::start(fast(1.0)).await;
    let t = now_s() - TimeDelta::seconds(30);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 20, t, t + TimeDelta::seconds(20));
    w.mts.set_down(true);
    let id = w.svc.create(&w.connector(json!({"start_datetime": mts_connector::model::format_datetime(t)}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let retrying = until(30, "a run retrying several times", || async {
        let runs = w.runs(id).await;
        runs.into_iter().find(|r| r["state"] == "retrying" && r["attempts"].as_i64() >= Some(3))
    })
    .await;
    assert!(retrying["error_message"].as_str().unwrap_or_default().contains("503"), "{retrying}");
    // While it retries, later fires do not stack up runs over the same time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = w.runs(id).await.into_iter().filter(|r| !terminal(r)).count();
    assert_eq!(open, 1, "one active run per connector");
    w.mts.set_down(false);
    until(60, "all 20 submissions delivered", || async { (w.delivered().len() >= 20).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.assert_each_delivered_once(&ids);
    let runs = w.runs(id).await;
    let acked: Vec<Value> =
        runs.into_iter().filter(|r| matches!(r["state"].as_str(), Some("done" | "empty"))).collect();
    assert_tiled(&acked);
    assert_eq!(acked[0]["window_start"], json!(mts_connector::model::format_datetime(t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mts_refusing_the_request_fails_the_run_and_keeps_the_window() {
    let w = World::start(fast(1.0)).await;
    let t = now_s() - TimeDelta::seconds(30);
    w.odk.add_generated_submissions(PROJECT, FORM, 3, t, t + TimeDelta::seconds(10));
    w.mts.fail_next_submits(2, 400);
    let id = w.svc.create(&w.connector(json!({"start_datetime": mts_connector::model::format_datetime(t)}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let runs = until(30, "a failed run, then a run that succeeds", || async {
        let runs = w.runs(id).await;
        (runs.iter().filter(|r| r["state"] == "failed").count() >= 2 && runs.iter().any(|r| r["state"] == "done"))
            .then_some(runs)
    })
    .await;
    let failed: Vec<&Value> = runs.iter().filter(|r| r["state"] == "failed").collect();
    let message = failed[0]["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 400"), "{message}");
    assert_eq!(failed[0]["error_code"], "ATS-REQ-100", "{}", failed[0]);
    // The watermark did not move: every later run starts where the failed one did.
    let start = &failed[0]["window_start"];
    assert_eq!(start, &json!(mts_connector::model::format_datetime(t)));
    assert!(runs.iter().all(|r| &r["window_start"] == start), "{runs:?}");
    assert_eq!(failed[0]["attempts"], 1, "a 4xx is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_mts_forgets_is_resubmitted_and_completed() {
    let w = World::start(fast(60.0)).await;
    let t = now_s() - TimeDelta::seconds(100);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 5, t, t + TimeDelta::seconds(50));
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({}))).await;
    let run_ids = w
        .svc
        .connector(
            "action_import",
            json!([
                [id],
                mts_connector::model::format_datetime(t),
                mts_connector::model::format_datetime(t + TimeDelta::seconds(60))
            ]),
        )
        .await;
    assert_eq!(run_ids.as_array().map(Vec::len), Some(1));
    until(30, "the run submitted", || async {
        w.runs(id).await.into_iter().find(|r| r["state"] == "submitted").map(|_| ())
    })
    .await;
    w.mts.restart();
    w.mts.hold_processing(false);
    let runs = until(30, "a retry run done", || async {
        let runs = w.runs(id).await;
        runs.iter().any(|r| r["trigger"] == "retry" && r["state"] == "done").then_some(runs)
    })
    .await;
    let original = &runs[0];
    assert_eq!(original["state"], "cancelled", "{original}");
    assert_eq!(original["mts_status"], "lost");
    assert!(original["error_message"].as_str().unwrap_or_default().contains("404"), "{original}");
    let retry = runs.iter().find(|r| r["trigger"] == "retry").expect("retry run");
    assert_eq!(retry["retry_of_id"][0], original["id"]);
    assert_eq!(retry["window_start"], original["window_start"]);
    assert_eq!(retry["window_end"], original["window_end"]);
    until(30, "5 callbacks", || async { (w.delivered().len() >= 5).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_window_is_split_so_no_request_carries_more_than_the_maximum() {
    let w = World::start(fast(60.0)).await;
    let t = now_s() - TimeDelta::hours(2);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 5000, t, t + TimeDelta::hours(1));
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 500}))).await;
    w.svc
        .connector(
            "action_import",
            json!([
                [id],
                mts_connector::model::format_datetime(t),
                mts_connector::model::format_datetime(t + TimeDelta::hours(1))
            ]),
        )
        .await;
    let runs = until(180, "the import done", || async {
        let runs = w.runs(id).await;
        (!runs.is_empty() && runs.iter().all(terminal)).then_some(runs)
    })
    .await;
    assert!(runs.iter().all(|r| r["state"] == "done"), "{:?}", states(&runs));
    let subs = w.mts.submissions();
    assert!(subs.len() >= 10, "{} MTS requests", subs.len());
    assert!(subs.iter().all(|s| s.records <= 500), "{:?}", subs.iter().map(|s| s.records).collect::<Vec<_>>());
    assert_eq!(subs.iter().map(|s| s.records).sum::<usize>(), 5000);
    let mut sorted = runs.clone();
    sorted.sort_by_key(|r| at(&r["window_start"]));
    assert_tiled(&sorted);
    assert_eq!(runs.iter().map(|r| r["records_expected"].as_i64().unwrap_or(0)).sum::<i64>(), 5000);
    until(120, "5000 callbacks", || async { (w.delivered().len() >= 5000).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_job_covers_exactly_its_own_window() {
    let w = World::start(fast(60.0)).await;
    let start = now_s() - TimeDelta::hours(3);
    let end = start + TimeDelta::hours(1);
    let before = w.odk.add_generated_submissions(PROJECT, FORM, 3, start - TimeDelta::minutes(30), start);
    let inside = w.odk.add_generated_submissions(PROJECT, FORM, 6, start, end);
    let after = w.odk.add_generated_submissions(PROJECT, FORM, 3, end, end + TimeDelta::minutes(30));
    let fmt = mts_connector::model::format_datetime;
    let id = w
        .svc
        .create(
            &w.connector(json!({"is_recurring": "onetime", "start_datetime": fmt(start), "end_datetime": fmt(end)})),
        )
        .await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(30, "the connector completed", || async {
        let c = &w.svc.connector("read", json!([[id], ["job_status"]])).await[0];
        (c["job_status"] == "completed").then_some(())
    })
    .await;
    let runs = w.runs(id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["trigger"], "onetime");
    assert_eq!(runs[0]["state"], "done");
    assert_eq!(runs[0]["window_start"], json!(fmt(start)));
    assert_eq!(runs[0]["window_end"], json!(fmt(end)));
    until(30, "6 callbacks", || async { (w.delivered().len() >= 6).then_some(()) }).await;
    w.assert_each_delivered_once(&inside);
    let delivered = w.delivered();
    assert!(before.iter().chain(&after).all(|id| !delivered.contains_key(id)), "outside the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_import_of_thirty_days_completes() {
    let w = World::start(fast(60.0)).await;
    let end = now_s() - TimeDelta::minutes(5);
    let start = end - TimeDelta::days(30);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 300, start, end);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 100}))).await;
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(start), fmt(end)])).await;
    let runs = until(120, "the import done", || async {
        let runs = w.runs(id).await;
        (!runs.is_empty() && runs.iter().all(terminal)).then_some(runs)
    })
    .await;
    assert!(runs.iter().all(|r| r["state"] == "done" && r["trigger"] == "manual"), "{:?}", states(&runs));
    assert!(runs.len() >= 3);
    until(60, "300 callbacks", || async { (w.delivered().len() >= 300).then_some(()) }).await;
    w.assert_each_delivered_once(&ids);
    // A manual import does not move the recurring watermark: the preview still starts
    // one interval back.
    let c = w.svc.connector("read", json!([[id], ["job_status"]])).await;
    assert_eq!(c[0]["job_status"], "draft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_rejects_bad_ranges_and_creates_nothing() {
    let w = World::start(fast(60.0)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    let fmt = mts_connector::model::format_datetime;
    let now = now_s();
    for (s, e) in
        [(now - TimeDelta::hours(1), now - TimeDelta::hours(2)), (now - TimeDelta::hours(1), now + TimeDelta::hours(1))]
    {
        let err = w.svc.err("mts.connector", "action_import", json!([[id], fmt(s), fmt(e)]), json!({})).await;
        assert_eq!(err["data"]["name"], "odoo.exceptions.ValidationError", "{err}");
    }
    let err = w.svc.err("mts.connector", "action_import", json!([[id], "yesterday", fmt(now)]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("window_start"), "{err}");
    assert!(w.runs(id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_reports_each_check_without_secrets() {
    let w = World::start(fast(60.0)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    let report = w.svc.connector("action_test_connection", json!([[id]])).await;
    let text = report.as_str().expect("a report string");
    assert!(text.contains("OK: MTS at"), "{text}");
    assert!(text.contains("OK: ODK Central"), "{text}");
    w.svc.connector("write", json!([[id], {"odk_password": "wrong-SECRET9"}])).await;
    let report = w.svc.connector("action_test_connection", json!([[id]])).await;
    let text = report.as_str().expect("a report string");
    assert!(text.contains("FAILED: ODK Central"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    w.mts.set_down(true);
    let text = w.svc.connector("action_test_connection", json!([[id]])).await;
    assert!(text.as_str().unwrap_or_default().contains("FAILED: MTS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_connector_cancels_its_queued_runs() {
    let w = World::start(fast(60.0)).await;
    w.mts.set_down(true);
    let t = now_s() - TimeDelta::hours(1);
    w.odk.add_generated_submissions(PROJECT, FORM, 3, t, t + TimeDelta::minutes(5));
    let id = w.svc.create(&w.connector(json!({"start_datetime": mts_connector::model::format_datetime(t)}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(30, "a retrying run", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "retrying") }).await;
    w.svc.connector("action_stop", json!([[id]])).await;
    let runs = until(10, "the run cancelled", || async {
        let runs = w.runs(id).await;
        runs.iter().all(terminal).then_some(runs)
    })
    .await;
    assert!(runs.iter().all(|r| r["state"] == "cancelled"), "{:?}", states(&runs));
    let c = &w.svc.connector("read", json!([[id], ["job_status", "next_run_at"]])).await[0];
    assert_eq!(c["job_status"], "completed");
    assert_eq!(c["next_run_at"], false);
}

/// Kills the service with SIGKILL at one point of a run's life, restarts it on the same
/// data dir, and checks the run ends well: no window lost, and no window submitted
/// again once MTS had acknowledged it.
async fn crash_at(point: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(fast(60.0).data_dir(&data)).await;
    let t = now_s() - TimeDelta::hours(1);
    let ids = w.odk.add_generated_submissions(PROJECT, FORM, 8, t, t + TimeDelta::minutes(10));
    match point {
        "queued" => w.odk.set_delay(Duration::from_secs(3)),
        "submitting" => w.mts.set_submit_delay(Duration::from_secs(3)),
        _ => w.mts.hold_processing(true),
    }
    let id = w.svc.create(&w.connector(json!({}))).await;
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::minutes(30))])).await;
    // Wait until the run is at the point, then kill the service outright.
    match point {
        "queued" => {
            until(10, "ODK asked for a session", || async {
                w.odk.requests().iter().any(|r| r.path.ends_with("/sessions")).then_some(())
            })
            .await
        }
        "submitting" => {
            until(10, "the run submitting", || async {
                w.runs(id).await.into_iter().find(|r| r["state"] == "submitting").map(|_| ())
            })
            .await
        }
        _ => {
            until(10, "the run submitted", || async {
                w.runs(id).await.into_iter().find(|r| r["state"] == "submitted").map(|_| ())
            })
            .await
        }
    }
    w.svc.kill9();
    let before_restart = w.mts.submissions().len();
    w.odk.set_delay(Duration::ZERO);
    w.mts.set_submit_delay(Duration::ZERO);
    w.svc = Service::start_with(fast(60.0).data_dir(&data)).await;
    w.mts.hold_processing(false);
    let runs = until(60, "the run done after the restart", || async {
        let runs = w.runs(id).await;
        (!runs.is_empty() && runs.iter().all(terminal)).then_some(runs)
    })
    .await;
    assert!(runs.iter().any(|r| r["state"] == "done"), "{point}: {:?}", states(&runs));
    until(30, "every submission delivered", || async { (w.delivered().len() >= ids.len()).then_some(()) }).await;
    let subs = w.mts.submissions();
    match point {
        // Never reached MTS: submitted once, after the restart.
        "queued" => {
            assert_eq!(before_restart, 0);
            assert_eq!(subs.len(), 1, "{point}");
            w.assert_each_delivered_once(&ids);
        }
        // MTS had acknowledged it: tracked again, never resubmitted.
        "submitted" => {
            assert_eq!(subs.len(), 1, "{point}: resubmitted after acknowledgment");
            w.assert_each_delivered_once(&ids);
        }
        // In flight when killed: MTS may have taken it, so it is sent again (the relay
        // de-duplicates downstream); nothing may be lost.
        _ => {
            assert!(!subs.is_empty() && subs.len() <= 2, "{point}: {} submissions", subs.len());
            let delivered = w.delivered();
            assert!(ids.iter().all(|i| delivered.contains_key(i)), "{point}: a submission was lost");
            let run = runs.iter().find(|r| r["state"] == "done").expect("done run");
            assert!(run["attempts"].as_i64() >= Some(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_before_the_run_reached_mts_submits_it_after_restart() {
    crash_at("queued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_request_is_in_flight_loses_nothing() {
    crash_at("submitting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_mts_acknowledged_tracks_without_resubmitting() {
    crash_at("submitted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_gives_up_after_the_maximum_attempts() {
    let w = World::start(fast_with(60.0, 3)).await;
    w.mts.set_down(true);
    let t = now_s() - TimeDelta::hours(1);
    w.odk.add_generated_submissions(PROJECT, FORM, 2, t, t + TimeDelta::minutes(1));
    let id = w.svc.create(&w.connector(json!({}))).await;
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::minutes(5))])).await;
    let run =
        until(30, "the run failed", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "failed") }).await;
    assert_eq!(run["attempts"], 3, "{run}");
    assert!(run["error_message"].as_str().unwrap_or_default().contains("gave up after 3 attempts"), "{run}");
    assert_eq!(w.mts.submissions().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_are_not_replayed_the_next_window_covers_the_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(fast(1.0).data_dir(&data)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(20, "a first empty run", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "empty") }).await;
    w.svc.terminate().await;
    // Down for several intervals.
    tokio::time::sleep(Duration::from_secs(4)).await;
    w.svc = Service::start_with(fast(1.0).data_dir(&data)).await;
    let runs = until(20, "a run after the restart", || async {
        let runs = w.runs(id).await;
        let done: Vec<Value> = runs.iter().filter(|r| terminal(r)).cloned().collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    assert_tiled(&runs);
    // One run covers the whole time the service was down, not one run per missed fire
    // (a fire lasts a second here, so replayed fires would each cover about one second).
    let widest = runs.iter().map(|r| at(&r["window_end"]) - at(&r["window_start"])).max().expect("runs");
    assert!(widest >= TimeDelta::seconds(4), "the widest window covers {widest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_runs_are_pruned_but_failed_ones_and_the_watermark_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(fast(60.0).data_dir(&data)).await;
    let fmt = mts_connector::model::format_datetime;
    let t = now_s() - TimeDelta::days(1);
    // One failed run (MTS refuses), then five empty imports.
    w.odk.add_generated_submissions(PROJECT, FORM, 1, t, t + TimeDelta::minutes(1));
    w.mts.fail_next_submits(1, 400);
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::minutes(5))])).await;
    until(20, "the failed run", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "failed") }).await;
    for h in 1..=5 {
        let s = t + TimeDelta::hours(h);
        w.svc.connector("action_import", json!([[id], fmt(s), fmt(s + TimeDelta::minutes(5))])).await;
        until(20, "the empty run", || async {
            (w.runs(id).await.iter().filter(|r| r["state"] == "empty").count() as i64 == h).then_some(())
        })
        .await;
    }
    assert_eq!(w.runs(id).await.len(), 6);
    w.svc.terminate().await;
    w.svc = Service::start_with(fast(60.0).arg("--run-retention").arg("2").data_dir(&data)).await;
    let runs = until(20, "old runs pruned", || async {
        let runs = w.runs(id).await;
        (runs.len() == 3).then_some(runs)
    })
    .await;
    assert_eq!(runs.iter().filter(|r| r["state"] == "failed").count(), 1, "failed runs are kept: {:?}", states(&runs));
    let ids: Vec<i64> = runs.iter().map(|r| r["id"].as_i64().unwrap_or(0)).collect();
    assert_eq!(&ids[1..], &[5, 6], "the newest runs are kept");
}

/// Samples the states of two connectors' runs while both imports run; answers the
/// largest number seen `submitting` at once.
async fn most_submitting_at_once(options: Options) -> usize {
    let w = World::start(options).await;
    w.mts.set_submit_delay(Duration::from_millis(800));
    let fmt = mts_connector::model::format_datetime;
    let t = now_s() - TimeDelta::days(1);
    w.odk.add_generated_submissions(PROJECT, FORM, 4, t, t + TimeDelta::minutes(10));
    let a = w.svc.create(&w.connector(json!({"name": "A"}))).await;
    let b = w.svc.create(&w.connector(json!({"name": "B"}))).await;
    for id in [a, b] {
        w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::minutes(30))])).await;
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = w.svc.ok("mts.connector.run", "search_read", json!([[]]), json!({"fields": ["state"]})).await;
        let runs = runs.as_array().cloned().unwrap_or_default();
        most = most.max(runs.iter().filter(|r| r["state"] == "submitting").count());
        if runs.len() == 2 && runs.iter().all(terminal) {
            return most;
        }
        assert!(Instant::now() < deadline, "imports did not finish: {:?}", states(&runs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mts_endpoint_gets_at_most_max_per_mts_requests() {
    let per_mts = |n: u32| fast(60.0).arg("--max-per-mts").arg(n.to_string());
    assert_eq!(most_submitting_at_once(per_mts(1)).await, 1);
    assert_eq!(most_submitting_at_once(per_mts(2)).await, 2, "the bound is the setting");
}

/// Odoo's `next_run_at` of connector `id` (whole seconds: the fire is due within the
/// second that follows).
async fn next_run_at(w: &World, id: u64) -> chrono::DateTime<Utc> {
    at(&w.svc.connector("read", json!([[id], ["next_run_at"]])).await[0]["next_run_at"])
}

/// Waits for the first run of a started connector to end, then for its next fire to be
/// stored ahead of the due time: answers the due second and the queued run.
async fn stored_ahead(w: &World, id: u64) -> (chrono::DateTime<Utc>, Value) {
    until(20, "the first run ended", || async { w.runs(id).await.first().filter(|r| terminal(r)).cloned() }).await;
    let due = next_run_at(w, id).await;
    let run = until(20, "the next fire stored", || async { w.runs(id).await.get(1).cloned() }).await;
    assert_eq!(run["state"], "queued", "{run}");
    // Stored about a second (a tenth of the minute) before the fire, which is due
    // within the second after `due`.
    assert!(Utc::now() < due + TimeDelta::milliseconds(500), "seen at {} for a fire due at {due}", Utc::now());
    assert_eq!(run["window_end"], json!(mts_connector::model::format_datetime(due)), "{run}");
    (due, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_is_stored_ahead_of_its_due_time_and_runs_when_due() {
    // One "minute" is 10 s: fires every 10 s, stored 1 s ahead.
    let w = World::start(fast(10.0)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let (due, run) = stored_ahead(&w, id).await;
    let fires_counted = lateness_count(&w).await;
    // Until it is due the run waits: ODK Central is not asked about its window.
    let (seen, asked) = (Instant::now(), w.odk.requests().len());
    while w.odk.requests().len() == asked {
        let now = w.runs(id).await;
        assert!(Instant::now() - seen < Duration::from_secs(20), "the stored fire never ran: {:?}", states(&now));
        if Utc::now() < due {
            assert_eq!(now[1]["state"], "queued", "before {due}: {:?}", states(&now));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Utc::now() >= due, "ODK Central asked before the fire was due ({due})");
    // Stored about a second (the lead) before it went to ODK Central (without the lead,
    // the window is counted in ODK as soon as the run exists).
    let waited = Instant::now() - seen;
    assert!(waited >= Duration::from_millis(250), "the stored fire waited only {waited:?}");
    let runs = until(20, "the stored fire ran", || async {
        let runs = w.runs(id).await;
        runs.get(1).is_some_and(terminal).then_some(runs)
    })
    .await;
    assert_eq!(runs[1]["id"], run["id"]);
    assert_eq!(runs[1]["state"], "empty", "{:?}", states(&runs));
    assert!(w.odk.requests().len() > asked, "the window was counted in ODK once due");
    assert_tiled(&runs[..2]);
    // The next fire moved on: one run per fire, none twice.
    assert!(next_run_at(&w, id).await >= due + TimeDelta::seconds(9));
    // Its lateness is counted once it was released at the due time.
    assert_eq!(lateness_count(&w).await, fires_counted + 1);
}

/// How many fires `mtsc_scheduler_lateness_seconds` has counted.
async fn lateness_count(w: &World) -> u64 {
    let metrics = w.svc.get("/metrics").await.body;
    let line = metrics.lines().find_map(|l| l.strip_prefix("mtsc_scheduler_lateness_seconds_count "));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no lateness count in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_stored_ahead_survives_kill9_and_a_stop_before_it_is_due_cancels_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(fast(10.0).data_dir(&data)).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let (due, run) = stored_ahead(&w, id).await;
    // Killed while it waits: after the restart the same run waits for the same due time,
    // and no second run is made for that fire.
    w.svc.kill9();
    w.svc = Service::start_with(fast(10.0).data_dir(&data)).await;
    let runs = until(20, "the stored fire ran after the restart", || async {
        let runs = w.runs(id).await;
        runs.get(1).is_some_and(terminal).then_some(runs)
    })
    .await;
    assert!(Utc::now() >= due, "it ran before it was due ({due})");
    assert_eq!(runs[1]["id"], run["id"]);
    assert_eq!(runs[1]["state"], "empty", "{:?}", states(&runs));
    assert_tiled(&runs[..2]);
    // The third fire is stored ahead too; a stop before its due time cancels it unsent.
    let due = next_run_at(&w, id).await;
    let third = until(20, "the third fire stored", || async { w.runs(id).await.get(2).cloned() }).await;
    assert_eq!(third["state"], "queued", "{third}");
    let asked = w.odk.requests().len();
    w.svc.connector("action_stop", json!([[id]])).await;
    assert!(Utc::now() < due + TimeDelta::seconds(1), "stopped too late to test a stop before the fire was due");
    let third =
        until(10, "the stored fire cancelled", || async { w.runs(id).await.get(2).filter(|r| terminal(r)).cloned() })
            .await;
    assert_eq!(third["state"], "cancelled", "{third}");
    assert_eq!(third["error_message"], "the connector was stopped before this scheduled run was due", "{third}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.odk.requests().len(), asked, "a cancelled fire must not reach ODK Central");
    assert!(w.mts.submissions().is_empty());
    assert_eq!(w.runs(id).await.len(), 3);
}
