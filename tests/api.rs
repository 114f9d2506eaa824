//! The Odoo JSON-RPC API of the real binary, as a client sees it: model methods,
//! validation, secrets, the job state machine, credentials and sessions, durability
//! across restarts, HTTP edge cases and configuration.
//!
//! Every test starts its own service (port 0, its own temp data dir) through
//! `common::Service`.

mod common;

use std::time::Duration;

use common::{
    API_KEY, DB, ENGINE_FIELDS, LOGIN, ODK_PASSWORD, Options, SECRETS, Service, UID, merged, stable, valid_connector,
};
use serde_json::{Value, json};

const M: &str = "mts.connector";

// ---------------------------------------------------------------- helpers

/// The error's `data.message`, after checking `data.name` is `name`.
fn expect_error(err: &Value, name: &str) -> String {
    assert_eq!(err["data"]["name"], name, "expected {name}, got {err}");
    assert_eq!(err["data"]["arguments"][0], err["data"]["message"], "{err}");
    err["data"]["message"].as_str().unwrap_or_else(|| panic!("no message in {err}")).to_string()
}

fn expect_validation(err: &Value, field: &str) {
    let message = expect_error(err, "odoo.exceptions.ValidationError");
    assert_eq!(err["code"], 200, "{err}");
    assert_eq!(err["message"], "Odoo Server Error", "{err}");
    assert!(message.contains(field), "the message should name {field:?}: {message:?}");
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_u64().expect("an id")).collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).take(5).collect();
        assert!(leaks.is_empty(), "{what} holds the secret {secret:?}, e.g.:\n{}", leaks.join("\n"));
    }
}

/// `bad` (field values set on top of a valid connector) must be refused with a
/// ValidationError naming `field`: on create nothing is created, on write the record
/// reads back exactly as before.
async fn assert_rejected(svc: &Service, bad: Value, field: &str) {
    let id = svc.create(&valid_connector()).await;
    let before = svc.read(id).await;
    let count = svc.count().await;

    let err = svc.err(M, "create", json!([merged(&valid_connector(), &bad)]), json!({})).await;
    expect_validation(&err, field);
    assert_eq!(svc.count().await, count, "a refused create must create nothing ({bad})");

    let err = svc.err(M, "write", json!([[id], bad]), json!({})).await;
    expect_validation(&err, field);
    assert_eq!(svc.read(id).await, before, "a refused write must change nothing ({bad})");
}

/// Like [`assert_rejected`], on a fresh service.
async fn rejected(bad: Value, field: &str) {
    let svc = Service::start().await;
    assert_rejected(&svc, bad, field).await;
}

fn onetime_connector() -> Value {
    merged(
        &valid_connector(),
        &json!({
            "name": "One-off import",
            "is_recurring": "onetime",
            "interval_minutes": false,
            "start_datetime": "2024-01-01 00:00:00",
            "end_datetime": "2024-01-02 00:00:00",
        }),
    )
}

async fn status(svc: &Service, id: u64) -> Value {
    svc.connector("read", json!([[id], ["job_status"]])).await[0]["job_status"].clone()
}

// ---------------------------------------------------------------- model methods

#[tokio::test]
async fn create_then_read_answers_the_values_defaults_and_masks() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    assert_eq!(id, 1, "the first record gets id 1");
    let rec = svc.read(id).await;
    let given = valid_connector();
    for (field, value) in given.as_object().expect("object") {
        if field.ends_with("password") {
            assert_eq!(rec[field], "********", "{field} is masked");
        } else {
            assert_eq!(&rec[field], value, "{field} reads back as written");
        }
    }
    assert_eq!(rec["id"], id);
    assert_eq!(rec["display_name"], "Registration ODK");
    assert_eq!(rec["job_status"], "draft");
    assert_eq!(rec["lang_code"], "eng");
    assert_eq!(rec["settle_seconds"], 120);
    assert_eq!(rec["output_type"], "json");
    // Empty values travel as false, not null.
    for empty in ["output_format", "cron_id", "start_datetime", "cron_expression", "odoo_url", "callback_auth_token"] {
        assert_eq!(rec[empty], false, "{empty} is unset");
    }
    let created = rec["create_date"].as_str().expect("create_date is set");
    assert_eq!(created.len(), 19, "YYYY-MM-DD HH:MM:SS: {created}");
    assert_eq!(&created[10..11], " ");
    assert!(rec.as_object().expect("object").values().all(|v| !v.is_null()), "no null in {rec}");
}

#[tokio::test]
async fn datetimes_are_stored_in_odoo_format() {
    let svc = Service::start().await;
    let id = svc
        .create(&merged(
            &onetime_connector(),
            &json!({"start_datetime": "2024-03-01T10:00:00Z", "end_datetime": "2024-03-02 11:30:00.250"}),
        ))
        .await;
    let rec = svc.connector("read", json!([[id], ["start_datetime", "end_datetime"]])).await;
    assert_eq!(rec[0]["start_datetime"], "2024-03-01 10:00:00");
    assert_eq!(rec[0]["end_datetime"], "2024-03-02 11:30:00");
}

#[tokio::test]
async fn create_with_a_list_of_dicts_answers_a_list_of_ids_all_or_nothing() {
    let svc = Service::start().await;
    let a = merged(&valid_connector(), &json!({"name": "A"}));
    let b = merged(&valid_connector(), &json!({"name": "B"}));
    let created = svc.connector("create", json!([[a, b]])).await;
    assert_eq!(ids(&created), vec![1, 2]);
    let names = svc.connector("search_read", json!([[], ["name"]])).await;
    assert_eq!(names, json!([{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]));

    // One bad dict in the list: none of them is created.
    let bad = merged(&valid_connector(), &json!({"name": "C", "mapping": "not json"}));
    let good = merged(&valid_connector(), &json!({"name": "D"}));
    let err = svc.err(M, "create", json!([[good, bad]]), json!({})).await;
    expect_validation(&err, "mapping");
    assert_eq!(svc.count().await, 2);
}

#[tokio::test]
async fn write_changes_only_the_given_fields() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let before = svc.read(id).await;
    let answer = svc.connector("write", json!([[id], {"name": "Renamed", "interval_minutes": 15}])).await;
    assert_eq!(answer, true);
    let after = svc.read(id).await;
    assert_eq!(after["name"], "Renamed");
    assert_eq!(after["display_name"], "Renamed");
    assert_eq!(after["interval_minutes"], 15);
    for (field, value) in before.as_object().expect("object") {
        if !matches!(field.as_str(), "name" | "display_name" | "interval_minutes" | "write_date") {
            assert_eq!(&after[field], value, "{field} must not change");
        }
    }
}

#[tokio::test]
async fn write_on_several_records_is_all_or_nothing() {
    let svc = Service::start().await;
    let onetime = svc.create(&onetime_connector()).await;
    let recurring = svc.create(&valid_connector()).await;
    let before = (svc.read(onetime).await, svc.read(recurring).await);
    // Valid for the one-time job, invalid for the recurring one.
    let err =
        svc.err(M, "write", json!([[onetime, recurring], {"interval_minutes": 0, "name": "Both"}]), json!({})).await;
    expect_validation(&err, "interval_minutes");
    assert_eq!((svc.read(onetime).await, svc.read(recurring).await), before, "neither record changed");
    let answer = svc.connector("write", json!([[onetime, recurring], {"name": "Both"}])).await;
    assert_eq!(answer, true);
    assert_eq!(svc.connector("name_get", json!([[onetime, recurring]])).await, json!([[1, "Both"], [2, "Both"]]));
}

#[tokio::test]
async fn read_of_a_missing_record_is_a_missing_error() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let err = svc.err(M, "read", json!([[id, 99]]), json!({})).await;
    let message = expect_error(&err, "odoo.exceptions.MissingError");
    assert!(message.contains("99"), "{message}");
    let err = svc.err(M, "write", json!([[99], {"name": "x"}]), json!({})).await;
    expect_error(&err, "odoo.exceptions.MissingError");
}

