//! Robustness of the XML-RPC endpoints: a seeded generator feeds the real binary random
//! XML bodies (garbage bytes, truncated calls, billion laughs and other DTDs, external
//! and undeclared entities, deep nesting, wrong types, unknown and misplaced elements,
//! other encodings, wrong credentials, random models and methods) on `/xmlrpc/2/*` and
//! `/xmlrpc/*`, and checks that the service never panics, answers each with a
//! well-formed XML-RPC fault (integer code on `/xmlrpc/2`, string code on `/xmlrpc`) or,
//! for a read with valid credentials, a well-formed result, and that the store is
//! unchanged at the end.
//!
//! Reproduce a run with `MTSC_FUZZ_SEED=<seed>`; `MTSC_FUZZ_CASES` changes how many
//! bodies are sent (default 1500).

mod common;

use std::collections::BTreeMap;

use common::{API_KEY, DB, Service};
use mts_connector::api::xmlrpc::{Message, parse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const MODELS: &[&str] = &["mts.connector", "mts.connector.run", "mts.connector.delivery", "ir.model"];
/// Methods that only read: with valid credentials they may succeed.
const READERS: &[&str] =
    &["search", "search_read", "search_count", "read", "fields_get", "default_get", "name_get", "name_search"];
/// Whether a fault (as "code string") is of one kind.
type FaultTest = fn(&str) -> bool;

/// Faults the run must have produced at least once.
const REFUSALS: &[(&str, FaultTest)] = &[
    ("dtd", |f| f.contains("DTDs) are refused")),
    ("too deep", |f| f.contains("nested deeper than 128")),
    ("wrong type", |f| f.contains("value is not valid")),
    ("not xml", |f| f.contains("not well-formed XML")),
    ("entity", |f| f.contains("entity reference")),
    ("unknown element", |f| f.contains("unknown element")),
    ("access denied", |f| f.starts_with("3 ") || f.starts_with("\"AccessDenied\"")),
    ("user error, code 2", |f| f.starts_with("2 ")),
    ("user error, legacy", |f| f.starts_with("\"warning -- UserError")),
    ("413", |f| f.contains("larger than 1048576 bytes")),
];
const PATHS: &[&str] = &["/xmlrpc/2/object", "/xmlrpc/object", "/xmlrpc/2/common", "/xmlrpc/common"];

/// What a case must get back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A fault.
    Fault,
    /// A well-formed result or fault.
    Any,
}

struct Case {
    body: Vec<u8>,
    path: &'static str,
    expect: Expect,
}

struct Gen {
    rng: StdRng,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn call(method: &str, params: &[String]) -> String {
    let params: String = params.iter().map(|p| format!("<param>{p}</param>\n")).collect();
    format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>{method}</methodName>\n<params>\n{params}</params>\n</methodCall>\n"
    )
}

fn string(s: &str) -> String {
    format!("<value><string>{}</string></value>", escape(s))
}

