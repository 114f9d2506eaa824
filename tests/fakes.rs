//! The fake ODK, MTS and Odoo servers, driven over real HTTP the way the connector and MTS use them.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo, mock_token};
use serde_json::{Value, json};

const PROJECT: &str = "7";
const FORM: &str = "registration";

thread_local! {
    // Each #[tokio::test] runs on its own thread with its own runtime, so this is one client
    // per test: its pooled connections never outlive the runtime they belong to.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client");
}

fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Polls `cond` every 20 ms until it holds or 5 s have passed.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The MTS envelope as the Odoo module sends it.
fn envelope(request: Value) -> Value {
    json!({
        "id": "string",
        "version": "string",
        "metadata": "string",
        "requesttime": iso(Utc::now()),
        "request": request,
    })
}

fn odoo_callback(odoo: &FakeOdoo) -> Value {
    json!({
        "url": odoo.callback_url(),
        "httpMethod": "POST",
        "timeoutSeconds": 5,
        "callInBulk": false,
        "extraHeaders": {"X-MTS-Connector-Delivery": "run-1"},
        "authType": "odoo",
        "authOdoo": {
            "authUrl": odoo.auth_url(),
            "database": "registry",
            "username": "admin",
            "password": "admin-pw",
        },
    })
}

fn odk_request(odk: &FakeOdk, odoo: &FakeOdoo, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    envelope(json!({
        "output": "json",
        "deliverytype": "callback",
        "mapping": {"vid": "vid", "name": ["name"], "gender": "gender", "dob": "dob",
                    "phoneNumber": "phoneNumber", "emailId": "emailId", "fullAddress": ["fullAddress"]},
        "lang": "eng",
        "outputFormat": "{vid: .output.vid, token: .output.token, status: .output.status, odk_id: .input.__id}",
        "callbackProperties": odoo_callback(odoo),
        "odkconfig": {
            "baseurl": odk.url(),
            "version": "v1",
            "odataurl": "",
            "projectid": PROJECT,
            "formid": FORM,
            "email": "collector@example.org",
            "password": "odk-pw",
            "startdate": iso(start),
            "enddate": iso(end),
        },
    }))
}

fn json_request(authdata: Value) -> Value {
    envelope(json!({
        "output": "json",
        "deliverytype": "download",
        "authdata": authdata,
    }))
}

struct Fakes {
    odk: FakeOdk,
    mts: FakeMts,
    odoo: FakeOdoo,
}