/// Five connectors with distinct names, languages and intervals, ids 1..=5.
async fn search_fixture(svc: &Service) {
    let rows = [
        ("Alpha North", "eng", 10),
        ("alpha south", "fra", 20),
        ("Beta", "eng", 30),
        ("Gamma", "ara", 40),
        ("Delta", "eng", 50),
    ];
    let vals: Vec<Value> = rows
        .iter()
        .map(|(name, lang, interval)| {
            merged(&valid_connector(), &json!({"name": name, "lang_code": lang, "interval_minutes": interval}))
        })
        .collect();
    assert_eq!(ids(&svc.connector("create", json!([vals])).await), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn search_domains_select_the_right_records() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    let cases = [
        (json!([]), vec![1, 2, 3, 4, 5]),
        (json!([["name", "=", "Beta"]]), vec![3]),
        (json!([["name", "!=", "Beta"]]), vec![1, 2, 4, 5]),
        (json!([["interval_minutes", "<", 30]]), vec![1, 2]),
        (json!([["interval_minutes", ">=", 30]]), vec![3, 4, 5]),
        (json!([["lang_code", "in", ["fra", "ara"]]]), vec![2, 4]),
        (json!([["lang_code", "not in", ["eng"]]]), vec![2, 4]),
        (json!([["name", "ilike", "ALPHA"]]), vec![1, 2]),
        (json!([["name", "like", "alpha"]]), vec![2]),
        (json!([["name", "=like", "A%"]]), vec![1]),
        (json!([["name", "=like", "a%"]]), vec![2]),
        (json!([["id", "in", [1, 3, 99]]]), vec![1, 3]),
        (json!(["|", ["name", "=", "Beta"], ["name", "=", "Gamma"]]), vec![3, 4]),
        (json!(["&", ["lang_code", "=", "eng"], ["interval_minutes", ">", 10]]), vec![3, 5]),
        (json!(["!", ["lang_code", "=", "eng"]]), vec![2, 4]),
        (json!([["lang_code", "=", "eng"], ["interval_minutes", ">=", 30]]), vec![3, 5]),
        (json!(["|", "!", ["lang_code", "=", "eng"], ["name", "=", "Delta"]]), vec![2, 4, 5]),
        (json!(["&", "|", ["name", "ilike", "alpha"], ["name", "=", "Beta"], ["lang_code", "=", "eng"]]), vec![1, 3]),
        (json!([["output_format", "=", false]]), vec![1, 2, 3, 4, 5]),
        (json!([["output_format", "!=", false]]), vec![]),
        (json!([["lang_code", "!=", false]]), vec![1, 2, 3, 4, 5]),
        (json!([[1, "=", 1]]), vec![1, 2, 3, 4, 5]),
        (json!([[0, "=", 1]]), vec![]),
    ];
    for (domain, want) in cases {
        let got = svc.connector("search", json!([domain])).await;
        assert_eq!(ids(&got), want, "search({domain})");
        let count = svc.connector("search_count", json!([domain])).await;
        assert_eq!(count, want.len(), "search_count({domain})");
    }
}

#[tokio::test]
async fn search_orders_offsets_and_limits() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    let search = |offset: u64, limit: Value, order: &str| {
        let svc = &svc;
        let order = order.to_string();
        async move { ids(&svc.connector("search", json!([[], offset, limit, order])).await) }
    };
    assert_eq!(search(0, json!(false), "id desc").await, vec![5, 4, 3, 2, 1]);
    assert_eq!(search(0, json!(false), "interval_minutes desc").await, vec![5, 4, 3, 2, 1]);
    assert_eq!(search(0, json!(false), "lang_code asc, interval_minutes desc").await, vec![4, 5, 3, 1, 2]);
    assert_eq!(search(0, json!(false), "lang_code desc, id asc").await, vec![2, 1, 3, 5, 4]);
    assert_eq!(search(1, json!(2), "interval_minutes desc").await, vec![4, 3]);
    assert_eq!(search(3, json!(false), "id").await, vec![4, 5]);
    assert_eq!(search(0, json!(1), "").await, vec![1]);
    assert_eq!(search(10, json!(5), "id").await, Vec::<u64>::new());

    let err = svc.err(M, "search", json!([[], 0, false, "name sideways"]), json!({})).await;
    expect_error(&err, "builtins.ValueError");
    let err = svc.err(M, "search", json!([[], 0, false, "no_such_field"]), json!({})).await;
    expect_error(&err, "builtins.ValueError");
}

#[tokio::test]
async fn search_read_answers_only_the_asked_fields() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    let rows = svc.connector("search_read", json!([[["lang_code", "=", "eng"]], ["name", "interval_minutes"]])).await;
    assert_eq!(
        rows,
        json!([
            {"id": 1, "name": "Alpha North", "interval_minutes": 10},
            {"id": 3, "name": "Beta", "interval_minutes": 30},
            {"id": 5, "name": "Delta", "interval_minutes": 50},
        ])
    );
    let rows = svc.connector("search_read", json!([[], ["name"], 1, 2, "interval_minutes desc"])).await;
    assert_eq!(rows, json!([{"id": 4, "name": "Gamma"}, {"id": 3, "name": "Beta"}]));
    // Without fields: every field, as read answers.
    let all = svc.connector("search_read", json!([[["id", "=", 2]]])).await;
    assert_eq!(all, json!([svc.read(2).await]));
    let err = svc.err(M, "search_read", json!([[], ["no_such_field"]]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("no_such_field"), "{err}");
}

#[tokio::test]
async fn malformed_domains_are_refused() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    for domain in [
        json!("name"),
        json!(["&", ["name", "=", "Beta"]]),
        json!([["name", "~", "Beta"]]),
        json!([["lang_code", "in", "eng"]]),
        json!([["no_such_field", "=", 1]]),
    ] {
        let err = svc.err(M, "search", json!([domain]), json!({})).await;
        expect_error(&err, "builtins.ValueError");
    }
}

#[tokio::test]
async fn unlink_removes_the_record() {
    let svc = Service::start().await;
    let a = svc.create(&valid_connector()).await;
    let b = svc.create(&valid_connector()).await;
    assert_eq!(svc.connector("unlink", json!([[a]])).await, true);
    assert_eq!(ids(&svc.connector("search", json!([[]])).await), vec![b]);
    let err = svc.err(M, "read", json!([[a]]), json!({})).await;
    expect_error(&err, "odoo.exceptions.MissingError");
    let err = svc.err(M, "unlink", json!([[a]]), json!({})).await;
    expect_error(&err, "odoo.exceptions.MissingError");
    // One missing id among several: nothing is removed.
    let err = svc.err(M, "unlink", json!([[b, a]]), json!({})).await;
    expect_error(&err, "odoo.exceptions.MissingError");
    assert_eq!(ids(&svc.connector("search", json!([[]])).await), vec![b]);
}

#[tokio::test]
async fn copy_makes_a_draft_named_copy_with_a_new_id() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    svc.connector("action_start", json!([[id]])).await;
    let original = svc.read(id).await;
    assert_eq!(original["job_status"], "running");

    let copy_id = svc.connector("copy", json!([id])).await.as_u64().expect("copy answers the new id");
    assert_eq!(copy_id, 2);
    let copy = svc.read(copy_id).await;
    assert_eq!(copy["name"], "Registration ODK (copy)");
    assert_eq!(copy["job_status"], "draft", "a copy of a running connector starts as a draft");
    assert_eq!(copy["odk_password"], "********", "the secrets are copied");
    assert_eq!(copy["callback_auth_password"], "********");
    for (field, value) in original.as_object().expect("object") {
        let differs = matches!(field.as_str(), "id" | "name" | "display_name" | "job_status" | "create_date");
        if !differs && !ENGINE_FIELDS.contains(&field.as_str()) {
            assert_eq!(&copy[field], value, "{field} is copied");
        }
    }
    assert_eq!(stable(&svc.read(id).await), stable(&original), "the original is unchanged");

    let other = svc.connector("copy", json!([id, {"name": "Second site"}])).await.as_u64().expect("id");
    assert_eq!(svc.read(other).await["name"], "Second site");
    let err = svc.err(M, "copy", json!([id, {"mapping": "nope"}]), json!({})).await;
    expect_validation(&err, "mapping");
    assert_eq!(svc.count().await, 3);
}

#[tokio::test]
async fn name_get_answers_id_and_name() {
    let svc = Service::start().await;
    let a = svc.create(&merged(&valid_connector(), &json!({"name": "First"}))).await;
    let b = svc.create(&merged(&valid_connector(), &json!({"name": "Second"}))).await;
    assert_eq!(svc.connector("name_get", json!([[a, b]])).await, json!([[a, "First"], [b, "Second"]]));
    assert_eq!(svc.connector("name_search", json!(["sec"])).await, json!([[b, "Second"]]));
}

