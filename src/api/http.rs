//! HTTP routing: JSON-RPC paths go to the jsonrpsee service (one method, `call`, as
//! Odoo's envelope has it), with the path and session cookie passed along as a request
//! extension; plain routes (`/health`, `/ready`, `/metrics`, `/web/session/logout`) are
//! answered here. Every request and every call is counted in [`crate::metrics`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use jsonrpsee::server::{HttpBody, ServerConfig, StopHandle, TowerServiceBuilder};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{MethodResponse, ResponsePayload, RpcModule};
use serde_json::{Value, json};
use tower::Service;

use super::error::OdooError;
use super::methods::Answer;
use super::{App, body, health, methods, version};
use crate::metrics::METRICS;

/// Largest request body accepted (larger: HTTP 413 with a JSON-RPC error).
pub const MAX_BODY: u32 = 1 << 20;

/// What the RPC handler needs to know about the HTTP request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub path: String,
    /// The `session_id` cookie the client sent.
    pub session: Option<String>,
    /// The id a new session gets if this request authenticates.
    pub new_session: String,
}

fn is_rpc_path(path: &str) -> bool {
    matches!(
        path,
        "/jsonrpc"
            | "/web/webclient/version_info"
            | "/web/session/authenticate"
            | "/web/session/get_session_info"
            | "/web/session/destroy"
            | "/web/dataset/call_kw"
    ) || path.starts_with("/web/dataset/call_kw/")
}

fn session_cookie(req: &Request<Incoming>) -> Option<String> {
    req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == "session_id" && !v.is_empty()).then(|| v.to_string())
        },
    )
}

fn new_session_id() -> String {
    use rand::Rng;
    let bytes: [u8; 20] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The jsonrpsee module: the single `call` method every Odoo request uses.
pub fn rpc_module(app: Arc<App>) -> RpcModule<App> {
    let mut module = RpcModule::from_arc(app);
    // Registering a fixed, unique name on a fresh module cannot fail.
    let _ = module.register_async_method("call", |params: Params<'static>, app, mut ext| async move {
        let ctx = ext.remove::<RequestCtx>();
        let params = params.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null);
        answer(&app, ctx.as_ref(), params).await.map_err(ErrorObjectOwned::from)
    });
    module
}

/// The answer to one `call` with `params` (`null` when absent or not JSON), counted and
/// logged: what the jsonrpsee module and the single-call path below both answer.
async fn answer(app: &App, ctx: Option<&RequestCtx>, params: Value) -> Result<Answer, OdooError> {
    let started = Instant::now();
    let result = match ctx {
        Some(ctx) => rpc(app, ctx, &params).await,
        None => Err(OdooError::NotFound("no route".into())),
    };
    // The outcome is the Odoo exception's class name: a fixed vocabulary.
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.exception_name().rsplit('.').next().unwrap_or("error"),
    };
    let path = ctx.map_or("", |c| c.path.as_str());
    METRICS.rpc_call(crate::metrics::rpc_method_label(path, &params), outcome, started.elapsed());
    if let Err(e) = &result {
        tracing::debug!(error = %e, "call refused");
    }
    result
}

/// jsonrpsee's `Request` (the same fields and types, unknown fields ignored), with its
/// id read in one pass: jsonrpsee's `Id` is untagged, which builds an error for each kind
/// an id is not before it finds the one it is.
#[derive(serde::Deserialize)]
struct Single<'a> {
    #[serde(rename = "jsonrpc")]
    _version: jsonrpsee::types::TwoPointZero,
    #[serde(borrow)]
    id: SingleId<'a>,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    /// Read in the same pass as the envelope (jsonrpsee keeps it raw, then parses it).
    #[serde(default)]
    params: Value,
}

