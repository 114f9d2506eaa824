//! Robustness of the JSON-RPC endpoint: a seeded generator feeds the real binary random
//! bodies (garbage bytes, truncated JSON, wrong types, huge numbers, deep nesting,
//! unknown fields, wrong credentials, random models and methods, batches) and checks
//! that the service never panics, answers each with a well-formed JSON-RPC error (or,
//! for a read with valid credentials, a well-formed result), and that the store is
//! unchanged at the end.
//!
//! Classes aimed at the hardening limits ride along: hostile domains (thousands of
//! `!`, `|` or leaves, deep alternations, long like patterns, long `in` lists) on every
//! model, hostile jq programs and domains as connector values (on a write that is refused
//! whole), ids jsonrpsee cannot echo (objects, arrays, booleans, fractions), oversized
//! bodies, and odd or oversized headers.
//!
//! Reproduce a run with `MTSC_FUZZ_SEED=<seed>`; `MTSC_FUZZ_CASES` changes how many
//! bodies are sent (default 1500).

mod common;

use std::collections::BTreeSet;

use common::{API_KEY, DB, Service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const MODELS: &[&str] = &["mts.connector", "mts.connector.run", "mts.connector.delivery", "ir.model"];
/// Methods that only read: with valid credentials they may succeed.
const READERS: &[&str] =
    &["search", "search_read", "search_count", "read", "fields_get", "default_get", "name_get", "name_search"];

/// What a case must get back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A JSON-RPC error (or an HTTP 4xx for a body the server cannot take at all).
    Error,
    /// A well-formed result or error: a read with valid credentials and random arguments.
    Any,
    /// No answer (`null`): JSON-RPC notifications, which jsonrpsee also assumes for an
    /// `id` that is not a string, a number or null; it does not run them.
    Nothing,
}

struct Case {
    body: Vec<u8>,
    content_type: &'static str,
    path: String,
    expect: Expect,
    /// The `id` the answer must echo, when the request has a valid one.
    id: Option<Value>,
    /// Extra request headers.
    headers: Vec<(String, String)>,
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A JSON string literal, sometimes nasty.
    fn string(&mut self) -> String {
        let s = match self.rng.random_range(0..12) {
            0 => String::new(),
            1 => "ü€😀\u{0}\u{1f}\u{feff}".to_string(),
            2 => "x".repeat(self.rng.random_range(1000..20_000)),
            3 => "' OR 1=1 --".to_string(),
            4 => "../../etc/passwd".to_string(),
            5 => "%s%n{}{{".to_string(),
            6 => "mts.connector".to_string(),
            7 => "__proto__".to_string(),
            8 => "2026-01-01 00:00:00".to_string(),
            9 => "\\\"\n\t".to_string(),
            _ => (0..self.rng.random_range(1..12)).map(|_| self.rng.random_range(b'a'..=b'z') as char).collect(),
        };
        Value::String(s).to_string()
    }

    /// A JSON number literal, sometimes beyond what any number type holds.
    fn number(&mut self) -> String {
        self.pick(&[
            "0",
            "-1",
            "2",
            "9007199254740993",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e400",
            "-1e400",
            "1.7976931348623157e308",
            "0.5",
            "-0",
            "1E2",
        ])
        .to_string()
    }

    /// Nesting `depth` levels deep around a value.
    fn deep(&mut self, depth: usize) -> String {
        let object = self.chance(0.5);
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        format!("{}{}{}", open.repeat(depth), self.number(), close.repeat(depth))
    }

    /// Any JSON value text.
    fn value(&mut self, depth: u32) -> String {
        match self.rng.random_range(0..if depth == 0 { 5 } else { 9 }) {
            0 => "null".into(),
            1 => self.pick(&["true", "false"]).to_string(),
            2 => self.number(),
            3 | 4 => self.string(),
            5 | 6 => {
                let n = self.rng.random_range(0..5);
                format!("[{}]", (0..n).map(|_| self.value(depth - 1)).collect::<Vec<_>>().join(","))
            }
            7 => {
                let n = self.rng.random_range(0..5);
                let items: Vec<String> =
                    (0..n).map(|_| format!("{}:{}", self.string(), self.value(depth - 1))).collect();
                format!("{{{}}}", items.join(","))
            }
            _ => {
                let depth = *self.pick(&[10, 200, 3000]);
                self.deep(depth)
            }
        }
    }

