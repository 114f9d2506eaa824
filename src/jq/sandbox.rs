//! The jq sandbox: output formats run in a small pool of worker processes (the same
//! binary, `mts-connector __jq-worker`, see [`super::worker`]) with a CPU and memory
//! budget per record, so that a program that recurses forever, spins or eats memory
//! fails its record instead of the service.
//!
//! # How a record is evaluated
//! [`Sandbox::render`] queues a job (bounded queue) and waits for its answer. Each
//! worker has a driver task that takes a job plus whatever else is queued (up to
//! [`BATCH`]), sends them in one write (one line per program) and reads one answer line
//! per record. Several deliveries in flight are thus evaluated in one round trip.
//!
//! # When a worker fails
//! - it ends (a crash: the stack or memory limit, or `SIGXCPU` past the CPU budget): the
//!   record being evaluated fails with [`JqError::Limit`] naming the cause;
//! - it does not answer within the wall-clock limit (twice the CPU budget plus a
//!   second): it is killed and the record fails the same way;
//!
//! then a fresh worker takes the records that were queued behind. A program that failed
//! this way [`STRIKES`] times in a row is not evaluated again for [`QUARANTINE`]: its
//! records fail at once, so one bad connector cannot keep the workers busy.
//! If no worker can be started at all the records fail with [`JqError::Unavailable`]
//! (the relay retries those later).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::JqError;

/// Most records sent to a worker in one round trip.
pub const BATCH: usize = 64;
/// Consecutive failures (crash or time-out) after which a program is quarantined.
pub const STRIKES: u32 = 3;
/// How long a quarantined program's records fail without being evaluated.
pub const QUARANTINE: Duration = Duration::from_secs(300);
/// Jobs waiting for a worker.
const QUEUE: usize = 4096;
/// The tail of a worker's stderr kept to explain a crash.
const STDERR_TAIL: usize = 2048;
/// Largest answer line read from a worker (a body is at most `worker::MAX_OUTPUT`).
const MAX_LINE: u64 = (super::worker::MAX_OUTPUT as u64) * 2 + 1024;

/// How the sandbox runs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `mts-connector` binary to start workers from.
    pub exe: PathBuf,
    /// Worker processes.
    pub workers: usize,
    /// CPU time one record may use (whole seconds; at least 1).
    pub cpu_limit: Duration,
    /// Address space of one worker, in bytes.
    pub memory_limit: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mts-connector")),
            workers: 2,
            cpu_limit: Duration::from_secs(1),
            memory_limit: 1 << 30,
        }
    }
}

impl SandboxConfig {
    fn cpu_seconds(&self) -> u64 {
        self.cpu_limit.as_secs_f64().ceil().max(1.0) as u64
    }

    /// How long a record may take before its worker is killed.
    fn wall_limit(&self) -> Duration {
        Duration::from_secs(self.cpu_seconds() * 2 + 1)
    }
}

struct Job {
    source: Arc<str>,
    /// `{"input": …, "output": …}` as JSON text.
    record: String,
    reply: oneshot::Sender<Result<Value, JqError>>,
}

/// A program's recent hard failures.
#[derive(Default)]
struct Strikes {
    count: u32,
    last: String,
    since: Option<Instant>,
}

/// The pool of workers (see the module docs). Cheap to share.
pub struct Sandbox {
    config: SandboxConfig,
    jobs: mpsc::Sender<Job>,
    strikes: Mutex<HashMap<Arc<str>, Strikes>>,
}

static GLOBAL: OnceLock<Arc<Sandbox>> = OnceLock::new();

/// Makes `config` the process's sandbox (the first call wins); call inside a tokio runtime.
pub fn install(config: SandboxConfig) -> Arc<Sandbox> {
    GLOBAL.get_or_init(|| Sandbox::start(config)).clone()
}

/// The process's sandbox, started with the default configuration if nothing installed one.
pub fn global() -> Arc<Sandbox> {
    install(SandboxConfig::default())
}

impl Sandbox {
    /// Starts the driver tasks (workers are started on first use); call inside a tokio runtime.
    pub fn start(config: SandboxConfig) -> Arc<Sandbox> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sandbox = Arc::new(Sandbox { config, jobs: tx, strikes: Mutex::new(HashMap::new()) });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for n in 0..sandbox.config.workers.max(1) {
            let driver = Driver { sandbox: Arc::downgrade(&sandbox), rx: rx.clone(), worker: None, n };
            tokio::spawn(driver.run());
        }
        sandbox
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The callback body for one relayed record (`{"input", "output"}` as JSON text) with
    /// the output format `source`: MTS's semantics (see [`super::render_callback`]).
    pub async fn render(&self, source: &str, record: &str) -> Result<Value, JqError> {
        match self.enqueue(source, record).await? {
            Queued::Done(result) => result,
            Queued::Waiting(answer) => answer.await.unwrap_or_else(|_| Err(dropped())),
        }
    }

