//! Prometheus metrics: counters and histograms the service exposes on `/metrics`.
//!
//! One process-wide registry ([`METRICS`]) of families with a fixed set of label names.
//! Label values are bounded by construction: method names come from a fixed list
//! ([`rpc_method_label`]), outcomes and error classes from fixed vocabularies, states
//! from the models' selections. No id, URL, login or record value is ever a label, so
//! the output holds no personal data or secret and its size does not grow with traffic.
//!
//! Values the store already knows (runs by state, records, queue depths) are not
//! counted here: `api::health` reads them at scrape time and passes them to
//! [`Metrics::render`] as [`Gauge`]s, so they survive restarts and never drift.
//!
//! The scheduler's heartbeat ([`Heartbeat`]) lives here too: `/ready` asks it whether
//! the scheduler loop is alive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The registry of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Latency buckets of API calls, in seconds (100 µs to 10 s).
const RPC_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Latency buckets of calls to MTS, ODK Central and Odoo (1 ms to 5 min: MTS pulls ODK
/// inside its POST).
const UPSTREAM_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Scheduler lateness buckets (500 µs to 5 min).
const LATENESS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Every method of every model the API dispatches, and the `common` methods. Anything
/// else is labelled `other`, so a client cannot create label values at will.
const RPC_METHODS: &[&str] = &[
    "version",
    "about",
    "login",
    "authenticate",
    "fields_get",
    "default_get",
    "search",
    "search_count",
    "search_read",
    "read",
    "name_get",
    "name_search",
    "create",
    "write",
    "unlink",
    "copy",
    "action_start",
    "action_stop",
    "action_restart",
    "mts_action_trigger",
    "action_import",
    "action_run_now",
    "action_retry_failed",
    "action_test_connection",
    "preview_mts_request",
];

/// The models the API holds (as `orm` and `ir.model` know them).
const RPC_MODELS: &[&str] = &["ir.model", "mts.connector", "mts.connector.run", "mts.connector.delivery"];

/// The web-session endpoints, labelled by path.
const WEB_PATHS: &[&str] = &[
    "/web/webclient/version_info",
    "/web/session/authenticate",
    "/web/session/get_session_info",
    "/web/session/destroy",
];

/// Every label of a model method, built once: `MODEL_LABELS[model][method]`, each
/// model's `other` last.
static MODEL_LABELS: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
    RPC_MODELS
        .iter()
        .map(|model| RPC_METHODS.iter().chain(&["other"]).map(|m| format!("{model}.{m}")).collect())
        .collect()
});
/// `common.<method>` for the `common` methods, and `common.other` last.
static COMMON_LABELS: LazyLock<Vec<String>> =
    LazyLock::new(|| RPC_METHODS[..4].iter().chain(&["other"]).map(|m| format!("common.{m}")).collect());
/// The web-session paths' labels (`web.session.authenticate`), in `WEB_PATHS` order.
static WEB_LABELS: LazyLock<Vec<String>> =
    LazyLock::new(|| WEB_PATHS.iter().map(|p| p.trim_start_matches('/').replace('/', ".")).collect());

