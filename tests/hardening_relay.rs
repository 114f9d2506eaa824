//! A relay-mode connector whose output format recurses forever or spins: its records are
//! parked as failed with a clear error, the service keeps answering (`/health` too), a
//! well-behaved connector beside it delivers everything, and a service restarted (after
//! `kill -9`) on the same data dir serves at once and parks what was left.

mod common;

use std::time::{Duration, Instant};

use common::world::*;
use common::{Options, Service};
use mts_connector::relay::deliver::DELIVERY_HEADER;
use serde_json::{Value, json};

fn relay_options() -> Options {
    relay_fast().arg("--jq-workers").arg("2")
}

async fn import(w: &World, n: usize, hours_ago: i64, patch: Value) -> (Vec<String>, u64) {
    w.import_relayed(n, hours_ago, patch).await
}

async fn deliveries(svc: &Service, connector: u64) -> Vec<Value> {
    svc.ok("mts.connector.delivery", "search_read", json!([[["connector_id", "=", connector]]]), json!({}))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every one of the `n` deliveries of `connector` is failed; answers them.
async fn all_parked(svc: &Service, connector: u64, n: usize, secs: u64) -> Vec<Value> {
    until(secs, "every bad record parked as failed", || async {
        let d = deliveries(svc, connector).await;
        (d.len() == n && d.iter().all(|d| d["state"] == "failed")).then_some(d)
    })
    .await
}

/// `/health` answers within a second, `times` times over about `times * 100 ms`.
async fn health_stays_up(svc: &Service, times: usize) {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1)).build().expect("client");
    for _ in 0..times {
        let started = Instant::now();
        let resp = http.get(format!("{}/health", svc.url())).send().await;
        if !resp.as_ref().is_ok_and(|r| r.status() == 200) {
            panic!("/health did not answer within 1 s: {resp:?} after {:?}\n{}", started.elapsed(), svc.log());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hostile_format_is_parked(format: &str, why: &[&str]) {
    let w = World::start(relay_options()).await;
    let (_, bad) = import(&w, 6, 2, json!({"name": "Hostile", "output_format": format})).await;
    let (good_ids, _) = import(&w, 10, 5, json!({"name": "Well behaved"})).await;
    health_stays_up(&w.svc, 20).await;
    let parked = all_parked(&w.svc, bad, 6, 90).await;
    for d in &parked {
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.starts_with("output format: "), "{d}");
        assert!(why.iter().any(|w| error.contains(w)), "unclear error: {error}");
        assert_eq!(d["attempts"], 1, "a sandbox failure is not retried: {d}");
    }
    // The other connector's records all arrived once.
    until(60, "the good records delivered", || async {
        (w.odoo.count_by_header(DELIVERY_HEADER).len() >= good_ids.len()).then_some(())
    })
    .await;
    w.assert_each_delivered_once(&good_ids);
    assert_eq!(w.odoo.count_by_header(DELIVERY_HEADER).len(), good_ids.len(), "no bad record reached the target");
    assert_eq!(w.svc.get("/health").await.status, 200);
    assert!(!w.svc.log().contains("panicked"), "{}", w.svc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_output_format_parks_its_records_and_the_service_serves() {
    hostile_format_is_parked("def f: [f]; f", &["recursed too deep", "not evaluated"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_output_format_parks_its_records_and_the_service_serves() {
    hostile_format_is_parked("last(range(1e12))", &["ran longer than", "not evaluated"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_hostile_records_pending_serves_at_once_and_parks_them() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    let mut w = World::start(relay_options().data_dir(&dir)).await;
    // The target is down: nothing is rendered before the kill, so every record is still
    // pending when the service dies, and must be evaluated after the restart.
    w.odoo.set_down(true);
    let (_, bad) = import(&w, 5, 2, json!({"name": "Recursive", "output_format": "def f: [f]; f"})).await;
    until(30, "the records received", || async {
        let runs = w.runs(bad).await;
        (runs.first().is_some_and(|r| r["records_received"] == 5)).then_some(())
    })
    .await;
    w.svc.kill9();
    w.odoo.set_down(false);
    w.svc = Service::start_with(relay_options().data_dir(&dir)).await;
    health_stays_up(&w.svc, 10).await;
    let parked = all_parked(&w.svc, bad, 5, 90).await;
    assert!(parked.iter().all(|d| d["last_error"].as_str().is_some_and(|e| e.contains("output format"))));
    // And the restarted service relays a good connector's records.
    let (good_ids, _) = import(&w, 4, 5, json!({"name": "After restart"})).await;
    until(60, "the good records delivered", || async {
        (w.odoo.count_by_header(DELIVERY_HEADER).len() >= good_ids.len()).then_some(())
    })
    .await;
    w.assert_each_delivered_once(&good_ids);
    // A second restart: the parked records stay parked and nothing crashes. The jq
    // workers die with the service (even killed with -9).
    let workers = jq_workers_of(w.svc.pid());
    assert!(!workers.is_empty(), "the service started jq workers");
    w.svc.kill9();
    until(10, "the jq workers gone with the service", || async {
        workers.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    w.svc = Service::start_with(relay_options().data_dir(&dir)).await;
    health_stays_up(&w.svc, 5).await;
    assert!(deliveries(&w.svc, bad).await.iter().all(|d| d["state"] == "failed"));
}

/// The pids of the `__jq-worker` children of process `parent`.
fn jq_workers_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the closing parenthesis.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && cmdline.contains("__jq-worker")
        })
        .collect()
}
