//! The callback relay end to end: MTS calls back the service, which stores each record,
//! de-duplicates it and forwards it to the (fake) Odoo target, whatever the target or
//! MTS do. "Exactly once" is counted by the idempotency header the target receives.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use common::world::*;
use common::{Options, Service};
use mts_connector::relay::deliver::DELIVERY_HEADER;
use serde_json::{Value, json};

fn relay_options() -> Options {
    relay_fast()
}

/// Imports `n` fresh submissions through a relay-mode connector; answers their ids and
/// the connector id.
async fn import(w: &World, n: usize, patch: Value) -> (Vec<String>, u64) {
    w.import_relayed(n, 2, patch).await
}

/// Once connector `id`'s earlier import has ended, imports `n` more submissions (from
/// an earlier hour) through it; answers every id imported so far (`before` and these).
async fn import_more(w: &World, id: u64, n: usize, before: &[String]) -> Vec<String> {
    until(20, "the earlier import ended", || async { w.runs(id).await.iter().all(terminal).then_some(()) }).await;
    let t = now_s() - TimeDelta::hours(5);
    let more = w.odk.add_generated_submissions(PROJECT, FORM, n, t, t + TimeDelta::minutes(30));
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::hours(1))])).await;
    before.iter().chain(&more).cloned().collect()
}

/// Waits until the target holds `n` distinct deliveries, then checks each arrived
/// exactly once (by idempotency header) with its token and nothing else came.
async fn assert_exactly_once(w: &World, ids: &[String]) {
    until(60, "every record delivered", || async {
        (w.odoo.count_by_header(DELIVERY_HEADER).len() >= ids.len()).then_some(())
    })
    .await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let by_header = w.odoo.count_by_header(DELIVERY_HEADER);
    assert_eq!(by_header.len(), ids.len(), "distinct deliveries");
    assert!(by_header.values().all(|n| *n == 1), "a record was delivered twice: {by_header:?}");
    w.assert_each_delivered_once(ids);
}

