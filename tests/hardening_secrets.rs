//! Secrets against echoing upstreams: MTS, ODK Central and the callback target are told
//! to repeat every request they refuse (headers, bodies, passwords and all) in their
//! error answers. The service stores those errors on runs and deliveries and logs them
//! (here at `RUST_LOG=trace`); every secret it knows must be cut out first: the
//! connector's passwords and tokens, its extra header values (and the Basic credentials
//! inside them), the relay bearer tokens, the session cookie and `Authorization` values
//! of the target, the API key. Every answer of every model and every log line is
//! searched for every one of them.

mod common;

use base64::Engine as _;
use chrono::TimeDelta;
use common::world::*;
use common::{API_KEY, Options};
use serde_json::{Value, json};

const BASIC_PASSWORD: &str = "reg-basic-SECRET7";
const API_HEADER: &str = "xkey-SECRET8";
const BEARER: &str = "bearer-SECRET9";

fn basic() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("registry:{BASIC_PASSWORD}"))
}

fn extra_headers() -> String {
    json!({"Authorization": format!("Basic {}", basic()), "X-Api-Key": API_HEADER}).to_string()
}

fn options() -> Options {
    relay_fast().rust_log("trace")
}

/// Creates a connector with `patch` and imports `n` fresh submissions through it: the
/// window is the hour from `hours_ago` (imports two hours apart never overlap).
async fn import(w: &World, n: usize, hours_ago: i64, patch: Value) -> u64 {
    let t = now_s() - TimeDelta::hours(hours_ago);
    w.odk.add_generated_submissions(PROJECT, FORM, n, t, t + TimeDelta::minutes(30));
    let mut vals = json!({"callback_extra_headers": extra_headers()});
    for (k, v) in patch.as_object().expect("object") {
        vals[k] = v.clone();
    }
    let id = w.svc.create(&w.connector(vals)).await;
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + TimeDelta::hours(1))])).await;
    id
}

/// The first run of `connector` once `check` holds for it.
async fn run_when(w: &World, connector: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    until(60, what, || async { w.runs(connector).await.into_iter().find(|r| check(r)) }).await
}

