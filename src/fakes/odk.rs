//! Fake ODK Central: web-user sessions and the OData `Submissions` feed with the `$filter` MTS sends.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::http::{Recorded, Reply, Server, json, lock, outage, percent_decode, random_token, random_uuid};

/// A fake ODK Central server.
pub struct FakeOdk {
    server: Server,
    state: Arc<Mutex<OdkState>>,
}

struct OdkState {
    email: String,
    password: String,
    tokens: HashSet<String>,
    /// (project, form) -> submissions in arrival order.
    forms: BTreeMap<(String, String), Vec<Submission>>,
    down: bool,
    delay: Duration,
    /// Answer every request with 400 and the whole request in the message.
    echo: bool,
    /// Sequence for generated records, so generated vids never repeat within one fake.
    seq: u64,
}

#[derive(Clone)]
struct Submission {
    date: DateTime<Utc>,
    value: Value,
}

impl FakeOdk {
    /// Starts a fake ODK Central that accepts one web user.
    pub async fn start(email: &str, password: &str) -> io::Result<FakeOdk> {
        let state = Arc::new(Mutex::new(OdkState {
            email: email.to_string(),
            password: password.to_string(),
            tokens: HashSet::new(),
            forms: BTreeMap::new(),
            down: false,
            delay: Duration::ZERO,
            echo: false,
            seq: 0,
        }));
        let handler_state = state.clone();
        let server = Server::start(move |req| {
            let state = handler_state.clone();
            async move { handle(&state, req).await }
        })
        .await?;
        Ok(FakeOdk { server, state })
    }

    /// `http://127.0.0.1:PORT` (what MTS calls `baseurl`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The OData Submissions URL of one form.
    pub fn odata_url(&self, project: &str, form: &str) -> String {
        format!("{}/v1/projects/{project}/forms/{form}.svc/Submissions", self.url())
    }

    /// Creates an empty form (its feed answers `value: []` instead of 404).
    pub fn add_form(&self, project: &str, form: &str) {
        lock(&self.state).forms.entry((project.to_string(), form.to_string())).or_default();
    }

    /// Adds one submission and returns its `__id` (`uuid:...`). `fields` (an object) become
    /// the top-level form fields next to `__id`, `meta` and `__system`.
    pub fn add_submission(&self, project: &str, form: &str, submission_date: DateTime<Utc>, fields: Value) -> String {
        let id = format!("uuid:{}", random_uuid());
        let mut obj = Map::new();
        obj.insert("__id".into(), json!(id));
        match fields {
            Value::Object(map) => obj.extend(map),
            Value::Null => {}
            other => {
                obj.insert("value".into(), other);
            }
        }
        obj.insert("meta".into(), json!({ "instanceID": id }));
        obj.insert(
            "__system".into(),
            json!({
                "submissionDate": odk_time(submission_date),
                "updatedAt": null,
                "submitterId": "5",
                "submitterName": "fake-collector",
                "attachmentsPresent": 0,
                "attachmentsExpected": 0,
                "status": null,
                "reviewState": null,
                "deviceId": null,
                "edits": 0,
                "formVersion": "1"
            }),
        );
        lock(&self.state)
            .forms
            .entry((project.to_string(), form.to_string()))
            .or_default()
            .push(Submission { date: submission_date, value: Value::Object(obj) });
        id
    }

