//! The Odoo JSON-RPC client: reads the OpenG2P registry as an Odoo RPC client.
//!
//! `common.authenticate` once per (URL, database, login) to learn the uid, then
//! `object.execute_kw` with the uid and the password (or API key) on every call, as
//! Odoo's external API wants. The uid is cached; when Odoo refuses a call with
//! `AccessDenied` (the password changed, the user was replaced) the client logs in again
//! once and repeats the call. Odoo's exceptions are mapped onto [`OdooError`], whose
//! messages name the URL, database, login, model and field but never the password:
//! the password is sent to Odoo only, and any text Odoo sends back is scrubbed of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::excerpt;
use super::mts::error_chain;
use crate::secret::{MASK, Secret};

/// Where and as whom to call Odoo.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The Odoo base URL (`https://registry.example.org`); `/jsonrpc` is appended.
    pub url: &'a str,
    pub db: &'a str,
    pub login: &'a str,
    /// The user's password or an Odoo API key (Odoo 14+).
    pub password: &'a Secret,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdooError {
    /// Connection refused, DNS, TLS, timeout.
    #[error("the registry Odoo at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// A non-JSON-RPC answer (a proxy's error page, a wrong URL).
    #[error("the registry Odoo at {url} answered HTTP {status}: {detail}")]
    Http { url: String, status: u16, detail: String },
    /// `common.authenticate` answered `false`, or `AccessDenied` after a fresh login.
    #[error(
        "the registry Odoo at {url} refused the credentials of {login:?} on database {db:?} (wrong password or API key)"
    )]
    WrongCredentials { url: String, db: String, login: String },
    #[error("the registry Odoo at {url} has no database {db:?}")]
    UnknownDatabase { url: String, db: String },
    /// `odoo.exceptions.AccessError`: the user lacks the rights.
    #[error("the registry user {login:?} may not {method} {model} records (AccessError: {message})")]
    MissingRights { login: String, model: String, method: String, message: String },
    /// `ValueError: Invalid field ...` (a selected field or a domain field does not exist).
    #[error("the registry has no such field on {model}: {message}")]
    UnknownField { model: String, message: String },
    /// Any other Odoo exception.
    #[error("the registry Odoo answered {name} to {model}.{method}: {message}")]
    Server { model: String, method: String, name: String, message: String },
    /// HTTP 200 with a body that is not a JSON-RPC answer.
    #[error("the registry Odoo's answer was not understood: {0}")]
    Malformed(String),
}

impl OdooError {
    /// A configuration problem: trying again will not help until someone changes the
    /// connector or the registry (credentials, database, rights, fields, URL).
    pub fn is_config(&self) -> bool {
        match self {
            OdooError::WrongCredentials { .. }
            | OdooError::UnknownDatabase { .. }
            | OdooError::MissingRights { .. }
            | OdooError::UnknownField { .. } => true,
            // 4xx: not an Odoo JSON-RPC endpoint at this URL (408/429 are passing trouble).
            OdooError::Http { status, .. } => (400..500).contains(status) && *status != 408 && *status != 429,
            OdooError::Unreachable { .. } | OdooError::Server { .. } | OdooError::Malformed(_) => false,
        }
    }
}

/// An Odoo JSON-RPC error, as `data.name` and `data.message`.
#[derive(Debug, Clone)]
struct RpcError {
    name: String,
    message: String,
}

/// The Odoo client: one keep-alive HTTP client, a uid per (URL, database, login).
pub struct OdooClient {
    http: reqwest::Client,
    timeout: Duration,
    uids: Mutex<HashMap<(String, String, String), i64>>,
    next_id: AtomicU64,
}

