//! What the fake MTS accepts: envelope and request validation with MTS's error codes and HTTP
//! statuses (pydantic v1 order: field by field, a custom error stops at once, type errors are
//! collected into one 422), and the per-record mapping done at submit time.

use std::time::Duration;

use chrono::NaiveDate;
use http::StatusCode;
use serde_json::{Map, Value};

use super::mts_records::truthy;
use crate::jq::Program;

/// An error answer: HTTP status plus the `errors` list (and, for ATS-REQ-101, a `response`).
#[derive(Debug)]
pub(crate) struct MtsError {
    pub status: StatusCode,
    pub errors: Vec<(String, String)>,
    pub response: Option<Value>,
}

impl MtsError {
    /// A `MOSIPTokenSeederException`: HTTP 400.
    pub(crate) fn bad(code: &str, message: &str) -> MtsError {
        MtsError {
            status: StatusCode::BAD_REQUEST,
            errors: vec![(code.to_string(), message.to_string())],
            response: None,
        }
    }

    /// Any other Python exception: HTTP 500, `ATS-REQ-100` with the exception text.
    pub(crate) fn internal(message: impl Into<String>) -> MtsError {
        MtsError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            errors: vec![("ATS-REQ-100".to_string(), message.into())],
            response: None,
        }
    }

    /// Body schema errors (pydantic `RequestValidationError`): HTTP 422, one ATS-REQ-102 each.
    fn schema(messages: Vec<String>) -> MtsError {
        MtsError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors: messages.into_iter().map(|m| ("ATS-REQ-102".to_string(), m)).collect(),
            response: None,
        }
    }
}

/// Which endpoint is being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Json,
    Odk,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Odk => "odk",
        }
    }
}

/// A request that passed validation.
pub(crate) struct ParsedRequest {
    pub deliverytype: String,
    pub mapping: Mapping,
    pub output_format: Option<Program>,
    pub callback: Option<CallbackProps>,
    /// `request.authdata` (json) - empty for odk.
    pub authdata: Vec<Value>,
    /// `request.odkconfig` (odk only).
    pub odk: Option<OdkConfig>,
}

/// `request.mapping`, defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub vid: String,
    pub name: Vec<String>,
    pub gender: String,
    pub dob: String,
    pub full_address: Vec<String>,
}

/// `request.callbackProperties`.
#[derive(Debug, Clone)]
pub(crate) struct CallbackProps {
    pub url: String,
    pub http_method: String,
    pub extra_headers: Map<String, Value>,
    pub timeout: Duration,
    pub call_in_bulk: bool,
    pub auth: CallbackAuth,
}

#[derive(Debug, Clone)]
pub(crate) enum CallbackAuth {
    None,
    Odoo { auth_url: String, database: String, username: String, password: String, extra_headers: Map<String, Value> },
    Oauth { auth_url: String, fields: Vec<(String, String)>, extra_headers: Map<String, Value> },
    StaticBearer(String),
}

/// `request.odkconfig`.
#[derive(Debug, Clone)]
pub(crate) struct OdkConfig {
    pub odataurl: String,
    pub baseurl: String,
    pub version: String,
    pub projectid: String,
    pub formid: String,
    pub email: String,
    pub password: String,
    pub startdate: Option<String>,
    pub enddate: Option<String>,
}

/// Collects pydantic-style type errors (`loc. type. msg`) while walking the body.
#[derive(Default)]
struct Schema {
    errors: Vec<String>,
}

impl Schema {
    fn push(&mut self, loc: &str, kind: &str, msg: &str) {
        self.errors.push(format!("{loc}. {kind}. {msg}"));
    }

    fn missing(&mut self, loc: &str) {
        self.push(loc, "value_error.missing", "field required");
    }

    /// A required `str` field (pydantic v1 coerces numbers and booleans).
    fn req_str(&mut self, obj: &Map<String, Value>, key: &str, loc: &str) -> Option<String> {
        let loc = format!("{loc}->{key}");
        match obj.get(key) {
            None => {
                self.missing(&loc);
                None
            }
            Some(v) => self.coerce_str(v, &loc),
        }
    }