/// The `method` label of a JSON-RPC or XML-RPC call: `common.login`, `mts.connector.search_read`,
/// `web.session.authenticate`, ... Unknown services, models and methods become `other`.
/// Labels are the fixed ones, built once (a call allocates none).
pub fn rpc_method_label(path: &str, params: &serde_json::Value) -> &'static str {
    fn s(v: Option<&serde_json::Value>) -> &str {
        v.and_then(serde_json::Value::as_str).unwrap_or_default()
    }
    let position = |list: &[&str], value: &str| list.iter().position(|m| *m == value);
    let model_method = |model: &str, method: &str| match position(RPC_MODELS, model) {
        Some(i) => MODEL_LABELS[i][position(RPC_METHODS, method).unwrap_or(RPC_METHODS.len())].as_str(),
        None => "other",
    };
    // XML-RPC calls are mapped to the same {service, method, args} as /jsonrpc.
    if path == "/jsonrpc" || path.starts_with("/xmlrpc/") {
        return match (s(params.get("service")), s(params.get("method"))) {
            ("common", m) => COMMON_LABELS[position(&RPC_METHODS[..4], m).unwrap_or(4)].as_str(),
            ("object", "execute" | "execute_kw") => {
                let args = params.get("args");
                model_method(s(args.and_then(|a| a.get(3))), s(args.and_then(|a| a.get(4))))
            }
            _ => "other",
        };
    }
    if let Some(i) = position(WEB_PATHS, path) {
        return WEB_LABELS[i].as_str();
    }
    if path.starts_with("/web/dataset/call_kw") {
        return model_method(s(params.get("model")), s(params.get("method")));
    }
    "other"
}

/// The route label of an HTTP request (never the raw path).
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/jsonrpc" => "jsonrpc",
        "/xmlrpc" => "xmlrpc",
        p if p.starts_with("/xmlrpc/") => "xmlrpc",
        "/health" => "health",
        "/ready" => "ready",
        "/metrics" => "metrics",
        "/web/session/logout" => "web_logout",
        p if p.starts_with("/web/") => "web",
        p if p.starts_with("/relay/") => "relay",
        _ => "other",
    }
}

/// The error class of a failed HTTP call to MTS, ODK Central or Odoo.
pub fn reqwest_error_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() || e.is_body() {
        "body"
    } else {
        "request"
    }
}

/// The outcome class of an HTTP status answered by MTS, ODK Central or Odoo.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        401 | 403 => "auth",
        400..=499 => "http_4xx",
        500..=599 => "http_5xx",
        _ => "http_other",
    }
}

/// Which outside service a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Mts,
    Odk,
    Odoo,
}

impl Upstream {
    fn label(self) -> &'static str {
        match self {
            Upstream::Mts => "mts",
            Upstream::Odk => "odk",
            Upstream::Odoo => "odoo",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Histogram(&'static [f64]),
}

#[derive(Debug, Clone)]
enum Series {
    Counter(u64),
    Histogram { counts: Vec<u64>, sum: f64, count: u64 },
}

impl Series {
    /// Adds what `other` (the same series, counted by another shard) holds.
    fn add(&mut self, other: &Series) {
        match (self, other) {
            (Series::Counter(a), Series::Counter(b)) => *a += b,
            (Series::Histogram { counts, sum, count }, Series::Histogram { counts: c, sum: s, count: n }) => {
                counts.iter_mut().zip(c).for_each(|(a, b)| *a += b);
                *sum += s;
                *count += n;
            }
            _ => {}
        }
    }
}

/// Shards a family's series are counted in: each thread counts in its own (the
/// service's worker threads would otherwise take the same lock for every request),
/// and a scrape adds them up.
const SHARDS: usize = 8;

/// One shard, on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<BTreeMap<Vec<String>, Series>>);

/// The shard of this thread.
fn shard_index() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|i| *i)
}