#[tokio::test]
async fn fields_get_describes_types_selections_and_required() {
    let svc = Service::start().await;
    let fields = svc.connector("fields_get", json!([])).await;
    let expect_type = [
        ("name", "char"),
        ("mts_url", "char"),
        ("mapping", "text"),
        ("output_format", "text"),
        ("input_type", "selection"),
        ("job_status", "selection"),
        ("is_recurring", "selection"),
        ("interval_minutes", "integer"),
        ("start_datetime", "datetime"),
        ("end_datetime", "datetime"),
        ("cron_id", "many2one"),
        ("odk_password", "char"),
        ("callback_timeout", "integer"),
        ("id", "integer"),
    ];
    for (field, ftype) in expect_type {
        assert_eq!(fields[field]["type"], ftype, "type of {field}");
        assert!(fields[field]["string"].is_string(), "{field} has a label");
    }
    for field in
        ["name", "mts_url", "input_type", "mapping", "output_type", "delivery_type", "lang_code", "is_recurring"]
    {
        assert_eq!(fields[field]["required"], true, "{field} is required");
    }
    for field in ["output_format", "odk_base_url", "interval_minutes", "cron_expression"] {
        assert_eq!(fields[field]["required"], false, "{field} is optional");
    }
    assert_eq!(fields["job_status"]["readonly"], true);
    assert_eq!(fields["name"]["readonly"], false);
    assert_eq!(fields["mts_url"]["string"], "URL to reach MTS");
    assert_eq!(fields["input_type"]["selection"], json!([["odk", "ODK"], ["custom", "OpenG2P Registry"]]));
    assert_eq!(
        fields["job_status"]["selection"],
        json!([["draft", "Draft"], ["started", "Started"], ["running", "Running"], ["completed", "Completed"]])
    );
    assert_eq!(fields["is_recurring"]["selection"], json!([["recurring", "Recurring"], ["onetime", "One time"]]));
    assert_eq!(
        fields["callback_httpmethod"]["selection"],
        json!([["POST", "POST"], ["PUT", "PUT"], ["GET", "GET"], ["PATCH", "PATCH"]])
    );
    assert_eq!(fields["output_type"]["selection"], json!([["json", "JSON"]]));
    assert_eq!(fields["delivery_type"]["selection"], json!([["callback", "Callback"]]));
    assert_eq!(fields["cron_id"]["relation"], "ir.cron");

    let only =
        svc.ok(M, "fields_get", json!([["name", "job_status"]]), json!({"attributes": ["type", "string"]})).await;
    assert_eq!(
        only,
        json!({"name": {"type": "char", "string": "Name"}, "job_status": {"type": "selection", "string": "Job Status"}})
    );
}

#[tokio::test]
async fn default_get_answers_the_parity_defaults() {
    let svc = Service::start().await;
    let defaults = svc.connector("default_get", json!([[]])).await;
    let expected = json!({
        "mts_url": "http://mosip-token-seeder.mosip-token-seeder",
        "mapping": r#"{"vid":"vid","name":["name"],"gender":"gender","dob":"dob","phoneNumber":"phoneNumber","emailId":"emailId","fullAddress":["fullAddress"]}"#,
        "lang_code": "eng",
        "job_status": "draft",
        "callback_timeout": 10,
        "settle_seconds": 120,
        "mts_timeout": 300,
        "max_records_per_request": 500,
        "callback_mode": "direct",
        "vid_id_type": "MOSIP VID",
        "uin_token_id_type": "MOSIP UIN TOKEN",
        "g2p_search_domain": r#"[["is_registrant","=",true],["reg_ids.id_type","=like","MOSIP VID"],"!",["reg_ids.id_type","=like","MOSIP UIN TOKEN"]]"#,
        "g2p_selected_fields": r#"["id","given_name","family_name","birthdate","gender","address","email","phone"]"#,
    });
    for (field, value) in expected.as_object().expect("object") {
        assert_eq!(&defaults[field], value, "default of {field}");
    }
    assert!(defaults.get("odk_password").is_none(), "no secret has a default");
    let some = svc.connector("default_get", json!([["lang_code", "name"]])).await;
    assert_eq!(some, json!({"lang_code": "eng"}));
}

#[tokio::test]
async fn arguments_may_be_given_as_kwargs() {
    let svc = Service::start().await;
    let vals =
        vec![merged(&valid_connector(), &json!({"name": "K1"})), merged(&valid_connector(), &json!({"name": "K2"}))];
    let created = svc.ok(M, "create", json!([]), json!({"vals_list": vals})).await;
    assert_eq!(ids(&created), vec![1, 2]);
    assert_eq!(svc.ok(M, "write", json!([[1]]), json!({"vals": {"name": "K1b"}})).await, true);
    let read = svc.ok(M, "read", json!([[1]]), json!({"fields": ["name"]})).await;
    assert_eq!(read, json!([{"id": 1, "name": "K1b"}]));
    let found = svc
        .ok(M, "search", json!([]), json!({"domain": [["name", "ilike", "k"]], "limit": 1, "order": "id desc"}))
        .await;
    assert_eq!(ids(&found), vec![2]);
    let count = svc.ok(M, "search_count", json!([]), json!({"domain": [["name", "=", "K1b"]]})).await;
    assert_eq!(count, 1);
    let rows = svc
        .ok(
            M,
            "search_read",
            json!([]),
            json!({"domain": [], "fields": ["name"], "offset": 1, "order": "id", "context": {"lang": "en_US"}}),
        )
        .await;
    assert_eq!(rows, json!([{"id": 2, "name": "K2"}]));
    let copy = svc.ok(M, "copy", json!([1]), json!({"default": {"name": "K3"}})).await;
    assert_eq!(svc.read(copy.as_u64().expect("id")).await["name"], "K3");
    let defaults = svc.ok(M, "default_get", json!([]), json!({"fields_list": ["job_status"]})).await;
    assert_eq!(defaults, json!({"job_status": "draft"}));
    assert_eq!(svc.ok(M, "unlink", json!([]), json!({"ids": [2]})).await, true);
    assert_eq!(svc.count().await, 2);
}

// ---------------------------------------------------------------- validation, one rule per test

#[tokio::test]
async fn mapping_must_be_json() {
    rejected(json!({"mapping": "{\"vid\": \"vid\""}), "mapping").await;
}

#[tokio::test]
async fn mapping_must_be_an_object() {
    rejected(json!({"mapping": "[\"vid\", \"name\"]"}), "mapping").await;
}

#[tokio::test]
async fn mapping_keys_must_be_mts_keys() {
    rejected(json!({"mapping": "{\"vid\": \"vid\", \"nickname\": \"nick\"}"}), "mapping").await;
}

#[tokio::test]
async fn mapping_name_must_be_a_list() {
    rejected(json!({"mapping": "{\"vid\": \"vid\", \"name\": \"name\"}"}), "mapping").await;
}

#[tokio::test]
async fn output_format_must_be_valid_jq() {
    rejected(json!({"output_format": "{token: .output.token"}), "output_format").await;
}

#[tokio::test]
async fn g2p_search_domain_must_be_a_valid_domain() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"g2p_search_domain": "[[\"is_registrant\", \"~\", true]]"}), "g2p_search_domain")
        .await;
    assert_rejected(&svc, json!({"g2p_search_domain": "not json"}), "g2p_search_domain").await;
}

#[tokio::test]
async fn g2p_selected_fields_must_be_a_list_of_strings() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"g2p_selected_fields": "[\"id\", 3]"}), "g2p_selected_fields").await;
    assert_rejected(&svc, json!({"g2p_selected_fields": "{\"id\": true}"}), "g2p_selected_fields").await;
}

#[tokio::test]
async fn callback_extra_headers_must_be_an_object_of_strings() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"callback_extra_headers": "{\"X-Tenant\": 3}"}), "callback_extra_headers").await;
    assert_rejected(&svc, json!({"callback_extra_headers": "[\"X-Tenant\"]"}), "callback_extra_headers").await;
    // A valid object is accepted.
    let id = svc.create(&valid_connector()).await;
    svc.connector("write", json!([[id], {"callback_extra_headers": "{\"Authorization\": \"Basic YTpi\"}"}])).await;
}

#[tokio::test]
async fn urls_must_be_absolute_http() {
    let svc = Service::start().await;
    for field in ["mts_url", "callback_url", "odk_base_url"] {
        assert_rejected(&svc, json!({field: "/relative/path"}), field).await;
        assert_rejected(&svc, json!({field: "ftp://files.example.org/x"}), field).await;
    }
}

#[tokio::test]
async fn a_recurring_job_needs_an_interval() {
    rejected(json!({"is_recurring": "recurring", "interval_minutes": 0}), "interval_minutes").await;
}

#[tokio::test]
async fn cron_expression_must_parse() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"cron_expression": "every day at two"}), "cron_expression").await;
    // A valid one is accepted, even without an interval.
    let id = svc.create(&valid_connector()).await;
    svc.connector("write", json!([[id], {"cron_expression": "0 2 * * *", "interval_minutes": 0}])).await;
}

#[tokio::test]
async fn start_datetime_must_not_be_in_the_future() {
    rejected(json!({"start_datetime": "2999-01-01 00:00:00"}), "start_datetime").await;
}

#[tokio::test]
async fn end_must_be_after_start() {
    rejected(json!({"start_datetime": "2024-01-02 00:00:00", "end_datetime": "2024-01-01 00:00:00"}), "end_datetime")
        .await;
}

#[tokio::test]
async fn mts_timeout_is_bounded() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"mts_timeout": 0}), "mts_timeout").await;
    assert_rejected(&svc, json!({"mts_timeout": 3601}), "mts_timeout").await;
}

#[tokio::test]
async fn max_records_per_request_is_bounded() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"max_records_per_request": 0}), "max_records_per_request").await;
    assert_rejected(&svc, json!({"max_records_per_request": 100_001}), "max_records_per_request").await;
}

