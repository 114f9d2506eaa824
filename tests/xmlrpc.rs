//! Odoo's XML-RPC external API on the real binary (`/xmlrpc/2/*` and the legacy
//! `/xmlrpc/*`): the same answers as `/jsonrpc` for the same calls, Odoo 17's fault
//! codes and strings for every error class, values mapped as Odoo's marshaller maps
//! them, the limits and refusals, secrets, and metrics.
//!
//! Every test starts its own service through `common::Service`; bodies are built and
//! answers read with the service's own `api::xmlrpc` (a call written as Python's
//! `xmlrpc.client` writes it). The Python client itself is exercised in
//! `tests/python/test_xmlrpc*.py`.

mod common;

use common::{API_KEY, DB, LOGIN, ODK_PASSWORD, Options, SECRETS, Service, UID, merged, valid_connector};
use mts_connector::api::xmlrpc::{Message, call_xml, parse};
use serde_json::{Value, json};

const M: &str = "mts.connector";
const V2_OBJECT: &str = "/xmlrpc/2/object";
const OLD_OBJECT: &str = "/xmlrpc/object";

/// An XML-RPC answer as the client saw it.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
    message: Message,
}

/// POSTs `body` to `path` and reads the answer as XML-RPC (panics when it is not).
async fn post(svc: &Service, path: &str, body: Vec<u8>) -> Answer {
    let raw = svc.post_raw(path, body, Some("text/xml")).await;
    let message = parse(raw.body.as_bytes()).unwrap_or_else(|e| panic!("{path}: not XML-RPC ({e}): {}", raw.body));
    let content_type = raw.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Answer { status: raw.status, content_type, body: raw.body, message }
}

/// `method(*params)` on `path`: the result, or the fault's `(faultCode, faultString)`.
async fn call(svc: &Service, path: &str, method: &str, params: &[Value]) -> Result<Value, (Value, String)> {
    let a = post(svc, path, call_xml(method, params).into_bytes()).await;
    assert_eq!(a.status, 200, "{path} {method}: {}", a.body);
    assert_eq!(a.content_type, "text/xml; charset=utf-8");
    assert!(!a.body.contains("<nil"), "Odoo never sends nil: {}", a.body);
    match a.message {
        Message::Response(v) => Ok(v),
        Message::Fault { code, string } => Err((code, string.as_str().unwrap_or_default().to_string())),
        Message::Call { .. } => panic!("a methodCall as the answer: {}", a.body),
    }
}

/// `execute_kw` on `path` with the service's credentials.
async fn execute_kw(
    svc: &Service,
    path: &str,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Result<Value, (Value, String)> {
    call(svc, path, "execute_kw", &[json!(DB), json!(UID), json!(API_KEY), json!(model), json!(method), args, kwargs])
        .await
}

/// A JSON value as it comes back over XML-RPC: `null` is answered as `False`.
fn as_odoo_marshals(v: &Value) -> Value {
    match v {
        Value::Null => Value::Bool(false),
        Value::Array(items) => items.iter().map(as_odoo_marshals).collect(),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), as_odoo_marshals(v))).collect()),
        other => other.clone(),
    }
}

/// An MTS request preview without its `requesttime` (the clock at the call).
fn without_clock(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove("requesttime");
    }
    v
}

/// Every record of every model, every field.
async fn snapshot(svc: &Service) -> Value {
    let mut out = serde_json::Map::new();
    for model in ["mts.connector", "mts.connector.run", "mts.connector.delivery"] {
        out.insert(model.into(), svc.ok(model, "search_read", json!([[]]), json!({"order": "id"})).await);
    }
    Value::Object(out)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).take(5).collect();
        assert!(leaks.is_empty(), "{what} holds the secret {secret:?}, e.g.:\n{}", leaks.join("\n"));
    }
}

