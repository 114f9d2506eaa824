//! Operating the service: `/health`, `/ready`, `/metrics`, the run log in text and JSON,
//! and the operator CLI (`connectors`, `import --follow`, `runs`) run as the real binary
//! against a real service and the fake ODK Central, MTS and Odoo.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::{API_KEY, Options, Service};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
use mts_connector::model::format_datetime;
use serde_json::{Value, json};

const ODK_EMAIL: &str = "collector@example.org";
const ODK_PW: &str = "odk-pw-SECRET1";
const ODOO_DB: &str = "registry";
const ODOO_LOGIN: &str = "admin";
const ODOO_PW: &str = "cb-pw-SECRET2";
const PROJECT: &str = "1";
const FORM: &str = "registration";

/// Fast engine settings: status polls every 0.1 s, retries in fractions of a second.
fn fast() -> Options {
    Options::new()
        .arg("--poll-seconds")
        .arg("0.1")
        .arg("--retry-base-seconds")
        .arg("0.2")
        .arg("--retry-cap-seconds")
        .arg("0.5")
}

struct World {
    odk: FakeOdk,
    mts: FakeMts,
    _odoo: FakeOdoo,
    odoo_urls: (String, String),
    svc: Service,
}

impl World {
    async fn start(options: Options) -> World {
        let odk = FakeOdk::start(ODK_EMAIL, ODK_PW).await.expect("fake odk");
        odk.add_form(PROJECT, FORM);
        let mts = FakeMts::start().await.expect("fake mts");
        let odoo = FakeOdoo::start(ODOO_DB, ODOO_LOGIN, ODOO_PW).await.expect("fake odoo");
        let odoo_urls = (odoo.callback_url(), odoo.auth_url());
        let svc = Service::start_with(options).await;
        World { odk, mts, _odoo: odoo, odoo_urls, svc }
    }

    fn connector(&self, patch: Value) -> Value {
        let mut c = json!({
            "name": "Registrations",
            "mts_url": self.mts.url(),
            "input_type": "odk",
            "is_recurring": "recurring",
            "interval_minutes": 60,
            "settle_seconds": 0,
            "odk_base_url": self.odk.url(),
            "odk_odata_url": self.odk.odata_url(PROJECT, FORM),
            "odk_email": ODK_EMAIL,
            "odk_password": ODK_PW,
            "callback_url": self.odoo_urls.0,
            "callback_authtype": "odoo",
            "callback_auth_url": self.odoo_urls.1,
            "callback_auth_database": ODOO_DB,
            "callback_auth_username": ODOO_LOGIN,
            "callback_auth_password": ODOO_PW,
        });
        for (k, v) in patch.as_object().expect("patch is an object") {
            c[k] = v.clone();
        }
        c
    }

    /// `n` submissions over the hour that ended two hours ago: the range to import.
    fn submissions(&self, n: usize) -> (DateTime<Utc>, DateTime<Utc>) {
        let end = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now") - TimeDelta::hours(2);
        let start = end - TimeDelta::hours(1);
        self.odk.add_generated_submissions(PROJECT, FORM, n, start, end);
        (start, end)
    }

    async fn runs(&self, connector: u64) -> Vec<Value> {
        self.svc.runs(connector).await
    }

    /// Imports `[start, end)` over the API and waits until every run has ended.
    async fn import_and_wait(&self, id: u64, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        self.svc.connector("action_import", json!([[id], format_datetime(start), format_datetime(end)])).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self.runs(id).await;
            if !runs.is_empty() && runs.iter().all(terminal) {
                return runs;
            }
            assert!(Instant::now() < deadline, "the import did not end: {runs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn terminal(run: &Value) -> bool {
    matches!(run["state"].as_str(), Some("done" | "done_with_errors" | "empty" | "failed" | "cancelled"))
}

// ---- /metrics parsing ----

/// Every sample of a Prometheus text body: `(name, labels, value)`. Panics on a line
/// that is not a comment or a well-formed sample.
/// A metric sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(comment.starts_with("HELP ") || comment.starts_with("TYPE "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"))),
            None => (series, ""),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "metric name: {line}");
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push((name.to_string(), map, value));
    }
    out
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(svc: &Service) -> (String, Vec<Sample>) {
    let raw = svc.get("/metrics").await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let ct = raw.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let parsed = samples(&raw.body);
    (raw.body, parsed)
}