fn int(n: i64) -> String {
    format!("<value><int>{n}</int></value>")
}

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Text, sometimes nasty (escaped: well-formed XML).
    fn text(&mut self) -> String {
        match self.rng.random_range(0..12) {
            0 => String::new(),
            1 => "ü€😀\u{1f}\u{feff}".to_string(),
            2 => "x".repeat(self.rng.random_range(1000..20_000)),
            3 => "' OR 1=1 --".to_string(),
            4 => "../../etc/passwd".to_string(),
            5 => "%s%n{}{{".to_string(),
            6 => "mts.connector".to_string(),
            7 => "]]>".to_string(),
            8 => "2026-01-01 00:00:00".to_string(),
            9 => "<>&\"'\r\n\t".to_string(),
            _ => (0..self.rng.random_range(1..12)).map(|_| self.rng.random_range(b'a'..=b'z') as char).collect(),
        }
    }

    /// A scalar `<value>`, sometimes of the wrong shape for its type.
    fn scalar(&mut self) -> String {
        let t = self.text();
        match self.rng.random_range(0..16) {
            0 => format!("<value>{}</value>", escape(&t)),
            1 | 2 => string(&t),
            3 => int(*self.pick(&[0, -1, 1, 2, 999_999, i64::from(i32::MAX), i64::MAX, i64::MIN])),
            4 => format!("<value><i8>{}</i8></value>", self.pick(&["9007199254740993", "-0", "+5", " 7 "])),
            5 => format!("<value><boolean>{}</boolean></value>", self.pick(&["0", "1", "true", "2", "", " 1"])),
            6 => format!(
                "<value><double>{}</double></value>",
                self.pick(&["1.5", "-0", "1e308", "1e400", "nan", "inf", "x"])
            ),
            7 => "<value><nil/></value>".to_string(),
            8 => format!(
                "<value><dateTime.iso8601>{}</dateTime.iso8601></value>",
                self.pick(&["20260101T00:00:00", "2026-01-01T00:00:00Z", "yesterday", ""])
            ),
            9 => format!("<value><base64>{}</base64></value>", self.pick(&["aGVsbG8=", "!!!", "", "aGVs\nbG8="])),
            10 => {
                format!("<value><int>{}</int></value>", self.pick(&["abc", "", "99999999999999999999", "1.5", "0x10"]))
            }
            11 => format!("<value><![CDATA[{}]]></value>", t.replace("]]>", "")),
            12 => "<value><string>a &amp; b &#233; &#x1F600; &lt;</string></value>".to_string(),
            13 => "<value/>".to_string(),
            14 => format!("<value><bigdecimal>{}</bigdecimal></value>", self.pick(&["1.25", "x"])),
            _ => format!(
                "<value><ex:i4 xmlns:ex='http://ws.apache.org/xmlrpc/namespaces/extensions'>{}</ex:i4></value>",
                self.rng.random_range(-5..5)
            ),
        }
    }

    /// Any `<value>`.
    fn value(&mut self, depth: u32) -> String {
        match self.rng.random_range(0..if depth == 0 { 1 } else { 4 }) {
            0 => self.scalar(),
            1 => {
                let n = self.rng.random_range(0..5);
                let items: String = (0..n).map(|_| self.value(depth - 1)).collect();
                format!("<value><array><data>{items}</data></array></value>")
            }
            2 => {
                let n = self.rng.random_range(0..5);
                let members: String = (0..n)
                    .map(|_| {
                        let name = self.text();
                        format!("<member><name>{}</name>{}</member>", escape(&name), self.value(depth - 1))
                    })
                    .collect();
                format!("<value><struct>{members}</struct></value>")
            }
            _ => self.deep(),
        }
    }

    /// Arrays and structs nested from 10 to 12,000 levels deep (over 128 is refused; 12,000
    /// levels of structs stay under the 1 MiB limit).
    fn deep(&mut self) -> String {
        let depth = *self.pick(&[10, 127, 128, 129, 200, 3000, 12_000]);
        let (open, close) = if self.chance(0.5) {
            ("<value><array><data>", "</data></array></value>")
        } else {
            ("<value><struct><member><name>a</name>", "</member></struct></value>")
        };
        format!("{}{}{}", open.repeat(depth), int(1), close.repeat(depth))
    }

    /// A whole document with a DTD: billion laughs, quadratic blowup, external entities.
    fn dtd(&mut self) -> String {
        let inner = match self.rng.random_range(0..4) {
            0 => {
                let mut decls = "<!ENTITY lol 'lol'>".to_string();
                for i in 1..10 {
                    let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
                    decls.push_str(&format!("<!ENTITY lol{i} '{}'>", format!("&{prev};").repeat(10)));
                }
                (decls, "&lol9;".to_string())
            }
            1 => (format!("<!ENTITY a '{}'>", "a".repeat(50_000)), "&a;".repeat(20)),
            2 => ("<!ENTITY e SYSTEM 'file:///etc/passwd'>".to_string(), "&e;".to_string()),
            _ => ("<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x.dtd'> %p;".to_string(), "&x;".to_string()),
        };
        let (decls, reference) = inner;
        let body = call("execute_kw", &self.creds_and(&format!("<value>{reference}</value>")));
        let body = body.replacen("<?xml version='1.0'?>\n", "", 1);
        format!("<?xml version='1.0'?>\n<!DOCTYPE methodCall [{decls}]>\n{body}")
    }

    /// Valid credentials, `mts.connector`, `create` and one value.
    fn creds_and(&mut self, vals: &str) -> Vec<String> {
        vec![
            string(DB),
            int(2),
            string(API_KEY),
            string("mts.connector"),
            string("create"),
            format!(
                "<value><array><data><value><struct><member><name>name</name>{vals}</member></struct></value></data></array></value>"
            ),
        ]
    }

    /// An `execute_kw` call, and what it must get back.
    fn execute_kw(&mut self) -> (String, Expect) {
        let valid_creds = self.chance(0.6);
        let (db, uid, pw) = if valid_creds {
            (string(DB), int(2), string(API_KEY))
        } else {
            match self.rng.random_range(0..3) {
                0 => (string(DB), int(2), self.scalar()),
                1 => (self.scalar(), int(2), string(API_KEY)),
                _ => {
                    let uid = self
                        .pick(&[
                            "<value><int>0</int></value>",
                            "<value><int>3</int></value>",
                            "<value>2</value>",
                            "<value><double>2.0</double></value>",
                            "<value><nil/></value>",
                            "<value><array><data><value><int>2</int></value></data></array></value>",
                        ])
                        .to_string();
                    (string(DB), uid, string(API_KEY))
                }
            }
        };
        let model = if self.chance(0.85) { string(self.pick::<&str>(MODELS)) } else { self.scalar() };
        let (method, args, expect) = match self.rng.random_range(0..4) {
            0 | 1 => {
                let m = self.pick(READERS).to_string();
                let items: String = (0..self.rng.random_range(0..4)).map(|_| self.value(3)).collect();
                (string(&m), format!("<value><array><data>{items}</data></array></value>"), Expect::Any)
            }
            // Create or write with an unknown field: always refused whole.
            2 => {
                let mut members =
                    format!("<member><name>x_fuzz_{}</name>{}</member>", self.rng.random_range(0..1000), self.value(2));
                for _ in 0..self.rng.random_range(0..4) {
                    let key = self
                        .pick(&["name", "interval_minutes", "job_status", "mts_url", "odk_password", "id"])
                        .to_string();
                    members.push_str(&format!("<member><name>{key}</name>{}</member>", self.value(1)));
                }
                let vals = format!("<value><struct>{members}</struct></value>");
                if self.chance(0.5) {
                    (string("create"), format!("<value><array><data>{vals}</data></array></value>"), Expect::Fault)
                } else {
                    let ids = self
                        .pick(&[
                            "<value><array><data><value><int>1</int></value></data></array></value>",
                            "<value><int>1</int></value>",
                            "<value><array><data><value><int>999999</int></value></data></array></value>",
                        ])
                        .to_string();
                    (string("write"), format!("<value><array><data>{ids}{vals}</data></array></value>"), Expect::Fault)
                }
            }
            _ => {
                (self.scalar(), format!("<value><array><data>{}</data></array></value>", self.value(2)), Expect::Fault)
            }
        };
        let mut params = vec![db, uid, pw, model, method, args];
        if self.chance(0.5) {
            params.push(self.value(2));
        }
        let expect = if valid_creds { expect } else { Expect::Fault };
        (call("execute_kw", &params), expect)
    }

    /// Well-formed XML that is not a valid XML-RPC call.
    fn misshapen(&mut self) -> String {
        let valid = call("version", &[]);
        match self.rng.random_range(0..10) {
            0 => "<methodCall><methodName>version</methodName><bogus/></methodCall>".into(),
            1 => "<methodCall><params><param><value>1</value></param></params></methodCall>".into(),
            2 => "<methodCall><methodName>x</methodName><params><value>1</value></params></methodCall>".into(),
            3 => "<methodCall><methodName>x</methodName>text here</methodCall>".into(),
            4 => format!("{valid}{valid}"),
            5 => "<methodResponse><params><param><value>1</value></param></params></methodResponse>".into(),
            6 => "<methodCall><methodName>x</methodName><params><param><value><int>1</int><string>2</string></value></param></params></methodCall>".into(),
            7 => "<methodCall><methodName>x</methodName><params><param><value><struct><member><value>1</value></member></struct></value></param></params></methodCall>".into(),
            8 => "<?xml version='1.0' encoding='ISO-8859-1'?><methodCall><methodName>version</methodName></methodCall>".into(),
            _ => "<methodCall><methodName>x</methodName><params><param><value>&undeclared;</value></param></params></methodCall>".into(),
        }
    }

    fn case(&mut self) -> Case {
        let path = *self.pick(PATHS);
        let object = path.ends_with("object");
        let (body, expect): (Vec<u8>, Expect) = match self.rng.random_range(0..20) {
            // Random bytes, sometimes after a plausible start.
            0 => {
                let n = self.rng.random_range(0..300);
                let mut body: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                if self.chance(0.5) {
                    body.splice(0..0, b"<?xml version='1.0'?>\n<methodCall>".iter().copied());
                }
                (body, Expect::Fault)
            }
            // A valid call cut short.
            1 | 2 => {
                let (text, _) = self.execute_kw();
                let cut = self.rng.random_range(0..text.len().max(1));
                (text.as_bytes()[..text.floor_char_boundary(cut)].to_vec(), Expect::Fault)
            }
            3 | 4 => (self.dtd().into_bytes(), Expect::Fault),
            // A create whose name is nested deep: refused (too deep, or not a name).
            5 => {
                let deep = self.deep();
                (call("execute_kw", &self.creds_and(&deep)).into_bytes(), Expect::Fault)
            }
            6 | 7 => (self.misshapen().into_bytes(), Expect::Fault),
            // Raw markup characters in text: not XML.
            8 => (
                call(
                    "version",
                    &[format!("<value>{}</value>", self.pick(&["a & b", "a < b", "&#0;", "&#xD800;", "&amp"]))],
                )
                .into_bytes(),
                Expect::Fault,
            ),
            // The common service with random arguments.
            // A common method with random arguments: on an object endpoint it does not
            // exist, and neither does execute_kw on a common one.
            9 | 10 => {
                let method = *self.pick(&["version", "about", "login", "authenticate", "frobnicate", "execute_kw"]);
                let params: Vec<String> = (0..self.rng.random_range(0..5)).map(|_| self.value(2)).collect();
                let may_succeed = !object && !matches!(method, "frobnicate" | "execute_kw");
                (call(method, &params).into_bytes(), if may_succeed { Expect::Any } else { Expect::Fault })
            }
            _ => {
                let (text, expect) = self.execute_kw();
                (text.into_bytes(), if object { expect } else { Expect::Fault })
            }
        };
        Case { body, path, expect }
    }
}