#[tokio::test]
async fn xmlrpc_answers_exactly_what_jsonrpc_answers() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    svc.create(&merged(&valid_connector(), &json!({"name": "Second"}))).await;
    let window = json!({"window_start": "2026-01-01 00:00:00", "window_end": "2026-01-02 00:00:00"});
    let object = |method: &str, args: Value, kwargs: Value| {
        ("object", "execute_kw", json!([DB, UID, API_KEY, M, method, args, kwargs]))
    };
    let calls = [
        ("common", "version", json!([])),
        ("common", "about", json!([])),
        ("common", "login", json!([DB, LOGIN, API_KEY])),
        ("common", "login", json!([DB, LOGIN, "wrong"])),
        ("common", "authenticate", json!([DB, LOGIN, API_KEY, {}])),
        object("search", json!([[["name", "ilike", "e"]]]), json!({"offset": 0, "limit": 5, "order": "name desc"})),
        object("search_count", json!([[]]), json!({})),
        object("read", json!([[id]]), json!({})),
        object("read", json!([[id], ["name", "job_status", "odk_password", "next_run_at", "create_date"]]), json!({})),
        object(
            "search_read",
            json!([[["input_type", "=", "odk"]]]),
            json!({"fields": ["name", "interval_minutes"], "limit": 5}),
        ),
        object("fields_get", json!([]), json!({"attributes": ["string", "help", "type"]})),
        object("name_get", json!([[id]]), json!({})),
        object("default_get", json!([["settle_seconds", "callback_mode"]]), json!({})),
        object("preview_mts_request", json!([[id]]), window),
        ("object", "execute", json!([DB, UID, API_KEY, M, "search_count", [["id", "=", id]]])),
        ("object", "execute_kw", json!([DB, UID, API_KEY, "mts.connector.run", "search_read", [[]], {}])),
        ("object", "execute_kw", json!([DB, UID, API_KEY, "ir.model", "search_read", [[]], {"fields": ["model"]}])),
    ];
    for (service, method, args) in calls {
        let expected = common::into_result(svc.call(service, method, args.clone()).await)
            .unwrap_or_else(|e| panic!("{service}.{method}({args}) over JSON-RPC: {e}"));
        let params = args.as_array().cloned().unwrap_or_default();
        for prefix in ["/xmlrpc/2", "/xmlrpc"] {
            let answer = call(&svc, &format!("{prefix}/{service}"), method, &params).await;
            let answer = answer.unwrap_or_else(|f| panic!("{prefix}/{service} {method}({args}): {f:?}"));
            assert_eq!(
                without_clock(answer),
                without_clock(as_odoo_marshals(&expected)),
                "{prefix}/{service} {method}({args})"
            );
        }
    }
}

#[tokio::test]
async fn the_external_api_flow_writes_through_xmlrpc() {
    let svc = Service::start().await;
    let uid =
        call(&svc, "/xmlrpc/2/common", "authenticate", &[json!(DB), json!(LOGIN), json!(API_KEY), json!({})]).await;
    assert_eq!(uid, Ok(json!(UID)));
    let id = execute_kw(&svc, V2_OBJECT, M, "create", json!([valid_connector()]), json!({})).await.expect("created");
    let id = id.as_u64().expect("an id");
    assert_eq!(
        execute_kw(&svc, V2_OBJECT, M, "write", json!([[id], {"name": "Renamed"}]), json!({})).await,
        Ok(json!(true))
    );
    assert_eq!(
        execute_kw(&svc, V2_OBJECT, M, "name_get", json!([[id]]), json!({})).await,
        Ok(json!([[id, "Renamed"]]))
    );
    // The job actions go through the same dispatch.
    assert_eq!(execute_kw(&svc, OLD_OBJECT, M, "action_start", json!([[id]]), json!({})).await, Ok(json!(true)));
    assert_eq!(svc.read(id).await["job_status"], "running");
    assert_eq!(execute_kw(&svc, V2_OBJECT, M, "action_stop", json!([[id]]), json!({})).await, Ok(json!(true)));
    assert_eq!(execute_kw(&svc, V2_OBJECT, M, "unlink", json!([[id]]), json!({})).await, Ok(json!(true)));
    assert_eq!(svc.count().await, 0);
}

/// One call that must fail.
struct FaultCase {
    service: &'static str,
    method: &'static str,
    params: Vec<Value>,
}

