//! The on-disk encoding of records and index keys.
//!
//! A record is a compact binary form of [`Record`]: field names become small numbers
//! from a dictionary the store keeps (so a run costs ~150 bytes on disk, not the ~1 KB
//! of its JSON), integers are varints and Odoo datetimes (`YYYY-MM-DD HH:MM:SS`) are
//! seconds. Decoding gives back the very same `Record` (same values, same key order).
//!
//! Index keys are byte strings that sort like the values they encode (numbers
//! numerically, strings bytewise, empty first), followed by the record id, so that a
//! range scan over a key prefix lists the matching records in order.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use crate::model::fields::{Key, Record};
use crate::model::{format_datetime, parse_datetime};
use crate::secret::Secret;

const RECORD_VERSION: u8 = 2;

/// Field names and their codes, shared by every model. Codes are assigned once, stored
/// with the records that use them, and never change.
#[derive(Debug, Default, Clone)]
pub struct Dict {
    codes: HashMap<String, u32>,
    /// Each code's name, as the key every record decoded with it shares.
    names: Vec<Option<Key>>,
}

impl Dict {
    pub fn insert(&mut self, code: u32, name: &str) {
        let i = code as usize;
        if self.names.len() <= i {
            self.names.resize(i + 1, None);
        }
        self.names[i] = (!name.is_empty()).then(|| Key::new(name));
        self.codes.insert(name.to_string(), code);
    }

    /// The code of `name`, assigning a new one (reported in `fresh`) when needed.
    fn code(&mut self, name: &str, fresh: &mut Vec<(u32, String)>) -> u32 {
        if let Some(c) = self.codes.get(name) {
            return *c;
        }
        let code = self.names.len() as u32;
        self.insert(code, name);
        fresh.push((code, name.to_string()));
        code
    }

    fn name(&self, code: u32) -> Option<&Key> {
        self.names.get(code as usize).and_then(Option::as_ref)
    }
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The seconds of an Odoo datetime string when it is in the exact canonical form
/// (so decoding gives back the same string).
fn canonical_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[10] != b' ' || b[13] != b':' {
        return None;
    }
    let t = parse_datetime(s).ok()?;
    (format_datetime(t) == s).then(|| t.timestamp())
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(3);
                varint(out, zigzag(i));
            } else if let Some(u) = n.as_u64() {
                out.push(4);
                varint(out, u);
            } else {
                out.push(5);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => match canonical_datetime(s) {
            Some(secs) => {
                out.push(7);
                varint(out, zigzag(secs));
            }
            None => {
                out.push(6);
                bytes(out, s.as_bytes());
            }
        },
        Value::Array(items) => {
            out.push(8);
            varint(out, items.len() as u64);
            for item in items {
                value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(9);
            varint(out, map.len() as u64);
            for (k, item) in map {
                bytes(out, k.as_bytes());
                value(out, item);
            }
        }
    }
}

/// Encodes `rec` (its id is the table key, not repeated here).
pub fn encode(rec: &Record, dict: &mut Dict, fresh: &mut Vec<(u32, String)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rec.values.len() * 8);
    out.push(RECORD_VERSION);
    varint(&mut out, rec.values.len() as u64);
    for (name, v) in &rec.values {
        varint(&mut out, u64::from(dict.code(name, fresh)));
        value(&mut out, v);
    }
    varint(&mut out, rec.secrets.len() as u64);
    for (name, s) in &rec.secrets {
        varint(&mut out, u64::from(dict.code(name, fresh)));
        bytes(&mut out, s.expose().as_bytes());
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| e.to_string())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::from(unzigzag(self.varint()?)),
            4 => Value::from(self.varint()?),
            5 => {
                let end = self.at + 8;
                let raw: [u8; 8] = self.b.get(self.at..end).and_then(|s| s.try_into().ok()).ok_or("truncated")?;
                self.at = end;
                Number::from_f64(f64::from_be_bytes(raw)).map_or(Value::Null, Value::Number)
            }
            6 => Value::String(self.string()?),
            7 => {
                let secs = unzigzag(self.varint()?);
                let t = chrono::DateTime::from_timestamp(secs, 0).ok_or("datetime out of range")?;
                Value::String(format_datetime(t))
            }
            8 => {
                let n = self.varint()? as usize;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            9 => {
                let n = self.varint()? as usize;
                let mut map = Map::new();
                for _ in 0..n {
                    let k = self.string()?;
                    map.insert(k, self.value(depth + 1)?);
                }
                Value::Object(map)
            }
            t => return Err(format!("unknown value tag {t}")),
        })
    }
}

/// Decodes a record stored under `id`.
pub fn decode(id: u64, b: &[u8], dict: &Dict) -> Result<Record, String> {
    let mut r = Reader { b, at: 0 };
    let version = r.byte()?;
    if version != RECORD_VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let mut rec = Record { id, ..Default::default() };
    let n = r.varint()?;
    for _ in 0..n {
        let code = r.varint()? as u32;
        let name = dict.name(code).ok_or_else(|| format!("unknown field code {code}"))?.clone();
        let v = r.value(0)?;
        rec.values.insert(name, v);
    }
    let n = r.varint()?;
    for _ in 0..n {
        let code = r.varint()? as u32;
        let name = dict.name(code).ok_or_else(|| format!("unknown field code {code}"))?.to_string();
        rec.secrets.insert(name, Secret::new(r.string()?));
    }
    if r.at != b.len() {
        return Err("trailing bytes".into());
    }
    Ok(rec)
}

