//! What a request carries, by input: the one thing the run life ([`super::life`]) leaves
//! to each. An ODK window is pre-counted in ODK Central and split when too large
//! ([`OdkWindow`]); a registry page is read again by id ([`super::registry::RegistryPage`]).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::Engine;
use super::runs::{self, time};
use crate::model::fields::Record;
use crate::model::format_datetime;
use crate::store::StoreError;

/// Why preparing (or walking) stopped before a request could go out.
#[derive(Debug)]
pub enum Stop {
    /// The configuration or the data must change: the run fails at once.
    Config {
        code: String,
        message: String,
    },
    /// Try again later (the engine's backoff).
    Transient(String),
    /// The engine is stopping: the run resumes after the restart.
    Shutdown,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

pub fn config(message: impl Into<String>) -> Stop {
    Stop::Config { code: String::new(), message: message.into() }
}

/// What a request will carry.
pub enum Prepared {
    /// Send this: an ODK window MTS pulls itself, or inline records.
    Send { records: Option<Vec<Value>>, start: DateTime<Utc>, end: DateTime<Utc>, expected: u64 },
    /// Nothing to send: the run ends `empty` with this message.
    Empty(String),
}

/// One input kind of request-carrying runs.
pub trait Input: Sync {
    /// Reads what the request carries now (again after a crash or a lost request).
    fn prepare(
        &self,
        engine: &Engine,
        run: &Record,
        connector: &Record,
    ) -> impl Future<Output = Result<Prepared, Stop>> + Send;

    /// The run counted (atomically with its acknowledgment) when MTS took the request:
    /// `(run id, records)`. A walk counts its pages' registrants.
    fn counts_on(&self, _run: &Record) -> Option<(u64, i64)> {
        None
    }

    /// What a run resubmitting `lost` carries besides its window.
    fn carry(&self, _lost: &Record, _retry: &mut Record) {}
}

/// An ODK window: MTS pulls its submissions from ODK Central itself.
pub struct OdkWindow;

impl Input for OdkWindow {
    /// Counts the window in ODK with the filter MTS will use. Empty: nothing to send. More
    /// than `max_records_per_request`: bisected by time, this run keeps the first half and a
    /// new queued run takes the second (and goes to MTS concurrently).
    async fn prepare(&self, engine: &Engine, run: &Record, c: &Record) -> Result<Prepared, Stop> {
        let (Some(start), Some(mut end)) = (time(run, "window_start"), time(run, "window_end")) else {
            return Err(crate::engine::input::config("the run has no window"));
        };
        let max = c.int("max_records_per_request").unwrap_or(500).max(1) as u64;
        let timeout = engine.config.odk_timeout;
        let base = c.str("odk_base_url").unwrap_or_default();
        let odata = c.str("odk_odata_url").unwrap_or_default();
        let email = c.str("odk_email").unwrap_or_default();
        let password = c.secret("odk_password").cloned().unwrap_or_default();
        let odk = |e: crate::clients::odk::OdkError| Stop::Transient(e.to_string());
        let token = engine.odk.session(base, email, &password, timeout).await.map_err(odk)?;
        loop {
            let count = engine.odk.count(odata, &token, start, end, timeout).await.map_err(odk)?;
            if count == 0 {
                engine.update_run(run.id, move |r| r.set("window_end", format_datetime(end))).await?;
                return Ok(Prepared::Empty("ODK Central holds no submissions in this window".into()));
            }
            let span = end - start;
            if count <= max || span <= TimeDelta::seconds(2) {
                if count > max {
                    tracing::warn!(run_id = run.id, count, max, "window cannot be split further; submitting it whole");
                }
                return Ok(Prepared::Send { records: None, start, end, expected: count });
            }
            // Bisect on whole seconds: windows travel as YYYY-MM-DD HH:MM:SS.
            let mid = start + TimeDelta::seconds(span.num_seconds() / 2);
            let root = run.int("split_of_id").unwrap_or(run.id as i64);
            let carried: Vec<(&str, Value)> = [runs::TILES, runs::LOST]
                .into_iter()
                .filter_map(|k| run.values.get(k).map(|v| (k, v.clone())))
                .collect();
            let retry_of = run.int("retry_of_id");
            engine
                .create_run(runs::connector_id(run), run.str("trigger").unwrap_or("manual"), mid, end, |r| {
                    r.set("split_of_id", root);
                    if let Some(retry_of) = retry_of {
                        r.set("retry_of_id", retry_of);
                    }
                    for (k, v) in carried {
                        r.set(k, v);
                    }
                })
                .await?;
            end = mid;
            engine.update_run(run.id, move |r| r.set("window_end", format_datetime(mid))).await?;
            tracing::info!(run_id = run.id, count, max, "window split in two");
        }
    }
}