/// One metric name with its label names and every label set seen so far.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    shards: [Shard; SHARDS],
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: Kind, labels: &'static [&'static str]) -> Family {
        Family { name, help, kind, labels, shards: Default::default() }
    }

    /// Every series, added up over the shards.
    fn series(&self) -> BTreeMap<Vec<String>, Series> {
        let mut all: BTreeMap<Vec<String>, Series> = BTreeMap::new();
        for shard in &self.shards {
            for (k, s) in shard.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                match all.get_mut(k) {
                    Some(total) => total.add(s),
                    None => {
                        all.insert(k.clone(), s.clone());
                    }
                }
            }
        }
        all
    }

    fn with<R>(&self, values: &[&str], f: impl FnOnce(&mut Series) -> R) -> R {
        let mut series = self.shards[shard_index()].0.lock().unwrap_or_else(|p| p.into_inner());
        // Look up by borrowed values first: the common case allocates nothing.
        let found = series.iter_mut().find(|(k, _)| k.iter().map(String::as_str).eq(values.iter().copied()));
        if let Some((_, s)) = found {
            return f(s);
        }
        let fresh = match self.kind {
            Kind::Counter => Series::Counter(0),
            Kind::Histogram(b) => Series::Histogram { counts: vec![0; b.len()], sum: 0.0, count: 0 },
        };
        f(series.entry(values.iter().map(|v| v.to_string()).collect()).or_insert(fresh))
    }

    fn inc_by(&self, values: &[&str], n: u64) {
        self.with(values, |s| {
            if let Series::Counter(c) = s {
                *c += n;
            }
        });
    }

    fn observe(&self, values: &[&str], seconds: f64) {
        let Kind::Histogram(bounds) = self.kind else { return };
        self.with(values, |s| {
            if let Series::Histogram { counts, sum, count } = s {
                if let Some(i) = bounds.iter().position(|b| seconds <= *b) {
                    counts[i] += 1;
                }
                *sum += seconds;
                *count += 1;
            }
        });
    }

    /// Makes a label set appear (at zero) before anything happened to it.
    fn touch(&self, values: &[&str]) {
        self.with(values, |_| ());
    }

    fn render(&self, out: &mut String) {
        let series = self.series();
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for (values, s) in series {
            let labels = label_text(self.labels, &values);
            match (s, self.kind) {
                (Series::Counter(c), _) => {
                    let _ = writeln!(out, "{}{} {c}", self.name, braces(&labels));
                }
                (Series::Histogram { counts, sum, count }, Kind::Histogram(bounds)) => {
                    let mut cumulative = 0;
                    for (bound, n) in bounds.iter().zip(&counts) {
                        cumulative += n;
                        let le = format!("le=\"{bound}\"");
                        let _ = writeln!(out, "{}_bucket{} {cumulative}", self.name, braces(&join(&labels, &le)));
                    }
                    let _ = writeln!(out, "{}_bucket{} {count}", self.name, braces(&join(&labels, "le=\"+Inf\"")));
                    let _ = writeln!(out, "{}_sum{} {sum}", self.name, braces(&labels));
                    let _ = writeln!(out, "{}_count{} {count}", self.name, braces(&labels));
                }
                (Series::Histogram { .. }, Kind::Counter) => {}
            }
        }
    }
}

/// `a="x",b="y"` with Prometheus escaping.
fn label_text(names: &[&str], values: &[String]) -> String {
    names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a},{b}"),
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() { String::new() } else { format!("{{{labels}}}") }
}

/// A value read at scrape time (from the store or the engine), rendered as a gauge.
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// Label name and value pairs.
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Gauge {
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Gauge {
        Gauge { name, help, labels: Vec::new(), value }
    }

    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Gauge {
        self.labels.push((name, value.into()));
        self
    }
}

/// When the scheduler last ticked and until when it sleeps: what `/ready` calls alive.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Milliseconds since the epoch of the start of the current (or last) tick; 0 before
    /// the first one.
    busy_since_ms: AtomicI64,
    /// The deadline the loop sleeps until; 0 while it is working.
    sleeping_until_ms: AtomicI64,
}

/// A tick may take this long before the scheduler counts as stuck.
pub const SCHEDULER_BUSY_LIMIT: TimeDelta = TimeDelta::seconds(300);
/// A sleeping scheduler must have woken this soon after its deadline.
pub const SCHEDULER_WAKE_SLACK: TimeDelta = TimeDelta::seconds(30);

impl Heartbeat {
    /// The loop starts a tick.
    pub fn busy(&self, now: DateTime<Utc>) {
        self.sleeping_until_ms.store(0, Ordering::Relaxed);
        self.busy_since_ms.store(now.timestamp_millis().max(1), Ordering::Relaxed);
    }