/// Each Odoo exception class comes out as Odoo 17's `xmlrpc_handle_exception_int`
/// (`/xmlrpc/2`) and `xmlrpc_handle_exception_string` (`/xmlrpc`) fault, with the
/// message the JSON-RPC error carries.
#[tokio::test]
async fn faults_carry_odoos_codes_and_strings_on_both_endpoints() {
    let svc = Service::start().await;
    let running = svc.create(&valid_connector()).await;
    svc.connector("action_start", json!([[running]])).await;
    let object = |pw: &str, model: &str, method: &str, args: Value| FaultCase {
        service: "object",
        method: "execute_kw",
        params: vec![json!(DB), json!(UID), json!(pw), json!(model), json!(method), args, json!({})],
    };
    let kw = |model: &str, method: &str, args: Value| object(API_KEY, model, method, args);
    let mut wrong_uid = kw(M, "search", json!([[]]));
    wrong_uid.params[1] = json!(7);
    let service = |service, method| FaultCase { service, method, params: vec![] };
    let (user, missing, access) =
        (Some("warning -- UserError\n\n"), Some("warning -- MissingError\n\n"), Some("warning -- AccessError\n\n"));
    // (call, exception name, code on /xmlrpc/2, code prefix on /xmlrpc: None = the message)
    let cases = [
        (object("wrong-password", M, "search", json!([[]])), "odoo.exceptions.AccessDenied", 3, Some("AccessDenied")),
        (wrong_uid, "odoo.exceptions.AccessDenied", 3, Some("AccessDenied")),
        (
            kw(M, "create", json!([merged(&valid_connector(), &json!({"mapping": "not json"}))])),
            "odoo.exceptions.ValidationError",
            2,
            user,
        ),
        (kw(M, "unlink", json!([[running]])), "odoo.exceptions.UserError", 2, user),
        (kw(M, "read", json!([[999_999]])), "odoo.exceptions.MissingError", 2, missing),
        (kw("mts.connector.run", "create", json!([{"state": "done"}])), "odoo.exceptions.AccessError", 4, access),
        (kw(M, "frobnicate", json!([])), "builtins.AttributeError", 1, None),
        (kw("res.partner", "search", json!([[]])), "odoo.exceptions.UserError", 2, user),
        (kw(M, "search", json!([[["nope", "=", 1]]])), "builtins.ValueError", 1, None),
        (kw(M, "read", json!(["not ids"])), "builtins.TypeError", 1, None),
        (service("common", "frobnicate"), "builtins.AttributeError", 1, None),
        (service("nosuch", "version"), "werkzeug.exceptions.NotFound", 1, None),
    ];
    for (FaultCase { service, method, params }, name, int_code, legacy) in cases {
        let err = common::into_result(svc.call(service, method, Value::Array(params.clone())).await)
            .expect_err("the JSON-RPC call fails");
        assert_eq!(err["data"]["name"], name, "{service} {params:?}: {err}");
        let message = err["data"]["message"].as_str().expect("a message").to_string();

        let (code, string) = call(&svc, &format!("/xmlrpc/2/{service}"), method, &params).await.expect_err("a fault");
        assert_eq!(code, json!(int_code), "{name}: {string}");
        if int_code == 1 {
            // Not an Odoo exception: Odoo sends the traceback, whose last line names it.
            let short = name.strip_prefix("builtins.").unwrap_or(name);
            assert!(string.starts_with("Traceback (most recent call last):\n"), "{string}");
            assert_eq!(string.lines().last(), Some(format!("{short}: {message}").as_str()), "{string}");
        } else {
            assert_eq!(string, message, "{name}");
        }

        let (code, string) = call(&svc, &format!("/xmlrpc/{service}"), method, &params).await.expect_err("a fault");
        let code = code.as_str().unwrap_or_else(|| panic!("legacy fault codes are strings: {code}")).to_string();
        match legacy {
            Some("AccessDenied") => assert_eq!((code.as_str(), string.as_str()), ("AccessDenied", "Access Denied")),
            Some(prefix) => {
                assert_eq!(code, format!("{prefix}{message}"), "{name}");
                assert_eq!(string, "", "{name}");
            }
            None => {
                assert_eq!(code, message, "{name}");
                assert!(string.starts_with("Traceback (most recent call last):\n"), "{string}");
            }
        }
    }
    assert_eq!(svc.read(running).await["job_status"], "running", "nothing changed");
}

