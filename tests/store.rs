//! The store (schema version 2) as an operator meets it: a version-1 data dir is
//! migrated at start, retention by age, a reopen with a large history, a full disk, file
//! modes. Through the real binary where a client would notice, through the library where
//! time must be controlled.

mod common;

use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::{API_KEY, Options, Service, valid_connector};
use mts_connector::model::fields::Record;
use mts_connector::model::{self, connector, delivery, format_datetime, run};
use mts_connector::secret::Secret;
use mts_connector::server::MODELS;
use mts_connector::store::retention::RetentionPolicy;
use mts_connector::store::{STORE_FILE, Store};
use serde_json::{Value, json};

/// A tiny writer of the version-1 layout: `db/` is a sled database with one tree per
/// model name (key: the id as big-endian u64, value: the JSON of `Record {id, values,
/// secrets}`) and a `meta` tree holding `schema_version` (u32 BE) and `seq/<model>`
/// (u64 BE).
fn write_v1(dir: &Path, connector_name: &str) {
    // Recent dates: retention by age (90 days for runs) must not drop the fixture.
    let day = |d: i64| format_datetime(Utc::now() - TimeDelta::days(d));
    std::fs::create_dir_all(dir).unwrap();
    let db = sled::Config::new().path(dir.join("db")).open().unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
    for (model, last) in [(connector::MODEL, 2u64), (run::MODEL, 3), (delivery::MODEL, 2)] {
        meta.insert(format!("seq/{model}"), &last.to_be_bytes()).unwrap();
    }
    let put = |model: &str, rec: &Record| {
        db.open_tree(model).unwrap().insert(rec.id.to_be_bytes(), serde_json::to_vec(rec).unwrap()).unwrap();
    };
    // A connector as the v1 API stored it: defaults, the client's values, secrets apart.
    let mut c = Record { id: 1, ..Default::default() };
    model::apply_defaults(&connector::CONNECTOR, &mut c);
    let vals = common::merged(&valid_connector(), &json!({"name": connector_name}));
    model::apply_vals(&connector::CONNECTOR, &mut c, vals.as_object().unwrap()).unwrap();
    c.set("create_date", day(3));
    c.set("write_date", day(3));
    put(connector::MODEL, &c);
    // A started one-time job whose run (2) ended: version 1 marked the run its start
    // queued in `last_run_id`.
    let mut once = Record { id: 2, ..Default::default() };
    model::apply_defaults(&connector::CONNECTOR, &mut once);
    let vals = common::merged(
        &valid_connector(),
        &json!({"name": "Once", "is_recurring": "onetime", "interval_minutes": false,
                "start_datetime": "2026-01-01 00:00:00", "end_datetime": "2026-01-02 00:00:00"}),
    );
    model::apply_vals(&connector::CONNECTOR, &mut once, vals.as_object().unwrap()).unwrap();
    once.set("job_status", "started");
    once.set("last_run_id", 2);
    put(connector::MODEL, &once);
    for (id, connector, state) in [(1u64, 1u64, "done"), (2, 2, "done"), (3, 1, "failed")] {
        let mut r = Record { id, ..Default::default() };
        r.set("name", format!("#{id}"));
        r.set("connector_id", connector);
        r.set("trigger", "manual");
        r.set("window_start", "2026-01-01 00:00:00");
        r.set("window_end", "2026-01-02 00:00:00");
        r.set("create_date", day(2));
        r.set("write_date", day(2));
        r.set("state", state);
        r.set("attempts", 1);
        r.set("records_expected", 5);
        r.set("_created_ms", 1_767_312_000_000i64);
        r.secrets.insert("relay_token_sha256".into(), Secret::new("ab".repeat(32)));
        put(run::MODEL, &r);
    }
    for (id, state) in [(1u64, "delivered"), (2, "failed")] {
        let mut d = Record { id, ..Default::default() };
        d.set("connector_id", 1);
        d.set("run_id", 1);
        d.set("key", format!("1:odk:uuid:{id}"));
        d.set("state", state);
        d.set("attempts", 1);
        d.set("create_date", day(2));
        d.set("write_date", day(2));
        if state == "failed" {
            d.set("last_status", 400);
            d.set("last_error", "HTTP 400: refused");
            d.secrets.insert("payload".into(), Secret::new("{\"input\":{},\"output\":{}}"));
        }
        put(delivery::MODEL, &d);
    }
    db.flush().unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn start(data: &Path) -> Service {
    Service::start_with(Options::new().data_dir(data)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_data_dir_is_migrated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_v1(&data, "Migrated ODK");
    // What a crash mid-migration leaves: a half-written new store beside the intact v1.
    std::fs::write(data.join(format!("{STORE_FILE}.tmp")), b"half a store").unwrap();
    // A v1 dir made by another user's umask: readable by everyone.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut svc = start(&data).await;
    let c = svc.read(1).await;
    assert_eq!(c["name"], "Migrated ODK");
    assert_eq!(c["odk_password"], "********", "the secret came along, still masked");
    assert_eq!(c["callback_auth_username"], "callback-user");
    let runs = svc.runs(1).await;
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["done", "failed"]);
    assert_eq!(runs[0]["connector_id"], json!([1, "Migrated ODK"]));
    assert_eq!(runs[0]["window_start"], "2026-01-01 00:00:00");
    // The one-time job that ran under version 1 is completed, not run again.
    for _ in 0..100 {
        if svc.read(2).await["job_status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(svc.read(2).await["job_status"], "completed");
    assert_eq!(svc.runs(2).await.len(), 1, "{:?}", svc.runs(2).await);
    let deliveries = svc
        .ok(delivery::MODEL, "search_read", json!([[["connector_id", "=", 1], ["state", "=", "failed"]]]), json!({}))
        .await;
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert_eq!(deliveries[0]["key"], "1:odk:uuid:2");
    assert_eq!(svc.ok(delivery::MODEL, "search_count", json!([[]]), json!({})).await, 2);
    // Ids continue after the v1 counters, never reusing one.
    assert_eq!(svc.create(&valid_connector()).await, 3);
    // Layout and modes: the v1 dir is gone, the store and the dir are the user's alone.
    assert!(!data.join("db").exists());
    assert!(!data.join(format!("{STORE_FILE}.tmp")).exists());
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(STORE_FILE)), 0o600);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }
    assert!(svc.log().contains("migrated the version-1 store to schema version 2"), "{}", svc.log());
    svc.terminate().await;

    // The next start opens version 2 directly and has everything.
    let svc = start(&data).await;
    assert_eq!(svc.read(3).await["name"], "Registration ODK");
    assert_eq!(svc.runs(1).await.len(), 2);
    assert!(!svc.log().contains("migrated"), "{}", svc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_migration_wins_over_a_leftover_version_1_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_v1(&data, "Migrated ODK");
    let mut svc = start(&data).await;
    svc.terminate().await;
    // A crash between the rename of the new store and the removal of the old one
    // leaves both: the complete new store is the truth.
    write_v1(&data, "Stale v1 copy");
    let svc = start(&data).await;
    assert_eq!(svc.read(1).await["name"], "Migrated ODK");
    assert!(!data.join("db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_version_1_dir_left_by_a_failed_start_is_replaced() {
    // What a v1 start on a full disk left (0-byte sled files), which every later v1
    // start refused with "Read corrupted data".
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db/blobs")).unwrap();
    for f in ["conf", "db", "snap.0000000000000000"] {
        std::fs::write(data.join("db").join(f), b"").unwrap();
    }
    let svc = start(&data).await;
    assert_eq!(svc.create(&valid_connector()).await, 1);
    assert!(!data.join("db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_version_1_dir_is_refused_clearly_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::write(data.join("db/conf"), b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n").unwrap();
    std::fs::write(data.join("db/db"), vec![0x5a; 4096]).unwrap();
    let exited = Service::try_start(Options::new().data_dir(&data)).await.err().expect("the start is refused");
    assert!(!exited.status.success());
    assert!(exited.log.contains("cannot migrate the version-1 store"), "{}", exited.log);
    assert_eq!(std::fs::read(data.join("db/db")).unwrap(), vec![0x5a; 4096], "the v1 data is untouched");
    assert!(!data.join(STORE_FILE).exists());
}

fn stored_run(id: u64, connector: u64, state: &str, trigger: &str, created: chrono::DateTime<Utc>) -> Record {
    let mut r = Record { id, ..Default::default() };
    r.set("name", format!("#{id}"));
    r.set("connector_id", connector);
    r.set("trigger", trigger);
    r.set("state", state);
    r.set("window_start", format_datetime(created - TimeDelta::hours(1)));
    r.set("window_end", format_datetime(created));
    r.set("create_date", format_datetime(created));
    r.set("write_date", format_datetime(created));
    if trigger == "schedule" && state == "done" {
        r.set("mts_request_id", format!("req-{id}"));
    }
    r
}

fn stored_delivery(id: u64, connector: u64, state: &str, changed: chrono::DateTime<Utc>) -> Record {
    let mut d = Record { id, ..Default::default() };
    d.set("connector_id", connector);
    d.set("run_id", 1);
    d.set("key", format!("{connector}:odk:{id}"));
    d.set("state", state);
    d.set("create_date", format_datetime(changed));
    d.set("write_date", format_datetime(changed));
    d
}

fn ids_of(store: &Store, model: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    store
        .scan(model, false, |r| {
            ids.push(r.id);
            ControlFlow::Continue(())
        })
        .unwrap();
    ids
}

#[tokio::test]
async fn retention_by_age_drops_old_runs_and_deliveries_but_keeps_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), MODELS).unwrap();
    let now = Utc::now();
    let old = now - TimeDelta::days(100);
    let recent = now - TimeDelta::days(1);
    store
        .put_all(
            run::MODEL,
            vec![
                stored_run(1, 1, "done", "schedule", old),  // the watermark: kept however old
                stored_run(2, 1, "done", "manual", old),    // old, ended: dropped
                stored_run(3, 1, "failed", "manual", old),  // old failed: dropped by age
                stored_run(4, 1, "retrying", "retry", old), // old but open: kept
                stored_run(5, 2, "done", "manual", old),    // another connector's: dropped
                stored_run(6, 1, "done", "manual", recent), // recent: kept
                stored_run(7, 2, "failed", "manual", recent),
            ],
        )
        .unwrap();
    store
        .put_all(
            delivery::MODEL,
            vec![
                stored_delivery(1, 1, "delivered", old),
                stored_delivery(2, 1, "failed", old),
                stored_delivery(3, 1, "pending", old), // still to send: kept
                stored_delivery(4, 1, "delivered", recent),
                stored_delivery(5, 2, "delivered", now - TimeDelta::days(4)),
                stored_delivery(6, 2, "delivered", now - TimeDelta::days(3)),
                stored_delivery(7, 2, "delivered", now - TimeDelta::hours(3)),
                stored_delivery(8, 2, "delivered", now - TimeDelta::hours(2)),
            ],
        )
        .unwrap();
    store.flush().await.unwrap();
    let policy = RetentionPolicy {
        runs_per_connector: 1000,
        run_max_age: Some(Duration::from_secs(90 * 86400)),
        // Connector 2 keeps its newest delivered record by count; the next one is younger
        // than the de-duplication floor (a day), so it stays too; the two older go.
        deliveries_per_connector: 1,
        delivery_max_age: Duration::from_secs(30 * 86400),
        delivery_min_age: Duration::from_secs(86400),
        ..RetentionPolicy::default()
    };
    let pruned = store.prune(&policy, now).await.unwrap();
    assert_eq!(ids_of(&store, run::MODEL), vec![1, 4, 6, 7]);
    assert_eq!(ids_of(&store, delivery::MODEL), vec![3, 4, 7, 8]);
    assert_eq!((pruned.runs, pruned.deliveries), (3, 4));
    // Counts follow, and a second pass finds nothing more.
    assert_eq!(store.counts(run::MODEL, "state").get("done"), Some(&2));
    assert_eq!(store.prune(&policy, now).await.unwrap(), Default::default());
    // Ten years later the same records are still too young for a policy without age.
    let later = now + TimeDelta::days(3650);
    let no_age = RetentionPolicy { run_max_age: None, ..policy.clone() };
    assert_eq!(store.prune(&no_age, later).await.unwrap().runs, 0);
    // With age again, only the open run and the watermark run are left.
    store.prune(&policy, later).await.unwrap();
    assert_eq!(ids_of(&store, run::MODEL), vec![1, 4]);
    assert_eq!(ids_of(&store, delivery::MODEL), vec![3]);
}

/// A start on a history far over the retention count makes a long first pass: SIGTERM
/// does not wait for it (the chunks removed are durable, the next start goes on), the
/// store is closed cleanly, and only a kill makes the next start check the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_leaves_a_long_retention_pass_and_closes_the_store_cleanly() {
    const N: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = Utc::now() - TimeDelta::hours(1);
    {
        let store = Store::open(&data, MODELS).unwrap();
        for _ in 0..N / 10_000 {
            let ids = store.next_ids(run::MODEL, 10_000).unwrap();
            store.put_all(run::MODEL, ids.map(|id| stored_run(id, 1, "done", "manual", created)).collect()).unwrap();
            store.flush().await.unwrap();
        }
    }
    let options = || Options::new().data_dir(&data).arg("--run-retention").arg("1");
    let mut svc = Service::start_with(options()).await;
    assert!(svc.terminate().await.success(), "{}", svc.log());
    assert!(svc.log().contains("stopped; store flushed"), "{}", svc.log());
    assert!(!svc.log().contains("old records removed"), "the stop waited for the whole pass:\n{}", svc.log());

    let mut svc = Service::start_with(options()).await;
    assert!(!svc.log().contains("not closed cleanly"), "{}", svc.log());
    svc.wait_for_log("retention: old records removed").await;
    let left = svc.ok(run::MODEL, "search_count", json!([[]]), json!({})).await;
    assert!(left.as_u64().unwrap() <= 2, "the watermark run and the newest are kept: {left}");
    svc.kill9();

    let mut svc = Service::start_with(options()).await;
    assert!(svc.log().contains("the store was not closed cleanly"), "{}", svc.log());
    assert_eq!(svc.ok(run::MODEL, "search_count", json!([[]]), json!({})).await, left);
    assert!(svc.terminate().await.success());
}

