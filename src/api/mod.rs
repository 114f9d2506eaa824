//! The Odoo JSON-RPC dialect over HTTP: `/jsonrpc` (external API), the web-session
//! endpoints, and plain routes (`/health`, `/ready`, `/metrics`) beside them on the
//! same port.
//!
//! - [`error`]: Odoo-shaped errors, converted to the wire in one place.
//! - [`args`]: positional and keyword arguments.
//! - [`blocking`]: CPU-heavy calls off the async workers.
//! - [`body`]: request bodies read within size, time and memory bounds.
//! - [`orm`]: the generic model methods over any model definition.
//! - [`methods`]: service and model dispatch (`common`, `object`, `call_kw`).
//! - [`http`]: routing, sessions cookies, the jsonrpsee service.
//! - [`health`]: liveness, readiness and Prometheus metrics.
//! - [`xmlrpc`]: Odoo's XML-RPC endpoints (`/xmlrpc/2/*`, `/xmlrpc/*`) over the same dispatch.

pub mod args;
pub mod blocking;
pub mod body;
pub mod error;
pub mod health;
pub mod http;
pub mod methods;
pub mod orm;
pub mod xmlrpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    sessions: Mutex<Sessions>,
}

/// Most web sessions kept; opening one more closes the longest unused.
pub const MAX_SESSIONS: usize = 10_000;

/// One web session (`/web/session/authenticate`).
#[derive(Debug, Clone, Copy)]
struct Session {
    uid: u64,
    opened: Instant,
    used: Instant,
}

/// The open web sessions; each expires when unused for `idle` or `max` after it opened.
#[derive(Debug)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
    idle: Duration,
    max: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Sessions {
        Sessions { by_id: HashMap::new(), idle, max }
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.used) >= self.idle || now.saturating_duration_since(s.opened) >= self.max
    }

    /// Opens session `id` at `now`.
    pub fn open(&mut self, id: &str, uid: u64, now: Instant) {
        if self.by_id.len() >= MAX_SESSIONS {
            self.by_id.retain(|_, s| {
                !(now.saturating_duration_since(s.used) >= self.idle
                    || now.saturating_duration_since(s.opened) >= self.max)
            });
        }
        if self.by_id.len() >= MAX_SESSIONS
            && let Some(oldest) = self.by_id.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone())
        {
            self.by_id.remove(&oldest);
        }
        self.by_id.insert(id.to_string(), Session { uid, opened: now, used: now });
    }

    /// The uid of session `id` used at `now` (which keeps it alive), or `None` when it
    /// does not exist or expired (then it is forgotten).
    pub fn use_at(&mut self, id: &str, now: Instant) -> Option<u64> {
        let s = *self.by_id.get(id)?;
        if self.expired(&s, now) {
            self.by_id.remove(id);
            return None;
        }
        if let Some(s) = self.by_id.get_mut(id) {
            s.used = now;
        }
        Some(s.uid)
    }

    pub fn close(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl App {
    /// Sessions get the default limits (see [`App::with_session_limits`]).
    pub fn new(engine: Arc<Engine>, db_name: String, api_login: String, api_key: Secret) -> App {
        let l = crate::config::Limits::default();
        App {
            store: engine.store.clone(),
            engine,
            db_name,
            api_login,
            api_key,
            sessions: Mutex::new(Sessions::new(l.session_idle, l.session_max)),
        }
    }

    /// Web sessions expire after `idle` unused, and `max` after they opened.
    pub fn with_session_limits(self, idle: Duration, max: Duration) -> App {
        App { sessions: Mutex::new(Sessions::new(idle, max)), ..self }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // Poison only means a panic elsewhere; each update is one map operation.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
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
        self.sessions().open(id, UID, Instant::now());
    }

    /// The uid of a live session (using it keeps it alive); `None` once it expired.
    pub fn session_uid(&self, id: &str) -> Option<u64> {
        self.sessions().use_at(id, Instant::now())
    }

    pub fn close_session(&self, id: &str) {
        self.sessions().close(id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_when_old() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Sessions::new(Duration::from_secs(10), Duration::from_secs(30));
        s.open("a", 2, at(0));
        // Used every 9 s: alive until the absolute limit.
        for t in [9, 18, 27] {
            assert_eq!(s.use_at("a", at(t)), Some(2), "at {t} s");
        }
        assert_eq!(s.use_at("a", at(30)), None, "30 s after it opened");
        assert!(s.is_empty(), "an expired session is forgotten");
        s.open("b", 2, at(100));
        assert_eq!(s.use_at("b", at(109)), Some(2));
        assert_eq!(s.use_at("b", at(120)), None, "unused for 11 s");
        assert_eq!(s.use_at("nope", at(120)), None);
    }

    #[test]
    fn the_session_table_is_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(3600), Duration::from_secs(86_400));
        for i in 0..MAX_SESSIONS + 50 {
            s.open(&format!("s{i}"), 2, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.use_at("s0", t0 + Duration::from_secs(1)), None, "the longest unused went first");
        assert!(s.use_at(&format!("s{}", MAX_SESSIONS + 49), t0 + Duration::from_secs(1)).is_some());
    }
}