#[tokio::test]
async fn settle_seconds_is_bounded() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"settle_seconds": -1}), "settle_seconds").await;
    assert_rejected(&svc, json!({"settle_seconds": 86_401}), "settle_seconds").await;
}

#[tokio::test]
async fn callback_timeout_is_bounded() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"callback_timeout": 0}), "callback_timeout").await;
    assert_rejected(&svc, json!({"callback_timeout": 601}), "callback_timeout").await;
}

#[tokio::test]
async fn odk_input_needs_the_odk_fields() {
    let svc = Service::start().await;
    for field in ["odk_base_url", "odk_odata_url", "odk_email", "odk_password"] {
        assert_rejected(&svc, json!({field: false}), field).await;
    }
}

#[tokio::test]
async fn callback_delivery_needs_the_callback_fields() {
    let svc = Service::start().await;
    for field in ["callback_url", "callback_httpmethod", "callback_timeout", "callback_authtype"] {
        assert_rejected(&svc, json!({field: false}), field).await;
    }
}

#[tokio::test]
async fn odoo_callback_auth_needs_url_database_username_password() {
    let svc = Service::start().await;
    for field in ["callback_auth_url", "callback_auth_database", "callback_auth_username", "callback_auth_password"] {
        assert_rejected(&svc, json!({"callback_authtype": "odoo", field: false}), field).await;
    }
}

#[tokio::test]
async fn oauth_callback_auth_needs_client_id_and_secret_too() {
    let svc = Service::start().await;
    let oauth = json!({
        "callback_authtype": "oauth",
        "callback_auth_client_id": "registry-client",
        "callback_auth_client_secret": "client-SECRET5",
    });
    for field in [
        "callback_auth_url",
        "callback_auth_username",
        "callback_auth_password",
        "callback_auth_client_id",
        "callback_auth_client_secret",
    ] {
        assert_rejected(&svc, merged(&oauth, &json!({field: false})), field).await;
    }
    // Complete, it is accepted.
    svc.create(&merged(&valid_connector(), &oauth)).await;
}

#[tokio::test]
async fn static_bearer_callback_auth_needs_a_token() {
    let svc = Service::start().await;
    assert_rejected(&svc, json!({"callback_authtype": "staticBearer"}), "callback_auth_token").await;
    svc.create(&merged(
        &valid_connector(),
        &json!({"callback_authtype": "staticBearer", "callback_auth_token": "tok-SECRET6"}),
    ))
    .await;
}

#[tokio::test]
async fn registry_input_needs_the_registry_fields() {
    let svc = Service::start().await;
    let registry = json!({
        "input_type": "custom",
        "odoo_url": "https://registry.example.org",
        "odoo_database": "registry",
        "odoo_username": "registry-user",
        "odoo_password": "reg-pw-SECRET7",
    });
    for field in ["odoo_url", "odoo_database", "odoo_username", "odoo_password"] {
        assert_rejected(&svc, merged(&registry, &json!({field: false})), field).await;
    }
    svc.create(&merged(&valid_connector(), &registry)).await;
}

#[tokio::test]
async fn unknown_fields_are_refused() {
    rejected(json!({"no_such_field": "x"}), "no_such_field").await;
}

#[tokio::test]
async fn a_string_is_not_an_integer() {
    rejected(json!({"interval_minutes": "60"}), "interval_minutes").await;
}

#[tokio::test]
async fn an_integer_is_not_a_char() {
    rejected(json!({"lang_code": 42}), "lang_code").await;
}

#[tokio::test]
async fn selection_values_are_checked() {
    rejected(json!({"input_type": "csv"}), "input_type").await;
}

#[tokio::test]
async fn datetimes_must_have_the_odoo_format() {
    rejected(json!({"start_datetime": "01/02/2024 10:00"}), "start_datetime").await;
}

#[tokio::test]
async fn job_status_is_read_only() {
    rejected(json!({"job_status": "running"}), "job_status").await;
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn secrets_read_as_false_when_unset_and_masked_when_set() {
    let svc = Service::start().await;
    let vals = merged(&valid_connector(), &json!({"callback_authtype": "none", "callback_auth_password": false}));
    let id = svc.create(&vals).await;
    let secret_fields = [
        "odk_password",
        "callback_auth_password",
        "callback_auth_client_secret",
        "callback_auth_token",
        "odoo_password",
    ];
    let expected = json!({
        "odk_password": "********",
        "callback_auth_password": false,
        "callback_auth_client_secret": false,
        "callback_auth_token": false,
        "odoo_password": false,
    });
    let rec = svc.read(id).await;
    let rows = svc.connector("search_read", json!([[["id", "=", id]]])).await;
    let only = svc.connector("read", json!([[id], secret_fields])).await;
    let only_sr = svc.connector("search_read", json!([[], secret_fields])).await;
    for field in secret_fields {
        assert_eq!(rec[field], expected[field], "read {field}");
        assert_eq!(rows[0][field], expected[field], "search_read {field}");
        assert_eq!(only[0][field], expected[field], "read with fields {field}");
        assert_eq!(only_sr[0][field], expected[field], "search_read with fields {field}");
    }
    // Set, then cleared with false or "".
    svc.connector("write", json!([[id], {"callback_auth_token": "tok-SECRET6"}])).await;
    assert_eq!(svc.read(id).await["callback_auth_token"], "********");
    svc.connector("write", json!([[id], {"callback_auth_token": false}])).await;
    assert_eq!(svc.read(id).await["callback_auth_token"], false);
    svc.connector("write", json!([[id], {"callback_auth_token": "tok-SECRET6"}])).await;
    svc.connector("write", json!([[id], {"callback_auth_token": ""}])).await;
    assert_eq!(svc.read(id).await["callback_auth_token"], false);
}

#[tokio::test]
async fn preview_masks_the_secrets() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let preview = svc.connector("preview_mts_request", json!([[id]])).await;
    assert_no_secret("the preview", &preview.to_string());
    let request = &preview["request"];
    assert_eq!(request["odkconfig"]["password"], "********");
    assert_eq!(request["callbackProperties"]["authOdoo"]["password"], "********");
    assert_eq!(request["odkconfig"]["email"], "odk-user@example.org");
    assert_eq!(request["callbackProperties"]["authType"], "odoo");

    let none = svc
        .create(&merged(&valid_connector(), &json!({"callback_authtype": "none", "callback_auth_password": false})))
        .await;
    let preview = svc.connector("preview_mts_request", json!([[none]])).await;
    let props = &preview["request"]["callbackProperties"];
    assert_eq!(props["authType"], "none");
    assert!(props.get("authOdoo").is_none(), "no auth block, so no password, for authType none: {props}");
}

#[tokio::test]
async fn writing_the_mask_back_keeps_the_stored_secret() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    // A client that read the record and saves it whole sends the mask back.
    let mut rec = svc.read(id).await;
    let obj = rec.as_object_mut().expect("object");
    for readonly in
        ["id", "display_name", "job_status", "cron_id", "create_date", "write_date", "last_run_id", "next_run_at"]
    {
        obj.remove(readonly);
    }
    obj.insert("name".into(), json!("Saved from a form"));
    assert_eq!(obj["odk_password"], "********");
    svc.connector("write", json!([[id], rec])).await;
    let after = svc.read(id).await;
    assert_eq!(after["name"], "Saved from a form");
    // Still set (an ODK connector without a password would have been refused) ...
    assert_eq!(after["odk_password"], "********");
    assert_eq!(after["callback_auth_password"], "********");
    // ... and carried into a copy, which validates that the secret is present.
    let copy = svc.connector("copy", json!([id])).await.as_u64().expect("id");
    assert_eq!(svc.read(copy).await["odk_password"], "********");
    // The mask is never stored as a value: written on an unset secret it leaves it unset.
    svc.connector("write", json!([[id], {"callback_auth_token": "********"}])).await;
    assert_eq!(svc.read(id).await["callback_auth_token"], false);
}

#[tokio::test]
async fn secrets_cannot_be_searched_or_sorted_on() {
    let svc = Service::start().await;
    svc.create(&valid_connector()).await;
    let err = svc.err(M, "search", json!([[["odk_password", "=", ODK_PASSWORD]]]), json!({})).await;
    expect_error(&err, "builtins.ValueError");
    assert_no_secret("the error", &err.to_string());
    let err = svc.err(M, "search", json!([[["odk_password", "ilike", "odk"]]]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("odk_password"), "{err}");
    let err = svc.err(M, "search", json!([[], 0, false, "odk_password"]), json!({})).await;
    expect_error(&err, "builtins.ValueError");
}

#[tokio::test]
async fn secrets_never_appear_in_error_messages() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let attempts = [
        json!({"odk_password": "odk-pw-SECRET-NEW3", "mapping": "not json"}),
        json!({"callback_auth_password": "cb-pw-SECRET-NEW4", "callback_authtype": "bogus"}),
        json!({"odk_password": "odk-pw-SECRET-NEW3", "no_such_field": 1}),
        json!({"odk_password": ["odk-pw-SECRET-NEW3"]}),
        json!({"callback_auth_token": 12345, "callback_authtype": "staticBearer"}),
        json!({"odk_password": "odk-pw-SECRET-NEW3", "start_datetime": "2999-01-01 00:00:00"}),
        json!({"callback_auth_password": "cb-pw-SECRET-NEW4", "callback_auth_url": false}),
    ];
    for bad in attempts {
        let err = svc.err(M, "write", json!([[id], bad]), json!({})).await;
        assert_no_secret("a write error", &err.to_string());
        let err = svc.err(M, "create", json!([merged(&valid_connector(), &bad)]), json!({})).await;
        assert_no_secret("a create error", &err.to_string());
    }
    assert_eq!(svc.count().await, 1);
}