async fn deliveries(w: &World, connector: u64) -> Vec<Value> {
    w.svc
        .ok("mts.connector.delivery", "search_read", json!([[["connector_id", "=", connector]]]), json!({}))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every value of a header the fakes received (`name` lower-case), from every fake.
fn received_header_values(w: &World, name: &str) -> Vec<String> {
    let mut all = w.odoo.requests();
    all.extend(w.mts.requests());
    all.extend(w.odk.requests());
    all.iter().flat_map(|r| r.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoing_upstreams_never_get_a_secret_stored_answered_or_logged() {
    let w = World::start(options()).await;

    // 1. MTS refuses (400) every request and repeats it: a direct-mode connector (ODK
    //    and callback passwords, extra headers in the request) and a relay-mode one (its
    //    bearer token in the request).
    w.mts.set_echo(Some(400));
    let direct = import(&w, 3, 2, json!({"name": "Direct"})).await;
    let relayed = import(&w, 3, 4, json!({"name": "Relayed", "callback_mode": "relay"})).await;
    for c in [direct, relayed] {
        let run = run_when(&w, c, "the run failed on the echo", |r| r["state"] == "failed").await;
        let message = run["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("cannot process") && message.contains("********"), "{run}");
        assert_eq!(run["error_code"], "ATS-REQ-ECHO");
    }
    // 2. MTS answers 500 with the echo: the run retries, its message holds the echo.
    w.mts.set_echo(Some(500));
    let retrying = import(&w, 2, 6, json!({"name": "Retrying"})).await;
    let run = run_when(&w, retrying, "the run retrying on the echo", |r| r["state"] == "retrying").await;
    assert!(run["error_message"].as_str().unwrap_or_default().contains("********"), "{run}");
    // Deleted: its retries would otherwise keep MTS busy with direct callbacks.
    w.svc.connector("unlink", json!([[retrying]])).await;
    w.mts.set_echo(None);

    // 3. The target refuses every callback repeating its headers (session cookie, extra
    //    headers, Authorization) and body: an Odoo-auth and a static-bearer connector.
    w.odoo.set_echo(true);
    let odoo_auth = import(&w, 3, 8, json!({"name": "Odoo auth", "callback_mode": "relay"})).await;
    let bearer = import(
        &w,
        3,
        10,
        json!({"name": "Bearer", "callback_mode": "relay", "callback_authtype": "staticBearer", "callback_auth_token": BEARER,
               "callback_extra_headers": json!({"X-Api-Key": API_HEADER}).to_string()}),
    )
    .await;
    for c in [odoo_auth, bearer] {
        let failed = until(90, "every delivery refused by the echo", || async {
            let d = deliveries(&w, c).await;
            (d.len() == 3 && d.iter().all(|d| d["state"] == "failed")).then_some(d)
        })
        .await;
        for d in &failed {
            let error = d["last_error"].as_str().unwrap_or_default();
            assert!(error.starts_with("HTTP 422: Unprocessable request"), "{d}");
            assert!(error.contains("********"), "the echo was masked: {d}");
        }
    }
    w.odoo.set_echo(false);

    // 4. ODK Central refuses the pre-count's login repeating the password.
    w.odk.set_echo(true);
    let odk = import(&w, 2, 12, json!({"name": "ODK echo"})).await;
    run_when(&w, odk, "the run retrying on ODK", |r| r["state"] == "retrying").await;
    w.svc.connector("unlink", json!([[odk]])).await;
    w.odk.set_echo(false);

    // Every secret the service knew, including those only the wire shows: the relay
    // tokens MTS was given, the session cookies and Authorization values sent.
    let mut secrets: Vec<String> = [API_KEY, ODK_PW, ODOO_PW, BASIC_PASSWORD, API_HEADER, BEARER, "SECRET"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    secrets.push(basic());
    for sub in w.mts.requests() {
        if let Some(token) =
            sub.body.as_ref().and_then(|b| b.pointer("/request/callbackProperties/authStaticBearer/token"))
        {
            secrets.push(token.as_str().unwrap_or_default().to_string());
        }
    }
    let relay_tokens = secrets.len();
    for cookie in received_header_values(&w, "cookie") {
        secrets.extend(cookie.split(';').filter_map(|c| c.split_once('=')).map(|(_, v)| v.trim().to_string()));
    }
    secrets.extend(received_header_values(&w, "authorization"));
    secrets.retain(|s| s.len() >= 6);
    assert!(relay_tokens > 7, "the relay connectors' tokens were seen on the wire");
    assert!(secrets.iter().any(|s| s.len() == 40), "a session cookie was sent: {secrets:?}");

    // Every answer: every record of every model, the previews, the connectors read whole.
    let mut answers = Vec::new();
    for model in ["mts.connector", "mts.connector.run", "mts.connector.delivery"] {
        answers.push(w.svc.ok(model, "search_read", json!([[]]), json!({})).await);
    }
    let ids: Vec<u64> = [direct, relayed, odoo_auth, bearer].into();
    answers.push(w.svc.connector("read", json!([ids])).await);
    answers.push(w.svc.connector("preview_mts_request", json!([ids])).await);
    answers.push(w.svc.connector("action_test_connection", json!([[direct]])).await);
    let answers = Value::Array(answers).to_string();
    let log = w.svc.log();
    assert!(log.lines().count() > 100, "a trace log was written");
    for secret in &secrets {
        assert!(!answers.contains(secret.as_str()), "an answer holds {secret:?}");
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret.as_str())).take(3).collect();
        assert!(leaks.is_empty(), "the log holds {secret:?}:\n{}", leaks.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_headers_are_write_only_and_still_sent() {
    let w = World::start(options()).await;
    let id = import(&w, 2, 2, json!({"callback_mode": "relay"})).await;
    // Read back masked; the mask written back keeps the stored value.
    let rec = w.svc.connector("read", json!([[id], ["callback_extra_headers"]])).await;
    assert_eq!(rec[0]["callback_extra_headers"], "********");
    w.svc.connector("write", json!([[id], {"callback_extra_headers": "********", "name": "Renamed"}])).await;
    let preview = w.svc.connector("preview_mts_request", json!([[id]])).await;
    assert!(!preview.to_string().contains(API_HEADER), "{preview}");
    // Not searchable, described as such.
    let err =
        w.svc.err("mts.connector", "search", json!([[["callback_extra_headers", "ilike", "Basic"]]]), json!({})).await;
    assert!(err.to_string().contains("write-only"), "{err}");
    let fields = w.svc.connector("fields_get", json!([["callback_extra_headers"]])).await;
    assert_eq!(fields["callback_extra_headers"]["searchable"], false);
    // The target gets the real values.
    until(60, "the records delivered", || async { (w.odoo.received().len() >= 2).then_some(()) }).await;
    for cb in w.odoo.received() {
        assert_eq!(cb.header("x-api-key"), Some(API_HEADER));
        assert_eq!(cb.header("authorization"), Some(format!("Basic {}", basic()).as_str()));
    }
    // Clearing them works (false), and the next records go without.
    w.svc.connector("write", json!([[id], {"callback_extra_headers": false}])).await;
    let rec = w.svc.connector("read", json!([[id], ["callback_extra_headers"]])).await;
    assert_eq!(rec[0]["callback_extra_headers"], false);
}