    /// An optional `str` field: missing or null gives `default`.
    fn opt_str(&mut self, obj: &Map<String, Value>, key: &str, loc: &str, default: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => Some(default.to_string()),
            Some(v) => self.coerce_str(v, &format!("{loc}->{key}")),
        }
    }

    fn coerce_str(&mut self, v: &Value, loc: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            Value::Null => {
                self.push(loc, "type_error.none.not_allowed", "none is not an allowed value");
                None
            }
            _ => {
                self.push(loc, "type_error.str", "str type expected");
                None
            }
        }
    }

    fn str_list(&mut self, v: &Value, loc: &str) -> Option<Vec<String>> {
        let Value::Array(items) = v else {
            self.push(loc, "type_error.list", "value is not a valid list");
            return None;
        };
        let out: Vec<Option<String>> =
            items.iter().enumerate().map(|(i, item)| self.coerce_str(item, &format!("{loc}->{i}"))).collect();
        out.into_iter().collect()
    }

    fn object<'a>(&mut self, v: &'a Value, loc: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            _ => {
                self.push(loc, "type_error.dict", "value is not a valid dict");
                None
            }
        }
    }

    fn dict_or_empty(&mut self, obj: &Map<String, Value>, key: &str, loc: &str) -> Map<String, Value> {
        match obj.get(key) {
            None => Map::new(),
            Some(v) => self.object(v, &format!("{loc}->{key}")).cloned().unwrap_or_default(),
        }
    }
}

/// `requesttime` as Python's `strptime(value, '%Y-%m-%dT%H:%M:%S.%fZ')` accepts it:
/// 4-digit year, 1-2 digit month/day/hour/minute/second, 1-6 fraction digits, literal `Z`.
pub(crate) fn valid_requesttime(s: &str) -> bool {
    fn num(part: &str, min_len: usize, max_len: usize) -> Option<u32> {
        let ok = (min_len..=max_len).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
        if ok { part.parse().ok() } else { None }
    }
    let parse = || -> Option<()> {
        let rest = s.strip_suffix('Z')?;
        let (date, time) = rest.split_once('T')?;
        let mut d = date.split('-');
        let (y, mo, da) = (num(d.next()?, 4, 4)?, num(d.next()?, 1, 2)?, num(d.next()?, 1, 2)?);
        if d.next().is_some() {
            return None;
        }
        let (hms, frac) = time.split_once('.')?;
        num(frac, 1, 6)?;
        let mut t = hms.split(':');
        let (h, mi, se) = (num(t.next()?, 1, 2)?, num(t.next()?, 1, 2)?, num(t.next()?, 1, 2)?);
        if t.next().is_some() || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, da).map(|_| ())
    };
    parse().is_some()
}

/// Validates a POST /authtoken/{json,odk} body the way MTS (FastAPI + pydantic v1) does.
/// `raw` is the body text, `body` its JSON parse (None when it is not JSON).
pub(crate) fn parse(raw: &str, body: Option<&Value>, kind: Kind) -> Result<ParsedRequest, MtsError> {
    let Some(body) = body else {
        if raw.trim().is_empty() {
            return Err(match kind {
                Kind::Json => MtsError::bad("ATS-REQ-102", "mission request body"),
                Kind::Odk => MtsError::internal("'NoneType' object has no attribute 'request'"),
            });
        }
        return Err(MtsError::schema(vec!["body->0. value_error.jsondecode. Expecting value".to_string()]));
    };
    let mut schema = Schema::default();
    let Some(env) = schema.object(body, "body") else {
        return Err(MtsError::schema(schema.errors));
    };
    for key in ["id", "version", "metadata"] {
        schema.req_str(env, key, "body");
    }
    match env.get("requesttime") {
        None => schema.missing("body->requesttime"),
        Some(Value::String(s)) if valid_requesttime(s) => {}
        Some(_) => {
            return Err(MtsError::bad("ATS-REQ-102", "invalid input. requesttime is not in valid format"));
        }
    }
    let parsed = match env.get("request") {
        None => {
            schema.missing("body->request");
            None
        }
        Some(v) => match schema.object(v, "body->request") {
            Some(req) => parse_request(req, kind, &mut schema)?,
            None => None,
        },
    };
    match parsed {
        Some(p) if schema.errors.is_empty() => Ok(p),
        _ => Err(MtsError::schema(schema.errors)),
    }
}