/// Waits (deadline 20 s) until a run of connector `id` has made an attempt; answers
/// the connector's runs as `search_read` shows them.
async fn wait_for_attempted_run(svc: &Service, id: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let runs = svc.ok("mts.connector.run", "search_read", json!([[["connector_id", "=", id]]]), json!({})).await;
        let attempted = runs.as_array().is_some_and(|rs| {
            rs.iter().any(|r| r["attempts"].as_i64().unwrap_or(0) >= 1 || r["error_message"].is_string())
        });
        if attempted {
            return runs;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no run of connector {id} made an attempt: {runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything a client does that touches secrets, at `RUST_LOG` = `filter`; answers the
/// service (stopped, log complete) and every answer's text.
async fn exercise_secrets(filter: &str) -> (Service, String) {
    let mut svc = Service::start_with(Options::new().rust_log(filter)).await;
    let mut answers = String::new();
    let id = svc.create(&valid_connector()).await;
    let mut calls = vec![
        ("read", json!([[id]])),
        ("search_read", json!([[]])),
        ("search_read", json!([[], ["odk_password", "callback_auth_password"]])),
        ("name_get", json!([[id]])),
        ("preview_mts_request", json!([[id]])),
        ("copy", json!([id])),
        ("fields_get", json!([])),
        ("default_get", json!([[]])),
        ("write", json!([[id], {"odk_password": "odk-pw-SECRET-NEW3", "callback_auth_password": "********"}])),
        ("write", json!([[id], {"odk_password": "odk-pw-SECRET-NEW3", "mapping": "not json"}])),
        ("search", json!([[["odk_password", "=", ODK_PASSWORD]]])),
        ("create", json!([merged(&valid_connector(), &json!({"callback_auth_token": "tok-SECRET6", "mapping": 3}))])),
        ("action_start", json!([[id]])),
    ];
    for (method, args) in calls.drain(..) {
        let answer = svc.execute_kw(M, method, args, json!({})).await;
        answers.push_str(&format!("{answer:?}\n"));
    }
    // The started connector's first run logs in to ODK Central with the password (and
    // fails: nothing listens there); wait until that attempt is over and recorded.
    let runs = wait_for_attempted_run(&svc, id).await;
    answers.push_str(&runs.to_string());
    let answer = svc.execute_kw(M, "action_stop", json!([[id]]), json!({})).await;
    answers.push_str(&format!("{answer:?}\n"));
    // The web-session path and a bad login carry the API key in their bodies.
    let auth = svc.web("/web/session/authenticate", json!({"db": DB, "login": LOGIN, "password": API_KEY}), None).await;
    let session = auth.session_id().expect("a session cookie");
    let rows = svc
        .web(
            "/web/dataset/call_kw",
            json!({"model": M, "method": "search_read", "args": [[]], "kwargs": {}}),
            Some(&session),
        )
        .await;
    answers.push_str(&rows.body);
    answers.push_str(&auth.body);
    let denied = svc.call("common", "login", json!([DB, LOGIN, "wrong-SECRET-guess"])).await;
    answers.push_str(&denied.to_string());
    let status = svc.terminate().await;
    assert!(status.success(), "{status}");
    (svc, answers)
}

#[tokio::test]
async fn secrets_never_appear_in_answers_or_the_debug_log() {
    let (svc, answers) = exercise_secrets("debug").await;
    assert_no_secret("the RPC answers", &answers);
    let log = svc.log();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    assert!(log.contains("stopped; store flushed"), "{log}");
    assert_no_secret("the log", &log);
}

/// An operator chasing a problem sets `RUST_LOG=trace`: passwords and the API key must
/// still stay out of the log (parity doc, "Secrets in logs").
#[tokio::test]
async fn secrets_never_appear_in_the_trace_log() {
    let (svc, _) = exercise_secrets("trace").await;
    assert_no_secret("the trace log", &svc.log());
}

// ---------------------------------------------------------------- state machine

#[tokio::test]
async fn action_start_runs_a_recurring_job_and_starts_a_onetime_job() {
    let svc = Service::start().await;
    let recurring = svc.create(&valid_connector()).await;
    let onetime = svc.create(&onetime_connector()).await;
    assert_eq!(svc.connector("action_start", json!([[recurring]])).await, true);
    assert_eq!(status(&svc, recurring).await, "running");
    assert_eq!(svc.connector("action_start", json!([[onetime]])).await, true);
    assert_eq!(status(&svc, onetime).await, "started");
}

#[tokio::test]
async fn action_stop_completes_and_action_restart_starts_again() {
    let svc = Service::start().await;
    let recurring = svc.create(&valid_connector()).await;
    let onetime = svc.create(&onetime_connector()).await;
    svc.connector("action_start", json!([[recurring, onetime]])).await;
    assert_eq!(svc.connector("action_stop", json!([[recurring, onetime]])).await, true);
    assert_eq!(status(&svc, recurring).await, "completed");
    assert_eq!(status(&svc, onetime).await, "completed");
    assert_eq!(svc.connector("action_restart", json!([[recurring]])).await, true);
    assert_eq!(status(&svc, recurring).await, "running");
    svc.connector("action_restart", json!([[onetime]])).await;
    assert_eq!(status(&svc, onetime).await, "started");
    // Start also works from completed, as the Odoo button does.
    svc.connector("action_stop", json!([[recurring]])).await;
    svc.connector("action_start", json!([[recurring]])).await;
    assert_eq!(status(&svc, recurring).await, "running");
}

#[tokio::test]
async fn mts_action_trigger_toggles() {
    let svc = Service::start().await;
    let recurring = svc.create(&valid_connector()).await;
    let onetime = svc.create(&onetime_connector()).await;
    for (id, active) in [(recurring, "running"), (onetime, "started")] {
        svc.connector("mts_action_trigger", json!([[id]])).await;
        assert_eq!(status(&svc, id).await, active);
        svc.connector("mts_action_trigger", json!([[id]])).await;
        assert_eq!(status(&svc, id).await, "completed");
        svc.connector("mts_action_trigger", json!([[id]])).await;
        assert_eq!(status(&svc, id).await, active);
    }
}

/// Reads are tried on a worker thread within a small budget and run again off it when
/// they need more (many ids, an expensive domain, a large answer): either way the
/// client gets the whole, correct answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_too_big_for_a_worker_thread_are_answered_whole() {
    let svc = Service::start().await;
    let long = "x".repeat(10_000);
    let mut made = Vec::new();
    for i in 0..60 {
        made.push(svc.create(&merged(&valid_connector(), &json!({"name": format!("{i:02} {long}")}))).await);
    }
    let other = svc.create(&merged(&valid_connector(), &json!({"name": "short"}))).await;
    // 1,500 ids (more than a worker thread may read).
    let many: Vec<u64> = (0..1500).map(|i| made[i % made.len()]).collect();
    let rows = svc.connector("read", json!([many, ["job_status"]])).await;
    assert_eq!(rows.as_array().unwrap().len(), 1500);
    assert_eq!(rows[1499]["id"], made[1499 % made.len()]);
    let names = svc.connector("name_get", json!([vec![other; 1500]])).await;
    assert_eq!(names.as_array().unwrap().len(), 1500);
    assert_eq!(names[1499], json!([other, "short"]));
    // An `ilike` over 60 names of 10 KB (more domain work than a worker thread may do),
    // with a 600 KB answer.
    let found =
        svc.ok(M, "search_read", json!([[["name", "ilike", "x"]]]), json!({"fields": ["name"], "order": "name"})).await;
    let found: Vec<u64> = found.as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(found, made);
    let count = svc.connector("search_count", json!([[["name", "ilike", "xx"]]])).await;
    assert_eq!(count, 60);
    assert_eq!(ids(&svc.connector("search", json!([[["name", "=", "short"]]])).await), vec![other]);
}

/// The run an earlier start queued ends (cancelled by the stop) while, or after, the
/// connector is started again: that must not complete the new start, whose own run is
/// then queued and keeps it started.
#[tokio::test]
async fn a_restarted_one_time_job_is_not_completed_by_its_earlier_run() {
    let svc = Service::start().await;
    let id = svc.create(&onetime_connector()).await;
    for round in 1..=12 {
        svc.connector("action_start", json!([[id]])).await;
        svc.connector("action_stop", json!([[id]])).await;
        svc.connector("action_start", json!([[id]])).await;
        let open = || async {
            let runs = svc.runs(id).await;
            runs.iter().filter(|r| !matches!(r["state"].as_str(), Some("done" | "failed" | "cancelled"))).count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open().await == 0 {
            assert!(std::time::Instant::now() < deadline, "round {round}: the new start queued no run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(status(&svc, id).await, "started", "round {round}: the new start was completed");
        assert_eq!(open().await, 1, "round {round}: one open run, the new start's");
        svc.connector("action_stop", json!([[id]])).await;
    }
}

#[tokio::test]
async fn refused_transitions_are_user_errors_and_change_nothing() {
    let svc = Service::start().await;
    let draft = svc.create(&valid_connector()).await;
    let running = svc.create(&valid_connector()).await;
    svc.connector("action_start", json!([[running]])).await;
    for (method, id, state) in [
        ("action_stop", draft, "draft"),
        ("action_restart", draft, "draft"),
        ("action_start", running, "running"),
        ("action_restart", running, "running"),
    ] {
        let err = svc.err(M, method, json!([[id]]), json!({})).await;
        let message = expect_error(&err, "odoo.exceptions.UserError");
        assert!(message.contains(state), "{method}: {message}");
        assert_eq!(status(&svc, id).await, state, "{method} changed nothing");
    }
    // All or nothing over several ids.
    let err = svc.err(M, "action_start", json!([[draft, running]]), json!({})).await;
    expect_error(&err, "odoo.exceptions.UserError");
    assert_eq!(status(&svc, draft).await, "draft");
}

#[tokio::test]
async fn a_running_connector_cannot_be_deleted_until_stopped() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let other = svc.create(&valid_connector()).await;
    svc.connector("action_start", json!([[id]])).await;
    let err = svc.err(M, "unlink", json!([[other, id]]), json!({})).await;
    let message = expect_error(&err, "odoo.exceptions.UserError");
    assert!(message.contains("running"), "{message}");
    assert_eq!(ids(&svc.connector("search", json!([[]])).await), vec![id, other], "both are still there");
    svc.connector("action_stop", json!([[id]])).await;
    assert_eq!(svc.connector("unlink", json!([[id]])).await, true);
    assert_eq!(ids(&svc.connector("search", json!([[]])).await), vec![other]);
}

// ---------------------------------------------------------------- credentials and sessions

#[tokio::test]
async fn common_login_checks_db_login_and_password() {
    let svc = Service::start().await;
    for method in ["login", "authenticate"] {
        let extra = if method == "authenticate" { json!({}) } else { Value::Null };
        let args = |db: &str, login: &str, pw: &str| {
            let mut a = vec![json!(db), json!(login), json!(pw)];
            if !extra.is_null() {
                a.push(extra.clone());
            }
            Value::Array(a)
        };
        assert_eq!(svc.call("common", method, args(DB, LOGIN, API_KEY)).await["result"], UID);
        assert_eq!(svc.call("common", method, args(DB, LOGIN, "wrong")).await["result"], false);
        assert_eq!(svc.call("common", method, args(DB, LOGIN, "")).await["result"], false);
        assert_eq!(svc.call("common", method, args(DB, "someone", API_KEY)).await["result"], false);
        assert_eq!(svc.call("common", method, args("other_db", LOGIN, API_KEY)).await["result"], false);
    }
}

#[tokio::test]
async fn execute_kw_with_wrong_credentials_is_access_denied() {
    let svc = Service::start().await;
    svc.create(&valid_connector()).await;
    for (db, uid, pw) in [(DB, UID, "wrong"), ("other_db", UID, API_KEY), (DB, 1, API_KEY)] {
        let resp = svc.call("object", "execute_kw", json!([db, uid, pw, M, "search", [[]]])).await;
        let message = expect_error(&resp["error"], "odoo.exceptions.AccessDenied");
        assert_eq!(message, "Access Denied");
    }
    // The positional `execute` works with the right credentials ...
    let resp = svc.call("object", "execute", json!([DB, UID, API_KEY, M, "search", []])).await;
    assert_eq!(resp["result"], json!([1]));
    // ... and is denied with the wrong ones.
    let resp = svc.call("object", "execute", json!([DB, UID, "wrong", M, "search", []])).await;
    expect_error(&resp["error"], "odoo.exceptions.AccessDenied");
}

#[tokio::test]
async fn web_session_flow_authenticate_call_kw_destroy() {
    let svc = Service::start().await;
    svc.create(&valid_connector()).await;

    let version = svc.web("/web/webclient/version_info", json!({}), None).await;
    assert_eq!(version.status, 200);
    assert_eq!(version.json()["result"]["server_version"], "17.0");

    let auth = svc.web("/web/session/authenticate", json!({"db": DB, "login": LOGIN, "password": API_KEY}), None).await;
    let info = &auth.json()["result"];
    assert_eq!(info["uid"], UID);
    assert_eq!(info["db"], DB);
    assert_eq!(info["username"], LOGIN);
    assert_eq!(info["user_context"], json!({"lang": "en_US", "tz": "UTC", "uid": UID}));
    assert_eq!(info["server_version"], "17.0");
    let cookie = auth.set_cookies().into_iter().find(|c| c.starts_with("session_id=")).expect("Set-Cookie session_id");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    let session = auth.session_id().expect("session id");

    let info = svc.web("/web/session/get_session_info", json!({}), Some(&session)).await;
    assert_eq!(info.json()["result"]["uid"], UID);

    let params = json!({"model": M, "method": "search_read", "args": [[], ["name"]], "kwargs": {}});
    let rows = svc.web("/web/dataset/call_kw", params.clone(), Some(&session)).await;
    assert_eq!(rows.json()["result"], json!([{"id": 1, "name": "Registration ODK"}]));
    let rows = svc.web("/web/dataset/call_kw/mts.connector/search_read", params.clone(), Some(&session)).await;
    assert_eq!(rows.json()["result"], json!([{"id": 1, "name": "Registration ODK"}]));
    let write = json!({"model": M, "method": "write", "args": [[1], {"name": "From the web"}], "kwargs": {}});
    assert_eq!(svc.web("/web/dataset/call_kw/mts.connector/write", write, Some(&session)).await.json()["result"], true);

    let destroyed = svc.web("/web/session/destroy", json!({}), Some(&session)).await;
    assert_eq!(destroyed.json()["result"], Value::Null);
    assert!(destroyed.json().get("error").is_none());

    let after = svc.web("/web/dataset/call_kw", params, Some(&session)).await.json();
    let err = &after["error"];
    assert_eq!(err["code"], 100, "{after}");
    assert_eq!(err["message"], "Odoo Session Expired");
    assert_eq!(err["data"]["name"], "odoo.http.SessionExpiredException");
    assert_eq!(svc.read(1).await["name"], "From the web");
}

#[tokio::test]
async fn authenticate_with_a_wrong_password_is_denied_without_a_cookie() {
    let svc = Service::start().await;
    for (db, pw) in [(DB, "wrong"), ("other_db", API_KEY)] {
        let auth = svc.web("/web/session/authenticate", json!({"db": db, "login": LOGIN, "password": pw}), None).await;
        assert_eq!(auth.status, 200);
        let message = expect_error(&auth.json()["error"], "odoo.exceptions.AccessDenied");
        assert_eq!(message, "Access Denied");
        assert!(auth.set_cookies().is_empty(), "no cookie on a refused login: {:?}", auth.set_cookies());
    }
}

#[tokio::test]
async fn call_kw_without_a_valid_session_is_session_expired() {
    let svc = Service::start().await;
    let params = json!({"model": M, "method": "search", "args": [[]], "kwargs": {}});
    for cookie in [None, Some("made-up-session"), Some("")] {
        let resp = svc.web("/web/dataset/call_kw", params.clone(), cookie).await.json();
        assert_eq!(resp["error"]["code"], 100, "{resp}");
        assert_eq!(resp["error"]["data"]["name"], "odoo.http.SessionExpiredException");
        let resp = svc.web("/web/dataset/call_kw/mts.connector/search", params.clone(), cookie).await.json();
        assert_eq!(resp["error"]["code"], 100, "{resp}");
    }
    let info = svc.web("/web/session/get_session_info", json!({}), None).await.json();
    assert_eq!(info["error"]["code"], 100, "{info}");
}

#[tokio::test]
async fn logout_redirects_and_ends_the_session() {
    let svc = Service::start().await;
    let auth = svc.web("/web/session/authenticate", json!({"db": DB, "login": LOGIN, "password": API_KEY}), None).await;
    let session = auth.session_id().expect("session");
    let logout = svc.request(reqwest::Method::GET, "/web/session/logout", None, None, Some(&session)).await;
    assert_eq!(logout.status, 303);
    let params = json!({"model": M, "method": "search", "args": [[]], "kwargs": {}});
    let resp = svc.web("/web/dataset/call_kw", params, Some(&session)).await.json();
    assert_eq!(resp["error"]["code"], 100, "{resp}");
}

/// odoo-jsonrpc.md: Odoo picks its JSON handler by the content type, not the HTTP
/// method; MTS authenticates with a GET carrying a JSON body.
#[tokio::test]
async fn authenticate_accepts_a_get_with_a_json_body() {
    let svc = Service::start().await;
    let body = svc.envelope(json!({"db": DB, "login": LOGIN, "password": API_KEY}));
    let resp = svc
        .request(
            reqwest::Method::GET,
            "/web/session/authenticate",
            Some(body.to_string().into_bytes()),
            Some("application/json"),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "GET with a JSON body: {}", resp.body);
    assert_eq!(resp.json()["result"]["uid"], UID);
    assert!(resp.session_id().is_some(), "a session cookie");
}

// ---------------------------------------------------------------- models, services, version

#[tokio::test]
async fn ir_model_lookup_finds_the_connector_model() {
    let svc = Service::start().await;
    let found = svc.ok("ir.model", "search", json!([[["model", "=", "mts.connector"]]]), json!({})).await;
    assert_eq!(ids(&found).len(), 1, "{found}");
    let rows = svc.ok("ir.model", "search_read", json!([[["model", "=", "mts.connector"]]]), json!({})).await;
    assert_eq!(rows[0]["model"], "mts.connector");
    let runs = svc.ok("ir.model", "search", json!([[["model", "=", "mts.connector.run"]]]), json!({})).await;
    assert_eq!(ids(&runs).len(), 1, "{runs}");
    let none = svc.ok("ir.model", "search", json!([[["model", "=", "res.partner"]]]), json!({})).await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn unknown_model_method_and_service_are_errors() {
    let svc = Service::start().await;
    let err = svc.err("res.partner", "search", json!([[]]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("res.partner"), "{err}");
    let err = svc.err(M, "frobnicate", json!([[1]]), json!({})).await;
    assert!(err["data"]["message"].as_str().unwrap_or_default().contains("frobnicate"), "{err}");
    let err = svc.err("ir.model", "unlink", json!([[1]]), json!({})).await;
    assert!(err["data"]["name"].is_string(), "{err}");
    let resp = svc.call("nope", "version", json!([])).await;
    assert!(resp["error"]["data"]["message"].as_str().unwrap_or_default().contains("nope"), "{resp}");
    let resp = svc.call("common", "frobnicate", json!([])).await;
    assert!(resp.get("error").is_some(), "{resp}");
    // Run history is read-only over the API.
    let err = svc.err("mts.connector.run", "create", json!([{"name": "x"}]), json!({})).await;
    expect_error(&err, "odoo.exceptions.AccessError");
}

#[tokio::test]
async fn common_version_reports_odoo_17() {
    let svc = Service::start().await;
    let version = svc.call("common", "version", json!([])).await["result"].clone();
    assert_eq!(version["server_version"], "17.0");
    assert_eq!(version["server_serie"], "17.0");
    assert_eq!(version["server_version_info"][0], 17);
    assert_eq!(version["server_version_info"][1], 0);
    assert_eq!(version["protocol_version"], 1);
    assert_eq!(version["mts_connector_version"], env!("CARGO_PKG_VERSION"));
    let web = svc.web("/web/webclient/version_info", json!({}), None).await.json();
    assert_eq!(web["result"], version);
}

// ---------------------------------------------------------------- durability

#[tokio::test]
async fn restart_keeps_every_record_and_never_reuses_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut svc = Service::start_with(Options::new().data_dir(dir.path())).await;
    for name in ["One", "Two", "Three"] {
        svc.create(&merged(&valid_connector(), &json!({"name": name}))).await;
    }
    svc.connector("action_start", json!([[2]])).await;
    svc.connector("unlink", json!([[3]])).await;
    let before = stable(&svc.connector("search_read", json!([[]])).await);
    let status = svc.terminate().await;
    assert!(status.success(), "SIGTERM stops cleanly: {status}");
    assert!(svc.log().contains("stopped; store flushed"), "{}", svc.log());

    let svc = Service::start_with(Options::new().data_dir(dir.path())).await;
    assert_eq!(stable(&svc.connector("search_read", json!([[]])).await), before, "every record and field survives");
    assert_eq!(svc.create(&valid_connector()).await, 4, "id 3 is not reused");
}

#[tokio::test]
async fn a_record_survives_kill_9_right_after_its_create_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut svc = Service::start_with(Options::new().data_dir(dir.path())).await;
    let id = svc.create(&valid_connector()).await;
    svc.connector("write", json!([[id], {"name": "Written last"}])).await;
    svc.kill9();

    let svc = Service::start_with(Options::new().data_dir(dir.path())).await;
    let rec = svc.read(id).await;
    assert_eq!(rec["name"], "Written last");
    assert_eq!(rec["odk_password"], "********", "the secret survives too");
    assert_eq!(svc.create(&valid_connector()).await, id + 1);
}

#[tokio::test]
async fn a_second_service_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Service::start_with(Options::new().data_dir(dir.path())).await;
    let second = Service::try_start(Options::new().data_dir(dir.path())).await;
    let exited = match second {
        Ok(_) => panic!("a second service started on a data dir in use"),
        Err(e) => e,
    };
    assert!(!exited.status.success(), "{}", exited.status);
    assert!(exited.after < Duration::from_secs(10), "it exits quickly, took {:?}", exited.after);
    assert!(exited.log.contains("in use"), "the message says the data dir is in use:\n{}", exited.log);
    // The first one is unaffected.
    assert_eq!(first.count().await, 0);
}

// ---------------------------------------------------------------- HTTP edges

#[tokio::test]
async fn malformed_json_is_a_parse_error_and_the_service_survives() {
    let svc = Service::start().await;
    let resp = svc
        .post_raw(
            "/jsonrpc",
            b"{\"jsonrpc\": \"2.0\", \"method\": \"call\", \"params\": {".to_vec(),
            Some("application/json"),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["error"]["code"], -32700, "{}", resp.body);
    let resp = svc.post_raw("/web/dataset/call_kw", b"not json at all".to_vec(), Some("application/json")).await;
    assert_eq!(resp.json()["error"]["code"], -32700, "{}", resp.body);
    let version = svc.call("common", "version", json!([])).await;
    assert_eq!(version["result"]["server_version"], "17.0");
}

#[tokio::test]
async fn a_body_over_one_mib_is_413() {
    let svc = Service::start().await;
    let big = "x".repeat(1 << 20);
    let body = svc.envelope(json!({"service": "common", "method": "version", "args": [big]}));
    let resp = svc.post("/jsonrpc", &body, None).await;
    assert_eq!(resp.status, 413, "{}", &resp.body[..resp.body.len().min(200)]);
    assert_eq!(svc.call("common", "version", json!([])).await["result"]["protocol_version"], 1);
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    let svc = Service::start().await;
    let body = svc.envelope(json!({"service": "common", "method": "version", "args": []}));
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let resp = svc.post_raw("/jsonrpc", body.to_string().into_bytes(), ct).await;
        assert!((400..500).contains(&resp.status), "{ct:?}: {} {}", resp.status, resp.body);
    }
}

#[tokio::test]
async fn a_json_content_type_with_a_charset_is_accepted() {
    let svc = Service::start().await;
    let body = svc.envelope(json!({"service": "common", "method": "version", "args": []}));
    let resp = svc.post_raw("/jsonrpc", body.to_string().into_bytes(), Some("application/json; charset=utf-8")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["result"]["server_version"], "17.0");
}

#[tokio::test]
async fn health_answers_200_with_the_version() {
    let svc = Service::start().await;
    let resp = svc.get("/health").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn an_unknown_path_is_404() {
    let svc = Service::start().await;
    assert_eq!(svc.get("/no/such/page").await.status, 404);
    let body = svc.envelope(json!({}));
    assert_eq!(svc.post("/web/no_such_endpoint", &body, None).await.status, 404);
}

// ---------------------------------------------------------------- configuration

#[tokio::test]
async fn configuration_precedence_is_flag_env_file_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("mts-connector.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9\"\ndb_name = \"file_db\"\napi_login = \"file_login\"\napi_key = \"file-key-SECRET8\"\nlog_format = \"json\"\n",
    )
    .expect("write config");
    let options = Options::new()
        .no_api_key()
        .arg("--config")
        .arg(file.to_str().expect("utf-8 path"))
        .env("MTSC_DB_NAME", "env_db")
        .env("MTSC_API_LOGIN", "env_login")
        .arg("--api-login")
        .arg("flag_login");
    let mut svc = Service::start_with(options).await;
    assert!(!svc.url().ends_with(":9"), "the --listen flag beats the file: {}", svc.url());
    let login = |db: &'static str, user: &'static str, pw: &'static str| {
        let svc = &svc;
        async move { svc.call("common", "login", json!([db, user, pw])).await["result"].clone() }
    };
    // db_name: env beats file; api_login: flag beats env and file; api_key: file beats default.
    assert_eq!(login("env_db", "flag_login", "file-key-SECRET8").await, UID);
    assert_eq!(login("file_db", "flag_login", "file-key-SECRET8").await, false);
    assert_eq!(login("env_db", "env_login", "file-key-SECRET8").await, false);
    assert_eq!(login("env_db", "file_login", "file-key-SECRET8").await, false);
    assert_eq!(login(DB, LOGIN, "file-key-SECRET8").await, false);
    assert!(!svc.data_dir().join("api-key").exists(), "a configured key means no generated key file");
    svc.terminate().await;
    // log_format: file beats default (text).
    let log = svc.log();
    let listening = log.lines().find(|l| l.contains("listening on")).expect("listening line");
    let line: Value =
        serde_json::from_str(listening).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {listening}"));
    assert!(line.is_object());
    assert!(!log.contains("file-key-SECRET8"), "the key from the file is not logged");
}

#[tokio::test]
async fn a_generated_api_key_is_private_works_and_is_not_logged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut svc = Service::start_with(Options::new().no_api_key().data_dir(dir.path()).rust_log("debug")).await;
    let path = dir.path().join("api-key");
    let log = svc.log();
    assert!(log.contains(&path.display().to_string()), "the log names the key file:\n{log}");
    let key = std::fs::read_to_string(&path).expect("the key file exists").trim().to_string();
    assert!(key.len() >= 32, "a long random key: {} characters", key.len());
    let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert_eq!(svc.call("common", "login", json!([DB, LOGIN, key])).await["result"], UID);
    assert_eq!(svc.call("common", "login", json!([DB, LOGIN, API_KEY])).await["result"], false);
    svc.password = key.clone();
    svc.create(&valid_connector()).await;
    svc.terminate().await;
    assert!(!svc.log().contains(&key), "the generated key is not logged");

    // A restart reuses the same key.
    let svc = Service::start_with(Options::new().no_api_key().data_dir(dir.path())).await;
    assert_eq!(svc.call("common", "login", json!([DB, LOGIN, key])).await["result"], UID);
    assert_eq!(std::fs::read_to_string(&path).expect("key file").trim(), key);
    assert!(!svc.log().contains(&key));
}