/// The ids jsonrpsee's `Id` takes: null, a non-negative integer, a string.
struct SingleId<'a>(jsonrpsee::types::Id<'a>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for SingleId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use jsonrpsee::types::Id;
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = SingleId<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, a non-negative integer or a string")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(SingleId(Id::Null))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SingleId(Id::Number(v)))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(SingleId(Id::Str(v.into())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SingleId(Id::Str(v.to_string().into())))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// A single `call` request (what every Odoo client sends) answered without the jsonrpsee
/// service around it, in the very envelope and response jsonrpsee would build (its own
/// request type, `MethodResponse` and HTTP response). `None` when `body` is anything else
/// (a batch, a notification, another method, not a request): that is jsonrpsee's to answer.
async fn single_call(app: &App, ctx: &RequestCtx, body: &[u8]) -> Option<Response<HttpBody>> {
    let call: Single = serde_json::from_slice(body).ok()?;
    if call.method != "call" {
        return None;
    }
    let (id, params) = (call.id.0, call.params);
    let rp = match answer(app, Some(ctx), params).await {
        // Rows already written as JSON go into the envelope as they are (jsonrpsee's
        // `{"jsonrpc":"2.0","id":..,"result":..}`); the budget kept them under the limit.
        Ok(Answer::Json(rows)) => match serde_json::to_string(&id) {
            Ok(id) => {
                const HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":";
                let mut body = String::with_capacity(HEAD.len() + id.len() + 11 + rows.len());
                body.push_str(HEAD);
                body.push_str(&id);
                body.push_str(",\"result\":");
                body.push_str(&rows);
                body.push('}');
                return Some(jsonrpsee::server::http::response::ok_response(body));
            }
            Err(e) => MethodResponse::error(id, ErrorObjectOwned::from(OdooError::Internal(e.to_string()))),
        },
        Ok(Answer::Value(v)) => MethodResponse::response(id, ResponsePayload::success(v), super::orm::MAX_ANSWER),
        Err(e) => MethodResponse::error(id, ErrorObjectOwned::from(e)),
    };
    Some(jsonrpsee::server::http::response::from_method_response(rp))
}

