//! In-process cost of one control-plane call, without HTTP: the `/jsonrpc` params of
//! `search_read` (Odoo's connector list) and `read` (a form) answered through the
//! service's own dispatch and serialized, N times on one thread. For profiling
//! (`perf record`); `bench_rpc` is the benchmark.
//!
//! `bench_dispatch [N] [CALL]` prints microseconds per call (of CALL only when given).

#[path = "support/bench.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use mts_connector::api::{App, methods};
use mts_connector::engine::{Engine, EngineConfig};
use mts_connector::secret::Secret;
use mts_connector::store::Store;
use serde_json::{Value, json};

fn params(method: &str, args: Value, kwargs: Value) -> Value {
    json!({"service": "object", "method": "execute_kw",
        "args": ["mts_connector", 2, support::KEY, "mts.connector", method, args, kwargs]})
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path(), mts_connector::server::MODELS).expect("store"));
    let engine = Engine::new(store, EngineConfig::default(), reqwest::Client::new()).expect("engine");
    let app = App::new(engine, "mts_connector".into(), "admin".into(), Secret::new(support::KEY));
    let vals: Vec<Value> = (0..50)
        .map(|i| {
            let u = "http://127.0.0.1:9";
            support::connector(&format!("Registrations {i:03}"), u, u, u, u, u)
        })
        .collect();
    methods::jsonrpc(&app, &params("create", json!([vals]), json!({}))).await.expect("create");
    let calls = [
        (
            "search_read",
            params(
                "search_read",
                json!([[["is_recurring", "=", "recurring"]]]),
                json!({"fields": ["name", "input_type", "job_status", "last_run_id", "next_run_at"], "limit": 20, "order": "name"}),
            ),
        ),
        ("read", params("read", json!([[1]]), json!({}))),
    ];
    let only = std::env::args().nth(2);
    for (name, p) in calls.iter().filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name)) {
        let text = p.to_string();
        let mut bytes = 0;
        let started = Instant::now();
        for _ in 0..n {
            let p: Value = serde_json::from_str(&text).expect("params");
            bytes += match methods::jsonrpc(&app, &p).await.expect("call") {
                methods::Answer::Json(rows) => rows.len(),
                methods::Answer::Value(v) => serde_json::to_vec(&v).expect("json").len(),
            };
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("{name}: {us:.1} us per call ({} B answer)", bytes / n);
    }
}