    /// Adds `n` submissions that MTS accepts (fields `vid`, `name`, `gender`, `dob`,
    /// `fullAddress`, `phoneNumber`, `emailId`), spread evenly over `[from, to)`.
    /// Returns their `__id`s in order.
    pub fn add_generated_submissions(
        &self,
        project: &str,
        form: &str,
        n: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<String> {
        let span = to - from;
        (0..n)
            .map(|i| {
                let seq = {
                    let mut st = lock(&self.state);
                    st.seq += 1;
                    st.seq
                };
                // i < n, so the offset stays strictly below `span`: every date is in [from, to).
                let offset = span * i as i32 / n.max(1) as i32;
                self.add_submission(project, form, from + offset, generated_fields(seq))
            })
            .collect()
    }

    /// The stored submissions of a form, as the feed renders them, oldest first.
    pub fn submissions(&self, project: &str, form: &str) -> Vec<Value> {
        let st = lock(&self.state);
        let mut subs = st.forms.get(&(project.to_string(), form.to_string())).cloned().unwrap_or_default();
        subs.sort_by_key(|s| s.date);
        subs.into_iter().map(|s| s.value).collect()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// When true, every request gets a 503 with an HTML body (like a proxy in front of a dead ODK).
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// When true, every request is refused (400) with a message repeating the whole
    /// request (the password of a session request included).
    pub fn set_echo(&self, echo: bool) {
        lock(&self.state).echo = echo;
    }

    /// Forgets every session token (later OData calls get 401).
    pub fn expire_sessions(&self) {
        lock(&self.state).tokens.clear();
    }

    /// Stops the server now.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

/// The fields of the `seq`-th generated submission: valid for MTS with the default mapping.
pub fn generated_fields(seq: u64) -> Value {
    let gender = if seq.is_multiple_of(2) { "female" } else { "male" };
    json!({
        "vid": format!("{}", 4_000_000_000_000_000u64 + seq),
        "name": format!("Person {seq}"),
        "gender": gender,
        "dob": format!("19{:02}-{:02}-{:02}", 50 + seq % 50, 1 + seq % 12, 1 + seq % 28),
        "fullAddress": format!("{seq} Main Street, Springfield"),
        "phoneNumber": format!("9{:09}", seq),
        "emailId": format!("person{seq}@example.org"),
    })
}

/// ODK renders timestamps with milliseconds and `Z`.
fn odk_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn odk_error(status: StatusCode, code: f64, message: &str) -> Reply {
    json(status, &json!({ "code": code, "message": message }))
}

/// An ODK error answer, before it becomes a reply.
#[derive(Debug)]
struct OdkError {
    status: StatusCode,
    code: f64,
    message: String,
}

impl OdkError {
    fn new(status: StatusCode, code: f64, message: impl Into<String>) -> OdkError {
        OdkError { status, code, message: message.into() }
    }

    fn reply(&self) -> Reply {
        odk_error(self.status, self.code, &self.message)
    }
}

async fn handle(state: &Mutex<OdkState>, req: Recorded) -> Reply {
    let (down, delay) = {
        let st = lock(state);
        (st.down, st.delay)
    };
    if let Some(unavailable) = outage(down, delay, "503 Service Temporarily Unavailable").await {
        return unavailable;
    }
    if lock(state).echo {
        return odk_error(StatusCode::BAD_REQUEST, 400.1, &format!("Could not parse {}", super::http::echo_line(&req)));
    }
    let segments: Vec<String> = req.path.trim_start_matches('/').split('/').map(|s| percent_decode(s, false)).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["v1", "sessions"]) => create_session(state, &req),
        ("GET", ["v1", "projects", project, "forms", form_svc, "Submissions"]) => match form_svc.strip_suffix(".svc") {
            Some(form) => submissions(state, &req, project, form),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn not_found() -> Reply {
    odk_error(StatusCode::NOT_FOUND, 404.1, "Could not find the resource you were looking for.")
}

fn create_session(state: &Mutex<OdkState>, req: &Recorded) -> Reply {
    let Some(body) = req.body.as_ref() else {
        return odk_error(StatusCode::BAD_REQUEST, 400.1, "Could not parse the given data as json.");
    };
    let email = body.get("email").and_then(Value::as_str);
    let password = body.get("password").and_then(Value::as_str);
    let mut st = lock(state);
    if email != Some(st.email.as_str()) || password != Some(st.password.as_str()) {
        return odk_error(StatusCode::UNAUTHORIZED, 401.2, "Could not authenticate with the provided credentials.");
    }
    let token = random_token(64);
    st.tokens.insert(token.clone());
    let now = Utc::now();
    json(
        StatusCode::OK,
        &json!({
            "createdAt": odk_time(now),
            "expiresAt": odk_time(now + chrono::Duration::hours(24)),
            "token": token,
        }),
    )
}

fn submissions(state: &Mutex<OdkState>, req: &Recorded, project: &str, form: &str) -> Reply {
    let st = lock(state);
    let token = req.header("authorization").and_then(|h| h.strip_prefix("Bearer "));
    if !token.is_some_and(|t| st.tokens.contains(t)) {
        return odk_error(StatusCode::UNAUTHORIZED, 401.2, "Could not authenticate with the provided credentials.");
    }
    let Some(subs) = st.forms.get(&(project.to_string(), form.to_string())) else {
        return not_found();
    };
    let query = match ODataQuery::parse(req.query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return e.reply(),
    };
    let mut matching: Vec<&Submission> =
        subs.iter().filter(|s| query.bounds.iter().all(|b| b.admits(s.date))).collect();
    // Newest first, like ODK Central's default order.
    matching.sort_by_key(|s| std::cmp::Reverse(s.date));
    let total = matching.len();
    let page: Vec<Value> =
        matching.into_iter().skip(query.skip).take(query.top.unwrap_or(usize::MAX)).map(|s| s.value.clone()).collect();
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/v1/projects/{project}/forms/{form}.svc/$metadata#Submissions",
            req.header("host").map(|h| format!("http://{h}")).unwrap_or_default()
        )),
    );
    if query.count {
        out.insert("@odata.count".into(), json!(total));
    }
    out.insert("value".into(), Value::Array(page));
    json(StatusCode::OK, &Value::Object(out))
}

#[derive(Debug, Default)]
struct ODataQuery {
    bounds: Vec<Bound>,
    top: Option<usize>,
    skip: usize,
    count: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    op: Op,
    at: DateTime<Utc>,
}

impl Bound {
    fn admits(&self, t: DateTime<Utc>) -> bool {
        match self.op {
            Op::Ge => t >= self.at,
            Op::Gt => t > self.at,
            Op::Le => t <= self.at,
            Op::Lt => t < self.at,
            Op::Eq => t == self.at,
        }
    }
}

impl ODataQuery {
    fn parse(query: &str) -> Result<ODataQuery, OdkError> {
        let mut q = ODataQuery::default();
        for (key, value) in super::http::query_pairs(query) {
            match key.as_str() {
                "$filter" => q.bounds = parse_filter(&value)?,
                "$top" => q.top = Some(parse_count("$top", &value)?),
                "$skip" => q.skip = parse_count("$skip", &value)?,
                "$count" => q.count = value == "true",
                _ => {}
            }
        }
        Ok(q)
    }
}

fn parse_count(name: &str, value: &str) -> Result<usize, OdkError> {
    value.trim().parse().map_err(|_| {
        OdkError::new(
            StatusCode::BAD_REQUEST,
            400.18,
            format!("The given value for {name} is not a non-negative integer."),
        )
    })
}

/// Parses `__system/submissionDate OP <iso> [and __system/submissionDate OP <iso>]...`.
fn parse_filter(filter: &str) -> Result<Vec<Bound>, OdkError> {
    let unsupported = || {
        OdkError::new(
            StatusCode::NOT_IMPLEMENTED,
            501.1,
            format!("The requested feature $filter={filter} is not supported by this server (fake ODK)."),
        )
    };
    let tokens: Vec<&str> = filter.split_whitespace().collect();
    let mut bounds = Vec::new();
    let mut rest = tokens.as_slice();
    loop {
        let [field, op, value, tail @ ..] = rest else {
            return Err(unsupported());
        };
        if *field != "__system/submissionDate" {
            return Err(unsupported());
        }
        let op = match *op {
            "ge" => Op::Ge,
            "gt" => Op::Gt,
            "le" => Op::Le,
            "lt" => Op::Lt,
            "eq" => Op::Eq,
            _ => return Err(unsupported()),
        };
        let at = parse_iso(value.trim_matches('\'')).ok_or_else(|| {
            OdkError::new(StatusCode::BAD_REQUEST, 400.18, format!("Could not parse the timestamp {value} in $filter."))
        })?;
        bounds.push(Bound { op, at });
        match tail {
            [] => return Ok(bounds),
            ["and", more @ ..] => rest = more,
            _ => return Err(unsupported()),
        }
    }
}

/// ISO-8601 with or without fraction, with `Z`, an offset, no zone (read as UTC) or a bare date.
pub(crate) fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_both_bounds() {
        let b = parse_filter(
            "__system/submissionDate ge 2026-01-01T00:00:00Z and __system/submissionDate lt 2026-01-02T00:00:00.500Z",
        )
        .ok()
        .unwrap_or_default();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].op, Op::Ge);
        assert_eq!(b[1].op, Op::Lt);
        assert_eq!(b[1].at.timestamp_subsec_millis(), 500);
    }

    #[test]
    fn filter_rejects_other_fields() {
        assert!(parse_filter("name eq 'x'").is_err());
        assert!(parse_filter("__system/submissionDate ge").is_err());
        assert!(parse_filter("__system/submissionDate ge 2026-01-01T00:00:00Z or x").is_err());
    }

    #[test]
    fn iso_variants() {
        assert!(parse_iso("2026-01-02T03:04:05Z").is_some());
        assert!(parse_iso("2026-01-02T03:04:05.678Z").is_some());
        assert!(parse_iso("2026-01-02T03:04:05+02:00").is_some());
        assert!(parse_iso("2026-01-02T03:04:05").is_some());
        assert!(parse_iso("2026-01-02").is_some());
        assert!(parse_iso("yesterday").is_none());
    }
}