/// Appends the sortable form of one indexed value.
pub fn key_part(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => out.push(0),
        Some(Value::Bool(true)) => out.push(1),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                out.push(2);
                out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(3);
                out.extend_from_slice(&u.to_be_bytes());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                let bits = f.to_bits();
                let ordered = if f.is_sign_negative() { !bits } else { bits ^ (1 << 63) };
                out.push(4);
                out.extend_from_slice(&ordered.to_be_bytes());
            }
        }
        Some(Value::String(s)) => escaped(out, 5, s.as_bytes()),
        Some(other) => escaped(out, 6, other.to_string().as_bytes()),
    }
}

/// A string with its zero bytes escaped and a terminator that sorts before any byte,
/// so that "a" < "ab" and no string is a prefix of another's encoding.
fn escaped(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The full index key of `rec` for `fields`: the values, then the id.
pub fn index_key(rec: &Record, fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * fields.len() + 8);
    for f in fields {
        key_part(&mut out, rec.values.get(*f));
    }
    out.extend_from_slice(&rec.id.to_be_bytes());
    out
}

/// The id at the end of an index key.
pub fn key_id(key: &[u8]) -> u64 {
    key.len().checked_sub(8).and_then(|i| key[i..].try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// The key prefix selecting `values` of the leading fields.
pub fn prefix(values: &[&Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        key_part(&mut out, Some(v));
    }
    out
}

/// The first value of an index key and the length of its encoding.
pub fn first_part(key: &[u8]) -> Option<(Value, usize)> {
    let tag = *key.first()?;
    let fixed = |n: usize| key.get(1..1 + n).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
    Some(match tag {
        0 => (Value::Bool(false), 1),
        1 => (Value::Bool(true), 1),
        2 => (Value::from((fixed(8)? ^ (1 << 63)) as i64), 9),
        3 => (Value::from(fixed(8)?), 9),
        4 => {
            let ordered = fixed(8)?;
            let bits = if ordered & (1 << 63) != 0 { ordered ^ (1 << 63) } else { !ordered };
            (Number::from_f64(f64::from_bits(bits)).map_or(Value::Null, Value::Number), 9)
        }
        5 | 6 => {
            let mut out = Vec::new();
            let mut i = 1;
            loop {
                let c = *key.get(i)?;
                if c == 0 {
                    match *key.get(i + 1)? {
                        0 => break,
                        _ => {
                            out.push(0);
                            i += 2;
                            continue;
                        }
                    }
                }
                out.push(c);
                i += 1;
            }
            let text = String::from_utf8(out).ok()?;
            let v = if tag == 5 { Value::String(text) } else { serde_json::from_str(&text).ok()? };
            (v, i + 2)
        }
        _ => return None,
    })
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_round_trip_exactly() {
        let mut rec = Record { id: 7, ..Default::default() };
        rec.set("name", "#7");
        rec.set("window_start", "2026-01-01 00:00:00");
        rec.set("odd_date", "2026-01-01T00:00:00");
        rec.set("n", -5);
        rec.set("big", u64::MAX);
        rec.set("f", 1.5);
        rec.set("flag", true);
        rec.set("off", false);
        rec.set("list", json!([1, "a", {"k": [null]}]));
        rec.secrets.insert("payload".into(), Secret::new("{\"input\":1}"));
        let mut dict = Dict::default();
        let mut fresh = Vec::new();
        let bytes = encode(&rec, &mut dict, &mut fresh);
        assert_eq!(fresh.len(), 10);
        let back = decode(7, &bytes, &dict).unwrap();
        assert_eq!(back, rec);
        assert_eq!(serde_json::to_string(&back.values).unwrap(), serde_json::to_string(&rec.values).unwrap());
        assert!(bytes.len() < serde_json::to_vec(&rec).unwrap().len() / 2, "{} bytes", bytes.len());
        assert!(decode(7, &bytes[..bytes.len() - 1], &dict).is_err());
    }

    #[test]
    fn keys_sort_like_values() {
        let key = |v: Value| {
            let mut out = Vec::new();
            key_part(&mut out, Some(&v));
            out
        };
        assert!(key(json!(false)) < key(json!(-3)));
        assert!(key(json!(-3)) < key(json!(2)));
        assert!(key(json!(2)) < key(json!(10)));
        assert!(key(json!("a")) < key(json!("ab")));
        assert!(key(json!("ab")) < key(json!("b")));
        assert!(key(json!("a\u{0}")) > key(json!("a")));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        for v in [json!(false), json!(-3), json!(7), json!(u64::MAX), json!(1.5), json!("a\u{0}b")] {
            let mut k = key(v.clone());
            let len = k.len();
            k.extend_from_slice(&9u64.to_be_bytes());
            assert_eq!(first_part(&k), Some((v, len)));
        }
    }
}