/// A scrape once `mtsc_runs{state}` is `n` (or after 10 s): the counts by state follow the
/// store's commits, a moment after a run's state is visible to a search.
async fn scrape_with_runs(svc: &Service, state: &str, n: usize) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (text, m) = scrape(svc).await;
        if value(&m, "mtsc_runs", &[("state", state)]) == n as f64 || Instant::now() > deadline {
            return (text, m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_ready(svc: &Service) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = svc.get("/ready").await;
        if raw.status == 200 {
            return raw.json();
        }
        assert!(Instant::now() < deadline, "never ready: {} {}", raw.status, raw.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_answer_json_without_credentials() {
    let svc = Service::start().await;
    let health = svc.get("/health").await;
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["store"], "open", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let ready = until_ready(&svc).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["store"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["scheduler"]["ok"], true, "{ready}");
    // With nothing to do the scheduler sleeps on a timer, and that is alive.
    assert!(ready["checks"]["scheduler"]["detail"].as_str().unwrap_or_default().starts_with("sleeping until"));
    // The readiness probe writes to the store: it changes no record.
    assert_eq!(svc.count().await, 0);
    let (_, metrics) = scrape(&svc).await;
    assert_eq!(value(&metrics, "mtsc_scheduler_alive", &[]), 1.0);
    assert_eq!(value(&metrics, "mtsc_http_requests_total", &[("route", "ready"), ("status", "200")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_runs_records_and_upstream_calls_without_personal_data() {
    let w = World::start(fast()).await;
    let id = w.svc.create(&w.connector(json!({"max_records_per_request": 10}))).await;
    let (start, end) = w.submissions(25);
    let runs = w.import_and_wait(id, start, end).await;
    let done = runs.iter().filter(|r| r["state"] == "done").count();
    assert!(done >= 3, "split into requests of at most 10: {runs:?}");
    // A refused call is counted by its Odoo error class.
    let wrong =
        w.svc.call("object", "execute_kw", json!([common::DB, 2, "wrong", "mts.connector", "read", [[id]]])).await;
    assert!(wrong.get("error").is_some());
    w.svc.call("object", "execute_kw", json!([common::DB, 2, API_KEY, "res.partner", "read", [[1]]])).await;

    let (text, m) = scrape_with_runs(&w.svc, "done", done).await;
    let calls =
        |method: &str, outcome: &str| value(&m, "mtsc_rpc_calls_total", &[("method", method), ("outcome", outcome)]);
    assert_eq!(calls("mts.connector.create", "ok"), 1.0, "{text}");
    assert_eq!(calls("mts.connector.action_import", "ok"), 1.0);
    assert!(calls("mts.connector.run.search_read", "ok") >= 1.0);
    assert_eq!(calls("mts.connector.read", "AccessDenied"), 1.0);
    assert_eq!(calls("other", "UserError"), 1.0, "an unknown model is not a label value");
    assert!(value(&m, "mtsc_rpc_call_duration_seconds_count", &[("method", "mts.connector.create")]) >= 1.0);
    // Runs by state, state changes, windows and records.
    assert_eq!(value(&m, "mtsc_runs", &[("state", "done")]), done as f64);
    assert_eq!(value(&m, "mtsc_run_state_changes_total", &[("state", "done")]), done as f64);
    assert_eq!(value(&m, "mtsc_windows_submitted_total", &[]), done as f64);
    assert_eq!(value(&m, "mtsc_records_submitted_total", &[]), 25.0);
    assert_eq!(value(&m, "mtsc_records", &[("stage", "expected")]), 25.0);
    assert_eq!(value(&m, "mtsc_queue_depth", &[("queue", "runs_open")]), 0.0);
    assert_eq!(value(&m, "mtsc_connectors", &[("job_status", "draft")]), 1.0);
    // Calls to MTS and ODK with their latencies.
    assert_eq!(
        value(&m, "mtsc_upstream_calls_total", &[("upstream", "mts"), ("call", "submit"), ("outcome", "ok")]),
        done as f64
    );
    assert!(
        value(&m, "mtsc_upstream_calls_total", &[("upstream", "mts"), ("call", "status"), ("outcome", "ok")])
            >= done as f64
    );
    assert!(
        value(&m, "mtsc_upstream_calls_total", &[("upstream", "odk"), ("call", "count"), ("outcome", "ok")]) >= 3.0
    );
    assert!(value(&m, "mtsc_upstream_call_duration_seconds_count", &[("upstream", "odk"), ("call", "session")]) >= 1.0);
    assert!(value(&m, "mtsc_process_resident_memory_bytes", &[]) > 0.0);
    // Each MTS endpoint is reported by its host and port, nothing more of its URL.
    let mts_host = w.mts.url().trim_start_matches("http://").to_string();
    assert_eq!(value(&m, "mtsc_mts_endpoint_up", &[("endpoint", &mts_host)]), 1.0);
    assert_eq!(value(&m, "mtsc_mts_endpoint_accepted", &[("endpoint", &mts_host)]), done as f64);
    assert_eq!(value(&m, "mtsc_mts_endpoint_in_flight", &[("endpoint", &mts_host)]), 0.0);
    // No secret, other URL, login or record value anywhere.
    let others: String = text.lines().filter(|l| !l.starts_with("mtsc_mts_endpoint_")).collect();
    for needle in [API_KEY, ODK_PW, ODOO_PW, ODK_EMAIL, "127.0.0.1", "Registrations", "SECRET", "Person "] {
        assert!(!others.contains(needle), "{needle:?} in /metrics");
    }

    // MTS refusing the next window: counted as an HTTP 4xx of the submit call.
    w.mts.fail_next_submits(1, 400);
    let (s2, e2) = (end, end + TimeDelta::minutes(10));
    w.odk.add_generated_submissions(PROJECT, FORM, 2, s2, e2);
    w.import_and_wait(id, s2, e2).await;
    let (_, m) = scrape_with_runs(&w.svc, "failed", 1).await;
    assert_eq!(
        value(&m, "mtsc_upstream_calls_total", &[("upstream", "mts"), ("call", "submit"), ("outcome", "http_4xx")]),
        1.0
    );
    assert_eq!(value(&m, "mtsc_runs", &[("state", "failed")]), 1.0);
}

// ---- logs ----

/// The `run state` lines of a JSON log, as objects; every line of the log must be one
/// JSON object.
fn json_run_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .inspect(|v| assert!(v.is_object(), "{v}"))
        .filter(|v| v["fields"]["message"] == "run state")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_object_per_line_and_one_per_run_state_change() {
    // The format comes from the environment here (the flag is the same option).
    let w = World::start(fast().env("MTSC_LOG_FORMAT", "json")).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    let (start, end) = w.submissions(5);
    let runs = w.import_and_wait(id, start, end).await;
    assert_eq!(runs.len(), 1);
    let run_id = runs[0]["id"].as_u64().expect("run id");
    let lines = json_run_lines(&w.svc.log());
    let mine: Vec<&Value> = lines.iter().filter(|l| l["fields"]["run_id"] == run_id).collect();
    let states: Vec<&str> = mine.iter().map(|l| l["fields"]["state"].as_str().unwrap_or("?")).collect();
    assert_eq!(states, ["queued", "submitting", "submitted", "done"], "{mine:?}");
    let last = &mine[3]["fields"];
    assert_eq!(last["connector_id"], id);
    assert_eq!(last["from"], "submitted");
    assert_eq!(last["trigger"], "manual");
    assert_eq!(last["window_start"], json!(format_datetime(start)));
    assert_eq!(last["window_end"], json!(format_datetime(end)));
    assert_eq!(last["records_expected"], 5);
    assert_eq!(last["attempts"], 1);
    assert!(last["mts_request_id"].as_str().is_some_and(|s| !s.is_empty()), "{last}");
    assert!(last["duration_s"].as_i64().is_some_and(|d| d >= 0), "{last}");
    assert_eq!(mine[3]["level"], "INFO");
    let log = w.svc.log();
    for secret in [API_KEY, ODK_PW, ODOO_PW] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_have_one_line_per_run_state_change_and_rust_log_filters() {
    let w = World::start(fast().arg("--log-format").arg("text")).await;
    let id = w.svc.create(&w.connector(json!({}))).await;
    let (start, end) = w.submissions(3);
    let runs = w.import_and_wait(id, start, end).await;
    let run_id = runs[0]["id"].as_u64().expect("run id");
    let log = w.svc.log();
    let mine: Vec<&str> =
        log.lines().filter(|l| l.contains("run state") && l.contains(&format!("run_id={run_id} "))).collect();
    assert_eq!(mine.len(), 4, "{mine:#?}");
    let done = mine[3];
    for field in [
        format!("connector_id={id}"),
        "state=\"done\"".to_string(),
        "from=\"submitted\"".to_string(),
        "records_expected=3".to_string(),
        "duration_s=".to_string(),
        format!("window_start=\"{}\"", format_datetime(start)),
    ] {
        assert!(done.contains(&field), "{field} missing from {done}");
    }
    assert!(serde_json::from_str::<Value>(done).is_err(), "text, not JSON");

    // RUST_LOG filters by level and target: the engine at `warn` loses the run lines
    // (the server's start line stays, the test helper reads the port from it).
    let quiet = World::start(fast().rust_log("warn,mts_connector::server=info")).await;
    let id = quiet.svc.create(&quiet.connector(json!({}))).await;
    let (start, end) = quiet.submissions(2);
    quiet.import_and_wait(id, start, end).await;
    assert!(!quiet.svc.log().contains("run state"), "{}", quiet.svc.log());
}

// ---- the operator CLI ----

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `mts-connector ARGS` with `env`, none of the developer's MTSC_* variables.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mts-connector"));
    for key in ["MTSC_URL", "MTSC_API_KEY", "MTSC_API_LOGIN", "MTSC_DB_NAME", "RUST_LOG"] {
        cmd.env_remove(key);
    }
    cmd.args(args).envs(env.iter().copied()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finished within 60 s")
        .expect("run the CLI");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl World {
    /// The environment that points the CLI at this world's service.
    fn cli_env(&self) -> [(&'static str, String); 2] {
        [("MTSC_URL", self.svc.url().to_string()), ("MTSC_API_KEY", API_KEY.to_string())]
    }

    async fn cli(&self, args: &[&str]) -> Out {
        let env = self.cli_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(args, &env).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_connectors_with_status_last_run_and_next_run() {
    let w = World::start(fast()).await;
    let out = w.cli(&["connectors"]).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "no connectors"), "{}", out.stderr);
    let a = w.svc.create(&w.connector(json!({"name": "Households"}))).await;
    let b = w.svc.create(&w.connector(json!({"name": "Farmers", "cron_expression": "0 2 * * *"}))).await;
    let (start, end) = w.submissions(2);
    w.import_and_wait(a, start, end).await;
    w.svc.connector("action_start", json!([[b]])).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.svc.read(b).await["next_run_at"] == false {
        assert!(Instant::now() < deadline, "the cron connector never got a next run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = w.svc.read(b).await["next_run_at"].as_str().expect("next run").to_string();
    let out = w.cli(&["connectors"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("ID  NAME"), "{}", out.stdout);
    let households = lines.iter().find(|l| l.contains("Households")).expect("Households listed");
    assert!(households.contains("draft") && households.contains("every 60 min"), "{households}");
    assert!(households.contains(" done "), "its last run: {households}");
    let farmers = lines.iter().find(|l| l.contains("Farmers")).expect("Farmers listed");
    assert!(farmers.contains("running") && farmers.contains("cron 0 2 * * *"), "{farmers}");
    assert!(farmers.ends_with(&next), "next run {next}: {farmers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_follow_shows_progress_and_exits_zero_when_every_window_is_done() {
    let w = World::start(fast()).await;
    w.svc.create(&w.connector(json!({"name": "Households", "max_records_per_request": 100}))).await;
    let (start, end) = w.submissions(450);
    // Both accepted forms: Odoo's and ISO-8601.
    let (from, to) = (format_datetime(start), end.to_rfc3339());
    let out = w.cli(&["import", "Households", "--from", &from, "--to", &to, "--follow"]).await;
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("queued a manual import of ["), "{}", out.stdout);
    assert!(out.stdout.contains("import done:"), "{}", out.stdout);
    assert!(out.stdout.contains("450 records tokenised"), "{}", out.stdout);
    // Not a terminal: one progress line per change, the last one complete.
    let progress: Vec<&str> = out.stderr.lines().collect();
    assert!(!progress.is_empty() && progress.iter().all(|l| l.starts_with('[')), "{}", out.stderr);
    let last = progress.last().copied().unwrap_or_default();
    assert!(last.starts_with("[########################]"), "{last}");
    assert!(last.contains("450/450 records"), "{last}");
    assert!(!out.stderr.contains('\r'));
    assert!(w.mts.submissions().len() >= 5, "split into requests of at most 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_follow_exits_non_zero_when_a_window_fails_and_runs_failed_lists_it() {
    let w = World::start(fast()).await;
    let id = w.svc.create(&w.connector(json!({"name": "Households"}))).await;
    let (start, end) = w.submissions(4);
    w.mts.fail_next_submits(100, 400);
    let id_arg = id.to_string();
    let (from, to) = (start.to_rfc3339(), format_datetime(end));
    let out = w.cli(&["import", &id_arg, "--from", &from, "--to", &to, "--follow"]).await;
    assert_eq!(out.code, 3, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("import ended with 1 of 1 windows not done"), "{}", out.stdout);
    assert!(out.stdout.contains("failed: ATS-REQ-100"), "{}", out.stdout);
    assert!(out.stderr.lines().last().unwrap_or_default().contains("1 failed"), "{}", out.stderr);

    // A later import succeeds; `runs --failed` shows only the failed one.
    w.mts.fail_next_submits(0, 400);
    w.import_and_wait(id, start, end).await;
    let all = w.cli(&["runs", "Households"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(all.stdout.lines().count(), 3, "header and two runs:\n{}", all.stdout);
    let failed = w.cli(&["runs", "Households", "--failed"]).await;
    assert_eq!(failed.code, 0, "{}", failed.stderr);
    let lines: Vec<&str> = failed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", failed.stdout);
    assert!(lines[0].starts_with("RUN  TRIGGER"), "{}", failed.stdout);
    assert!(lines[1].contains("failed") && lines[1].contains("ATS-REQ-100"), "{}", lines[1]);
    assert!(lines[1].contains(&format!("{} -> {}", format_datetime(start), format_datetime(end))), "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_clear_for_an_unreachable_service_a_wrong_key_and_bad_arguments() {
    // A port nothing listens on any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let out = cli(&["connectors", "--url", &closed, "--api-key", "k"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("cannot reach the mts-connector service at {closed}")), "{}", out.stderr);
    assert!(out.stderr.contains("MTSC_URL"), "{}", out.stderr);

    let svc = Service::start().await;
    let out = cli(&["runs", "1", "--url", svc.url(), "--api-key", "not-the-key"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("refused the credentials"), "{}", out.stderr);
    assert!(out.stderr.contains("MTSC_API_KEY") && !out.stderr.contains("not-the-key"), "{}", out.stderr);
    let out = cli(&["connectors", "--url", svc.url()], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no API key"), "{}", out.stderr);
    // The same names as the service: MTSC_API_KEY and MTSC_DB_NAME from the environment.
    let env = [("MTSC_URL", svc.url()), ("MTSC_API_KEY", API_KEY)];
    let out = cli(&["connectors"], &env).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "no connectors"), "{}", out.stderr);
    let out = cli(&["connectors"], &[env[0], env[1], ("MTSC_DB_NAME", "other")]).await;
    assert!(out.code == 1 && out.stderr.contains("database \"other\""), "{}", out.stderr);
    let out = cli(&["runs", "Nobody"], &env).await;
    assert!(out.code == 1 && out.stderr.contains("no connector has the id or name \"Nobody\""), "{}", out.stderr);
    let out = cli(&["import", "1", "--from", "yesterday", "--to", "2026-01-01"], &env).await;
    assert_eq!(out.code, 2, "a usage error");
    assert!(out.stderr.contains("is not a time"), "{}", out.stderr);
    // A service that is not this one.
    let out = cli(&["connectors", "--url", &format!("{}/nothing-here", svc.url()), "--api-key", "k"], &[]).await;
    assert!(out.code == 1 && out.stderr.contains("did not answer like an mts-connector service"), "{}", out.stderr);
}
