//! jq programs: compiling and running them with jaq 3, and rendering a connector's
//! `outputFormat` into a callback body the way the MOSIP Token Seeder does (pyjq / jq 1.6).
//!
//! # What is built once
//! jaq's compiler consumes itself on every compilation and cannot be snapshotted after the
//! standard library has been compiled, so the reusable part is kept in a process-wide
//! [`LazyLock`]: the *parsed* jq standard definitions (jaq-core, jaq-std, jaq-json, and the
//! jq 1.6 compatibility definitions below). [`Program::compile`] only lexes and parses the user
//! program, and links it against a clone of that parsed prelude and the native filter table.
//!
//! # jq 1.6 compatibility
//! * `@csv` / `@tsv` come from jaq-fmts' tabular writer.
//! * `join`, `todate`, `todateiso8601`, `date`, `dateadd`, `datesub`, `leaf_paths` and
//!   `recurse_down` are redefined with their jq 1.6 definitions
//!   (e.g. `[1, null, "a"] | join("-")` is `"1--a"`, `now | todate` has no fractional seconds).
//! * Numbers leave jaq as jq 1.6 would print them: a float with an integral value
//!   (|x| ≤ 2^53) becomes an integer, NaN becomes `null`, ±infinity becomes ±`f64::MAX`.
//!   Integers are kept exact over the whole i64/u64 range (jq 1.6 would round them to doubles).
//! * `env` / `$ENV` are not available: an output format must not be able to read the
//!   connector's environment (which holds credentials). Such programs do not compile.
//! * `halt` / `halt_error` do not stop the process; they are reported as runtime errors.
//!
//! # Bounds
//! A program is client input. [`Program::compile`] refuses sources over [`MAX_SOURCE`]
//! bytes or nested (brackets, braces, parentheses, string interpolations) deeper than
//! [`MAX_NESTING`] levels, and compiles on a thread of its own with a large stack
//! ([`COMPILE_STACK`]): jaq's parser and compiler recurse on the program, and within
//! `MAX_SOURCE` that stack holds any program. Running a program is not bounded here:
//! [`sandbox`] runs them in worker processes with a time and memory budget, which is
//! what the relay uses; [`Program::first`] and [`render_callback`] in this process are
//! for trusted programs (the fakes, the tests).
//!
//! - [`sandbox`]: the pool of worker processes (the service's side).
//! - [`worker`]: the worker process's loop and limits (`mts-connector __jq-worker`).
//!
//! Known jaq divergences that remain (pinned by the `known_divergences_from_jq_1_6` test):
//! assigning through `null` fails (`null | .a = 1`, `{} | .a.b = 1`, `setpath` through missing
//! keys; build the object instead: `{a: {b: 1}}`); floats with an integral value are *rendered
//! inside strings* as `2.0` (`4 / 2 | tostring`, `"\(4 / 2)"`, `tojson`, `@csv`) where jq
//! 1.6 writes `2`; `1 / 0` is infinity instead of an error; `ltrimstr`/`rtrimstr` with a
//! non-string argument error instead of passing the input through; `$__loc__`, `input`,
//! `inputs`, `input_filename`, `input_line_number`, `builtins`, `@base32`, `@base32d`,
//! `tostream`, `fromstream` and `truncate_stream` are not defined (such programs do not compile).

pub mod sandbox;
pub mod worker;

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use jaq_core::load::{self, Arena, File, Loader, lex, parse};
use jaq_core::native::{self, Fun, bome, v};
use jaq_core::{Compiler, Ctx, RunPtr, Vars, compile, data::JustLut};
use jaq_fmts::write::tabular::Row;
use jaq_json::{Num, Val};
use serde_json::Value;

/// An error from compiling or running a jq program; the text is meant for humans.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum JqError {
    /// The program does not lex, parse or link (e.g. it calls an undefined filter).
    #[error("{0}")]
    Compile(String),
    /// The program failed (or yielded nothing where a value was required) while running.
    #[error("{0}")]
    Runtime(String),
    /// The program ran past a budget of the sandbox (time, memory, stack) and was stopped.
    #[error("{0}")]
    Limit(String),
    /// The sandbox could not run the program at all (its worker process did not start).
    #[error("{0}")]
    Unavailable(String),
}

/// Largest program source accepted, in bytes. Output formats are a few hundred bytes.
pub const MAX_SOURCE: usize = 8 * 1024;
/// Deepest nesting of `(`, `[`, `{` and `\(` accepted.
pub const MAX_NESTING: usize = 256;
/// The stack of the thread a program is compiled on: jaq recurses on the program's
/// structure (even on flat chains such as `1+1+...`), and at [`MAX_SOURCE`] bytes the
/// deepest program needs under half of this in a debug build. Only the pages used are
/// ever touched.
pub const COMPILE_STACK: usize = 512 << 20;

/// One compilation at a time: each may use a large stack.
static COMPILING: Mutex<()> = Mutex::new(());

/// The jaq data kind our filters run on: plain `jaq_json::Val`s, no global data.
type Data = JustLut<Val>;
/// A compiled jaq filter.
type Filter = jaq_core::Filter<Data>;
/// A parsed (not yet compiled) jq definition.
type Def = parse::Def<&'static str>;

