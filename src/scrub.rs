//! The one scrubber of upstream text: every secret the service knows for a connector or
//! a run is cut out of a text (an MTS error, a callback target's answer, a login
//! failure) before it is stored on a run or a delivery, and so before it is logged.
//!
//! What a [`Scrubber`] removes:
//! - every secret field of the connector (`odk_password`, `callback_auth_password`,
//!   `callback_auth_client_secret`, `callback_auth_token`, `odoo_password`);
//! - every value of `callback_extra_headers`, and for `Basic` credentials also their
//!   base64 text, the decoded `user:password` and the password alone;
//! - the relay bearer tokens of the run (only their SHA-256 is stored: any run of 48 hex
//!   digits in the text whose hash is one of them);
//! - the service's API key ([`register_global`]);
//! - any value added with [`Scrubber::with`] (an `Authorization` or session cookie value
//!   obtained at delivery time).
//!
//! Each appears also as JSON would escape it and as a URL would encode it. Values shorter
//! than [`MIN_SECRET`] characters are not looked for: they would cut ordinary words.
//!
//! The places that apply it: `engine::runs` (every run change, before it is stored and
//! logged) and `relay::deliver` (every delivery outcome, before it is stored).

use std::borrow::Cow;
use std::sync::{Mutex, RwLock};

use base64::Engine as _;

use crate::model::fields::Record;
use crate::secret::MASK;

/// Shortest secret looked for, in characters.
pub const MIN_SECRET: usize = 4;
/// How excerpts mark a text cut short.
const ELLIPSIS: &str = "…";
/// Length of a relay token (24 random bytes in hex).
const TOKEN_HEX: usize = 48;

/// Secrets every scrubber removes (the API key).
static GLOBAL: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Every connector secret stored since the process started (and those in the store at
/// start), oldest first, so that a text about a connector deleted meanwhile is scrubbed
/// too.
static KNOWN: Mutex<Known> = Mutex::new(Known { order: Vec::new(), set: None });
/// Most secrets remembered in [`KNOWN`]; the oldest half goes when it is full.
const MAX_KNOWN: usize = 20_000;

struct Known {
    order: Vec<String>,
    set: Option<std::collections::HashSet<String>>,
}

/// Remembers every secret of connector `c` (called whenever one is stored or loaded).
pub fn remember_connector(c: &Record) {
    let fresh = Scrubber::for_connector(c).secrets;
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let Known { order, set } = &mut *known;
    let set = set.get_or_insert_with(Default::default);
    for secret in fresh {
        if set.insert(secret.clone()) {
            order.push(secret);
        }
    }
    if order.len() > MAX_KNOWN {
        for old in order.drain(..MAX_KNOWN / 2) {
            set.remove(&old);
        }
    }
}

/// Adds a secret every [`Scrubber`] removes from now on (the API key at start).
pub fn register_global(secret: &str) {
    let mut all = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
    }
}

/// A set of secrets to cut out of texts (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    secrets: Vec<String>,
    token_hashes: Vec<String>,
}

impl Scrubber {
    /// The global secrets only.
    pub fn new() -> Scrubber {
        let mut s = Scrubber::default();
        for secret in GLOBAL.read().unwrap_or_else(|p| p.into_inner()).iter() {
            s.add(secret);
        }
        s
    }

    /// Every secret of connector `c` (its secret fields and its extra header values).
    pub fn for_connector(c: &Record) -> Scrubber {
        let mut s = Scrubber::new();
        for secret in c.secrets.values() {
            s.add_header_value(secret.expose());
        }
        if let Some(headers) = crate::model::connector::extra_headers(c)
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(headers)
        {
            for v in map.values().filter_map(serde_json::Value::as_str) {
                s.add_header_value(v);
            }
        }
        s
    }

    /// Every connector secret remembered ([`remember_connector`]): for a text whose
    /// connector is gone.
    pub fn known() -> Scrubber {
        let mut s = Scrubber::new();
        s.secrets.extend(KNOWN.lock().unwrap_or_else(|p| p.into_inner()).order.iter().cloned());
        s.secrets.sort_by_key(|x| std::cmp::Reverse(x.len()));
        s
    }

