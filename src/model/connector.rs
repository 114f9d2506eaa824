//! The `mts.connector` model: fields (parity with the Odoo addons plus engine fields),
//! validation and the job state machine. Pure: no I/O, the clock comes in as `now`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{FieldDef, FieldType as T, ModelDef, Record};
use super::{ModelError, domain, parse_datetime};

/// Hidden value on a started one-time connector (not a field): the run its start queued.
/// Starting the connector again clears it.
pub const ONETIME_RUN: &str = "_onetime_run";

pub const MODEL: &str = "mts.connector";

pub const DEFAULT_MTS_URL: &str = "http://mosip-token-seeder.mosip-token-seeder";
/// Requests of one connector in MTS at once by default: the MTS image's gunicorn workers.
pub const DEFAULT_MAX_PARALLEL: i64 = 4;
pub const DEFAULT_MAPPING: &str = r#"{"vid":"vid","name":["name"],"gender":"gender","dob":"dob","phoneNumber":"phoneNumber","emailId":"emailId","fullAddress":["fullAddress"]}"#;
pub const DEFAULT_G2P_DOMAIN: &str = r#"[["is_registrant","=",true],["reg_ids.id_type","=like","MOSIP VID"],"!",["reg_ids.id_type","=like","MOSIP UIN TOKEN"]]"#;
pub const DEFAULT_G2P_FIELDS: &str =
    r#"["id","given_name","family_name","birthdate","gender","address","email","phone"]"#;
/// Registrants whose VID the clean-up looks at: those holding a VID and a token.
pub const DEFAULT_VID_DELETE_DOMAIN: &str = r#"[["is_registrant","=",true],["reg_ids.id_type","=like","MOSIP VID"],["reg_ids.id_type","=like","MOSIP UIN TOKEN"]]"#;

/// MTS mapping keys whose value is a list of jq paths; the others take one path.
const MAPPING_LIST_KEYS: &[&str] = &["name", "fullAddress"];
const MAPPING_KEYS: &[&str] = &["vid", "name", "gender", "dob", "phoneNumber", "emailId", "fullAddress"];

pub const JOB_STATUS: &[(&str, &str)] =
    &[("draft", "Draft"), ("started", "Started"), ("running", "Running"), ("completed", "Completed")];
const INPUT_TYPE: &[(&str, &str)] = &[("odk", "ODK"), ("custom", "OpenG2P Registry")];
const RECURRING: &[(&str, &str)] = &[("recurring", "Recurring"), ("onetime", "One time")];
const HTTP_METHODS: &[(&str, &str)] = &[("POST", "POST"), ("PUT", "PUT"), ("GET", "GET"), ("PATCH", "PATCH")];
const AUTH_TYPES: &[(&str, &str)] =
    &[("none", "None"), ("odoo", "Odoo"), ("oauth", "OAuth"), ("staticBearer", "Static Bearer")];
const CALLBACK_MODES: &[(&str, &str)] =
    &[("direct", "Direct (MTS calls the target)"), ("relay", "Relay (through this service)")];
const DELIVERY_TARGETS: &[(&str, &str)] =
    &[("http", "HTTP callback (Callback URL)"), ("registry", "Registry (g2p.reg.id over JSON-RPC)")];