/// A body over 1 MiB must get HTTP 413 (with a fault), any other HTTP 200.
/// Checks one answer: `Ok(None)` for a result, `Ok(Some(text))` for a fault (its code
/// and string), `Err(why)` when it is not what the case must get.
fn check(
    path: &str,
    sent: usize,
    status: u16,
    content_type: &str,
    body: &str,
    expect: Expect,
) -> Result<Option<String>, String> {
    let oversized = sent > 1 << 20;
    if status != if oversized { 413 } else { 200 } {
        return Err(format!("HTTP {status} for a body of {sent} bytes"));
    }
    let expect = if oversized { Expect::Fault } else { expect };
    if content_type != "text/xml; charset=utf-8" {
        return Err(format!("content type {content_type:?}"));
    }
    if body.contains("<nil") {
        return Err("a nil in the answer".into());
    }
    match parse(body.as_bytes()).map_err(|e| format!("not XML-RPC: {e}"))? {
        Message::Fault { code, string } => {
            if !string.is_string() {
                return Err("faultString is not a string".into());
            }
            let ok = if path.starts_with("/xmlrpc/2/") {
                code.as_i64().is_some_and(|c| (1..=4).contains(&c))
            } else {
                code.as_str().is_some_and(|c| !c.is_empty())
            };
            if !ok {
                return Err(format!("fault code {code} on {path}"));
            }
            Ok(Some(format!("{code} {string}")))
        }
        Message::Response(_) if expect == Expect::Any => Ok(None),
        Message::Response(v) => Err(format!("a result where a fault was due: {v}")),
        Message::Call { .. } => Err("a methodCall as the answer".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_xml_bodies_get_well_formed_faults_and_change_nothing() {
    let seed: u64 = std::env::var("MTSC_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x786d_6c72);
    let cases: usize = std::env::var("MTSC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let svc = Service::start().await;
    for name in ["Alpha", "Beta", "Gamma"] {
        svc.create(&common::merged(&common::valid_connector(), &json!({"name": name}))).await;
    }
    let before = common::snapshot(&svc).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut g = Gen { rng: StdRng::seed_from_u64(seed) };
    let (mut faults, mut results) = (0, 0);
    let mut refusals: BTreeMap<&str, usize> = BTreeMap::new();
    for n in 0..cases {
        let case = g.case();
        let shown = String::from_utf8_lossy(&case.body[..case.body.len().min(400)]).into_owned();
        let ctx = || format!("seed {seed}, case {n}, {} {:?}: {shown}", case.path, case.expect);
        let resp = http
            .post(format!("{}{}", svc.url(), case.path))
            .header("content-type", "text/xml")
            .body(case.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer ({e}); {}\nlog:\n{}", ctx(), svc.log()));
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = resp.text().await.expect("body");
        match check(case.path, case.body.len(), status, &content_type, &text, case.expect) {
            Ok(None) => results += 1,
            Ok(Some(fault)) => {
                faults += 1;
                for (kind, matches) in REFUSALS {
                    if matches(&fault) {
                        *refusals.entry(*kind).or_default() += 1;
                    }
                }
            }
            Err(why) => panic!("{why}: {text}; {}", ctx()),
        }
    }
    // One oversized body: HTTP 413 with a fault, as /jsonrpc answers 413.
    let big = call("version", &[string(&"x".repeat(1 << 20))]);
    let resp = http.post(format!("{}/xmlrpc/2/common", svc.url())).body(big).send().await.expect("an answer");
    assert_eq!(resp.status().as_u16(), 413);
    let text = resp.text().await.expect("body");
    assert!(matches!(parse(text.as_bytes()), Ok(Message::Fault { .. })), "{text}");

    // Still alive, nothing changed, nothing panicked, label values bounded.
    common::assert_survived(&svc, &before, seed).await;
    assert!(faults > cases / 2 && results > 0, "{faults} faults, {results} results of {cases}");
    // The generator reached every kind of refusal, and Odoo's own errors past the parser.
    for (kind, _) in REFUSALS {
        assert!(refusals.get(kind).is_some_and(|n| *n > 0), "no {kind} fault in {cases} cases: {refusals:?}");
    }
}
