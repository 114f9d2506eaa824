//! The Odoo JSON-RPC dialect over HTTP: `/jsonrpc` (external API), the web-session
//! endpoints, and plain routes (`/health`, `/ready`, `/metrics`) beside them on the
//! same port.
//!
//! - [`error`]: Odoo-shaped errors, converted to the wire in one place.
//! - [`args`]: positional and keyword arguments.
//! - [`body`]: request bodies read within size, time and memory bounds.
//! - [`orm`]: the generic model methods over any model definition.
//! - [`methods`]: service and model dispatch (`common`, `object`, `call_kw`).
//! - [`http`]: routing, sessions cookies, the jsonrpsee service.
//! - [`health`]: liveness, readiness and Prometheus metrics.

pub mod args;
pub mod body;
pub mod error;
pub mod health;
pub mod http;
pub mod methods;
pub mod orm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::engine::Engine;
use crate::secret::Secret;
use crate::store::Store;

/// The uid the API user has, as Odoo's admin does.
pub const UID: u64 = 2;

/// The Odoo API level the service speaks.
pub const SERVER_VERSION: &str = "17.0";

/// Shared state of the API: the store and who may call.
pub struct App {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub db_name: String,
    pub api_login: String,
    api_key: Secret,
    sessions: Mutex<HashMap<String, u64>>,
}

impl App {
    pub fn new(engine: Arc<Engine>, db_name: String, api_login: String, api_key: Secret) -> App {
        App { store: engine.store.clone(), engine, db_name, api_login, api_key, sessions: Mutex::new(HashMap::new()) }
    }

    /// Whether `password` is the API key (constant time in the key's length).
    fn password_ok(&self, password: &str) -> bool {
        let (a, b) = (password.as_bytes(), self.api_key.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The uid for these credentials, or `None`.
    pub fn login(&self, db: &str, login: &str, password: &str) -> Option<u64> {
        (db == self.db_name && login == self.api_login && self.password_ok(password)).then_some(UID)
    }

    pub fn open_session(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), UID);
    }

    pub fn session_uid(&self, id: &str) -> Option<u64> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied()
    }

    pub fn close_session(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn session_info(&self) -> Value {
        json!({
            "uid": UID,
            "is_system": true,
            "is_admin": true,
            "db": self.db_name,
            "username": self.api_login,
            "name": self.api_login,
            "partner_id": 3,
            "company_id": 1,
            "user_context": {"lang": "en_US", "tz": "UTC", "uid": UID},
            "server_version": SERVER_VERSION,
            "server_version_info": version_info(),
        })
    }
}

fn version_info() -> Value {
    json!([17, 0, 0, "final", 0, ""])
}

/// What `common.version` and `/web/webclient/version_info` answer.
pub fn version() -> Value {
    json!({
        "server_version": SERVER_VERSION,
        "server_version_info": version_info(),
        "server_serie": SERVER_VERSION,
        "protocol_version": 1,
        "mts_connector_version": env!("CARGO_PKG_VERSION"),
    })
}