fn parse_request(req: &Map<String, Value>, kind: Kind, schema: &mut Schema) -> Result<Option<ParsedRequest>, MtsError> {
    const LOC: &str = "body->request";
    let output = choice(req, "output", &["json", "csv"], "output type", schema)?;
    let deliverytype = choice(req, "deliverytype", &["download", "callback"], "delivery type", schema)?;
    let mapping = parse_mapping(req.get("mapping"), schema);
    if let Some(v) = req.get("lang").filter(|v| !v.is_null()) {
        schema.coerce_str(v, &format!("{LOC}->lang"));
    }
    let output_format = match req.get("outputFormat") {
        Some(v) if truthy(v) => {
            let src = v.as_str().unwrap_or_default();
            match Program::compile(src) {
                Ok(p) if v.is_string() => Some(p),
                _ => {
                    return Err(MtsError::bad("ATS-REQ-103", "outputFormat is not a valid jq expression"));
                }
            }
        }
        _ => None,
    };
    // callbackProperties' validator reads `values['deliverytype']`: a KeyError when that field failed.
    let callback_value = req.get("callbackProperties").filter(|v| !v.is_null());
    let callback = match deliverytype.as_deref() {
        None => return Err(MtsError::internal("'deliverytype'")),
        Some("callback") => match callback_value.filter(|v| truthy(v)) {
            None => {
                return Err(MtsError::bad(
                    "ATS-REQ-024",
                    "callbackProperties cannot be empty for deliverytype callback",
                ));
            }
            Some(v) => parse_callback(v, schema)?,
        },
        Some(_) => None,
    };
    let mut authdata = Vec::new();
    let mut odk = None;
    match kind {
        Kind::Json => {
            let loc = format!("{LOC}->authdata");
            match req.get("authdata") {
                Some(Value::Array(items)) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        if schema.object(item, &format!("{loc}->{i}")).is_some() {
                            authdata.push(item.clone());
                        }
                    }
                }
                None | Some(Value::Null) | Some(Value::Array(_)) => {
                    return Err(MtsError::bad("ATS-REQ-102", "invalid input. authdata missing"));
                }
                Some(_) => schema.push(&loc, "type_error.list", "value is not a valid list"),
            }
        }
        Kind::Odk => {
            let loc = format!("{LOC}->odkconfig");
            match req.get("odkconfig") {
                None => schema.missing(&loc),
                Some(v) => {
                    if let Some(cfg) = schema.object(v, &loc) {
                        odk = parse_odk_config(cfg, &loc, schema);
                    }
                }
            }
        }
    }
    let complete = output.is_some() && (kind == Kind::Json || odk.is_some());
    Ok(match (deliverytype, mapping) {
        (Some(deliverytype), Some(mapping)) if complete => {
            Some(ParsedRequest { deliverytype, mapping, output_format, callback, authdata, odk })
        }
        _ => None,
    })
}

/// `output` / `deliverytype`: missing is a 422, empty or unsupported a 400.
fn choice(
    req: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
    what: &str,
    schema: &mut Schema,
) -> Result<Option<String>, MtsError> {
    let Some(v) = req.get(key) else {
        schema.missing(&format!("body->request->{key}"));
        return Ok(None);
    };
    if !truthy(v) {
        return Err(MtsError::bad("ATS-REQ-102", &format!("invalid input. {what} is not mentioned")));
    }
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(Some(s.to_string())),
        _ => Err(MtsError::bad("ATS-REQ-102", &format!("invalid input. {what} is not supported"))),
    }
}

