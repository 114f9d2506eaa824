//! Odoo's XML-RPC external API: `/xmlrpc/2/<service>` (integer fault codes) and the
//! legacy `/xmlrpc/<service>` (string fault codes), as `odoo/addons/base/controllers/rpc.py`
//! serves them.
//!
//! There is no second dispatch: a call is read into the same `{service, method, args}`
//! that `/jsonrpc` carries and handed to [`methods::jsonrpc`], so both protocols have
//! exactly the same methods, authentication, validation and secret masking. This module
//! only translates: XML-RPC values to JSON and back, and [`OdooError`]s to faults with
//! the codes and strings Odoo 17 gives (`xmlrpc_handle_exception_int` and
//! `xmlrpc_handle_exception_string`).
//!
//! Requests are read with `quick-xml`'s pull parser into an explicit stack (no
//! recursion, so nesting cannot overflow the stack), nesting of arrays and structs is
//! bounded by [`MAX_DEPTH`], and a document type declaration is refused outright:
//! quick-xml never expands DTD entities, and refusing the DTD means no entity but the
//! five predefined ones and character references can appear (no billion laughs, no
//! external entities). Answers are written the way Python's `xmlrpc.client` marshals
//! them, with Odoo's marshaller rules: datetimes are already strings, control characters
//! are dropped, and `nil` is never sent (Odoo marshals with `allow_none=False`).

use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use jsonrpsee::server::HttpBody;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Number, Value, json};

use super::error::OdooError;
use super::http::MAX_BODY;
use super::{App, methods};
use crate::metrics::METRICS;

/// Deepest nesting of arrays and structs accepted in a request: the recursion limit
/// `serde_json` applies to the JSON-RPC endpoint, so both protocols take the same values.
pub const MAX_DEPTH: usize = 128;

/// Odoo's fault codes on `/xmlrpc/2` (`RPC_FAULT_CODE_*` in `rpc.py`).
pub const FAULT_APPLICATION_ERROR: i64 = 1;
pub const FAULT_WARNING: i64 = 2;
pub const FAULT_ACCESS_DENIED: i64 = 3;
pub const FAULT_ACCESS_ERROR: i64 = 4;

/// Which of Odoo's two XML-RPC entry points a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/xmlrpc/<service>`: historical, fault codes are strings.
    Legacy,
    /// `/xmlrpc/2/<service>`: fault codes are integers.
    V2,
}

/// A routed XML-RPC endpoint: the dialect and the service named in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub dialect: Dialect,
    pub service: String,
}

impl Endpoint {
    /// The endpoint of `path`, or `None` when Odoo's routes `/xmlrpc/<service>` and
    /// `/xmlrpc/2/<service>` do not match it (a service is one non-empty path segment).
    pub fn parse(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix("/xmlrpc/")?;
        let (dialect, service) = match rest.strip_prefix("2/") {
            Some(service) => (Dialect::V2, service),
            None => (Dialect::Legacy, rest),
        };
        (!service.is_empty() && !service.contains('/')).then(|| Endpoint { dialect, service: service.to_string() })
    }
}

/// Why an XML-RPC document was refused. Messages name elements of the XML-RPC
/// vocabulary and byte offsets only, never any text of the document (not even an
/// unknown element's name): the document carries passwords.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not UTF-8 text")]
    NotUtf8,
    #[error("the XML declares an encoding other than UTF-8, the only one accepted")]
    Encoding,
    #[error("not well-formed XML at byte {at}: {what}")]
    NotXml { at: u64, what: String },
    #[error("document type declarations (DTDs) are refused, and so are the entities they declare")]
    Dtd,
    #[error("the entity reference at byte {0} is not one of XML's five predefined entities (no DTD is accepted)")]
    Entity(u64),
    #[error("unknown element at byte {0}: not part of XML-RPC")]
    UnknownElement(u64),
    #[error("<{element}> is not allowed {place}")]
    Misplaced { element: &'static str, place: String },
    #[error("text is not allowed {0}")]
    StrayText(String),
    #[error("arrays and structs are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a <{0}> value is not valid: {1}")]
    BadValue(&'static str, &'static str),
    #[error("{0}")]
    Structure(&'static str),
    #[error("expected a <{expected}> document, got <{got}>")]
    WrongRoot { expected: &'static str, got: &'static str },
}

/// A parsed XML-RPC document.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `<methodCall>`: the method name and its positional parameters.
    Call { method: String, params: Vec<Value> },
    /// `<methodResponse>` with one parameter.
    Response(Value),
    /// `<methodResponse>` with a `<fault>`: its `faultCode` and `faultString`.
    Fault { code: Value, string: Value },
}

/// The elements of the XML-RPC vocabulary (local names: prefixes such as Apache's
/// `ex:` are dropped, as Python's unmarshaller does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    MethodCall,
    MethodResponse,
    MethodName,
    Params,
    Param,
    Fault,
    Value,
    Array,
    Data,
    Struct,
    Member,
    Name,
    Scalar(Scalar),
}

/// The typed leaves of a `<value>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Int(&'static str),
    Boolean,
    Double(&'static str),
    String,
    DateTime,
    Base64,
    Nil,
}