    /// [`Scrubber::for_connector`] (or [`Scrubber::known`] when the connector is gone)
    /// plus the relay tokens of `run` (kept as hashes).
    pub fn for_run(c: Option<&Record>, run: &Record) -> Scrubber {
        let mut s = c.map_or_else(Scrubber::known, Scrubber::for_connector);
        if let Some(hashes) = run.secret(crate::relay::intake::TOKEN_HASHES) {
            s.token_hashes.extend(hashes.expose().split(' ').filter(|h| !h.is_empty()).map(str::to_string));
        }
        s
    }

    /// Also removes `value` (and, for `Basic`/`Bearer` and cookie values, their parts).
    pub fn with(mut self, value: &str) -> Scrubber {
        self.add_header_value(value);
        self
    }

    fn add(&mut self, secret: &str) {
        if secret.chars().count() < MIN_SECRET || self.secrets.iter().any(|s| s == secret) {
            return;
        }
        self.secrets.push(secret.to_string());
        // As JSON escapes it (an echoed request body) and as a URL encodes it.
        let json = serde_json::Value::String(secret.to_string()).to_string();
        let json = &json[1..json.len() - 1];
        if json != secret {
            self.secrets.push(json.to_string());
        }
        let url = percent_encode(secret);
        if url != secret {
            self.secrets.push(url);
        }
        // Longest first, so a secret containing another is cut whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// A header-like value: itself, and its credential parts.
    fn add_header_value(&mut self, value: &str) {
        self.add(value);
        let value = value.trim();
        for scheme in ["Basic ", "basic ", "Bearer ", "bearer "] {
            if let Some(rest) = value.strip_prefix(scheme) {
                let rest = rest.trim();
                self.add(rest);
                if scheme.eq_ignore_ascii_case("basic ")
                    && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest)
                    && let Ok(text) = String::from_utf8(decoded)
                {
                    self.add(&text);
                    if let Some((_, password)) = text.split_once(':') {
                        self.add(password);
                    }
                }
            }
        }
        // `name=value; other=value` (a session cookie).
        for part in value.split(';') {
            if let Some((_, v)) = part.split_once('=') {
                self.add(v.trim());
            }
        }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        if !self.token_hashes.is_empty() {
            out = self.scrub_tokens(out);
        }
        if out.contains(ELLIPSIS) {
            out = Cow::Owned(self.scrub_cut(&out));
        }
        out
    }

    /// A text cut short (an excerpt ends in `…`) may end in the first part of a secret:
    /// the longest such part (of at least [`MIN_SECRET`] characters) before each `…` is
    /// masked too.
    fn scrub_cut(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(ELLIPSIS) {
            let before = &rest[..at];
            let cut = self
                .secrets
                .iter()
                .filter_map(|secret| {
                    // The longest prefix of `secret` that `before` ends with.
                    let ends: Vec<usize> = secret.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
                    ends.into_iter().skip(MIN_SECRET - 1).rev().find(|&n| before.ends_with(&secret[..n]))
                })
                .max()
                .unwrap_or(0);
            out.push_str(&before[..before.len() - cut]);
            if cut > 0 {
                out.push_str(MASK);
            }
            out.push_str(ELLIPSIS);
            rest = &rest[at + ELLIPSIS.len()..];
        }
        out.push_str(rest);
        out
    }

