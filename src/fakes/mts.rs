//! Fake MOSIP Token Seeder (mock branch): the /authtoken API, the ODK pull, FIFO token
//! workers and callback delivery.
//!
//! It models MTS's capacity: `workers` token workers share the queue (one request each
//! at a time, like the token thread of each gunicorn worker), a request takes
//! `processing_time + time_per_record x records`, and, like the helm chart's cleanup
//! job (`cleanupExpirySeconds`, 20 s there), requests older than the expiry are deleted
//! whatever their status: their status answers 404 and queued ones are never processed.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use http::StatusCode;
use serde_json::{Value, json};
use sha3::{Digest, Sha3_256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{Recorded, Reply, Server, json, lock, random_uuid, text};
use super::mts_callback::{Delivery, deliver};
use super::mts_records::{RecordCheck, validate_record};
use super::mts_request::{CallbackProps, Kind, MtsError, OdkConfig, parse};
use crate::jq::Program;

/// The partner id the fake mixes into tokens unless told otherwise.
pub const DEFAULT_PARTNER_ID: &str = "mts-connector-fake";

/// The mock-branch token: `base64url_nopad(sha3_256(vid + partner_id))`.
pub fn mock_token(vid: &str, partner_id: &str) -> String {
    let digest = Sha3_256::digest(format!("{vid}{partner_id}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// An accepted POST /authtoken/{odk,json} (including ATS-REQ-101 ones, which MTS also keeps).
#[derive(Debug, Clone)]
pub struct MtsSubmission {
    /// `"odk"` or `"json"`.
    pub kind: String,
    /// The request body as received.
    pub body: Value,
    pub request_identifier: String,
    /// Number of input records (pulled from ODK, or `authdata`).
    pub records: usize,
    /// How many of them were `invalid` at submit time.
    pub invalid: usize,
}

/// A fake MTS server.
pub struct FakeMts {
    server: Server,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<MtsState>,
    /// Wakes the worker: a request was queued or processing was released.
    wake: Notify,
    http: reqwest::Client,
    cancel: CancellationToken,
}

struct MtsState {
    partner_id: String,
    requests: HashMap<String, StoredRequest>,
    queue: VecDeque<String>,
    /// Bumped by `restart()`: work started before it is discarded.
    generation: u64,
    held: bool,
    down: bool,
    submit_delay: Duration,
    processing_time: Duration,
    time_per_record: Duration,
    /// Token workers wanted; workers with a higher index stop.
    workers: usize,
    /// Worker tasks started so far.
    started_workers: usize,
    cleanup_expiry: Option<Duration>,
    cleanup_started: bool,
    fail_submits: usize,
    fail_submit_status: StatusCode,
    fail_callbacks_after: Option<usize>,
    submissions: Vec<MtsSubmission>,
    /// Answer every submit with this status and the whole request in the error message.
    echo: Option<StatusCode>,
}

struct StoredRequest {
    created: std::time::Instant,
    status: String,
    records: Vec<StoredRecord>,
    number_error: usize,
    output_format: Option<Program>,
    deliverytype: String,
    callback: Option<CallbackProps>,
    callbacks_sent: usize,
}

struct StoredRecord {
    received: Value,
    valid: bool,
    vid: Option<String>,
    status: String,
    token: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

impl StoredRecord {
    /// `.output` as MTS builds it for the output format.
    fn output(&self) -> Value {
        let vid = match (&self.vid, self.valid) {
            (Some(v), _) => json!(v),
            (None, true) => Value::Null,
            (None, false) => self.received.get("vid").cloned().unwrap_or(Value::Null),
        };
        json!({
            "vid": vid,
            "status": self.status,
            "token": self.token,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
        })
    }
}

impl FakeMts {
    /// Starts a fake MTS with partner id [`DEFAULT_PARTNER_ID`].
    pub async fn start() -> io::Result<FakeMts> {
        Self::start_with_partner(DEFAULT_PARTNER_ID).await
    }

    /// Starts a fake MTS whose tokens use `partner_id`.
    pub async fn start_with_partner(partner_id: &str) -> io::Result<FakeMts> {
        let http = reqwest::Client::builder().no_proxy().build().map_err(io::Error::other)?;
        let state = MtsState {
            partner_id: partner_id.to_string(),
            requests: HashMap::new(),
            queue: VecDeque::new(),
            generation: 0,
            held: false,
            down: false,
            submit_delay: Duration::ZERO,
            processing_time: Duration::ZERO,
            time_per_record: Duration::ZERO,
            workers: 1,
            started_workers: 0,
            cleanup_expiry: None,
            cleanup_started: false,
            fail_submits: 0,
            fail_submit_status: StatusCode::INTERNAL_SERVER_ERROR,
            fail_callbacks_after: None,
            submissions: Vec::new(),
            echo: None,
        };
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared { state: Mutex::new(state), wake: Notify::new(), http, cancel: cancel.clone() });
        let handler_shared = shared.clone();
        let server = Server::start_with_cancel(move |req| handle(handler_shared.clone(), req), cancel).await?;
        let mts = FakeMts { server, shared };
        mts.set_workers(1);
        Ok(mts)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The token the fake gives `vid`.
    pub fn token_for(&self, vid: &str) -> String {
        mock_token(vid, &lock(&self.shared.state).partner_id)
    }

    /// Every HTTP request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Accepted submissions, in order (kept across `restart()`).
    pub fn submissions(&self) -> Vec<MtsSubmission> {
        lock(&self.shared.state).submissions.clone()
    }

    /// `response.status` of a request, None when unknown (404 on the wire).
    pub fn status_of(&self, id: &str) -> Option<String> {
        lock(&self.shared.state).requests.get(id).map(|r| r.status.clone())
    }

    /// Callback HTTP calls completed for a request (auth and logout calls not counted).
    pub fn callbacks_sent(&self, id: &str) -> Option<usize> {
        lock(&self.shared.state).requests.get(id).map(|r| r.callbacks_sent)
    }

    /// The next `n` submits are answered with `status` and an ATS-REQ-100 error, without being processed.
    pub fn fail_next_submits(&self, n: usize, status: u16) {
        let mut st = lock(&self.shared.state);
        st.fail_submits = n;
        st.fail_submit_status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Every submit waits this long before being handled (the request is still created
    /// if the client gives up meanwhile, as with a slow MTS).
    pub fn set_submit_delay(&self, delay: Duration) {
        lock(&self.shared.state).submit_delay = delay;
    }

    /// Time a request spends in `processing` before its tokens are made.
    pub fn set_processing_time(&self, time: Duration) {
        lock(&self.shared.state).processing_time = time;
    }

    /// Time each record adds to its request's processing (MTS makes tokens one by one).
    pub fn set_time_per_record(&self, time: Duration) {
        lock(&self.shared.state).time_per_record = time;
    }

    /// How many requests are processed at once (MTS: one per gunicorn worker).
    pub fn set_workers(&self, n: usize) {
        let mut st = lock(&self.shared.state);
        st.workers = n.max(1);
        while st.started_workers < st.workers {
            tokio::spawn(worker(self.shared.clone(), st.started_workers));
            st.started_workers += 1;
        }
        drop(st);
        self.shared.wake.notify_waiters();
    }

    /// Deletes requests older than `expiry`, every `expiry`, whatever their status (the
    /// helm chart's cleanup job; its default is 20 s).
    pub fn set_cleanup_expiry(&self, expiry: Duration) {
        let mut st = lock(&self.shared.state);
        st.cleanup_expiry = Some(expiry);
        if std::mem::replace(&mut st.cleanup_started, true) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let Some(every) = lock(&shared.state).cleanup_expiry else { return };
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shared.cancel.cancelled() => return,
                }
                let mut st = lock(&shared.state);
                let before = st.requests.len();
                st.requests.retain(|_, r| r.created.elapsed() < every);
                let removed = before - st.requests.len();
                if removed > 0 {
                    tracing::debug!(removed, "fake MTS cleaned up old requests");
                }
            }
        });
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }

    /// Forgets every request and the queue, like an MTS that rebuilt its database:
    /// later status calls answer 404, work in flight is dropped, no further callbacks go out.
    pub fn restart(&self) {
        let mut st = lock(&self.shared.state);
        st.requests.clear();
        st.queue.clear();
        st.generation += 1;
    }

    /// While true, accepted requests stay `submitted` (the worker takes nothing from the queue).
    pub fn hold_processing(&self, hold: bool) {
        lock(&self.shared.state).held = hold;
        if !hold {
            self.shared.wake.notify_waiters();
        }
    }

    /// For the next request that delivers callbacks: the first `n` callback HTTP calls go out,
    /// the (n+1)-th fails as a real delivery exception would, the rest are never sent and the
    /// request ends `error_making_callback_request`. One-shot.
    pub fn fail_callbacks_after(&self, n: usize) {
        lock(&self.shared.state).fail_callbacks_after = Some(n);
    }

    /// When true, every HTTP request gets a 503 (queued work still proceeds).
    pub fn set_down(&self, down: bool) {
        lock(&self.shared.state).down = down;
    }

    /// With `Some(status)`, every submit is refused with `status` and an error message
    /// that repeats the whole request (headers and body, passwords included), as an MTS
    /// behind a verbose proxy would; `None` turns it off.
    pub fn set_echo(&self, status: Option<u16>) {
        lock(&self.shared.state).echo = status.and_then(|s| StatusCode::from_u16(s).ok());
    }

    /// Stops the server and the worker now.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

fn envelope(errors: Option<&[(String, String)]>, response: Option<Value>) -> Value {
    let errors =
        errors.map(|errs| errs.iter().map(|(c, m)| json!({"errorCode": c, "errorMessage": m})).collect::<Vec<_>>());
    json!({
        "id": "mosip.token.seeder",
        "version": "1.0",
        "metadata": {},
        "responsetime": Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "errors": errors,
        "response": response,
    })
}

fn error_reply(e: &MtsError) -> Reply {
    json(e.status, &envelope(Some(&e.errors), e.response.clone()))
}

async fn handle(shared: Arc<Shared>, req: Recorded) -> Reply {
    if lock(&shared.state).down {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let path = req.path.trim_end_matches('/').to_string();
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/ping") => text(StatusCode::OK, "pong"),
        ("GET", "/authtoken/authfields") => json(
            StatusCode::OK,
            &envelope(
                None,
                Some(json!({"authfields": ["vid", "name", "gender", "dob", "phoneNumber", "emailId", "fullAddress"]})),
            ),
        ),
        ("POST", "/authtoken/json") => submit_guarded(shared, req, Kind::Json).await,
        ("POST", "/authtoken/odk") => submit_guarded(shared, req, Kind::Odk).await,
        ("GET", p) if p.starts_with("/authtoken/status/") => {
            let id = &p["/authtoken/status/".len()..];
            match lock(&shared.state).requests.get(id) {
                Some(r) => json(StatusCode::OK, &envelope(None, Some(json!({"status": r.status})))),
                None => error_reply(&MtsError {
                    status: StatusCode::NOT_FOUND,
                    errors: vec![("ATS-REQ-016".into(), "no auth request found for the given identifier".into())],
                    response: None,
                }),
            }
        }
        (_, "/ping" | "/authtoken/authfields" | "/authtoken/json" | "/authtoken/odk") => {
            json(StatusCode::METHOD_NOT_ALLOWED, &json!({"detail": "Method Not Allowed"}))
        }
        _ => json(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
    }
}

/// Applies the injected failures, then runs the submit in its own task so that it completes
/// even when the client disconnects (MTS does not notice a client giving up).
async fn submit_guarded(shared: Arc<Shared>, req: Recorded, kind: Kind) -> Reply {
    let (fail, delay) = {
        let mut st = lock(&shared.state);
        let fail = (st.fail_submits > 0).then(|| {
            st.fail_submits -= 1;
            st.fail_submit_status
        });
        (fail, st.submit_delay)
    };
    if let Some(status) = fail {
        return error_reply(&MtsError {
            status,
            errors: vec![("ATS-REQ-100".into(), "injected failure (fake MTS)".into())],
            response: None,
        });
    }
    if let Some(status) = lock(&shared.state).echo {
        let message = format!("cannot process {}", super::http::echo_line(&req));
        return error_reply(&MtsError { status, errors: vec![("ATS-REQ-ECHO".into(), message)], response: None });
    }
    let cancel = shared.cancel.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => None,
            reply = async {
                tokio::time::sleep(delay).await;
                submit(&shared, &req, kind).await
            } => Some(reply),
        }
    });
    match task.await {
        Ok(Some(reply)) => reply,
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

async fn submit(shared: &Shared, req: &Recorded, kind: Kind) -> Reply {
    match accept(shared, req, kind).await {
        Ok(reply) => reply,
        Err(e) => error_reply(&e),
    }
}

async fn accept(shared: &Shared, req: &Recorded, kind: Kind) -> Result<Reply, MtsError> {
    let parsed = parse(&req.raw_body, req.body.as_ref(), kind)?;
    let inputs = match &parsed.odk {
        Some(cfg) => odk_pull(&shared.http, cfg).await?,
        None => parsed.authdata.clone(),
    };
    let mut records = Vec::with_capacity(inputs.len());
    for input in inputs {
        let check = validate_record(&input, &parsed.mapping)?;
        let (valid, vid, status, error_code) = match check {
            RecordCheck::Valid { vid } => (true, vid, "submitted", None),
            RecordCheck::Invalid(code) => (false, None, "invalid", Some(code.to_string())),
        };
        records.push(StoredRecord {
            received: input,
            valid,
            vid,
            status: status.to_string(),
            token: None,
            error_code,
            error_message: None,
        });
    }
    let invalid = records.iter().filter(|r| !r.valid).count();
    let total = records.len();
    let all_invalid = invalid == total;
    let id = format!("00{}", &random_uuid()[2..]);
    {
        let mut st = lock(&shared.state);
        st.requests.insert(
            id.clone(),
            StoredRequest {
                created: std::time::Instant::now(),
                status: if all_invalid { "submitted_with_errors" } else { "submitted" }.into(),
                records,
                number_error: invalid,
                output_format: parsed.output_format,
                deliverytype: parsed.deliverytype,
                callback: parsed.callback,
                callbacks_sent: 0,
            },
        );
        // MTS queues requests whose records are all invalid too: the worker still delivers them.
        st.queue.push_back(id.clone());
        st.submissions.push(MtsSubmission {
            kind: kind.as_str().into(),
            body: req.body.clone().unwrap_or(Value::Null),
            request_identifier: id.clone(),
            records: total,
            invalid,
        });
    }
    shared.wake.notify_one();
    let response = json!({"request_identifier": id});
    if all_invalid {
        return Err(MtsError {
            status: StatusCode::OK,
            errors: vec![("ATS-REQ-101".into(), "none of the record form a valid request".into())],
            response: Some(response),
        });
    }
    Ok(json(StatusCode::OK, &envelope(None, Some(response))))
}

/// MTS's `odk_pull`, step for step (including which failures are 400s and which are 500s).
async fn odk_pull(http: &reqwest::Client, cfg: &OdkConfig) -> Result<Vec<Value>, MtsError> {
    if cfg.baseurl.is_empty() {
        return Err(MtsError::bad("ATS-REQ-18", "no odk baseurl provided"));
    }
    if cfg.email.is_empty() {
        return Err(MtsError::bad("ATS-REQ-19", "no email provided"));
    }
    if cfg.password.is_empty() {
        return Err(MtsError::bad("ATS-REQ-20", "no password provided"));
    }
    let version = if cfg.version.is_empty() { "v1" } else { cfg.version.as_str() };
    let session_url = format!("{}/{version}/sessions", cfg.baseurl);
    let session = http
        .post(&session_url)
        .json(&json!({"email": cfg.email, "password": cfg.password}))
        .send()
        .await
        .map_err(|e| MtsError::internal(format!("ODK session request failed: {e}")))?;
    let session = response_json(session).await?;
    let Some(token) = session.get("token").and_then(Value::as_str) else {
        return Err(MtsError::internal("'token'"));
    };
    let mut url = if cfg.odataurl.is_empty() {
        if cfg.projectid.is_empty() {
            return Err(MtsError::bad("ATS-REQ-21", "no odk project id provided"));
        }
        if cfg.formid.is_empty() {
            return Err(MtsError::bad("ATS-REQ-22", "no odk form id provided"));
        }
        format!("{}/{version}/projects/{}/forms/{}.svc/Submissions", cfg.baseurl, cfg.projectid, cfg.formid)
    } else {
        cfg.odataurl.clone()
    };
    let window = (cfg.startdate.as_deref(), cfg.enddate.as_deref());
    if let (Some(start), Some(end)) = window
        && !start.is_empty()
        && !end.is_empty()
    {
        let sep = if url.contains('?') { '&' } else { '?' };
        url.push_str(&format!(
            "{sep}$filter=__system/submissionDate%20ge%20{start}%20and%20__system/submissionDate%20lt%20{end}"
        ));
    }
    let resp = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| MtsError::internal(format!("ODK submissions request failed: {e}")))?;
    let submissions = response_json(resp).await?;
    let no_submissions = || MtsError::bad("ATS-REQ-23", "no submissions found for odk pull");
    match submissions.get("value") {
        Some(Value::Array(items)) if !items.is_empty() => Ok(items.clone()),
        Some(Value::Array(_)) | Some(Value::Null) | None => Err(no_submissions()),
        Some(other) => Err(MtsError::internal(format!("ODK value is not a list: {}", other))),
    }
}

/// `json.loads(response.text)`: anything but JSON is a 500.
async fn response_json(resp: reqwest::Response) -> Result<Value, MtsError> {
    let body = resp.text().await.map_err(|e| MtsError::internal(format!("reading ODK response failed: {e}")))?;
    serde_json::from_str(&body).map_err(|e| MtsError::internal(format!("ODK answered non-JSON: {e}")))
}

/// Token worker `index`: one request at a time, from the shared FIFO queue; it stops
/// when fewer workers are wanted.
async fn worker(shared: Arc<Shared>, index: usize) {
    loop {
        let next = {
            let mut st = lock(&shared.state);
            if index >= st.workers {
                st.started_workers = st.started_workers.min(index);
                return;
            }
            if st.held {
                None
            } else {
                let generation = st.generation;
                st.queue.pop_front().map(|id| (id, generation))
            }
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = async {
                match next {
                    Some((id, generation)) => process(&shared, &id, generation).await,
                    // notify_one keeps a permit when nobody waits, so no wake-up is lost.
                    None => shared.wake.notified().await,
                }
            } => {}
        }
    }
}

async fn process(shared: &Shared, id: &str, generation: u64) {
    let processing_time = {
        let mut st = lock(&shared.state);
        let (time, per_record) = (st.processing_time, st.time_per_record);
        let Some(req) = st.requests.get_mut(id) else { return };
        if req.status != "submitted" {
            None
        } else {
            req.status = "processing".into();
            Some(time + per_record * req.records.len() as u32)
        }
    };
    if let Some(time) = processing_time {
        tokio::time::sleep(time).await;
    }
    let delivery = {
        let mut guard = lock(&shared.state);
        let st = &mut *guard;
        if st.generation != generation {
            return;
        }
        let Some(req) = st.requests.get_mut(id) else { return };
        for rec in req.records.iter_mut().filter(|r| r.status == "submitted") {
            match &rec.vid {
                Some(vid) => {
                    rec.token = Some(mock_token(vid, &st.partner_id));
                    rec.status = "processed".into();
                }
                None => {
                    // The authenticator fails on a missing vid: an "Unknown exception" record.
                    rec.status = "error".into();
                    rec.error_code = Some("ATS-REQ-100".into());
                    rec.error_message = Some("Unknown exception".into());
                    req.number_error += 1;
                }
            }
        }
        req.status = if req.number_error == 0 { "processed" } else { "processed_with_errors" }.into();
        match (&req.callback, req.deliverytype.as_str()) {
            (Some(props), "callback") => Some(Delivery {
                props: props.clone(),
                program: req.output_format.clone(),
                items: req.records.iter().map(|r| (r.received.clone(), r.output())).collect(),
                fail_after: st.fail_callbacks_after.take(),
            }),
            _ => None,
        }
    };
    let Some(delivery) = delivery else { return };
    let still_current = || lock(&shared.state).generation == generation;
    let on_sent = || {
        if let Some(req) = lock(&shared.state).requests.get_mut(id) {
            req.callbacks_sent += 1;
        }
    };
    if let Err(e) = deliver(&shared.http, delivery, still_current, on_sent).await {
        tracing::debug!(request_id = %id, error = %e, "fake MTS callback delivery failed");
        let mut st = lock(&shared.state);
        if st.generation == generation
            && let Some(req) = st.requests.get_mut(id)
        {
            req.status = "error_making_callback_request".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_deterministic() {
        let a = mock_token("123", "p");
        assert_eq!(a, mock_token("123", "p"));
        assert_ne!(a, mock_token("123", "q"));
        assert_eq!(a.len(), 43);
        assert!(!a.contains('=') && !a.contains('+') && !a.contains('/'));
    }
}