impl Tag {
    fn of(local: &str) -> Option<Tag> {
        Some(match local {
            "methodCall" => Tag::MethodCall,
            "methodResponse" => Tag::MethodResponse,
            "methodName" => Tag::MethodName,
            "params" => Tag::Params,
            "param" => Tag::Param,
            "fault" => Tag::Fault,
            "value" => Tag::Value,
            "array" => Tag::Array,
            "data" => Tag::Data,
            "struct" => Tag::Struct,
            "member" => Tag::Member,
            "name" => Tag::Name,
            "int" => Tag::Scalar(Scalar::Int("int")),
            "i4" => Tag::Scalar(Scalar::Int("i4")),
            "i8" => Tag::Scalar(Scalar::Int("i8")),
            "i2" => Tag::Scalar(Scalar::Int("i2")),
            "i1" => Tag::Scalar(Scalar::Int("i1")),
            "biginteger" => Tag::Scalar(Scalar::Int("biginteger")),
            "boolean" => Tag::Scalar(Scalar::Boolean),
            "double" => Tag::Scalar(Scalar::Double("double")),
            "float" => Tag::Scalar(Scalar::Double("float")),
            "bigdecimal" => Tag::Scalar(Scalar::Double("bigdecimal")),
            "string" => Tag::Scalar(Scalar::String),
            "dateTime.iso8601" => Tag::Scalar(Scalar::DateTime),
            "base64" => Tag::Scalar(Scalar::Base64),
            "nil" => Tag::Scalar(Scalar::Nil),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Tag::MethodCall => "methodCall",
            Tag::MethodResponse => "methodResponse",
            Tag::MethodName => "methodName",
            Tag::Params => "params",
            Tag::Param => "param",
            Tag::Fault => "fault",
            Tag::Value => "value",
            Tag::Array => "array",
            Tag::Data => "data",
            Tag::Struct => "struct",
            Tag::Member => "member",
            Tag::Name => "name",
            Tag::Scalar(s) => match s {
                Scalar::Int(n) | Scalar::Double(n) => n,
                Scalar::Boolean => "boolean",
                Scalar::String => "string",
                Scalar::DateTime => "dateTime.iso8601",
                Scalar::Base64 => "base64",
                Scalar::Nil => "nil",
            },
        }
    }
}

/// One open element and what has been collected inside it so far.
#[derive(Debug)]
enum Frame {
    Root {
        tag: Tag,
        method: Option<String>,
        params: Option<Vec<Value>>,
        fault: Option<Value>,
    },
    MethodName(String),
    Params(Vec<Value>),
    /// `<param>` or `<fault>`: holds exactly one value.
    Slot {
        tag: Tag,
        value: Option<Value>,
    },
    Value {
        text: String,
        typed: Option<Value>,
    },
    Scalar {
        kind: Scalar,
        text: String,
    },
    Array(Vec<Value>),
    Data,
    Struct(Map<String, Value>),
    Member {
        name: Option<String>,
        value: Option<Value>,
    },
    Name(String),
}

impl Frame {
    fn tag(&self) -> Tag {
        match self {
            Frame::Root { tag, .. } | Frame::Slot { tag, .. } => *tag,
            Frame::MethodName(_) => Tag::MethodName,
            Frame::Params(_) => Tag::Params,
            Frame::Value { .. } => Tag::Value,
            Frame::Scalar { kind, .. } => Tag::Scalar(*kind),
            Frame::Array(_) => Tag::Array,
            Frame::Data => Tag::Data,
            Frame::Struct(_) => Tag::Struct,
            Frame::Member { .. } => Tag::Member,
            Frame::Name(_) => Tag::Name,
        }
    }

