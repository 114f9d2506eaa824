//! HTTP routing: JSON-RPC paths go to the jsonrpsee service (one method, `call`, as
//! Odoo's envelope has it), with the path and session cookie passed along as a request
//! extension; plain routes (`/health`, `/ready`, `/metrics`, `/web/session/logout`) are
//! answered here. Every request and every call is counted in [`crate::metrics`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use jsonrpsee::RpcModule;
use jsonrpsee::server::{HttpBody, ServerConfig, StopHandle, TowerServiceBuilder};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::{Value, json};
use tower::Service;

use super::error::OdooError;
use super::{App, health, methods, version};
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
    let _ = module.register_async_method("call", |params: Params<'static>, app, ext| async move {
        let ctx = ext.get::<RequestCtx>().cloned();
        let started = Instant::now();
        let params: Value = params.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null);
        let (result, path) = match ctx {
            Some(ctx) => (rpc(&app, &ctx, &params).await, ctx.path),
            None => (Err(OdooError::NotFound("no route".into())), String::new()),
        };
        // The outcome is the Odoo exception's class name: a fixed vocabulary.
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.exception_name().rsplit('.').next().unwrap_or("error"),
        };
        METRICS.rpc_call(&crate::metrics::rpc_method_label(&path, &params), outcome, started.elapsed());
        result.map_err(|e| {
            tracing::debug!(error = %e, "call refused");
            ErrorObjectOwned::from(e)
        })
    });
    module
}

async fn rpc(app: &App, ctx: &RequestCtx, params: &Value) -> Result<Value, OdooError> {
    let session_uid = || ctx.session.as_deref().and_then(|s| app.session_uid(s)).ok_or(OdooError::SessionExpired);
    let s = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or_default();
    match ctx.path.as_str() {
        "/jsonrpc" => methods::jsonrpc(app, params).await,
        "/web/webclient/version_info" => Ok(version()),
        "/web/session/authenticate" => match app.login(s("db"), s("login"), s("password")) {
            Some(_) => {
                app.open_session(&ctx.new_session);
                Ok(app.session_info())
            }
            None => Err(OdooError::AccessDenied),
        },
        "/web/session/get_session_info" => session_uid().map(|_| app.session_info()),
        "/web/session/destroy" => {
            if let Some(id) = &ctx.session {
                app.close_session(id);
            }
            Ok(Value::Null)
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
    let config = ServerConfig::builder().http_only().max_request_body_size(MAX_BODY).max_connections(10_000).build();
    jsonrpsee::server::Server::builder().set_config(config).to_service_builder()
}

/// `POST /relay/{run_id}`: a callback from MTS for a relay-mode run.
async fn relay(app: &App, run: &str, req: Request<Incoming>) -> Response<HttpBody> {
    use http_body_util::BodyExt;
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
    let limit = app.engine.relay.config.max_body;
    let body = match http_body_util::Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {limit} bytes"));
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, "the body could not be read"),
    };
    match app.engine.relay_receive(run_id, bearer.as_deref(), &body).await {
        Ok(r) => json_response(StatusCode::OK, json!({"stored": r.stored, "duplicates": r.duplicates})),
        Err(e) => {
            tracing::debug!(run_id, error = %e, "relay call refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            reply(status, &e.to_string())
        }
    }
}

/// Handles one HTTP request, counted by route and status.
pub async fn handle(
    app: Arc<App>,
    builder: TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity>,
    methods: jsonrpsee::Methods,
    stop: StopHandle,
    req: Request<Incoming>,
) -> Result<Response<HttpBody>, Infallible> {
    let started = Instant::now();
    let route = crate::metrics::route_label(req.uri().path());
    let resp = route_request(app, builder, methods, stop, req).await;
    if let Ok(r) = &resp {
        METRICS.http_request(route, r.status().as_u16(), started.elapsed());
    }
    resp
}

async fn route_request(
    app: Arc<App>,
    builder: TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity>,
    methods: jsonrpsee::Methods,
    stop: StopHandle,
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
        return Ok(relay(&app, run, req).await);
    }
    // Odoo's XML-RPC external API: its own module, over the same dispatch as /jsonrpc.
    if path == "/xmlrpc" || path.starts_with("/xmlrpc/") {
        return Ok(super::xmlrpc::handle(&app, req).await);
    }
    if !is_rpc_path(&path) {
        return Ok(json_response(StatusCode::NOT_FOUND, json!({"error": format!("no route {path}")})));
    }
    // Odoo picks its JSON handler by content type, not method: MTS logs in with a GET
    // that carries a JSON body.
    if req.method() == Method::GET && jsonrpsee::server::http::content_type_is_json(&req) {
        *req.method_mut() = Method::POST;
    }
    let ctx = RequestCtx { session: session_cookie(&req), new_session: new_session_id(), path };
    req.extensions_mut().insert(ctx.clone());
    let mut svc = builder.build(methods, stop);
    let mut resp = match svc.call(req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "JSON-RPC service failed");
            json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal error"}))
        }
    };
    if ctx.path == "/web/session/authenticate" && app.session_uid(&ctx.new_session).is_some() {
        let cookie = format!("session_id={}; HttpOnly; Path=/; SameSite=Lax", ctx.new_session);
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}
