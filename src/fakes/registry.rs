//! A fake OpenG2P registry (Odoo JSON-RPC over res.partner and g2p.reg.id) for tests.
//!
//! It speaks Odoo's external API at `/jsonrpc` (`common.authenticate`, `common.login`,
//! `common.version`, `object.execute_kw` / `object.execute`) over an in-memory registry
//! of generated registrants, with domains evaluated by [`crate::model::domain::Domain`]
//! (dotted paths such as `reg_ids.id_type` included), Odoo-shaped errors
//! (`AccessDenied`, `AccessError`, `MissingError`, `ValueError: Invalid field ...`,
//! `psycopg2.OperationalError` for an unknown database) and recording of every call.
//! `g2p.reg.id` also takes `create` and `write` (the service's direct registry
//! write-back), with OpenG2P 1.3's one-id-per-type constraint.
//! It is also the callback target MTS writes tokens to: the Odoo 15 registry REST API's
//! `PATCH /api/v1/registry/individual/updateIdentification` (`{partner_id, id_type,
//! value}`), authenticated by the `session_id` cookie of `/web/session/authenticate`.
//!
//! Registrants are generated from their id, so a million of them cost nothing until
//! they change: registrant `n` (ids `1..=size`) is a registrant with names, a birthdate,
//! a gender (a many2one to `gender.type`), an address, an email (every third has none)
//! and a phone (every fourth has none); 70% of them (`(n - 1) % 10 < 7`) hold a
//! `MOSIP VID` (`g2p.reg.id` whose id is `n`). Ids added later (tokens) and deleted
//! VIDs are kept in small maps.

mod data;
mod rpc;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{StatusCode, header};
use serde_json::{Value, json};

use super::http::{Recorded, Reply, Server, json, lock, outage, random_token, reply, with_header};
use crate::model::domain::Domain;
use data::{ID_TYPES, RegistryState, number};
use rpc::{access_denied, envelope};

/// The `g2p.id.type` name of a registrant's VID.
pub const VID_TYPE: &str = "MOSIP VID";
/// The `g2p.id.type` name MTS's callbacks write the token under.
pub const TOKEN_TYPE: &str = "MOSIP UIN TOKEN";
/// The callback path of the Odoo 15 registry REST API.
pub const UPDATE_ID_PATH: &str = "/api/v1/registry/individual/updateIdentification";
/// The uid of the registry's API user (until [`FakeRegistry::set_uid`]).
pub const REGISTRY_UID: i64 = 2;

/// One call the fake received on `/jsonrpc`.
#[derive(Debug, Clone)]
pub struct RpcCall {
    /// `common` or `object`.
    pub service: String,
    /// `authenticate`, `execute_kw`, ...
    pub method: String,
    /// For `object` calls: the model and its method.
    pub model: Option<String>,
    pub model_method: Option<String>,
    /// The call's `args` as sent (for `execute_kw`, the 7-element list, password included).
    pub args: Value,
}

/// The fake registry server. Stops when dropped.
pub struct FakeRegistry {
    server: Server,
    state: Arc<Mutex<RegistryState>>,
}

impl FakeRegistry {
    /// Starts a registry of `size` generated registrants on database `db`, whose API
    /// user is `login` with `password`.
    pub async fn start(db: &str, login: &str, password: &str, size: u64) -> io::Result<FakeRegistry> {
        let state = Arc::new(Mutex::new(RegistryState::new(db, login, password, size)));
        let handler_state = state.clone();
        let server = Server::start(move |req| {
            let state = handler_state.clone();
            async move { handle(&state, req).await }
        })
        .await?;
        Ok(FakeRegistry { server, state })
    }

    /// `http://127.0.0.1:PORT` (the connector's `odoo_url`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `{url}/web/session/authenticate` (MTS's `authOdoo.authUrl`).
    pub fn auth_url(&self) -> String {
        format!("{}/web/session/authenticate", self.url())
    }

    /// `{url}/api/v1/registry/individual/updateIdentification` (the callback URL).
    pub fn callback_url(&self) -> String {
        format!("{}{UPDATE_ID_PATH}", self.url())
    }

