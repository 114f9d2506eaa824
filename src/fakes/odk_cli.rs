//! `mts-connector fake-odk` (hidden): the fake ODK Central as a process of its own, so
//! that the integration tier (scripts/real, tests/integration) can point the real MTS at
//! it. Only ODK is fake there: MTS, Odoo and the registry are the real ones.

use std::future::Future;

use serde_json::{Value, json};

use super::FakeOdk;
use crate::config::FakeOdkArgs;

/// Starts the fake, adds the seed file's submissions, prints
/// `{"url", "odata_url", "submissions"}` on one stdout line and serves until `stop`.
pub async fn serve_fake_odk(args: FakeOdkArgs, stop: impl Future<Output = ()>) -> Result<(), String> {
    let odk = FakeOdk::start(&args.email, &args.password).await.map_err(|e| format!("fake ODK: {e}"))?;
    odk.add_form(&args.project, &args.form);
    let mut count = 0;
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let seed: Vec<Value> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in seed {
            let date = item["submission_date"]
                .as_str()
                .ok_or_else(|| format!("{}: each item needs a submission_date", path.display()))
                .and_then(|d| crate::model::parse_datetime(d).map_err(|e| format!("{}: {e}", path.display())))?;
            odk.add_submission(&args.project, &args.form, date, item["fields"].clone());
            count += 1;
        }
    }
    let line = json!({"url": odk.url(), "odata_url": odk.odata_url(&args.project, &args.form), "submissions": count});
    println!("{line}");
    stop.await;
    odk.shutdown().await;
    Ok(())
}