    /// Where text goes inside this element, if it may hold text at all.
    fn text_mut(&mut self) -> Option<&mut String> {
        match self {
            Frame::MethodName(s) | Frame::Name(s) | Frame::Value { text: s, .. } | Frame::Scalar { text: s, .. } => {
                Some(s)
            }
            _ => None,
        }
    }
}

/// The streaming reader's state: the open elements, how deep containers nest, and
/// whether the root element has been closed.
struct Parser {
    stack: Vec<Frame>,
    depth: usize,
    done: Option<Message>,
    seen_event: bool,
}

fn place(stack: &[Frame]) -> String {
    match stack.last() {
        Some(f) => format!("inside <{}>", f.tag().name()),
        None => "outside the root element".to_string(),
    }
}

impl Parser {
    /// Opens an element; `at` is its byte offset.
    fn start(&mut self, e: &BytesStart<'_>, at: u64) -> Result<(), ParseError> {
        let local = e.local_name().into_inner();
        let tag = Tag::of(local).ok_or(ParseError::UnknownElement(at))?;
        if self.done.is_some() {
            return Err(ParseError::Structure("there is content after the root element"));
        }
        let misplaced = |stack: &[Frame]| ParseError::Misplaced { element: tag.name(), place: place(stack) };
        let frame = match (self.stack.last(), tag) {
            (None, Tag::MethodCall | Tag::MethodResponse) => {
                Frame::Root { tag, method: None, params: None, fault: None }
            }
            (Some(Frame::Root { tag: Tag::MethodCall, method: None, .. }), Tag::MethodName) => {
                Frame::MethodName(String::new())
            }
            (Some(Frame::Root { params: None, fault: None, .. }), Tag::Params) => Frame::Params(Vec::new()),
            (Some(Frame::Root { tag: Tag::MethodResponse, params: None, fault: None, .. }), Tag::Fault) => {
                Frame::Slot { tag, value: None }
            }
            (Some(Frame::Params(_)), Tag::Param) => Frame::Slot { tag, value: None },
            (Some(Frame::Slot { value: None, .. } | Frame::Data | Frame::Member { value: None, .. }), Tag::Value) => {
                Frame::Value { text: String::new(), typed: None }
            }
            (Some(Frame::Value { typed: None, .. }), Tag::Scalar(kind)) => Frame::Scalar { kind, text: String::new() },
            (Some(Frame::Value { typed: None, .. }), Tag::Array | Tag::Struct) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                if tag == Tag::Array { Frame::Array(Vec::new()) } else { Frame::Struct(Map::new()) }
            }
            (Some(Frame::Value { typed: Some(_), .. }), Tag::Scalar(_) | Tag::Array | Tag::Struct) => {
                return Err(ParseError::Structure("a <value> holds more than one value"));
            }
            (Some(Frame::Array(_)), Tag::Data) => Frame::Data,
            (Some(Frame::Struct(_)), Tag::Member) => Frame::Member { name: None, value: None },
            (Some(Frame::Member { name: None, .. }), Tag::Name) => Frame::Name(String::new()),
            _ => return Err(misplaced(&self.stack)),
        };
        self.stack.push(frame);
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), ParseError> {
        match self.stack.last_mut().and_then(Frame::text_mut) {
            Some(buf) => {
                buf.push_str(text);
                Ok(())
            }
            None if text.chars().all(is_xml_space) => Ok(()),
            None => Err(ParseError::StrayText(place(&self.stack))),
        }
    }

    /// Closes the innermost element (quick-xml has checked that the end tag matches).
    fn end(&mut self) -> Result<(), ParseError> {
        let frame = self.stack.pop().ok_or(ParseError::Structure("an end tag closes nothing"))?;
        let value = match frame {
            Frame::Root { tag, method, params, fault } => {
                self.done = Some(match (tag, fault) {
                    (Tag::MethodCall, _) => Message::Call {
                        method: method.ok_or(ParseError::Structure("the <methodCall> has no <methodName>"))?,
                        params: params.unwrap_or_default(),
                    },
                    (_, Some(fault)) => {
                        let code = fault.get("faultCode").cloned();
                        let string = fault.get("faultString").cloned();
                        match (code, string) {
                            (Some(code), Some(string)) => Message::Fault { code, string },
                            _ => return Err(ParseError::Structure("a <fault> needs faultCode and faultString")),
                        }
                    }
                    (_, None) => match params.map(Vec::into_iter).as_mut().and_then(Iterator::next) {
                        Some(v) => Message::Response(v),
                        None => return Err(ParseError::Structure("a <methodResponse> holds no value")),
                    },
                });
                return Ok(());
            }
            Frame::MethodName(name) => {
                if let Some(Frame::Root { method, .. }) = self.stack.last_mut() {
                    *method = Some(name);
                }
                return Ok(());
            }
            Frame::Params(list) => {
                if let Some(Frame::Root { params, .. }) = self.stack.last_mut() {
                    *params = Some(list);
                }
                return Ok(());
            }
            Frame::Slot { tag, value } => {
                let value =
                    value.ok_or(ParseError::Misplaced { element: tag.name(), place: "without a <value>".into() })?;
                match self.stack.last_mut() {
                    Some(Frame::Params(list)) => list.push(value),
                    Some(Frame::Root { fault, .. }) if value.is_object() => *fault = Some(value),
                    _ => return Err(ParseError::Structure("a <fault> must hold a struct")),
                }
                return Ok(());
            }
            Frame::Name(name) => {
                if let Some(Frame::Member { name: slot, .. }) = self.stack.last_mut() {
                    *slot = Some(name);
                }
                return Ok(());
            }
            Frame::Member { name, value } => {
                let (Some(name), Some(value)) = (name, value) else {
                    return Err(ParseError::Structure("a struct <member> needs a <name> and a <value>"));
                };
                if let Some(Frame::Struct(map)) = self.stack.last_mut() {
                    map.insert(name, value);
                }
                return Ok(());
            }
            Frame::Data => return Ok(()),
            Frame::Value { text, typed: Some(v) } => {
                if !text.chars().all(is_xml_space) {
                    return Err(ParseError::StrayText("beside a typed value".into()));
                }
                return self.deliver(v);
            }
            // A value without a type element is a string (XML-RPC's default type).
            Frame::Value { text, typed: None } => return self.deliver(Value::String(text)),
            Frame::Scalar { kind, text } => scalar(kind, text)?,
            Frame::Array(items) => {
                self.depth -= 1;
                Value::Array(items)
            }
            Frame::Struct(map) => {
                self.depth -= 1;
                Value::Object(map)
            }
        };
        // A typed value, array or struct: it fills the enclosing <value>.
        if let Some(Frame::Value { typed, .. }) = self.stack.last_mut() {
            *typed = Some(value);
        }
        Ok(())
    }