#[tokio::test]
async fn a_registry_connector_starts_and_its_walk_reports_an_unreachable_registry() {
    let svc = Service::start().await;
    let id = svc
        .create(&merged(
            &valid_connector(),
            &json!({
                "input_type": "custom",
                "odoo_url": common::CLOSED_URL,
                "odoo_database": "registry",
                "odoo_username": "registry-user",
                "odoo_password": "reg-pw-SECRET7",
            }),
        ))
        .await;
    // A date-range import stays an ODK feature.
    let err = svc
        .err("mts.connector", "action_import", json!([[id], "2020-01-01 00:00:00", "2020-01-02 00:00:00"]), json!({}))
        .await;
    assert_eq!(err["data"]["name"], "odoo.exceptions.UserError", "{err}");
    svc.connector("action_start", json!([[id]])).await;
    let c = svc.connector("read", json!([[id], ["job_status"]])).await;
    assert_eq!(c[0]["job_status"], "running");
    let started = std::time::Instant::now();
    let run = loop {
        let runs = svc.ok("mts.connector.run", "search_read", json!([[["connector_id", "=", id]]]), json!({})).await;
        if let Some(r) = runs.as_array().and_then(|rs| rs.iter().find(|r| r["state"] == "retrying")) {
            break r.clone();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no retrying walk: {runs}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let message = run["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("the registry Odoo at http://127.0.0.1:9 is unreachable"), "{run}");
    assert!(!run.to_string().contains("SECRET"), "{run}");
    assert!(!svc.log().contains("reg-pw-SECRET7"));
}

/// A single call is answered by the service's own path (rows written straight as JSON),
/// a batch by jsonrpsee: the same request must get the same bytes either way, for
/// results, errors, odd ids and values that need escaping.
#[tokio::test]
async fn a_single_call_answers_the_very_bytes_jsonrpsee_answers_in_a_batch() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    let odd = merged(&valid_connector(), &json!({"name": "Quote \" back\\slash \u{1} tab\t é 🦀 </script>"}));
    svc.connector("create", json!([odd])).await;
    let kw = |method: &str, args: Value, kwargs: Value| {
        json!({"service": "object", "method": "execute_kw",
            "args": [common::DB, common::UID, API_KEY, M, method, args, kwargs]})
    };
    let cases = [
        kw(
            "search_read",
            json!([[["lang_code", "=", "eng"]]]),
            json!({"fields": ["name", "last_run_id", "next_run_at"], "limit": 2, "order": "name"}),
        ),
        // Asked twice, and `id` asked for: each once, `id` first.
        kw("search_read", json!([[], ["name", "id", "name", "display_name", "job_status"]]), json!({})),
        kw("search_read", json!([[["id", "=", 6]]]), json!({})),
        kw("read", json!([[6, 1]]), json!({})),
        kw("read", json!([[2], ["interval_minutes", "odk_password", "callback_auth_password"]]), json!({})),
        kw("read", json!([[1, 99]]), json!({})),
        kw("search_read", json!([[], ["no_such_field"]]), json!({})),
        kw("search_read", json!([[["name", "ilike", "alpha"]], []]), json!({"limit": 0})),
        kw("search", json!([[]]), json!({})),
        json!({"service": "common", "method": "version", "args": []}),
        json!({"service": "common", "method": "login", "args": [common::DB, "admin", "wrong"]}),
    ];
    let ids = [json!(7), json!("id \"quoted\" \u{e9}"), json!(null), json!(u64::MAX)];
    for (i, params) in cases.iter().enumerate() {
        let id = &ids[i % ids.len()];
        let body = json!({"jsonrpc": "2.0", "method": "call", "params": params, "id": id}).to_string();
        let single = svc.post_raw("/jsonrpc", body.clone().into_bytes(), Some("application/json")).await;
        let batch = svc.post_raw("/jsonrpc", format!("[{body}]").into_bytes(), Some("application/json")).await;
        assert_eq!((single.status, batch.status), (200, 200), "{params}");
        // What jsonrpsee's own single answers carry.
        assert_eq!(single.headers["content-type"], "application/json; charset=utf-8", "{params}");
        assert_eq!(format!("[{}]", single.body), batch.body, "{params}");
        assert_eq!(single.json()["id"], *id, "{}", single.body);
    }
    // The rows really are the records (not only equal to jsonrpsee's bytes).
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": cases[3]}).to_string();
    let rows = svc.post_raw("/jsonrpc", body.into_bytes(), Some("application/json")).await.json()["result"].clone();
    assert_eq!(rows[0]["name"], odd["name"], "{rows}");
    assert_eq!(rows[0]["odk_password"], "********", "{rows}");
    assert_eq!(rows[1]["name"], "Alpha North", "{rows}");
    // Keys in the order asked for, each once, `id` first (as Odoo's dicts have them).
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": cases[1]}).to_string();
    let rows = svc.post_raw("/jsonrpc", body.into_bytes(), Some("application/json")).await.json()["result"].clone();
    let keys: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "name", "display_name", "job_status"], "{rows}");
}

