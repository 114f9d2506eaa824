//! The `mts.connector.run` model: one window (or registry page walk) sent to MTS and
//! tracked to its end. Read-only over the API; the engine writes it.

use super::fields::{FieldDef, FieldType as T, ModelDef, Record};

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

/// Hidden value (not a field, never shown): a scheduled window that ended without MTS
/// acknowledging it and was not sent again yet (see `engine::runs`).
pub const GAP: &str = "_gap";
/// The hidden value holding a run's creation time in milliseconds.
pub const CREATED_MS: &str = "_created_ms";

pub fn state(run: &Record) -> &str {
    run.str("state").unwrap_or("queued")
}

pub fn is_terminal(run: &Record) -> bool {
    TERMINAL.contains(&state(run))
}

/// MTS took the window: it has a request identifier, or it held no submissions.
pub fn acknowledged(run: &Record) -> bool {
    run.str("mts_request_id").is_some() || state(run) == "empty"
}

/// A scheduled window MTS acknowledged: it moves its connector's watermark.
pub fn advances_watermark(run: &Record) -> bool {
    run.str("trigger") == Some("schedule") && acknowledged(run)
}

pub fn is_gap(run: &Record) -> bool {
    run.values.get(GAP) == Some(&serde_json::Value::Bool(true))
}

fn millis(run: &Record, field: &str) -> Option<i64> {
    run.str(field).and_then(|s| super::parse_datetime(s).ok()).map(|t| t.timestamp_millis())
}

/// When the run was made, in milliseconds.
pub fn created_ms(run: &Record) -> Option<i64> {
    run.int(CREATED_MS).or_else(|| millis(run, "create_date"))
}

/// The run holding a connector's watermark, and its end, from the connector's runs newest
/// first (by id): the acknowledged scheduled run whose window ends latest. A run's window
/// ends before the run is made, and ids follow creation, so the scan stops at the first
/// run made before the latest end found: no older run can end later. It reads the runs
/// made since the watermark, not the history.
pub fn watermark_run<R: std::borrow::Borrow<Record>>(
    newest_first: impl IntoIterator<Item = R>,
) -> Option<(u64, chrono::DateTime<chrono::Utc>)> {
    let mut best: Option<(u64, i64)> = None;
    for run in newest_first {
        let run: &Record = run.borrow();
        if let (Some((_, end)), Some(made)) = (best, created_ms(run))
            && made < end
        {
            break;
        }
        if advances_watermark(run)
            && let Some(end) = millis(run, "window_end")
            && best.is_none_or(|(_, b)| end > b)
        {
            best = Some((run.id, end));
        }
    }
    best.and_then(|(id, end)| chrono::DateTime::from_timestamp_millis(end).map(|t| (id, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: u64, made: &str, end: &str, acked: bool) -> Record {
        let mut r = Record { id, ..Default::default() };
        r.set("trigger", "schedule");
        r.set("state", if acked { "done" } else { "failed" });
        if acked {
            r.set("mts_request_id", "x");
        }
        r.set("create_date", made);
        r.set("window_end", end);
        r
    }

    #[test]
    fn the_watermark_is_the_latest_end_even_when_a_newer_run_ends_earlier() {
        // Run 3 sends again a gap below the watermark; run 2 holds the watermark.
        let runs = [
            run(3, "2026-01-01 12:00:00", "2026-01-01 09:00:00", true),
            run(2, "2026-01-01 11:00:00", "2026-01-01 10:30:00", true),
            run(1, "2026-01-01 10:00:00", "2026-01-01 09:30:00", false),
            run(0, "2026-01-01 09:00:00", "2026-01-01 08:00:00", true),
        ];
        let (id, end) = watermark_run(runs.iter()).unwrap();
        assert_eq!((id, crate::model::format_datetime(end)), (2, "2026-01-01 10:30:00".to_string()));
        assert!(watermark_run(runs[2..3].iter()).is_none(), "a failed run does not hold it");
    }
}
