//! The API against hostile calls with valid credentials: domains that used to overflow
//! the stack, like patterns that used to block for tens of seconds, answers that used to
//! take gigabytes, malformed ids and oversized chunked bodies. Each gets a well-formed
//! Odoo (or JSON-RPC) error, the process lives, `/health` keeps answering and nothing
//! stored changes.

mod common;

use std::time::{Duration, Instant};

use common::{API_KEY, DB, Options, Service, UID};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MODELS: &[&str] = &["mts.connector", "mts.connector.run", "mts.connector.delivery", "ir.model"];

/// Every record of every model, every field.
async fn snapshot(svc: &Service) -> Value {
    let mut out = serde_json::Map::new();
    for model in &MODELS[..3] {
        out.insert(model.to_string(), svc.ok(model, "search_read", json!([[]]), json!({"order": "id"})).await);
    }
    Value::Object(out)
}

fn leaf(i: usize) -> Value {
    json!(["id", "!=", 100_000 + i])
}

/// Domains that crashed the process before (a few thousand `!` or `|`, 20,000 leaves),
/// and others at and past the limits: `(what, domain, valid)`.
fn hostile_domains() -> Vec<(&'static str, Value, bool)> {
    let mut nots: Vec<Value> = (0..3001).map(|_| json!("!")).collect();
    nots.push(leaf(0));
    let mut ors: Vec<Value> = (0..3000).map(|_| json!("|")).collect();
    ors.extend((0..3001).map(leaf));
    let ands: Vec<Value> = (0..20_000).map(leaf).collect();
    let mut alternating = Vec::new();
    for i in 0..3000 {
        alternating.push(json!(if i % 2 == 0 { "&" } else { "|" }));
        alternating.push(leaf(i));
    }
    alternating.push(leaf(0));
    let only_ops: Vec<Value> = (0..5000).map(|_| json!("|")).collect();
    vec![
        ("3001 negations", Value::Array(nots), true),
        ("3000 ors", Value::Array(ors), true),
        ("9000 implicit ands", Value::Array((0..9000).map(leaf).collect()), true),
        ("20000 implicit ands", Value::Array(ands), false),
        ("3000 alternating operators", Value::Array(alternating), false),
        ("5000 operators, no operand", Value::Array(only_ops), false),
        ("a 50 KB like pattern", json!([["name", "like", "x".repeat(50_000)]]), false),
        ("a deep value", json!([["id", "=", (0..100).fold(json!(1), |v, _| json!([v]))]]), true),
    ]
}