/// jq 1.6 definitions that differ from jaq's, or that jaq lacks. Later definitions shadow
/// earlier ones, so these are appended after jaq's standard library.
const JQ16_DEFS: &str = r#"
def join($x): reduce .[] as $i (null;
    (if . == null then "" else . + $x end) +
    ($i | if type == "boolean" or type == "number" then tostring else . // "" end)
  ) // "";
def todateiso8601: strftime("%Y-%m-%dT%H:%M:%SZ");
def todate: todateiso8601;
def date: todate;
def dateadd(u; n): . + n;
def datesub(u; n): . - n;
def leaf_paths: paths(scalars);
def recurse_down: recurse;
"#;

/// Native filters that are deliberately not offered to output formats (see the module docs).
const DISABLED_NATIVES: [&str; 1] = ["env"];

/// Errors shown per compile message; more are summarised as "and N more".
const MAX_REPORTED_ERRORS: usize = 5;
/// Runtime error messages are cut to this many characters: they may quote input values
/// (personal data) and end up in logs.
const MAX_RUNTIME_MESSAGE: usize = 300;
/// Deepest nesting of arrays/objects accepted when converting a jaq output back to JSON.
const MAX_OUTPUT_DEPTH: usize = 512;

/// The parsed standard definitions, built once per process.
static PRELUDE: LazyLock<Result<Vec<Def>, JqError>> = LazyLock::new(|| {
    let compat = load::parse(JQ16_DEFS, |p| p.defs())
        .ok_or_else(|| JqError::Compile("internal error: the jq 1.6 compatibility definitions do not parse".into()))?;
    Ok(jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).chain(compat).collect())
});

/// `@csv` and `@tsv`, built on jaq-fmts' tabular writer (its own `funs()` needs all formats).
fn tabular_funs() -> impl Iterator<Item = Fun<Data>> {
    let csv: RunPtr<Data> = |cv| bome(tabular(&cv.1, "CSV", Row::write_csv));
    let tsv: RunPtr<Data> = |cv| bome(tabular(&cv.1, "TSV", Row::write_tsv));
    let funs: [native::Filter<RunPtr<Data>>; 2] = [("@csv", v(0), csv), ("@tsv", v(0), tsv)];
    funs.into_iter().map(native::run::<Data>)
}

type RowWriter = fn(&Row, &mut dyn std::io::Write) -> std::io::Result<()>;

fn tabular(value: &Val, format: &str, write: RowWriter) -> jaq_json::ValR {
    let row = Row::try_from(value)
        .map_err(|e| jaq_json::Error::str(format_args!("cannot format {value} as {format}: {e}")))?;
    let mut buf = Vec::new();
    write(&row, &mut buf).map_err(jaq_json::Error::str)?;
    Ok(Val::utf8_str(buf))
}

/// All native filters a program may call.
fn natives() -> impl Iterator<Item = Fun<Data>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .chain(tabular_funs())
        .filter(|(name, _, _)| !DISABLED_NATIVES.contains(name))
}

/// Lets the `'static` prelude definitions be used with a shorter-lived program source.
fn shorten<'s>(def: Def) -> parse::Def<&'s str> {
    def
}

/// A compiled jq program. Cheap to clone; can be shared between threads.
#[derive(Clone)]
pub struct Program {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    filter: Filter,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program").field("source", &self.source()).finish()
    }
}

