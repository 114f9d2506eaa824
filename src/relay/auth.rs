//! How the relay authenticates to the callback target, per connector: an Odoo web
//! session (logged in once, reused, renewed when refused, logged out when idle), an
//! OAuth token (cached until it expires), a static bearer token, or nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clients::mts::error_chain;
use crate::model::fields::Record;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// The target refused the credentials (may be fixed later: retried).
    #[error("the target refused the credentials of {0}")]
    Refused(String),
    #[error("cannot log in at {0}: {1}")]
    Unreachable(String, String),
}

#[derive(Clone)]
enum Cached {
    Cookie(String),
    Bearer(String, Instant),
}

pub struct Sessions {
    http: reqwest::Client,
    /// By connector id and auth settings (a changed setting logs in again).
    cache: Mutex<HashMap<(u64, String), Cached>>,
    /// When each cached session was last used.
    used: Mutex<HashMap<u64, Instant>>,
    /// One login at a time per connector: concurrent deliveries that find no
    /// session wait for the first one's login instead of each logging in.
    logging_in: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// A session unused this long is logged out.
    idle: Duration,
}

fn fingerprint(c: &Record) -> String {
    let f = |k: &str| c.str(k).unwrap_or_default().to_string();
    let pw = c.secret("callback_auth_password").map(|s| crate::relay::sha256_hex(s.expose())).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{pw}",
        f("callback_authtype"),
        f("callback_auth_url"),
        f("callback_auth_database"),
        f("callback_auth_username")
    )
}

/// The logout URL MTS uses: the auth URL with its last path segment replaced.
pub fn logout_url(auth_url: &str) -> String {
    match auth_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/logout"),
        None => auth_url.to_string(),
    }
}

