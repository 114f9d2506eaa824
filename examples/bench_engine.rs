//! Engine benchmarks against the fakes (fake ODK Central, MTS and Odoo in this process,
//! answering at once), driving the release service as a child process:
//!
//! - `bench_engine scheduler SERVICE_BIN BARE_BIN [CONNECTORS] [MINUTES]`: that many
//!   recurring connectors with 1-minute intervals, all started together. Firing
//!   lateness (from the service's own `mtsc_scheduler_lateness_seconds`, rounds after the
//!   first) and the service's CPU share while idle between fires (from
//!   `/proc/<pid>/stat`, over the samples in which the service wrote no log line). The
//!   baselines, measured in the same run: the wake-up lateness of as many bare tokio
//!   timers due at the same instant, and the CPU of an idle `bench_bare` process.
//! - `bench_engine import SERVICE_BIN N[,N...] [FLAGS]`: a manual import of N ODK
//!   submissions (spread over 30 days, requests of at most 500; FLAGS go to `serve`):
//!   wall time, MTS requests, peak memory (VmHWM). The baselines: the same windows submitted straight to the fake
//!   MTS by this program (no service: the limit of the fakes), the fewest possible
//!   requests (N/500), and the service's own peak memory before the import.
//!
//! Each prints Markdown table rows.

#[path = "support/bench.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
use mts_connector::metrics::histogram_quantile;
use mts_connector::model::fields::Record;
use mts_connector::mts::{Input, Secrets, build_request};
use serde_json::{Value, json};
use support::{ODK_EMAIL, ODK_PW, ODOO_DB, ODOO_PW, Svc, cpu_ticks, histogram, histogram_delta, rpc, status_kb};

const PROJECT: &str = "1";
const FORM: &str = "registration";
const PER_REQUEST: usize = 500;

struct Fakes {
    odk: FakeOdk,
    mts: FakeMts,
    odoo: FakeOdoo,
}

impl Fakes {
    async fn start() -> Fakes {
        let odk = FakeOdk::start(ODK_EMAIL, ODK_PW).await.expect("fake odk");
        odk.add_form(PROJECT, FORM);
        let mts = FakeMts::start().await.expect("fake mts");
        let odoo = FakeOdoo::start(ODOO_DB, "admin", ODOO_PW).await.expect("fake odoo");
        Fakes { odk, mts, odoo }
    }

    fn connector(&self, name: &str) -> Value {
        support::connector(
            name,
            &self.mts.url(),
            &self.odk.url(),
            &self.odk.odata_url(PROJECT, FORM),
            &self.odoo.callback_url(),
            &self.odoo.auth_url(),
        )
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.1}", seconds * 1000.0)
}

/// Wake-up lateness of `n` tokio timers all due at the same instant: the floor for
/// firing `n` connectors due together on this machine.
async fn timer_baseline(n: usize) -> (f64, f64) {
    let due = tokio::time::Instant::now() + Duration::from_millis(500);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                (tokio::time::Instant::now() - due).as_secs_f64()
            })
        })
        .collect();
    let mut late = Vec::with_capacity(n);
    for t in tasks {
        late.push(t.await.unwrap_or_default());
    }
    late.sort_by(f64::total_cmp);
    (support::quantile(&late, 0.5).unwrap_or(0.0), support::quantile(&late, 0.99).unwrap_or(0.0))
}

/// Median time of one durable write on this disk: a record put into the store and
/// flushed (what the service does at least once per fire and per run state change).
async fn durable_write() -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = mts_connector::store::Store::open(dir.path(), &["m"]).expect("store");
    let mut times = Vec::new();
    for id in 1..=200u64 {
        let mut r = Record { id, ..Default::default() };
        r.set("state", "queued");
        let t = Instant::now();
        store.put("m", r).expect("put");
        store.flush().await.expect("flush");
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    support::quantile(&times, 0.5).unwrap_or(0.0)
}