#[tokio::test]
async fn values_are_mapped_as_odoos_marshaller_maps_them() {
    let svc = Service::start().await;
    let id = svc.create(&valid_connector()).await;
    let fields = json!({"fields": ["name", "next_run_at", "create_date", "interval_minutes", "odk_password", "callback_in_bulk"]});
    let body = call_xml(
        "execute_kw",
        &[json!(DB), json!(UID), json!(API_KEY), json!(M), json!("read"), json!([[id]]), fields],
    );
    let a = post(&svc, V2_OBJECT, body.into_bytes()).await;
    // Empty is False, datetimes are "YYYY-MM-DD HH:MM:SS" strings, secrets are masked.
    assert!(a.body.contains("<name>next_run_at</name>\n<value><boolean>0</boolean></value>"), "{}", a.body);
    assert!(a.body.contains("<name>interval_minutes</name>\n<value><int>60</int></value>"), "{}", a.body);
    assert!(a.body.contains("<name>odk_password</name>\n<value><string>********</string></value>"), "{}", a.body);
    let Message::Response(rows) = a.message else { panic!("{}", a.body) };
    let created = rows[0]["create_date"].as_str().expect("a string");
    assert!(chrono::NaiveDateTime::parse_from_str(created, "%Y-%m-%d %H:%M:%S").is_ok(), "{created}");

    // What clients may send: <nil/> (allow_none=True) for an absent argument, typed
    // dateTime.iso8601 values (taken as the ORM's strings), untyped strings, i8.
    let raw = format!(
        "<?xml version='1.0'?><methodCall><methodName>execute_kw</methodName><params>\
         <param><value>{DB}</value></param><param><value><i8>{UID}</i8></value></param>\
         <param><value>{API_KEY}</value></param><param><value>{M}</value></param>\
         <param><value>preview_mts_request</value></param>\
         <param><value><array><data><value><array><data><value><int>{id}</int></value></data></array></value>\
         <value><dateTime.iso8601>20260101T00:00:00</dateTime.iso8601></value>\
         <value><dateTime.iso8601>20260102T00:00:00</dateTime.iso8601></value></data></array></value></param>\
         <param><value><struct><member><name>context</name><value><nil/></value></member></struct></value></param>\
         </params></methodCall>"
    );
    let a = post(&svc, V2_OBJECT, raw.into_bytes()).await;
    let Message::Response(preview) = a.message else { panic!("{}", a.body) };
    let expected =
        svc.connector("preview_mts_request", json!([[id], "2026-01-01 00:00:00", "2026-01-02 00:00:00"])).await;
    assert_eq!(without_clock(preview), without_clock(as_odoo_marshals(&expected)));
}