    /// How many registrants the registry holds.
    pub fn size(&self) -> u64 {
        lock(&self.state).size
    }

    /// Also accept `key` as the user's password (an Odoo API key).
    pub fn add_api_key(&self, key: &str) {
        lock(&self.state).passwords.push(key.into());
    }

    /// The API user gets another uid (as after a database restore): calls made with the
    /// old uid answer `AccessDenied`.
    pub fn set_uid(&self, uid: i64) {
        lock(&self.state).uid = uid;
    }

    /// Replaces the user's password (API keys are dropped too).
    pub fn set_password(&self, password: &str) {
        lock(&self.state).passwords = vec![password.into()];
    }

    /// The user loses (or regains) read access to `model`: calls answer `AccessError`.
    pub fn deny(&self, model: &str, denied: bool) {
        let mut st = lock(&self.state);
        if denied {
            st.denied.insert(model.into());
        } else {
            st.denied.remove(model);
        }
    }

    /// When true, every request gets a 503 from the "proxy" in front of Odoo.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// The next `n` `/jsonrpc` calls get an HTTP 500 (a crashed worker).
    pub fn fail_next(&self, n: usize) {
        lock(&self.state).fail_next = n;
    }

    /// The next `n` token callbacks are refused with HTTP 500 (and not applied).
    pub fn fail_callbacks(&self, n: usize) {
        lock(&self.state).fail_callbacks = n;
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// Gives registrant `partner` an id of type `id_type` (e.g. a token before a test).
    pub fn add_reg_id(&self, partner: u64, id_type: &str, value: &str) {
        let mut st = lock(&self.state);
        if let Some((tid, _)) = ID_TYPES.iter().find(|(_, n)| *n == id_type) {
            st.set_reg_id(partner, *tid, value);
        }
    }

    /// The registrant's live VID, if any.
    pub fn vid_of(&self, partner: u64) -> Option<String> {
        lock(&self.state).ids_of(partner).into_iter().find(|(_, t, _)| *t == 1).map(|(_, _, v)| v)
    }

    /// The registrant's `MOSIP UIN TOKEN`, if any.
    pub fn token_of(&self, partner: u64) -> Option<String> {
        lock(&self.state).ids_of(partner).into_iter().find(|(_, t, _)| *t == 2).map(|(_, _, v)| v)
    }

    /// Every id of type `id_type` registrant `partner` holds (more than one would be a
    /// duplicate the real registry refuses).
    pub fn reg_ids_of(&self, partner: u64, id_type: &str) -> Vec<String> {
        let Some((tid, _)) = ID_TYPES.iter().find(|(_, n)| *n == id_type) else { return Vec::new() };
        lock(&self.state).ids_of(partner).into_iter().filter(|(_, t, _)| t == tid).map(|(_, _, v)| v).collect()
    }

    /// `g2p.reg.id` records created and written over JSON-RPC so far.
    pub fn reg_id_changes(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.reg_creates, st.reg_writes)
    }

    /// Every registrant holding a token, with it.
    pub fn tokens(&self) -> BTreeMap<u64, String> {
        let st = lock(&self.state);
        st.added
            .iter()
            .filter_map(|(p, ids)| ids.iter().find(|r| r.id_type == 2).map(|r| (*p, r.value.clone())))
            .collect()
    }

    /// The registrants matching `domain` (a JSON Odoo domain on `res.partner`), by id.
    pub fn matching(&self, domain: &Value) -> Vec<u64> {
        let st = lock(&self.state);
        let Ok(d) = Domain::parse(domain) else { return Vec::new() };
        st.search_partners(&d, 0, None, false)
    }

    /// `/jsonrpc` calls received so far, in order.
    pub fn calls(&self) -> Vec<RpcCall> {
        lock(&self.state).calls.clone()
    }

    /// Token callbacks applied so far.
    pub fn callbacks(&self) -> usize {
        lock(&self.state).callbacks
    }

    /// Token callbacks refused (unauthenticated, unknown registrant, empty value, injected).
    pub fn refused_callbacks(&self) -> usize {
        lock(&self.state).refused_callbacks
    }