    /// A domain aimed at the parser's and evaluator's bounds.
    fn hostile_domain(&mut self) -> String {
        let field = *self.pick(&["id", "name", "state", "connector_id.name", "model", "key"]);
        let leaf = |g: &mut Gen| {
            let op = *g.pick(&["=", "!=", "like", "ilike", "=like", "not ilike", "in", "<", ">="]);
            let value = match op {
                "in" => format!(
                    "[{}]",
                    (0..g.rng.random_range(0..300)).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
                ),
                "like" | "ilike" | "=like" | "not ilike" => {
                    let unit = *g.pick(&["a", "_", "%", "ab_", "x%_"]);
                    Value::String(unit.repeat(g.rng.random_range(0..300))).to_string()
                }
                _ => g.value(1),
            };
            format!("[\"{field}\",\"{op}\",{value}]")
        };
        let n = self.rng.random_range(1..3000);
        let items: Vec<String> = match self.rng.random_range(0..6) {
            0 => (0..n).map(|_| "\"!\"".to_string()).chain(std::iter::once(leaf(self))).collect(),
            1 => (0..n).map(|_| "\"|\"".to_string()).chain((0..=n).map(|_| leaf(self))).collect(),
            2 => {
                let depth = self.rng.random_range(1..200);
                let mut v = Vec::new();
                for i in 0..depth {
                    v.push(if i % 2 == 0 { "\"&\"".to_string() } else { "\"|\"".to_string() });
                    v.push(leaf(self));
                }
                v.push(leaf(self));
                v
            }
            3 => (0..self.rng.random_range(1..15_000)).map(|_| "[\"id\",\"!=\",1]".to_string()).collect(),
            4 => {
                // One long pattern, at and past the limit.
                let n = self.rng.random_range(3000..6000);
                vec![format!("[\"{field}\",\"ilike\",{}]", Value::String("a_%".repeat(n / 3)))]
            }
            _ => (0..self.rng.random_range(1..6)).map(|_| leaf(self)).collect(),
        };
        format!("[{}]", items.join(","))
    }

    /// A jq program aimed at the compiler's bounds.
    fn hostile_program(&mut self) -> String {
        let n = self.rng.random_range(1..3000);
        let program = match self.rng.random_range(0..6) {
            0 => format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("1{}", "+1".repeat(n)),
            2 => format!("{}1", "-".repeat(n)),
            3 => format!("{}.", ". as $x | ".repeat(n.min(800))),
            4 => "def f: [f]; f".to_string(),
            _ => {
                let tokens = [
                    "(", ")", "[", "]", "{", "}", "|", ".", "..", "\\(", "\"", "if", "reduce", "def f:", ";", "1", "$x",
                ];
                (0..n).map(|_| *self.pick(&tokens)).collect::<Vec<_>>().join(" ")
            }
        };
        Value::String(program).to_string()
    }

    /// An object of values with field names that do not exist (plus random others).
    fn unknown_fields(&mut self) -> String {
        let mut items = vec![format!("\"x_fuzz_{}\":{}", self.rng.random_range(0..1000), self.value(2))];
        for _ in 0..self.rng.random_range(0..4) {
            let key =
                self.pick(&["name", "interval_minutes", "job_status", "mts_url", "odk_password", "id"]).to_string();
            items.push(format!("\"{key}\":{}", self.value(1)));
        }
        format!("{{{}}}", items.join(","))
    }