pub static FIELDS: &[FieldDef] = &[
    FieldDef::new("name", "Name", T::Char).required(),
    FieldDef::new("mts_url", "URL to reach MTS", T::Char).required().default_str(DEFAULT_MTS_URL).help(
        "One MTS base URL, or several separated by commas (e.g. the pods of an MTS StatefulSet): requests go to the least busy one that is up, and each is tracked where it went.",
    ),
    FieldDef::new("mts_max_parallel", "Parallel MTS Requests", T::Integer).default_int(DEFAULT_MAX_PARALLEL).help(
        "Requests of this connector in MTS at once: the parts of a split window, the windows of an import, the pages of a registry walk.",
    ),
    FieldDef::new("input_type", "MTS Input Type", T::Selection(INPUT_TYPE)).required(),
    FieldDef::new("mapping", "Mapping", T::Text).required().default_str(DEFAULT_MAPPING),
    FieldDef::new("output_type", "MTS Output Type", T::Selection(&[("json", "JSON")])).required().default_str("json"),
    FieldDef::new("output_format", "MTS Output Format", T::Text).help("A jq program applied to {input, output}."),
    FieldDef::new("delivery_type", "MTS Delivery Type", T::Selection(&[("callback", "Callback")]))
        .required()
        .default_str("callback"),
    FieldDef::new("lang_code", "Mosip Language", T::Char).required().default_str("eng"),
    FieldDef::new("job_status", "Job Status", T::Selection(JOB_STATUS)).required().readonly().default_str("draft"),
    FieldDef::new("is_recurring", "Job Type", T::Selection(RECURRING)).required(),
    FieldDef::new("cron_id", "Cron Job", T::Many2one("ir.cron"))
        .readonly()
        .help("Kept for parity; the service schedules runs itself, so this is always empty."),
    FieldDef::new("start_datetime", "Start Time", T::Datetime),
    FieldDef::new("end_datetime", "End Time", T::Datetime),
    FieldDef::new("interval_minutes", "Interval in minutes", T::Integer),
    FieldDef::new("cron_expression", "Cron Expression (UTC)", T::Char)
        .help("Overrides the interval, e.g. \"0 2 * * *\" for daily at 02:00 UTC."),
    FieldDef::new("settle_seconds", "Settle Delay (s)", T::Integer).default_int(120),
    FieldDef::new("mts_timeout", "MTS Timeout (s)", T::Integer).default_int(300),
    FieldDef::new("max_records_per_request", "Max Records per MTS Request", T::Integer).default_int(500),
    FieldDef::new("odk_base_url", "ODK Base URL", T::Char),
    FieldDef::new("odk_odata_url", "ODK OData URL", T::Char),
    FieldDef::new("odk_email", "ODK Email", T::Char),
    FieldDef::new("odk_password", "ODK Password", T::Char).secret(),
    FieldDef::new("callback_url", "Callback URL", T::Char),
    FieldDef::new("callback_httpmethod", "Callback HTTP Method", T::Selection(HTTP_METHODS)).default_str("POST"),
    FieldDef::new("callback_timeout", "Callback Timeout", T::Integer).default_int(10),
    FieldDef::new("callback_authtype", "Callback Auth Type", T::Selection(AUTH_TYPES)).default_str("odoo"),
    FieldDef::new("callback_mode", "Callback Mode", T::Selection(CALLBACK_MODES)).default_str("direct"),
    FieldDef::new("delivery_target", "Delivery Target", T::Selection(DELIVERY_TARGETS)).default_str("http").help(
        "Relay mode: http sends each record to the callback URL; registry writes each token into the registry \
         (odoo_url) as the registrant's uin_token_id_type id, created or updated.",
    ),
    FieldDef::new("callback_in_bulk", "Callbacks in Bulk", T::Boolean)
        .default_bool(false)
        .help("MTS sends all records of a request in one call (callInBulk) instead of one call per record."),
    // A secret: the values often hold credentials (HTTP Basic for the registry API).
    FieldDef::new("callback_extra_headers", "Callback Extra Headers", T::Text)
        .secret()
        .help("JSON object of header name -> value, added to every callback. Write-only: read back masked."),
    FieldDef::new("callback_auth_url", "Callback Auth URL", T::Char),
    FieldDef::new("callback_auth_database", "Callback Auth Database", T::Char),
    FieldDef::new("callback_auth_username", "Callback Auth Username", T::Char),
    FieldDef::new("callback_auth_password", "Callback Auth Password", T::Char).secret(),
    FieldDef::new("callback_auth_client_id", "Callback Auth Client ID", T::Char),
    FieldDef::new("callback_auth_client_secret", "Callback Auth Client Secret", T::Char).secret(),
    FieldDef::new("callback_auth_token", "Callback Auth Token", T::Char).secret(),
    FieldDef::new("g2p_search_domain", "Search Domain", T::Text).default_str(DEFAULT_G2P_DOMAIN),
    FieldDef::new("g2p_selected_fields", "Selected Fields", T::Text).default_str(DEFAULT_G2P_FIELDS),
    FieldDef::new("odoo_url", "Registry Odoo URL", T::Char),
    FieldDef::new("odoo_database", "Registry Odoo Database", T::Char),
    FieldDef::new("odoo_username", "Registry Odoo Username", T::Char),
    FieldDef::new("odoo_password", "Registry Odoo Password or API Key", T::Char).secret(),
    FieldDef::new("vid_id_type", "VID ID Type", T::Char).default_str("MOSIP VID"),
    FieldDef::new("uin_token_id_type", "UIN Token ID Type", T::Char).default_str("MOSIP UIN TOKEN"),
    FieldDef::new("delete_vid_after_token", "Delete MOSIP VID Ids", T::Boolean).default_bool(false).help(
        "Registry input: delete a registrant's VID id once it holds a non-empty UIN token id (the g2p_mts clean-up job).",
    ),
    FieldDef::new("vid_delete_interval_minutes", "VID Clean-up Interval (minutes)", T::Integer).default_int(5),
    FieldDef::new("vid_delete_search_domain", "VID Clean-up Domain", T::Text)
        .default_str(DEFAULT_VID_DELETE_DOMAIN)
        .help("Odoo domain on res.partner: the registrants the VID clean-up looks at."),
    FieldDef::new("create_date", "Created on", T::Datetime).readonly(),
    FieldDef::new("write_date", "Last Updated on", T::Datetime).readonly(),
    FieldDef::new("last_run_id", "Last Run", T::Many2one("mts.connector.run")).readonly(),
    FieldDef::new("next_run_at", "Next Run", T::Datetime).readonly(),
];

