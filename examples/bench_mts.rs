//! How much of MTS the service uses, against a baseline measured in the same run.
//!
//! `bench_mts pool BIN WORKERS_LIST MS_PER_RECORD SECONDS`: for each pool size W (e.g.
//! `1,4,16,32`), fake MTS endpoints with W token workers in all (endpoints of 4 workers,
//! like the pods of a StatefulSet; one endpoint below 4) that take MS_PER_RECORD per
//! record. The pool's capacity is `W * 1000 / MS_PER_RECORD` records/s; the service
//! imports about SECONDS of that work from the fake ODK Central and the figure is its
//! records/s (until the last token reached the callback target) over the capacity.
//!
//! `bench_mts real BIN WORKERS`: the real MTS (started outside, `MTS_URL`) with WORKERS
//! gunicorn workers; 600 ODK submissions in 4 requests of 150. The baseline is MTS
//! driven directly with the 4 requests at once; the figure is the service's records/s
//! over the baseline's, both until the last token reached the callback target.
//!
//! Extra service flags come from `BENCH_FLAGS`; `BENCH_PER_WORKER` (default 2) is how
//! many requests per worker the pool benchmark lets be in flight.

#[path = "support/bench.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
use mts_connector::mts::{Input, Secrets, build_request};
use serde_json::{Value, json};
use support::{ODK_EMAIL, ODK_PW, ODOO_DB, ODOO_PW, Svc};

const PROJECT: &str = "1";
const FORM: &str = "registration";

fn connector(odk: &FakeOdk, odoo: &FakeOdoo, mts_url: &str, per_request: usize, parallel: usize) -> Value {
    let mut c = support::connector(
        "bench",
        mts_url,
        &odk.url(),
        &odk.odata_url(PROJECT, FORM),
        &odoo.callback_url(),
        &odoo.auth_url(),
    );
    c["max_records_per_request"] = json!(per_request);
    c["mts_max_parallel"] = json!(parallel);
    c["settle_seconds"] = json!(0);
    c
}

fn flags() -> Vec<String> {
    std::env::var("BENCH_FLAGS").unwrap_or_default().split_whitespace().map(str::to_string).collect()
}