async fn start_fakes() -> Fakes {
    Fakes {
        odk: FakeOdk::start("collector@example.org", "odk-pw").await.expect("odk"),
        mts: FakeMts::start().await.expect("mts"),
        odoo: FakeOdoo::start("registry", "admin", "admin-pw").await.expect("odoo"),
    }
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(url).json(body).send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn submit(mts: &FakeMts, kind: &str, body: &Value) -> (u16, Value) {
    post(&format!("{}/authtoken/{kind}", mts.url()), body).await
}

async fn status(mts: &FakeMts, id: &str) -> (u16, Value) {
    let resp = client().get(format!("{}/authtoken/status/{id}", mts.url())).send().await.expect("status");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_status(mts: &FakeMts, id: &str, want: &str) {
    eventually(&format!("status {want}"), || async { status(mts, id).await.1["response"]["status"] == want }).await;
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["errorCode"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn odk_sessions_and_filtered_counted_odata() {
    let odk = FakeOdk::start("collector@example.org", "odk-pw").await.unwrap();
    // One submission per hour, 00:00 .. 09:00.
    odk.add_generated_submissions(PROJECT, FORM, 10, t0(), t0() + chrono::Duration::hours(10));
    let http = client();

    let (code, body) =
        post(&format!("{}/v1/sessions", odk.url()), &json!({"email": "collector@example.org", "password": "nope"}))
            .await;
    assert_eq!((code, body["code"].clone()), (401, json!(401.2)));

    let (code, body) =
        post(&format!("{}/v1/sessions", odk.url()), &json!({"email": "collector@example.org", "password": "odk-pw"}))
            .await;
    assert_eq!(code, 200);
    assert!(body["expiresAt"].is_string());
    let token = body["token"].as_str().unwrap().to_string();

    let feed = odk.odata_url(PROJECT, FORM);
    let anonymous = http.get(&feed).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let get = |query: String| {
        let http = http.clone();
        let url = format!("{feed}?{query}");
        let token = token.clone();
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let hours = |h: i64| iso(t0() + chrono::Duration::hours(h));

    // MTS's exact shape: %20 for spaces, half-open window [02:00, 05:00).
    let body = get(format!(
        "$filter=__system/submissionDate%20ge%20{}%20and%20__system/submissionDate%20lt%20{}",
        hours(2),
        hours(5)
    ))
    .await;
    let dates: Vec<&str> =
        body["value"].as_array().unwrap().iter().map(|s| s["__system"]["submissionDate"].as_str().unwrap()).collect();
    assert_eq!(dates.len(), 3, "{dates:?}");
    assert!(dates.contains(&"2026-01-01T02:00:00.000Z") && !dates.contains(&"2026-01-01T05:00:00.000Z"));
    assert!(body["@odata.context"].is_string());
    assert!(body.get("@odata.count").is_none());
    let first = &body["value"][0];
    assert!(first["__id"].as_str().unwrap().starts_with("uuid:"));
    for field in ["vid", "name", "gender", "dob", "fullAddress", "phoneNumber", "emailId"] {
        assert!(first[field].is_string(), "{field}");
    }

    // `+` for spaces, gt/le, without millis.
    let body = get(format!(
        "$filter=__system/submissionDate+gt+{}+and+__system/submissionDate+le+{}",
        "2026-01-01T02:00:00Z", "2026-01-01T05:00:00Z"
    ))
    .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 3);

    // A single bound, with paging and a count of the whole filtered set.
    let body = get(format!("$filter=__system/submissionDate%20ge%20{}&$top=2&$skip=1&$count=true", hours(6))).await;
    assert_eq!(body["@odata.count"], json!(4));
    assert_eq!(body["value"].as_array().unwrap().len(), 2);

    // The fake recorded what was sent.
    let reqs = odk.requests();
    let last = reqs.last().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.header("authorization"), Some(format!("Bearer {token}").as_str()));
    assert_eq!(last.query_param("$top").as_deref(), Some("2"));
}

#[tokio::test]
async fn mts_odk_request_end_to_end_through_odoo() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    let (start, end) = (t0(), t0() + chrono::Duration::days(1));
    odk.add_generated_submissions(PROJECT, FORM, 5, start, end);
    // Outside the window on both sides: the end is exclusive.
    odk.add_generated_submissions(PROJECT, FORM, 1, start - chrono::Duration::hours(1), start);
    odk.add_generated_submissions(PROJECT, FORM, 1, end, end + chrono::Duration::hours(1));

    let (code, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, start, end)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["errors"], Value::Null);
    assert_eq!(body["id"], "mosip.token.seeder");
    assert!(body["responsetime"].as_str().unwrap().ends_with('Z'));
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);

    wait_status(&mts, &id, "processed").await;
    eventually("logout", || async { odoo.logouts() == 1 }).await;

    // MTS pulled ODK itself: a session, then the feed with the half-open window filter.
    let odk_reqs = odk.requests();
    assert_eq!((odk_reqs[0].method.as_str(), odk_reqs[0].path.as_str()), ("POST", "/v1/sessions"));
    let expected_query = format!(
        "$filter=__system/submissionDate%20ge%20{}%20and%20__system/submissionDate%20lt%20{}",
        iso(start),
        iso(end)
    );
    assert_eq!(odk_reqs[1].query.as_deref(), Some(expected_query.as_str()));

    let subs = mts.submissions();
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].kind.as_str(), subs[0].records, subs[0].invalid), ("odk", 5, 0));
    assert_eq!(subs[0].request_identifier, id);

    // One callback per submission, rendered with outputFormat, carrying the right token.
    let received = odoo.received();
    assert_eq!(received.len(), 5);
    let in_window: Vec<Value> = odk
        .submissions(PROJECT, FORM)
        .into_iter()
        .filter(|s| s["__system"]["submissionDate"].as_str().unwrap() >= iso(start).as_str())
        .filter(|s| s["__system"]["submissionDate"].as_str().unwrap() < iso(end).as_str())
        .collect();
    for cb in &received {
        let body = cb.body.as_ref().expect("json body");
        let vid = body["vid"].as_str().unwrap();
        assert_eq!(body["token"].as_str(), Some(mts.token_for(vid).as_str()));
        assert_eq!(body["token"].as_str(), Some(mock_token(vid, "mts-connector-fake").as_str()));
        assert_eq!(body["status"], "processed");
        assert!(in_window.iter().any(|s| s["__id"] == body["odk_id"] && s["vid"] == body["vid"]));
        assert_eq!(cb.header("content-type"), Some("application/json"));
        assert!(cb.header("cookie").unwrap().starts_with("session_id="));
    }
    assert_eq!(odoo.count_by_header("X-MTS-Connector-Delivery").get("run-1"), Some(&5));

    // Session auth (GET with a JSON body) once, the callbacks, then logout, in that order.
    let paths: Vec<(String, String)> =
        odoo.requests().into_iter().map(|r| (r.method, r.path)).filter(|(_, p)| p != "/web/login").collect();
    assert_eq!(paths[0], ("GET".into(), "/web/session/authenticate".into()));
    assert!(paths[1..6].iter().all(|(m, p)| m == "POST" && p == "/api/v1/registry/callback"));
    assert_eq!(paths[6], ("GET".into(), "/web/session/logout".into()));
    assert_eq!(odoo.requests()[0].body.as_ref().unwrap()["params"]["login"], "admin");
    assert_eq!((odoo.logins(), odoo.active_sessions()), (1, 0));
    assert_eq!(mts.callbacks_sent(&id), Some(5));
}

