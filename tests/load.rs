//! Load: 200 concurrent JSON-RPC clients (200 keep-alive connections) mix
//! reads and writes against the real binary for three seconds. Every call must succeed,
//! every write must be durable and visible, and the service's own call counter must
//! agree with what the clients sent.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{API_KEY, DB, Service, UID};
use serde_json::{Value, json};

const CLIENTS: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(3);
/// Connectors the clients read; each client writes its own.
const CONNECTORS: usize = 20;

fn call(model: &str, method: &str, args: Value, kwargs: Value, id: usize) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id, "params": {"service": "object", "method": "execute_kw",
        "args": [DB, UID, API_KEY, model, method, args, kwargs]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_get_no_errors() {
    let svc = Service::start().await;
    let vals: Vec<Value> = (0..CONNECTORS)
        .map(|i| common::merged(&common::valid_connector(), &json!({"name": format!("Load {i}")})))
        .collect();
    let ids: Vec<u64> = svc
        .connector("create", json!([vals]))
        .await
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ids.len(), CONNECTORS);
    let url = format!("{}/jsonrpc", svc.url());
    let calls = Arc::new(AtomicUsize::new(0));
    // One pool: with 200 calls in flight it holds 200 keep-alive connections (building
    // 200 TLS-capable clients would cost more than the test).
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (url, calls, ids, http) = (url.clone(), calls.clone(), ids.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mine = ids[client % ids.len()];
            let mut n = 0;
            while started.elapsed() < RUN_FOR {
                n += 1;
                let id = client * 1_000_000 + n;
                let (body, check): (Value, fn(&Value) -> bool) = match n % 5 {
                    0 => (
                        call(
                            "mts.connector",
                            "search_read",
                            json!([[["name", "ilike", "load"]]]),
                            json!({"fields": ["name", "job_status"], "limit": 10}),
                            id,
                        ),
                        |r| r.as_array().is_some_and(|a| a.len() == 10),
                    ),
                    1 => (
                        call(
                            "mts.connector",
                            "read",
                            json!([[mine]]),
                            json!({"fields": ["name", "interval_minutes"]}),
                            id,
                        ),
                        |r| r.as_array().is_some_and(|a| a.len() == 1),
                    ),
                    2 => (call("mts.connector.run", "search_count", json!([[]]), json!({}), id), |r| r.is_u64()),
                    3 => (call("ir.model", "search_read", json!([[]]), json!({"fields": ["model"]}), id), |r| {
                        r.is_array()
                    }),
                    _ => {
                        // Clients sharing a connector write the same field: the last
                        // write wins, and it must be one of theirs.
                        (
                            call(
                                "mts.connector",
                                "write",
                                json!([[mine], {"interval_minutes": 1 + (n % 500)}]),
                                json!({}),
                                id,
                            ),
                            |r| *r == json!(true),
                        )
                    }
                };
                let resp = http.post(&url).json(&body).send().await.map_err(|e| format!("client {client}: {e}"))?;
                let status = resp.status().as_u16();
                let answer: Value = resp.json().await.map_err(|e| format!("client {client}: {e}"))?;
                if status != 200 || answer["id"] != json!(id) || !answer.get("result").is_some_and(check) {
                    return Err(format!("client {client} call {n}: HTTP {status} {answer}"));
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let total = calls.load(Ordering::Relaxed);
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.first());
    assert!(total >= CLIENTS * 2, "only {total} calls in {elapsed:?}");
    eprintln!(
        "{total} calls from {CLIENTS} clients in {elapsed:.1?}: {:.0} calls/s",
        total as f64 / elapsed.as_secs_f64()
    );

    // Every write landed: each connector holds a value one of its writers sent.
    let rows = svc.connector("read", json!([ids, ["interval_minutes"]])).await;
    for row in rows.as_array().expect("rows") {
        let v = row["interval_minutes"].as_i64().unwrap_or(0);
        assert!((1..=500).contains(&v), "{row}");
    }
    // The service counted every call it answered (plus the test's create and read).
    let metrics = svc.get("/metrics").await.body;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("mtsc_rpc_calls_total{") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, total + 2, "calls counted by /metrics");
    assert!(!metrics.contains("outcome=\"Internal"), "no store failures");
    assert_eq!(svc.get("/health").await.status, 200);
    assert!(!svc.log().contains("panicked"));
}