async fn rpc(app: &App, ctx: &RequestCtx, params: &Value) -> Result<Answer, OdooError> {
    let session_uid = || ctx.session.as_deref().and_then(|s| app.session_uid(s)).ok_or(OdooError::SessionExpired);
    let s = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or_default();
    match ctx.path.as_str() {
        "/jsonrpc" => methods::jsonrpc(app, params).await,
        "/web/webclient/version_info" => Ok(version().into()),
        "/web/session/authenticate" => match app.login(s("db"), s("login"), s("password")) {
            Some(_) => {
                app.open_session(&ctx.new_session);
                Ok(app.session_info().into())
            }
            None => Err(OdooError::AccessDenied),
        },
        "/web/session/get_session_info" => session_uid().map(|_| app.session_info().into()),
        "/web/session/destroy" => {
            if let Some(id) = &ctx.session {
                app.close_session(id);
            }
            Ok(Value::Null.into())
        }
        _ => {
            session_uid()?;
            methods::call_kw(app, params).await
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<HttpBody> {
    let mut resp = Response::new(HttpBody::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The jsonrpsee service configuration: HTTP only, 1 MiB bodies.
pub fn service_builder() -> TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity> {
    // Connections are limited by the accept loop; answers are bounded while they are
    // built (`orm::AnswerBudget`), this is the backstop.
    let config = ServerConfig::builder()
        .http_only()
        .max_request_body_size(MAX_BODY)
        .max_response_body_size(super::orm::MAX_ANSWER as u32)
        .max_connections(10_000)
        .build();
    jsonrpsee::server::Server::builder().set_config(config).to_service_builder()
}

/// `POST /relay/{run_id}`: a callback from MTS for a relay-mode run. The run and its
/// bearer token are checked, and a declared `Content-Length` over the limit refused,
/// before a byte of the body is read.
async fn relay(app: &App, run: &str, body_timeout: std::time::Duration, req: Request<Incoming>) -> Response<HttpBody> {
    let reply = |status: StatusCode, message: &str| json_response(status, json!({"error": message}));
    if req.method() != Method::POST && req.method() != Method::PUT {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST a callback here");
    }
    let Ok(run_id) = run.parse::<u64>() else { return reply(StatusCode::NOT_FOUND, "no such run") };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let refuse = |e: crate::relay::intake::IntakeError| {
        tracing::debug!(run_id, error = %e, "relay call refused");
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        reply(status, &e.to_string())
    };
    let (parts, body) = req.into_parts();
    if let Err(e) = app.engine.relay_authorize(run_id, bearer.as_deref()) {
        body::linger(body);
        return refuse(e);
    }
    let limit = app.engine.relay.config.max_body;
    let (bytes, _memory) = match body::read(body, &parts.headers, limit, body_timeout).await {
        Ok(read) => read,
        Err(e) => return reply(e.status(), &e.to_string()),
    };
    match app.engine.relay_receive(run_id, bearer.as_deref(), &bytes).await {
        Ok(r) => json_response(StatusCode::OK, json!({"stored": r.stored, "duplicates": r.duplicates})),
        Err(e) => refuse(e),
    }
}

/// The JSON-RPC answer to a body that could not be read: 413 (too large), 408 (too slow),
/// 503 (no memory for it now) or 400.
fn rpc_body_error(e: &body::BodyError) -> Response<HttpBody> {
    let error = match e {
        body::BodyError::TooLarge(limit) => {
            jsonrpsee::types::error::reject_too_big_request(u32::try_from(*limit).unwrap_or(u32::MAX))
        }
        other => ErrorObjectOwned::owned(jsonrpsee::types::error::INVALID_REQUEST_CODE, other.to_string(), None::<()>),
    };
    json_response(e.status(), json!({"jsonrpc": "2.0", "id": null, "error": error}))
}

/// The answer to a single JSON-RPC request whose `id` is neither a string, a
/// non-negative integer nor null: jsonrpsee would take it for a notification and answer
/// nothing, so it gets a well-formed "Invalid request" here (HTTP 200, id null).
fn invalid_id_answer(body: &[u8]) -> Option<Response<HttpBody>> {
    // Only a single request (an object): serde reads a struct from an array too, and
    // took the only element of a batch of one for the request's id.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let bad = match serde_json::from_slice::<IdProbe>(body) {
        Ok(probe) => probe.id.bad,
        // Valid JSON whose id does not even parse as a value (`1e400`): bad too. Anything
        // else (not an object, not JSON) is jsonrpsee's to answer.
        Err(_) => serde_json::from_slice::<PresenceProbe>(body).is_ok_and(|p| p.id.is_some()),
    };
    if !bad {
        return None;
    }
    let error = ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_REQUEST_CODE,
        "Invalid request: the id must be a string, a non-negative integer or null",
        None::<()>,
    );
    Some(json_response(StatusCode::OK, json!({"jsonrpc": "2.0", "id": null, "error": error})))
}

/// The one field of a request object the probe looks at (every other is skipped).
#[derive(serde::Deserialize)]
struct IdProbe {
    #[serde(default)]
    id: IdKind,
}

/// Whether a request object has an `id` at all (skipping its value unparsed).
#[derive(serde::Deserialize)]
struct PresenceProbe {
    #[serde(default)]
    id: Option<serde::de::IgnoredAny>,
}

/// Whether an `id` is one jsonrpsee cannot answer to.
#[derive(Default)]
struct IdKind {
    bad: bool,
}

impl<'de> serde::Deserialize<'de> for IdKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = IdKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_u64<E>(self, _: u64) -> Result<IdKind, E> {
                Ok(IdKind { bad: false })
            }
            fn visit_i64<E>(self, v: i64) -> Result<IdKind, E> {
                Ok(IdKind { bad: v < 0 })
            }
            fn visit_f64<E>(self, _: f64) -> Result<IdKind, E> {
                Ok(IdKind { bad: true })
            }
            fn visit_str<E>(self, _: &str) -> Result<IdKind, E> {
                Ok(IdKind { bad: false })
            }
            fn visit_unit<E>(self) -> Result<IdKind, E> {
                Ok(IdKind { bad: false })
            }
            fn visit_bool<E>(self, _: bool) -> Result<IdKind, E> {
                Ok(IdKind { bad: true })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<IdKind, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdKind { bad: true })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<IdKind, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdKind { bad: true })
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Handles one HTTP request, counted by route and status. `body_timeout` bounds how long
/// its body may take to arrive.
pub async fn handle(
    app: Arc<App>,
    builder: TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity>,
    methods: jsonrpsee::Methods,
    stop: StopHandle,
    body_timeout: std::time::Duration,
    req: Request<Incoming>,
) -> Result<Response<HttpBody>, Infallible> {
    let started = Instant::now();
    let route = crate::metrics::route_label(req.uri().path());
    let has_body = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    // No route takes a body larger than the relay's: refused before routing, so a new
    // route cannot forget it.
    let largest = app.engine.relay.config.max_body.max(MAX_BODY as usize) as u64;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut resp = if declared.is_some_and(|n| n > largest) {
        let rpc = is_rpc_path(req.uri().path());
        body::linger(req.into_body());
        Ok(if rpc {
            rpc_body_error(&body::BodyError::TooLarge(MAX_BODY as usize))
        } else {
            json_response(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": format!("body larger than {largest} bytes")}))
        })
    } else {
        route_request(app, builder, methods, stop, body_timeout, req).await
    };
    if let Ok(r) = &mut resp {
        METRICS.http_request(route, r.status().as_u16(), started.elapsed());
        // A refused request's body may not have been read (that is the point of refusing
        // it early): the connection cannot carry another request, so say it closes.
        if has_body && (r.status().is_client_error() || r.status().is_server_error()) {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

async fn route_request(
    app: Arc<App>,
    builder: TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity>,
    methods: jsonrpsee::Methods,
    stop: StopHandle,
    body_timeout: std::time::Duration,
    mut req: Request<Incoming>,
) -> Result<Response<HttpBody>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        let status = |ok: bool| if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        match path.as_str() {
            "/health" => {
                let (ok, body) = health::health(&app);
                return Ok(json_response(status(ok), body));
            }
            "/ready" => {
                let (ok, body) = health::ready(&app).await;
                return Ok(json_response(status(ok), body));
            }
            "/metrics" => {
                let mut resp = Response::new(HttpBody::from(health::metrics(&app)));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                return Ok(resp);
            }
            _ => {}
        }
    }
    if path == "/web/session/logout" {
        if let Some(id) = session_cookie(&req) {
            app.close_session(&id);
        }
        let mut resp = Response::new(HttpBody::empty());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/web/login"));
        return Ok(resp);
    }
    if let Some(run) = path.strip_prefix("/relay/") {
        return Ok(relay(&app, run, body_timeout, req).await);
    }
    // Odoo's XML-RPC external API: its own module, over the same dispatch as /jsonrpc.
    if path == "/xmlrpc" || path.starts_with("/xmlrpc/") {
        // Read here within the bounds every route has (size, time, body memory); the
        // XML-RPC handler applies its own 1 MiB limit (a 413 fault) to what was read.
        let (parts, body) = req.into_parts();
        return Ok(match body::read(body, &parts.headers, 2 * MAX_BODY as usize, body_timeout).await {
            Ok((bytes, _memory)) => {
                super::xmlrpc::handle(&app, Request::from_parts(parts, http_body_util::Full::new(bytes))).await
            }
            Err(e) => json_response(e.status(), json!({"error": e.to_string()})),
        });
    }
    if !is_rpc_path(&path) {
        return Ok(json_response(StatusCode::NOT_FOUND, json!({"error": format!("no route {path}")})));
    }
    // Odoo picks its JSON handler by content type, not method: MTS logs in with a GET
    // that carries a JSON body.
    if req.method() == Method::GET && jsonrpsee::server::http::content_type_is_json(&req) {
        *req.method_mut() = Method::POST;
    }
    // Only a login makes a session: the id is drawn for that path alone.
    let login = path == "/web/session/authenticate";
    let new_session = if login { new_session_id() } else { String::new() };
    let ctx = RequestCtx { session: session_cookie(&req), new_session: new_session.clone(), path };
    // What jsonrpsee itself would take as a call (anything else it refuses its own way).
    let json_post = req.method() == Method::POST && jsonrpsee::server::http::content_type_is_json(&req);
    // The body is read here, bounded in size, time and memory, before jsonrpsee sees it.
    let (parts, body) = req.into_parts();
    let limit = MAX_BODY as usize;
    let (bytes, _memory) = match body::read(body, &parts.headers, limit, body_timeout).await {
        Ok(read) => read,
        Err(e) => return Ok(rpc_body_error(&e)),
    };
    let single = if json_post { single_call(&app, &ctx, &bytes).await } else { None };
    let mut resp = match single {
        Some(resp) => resp,
        None => {
            if let Some(answer) = invalid_id_answer(&bytes) {
                return Ok(answer);
            }
            let mut req = Request::from_parts(parts, http_body_util::Full::new(bytes));
            req.extensions_mut().insert(ctx);
            let mut svc = builder.build(methods, stop);
            match svc.call(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::warn!(error = %e, "JSON-RPC service failed");
                    json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal error"}))
                }
            }
        }
    };
    if login && app.session_uid(&new_session).is_some() {
        let cookie = format!("session_id={new_session}; HttpOnly; Path=/; SameSite=Lax");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}