async fn scheduler(service_bin: PathBuf, bare_bin: PathBuf, n: usize, minutes: u64) {
    let (base_p50, base_p99) = timer_baseline(n).await;
    let write = durable_write().await;
    let fakes = Fakes::start().await;
    let svc = Svc::start(&service_bin, &[]);
    let pid = svc.pid();
    let http = reqwest::Client::new();
    let created = Instant::now();
    let mut ids: Vec<Value> = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let vals: Vec<Value> = chunk.iter().map(|i| fakes.connector(&format!("Connector {i:05}"))).collect();
        let got = rpc(&http, &svc.url, "mts.connector", "create", json!([vals]), json!({})).await;
        ids.extend(got.as_array().cloned().unwrap_or_default());
    }
    let create_s = created.elapsed().as_secs_f64();
    // Started by one call: every round has all of them due in the same second.
    rpc(&http, &svc.url, "mts.connector", "action_start", json!([ids]), json!({})).await;
    let started = Instant::now();
    eprintln!("{n} connectors created in {create_s:.1} s and started");

    // Every 200 ms: the service's CPU time and the size of its log (written by the
    // service, read here: no load on it). Until the first round of fires is over,
    // `/metrics` is read every 2 s to snapshot the lateness histogram; those samples do
    // not count as idle.
    let step = Duration::from_millis(200);
    let total = Duration::from_secs(60 * minutes);
    let mut samples: Vec<(Instant, u64, u64)> = Vec::new(); // (time, cpu ticks, log bytes)
    let mut first_round_metrics: Option<String> = None;
    let (mut next_scrape, mut steady_from) = (Instant::now(), usize::MAX);
    // Once the time is up, stop at a quiet moment (2 s without a log line), so that no
    // round is cut in two.
    let quiet = |samples: &[(Instant, u64, u64)]| {
        samples.len() > 10 && samples[samples.len() - 10..].iter().all(|s| s.2 == samples[samples.len() - 1].2)
    };
    while started.elapsed() < total || !(quiet(&samples) || started.elapsed() > total + Duration::from_secs(60)) {
        let log_len = std::fs::metadata(&svc.log).map(|m| m.len()).unwrap_or(0);
        samples.push((Instant::now(), cpu_ticks(pid), log_len));
        // After the first round of fires (every connector fired once with a due time),
        // snapshot the lateness histogram: later rounds are the steady state.
        if first_round_metrics.is_none() && Instant::now() >= next_scrape {
            next_scrape = Instant::now() + Duration::from_secs(2);
            let text = support::scrape(&http, &svc.url).await;
            if support::sample(&text, "mtsc_scheduler_fires_total") >= n as f64 {
                first_round_metrics = Some(text);
                steady_from = samples.len() + 1;
                eprintln!("first round fired after {:.1} s", started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(step).await;
    }
    let end_metrics = support::scrape(&http, &svc.url).await;
    let hwm_kb = status_kb(pid, "VmHWM");
    let runs = rpc(&http, &svc.url, "mts.connector.run", "search_count", json!([[]]), json!({})).await;
    let open = rpc(
        &http,
        &svc.url,
        "mts.connector.run",
        "search_count",
        json!([[["state", "not in", ["done", "done_with_errors", "empty", "failed", "cancelled"]]]]),
        json!({}),
    )
    .await;

    // Idle: samples whose interval, and the intervals either side, saw no log line.
    let (mut idle_wall, mut idle_ticks, mut busy_wall) = (0.0, 0u64, 0.0);
    for i in steady_from.max(1)..samples.len().saturating_sub(1) {
        let quiet = |j: usize| samples[j].2 == samples[j - 1].2;
        let dt = (samples[i].0 - samples[i - 1].0).as_secs_f64();
        if quiet(i) && quiet(i + 1) && (i < 2 || quiet(i - 1)) {
            idle_wall += dt;
            idle_ticks += samples[i].1 - samples[i - 1].1;
        } else {
            busy_wall += dt;
        }
    }
    let idle_cpu = if idle_wall > 0.0 { idle_ticks as f64 / 100.0 / idle_wall } else { f64::NAN };

    // The idle baseline: a bare tokio/hyper process doing nothing, for as long.
    let mut bare = Command::new(&bare_bin)
        .arg(svc.log.as_os_str())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bench_bare");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = cpu_ticks(bare.id());
    let measure = Duration::from_secs_f64(idle_wall.clamp(5.0, 30.0));
    tokio::time::sleep(measure).await;
    let bare_cpu = (cpu_ticks(bare.id()) - t0) as f64 / 100.0 / measure.as_secs_f64();
    let _ = bare.kill();
    let _ = bare.wait();

    let lateness = match &first_round_metrics {
        Some(first) => histogram_delta(
            &histogram(first, "mtsc_scheduler_lateness_seconds"),
            &histogram(&end_metrics, "mtsc_scheduler_lateness_seconds"),
        ),
        None => histogram(&end_metrics, "mtsc_scheduler_lateness_seconds"),
    };
    let fires = lateness.last().map_or(0.0, |(_, n)| *n);
    let p50 = histogram_quantile(0.5, &lateness).unwrap_or(f64::NAN);
    let p99 = histogram_quantile(0.99, &lateness).unwrap_or(f64::NAN);
    let max_bucket = lateness
        .iter()
        .find(|(_, c)| *c >= fires)
        .map(|(le, _)| if le.is_infinite() { "> 300 s".to_string() } else { format!("<= {le} s") })
        .unwrap_or_default();
    let tick = histogram(&end_metrics, "mtsc_scheduler_tick_duration_seconds");
    let tick_p99 = histogram_quantile(0.99, &tick).unwrap_or(f64::NAN);

    println!("| figure | mts-connector | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| firing lateness p50 ({fires:.0} fires after the first round) | {} ms | {} ms ({n} tokio timers due at once) | {:.0}x |",
        ms(p50),
        ms(base_p50),
        p50 / base_p50.max(1e-6)
    );
    println!(
        "| firing lateness p99 | {} ms (largest: {max_bucket}) | {} ms | {:.0}x |",
        ms(p99),
        ms(base_p99),
        p99 / base_p99.max(1e-6)
    );
    println!(
        "| CPU while idle between fires ({idle_wall:.0} s idle of {:.0} s observed after the first round) | {:.2} % of a core | {:.2} % (idle bench_bare) | {} |",
        idle_wall + busy_wall,
        idle_cpu * 100.0,
        bare_cpu * 100.0,
        if bare_cpu > 0.0 { format!("{:.1}x", idle_cpu / bare_cpu) } else { "n/a (baseline 0)".into() }
    );
    println!(
        "| busy time per minute after the first round (firing, pre-counting, logging) | {:.1} s | - | - |",
        busy_wall * 60.0 / (idle_wall + busy_wall).max(1.0)
    );
    println!("| scheduler pass p99 (`mtsc_scheduler_tick_duration_seconds`) | {} ms | - | - |", ms(tick_p99));
    println!(
        "| one durable write on this disk (store put + flush, median of 200) | - | {:.2} ms | - |",
        write * 1000.0
    );
    println!("| runs after {minutes} min (open at the end) | {runs} ({open}) | - | - |");
    println!("| peak memory (VmHWM) | {:.0} MiB | - | - |", hwm_kb as f64 / 1024.0);
    println!("| creating {n} connectors over JSON-RPC (batches of 500) | {create_s:.1} s | - | - |");
    svc.stop();
    drop(fakes);
}

/// Submits `windows` straight to the fake MTS one after another (MTS works one request
/// at a time) and waits until MTS processed them all: the limit of the fakes.
async fn direct(fakes: &Fakes, windows: &[(DateTime<Utc>, DateTime<Utc>)]) -> f64 {
    let http = reqwest::Client::new();
    let rec = support::record(&fakes.connector("direct"));
    let url = format!("{}/authtoken/odk", fakes.mts.url());
    let started = Instant::now();
    let mut ids = Vec::new();
    for (start, end) in windows {
        let body = build_request(&rec, Input::Odk { start: *start, end: *end }, None, Secrets::Reveal, Utc::now());
        let resp: Value = http.post(&url).json(&body).send().await.expect("submit").json().await.expect("answer");
        ids.push(resp["response"]["request_identifier"].as_str().expect("request id").to_string());
    }
    for id in ids {
        while fakes.mts.status_of(&id).as_deref() != Some("processed") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed().as_secs_f64()
}

async fn import(service_bin: PathBuf, sizes: Vec<usize>, flags: &[&str]) {
    println!(
        "| submissions | wall time (service) | wall time (fakes driven directly, baseline) | ratio | MTS requests (fewest possible) | ratio | peak memory (before the import, baseline) | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let fakes = Fakes::start().await;
        let end = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now") - TimeDelta::hours(1);
        let start = end - TimeDelta::days(30);
        fakes.odk.add_generated_submissions(PROJECT, FORM, n, start, end);
        // The baseline: exact windows of 500 (submission i is at start + span * i / n).
        let at = |i: usize| start + (end - start) * i as i32 / n as i32;
        let windows: Vec<_> = (0..n.div_ceil(PER_REQUEST))
            .map(|k| (at(k * PER_REQUEST), if (k + 1) * PER_REQUEST >= n { end } else { at((k + 1) * PER_REQUEST) }))
            .collect();
        let base_wall = direct(&fakes, &windows).await;
        let base_requests = fakes.mts.submissions().len();
        drop(fakes);

        // A fresh MTS and Odoo for the service, the same ODK data.
        let fakes = Fakes::start().await;
        fakes.odk.add_generated_submissions(PROJECT, FORM, n, start, end);
        let svc = Svc::start(&service_bin, flags);
        let pid = svc.pid();
        let http = reqwest::Client::new();
        let before_kb = status_kb(pid, "VmHWM");
        let t0 = Instant::now();
        support::create_and_import(&http, &svc.url, &fakes.connector("Import"), start, end).await;
        let runs = loop {
            let runs = rpc(
                &http,
                &svc.url,
                "mts.connector.run",
                "search_read",
                json!([[]]),
                json!({"fields": ["state", "records_expected"]}),
            )
            .await;
            let runs = runs.as_array().cloned().unwrap_or_default();
            let terminal = |r: &Value| {
                matches!(r["state"].as_str(), Some("done" | "done_with_errors" | "empty" | "failed" | "cancelled"))
            };
            if !runs.is_empty() && runs.iter().all(terminal) {
                break runs;
            }
            assert!(t0.elapsed() < Duration::from_secs(900), "the import did not end");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let wall = t0.elapsed().as_secs_f64();
        let hwm_kb = status_kb(pid, "VmHWM");
        let requests = fakes.mts.submissions().len();
        let records: usize = fakes.mts.submissions().iter().map(|s| s.records).sum();
        let done = runs.iter().filter(|r| r["state"] == "done").count();
        assert_eq!(records, n, "every submission sent to MTS once");
        assert!(runs.iter().all(|r| r["state"] == "done"), "{} of {} runs done", done, runs.len());
        println!(
            "| {n} | {wall:.1} s | {base_wall:.1} s | {:.2} | {requests} ({base_requests}) | {:.2} | {:.1} MiB ({:.1} MiB) | {:.2} |",
            wall / base_wall,
            requests as f64 / base_requests as f64,
            hwm_kb as f64 / 1024.0,
            before_kb as f64 / 1024.0,
            hwm_kb as f64 / before_kb.max(1) as f64
        );
        svc.stop();
        drop(fakes);
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_engine scheduler SERVICE_BIN BARE_BIN [CONNECTORS] [MINUTES] | import SERVICE_BIN N[,N...] [FLAGS]";
    match args.get(1).map(String::as_str) {
        Some("scheduler") => {
            let n = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let minutes = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(4);
            scheduler(PathBuf::from(args.get(2).expect(usage)), PathBuf::from(args.get(3).expect(usage)), n, minutes)
                .await;
        }
        Some("import") => {
            let sizes = args.get(3).expect(usage).split(',').filter_map(|s| s.parse().ok()).collect();
            // Anything after the sizes is passed to `serve`.
            let flags: Vec<&str> = args.iter().skip(4).map(String::as_str).collect();
            import(PathBuf::from(args.get(2).expect(usage)), sizes, &flags).await;
        }
        _ => panic!("{usage}"),
    }
}