async fn deliveries(w: &World, domain: Value) -> Vec<Value> {
    w.svc
        .ok("mts.connector.delivery", "search_read", json!([domain]), json!({}))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_records_reach_the_target_once_with_their_token() {
    let w = World::start(relay_options()).await;
    let (ids, id) = import(&w, 12, json!({})).await;
    assert_exactly_once(&w, &ids).await;
    // MTS was pointed at the service, with a bearer token and a pass-through format.
    let sub = &w.mts.submissions()[0];
    let props = &sub.body["request"]["callbackProperties"];
    assert!(props["url"].as_str().unwrap_or_default().starts_with(&format!("{}/relay/", w.svc.url())), "{props}");
    assert_eq!(props["authType"], "staticBearer");
    assert_eq!(sub.body["request"]["outputFormat"], ".");
    let runs = until(20, "the run done", || async {
        let runs = w.runs(id).await;
        runs.iter().all(terminal).then_some(runs)
    })
    .await;
    assert_eq!(runs[0]["state"], "done", "{}", runs[0]);
    assert_eq!(runs[0]["records_received"], 12);
    until(10, "delivered counted on the run", || async {
        (w.runs(id).await[0]["records_delivered"] == 12).then_some(())
    })
    .await;
    // The delivery model shows keys and outcomes, never the records' data.
    let all = deliveries(&w, json!([])).await;
    assert_eq!(all.len(), 12);
    for d in &all {
        assert_eq!(d["state"], "delivered");
        let text = d.to_string();
        assert!(!text.contains("Person ") && !text.contains("Main Street"), "personal data in {text}");
    }
    // The Odoo session was logged in once for the whole run.
    assert_eq!(w.odoo.logins(), 1, "one login for the whole run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_renewed_once_for_all_deliveries() {
    let w = World::start(relay_options()).await;
    let (first, id) = import(&w, 8, json!({})).await;
    assert_exactly_once(&w, &first).await;
    assert_eq!(w.odoo.logins(), 1);
    // Odoo forgets the session; the next import's concurrent deliveries are all refused
    // with it, and one fresh login serves every one of them.
    w.odoo.expire_sessions();
    let all = import_more(&w, id, 16, &first).await;
    assert_exactly_once(&w, &all).await;
    assert_eq!(w.odoo.logins(), 2, "one renewal for all the refused deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_callbacks_are_relayed_record_by_record() {
    let w = World::start(relay_options()).await;
    let (ids, id) = import(&w, 20, json!({"callback_in_bulk": true})).await;
    assert_exactly_once(&w, &ids).await;
    assert_eq!(w.mts.submissions()[0].body["request"]["callbackProperties"]["callInBulk"], true);
    let run = until(20, "the run done", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "done") }).await;
    assert_eq!(run["records_received"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_down_for_a_while_gets_everything_once_when_back() {
    let w = World::start(relay_options()).await;
    w.odoo.set_down(true);
    let (ids, _) = import(&w, 10, json!({})).await;
    until(30, "deliveries retrying", || async {
        let d = deliveries(&w, json!([["attempts", ">=", 2]])).await;
        (d.len() >= 5).then_some(())
    })
    .await;
    let d = deliveries(&w, json!([["attempts", ">=", 2]])).await;
    assert_eq!(d[0]["state"], "pending");
    assert!(d[0]["last_error"].as_str().unwrap_or_default().contains("503"), "{}", d[0]);
    w.odoo.set_down(false);
    assert_exactly_once(&w, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_answering_500_at_first_gets_everything_once() {
    let w = World::start(relay_options()).await;
    w.odoo.fail_next(7, 500);
    let (ids, _) = import(&w, 10, json!({})).await;
    assert_exactly_once(&w, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_slower_than_the_timeout_gets_everything_once() {
    let w = World::start(relay_options()).await;
    w.odoo.set_delay(Duration::from_millis(2500));
    let (ids, _) = import(&w, 4, json!({"callback_timeout": 1})).await;
    until(30, "timed-out attempts", || async {
        let d = deliveries(&w, json!([["attempts", ">=", 1]])).await;
        (!d.is_empty()).then_some(())
    })
    .await;
    let d = deliveries(&w, json!([["attempts", ">=", 1]])).await;
    assert!(d[0]["last_error"].as_str().unwrap_or_default().contains("timed out"), "{}", d[0]);
    w.odoo.set_delay(Duration::ZERO);
    assert_exactly_once(&w, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_refused_once_is_retried_and_everything_arrives_once() {
    let w = World::start(relay_options()).await;
    w.odoo.set_password("rotated-password");
    let (ids, _) = import(&w, 6, json!({})).await;
    until(30, "a refused login", || async {
        let d = deliveries(&w, json!([["attempts", ">=", 1]])).await;
        d.iter().any(|d| d["last_error"].as_str().unwrap_or_default().contains("refused the credentials")).then_some(())
    })
    .await;
    let d = deliveries(&w, json!([["attempts", ">=", 1]])).await;
    assert!(!d.iter().any(|d| d.to_string().contains(ODOO_PW)), "no password in delivery errors");
    w.odoo.set_password(ODOO_PW);
    assert_exactly_once(&w, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mts_dropping_callbacks_mid_request_gets_the_window_resubmitted() {
    let w = World::start(relay_options()).await;
    w.mts.fail_callbacks_after(4);
    let (ids, id) = import(&w, 10, json!({})).await;
    assert_exactly_once(&w, &ids).await;
    let runs = until(30, "the retry run done", || async {
        let runs = w.runs(id).await;
        runs.iter().any(|r| r["trigger"] == "retry" && r["state"] == "done").then_some(runs)
    })
    .await;
    let first = &runs[0];
    assert_eq!(first["state"], "cancelled", "{first}");
    // MTS writes `processed` before its callbacks go out, so either may be seen first.
    assert!(matches!(first["mts_status"].as_str(), Some("processed" | "error_making_callback_request")), "{first}");
    assert!(first["error_message"].as_str().unwrap_or_default().contains("4 of 10 records"), "{first}");
    assert_eq!(w.mts.submissions().len(), 2, "the window was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_visible_and_replayable() {
    let w = World::start(relay_options()).await;
    w.odoo.fail_next(3, 422);
    let (ids, id) = import(&w, 3, json!({})).await;
    let failed = until(30, "three failed deliveries", || async {
        let d = deliveries(&w, json!([["state", "=", "failed"]])).await;
        (d.len() == 3).then_some(d)
    })
    .await;
    assert_eq!(failed[0]["last_status"], 422);
    assert!(failed[0]["last_error"].as_str().unwrap_or_default().contains("injected failure"), "{}", failed[0]);
    assert_eq!(failed[0]["attempts"], 1, "a 4xx is not retried");
    until(10, "failures counted on the run", || async { (w.runs(id).await[0]["records_failed"] == 3).then_some(()) })
        .await;
    let n = w.svc.connector("action_retry_failed", json!([[id]])).await;
    assert_eq!(n, 3);
    assert_exactly_once(&w, &ids).await;
    until(10, "the run's counts updated", || async {
        let r = &w.runs(id).await[0];
        (r["records_failed"] == 0 && r["records_delivered"] == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_lose_their_data_after_the_retention() {
    // 0.00003 days is 2.6 s.
    let w = World::start(relay_options().arg("--relay-failed-retention-days").arg("0.00003")).await;
    w.odoo.fail_next(2, 422);
    let (_, id) = import(&w, 2, json!({})).await;
    until(30, "two failed deliveries", || async {
        (deliveries(&w, json!([["state", "=", "failed"]])).await.len() == 2).then_some(())
    })
    .await;
    until(20, "the purge logged", || async {
        w.svc.log().contains("purged the data of old failed deliveries").then_some(())
    })
    .await;
    // The records' personal data is gone: the deliveries say so and cannot be replayed.
    let failed = deliveries(&w, json!([["state", "=", "failed"]])).await;
    assert_eq!(failed.len(), 2);
    for d in &failed {
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("injected failure") && error.contains("data purged"), "{d}");
    }
    assert_eq!(w.svc.connector("action_retry_failed", json!([[id]])).await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.odoo.received().is_empty(), "nothing sent after the purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_odoo_session_is_logged_out() {
    // Long enough that a slow moment of the run under load is not taken for idleness.
    let w = World::start(relay_options().arg("--relay-idle-logout-seconds").arg("3")).await;
    let (ids, _) = import(&w, 6, json!({})).await;
    assert_exactly_once(&w, &ids).await;
    until(15, "the idle session logged out", || async {
        (w.odoo.logouts() == 1 && w.odoo.active_sessions() == 0).then_some(())
    })
    .await;
    assert_eq!(w.odoo.logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_targets_get_one_token_and_a_new_one_when_it_is_refused() {
    let w = World::start(relay_options()).await;
    w.odoo.enable_oauth("mts-connector", "client-SECRET3", Duration::from_secs(3600));
    let oauth = json!({
        "callback_authtype": "oauth",
        "callback_auth_url": w.odoo.token_url(),
        "callback_auth_client_id": "mts-connector",
        "callback_auth_client_secret": "client-SECRET3",
    });
    let (first, id) = import(&w, 8, oauth).await;
    assert_exactly_once(&w, &first).await;
    assert_eq!(w.odoo.tokens_issued(), 1, "one token for the whole run");
    assert_eq!(w.odoo.logins(), 0, "no Odoo session");
    assert!(w.odoo.received().iter().all(|cb| cb.header("authorization").is_some_and(|a| a.starts_with("Bearer "))));
    // The server forgets its tokens: the refused deliveries share one new token.
    w.odoo.expire_tokens();
    let all = import_more(&w, id, 16, &first).await;
    assert_exactly_once(&w, &all).await;
    assert_eq!(w.odoo.tokens_issued(), 2, "one new token for all the refused deliveries");
    let log = w.svc.log();
    assert!(!log.contains("client-SECRET3") && !log.contains(ODOO_PW), "a secret in the log");
}

#[tokio::test]
async fn an_oauth_token_is_reused_until_shortly_before_it_expires() {
    use mts_connector::fakes::FakeOdoo;
    use mts_connector::model::fields::Record;
    use mts_connector::relay::auth::Sessions;
    use mts_connector::secret::Secret;
    let odoo = FakeOdoo::start(ODOO_DB, ODOO_LOGIN, ODOO_PW).await.expect("fake odoo");
    // Renewed 10 s before it expires: this token is used for 1 s.
    odoo.enable_oauth("mts-connector", "client-SECRET3", Duration::from_secs(11));
    let mut c = Record { id: 1, ..Default::default() };
    c.set("callback_authtype", "oauth");
    c.set("callback_auth_url", odoo.token_url());
    c.set("callback_auth_username", ODOO_LOGIN);
    c.set("callback_auth_client_id", "mts-connector");
    c.secrets.insert("callback_auth_password".into(), Secret::new(ODOO_PW));
    c.secrets.insert("callback_auth_client_secret".into(), Secret::new("client-SECRET3"));
    let sessions = Sessions::new(reqwest::Client::new(), Duration::from_secs(30));
    let header = || async { sessions.header(&c, Duration::from_secs(5)).await.expect("a token").expect("a header") };
    let first = header().await;
    assert_eq!(first.0, "authorization");
    assert_eq!(header().await, first, "reused while valid");
    assert_eq!(odoo.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_ne!(header().await, first, "renewed before it expires");
    assert_eq!(odoo.tokens_issued(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jq_error_parks_the_record_and_sends_nothing() {
    let w = World::start(relay_options()).await;
    let (_, _) = import(&w, 2, json!({"output_format": "{\"n\": (.input.name | tonumber)}"})).await;
    let failed = until(30, "failed deliveries", || async {
        let d = deliveries(&w, json!([["state", "=", "failed"]])).await;
        (d.len() == 2).then_some(d)
    })
    .await;
    assert!(failed[0]["last_error"].as_str().unwrap_or_default().contains("output format"), "{}", failed[0]);
    assert!(w.odoo.received().is_empty(), "nothing sent, not even an empty body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_relay_calls_store_nothing() {
    let w = World::start(relay_options()).await;
    w.mts.hold_processing(true);
    let (_, id) = import(&w, 2, json!({})).await;
    let run =
        until(20, "the run submitted", || async { w.runs(id).await.into_iter().find(|r| r["state"] == "submitted") })
            .await;
    let run_id = run["id"].as_u64().expect("run id");
    let http = reqwest::Client::new();
    let url = format!("{}/relay/{run_id}", w.svc.url());
    let record = json!({"input": {"__id": "uuid:x"}, "output": {"vid": "1", "status": "processed", "token": "t"}});
    let post = |url: String, auth: Option<&'static str>, body: Vec<u8>| {
        let mut req = http.post(url).header("content-type", "application/json").body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.expect("relay answers").status().as_u16() }
    };
    assert_eq!(post(url.clone(), None, record.to_string().into_bytes()).await, 401);
    assert_eq!(post(url.clone(), Some("Bearer wrong"), record.to_string().into_bytes()).await, 401);
    let other = format!("{}/relay/999999", w.svc.url());
    assert_eq!(post(other, Some("Bearer wrong"), record.to_string().into_bytes()).await, 404);
    // The real token is only known to MTS; take it from what the fake MTS received.
    let token = w.mts.submissions()[0].body["request"]["callbackProperties"]["authStaticBearer"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let bearer: &'static str = Box::leak(format!("Bearer {token}").into_boxed_str());
    assert_eq!(post(url.clone(), Some(bearer), b"{not json".to_vec()).await, 400);
    assert_eq!(post(url.clone(), Some(bearer), b"{\"input\": {}}".to_vec()).await, 400);
    assert_eq!(post(url.clone(), Some(bearer), vec![b' '; 33 << 20]).await, 413);
    assert!(deliveries(&w, json!([])).await.is_empty(), "nothing stored");
    assert_eq!(w.runs(id).await[0]["records_received"], 0);
    // The right token with a good body is stored, once.
    assert_eq!(post(url.clone(), Some(bearer), record.to_string().into_bytes()).await, 200);
    assert_eq!(post(url, Some(bearer), record.to_string().into_bytes()).await, 200);
    assert_eq!(deliveries(&w, json!([])).await.len(), 1, "the second call was a duplicate");
    let log = w.svc.log();
    assert!(!log.contains(&token), "the relay token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_callbacks_arrive_loses_nothing_and_delivers_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(relay_options().data_dir(&data)).await;
    // Slow forwarding, so records are held by the relay when it dies.
    w.odoo.set_delay(Duration::from_millis(30));
    let (ids, id) = import(&w, 150, json!({})).await;
    until(30, "some records received", || async {
        let runs = w.runs(id).await;
        (runs.first().and_then(|r| r["records_received"].as_i64()).unwrap_or(0) >= 40).then_some(())
    })
    .await;
    w.svc.kill9();
    w.odoo.set_delay(Duration::ZERO);
    let port_free_again = w.svc.url().to_string();
    w.svc = Service::start_with(relay_options().data_dir(&data)).await;
    assert_ne!(port_free_again, "", "restarted");
    until(60, "every record delivered", || async {
        (w.odoo.count_by_header(DELIVERY_HEADER).len() >= ids.len()).then_some(())
    })
    .await;
    // The window ends done, possibly after resubmissions (under load the fake MTS's
    // callbacks may come slower than the grace period).
    until(60, "a run of the window done", || async {
        w.runs(id).await.iter().any(|r| r["state"] == "done").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Every record arrived. A call in flight at the moment of the kill may have reached
    // the target without the service learning it: it is sent again with the same
    // idempotency key, so the target can tell. That is at most the calls in flight
    // (--relay-per-target, 4); no record stored and marked delivered goes out twice.
    let by_key: HashMap<String, usize> = w.odoo.count_by_header(DELIVERY_HEADER);
    assert_eq!(by_key.len(), 150);
    let repeated: Vec<_> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.len() <= 4 && repeated.iter().all(|(_, n)| **n == 2), "{repeated:?}");
    let delivered = w.delivered();
    assert!(ids.iter().all(|i| delivered.contains_key(i)), "a record was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_mts_deleted_after_every_record_was_relayed_is_done_not_resubmitted() {
    // Status polls every 2 s; MTS's cleanup (the helm chart's job) deletes requests
    // after 0.6 s: the request is gone at its second poll, its records already relayed.
    let slow_polls = Options::new()
        .arg("--poll-seconds")
        .arg("2")
        .arg("--minute-seconds")
        .arg("60")
        .arg("--relay-retry-base-seconds")
        .arg("0.2")
        .arg("--relay-grace-seconds")
        .arg("1");
    let w = World::start(slow_polls).await;
    w.mts.set_processing_time(Duration::from_millis(300));
    w.mts.set_cleanup_expiry(Duration::from_millis(600));
    let (ids, id) = import(&w, 6, json!({})).await;
    let runs = until(30, "the run ended", || async {
        let runs = w.runs(id).await;
        (!runs.is_empty() && runs.iter().all(terminal)).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "not resubmitted: {:?}", states(&runs));
    assert_eq!(runs[0]["state"], "done", "{}", runs[0]);
    assert_eq!(runs[0]["mts_status"], "deleted_by_mts");
    assert_eq!(w.mts.submissions().len(), 1);
    assert_exactly_once(&w, &ids).await;
}
