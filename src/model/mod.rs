//! Models the service holds: field definitions, validation, domains and state
//! machines. Pure: no I/O, and the clock comes in as an argument.

pub mod connector;
pub mod delivery;
pub mod domain;
pub mod fields;
pub mod run;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::secret::{MASK, Secret};
use fields::{FieldType, ModelDef, Record};

/// A refusal by a model, mapped onto Odoo's exception classes by the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A field value is wrong (`odoo.exceptions.ValidationError`).
    #[error("{0}")]
    Validation(String),
    /// The action is not allowed now (`odoo.exceptions.UserError`).
    #[error("{0}")]
    User(String),
    /// A record does not exist (`odoo.exceptions.MissingError`).
    #[error("{0}")]
    Missing(String),
    /// The call's arguments are malformed (`ValueError`).
    #[error("{0}")]
    Value(String),
}

/// The datetime format Odoo uses on the wire (UTC).
pub const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `YYYY-MM-DD HH:MM:SS` (every run carries several of these and the store re-reads
/// them on each write: written digit by digit, not through chrono's format parser).
pub fn format_datetime(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format(DATETIME_FORMAT).to_string();
    }
    let mut b = *b"0000-00-00 00:00:00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    b.iter().map(|&c| c as char).collect()
}

/// The exact form `YYYY-MM-DD HH:MM:SS`, read without chrono's format parser.
fn parse_canonical(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b' ' && b[10] != b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    Some(date.and_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)?.and_utc())
}

/// Parses an Odoo datetime (`YYYY-MM-DD HH:MM:SS`, optionally with fractional seconds
/// or a `T` separator), taken as UTC.
pub fn parse_datetime(s: &str) -> Result<DateTime<Utc>, String> {
    if let Some(t) = parse_canonical(s) {
        return Ok(t);
    }
    let t = s.trim().replacen('T', " ", 1);
    let t = t.strip_suffix('Z').unwrap_or(&t);
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|_| format!("{s:?} is not a datetime in the form YYYY-MM-DD HH:MM:SS"))
}

/// Sets every default the record does not have yet.
pub fn apply_defaults(model: &ModelDef, rec: &mut Record) {
    for f in model.fields {
        if f.secret {
            continue;
        }
        if let Some(v) = f.default.value()
            && !rec.values.contains_key(f.name)
        {
            rec.values.insert(fields::Key::new(f.name), v);
        }
    }
}

/// Applies a client's `vals` to `rec`, checking each field's name, writability and type.
/// `rec` is a working copy: on error the caller drops it, so nothing changes.
pub fn apply_vals(model: &ModelDef, rec: &mut Record, vals: &Map<String, Value>) -> Result<(), ModelError> {
    for (name, value) in vals {
        let Some(f) = model.field(name) else {
            return Err(ModelError::Validation(format!("Invalid field {name:?} on model {:?}", model.name)));
        };
        if f.readonly {
            return Err(ModelError::Validation(format!("{} ({name}) is read-only: the service sets it", f.label)));
        }
        let wrong =
            |want: &str| ModelError::Validation(format!("{} ({name}): expected {want}, got {}", f.label, kind(value)));
        let empty = matches!(value, Value::Bool(false) | Value::Null);
        if f.secret {
            match value {
                _ if empty => {
                    rec.secrets.remove(name);
                }
                Value::String(s) if s == MASK => {} // the mask written back: keep the stored value
                Value::String(s) if s.is_empty() => {
                    rec.secrets.remove(name);
                }
                Value::String(s) => {
                    rec.secrets.insert(name.clone(), Secret::new(s.clone()));
                }
                _ => return Err(wrong("a string")),
            }
            continue;
        }
        let stored = match (f.ftype, value) {
            (FieldType::Integer, Value::Bool(false)) => Value::from(0),
            (_, _) if empty => Value::Null,
            (FieldType::Char | FieldType::Text, Value::String(s)) => Value::String(s.clone()),
            (FieldType::Char | FieldType::Text, _) => return Err(wrong("a string")),
            (FieldType::Integer, Value::Number(n)) => match n.as_i64() {
                Some(i) if i.unsigned_abs() <= i32::MAX as u64 => Value::from(i),
                _ => return Err(wrong("an integer within ±2147483647")),
            },
            (FieldType::Integer, _) => return Err(wrong("an integer")),
            (FieldType::Boolean, Value::Bool(b)) => Value::Bool(*b),
            (FieldType::Boolean, _) => return Err(wrong("true or false")),
            (FieldType::Datetime, Value::String(s)) => {
                let t = parse_datetime(s).map_err(|e| ModelError::Validation(format!("{} ({name}): {e}", f.label)))?;
                Value::String(format_datetime(t))
            }
            (FieldType::Datetime, _) => return Err(wrong("a datetime string \"YYYY-MM-DD HH:MM:SS\"")),
            (FieldType::Selection(options), Value::String(s)) if options.iter().any(|(v, _)| v == s) => {
                Value::String(s.clone())
            }
            (FieldType::Selection(options), _) => {
                let allowed: Vec<&str> = options.iter().map(|(v, _)| *v).collect();
                return Err(ModelError::Validation(format!(
                    "{} ({name}): {} is not one of {}",
                    f.label,
                    value,
                    allowed.join(", ")
                )));
            }
            (FieldType::Many2one(_), Value::Number(n)) if n.as_u64().is_some() => value.clone(),
            (FieldType::Many2one(_), _) => return Err(wrong("a record id")),
        };
        rec.set(name, stored);
    }
    Ok(())
}

/// Checks the model-level required fields.
pub fn check_required(model: &ModelDef, rec: &Record) -> Result<(), ModelError> {
    let missing: Vec<&str> = model
        .fields
        .iter()
        .filter(|f| f.required && !f.readonly)
        .filter(|f| if f.secret { rec.secret(f.name).is_none() } else { rec.values.get(f.name).is_none_or(is_empty) })
        .map(|f| f.name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Validation(format!("Missing required fields: {}", missing.join(", "))))
    }
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false)) || v.as_str().is_some_and(str::is_empty)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip_in_the_odoo_form() {
        for s in ["2026-01-02 03:04:05", "1999-12-31 23:59:59", "0001-01-01 00:00:00"] {
            assert_eq!(format_datetime(parse_datetime(s).unwrap()), s);
        }
        let t = parse_datetime("2026-01-02T03:04:05.250Z").unwrap();
        assert_eq!(format_datetime(t), "2026-01-02 03:04:05");
        assert_eq!(parse_datetime("2026-01-02T03:04:05").unwrap(), parse_datetime("2026-01-02 03:04:05").unwrap());
        for bad in ["2026-02-30 00:00:00", "2026-01-02 24:00:00", "2026-01-0x 00:00:00", "yesterday"] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
        let far = DateTime::from_timestamp(300_000_000_000, 0).unwrap();
        assert_eq!(format_datetime(far), far.format(DATETIME_FORMAT).to_string());
    }
}
