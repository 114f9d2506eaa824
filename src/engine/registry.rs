//! Registry runs: walk the OpenG2P registry page by page and send each page to MTS.
//!
//! A registry connector's run (scheduled, run-now or one-time) is a **walk**. The walk
//! logs in to the registry Odoo, counts the registrants matching `g2p_search_domain`
//! (`records_expected`), then reads them in pages of `max_records_per_request` with
//! `domain AND id > last_id` ordered by id, fetches the page's VIDs in one call on
//! `g2p.reg.id`, builds MTS `authdata` as the `g2p_mts` addon does, and sends each page
//! to MTS `/authtoken/json` as its own **page run** (`split_of_id` = the walk). A page
//! run stores the registrant ids only, never their data; it is classified and tracked
//! by the same code as ODK runs (`runner::track_phase`). The walk keeps at most
//! [`PAGES_IN_FLIGHT`] pages waiting in MTS and tracks the oldest to its end before it
//! reads on, so its memory is one page plus a few pages' ids, whatever the registry's
//! size. It ends when every page is sent and tracked to its end: `done`,
//! `done_with_errors` (some page did), or `empty` (nothing to send).
//!
//! - **No re-sends.** The registrants of page runs that are still open (and, in relay
//!   mode, of pages whose deliveries are still pending) are skipped by a later walk;
//!   once a request has ended its registrants are read again only if they still match
//!   the domain, i.e. did not get their token.
//! - **Progress and resumption.** The walk stores `last_id` (the page boundary),
//!   `records_sent`, `pages_done` and `records_skipped` after every page, durably, so a
//!   restart resumes from the last page boundary. Pages MTS never acknowledged are
//!   read again by id and resubmitted; acknowledged ones are tracked, never resubmitted.
//! - **Errors.** Wrong credentials, an unknown database, missing rights or an unknown
//!   field fail the walk at once with a clear message (checked before the first page,
//!   so nothing is half-done). Odoo or MTS unreachable or answering 5xx put the walk in
//!   `retrying` with the engine's backoff; it resumes from the last page boundary.
//! - **Windows** do not select registrants: the scheduler's window is kept as the
//!   walk's time label only.
//!
//! The **VID clean-up** (`delete_vid_after_token`, the addon's "Delete MOSIP VID Ids"
//! job) runs every `vid_delete_interval_minutes` while the connector is started: a
//! `vid_cleanup` run pages through `vid_delete_search_domain` and unlinks the
//! `vid_id_type` ids of registrants that hold a non-empty `uin_token_id_type` id,
//! counting every deletion in `vids_deleted`.
//!
//! # Layout
//! - this file: what a connector says about its registry, the Odoo client, the entry
//!   point from the runner and how an early stop ends a run.
//! - `page`: the registry checks before the first page, reading a page, `authdata`.
//! - `walk`: the walk, its page runs, resumption, the end of a walk.
//! - `cleanup`: the VID clean-up.

mod cleanup;
mod page;
mod walk;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::{Engine, runner};
use crate::clients::odoo::{Credentials, OdooClient, OdooError};
use crate::model::connector;
use crate::model::fields::Record;
use crate::store::StoreError;

pub use cleanup::{vid_cleanup_concerns, vid_cleanup_due};
pub use page::authdata;

/// Pages of one walk waiting in MTS at once. MTS works one request at a time from an
/// in-memory queue: a few queued pages keep it busy, while bounding what an MTS restart
/// loses and what the walk holds in memory.
pub const PAGES_IN_FLIGHT: usize = 4;

const PARTNER: &str = "res.partner";
const REG_ID: &str = "g2p.reg.id";
const ODOO_TIMEOUT: Duration = Duration::from_secs(60);

/// The one Odoo client of the process: one keep-alive connection pool, one uid cache.
fn odoo() -> Result<&'static OdooClient, Stop> {
    static CLIENT: OnceLock<Result<OdooClient, String>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map(|http| OdooClient::new(http, ODOO_TIMEOUT))
            .map_err(|e| format!("cannot set up the HTTP client for Odoo: {e}"))
    });
    client.as_ref().map_err(|e| Stop::Transient(e.clone()))
}

/// Why a walk (or clean-up) stopped before its end.
enum Stop {
    /// The configuration or the registry must change: the run fails at once.
    Config {
        code: String,
        message: String,
    },
    /// Try again later, from the last page boundary.
    Transient(String),
    /// The engine is stopping: the run resumes after the restart.
    Shutdown,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

impl From<OdooError> for Stop {
    fn from(e: OdooError) -> Self {
        if e.is_config() {
            Stop::Config { code: String::new(), message: e.to_string() }
        } else {
            Stop::Transient(e.to_string())
        }
    }
}

fn config(message: impl Into<String>) -> Stop {
    Stop::Config { code: String::new(), message: message.into() }
}

/// What a connector says about its registry.
struct Registry<'a> {
    creds: Credentials<'a>,
    /// `g2p_search_domain` (a JSON list).
    domain: Vec<Value>,
    /// `g2p_selected_fields`.
    fields: Vec<String>,
    vid_type: &'a str,
    token_type: &'a str,
    page_size: u64,
}

