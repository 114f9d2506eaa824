//! Relay throughput benchmark (run by scripts/bench_relay.sh; not a test).
//!
//! Imports the same number of ODK submissions through fake ODK, MTS and Odoo twice
//! against the real service binary: once in `direct` mode (the fake MTS calls the fake
//! Odoo itself: the baseline) and once in `relay` mode (every callback is received,
//! stored durably, de-duplicated and forwarded by the service). Prints a Markdown table
//! with records per second and the ratio to the baseline.

#[path = "support/bench.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
use serde_json::{Value, json};
use support::Svc;

/// `model.method(*args)` on the service.
async fn rpc(http: &reqwest::Client, url: &str, model: &str, method: &str, args: Value) -> Value {
    support::rpc(http, url, model, method, args, json!({})).await
}

async fn one(bin: &str, mode: &str, bulk: bool, n: usize) -> (f64, usize) {
    let odk = FakeOdk::start("e@x.org", "pw").await.expect("odk");
    odk.add_form("1", "f");
    let mts = FakeMts::start().await.expect("mts");
    let odoo = FakeOdoo::start("db", "admin", "odoo-pw").await.expect("odoo");
    let end = Utc::now() - TimeDelta::minutes(10);
    let start = end - TimeDelta::hours(5);
    odk.add_generated_submissions("1", "f", n, start, end);
    let svc = Svc::start(Path::new(bin), &["--poll-seconds", "0.05", "--relay-grace-seconds", "5"]);
    let http = reqwest::Client::new();
    let connector = json!({
        "name": "bench", "mts_url": mts.url(), "input_type": "odk", "is_recurring": "recurring",
        "interval_minutes": 60, "max_records_per_request": 1000, "callback_mode": mode, "callback_in_bulk": bulk,
        "odk_base_url": odk.url(), "odk_odata_url": odk.odata_url("1", "f"), "odk_email": "e@x.org",
        "odk_password": "pw", "callback_url": odoo.callback_url(), "callback_authtype": "odoo",
        "callback_auth_url": odoo.auth_url(), "callback_auth_database": "db",
        "callback_auth_username": "admin", "callback_auth_password": "odoo-pw",
        "output_format": "{\"id\": .input.__id, \"token\": .output.token}",
    });
    let id = rpc(&http, &svc.url, "mts.connector", "create", json!([connector])).await;
    let fmt = mts_connector::model::format_datetime;
    let t0 = Instant::now();
    rpc(&http, &svc.url, "mts.connector", "action_import", json!([[id], fmt(start), fmt(end)])).await;
    let deadline = t0 + Duration::from_secs(600);
    while odoo.received().len() < n {
        assert!(Instant::now() < deadline, "{mode}: only {} of {n} delivered", odoo.received().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    (n as f64 / secs, mts.submissions().len())
}

/// The relay's output-format cost per record: in this process (the baseline, as before
/// the sandbox) and through the jq sandbox's worker processes, batched (`render_many`)
/// and as the delivery tasks call it (64 concurrent `render` calls).
async fn sandbox_cost(bin: &str, n: usize) -> Vec<(&'static str, f64)> {
    use mts_connector::jq::sandbox::{Sandbox, SandboxConfig};
    let format = r#"{"id": .input.__id, "vid": .output.vid, "token": .output.token}"#;
    let records: Vec<String> = (0..n)
        .map(|i| {
            json!({"input": {"__id": format!("uuid:{i}"), "name": "Person", "vid": "4000000000000000"},
                   "output": {"vid": "4000000000000000", "token": format!("tok-{i}"), "status": "SUCCESS"}})
            .to_string()
        })
        .collect();
    let program = mts_connector::jq::Program::compile(format).expect("compiles");
    let t0 = Instant::now();
    for r in &records {
        let v: Value = serde_json::from_str(r).expect("json");
        mts_connector::jq::render_callback(Some(&program), &v["input"], &v["output"]).expect("renders");
    }
    let in_process = n as f64 / t0.elapsed().as_secs_f64();
    let sandbox = Sandbox::start(SandboxConfig { exe: bin.into(), workers: 2, ..SandboxConfig::default() });
    // Warm the workers up (start and compile).
    sandbox.render(format, &records[0]).await.expect("renders");
    let t0 = Instant::now();
    for chunk in records.chunks(1000) {
        for out in sandbox.render_many(format, chunk).await {
            out.expect("renders");
        }
    }
    let batched = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(records.clone()));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (sandbox, queue) = (sandbox.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(r) = queue.lock().expect("queue").pop() else { return };
                sandbox.render(format, &r).await.expect("renders");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let concurrent = n as f64 / t0.elapsed().as_secs_f64();
    vec![
        ("in this process, one record after the other (baseline: before the sandbox)", in_process),
        ("sandbox, 2 workers, `render_many` batches of 1,000", batched),
        ("sandbox, 2 workers, 64 concurrent `render` calls (as the delivery tasks)", concurrent),
    ]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/mts-connector".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let costs = sandbox_cost(&bin, 20_000).await;
    println!("| output format evaluation | records | records/s | µs per record | ratio to in-process |");
    println!("|---|---|---|---|---|");
    for (what, rate) in &costs {
        println!("| {what} | 20000 | {rate:.0} | {:.1} | {:.2} |", 1e6 / rate, rate / costs[0].1);
    }
    println!();
    let (direct, direct_requests) = one(&bin, "direct", false, n).await;
    let (relay, relay_requests) = one(&bin, "relay", false, n).await;
    let (bulk, bulk_requests) = one(&bin, "relay", true, n).await;
    println!("| mode | records | MTS requests | records/s (import to last delivery) | ratio to direct |");
    println!("|---|---|---|---|---|");
    println!(
        "| direct (baseline: MTS calls Odoo, one call per record) | {n} | {direct_requests} | {direct:.0} | 1.00 |"
    );
    println!(
        "| relay, one MTS call per record (each stored durably, then forwarded) | {n} | {relay_requests} | {relay:.0} | {:.2} |",
        relay / direct
    );
    println!(
        "| relay, `callback_in_bulk` (one MTS call per request, one flush) | {n} | {bulk_requests} | {bulk:.0} | {:.2} |",
        bulk / direct
    );
}
