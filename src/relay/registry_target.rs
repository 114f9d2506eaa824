//! The registry delivery target (`delivery_target = registry`): a relayed token is
//! written straight into the OpenG2P registry over its JSON-RPC, as the registrant's
//! `g2p.reg.id` of type `uin_token_id_type`, created, or updated when the registrant
//! holds one already (never a second: OpenG2P 1.3 allows one id per type, and writes for
//! the same registrant are serialised here). No REST addon is needed on the registry.
//!
//! The delivery queue (`deliver.rs`) calls [`deliver`] instead of an HTTP callback, so a
//! registry write is retried, de-duplicated (by the relay's idempotency key) and
//! dead-lettered exactly like any relayed delivery.
//!
//! Which registrant: the rendered `output_format` when it is an object with a
//! `partner_id` (how an ODK connector names it), else the relayed record's `input.id`
//! (the registry input sends each registrant's id). The token is MTS's `output.token`.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::clients::odoo::{Credentials, OdooClient, OdooError};
use crate::model::fields::Record;

const REG_ID: &str = "g2p.reg.id";
const ID_TYPE: &str = "g2p.id.type";

/// Writes for one registrant go one at a time (a search then a create must not race
/// another for the same registrant); different registrants spread over the stripes.
const STRIPES: usize = 64;

/// How long one registry call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a registry write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Retrying will not help until the record, the connector or the registry changes.
    #[error("{0}")]
    Refused(String),
    /// The registry was unreachable, slow or failing: try again later.
    #[error("{0}")]
    Transient(String),
}

/// What the write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    /// The registrant already held this very token.
    Unchanged,
}

impl From<OdooError> for TargetError {
    fn from(e: OdooError) -> Self {
        let refused = e.is_config()
            || matches!(&e, OdooError::Server { name, .. }
                if name.ends_with("ValidationError") || name.ends_with("MissingError") || name.ends_with("UserError"));
        if refused { TargetError::Refused(e.to_string()) } else { TargetError::Transient(e.to_string()) }
    }
}

/// The one Odoo client of the registry target: keep-alive pool and uid cache.
fn odoo() -> Result<&'static OdooClient, TargetError> {
    static CLIENT: OnceLock<Result<OdooClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(90))
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map(|http| OdooClient::new(http, TIMEOUT))
                .map_err(|e| format!("cannot set up the HTTP client for the registry: {e}"))
        })
        .as_ref()
        .map_err(|e| TargetError::Transient(e.clone()))
}

fn stripe(partner: u64) -> &'static tokio::sync::Mutex<()> {
    static LOCKS: OnceLock<Vec<tokio::sync::Mutex<()>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());
    &locks[(partner as usize) % STRIPES]
}

/// The registrant a relayed record is for: `partner_id` of the rendered output, else
/// `input.id`.
pub fn registrant_of(rendered: &Value, input: &Value) -> Result<u64, TargetError> {
    let as_id = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).filter(|n| *n > 0);
    let named = rendered.as_object().and_then(|o| o.get("partner_id"));
    let found = match named {
        Some(v) => as_id(v),
        None => as_id(&input["id"]),
    };
    found.ok_or_else(|| {
        TargetError::Refused(match named {
            Some(v) => format!("the output format's partner_id {v} is not a registrant id"),
            None => "the record names no registrant: the input has no id and the output format no partner_id".into(),
        })
    })
}

/// MTS's token for the record, or why MTS made none.
pub fn token_of(output: &Value) -> Result<&str, TargetError> {
    match output["token"].as_str().filter(|t| !t.is_empty()) {
        Some(t) => Ok(t),
        None => Err(TargetError::Refused(format!(
            "MTS made no token for this record (status {}, {} {})",
            output["status"].as_str().unwrap_or("?"),
            output["errorCode"].as_str().unwrap_or_default(),
            output["errorMessage"].as_str().unwrap_or_default()
        ))),
    }
}

/// Writes the token of one relayed record into the registry of connector `c`.
/// `rendered` is the record after the connector's output format.
pub async fn deliver(c: &Record, payload: &Value, rendered: &Value) -> Result<Written, TargetError> {
    let refused = |field: &str| TargetError::Refused(format!("{field} is not set on the connector"));
    let password = c.secret("odoo_password").ok_or_else(|| refused("odoo_password"))?;
    let creds = Credentials {
        url: c.str("odoo_url").ok_or_else(|| refused("odoo_url"))?,
        db: c.str("odoo_database").ok_or_else(|| refused("odoo_database"))?,
        login: c.str("odoo_username").ok_or_else(|| refused("odoo_username"))?,
        password,
    };
    let type_name = c.str("uin_token_id_type").unwrap_or("MOSIP UIN TOKEN");
    let partner = registrant_of(rendered, &payload["input"])?;
    let token = token_of(&payload["output"])?;
    let odoo = odoo()?;
    let type_id = id_type(odoo, &creds, type_name).await?;
    let _one_at_a_time = stripe(partner).lock().await;
    let existing = odoo
        .search_read(
            &creds,
            REG_ID,
            &json!([["partner_id", "=", partner], ["id_type", "=", type_id]]),
            &["value"],
            Some("id"),
            None,
        )
        .await?;
    match existing.first() {
        Some(row) if row["value"].as_str() == Some(token) => Ok(Written::Unchanged),
        Some(row) => {
            let id = row["id"].as_u64().ok_or_else(|| TargetError::Transient(format!("g2p.reg.id row {row}")))?;
            odoo.execute_kw(&creds, REG_ID, "write", json!([[id], {"value": token}]), json!({})).await?;
            Ok(Written::Updated)
        }
        None => {
            odoo.execute_kw(
                &creds,
                REG_ID,
                "create",
                json!([{"partner_id": partner, "id_type": type_id, "value": token}]),
                json!({}),
            )
            .await?;
            Ok(Written::Created)
        }
    }
}

/// The id of the `g2p.id.type` named `name` (one search per delivery: cheap, and a
/// renamed type is noticed at once).
async fn id_type(odoo: &OdooClient, creds: &Credentials<'_>, name: &str) -> Result<u64, TargetError> {
    let rows = odoo.search_read(creds, ID_TYPE, &json!([["name", "=", name]]), &["name"], Some("id"), Some(1)).await?;
    rows.first().and_then(|r| r["id"].as_u64()).ok_or_else(|| {
        TargetError::Refused(format!("the registry at {} has no ID type named {name:?} (g2p.id.type)", creds.url))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registrant_comes_from_the_output_format_then_the_input() {
        assert_eq!(registrant_of(&json!({"partner_id": 7}), &json!({"id": 3})).unwrap(), 7);
        assert_eq!(registrant_of(&json!({"partner_id": "8"}), &json!({})).unwrap(), 8);
        assert_eq!(registrant_of(&json!({"vid": "x"}), &json!({"id": 3})).unwrap(), 3);
        assert_eq!(registrant_of(&json!("text"), &json!({"id": 4})).unwrap(), 4);
        assert!(matches!(
            registrant_of(&json!({"partner_id": false}), &json!({"id": 3})),
            Err(TargetError::Refused(_))
        ));
        assert!(matches!(registrant_of(&json!({}), &json!({"name": "A"})), Err(TargetError::Refused(_))));
    }

    #[test]
    fn a_record_without_a_token_is_refused_with_mts_error() {
        let e = token_of(&json!({"status": "invalid", "token": null, "errorCode": "ATS-REQ-009", "errorMessage": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ATS-REQ-009") && e.contains("invalid"), "{e}");
        assert_eq!(token_of(&json!({"status": "processed", "token": "t"})).unwrap(), "t");
    }
}