    /// A finished `<value>` goes to its `<param>`, `<data>` (the array beneath it) or
    /// `<member>`.
    fn deliver(&mut self, value: Value) -> Result<(), ParseError> {
        let n = self.stack.len();
        match self.stack.last_mut() {
            Some(Frame::Slot { value: slot, .. } | Frame::Member { value: slot, .. }) => *slot = Some(value),
            Some(Frame::Data) if n >= 2 => {
                if let Frame::Array(items) = &mut self.stack[n - 2] {
                    items.push(value);
                }
            }
            _ => return Err(ParseError::Structure("a <value> is outside any parameter, array or struct")),
        }
        Ok(())
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The JSON value of a typed leaf.
fn scalar(kind: Scalar, text: String) -> Result<Value, ParseError> {
    let bad = |why| ParseError::BadValue(Tag::Scalar(kind).name(), why);
    Ok(match kind {
        Scalar::Int(_) => {
            let t = text.trim();
            match t.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) if !t.is_empty() && t.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit()) => {
                    return Err(bad("the integer is out of the 64-bit range"));
                }
                Err(_) => return Err(bad("not an integer")),
            }
        }
        // Python's unmarshaller takes exactly "0" and "1".
        Scalar::Boolean => match text.as_str() {
            "0" => Value::Bool(false),
            "1" => Value::Bool(true),
            _ => return Err(bad("a boolean is 0 or 1")),
        },
        Scalar::Double(_) => {
            let n = text.trim().parse::<f64>().map_err(|_| bad("not a number"))?;
            Value::Number(Number::from_f64(n).ok_or_else(|| bad("not a finite number"))?)
        }
        Scalar::String => Value::String(text),
        // Odoo's ORM takes datetimes as "YYYY-MM-DD HH:MM:SS" strings, which is also how
        // it answers them.
        Scalar::DateTime => {
            let t = text.trim();
            let t = t.strip_suffix('Z').unwrap_or(t);
            let parsed = ["%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%dT%H%M%S"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
                .ok_or_else(|| bad("expected YYYYMMDDTHH:MM:SS"))?;
            Value::String(parsed.format("%Y-%m-%d %H:%M:%S").to_string())
        }
        // Odoo passes binary data around as base64 text.
        Scalar::Base64 => {
            use base64::Engine as _;
            let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(&cleaned).map_err(|_| bad("not base64"))?;
            Value::String(cleaned)
        }
        Scalar::Nil => {
            if !text.chars().all(is_xml_space) {
                return Err(bad("<nil/> is empty"));
            }
            Value::Null
        }
    })
}

/// A quick-xml error as a message that holds no text of the document.
fn xml_error(e: &quick_xml::Error) -> String {
    use quick_xml::Error as E;
    use quick_xml::errors::IllFormedError as I;
    match e {
        E::Syntax(s) => s.to_string(),
        E::IllFormed(I::MissingEndTag(_)) => "an element is not closed".into(),
        E::IllFormed(I::UnmatchedEndTag(_)) => "an end tag has no start tag".into(),
        E::IllFormed(I::MismatchedEndTag { .. }) => "an end tag does not match its start tag".into(),
        E::IllFormed(_) => "the markup is ill-formed".into(),
        E::Escape(_) => "a character reference is not valid".into(),
        E::InvalidAttr(_) => "an attribute is not valid".into(),
        E::Encoding(_) => "the text is not valid in its encoding".into(),
        E::Namespace(_) => "a namespace prefix is not valid".into(),
        E::Io(_) => "the body could not be read".into(),
    }
}

/// Reads an XML-RPC document (a call or a response).
pub fn parse(body: &[u8]) -> Result<Message, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut reader = quick_xml::Reader::from_str(text);
    // `<nil/>`, `<value/>`, `<params/>`: the same as an empty element pair.
    reader.config_mut().expand_empty_elements = true;
    let mut p = Parser { stack: Vec::new(), depth: 0, done: None, seen_event: false };
    loop {
        let at = reader.buffer_position();
        let event =
            reader.read_event().map_err(|e| ParseError::NotXml { at: reader.error_position(), what: xml_error(&e) })?;
        let first = !p.seen_event;
        p.seen_event = true;
        match event {
            Event::Decl(d) => {
                if !first {
                    return Err(ParseError::Structure("the XML declaration is not at the start"));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| ParseError::Encoding)?;
                    if !matches!(enc.to_ascii_lowercase().as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                        return Err(ParseError::Encoding);
                    }
                }
            }
            Event::DocType(_) => return Err(ParseError::Dtd),
            Event::Start(e) => p.start(&e, at)?,
            Event::End(_) => p.end()?,
            // Never produced with `expand_empty_elements`; handled the same way anyway.
            Event::Empty(e) => {
                p.start(&e, at)?;
                p.end()?;
            }
            Event::Text(t) => p.text(&t.xml10_content())?,
            Event::CData(t) => p.text(&t.xml10_content())?,
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        _ => return Err(ParseError::Entity(at)),
                    },
                    Err(_) => {
                        return Err(ParseError::NotXml {
                            at: reader.buffer_position(),
                            what: "a character reference is not valid".into(),
                        });
                    }
                };
                p.text(c.encode_utf8(&mut [0; 4]))?;
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match p.done {
        Some(m) if p.stack.is_empty() => Ok(m),
        _ if p.stack.is_empty() => Err(ParseError::Structure("there is no <methodCall> element")),
        _ => Err(ParseError::Structure("the document ends before its root element is closed")),
    }
}