#[tokio::test]
async fn a_reopen_with_a_large_history_reads_only_what_it_needs() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = Utc::now() - TimeDelta::hours(1);
    {
        let store = Store::open(&data, MODELS).unwrap();
        for chunk in 0..N / 10_000 {
            let ids = store.next_ids(run::MODEL, 10_000).unwrap();
            let runs = ids.clone().map(|id| stored_run(id, 1 + id % 20, "done", "manual", created)).collect();
            store.put_all(run::MODEL, runs).unwrap();
            let deliveries = ids.map(|id| stored_delivery(id, 1 + id % 20, "delivered", created)).collect();
            store.put_all(delivery::MODEL, deliveries).unwrap();
            store.next_ids(delivery::MODEL, 10_000).unwrap();
            if chunk == 0 {
                store.put(run::MODEL, stored_run(5, 6, "queued", "manual", created)).unwrap();
            }
            store.flush().await.unwrap();
        }
    }
    let started = Instant::now();
    let store = Store::open(&data, MODELS).unwrap();
    let opened = started.elapsed();
    let latest = store.find(run::MODEL, "connector", &[&json!(3)], true, 5).unwrap();
    let ids: Vec<u64> = latest.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![N - 18, N - 38, N - 58, N - 78, N - 98]);
    let open = store.find(run::MODEL, "state", &[&json!("queued")], false, 10).unwrap();
    assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5]);
    let key = json!(format!("{}:odk:{}", 1 + 777 % 20, 777));
    assert_eq!(store.find(delivery::MODEL, "key", &[&key], false, 1).unwrap()[0].id, 777);
    assert_eq!(store.counts(run::MODEL, "state").get("done"), Some(&((N - 1) as i64)));
    assert_eq!(store.count(delivery::MODEL), N as usize);
    assert_eq!(store.next_id(run::MODEL).unwrap(), N + 1);
    eprintln!("reopened a store of {N} runs and {N} deliveries in {opened:?}");
}

