//! Store benchmark (run by scripts/bench_store.sh; not a test).
//!
//! `bench_store SERVICE_BIN BARE_BIN [RUNS] [DELIVERIES] [RELAY_RECORDS]` prints Markdown
//! tables for BENCHMARKS.md:
//!
//! 1. **History**: a store of RUNS runs and DELIVERIES deliveries (20 connectors) is
//!    written by a child process, then opened by two more, each measured alone (peak
//!    RSS from `/proc/self/status`): schema version 2 as the service opens it, doing
//!    what the service does with it (the relay's start through the state index, a
//!    retention pass, the Odoo addon's "latest runs of a connector" `search_read`
//!    through `api::orm`, idempotency-key look-ups, group-committed writes); and the
//!    baseline, the same data held in memory the way schema version 1 held it
//!    (`StoreOptions::in_memory`: every record a decoded map, searches scan them all),
//!    answering the same `search_read` through the same code.
//! 2. **Relay intake**: the release service with a relay-mode run held open by the fake
//!    MTS; 16 concurrent senders post one record per call (as a pool of MTS workers
//!    would), then 500 per call, to `/relay/{run}`; every answer is a 2xx only after the
//!    record is durable. Baseline: `bench_bare` answering the same bytes.
//!
//! Child modes (internal): `populate DIR RUNS DELIVERIES`, `measure DIR`, `v1 DIR`.

#[path = "support/bench.rs"]
mod support;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use mts_connector::api::orm::{AnswerBudget, Reader};
use mts_connector::model::fields::Record;
use mts_connector::model::{connector, delivery, format_datetime, run};
use mts_connector::server::MODELS;
use mts_connector::store::retention::RetentionPolicy;
use mts_connector::store::{Store, StoreOptions};
use serde_json::{Value, json};

const CONNECTORS: u64 = 20;
/// What the Odoo addon reads of a connector's runs (its `_service_field_map`).
const RUN_FIELDS: &[&str] = &[
    "name",
    "connector_id",
    "trigger",
    "window_start",
    "window_end",
    "state",
    "attempts",
    "mts_request_id",
    "mts_status",
    "records_expected",
    "error_message",
    "create_date",
    "done_date",
];