#[tokio::test]
async fn mts_rejects_bad_requests_with_contract_codes() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    odk.add_generated_submissions(PROJECT, FORM, 2, t0(), t0() + chrono::Duration::hours(1));
    let window = (t0(), t0() + chrono::Duration::days(1));
    let good_odk = odk_request(&odk, &odoo, window.0, window.1);
    let good_json = json_request(json!([mts_connector::fakes::generated_fields(1)]));

    // (endpoint, JSON pointer to change, new value or None to remove, HTTP status, code)
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("json", "/requesttime", Some(json!("2026-01-01T00:00:00Z")), 400, "ATS-REQ-102"),
        ("json", "/requesttime", Some(json!("2026-01-01T00:00:00.123+00:00")), 400, "ATS-REQ-102"),
        ("json", "/requesttime", None, 422, "ATS-REQ-102"),
        ("json", "/id", Some(json!({"x": 1})), 422, "ATS-REQ-102"),
        ("json", "/request/authdata", None, 400, "ATS-REQ-102"),
        ("json", "/request/authdata", Some(json!([])), 400, "ATS-REQ-102"),
        ("json", "/request/authdata", Some(json!("x")), 422, "ATS-REQ-102"),
        ("json", "/request/output", Some(json!("xml")), 400, "ATS-REQ-102"),
        ("json", "/request/deliverytype", Some(json!("")), 400, "ATS-REQ-102"),
        ("json", "/request/output", None, 422, "ATS-REQ-102"),
        ("json", "/request/outputFormat", Some(json!("{vid: .output.vid")), 400, "ATS-REQ-103"),
        ("json", "/request/deliverytype", Some(json!("callback")), 400, "ATS-REQ-024"),
        ("odk", "/request/callbackProperties", None, 400, "ATS-REQ-024"),
        ("odk", "/request/callbackProperties/authType", Some(json!("basic")), 400, "ATS-REQ-027"),
        ("odk", "/request/callbackProperties/authOdoo", None, 400, "ATS-REQ-028"),
        ("odk", "/request/callbackProperties/authOdoo/authUrl", Some(json!("")), 400, "ATS-REQ-031"),
        ("odk", "/request/callbackProperties/authOdoo/username", Some(json!("")), 400, "ATS-REQ-032"),
        ("odk", "/request/callbackProperties/authOdoo/database", Some(json!("")), 400, "ATS-REQ-033"),
        ("odk", "/request/callbackProperties/url", None, 422, "ATS-REQ-102"),
        ("odk", "/request/callbackProperties/url", Some(json!("not a url")), 422, "ATS-REQ-102"),
        ("odk", "/request/odkconfig", None, 422, "ATS-REQ-102"),
        ("odk", "/request/odkconfig/baseurl", Some(json!("")), 400, "ATS-REQ-18"),
        ("odk", "/request/odkconfig/email", Some(json!("")), 400, "ATS-REQ-19"),
        ("odk", "/request/odkconfig/password", Some(json!("")), 400, "ATS-REQ-20"),
        ("odk", "/request/odkconfig/projectid", Some(json!("")), 400, "ATS-REQ-21"),
        ("odk", "/request/odkconfig/formid", Some(json!("")), 400, "ATS-REQ-22"),
        // ODK refusing the credentials surfaces as a 500 from MTS.
        ("odk", "/request/odkconfig/password", Some(json!("wrong")), 500, "ATS-REQ-100"),
    ];
    for (kind, pointer, value, want_status, want_code) in cases {
        let mut body = if kind == "odk" { good_odk.clone() } else { good_json.clone() };
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = body.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match value {
            Some(v) => parent.insert(key.to_string(), v),
            None => parent.remove(key),
        };
        let (code, resp) = submit(&mts, kind, &body).await;
        assert_eq!((code, error_code(&resp)), (want_status, want_code), "{kind} {pointer}: {resp}");
        assert_eq!(resp["response"], Value::Null, "{pointer}");
    }
    // Nothing above was accepted.
    assert!(mts.submissions().is_empty());

    // ODK unreachable: 500 ATS-REQ-100.
    let gone = FakeOdk::start("a", "b").await.unwrap();
    let gone_url = gone.url();
    gone.shutdown().await;
    let mut body = good_odk.clone();
    body["request"]["odkconfig"]["baseurl"] = json!(gone_url);
    let (code, resp) = submit(&mts, "odk", &body).await;
    assert_eq!((code, error_code(&resp)), (500, "ATS-REQ-100"));

    // ODK answering 503 with HTML: 500 as well.
    odk.set_down(true);
    let (code, resp) = submit(&mts, "odk", &good_odk).await;
    assert_eq!((code, error_code(&resp)), (500, "ATS-REQ-100"));
    odk.set_down(false);

    // Unknown status id: 404 ATS-REQ-016.
    let (code, resp) = status(&mts, "00nope").await;
    assert_eq!((code, error_code(&resp)), (404, "ATS-REQ-016"));
}

