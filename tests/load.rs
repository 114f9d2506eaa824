//! Load: 200 concurrent JSON-RPC clients (200 keep-alive connections) mix
//! reads and writes against the real binary for three seconds. Every call must succeed,
//! every write must be durable and visible, and the service's own call counter must
//! agree with what the clients sent.
//!
//! Then clients that misbehave (bounded, loopback only, each test stops by itself):
//! more idle and slow connections than the service takes do not stop a normal client;
//! idle and slow connections are closed after their timeouts; large bodies without
//! credentials are refused before they are read, and the service's memory stays bounded
//! (its peak RSS, read from `/proc`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{API_KEY, DB, Options, Service, UID};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(3);
/// Connectors the clients read; each client writes its own.
const CONNECTORS: usize = 20;

fn call(model: &str, method: &str, args: Value, kwargs: Value, id: usize) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": id, "params": {"service": "object", "method": "execute_kw",
        "args": [DB, UID, API_KEY, model, method, args, kwargs]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_get_no_errors() {
    let svc = Service::start().await;
    let vals: Vec<Value> = (0..CONNECTORS)
        .map(|i| common::merged(&common::valid_connector(), &json!({"name": format!("Load {i}")})))
        .collect();
    let ids: Vec<u64> = svc
        .connector("create", json!([vals]))
        .await
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ids.len(), CONNECTORS);
    let url = format!("{}/jsonrpc", svc.url());
    let calls = Arc::new(AtomicUsize::new(0));
    // One pool: with 200 calls in flight it holds 200 keep-alive connections (building
    // 200 TLS-capable clients would cost more than the test).
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (url, calls, ids, http) = (url.clone(), calls.clone(), ids.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mine = ids[client % ids.len()];
            let mut n = 0;
            while started.elapsed() < RUN_FOR {
                n += 1;
                let id = client * 1_000_000 + n;
                let (body, check): (Value, fn(&Value) -> bool) = match n % 5 {
                    0 => (
                        call(
                            "mts.connector",
                            "search_read",
                            json!([[["name", "ilike", "load"]]]),
                            json!({"fields": ["name", "job_status"], "limit": 10}),
                            id,
                        ),
                        |r| r.as_array().is_some_and(|a| a.len() == 10),
                    ),
                    1 => (
                        call(
                            "mts.connector",
                            "read",
                            json!([[mine]]),
                            json!({"fields": ["name", "interval_minutes"]}),
                            id,
                        ),
                        |r| r.as_array().is_some_and(|a| a.len() == 1),
                    ),
                    2 => (call("mts.connector.run", "search_count", json!([[]]), json!({}), id), |r| r.is_u64()),
                    3 => (call("ir.model", "search_read", json!([[]]), json!({"fields": ["model"]}), id), |r| {
                        r.is_array()
                    }),
                    _ => {
                        // Clients sharing a connector write the same field: the last
                        // write wins, and it must be one of theirs.
                        (
                            call(
                                "mts.connector",
                                "write",
                                json!([[mine], {"interval_minutes": 1 + (n % 500)}]),
                                json!({}),
                                id,
                            ),
                            |r| *r == json!(true),
                        )
                    }
                };
                let resp = http.post(&url).json(&body).send().await.map_err(|e| format!("client {client}: {e}"))?;
                let status = resp.status().as_u16();
                let answer: Value = resp.json().await.map_err(|e| format!("client {client}: {e}"))?;
                if status != 200 || answer["id"] != json!(id) || !answer.get("result").is_some_and(check) {
                    return Err(format!("client {client} call {n}: HTTP {status} {answer}"));
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let total = calls.load(Ordering::Relaxed);
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.first());
    assert!(total >= CLIENTS * 2, "only {total} calls in {elapsed:?}");
    eprintln!(
        "{total} calls from {CLIENTS} clients in {elapsed:.1?}: {:.0} calls/s",
        total as f64 / elapsed.as_secs_f64()
    );

    // Every write landed: each connector holds a value one of its writers sent.
    let rows = svc.connector("read", json!([ids, ["interval_minutes"]])).await;
    for row in rows.as_array().expect("rows") {
        let v = row["interval_minutes"].as_i64().unwrap_or(0);
        assert!((1..=500).contains(&v), "{row}");
    }
    // The service counted every call it answered (plus the test's create and read).
    let metrics = svc.get("/metrics").await.body;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("mtsc_rpc_calls_total{") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, total + 2, "calls counted by /metrics");
    assert!(!metrics.contains("outcome=\"Internal"), "no store failures");
    assert_eq!(svc.get("/health").await.status, 200);
    assert!(!svc.log().contains("panicked"));
}