    /// The loop goes to sleep until `until` (or until something wakes it earlier).
    pub fn sleeping(&self, until: DateTime<Utc>) {
        self.sleeping_until_ms.store(until.timestamp_millis().max(1), Ordering::Relaxed);
    }

    /// `Ok(what it is doing)` when the loop is alive at `now`, else `Err(why not)`.
    pub fn alive(&self, now: DateTime<Utc>) -> Result<String, String> {
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        let (busy, sleeping) =
            (self.busy_since_ms.load(Ordering::Relaxed), self.sleeping_until_ms.load(Ordering::Relaxed));
        if busy == 0 {
            return Err("the scheduler has not started".into());
        }
        if sleeping != 0 {
            let until = at(sleeping);
            return if now <= until + SCHEDULER_WAKE_SLACK {
                Ok(format!("sleeping until {}", crate::model::format_datetime(until)))
            } else {
                Err(format!("the scheduler should have woken at {}", crate::model::format_datetime(until)))
            };
        }
        let since = now - at(busy);
        if since <= SCHEDULER_BUSY_LIMIT {
            Ok(format!("working for {} ms", since.num_milliseconds().max(0)))
        } else {
            Err(format!("the scheduler has been busy for {} s", since.num_seconds()))
        }
    }

    /// The deadline the scheduler sleeps until, if it sleeps.
    pub fn sleeping_until(&self) -> Option<DateTime<Utc>> {
        match self.sleeping_until_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::<Utc>::from_timestamp_millis(ms),
        }
    }
}