/// A tmpfs of `size` mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

async fn ready(svc: &Service) -> (u16, Value) {
    let r = svc.get("/ready").await;
    (r.status, r.json())
}

/// Polls `/ready` until it answers 200 (the scheduler reports alive after its first pass).
async fn wait_ready(svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(svc).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "not ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_err(svc: &Service) -> String {
    let err = svc.err(connector::MODEL, "create", json!([valid_connector()]), json!({})).await;
    err["data"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    // Root mounts a small filesystem of its own (CI and the development machines run as
    // root); the test needs it and says so when it cannot have it.
    let _fs = Tmpfs::mount(&mnt, "8m").unwrap_or_else(|e| panic!("mounting a tmpfs failed (run as root): {e}"));
    let data = mnt.join("data");
    let mut svc = start(&data).await;
    let first = svc.create(&valid_connector()).await;
    wait_ready(&svc).await;

    fill(&mnt.join("filler"));
    // Writes are refused with a clear error; /ready says why (within the second its
    // free-space reading is cached).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let message = create_err(&svc).await;
    assert!(message.contains("cannot write to its store") && message.contains("no space left"), "{message}");
    let (status, body) = ready(&svc).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["checks"]["store"]["error"].as_str().unwrap_or_default().contains("KiB free"), "{body}");
    // What was stored before is still served, and nothing half-made appeared.
    assert_eq!(svc.read(first).await["name"], "Registration ODK");
    assert_eq!(svc.connector("search_count", json!([[]])).await, 1);
    assert_eq!(svc.get("/health").await.status, 200);
    // SIGTERM while full stops the service promptly.
    let stopping = Instant::now();
    assert!(svc.terminate().await.success());
    assert!(stopping.elapsed() < Duration::from_secs(15), "stopping took {:?}", stopping.elapsed());

    // A start while the disk is full works: reads are served, writes refused, not ready.
    let mut svc = start(&data).await;
    assert_eq!(svc.read(first).await["name"], "Registration ODK");
    assert!(create_err(&svc).await.contains("no space left"));
    assert_eq!(ready(&svc).await.0, 503);
    svc.terminate().await;
    // A first start on the full disk (a new data dir) is refused without leaving a
    // store that a later start could not open.
    let fresh = mnt.join("fresh");
    let exited = Service::try_start(Options::new().data_dir(&fresh)).await.err().expect("refused on a full disk");
    assert!(!exited.status.success());
    assert!(exited.log.contains("No space left on device"), "{}", exited.log);
    assert!(!fresh.join(STORE_FILE).exists());

    // Space freed: the next starts work, and everything acknowledged is there.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let svc = start(&data).await;
    wait_ready(&svc).await;
    assert_eq!(svc.read(first).await["name"], "Registration ODK");
    let second = svc.create(&valid_connector()).await;
    assert!(second > first);
    assert_eq!(svc.connector("search_count", json!([[]])).await, 2);
    let fresh_svc = start(&fresh).await;
    assert_eq!(fresh_svc.create(&valid_connector()).await, 1);
    // The API key given by the environment: nothing of it is on this disk.
    assert!(!std::fs::read_to_string(data.join(STORE_FILE)).unwrap_or_default().contains(API_KEY));
}
