//! The registry delivery target (`delivery_target = registry`): relayed tokens written
//! straight into the (fake) OpenG2P registry's `g2p.reg.id` over JSON-RPC, created or
//! updated, never two; retried while the registry is down, dead-lettered when it refuses,
//! replayed by `action_retry_failed`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::world::{terminal, until};
use common::{Options, Service};
use mts_connector::fakes::{FakeMts, FakeRegistry, TOKEN_TYPE};
use mts_connector::model::fields::Record;
use mts_connector::relay::registry_target::{TargetError, Written, deliver};
use mts_connector::secret::Secret;
use serde_json::{Value, json};

const DB: &str = "openg2p";
const LOGIN: &str = "mts-writer";
const PW: &str = "reg-pw-SECRET9";

fn options() -> Options {
    common::world::fast_with(60.0, 1000)
        .arg("--relay-retry-base-seconds")
        .arg("0.2")
        .arg("--relay-retry-cap-seconds")
        .arg("0.5")
        .arg("--relay-grace-seconds")
        .arg("20")
}

fn connector(reg: &FakeRegistry, mts: &FakeMts, patch: Value) -> Value {
    let mapping = json!({"vid": "vid", "name": ["given_name", "family_name"], "gender": "gender",
                         "dob": "birthdate", "fullAddress": ["address"]});
    let mut c = json!({
        "name": "Registry write-back",
        "mts_url": mts.url(),
        "input_type": "custom",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "settle_seconds": 0,
        "max_records_per_request": 100,
        "odoo_url": reg.url(),
        "odoo_database": DB,
        "odoo_username": LOGIN,
        "odoo_password": PW,
        "mapping": mapping.to_string(),
        "callback_mode": "relay",
        "delivery_target": "registry",
        "callback_in_bulk": true,
    });
    for (k, v) in patch.as_object().expect("patch") {
        c[k] = v.clone();
    }
    c
}

