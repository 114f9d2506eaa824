//! The jq worker process (`mts-connector __jq-worker`): evaluates output formats for the
//! [`super::sandbox`] over its stdin and stdout, inside limits it sets on itself at start.
//!
//! # Protocol
//! Each request is one line of JSON, `{"source": "<jq program>", "records": [{"input":
//! …, "output": …}, …]}`; the worker answers one line per record, in order,
//! `{"ok": <callback body>}` or `{"err": "<message>"}`, and flushes after each. It exits
//! when stdin ends (the service closed it, or died).
//!
//! # Limits
//! - CPU: before each record the soft `RLIMIT_CPU` is set to the CPU time used so far plus
//!   the budget, so a record that spins past it gets `SIGXCPU` and the process ends (the
//!   sandbox reports it, kills what is left and starts another worker);
//! - memory: `RLIMIT_AS` caps the whole process; an allocation past it aborts the process;
//! - stack: records run on one thread with a stack of a quarter of the memory limit (at
//!   most [`MAX_STACK`]); a deeper recursion aborts the process ("overflowed its stack");
//! - no core dumps, at most 16 open files, and the process dies with its parent
//!   (`PR_SET_PDEATHSIG`); the sandbox also starts it with an empty environment.
//! - an answer is at most [`MAX_OUTPUT`] bytes.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{JqError, Program, render_callback};

/// Largest callback body a record may render to, in bytes of JSON.
pub const MAX_OUTPUT: usize = 4 << 20;
/// Largest stack of the evaluation thread.
pub const MAX_STACK: u64 = 256 << 20;
/// Compiled programs kept, by source.
const CACHE: usize = 64;

/// The worker's limits, from its command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU seconds one record may use.
    pub cpu_seconds: u64,
    /// Address space of the whole process, in bytes.
    pub memory_bytes: u64,
}

#[derive(Deserialize)]
struct Request {
    source: String,
    records: Vec<Value>,
}

/// Runs the worker until stdin ends; the process's exit code.
pub fn main(limits: Limits) -> std::process::ExitCode {
    if let Err(e) = confine(limits) {
        eprintln!("jq worker: cannot set its limits: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let stack = (limits.memory_bytes / 4).clamp(8 << 20, MAX_STACK) as usize;
    let eval = std::thread::Builder::new().name("jq-eval".into()).stack_size(stack).spawn(move || serve(limits));
    match eval.map(|t| t.join()) {
        Ok(Ok(Ok(()))) => std::process::ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("jq worker: {e}");
            std::process::ExitCode::FAILURE
        }
        _ => std::process::ExitCode::FAILURE,
    }
}

/// Reads requests and answers them, until stdin ends.
fn serve(limits: Limits) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut cache: HashMap<String, Result<Program, JqError>> = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request: Request = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad request: {e}")))?;
        if !cache.contains_key(&request.source) {
            if cache.len() >= CACHE {
                cache.clear();
            }
            let compiled = Program::compile_here(&request.source);
            cache.insert(request.source.clone(), compiled);
        }
        let program = cache.get(&request.source).cloned().unwrap_or_else(|| Err(JqError::Compile("no program".into())));
        for record in &request.records {
            arm_cpu_limit(limits.cpu_seconds);
            let answer = match &program {
                Ok(p) => render(p, record),
                Err(e) => Err(e.clone()),
            };
            let line = match answer {
                Ok(body) => json!({"ok": body}),
                Err(e) => json!({"err": e.to_string()}),
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    }
}

/// One record's callback body, within [`MAX_OUTPUT`].
fn render(program: &Program, record: &Value) -> Result<Value, JqError> {
    let body = render_callback(Some(program), &record["input"], &record["output"])?;
    let mut counter = Counter(0);
    // Writing to a counter cannot fail; a failure would only mean "too large".
    let _ = serde_json::to_writer(&mut counter, &body);
    if counter.0 > MAX_OUTPUT {
        return Err(JqError::Runtime(format!(
            "jq program output is {} bytes, more than the {MAX_OUTPUT} a callback body may be",
            counter.0
        )));
    }
    Ok(body)
}

/// Counts bytes written.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(resource, &mut limit) } == 0 { limit.rlim_max } else { libc::RLIM_INFINITY }
}

/// The limits that last for the process's life (see the module docs).
fn confine(limits: Limits) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        // The service died before the death signal was armed.
        std::process::exit(1);
    }
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    let memory = limits.memory_bytes.min(hard_limit(libc::RLIMIT_AS));
    set_limit(libc::RLIMIT_AS, memory, memory)?;
    let files = 16.min(hard_limit(libc::RLIMIT_NOFILE));
    set_limit(libc::RLIMIT_NOFILE, files, files)
}

/// Sets the soft CPU limit to what the process used so far plus `seconds`.
fn arm_cpu_limit(seconds: u64) {
    let mut usage: libc::rusage = unsafe_zeroed_rusage();
    // SAFETY: getrusage writes the struct we pass and nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return;
    }
    let micros = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    // Whole seconds, rounded up: the record gets between `seconds` and `seconds + 1`.
    let used = (micros(usage.ru_utime) + micros(usage.ru_stime)).div_ceil(1_000_000);
    let _ = set_limit(libc::RLIMIT_CPU, used + seconds.max(1), hard_limit(libc::RLIMIT_CPU));
}

fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes is valid.
    unsafe { std::mem::zeroed() }
}