pub static CONNECTOR: ModelDef = ModelDef {
    name: MODEL,
    description: "Mosip Token Seeder Connectors",
    fields: FIELDS,
    rec_name: Some("name"),
    writable: true,
    validate: Some(validate),
    check_unlink: Some(check_unlink),
};

/// Bounds on the engine's numeric fields: (field, min, max).
const BOUNDS: &[(&str, i64, i64)] = &[
    ("settle_seconds", 0, 86_400),
    ("mts_timeout", 1, 3_600),
    ("max_records_per_request", 1, 100_000),
    ("callback_timeout", 1, 600),
    ("interval_minutes", 0, 525_600),
    ("vid_delete_interval_minutes", 1, 525_600),
    ("mts_max_parallel", 1, 256),
];

const URL_FIELDS: &[&str] = &["odk_base_url", "odk_odata_url", "callback_url", "callback_auth_url", "odoo_url"];

fn invalid(field: &str, problem: impl std::fmt::Display) -> ModelError {
    let label = CONNECTOR.field(field).map_or(field, |f| f.label);
    ModelError::Validation(format!("{label} ({field}): {problem}"))
}

/// Checks a whole connector record (after defaults and the client's values were
/// applied). The first problem found is returned; nothing is stored on error.
pub fn validate(rec: &Record, now: DateTime<Utc>) -> Result<(), ModelError> {
    // Every connector stored passes here: its secrets are remembered for the scrubber,
    // which must still recognise them in texts about it after it is deleted.
    crate::scrub::remember_connector(rec);
    validate_mapping(rec)?;
    if let Some(src) = rec.str("output_format").filter(|s| !s.trim().is_empty()) {
        crate::jq::Program::compile(src)
            .map_err(|e| invalid("output_format", format!("not a valid jq program: {e}")))?;
    }
    for field in ["g2p_search_domain", "vid_delete_search_domain"] {
        if let Some(text) = rec.str(field) {
            let value: Value =
                serde_json::from_str(text).map_err(|e| invalid(field, format!("not valid JSON: {e}")))?;
            domain::Domain::parse(&value).map_err(|e| invalid(field, format!("not a valid Odoo domain: {e}")))?;
        }
    }
    if let Some(text) = rec.str("g2p_selected_fields") {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) if items.iter().all(|v| v.as_str().is_some_and(|s| !s.is_empty())) => {}
            Ok(_) => return Err(invalid("g2p_selected_fields", "must be a JSON list of field names (strings)")),
            Err(e) => return Err(invalid("g2p_selected_fields", format!("not valid JSON: {e}"))),
        }
    }
    if let Some(text) = extra_headers(rec) {
        let headers = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(invalid("callback_extra_headers", "must be a JSON object of header name -> string")),
            Err(e) => return Err(invalid("callback_extra_headers", format!("not valid JSON: {e}"))),
        };
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid("callback_extra_headers", format!("{name:?} is not a valid header name")));
            }
            if value.as_str().is_none_or(|v| http::HeaderValue::from_str(v).is_err()) {
                return Err(invalid(
                    "callback_extra_headers",
                    format!("the value of {name:?} must be a string valid in a header"),
                ));
            }
        }
    }
    for field in URL_FIELDS {
        if let Some(url) = rec.str(field) {
            check_url(url).map_err(|problem| invalid(field, problem))?;
        }
    }
    if rec.str("mts_url").is_some() {
        let urls = mts_urls(rec);
        if urls.is_empty() {
            return Err(invalid("mts_url", "names no URL"));
        }
        for url in &urls {
            check_url(url).map_err(|problem| invalid("mts_url", problem))?;
        }
    }
    for (field, min, max) in BOUNDS {
        if let Some(v) = rec.int(field)
            && (v < *min || v > *max)
        {
            return Err(invalid(field, format!("must be between {min} and {max}, got {v}")));
        }
    }
    if let Some(expr) = rec.str("cron_expression") {
        parse_cron(expr).map_err(|e| invalid("cron_expression", e))?;
    }
    let start = datetime(rec, "start_datetime")?;
    let end = datetime(rec, "end_datetime")?;
    if let Some(start) = start
        && start > now
    {
        return Err(invalid("start_datetime", "must not be in the future"));
    }
    if let Some(end) = end
        && end > now
    {
        return Err(invalid("end_datetime", "must not be in the future"));
    }
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        return Err(invalid("end_datetime", "must be after the start time"));
    }
    validate_required_by_form(rec)
}

