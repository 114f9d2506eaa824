//! Starts the real `mts-connector` binary for integration tests and talks to it the way
//! an Odoo client does.
//!
//! Each [`Service`] is one child process on `127.0.0.1:0` with its own data dir (a fresh
//! temp dir unless the test passes one, to restart on the same store). Its stdout and
//! stderr are read continuously by two threads into one shared buffer, so a test can
//! assert on the log at any time ([`Service::log`]). Dropping the `Service` kills the
//! child.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

pub mod world;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// The database name every test service answers to (the binary's default).
pub const DB: &str = "mts_connector";
/// The login every test service answers to (the binary's default).
pub const LOGIN: &str = "admin";
/// The API key tests start the service with: recognisable, so a test can look for it
/// in the log.
pub const API_KEY: &str = "apikey-SECRET0-7f3a9c";
/// The uid the service gives the API user.
pub const UID: u64 = 2;

/// The secret values [`valid_connector`] sets.
pub const ODK_PASSWORD: &str = "odk-pw-SECRET1";
pub const CALLBACK_PASSWORD: &str = "cb-pw-SECRET2";
/// Every recognisable secret a test may send; none may ever come back or be logged.
pub const SECRETS: &[&str] = &[API_KEY, ODK_PASSWORD, CALLBACK_PASSWORD, "SECRET"];

/// How long a service may take to start listening or to stop.
const DEADLINE: Duration = Duration::from_secs(20);
/// How often the helper polls the child and its log while waiting.
const POLL: Duration = Duration::from_millis(20);

/// The environment variables the binary reads; removed from the child's environment
/// unless a test sets them, so the developer's shell cannot change a test's outcome.
const SERVICE_ENV: &[&str] = &[
    "MTSC_CONFIG",
    "MTSC_LISTEN",
    "MTSC_DATA_DIR",
    "MTSC_DB_NAME",
    "MTSC_API_LOGIN",
    "MTSC_API_KEY",
    "MTSC_LOG_FORMAT",
    "RUST_LOG",
];

/// Where [`valid_connector`] points MTS and ODK Central: a local port nothing listens on
/// (the discard port), so a started connector's runs fail at once, without DNS or
/// network, and retry later instead of finishing while a test looks.
pub const CLOSED_URL: &str = "http://127.0.0.1:9";

/// The fields the engine sets on its own while a connector is started; tests that
/// compare whole records leave them out.
pub const ENGINE_FIELDS: &[&str] = &["write_date", "last_run_id", "next_run_at"];

/// `rec` (or each record of a list) without [`ENGINE_FIELDS`].
pub fn stable(rec: &Value) -> Value {
    match rec {
        Value::Array(list) => list.iter().map(stable).collect(),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !ENGINE_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A complete, valid ODK connector: every field its choices make required, secrets set
/// to recognisable values.
pub fn valid_connector() -> Value {
    json!({
        "name": "Registration ODK",
        "mts_url": CLOSED_URL,
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "odk_base_url": CLOSED_URL,
        "odk_odata_url": format!("{CLOSED_URL}/v1/projects/1/forms/reg.svc/Submissions"),
        "odk_email": "odk-user@example.org",
        "odk_password": ODK_PASSWORD,
        "delivery_type": "callback",
        "callback_url": "https://registry.example.org/api/v1/registry/callback",
        "callback_httpmethod": "POST",
        "callback_timeout": 10,
        "callback_authtype": "odoo",
        "callback_auth_url": "https://registry.example.org/web/session/authenticate",
        "callback_auth_database": "registry",
        "callback_auth_username": "callback-user",
        "callback_auth_password": CALLBACK_PASSWORD,
    })
}

/// `base` with the keys of `patch` set on it (both JSON objects).
pub fn merged(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Some(p)) = (out.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// How to start a service.
#[derive(Debug, Clone)]
pub struct Options {
    args: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    api_key: Option<String>,
    rust_log: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            args: Vec::new(),
            env: Vec::new(),
            data_dir: None,
            api_key: Some(API_KEY.to_string()),
            rust_log: "info".to_string(),
        }
    }
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }

    /// An extra command-line argument after `serve`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable for the child.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Use this data dir instead of a fresh temp dir (to restart on the same store).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Start without `MTSC_API_KEY`, so the service uses (or creates) `<data-dir>/api-key`.
    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    /// The `RUST_LOG` filter (default `info`).
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = filter.into();
        self
    }
}

/// A service process that ended before it listened.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
    pub after: Duration,
}