/// JSON-RPC 2.0 batches: each call answered in the list, by its id. A batch of one used
/// to be refused whole: the probe for ids jsonrpsee cannot echo read its only element as
/// the request's fields.
#[tokio::test]
async fn a_batch_is_answered_with_a_list_of_answers() {
    let svc = Service::start().await;
    search_fixture(&svc).await;
    let read = json!({"service": "object", "method": "execute_kw",
        "args": [common::DB, common::UID, API_KEY, M, "read", [[3]], {"fields": ["name"]}]});
    let missing = json!({"service": "object", "method": "execute_kw",
        "args": [common::DB, common::UID, API_KEY, M, "read", [[42]], {}]});
    let batch = json!([
        {"jsonrpc": "2.0", "method": "call", "id": "a", "params": read},
        {"jsonrpc": "2.0", "method": "call", "id": 2, "params": missing},
    ]);
    let raw = svc.post("/jsonrpc", &batch, None).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let answers = raw.json();
    let answers = answers.as_array().unwrap_or_else(|| panic!("a list: {}", raw.body));
    assert_eq!(answers.len(), 2, "{}", raw.body);
    let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("{id}: {}", raw.body));
    assert_eq!(by_id(json!("a"))["result"], json!([{"id": 3, "name": "Beta"}]));
    expect_error(&by_id(json!(2))["error"], "odoo.exceptions.MissingError");
    let one = svc.post("/jsonrpc", &json!([batch[0]]), None).await.json();
    assert_eq!(one, json!([answers[0]]), "a batch of one");
}