impl OdooClient {
    /// `http` should keep connections alive (reqwest's default pool does); `timeout`
    /// bounds each call.
    pub fn new(http: reqwest::Client, timeout: Duration) -> Self {
        OdooClient { http, timeout, uids: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    fn key(creds: &Credentials<'_>) -> (String, String, String) {
        (creds.url.trim_end_matches('/').to_string(), creds.db.to_string(), creds.login.to_string())
    }

    fn cached_uid(&self, creds: &Credentials<'_>) -> Option<i64> {
        self.uids.lock().unwrap_or_else(|p| p.into_inner()).get(&Self::key(creds)).copied()
    }

    fn forget_uid(&self, creds: &Credentials<'_>) {
        self.uids.lock().unwrap_or_else(|p| p.into_inner()).remove(&Self::key(creds));
    }

    /// `common.authenticate(db, login, password, {})`: the uid, cached for later calls.
    #[tracing::instrument(skip_all, fields(url = %creds.url, db = %creds.db, login = %creds.login))]
    pub async fn authenticate(&self, creds: &Credentials<'_>) -> Result<i64, OdooError> {
        let args = json!([creds.db, creds.login, creds.password.expose(), {}]);
        let answer = self.call(creds, "common", "authenticate", args).await?;
        let uid = match answer {
            Ok(Value::Number(n)) => n.as_i64().ok_or_else(|| OdooError::Malformed(format!("uid {n}")))?,
            Ok(Value::Bool(false)) => return Err(wrong_credentials(creds)),
            Ok(other) => {
                return Err(OdooError::Malformed(format!("authenticate answered {}", excerpt(&other.to_string()))));
            }
            Err(e) => return Err(map_error(creds, "res.users", "authenticate", e)),
        };
        self.uids.lock().unwrap_or_else(|p| p.into_inner()).insert(Self::key(creds), uid);
        Ok(uid)
    }

    /// `object.execute_kw(db, uid, password, model, method, args, kwargs)`. Logs in
    /// first when no uid is cached, and once more when Odoo answers `AccessDenied`.
    pub async fn execute_kw(
        &self,
        creds: &Credentials<'_>,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, OdooError> {
        let mut fresh = false;
        let mut uid = match self.cached_uid(creds) {
            Some(uid) => uid,
            None => {
                fresh = true;
                self.authenticate(creds).await?
            }
        };
        loop {
            let params = json!([creds.db, uid, creds.password.expose(), model, method, args.clone(), kwargs.clone()]);
            match self.call(creds, "object", "execute_kw", params).await? {
                Ok(v) => return Ok(v),
                Err(e) if e.name.ends_with("AccessDenied") && !fresh => {
                    // The cached uid or the password no longer holds: log in again, once.
                    self.forget_uid(creds);
                    fresh = true;
                    uid = self.authenticate(creds).await?;
                }
                Err(e) => {
                    if e.name.ends_with("AccessDenied") {
                        self.forget_uid(creds);
                    }
                    return Err(map_error(creds, model, method, e));
                }
            }
        }
    }

    /// `search_read(domain, fields, order=..., limit=...)`.
    pub async fn search_read(
        &self,
        creds: &Credentials<'_>,
        model: &str,
        domain: &Value,
        fields: &[&str],
        order: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<Value>, OdooError> {
        let mut kwargs = json!({"fields": fields});
        if let Some(order) = order {
            kwargs["order"] = json!(order);
        }
        if let Some(limit) = limit {
            kwargs["limit"] = json!(limit);
        }
        match self.execute_kw(creds, model, "search_read", json!([domain]), kwargs).await? {
            Value::Array(rows) => Ok(rows),
            other => Err(OdooError::Malformed(format!("search_read answered {}", excerpt(&other.to_string())))),
        }
    }

    /// `search_count(domain)`.
    pub async fn search_count(&self, creds: &Credentials<'_>, model: &str, domain: &Value) -> Result<u64, OdooError> {
        let v = self.execute_kw(creds, model, "search_count", json!([domain]), json!({})).await?;
        v.as_u64().ok_or_else(|| OdooError::Malformed(format!("search_count answered {}", excerpt(&v.to_string()))))
    }

    /// `fields_get(allfields, attributes=["type"])`: field name -> Odoo type, for the
    /// fields that exist (Odoo leaves unknown names out).
    pub async fn field_types(
        &self,
        creds: &Credentials<'_>,
        model: &str,
        fields: &[&str],
    ) -> Result<HashMap<String, String>, OdooError> {
        let v = self
            .execute_kw(creds, model, "fields_get", json!([fields]), json!({"attributes": ["type", "relation"]}))
            .await?;
        let Value::Object(map) = v else {
            return Err(OdooError::Malformed(format!("fields_get answered {}", excerpt(&v.to_string()))));
        };
        Ok(map
            .into_iter()
            .map(|(name, d)| (name, d.get("type").and_then(Value::as_str).unwrap_or_default().to_string()))
            .collect())
    }

    /// `unlink(ids)`.
    pub async fn unlink(&self, creds: &Credentials<'_>, model: &str, ids: &[u64]) -> Result<(), OdooError> {
        self.execute_kw(creds, model, "unlink", json!([ids]), json!({})).await.map(|_| ())
    }

    /// One JSON-RPC call, counted in the metrics (`upstream="odoo"`).
    async fn call(
        &self,
        creds: &Credentials<'_>,
        service: &str,
        method: &str,
        args: Value,
    ) -> Result<Result<Value, RpcError>, OdooError> {
        let started = std::time::Instant::now();
        let result = self.call_once(creds, service, method, args).await;
        let outcome = match &result {
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) if e.name.contains("AccessDenied") => "auth",
            Ok(Err(_)) => "odoo_error",
            Err(OdooError::Unreachable { .. }) => "connect",
            Err(OdooError::Http { status, .. }) => crate::metrics::status_class(*status),
            Err(_) => "malformed",
        };
        let call = if service == "common" { "authenticate" } else { "execute_kw" };
        crate::metrics::METRICS.upstream(crate::metrics::Upstream::Odoo, call, outcome, started.elapsed());
        result
    }

    /// One JSON-RPC call: `Ok(Ok(result))`, `Ok(Err(odoo error))`, or `Err` when the
    /// call did not get a JSON-RPC answer at all.
    async fn call_once(
        &self,
        creds: &Credentials<'_>,
        service: &str,
        method: &str,
        args: Value,
    ) -> Result<Result<Value, RpcError>, OdooError> {
        let base = creds.url.trim_end_matches('/');
        let url = format!("{base}/jsonrpc");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "method": "call", "id": id,
                          "params": {"service": service, "method": method, "args": args}});
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| OdooError::Unreachable { url: base.to_string(), detail: error_chain(&e) })?;
        drop(body);
        let status = resp.status().as_u16();
        let text =
            resp.text().await.map_err(|e| OdooError::Unreachable { url: base.to_string(), detail: error_chain(&e) })?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let Some(mut answer) = parsed.filter(|v| v.get("result").is_some() || v.get("error").is_some()) else {
            if !(200..300).contains(&status) {
                return Err(OdooError::Http {
                    url: base.to_string(),
                    status,
                    detail: scrub(&excerpt(&text), creds.password),
                });
            }
            return Err(OdooError::Malformed(scrub(&excerpt(&text), creds.password)));
        };
        if let Some(result) = answer.get_mut("result") {
            return Ok(Ok(result.take()));
        }
        let error = &answer["error"];
        let data = &error["data"];
        let name = data["name"].as_str().or(error["message"].as_str()).unwrap_or("unknown error").to_string();
        let message = data["message"].as_str().or(error["message"].as_str()).unwrap_or_default();
        Ok(Err(RpcError { name, message: scrub(&excerpt(message), creds.password) }))
    }
}