fn kb(key: &str) -> u64 {
    support::status_kb(std::process::id(), key)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn run_record(id: u64, now: &str) -> Record {
    let mut r = Record { id, ..Default::default() };
    r.set("name", format!("#{id}"));
    r.set("connector_id", 1 + id % CONNECTORS);
    r.set("trigger", "schedule");
    // As a connector firing every 5 minutes makes them: run `id` made at `made`, its
    // window ending 2 minutes (the settle delay) before.
    let made =
        chrono::DateTime::from_timestamp(1_790_000_000 + id as i64 * 300 / CONNECTORS as i64, 0).unwrap_or_default();
    r.set("window_start", format_datetime(made - TimeDelta::minutes(7)));
    r.set("window_end", format_datetime(made - TimeDelta::minutes(2)));
    r.set("state", "done");
    r.set("attempts", 1);
    r.set("mts_request_id", format!("{:032x}", id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    r.set("mts_status", "processed");
    r.set("records_expected", 500);
    r.set("create_date", now);
    r.set("write_date", now);
    r.set("done_date", now);
    r.set("_created_ms", made.timestamp_millis());
    r
}

fn delivery_key(id: u64) -> String {
    format!("{}:odk:uuid:{:032x}", 1 + id % CONNECTORS, id.wrapping_mul(0x2545_F491_4F6C_DD1D))
}

fn delivery_record(id: u64, now: &str) -> Record {
    let mut d = Record { id, ..Default::default() };
    d.set("connector_id", 1 + id % CONNECTORS);
    d.set("run_id", 1 + id / 500);
    d.set("key", delivery_key(id));
    d.set("state", "delivered");
    d.set("attempts", 1);
    d.set("last_status", 200);
    d.set("create_date", now);
    d.set("write_date", now);
    d.set("delivered_at", now);
    d
}

fn populate(dir: &Path, runs: u64, deliveries: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = Store::open(dir, MODELS).expect("open");
        let now = format_datetime(Utc::now());
        let ids = store.next_ids(connector::MODEL, CONNECTORS).expect("ids");
        let cs = ids
            .map(|id| {
                let mut c = Record { id, ..Default::default() };
                c.set("name", format!("Registrations {id:02}"));
                c
            })
            .collect();
        store.put_all(connector::MODEL, cs).expect("put");
        for (model, n) in [(run::MODEL, runs), (delivery::MODEL, deliveries)] {
            let mut left = n;
            while left > 0 {
                let k = left.min(10_000);
                let ids = store.next_ids(model, k).expect("ids");
                let recs =
                    ids.map(|id| if model == run::MODEL { run_record(id, &now) } else { delivery_record(id, &now) });
                store.put_all(model, recs.collect()).expect("put");
                store.flush().await.expect("flush");
                left -= k;
            }
        }
    });
}

/// `search_read([("connector_id", "=", c)], fields, limit=20, order="id desc")` through
/// the API's code, rendered to bytes; answers the latencies in µs.
fn latest_runs(store: &Store, calls: usize, domain: impl Fn(u64) -> Value) -> Vec<u64> {
    let reader = Reader { store, model: &run::RUN };
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls {
        let c = 1 + (i as u64 * 7) % CONNECTORS;
        let t = Instant::now();
        let hits = reader.search(Some(&domain(c)), 0, Some(20), Some("id desc")).expect("search");
        let columns = reader.columns(Some(RUN_FIELDS)).expect("columns");
        let bytes =
            AnswerBudget::default().json_list(&hits, |out, r| reader.render_json(out, r, &columns)).expect("render");
        lat.push(t.elapsed().as_micros() as u64);
        let rows: Vec<Value> = serde_json::from_str(&bytes).expect("json");
        assert_eq!(rows.len(), 20, "{bytes}");
        assert_eq!(rows[0]["connector_id"][0], c);
    }
    lat.sort_unstable();
    lat
}

fn summary(lat: &[u64]) -> Value {
    let mean = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64;
    json!({"mean_us": mean, "p50_us": support::quantile(lat, 0.5), "p99_us": support::quantile(lat, 0.99)})
}

/// The service's view of a large history: schema version 2.
fn measure(dir: &Path) -> Value {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let t = Instant::now();
        let store = Store::open_with(dir, MODELS, StoreOptions::default()).expect("open");
        let open_ms = t.elapsed().as_secs_f64() * 1000.0;
        let rss_open = kb("VmRSS");
        // What the relay does at start: the pending deliveries through the state index.
        let t = Instant::now();
        let relay = mts_connector::relay::Relay::new(
            &store,
            mts_connector::relay::RelayConfig::default(),
            reqwest::Client::new(),
        );
        let relay_ms = t.elapsed().as_secs_f64() * 1000.0;
        drop(relay);
        // The engine's start once it reads open runs through the state index.
        let open_runs = ["queued", "submitting", "submitted", "retrying"]
            .iter()
            .map(|s| store.count_index(run::MODEL, "state", &[&json!(s)]).expect("count"))
            .sum::<usize>();
        // A retention pass that keeps everything (the counts are within the limits).
        let t = Instant::now();
        let policy = RetentionPolicy {
            runs_per_connector: 1_000_000,
            deliveries_per_connector: 1_000_000,
            ..RetentionPolicy::default()
        };
        let pruned = store.prune(&policy, Utc::now()).await.expect("prune");
        let prune_ms = t.elapsed().as_secs_f64() * 1000.0;
        let eq = latest_runs(&store, 2000, |c| json!([["connector_id", "=", c]]));
        let inn = latest_runs(&store, 2000, |c| json!([["connector_id", "in", [c]]]));
        // Idempotency keys, half of them held.
        let t = Instant::now();
        let mut held = 0;
        for i in 0..10_000u64 {
            let key = if i % 2 == 0 { delivery_key(1 + i * 97 % 1_000_000) } else { format!("9:odk:new-{i}") };
            held += usize::from(
                store.index_ids(delivery::MODEL, "key", &[&json!(key)], false).expect("ids").next().is_some(),
            );
        }
        let lookup_us = t.elapsed().as_secs_f64() * 1e6 / 10_000.0;
        // Writes as the relay makes them: one record per writer, 16 writers sharing commits.
        let store = Arc::new(store);
        let t = Instant::now();
        let writes = 20_000usize;
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (store, done) = (store.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let now = format_datetime(Utc::now());
                while done.fetch_add(1, Ordering::SeqCst) < writes {
                    let rec = {
                        let _g = store.write_lock();
                        let id = store.next_id(delivery::MODEL).expect("id");
                        let mut d = delivery_record(id, &now);
                        d.set("state", "pending");
                        store.put(delivery::MODEL, d.clone()).expect("put");
                        d
                    };
                    store.flush().await.expect("flush");
                    drop(rec);
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let writes_per_s = writes as f64 / t.elapsed().as_secs_f64();
        json!({
            "open_ms": open_ms, "rss_open_kb": rss_open, "relay_start_ms": relay_ms, "open_runs": open_runs,
            "prune_ms": prune_ms, "pruned": pruned.runs + pruned.deliveries,
            "latest_eq": summary(&eq), "latest_in": summary(&inn),
            "lookup_us": lookup_us, "held": held, "writes_per_s": writes_per_s,
            "file_bytes": store.file_bytes(),
            "hwm_kb": kb("VmHWM"),
        })
    })
}

/// The baseline: the same history held in memory as schema version 1 held it.
fn v1(dir: &Path) -> Value {
    let t = Instant::now();
    let store =
        Store::open_with(dir, MODELS, StoreOptions { in_memory: true, ..StoreOptions::default() }).expect("open");
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut n = 0;
    store
        .scan(run::MODEL, false, |_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .expect("scan");
    let eq = latest_runs(&store, 20, |c| json!([["connector_id", "=", c]]));
    let inn = latest_runs(&store, 20, |c| json!([["connector_id", "in", [c]]]));
    json!({"open_ms": open_ms, "runs": n, "latest_eq": summary(&eq), "latest_in": summary(&inn), "hwm_kb": kb("VmHWM")})
}

fn child(mode: &str, args: &[String]) -> Value {
    let me = std::env::current_exe().expect("exe");
    let out = Command::new(me).arg(mode).args(args).stderr(Stdio::inherit()).output().expect("child");
    assert!(out.status.success(), "{mode} failed");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn ms(us: &Value) -> String {
    format!("{:.3} ms", us.as_f64().unwrap_or(0.0) / 1000.0)
}

/// The release service started on the large history: how long until it listens, its
/// memory after the start and after 500 `search_read`s of a connector's latest runs over
/// JSON-RPC (the Odoo addon's query), and their latency.
fn service_on(bin: &Path, data: &Path) -> Value {
    let logs = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    // With a retention that keeps this history (a deployment that holds it has one):
    // at the defaults the first pass would remove 980,000 runs while this measures.
    let keep = ["--run-retention", "1000000", "--delivery-retention", "1000000"];
    let svc = support::Svc::start_on(bin, logs, data, &keep);
    let start_ms = t.elapsed().as_secs_f64() * 1000.0;
    let pid = svc.pid();
    let rss_start_kb = support::status_kb(pid, "VmRSS");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut lat: Vec<u64> = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut lat = Vec::new();
        for i in 0..500u64 {
            let t = Instant::now();
            let rows = support::rpc(
                &http,
                &svc.url,
                run::MODEL,
                "search_read",
                json!([[["connector_id", "=", 1 + i % CONNECTORS]]]),
                json!({"fields": ["name", "state", "window_start", "window_end", "records_expected"], "limit": 20, "order": "id desc"}),
            )
            .await;
            lat.push(t.elapsed().as_micros() as u64);
            assert_eq!(rows.as_array().map(Vec::len), Some(20), "the latest 20 runs");
        }
        lat
    });
    lat.sort_unstable();
    let out = json!({
        "start_ms": start_ms,
        "rss_start_kb": rss_start_kb,
        "hwm_kb": support::status_kb(pid, "VmHWM"),
        "p50_us": support::quantile(&lat, 0.5),
        "p99_us": support::quantile(&lat, 0.99),
    });
    svc.stop();
    out
}

fn history(bin: &Path, runs: u64, deliveries: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let d = data.to_string_lossy().to_string();
    let t = Instant::now();
    child("populate", &[d.clone(), runs.to_string(), deliveries.to_string()]);
    eprintln!("populated {runs} runs and {deliveries} deliveries in {:?}", t.elapsed());
    let service = service_on(bin, &data);
    let v2 = child("measure", std::slice::from_ref(&d));
    let base = child("v1", std::slice::from_ref(&d));
    println!(
        "| {runs} runs + {deliveries} deliveries (20 connectors) | schema version 2 (the service's store) | schema version 1 equivalent: all in memory (baseline) | ratio |"
    );
    println!("|---|---|---|---|");
    let hwm = |v: &Value| v["hwm_kb"].as_u64().unwrap_or(0);
    println!(
        "| peak RSS (VmHWM) of the process | {} | {} | {:.3} |",
        mib(hwm(&v2)),
        mib(hwm(&base)),
        hwm(&v2) as f64 / hwm(&base).max(1) as f64
    );
    println!(
        "| open (restart) | {:.0} ms ({} after open) | {:.0} ms | {:.4} |",
        v2["open_ms"].as_f64().unwrap_or(0.0),
        mib(v2["rss_open_kb"].as_u64().unwrap_or(0)),
        base["open_ms"].as_f64().unwrap_or(0.0),
        v2["open_ms"].as_f64().unwrap_or(0.0) / base["open_ms"].as_f64().unwrap_or(1.0).max(0.001)
    );
    for (what, key) in [
        ("`search_read([(\"connector_id\", \"=\", X)], limit=20, order=\"id desc\")`, 13 fields", "latest_eq"),
        ("the addon's `[(\"connector_id\", \"in\", [X])]`, same", "latest_in"),
    ] {
        for q in ["p50_us", "p99_us"] {
            println!(
                "| {what}: {} | {} | {} | {:.4} |",
                q.trim_end_matches("_us"),
                ms(&v2[key][q]),
                ms(&base[key][q]),
                v2[key][q].as_f64().unwrap_or(0.0) / base[key][q].as_f64().unwrap_or(1.0).max(1.0)
            );
        }
    }
    println!(
        "| relay start (pending deliveries through the state index) | {:.1} ms | - | - |",
        v2["relay_start_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| retention pass over the whole history (keeping all) | {:.0} ms | - | - |",
        v2["prune_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| idempotency-key look-up on disk (de-duplication) | {:.1} µs | - | - |",
        v2["lookup_us"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| durable writes, 16 writers, one record each, group commits | {:.0} records/s | - | - |",
        v2["writes_per_s"].as_f64().unwrap_or(0.0)
    );
    println!("| store file | {:.0} MiB | - | - |", v2["file_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20));
    println!();
    println!("The release service started on this history (one process, measured alone):");
    println!();
    println!("| the service | |");
    println!("|---|---|");
    println!(
        "| start until it listens (restart with the large history) | {:.0} ms |",
        service["start_ms"].as_f64().unwrap_or(0.0)
    );
    println!("| memory after the start (VmRSS) | {} |", mib(service["rss_start_kb"].as_u64().unwrap_or(0)));
    println!(
        "| JSON-RPC `search_read` of a connector's latest 20 runs: p50, p99 | {}, {} |",
        ms(&service["p50_us"]),
        ms(&service["p99_us"])
    );
    println!(
        "| peak RSS (VmHWM) over the start and the 500 calls | {} |",
        mib(service["hwm_kb"].as_u64().unwrap_or(0))
    );
}

/// Posts `records` to the relay from `senders` concurrent keep-alive clients, `per_call`
/// records per call; answers records/s acknowledged.
async fn blast(url: &str, token: &str, records: usize, per_call: usize, senders: usize, tag: &str) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (url, token, next, tag) = (url.to_string(), token.to_string(), next.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let start = next.fetch_add(per_call, Ordering::SeqCst);
                if start >= records {
                    break;
                }
                let items: Vec<Value> = (start..(start + per_call).min(records))
                    .map(|i| json!({"input": {"__id": format!("uuid:{tag}-{i}"), "name": "x"}, "output": {"vid": format!("{i}"), "token": "t", "status": "success"}}))
                    .collect();
                let body = if per_call == 1 { items[0].clone() } else { Value::Array(items) };
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await.expect("post");
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    records as f64 / t.elapsed().as_secs_f64()
}

async fn relay(bin: &Path, bare: &Path, records: usize) {
    use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
    let odk = FakeOdk::start("e@x.org", "pw").await.expect("odk");
    odk.add_form("1", "f");
    let mts = FakeMts::start().await.expect("mts");
    mts.hold_processing(true);
    let odoo = FakeOdoo::start("db", "admin", "odoo-pw").await.expect("odoo");
    let end = Utc::now() - TimeDelta::minutes(10);
    let start = end - TimeDelta::hours(1);
    odk.add_generated_submissions("1", "f", 1, start, end);
    let svc = support::Svc::start(bin, &["--poll-seconds", "0.5"]);
    let http = reqwest::Client::new();
    let c = json!({
        "name": "bench", "mts_url": mts.url(), "input_type": "odk", "is_recurring": "recurring",
        "interval_minutes": 60, "callback_mode": "relay",
        "odk_base_url": odk.url(), "odk_odata_url": odk.odata_url("1", "f"), "odk_email": "e@x.org",
        "odk_password": "pw", "callback_url": odoo.callback_url(), "callback_authtype": "odoo",
        "callback_auth_url": odoo.auth_url(), "callback_auth_database": "db",
        "callback_auth_username": "admin", "callback_auth_password": "odoo-pw",
        "output_format": "{\"id\": .input.__id, \"token\": .output.token}",
    });
    let id = support::rpc(&http, &svc.url, "mts.connector", "create", json!([c]), json!({})).await;
    support::rpc(
        &http,
        &svc.url,
        "mts.connector",
        "action_import",
        json!([[id], format_datetime(start), format_datetime(end)]),
        json!({}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let props = loop {
        if let Some(s) = mts.submissions().first() {
            break s.body["request"]["callbackProperties"].clone();
        }
        assert!(Instant::now() < deadline, "no submission reached the fake MTS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = props["url"].as_str().expect("relay url").to_string();
    let token = props["authStaticBearer"]["token"].as_str().expect("token").to_string();
    let one = blast(&url, &token, records, 1, 16, "one").await;
    let bulk = blast(&url, &token, records * 5, 500, 4, "bulk").await;
    let hwm = support::status_kb(svc.pid(), "VmHWM");
    svc.stop();
    // The baseline: a bare server answering the same bytes to the same senders.
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), br#"{"stored":1,"duplicates":0}"#).expect("write");
    let mut child =
        Command::new(bare).arg(file.path()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("bare");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
        .expect("addr");
    let bare_url = format!("{}/relay/1", line.trim().trim_start_matches("listening on "));
    let base = blast(&bare_url, &token, records, 1, 16, "base").await;
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "| relay intake, 16 concurrent senders | records | records/s acknowledged (2xx after durable) | ratio to the bare server |"
    );
    println!("|---|---|---|---|");
    println!("| bare hyper server answering the same bytes (baseline) | {records} | {base:.0} | 1.00 |");
    println!("| mts-connector, one record per call | {records} | {one:.0} | {:.2} |", one / base);
    println!(
        "| mts-connector, 500 records per call (`callback_in_bulk`), 4 senders | {} | {bulk:.0} | {:.2} |",
        records * 5,
        bulk / base
    );
    println!("\nService peak RSS over the intake (VmHWM): {}.", mib(hwm));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("populate") => {
            populate(Path::new(&args[1]), args[2].parse().expect("runs"), args[3].parse().expect("deliveries"))
        }
        Some("measure") => println!("{}", measure(Path::new(&args[1]))),
        Some("v1") => println!("{}", v1(Path::new(&args[1]))),
        Some(bin) => {
            let bin = PathBuf::from(bin);
            let bare = PathBuf::from(
                args.get(1).expect("usage: bench_store SERVICE_BIN BARE_BIN [RUNS] [DELIVERIES] [RELAY_RECORDS]"),
            );
            let runs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
            let deliveries = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
            let records = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20_000);
            // RUNS = 0: the relay part only.
            if runs > 0 {
                history(&bin, runs, deliveries);
                println!();
            }
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(relay(&bin, &bare, records));
        }
        None => eprintln!("usage: bench_store SERVICE_BIN BARE_BIN [RUNS] [DELIVERIES] [RELAY_RECORDS]"),
    }
}