#[tokio::test]
async fn mts_per_record_validation_and_all_invalid() {
    let mts = FakeMts::start().await.unwrap();
    let good = mts_connector::fakes::generated_fields(1);
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let mut empty_name = good.clone();
    empty_name["name"] = json!("");

    let (code, body) =
        submit(&mts, "json", &json_request(json!([good.clone(), without("vid"), empty_name, without("fullAddress")])))
            .await;
    assert_eq!((code, &body["errors"]), (200, &Value::Null));
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    // Invalid records make the whole request "with errors".
    wait_status(&mts, &id, "processed_with_errors").await;
    assert_eq!(mts.submissions()[0].invalid, 3);

    // Every record invalid: 200 with ATS-REQ-101 AND an identifier; the request exists.
    mts.hold_processing(true);
    let (code, body) = submit(&mts, "json", &json_request(json!([without("gender"), without("dob")]))).await;
    assert_eq!((code, error_code(&body)), (200, "ATS-REQ-101"));
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    assert_eq!(mts.status_of(&id).as_deref(), Some("submitted_with_errors"));
    // MTS still queues it: the worker finishes it as processed_with_errors.
    mts.hold_processing(false);
    wait_status(&mts, &id, "processed_with_errors").await;
}

#[tokio::test]
async fn mts_empty_odk_window_is_ats_req_23() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    odk.add_generated_submissions(PROJECT, FORM, 3, t0(), t0() + chrono::Duration::hours(3));
    let later = t0() + chrono::Duration::days(2);
    let (code, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, later, later + chrono::Duration::days(1))).await;
    assert_eq!((code, error_code(&body)), (400, "ATS-REQ-23"));
    assert_eq!(body["errors"][0]["errorMessage"], "no submissions found for odk pull");
    assert!(mts.submissions().is_empty());
}

#[tokio::test]
async fn mts_restart_forgets_requests() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    odk.add_generated_submissions(PROJECT, FORM, 2, t0(), t0() + chrono::Duration::hours(2));
    mts.hold_processing(true);
    let (code, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1))).await;
    assert_eq!(code, 200);
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    assert_eq!(status(&mts, &id).await.1["response"]["status"], "submitted");

    mts.restart();
    mts.hold_processing(false);
    let (code, body) = status(&mts, &id).await;
    assert_eq!((code, error_code(&body)), (404, "ATS-REQ-016"));
    // The queued request died with the "process": no callback ever comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(odoo.requests().is_empty());
}

/// Submits `n` download requests of `records` records each; answers their ids.
async fn submit_many(mts: &FakeMts, n: usize, records: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let authdata: Vec<Value> = (0..records)
            .map(|r| json!({"vid": format!("{i}{r:04}"), "name": "A", "gender": "F", "dob": "1990/01/01", "fullAddress": "x"}))
            .collect();
        let (code, body) = submit(mts, "json", &json_request(json!(authdata))).await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["response"]["request_identifier"].as_str().unwrap().to_string());
    }
    ids
}

