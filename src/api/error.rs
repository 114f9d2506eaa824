//! Odoo-shaped errors: the one place where every failure becomes the wire error.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use crate::model::ModelError;
use crate::store::StoreError;

/// A failure as an Odoo client sees it. The variant picks `data.name`, the exception
/// class clients switch on. Messages never hold secrets: they are built from field
/// names, ids and states only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdooError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    User(String),
    #[error("Access Denied")]
    AccessDenied,
    #[error("{0}")]
    Access(String),
    #[error("{0}")]
    Missing(String),
    #[error("Session expired")]
    SessionExpired,
    /// Malformed arguments or domains (Python's `ValueError`).
    #[error("{0}")]
    Value(String),
    /// Wrong number or kind of arguments (Python's `TypeError`).
    #[error("{0}")]
    Type(String),
    /// Unknown method (Python's `AttributeError`).
    #[error("{0}")]
    Attribute(String),
    /// Unknown model (Python's `KeyError`).
    #[error("{0}")]
    Key(String),
    /// Unknown service or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The store failed; the message is logged, the client gets a generic one.
    #[error("{0}")]
    Internal(String),
    /// A read tried on an async worker thread needs more work than it may spend there
    /// (see `api::blocking::read_first`): it is run again off the worker threads. Never
    /// answered to a client.
    #[error("the call needs more work than a worker thread may spend on it")]
    Offload,
}

impl OdooError {
    pub fn exception_name(&self) -> &'static str {
        match self {
            OdooError::Validation(_) => "odoo.exceptions.ValidationError",
            OdooError::User(_) => "odoo.exceptions.UserError",
            OdooError::AccessDenied => "odoo.exceptions.AccessDenied",
            OdooError::Access(_) => "odoo.exceptions.AccessError",
            OdooError::Missing(_) => "odoo.exceptions.MissingError",
            OdooError::SessionExpired => "odoo.http.SessionExpiredException",
            OdooError::Value(_) => "builtins.ValueError",
            OdooError::Type(_) => "builtins.TypeError",
            OdooError::Attribute(_) => "builtins.AttributeError",
            OdooError::Key(_) => "builtins.KeyError",
            OdooError::NotFound(_) => "werkzeug.exceptions.NotFound",
            OdooError::Internal(_) | OdooError::Offload => "builtins.RuntimeError",
        }
    }
}

impl From<ModelError> for OdooError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Validation(m) => OdooError::Validation(m),
            ModelError::User(m) => OdooError::User(m),
            ModelError::Missing(m) => OdooError::Missing(m),
            ModelError::Value(m) => OdooError::Value(m),
        }
    }
}

impl From<StoreError> for OdooError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            // Refused before anything changed (its reason names no record and no secret).
            StoreError::Unwritable { reason, .. } => OdooError::Internal(format!(
                "The connector service cannot write to its store ({reason}). Free space on its disk and try again."
            )),
            _ => OdooError::Internal("The connector service could not write to its store; see its log.".into()),
        }
    }
}

impl From<crate::engine::actions::ActionError> for OdooError {
    fn from(e: crate::engine::actions::ActionError) -> Self {
        match e {
            crate::engine::actions::ActionError::Model(m) => m.into(),
            crate::engine::actions::ActionError::Store(s) => s.into(),
        }
    }
}

impl From<OdooError> for ErrorObjectOwned {
    fn from(e: OdooError) -> Self {
        let message = e.to_string();
        let (code, title) = match e {
            OdooError::SessionExpired => (100, "Odoo Session Expired"),
            OdooError::NotFound(_) => (404, "404: Not Found"),
            _ => (200, "Odoo Server Error"),
        };
        let name = e.exception_name();
        ErrorObjectOwned::owned(
            code,
            title,
            Some(json!({
                "name": name,
                "message": message,
                "arguments": [message],
                "context": {},
                "debug": format!("{name}: {message}"),
            })),
        )
    }
}