/// Raises this process's soft open-files limit to the hard one; answers the soft limit.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write the struct we pass and nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 { limit.rlim_max } else { 1024 }
    }
}

fn addr(svc: &Service) -> String {
    svc.url().trim_start_matches("http://").to_string()
}

/// Sockets the service process holds open.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// A value of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Whether the server closed `socket` (a read ends) within `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error answer (408 and the like) before the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens `n` connections that send nothing.
async fn idle_connections(svc: &Service, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr(svc)).await.expect("connect"));
    }
    out
}

/// Opens `n` connections that send a request's first line and then one header byte
/// every 200 ms (slowloris), for at most `for_at_most`.
async fn slow_connections(svc: &Service, n: usize, for_at_most: Duration) -> Vec<tokio::task::JoinHandle<bool>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr(svc)).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            if s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.is_err() {
                return true;
            }
            while started.elapsed() < for_at_most {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if s.write_all(b"a").await.is_err() {
                    // The server closed it.
                    return true;
                }
            }
            closed_within(&mut s, Duration::from_millis(100)).await
        }));
    }
    tasks
}

/// A normal client: `n` calls in a row on a fresh client, each answered within 3 s.
async fn normal_client_is_served(svc: &Service, n: usize) {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(3)).build().expect("client");
    for i in 0..n {
        let body = call("mts.connector", "search_count", json!([[]]), json!({}), i);
        let resp = http.post(format!("{}/jsonrpc", svc.url())).json(&body).send().await;
        let answer: Value = match resp {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => panic!("call {i} of a normal client failed: {e}"),
        };
        assert!(answer["result"].is_u64(), "call {i}: {answer}");
        assert_eq!(http.get(format!("{}/health", svc.url())).send().await.map(|r| r.status().as_u16()).ok(), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_beyond_the_limit_do_not_stop_a_normal_client() {
    let open_files = raise_open_files();
    // Long timeouts: only the connection limit (closing the longest idle) protects here.
    let svc = Service::start_with(
        Options::new()
            .arg("--max-connections")
            .arg("64")
            .arg("--idle-timeout-seconds")
            .arg("60")
            .arg("--header-timeout-seconds")
            .arg("60"),
    )
    .await;
    let idle = idle_connections(&svc, 150.min(open_files as usize / 4)).await;
    let slow = slow_connections(&svc, 50, Duration::from_secs(6)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    normal_client_is_served(&svc, 30).await;
    let sockets = open_sockets(svc.pid());
    assert!(sockets <= 64 + 16, "the service holds {sockets} sockets with a limit of 64 connections");
    drop(idle);
    for t in slow {
        let _ = t.await;
    }
    assert!(!svc.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_descriptors_do_not_stop_a_normal_client() {
    // The reported case: 1,100 idle connections exhausted the default 1,024 descriptors.
    let open_files = raise_open_files();
    let n = 1100.min(open_files.saturating_sub(200) as usize);
    let svc = Service::start().await;
    let idle = idle_connections(&svc, n).await;
    normal_client_is_served(&svc, 10).await;
    assert!(open_sockets(svc.pid()) <= 1000 + 16, "the default limit holds");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_their_timeouts() {
    let svc = Service::start_with(
        Options::new().arg("--idle-timeout-seconds").arg("1").arg("--header-timeout-seconds").arg("1"),
    )
    .await;
    let mut idle = idle_connections(&svc, 20).await;
    let slow = slow_connections(&svc, 20, Duration::from_secs(8)).await;
    let started = Instant::now();
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(5)).await, "an idle connection stayed open");
    }
    for t in slow {
        assert!(t.await.expect("slow client"), "a slow client kept its connection");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    // A keep-alive client that keeps talking is not cut.
    normal_client_is_served(&svc, 10).await;
    // A body that trickles in slower than the body timeout gets 408.
    let svc = Service::start_with(Options::new().arg("--body-timeout-seconds").arg("1")).await;
    let mut s = TcpStream::connect(addr(&svc)).await.expect("connect");
    s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.expect("an answer").unwrap_or(0);
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
}

/// Sends `head` and then up to `body` bytes (chunked if asked) while waiting for the
/// answer; answers its status line once it comes (the rest is not sent).
async fn send_large(address: String, head: String, body: usize, chunked: bool) -> String {
    let Ok(socket) = TcpStream::connect(&address).await else { return "no connection".into() };
    let (mut rd, mut wr) = socket.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 256 * 1024];
        let mut sent = 0;
        while sent < body {
            let ok = if chunked {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_ok()
                    && wr.write_all(&chunk).await.is_ok()
                    && wr.write_all(b"\r\n").await.is_ok()
            } else {
                wr.write_all(&chunk).await.is_ok()
            };
            if !ok {
                return;
            }
            sent += chunk.len();
        }
    });
    let mut answer = vec![0u8; 512];
    let status = match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string(),
        _ => "no answer".into(),
    };
    writer.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_without_credentials_are_refused_unread_and_memory_stays_bounded() {
    use common::world::*;
    let w = World::start(fast(60.0)).await;
    // A relay run waiting in MTS: a run that exists, with a bearer token.
    w.mts.hold_processing(true);
    let t = now_s() - chrono::TimeDelta::hours(2);
    w.odk.add_generated_submissions(PROJECT, FORM, 2, t, t + chrono::TimeDelta::minutes(30));
    let id = w.svc.create(&w.connector(json!({"callback_mode": "relay"}))).await;
    let fmt = mts_connector::model::format_datetime;
    w.svc.connector("action_import", json!([[id], fmt(t), fmt(t + chrono::TimeDelta::hours(1))])).await;
    let run = until(20, "the run submitted", || async {
        w.runs(id).await.into_iter().find(|r| r["state"] == "submitted").map(|r| r["id"].as_u64().unwrap_or(0))
    })
    .await;
    let pid = w.svc.pid();
    let before = memory(pid, "VmRSS");
    let size = 30 << 20;
    let address = addr(&w.svc);
    let relay_head = |run: u64| {
        format!(
            "POST /relay/{run} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        )
    };
    let rpc_head = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let chunked_head =
        "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_string();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (head, chunked, want) = match i % 4 {
            0 => (relay_head(run), false, "HTTP/1.1 401"),
            1 => (relay_head(999_999), false, "HTTP/1.1 404"),
            2 => (rpc_head.clone(), false, "HTTP/1.1 413"),
            _ => (chunked_head.clone(), true, "HTTP/1.1 413"),
        };
        let address = address.clone();
        tasks.push(tokio::spawn(async move { (send_large(address, head, size, chunked).await, want) }));
    }
    let started = Instant::now();
    for t in tasks {
        let (status, want) = t.await.expect("client");
        assert!(status.starts_with(want), "{status:?}, expected {want}");
    }
    let grown = memory(pid, "VmHWM").saturating_sub(before);
    eprintln!("120 large bodies refused in {:?}; peak RSS {} MiB above the start", started.elapsed(), grown >> 20);
    assert!(grown < 96 << 20, "the peak RSS grew by {} MiB", grown >> 20);
    // Nothing was stored, and the service serves.
    let deliveries = w.svc.ok("mts.connector.delivery", "search_count", json!([[]]), json!({})).await;
    assert_eq!(deliveries, 0);
    assert_eq!(w.svc.get("/health").await.status, 200);
}