    /// `params` of an `object.execute_kw` call, and what it must get back.
    fn execute_kw(&mut self) -> (String, Expect) {
        let valid_creds = self.chance(0.6);
        let (db, uid, pw) = if valid_creds {
            (format!("\"{DB}\""), "2".to_string(), format!("\"{API_KEY}\""))
        } else {
            match self.rng.random_range(0..3) {
                0 => (format!("\"{DB}\""), "2".into(), self.string()),
                1 => (self.string(), "2".into(), format!("\"{API_KEY}\"")),
                // Any uid but the API user's 2.
                _ => {
                    let uid = self.pick(&["0", "3", "-2", "2.0", "\"2\"", "null", "[2]", "1e400"]).to_string();
                    (format!("\"{DB}\""), uid, format!("\"{API_KEY}\""))
                }
            }
        };
        let model = if self.chance(0.85) { format!("\"{}\"", self.pick(MODELS)) } else { self.string() };
        let (method, args, expect) = match self.rng.random_range(0..4) {
            // A reader with random arguments: it may well succeed.
            0 | 1 => {
                let m = self.pick(READERS).to_string();
                let args = format!(
                    "[{}]",
                    (0..self.rng.random_range(0..4)).map(|_| self.value(3)).collect::<Vec<_>>().join(",")
                );
                (format!("\"{m}\""), args, Expect::Any)
            }
            // Create or write with an unknown field: always refused whole.
            2 => {
                let vals = self.unknown_fields();
                if self.chance(0.5) {
                    ("\"create\"".to_string(), format!("[{vals}]"), Expect::Error)
                } else {
                    let ids = self.pick(&["[1]", "[1,2,3]", "[]", "1", "[999999]", "[1e400]"]).to_string();
                    // As in Odoo, writing on no record at all is `True` and does nothing.
                    let expect = if ids == "[]" { Expect::Any } else { Expect::Error };
                    ("\"write\"".to_string(), format!("[{ids},{vals}]"), expect)
                }
            }
            // A method that does not exist.
            _ => (self.string(), format!("[{}]", self.value(2)), Expect::Error),
        };
        let kwargs = if self.chance(0.5) { self.value(2) } else { "{}".to_string() };
        let expect = if valid_creds { expect } else { Expect::Error };
        let params = format!(
            "{{\"service\":\"object\",\"method\":\"execute_kw\",\"args\":[{db},{uid},{pw},{model},{method},{args},{kwargs}]}}"
        );
        (params, expect)
    }

    /// `params` of a call, and what it must get back.
    fn params(&mut self) -> (String, Expect) {
        match self.rng.random_range(0..6) {
            0..=2 => self.execute_kw(),
            3 => {
                let (service, method) =
                    (self.pick(&["\"common\"", "\"object\"", "\"db\"", "1", "null"]).to_string(), self.string());
                (format!("{{\"service\":{service},\"method\":{method},\"args\":{}}}", self.value(2)), Expect::Error)
            }
            4 => (
                format!(
                    "{{\"service\":\"common\",\"method\":\"login\",\"args\":[{},{},{}],\"x\":1}}",
                    self.string(),
                    self.string(),
                    self.string()
                ),
                Expect::Any,
            ),
            _ => (self.value(3), Expect::Error),
        }
    }

    /// A JSON-RPC envelope text; `(text, expect, id)`.
    fn envelope(&mut self) -> (String, Expect, Option<Value>) {
        let (params, mut expect) = self.params();
        let mut fields = Vec::new();
        let version_ok = self.chance(0.9);
        fields.push(if version_ok {
            "\"jsonrpc\":\"2.0\"".to_string()
        } else {
            format!("\"jsonrpc\":{}", self.value(1))
        });
        let method_ok = self.chance(0.9);
        fields.push(if method_ok {
            "\"method\":\"call\"".to_string()
        } else {
            format!("\"method\":{}", self.value(1))
        });
        if self.chance(0.95) {
            fields.push(format!("\"params\":{params}"));
        }
        let (id_text, id) = match self.rng.random_range(0..10) {
            0 => (None, None),
            1 => (Some(self.pick(&["{\"a\":1}", "[1]", "true", "1.5"]).to_string()), None),
            2 => (Some("null".to_string()), Some(Value::Null)),
            3 => {
                let s = format!("\"id-{}\"", self.rng.random_range(0..1000));
                let v = serde_json::from_str(&s).ok();
                (Some(s), v)
            }
            _ => {
                let n = self.rng.random_range(0..1_000_000u64);
                (Some(n.to_string()), Some(json!(n)))
            }
        };
        if let Some(t) = &id_text {
            fields.push(format!("\"id\":{t}"));
        }
        if self.chance(0.2) {
            fields.push(format!("\"x_unknown\":{}", self.value(2)));
        }
        if !version_ok || !method_ok {
            expect = Expect::Error;
        }
        if id_text.is_none() && version_ok {
            expect = Expect::Nothing;
        }
        // An id jsonrpsee cannot echo gets an "Invalid request" error (id null).
        if id_text.is_some() && id.is_none() {
            expect = Expect::Error;
        }
        let mut order: Vec<usize> = (0..fields.len()).collect();
        if self.chance(0.3) {
            order.reverse();
        }
        let text = format!("{{{}}}", order.iter().map(|i| fields[*i].clone()).collect::<Vec<_>>().join(","));
        (text, expect, id)
    }