#[tokio::test]
async fn refused_requests_get_a_fault_and_change_nothing() {
    let svc = Service::start().await;
    svc.create(&valid_connector()).await;
    let before = snapshot(&svc).await;
    let create = |vals: &str| {
        format!(
            "<?xml version='1.0'?><methodCall><methodName>execute_kw</methodName><params>\
             <param><value>{DB}</value></param><param><value><int>2</int></value></param>\
             <param><value>{API_KEY}</value></param><param><value>{M}</value></param>\
             <param><value>create</value></param><param><value><array><data>{vals}</data></array></value></param>\
             </params></methodCall>"
        )
    };
    // Ten entities, each ten of the one before: a billion "lol"s if expanded.
    let entities: String = (1..10)
        .map(|i| {
            let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
            format!("<!ENTITY lol{i} '{}'>", format!("&{prev};").repeat(10))
        })
        .collect();
    let laughs = format!(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>{entities}]>{}",
        create("<value><struct><member><name>name</name><value>&lol9;</value></member></struct></value>")
    );
    let xxe = format!(
        "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>{}",
        create("<value><struct><member><name>name</name><value>&e;</value></member></struct></value>")
    );
    let deep = create(&format!(
        "{}<value>x</value>{}",
        "<value><array><data>".repeat(10_000),
        "</data></array></value>".repeat(10_000)
    ));
    let valid = create("<value><struct><member><name>name</name><value>ok</value></member></struct></value>");
    let cases = [
        (laughs, "DTD"),
        (xxe, "DTD"),
        (deep, "nested deeper than 128"),
        (
            create(
                "<value><struct><member><name>interval_minutes</name><value><int>sixty</int></value></member></struct></value>",
            ),
            "<int> value is not valid",
        ),
        (
            create(
                "<value><struct><member><name>x</name><value><boolean>yes</boolean></value></member></struct></value>",
            ),
            "<boolean> value is not valid",
        ),
        (
            create("<value><struct><member><name>name</name><value>&custom;</value></member></struct></value>"),
            "entity reference",
        ),
        (create("<value><struct><member><name>name</name><bogus/></member></struct></value>"), "unknown element"),
        (valid[..valid.len() - 30].to_string(), ""),
        ("\u{0}\u{1}garbage<<>>".to_string(), ""),
        ("<methodCall><methodName>x</methodName></methodCall>garbage<<>>".to_string(), ""),
        (format!("<?xml version='1.0' encoding='UTF-16'?>{valid}"), "encoding"),
    ];
    for (body, expected) in cases {
        for (path, int_codes) in [("/xmlrpc/2/object", true), ("/xmlrpc/object", false)] {
            let a = post(&svc, path, body.clone().into_bytes()).await;
            assert_eq!(a.status, 200, "{}", a.body);
            let Message::Fault { code, string } = &a.message else { panic!("{expected}: not a fault: {}", a.body) };
            let text = if int_codes {
                assert_eq!(code, &json!(1), "{}", a.body);
                string.as_str().unwrap_or_default()
            } else {
                code.as_str().unwrap_or_else(|| panic!("a string code: {}", a.body))
            };
            assert!(text.contains("Invalid XML-RPC request") && text.contains(expected), "{expected}: {text}");
            assert_no_secret("a fault", &a.body);
        }
    }
    // A body over 1 MiB: HTTP 413 with a fault, as /jsonrpc answers 413.
    let big = create(&format!(
        "<value><struct><member><name>name</name><value>{}</value></member></struct></value>",
        "x".repeat(1 << 20)
    ));
    let a = post(&svc, V2_OBJECT, big.into_bytes()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(matches!(a.message, Message::Fault { .. }), "{}", a.body);
    // Routes and methods as Odoo's: GET is 405, other paths 404, each with a fault.
    let raw = svc.get("/xmlrpc/2/common").await;
    assert_eq!(raw.status, 405, "{}", raw.body);
    assert_eq!(raw.headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    assert!(matches!(parse(raw.body.as_bytes()), Ok(Message::Fault { .. })), "{}", raw.body);
    for path in ["/xmlrpc", "/xmlrpc/2/", "/xmlrpc/2/object/extra"] {
        let a = post(&svc, path, call_xml("version", &[]).into_bytes()).await;
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(matches!(a.message, Message::Fault { .. }), "{}", a.body);
    }

    assert_eq!(snapshot(&svc).await, before, "the store changed");
    assert_eq!(svc.get("/health").await.status, 200);
    assert!(!svc.log().contains("panicked"), "{}", svc.log());
}

#[tokio::test]
async fn secrets_stay_masked_and_out_of_the_trace_log() {
    let mut svc = Service::start_with(Options::new().rust_log("trace")).await;
    let mut answers = String::new();
    let id = execute_kw(&svc, V2_OBJECT, M, "create", json!([valid_connector()]), json!({})).await.expect("created");
    for (method, args) in [
        ("read", json!([[id]])),
        ("search_read", json!([[], ["odk_password", "callback_auth_password"]])),
        ("preview_mts_request", json!([[id]])),
        ("write", json!([[id], {"odk_password": "odk-pw-SECRET-NEW3", "mapping": "not json"}])),
        ("search", json!([[["odk_password", "=", ODK_PASSWORD]]])),
    ] {
        let answer = execute_kw(&svc, OLD_OBJECT, M, method, args, json!({})).await;
        answers.push_str(&format!("{answer:?}\n"));
    }
    let row = execute_kw(&svc, V2_OBJECT, M, "read", json!([[id], ["odk_password"]]), json!({})).await.expect("read");
    assert_eq!(row[0]["odk_password"], "********");
    // Refused bodies holding the key and a password: the fault and the log must not echo them.
    for body in [
        format!(
            "<methodCall><methodName>login</methodName><params><param><value><int>{API_KEY}</int></value></param></params></methodCall>"
        ),
        format!("<methodCall><methodName>{API_KEY}</methodName><{ODK_PASSWORD}/></methodCall>"),
        format!("<methodCall><methodName>login</methodName><params><param><value>{API_KEY}</value></param></params>"),
        format!(
            "<methodCall><methodName>login</methodName><params><param><value>&{ODK_PASSWORD};</value></param></params></methodCall>"
        ),
    ] {
        let a = post(&svc, "/xmlrpc/2/common", body.into_bytes()).await;
        answers.push_str(&a.body);
    }
    let denied = call(&svc, "/xmlrpc/common", "login", &[json!(DB), json!(LOGIN), json!("wrong-SECRET-guess")]).await;
    assert_eq!(denied, Ok(json!(false)));
    assert!(svc.terminate().await.success());
    assert_no_secret("the XML-RPC answers", &answers);
    assert_no_secret("the trace log", &svc.log());
}

#[tokio::test]
async fn xmlrpc_calls_are_counted_like_jsonrpc_calls() {
    let svc = Service::start().await;
    for _ in 0..3 {
        execute_kw(&svc, V2_OBJECT, M, "search_read", json!([[]]), json!({})).await.expect("a result");
    }
    call(
        &svc,
        "/xmlrpc/object",
        "execute_kw",
        &[json!(DB), json!(UID), json!("bad"), json!(M), json!("x-evil\"}"), json!([])],
    )
    .await
    .expect_err("denied");
    call(&svc, "/xmlrpc/2/common", "version", &[]).await.expect("version");
    let metrics = svc.get("/metrics").await.body;
    for line in [
        "mtsc_rpc_calls_total{method=\"mts.connector.search_read\",outcome=\"ok\"} 3",
        "mtsc_rpc_calls_total{method=\"mts.connector.other\",outcome=\"AccessDenied\"} 1",
        "mtsc_rpc_calls_total{method=\"common.version\",outcome=\"ok\"} 1",
        "mtsc_http_requests_total{route=\"xmlrpc\",status=\"200\"} 5",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
}