    /// Masks every run of [`TOKEN_HEX`] hex digits that hashes to a relay token.
    fn scrub_tokens<'a>(&self, text: Cow<'a, str>) -> Cow<'a, str> {
        let bytes = text.as_bytes();
        let mut hits = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_hexdigit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            // Any window of a longer run may be the token (it may be glued to other digits).
            let run = &text[start..i];
            if run.len() >= TOKEN_HEX {
                for offset in 0..=run.len() - TOKEN_HEX {
                    let candidate = &run[offset..offset + TOKEN_HEX];
                    if self.token_hashes.iter().any(|h| *h == crate::relay::sha256_hex(candidate)) {
                        hits.push(start + offset..start + offset + TOKEN_HEX);
                    }
                }
            }
        }
        if hits.is_empty() {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for hit in hits {
            if hit.start < at {
                continue;
            }
            out.push_str(&text[at..hit.start]);
            out.push_str(MASK);
            at = hit.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// Scrubs a stored text value of `rec` in place.
    pub fn scrub_field(&self, rec: &mut Record, field: &str) {
        if let Some(text) = rec.str(field)
            && let Cow::Owned(clean) = self.scrub(text)
        {
            rec.set(field, clean);
        }
    }
}

/// The upstream texts a run keeps.
const RUN_TEXTS: &[&str] = &["error_message", "error_code", "mts_status"];
/// Longest run text kept, in characters (an upstream may answer a whole page).
pub const MAX_RUN_TEXT: usize = 4000;

/// Scrubs the texts of `run` of every secret of its connector and its relay tokens, and
/// cuts them to [`MAX_RUN_TEXT`] characters; called on every change of a run before it
/// is stored.
pub fn run_record(store: &crate::store::Store, run: &mut Record) {
    if !RUN_TEXTS.iter().any(|f| run.str(f).is_some()) {
        return;
    }
    let connector = run.int("connector_id").and_then(|c| store.get(crate::model::connector::MODEL, c as u64));
    let scrubber = Scrubber::for_run(connector.as_deref(), run);
    for field in RUN_TEXTS {
        scrubber.scrub_field(run, field);
        // Cut after scrubbing, so no secret is cut in two.
        if let Some(text) = run.str(field)
            && let Some((cut, _)) = text.char_indices().nth(MAX_RUN_TEXT)
        {
            let short = format!("{}…", &text[..cut]);
            run.set(field, short);
        }
    }
}

/// `%XX` for every byte outside the URL-safe set.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn every_kind_of_secret_is_cut() {
        let mut c = Record::default();
        c.secrets.insert("odk_password".into(), Secret::new("odk \"pw\"/1"));
        c.secrets.insert("callback_auth_password".into(), Secret::new("cb-secret-2"));
        let basic = base64::engine::general_purpose::STANDARD.encode("user:basic-pw-3");
        c.secrets.insert(
            "callback_extra_headers".into(),
            Secret::new(format!(r#"{{"Authorization": "Basic {basic}", "X-Key": "key-4444"}}"#)),
        );
        let s = Scrubber::for_connector(&c).with("session_id=cookie-5555").with("Bearer tok-6666");
        let text = format!(
            r#"echo {{"password": "odk \"pw\"/1", "p": "odk%20%22pw%22%2F1", "cb": "cb-secret-2"}} Basic {basic} user:basic-pw-3 key-4444 cookie-5555 tok-6666"#
        );
        let clean = s.scrub(&text);
        for leak in [
            "odk \\\"pw\\\"/1",
            "odk%20%22pw",
            "cb-secret-2",
            &basic,
            "basic-pw-3",
            "key-4444",
            "cookie-5555",
            "tok-6666",
        ] {
            assert!(!clean.contains(leak), "{leak} in {clean}");
        }
        assert!(clean.starts_with("echo {\"password\": \"********\""), "{clean}");
        // An excerpt cut inside a secret does not keep its first part.
        assert_eq!(s.scrub("cookie: session_id=cook…"), "cookie: ********…");
        assert_eq!(s.scrub("token: tok-66…"), "token: ********…");
        assert_eq!(s.scrub("plain text…"), "plain text…");
        // Short values are not looked for: they would cut words.
        let mut short = Record::default();
        short.secrets.insert("odk_password".into(), Secret::new("pw"));
        assert_eq!(Scrubber::for_connector(&short).scrub("a pwd"), "a pwd");
    }

    #[test]
    fn relay_tokens_are_found_by_their_hash() {
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut run = Record::default();
        run.secrets.insert(
            crate::relay::intake::TOKEN_HASHES.into(),
            Secret::new(format!("x {}", crate::relay::sha256_hex(token))),
        );
        let s = Scrubber::for_run(None, &run);
        assert_eq!(s.scrub(&format!("Bearer {token}, again:{token}9")), "Bearer ********, again:********9");
        let other = "f".repeat(48);
        assert_eq!(s.scrub(&other), other);
    }
}