    /// [`Sandbox::render`] for many records of one program: all are queued before the first
    /// answer is awaited, so they travel to the workers together.
    pub async fn render_many(&self, source: &str, records: &[String]) -> Vec<Result<Value, JqError>> {
        let mut queued = Vec::with_capacity(records.len());
        for record in records {
            queued.push(self.enqueue(source, record).await);
        }
        let mut out = Vec::with_capacity(records.len());
        for q in queued {
            out.push(match q {
                Err(e) => Err(e),
                Ok(Queued::Done(result)) => result,
                Ok(Queued::Waiting(answer)) => answer.await.unwrap_or_else(|_| Err(dropped())),
            });
        }
        out
    }

    async fn enqueue(&self, source: &str, record: &str) -> Result<Queued, JqError> {
        // The record travels as one line: it must be JSON, and newlines outside strings
        // (the only place JSON allows them) are plain whitespace.
        serde_json::from_str::<serde::de::IgnoredAny>(record)
            .map_err(|e| JqError::Runtime(format!("the record is not JSON: {e}")))?;
        if source.trim().is_empty() {
            // No program: the body is `.output`; nothing to sandbox.
            let record: Value =
                serde_json::from_str(record).map_err(|e| JqError::Runtime(format!("the record is not JSON: {e}")))?;
            return Ok(Queued::Done(Ok(record.get("output").cloned().unwrap_or(Value::Null))));
        }
        let source: Arc<str> = Arc::from(source);
        if let Some(e) = self.quarantined(&source) {
            return Ok(Queued::Done(Err(e)));
        }
        let (reply, answer) = oneshot::channel();
        let record = if record.contains('\n') { record.replace('\n', " ") } else { record.to_string() };
        self.jobs
            .send(Job { source, record, reply })
            .await
            .map_err(|_| JqError::Unavailable("the jq sandbox is stopped".into()))?;
        Ok(Queued::Waiting(answer))
    }

    fn quarantined(&self, source: &Arc<str>) -> Option<JqError> {
        let strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        let s = strikes.get(source)?;
        let fresh = s.since.is_some_and(|t| t.elapsed() < QUARANTINE);
        (s.count >= STRIKES && fresh).then(|| {
            JqError::Limit(format!(
                "not evaluated: this output format failed on its last {} records ({}); fix it, then retry the failed deliveries",
                s.count, s.last
            ))
        })
    }

    fn record_outcome(&self, source: &Arc<str>, hard_failure: Option<&str>) {
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        match hard_failure {
            None => {
                strikes.remove(source);
            }
            Some(why) => {
                if strikes.len() > 1024 {
                    strikes.clear();
                }
                let s = strikes.entry(source.clone()).or_default();
                if s.since.is_some_and(|t| t.elapsed() >= QUARANTINE) {
                    *s = Strikes::default();
                }
                s.count += 1;
                s.last = why.to_string();
                s.since = Some(Instant::now());
            }
        }
    }
}

/// A queued record: answered at once (no program, quarantined) or waiting for a worker.
enum Queued {
    Done(Result<Value, JqError>),
    Waiting(oneshot::Receiver<Result<Value, JqError>>),
}

fn dropped() -> JqError {
    JqError::Unavailable("the jq sandbox dropped the record".into())
}

/// One running worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Worker {
    fn spawn(config: &SandboxConfig) -> std::io::Result<Worker> {
        let mut child = Command::new(&config.exe)
            .arg("__jq-worker")
            .arg("--cpu-seconds")
            .arg(config.cpu_seconds().to_string())
            .arg("--memory-bytes")
            .arg(config.memory_limit.to_string())
            // Nothing of the service's environment (it may hold credentials).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let missing = || std::io::Error::other("the worker's pipes are missing");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(missing)?);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            });
        }
        Ok(Worker { child, stdin, stdout, stderr })
    }

    /// Why the worker ended, from its exit status and the end of its stderr.
    async fn death(mut self, config: &SandboxConfig) -> String {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        // Let the stderr reader take the last bytes.
        tokio::task::yield_now().await;
        let tail = String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        let signal = match &status {
            Ok(Ok(s)) => std::os::unix::process::ExitStatusExt::signal(s),
            _ => None,
        };
        let mib = config.memory_limit >> 20;
        if tail.contains("overflowed its stack") {
            "the jq program recursed too deep (it exhausted the evaluator's stack; is a definition calling itself without end?)"
                .into()
        } else if tail.contains("memory allocation")
            || tail.contains("out of memory")
            || tail.contains("capacity overflow")
        {
            format!("the jq program used more than the {mib} MiB of memory an evaluation may use")
        } else if signal == Some(libc::SIGXCPU) {
            format!("the jq program ran longer than the {} s of CPU a record may use", config.cpu_seconds())
        } else {
            let how = match (status, signal) {
                (_, Some(sig)) => format!("signal {sig}"),
                (Ok(Ok(s)), None) => format!("exit status {}", s.code().unwrap_or(-1)),
                _ => "an unknown cause".into(),
            };
            format!("the jq evaluator stopped on this record ({how})")
        }
    }
}

