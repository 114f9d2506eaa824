//! The ODK Central client: log in, count the submissions of a window the way MTS will
//! filter them. The password is sent to ODK only, never logged or put in a message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::mts::error_chain;
use crate::metrics::{METRICS, Upstream, status_class};
use crate::mts::mts_time;
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdkError {
    #[error("ODK Central at {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("ODK Central at {0} refused the credentials of {1}")]
    BadCredentials(String, String),
    #[error("ODK Central answered HTTP {0} to {1}")]
    Status(u16, String),
    #[error("ODK Central's answer to {0} was not understood: {1}")]
    Malformed(String, String),
}

#[derive(Clone)]
pub struct OdkClient {
    http: reqwest::Client,
}

/// The `$filter` MTS appends for a window `[start, end)`.
pub fn window_filter(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!("__system/submissionDate ge {} and __system/submissionDate lt {}", mts_time(start), mts_time(end))
}

impl OdkClient {
    pub fn new(http: reqwest::Client) -> Self {
        OdkClient { http }
    }

    /// `POST {base}/v1/sessions`: a bearer token.
    pub async fn session(
        &self,
        base: &str,
        email: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<String, OdkError> {
        let started = std::time::Instant::now();
        let result = self.session_call(base, email, password, timeout).await;
        METRICS.upstream(Upstream::Odk, "session", outcome(&result), started.elapsed());
        result
    }

    async fn session_call(
        &self,
        base: &str,
        email: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<String, OdkError> {
        let base = base.trim_end_matches('/');
        let url = format!("{base}/v1/sessions");
        let resp = self
            .http
            .post(&url)
            .json(&json!({"email": email, "password": password.expose()}))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| OdkError::Unreachable(base.to_string(), error_chain(&e)))?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 | 403 => return Err(OdkError::BadCredentials(base.to_string(), email.to_string())),
            s => return Err(OdkError::Status(s, "/v1/sessions".into())),
        }
        let body: Value = resp.json().await.map_err(|e| OdkError::Malformed("/v1/sessions".into(), error_chain(&e)))?;
        body.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| OdkError::Malformed("/v1/sessions".into(), "no token".into()))
    }

    /// How many submissions the OData feed holds in `[start, end)`.
    pub async fn count(
        &self,
        odata_url: &str,
        token: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<u64, OdkError> {
        let started = std::time::Instant::now();
        let result = self.count_call(odata_url, token, start, end, timeout).await;
        METRICS.upstream(Upstream::Odk, "count", outcome(&result), started.elapsed());
        result
    }

    async fn count_call(
        &self,
        odata_url: &str,
        token: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<u64, OdkError> {
        let filter = window_filter(start, end).replace(' ', "%20");
        let sep = if odata_url.contains('?') { '&' } else { '?' };
        let url = format!("{odata_url}{sep}$filter={filter}&$top=0&$count=true");
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| OdkError::Unreachable(odata_url.to_string(), error_chain(&e)))?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 | 403 => return Err(OdkError::Status(401, "the OData feed (token refused)".into())),
            s => return Err(OdkError::Status(s, "the OData feed".into())),
        }
        let body: Value =
            resp.json().await.map_err(|e| OdkError::Malformed("the OData feed".into(), error_chain(&e)))?;
        body.get("@odata.count")
            .and_then(Value::as_u64)
            .ok_or_else(|| OdkError::Malformed("the OData feed".into(), "no @odata.count".into()))
    }
}

/// The metrics outcome of an ODK call: `ok` or its error class.
fn outcome<T>(result: &Result<T, OdkError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        // `error_chain` starts with what kind of failure it was.
        Err(OdkError::Unreachable(_, why)) if why.starts_with("timed out") => "timeout",
        Err(OdkError::Unreachable(_, why)) if why.starts_with("connection") => "connect",
        Err(OdkError::Unreachable(..)) => "request",
        Err(OdkError::BadCredentials(..)) => "auth",
        Err(OdkError::Status(status, _)) => status_class(*status),
        Err(OdkError::Malformed(..)) => "malformed",
    }
}