fn wrong_credentials(creds: &Credentials<'_>) -> OdooError {
    OdooError::WrongCredentials {
        url: creds.url.trim_end_matches('/').to_string(),
        db: creds.db.to_string(),
        login: creds.login.to_string(),
    }
}

/// Maps an Odoo exception onto the error a user can act on.
fn map_error(creds: &Credentials<'_>, model: &str, method: &str, e: RpcError) -> OdooError {
    let url = creds.url.trim_end_matches('/').to_string();
    let short = e.name.rsplit('.').next().unwrap_or(&e.name);
    match short {
        "AccessDenied" => wrong_credentials(creds),
        // Odoo opens the database's registry first: psycopg2 says it does not exist.
        "OperationalError" if e.message.contains("does not exist") => {
            OdooError::UnknownDatabase { url, db: creds.db.to_string() }
        }
        "AccessError" => OdooError::MissingRights {
            login: creds.login.to_string(),
            model: model.to_string(),
            method: method.to_string(),
            message: e.message,
        },
        "ValueError" if e.message.contains("Invalid field") => {
            OdooError::UnknownField { model: model.to_string(), message: e.message }
        }
        _ => {
            OdooError::Server { model: model.to_string(), method: method.to_string(), name: e.name, message: e.message }
        }
    }
}