/// Feeds one worker process.
struct Driver {
    sandbox: std::sync::Weak<Sandbox>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    worker: Option<Worker>,
    n: usize,
}

enum Read {
    Line(Value),
    Ended,
    TimedOut,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let batch = {
                let mut rx = self.rx.lock().await;
                let Some(first) = rx.recv().await else { return };
                let mut batch = VecDeque::from([first]);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push_back(job),
                        Err(_) => break,
                    }
                }
                batch
            };
            let Some(sandbox) = self.sandbox.upgrade() else { return };
            self.process(&sandbox, batch).await;
        }
    }

    /// Evaluates `batch`, respawning the worker as often as records kill it.
    async fn process(&mut self, sandbox: &Sandbox, mut batch: VecDeque<Job>) {
        let config = sandbox.config.clone();
        while !batch.is_empty() {
            let mut kept = VecDeque::with_capacity(batch.len());
            for job in batch.drain(..) {
                match sandbox.quarantined(&job.source) {
                    Some(e) => {
                        let _ = job.reply.send(Err(e));
                    }
                    None => kept.push_back(job),
                }
            }
            batch = kept;
            if batch.is_empty() {
                return;
            }
            let worker = match self.worker.take() {
                Some(w) => w,
                None => match Worker::spawn(&config) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(worker = self.n, error = %e, exe = %config.exe.display(), "cannot start a jq worker");
                        let message = format!("the jq sandbox cannot start a worker process: {e}");
                        for job in batch.drain(..) {
                            let _ = job.reply.send(Err(JqError::Unavailable(message.clone())));
                        }
                        return;
                    }
                },
            };
            let mut worker = worker;
            let lines = request_lines(&batch);
            let wall = config.wall_limit();
            let Worker { stdin, stdout, child, .. } = &mut worker;
            let write = async {
                for line in &lines {
                    if stdin.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = stdin.flush().await;
            };
            let read = async {
                // Answers in order; stop at the first record that ended the worker.
                let mut answered = Vec::new();
                for _ in 0..batch.len() {
                    match read_line(stdout, wall).await {
                        Read::Line(v) => answered.push(v),
                        Read::TimedOut => {
                            let _ = child.start_kill();
                            return (answered, Some(true));
                        }
                        Read::Ended => return (answered, Some(false)),
                    }
                }
                (answered, None)
            };
            let ((), (answered, failure)) = tokio::join!(write, read);
            for line in answered {
                let Some(job) = batch.pop_front() else { break };
                let result = match (line.get("ok"), line.get("err").and_then(Value::as_str)) {
                    (Some(ok), _) => Ok(ok.clone()),
                    (None, Some(err)) => Err(JqError::Runtime(err.to_string())),
                    _ => Err(JqError::Unavailable("the jq worker answered something unexpected".into())),
                };
                sandbox.record_outcome(&job.source, None);
                let _ = job.reply.send(result);
            }
            match failure {
                None => self.worker = Some(worker),
                Some(timed_out) => {
                    let why = if timed_out {
                        let _ = worker.child.kill().await;
                        format!("the jq program ran longer than {} s", wall.as_secs())
                    } else {
                        worker.death(&config).await
                    };
                    if let Some(job) = batch.pop_front() {
                        tracing::warn!(worker = self.n, reason = %why, "a jq evaluation was stopped; the record fails");
                        sandbox.record_outcome(&job.source, Some(&why));
                        let _ = job.reply.send(Err(JqError::Limit(why)));
                    }
                }
            }
        }
    }
}

/// The request lines for `batch`: consecutive jobs of one program share a line.
fn request_lines(batch: &VecDeque<Job>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let source = &batch[i].source;
        let mut line = String::from("{\"source\":");
        line.push_str(&Value::String(source.to_string()).to_string());
        line.push_str(",\"records\":[");
        let mut first = true;
        while i < batch.len() && batch[i].source == *source {
            if !first {
                line.push(',');
            }
            first = false;
            // The record is JSON text (compact, so without newlines): embedded as is.
            line.push_str(batch[i].record.trim());
            i += 1;
        }
        line.push_str("]}\n");
        lines.push(line);
    }
    lines
}

async fn read_line(stdout: &mut BufReader<ChildStdout>, wall: Duration) -> Read {
    let mut buf = Vec::new();
    let mut limited = (&mut *stdout).take(MAX_LINE);
    let read = limited.read_until(b'\n', &mut buf);
    match tokio::time::timeout(wall, read).await {
        Err(_) => Read::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => Read::Ended,
        Ok(Ok(_)) if !buf.ends_with(b"\n") => Read::Ended,
        Ok(Ok(_)) => serde_json::from_slice(&buf).map_or(Read::Ended, Read::Line),
    }
}