impl<'a> Registry<'a> {
    fn of(c: &'a Record) -> Result<Registry<'a>, Stop> {
        let text = |field: &str| c.str(field).ok_or_else(|| config(format!("{field} is not set")));
        let password = c.secret("odoo_password").ok_or_else(|| config("odoo_password is not set"))?;
        let domain =
            json_list(c.str("g2p_search_domain").unwrap_or(connector::DEFAULT_G2P_DOMAIN), "g2p_search_domain")?;
        let fields: Vec<String> =
            json_list(c.str("g2p_selected_fields").unwrap_or(connector::DEFAULT_G2P_FIELDS), "g2p_selected_fields")?
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
        Ok(Registry {
            creds: Credentials {
                url: text("odoo_url")?,
                db: text("odoo_database")?,
                login: text("odoo_username")?,
                password,
            },
            domain,
            fields,
            vid_type: c.str("vid_id_type").unwrap_or("MOSIP VID"),
            token_type: c.str("uin_token_id_type").unwrap_or("MOSIP UIN TOKEN"),
            page_size: c.int("max_records_per_request").unwrap_or(500).max(1) as u64,
        })
    }

    /// The connector's domain AND `extra` (Odoo ANDs consecutive complete terms).
    fn domain_and(&self, extra: Value) -> Value {
        let mut d = self.domain.clone();
        d.push(extra);
        Value::Array(d)
    }

    fn field_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        if !out.contains(&"id") {
            out.push("id");
        }
        out
    }
}

fn json_list(text: &str, field: &str) -> Result<Vec<Value>, Stop> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(config(format!("{field} is not a JSON list"))),
    }
}

/// Registrant ids as stored on a page run: `"12,15,31"`.
pub fn encode_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

pub fn decode_ids(text: &str) -> Vec<u64> {
    text.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

fn page_ids(run: &Record) -> Option<Vec<u64>> {
    run.str("registrant_ids").map(decode_ids)
}

fn int_id(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_array().and_then(|a| a.first()).and_then(Value::as_u64))
}

/// Entry point from the runner for a registry connector's run (the MTS slot is not
/// held: each page takes one). Walks, sends a single page again, or cleans VIDs up.
pub async fn run(engine: &Engine, run: Record, c: Record) -> Result<(), StoreError> {
    if run.str("trigger") == Some("vid_cleanup") {
        return cleanup::cleanup(engine, run, c).await;
    }
    let original = run.int("retry_of_id").and_then(|o| engine.run(o as u64));
    if page_ids(&run).is_some() || original.as_ref().is_some_and(|o| page_ids(o).is_some()) {
        return walk::lone_page(engine, run, c, original).await;
    }
    walk::walk(engine, run, c).await
}

/// For `action_test_connection`: one line saying whether the registry accepts the
/// connector's credentials and how many registrants its domain matches (no secret).
pub async fn test_connection(c: &Record) -> String {
    let check = async {
        let reg = Registry::of(c)?;
        let odoo = odoo()?;
        odoo.authenticate(&reg.creds).await?;
        let n = odoo.search_count(&reg.creds, PARTNER, &Value::Array(reg.domain.clone())).await?;
        Ok::<_, Stop>(format!(
            "OK: the registry Odoo at {} accepted the credentials of {:?} on {:?}; {n} registrants match the domain",
            reg.creds.url, reg.creds.login, reg.creds.db
        ))
    };
    match check.await {
        Ok(line) => line,
        Err(Stop::Config { message, .. } | Stop::Transient(message)) => format!("FAILED: {message}"),
        Err(Stop::Shutdown) => "FAILED: the service is stopping".into(),
        Err(Stop::Store(e)) => format!("FAILED: {e}"),
    }
}

/// Ends a walk or clean-up run that stopped early, as `stop` says.
async fn stopped(engine: &Engine, id: u64, stop: Stop) -> Result<(), StoreError> {
    match stop {
        Stop::Config { code, message } => runner::fail(engine, id, &code, &message).await,
        Stop::Transient(message) => {
            let attempts = engine.run(id).and_then(|r| r.int("attempts")).unwrap_or(0) + 1;
            runner::retry_later(engine, id, attempts, "", &message).await
        }
        Stop::Shutdown => Ok(()),
        Stop::Store(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(decode_ids(&encode_ids(&[3, 15, 1_000_000])), vec![3, 15, 1_000_000]);
        assert!(decode_ids("").is_empty());
    }

    #[tokio::test]
    async fn test_connection_reports_the_registry_without_secrets() {
        let reg = crate::fakes::FakeRegistry::start("db", "u", "pw-SECRET", 20).await.unwrap();
        let mut c = Record::default();
        c.set("odoo_url", reg.url());
        c.set("odoo_database", "db");
        c.set("odoo_username", "u");
        c.secrets.insert("odoo_password".into(), crate::secret::Secret::new("pw-SECRET"));
        let line = test_connection(&c).await;
        assert!(line.starts_with("OK:") && line.contains("14 registrants match"), "{line}");
        reg.set_password("other");
        let line = test_connection(&c).await;
        assert!(line.starts_with("FAILED:") && line.contains("refused the credentials"), "{line}");
        assert!(!line.contains("SECRET"), "{line}");
    }
}