/// Reads a `<methodCall>`: its method name and parameters.
pub fn parse_call(body: &[u8]) -> Result<(String, Vec<Value>), ParseError> {
    match parse(body)? {
        Message::Call { method, params } => Ok((method, params)),
        _ => Err(ParseError::WrongRoot { expected: "methodCall", got: "methodResponse" }),
    }
}

// ------------------------------------------------------------------------- writing

/// Text as Odoo's marshaller writes it: XML 1.0 forbids control characters, so they are
/// dropped (Odoo's `CONTROL_CHARACTERS`; also U+FFFE and U+FFFF, which no XML may
/// hold), then `&`, `<` and `>` are escaped as Python's `xmlrpc.client.escape` does.
fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
}

/// One value in the layout of Python's `xmlrpc.client.Marshaller`. JSON `null` is
/// written as `False`: Odoo marshals answers with `allow_none=False` and its ORM uses
/// `False` for "empty", so no Odoo client expects `<nil/>`.
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null | Value::Bool(false) => out.push_str("<value><boolean>0</boolean></value>\n"),
        Value::Bool(true) => out.push_str("<value><boolean>1</boolean></value>\n"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // Python writes <int> (and refuses anything beyond 32 bits); <i8> is
                // the common extension for larger integers, read by Python's client.
                let tag = if i32::try_from(i).is_ok() { "int" } else { "i8" };
                out.push_str(&format!("<value><{tag}>{i}</{tag}></value>\n"));
            } else {
                // Above i64::MAX, or a fraction: a double, written like Python's repr.
                let f = n.as_f64().unwrap_or_default();
                out.push_str(&format!("<value><double>{f:?}</double></value>\n"));
            }
        }
        Value::String(s) => {
            out.push_str("<value><string>");
            push_text(out, s);
            out.push_str("</string></value>\n");
        }
        Value::Array(items) => {
            out.push_str("<value><array><data>\n");
            for item in items {
                write_value(out, item);
            }
            out.push_str("</data></array></value>\n");
        }
        Value::Object(map) => {
            out.push_str("<value><struct>\n");
            for (k, v) in map {
                out.push_str("<member>\n<name>");
                push_text(out, k);
                out.push_str("</name>\n");
                write_value(out, v);
                out.push_str("</member>\n");
            }
            out.push_str("</struct></value>\n");
        }
    }
}

/// A `<methodResponse>` holding `value`.
pub fn response_xml(value: &Value) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n");
    write_value(&mut out, value);
    out.push_str("</param>\n</params>\n</methodResponse>\n");
    out
}

/// A `<methodCall>` of `method` with `params`, laid out as Python's client sends it
/// (for clients of this service, such as the tests).
pub fn call_xml(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodCall>\n<methodName>");
    push_text(&mut out, method);
    out.push_str("</methodName>\n<params>\n");
    for p in params {
        out.push_str("<param>\n");
        write_value(&mut out, p);
        out.push_str("</param>\n");
    }
    out.push_str("</params>\n</methodCall>\n");
    out
}

/// A `<methodResponse>` holding a fault.
pub fn fault_xml(code: &Value, string: &str) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse>\n<fault>\n");
    let mut fault = Map::new();
    fault.insert("faultCode".into(), code.clone());
    fault.insert("faultString".into(), Value::String(string.to_string()));
    write_value(&mut out, &Value::Object(fault));
    out.push_str("</fault>\n</methodResponse>\n");
    out
}

/// What Python's `traceback.format_exception` ends with for the exception: Odoo sends
/// the whole traceback for errors that are not Odoo exceptions; the service has no
/// Python frames to show, so it sends the header and that last line.
fn traceback(e: &OdooError) -> String {
    let name = e.exception_name();
    let name = name.strip_prefix("builtins.").unwrap_or(name);
    format!("Traceback (most recent call last):\n{name}: {e}\n")
}

/// The fault code and string Odoo 17 answers for `e` (`xmlrpc_handle_exception_int`
/// on `/xmlrpc/2`, `xmlrpc_handle_exception_string` on `/xmlrpc`).
pub fn fault_for(dialect: Dialect, e: &OdooError) -> (Value, String) {
    let message = e.to_string();
    match dialect {
        Dialect::V2 => match e {
            OdooError::Access(_) => (json!(FAULT_ACCESS_ERROR), message),
            OdooError::AccessDenied => (json!(FAULT_ACCESS_DENIED), message),
            OdooError::User(_) | OdooError::Validation(_) | OdooError::Missing(_) => (json!(FAULT_WARNING), message),
            _ => (json!(FAULT_APPLICATION_ERROR), traceback(e)),
        },
        Dialect::Legacy => match e {
            OdooError::Missing(_) => (json!(format!("warning -- MissingError\n\n{message}")), String::new()),
            OdooError::Access(_) => (json!(format!("warning -- AccessError\n\n{message}")), String::new()),
            OdooError::AccessDenied => (json!("AccessDenied"), message),
            OdooError::User(_) | OdooError::Validation(_) => {
                (json!(format!("warning -- UserError\n\n{message}")), String::new())
            }
            _ => (json!(message), traceback(e)),
        },
    }
}

