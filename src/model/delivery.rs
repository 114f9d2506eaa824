//! The `mts.connector.delivery` model: one relayed callback record on its way to the
//! target. Read-only over the API, and it never shows the record's data.

use super::fields::{FieldDef, FieldType as T, ModelDef};

pub const MODEL: &str = "mts.connector.delivery";

pub const STATES: &[(&str, &str)] = &[("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed")];

pub static FIELDS: &[FieldDef] = &[
    FieldDef::new("connector_id", "Connector", T::Many2one(super::connector::MODEL)).readonly(),
    FieldDef::new("run_id", "Run", T::Many2one(super::run::MODEL)).readonly(),
    FieldDef::new("key", "Idempotency Key", T::Char).readonly(),
    FieldDef::new("state", "State", T::Selection(STATES)).readonly(),
    FieldDef::new("attempts", "Attempts", T::Integer).readonly(),
    FieldDef::new("last_status", "Last HTTP Status", T::Integer).readonly(),
    FieldDef::new("last_error", "Last Error", T::Text).readonly(),
    FieldDef::new("next_attempt_at", "Next Attempt", T::Datetime).readonly(),
    FieldDef::new("create_date", "Created on", T::Datetime).readonly(),
    FieldDef::new("write_date", "Last Updated on", T::Datetime).readonly(),
    FieldDef::new("delivered_at", "Delivered on", T::Datetime).readonly(),
];

pub static DELIVERY: ModelDef = ModelDef {
    name: MODEL,
    description: "MTS Connector Delivery",
    fields: FIELDS,
    rec_name: Some("key"),
    writable: false,
    validate: None,
    check_unlink: None,
};
