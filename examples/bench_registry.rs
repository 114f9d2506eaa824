//! Registry walk benchmark (run by scripts/bench_registry.sh; not a test).
//!
//! Walks a fake OpenG2P registry of N registrants (70% match the default domain) into
//! the fake MTS, whose callbacks write every token back into the registry, twice in the
//! same run, each time on a fresh registry and MTS:
//!
//! 1. **fakes alone**: this program itself does exactly the HTTP work of a walk (the
//!    same `search_read` pages, the same VID call, the same `/authtoken/json` bodies,
//!    the same four pages in flight and the same status polling) with nothing else: no
//!    store, no run records. It is what the two fakes can serve.
//! 2. **the service**: the real `mts-connector` binary walks the registry as a
//!    connector run.
//!
//! Prints a Markdown table: registrants per second for both, and the peak memory
//! (VmHWM) of the service process.

#[path = "support/bench.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;
use mts_connector::clients::mts::{MtsClient, StatusOutcome, SubmitOutcome, is_terminal};
use mts_connector::clients::odoo::{Credentials, OdooClient};
use mts_connector::engine::registry::authdata;

/// Pages of the direct baseline waiting in MTS at once: the connector default.
const PAGES_IN_FLIGHT: usize = mts_connector::model::connector::DEFAULT_MAX_PARALLEL as usize;
use mts_connector::fakes::{FakeMts, FakeRegistry, TOKEN_TYPE};
use mts_connector::model::connector::{DEFAULT_G2P_DOMAIN, DEFAULT_G2P_FIELDS};
use mts_connector::model::fields::Record;
use mts_connector::mts::{Input, Secrets, build_request, endpoint_url};
use mts_connector::secret::Secret;
use serde_json::{Map, Value, json};
use support::{Svc, rpc};

const DB: &str = "openg2p";
const LOGIN: &str = "mts";
const PW: &str = "registry-pw";
const POLL: Duration = Duration::from_millis(50);

/// A `/proc/<pid>/status` field in MiB.
fn proc_mib(pid: u32, field: &str) -> f64 {
    support::status_kb(pid, field) as f64 / 1024.0
}

/// The registry connector, as the service gets it.
fn connector(reg: &FakeRegistry, mts: &FakeMts, page: u64) -> Value {
    let mapping = json!({"vid": "vid", "name": ["given_name", "family_name"], "gender": "gender",
                         "dob": "birthdate", "phoneNumber": "phone", "emailId": "email", "fullAddress": ["address"]});
    json!({
        "name": "bench", "mts_url": mts.url(), "input_type": "custom", "is_recurring": "recurring",
        "interval_minutes": 600, "settle_seconds": 0, "max_records_per_request": page,
        "odoo_url": reg.url(), "odoo_database": DB, "odoo_username": LOGIN, "odoo_password": PW,
        "mapping": mapping.to_string(),
        "callback_url": reg.callback_url(), "callback_httpmethod": "PATCH", "callback_authtype": "odoo",
        "callback_auth_url": reg.auth_url(), "callback_auth_database": DB, "callback_auth_username": LOGIN,
        "callback_auth_password": PW,
        "output_format": format!("{{partner_id: .input.id, id_type: \"{TOKEN_TYPE}\", value: .output.token}}"),
    })
}