async fn statuses(mts: &FakeMts, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(status(mts, id).await.1["response"]["status"].as_str().unwrap_or("404").to_string());
    }
    out
}

#[tokio::test]
async fn mts_workers_process_that_many_requests_at_once() {
    let mts = FakeMts::start().await.expect("mts");
    mts.set_workers(3);
    mts.set_time_per_record(Duration::from_millis(400));
    let ids = submit_many(&mts, 5, 2).await;
    eventually("three requests processing", || async {
        statuses(&mts, &ids).await.iter().filter(|s| *s == "processing").count() == 3
    })
    .await;
    let now = statuses(&mts, &ids).await;
    assert_eq!(now.iter().filter(|s| *s == "submitted").count(), 2, "{now:?}");
    assert_eq!(mts.queued(), 2);
    // A request takes 2 records x 400 ms: the queue drains in two rounds.
    for id in &ids {
        wait_status(&mts, id, "processed").await;
    }
}

#[tokio::test]
async fn mts_cleanup_deletes_old_requests_whatever_their_status() {
    let mts = FakeMts::start().await.expect("mts");
    mts.hold_processing(true);
    let ids = submit_many(&mts, 2, 1).await;
    mts.set_cleanup_expiry(Duration::from_millis(300));
    assert_eq!(statuses(&mts, &ids).await, ["submitted", "submitted"]);
    eventually("both requests deleted", || async { statuses(&mts, &ids).await == ["404", "404"] }).await;
    // A queued request the cleanup deleted is never processed.
    mts.hold_processing(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mts.status_of(&ids[0]).is_none());
}

#[tokio::test]
async fn mts_callback_failure_stops_delivery() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    odk.add_generated_submissions(PROJECT, FORM, 5, t0(), t0() + chrono::Duration::hours(5));
    mts.fail_callbacks_after(2);
    let (code, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1))).await;
    assert_eq!(code, 200);
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();

    wait_status(&mts, &id, "error_making_callback_request").await;
    assert_eq!(odoo.received().len(), 2);
    assert_eq!(mts.callbacks_sent(&id), Some(2));
    // No retry, no logout, and the remaining records are never sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((odoo.received().len(), odoo.logouts()), (2, 0));

    // The switch is one-shot: the next request is delivered in full.
    let (_, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1))).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "processed").await;
    eventually("second delivery", || async { odoo.received().len() == 7 }).await;
}

#[tokio::test]
async fn mts_ignores_callback_http_errors_like_requests_does() {
    let Fakes { odk, mts, odoo } = start_fakes().await;
    odk.add_generated_submissions(PROJECT, FORM, 3, t0(), t0() + chrono::Duration::hours(3));
    odoo.fail_next(1, 500);
    let (_, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1))).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "processed").await;
    eventually("logout", || async { odoo.logouts() == 1 }).await;
    // The 500 answer is not an exception for MTS: that record is silently lost.
    assert_eq!(odoo.received().len(), 2);

    // An unreachable callback target is an exception: error_making_callback_request.
    odoo.set_down(true);
    let (_, body) = submit(&mts, "odk", &odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1))).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "processed").await; // 503 on the login is still no exception
    odoo.set_down(false);
    let mut req = odk_request(&odk, &odoo, t0(), t0() + chrono::Duration::days(1));
    req["request"]["callbackProperties"]["url"] = json!("http://127.0.0.1:9/api/v1/registry/callback");
    let (_, body) = submit(&mts, "odk", &req).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "error_making_callback_request").await;
}