fn parse_mapping(v: Option<&Value>, schema: &mut Schema) -> Option<Mapping> {
    const LOC: &str = "body->request->mapping";
    let mut m = Mapping {
        vid: "vid".into(),
        name: vec!["name".into()],
        gender: "gender".into(),
        dob: "dob".into(),
        full_address: vec!["fullAddress".into()],
    };
    let Some(v) = v else { return Some(m) };
    let obj = schema.object(v, LOC)?;
    let before = schema.errors.len();
    let string = |key: &str, slot: &mut String, schema: &mut Schema| {
        if let Some(v) = obj.get(key)
            && let Some(s) = schema.coerce_str(v, &format!("{LOC}->{key}"))
        {
            *slot = s;
        }
    };
    string("vid", &mut m.vid, schema);
    string("gender", &mut m.gender, schema);
    string("dob", &mut m.dob, schema);
    string("phoneNumber", &mut String::new(), schema);
    string("emailId", &mut String::new(), schema);
    for (key, slot) in [("name", &mut m.name), ("fullAddress", &mut m.full_address)] {
        if let Some(v) = obj.get(key)
            && let Some(list) = schema.str_list(v, &format!("{LOC}->{key}"))
        {
            *slot = list;
        }
    }
    (schema.errors.len() == before).then_some(m)
}

fn parse_callback(v: &Value, schema: &mut Schema) -> Result<Option<CallbackProps>, MtsError> {
    const LOC: &str = "body->request->callbackProperties";
    let Some(obj) = schema.object(v, LOC) else {
        return Ok(None);
    };
    let before = schema.errors.len();
    let url = match obj.get("url") {
        None => {
            schema.missing(&format!("{LOC}->url"));
            None
        }
        Some(Value::String(s)) if is_url(s) => Some(s.clone()),
        Some(Value::String(_)) => {
            schema.push(&format!("{LOC}->url"), "value_error.url.scheme", "invalid or missing URL scheme");
            None
        }
        Some(Value::Null) => {
            schema.push(&format!("{LOC}->url"), "type_error.none.not_allowed", "none is not an allowed value");
            None
        }
        Some(_) => {
            schema.push(&format!("{LOC}->url"), "type_error.str", "str type expected");
            None
        }
    };
    let http_method = schema.opt_str(obj, "httpMethod", LOC, "POST");
    let extra_headers = schema.dict_or_empty(obj, "extraHeaders", LOC);
    let timeout = match obj.get("timeoutSeconds") {
        None | Some(Value::Null) => Some(10.0),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => s.trim().parse::<f64>().ok(),
        Some(_) => {
            schema.push(&format!("{LOC}->timeoutSeconds"), "type_error.integer", "value is not a valid integer");
            None
        }
    };
    let call_in_bulk = match obj.get("callInBulk") {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => Some(n.as_i64() == Some(1)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    if call_in_bulk.is_none() {
        schema.push(&format!("{LOC}->callInBulk"), "type_error.bool", "value could not be parsed to a boolean");
    }
    schema.opt_str(obj, "requestFileName", LOC, "");
    let auth_type = match obj.get("authType") {
        None | Some(Value::Null) => "none".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let sub = |key: &str| obj.get(key).filter(|v| truthy(v)).and_then(Value::as_object);
    let text = |m: &Map<String, Value>, key: &str| -> String {
        m.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
    };
    let auth = match auth_type.as_str() {
        "none" => CallbackAuth::None,
        "odoo" => {
            let Some(o) = sub("authOdoo") else {
                return Err(MtsError::bad("ATS-REQ-028", "authOdoo cannot be empty for authType odoo"));
            };
            let required = [
                ("authUrl", "ATS-REQ-031", "authUrl in authOdoo, cannot be empty for authType odoo"),
                ("username", "ATS-REQ-032", "username in authOdoo, cannot be empty for authType odoo"),
                ("database", "ATS-REQ-033", "database in authOdoo, cannot be empty for authType odoo"),
            ];
            for (key, code, msg) in required {
                if text(o, key).is_empty() {
                    return Err(MtsError::bad(code, msg));
                }
            }
            CallbackAuth::Odoo {
                auth_url: text(o, "authUrl"),
                database: text(o, "database"),
                username: text(o, "username"),
                password: text(o, "password"),
                extra_headers: o.get("extraHeaders").and_then(Value::as_object).cloned().unwrap_or_default(),
            }
        }
        "oauth" => {
            let Some(o) = sub("authOauth") else {
                return Err(MtsError::bad("ATS-REQ-029", "authOauth cannot be empty for authType oauth"));
            };
            let mut fields = Vec::new();
            let (user, pass, id, secret) =
                (text(o, "username"), text(o, "password"), text(o, "clientId"), text(o, "clientSecret"));
            if !user.is_empty() {
                fields.push(("username".to_string(), user.clone()));
                fields.push(("grant_type".to_string(), "password".to_string()));
            }
            if !pass.is_empty() {
                fields.push(("password".to_string(), pass));
            }
            if !id.is_empty() {
                fields.push(("client_id".to_string(), id));
                if user.is_empty() {
                    fields.push(("grant_type".to_string(), "client_credentials".to_string()));
                }
            }
            if !secret.is_empty() {
                fields.push(("client_secret".to_string(), secret));
            }
            CallbackAuth::Oauth {
                auth_url: text(o, "authUrl"),
                fields,
                extra_headers: o.get("extraHeaders").and_then(Value::as_object).cloned().unwrap_or_default(),
            }
        }
        "staticBearer" => {
            let Some(o) = sub("authStaticBearer") else {
                return Err(MtsError::bad("ATS-REQ-030", "authStaticBearer cannot be empty for authType staticBearer"));
            };
            let token = text(o, "token");
            if token.is_empty() {
                return Err(MtsError::bad(
                    "ATS-REQ-034",
                    "token in authStaticBearer cannot be empty for authType staticBearer",
                ));
            }
            CallbackAuth::StaticBearer(token)
        }
        _ => return Err(MtsError::bad("ATS-REQ-027", "unsupported authType in CallbackProperties")),
    };
    if schema.errors.len() != before {
        return Ok(None);
    }
    match (url, http_method, timeout, call_in_bulk) {
        (Some(url), Some(http_method), Some(timeout), Some(call_in_bulk)) => Ok(Some(CallbackProps {
            url,
            http_method,
            extra_headers,
            timeout: Duration::from_secs_f64(timeout.clamp(0.001, 86_400.0)),
            call_in_bulk,
            auth,
        })),
        _ => Ok(None),
    }
}

/// pydantic's AnyUrl, roughly: a scheme followed by `://` and a host.
fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
            && !rest.starts_with('/')
    })
}

