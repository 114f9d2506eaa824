//! What the benchmark drivers share: starting the release service as a child process,
//! calling its JSON-RPC API, reading `/metrics`, and reading a process's CPU time and
//! memory from `/proc`. Included by the examples with `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const KEY: &str = "bench-api-key";

/// One `mts-connector serve` child with its log in a file.
pub struct Svc {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Svc {
    /// Starts `bin serve` on a free port with a fresh data dir; `extra` are more flags.
    pub fn start(bin: &Path, extra: &[&str]) -> Svc {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("service.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .env("MTSC_API_KEY", KEY)
            .env("RUST_LOG", std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start the service");
        // Owned by the `Svc` at once, so that a panic below kills it (on drop).
        let mut svc = Svc { child, url: String::new(), log, dir };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&svc.log).unwrap_or_default();
            if let Some(i) = text.find("listening on http://") {
                let rest = &text[i + "listening on ".len()..];
                svc.url = rest.split_whitespace().next().unwrap_or_default().to_string();
                return svc;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the service did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the child (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping kills it.
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `model.method(*args, **kwargs)` on the service; panics with the error.
pub async fn rpc(http: &reqwest::Client, url: &str, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"service": "object",
        "method": "execute_kw", "args": ["mts_connector", 2, KEY, model, method, args, kwargs]}});
    let resp: Value = http
        .post(format!("{url}/jsonrpc"))
        .json(&body)
        .send()
        .await
        .expect("rpc call")
        .json()
        .await
        .expect("rpc answer");
    if let Some(e) = resp.get("error") {
        panic!("{model}.{method}: {e}");
    }
    resp["result"].clone()
}

/// A connector's values (as JSON) as the store's record, secrets in their type: what
/// `mts::build_request` takes, for drivers that call MTS themselves.
pub fn record(c: &Value) -> mts_connector::model::fields::Record {
    let mut r = mts_connector::model::fields::Record::default();
    for (k, v) in c.as_object().expect("connector values") {
        if k == "odk_password" || k == "callback_auth_password" {
            r.secrets.insert(k.clone(), mts_connector::secret::Secret::new(v.as_str().unwrap_or_default()));
        } else {
            r.set(k, v.clone());
        }
    }
    r
}

/// Creates connector `c` on the service and queues a manual import of `[start, end)`;
/// answers the connector id.
pub async fn create_and_import(
    http: &reqwest::Client,
    url: &str,
    c: &Value,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Value {
    let id = rpc(http, url, "mts.connector", "create", json!([c]), json!({})).await;
    let window =
        json!([[id], mts_connector::model::format_datetime(start), mts_connector::model::format_datetime(end)]);
    rpc(http, url, "mts.connector", "action_import", window, json!({})).await;
    id
}

/// The `/metrics` text.
pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("metrics text")
}

/// The value of an unlabelled (or first matching) sample.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

/// The cumulative buckets `(le, count)` of an unlabelled histogram.
pub fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, value.parse().ok()?))
        })
        .collect()
}

/// `after - before`, bucket by bucket.
pub fn histogram_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after.iter().map(|(le, n)| (*le, n - before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, m)| *m))).collect()
}

/// utime + stime of a process in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// A `/proc/<pid>/status` line in kB (`VmHWM`, `VmRSS`).
pub fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The `q`-quantile of a sorted slice.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// An ODK connector wired to the fakes.
pub fn connector(name: &str, mts: &str, odk: &str, odata: &str, callback: &str, auth: &str) -> Value {
    json!({
        "name": name,
        "mts_url": mts,
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 1,
        "odk_base_url": odk,
        "odk_odata_url": odata,
        "odk_email": ODK_EMAIL,
        "odk_password": ODK_PW,
        "callback_url": callback,
        "callback_authtype": "odoo",
        "callback_auth_url": auth,
        "callback_auth_database": ODOO_DB,
        "callback_auth_username": "admin",
        "callback_auth_password": ODOO_PW,
        "output_format": "{\"registration\": .input.__id, \"token\": .output.token}",
    })
}

pub const ODK_EMAIL: &str = "collector@example.org";
pub const ODK_PW: &str = "odk-bench-password";
pub const ODOO_DB: &str = "openg2p";
pub const ODOO_PW: &str = "odoo-bench-password";