#[tokio::test]
async fn mts_injected_submit_failures_and_outage() {
    let mts = FakeMts::start().await.unwrap();
    let body = json_request(json!([mts_connector::fakes::generated_fields(1)]));

    mts.fail_next_submits(2, 503);
    for _ in 0..2 {
        let (code, resp) = submit(&mts, "json", &body).await;
        assert_eq!((code, error_code(&resp)), (503, "ATS-REQ-100"));
    }
    let (code, _) = submit(&mts, "json", &body).await;
    assert_eq!(code, 200);

    // A slow MTS still creates the request when the client gives up.
    mts.set_submit_delay(Duration::from_millis(300));
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(50)).build().unwrap();
    let sent = impatient.post(format!("{}/authtoken/json", mts.url())).json(&body).send().await;
    assert!(sent.is_err());
    eventually("orphan request", || async { mts.submissions().len() == 2 }).await;
    mts.set_submit_delay(Duration::ZERO);

    mts.set_down(true);
    let resp = client().get(format!("{}/ping", mts.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    mts.set_down(false);
    let resp = client().get(format!("{}/ping", mts.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let fields: Value =
        client().get(format!("{}/authtoken/authfields", mts.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(fields["response"]["authfields"][0], "vid");
}

#[tokio::test]
async fn odoo_session_auth_and_callback_guard() {
    let odoo = FakeOdoo::start("registry", "admin", "admin-pw").await.unwrap();
    let http = client();
    let auth = |password: &str| {
        http.get(odoo.auth_url())
            .json(&json!({"jsonrpc": "2.0", "params": {"db": "registry", "login": "admin", "password": password}}))
            .send()
    };

    let denied = auth("wrong").await.unwrap();
    assert!(denied.headers().get("set-cookie").is_none());
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["data"]["name"], "odoo.exceptions.AccessDenied");

    let ok = auth("admin-pw").await.unwrap();
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/"));
    let session = cookie.split(';').next().unwrap().to_string();
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["result"]["uid"], 2);

    let call = |cookie: Option<String>, auth: Option<&'static str>| {
        let mut rb = http.put(odoo.callback_url()).header("X-MTS-Connector-Delivery", "d-1").json(&json!({"vid": "1"}));
        if let Some(c) = cookie {
            rb = rb.header("Cookie", c);
        }
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(call(None, None).await, 401);
    assert_eq!(call(Some(session.clone()), None).await, 200);
    odoo.set_api_authorization(Some("Bearer relay"));
    assert_eq!(call(None, Some("Bearer relay")).await, 200);
    odoo.fail_next(1, 502);
    assert_eq!(call(Some(session.clone()), None).await, 502);

    let logout = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/web/session/logout", odoo.url()))
        .header("Cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status().as_u16(), 303);
    assert_eq!(call(Some(session), None).await, 401);

    odoo.set_password("new-pw");
    let body: Value = auth("admin-pw").await.unwrap().json().await.unwrap();
    assert!(body["error"].is_object());
    assert_eq!(odoo.count_by_header("x-mts-connector-delivery").get("d-1"), Some(&2));
    assert_eq!(odoo.received()[0].body.as_ref().unwrap()["vid"], "1");
}

#[tokio::test]
async fn mts_bulk_static_bearer_and_jq_runtime_errors() {
    let mts = FakeMts::start().await.unwrap();
    let odoo = FakeOdoo::start("registry", "admin", "admin-pw").await.unwrap();
    odoo.set_api_authorization(Some("Bearer s3cret"));
    let records = json!([mts_connector::fakes::generated_fields(1), mts_connector::fakes::generated_fields(2)]);
    let request = |bulk: bool, output_format: &str| {
        envelope(json!({
            "output": "json",
            "deliverytype": "callback",
            "outputFormat": output_format,
            "callbackProperties": {
                "url": odoo.callback_url(),
                "httpMethod": "PATCH",
                "callInBulk": bulk,
                "authType": "staticBearer",
                "authStaticBearer": {"token": "s3cret"},
            },
            "authdata": records,
        }))
    };

    // One call with an array; no outputFormat means `.output`.
    let (_, body) = submit(&mts, "json", &request(true, "")).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "processed").await;
    eventually("bulk callback", || async { odoo.received().len() == 1 }).await;
    let cb = &odoo.received()[0];
    assert_eq!((cb.method.as_str(), cb.header("authorization")), ("PATCH", Some("Bearer s3cret")));
    let items = cb.body.as_ref().unwrap().as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["token"].as_str(), Some(mts.token_for(items[0]["vid"].as_str().unwrap()).as_str()));
    assert_eq!(items[1]["errorCode"], Value::Null);

    // A jq runtime error sends that record's callback with no body.
    let (_, body) = submit(&mts, "json", &request(false, "error(\"boom\")")).await;
    let id = body["response"]["request_identifier"].as_str().unwrap().to_string();
    wait_status(&mts, &id, "processed").await;
    eventually("bodiless callbacks", || async { odoo.received().len() == 3 }).await;
    assert!(odoo.received()[1..].iter().all(|cb| cb.body.is_none() && cb.raw_body.is_empty()));
}