/// The connector's extra callback headers (a JSON object as text). They are a secret
/// field; a connector stored by a version that kept them in plain values has them moved
/// at start ([`migrate_extra_headers`]).
pub fn extra_headers(rec: &Record) -> Option<&str> {
    rec.secret("callback_extra_headers").map(crate::secret::Secret::expose)
}

/// Moves `callback_extra_headers` from the plain values (where earlier versions kept it,
/// readable in answers) into the record's secrets; `true` when the record changed.
pub fn migrate_extra_headers(rec: &mut Record) -> bool {
    match rec.values.swap_remove("callback_extra_headers") {
        Some(Value::String(text)) if !text.is_empty() => {
            rec.secrets.entry("callback_extra_headers".into()).or_insert_with(|| crate::secret::Secret::new(text));
            true
        }
        Some(_) => true,
        None => false,
    }
}

/// The fields the Odoo form makes required, depending on the connector's choices.
fn validate_required_by_form(rec: &Record) -> Result<(), ModelError> {
    let mut needed: Vec<&str> = Vec::new();
    match rec.str("is_recurring") {
        Some("recurring") if rec.str("cron_expression").is_none() && rec.int("interval_minutes").unwrap_or(0) < 1 => {
            return Err(invalid(
                "interval_minutes",
                "must be at least 1 for a recurring job (or set a cron expression)",
            ));
        }
        Some("onetime") => needed.extend(["start_datetime", "end_datetime"]),
        _ => {}
    }
    match rec.str("input_type") {
        Some("odk") => needed.extend(["odk_base_url", "odk_odata_url", "odk_email", "odk_password"]),
        Some("custom") => needed.extend([
            "g2p_search_domain",
            "g2p_selected_fields",
            "odoo_url",
            "odoo_database",
            "odoo_username",
            "odoo_password",
            "vid_id_type",
            "uin_token_id_type",
        ]),
        _ => {}
    }
    let registry_target = rec.str("delivery_target") == Some("registry");
    if registry_target {
        validate_registry_target(rec)?;
        needed.extend(["odoo_url", "odoo_database", "odoo_username", "odoo_password", "uin_token_id_type"]);
    }
    if rec.str("delivery_type") == Some("callback") && !registry_target {
        needed.extend(["callback_url", "callback_httpmethod", "callback_timeout", "callback_authtype"]);
        match rec.str("callback_authtype") {
            Some("odoo") => needed.extend([
                "callback_auth_url",
                "callback_auth_database",
                "callback_auth_username",
                "callback_auth_password",
            ]),
            Some("oauth") => needed.extend([
                "callback_auth_url",
                "callback_auth_username",
                "callback_auth_password",
                "callback_auth_client_id",
                "callback_auth_client_secret",
            ]),
            Some("staticBearer") => needed.push("callback_auth_token"),
            _ => {}
        }
    }
    for field in needed {
        let set = rec.str(field).is_some() || rec.int(field).is_some() || rec.secret(field).is_some();
        if !set {
            return Err(invalid(field, "is required with the connector's other choices"));
        }
    }
    Ok(())
}

