//! Control-plane benchmark: `search_read` and `read` on `mts.connector` over `/jsonrpc`,
//! requests/s and p50/p99 latency at 1 and 16 concurrent keep-alive clients, against the
//! release service and against `bench_bare` answering the very same bytes (the limit).
//!
//! `bench_rpc SERVICE_BIN BARE_BIN [SECONDS] [CONNECTORS]` prints a Markdown table.
//!
//! The load driver is a minimal HTTP/1.1 client on one thread (raw TCP, requests
//! prebuilt), so it takes as little CPU from the servers as it can: the machine has
//! only two cores and all three programs share them.

#[path = "support/bench.rs"]
mod support;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Svc, quantile, rpc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONCURRENCY: &[usize] = &[1, 16];
const WARMUP: Duration = Duration::from_secs(1);

struct Result {
    rps: f64,
    p50_us: u32,
    p99_us: u32,
    requests: usize,
    errors: usize,
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from `stream`; answers whether
/// it is a 200 whose body contains `must_contain`. `buf` keeps leftover bytes.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, must_contain: &[u8]) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let ok = head.starts_with("http/1.1 200");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[header_end..header_end + length];
    let good = ok && body.windows(must_contain.len()).any(|w| w == must_contain);
    buf.drain(..header_end + length);
    Ok(good)
}

/// `clients` connections sending `request` back to back for `seconds` (after a warm-up).
async fn load(addr: &str, request: &[u8], clients: usize, seconds: Duration) -> Result {
    let deadline = Instant::now() + WARMUP + seconds;
    let measure_from = Instant::now() + WARMUP;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, request) = (addr.to_string(), request.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut latencies, mut errors, mut buf) = (Vec::with_capacity(1 << 16), 0usize, Vec::new());
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                stream.write_all(&request).await.expect("write");
                let good = read_response(&mut stream, &mut buf, b"\"result\"").await.unwrap_or(false);
                if sent >= measure_from {
                    latencies.push(sent.elapsed().as_micros() as u32);
                    errors += usize::from(!good);
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    Result {
        rps: all.len() as f64 / seconds.as_secs_f64(),
        p50_us: quantile(&all, 0.50).unwrap_or(0),
        p99_us: quantile(&all, 0.99).unwrap_or(0),
        requests: all.len(),
        errors,
    }
}

fn http_request(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn call_body(method: &str, args: Value, kwargs: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"service": "object", "method": "execute_kw",
        "args": ["mts_connector", 2, support::KEY, "mts.connector", method, args, kwargs]}})
    .to_string()
    .into_bytes()
}

/// Starts `bench_bare` answering `body`; answers the child and its address.
fn start_bare(bin: &PathBuf, body: &[u8]) -> (std::process::Child, String, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), body).expect("write body");
    let mut child =
        Command::new(bin).arg(file.path()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("bench_bare");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("bench_bare address");
    let addr = line.trim().trim_start_matches("listening on http://").to_string();
    (child, addr, file)
}

fn ms(us: u32) -> String {
    format!("{:.3}", f64::from(us) / 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let service_bin = PathBuf::from(args.get(1).expect("usage: bench_rpc SERVICE_BIN BARE_BIN [SECONDS] [CONNECTORS]"));
    let bare_bin = PathBuf::from(args.get(2).expect("BARE_BIN"));
    let seconds = Duration::from_secs(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5));
    let connectors: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(50);

    let svc = Svc::start(&service_bin, &[]);
    let http = reqwest::Client::new();
    let vals: Vec<Value> = (0..connectors)
        .map(|i| {
            support::connector(
                &format!("Registrations {i:03}"),
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                "http://127.0.0.1:9/v1/projects/1/forms/reg.svc/Submissions",
                "http://127.0.0.1:9/api/v1/registry/callback",
                "http://127.0.0.1:9/web/session/authenticate",
            )
        })
        .collect();
    rpc(&http, &svc.url, "mts.connector", "create", json!([vals]), json!({})).await;
    // What Odoo's list view and form view ask for.
    let calls = [
        (
            "search_read",
            call_body(
                "search_read",
                json!([[["is_recurring", "=", "recurring"]]]),
                json!({"fields": ["name", "input_type", "job_status", "last_run_id", "next_run_at"], "limit": 20, "order": "name"}),
            ),
        ),
        ("read", call_body("read", json!([[1]]), json!({}))),
    ];
    let svc_addr = svc.url.trim_start_matches("http://").to_string();
    println!(
        "| call | clients | server | requests/s | p50 ms | p99 ms | errors | ratio requests/s | ratio p50 | ratio p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, body) in &calls {
        // The service's exact answer becomes the bare server's fixed body.
        let answer = http
            .post(format!("{}/jsonrpc", svc.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("call")
            .bytes()
            .await
            .expect("answer");
        assert!(answer.windows(8).any(|w| w == b"\"result\""), "{}", String::from_utf8_lossy(&answer));
        let (mut bare, bare_addr, _file) = start_bare(&bare_bin, &answer);
        let request = http_request(body);
        for &clients in CONCURRENCY {
            let base = load(&bare_addr, &request, clients, seconds).await;
            let s = load(&svc_addr, &request, clients, seconds).await;
            println!(
                "| `{name}` ({} B answer) | {clients} | bare hyper (baseline) | {:.0} | {} | {} | {} | 1.00 | 1.00 | 1.00 |",
                answer.len(),
                base.rps,
                ms(base.p50_us),
                ms(base.p99_us),
                base.errors
            );
            println!(
                "| `{name}` | {clients} | mts-connector | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                s.rps,
                ms(s.p50_us),
                ms(s.p99_us),
                s.errors,
                s.rps / base.rps,
                f64::from(s.p50_us) / f64::from(base.p50_us.max(1)),
                f64::from(s.p99_us) / f64::from(base.p99_us.max(1)),
            );
            eprintln!("{name} x{clients}: bare {} requests, service {} requests", base.requests, s.requests);
        }
        let _ = bare.kill();
        let _ = bare.wait();
    }
    svc.stop();
}