impl Program {
    /// Compiles `src` against the jq standard library. An empty (or whitespace-only) source
    /// is the identity program, as in jq.
    /// Bounded as the module docs say: refused when too long or nested too deep, compiled on
    /// a thread with [`COMPILE_STACK`] bytes of stack.
    pub fn compile(src: &str) -> Result<Program, JqError> {
        check_bounds(src)?;
        let _one_at_a_time = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
        let owned = src.to_owned();
        let compiler = std::thread::Builder::new()
            .name("jq-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn(move || Program::compile_here(&owned))
            .map_err(|e| JqError::Unavailable(format!("cannot start the jq compiler thread: {e}")))?;
        compiler
            .join()
            .unwrap_or_else(|_| Err(JqError::Compile("jq program does not compile: the compiler failed".into())))
    }

    /// [`Program::compile`] on the calling thread, which must have a large stack (the
    /// sandbox's workers do).
    pub(crate) fn compile_here(src: &str) -> Result<Program, JqError> {
        check_bounds(src)?;
        let prelude = PRELUDE.as_ref().map_err(Clone::clone)?;
        let code = if src.trim().is_empty() { "." } else { src };

        let arena = Arena::default();
        let loader = Loader::new(prelude.iter().cloned().map(shorten));
        let modules =
            loader.load(&arena, File { code, path: () }).map_err(|errs| JqError::Compile(load_errors_message(errs)))?;
        let filter = Compiler::default()
            .with_funs(natives())
            .compile(modules)
            .map_err(|errs| JqError::Compile(compile_errors_message(code, errs)))?;
        Ok(Program { inner: Arc::new(Compiled { source: src.to_owned(), filter }) })
    }

    /// The program text as given to [`Program::compile`].
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Runs the program on `input`; Ok(Some(first output)), Ok(None) when it yields nothing,
    /// Err(Runtime) when evaluation errors before the first output.
    pub fn first(&self, input: &serde_json::Value) -> Result<Option<serde_json::Value>, JqError> {
        self.first_val(json_to_val(input))
    }

    /// All outputs (stop at the first error).
    pub fn all(&self, input: &serde_json::Value) -> Result<Vec<serde_json::Value>, JqError> {
        let filter = &self.inner.filter;
        let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
        filter.id.run((ctx, json_to_val(input))).map(|out| val_to_json(&out.map_err(runtime_error)?)).collect()
    }

    fn first_val(&self, input: Val) -> Result<Option<Value>, JqError> {
        let filter = &self.inner.filter;
        let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
        let mut outputs = filter.id.run((ctx, input));
        match outputs.next() {
            None => Ok(None),
            Some(Ok(v)) => val_to_json(&v).map(Some),
            Some(Err(exn)) => Err(runtime_error(exn)),
        }
    }

    fn is_identity(&self) -> bool {
        self.source().trim().is_empty()
    }
}

/// Refuses a source over [`MAX_SOURCE`] bytes or nested deeper than [`MAX_NESTING`].
fn check_bounds(src: &str) -> Result<(), JqError> {
    if src.len() > MAX_SOURCE {
        return Err(JqError::Compile(format!(
            "jq program does not compile: it is {} bytes long, more than the {MAX_SOURCE} allowed",
            src.len()
        )));
    }
    if nesting(src) > MAX_NESTING {
        return Err(JqError::Compile(format!(
            "jq program does not compile: brackets, braces, parentheses or string interpolations are nested deeper than {MAX_NESTING} levels"
        )));
    }
    Ok(())
}

/// The deepest nesting of `(`, `[`, `{` and string interpolation `\(` in a source, by a
/// small scan that knows strings (and their escapes) and comments. An unbalanced source
/// counts what it opened; the parser reports it properly.
fn nesting(src: &str) -> usize {
    // Each open level remembers whether it is an interpolation (closing it re-enters the string).
    let mut open: Vec<bool> = Vec::new();
    let mut deepest = 0;
    let mut in_string = false;
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                // An escape: its next character is taken; `\(` opens an interpolation.
                '\\' if chars.next() == Some('(') => {
                    open.push(true);
                    in_string = false;
                }
                '"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_string = true,
                '#' => {
                    // A comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '(' | '[' | '{' => open.push(false),
                // Closing an interpolation goes back into its string.
                ')' | ']' | '}' if open.pop() == Some(true) => in_string = true,
                _ => {}
            }
        }
        deepest = deepest.max(open.len());
    }
    deepest
}

/// What MTS sends as a callback body: the first output of `program` run on
/// {"input": input, "output": output}; with no program (None or empty/whitespace source) it is `.output`.
/// A program yielding nothing or erroring is Err(Runtime) (MTS would send an empty body; we refuse instead).
pub fn render_callback(
    program: Option<&Program>,
    input: &serde_json::Value,
    output: &serde_json::Value,
) -> Result<serde_json::Value, JqError> {
    let Some(program) = program.filter(|p| !p.is_identity()) else {
        return Ok(output.clone());
    };
    let doc = Val::obj(
        [(Val::from("input".to_owned()), json_to_val(input)), (Val::from("output".to_owned()), json_to_val(output))]
            .into_iter()
            .collect(),
    );
    program
        .first_val(doc)?
        .ok_or_else(|| JqError::Runtime("jq program yielded no output, so there is no callback body".into()))
}

// ---------------------------------------------------------------------------------------------
// Value conversion
// ---------------------------------------------------------------------------------------------

/// serde_json → jaq. Integers stay integers (big ones become jaq big integers), object key
/// order is kept.
fn json_to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            // Without serde_json's `arbitrary_precision`, a number that is neither i64 nor
            // u64 is an f64, so `as_f64` is always `Some`.
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => items.iter().map(json_to_val).collect(),
        Value::Object(map) => Val::obj(map.iter().map(|(k, v)| (Val::from(k.clone()), json_to_val(v))).collect()),
    }
}

/// jaq → serde_json, with jq 1.6's number printing rules (see the module docs).
fn val_to_json(value: &Val) -> Result<Value, JqError> {
    val_to_json_at(value, 0)
}

