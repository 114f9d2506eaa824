//! The fake MTS's per-record check at submit time: MTS's `validate_auth_data`, Python quirks included.

use serde_json::{Map, Value};

use super::mts_request::{Mapping, MtsError};

/// Python truthiness of a JSON value.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's type name of a JSON value, for error texts.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `len(v)`: a TypeError (HTTP 500) for values without a length.
fn py_len(v: &Value) -> Result<usize, MtsError> {
    match v {
        Value::String(s) => Ok(s.chars().count()),
        Value::Array(a) => Ok(a.len()),
        Value::Object(o) => Ok(o.len()),
        other => Err(MtsError::internal(format!("object of type '{}' has no len()", py_type(other)))),
    }
}

/// The outcome of validating one input record.
#[derive(Debug, PartialEq)]
pub(crate) enum RecordCheck {
    /// Accepted; the mapped vid (None when a nested mapping found nothing).
    Valid { vid: Option<String> },
    /// Kept with status `invalid` and this error code.
    Invalid(&'static str),
}

/// MTS's `validate_auth_data`: plain keys must be present (and mandatory ones non-empty),
/// dotted paths are walked without checks. Python exceptions become HTTP 500s, as in MTS.
pub(crate) fn validate_record(rec: &Value, m: &Mapping) -> Result<RecordCheck, MtsError> {
    let Some(obj) = rec.as_object() else {
        return Err(MtsError::internal(format!("argument of type '{}' is not iterable", py_type(rec))));
    };
    let vid = if m.vid.contains('.') {
        nested(obj, &m.vid)?
    } else {
        match obj.get(&m.vid) {
            None => return Ok(RecordCheck::Invalid("ATS-REQ-009")),
            Some(v) => v.clone(),
        }
    };
    let names = join_parts(obj, &m.name, ("ATS-REQ-010", "ATS-REQ-003"))?;
    if let Err(code) = names {
        return Ok(RecordCheck::Invalid(code));
    }
    for (path, codes) in [(&m.gender, ("ATS-REQ-011", "ATS-REQ-004")), (&m.dob, ("ATS-REQ-012", "ATS-REQ-006"))] {
        if let Err(code) = plain_required(obj, path, codes)? {
            return Ok(RecordCheck::Invalid(code));
        }
    }
    if let Err(code) = join_parts(obj, &m.full_address, ("ATS-REQ-015", "ATS-REQ-008"))? {
        return Ok(RecordCheck::Invalid(code));
    }
    // AuthTokenBaseModel.vid is Optional[str]: numbers are coerced, containers rejected.
    let vid = match vid {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if b { "True" } else { "False" }.to_string()),
        _ => {
            return Err(MtsError::internal(
                "1 validation error for AuthTokenBaseModel\nvid\n  str type expected (type=type_error.str)",
            ));
        }
    };
    Ok(RecordCheck::Valid { vid })
}

/// A mandatory single field (`gender`, `dob`): Ok(Err(code)) when missing/empty.
fn plain_required(
    obj: &Map<String, Value>,
    path: &str,
    (missing, empty): (&'static str, &'static str),
) -> Result<Result<(), &'static str>, MtsError> {
    if path.contains('.') {
        nested(obj, path)?;
        return Ok(Ok(()));
    }
    match obj.get(path) {
        None => Ok(Err(missing)),
        Some(v) if py_len(v)? == 0 => Ok(Err(empty)),
        Some(_) => Ok(Ok(())),
    }
}

/// `name` / `fullAddress`: every plain part present and non-empty; the parts must be strings
/// for Python's `join` (the joined value itself is not needed by the fake).
fn join_parts(
    obj: &Map<String, Value>,
    paths: &[String],
    (missing, empty): (&'static str, &'static str),
) -> Result<Result<(), &'static str>, MtsError> {
    let mut parts = Vec::new();
    for path in paths {
        if path.contains('.') {
            let v = nested(obj, path)?;
            if truthy(&v) {
                parts.push(v);
            }
        } else {
            match obj.get(path) {
                None => return Ok(Err(missing)),
                Some(v) if py_len(v)? == 0 => return Ok(Err(empty)),
                Some(v) => parts.push(v.clone()),
            }
        }
    }
    if let Some((i, v)) = parts.iter().enumerate().find(|(_, v)| !v.is_string()) {
        return Err(MtsError::internal(format!("sequence item {i}: expected str instance, {} found", py_type(v))));
    }
    Ok(Ok(()))
}

/// MTS's `extract_nested_value`: the first key must exist (a KeyError, HTTP 500, otherwise);
/// deeper keys that are absent give null.
fn nested(obj: &Map<String, Value>, path: &str) -> Result<Value, MtsError> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let Some(mut cur) = obj.get(first).cloned() else {
        return Err(MtsError::internal(format!("'{first}'")));
    };
    for part in parts {
        cur = match &cur {
            Value::Object(m) if !m.is_empty() => m.get(part).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            vid: "vid".into(),
            name: vec!["name".into()],
            gender: "gender".into(),
            dob: "dob".into(),
            full_address: vec!["fullAddress".into()],
        }
    }

    #[test]
    fn record_codes() {
        let m = mapping();
        let full = json!({"vid": "1", "name": "A", "gender": "m", "dob": "2000-01-01", "fullAddress": "x"});
        assert_eq!(validate_record(&full, &m).ok(), Some(RecordCheck::Valid { vid: Some("1".into()) }));
        let cases = [
            ("vid", None, "ATS-REQ-009"),
            ("name", None, "ATS-REQ-010"),
            ("name", Some(""), "ATS-REQ-003"),
            ("gender", None, "ATS-REQ-011"),
            ("gender", Some(""), "ATS-REQ-004"),
            ("dob", None, "ATS-REQ-012"),
            ("dob", Some(""), "ATS-REQ-006"),
            ("fullAddress", None, "ATS-REQ-015"),
            ("fullAddress", Some(""), "ATS-REQ-008"),
        ];
        for (key, value, code) in cases {
            let mut rec = full.clone();
            match value {
                None => {
                    rec.as_object_mut().map(|o| o.remove(key));
                }
                Some(v) => rec[key] = json!(v),
            }
            assert_eq!(validate_record(&rec, &m).ok(), Some(RecordCheck::Invalid(code)), "{key}");
        }
        let mut null_name = full.clone();
        null_name["name"] = Value::Null;
        assert_eq!(validate_record(&null_name, &m).err().map(|e| e.status), Some(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn nested_paths() {
        let mut m = mapping();
        m.vid = "qr.vid".into();
        let rec = json!({"qr": {"vid": 42}, "name": "A", "gender": "m", "dob": "d", "fullAddress": "x"});
        assert_eq!(validate_record(&rec, &m).ok(), Some(RecordCheck::Valid { vid: Some("42".into()) }));
        let rec = json!({"name": "A", "gender": "m", "dob": "d", "fullAddress": "x"});
        assert!(validate_record(&rec, &m).is_err());
    }
}
