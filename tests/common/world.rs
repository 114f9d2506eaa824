//! A world of fakes (ODK Central, MTS, Odoo) around the real service, and helpers to
//! watch runs and deliveries: shared by the engine and relay tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mts_connector::fakes::{FakeMts, FakeOdk, FakeOdoo};
use serde_json::{Value, json};

use super::{Options, Service};

pub const ODK_EMAIL: &str = "collector@example.org";
pub const ODK_PW: &str = "odk-pw-SECRET1";
pub const ODOO_DB: &str = "registry";
pub const ODOO_LOGIN: &str = "admin";
pub const ODOO_PW: &str = "cb-pw-SECRET2";
pub const PROJECT: &str = "1";
pub const FORM: &str = "registration";

/// Fast engine settings: retries in fractions of a second (and enough of them not to
/// give up while a test watches), one "minute" of interval lasting `minute` seconds.
pub fn fast(minute: f64) -> Options {
    fast_with(minute, 1000)
}

pub fn fast_with(minute: f64, max_attempts: u32) -> Options {
    Options::new()
        .arg("--max-attempts")
        .arg(max_attempts.to_string())
        .arg("--retry-base-seconds")
        .arg("0.2")
        .arg("--retry-cap-seconds")
        .arg("0.5")
        .arg("--poll-seconds")
        .arg("0.1")
        .arg("--minute-seconds")
        .arg(minute.to_string())
}

/// [`fast`] settings (one "minute" of a minute) with the relay's retries in fractions of a
/// second and a one-second grace period.
pub fn relay_fast() -> Options {
    fast(60.0)
        .arg("--relay-retry-base-seconds")
        .arg("0.2")
        .arg("--relay-retry-cap-seconds")
        .arg("0.5")
        .arg("--relay-grace-seconds")
        .arg("1")
}

pub struct World {
    pub odk: FakeOdk,
    pub mts: FakeMts,
    pub odoo: FakeOdoo,
    pub svc: Service,
}

impl World {
    pub async fn start(options: Options) -> World {
        let odk = FakeOdk::start(ODK_EMAIL, ODK_PW).await.expect("fake odk");
        odk.add_form(PROJECT, FORM);
        let mts = FakeMts::start().await.expect("fake mts");
        let odoo = FakeOdoo::start(ODOO_DB, ODOO_LOGIN, ODOO_PW).await.expect("fake odoo");
        let svc = Service::start_with(options).await;
        World { odk, mts, odoo, svc }
    }

    /// A valid ODK connector wired to the fakes, with `patch` applied.
    pub fn connector(&self, patch: Value) -> Value {
        let mut c = json!({
            "name": "Registrations",
            "mts_url": self.mts.url(),
            "input_type": "odk",
            "is_recurring": "recurring",
            "interval_minutes": 1,
            "settle_seconds": 0,
            "odk_base_url": self.odk.url(),
            "odk_odata_url": self.odk.odata_url(PROJECT, FORM),
            "odk_email": ODK_EMAIL,
            "odk_password": ODK_PW,
            "callback_url": self.odoo.callback_url(),
            "callback_authtype": "odoo",
            "callback_auth_url": self.odoo.auth_url(),
            "callback_auth_database": ODOO_DB,
            "callback_auth_username": ODOO_LOGIN,
            "callback_auth_password": ODOO_PW,
            "output_format": "{\"id\": .input.__id, \"vid\": .output.vid, \"token\": .output.token}",
        });
        for (k, v) in patch.as_object().expect("patch is an object") {
            c[k] = v.clone();
        }
        c
    }

    /// Imports `n` fresh submissions (placed `hours_ago`) through a new relay-mode connector
    /// with `patch` applied; answers their ids and the connector id.
    pub async fn import_relayed(&self, n: usize, hours_ago: i64, patch: Value) -> (Vec<String>, u64) {
        let t = now_s() - chrono::TimeDelta::hours(hours_ago);
        let ids = self.odk.add_generated_submissions(PROJECT, FORM, n, t, t + chrono::TimeDelta::minutes(30));
        let mut vals = json!({"callback_mode": "relay"});
        for (k, v) in patch.as_object().expect("object") {
            vals[k] = v.clone();
        }
        let id = self.svc.create(&self.connector(vals)).await;
        let fmt = mts_connector::model::format_datetime;
        self.svc.connector("action_import", json!([[id], fmt(t), fmt(t + chrono::TimeDelta::hours(1))])).await;
        (ids, id)
    }

    pub async fn runs(&self, connector: u64) -> Vec<Value> {
        self.svc.runs(connector).await
    }

    /// How many callbacks each submission id received.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for cb in self.odoo.received() {
            if let Some(id) = cb.body.as_ref().and_then(|b| b["id"].as_str()) {
                *out.entry(id.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// Every one of `ids` delivered exactly once with its deterministic token.
    pub fn assert_each_delivered_once(&self, ids: &[String]) {
        let delivered = self.delivered();
        for id in ids {
            assert_eq!(delivered.get(id), Some(&1), "submission {id} delivered {:?} times", delivered.get(id));
        }
        for cb in self.odoo.received() {
            let body = cb.body.expect("callback body");
            let vid = body["vid"].as_str().expect("vid");
            assert_eq!(body["token"], json!(self.mts.token_for(vid)), "token of {vid}");
        }
    }
}

pub fn at(s: &Value) -> DateTime<Utc> {
    mts_connector::model::parse_datetime(s.as_str().expect("datetime string")).expect("datetime")
}

pub fn now_s() -> DateTime<Utc> {
    // Whole seconds, as windows travel.
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("timestamp")
}

/// Polls `check` until it answers `Some`, or panics after `secs` with `what`.
pub async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn terminal(run: &Value) -> bool {
    matches!(run["state"].as_str(), Some("done" | "done_with_errors" | "empty" | "failed" | "cancelled"))
}

pub fn states(runs: &[Value]) -> Vec<String> {
    runs.iter().map(|r| r["state"].as_str().unwrap_or("?").to_string()).collect()
}

/// Windows of `runs` tile time: each starts where the previous ended.
pub fn assert_tiled(runs: &[Value]) {
    for pair in runs.windows(2) {
        assert_eq!(pair[0]["window_end"], pair[1]["window_start"], "windows must be contiguous: {pair:?}");
        assert!(at(&pair[0]["window_start"]) < at(&pair[0]["window_end"]));
    }
}