    fn case(&mut self) -> Case {
        let rpc = |body: String, expect, id| Case {
            body: body.into_bytes(),
            content_type: "application/json",
            path: "/jsonrpc".into(),
            expect,
            id,
            headers: Vec::new(),
        };
        let kw = |model: &str, method: &str, args: String, kwargs: &str| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"call\",\"id\":7,\"params\":{{\"service\":\"object\",\"method\":\"execute_kw\",\"args\":[\"{DB}\",2,\"{API_KEY}\",\"{model}\",\"{method}\",{args},{kwargs}]}}}}"
            )
        };
        match self.rng.random_range(0..26) {
            // A hostile domain on any model: a result or an Odoo error, never a crash.
            20 | 21 => {
                let model = *self.pick(MODELS);
                let method = *self.pick(&["search", "search_read", "search_count", "name_search"]);
                let args = if method == "name_search" {
                    format!("[{}]", Value::String("%_".repeat(self.rng.random_range(0..3000))))
                } else {
                    format!("[{}]", self.hostile_domain())
                };
                rpc(kw(model, method, args, "{}"), Expect::Any, Some(json!(7)))
            }
            // A hostile program or domain as a connector value, on a write refused whole
            // (its registry domain is not JSON, checked after the output format).
            22 => {
                let vals = match self.rng.random_range(0..3) {
                    0 => format!("{{\"output_format\":{},\"g2p_search_domain\":\"[bad\"}}", self.hostile_program()),
                    1 => format!("{{\"g2p_search_domain\":{}}}", Value::String(self.hostile_domain())),
                    _ => format!(
                        "{{\"vid_delete_search_domain\":{},\"mapping\":\"[\"}}",
                        Value::String(self.hostile_domain())
                    ),
                };
                let vals = if vals.contains("g2p_search_domain\":\"[") && !vals.contains("[bad") {
                    // A valid hostile domain would be stored: make the write fail after it.
                    vals.replacen('{', "{\"mapping\":\"[\",", 1)
                } else {
                    vals
                };
                rpc(kw("mts.connector", "write", format!("[[1],{vals}]"), "{}"), Expect::Error, Some(json!(7)))
            }
            // A read of one id repeated many times: a result or the answer-size error.
            23 => {
                let ids: Vec<String> = (0..self.rng.random_range(1..20_000)).map(|_| "1".to_string()).collect();
                let (method, kwargs) = *self.pick(&[("read", "{\"fields\":[\"name\"]}"), ("name_get", "{}")]);
                rpc(kw("mts.connector", method, format!("[[{}]]", ids.join(",")), kwargs), Expect::Any, Some(json!(7)))
            }
            // Odd or oversized headers.
            24 => {
                let (text, expect, id) = self.envelope();
                let mut case = rpc(text, expect, id);
                for _ in 0..self.rng.random_range(1..120) {
                    let name = format!("x-fuzz-{}", self.rng.random_range(0..100_000));
                    let value: String = (0..self.rng.random_range(0..200))
                        .map(|_| self.rng.random_range(b' '..=b'~') as char)
                        .collect();
                    case.headers.push((name, value));
                }
                if self.chance(0.3) {
                    case.headers.push((
                        "cookie".into(),
                        format!("session_id={}", "a".repeat(self.rng.random_range(1..20_000))),
                    ));
                }
                if self.chance(0.3) {
                    case.headers.push((
                        "authorization".into(),
                        format!("Bearer {}", "b".repeat(self.rng.random_range(1..5000))),
                    ));
                }
                case
            }
            // A body over the limit.
            25 => rpc(format!("[{}]", "1,".repeat(self.rng.random_range(600_000..900_000)) + "1"), Expect::Error, None),
            // Random bytes.
            0 => {
                let n = self.rng.random_range(0..300);
                let mut body: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                if self.chance(0.5) {
                    body.insert(0, b'{');
                }
                Case {
                    body,
                    content_type: "application/json",
                    path: "/jsonrpc".into(),
                    expect: Expect::Error,
                    id: None,
                    headers: Vec::new(),
                }
            }
            // A valid envelope cut short.
            1 | 2 => {
                let (text, _, _) = self.envelope();
                let cut = self.rng.random_range(0..text.len().max(1));
                rpc(text[..text.floor_char_boundary(cut)].to_string(), Expect::Error, None)
            }
            // Any JSON value as the whole body.
            3 => {
                let v = self.value(3);
                let expect = if v.starts_with('{') || v.starts_with('[') { Expect::Any } else { Expect::Error };
                rpc(v, expect, None)
            }
            // A batch.
            4 => {
                let n = self.rng.random_range(1..4);
                let items: Vec<String> = (0..n).map(|_| self.envelope().0).collect();
                rpc(format!("[{}]", items.join(",")), Expect::Any, None)
            }
            // The wrong content type.
            5 => {
                let (text, _, _) = self.envelope();
                Case {
                    body: text.into_bytes(),
                    content_type: "text/plain",
                    path: "/jsonrpc".into(),
                    expect: Expect::Error,
                    id: None,
                    headers: Vec::new(),
                }
            }
            // Web endpoints: no session, wrong passwords.
            6 | 7 => {
                let (path, params) = if self.chance(0.5) {
                    (
                        "/web/dataset/call_kw/mts.connector/read".to_string(),
                        format!(
                            "{{\"model\":\"mts.connector\",\"method\":\"read\",\"args\":{},\"kwargs\":{}}}",
                            self.value(2),
                            self.value(1)
                        ),
                    )
                } else {
                    (
                        "/web/session/authenticate".to_string(),
                        format!("{{\"db\":\"{DB}\",\"login\":\"admin\",\"password\":{}}}", self.string()),
                    )
                };
                let id = self.rng.random_range(0..1000u64);
                Case {
                    body: format!("{{\"jsonrpc\":\"2.0\",\"method\":\"call\",\"id\":{id},\"params\":{params}}}")
                        .into_bytes(),
                    content_type: "application/json",
                    path,
                    expect: Expect::Error,
                    id: Some(json!(id)),
                    headers: Vec::new(),
                }
            }
            _ => {
                let (text, expect, id) = self.envelope();
                rpc(text, expect, id)
            }
        }
    }
}

