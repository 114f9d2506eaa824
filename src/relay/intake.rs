//! `POST /relay/{run_id}`: what MTS calls back in relay mode. A record is answered 2xx
//! only once it is durably stored; a wrong token (401), an unknown run (404), an
//! oversized (413) or malformed (400) body store nothing.

use chrono::Utc;
use serde_json::{Value, json};

use super::sha256_hex;
use crate::engine::Engine;
use crate::model::fields::Record;
use crate::model::{delivery, format_datetime, run};
use crate::secret::Secret;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("missing or wrong bearer token for this run")]
    Unauthorized,
    #[error("no run {0}")]
    UnknownRun(u64),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntakeError {
    pub fn status(&self) -> u16 {
        match self {
            IntakeError::Unauthorized => 401,
            IntakeError::UnknownRun(_) => 404,
            IntakeError::TooLarge(_) => 413,
            IntakeError::Malformed(_) => 400,
            IntakeError::Store(_) => 500,
        }
    }
}

/// What one call brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub stored: usize,
    pub duplicates: usize,
}

/// The secret key under which a run keeps the hashes of its relay tokens.
pub const TOKEN_HASHES: &str = "relay_token_sha256";

/// The idempotency key of a record: the connector plus the ODK `__id` when present,
/// else the VID, else a hash of the input.
pub fn idempotency_key(connector: u64, input: &Value, output: &Value) -> String {
    if let Some(id) = input.get("__id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        return format!("{connector}:odk:{id}");
    }
    let vid = output.get("vid").or_else(|| input.get("vid")).and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    match vid {
        Some(vid) => format!("{connector}:vid:{}", sha256_hex(&vid)),
        None => format!("{connector}:input:{}", sha256_hex(&input.to_string())),
    }
}

fn token_ok(run: &Record, bearer: Option<&str>) -> bool {
    let (Some(bearer), Some(hashes)) = (bearer, run.secret(TOKEN_HASHES)) else { return false };
    let want = sha256_hex(bearer);
    hashes
        .expose()
        .split(' ')
        .any(|h| h.len() == want.len() && h.bytes().zip(want.bytes()).fold(0, |a, (x, y)| a | (x ^ y)) == 0)
}

/// Parses a callback body: one `{input, output}` object, or an array of them
/// (`callInBulk`).
fn parse(body: &[u8]) -> Result<Vec<(Value, Value)>, IntakeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| IntakeError::Malformed(format!("not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => return Err(IntakeError::Malformed("expected an object or a list of objects".into())),
    };
    if items.is_empty() {
        return Err(IntakeError::Malformed("empty list".into()));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(mut m) => match (m.remove("input"), m.remove("output")) {
                (Some(input), Some(output @ Value::Object(_))) => Ok((input, output)),
                _ => Err(IntakeError::Malformed("each record needs \"input\" and an \"output\" object".into())),
            },
            _ => Err(IntakeError::Malformed("each record must be an object".into())),
        })
        .collect()
}

impl Engine {
    /// Whether `bearer` may call back for `run_id`: checked before the body is read.
    pub fn relay_authorize(&self, run_id: u64, bearer: Option<&str>) -> Result<(), IntakeError> {
        let Some(run) = self.store.get(run::MODEL, run_id) else { return Err(IntakeError::UnknownRun(run_id)) };
        if token_ok(&run, bearer) { Ok(()) } else { Err(IntakeError::Unauthorized) }
    }

    /// Stores the records of one relay call; durable when it returns `Ok`.
    pub async fn relay_receive(&self, run_id: u64, bearer: Option<&str>, body: &[u8]) -> Result<Received, IntakeError> {
        let Some(run) = self.store.get(run::MODEL, run_id) else { return Err(IntakeError::UnknownRun(run_id)) };
        if !token_ok(&run, bearer) {
            return Err(IntakeError::Unauthorized);
        }
        if body.len() > self.relay.config.max_body {
            return Err(IntakeError::TooLarge(self.relay.config.max_body));
        }
        let records = parse(body)?;
        let connector = run.int("connector_id").unwrap_or(0) as u64;
        let now = format_datetime(Utc::now());
        let received = {
            let _guard = self.store.write_lock();
            let mut fresh = Vec::new();
            let mut duplicates = 0;
            let mut seen = std::collections::HashSet::new();
            for (input, output) in records {
                let key = idempotency_key(connector, &input, &output);
                // Held already (on disk, or written and not yet committed: the index
                // read sees both, and the write lock keeps two calls from racing).
                if seen.contains(&key)
                    || self
                        .store
                        .index_ids(delivery::MODEL, "key", &[&Value::from(key.as_str())], false)?
                        .next()
                        .is_some()
                {
                    duplicates += 1;
                    continue;
                }
                let mut d = Record { id: self.store.next_id(delivery::MODEL)?, ..Default::default() };
                d.set("connector_id", connector);
                d.set("run_id", run_id);
                d.set("key", key.clone());
                d.set("state", "pending");
                d.set("attempts", 0);
                d.set("create_date", now.clone());
                d.set("write_date", now.clone());
                d.set("next_attempt_at", now.clone());
                d.secrets.insert("payload".into(), Secret::new(json!({"input": input, "output": output}).to_string()));
                seen.insert(key);
                fresh.push(d);
            }
            let received = Received { stored: fresh.len(), duplicates };
            let ids: Vec<u64> = fresh.iter().map(|d| d.id).collect();
            self.store.put_all(delivery::MODEL, fresh)?;
            // Re-read under the lock: deliveries update the run's counters concurrently.
            let mut r = self.store.get(run::MODEL, run_id).map_or_else(|| (*run).clone(), |r| (*r).clone());
            let total = r.int("records_received").unwrap_or(0) + (received.stored + received.duplicates) as i64;
            r.set("records_received", total);
            self.store.put(run::MODEL, r)?;
            let target = super::target_of(&self.store, connector);
            let mut pending = self.relay.pending();
            for id in ids {
                pending.insert(id, &target, Utc::now());
            }
            received
        };
        self.store.flush().await?;
        self.relay.wake.notify_one();
        Ok(received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_prefer_the_odk_id_then_the_vid_then_the_input() {
        let out = json!({"vid": "123"});
        assert_eq!(idempotency_key(1, &json!({"__id": "uuid:a", "vid": "123"}), &out), "1:odk:uuid:a");
        assert!(idempotency_key(1, &json!({"vid": "123"}), &out).starts_with("1:vid:"));
        assert!(!idempotency_key(1, &json!({"vid": "123"}), &out).contains("123"), "no VID in clear in the key");
        assert!(idempotency_key(2, &json!({"x": 1}), &json!({})).starts_with("2:input:"));
        assert_ne!(idempotency_key(1, &json!({"x": 1}), &json!({})), idempotency_key(2, &json!({"x": 1}), &json!({})));
    }

    #[test]
    fn bodies_must_hold_input_and_output() {
        assert_eq!(parse(br#"{"input": {}, "output": {"vid": "1"}}"#).unwrap().len(), 1);
        assert_eq!(parse(br#"[{"input": {}, "output": {}}, {"input": 1, "output": {}}]"#).unwrap().len(), 2);
        for bad in [&b"{"[..], b"[]", b"42", br#"{"input": {}}"#, br#"[{"output": {}}]"#] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