// --------------------------------------------------------------------------- HTTP

fn xml_response(status: StatusCode, body: String) -> Response<HttpBody> {
    let mut resp = Response::new(HttpBody::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    resp
}

/// A fault answered with an HTTP status other than 200 (the request never reached
/// Odoo's dispatch): code 1 on `/xmlrpc/2`, the message as the code on `/xmlrpc`.
fn http_fault(status: StatusCode, dialect: Dialect, message: &str) -> Response<HttpBody> {
    let (code, string) = fault_for(dialect, &OdooError::Value(message.to_string()));
    xml_response(status, fault_xml(&code, &string))
}

/// Handles one request to `/xmlrpc/*`: routes it as Odoo does (404 for a path that is
/// not `/xmlrpc/<service>` or `/xmlrpc/2/<service>`, 405 for anything but POST), reads
/// at most [`MAX_BODY`] bytes (413 beyond, as `/jsonrpc`), then [`answer`]s it.
pub async fn handle<B>(app: &App, req: Request<B>) -> Response<HttpBody>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    let Some(endpoint) = Endpoint::parse(&path) else {
        let dialect = if path.starts_with("/xmlrpc/2/") { Dialect::V2 } else { Dialect::Legacy };
        return http_fault(StatusCode::NOT_FOUND, dialect, &format!("404 Not Found: no XML-RPC endpoint at {path}"));
    };
    if req.method() != Method::POST {
        let mut resp = http_fault(
            StatusCode::METHOD_NOT_ALLOWED,
            endpoint.dialect,
            "405 Method Not Allowed: XML-RPC calls are POSTed",
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY as usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            let message = format!("413 Request Entity Too Large: the body is larger than {MAX_BODY} bytes");
            return http_fault(StatusCode::PAYLOAD_TOO_LARGE, endpoint.dialect, &message);
        }
        Err(_) => return http_fault(StatusCode::BAD_REQUEST, endpoint.dialect, "the body could not be read"),
    };
    answer(app, &endpoint, &body).await
}