async fn first_walk(svc: &Service, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = svc.runs(id).await;
        if let Some(w) = runs.iter().find(|r| r["split_of_id"] == false && terminal(r)) {
            return w.clone();
        }
        assert!(Instant::now() < deadline, "the walk did not end: {runs:?}\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliveries(svc: &Service, id: u64) -> Vec<Value> {
    svc.ok(
        "mts.connector.delivery",
        "search_read",
        json!([[["connector_id", "=", id]]]),
        json!({"fields": ["state", "attempts", "last_error"]}),
    )
    .await
    .as_array()
    .cloned()
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_lands_once_as_the_registrants_uin_token_id_without_any_callback_url() {
    let reg = FakeRegistry::start(DB, LOGIN, PW, 1_000).await.expect("registry");
    let mts = FakeMts::start().await.expect("mts");
    // Registrant 2 holds a stale token already; a domain that does not exclude it.
    reg.add_reg_id(2, TOKEN_TYPE, "stale-token");
    let domain = json!([["is_registrant", "=", true], ["reg_ids.id_type", "=like", "MOSIP VID"]]);
    let svc = Service::start_with(options()).await;
    let id = svc.create(&connector(&reg, &mts, json!({"g2p_search_domain": domain.to_string()}))).await;
    assert_eq!(svc.read(id).await["delivery_target"], "registry");
    svc.connector("action_start", json!([[id]])).await;
    let walk = first_walk(&svc, id).await;
    assert_eq!(walk["state"], "done", "{walk}");
    let expected: BTreeSet<u64> = reg.matching(&domain).into_iter().collect();
    assert_eq!(expected.len(), 700);
    until(60, "700 tokens", || async { (reg.tokens().len() == 700).then_some(()) }).await;
    for pid in &expected {
        let vid = reg.vid_of(*pid).expect("vid");
        assert_eq!(reg.reg_ids_of(*pid, TOKEN_TYPE), vec![mts.token_for(&vid)], "registrant {pid}");
    }
    // 699 created, registrant 2's updated; no HTTP callback was made at all.
    assert_eq!(reg.reg_id_changes(), (699, 1));
    assert_eq!(reg.callbacks() + reg.refused_callbacks(), 0);
    let ds = deliveries(&svc, id).await;
    assert_eq!(ds.len(), 700);
    assert!(ds.iter().all(|d| d["state"] == "delivered"), "{ds:?}");
    // A second walk, with every token in place, writes nothing new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    svc.connector("action_run_now", json!([[id]])).await;
    until(60, "the second walk", || async {
        let runs = svc.runs(id).await;
        let walks: Vec<&Value> = runs.iter().filter(|r| r["split_of_id"] == false).collect();
        (walks.len() == 2 && walks.iter().all(|w| terminal(w))).then_some(())
    })
    .await;
    until(30, "deliveries settled", || async {
        deliveries(&svc, id).await.iter().all(|d| d["state"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(reg.reg_id_changes().0, 699, "never a second token id");
    assert!(expected.iter().all(|p| reg.reg_ids_of(*p, TOKEN_TYPE).len() == 1));
    assert!(!svc.log().contains(PW));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_dead_lettered_and_replayed_after_the_fix() {
    let reg = FakeRegistry::start(DB, LOGIN, PW, 100).await.expect("registry");
    let mts = FakeMts::start().await.expect("mts");
    let svc = Service::start_with(options()).await;
    // No such ID type in the registry: every write is refused at once.
    let id = svc.create(&connector(&reg, &mts, json!({"uin_token_id_type": "NO SUCH TYPE"}))).await;
    svc.connector("action_start", json!([[id]])).await;
    first_walk(&svc, id).await;
    let failed = until(30, "70 failed deliveries", || async {
        let ds = deliveries(&svc, id).await;
        (ds.len() == 70 && ds.iter().all(|d| d["state"] == "failed")).then_some(ds)
    })
    .await;
    let error = failed[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("no ID type named \"NO SUCH TYPE\""), "{error}");
    assert_eq!(failed[0]["attempts"], 1, "a refusal is not retried");
    assert!(reg.tokens().is_empty());
    // The operator fixes the type and replays the failed deliveries.
    svc.connector("action_stop", json!([[id]])).await;
    svc.connector("write", json!([[id], {"uin_token_id_type": TOKEN_TYPE}])).await;
    assert_eq!(svc.connector("action_retry_failed", json!([[id]])).await, json!(70));
    until(30, "70 tokens", || async { (reg.tokens().len() == 70).then_some(()) }).await;
    assert_eq!(reg.reg_id_changes(), (70, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_cannot_write_to_the_registry_is_refused() {
    let reg = FakeRegistry::start(DB, LOGIN, PW, 10).await.expect("registry");
    let mts = FakeMts::start().await.expect("mts");
    let svc = Service::start().await;
    let direct = connector(&reg, &mts, json!({"callback_mode": "direct"}));
    let e = svc.err("mts.connector", "create", json!([direct]), json!({})).await;
    assert!(e["data"]["message"].as_str().unwrap_or_default().contains("registry needs callback_mode = relay"), "{e}");
    let odk = connector(
        &reg,
        &mts,
        json!({"input_type": "odk", "odk_base_url": "http://127.0.0.1:9", "odk_odata_url": "http://127.0.0.1:9/x.svc",
               "odk_email": "a@b.c", "odk_password": "pw"}),
    );
    let e = svc.err("mts.connector", "create", json!([odk]), json!({})).await;
    assert!(e["data"]["message"].as_str().unwrap_or_default().contains("naming the registrant"), "{e}");
    assert_eq!(svc.count().await, 0, "nothing was stored");
}

fn record(reg: &FakeRegistry) -> Record {
    let mut c = Record::default();
    for (k, v) in [("odoo_url", reg.url()), ("odoo_database", DB.into()), ("odoo_username", LOGIN.into())] {
        c.set(k, v);
    }
    c.set("uin_token_id_type", TOKEN_TYPE);
    c.secrets.insert("odoo_password".into(), Secret::new(PW));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_creates_then_updates_and_a_registry_down_is_worth_a_retry() {
    let reg = FakeRegistry::start(DB, LOGIN, PW, 10).await.expect("registry");
    let c = record(&reg);
    let payload =
        |token: &str| json!({"input": {"id": 3, "vid": "v"}, "output": {"status": "processed", "token": token}});
    let rendered = json!({"vid": "v"});
    reg.set_down(true);
    let e = deliver(&c, &payload("t1"), &rendered).await.unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    reg.set_down(false);
    assert_eq!(deliver(&c, &payload("t1"), &rendered).await.unwrap(), Written::Created);
    assert_eq!(deliver(&c, &payload("t1"), &rendered).await.unwrap(), Written::Unchanged);
    assert_eq!(deliver(&c, &payload("t2"), &rendered).await.unwrap(), Written::Updated);
    assert_eq!(reg.reg_ids_of(3, TOKEN_TYPE), vec!["t2".to_string()]);
    // The output format names the registrant when it has a partner_id.
    assert_eq!(deliver(&c, &payload("t5"), &json!({"partner_id": 5})).await.unwrap(), Written::Created);
    assert_eq!(reg.reg_ids_of(5, TOKEN_TYPE), vec!["t5".to_string()]);
    // An unknown registrant, or a record MTS made no token for, is refused for good.
    let unknown = json!({"input": {"id": 99}, "output": {"status": "processed", "token": "t"}});
    assert!(matches!(deliver(&c, &unknown, &json!({})).await, Err(TargetError::Refused(_))));
    let invalid =
        json!({"input": {"id": 4}, "output": {"status": "invalid", "token": null, "errorCode": "ATS-REQ-009"}});
    let e = deliver(&c, &invalid, &json!({})).await.unwrap_err().to_string();
    assert!(e.contains("ATS-REQ-009"), "{e}");
    // A wrong password is refused (configuration), and never named.
    let mut wrong = c.clone();
    wrong.secrets.insert("odoo_password".into(), Secret::new("wrong-SECRET"));
    let e = deliver(&wrong, &payload("t"), &rendered).await.unwrap_err();
    assert!(matches!(e, TargetError::Refused(_)) && !e.to_string().contains("SECRET"), "{e:?}");
    assert_eq!(reg.reg_id_changes(), (2, 1));
}