    /// The `g2p.reg.id` ids deleted through `unlink`, in order.
    pub fn unlinked(&self) -> Vec<u64> {
        lock(&self.state).unlinked.clone()
    }

    /// Every HTTP request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Stops the server now (later calls get "connection refused").
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

// ---- HTTP ----

async fn handle(state: &Mutex<RegistryState>, req: Recorded) -> Reply {
    let (down, delay) = {
        let st = lock(state);
        (st.down, st.delay)
    };
    if let Some(unavailable) = outage(down, delay, "503 Service Unavailable").await {
        return unavailable;
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/jsonrpc") => rpc::rpc(state, &req),
        // Odoo routes JSON by content type, not by method: MTS authenticates with a GET.
        (_, "/web/session/authenticate") => authenticate_session(state, &req),
        ("GET" | "POST", "/web/session/logout") => {
            if let Some(sid) = req.cookie("session_id") {
                lock(state).sessions.remove(&sid);
            }
            with_header(reply(StatusCode::SEE_OTHER, "text/html", ""), header::LOCATION, "/web/login")
        }
        ("PATCH" | "POST" | "PUT", UPDATE_ID_PATH) => update_identification(state, &req),
        _ => reply(StatusCode::NOT_FOUND, "text/html", "<html><body><h1>Not Found</h1></body></html>"),
    }
}

fn authenticate_session(state: &Mutex<RegistryState>, req: &Recorded) -> Reply {
    let params = req.body.as_ref().and_then(|b| b.get("params")).cloned().unwrap_or(Value::Null);
    let mut st = lock(state);
    let ok = params["db"].as_str() == Some(st.db.as_str())
        && params["login"].as_str() == Some(st.login.as_str())
        && st.password_ok(&params["password"]);
    if !ok {
        return envelope(req, Err(access_denied()));
    }
    let sid = random_token(40);
    st.sessions.insert(sid.clone());
    let body = json!({"uid": st.uid, "db": st.db, "username": st.login, "server_version": "15.0",
                      "user_context": {"lang": "en_US", "tz": "UTC", "uid": st.uid}});
    drop(st);
    with_header(envelope(req, Ok(body)), header::SET_COOKIE, &format!("session_id={sid}; HttpOnly; Path=/"))
}

/// `{partner_id, id_type, value}`: sets (or replaces) the registrant's id of that type.
fn update_identification(state: &Mutex<RegistryState>, req: &Recorded) -> Reply {
    let mut st = lock(state);
    let refuse = |st: &mut RegistryState, status: StatusCode, why: &str| {
        st.refused_callbacks += 1;
        json(status, &json!({"error": why}))
    };
    if !req.cookie("session_id").is_some_and(|s| st.sessions.contains(&s)) {
        return refuse(&mut st, StatusCode::UNAUTHORIZED, "Session expired or invalid");
    }
    if st.fail_callbacks > 0 {
        st.fail_callbacks -= 1;
        return refuse(&mut st, StatusCode::INTERNAL_SERVER_ERROR, "injected failure (fake registry)");
    }
    let body = req.body.clone().unwrap_or(Value::Null);
    let partner = number(&body["partner_id"]).or_else(|| body["partner_id"].as_str().and_then(|s| s.parse().ok()));
    let Some(partner) = partner.filter(|p| st.exists(*p)) else {
        return refuse(&mut st, StatusCode::NOT_FOUND, "Individual not found");
    };
    let id_type = body["id_type"].as_str().unwrap_or_default();
    let Some((tid, _)) = ID_TYPES.iter().find(|(_, n)| *n == id_type) else {
        return refuse(&mut st, StatusCode::BAD_REQUEST, "Unknown ID type");
    };
    let Some(value) = body["value"].as_str().filter(|v| !v.is_empty()) else {
        return refuse(&mut st, StatusCode::BAD_REQUEST, "value is required");
    };
    st.set_reg_id(partner, *tid, value);
    st.callbacks += 1;
    json(StatusCode::OK, &json!({"message": "Individual's identification updated", "id": partner}))
}