fn val_to_json_at(value: &Val, depth: usize) -> Result<Value, JqError> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(JqError::Runtime(format!("jq program output is nested deeper than {MAX_OUTPUT_DEPTH} levels")));
    }
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n)?,
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(|v| val_to_json_at(v, depth + 1)).collect::<Result<_, _>>()?),
        Val::Obj(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let Val::TStr(key) = k else {
                    return Err(JqError::Runtime(truncate(format!(
                        "jq program output has an object key that is not a string: {k}"
                    ))));
                };
                out.insert(String::from_utf8_lossy(key).into_owned(), val_to_json_at(v, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

fn num_to_json(n: &Num) -> Result<Value, JqError> {
    let unparsable = |s: &str| JqError::Runtime(format!("jq program output number {s} is invalid"));
    Ok(match n {
        Num::Int(i) => Value::from(*i),
        Num::BigInt(b) => {
            let digits = b.to_string();
            if let Ok(i) = digits.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = digits.parse::<u64>() {
                Value::from(u)
            } else {
                // beyond 64 bits: a double, as in jq
                float_to_json(digits.parse::<f64>().map_err(|_| unparsable(&digits))?)
            }
        }
        Num::Float(f) => float_to_json(*f),
        Num::Dec(s) => float_to_json(s.parse::<f64>().map_err(|_| unparsable(s))?),
    })
}

/// Largest magnitude up to which every integer is exactly representable as an f64.
const MAX_SAFE_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

fn float_to_json(f: f64) -> Value {
    if f.is_nan() {
        Value::Null
    } else if f.is_infinite() {
        Value::from(f64::MAX.copysign(f))
    } else if f.fract() == 0.0 && f.abs() <= MAX_SAFE_FLOAT_INT {
        // exact: integral and within ±2^53
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Error messages
// ---------------------------------------------------------------------------------------------

fn runtime_error(exn: jaq_core::Exn<'_, Val>) -> JqError {
    let message = match exn.get_err() {
        Ok(err) => match err.into_val() {
            Val::TStr(s) => format!("jq program failed: {}", String::from_utf8_lossy(&s)),
            other => format!("jq program failed: {other} (not a string)"),
        },
        Err(exn) => match exn.get_halt() {
            Ok(code) => format!("jq program called halt (exit code {code})"),
            Err(_) => "jq program failed: unexpected control flow (break outside its label)".into(),
        },
    };
    JqError::Runtime(truncate(message))
}

/// Cuts a message to [`MAX_RUNTIME_MESSAGE`] characters.
fn truncate(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_RUNTIME_MESSAGE) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Byte offset of `part` inside `whole`, if `part` is a sub-slice of it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= whole.len()).then_some(start)
}

/// " at line L, column C" for a sub-slice of the program text, or "" if it is not one.
fn position(code: &str, part: &str) -> String {
    let Some(offset) = offset_in(code, part) else {
        return String::new();
    };
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!(" at line {line}, column {column}")
}

/// How to name what the lexer/parser found at `part` (the rest of the program from there).
fn found(part: &str) -> String {
    const MAX_TOKEN_CHARS: usize = 24;
    let word = part.split_whitespace().next().unwrap_or("");
    if word.is_empty() {
        "end of program".into()
    } else if word.chars().count() > MAX_TOKEN_CHARS {
        format!("`{}…`", word.chars().take(MAX_TOKEN_CHARS).collect::<String>())
    } else {
        format!("`{word}`")
    }
}

fn lex_expected(expect: &lex::Expect<&str>) -> &'static str {
    match expect {
        lex::Expect::Delim("(") => "closing parenthesis",
        lex::Expect::Delim("[") => "closing bracket",
        lex::Expect::Delim("{") => "closing brace",
        lex::Expect::Delim(_) => "closing quote",
        other => other.as_str(),
    }
}

fn load_errors_message(errs: load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (file, err) in errs {
        let at = |part: &str| position(file.code, part);
        match err {
            load::Error::Io(errs) => messages
                .extend(errs.into_iter().map(|(path, e)| format!("cannot load module \"{path}\"{}: {e}", at(path)))),
            load::Error::Lex(errs) => messages.extend(errs.into_iter().map(|(expect, rest)| {
                format!("expected {}, found {}{}", lex_expected(&expect), found(rest), at(rest))
            })),
            load::Error::Parse(errs) => messages.extend(
                errs.into_iter()
                    .map(|(expect, tok)| format!("expected {}, found {}{}", expect.as_str(), found(tok), at(tok))),
            ),
        }
    }
    summarise(messages)
}

fn compile_errors_message(code: &str, errs: compile::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (file, errs) in errs {
        for (name, undefined) in errs {
            let what = match undefined {
                compile::Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                other => format!("undefined {} `{name}`", other.as_str()),
            };
            let hint = if DISABLED_NATIVES.contains(&name) || name == "$ENV" {
                " (the environment is not available to jq programs here)"
            } else {
                ""
            };
            let origin = if std::ptr::eq(file.code, code) {
                position(code, name)
            } else {
                " (in the jq standard library)".into()
            };
            messages.push(format!("{what}{origin}{hint}"));
        }
    }
    summarise(messages)
}

fn summarise(messages: Vec<String>) -> String {
    let total = messages.len();
    let mut text = String::from("jq program does not compile: ");
    if total == 0 {
        text.push_str("unknown error");
        return text;
    }
    text.push_str(&messages[..total.min(MAX_REPORTED_ERRORS)].join("; "));
    if total > MAX_REPORTED_ERRORS {
        text.push_str(&format!("; and {} more", total - MAX_REPORTED_ERRORS));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, input: Value) -> Result<Option<Value>, JqError> {
        Program::compile(src)?.first(&input)
    }

    fn one(src: &str, input: Value) -> Value {
        match run(src, input) {
            Ok(Some(v)) => v,
            other => panic!("{src}: expected one output, got {other:?}"),
        }
    }

    fn compile_error(src: &str) -> String {
        match Program::compile(src) {
            Err(JqError::Compile(msg)) => msg,
            other => panic!("{src}: expected a compile error, got {other:?}"),
        }
    }

    #[test]
    fn program_is_send_sync_clone() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Program>();
        assert_send_sync::<JqError>();
    }

    #[test]
    fn prelude_parses() {
        assert!(PRELUDE.is_ok(), "{:?}", PRELUDE.as_ref().err());
    }

    #[test]
    fn program_is_shared_across_threads() {
        let p = Program::compile(".a + 1").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || p.first(&json!({"a": i})).unwrap())
            })
            .collect();
        let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(outs, vec![Some(json!(1)), Some(json!(2)), Some(json!(3)), Some(json!(4))]);
    }

    #[test]
    fn debug_shows_source_only() {
        let p = Program::compile(".output.token").unwrap();
        assert_eq!(format!("{p:?}"), r#"Program { source: ".output.token" }"#);
        assert_eq!(p.source(), ".output.token");
    }

    #[test]
    fn compile_error_trailing_pipe() {
        let msg = compile_error(".output |");
        assert!(msg.starts_with("jq program does not compile: "), "{msg}");
        assert!(msg.contains("expected term"), "{msg}");
        assert!(msg.contains("end of program"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn compile_error_unclosed_call() {
        let msg = compile_error("foo(");
        assert!(msg.contains("closing parenthesis"), "{msg}");
        assert!(msg.contains("line 1, column 5"), "{msg}");
    }

    #[test]
    fn compile_error_undefined_filter_has_position() {
        let msg = compile_error("{a: .x,\n b: undefined_fn}");
        assert_eq!(msg, "jq program does not compile: undefined filter `undefined_fn/0` at line 2, column 5");
        let msg = compile_error("foo(1; 2)");
        assert!(msg.contains("undefined filter `foo/2`"), "{msg}");
        let msg = compile_error(". as $x | $y");
        assert!(msg.contains("undefined variable `$y`"), "{msg}");
    }

    #[test]
    fn compile_error_bad_token_and_string() {
        let msg = compile_error(".a & .b");
        assert!(msg.contains("`&`"), "{msg}");
        let msg = compile_error(r#""abc"#);
        assert!(msg.contains("closing quote"), "{msg}");
        let msg = compile_error("if . then 1");
        assert!(msg.contains("else or end"), "{msg}");
    }

    #[test]
    fn compile_error_reports_all_undefined_but_bounded() {
        let src = (0..8).map(|i| format!("f{i}")).collect::<Vec<_>>().join(", ");
        let msg = compile_error(&src);
        assert!(msg.contains("`f0/0`") && msg.contains("`f4/0`"), "{msg}");
        assert!(!msg.contains("`f5/0`"), "{msg}");
        assert!(msg.ends_with("; and 3 more"), "{msg}");
    }

    #[test]
    fn env_is_not_available() {
        let msg = compile_error("env.HOME");
        assert!(msg.contains("undefined filter `env/0`"), "{msg}");
        assert!(msg.contains("environment"), "{msg}");
        let msg = compile_error("$ENV.HOME");
        assert!(msg.contains("`$ENV`"), "{msg}");
    }

    #[test]
    fn modules_cannot_be_loaded() {
        assert!(matches!(Program::compile(r#"import "foo" as foo; ."#), Err(JqError::Compile(_))));
    }

    #[test]
    fn render_without_program_is_output() {
        let input = json!({"id": "p1"});
        let output = json!({"token": "T", "vid": "123"});
        assert_eq!(render_callback(None, &input, &output).unwrap(), output);
        for blank in ["", "   \n\t"] {
            let p = Program::compile(blank).unwrap();
            assert_eq!(render_callback(Some(&p), &input, &output).unwrap(), output);
            assert_eq!(p.source(), blank);
            assert_eq!(p.first(&json!(5)).unwrap(), Some(json!(5)));
        }
    }

    #[test]
    fn render_openg2p_output_format() {
        let p = Program::compile(r#"{"partner_id": .input.id, "id_type": "MOSIP UIN TOKEN", "value": .output.token}"#)
            .unwrap();
        let input = json!({"id": 42, "vid": "2345", "name": "A"});
        let output = json!({"vid": "2345", "token": "tok-123", "status": "SUCCESS"});
        let body = render_callback(Some(&p), &input, &output).unwrap();
        assert_eq!(body, json!({"partner_id": 42, "id_type": "MOSIP UIN TOKEN", "value": "tok-123"}));
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["partner_id", "id_type", "value"]);
    }

    #[test]
    fn render_sees_input_and_output() {
        let p = Program::compile(".").unwrap();
        // "." is a real program (not blank): it sees the whole document
        let body = render_callback(Some(&p), &json!({"__id": "x"}), &json!({"token": "t"})).unwrap();
        assert_eq!(body, json!({"input": {"__id": "x"}, "output": {"token": "t"}}));
        let p = Program::compile(r#""\(.input.__id):\(.output.token)""#).unwrap();
        let body = render_callback(Some(&p), &json!({"__id": 7}), &json!({"token": "t"})).unwrap();
        assert_eq!(body, json!("7:t"));
    }

    #[test]
    fn render_empty_and_errors_are_refused() {
        let (i, o) = (json!({"x": "abc"}), json!({"token": "t"}));
        for src in ["empty", ".output | select(.token == \"nope\")"] {
            let p = Program::compile(src).unwrap();
            assert!(matches!(render_callback(Some(&p), &i, &o), Err(JqError::Runtime(_))), "{src}");
        }
        let p = Program::compile(".input.x | tonumber").unwrap();
        assert!(matches!(render_callback(Some(&p), &i, &o), Err(JqError::Runtime(_))));
        let p = Program::compile(r#"error("boom")"#).unwrap();
        assert_eq!(render_callback(Some(&p), &i, &o), Err(JqError::Runtime("jq program failed: boom".into())));
    }

    #[test]
    fn first_and_all() {
        let p = Program::compile(".[] | select(. > 1)").unwrap();
        assert_eq!(p.first(&json!([1, 2, 3])).unwrap(), Some(json!(2)));
        assert_eq!(p.all(&json!([1, 2, 3])).unwrap(), vec![json!(2), json!(3)]);
        assert_eq!(p.first(&json!([0])).unwrap(), None);
        assert_eq!(p.all(&json!([])).unwrap(), Vec::<Value>::new());
        // an error after the first output: `first` does not see it, `all` stops at it
        let p = Program::compile(r#"1, error("late"), 3"#).unwrap();
        assert_eq!(p.first(&Value::Null).unwrap(), Some(json!(1)));
        assert_eq!(p.all(&Value::Null), Err(JqError::Runtime("jq program failed: late".into())));
    }

    #[test]
    fn runtime_errors_are_readable() {
        let err = run(".a", json!("text")).unwrap_err();
        let JqError::Runtime(msg) = err else { panic!("not a runtime error") };
        assert!(msg.starts_with("jq program failed: cannot index"), "{msg}");
        let err = run(r#"error({"code": 1})"#, Value::Null).unwrap_err();
        assert_eq!(err, JqError::Runtime(r#"jq program failed: {"code":1} (not a string)"#.into()));
        let long = "x".repeat(2000);
        let JqError::Runtime(msg) = run("error", json!(long)).unwrap_err() else { panic!("not a runtime error") };
        assert!(msg.chars().count() <= MAX_RUNTIME_MESSAGE + 1, "{}", msg.len());
    }

    #[test]
    fn halt_does_not_exit() {
        assert_eq!(run("halt", Value::Null), Err(JqError::Runtime("jq program called halt (exit code 0)".into())));
        assert!(matches!(run(r#""bye" | halt_error"#, Value::Null), Err(JqError::Runtime(_))));
    }

    #[test]
    fn conversions_round_trip_exactly() {
        let doc = json!({
            "z": 1, "a": 2, "m": [true, false, null, "ß✓", {"y": 1, "b": 2}],
            "i64max": i64::MAX, "i64min": i64::MIN, "u64max": u64::MAX,
            "f": 1.5, "neg": -0.25, "tiny": 1e-300, "big": 1.5e300, "s": "with \"quotes\"\n",
            "empty_obj": {}, "empty_arr": []
        });
        let out = one(".", doc.clone());
        assert_eq!(out, doc);
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        let want: Vec<_> = doc.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, want);
        assert_eq!(one(".u64max", doc.clone()), json!(u64::MAX));
        assert_eq!(one(".i64min", doc.clone()), json!(i64::MIN));
    }

    #[test]
    fn large_integers() {
        assert_eq!(one(". + 1", json!(9_007_199_254_740_993_i64)), json!(9_007_199_254_740_994_i64));
        assert_eq!(one(".", json!(18_446_744_073_709_551_615_u64)), json!(u64::MAX));
        assert_eq!(one("12345678901234567890", Value::Null), json!(12_345_678_901_234_567_890_u64));
        assert_eq!(one(". * 2", json!(i64::MAX)), json!(18_446_744_073_709_551_614_u64));
        // beyond 64 bits: a double, as jq would give
        assert_eq!(one(". * 4", json!(i64::MAX)), json!(3.6893488147419103e19));
        assert_eq!(one("tostring", json!(u64::MAX)), json!("18446744073709551615"));
    }

    #[test]
    fn numbers_print_like_jq() {
        assert_eq!(one("4 / 2", Value::Null), json!(2));
        assert_eq!(one("1 / 4", Value::Null), json!(0.25));
        assert_eq!(one("1.50", Value::Null), json!(1.5));
        assert_eq!(one(".", json!(3.0)), json!(3));
        assert_eq!(one("nan", Value::Null), Value::Null);
        assert_eq!(one("infinite", Value::Null), json!(f64::MAX));
        assert_eq!(one("-infinite", Value::Null), json!(-f64::MAX));
        assert_eq!(one("1e1000", Value::Null), json!(f64::MAX));
    }

    #[test]
    fn key_order_is_kept() {
        let out = one(r#"{"z": 1, "a": 2, "m": 3} + {"b": 4}"#, Value::Null);
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["z", "a", "m", "b"]);
        assert_eq!(one("keys", json!({"b": 1, "a": 2})), json!(["a", "b"]));
        assert_eq!(one("keys_unsorted", json!({"b": 1, "a": 2})), json!(["b", "a"]));
    }

    #[test]
    fn mts_builtins() {
        let doc = json!({
            "input": {"__id": "rec-1", "id": 7, "name": "Ana Maria", "tags": ["a", "b"], "n": null},
            "output": {"token": "TOK", "status": "SUCCESS"}
        });
        let cases: &[(&str, Value)] = &[
            (".input.__id", json!("rec-1")),
            (".output.token", json!("TOK")),
            (".input.missing // \"dflt\"", json!("dflt")),
            (".input.n // .output.token", json!("TOK")),
            (r#"if .output.status == "SUCCESS" then "ok" else "ko" end"#, json!("ok")),
            (r#"if .input.id > 5 then "big" elif .input.id > 1 then "mid" else "small" end"#, json!("big")),
            (r#""id=\(.input.id) tok=\(.output.token)""#, json!("id=7 tok=TOK")),
            (".input.id | tostring", json!("7")),
            (".input.__id | tostring", json!("rec-1")),
            (".input.tags | tojson", json!(r#"["a","b"]"#)),
            (".input.tags | tostring", json!(r#"["a","b"]"#)),
            ("{a: 1} | tojson", json!(r#"{"a":1}"#)),
            (r#""{\"a\":1}" | fromjson"#, json!({"a": 1})),
            (".input.name | ascii_downcase", json!("ana maria")),
            (".input.name | ascii_upcase", json!("ANA MARIA")),
            (r#".input.name | split(" ")"#, json!(["Ana", "Maria"])),
            (r#".input.tags | join(",")"#, json!("a,b")),
            (".input.tags | map(. + \"!\")", json!(["a!", "b!"])),
            (r#".input.tags | map(select(. != "a"))"#, json!(["b"])),
            (".input | keys", json!(["__id", "id", "n", "name", "tags"])),
            (r#".input | has("id")"#, json!(true)),
            (r#".input | has("nope")"#, json!(false)),
            (".input.tags | length", json!(2)),
            (".input.name | length", json!(9)),
            (".input | length", json!(5)),
            (r#".input.name | test("^ana"; "i")"#, json!(true)),
            (r#".input.name | test("^x")"#, json!(false)),
            (r#".input.name | sub("Maria"; "M.")"#, json!("Ana M.")),
            (r#".input.name | gsub("a"; "4")"#, json!("An4 M4ri4")),
            (r#".input.name | [match("a"; "g").offset]"#, json!([2, 5, 8])),
            (r#".input.name | capture("(?<first>\\w+) (?<last>\\w+)")"#, json!({"first": "Ana", "last": "Maria"})),
            (".output.token | @base64", json!("VE9L")),
            (".output.token | @base64 | @base64d", json!("TOK")),
            (r#"[.input.__id, .input.id, .output.token] | @csv"#, json!(r#""rec-1",7,"TOK""#)),
            (r#"[.input.__id, .input.id, null, true] | @tsv"#, json!("rec-1\t7\t\ttrue")),
            (r#"@csv "row: \([.input.id, "x"])""#, json!(r#"row: 7,"x""#)),
            (r#"@json "v=\(.input.tags)""#, json!(r#"v=["a","b"]"#)),
            (r#"@uri "q=\(.input.name)""#, json!("q=Ana%20Maria")),
            (".input | to_entries | map(.key) | first", json!("__id")),
            (".input | with_entries(select(.key == \"id\"))", json!({"id": 7})),
            (".input | del(.tags, .n, .name)", json!({"__id": "rec-1", "id": 7})),
            ("[.input.tags[] | ascii_upcase] | add", json!("AB")),
            (".input.tags | index(\"b\")", json!(1)),
            (r#".input.name | startswith("Ana") and endswith("ia")"#, json!(true)),
            (r#".input.name | ltrimstr("Ana ")"#, json!("Maria")),
            ("[.input.id, 3] | max", json!(7)),
            ("[range(3)]", json!([0, 1, 2])),
            ("reduce .input.tags[] as $t (\"\"; . + $t)", json!("ab")),
            (".input.id as $x | $x * 2", json!(14)),
            ("[.input[] | type]", json!(["string", "number", "string", "array", "null"])),
            ("\"42\" | tonumber", json!(42)),
            ("[limit(2; .input.tags[])]", json!(["a", "b"])),
            ("[paths] | length", json!(11)),
            ("[.input | leaf_paths] | length", json!(5)), // null leaves are skipped, as in jq
            ("{(.input.__id): .output.token}", json!({"rec-1": "TOK"})),
            (r#"[1, null, "a", true] | join("-")"#, json!("1--a-true")),
            (r#"[] | join("-")"#, json!("")),
            ("try error(\"x\") catch .", json!("x")),
            (".input.missing?.x", Value::Null),
            ("[.input.tags[] | {t: .}]", json!([{"t": "a"}, {"t": "b"}])),
            ("now | type", json!("number")),
            ("(now | floor) > 1700000000", json!(true)),
        ];
        for (src, want) in cases {
            assert_eq!(&one(src, doc.clone()), want, "program: {src}");
        }
    }

    #[test]
    fn known_divergences_from_jq_1_6() {
        // jq 1.6: {"a":1}; jaq refuses to update null
        assert!(matches!(run("null | .a = 1", Value::Null), Err(JqError::Runtime(_))));
        assert!(matches!(run("{} | .a.b = 1", Value::Null), Err(JqError::Runtime(_))));
        // ... but reading through null is fine, as in jq
        assert_eq!(one(".a.b.c", json!({})), Value::Null);
        assert_eq!(one(".a = 1", json!({})), json!({"a": 1}));
        // jq 1.6: "2"
        assert_eq!(one("4 / 2 | tostring", Value::Null), json!("2.0"));
        assert_eq!(one(r#""\(4 / 2)""#, Value::Null), json!("2.0"));
        // ... while the number itself is rendered as jq would
        assert_eq!(one("4 / 2", Value::Null), json!(2));
        // jq 1.6: error
        assert_eq!(one("1 / 0", Value::Null), json!(f64::MAX));
        for src in ["$__loc__", "input", "inputs", "@base32", "tostream"] {
            assert!(Program::compile(src).is_err(), "{src}");
        }
    }

    #[test]
    fn csv_rejects_nested_values() {
        assert!(matches!(run("[[1]] | @csv", Value::Null), Err(JqError::Runtime(_))));
        assert!(matches!(run("{} | @tsv", Value::Null), Err(JqError::Runtime(_))));
        assert_eq!(one(r#"["a\"b", 1.5] | @csv"#, Value::Null), json!(r#""a""b",1.5"#));
        assert_eq!(one(r#"["a\tb\\c"] | @tsv"#, Value::Null), json!(r"a\tb\\c"));
    }

    #[test]
    fn dates() {
        assert_eq!(one(r#""2024-01-02T03:04:05Z" | fromdate"#, Value::Null), json!(1_704_164_645));
        assert_eq!(one(r#""2024-01-02T03:04:05Z" | fromdateiso8601"#, Value::Null), json!(1_704_164_645));
        assert_eq!(one("0 | todate", Value::Null), json!("1970-01-01T00:00:00Z"));
        assert_eq!(one("1704164645 | todate", Value::Null), json!("2024-01-02T03:04:05Z"));
        // jq 1.6 truncates fractional seconds
        assert_eq!(one("1704164645.987 | todate", Value::Null), json!("2024-01-02T03:04:05Z"));
        assert_eq!(one("1704164645 | todateiso8601", Value::Null), json!("2024-01-02T03:04:05Z"));
        assert_eq!(one("1704164645 | date", Value::Null), json!("2024-01-02T03:04:05Z"));
        assert_eq!(one(r#"1704164645 | strftime("%Y-%m-%d")"#, Value::Null), json!("2024-01-02"));
        assert_eq!(one(r#"1704164645 | strftime("%d/%m/%Y %H:%M:%S")"#, Value::Null), json!("02/01/2024 03:04:05"));
        assert_eq!(one(r#""2024-01-02" | strptime("%Y-%m-%d")"#, Value::Null), json!([2024, 0, 2, 0, 0, 0, 2, 1]));
        assert_eq!(one(r#""2024-01-02" | strptime("%Y-%m-%d") | mktime"#, Value::Null), json!(1_704_153_600));
        assert_eq!(one("1704164645 | gmtime", Value::Null), json!([2024, 0, 2, 3, 4, 5, 2, 1]));
        assert_eq!(one(r#""02/01/2024" | strptime("%d/%m/%Y") | todate"#, Value::Null), json!("2024-01-02T00:00:00Z"));
        assert_eq!(one(r#"now | strftime("%Y") | tonumber >= 2024"#, Value::Null), json!(true));
        assert_eq!(
            one(r#"now | todate | test("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$")"#, Value::Null),
            json!(true)
        );
        assert!(matches!(run(r#""not a date" | fromdate"#, Value::Null), Err(JqError::Runtime(_))));
    }

    #[test]
    fn object_keys_must_be_strings_in_output() {
        // jaq objects may have non-string keys; JSON objects may not
        match run("{(1): 2}", Value::Null) {
            Err(JqError::Runtime(_)) => {}
            Ok(Some(v)) => panic!("unexpected output {v}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn deep_output_is_refused_not_crashing() {
        let out = run("reduce range(600) as $i (0; [.])", Value::Null);
        assert!(matches!(out, Err(JqError::Runtime(_))), "{out:?}");
        assert!(run("reduce range(100) as $i (0; [.])", Value::Null).is_ok());
    }
}