impl Sessions {
    pub fn new(http: reqwest::Client, idle: Duration) -> Sessions {
        Sessions {
            http,
            idle,
            cache: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            logging_in: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, String), Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the connector's session or token after the target refused `used` (the
    /// header value sent). A session another delivery already renewed is kept, so
    /// concurrent refusals of one expired session cause one new login, not one each.
    pub fn invalidate(&self, c: &Record, used: &str) {
        let mut cache = self.cache();
        let key = (c.id, fingerprint(c));
        if cache.get(&key).is_some_and(|cached| header_value(cached) == used) {
            cache.remove(&key);
        }
    }

    /// The cached credentials for `key`, when still usable.
    fn cached(&self, key: &(u64, String)) -> Option<Cached> {
        self.cache().get(key).filter(|c| !matches!(c, Cached::Bearer(_, until) if Instant::now() >= *until)).cloned()
    }

    /// The header carrying the connector's credentials, if its auth type has one.
    pub async fn header(&self, c: &Record, timeout: Duration) -> Result<Option<(&'static str, String)>, AuthError> {
        let key = (c.id, fingerprint(c));
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(c.id, Instant::now());
        match c.str("callback_authtype").unwrap_or("none") {
            "staticBearer" => {
                Ok(c.secret("callback_auth_token").map(|t| ("authorization", format!("Bearer {}", t.expose()))))
            }
            kind @ ("odoo" | "oauth") => {
                if let Some(cached) = self.cached(&key) {
                    return Ok(Some(header_of(&cached)));
                }
                let lock = self.logging_in.lock().unwrap_or_else(|p| p.into_inner()).entry(c.id).or_default().clone();
                let _one_at_a_time = lock.lock().await;
                // Another delivery may have logged in while this one waited.
                if let Some(cached) = self.cached(&key) {
                    return Ok(Some(header_of(&cached)));
                }
                let cached = if kind == "odoo" {
                    Cached::Cookie(self.odoo_login(c, timeout).await?)
                } else {
                    let (token, until) = self.oauth_token(c, timeout).await?;
                    Cached::Bearer(token, until)
                };
                self.cache().insert(key, cached.clone());
                Ok(Some(header_of(&cached)))
            }
            _ => Ok(None),
        }
    }

    async fn odoo_login(&self, c: &Record, timeout: Duration) -> Result<String, AuthError> {
        let url = c.str("callback_auth_url").unwrap_or_default();
        let user = c.str("callback_auth_username").unwrap_or_default().to_string();
        let body = json!({"jsonrpc": "2.0", "method": "call", "params": {
            "db": c.str("callback_auth_database").unwrap_or_default(),
            "login": user,
            "password": c.secret("callback_auth_password").map(|s| s.expose()).unwrap_or_default(),
        }});
        let resp = self
            .http
            .post(url)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(url.to_string(), error_chain(&e)))?;
        let cookie = resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            let first = v.split(';').next()?.trim();
            first.strip_prefix("session_id=").filter(|s| !s.is_empty()).map(str::to_string)
        });
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match cookie {
            Some(cookie) if answer.get("error").is_none() && (200..300).contains(&status) => {
                tracing::debug!(connector_id = c.id, "logged in to the callback target");
                Ok(cookie)
            }
            _ if status >= 500 => Err(AuthError::Unreachable(url.to_string(), format!("HTTP {status}"))),
            _ => Err(AuthError::Refused(user)),
        }
    }

    async fn oauth_token(&self, c: &Record, timeout: Duration) -> Result<(String, Instant), AuthError> {
        let url = c.str("callback_auth_url").unwrap_or_default();
        let user = c.str("callback_auth_username").unwrap_or_default().to_string();
        let secret = |k: &str| c.secret(k).map(|s| s.expose().to_string()).unwrap_or_default();
        let form = [
            ("grant_type", "password".to_string()),
            ("username", user.clone()),
            ("password", secret("callback_auth_password")),
            ("client_id", c.str("callback_auth_client_id").unwrap_or_default().to_string()),
            ("client_secret", secret("callback_auth_client_secret")),
        ];
        let body: String = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(url.to_string(), error_chain(&e)))?;
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match answer.get("access_token").and_then(Value::as_str) {
            Some(token) if (200..300).contains(&status) => {
                let ttl = answer.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
                // Renew a little before it expires.
                let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(10).max(1));
                Ok((token.to_string(), until))
            }
            _ if status >= 500 => Err(AuthError::Unreachable(url.to_string(), format!("HTTP {status}"))),
            _ => Err(AuthError::Refused(user)),
        }
    }

    /// Logs out the Odoo sessions of connectors with nothing left to deliver and unused
    /// for the idle time; answers when the next held session becomes idle.
    pub async fn log_out_idle(&self, busy: &HashSet<u64>, store: &crate::store::Store) -> Option<Instant> {
        let last_use = |id: &u64| self.used.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied();
        let mut idle = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, cached) in self.cache().iter() {
            match last_use(&key.0).map(|t| t + self.idle) {
                _ if busy.contains(&key.0) => {}
                Some(at) if at > Instant::now() => next = Some(next.map_or(at, |n| n.min(at))),
                _ => idle.push((key.clone(), cached.clone())),
            }
        }
        for (key, cached) in idle {
            self.cache().remove(&key);
            let connector = store.get(crate::model::connector::MODEL, key.0);
            if let (Cached::Cookie(cookie), Some(c)) = (cached, connector) {
                let url = logout_url(c.str("callback_auth_url").unwrap_or_default());
                let _ = self
                    .http
                    .get(&url)
                    .header("cookie", format!("session_id={cookie}"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                tracing::debug!(connector_id = key.0, "logged out of the callback target (idle)");
            }
        }
        next
    }
}

fn header_of(cached: &Cached) -> (&'static str, String) {
    match cached {
        Cached::Cookie(_) => ("cookie", header_value(cached)),
        Cached::Bearer(..) => ("authorization", header_value(cached)),
    }
}

fn header_value(cached: &Cached) -> String {
    match cached {
        Cached::Cookie(cookie) => format!("session_id={cookie}"),
        Cached::Bearer(token, _) => format!("Bearer {token}"),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
