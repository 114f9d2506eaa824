//! The MTS client: submit a request and classify the answer, poll a request's status,
//! ping. Bodies are never logged: they hold passwords and personal data.

use std::time::Duration;

use serde_json::Value;

use super::excerpt;
use crate::metrics::{METRICS, Upstream, reqwest_error_class, status_class};

/// What MTS made of a submitted request.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Accepted; the request is tracked by this id.
    Accepted { request_id: String },
    /// `ATS-REQ-101`: the request exists but every record was invalid.
    AllInvalid { request_id: String, message: String },
    /// `ATS-REQ-23`: the ODK window holds no submission.
    Empty,
    /// Any other 4xx: the configuration is wrong; retrying will not help.
    Rejected { status: u16, code: String, message: String },
    /// 5xx, connection errors, timeouts: try again later. `ambiguous` when the body may
    /// have reached MTS (a timeout after sending), so MTS may have accepted it.
    Transient { message: String, ambiguous: bool },
}

/// What `GET /authtoken/status/{id}` said.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusOutcome {
    Status(String),
    /// 404: MTS does not know the id (it lost its queue on a restart).
    Unknown,
    Transient(String),
}

/// The terminal MTS statuses.
pub fn is_terminal(status: &str) -> bool {
    !matches!(status, "submitted" | "processing")
}

#[derive(Clone)]
pub struct MtsClient {
    http: reqwest::Client,
}

fn first_error(body: &Value) -> (String, String) {
    let err = body.get("errors").and_then(Value::as_array).and_then(|e| e.first());
    let field = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
    (field("errorCode"), field("errorMessage"))
}

impl MtsClient {
    pub fn new(http: reqwest::Client) -> Self {
        MtsClient { http }
    }

    /// POSTs `body` to `url` with `timeout` and classifies the answer.
    #[tracing::instrument(skip_all, fields(url = %url))]
    pub async fn submit(&self, url: &str, body: &Value, timeout: Duration) -> SubmitOutcome {
        let started = std::time::Instant::now();
        let done = |outcome: &str| METRICS.upstream(Upstream::Mts, "submit", outcome, started.elapsed());
        let resp = match self.http.post(url).json(body).timeout(timeout).send().await {
            Ok(r) => r,
            Err(e) => {
                done(reqwest_error_class(&e));
                // A timeout means the body was (probably) sent: MTS may have taken it.
                let ambiguous = e.is_timeout();
                let message = if ambiguous {
                    format!(
                        "MTS did not answer within {} s; it may have accepted the request, so the window is resubmitted",
                        timeout.as_secs()
                    )
                } else {
                    format!("cannot reach MTS at {url}: {}", error_chain(&e))
                };
                return SubmitOutcome::Transient { message, ambiguous };
            }
        };
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                done("body");
                return SubmitOutcome::Transient {
                    message: format!("MTS answer could not be read: {}", error_chain(&e)),
                    ambiguous: true,
                };
            }
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let request_id = body.pointer("/response/request_identifier").and_then(Value::as_str).map(str::to_string);
        let (code, message) = first_error(&body);
        let outcome = match (status, request_id) {
            (200..=299, Some(id)) if code == "ATS-REQ-101" => SubmitOutcome::AllInvalid { request_id: id, message },
            (200..=299, Some(id)) => SubmitOutcome::Accepted { request_id: id },
            (_, _) if code == "ATS-REQ-23" => SubmitOutcome::Empty,
            (400..=499, _) if status != 408 && status != 429 => SubmitOutcome::Rejected {
                status,
                code,
                message: if message.is_empty() { excerpt(&text) } else { message },
            },
            (200..=299, None) => SubmitOutcome::Transient {
                message: format!("MTS answered {status} without a request identifier: {}", excerpt(&text)),
                ambiguous: true,
            },
            _ => SubmitOutcome::Transient {
                message: format!(
                    "MTS answered HTTP {status}{}",
                    if code.is_empty() { String::new() } else { format!(" {code} {message}") }
                ),
                ambiguous: false,
            },
        };
        done(match &outcome {
            SubmitOutcome::Accepted { .. } | SubmitOutcome::AllInvalid { .. } => "ok",
            SubmitOutcome::Empty => "empty",
            _ if (200..=299).contains(&status) => "malformed",
            _ => status_class(status),
        });
        outcome
    }

    #[tracing::instrument(skip_all, fields(request_id = %request_id))]
    pub async fn status(&self, mts_url: &str, request_id: &str, timeout: Duration) -> StatusOutcome {
        let url = format!("{}/authtoken/status/{request_id}", mts_url.trim_end_matches('/'));
        let started = std::time::Instant::now();
        let done = |outcome: &str| METRICS.upstream(Upstream::Mts, "status", outcome, started.elapsed());
        let resp = match self.http.get(&url).timeout(timeout).send().await {
            Ok(r) => r,
            Err(e) => {
                done(reqwest_error_class(&e));
                return StatusOutcome::Transient(format!("cannot reach MTS: {}", error_chain(&e)));
            }
        };
        let code = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let outcome = match code {
            404 => StatusOutcome::Unknown,
            200..=299 => match body.pointer("/response/status").and_then(Value::as_str) {
                Some(s) => StatusOutcome::Status(s.to_string()),
                None => StatusOutcome::Transient("MTS status answer has no response.status".into()),
            },
            _ => StatusOutcome::Transient(format!("MTS status answered HTTP {code}")),
        };
        done(match &outcome {
            StatusOutcome::Status(_) => "ok",
            StatusOutcome::Unknown => "not_found",
            _ if (200..=299).contains(&code) => "malformed",
            _ => status_class(code),
        });
        outcome
    }

    /// `GET /ping`: a short report line.
    pub async fn ping(&self, mts_url: &str, timeout: Duration) -> Result<String, String> {
        let url = format!("{}/ping", mts_url.trim_end_matches('/'));
        let started = std::time::Instant::now();
        let answer = self.http.get(&url).timeout(timeout).send().await;
        let outcome = answer.as_ref().map_or_else(reqwest_error_class, |r| status_class(r.status().as_u16()));
        METRICS.upstream(Upstream::Mts, "ping", outcome, started.elapsed());
        match answer {
            Ok(r) if r.status().is_success() => Ok(format!("MTS at {mts_url} is reachable")),
            Ok(r) => Err(format!("MTS at {mts_url} answered HTTP {} to /ping", r.status().as_u16())),
            Err(e) => Err(format!("MTS at {mts_url} is unreachable: {}", error_chain(&e))),
        }
    }
}

/// A reqwest error with its causes, without the URL's query (which never holds secrets
/// here, but stays short).
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