/// A registry target writes tokens itself: only the relay can do that, and an ODK
/// record names its registrant only through the output format (`partner_id`).
fn validate_registry_target(rec: &Record) -> Result<(), ModelError> {
    if rec.str("callback_mode") != Some("relay") {
        return Err(invalid(
            "delivery_target",
            "registry needs callback_mode = relay: in direct mode MTS calls the callback URL itself",
        ));
    }
    if rec.str("input_type") == Some("odk") && rec.str("output_format").is_none_or(|f| f.trim().is_empty()) {
        return Err(invalid(
            "delivery_target",
            "registry with ODK input needs an output format naming the registrant, \
             e.g. {partner_id: (.input.registrant_id | tonumber)}",
        ));
    }
    Ok(())
}

fn validate_mapping(rec: &Record) -> Result<(), ModelError> {
    let Some(text) = rec.str("mapping") else { return Ok(()) };
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(invalid("mapping", "must be a JSON object of MTS mapping keys")),
        Err(e) => return Err(invalid("mapping", format!("not valid JSON: {e}"))),
    };
    for (key, value) in &map {
        if !MAPPING_KEYS.contains(&key.as_str()) {
            return Err(invalid(
                "mapping",
                format!("{key:?} is not an MTS mapping key (one of {})", MAPPING_KEYS.join(", ")),
            ));
        }
        let ok = if MAPPING_LIST_KEYS.contains(&key.as_str()) {
            value
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|v| v.as_str().is_some_and(|s| !s.is_empty())))
        } else {
            value.as_str().is_some_and(|s| !s.is_empty())
        };
        if !ok {
            let want = if MAPPING_LIST_KEYS.contains(&key.as_str()) {
                "a non-empty list of strings"
            } else {
                "a non-empty string"
            };
            return Err(invalid("mapping", format!("the value of {key:?} must be {want}")));
        }
    }
    Ok(())
}

/// The MTS base URLs `mts_url` names, in the order given, without duplicates or a
/// trailing `/`: one, or several separated by commas, spaces or newlines.
pub fn mts_urls(rec: &Record) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in rec.str("mts_url").unwrap_or_default().split(|ch: char| ch == ',' || ch.is_whitespace()) {
        let url = url.trim().trim_end_matches('/');
        if !url.is_empty() && !out.iter().any(|u| u == url) {
            out.push(url.to_string());
        }
    }
    out
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an absolute http(s) URL")),
        Err(e) => Err(format!("{url:?} is not an absolute http(s) URL ({e})")),
    }
}

fn datetime(rec: &Record, field: &str) -> Result<Option<DateTime<Utc>>, ModelError> {
    rec.str(field).map(|s| parse_datetime(s).map_err(|e| invalid(field, e))).transpose()
}

/// Parses a cron expression in UTC. Five fields (minute hour day month weekday) as
/// people write them, or the six/seven-field form with seconds.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 { format!("0 {expr}") } else { expr.to_string() };
    full.parse::<cron::Schedule>().map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))
}

/// What a state-changing action asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Toggle,
}

/// The job status after `action`, or a `UserError` naming why it is not allowed now.
pub fn transition(rec: &Record, action: Action) -> Result<&'static str, ModelError> {
    let status = rec.str("job_status").unwrap_or("draft");
    let name = rec.str("name").unwrap_or("?");
    let started = if rec.str("is_recurring") == Some("onetime") { "started" } else { "running" };
    let active = matches!(status, "started" | "running");
    match (action, status) {
        (Action::Start, "draft" | "completed") | (Action::Restart, "completed") => {
            check_runnable(rec).map(|()| started)
        }
        (Action::Toggle, _) if active => Ok("completed"),
        (Action::Toggle, _) => check_runnable(rec).map(|()| started),
        (Action::Stop, "started" | "running") => Ok("completed"),
        (Action::Start, _) => Err(ModelError::User(format!("Connector {name:?} is already {status}; stop it first."))),
        (Action::Restart, _) => Err(ModelError::User(format!(
            "Connector {name:?} is {status}; only a completed connector can be restarted."
        ))),
        (Action::Stop, _) => Err(ModelError::User(format!(
            "Connector {name:?} is {status}; only a started or running connector can be stopped."
        ))),
    }
}

