//! The MTS request builder: one function turning a connector and its input (an ODK
//! window or inline records) into the exact body MTS expects (`mts-contract.md`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::model::fields::Record;
use crate::secret::MASK;

/// What the request carries.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// An ODK window `[start, end)`: MTS pulls the submissions itself.
    Odk { start: DateTime<Utc>, end: DateTime<Utc> },
    /// Records given inline (`/authtoken/json`).
    Records(&'a [Value]),
}

/// Whether secrets go into the body (to MTS) or are masked (for previews).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Reveal,
    Mask,
}

/// Where MTS must deliver, when the service relays callbacks itself.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    pub url: String,
    pub token: String,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the shape MTS parses for `requesttime` and the ODK dates.
pub fn mts_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The MTS endpoint path for the connector's input type.
pub fn endpoint(connector: &Record) -> &'static str {
    match connector.str("input_type") {
        Some("custom") => "authtoken/json",
        _ => "authtoken/odk",
    }
}

/// The full URL a request for `connector` goes to on the MTS at `base` (one of the
/// connector's MTS URLs).
pub fn endpoint_url(connector: &Record, base: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), endpoint(connector))
}

fn text(rec: &Record, field: &str) -> Value {
    Value::String(rec.str(field).unwrap_or_default().to_string())
}

fn secret(rec: &Record, field: &str, mode: Secrets) -> Value {
    match (rec.secret(field), mode) {
        (Some(s), Secrets::Reveal) => Value::String(s.expose().to_string()),
        (Some(_), Secrets::Mask) => Value::String(MASK.into()),
        (None, _) => Value::String(String::new()),
    }
}

fn json_field(rec: &Record, field: &str) -> Value {
    rec.str(field).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_else(|| json!({}))
}

/// The connector's extra callback headers as an object; their values are secrets
/// (they often hold credentials), masked in previews.
fn extra_headers(c: &Record, mode: Secrets) -> Value {
    let parsed = crate::model::connector::extra_headers(c).and_then(|t| serde_json::from_str::<Value>(t).ok());
    match (parsed, mode) {
        (Some(Value::Object(mut map)), Secrets::Mask) => {
            for v in map.values_mut() {
                *v = Value::String(MASK.into());
            }
            Value::Object(map)
        }
        (Some(v @ Value::Object(_)), Secrets::Reveal) => v,
        _ => json!({}),
    }
}

/// The MTS request body for `connector` and `input`, at `now`.
pub fn build_request(
    connector: &Record,
    input: Input<'_>,
    relay: Option<&RelayTarget>,
    secrets: Secrets,
    now: DateTime<Utc>,
) -> Value {
    let mut request = Map::new();
    request.insert("output".into(), Value::String(connector.str("output_type").unwrap_or("json").into()));
    request.insert("deliverytype".into(), Value::String(connector.str("delivery_type").unwrap_or("callback").into()));
    request.insert("mapping".into(), json_field(connector, "mapping"));
    request.insert("lang".into(), Value::String(connector.str("lang_code").unwrap_or("eng").into()));
    if relay.is_some() {
        // The relay receives the raw record and applies the output format itself.
        request.insert("outputFormat".into(), Value::String(".".into()));
    } else if let Some(format) = connector.str("output_format").filter(|f| !f.trim().is_empty()) {
        request.insert("outputFormat".into(), Value::String(format.into()));
    }
    if request["deliverytype"] == "callback" {
        request.insert("callbackProperties".into(), callback_properties(connector, relay, secrets));
    }
    match input {
        Input::Odk { start, end } => {
            request.insert(
                "odkconfig".into(),
                json!({
                    "baseurl": text(connector, "odk_base_url"),
                    "version": "v1",
                    "odataurl": text(connector, "odk_odata_url"),
                    "projectid": "",
                    "formid": "",
                    "email": text(connector, "odk_email"),
                    "password": secret(connector, "odk_password", secrets),
                    "startdate": mts_time(start),
                    "enddate": mts_time(end),
                }),
            );
        }
        Input::Records(records) => {
            request.insert("authdata".into(), Value::Array(records.to_vec()));
        }
    }
    json!({
        "id": "string",
        "version": "string",
        "metadata": "string",
        "requesttime": mts_time(now),
        "request": request,
    })
}

fn in_bulk(c: &Record) -> bool {
    c.values.get("callback_in_bulk").and_then(Value::as_bool).unwrap_or(false)
}