/// Answers one XML-RPC call body on `endpoint` (HTTP 200, a result or a fault, as Odoo).
/// Every call that reaches the dispatch is counted like a JSON-RPC call.
pub async fn answer(app: &App, endpoint: &Endpoint, body: &[u8]) -> Response<HttpBody> {
    let started = Instant::now();
    let (method, params) = match parse_call(body) {
        Ok(call) => call,
        Err(e) => {
            tracing::debug!(error = %e, "XML-RPC request refused");
            let e = OdooError::Value(format!("Invalid XML-RPC request: {e}"));
            let (code, string) = fault_for(endpoint.dialect, &e);
            return xml_response(StatusCode::OK, fault_xml(&code, &string));
        }
    };
    // The one dispatch behind both protocols.
    let params = json!({"service": endpoint.service, "method": method, "args": params});
    let result = match methods::jsonrpc(app, &params).await {
        Ok(answer) => answer.into_value(),
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.exception_name().rsplit('.').next().unwrap_or("error"),
    };
    let label_path = match endpoint.dialect {
        Dialect::V2 => "/xmlrpc/2/",
        Dialect::Legacy => "/xmlrpc/",
    };
    METRICS.rpc_call(crate::metrics::rpc_method_label(label_path, &params), outcome, started.elapsed());
    let xml = match result {
        Ok(value) => response_xml(&value),
        Err(e) => {
            tracing::debug!(error = %e, "call refused");
            let (code, string) = fault_for(endpoint.dialect, &e);
            fault_xml(&code, &string)
        }
    };
    xml_response(StatusCode::OK, xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(params: &str) -> String {
        format!(
            "<?xml version='1.0'?>\n<methodCall>\n<methodName>m</methodName>\n<params>\n{params}</params>\n</methodCall>\n"
        )
    }

    fn params(xml: &str) -> Result<Vec<Value>, ParseError> {
        parse_call(call(xml).as_bytes()).map(|(_, p)| p)
    }

    fn one(value_xml: &str) -> Result<Value, ParseError> {
        params(&format!("<param>{value_xml}</param>")).map(|mut p| p.remove(0))
    }

    #[test]
    fn reads_what_python_xmlrpc_client_sends() {
        // `xmlrpc.client.dumps(('db', 2, 'pw', 'mts.connector', 'search', [[['a', '=', True]]], {'limit': 5}), 'execute_kw')`
        let body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>execute_kw</methodName>\n<params>\n\
            <param>\n<value><string>db</string></value>\n</param>\n<param>\n<value><int>2</int></value>\n</param>\n\
            <param>\n<value><string>pw</string></value>\n</param>\n<param>\n<value><string>mts.connector</string></value>\n</param>\n\
            <param>\n<value><string>search</string></value>\n</param>\n<param>\n<value><array><data>\n<value><array><data>\n\
            <value><array><data>\n<value><string>a</string></value>\n<value><string>=</string></value>\n\
            <value><boolean>1</boolean></value>\n</data></array></value>\n</data></array></value>\n</data></array></value>\n</param>\n\
            <param>\n<value><struct>\n<member>\n<name>limit</name>\n<value><int>5</int></value>\n</member>\n</struct></value>\n</param>\n\
            </params>\n</methodCall>\n";
        let (method, params) = parse_call(body.as_bytes()).expect("a call");
        assert_eq!(method, "execute_kw");
        assert_eq!(
            params,
            vec![
                json!("db"),
                json!(2),
                json!("pw"),
                json!("mts.connector"),
                json!("search"),
                json!([[["a", "=", true]]]),
                json!({"limit": 5})
            ]
        );
    }

    #[test]
    fn values_map_as_odoo_takes_them() {
        assert_eq!(one("<value>plain</value>"), Ok(json!("plain")));
        assert_eq!(one("<value/>"), Ok(json!("")));
        assert_eq!(one("<value><string/></value>"), Ok(json!("")));
        assert_eq!(
            one("<value><string>a &amp; b &lt;&#233;&#x41;&gt; <![CDATA[<raw>]]></string></value>"),
            Ok(json!("a & b <éA> <raw>"))
        );
        assert_eq!(one("<value><i4> -7 </i4></value>"), Ok(json!(-7)));
        assert_eq!(
            one(
                "<value><ex:i8 xmlns:ex='http://ws.apache.org/xmlrpc/namespaces/extensions'>9007199254740993</ex:i8></value>"
            ),
            Ok(json!(9007199254740993_i64))
        );
        assert_eq!(one("<value><double>1.5</double></value>"), Ok(json!(1.5)));
        assert_eq!(one("<value><boolean>0</boolean></value>"), Ok(json!(false)));
        assert_eq!(one("<value><nil/></value>"), Ok(Value::Null));
        assert_eq!(
            one("<value><dateTime.iso8601>20260102T03:04:05</dateTime.iso8601></value>"),
            Ok(json!("2026-01-02 03:04:05"))
        );
        assert_eq!(one("<value><base64>aGVs\nbG8=</base64></value>"), Ok(json!("aGVsbG8=")));
        assert_eq!(
            one("<value><struct><member><name>a</name><value><array><data/></array></value></member></struct></value>"),
            Ok(json!({"a": []}))
        );
        assert_eq!(params(""), Ok(vec![]));
        assert_eq!(
            parse_call(b"<methodCall><methodName>version</methodName></methodCall>"),
            Ok(("version".into(), vec![]))
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        for (xml, kind) in [
            ("<int>abc</int>", "int"),
            ("<int>99999999999999999999</int>", "int"),
            ("<boolean>true</boolean>", "boolean"),
            ("<double>nan</double>", "double"),
            ("<double>inf</double>", "double"),
            ("<dateTime.iso8601>yesterday</dateTime.iso8601>", "dateTime.iso8601"),
            ("<base64>!!!</base64>", "base64"),
            ("<nil>x</nil>", "nil"),
        ] {
            match one(&format!("<value>{xml}</value>")) {
                Err(ParseError::BadValue(k, _)) => assert_eq!(k, kind, "{xml}"),
                other => panic!("{xml}: {other:?}"),
            }
        }
    }

    #[test]
    fn entities_and_dtds_are_refused() {
        let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]>\
            <methodCall><methodName>&lol2;</methodName></methodCall>";
        assert_eq!(parse_call(laughs.as_bytes()), Err(ParseError::Dtd));
        let xxe = "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><methodCall><methodName>&e;</methodName></methodCall>";
        assert_eq!(parse_call(xxe.as_bytes()), Err(ParseError::Dtd));
        assert!(matches!(one("<value>&lol;</value>"), Err(ParseError::Entity(_))));
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = |n: usize| {
            format!(
                "<param>{}<value>1</value>{}</param>",
                "<value><array><data>".repeat(n),
                "</data></array></value>".repeat(n)
            )
        };
        assert!(params(&deep(MAX_DEPTH)).is_ok());
        assert_eq!(params(&deep(MAX_DEPTH + 1)), Err(ParseError::TooDeep));
        // Far past any stack: refused at level MAX_DEPTH + 1, long before the end.
        assert_eq!(params(&deep(50_000)), Err(ParseError::TooDeep));
    }

    #[test]
    fn malformed_documents_are_refused_for_the_right_reason() {
        use ParseError as P;
        let m = |element, place: &str| P::Misplaced { element, place: place.to_string() };
        let cases: &[(&[u8], ParseError)] = &[
            (b"", P::Empty),
            (b"   ", P::Empty),
            (b"\xff\xfe<", P::NotUtf8),
            (b"<methodCall>", P::Structure("the document ends before its root element is closed")),
            (b"<methodCall><methodName>x</methodName></methodCall><methodCall/>", P::Structure("there is content after the root element")),
            (b"<methodCall><methodName>x</methodName></wrong>", P::NotXml { at: 38, what: "an end tag does not match its start tag".into() }),
            (b"<methodCall><params/></methodCall>", P::Structure("the <methodCall> has no <methodName>")),
            (b"<methodCall><methodName>x</methodName><params><param/></params></methodCall>", m("param", "without a <value>")),
            (b"<methodCall><methodName>x</methodName><params><param><value><int>1</int><int>2</int></value></param></params></methodCall>", P::Structure("a <value> holds more than one value")),
            (b"<methodCall><methodName>x</methodName><params><param><value><struct><member><value>1</value></member></struct></value></param></params></methodCall>", P::Structure("a struct <member> needs a <name> and a <value>")),
            (b"<methodCall><methodName>x</methodName><bogus/></methodCall>", P::UnknownElement(38)),
            (b"<methodCall><methodName>x</methodName>stray</methodCall>", P::StrayText("inside <methodCall>".into())),
            (b"<methodCall><methodName>x</methodName><params><value>1</value></params></methodCall>", m("value", "inside <params>")),
            (b"<?xml version='1.0' encoding='ISO-8859-1'?><methodCall><methodName>x</methodName></methodCall>", P::Encoding),
            (b"<methodResponse><params><param><value>1</value></param></params></methodResponse>", P::WrongRoot { expected: "methodCall", got: "methodResponse" }),
            (b"<methodCall><methodName>x</methodName><params><param><value><int>1</int>junk</value></param></params></methodCall>", P::StrayText("beside a typed value".into())),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_call(body).as_ref(), Err(expected), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn answers_are_laid_out_as_python_marshals_them() {
        let xml = response_xml(
            &json!({"id": 1, "name": "a<b & c\u{1}", "next_run_at": null, "ok": true, "n": 1.5, "l": [3_000_000_000_i64]}),
        );
        assert_eq!(
            xml,
            "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n\
             <member>\n<name>id</name>\n<value><int>1</int></value>\n</member>\n\
             <member>\n<name>name</name>\n<value><string>a&lt;b &amp; c</string></value>\n</member>\n\
             <member>\n<name>next_run_at</name>\n<value><boolean>0</boolean></value>\n</member>\n\
             <member>\n<name>ok</name>\n<value><boolean>1</boolean></value>\n</member>\n\
             <member>\n<name>n</name>\n<value><double>1.5</double></value>\n</member>\n\
             <member>\n<name>l</name>\n<value><array><data>\n<value><i8>3000000000</i8></value>\n</data></array></value>\n</member>\n\
             </struct></value>\n</param>\n</params>\n</methodResponse>\n"
        );
        assert_eq!(
            parse(xml.as_bytes()),
            Ok(Message::Response(
                json!({"id": 1, "name": "a<b & c", "next_run_at": false, "ok": true, "n": 1.5, "l": [3_000_000_000_i64]})
            ))
        );
    }

    #[test]
    fn faults_carry_odoos_codes_and_strings() {
        let denied = fault_for(Dialect::V2, &OdooError::AccessDenied);
        assert_eq!(denied, (json!(3), "Access Denied".to_string()));
        assert_eq!(
            fault_for(Dialect::Legacy, &OdooError::AccessDenied),
            (json!("AccessDenied"), "Access Denied".to_string())
        );
        assert_eq!(fault_for(Dialect::V2, &OdooError::Validation("v".into())), (json!(2), "v".to_string()));
        assert_eq!(fault_for(Dialect::V2, &OdooError::Missing("m".into())), (json!(2), "m".to_string()));
        assert_eq!(fault_for(Dialect::V2, &OdooError::Access("a".into())), (json!(4), "a".to_string()));
        assert_eq!(
            fault_for(Dialect::Legacy, &OdooError::Validation("v".into())),
            (json!("warning -- UserError\n\nv"), String::new())
        );
        assert_eq!(
            fault_for(Dialect::Legacy, &OdooError::Missing("m".into())),
            (json!("warning -- MissingError\n\nm"), String::new())
        );
        assert_eq!(
            fault_for(Dialect::Legacy, &OdooError::Access("a".into())),
            (json!("warning -- AccessError\n\na"), String::new())
        );
        let (code, string) = fault_for(Dialect::V2, &OdooError::Attribute("no such method".into()));
        assert_eq!(
            (code, string.as_str()),
            (json!(1), "Traceback (most recent call last):\nAttributeError: no such method\n")
        );
        let (code, string) = fault_for(Dialect::Legacy, &OdooError::Key("no model".into()));
        assert_eq!(
            (code, string.as_str()),
            (json!("no model"), "Traceback (most recent call last):\nKeyError: no model\n")
        );
        let xml = fault_xml(&json!(3), "Access Denied");
        assert_eq!(parse(xml.as_bytes()), Ok(Message::Fault { code: json!(3), string: json!("Access Denied") }));
    }

    #[test]
    fn endpoints_are_odoos_routes() {
        let e = |d, s: &str| Some(Endpoint { dialect: d, service: s.to_string() });
        assert_eq!(Endpoint::parse("/xmlrpc/2/common"), e(Dialect::V2, "common"));
        assert_eq!(Endpoint::parse("/xmlrpc/2/object"), e(Dialect::V2, "object"));
        assert_eq!(Endpoint::parse("/xmlrpc/common"), e(Dialect::Legacy, "common"));
        assert_eq!(Endpoint::parse("/xmlrpc/2"), e(Dialect::Legacy, "2"));
        for path in ["/xmlrpc", "/xmlrpc/", "/xmlrpc/2/", "/xmlrpc/2/a/b", "/xmlrpc/a/b"] {
            assert_eq!(Endpoint::parse(path), None, "{path}");
        }
    }
}