/// `text` without the password (Odoo may echo arguments back in a message).
fn scrub(text: &str, password: &Secret) -> String {
    if password.expose().len() >= 3 { text.replace(password.expose(), MASK) } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pw: &Secret) -> Credentials<'_> {
        Credentials { url: "http://odoo.local/", db: "reg", login: "u", password: pw }
    }

    #[test]
    fn odoo_exceptions_map_to_clear_errors() {
        let pw = Secret::new("hunter2");
        let c = creds(&pw);
        let e = |name: &str, message: &str| RpcError { name: name.into(), message: message.into() };
        assert!(matches!(
            map_error(&c, "res.partner", "search_read", e("odoo.exceptions.AccessDenied", "Access Denied")),
            OdooError::WrongCredentials { .. }
        ));
        let db = map_error(
            &c,
            "res.users",
            "authenticate",
            e("psycopg2.OperationalError", "FATAL:  database \"reg\" does not exist"),
        );
        assert_eq!(db.to_string(), "the registry Odoo at http://odoo.local has no database \"reg\"");
        assert!(db.is_config());
        let rights = map_error(&c, "g2p.reg.id", "unlink", e("odoo.exceptions.AccessError", "not allowed"));
        assert!(matches!(rights, OdooError::MissingRights { .. }) && rights.is_config());
        let field = map_error(&c, "res.partner", "search_read", e("builtins.ValueError", "Invalid field 'x'"));
        assert!(matches!(field, OdooError::UnknownField { .. }));
        let other = map_error(&c, "res.partner", "search_read", e("psycopg2.errors.SerializationFailure", "retry"));
        assert!(!other.is_config());
    }

    #[tokio::test]
    async fn the_uid_is_cached_and_renewed_when_odoo_refuses_it() {
        let registry = crate::fakes::FakeRegistry::start("reg", "u", "hunter2", 10).await.unwrap();
        let client = OdooClient::new(reqwest::Client::new(), Duration::from_secs(10));
        let pw = Secret::new("hunter2");
        let url = registry.url();
        let c = Credentials { url: &url, db: "reg", login: "u", password: &pw };
        let logins = || registry.calls().iter().filter(|c| c.method == "authenticate").count();
        assert_eq!(client.search_count(&c, "res.partner", &json!([])).await.unwrap(), 10);
        assert_eq!(client.search_count(&c, "res.partner", &json!([["id", ">", 5]])).await.unwrap(), 5);
        assert_eq!(logins(), 1, "one login for several calls");
        registry.set_uid(7);
        assert_eq!(client.search_count(&c, "res.partner", &json!([])).await.unwrap(), 10);
        assert_eq!(logins(), 2, "logged in again once the old uid was refused");
        registry.set_password("changed");
        let e = client.search_count(&c, "res.partner", &json!([])).await.unwrap_err();
        assert!(matches!(e, OdooError::WrongCredentials { .. }), "{e}");
        let bad = Credentials { db: "nodb", ..c };
        let e = client.authenticate(&bad).await.unwrap_err();
        assert_eq!(e, OdooError::UnknownDatabase { url: url.clone(), db: "nodb".into() });
        registry.set_down(true);
        let e = client.authenticate(&c).await.unwrap_err();
        assert!(matches!(e, OdooError::Http { status: 503, .. }) && !e.is_config(), "{e}");
    }

    #[test]
    fn messages_never_carry_the_password() {
        let pw = Secret::new("hunter2");
        assert_eq!(scrub("bad login hunter2 for u", &pw), "bad login ******** for u");
        let e = wrong_credentials(&creds(&pw));
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
