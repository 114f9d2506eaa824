//! Registry runs: walk the OpenG2P registry page by page and send each page to MTS.
//!
//! A registry connector's run (scheduled, run-now or one-time) is a **walk**. The walk
//! logs in to the registry Odoo, counts the registrants matching `g2p_search_domain`
//! (`records_expected`), then reads their ids in pages of `max_records_per_request` with
//! `domain AND id > last_id` ordered by id, and makes each page a **page run**
//! (`split_of_id` = the walk, `registrant_ids`: ids only, never their data). A page run
//! is an ordinary request ([`RegistryPage`] is its input to the run life in
//! `engine::life`): when it goes out its registrants are read again by id (only those
//! still matching the domain), with their VIDs in one call on `g2p.reg.id`, turned into
//! MTS `authdata` as the `g2p_mts` addon builds it, POSTed to `/authtoken/json`,
//! classified, retried and tracked like an ODK window, and up to `mts_max_parallel`
//! pages of a walk are in MTS at once. The walk keeps at most twice that many pages
//! open, so its memory is a few pages' ids whatever the registry's size. It ends when
//! every page ended: `done`, `done_with_errors` (some page did), `failed` (MTS refused a
//! page: the walk reads no further), `empty` or `cancelled` (the connector was stopped).
//!
//! - **No re-sends.** The registrants of page runs that are still open (and, in relay
//!   mode, of pages whose deliveries are still pending) are skipped by a later walk;
//!   once a request has ended its registrants are read again only if they still match
//!   the domain, i.e. did not get their token.
//! - **Progress and resumption.** A page and the walk's `last_id` / `records_skipped`
//!   are stored in one batch; a page's acknowledgment and the walk's `records_sent` /
//!   `pages_done` in another, so the progress is exact after any crash and a restart
//!   resumes from the last page boundary.
//! - **Errors.** Wrong credentials, an unknown database, missing rights or an unknown
//!   field fail the walk at once with a clear message (checked before the first page,
//!   so nothing is half-done). Odoo unreachable or answering 5xx put the walk in
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
//! - this file: what a connector says about its registry, the Odoo client, the page
//!   input of the run life.
//! - `page`: the registry checks before the first page, reading a page, `authdata`.
//! - `walk`: the walk: pages, progress, its end.
//! - `cleanup`: the VID clean-up.

mod cleanup;
mod page;
mod walk;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::Engine;
use super::input::{Input, Prepared, Stop, config};
use crate::clients::odoo::{Credentials, OdooClient, OdooError};
use crate::model::connector;
use crate::model::fields::Record;

pub use cleanup::{cleanup, vid_cleanup_concerns, vid_cleanup_due};
pub use page::authdata;
pub use walk::walk;

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

impl From<OdooError> for Stop {
    fn from(e: OdooError) -> Self {
        if e.is_config() {
            Stop::Config { code: String::new(), message: e.to_string() }
        } else {
            Stop::Transient(e.to_string())
        }
    }
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

/// Whether `run` is a page of a walk (it carries registrant ids), as opposed to a walk.
pub fn is_page(run: &Record) -> bool {
    page_ids(run).is_some()
}

/// A page of a walk: its registrants are read again by id when the request goes out
/// (first send, resend after a crash, or after MTS lost it), and only those still
/// matching the domain are sent.
pub struct RegistryPage;

impl Input for RegistryPage {
    async fn prepare(&self, engine: &Engine, run: &Record, c: &Record) -> Result<Prepared, Stop> {
        let reg = Registry::of(c)?;
        let prepared = page::prepare(&reg).await?;
        let ids = page_ids(run).unwrap_or_default();
        let domain = reg.domain_and(json!(["id", "in", ids]));
        let fresh = page::read_rows(&reg, &prepared, &domain).await?;
        if fresh.ids.is_empty() {
            return Ok(Prepared::Empty("none of this page's registrants matches the domain any more".into()));
        }
        if fresh.ids.len() != ids.len() {
            let (kept, n) = (encode_ids(&fresh.ids), fresh.ids.len() as i64);
            engine
                .update_run(run.id, move |r| {
                    r.set("registrant_ids", kept);
                    r.set("records_expected", n);
                })
                .await?;
        }
        let now = chrono::Utc::now();
        Ok(Prepared::Send { expected: fresh.ids.len() as u64, records: Some(fresh.authdata), start: now, end: now })
    }

    /// A page's first acknowledgment counts its registrants on its walk (a resubmission
    /// of a lost page does not count them twice).
    fn counts_on(&self, run: &Record) -> Option<(u64, i64)> {
        if run.int("retry_of_id").is_some() {
            return None;
        }
        let walk = run.int("split_of_id")? as u64;
        Some((walk, page_ids(run).map_or(0, |ids| ids.len() as i64)))
    }

    fn carry(&self, lost: &Record, retry: &mut Record) {
        for field in ["registrant_ids", "split_of_id", "records_expected"] {
            if let Some(v) = lost.values.get(field) {
                retry.set(field, v.clone());
            }
        }
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