/// An HTTP answer as the client saw it.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Raw {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }

    /// The `session_id` the answer sets, if any.
    pub fn session_id(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next()?.trim();
            let (k, v) = first.split_once('=')?;
            (k == "session_id" && !v.is_empty()).then(|| v.to_string())
        })
    }
}

/// One running `mts-connector serve`.
pub struct Service {
    child: Child,
    base_url: String,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    data_dir: PathBuf,
    _temp: Option<TempDir>,
    client: reqwest::Client,
    next_id: AtomicU64,
    /// The credentials `call`-style helpers use.
    pub db: String,
    pub login: String,
    pub password: String,
}

fn spawn_reader(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => log.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&line)),
            }
        }
    })
}

/// The address in the `listening on http://ADDR` log line.
fn listening_addr(log: &str) -> Option<String> {
    let rest = &log[log.find("listening on http://")? + "listening on http://".len()..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\\').unwrap_or(rest.len());
    let addr = &rest[..end];
    (!addr.is_empty() && !addr.ends_with(":0")).then(|| addr.to_string())
}

impl Service {
    /// A service with the default options (fresh data dir, [`API_KEY`], `RUST_LOG=info`).
    pub async fn start() -> Service {
        Self::start_with(Options::new()).await
    }

    /// A service with `options`; panics (with the log) when it does not come up.
    pub async fn start_with(options: Options) -> Service {
        match Self::try_start(options).await {
            Ok(s) => s,
            Err(e) => panic!("the service exited with {} before listening; its log:\n{}", e.status, e.log),
        }
    }

    /// Starts a service and waits until it listens (deadline 20 s), or until it exits.
    pub async fn try_start(options: Options) -> Result<Service, Exited> {
        let (data_dir, temp) = match &options.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                (temp.path().join("data"), Some(temp))
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mts-connector"));
        for key in SERVICE_ENV {
            cmd.env_remove(key);
        }
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(&data_dir);
        cmd.args(&options.args);
        cmd.env("RUST_LOG", &options.rust_log);
        if let Some(key) = &options.api_key {
            cmd.env("MTSC_API_KEY", key);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn mts-connector");
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            spawn_reader(child.stderr.take().expect("stderr is piped"), log.clone()),
            spawn_reader(child.stdout.take().expect("stdout is piped"), log.clone()),
        ];
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut service = Service {
            child,
            base_url: String::new(),
            log,
            readers,
            data_dir,
            _temp: temp,
            client,
            next_id: AtomicU64::new(1),
            db: DB.to_string(),
            login: LOGIN.to_string(),
            password: options.api_key.clone().unwrap_or_default(),
        };
        loop {
            if let Some(addr) = listening_addr(&service.log()) {
                service.base_url = format!("http://{addr}");
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait().expect("try_wait") {
                service.join_readers();
                return Err(Exited { status, log: service.log(), after: started.elapsed() });
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the service did not log its listening address within {DEADLINE:?}; its log:\n{}",
                service.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.base_url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (deadline 20 s) until the log contains `needle`; panics otherwise.
    pub async fn wait_for_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(started.elapsed() < DEADLINE, "{needle:?} never appeared in the log:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL, then reap the child.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
    }

    /// SIGTERM (through `kill -TERM`), then wait (deadline 20 s) for the exit status.
    /// The log is complete when this returns.
    pub async fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_readers();
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "the service did not stop within {DEADLINE:?}:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }

    // ---- HTTP ----

    /// Any request: `method` on `path`, with an optional body, content type and
    /// `session_id` cookie.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        cookie: Option<&str>,
    ) -> Raw {
        let mut req = self.client.request(method, format!("{}{path}", self.base_url));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(session) = cookie {
            req = req.header(reqwest::header::COOKIE, format!("session_id={session}"));
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}; log:\n{}", self.log()));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("response body");
        Raw { status, headers, body }
    }

    /// POST `body` as JSON to `path`, with an optional `session_id` cookie.
    pub async fn post(&self, path: &str, body: &Value, cookie: Option<&str>) -> Raw {
        self.request(reqwest::Method::POST, path, Some(body.to_string().into_bytes()), Some("application/json"), cookie)
            .await
    }

    /// POST raw bytes with the given content type.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: Option<&str>) -> Raw {
        self.request(reqwest::Method::POST, path, Some(body), content_type, None).await
    }

    pub async fn get(&self, path: &str) -> Raw {
        self.request(reqwest::Method::GET, path, None, None, None).await
    }

    /// The JSON-RPC envelope Odoo clients send, with a fresh id.
    pub fn envelope(&self, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        json!({"jsonrpc": "2.0", "method": "call", "params": params, "id": id})
    }

    /// A JSON-RPC call on a web path (`/web/...`), with an optional session cookie.
    pub async fn web(&self, path: &str, params: Value, cookie: Option<&str>) -> Raw {
        let body = self.envelope(params);
        self.post(path, &body, cookie).await
    }

    /// `/jsonrpc` `service.method(*args)`: the full JSON-RPC response.
    pub async fn call(&self, service: &str, method: &str, args: Value) -> Value {
        let body = self.envelope(json!({"service": service, "method": method, "args": args}));
        let raw = self.post("/jsonrpc", &body, None).await;
        assert_eq!(raw.status, 200, "HTTP status of /jsonrpc: {}", raw.body);
        let resp = raw.json();
        assert_eq!(resp["jsonrpc"], "2.0", "{resp}");
        assert_eq!(resp["id"], body["id"], "the answer carries the request's id: {resp}");
        resp
    }

    /// `object.execute_kw` with this service's credentials: the result, or the error
    /// object.
    pub async fn execute_kw(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, Value> {
        let resp =
            self.call("object", "execute_kw", json!([self.db, UID, self.password, model, method, args, kwargs])).await;
        into_result(resp)
    }

    /// The runs of `connector`, oldest first.
    pub async fn runs(&self, connector: u64) -> Vec<Value> {
        let runs = self
            .ok("mts.connector.run", "search_read", json!([[["connector_id", "=", connector]]]), json!({"order": "id"}))
            .await;
        runs.as_array().cloned().unwrap_or_default()
    }

    /// `execute_kw` that must succeed.
    pub async fn ok(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
        match self.execute_kw(model, method, args.clone(), kwargs).await {
            Ok(v) => v,
            Err(e) => panic!("{model}.{method}({args}) failed: {e}"),
        }
    }

    /// `execute_kw` that must fail: the error object.
    pub async fn err(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
        match self.execute_kw(model, method, args.clone(), kwargs).await {
            Ok(v) => panic!("{model}.{method}({args}) succeeded with {v}, expected an error"),
            Err(e) => e,
        }
    }

    /// Shorthand for `mts.connector` calls without kwargs.
    pub async fn connector(&self, method: &str, args: Value) -> Value {
        self.ok("mts.connector", method, args, json!({})).await
    }

    /// Creates a connector and answers its id.
    pub async fn create(&self, vals: &Value) -> u64 {
        let id = self.connector("create", json!([vals])).await;
        id.as_u64().unwrap_or_else(|| panic!("create answered {id}, not an id"))
    }

    /// Reads one connector (every field).
    pub async fn read(&self, id: u64) -> Value {
        let rows = self.connector("read", json!([[id]])).await;
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
        rows[0].clone()
    }

    /// `search_count([])` on connectors.
    pub async fn count(&self) -> u64 {
        self.connector("search_count", json!([[]])).await.as_u64().expect("a count")
    }
}

/// A JSON-RPC response as `Ok(result)` or `Err(error)`.
pub fn into_result(resp: Value) -> Result<Value, Value> {
    match (resp.get("result"), resp.get("error")) {
        (Some(r), None) => Ok(r.clone()),
        (None, Some(e)) => Err(e.clone()),
        _ => panic!("a JSON-RPC response has exactly one of result and error: {resp}"),
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of every model, for checking that a run of hostile calls changed nothing.
pub async fn snapshot(svc: &Service) -> Value {
    let mut out = serde_json::Map::new();
    for model in ["mts.connector", "mts.connector.run", "mts.connector.delivery"] {
        out.insert(model.into(), svc.ok(model, "search_read", json!([[]]), json!({"order": "id"})).await);
    }
    Value::Object(out)
}

/// After a fuzz run: the service is alive, the store is as `before`, nothing panicked, and
/// the metrics' method labels stayed a bounded, plain vocabulary.
pub async fn assert_survived(svc: &Service, before: &Value, seed: u64) {
    assert_eq!(svc.get("/health").await.status, 200);
    assert_eq!(&snapshot(svc).await, before, "seed {seed}: the store changed");
    let log = svc.log();
    assert!(!log.contains("panicked"), "seed {seed}: a panic:\n{log}");
    let metrics = svc.get("/metrics").await.body;
    let methods: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mtsc_rpc_calls_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.len() <= 60, "{methods:?}");
    assert!(
        methods.iter().all(|m| m.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')),
        "{methods:?}"
    );
}