/// Whether this version of the engine can run the connector: every input type runs
/// (ODK windows and OpenG2P Registry walks).
pub fn check_runnable(_rec: &Record) -> Result<(), ModelError> {
    Ok(())
}

/// Deleting a started or running connector is refused.
pub fn check_unlink(rec: &Record) -> Result<(), ModelError> {
    match rec.str("job_status") {
        Some(s @ ("started" | "running")) => Err(ModelError::User(format!(
            "Connector {:?} is {s}; stop it before deleting it.",
            rec.str("name").unwrap_or("?")
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::apply_defaults;

    fn base() -> Record {
        let mut r = Record::default();
        apply_defaults(&CONNECTOR, &mut r);
        r.set("name", "c");
        r.set("input_type", "odk");
        r.set("is_recurring", "recurring");
        r.set("interval_minutes", 60);
        r.set("odk_base_url", "https://odk.example.org");
        r.set("odk_odata_url", "https://odk.example.org/v1/projects/1/forms/f.svc");
        r.set("odk_email", "a@b.c");
        r.secrets.insert("odk_password".into(), crate::secret::Secret::new("pw"));
        r.set("callback_url", "https://odoo.example.org/api");
        r.set("callback_authtype", "none");
        r
    }

    #[test]
    fn a_complete_connector_is_valid() {
        validate(&base(), Utc::now()).unwrap();
    }

    fn registry_target(input: &str) -> Record {
        let mut r = base();
        r.set("input_type", input);
        r.set("delivery_target", "registry");
        r.set("callback_mode", "relay");
        r.set("odoo_url", "https://registry.example.org");
        r.set("odoo_database", "openg2p");
        r.set("odoo_username", "mts");
        r.secrets.insert("odoo_password".into(), crate::secret::Secret::new("pw"));
        r.values.swap_remove("callback_url");
        r
    }

    #[test]
    fn a_registry_target_needs_no_callback_url_but_the_relay_and_the_registry_login() {
        validate(&registry_target("custom"), Utc::now()).unwrap();
        let mut direct = registry_target("custom");
        direct.set("callback_mode", "direct");
        let e = validate(&direct, Utc::now()).unwrap_err().to_string();
        assert!(e.contains("delivery_target") && e.contains("relay"), "{e}");
        let mut no_login = registry_target("custom");
        no_login.values.swap_remove("odoo_username");
        let e = validate(&no_login, Utc::now()).unwrap_err().to_string();
        assert!(e.contains("odoo_username"), "{e}");
        let e = validate(&registry_target("odk"), Utc::now()).unwrap_err().to_string();
        assert!(e.contains("output format naming the registrant"), "{e}");
        let mut odk = registry_target("odk");
        odk.set("output_format", "{partner_id: (.input.registrant_id | tonumber)}");
        validate(&odk, Utc::now()).unwrap();
        let mut bad = registry_target("custom");
        let vals = serde_json::json!({"delivery_target": "ftp"});
        assert!(crate::model::apply_vals(&CONNECTOR, &mut bad, vals.as_object().unwrap()).is_err());
    }

    #[test]
    fn five_and_six_field_cron_expressions_parse() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("0 0 2 * * *").is_ok());
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn transitions_follow_the_odoo_buttons() {
        let mut r = base();
        assert_eq!(transition(&r, Action::Start).unwrap(), "running");
        assert!(transition(&r, Action::Stop).is_err());
        assert!(transition(&r, Action::Restart).is_err());
        r.set("job_status", "running");
        assert_eq!(transition(&r, Action::Toggle).unwrap(), "completed");
        r.set("job_status", "completed");
        r.set("is_recurring", "onetime");
        assert_eq!(transition(&r, Action::Restart).unwrap(), "started");
    }
}
