//! Which models live on disk and how they are indexed and counted.
//!
//! Connectors (and any model not named here) are few and read on every call: they are
//! held in memory and written through. Runs and deliveries grow with history: they live
//! on disk only, read through the indexes below, with a bounded cache of recent ones.

use crate::model::{delivery, run};

/// An index of a model: its records ordered by these fields, then by id.
#[derive(Debug, Clone, Copy)]
pub struct IndexDef {
    pub name: &'static str,
    pub fields: &'static [&'static str],
    /// Only records whose first field is set (not absent, null or false) are entered: an
    /// index of the few (a walk's pages, the gaps) costs nothing for the others.
    pub sparse: bool,
}

impl IndexDef {
    /// The entry of `rec` in this index, if it has one.
    pub fn key(&self, rec: &crate::model::fields::Record) -> Option<Vec<u8>> {
        let first = self.fields.first().and_then(|f| rec.values.get(*f));
        if self.sparse && matches!(first, None | Some(serde_json::Value::Null | serde_json::Value::Bool(false))) {
            return None;
        }
        Some(super::codec::index_key(rec, self.fields))
    }
}

/// How the store keeps one model.
#[derive(Debug, Clone, Copy)]
pub struct ModelSchema {
    pub model: &'static str,
    /// On disk only (read through indexes and a bounded cache), else held in memory.
    pub on_disk: bool,
    pub indexes: &'static [IndexDef],
    /// Fields whose values are counted (kept current with every write: the metrics read
    /// them without a scan).
    pub counted: &'static [&'static str],
    /// Integer fields whose sum (of positive values) is kept current.
    pub summed: &'static [&'static str],
}

pub static RUN: ModelSchema = ModelSchema {
    model: run::MODEL,
    on_disk: true,
    indexes: &[
        // A connector's runs, newest last: the run list of a connector, retention.
        IndexDef { name: "connector", fields: &["connector_id"], sparse: false },
        // Open runs at start; runs by state for the metrics and searches.
        IndexDef { name: "state", fields: &["state"], sparse: false },
        // A connector's runs by trigger, newest last: its scheduled windows, from which
        // the engine derives its watermark at start without reading the history.
        IndexDef { name: "connector_trigger", fields: &["connector_id", "trigger"], sparse: false },
        // A connector's top-level runs (not the parts of a split window nor the pages of
        // a walk), newest last: what it shows as its last run.
        IndexDef { name: "connector_top", fields: &["connector_id", "split_of_id"], sparse: false },
        // The pages of a registry walk, the parts of a split window.
        IndexDef { name: "split_of", fields: &["split_of_id"], sparse: true },
        // Scheduled windows that ended unacknowledged and were not sent again (the
        // engine's gaps, `run::GAP`): found at start without reading the history.
        IndexDef { name: "gap", fields: &[run::GAP], sparse: true },
    ],
    counted: &["state"],
    summed: &["records_expected", "records_received", "records_delivered", "records_failed"],
};

pub static DELIVERY: ModelSchema = ModelSchema {
    model: delivery::MODEL,
    on_disk: true,
    indexes: &[
        // Pending deliveries of a connector (registry walks skip their registrants);
        // failed ones to replay; delivered ones for retention by count.
        IndexDef { name: "connector_state", fields: &["connector_id", "state"], sparse: false },
        // De-duplication of relayed records by their idempotency key.
        IndexDef { name: "key", fields: &["key"], sparse: false },
        // Pending deliveries at start; retention by age and the purge of failed data.
        IndexDef { name: "state_time", fields: &["state", "write_date"], sparse: false },
        // A run's deliveries.
        IndexDef { name: "run", fields: &["run_id"], sparse: false },
    ],
    counted: &["state"],
    summed: &[],
};

static SCHEMAS: [&ModelSchema; 2] = [&RUN, &DELIVERY];

/// The schema of `model`; models not listed are held in memory without indexes.
pub fn of(model: &'static str) -> ModelSchema {
    SCHEMAS.iter().find(|s| s.model == model).map(|s| **s).unwrap_or(ModelSchema {
        model,
        on_disk: false,
        indexes: &[],
        counted: &[],
        summed: &[],
    })
}