fn callback_properties(c: &Record, relay: Option<&RelayTarget>, secrets: Secrets) -> Value {
    if let Some(relay) = relay {
        let token = match secrets {
            Secrets::Reveal => relay.token.clone(),
            Secrets::Mask => MASK.into(),
        };
        return json!({
            "url": relay.url,
            "httpMethod": "POST",
            "timeoutSeconds": c.int("callback_timeout").unwrap_or(10),
            "callInBulk": in_bulk(c),
            "extraHeaders": {},
            "authType": "staticBearer",
            "authStaticBearer": {"token": token},
        });
    }
    let auth_type = c.str("callback_authtype").unwrap_or("none");
    let mut props = json!({
        "url": text(c, "callback_url"),
        "httpMethod": c.str("callback_httpmethod").unwrap_or("POST"),
        "timeoutSeconds": c.int("callback_timeout").unwrap_or(10),
        "callInBulk": in_bulk(c),
        "extraHeaders": extra_headers(c, secrets),
        "authType": auth_type,
    });
    match auth_type {
        "odoo" => {
            props["authOdoo"] = json!({
                "authUrl": text(c, "callback_auth_url"),
                "database": text(c, "callback_auth_database"),
                "username": text(c, "callback_auth_username"),
                "password": secret(c, "callback_auth_password", secrets),
            });
        }
        "oauth" => {
            props["authOauth"] = json!({
                "authUrl": text(c, "callback_auth_url"),
                "username": text(c, "callback_auth_username"),
                "password": secret(c, "callback_auth_password", secrets),
                "clientId": text(c, "callback_auth_client_id"),
                "clientSecret": secret(c, "callback_auth_client_secret", secrets),
            });
        }
        "staticBearer" => {
            props["authStaticBearer"] = json!({"token": secret(c, "callback_auth_token", secrets)});
        }
        _ => {}
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::connector::CONNECTOR;
    use crate::model::{apply_defaults, parse_datetime};
    use crate::secret::Secret;

    fn at(s: &str) -> DateTime<Utc> {
        parse_datetime(s).unwrap()
    }

    fn connector(auth: &str) -> Record {
        let mut r = Record::default();
        apply_defaults(&CONNECTOR, &mut r);
        r.set("name", "c");
        r.set("input_type", "odk");
        r.set("is_recurring", "recurring");
        r.set("mts_url", "http://mts.local/");
        r.set("odk_base_url", "https://odk.local");
        r.set("odk_odata_url", "https://odk.local/v1/projects/1/forms/f.svc/Submissions");
        r.set("odk_email", "odk@x.org");
        r.secrets.insert("odk_password".into(), Secret::new("odkpw"));
        r.set("callback_url", "http://odoo.local/api/v1/registry/callback");
        r.set("callback_authtype", auth);
        r.set("callback_auth_url", "http://odoo.local/web/session/authenticate");
        r.set("callback_auth_database", "db");
        r.set("callback_auth_username", "u");
        r.secrets.insert("callback_auth_password".into(), Secret::new("cbpw"));
        r.set("callback_auth_client_id", "cid");
        r.secrets.insert("callback_auth_client_secret".into(), Secret::new("csecret"));
        r.secrets.insert("callback_auth_token".into(), Secret::new("tok"));
        r.set("output_format", "{token: .output.token}");
        r
    }

    fn odk(c: &Record, secrets: Secrets) -> Value {
        let input = Input::Odk { start: at("2026-01-01 00:00:00"), end: at("2026-01-02 00:00:00") };
        build_request(c, input, None, secrets, at("2026-01-02 00:02:00.5"))
    }

    #[test]
    fn odk_request_with_odoo_auth_is_exact() {
        let body = odk(&connector("odoo"), Secrets::Reveal);
        let expected = json!({
            "id": "string", "version": "string", "metadata": "string",
            "requesttime": "2026-01-02T00:02:00.500Z",
            "request": {
                "output": "json", "deliverytype": "callback",
                "mapping": {"vid":"vid","name":["name"],"gender":"gender","dob":"dob","phoneNumber":"phoneNumber","emailId":"emailId","fullAddress":["fullAddress"]},
                "lang": "eng",
                "outputFormat": "{token: .output.token}",
                "callbackProperties": {
                    "url": "http://odoo.local/api/v1/registry/callback", "httpMethod": "POST",
                    "timeoutSeconds": 10, "callInBulk": false, "extraHeaders": {}, "authType": "odoo",
                    "authOdoo": {"authUrl": "http://odoo.local/web/session/authenticate", "database": "db", "username": "u", "password": "cbpw"}
                },
                "odkconfig": {
                    "baseurl": "https://odk.local", "version": "v1",
                    "odataurl": "https://odk.local/v1/projects/1/forms/f.svc/Submissions",
                    "projectid": "", "formid": "", "email": "odk@x.org", "password": "odkpw",
                    "startdate": "2026-01-01T00:00:00.000Z", "enddate": "2026-01-02T00:00:00.000Z"
                }
            }
        });
        assert_eq!(body, expected);
        assert_eq!(endpoint_url(&connector("odoo"), "http://mts.local/"), "http://mts.local/authtoken/odk");
    }

    #[test]
    fn each_auth_type_has_its_own_block() {
        let none = odk(&connector("none"), Secrets::Reveal);
        let props = &none["request"]["callbackProperties"];
        assert_eq!(props["authType"], "none");
        assert!(props.get("authOdoo").is_none() && props.get("authOauth").is_none());

        let oauth = odk(&connector("oauth"), Secrets::Reveal);
        assert_eq!(
            oauth["request"]["callbackProperties"]["authOauth"],
            json!({"authUrl": "http://odoo.local/web/session/authenticate", "username": "u", "password": "cbpw", "clientId": "cid", "clientSecret": "csecret"})
        );
        let bearer = odk(&connector("staticBearer"), Secrets::Reveal);
        assert_eq!(bearer["request"]["callbackProperties"]["authStaticBearer"], json!({"token": "tok"}));
    }

    #[test]
    fn extra_headers_are_passed_as_an_object() {
        let mut c = connector("none");
        c.secrets.insert("callback_extra_headers".into(), Secret::new(r#"{"Authorization": "Basic abc"}"#));
        let body = odk(&c, Secrets::Reveal);
        assert_eq!(body["request"]["callbackProperties"]["extraHeaders"], json!({"Authorization": "Basic abc"}));
        let preview = odk(&c, Secrets::Mask);
        assert_eq!(preview["request"]["callbackProperties"]["extraHeaders"], json!({"Authorization": "********"}));
    }

    #[test]
    fn call_in_bulk_follows_the_connector() {
        let mut c = connector("none");
        assert_eq!(odk(&c, Secrets::Reveal)["request"]["callbackProperties"]["callInBulk"], false);
        c.set("callback_in_bulk", true);
        assert_eq!(odk(&c, Secrets::Reveal)["request"]["callbackProperties"]["callInBulk"], true);
    }

    #[test]
    fn masked_previews_hold_no_secret() {
        for auth in ["odoo", "oauth", "staticBearer"] {
            let text = odk(&connector(auth), Secrets::Mask).to_string();
            for secret in ["odkpw", "cbpw", "csecret", "\"tok\""] {
                assert!(!text.contains(secret), "{auth}: {secret} leaked");
            }
        }
    }

    #[test]
    fn json_input_carries_authdata_and_no_odkconfig() {
        let mut c = connector("none");
        c.set("input_type", "custom");
        let records = [json!({"vid": "123", "name": "A"})];
        let body = build_request(&c, Input::Records(&records), None, Secrets::Reveal, at("2026-01-02 00:00:00"));
        assert_eq!(body["request"]["authdata"], json!([{"vid": "123", "name": "A"}]));
        assert!(body["request"].get("odkconfig").is_none());
        assert_eq!(endpoint_url(&c, "http://mts.local"), "http://mts.local/authtoken/json");
    }

    #[test]
    fn relay_mode_points_mts_at_the_service() {
        let relay = RelayTarget { url: "http://127.0.0.1:8070/relay/7".into(), token: "runtoken".into() };
        let input = Input::Odk { start: at("2026-01-01 00:00:00"), end: at("2026-01-02 00:00:00") };
        let body = build_request(&connector("odoo"), input, Some(&relay), Secrets::Reveal, at("2026-01-02 00:00:00"));
        let props = &body["request"]["callbackProperties"];
        assert_eq!(props["url"], "http://127.0.0.1:8070/relay/7");
        assert_eq!(props["authType"], "staticBearer");
        assert_eq!(props["authStaticBearer"]["token"], "runtoken");
        assert_eq!(body["request"]["outputFormat"], ".", "the relay gets {{input, output}} untouched");
    }
}