fn is_odoo_error(e: &Value, name: &str) -> bool {
    e["code"] == 200 && e["data"]["name"] == name && e["data"]["message"].as_str().is_some_and(|m| !m.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_domains_get_errors_on_every_model_and_entry_point() {
    let svc = Service::start().await;
    let id = svc.create(&common::merged(&common::valid_connector(), &json!({"name": "Target"}))).await;
    let before = snapshot(&svc).await;
    for (what, domain, valid) in hostile_domains() {
        for model in MODELS {
            for method in ["search", "search_read", "search_count"] {
                match svc.execute_kw(model, method, json!([domain.clone()]), json!({})).await {
                    Ok(v) => assert!(valid, "{what} on {model}.{method} answered {v}"),
                    Err(e) => {
                        assert!(!valid, "{what} on {model}.{method}: {e}");
                        assert!(is_odoo_error(&e, "builtins.ValueError"), "{what} on {model}.{method}: {e}");
                    }
                }
            }
        }
        // As a connector's registry domains: refused (or accepted) at create and write.
        for field in ["g2p_search_domain", "vid_delete_search_domain"] {
            let text = domain.to_string();
            let vals = common::merged(&common::valid_connector(), &json!({field: text}));
            let created = svc.execute_kw("mts.connector", "create", json!([vals]), json!({})).await;
            let written = svc.execute_kw("mts.connector", "write", json!([[id], {field: text}]), json!({})).await;
            for (how, answer) in [("create", created), ("write", written)] {
                match (valid, answer) {
                    (true, Ok(_)) => {}
                    (false, Err(e)) => {
                        assert!(is_odoo_error(&e, "odoo.exceptions.ValidationError"), "{what}: {e}");
                        assert!(e["data"]["message"].as_str().unwrap_or_default().contains(field), "{e}");
                    }
                    (_, other) => panic!("{what} as {field} on {how}: {other:?}"),
                }
            }
            if valid {
                // Put things back (and drop what create made) so the store compares equal.
                let ids: Vec<u64> = svc
                    .connector("search", json!([[["id", "!=", id]]]))
                    .await
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_u64)
                    .collect();
                svc.connector("unlink", json!([ids])).await;
                let old = before["mts.connector"][0][field].clone();
                svc.connector("write", json!([[id], {field: old}])).await;
            }
        }
    }
    assert_eq!(svc.get("/health").await.status, 200);
    let after = snapshot(&svc).await;
    let strip = |v: &Value| common::stable(&v["mts.connector"]);
    assert_eq!(strip(&after), strip(&before), "the connectors changed");
    assert_eq!(after["mts.connector.run"], before["mts.connector.run"]);
    let log = svc.log();
    assert!(!log.contains("panicked") && !log.contains("overflow"), "{log}");
}

/// Polls `/health` every 100 ms while `work` runs; each answer must come within 500 ms.
async fn health_answers_while<T>(svc: &Service, work: impl std::future::Future<Output = T>) -> T {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(500)).build().unwrap();
    let url = format!("{}/health", svc.url());
    let probe = async {
        loop {
            let started = Instant::now();
            let ok = http.get(&url).send().await.is_ok_and(|r| r.status() == 200);
            assert!(ok, "/health did not answer within 500 ms (after {:?})", started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        out = work => out,
        () = probe => unreachable!("the probe never ends"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_like_searches_are_bounded_and_health_keeps_answering() {
    let svc = Service::start().await;
    // A 900 KB name (the request limit is 1 MiB).
    let name = "ab".repeat(450_000);
    svc.create(&common::merged(&common::valid_connector(), &json!({"name": name}))).await;
    let pattern = format!("{}c", "a_".repeat(2000));
    let heavy = || svc.execute_kw("mts.connector", "search", json!([[["name", "like", pattern]]]), json!({}));
    let cheap = svc.execute_kw("mts.connector", "search", json!([[["name", "ilike", "AB"]]]), json!({}));
    let started = Instant::now();
    let (a, b, c, d, cheap) =
        health_answers_while(&svc, async { tokio::join!(heavy(), heavy(), heavy(), heavy(), cheap) }).await;
    for answer in [a, b, c, d] {
        let e = answer.expect_err("the search runs out of its budget");
        assert!(is_odoo_error(&e, "builtins.ValueError") && e.to_string().contains("too expensive"), "{e}");
    }
    assert_eq!(cheap.unwrap(), json!([1]), "a cheap like over the same value answers");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(svc.get("/health").await.status, 200);
}

/// The service's resident memory high-water mark, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_read_twenty_thousand_times_is_refused_before_memory_grows() {
    let svc = Service::start().await;
    let id = svc.create(&common::merged(&common::valid_connector(), &json!({"name": "n".repeat(200_000)}))).await;
    let before = peak_rss(svc.pid());
    let ids: Vec<u64> = vec![id; 20_000];
    for (method, args, kwargs) in [
        ("read", json!([ids.clone()]), json!({"fields": ["name"]})),
        ("read", json!([ids.clone()]), json!({})),
        ("name_get", json!([ids.clone()]), json!({})),
        ("preview_mts_request", json!([ids.clone()]), json!({})),
    ] {
        let e = svc.err("mts.connector", method, args, kwargs).await;
        assert!(is_odoo_error(&e, "builtins.ValueError"), "{method}: {e}");
        assert!(e.to_string().contains("larger than 10485760 bytes"), "{method}: {e}");
    }
    // Fewer ids at a time work.
    let rows = svc.connector("read", json!([vec![id; 20], ["name"]])).await;
    assert_eq!(rows.as_array().map(Vec::len), Some(20));
    let grown = peak_rss(svc.pid()).saturating_sub(before);
    assert!(grown < 256 << 20, "the peak RSS grew by {} MiB", grown >> 20);
    // A MissingError names a few ids, not all of them.
    let e = svc.err("mts.connector", "read", json!([(1000..21_000).collect::<Vec<u64>>()]), json!({})).await;
    assert!(e.to_string().len() < 2000 && e.to_string().contains("and 19980 more"), "{e}");
}

fn envelope(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"call","id":{id},"params":{{"service":"object","method":"execute_kw","args":["{DB}",{UID},"{API_KEY}","mts.connector","search_count",[[]]]}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_jsonrpsee_cannot_echo_get_an_invalid_request_error() {
    let svc = Service::start().await;
    for id in [r#"{"a":1}"#, "[1]", "true", "1.5", "-3", "1e400"] {
        let raw = svc.post_raw("/jsonrpc", envelope(id).into_bytes(), Some("application/json")).await;
        assert_eq!(raw.status, 200, "{id}: {}", raw.body);
        let answer = raw.json();
        assert_eq!(answer["jsonrpc"], "2.0", "{id}: {answer}");
        assert_eq!(answer["id"], Value::Null, "{id}");
        assert_eq!(answer["error"]["code"], -32600, "{id}: {answer}");
    }
    for (id, want) in [("7", json!(7)), (r#""x-1""#, json!("x-1")), ("null", Value::Null)] {
        let answer = svc.post_raw("/jsonrpc", envelope(id).into_bytes(), Some("application/json")).await.json();
        assert_eq!(answer["id"], want);
        assert!(answer["result"].is_u64(), "{answer}");
    }
}

/// Sends a chunked POST of `size` bytes to `path` over a raw socket; answers the status line.
async fn chunked_post(svc: &Service, path: &str, size: usize) -> String {
    let addr = svc.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let frame = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
        if s.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_gets_413() {
    let svc = Service::start().await;
    assert_eq!(chunked_post(&svc, "/jsonrpc", 2 << 20).await, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(chunked_post(&svc, "/web/dataset/call_kw", 2 << 20).await, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(svc.get("/health").await.status, 200);
    assert!(!svc.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sessions_expire_when_idle() {
    let svc = Service::start_with(
        Options::new().arg("--session-idle-seconds").arg("1").arg("--session-max-seconds").arg("600"),
    )
    .await;
    let login =
        svc.web("/web/session/authenticate", json!({"db": DB, "login": "admin", "password": API_KEY}), None).await;
    let sid = login.session_id().expect("a session cookie");
    let svc = &svc;
    let info =
        |sid: String| async move { svc.web("/web/session/get_session_info", json!({}), Some(&sid)).await.json() };
    assert_eq!(info(sid.clone()).await["result"]["uid"], UID);
    let opened = Instant::now();
    loop {
        let answer = info(sid.clone()).await;
        if answer["error"]["code"] == 100 {
            assert_eq!(answer["error"]["data"]["name"], "odoo.http.SessionExpiredException");
            break;
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "the session never expired");
        // Polling keeps it alive: wait longer than the idle limit between two uses.
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert!(opened.elapsed() >= Duration::from_secs(1));
}
