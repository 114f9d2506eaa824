//! End-to-end tests of the OpenG2P Registry input: the real binary walks the fake
//! registry (Odoo JSON-RPC) and sends its registrants to the fake MTS, whose callbacks
//! write the tokens back into the fake registry.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::world::{terminal, until};
use common::{Options, Service};
use mts_connector::fakes::{FakeMts, FakeRegistry, TOKEN_TYPE};
use serde_json::{Value, json};

const DB: &str = "openg2p";
const LOGIN: &str = "mts-reader";
const PW: &str = "reg-pw-SECRET8";
const DEFAULT_DOMAIN: &str = mts_connector::model::connector::DEFAULT_G2P_DOMAIN;

/// Fast engine settings (see tests/engine.rs): retries and polls in fractions of a
/// second, one "minute" of interval lasting `minute` seconds.
fn fast(minute: f64) -> Options {
    common::world::fast_with(minute, 1000)
}

struct World {
    reg: FakeRegistry,
    mts: FakeMts,
    svc: Service,
}

impl World {
    async fn start(size: u64, options: Options) -> World {
        let reg = FakeRegistry::start(DB, LOGIN, PW, size).await.expect("fake registry");
        let mts = FakeMts::start().await.expect("fake mts");
        let svc = Service::start_with(options).await;
        World { reg, mts, svc }
    }

    /// A registry connector wired to the fakes (recurring every 60 "minutes": it walks
    /// once when started), with `patch` applied.
    fn connector(&self, patch: Value) -> Value {
        let mapping = json!({"vid": "vid", "name": ["given_name", "family_name"], "gender": "gender",
                             "dob": "birthdate", "phoneNumber": "phone", "emailId": "email",
                             "fullAddress": ["address"]});
        let mut c = json!({
            "name": "Registry",
            "mts_url": self.mts.url(),
            "input_type": "custom",
            "is_recurring": "recurring",
            "interval_minutes": 60,
            "settle_seconds": 0,
            "max_records_per_request": 500,
            "odoo_url": self.reg.url(),
            "odoo_database": DB,
            "odoo_username": LOGIN,
            "odoo_password": PW,
            "mapping": mapping.to_string(),
            "callback_url": self.reg.callback_url(),
            "callback_httpmethod": "PATCH",
            "callback_authtype": "odoo",
            "callback_auth_url": self.reg.auth_url(),
            "callback_auth_database": DB,
            "callback_auth_username": LOGIN,
            "callback_auth_password": PW,
            "output_format": format!("{{partner_id: .input.id, id_type: \"{TOKEN_TYPE}\", value: .output.token}}"),
        });
        for (k, v) in patch.as_object().expect("patch is an object") {
            c[k] = v.clone();
        }
        c
    }

    async fn runs(&self, connector: u64) -> Vec<Value> {
        self.svc.runs(connector).await
    }

    /// The walks (runs that are not pages) of a connector, oldest first.
    async fn walks(&self, connector: u64) -> Vec<Value> {
        self.runs(connector)
            .await
            .into_iter()
            .filter(|r| r["split_of_id"] == false && r["trigger"] != "vid_cleanup")
            .collect()
    }

    async fn pages_of(&self, connector: u64, walk: &Value) -> Vec<Value> {
        self.runs(connector).await.into_iter().filter(|r| r["split_of_id"][0] == walk["id"]).collect()
    }

    /// Registrant id -> how many times MTS received it.
    fn sent_to_mts(&self) -> HashMap<u64, usize> {
        let mut out = HashMap::new();
        for s in self.mts.submissions() {
            for rec in s.body["request"]["authdata"].as_array().cloned().unwrap_or_default() {
                *out.entry(rec["id"].as_u64().expect("authdata id")).or_default() += 1;
            }
        }
        out
    }

    fn matching(&self) -> BTreeSet<u64> {
        self.reg.matching(&serde_json::from_str(DEFAULT_DOMAIN).expect("domain")).into_iter().collect()
    }
}

