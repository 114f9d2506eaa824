//! `mts-connector demo`: the whole flow in one command. It starts fake ODK Central,
//! MTS and Odoo in this process, the service on a free port with a throw-away data dir,
//! creates a connector, imports three days of registrations and prints the runs and
//! the tokens as they arrive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{LogFormat, ServeConfig};
use crate::engine::EngineConfig;
use crate::fakes::{FakeMts, FakeOdk, FakeOdoo};
use crate::model::format_datetime;
use crate::secret::Secret;
use crate::server::{MODELS, serve_on};
use crate::store::Store;

const KEY: &str = "demo-api-key";
const SUBMISSIONS: usize = 1_200;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn rpc(http: &reqwest::Client, url: &str, model: &str, method: &str, args: Value) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
        "service": "object", "method": "execute_kw",
        "args": ["mts_connector", 2, KEY, model, method, args, {}]}});
    let resp: Value =
        http.post(format!("{url}/jsonrpc")).json(&body).send().await.map_err(err)?.json().await.map_err(err)?;
    match resp.get("error") {
        Some(e) => Err(format!("{model}.{method}: {}", e["data"]["message"])),
        None => Ok(resp["result"].clone()),
    }
}

/// Runs the demo, printing to stdout. Returns when every run has ended.
pub async fn run() -> Result<(), String> {
    let odk = FakeOdk::start("collector@example.org", "odk-demo-password").await.map_err(err)?;
    let mts = FakeMts::start().await.map_err(err)?;
    let odoo = FakeOdoo::start("openg2p", "admin", "odoo-demo-password").await.map_err(err)?;
    let end = Utc::now() - TimeDelta::minutes(5);
    let start = end - TimeDelta::days(3);
    odk.add_form("1", "registration");
    odk.add_generated_submissions("1", "registration", SUBMISSIONS, start, end);
    println!("fake ODK Central  {} ({SUBMISSIONS} registrations over 3 days)", odk.url());
    println!("fake MTS          {}", mts.url());
    println!("fake Odoo         {}", odoo.url());

    let data_dir = std::env::temp_dir().join(format!("mts-connector-demo-{}", std::process::id()));
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().map_err(err)?,
        data_dir: data_dir.clone(),
        db_name: "mts_connector".into(),
        api_login: "admin".into(),
        api_key: Some(Secret::new(KEY)),
        log_format: LogFormat::Text,
        engine: EngineConfig { poll_min: Duration::from_millis(200), ..EngineConfig::default() },
        limits: Default::default(),
        store: Default::default(),
    };
    let store = Arc::new(Store::open(&data_dir, MODELS).map_err(err)?);
    let listener = TcpListener::bind(config.listen).await.map_err(err)?;
    let url = format!("http://{}", listener.local_addr().map_err(err)?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(serve_on(store, listener, config, async {
        let _ = stopped.await;
    }));
    println!("mts-connector     {url} (data dir {})\n", data_dir.display());

    let http = reqwest::Client::new();
    let result = drive(&http, &url, &odk, &mts, &odoo, start, end).await;
    let _ = stop.send(());
    let _ = service.await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn drive(
    http: &reqwest::Client,
    url: &str,
    odk: &FakeOdk,
    mts: &FakeMts,
    odoo: &FakeOdoo,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
) -> Result<(), String> {
    let connector = json!({
        "name": "Demo registrations",
        "mts_url": mts.url(),
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "max_records_per_request": 500,
        "odk_base_url": odk.url(),
        "odk_odata_url": odk.odata_url("1", "registration"),
        "odk_email": "collector@example.org",
        "odk_password": "odk-demo-password",
        "callback_url": odoo.callback_url(),
        "callback_authtype": "odoo",
        "callback_auth_url": odoo.auth_url(),
        "callback_auth_database": "openg2p",
        "callback_auth_username": "admin",
        "callback_auth_password": "odoo-demo-password",
        "output_format": "{\"registration\": .input.__id, \"token\": .output.token}",
    });
    let id = rpc(http, url, "mts.connector", "create", json!([connector])).await?;
    println!("created connector {id}: ODK -> MTS -> Odoo, at most 500 submissions per MTS request");
    rpc(http, url, "mts.connector", "action_import", json!([[id], format_datetime(start), format_datetime(end)]))
        .await?;
    println!("queued a manual import of [{}, {})\n", format_datetime(start), format_datetime(end));

    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut printed_tokens = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let runs = rpc(
            http,
            url,
            "mts.connector.run",
            "search_read",
            json!([
                [["connector_id", "=", id]],
                ["window_start", "window_end", "state", "records_expected", "mts_request_id"]
            ]),
        )
        .await?;
        let runs = runs.as_array().cloned().unwrap_or_default();
        for run in &runs {
            let run_id = run["id"].as_u64().unwrap_or(0);
            let line = format!(
                "run #{run_id:<3} [{} -> {})  {:<10} {}",
                run["window_start"].as_str().unwrap_or("?"),
                run["window_end"].as_str().unwrap_or("?"),
                run["state"].as_str().unwrap_or("?"),
                match run["records_expected"].as_i64() {
                    Some(n) if run["state"] != "queued" => format!("{n} submissions"),
                    _ => String::new(),
                },
            );
            if seen.get(&run_id) != Some(&line) {
                println!("{line}");
                seen.insert(run_id, line);
            }
        }
        let received = odoo.received();
        for cb in received.iter().skip(printed_tokens).take(3usize.saturating_sub(printed_tokens)) {
            if let Some(body) = &cb.body {
                println!("  token delivered to Odoo: {body}");
            }
        }
        printed_tokens = printed_tokens.max(received.len().min(3));
        let done = !runs.is_empty()
            && runs.iter().all(|r| {
                matches!(r["state"].as_str(), Some("done" | "done_with_errors" | "empty" | "failed" | "cancelled"))
            });
        if done && received.len() >= SUBMISSIONS {
            println!(
                "\n{} runs, {} MTS requests, {} tokens delivered to the fake Odoo. Done.",
                runs.len(),
                mts.submissions().len(),
                received.len()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the demo did not finish in 5 minutes ({} tokens delivered)", received.len()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