/// Every metric the service counts itself.
pub struct Metrics {
    started: DateTime<Utc>,
    rpc_calls: Family,
    rpc_duration: Family,
    http_requests: Family,
    http_duration: Family,
    upstream_calls: Family,
    upstream_duration: Family,
    run_changes: Family,
    windows_submitted: Family,
    records_submitted: Family,
    fires: Family,
    lateness: Family,
    ticks: Family,
    tick_duration: Family,
    pub scheduler: Heartbeat,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let h = Kind::Histogram;
        let m = Metrics {
            started: Utc::now(),
            rpc_calls: Family::new(
                "mtsc_rpc_calls_total",
                "JSON-RPC calls by method and outcome (ok or the Odoo error class)",
                Kind::Counter,
                &["method", "outcome"],
            ),
            rpc_duration: Family::new(
                "mtsc_rpc_call_duration_seconds",
                "Time to answer a JSON-RPC call, by method",
                h(RPC_BUCKETS),
                &["method"],
            ),
            http_requests: Family::new(
                "mtsc_http_requests_total",
                "HTTP requests by route and status code",
                Kind::Counter,
                &["route", "status"],
            ),
            http_duration: Family::new(
                "mtsc_http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
                h(RPC_BUCKETS),
                &["route"],
            ),
            upstream_calls: Family::new(
                "mtsc_upstream_calls_total",
                "Calls to MTS, ODK Central and Odoo by call and outcome (ok or the error class)",
                Kind::Counter,
                &["upstream", "call", "outcome"],
            ),
            upstream_duration: Family::new(
                "mtsc_upstream_call_duration_seconds",
                "Latency of calls to MTS, ODK Central and Odoo",
                h(UPSTREAM_BUCKETS),
                &["upstream", "call"],
            ),
            run_changes: Family::new(
                "mtsc_run_state_changes_total",
                "Run state changes, by the state entered (new runs enter queued)",
                Kind::Counter,
                &["state"],
            ),
            windows_submitted: Family::new(
                "mtsc_windows_submitted_total",
                "Windows MTS acknowledged with a request identifier",
                Kind::Counter,
                &[],
            ),
            records_submitted: Family::new(
                "mtsc_records_submitted_total",
                "Records (pre-counted ODK submissions) in the windows MTS acknowledged",
                Kind::Counter,
                &[],
            ),
            fires: Family::new(
                "mtsc_scheduler_fires_total",
                "Recurring connectors fired by the scheduler",
                Kind::Counter,
                &[],
            ),
            lateness: Family::new(
                "mtsc_scheduler_lateness_seconds",
                "How late a recurring connector's runs were free to start after its due time (next_run_at)",
                h(LATENESS_BUCKETS),
                &[],
            ),
            ticks: Family::new("mtsc_scheduler_ticks_total", "Passes of the scheduler loop", Kind::Counter, &[]),
            tick_duration: Family::new(
                "mtsc_scheduler_tick_duration_seconds",
                "Time one pass of the scheduler loop took (firing and dispatching)",
                h(LATENESS_BUCKETS),
                &[],
            ),
            scheduler: Heartbeat::default(),
        };
        // The series a dashboard expects exist from the start, at zero.
        for family in [&m.windows_submitted, &m.records_submitted, &m.fires, &m.ticks] {
            family.touch(&[]);
        }
        for (state, _) in crate::model::run::STATES {
            m.run_changes.touch(&[state]);
        }
        for (upstream, call) in
            [(Upstream::Mts, "submit"), (Upstream::Mts, "status"), (Upstream::Odk, "session"), (Upstream::Odk, "count")]
        {
            m.upstream_calls.touch(&[upstream.label(), call, "ok"]);
        }
        m
    }

    /// Time since this registry was made (the first metric of the process).
    pub fn uptime(&self) -> TimeDelta {
        Utc::now() - self.started
    }

    /// A JSON-RPC call answered.
    pub fn rpc_call(&self, method: &str, outcome: &str, elapsed: Duration) {
        self.rpc_calls.inc_by(&[method, outcome], 1);
        self.rpc_duration.observe(&[method], elapsed.as_secs_f64());
    }

    /// An HTTP request answered.
    pub fn http_request(&self, route: &str, status: u16, elapsed: Duration) {
        // The code's three digits, without allocating.
        let digits = [b'0' + (status / 100 % 10) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8];
        let status = std::str::from_utf8(&digits).unwrap_or("000");
        self.http_requests.inc_by(&[route, status], 1);
        self.http_duration.observe(&[route], elapsed.as_secs_f64());
    }

    /// A call to an outside service ended with `outcome` (`ok` or an error class).
    pub fn upstream(&self, upstream: Upstream, call: &'static str, outcome: &str, elapsed: Duration) {
        self.upstream_calls.inc_by(&[upstream.label(), call, outcome], 1);
        self.upstream_duration.observe(&[upstream.label(), call], elapsed.as_secs_f64());
    }

    /// A run entered `state`; `records` is its pre-count when MTS just acknowledged it.
    pub fn run_state(&self, state: &str, acknowledged_records: Option<i64>) {
        if crate::model::run::STATES.iter().any(|(s, _)| *s == state) {
            self.run_changes.inc_by(&[state], 1);
        }
        if let Some(n) = acknowledged_records {
            self.windows_submitted.inc_by(&[], 1);
            self.records_submitted.inc_by(&[], n.max(0) as u64);
        }
    }

    /// A recurring connector fired `lateness` after it was due.
    pub fn scheduler_fired(&self, lateness: TimeDelta) {
        self.fires.inc_by(&[], 1);
        self.lateness.observe(&[], lateness.to_std().unwrap_or_default().as_secs_f64());
    }

    /// One pass of the scheduler loop took `elapsed`.
    pub fn scheduler_tick(&self, elapsed: Duration) {
        self.ticks.inc_by(&[], 1);
        self.tick_duration.observe(&[], elapsed.as_secs_f64());
    }

    /// The text exposition format: the counted families, then `gauges`, then process
    /// figures (Linux).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for family in [
            &self.rpc_calls,
            &self.rpc_duration,
            &self.http_requests,
            &self.http_duration,
            &self.upstream_calls,
            &self.upstream_duration,
            &self.run_changes,
            &self.windows_submitted,
            &self.records_submitted,
            &self.fires,
            &self.lateness,
            &self.ticks,
            &self.tick_duration,
        ] {
            family.render(&mut out);
        }
        let mut by_name: BTreeMap<&str, Vec<&Gauge>> = BTreeMap::new();
        let mut order = Vec::new();
        for g in gauges {
            if !by_name.contains_key(g.name) {
                order.push(g.name);
            }
            by_name.entry(g.name).or_default().push(g);
        }
        let process = process_gauges(self.started);
        for g in &process {
            if !by_name.contains_key(g.name) {
                order.push(g.name);
            }
            by_name.entry(g.name).or_default().push(g);
        }
        for name in order {
            let list = &by_name[name];
            let _ = writeln!(out, "# HELP {name} {}", list[0].help);
            let _ = writeln!(out, "# TYPE {name} gauge");
            for g in list {
                let names: Vec<&str> = g.labels.iter().map(|(n, _)| *n).collect();
                let values: Vec<String> = g.labels.iter().map(|(_, v)| v.clone()).collect();
                let _ = writeln!(out, "{name}{} {}", braces(&label_text(&names, &values)), number(g.value));
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Start time, CPU seconds and resident memory of this process, from `/proc` (absent
/// where `/proc` is not readable).
fn process_gauges(started: DateTime<Utc>) -> Vec<Gauge> {
    let mut out = vec![
        Gauge::new("mtsc_build_info", "The running version (always 1)", 1.0)
            .label("version", env!("CARGO_PKG_VERSION")),
        Gauge::new(
            "mtsc_process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            started.timestamp_millis() as f64 / 1000.0,
        ),
    ];
    if let Some(cpu) = proc_cpu_seconds() {
        out.push(Gauge::new("mtsc_process_cpu_seconds", "User and system CPU time the process used", cpu));
    }
    if let Some((rss, hwm)) = proc_memory_bytes() {
        out.push(Gauge::new("mtsc_process_resident_memory_bytes", "Resident memory", rss));
        out.push(Gauge::new("mtsc_process_resident_memory_peak_bytes", "Peak resident memory (VmHWM)", hwm));
    }
    out
}

/// utime + stime of this process in seconds (Linux `/proc/self/stat`, USER_HZ = 100).
fn proc_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// VmRSS and VmHWM of this process in bytes.
fn proc_memory_bytes() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|v| v * 1024.0)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// The value at quantile `q` (0..1) of a rendered histogram's cumulative buckets
/// `(upper bound, cumulative count)`, interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does. Used by the benchmarks and tests.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = cumulative - prev.1;
            let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 1.0 };
            return Some(prev.0 + (bound - prev.0) * frac);
        }
        prev = (bound, cumulative);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn method_labels_are_bounded() {
        let call = |model: &str, method: &str| json!({"service": "object", "method": "execute_kw", "args": ["db", 2, "pw", model, method, []]});
        assert_eq!(rpc_method_label("/jsonrpc", &call("mts.connector", "search_read")), "mts.connector.search_read");
        assert_eq!(rpc_method_label("/jsonrpc", &call("mts.connector", "x\"}evil")), "mts.connector.other");
        assert_eq!(rpc_method_label("/jsonrpc", &call("res.partner", "read")), "other");
        assert_eq!(rpc_method_label("/jsonrpc", &json!({"service": "common", "method": "login"})), "common.login");
        assert_eq!(rpc_method_label("/jsonrpc", &json!({"service": "common", "method": "read"})), "common.other");
        assert_eq!(rpc_method_label("/jsonrpc", &json!(12)), "other");
        assert_eq!(rpc_method_label("/xmlrpc/2/", &call("mts.connector", "read")), "mts.connector.read");
        assert_eq!(rpc_method_label("/xmlrpc/", &json!({"service": "common", "method": "version"})), "common.version");
        assert_eq!(route_label("/xmlrpc/2/object"), "xmlrpc");
        assert_eq!(route_label("/xmlrpc/common"), "xmlrpc");
        assert_eq!(rpc_method_label("/web/session/authenticate", &json!({})), "web.session.authenticate");
        assert_eq!(
            rpc_method_label("/web/dataset/call_kw/x/y", &json!({"model": "mts.connector.run", "method": "read"})),
            "mts.connector.run.read"
        );
    }

    #[test]
    fn render_is_the_text_format() {
        let m = Metrics::new();
        m.rpc_call("mts.connector.read", "ok", Duration::from_micros(300));
        m.rpc_call("mts.connector.read", "ok", Duration::from_millis(3));
        m.rpc_call("mts.connector.read", "validation", Duration::from_millis(3));
        let text = m.render(&[Gauge::new("mtsc_runs", "Runs by state", 2.0).label("state", "done")]);
        assert!(text.contains("mtsc_rpc_calls_total{method=\"mts.connector.read\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("mtsc_rpc_call_duration_seconds_bucket{method=\"mts.connector.read\",le=\"0.0005\"} 1"));
        assert!(text.contains("mtsc_rpc_call_duration_seconds_bucket{method=\"mts.connector.read\",le=\"+Inf\"} 3"));
        assert!(text.contains("mtsc_rpc_call_duration_seconds_count{method=\"mts.connector.read\"} 3"));
        assert!(text.contains("# TYPE mtsc_runs gauge\nmtsc_runs{state=\"done\"} 2\n"), "{text}");
        assert!(text.contains("mtsc_windows_submitted_total 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "{line}");
        }
    }

    #[test]
    fn what_many_threads_count_adds_up_in_one_series() {
        let m = Metrics::new();
        std::thread::scope(|s| {
            for _ in 0..2 * SHARDS {
                s.spawn(|| {
                    for _ in 0..100 {
                        m.http_request("jsonrpc", 200, Duration::from_micros(300));
                    }
                });
            }
        });
        m.http_request("jsonrpc", 404, Duration::from_millis(3));
        let text = m.render(&[]);
        let want = format!("mtsc_http_requests_total{{route=\"jsonrpc\",status=\"200\"}} {}\n", 200 * SHARDS);
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("mtsc_http_requests_total{route=\"jsonrpc\",status=\"404\"} 1\n"), "{text}");
        let count = format!("mtsc_http_request_duration_seconds_count{{route=\"jsonrpc\"}} {}\n", 200 * SHARDS + 1);
        assert!(text.contains(&count), "{text}");
        assert_eq!(text.matches("mtsc_http_requests_total{").count(), 2, "one line per label set");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_text(&["a"], &["x\"y\\z\n".to_string()]), "a=\"x\\\"y\\\\z\\n\"");
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = [(0.01, 50.0), (0.02, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(histogram_quantile(0.5, &b), Some(0.01));
        assert!((histogram_quantile(0.75, &b).unwrap_or_default() - 0.015).abs() < 1e-9);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0)]), None);
    }

    #[test]
    fn heartbeat_alive_while_sleeping_on_time_or_working_briefly() {
        let hb = Heartbeat::default();
        // Whole milliseconds, as the heartbeat keeps them.
        let t = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
        assert!(hb.alive(t).is_err(), "not started");
        hb.busy(t);
        assert!(hb.alive(t + TimeDelta::seconds(10)).is_ok());
        assert!(hb.alive(t + SCHEDULER_BUSY_LIMIT + TimeDelta::seconds(1)).is_err(), "stuck in a tick");
        hb.sleeping(t + TimeDelta::seconds(600));
        assert!(hb.alive(t + TimeDelta::seconds(599)).is_ok(), "a long sleep is fine");
        assert!(hb.alive(t + TimeDelta::seconds(600) + SCHEDULER_WAKE_SLACK).is_ok());
        assert!(hb.alive(t + TimeDelta::seconds(601) + SCHEDULER_WAKE_SLACK).is_err(), "missed its wake-up");
    }
}
