//! Fake Odoo callback target: web-session login/logout as MTS drives it, an OAuth 2
//! password-grant token endpoint, and `/api/...` endpoints that record callbacks.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{StatusCode, header};
use serde_json::{Value, json};

use super::http::{Recorded, Reply, Server, json, lock, outage, random_token, reply, with_header};

/// The OAuth 2 token endpoint (password grant, form-encoded, as in RFC 6749 4.3).
pub const TOKEN_PATH: &str = "/oauth/token";

/// The path MTS is usually told to call back.
pub const CALLBACK_PATH: &str = "/api/v1/registry/callback";

/// One callback the fake accepted.
#[derive(Debug, Clone)]
pub struct ReceivedCallback {
    pub method: String,
    pub path: String,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`None` when the body was empty or not JSON).
    pub body: Option<Value>,
    pub raw_body: String,
}

impl ReceivedCallback {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A fake Odoo that completes the MTS callback chain.
pub struct FakeOdoo {
    server: Server,
    state: Arc<Mutex<OdooState>>,
}

struct OdooState {
    db: String,
    login: String,
    password: String,
    /// A static `Authorization` header value accepted instead of a session.
    api_authorization: Option<String>,
    sessions: HashSet<String>,
    /// OAuth client `(id, secret)` whose password grants are accepted.
    oauth_client: Option<(String, String)>,
    /// Lifetime of issued access tokens.
    token_ttl: Duration,
    /// Issued access tokens and when each expires.
    tokens: HashMap<String, std::time::Instant>,
    tokens_issued: usize,
    received: Vec<ReceivedCallback>,
    logins: usize,
    logouts: usize,
    fail_next: usize,
    fail_status: StatusCode,
    down: bool,
    delay: Duration,
    /// Refuse every callback with 422 and the whole request in the answer.
    echo: bool,
}

impl FakeOdoo {
    /// Starts a fake Odoo with one database and one user.
    pub async fn start(db: &str, login: &str, password: &str) -> io::Result<FakeOdoo> {
        let state = Arc::new(Mutex::new(OdooState {
            db: db.to_string(),
            login: login.to_string(),
            password: password.to_string(),
            api_authorization: None,
            sessions: HashSet::new(),
            oauth_client: None,
            token_ttl: Duration::from_secs(3600),
            tokens: HashMap::new(),
            tokens_issued: 0,
            received: Vec::new(),
            logins: 0,
            logouts: 0,
            fail_next: 0,
            fail_status: StatusCode::INTERNAL_SERVER_ERROR,
            down: false,
            delay: Duration::ZERO,
            echo: false,
        }));
        let handler_state = state.clone();
        let server = Server::start(move |req| {
            let state = handler_state.clone();
            async move { handle(&state, req).await }
        })
        .await?;
        Ok(FakeOdoo { server, state })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `{url}/web/session/authenticate`, what MTS gets as `authOdoo.authUrl`.
    pub fn auth_url(&self) -> String {
        format!("{}/web/session/authenticate", self.url())
    }

    /// `{url}/api/v1/registry/callback`
    pub fn callback_url(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.url())
    }

    /// Also accept callbacks whose `Authorization` header equals `value` (e.g. `Bearer abc`).
    pub fn set_api_authorization(&self, value: Option<&str>) {
        lock(&self.state).api_authorization = value.map(str::to_string);
    }