fn parse_odk_config(cfg: &Map<String, Value>, loc: &str, schema: &mut Schema) -> Option<OdkConfig> {
    let mut req = |key: &str| schema.req_str(cfg, key, loc);
    let (odataurl, baseurl) = (req("odataurl"), req("baseurl"));
    let version = schema.opt_str(cfg, "version", loc, "v1");
    let mut req = |key: &str| schema.req_str(cfg, key, loc);
    let (projectid, formid, email, password) = (req("projectid"), req("formid"), req("email"), req("password"));
    let mut opt = |key: &str| match cfg.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => schema.coerce_str(v, &format!("{loc}->{key}")).map(Some),
    };
    let (startdate, enddate) = (opt("startdate"), opt("enddate"));
    Some(OdkConfig {
        odataurl: odataurl?,
        baseurl: baseurl?,
        version: version?,
        projectid: projectid?,
        formid: formid?,
        email: email?,
        password: password?,
        startdate: startdate?,
        enddate: enddate?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requesttime_shapes() {
        assert!(valid_requesttime("2026-11-26T10:15:30.123Z"));
        assert!(valid_requesttime("2026-1-2T3:4:5.1Z"));
        assert!(valid_requesttime("2026-11-26T10:15:30.123456Z"));
        assert!(!valid_requesttime("2026-11-26T10:15:30Z"));
        assert!(!valid_requesttime("2026-11-26T10:15:30.123+00:00"));
        assert!(!valid_requesttime("2026-11-26T10:15:30.1234567Z"));
        assert!(!valid_requesttime("2026-02-30T10:15:30.123Z"));
        assert!(!valid_requesttime("2026-11-26 10:15:30.123Z"));
    }

    #[test]
    fn mapping_defaults_and_overrides() {
        let mut schema = Schema::default();
        let m = parse_mapping(Some(&serde_json::json!({"vid": "qr.vid", "name": ["first", "last"]})), &mut schema);
        let m = m.unwrap_or_else(|| unreachable!("{:?}", schema.errors));
        assert_eq!((m.vid.as_str(), m.name.len(), m.gender.as_str()), ("qr.vid", 2, "gender"));
        assert!(parse_mapping(Some(&serde_json::json!({"name": "x"})), &mut schema).is_none());
        assert_eq!(schema.errors.len(), 1);
    }
}