/// Tracks one MTS request to its end with the service's polling (first wait 50 ms,
/// doubled while the status does not change).
async fn track(mts: &MtsClient, url: &str, id: &str) {
    let mut wait = POLL;
    let mut last = String::new();
    loop {
        if let StatusOutcome::Status(s) = mts.status(url, id, Duration::from_secs(30)).await {
            if is_terminal(&s) {
                return;
            }
            if s != last {
                last = s;
                wait = POLL;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// The walk done by this program alone: answers (registrants sent, seconds).
async fn fakes_alone(n: u64, page: u64) -> (u64, f64) {
    let reg = FakeRegistry::start(DB, LOGIN, PW, n).await.expect("registry");
    let mts = FakeMts::start().await.expect("mts");
    let mut c = Record::default();
    if let Value::Object(map) = connector(&reg, &mts, page) {
        c.values = map.into_iter().map(|(k, v)| (k.into(), v)).collect();
    }
    c.secrets = BTreeMap::from([("callback_auth_password".to_string(), Secret::new(PW))]);
    let password = Secret::new(PW);
    let reg_url = reg.url();
    let creds = Credentials { url: &reg_url, db: DB, login: LOGIN, password: &password };
    let http = reqwest::Client::new();
    let odoo = OdooClient::new(http.clone(), Duration::from_secs(60));
    let mts_client = MtsClient::new(http);
    let fields: Vec<String> = serde_json::from_str(DEFAULT_G2P_FIELDS).expect("fields");
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let domain: Vec<Value> = serde_json::from_str(DEFAULT_G2P_DOMAIN).expect("domain");
    let started = Instant::now();
    let types: HashMap<String, String> = odoo.field_types(&creds, "res.partner", &field_refs).await.expect("fields");
    odoo.search_count(&creds, "res.partner", &Value::Array(domain.clone())).await.expect("count");
    let (mut last, mut sent) = (0u64, 0u64);
    let mut inflight: VecDeque<String> = VecDeque::new();
    loop {
        while inflight.len() >= PAGES_IN_FLIGHT {
            let id = inflight.pop_front().expect("in flight");
            track(&mts_client, &mts.url(), &id).await;
        }
        let mut d = domain.clone();
        d.push(json!(["id", ">", last]));
        let rows = odoo
            .search_read(&creds, "res.partner", &Value::Array(d), &field_refs, Some("id"), Some(page))
            .await
            .expect("page");
        if rows.is_empty() {
            break;
        }
        let ids: Vec<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
        last = *ids.iter().max().expect("ids");
        let vid_rows = odoo
            .search_read(
                &creds,
                "g2p.reg.id",
                &json!([["partner_id", "in", ids], ["id_type.name", "=", "MOSIP VID"]]),
                &["partner_id", "value"],
                Some("id"),
                None,
            )
            .await
            .expect("vids");
        let vids: HashMap<u64, String> = vid_rows
            .iter()
            .filter_map(|r| Some((r["partner_id"][0].as_u64()?, r["value"].as_str()?.to_string())))
            .collect();
        let records: Vec<Value> = rows
            .iter()
            .map(|r| {
                let row: &Map<String, Value> = r.as_object().expect("row");
                let id = row["id"].as_u64().unwrap_or(0);
                authdata(row, &fields, &types, vids.get(&id).map(String::as_str))
            })
            .collect();
        let body = build_request(&c, Input::Records(&records), None, Secrets::Reveal, Utc::now());
        match mts_client.submit(&endpoint_url(&c, &mts.url()), &body, Duration::from_secs(300)).await {
            SubmitOutcome::Accepted { request_id } => inflight.push_back(request_id),
            other => panic!("MTS did not accept a page: {other:?}"),
        }
        sent += records.len() as u64;
        if (rows.len() as u64) < page {
            break;
        }
    }
    while let Some(id) = inflight.pop_front() {
        track(&mts_client, &mts.url(), &id).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // MTS marks a request processed before it sends the callbacks: let them land.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (reg.tokens().len() as u64) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reg.tokens().len() as u64, sent, "every token landed");
    reg.shutdown().await;
    mts.shutdown().await;
    (sent, secs)
}

struct ServiceRun {
    sent: u64,
    secs: f64,
    pages: i64,
    idle_mib: f64,
    peak_mib: f64,
    cpu: f64,
}

async fn service(bin: &str, n: u64, page: u64) -> ServiceRun {
    let reg = FakeRegistry::start(DB, LOGIN, PW, n).await.expect("registry");
    let mts = FakeMts::start().await.expect("mts");
    let svc = Svc::start(std::path::Path::new(bin), &["--poll-seconds", "0.05"]);
    let pid = svc.child.id();
    let idle_mib = proc_mib(pid, "VmRSS");
    let http = reqwest::Client::new();
    let id = rpc(&http, &svc.url, "mts.connector", "create", json!([connector(&reg, &mts, page)]), json!({})).await;
    let started = Instant::now();
    rpc(&http, &svc.url, "mts.connector", "action_start", json!([[id]]), json!({})).await;
    let walk = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let walks = rpc(
            &http,
            &svc.url,
            "mts.connector.run",
            "search_read",
            json!([[["connector_id", "=", id], ["split_of_id", "=", false]]]),
            json!({"fields": ["state", "records_sent", "pages_done", "error_message"]}),
        )
        .await;
        if let Some(w) = walks.as_array().and_then(|w| w.first())
            && !matches!(w["state"].as_str(), Some("queued" | "submitting" | "retrying"))
        {
            break w.clone();
        }
    };
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(walk["state"], "done", "{walk}");
    let peak_mib = proc_mib(pid, "VmHWM");
    let cpu = support::cpu_ticks(pid) as f64 / 100.0;
    let sent = walk["records_sent"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (reg.tokens().len() as u64) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reg.tokens().len() as u64, sent, "every token landed");
    drop(svc);
    reg.shutdown().await;
    mts.shutdown().await;
    ServiceRun { sent, secs, pages: walk["pages_done"].as_i64().unwrap_or(0), idle_mib, peak_mib, cpu }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).expect("usage: bench_registry MTS_CONNECTOR_BINARY [REGISTRANTS] [PAGE]");
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let page: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(500);
    eprintln!("fakes alone: {n} registrants, pages of {page}...");
    let (base_sent, base_secs) = fakes_alone(n, page).await;
    eprintln!("the service...");
    let run = service(bin, n, page).await;
    assert_eq!(run.sent, base_sent, "both walks send the same registrants");
    let base_rate = base_sent as f64 / base_secs;
    let rate = run.sent as f64 / run.secs;
    println!(
        "| walk of {n} registrants ({} match), pages of {page} | registrants sent | pages | seconds | registrants/s |",
        run.sent
    );
    println!("|---|---|---|---|---|");
    println!(
        "| the two fakes alone (same pages, same 4 in flight, same polling) | {base_sent} | {} | {base_secs:.1} | {base_rate:.0} |",
        run.pages
    );
    println!(
        "| mts-connector walk (release build) | {} | {} | {:.1} | {rate:.0} ({:.0}% of the fakes alone) |",
        run.sent,
        run.pages,
        run.secs,
        100.0 * rate / base_rate
    );
    println!();
    println!(
        "Service: {:.1} MiB RSS idle after start, {:.1} MiB peak (VmHWM) over the walk; {:.1} CPU seconds \
         (user + system) for the walk, {:.0} µs per registrant.",
        run.idle_mib,
        run.peak_mib,
        run.cpu,
        1e6 * run.cpu / run.sent.max(1) as f64
    );
}