/// Checks one JSON-RPC answer object; `Err(why)` when it is malformed.
fn check_answer(answer: &Value, expect: Expect, id: Option<&Value>) -> Result<(), String> {
    let obj = answer.as_object().ok_or("not an object")?;
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("no jsonrpc 2.0".into());
    }
    match (obj.get("result"), obj.get("error")) {
        (Some(_), None) if expect == Expect::Any => {}
        (Some(_), None) => return Err("a result where an error was due".into()),
        (None, Some(error)) => {
            if !error["code"].is_i64() || !error["message"].is_string() {
                return Err("error without an integer code and a message".into());
            }
            if let Some(data) = error.get("data").filter(|d| d.is_object()) {
                let name = data["name"].as_str().unwrap_or_default();
                if !["odoo.", "builtins.", "werkzeug."].iter().any(|p| name.starts_with(p))
                    || !data["message"].is_string()
                {
                    return Err(format!("Odoo error data without a known exception name: {data}"));
                }
            }
            let parse_error = error["code"] == -32700 || error["code"] == -32600;
            if let Some(id) = id
                && !parse_error
                && obj.get("id") != Some(id)
            {
                return Err(format!("the answer's id {:?} is not the request's {id}", obj.get("id")));
            }
        }
        _ => return Err("not exactly one of result and error".into()),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_get_well_formed_errors_and_change_nothing() {
    let seed: u64 = std::env::var("MTSC_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6d74_7363);
    let cases: usize = std::env::var("MTSC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let svc = Service::start().await;
    // Records for the fuzzer to (fail to) change.
    for name in ["Alpha", "Beta", "Gamma"] {
        svc.create(&common::merged(&common::valid_connector(), &json!({"name": name}))).await;
    }
    let before = common::snapshot(&svc).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut g = Gen { rng: StdRng::seed_from_u64(seed) };
    let mut statuses = BTreeSet::new();
    let mut oversized_unanswered = 0;
    // How far the bodies got: to Odoo's dispatch (an Odoo exception), or to a result.
    let (mut odoo_errors, mut results) = (0, 0);
    for n in 0..cases {
        let case = g.case();
        let shown = String::from_utf8_lossy(&case.body[..case.body.len().min(400)]).into_owned();
        let header_bytes: usize = case.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let ctx = || {
            format!(
                "seed {seed}, case {n}, {} {:?}, {} extra headers ({header_bytes} bytes): {shown}",
                case.path,
                case.expect,
                case.headers.len()
            )
        };
        let mut req = http.post(format!("{}{}", svc.url(), case.path)).header("content-type", case.content_type);
        for (k, v) in &case.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = match req.body(case.body.clone()).send().await {
            Ok(resp) => resp,
            // A body over the limit is refused (413) before it is read, and the connection
            // closed: a client still sending may see the close before the answer.
            Err(_) if case.body.len() > 1 << 20 => {
                oversized_unanswered += 1;
                continue;
            }
            Err(e) => panic!("no answer ({e}); {}\nlog:\n{}", ctx(), svc.log()),
        };
        let status = resp.status().as_u16();
        statuses.insert(status);
        let text = resp.text().await.expect("body");
        if status == 415 {
            assert_eq!(case.content_type, "text/plain", "{}", ctx());
            continue;
        }
        if status == 431 {
            // Headers too large for the server: refused before anything ran.
            assert!(!case.headers.is_empty(), "{}", ctx());
            continue;
        }
        if status == 413 {
            assert!(case.body.len() > 1 << 20, "HTTP 413 for a small body; {}", ctx());
            let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("413 not JSON ({e}); {}", ctx()));
            assert!(answer["error"]["code"].is_i64(), "{}", ctx());
            continue;
        }
        assert!(status == 200 || status == 400, "HTTP {status} {text}; {}", ctx());
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}; {}", ctx()));
        let checked = match (&answer, case.expect) {
            (Value::Null, Expect::Nothing | Expect::Any) => Ok(()),
            (Value::Array(items), Expect::Any) => items.iter().try_for_each(|a| check_answer(a, Expect::Any, None)),
            (a, Expect::Nothing) => check_answer(a, Expect::Error, None),
            (a, expect) => check_answer(a, expect, case.id.as_ref()),
        };
        if let Err(why) = checked {
            panic!("{why}: {text}; {}", ctx());
        }
        odoo_errors += usize::from(answer.pointer("/error/data/name").is_some());
        results += usize::from(answer.get("result").is_some());
        if status == 400 {
            assert_eq!(answer["error"]["code"], -32700, "only parse errors are HTTP 400: {text}; {}", ctx());
        }
    }
    eprintln!("{oversized_unanswered} oversized bodies were closed on before their 413 was read");
    // One oversized body: HTTP 413 with a JSON-RPC error.
    let big = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"call\",\"id\":1,\"params\":\"{}\"}}", "x".repeat(1 << 20));
    let resp =
        http.post(format!("{}/jsonrpc", svc.url())).header("content-type", "application/json").body(big).send().await;
    let resp = resp.expect("an answer to an oversized body");
    assert_eq!(resp.status().as_u16(), 413);
    let answer: Value = resp.json().await.expect("JSON");
    assert!(answer["error"]["code"].is_i64(), "{answer}");

    // Still alive, nothing changed, nothing panicked, label values bounded.
    common::assert_survived(&svc, &before, seed).await;
    assert!(statuses.contains(&200) && statuses.contains(&400) && statuses.contains(&415), "{statuses:?}");
    assert!(odoo_errors > cases / 4 && results > 0, "{odoo_errors} Odoo errors, {results} results of {cases}");
}
