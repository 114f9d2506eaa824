//! The fake MTS's callback delivery: authenticate once, call back per record (or in bulk), odoo logout; no retry.

use serde_json::{Map, Value, json};

use super::mts_request::{CallbackAuth, CallbackProps};
use crate::jq::{Program, render_callback};

/// What a request needs for delivery, copied out of the state (no lock across awaits).
pub(super) struct Delivery {
    pub props: CallbackProps,
    pub program: Option<Program>,
    /// (input record as received, `.output`) per record, in line order.
    pub items: Vec<(Value, Value)>,
    /// Fail the call with this index (0-based) and stop: `fail_callbacks_after`.
    pub fail_after: Option<usize>,
}

/// Why a delivery stopped; MTS only logs it.
#[derive(Debug)]
pub(super) struct DeliveryError(String);

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError(e.to_string())
}

/// Callback delivery as MTS does it: authenticate once, one call per record (or one bulk call),
/// odoo logout; the first exception stops everything. HTTP error statuses are not exceptions
/// for Python `requests`, so they are ignored, as in MTS. `still_current` is asked before each
/// call (false: the fake was restarted, stop quietly); `on_sent` is told after each call.
pub(super) async fn deliver(
    http: &reqwest::Client,
    d: Delivery,
    still_current: impl Fn() -> bool,
    on_sent: impl Fn(),
) -> Result<(), DeliveryError> {
    let mut auth_headers: Vec<(String, String)> = Vec::new();
    let mut logout = None;
    match &d.props.auth {
        CallbackAuth::None => {}
        CallbackAuth::StaticBearer(token) => auth_headers.push(("Authorization".into(), format!("Bearer {token}"))),
        CallbackAuth::Odoo { auth_url, database, username, password, extra_headers } => {
            let body = json!({"jsonrpc": "2.0", "params": {"db": database, "login": username, "password": password}});
            let resp = add_headers(http.get(auth_url), extra_headers)?.json(&body).send().await.map_err(fail)?;
            let cookies: Vec<String> = resp
                .headers()
                .get_all(http::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split(';').next())
                .map(|kv| kv.trim().to_string())
                .filter(|kv| kv.contains('=') && !kv.ends_with('='))
                .collect();
            if !cookies.is_empty() {
                auth_headers.push(("Cookie".into(), cookies.join("; ")));
            }
            let mut url = reqwest::Url::parse(auth_url).map_err(fail)?;
            url.path_segments_mut().map_err(|()| fail("authUrl cannot be a base"))?.pop().push("logout");
            logout = Some(url);
        }
        CallbackAuth::Oauth { auth_url, fields, extra_headers } => {
            let form: Vec<String> =
                fields.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect();
            let resp = add_headers(http.post(auth_url), extra_headers)?
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.join("&"))
                .send()
                .await
                .map_err(fail)?;
            let token: Value = resp.json().await.map_err(fail)?;
            let token = token.get("access_token").and_then(Value::as_str).ok_or_else(|| fail("'access_token'"))?;
            auth_headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
    }
    let render = |input: &Value, output: &Value| render_callback(d.program.as_ref(), input, output).ok();
    let bodies: Vec<Option<Value>> = if d.props.call_in_bulk {
        let all = d.items.iter().map(|(i, o)| render(i, o).unwrap_or(Value::Null)).collect();
        vec![Some(Value::Array(all))]
    } else {
        // A jq runtime error on a record sends that record's callback with no body.
        d.items.iter().map(|(i, o)| render(i, o)).collect()
    };
    let method = reqwest::Method::from_bytes(d.props.http_method.to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&m.as_str()))
        .ok_or_else(|| fail(format!("module 'requests' has no attribute '{}'", d.props.http_method.to_lowercase())))?;
    for (n, body) in bodies.into_iter().enumerate() {
        if !still_current() {
            return Ok(()); // restarted: this process no longer exists
        }
        if d.fail_after == Some(n) {
            return Err(fail("injected callback failure (fake MTS)"));
        }
        let mut rb = http.request(method.clone(), &d.props.url).timeout(d.props.timeout);
        for (k, v) in &auth_headers {
            rb = rb.header(k, v);
        }
        if body.is_some() {
            rb = rb.header("Content-Type", "application/json");
        }
        rb = add_headers(rb, &d.props.extra_headers)?;
        if let Some(body) = body {
            rb = rb.body(body.to_string());
        }
        let resp = rb.send().await.map_err(fail)?;
        resp.text().await.map_err(fail)?;
        on_sent();
    }
    if let Some(url) = logout {
        let mut rb = http.get(url);
        for (k, v) in &auth_headers {
            rb = rb.header(k, v);
        }
        rb.send().await.map_err(fail)?;
    }
    Ok(())
}

/// Adds `extraHeaders`; a non-string value is an error, as it is for Python `requests`.
fn add_headers(
    mut rb: reqwest::RequestBuilder,
    headers: &Map<String, Value>,
) -> Result<reqwest::RequestBuilder, DeliveryError> {
    for (k, v) in headers {
        let Some(v) = v.as_str() else {
            return Err(fail(format!("Header value for {k} must be str")));
        };
        rb = rb.header(k, v);
    }
    Ok(rb)
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c"), "a+b%26c");
    }
}