/// Waits until the callback target holds `n` records; answers the seconds since `t0`.
async fn delivered(odoo: &FakeOdoo, n: usize, t0: Instant, limit: Duration) -> f64 {
    while odoo.records_received() < n {
        assert!(t0.elapsed() < limit, "only {} of {n} tokens arrived", odoo.records_received());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed().as_secs_f64()
}

/// Imports `[start, end)` through the service and answers the records/s until every
/// token reached the target (and the requests the service sent).
async fn through_service(
    bin: &Path,
    extra: &[String],
    c: Value,
    odoo: &FakeOdoo,
    n: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> f64 {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let svc = Svc::start(bin, &extra);
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    support::create_and_import(&http, &svc.url, &c, start, end).await;
    let secs = delivered(odoo, n, t0, Duration::from_secs(900)).await;
    if let Ok(path) = std::env::var("BENCH_KEEP_LOG") {
        let _ = std::fs::copy(&svc.log, path);
    }
    svc.stop();
    n as f64 / secs
}

async fn pool(bin: PathBuf, sizes: Vec<usize>, ms_per_record: u64, seconds: u64) {
    let per_worker: usize = std::env::var("BENCH_PER_WORKER").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    println!(
        "| pool (workers) | endpoints | capacity (records/s) | records | the service (records/s) | ratio | in flight allowed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for workers in sizes {
        let per_endpoint = workers.min(4);
        let endpoints = workers.div_ceil(per_endpoint);
        let mut fakes = Vec::new();
        for i in 0..endpoints {
            let mts = FakeMts::start().await.expect("fake mts");
            mts.set_workers(per_endpoint.min(workers - i * per_endpoint));
            mts.set_time_per_record(Duration::from_millis(ms_per_record));
            fakes.push(mts);
        }
        let capacity = workers as f64 * 1000.0 / ms_per_record as f64;
        let n = (capacity * seconds as f64) as usize;
        let odk = FakeOdk::start(ODK_EMAIL, ODK_PW).await.expect("fake odk");
        odk.add_form(PROJECT, FORM);
        let odoo = FakeOdoo::start(ODOO_DB, "admin", ODOO_PW).await.expect("fake odoo");
        let end = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now") - TimeDelta::hours(1);
        let start = end - TimeDelta::days(1);
        odk.add_generated_submissions(PROJECT, FORM, n, start, end);
        let urls: Vec<String> = fakes.iter().map(FakeMts::url).collect();
        let in_flight = workers * per_worker;
        let mut c = connector(&odk, &odoo, &urls.join(","), 100, in_flight);
        c["callback_in_bulk"] = json!(true);
        let mut extra = vec!["--max-per-mts".to_string(), (per_endpoint * per_worker).to_string()];
        extra.extend(flags());
        let rate = through_service(&bin, &extra, c, &odoo, n, start, end).await;
        println!(
            "| {workers} | {endpoints} | {capacity:.0} | {n} | {rate:.0} | {:.2} | {in_flight} |",
            rate / capacity
        );
    }
}

async fn real(bin: PathBuf, workers: usize) {
    let mts_url = std::env::var("MTS_URL").expect("MTS_URL: the real MTS to measure");
    let (n, per_request, requests) = (600usize, 150usize, 4usize);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut direct_rates = Vec::new();
    let mut service_rates = Vec::new();
    // Round 0 warms MTS up (its first requests are slower) and is not counted; the order
    // alternates so that neither side always runs first.
    for round in 0..=rounds {
        let order = if round % 2 == 0 { ["direct", "service"] } else { ["service", "direct"] };
        for through in order {
            let odk = FakeOdk::start(ODK_EMAIL, ODK_PW).await.expect("fake odk");
            odk.add_form(PROJECT, FORM);
            let odoo = FakeOdoo::start(ODOO_DB, "admin", ODOO_PW).await.expect("fake odoo");
            let end = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now") - TimeDelta::hours(1);
            let start = end - TimeDelta::hours(requests as i64);
            odk.add_generated_submissions(PROJECT, FORM, n, start, end);
            let c = connector(&odk, &odoo, &mts_url, per_request, requests);
            if through == "direct" {
                // The baseline: the four windows of 150 posted at once.
                let rec = support::record(&c);
                let http = reqwest::Client::new();
                let url = format!("{}/authtoken/odk", mts_url.trim_end_matches('/'));
                let t0 = Instant::now();
                let posts: Vec<_> = (0..requests)
                    .map(|k| {
                        let (s, e) = (start + TimeDelta::hours(k as i64), start + TimeDelta::hours(k as i64 + 1));
                        let body =
                            build_request(&rec, Input::Odk { start: s, end: e }, None, Secrets::Reveal, Utc::now());
                        let (http, url) = (http.clone(), url.clone());
                        tokio::spawn(async move {
                            let resp = http.post(&url).json(&body).timeout(Duration::from_secs(600)).send().await;
                            resp.map(|r| r.status().as_u16()).unwrap_or(0)
                        })
                    })
                    .collect();
                for p in posts {
                    assert_eq!(p.await.unwrap_or(0), 200, "MTS refused a direct request");
                }
                let secs = delivered(&odoo, n, t0, Duration::from_secs(900)).await;
                direct_rates.push(n as f64 / secs);
            } else {
                service_rates.push(through_service(&bin, &flags(), c, &odoo, n, start, end).await);
            }
            let rates = if through == "direct" { &mut direct_rates } else { &mut service_rates };
            let last = rates.last().copied().unwrap_or(0.0);
            eprintln!("round {round}: {workers} workers, {through}: {last:.1} records/s");
            if round == 0 {
                rates.pop();
            }
        }
    }
    // The ratio of each round (the two runs of a round are minutes apart at most, so the
    // drift of a shared machine cancels out), and its median over the rounds.
    let mut ratios: Vec<f64> = service_rates.iter().zip(&direct_rates).map(|(s, d)| s / d).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    };
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let (d, s, r) = (median(&mut direct_rates), median(&mut service_rates), median(&mut ratios));
    println!("| {workers} | {d:.0} records/s | {s:.0} records/s | {r:.2} ({}) |", each.join(", "));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_mts pool BIN WORKERS_LIST MS_PER_RECORD SECONDS | bench_mts real BIN WORKERS";
    match args.get(1).map(String::as_str) {
        Some("pool") if args.len() == 6 => {
            let sizes = args[3].split(',').filter_map(|s| s.parse().ok()).collect();
            pool(PathBuf::from(&args[2]), sizes, args[4].parse().expect(usage), args[5].parse().expect(usage)).await;
        }
        Some("real") if args.len() == 4 => real(PathBuf::from(&args[2]), args[3].parse().expect(usage)).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
