//! The `mts.connector.run` model: one window (or registry page walk) sent to MTS and
//! tracked to its end. Read-only over the API; the engine writes it.

use super::fields::{FieldDef, FieldType as T, ModelDef};

pub const MODEL: &str = "mts.connector.run";

pub const TRIGGERS: &[(&str, &str)] = &[
    ("schedule", "Schedule"),
    ("onetime", "One-time job"),
    ("manual", "Manual import"),
    ("retry", "Retry"),
    ("vid_cleanup", "VID clean-up"),
];

pub const STATES: &[(&str, &str)] = &[
    ("queued", "Queued"),
    ("submitting", "Submitting"),
    ("submitted", "Submitted (tracked)"),
    ("done", "Done"),
    ("done_with_errors", "Done with errors"),
    ("empty", "Empty window"),
    ("retrying", "Retrying"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
];

/// States in which a run is over and will not change again.
pub const TERMINAL: &[&str] = &["done", "done_with_errors", "empty", "failed", "cancelled"];

pub static FIELDS: &[FieldDef] = &[
    FieldDef::new("name", "Run", T::Char).readonly(),
    FieldDef::new("connector_id", "Connector", T::Many2one(super::connector::MODEL)).readonly(),
    FieldDef::new("trigger", "Trigger", T::Selection(TRIGGERS)).readonly(),
    FieldDef::new("window_start", "Window Start", T::Datetime).readonly(),
    FieldDef::new("window_end", "Window End", T::Datetime).readonly(),
    FieldDef::new("state", "State", T::Selection(STATES)).readonly(),
    FieldDef::new("attempts", "Attempts", T::Integer).readonly(),
    FieldDef::new("next_attempt_at", "Next Attempt", T::Datetime).readonly(),
    FieldDef::new("mts_request_id", "MTS Request ID", T::Char).readonly(),
    FieldDef::new("mts_status", "MTS Status", T::Char).readonly(),
    FieldDef::new("mts_endpoint", "MTS Endpoint", T::Char)
        .readonly()
        .help("The MTS URL (of the connector's pool) that took the request; its status is polled there."),
    FieldDef::new("records_expected", "Records Expected", T::Integer).readonly(),
    FieldDef::new("records_sent", "Records Sent", T::Integer).readonly(),
    FieldDef::new("pages_done", "Pages Done", T::Integer).readonly(),
    FieldDef::new("records_skipped", "Records Skipped (in flight)", T::Integer).readonly(),
    FieldDef::new("last_id", "Last Registrant ID", T::Integer)
        .readonly()
        .help("Registry walks and VID clean-ups: the registrant id the next page starts after."),
    FieldDef::new("registrant_ids", "Registrant IDs", T::Text)
        .readonly()
        .help("Registry pages: the res.partner ids the request carries (ids only, no personal data)."),
    FieldDef::new("vids_deleted", "VIDs Deleted", T::Integer).readonly(),
    FieldDef::new("records_received", "Records Received", T::Integer).readonly(),
    FieldDef::new("records_delivered", "Records Delivered", T::Integer).readonly(),
    FieldDef::new("records_failed", "Records Failed", T::Integer).readonly(),
    FieldDef::new("retry_of_id", "Retry Of", T::Many2one(MODEL)).readonly(),
    FieldDef::new("split_of_id", "Split From", T::Many2one(MODEL)).readonly(),
    FieldDef::new("error_code", "Error Code", T::Char).readonly(),
    FieldDef::new("error_message", "Error Message", T::Text).readonly(),
    FieldDef::new("create_date", "Created on", T::Datetime).readonly(),
    FieldDef::new("write_date", "Last Updated on", T::Datetime).readonly(),
    FieldDef::new("done_date", "Done on", T::Datetime).readonly(),
];

pub static RUN: ModelDef = ModelDef {
    name: MODEL,
    description: "MTS Connector Run",
    fields: FIELDS,
    rec_name: Some("name"),
    writable: false,
    validate: None,
    check_unlink: None,
};