/// Waits for the `n`-th walk of `connector` to end and answers it.
async fn walk_ended(w: &World, connector: u64, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let walks = w.walks(connector).await;
        if let Some(walk) = walks.get(n - 1).filter(|r| terminal(r)) {
            return walk.clone();
        }
        if Instant::now() > deadline {
            let runs: Vec<String> = w.runs(connector).await.iter().map(Value::to_string).collect();
            panic!("walk {n} did not end; the runs:\n{}\nthe log:\n{}", runs.join("\n"), w.svc.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_registrant_reaches_mts_once_and_a_second_walk_finds_nothing() {
    let w = World::start(10_000, fast(60.0)).await;
    let expected = w.matching();
    assert_eq!(expected.len(), 7_000);
    let id = w.svc.create(&w.connector(json!({}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let walk = walk_ended(&w, id, 1).await;
    // The registry calls are counted by the metrics, by call and outcome.
    let metrics = w.svc.get("/metrics").await.body;
    for needle in
        [r#"upstream="odoo",call="authenticate",outcome="ok""#, r#"upstream="odoo",call="execute_kw",outcome="ok""#]
    {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    assert_eq!(walk["state"], "done", "{walk}");
    assert_eq!(int(&walk["records_expected"]), 7_000);
    assert_eq!(int(&walk["records_sent"]), 7_000);
    assert_eq!(int(&walk["pages_done"]), 14);
    assert_eq!(int(&walk["records_skipped"]), 0);
    assert_eq!(walk["trigger"], "schedule");

    // Every matching registrant reached MTS exactly once, in requests of at most 500.
    let sent = w.sent_to_mts();
    assert_eq!(sent.keys().copied().collect::<BTreeSet<_>>(), expected);
    assert!(sent.values().all(|n| *n == 1), "a registrant was sent twice");
    let subs = w.mts.submissions();
    assert_eq!(subs.len(), 14);
    assert!(subs.iter().all(|s| s.kind == "json" && s.records <= 500 && s.invalid == 0));

    // Each page is its own tracked run holding ids only.
    let pages = w.pages_of(id, &walk).await;
    assert_eq!(pages.len(), 14);
    let mut paged = BTreeSet::new();
    for p in &pages {
        assert_eq!(p["state"], "done", "{p}");
        assert!(p["mts_request_id"].is_string());
        let ids = mts_connector::engine::registry::decode_ids(p["registrant_ids"].as_str().expect("ids"));
        assert_eq!(int(&p["records_expected"]), ids.len() as i64);
        paged.extend(ids);
        let text = p.to_string();
        assert!(!text.contains("Uhuru Road") && !text.contains("@example.org"), "personal data on a run: {p}");
    }
    assert_eq!(paged, expected);

    // authdata as the g2p_mts addon builds it.
    let first = &subs[0].body["request"]["authdata"][0];
    let pid = first["id"].as_u64().expect("id");
    assert_eq!(first["vid"], json!(w.reg.vid_of(pid).expect("vid")));
    assert!(first["birthdate"].as_str().is_some_and(|d| d.len() == 10 && &d[4..5] == "/"), "{first}");
    assert!(matches!(first["gender"].as_str(), Some("Female" | "Male")), "{first}");
    for s in &subs {
        for rec in s.body["request"]["authdata"].as_array().expect("authdata") {
            assert!(rec.as_object().expect("object").values().all(|v| v != &json!(false) && v != &json!("")));
            let pid = rec["id"].as_u64().unwrap_or(0);
            assert_eq!(rec.get("email").is_none(), pid.is_multiple_of(3), "empty emails are dropped: {rec}");
        }
    }

    // The tokens come back into the registry...
    until(60, "7000 tokens", || async { (w.reg.tokens().len() == 7_000).then_some(()) }).await;
    for (pid, token) in w.reg.tokens() {
        let vid = w.reg.vid_of(pid).expect("vid");
        assert_eq!(token, w.mts.token_for(&vid), "token of {pid}");
    }
    // ...so a second walk finds nothing to send.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.svc.connector("action_run_now", json!([[id]])).await;
    let second = walk_ended(&w, id, 2).await;
    assert_eq!(second["state"], "empty", "{second}");
    assert_eq!(int(&second["records_expected"]), 0);
    assert_eq!(w.mts.submissions().len(), 14, "nothing more reached MTS");

    // The registry got the password; no run and no log line shows it.
    assert!(w.reg.calls().iter().any(|c| c.args.to_string().contains(PW)));
    assert!(!w.runs(id).await.iter().any(|r| r.to_string().contains("SECRET")));
    assert!(!w.svc.log().contains(PW));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrants_in_flight_are_not_sent_again_and_those_without_a_token_come_back() {
    let w = World::start(2_000, fast(60.0)).await;
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 200}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    // MTS holds the requests: the walk keeps four pages in flight and waits.
    until(20, "four pages submitted", || async { (w.mts.submissions().len() == 4).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.mts.submissions().len(), 4, "no more than four pages wait in MTS");
    let err = w.svc.err("mts.connector", "action_run_now", json!([[id]]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("in progress"), "{err}");
    let walk = &w.walks(id).await[0];
    assert_eq!(int(&walk["records_sent"]), 800);
    assert_eq!(int(&walk["pages_done"]), 4);

    // 30 tokens never land (the registry refuses their callbacks).
    w.reg.fail_callbacks(30);
    w.mts.hold_processing(false);
    let walk = walk_ended(&w, id, 1).await;
    assert_eq!(walk["state"], "done", "{walk}");
    assert_eq!(int(&walk["records_sent"]), 1_400);
    assert!(w.sent_to_mts().values().all(|n| *n == 1));
    until(30, "1370 tokens", || async { (w.reg.tokens().len() == 1_370).then_some(()) }).await;

    // Once their requests ended, exactly the registrants still without a token are
    // eligible again.
    let untokenised: BTreeSet<u64> = w.matching();
    assert_eq!(untokenised.len(), 30);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.svc.connector("action_run_now", json!([[id]])).await;
    let second = walk_ended(&w, id, 2).await;
    assert_eq!(second["state"], "done", "{second}");
    assert_eq!(int(&second["records_expected"]), 30);
    let last = w.mts.submissions().last().cloned().expect("a submission");
    let resent: BTreeSet<u64> = last.body["request"]["authdata"]
        .as_array()
        .expect("authdata")
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(resent, untokenised);
    until(30, "1400 tokens", || async { (w.reg.tokens().len() == 1_400).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_walk_resumes_from_the_last_page_without_sending_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut w = World::start(2_000, fast(60.0).data_dir(&data)).await;
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 200}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(20, "four pages submitted", || async { (w.mts.submissions().len() == 4).then_some(()) }).await;
    until(20, "the walk saved its progress", || async {
        let walks = w.walks(id).await;
        (walks.first().is_some_and(|r| int(&r["pages_done"]) == 4)).then_some(())
    })
    .await;
    w.svc.kill9();
    w.svc = Service::start_with(fast(60.0).data_dir(&data)).await;
    w.mts.hold_processing(false);
    let walk = walk_ended(&w, id, 1).await;
    assert_eq!(walk["state"], "done", "{walk}");
    assert_eq!(int(&walk["records_sent"]), 1_400);
    assert_eq!(int(&walk["pages_done"]), 7);
    let sent = w.sent_to_mts();
    assert_eq!(sent.len(), 1_400);
    assert!(sent.values().all(|n| *n == 1), "a registrant was sent twice after the restart");
    assert_eq!(w.mts.submissions().len(), 7);
}

/// Starts a connector with `patch` and answers its first walk once it ended.
async fn first_walk(w: &World, patch: Value) -> (u64, Value) {
    let id = w.svc.create(&w.connector(patch)).await;
    w.svc.connector("action_start", json!([[id]])).await;
    (id, walk_ended(w, id, 1).await)
}

/// A configuration error: the walk failed at once, with `needle` in its message, no
/// page run, nothing sent, no retry and no secret anywhere.
async fn assert_config_failure(w: &World, patch: Value, needle: &str) {
    let (id, walk) = first_walk(w, patch).await;
    assert_eq!(walk["state"], "failed", "{walk}");
    let message = walk["error_message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
    assert!(!message.contains("SECRET"), "{message}");
    assert_eq!(int(&walk["attempts"]), 0, "a configuration error is not retried: {walk}");
    assert_eq!(w.runs(id).await.len(), 1, "no page run was left behind");
    assert!(w.mts.submissions().is_empty());
    assert!(!w.svc.log().contains(PW));
    w.svc.connector("action_stop", json!([[id]])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_walk_clearly_and_never_shows_the_password() {
    let w = World::start(100, fast(60.0)).await;
    w.reg.set_password("another-SECRET");
    assert_config_failure(&w, json!({}), &format!("refused the credentials of \"{LOGIN}\" on database \"{DB}\"")).await;
    // The fake received the password the connector holds.
    assert!(w.reg.calls().iter().any(|c| c.method == "authenticate" && c.args[2] == PW));
    // An API key works as the password.
    w.reg.add_api_key("api-key-SECRET9");
    let (_, walk) = first_walk(&w, json!({"odoo_password": "api-key-SECRET9", "name": "with key"})).await;
    assert_eq!(walk["state"], "done", "{walk}");
    assert!(!w.svc.log().contains("api-key-SECRET9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_a_missing_field_or_missing_rights_fail_the_walk_at_once() {
    let w = World::start(100, fast(60.0)).await;
    assert_config_failure(&w, json!({"odoo_database": "nodb"}), "has no database \"nodb\"").await;
    assert_config_failure(
        &w,
        json!({"g2p_selected_fields": "[\"id\", \"given_name\", \"nickname\"]"}),
        "has no field \"nickname\"",
    )
    .await;
    assert_config_failure(
        &w,
        json!({"g2p_search_domain": "[[\"is_registrant\", \"=\", true], [\"reg_ids.colour\", \"=\", \"red\"]]"}),
        "no such field",
    )
    .await;
    w.reg.deny("g2p.reg.id", true);
    assert_config_failure(&w, json!({}), "may not search_read g2p.reg.id records (AccessError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_down_mid_walk_retries_and_resumes_from_the_last_page() {
    let w = World::start(2_000, fast(60.0)).await;
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 200}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(20, "four pages submitted", || async { (w.mts.submissions().len() == 4).then_some(()) }).await;
    // The registry goes down while the walk waits for MTS.
    w.reg.set_down(true);
    w.mts.hold_processing(false);
    // The pages read ahead retry (they read their registrants when they go to MTS).
    let retrying = until(30, "a page retrying", || async {
        w.runs(id).await.into_iter().find(|r| r["state"] == "retrying" && int(&r["attempts"]) >= 2)
    })
    .await;
    let message = retrying["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("answered HTTP 503"), "{message}");
    let walk = w.walks(id).await.remove(0);
    assert_eq!(int(&walk["records_sent"]), 800, "progress is kept: {walk}");
    // The connector's last run is the walk, still at work, not a cancelled page.
    let c = &w.svc.connector("read", json!([[id], ["last_run_id"]])).await[0];
    assert_eq!(c["last_run_id"][0], walk["id"], "{c}");
    assert!(!terminal(&walk), "{walk}");
    assert!(w.runs(id).await.iter().all(|r| r["state"] != "cancelled"), "no page was cancelled by the outage");
    w.reg.set_down(false);
    let walk = walk_ended(&w, id, 1).await;
    assert_eq!(walk["state"], "done", "{walk}");
    assert_eq!(int(&walk["records_sent"]), 1_400);
    let sent = w.sent_to_mts();
    assert_eq!(sent.len(), 1_400);
    assert!(sent.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vid_cleanup_deletes_exactly_the_vids_of_tokenised_registrants() {
    let w = World::start(1_000, fast(1.0)).await;
    // Registrants 1..=200 with a VID get a token; 208 and 218 hold a token but no VID;
    // 21 holds an empty token, which does not count.
    let mut tokenised = BTreeSet::new();
    for p in 1..=200u64 {
        if w.reg.vid_of(p).is_some() {
            w.reg.add_reg_id(p, TOKEN_TYPE, &format!("tok-{p}"));
            tokenised.insert(p);
        }
    }
    for p in [208, 218] {
        w.reg.add_reg_id(p, TOKEN_TYPE, "tok-no-vid");
    }
    tokenised.remove(&21);
    w.reg.add_reg_id(21, TOKEN_TYPE, "");
    let tokens_before = w.reg.tokens();
    // Nothing to walk: only the clean-up works.
    let id = w
        .svc
        .create(&w.connector(json!({
            "g2p_search_domain": "[[\"is_registrant\", \"=\", false]]",
            "delete_vid_after_token": true,
            "vid_delete_interval_minutes": 1,
            "max_records_per_request": 50,
        })))
        .await;
    w.svc.connector("action_start", json!([[id]])).await;
    let cleanups = until(30, "two clean-up runs ended", || async {
        let runs: Vec<Value> = w.runs(id).await.into_iter().filter(|r| r["trigger"] == "vid_cleanup").collect();
        (runs.len() >= 2 && runs[..2].iter().all(terminal)).then_some(runs)
    })
    .await;
    assert_eq!(cleanups[0]["state"], "done", "{}", cleanups[0]);
    assert_eq!(int(&cleanups[0]["vids_deleted"]), tokenised.len() as i64);
    assert_eq!(cleanups[1]["state"], "empty", "the second pass finds nothing: {}", cleanups[1]);
    assert_eq!(int(&cleanups[1]["vids_deleted"]), 0);
    // Exactly the VIDs of registrants holding a non-empty token; every token stays.
    let unlinked: BTreeSet<u64> = w.reg.unlinked().into_iter().collect();
    assert_eq!(unlinked, tokenised, "the VID reg id of registrant n has id n");
    assert_eq!(w.reg.tokens(), tokens_before);
    assert!(w.reg.vid_of(21).is_some());
    assert!(w.reg.vid_of(201).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_relay_mode_registrants_whose_tokens_are_not_delivered_yet_are_not_sent_again() {
    let options = fast(60.0)
        .arg("--relay-retry-base-seconds")
        .arg("0.2")
        .arg("--relay-retry-cap-seconds")
        .arg("0.5")
        .arg("--relay-grace-seconds")
        .arg("20");
    let w = World::start(1_000, options).await;
    // The registry refuses every token for now: the relay keeps them pending.
    w.reg.fail_callbacks(usize::MAX);
    let id = w.svc.create(&w.connector(json!({"callback_mode": "relay", "max_records_per_request": 100}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    let first = walk_ended(&w, id, 1).await;
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(int(&first["records_sent"]), 700);
    // Their requests ended, but no token was delivered: a second walk skips them all.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.svc.connector("action_run_now", json!([[id]])).await;
    let second = walk_ended(&w, id, 2).await;
    assert_eq!(second["state"], "empty", "{second}");
    assert_eq!(int(&second["records_expected"]), 700);
    assert_eq!(int(&second["records_skipped"]), 700);
    assert!(second["error_message"].as_str().unwrap_or_default().contains("already in an open request"), "{second}");
    assert_eq!(w.mts.submissions().len(), 7, "nothing was sent again");
    // The registry takes tokens again: the relay delivers them, and a third walk finds
    // nothing left to send.
    w.reg.fail_callbacks(0);
    until(60, "700 tokens", || async { (w.reg.tokens().len() == 700).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.svc.connector("action_run_now", json!([[id]])).await;
    let third = walk_ended(&w, id, 3).await;
    assert_eq!(third["state"], "empty", "{third}");
    assert_eq!(int(&third["records_expected"]), 0);
    assert!(w.sent_to_mts().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_connector_ends_its_walk_after_the_pages_in_flight() {
    let w = World::start(2_000, fast(60.0)).await;
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 200}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(20, "four pages submitted", || async { (w.mts.submissions().len() == 4).then_some(()) }).await;
    w.svc.connector("action_stop", json!([[id]])).await;
    w.mts.hold_processing(false);
    let walk = walk_ended(&w, id, 1).await;
    assert_eq!(walk["state"], "cancelled", "{walk}");
    assert!(walk["error_message"].as_str().unwrap_or_default().contains("the connector was stopped"), "{walk}");
    assert_eq!(int(&walk["records_sent"]), 800);
    // The pages MTS had taken are still tracked to their end; those read ahead but not
    // sent yet are cancelled.
    let pages = w.pages_of(id, &walk).await;
    let done: Vec<&Value> = pages.iter().filter(|p| p["state"] == "done").collect();
    assert_eq!(done.len(), 4, "{pages:?}");
    assert!(pages.iter().all(|p| matches!(p["state"].as_str(), Some("done" | "cancelled"))), "{pages:?}");
    assert_eq!(w.mts.submissions().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_keeps_mts_max_parallel_pages_in_mts_at_once_and_sends_each_registrant_once() {
    let w = World::start(2_000, fast(60.0)).await;
    let matching = w.matching();
    w.mts.hold_processing(true);
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 100, "mts_max_parallel": 3}))).await;
    w.svc.connector("action_start", json!([[id]])).await;
    until(20, "three pages in MTS", || async { (w.mts.submissions().len() >= 3).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.mts.submissions().len(), 3, "at most mts_max_parallel pages in MTS");
    w.mts.hold_processing(false);
    let walk = walk_ended(&w, id, 1).await;
    assert_eq!(walk["state"], "done", "{walk}");
    assert_eq!(int(&walk["records_sent"]), matching.len() as i64, "{walk}");
    assert_eq!(int(&walk["pages_done"]), matching.len().div_ceil(100) as i64, "{walk}");
    let sent = w.sent_to_mts();
    assert_eq!(sent.keys().copied().collect::<BTreeSet<u64>>(), matching);
    assert!(sent.values().all(|n| *n == 1), "each registrant once");
    // The connector's last run is the walk, not one of its pages.
    let c = &w.svc.connector("read", json!([[id], ["last_run_id"]])).await[0];
    assert_eq!(c["last_run_id"][0], walk["id"]);
}