    /// `{url}/oauth/token`
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.url())
    }

    /// Accepts OAuth password grants from this client (with the Odoo user's login and
    /// password), issuing bearer tokens that live `ttl` and are accepted on `/api/...`.
    pub fn enable_oauth(&self, client_id: &str, client_secret: &str, ttl: Duration) {
        let mut st = lock(&self.state);
        st.oauth_client = Some((client_id.to_string(), client_secret.to_string()));
        st.token_ttl = ttl;
    }

    /// Revokes every access token issued so far (as a restarted OAuth server would).
    pub fn expire_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        lock(&self.state).tokens_issued
    }

    /// The callbacks accepted so far (200 answers), in order.
    pub fn received(&self) -> Vec<ReceivedCallback> {
        lock(&self.state).received.clone()
    }

    /// Records the accepted callbacks carried: one per call, or each item of a bulk call.
    pub fn records_received(&self) -> usize {
        let st = lock(&self.state);
        st.received.iter().map(|c| c.body.as_ref().and_then(Value::as_array).map_or(1, Vec::len)).sum()
    }

    /// How many accepted callbacks carried each value of header `name`
    /// (e.g. `X-MTS-Connector-Delivery`, to spot duplicate deliveries).
    pub fn count_by_header(&self, name: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for cb in lock(&self.state).received.iter() {
            if let Some(v) = cb.header(name) {
                *counts.entry(v.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Successful logins so far.
    pub fn logins(&self) -> usize {
        lock(&self.state).logins
    }

    /// Logouts so far (`GET /web/session/logout`).
    pub fn logouts(&self) -> usize {
        lock(&self.state).logouts
    }

    /// Sessions currently valid.
    pub fn active_sessions(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    /// Every request received so far (including rejected ones).
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The next `n` callbacks under `/api/` are answered with `status` and not recorded as received.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut st = lock(&self.state);
        st.fail_next = n;
        st.fail_status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// When true, every request gets a 503.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// When true, every callback is refused (422, not worth retrying) with an answer that
    /// repeats the whole request: its headers (session cookie, `Authorization`, extra
    /// headers) and its body.
    pub fn set_echo(&self, echo: bool) {
        lock(&self.state).echo = echo;
    }

    /// Ends every session: their cookies stop working.
    pub fn expire_sessions(&self) {
        lock(&self.state).sessions.clear();
    }

    /// Changes the user's password (existing sessions stay valid, as in Odoo).
    pub fn set_password(&self, password: &str) {
        lock(&self.state).password = password.to_string();
    }

    /// Stops the server now.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

async fn handle(state: &Mutex<OdooState>, req: Recorded) -> Reply {
    let (down, delay) = {
        let st = lock(state);
        (st.down, st.delay)
    };
    if let Some(unavailable) = outage(down, delay, "503 Service Unavailable").await {
        return unavailable;
    }
    match (req.method.as_str(), req.path.as_str()) {
        // Odoo routes JSON by content type, not by method: MTS authenticates with a GET.
        (_, "/web/session/authenticate") => authenticate(state, &req),
        ("GET" | "POST", "/web/session/logout") => logout(state, &req),
        ("POST", TOKEN_PATH) => token(state, &req),
        ("GET", "/web/login") => {
            reply(StatusCode::OK, "text/html; charset=utf-8", "<html><body>Odoo login (fake)</body></html>")
        }
        (_, path) if path.starts_with("/api/") => callback(state, req),
        _ => reply(StatusCode::NOT_FOUND, "text/html; charset=utf-8", "<html><body><h1>Not Found</h1></body></html>"),
    }
}

fn rpc_id(req: &Recorded) -> Value {
    req.body.as_ref().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null)
}

fn authenticate(state: &Mutex<OdooState>, req: &Recorded) -> Reply {
    let Some(body) = req.body.as_ref() else {
        return reply(StatusCode::BAD_REQUEST, "text/html", "<html><body>Invalid JSON data</body></html>");
    };
    let params = body.get("params").cloned().unwrap_or(Value::Null);
    let field = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut st = lock(state);
    if field("db") != st.db || field("login") != st.login || field("password") != st.password {
        return json(
            StatusCode::OK,
            &json!({
                "jsonrpc": "2.0",
                "id": rpc_id(req),
                "error": {
                    "code": 200,
                    "message": "Odoo Server Error",
                    "data": {
                        "name": "odoo.exceptions.AccessDenied",
                        "debug": "Traceback (most recent call last):\nodoo.exceptions.AccessDenied: Access Denied",
                        "message": "Access Denied",
                        "arguments": ["Access Denied"],
                        "context": {}
                    }
                }
            }),
        );
    }
    let sid = random_token(40);
    st.sessions.insert(sid.clone());
    st.logins += 1;
    let body = json!({
        "jsonrpc": "2.0",
        "id": rpc_id(req),
        "result": {
            "uid": 2,
            "is_system": true,
            "is_admin": true,
            "user_context": {"lang": "en_US", "tz": "UTC", "uid": 2},
            "db": st.db,
            "server_version": "15.0",
            "server_version_info": [15, 0, 0, "final", 0, ""],
            "name": "Administrator",
            "username": st.login,
            "partner_display_name": "Administrator",
            "company_id": 1,
            "partner_id": 3,
            "web.base.url": "http://localhost:8069"
        }
    });
    with_header(json(StatusCode::OK, &body), header::SET_COOKIE, &format!("session_id={sid}; HttpOnly; Path=/"))
}

/// Answers a password grant the way OAuth servers do: 200 with `access_token`,
/// `token_type` and `expires_in`, or 400/401 with an `error` code.
fn token(state: &Mutex<OdooState>, req: &Recorded) -> Reply {
    let form: HashMap<String, String> = super::http::query_pairs(&req.raw_body).into_iter().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut st = lock(state);
    let error = |status: StatusCode, code: &str| json(status, &json!({"error": code}));
    let Some((client_id, client_secret)) = st.oauth_client.clone() else {
        return error(StatusCode::NOT_FOUND, "not_found");
    };
    if !req.header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    if field("grant_type") != "password" {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if field("client_id") != client_id || field("client_secret") != client_secret {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if field("username") != st.login || field("password") != st.password {
        return error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let token = random_token(32);
    let ttl = st.token_ttl;
    st.tokens.insert(token.clone(), std::time::Instant::now() + ttl);
    st.tokens_issued += 1;
    json(StatusCode::OK, &json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs()}))
}

fn logout(state: &Mutex<OdooState>, req: &Recorded) -> Reply {
    let mut st = lock(state);
    if let Some(sid) = req.cookie("session_id") {
        st.sessions.remove(&sid);
    }
    st.logouts += 1;
    let resp =
        with_header(reply(StatusCode::SEE_OTHER, "text/html; charset=utf-8", ""), header::LOCATION, "/web/login");
    with_header(resp, header::SET_COOKIE, "session_id=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Path=/")
}

fn callback(state: &Mutex<OdooState>, req: Recorded) -> Reply {
    let mut st = lock(state);
    if st.echo {
        let echo = super::http::echo_line(&req);
        return reply(StatusCode::UNPROCESSABLE_ENTITY, "text/plain", format!("Unprocessable request {echo}"));
    }
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return json(st.fail_status, &json!({"ok": false, "error": "injected failure"}));
    }
    let by_session = req.cookie("session_id").is_some_and(|s| st.sessions.contains(&s));
    let by_header = st.api_authorization.as_deref().is_some_and(|want| req.header("authorization") == Some(want));
    let by_token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|expires| std::time::Instant::now() < *expires);
    if !by_session && !by_header && !by_token {
        return json(StatusCode::UNAUTHORIZED, &json!({"ok": false, "error": "unauthorized"}));
    }
    st.received.push(ReceivedCallback {
        method: req.method,
        path: req.path,
        headers: req.headers,
        body: req.body,
        raw_body: req.raw_body,
    });
    json(StatusCode::OK, &json!({"ok": true}))
}
