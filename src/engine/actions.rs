//! What the API's connector actions ask of the engine: react to start/stop, manual
//! import, run now, cancel runs, test the connection, preview the next window.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::runs::{Fire, state};
use super::{Engine, pool, scheduler, window};
use crate::model::ModelError;
use crate::model::fields::Record;
use crate::model::format_datetime;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn user(msg: String) -> ActionError {
    ActionError::Model(ModelError::User(msg))
}

impl Engine {
    /// After a job status change: a stopped connector's queued and retrying runs are
    /// cancelled (runs MTS already took are still tracked to their end).
    pub async fn status_changed(&self, connectors: &[Record]) -> Result<(), StoreError> {
        // A started connector fires at once, a stopped one not at all: its next fire goes.
        let cleared: Vec<(u64, Option<DateTime<Utc>>)> = connectors.iter().map(|c| (c.id, None)).collect();
        self.store.schedule_set(&cleared)?;
        self.store.flush().await?;
        for c in connectors {
            if c.str("job_status") == Some("completed") {
                let first_after = self.store.next_ids(crate::model::run::MODEL, 0)?.start;
                self.index().stopped.insert(c.id, first_after);
                for id in self.open_runs(c.id) {
                    let Some(run) = self.run(id).filter(|r| matches!(state(r), "queued" | "retrying")) else {
                        continue;
                    };
                    // Also when its task is waiting for a slot: the task finds the run
                    // ended at its next step and stops.
                    let why = match run.int(super::runs::NOT_BEFORE_MS) {
                        Some(ms) if ms > chrono::Utc::now().timestamp_millis() => {
                            "the connector was stopped before this scheduled run was due"
                        }
                        _ => "the connector was stopped",
                    };
                    self.cancel(id, why).await?;
                }
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// `mts.connector.run.action_cancel`: cancels queued and retrying runs whatever
    /// their connector's job status (a run queued by Run now on a stopped connector
    /// would otherwise retry on). A run MTS already took, or one that ended, is refused
    /// with a `UserError` and nothing is cancelled: MTS's requests are tracked to their end.
    pub async fn cancel_runs(&self, ids: &[u64]) -> Result<(), ActionError> {
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            let run = self.run(*id).ok_or_else(|| {
                ActionError::Model(ModelError::Missing(format!(
                    "Record does not exist or has been deleted.\n(Record: mts.connector.run({id},))"
                )))
            })?;
            match state(&run) {
                "queued" | "retrying" => runs.push(*id),
                "submitting" => {
                    return Err(user(format!(
                        "Run {id} is being sent to MTS right now; it can be cancelled while it waits, not meanwhile."
                    )));
                }
                "submitted" => {
                    return Err(user(format!(
                        "Run {id} cannot be cancelled: MTS has taken its request; it is followed to its end."
                    )));
                }
                other => return Err(user(format!("Run {id} cannot be cancelled: it has ended ({other})."))),
            }
        }
        // The parts of a cancelled split window, or the pages of a cancelled walk, that
        // have not gone to MTS yet go with it.
        let connectors: std::collections::BTreeSet<u64> =
            runs.iter().filter_map(|id| self.run(*id)).map(|r| super::runs::connector_id(&r)).collect();
        let pages: Vec<u64> = connectors
            .into_iter()
            .flat_map(|c| self.open_runs(c))
            .filter(|p| {
                self.run(*p).is_some_and(|p| {
                    p.int("split_of_id").is_some_and(|w| runs.contains(&(w as u64)))
                        && matches!(state(&p), "queued" | "retrying")
                })
            })
            .collect();
        for id in runs.into_iter().chain(pages) {
            self.cancel(id, "cancelled by the user").await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a manual import of `[start, end)` for each connector; the runner splits it
    /// so that no MTS request carries more than `max_records_per_request` submissions.
    pub async fn import(
        &self,
        connectors: &[Record],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<u64>, ActionError> {
        if end <= start {
            return Err(ModelError::Validation("window_end must be after window_start".into()).into());
        }
        if end > now {
            return Err(ModelError::Validation("window_end must not be in the future".into()).into());
        }
        for c in connectors {
            if c.str("input_type") != Some("odk") {
                return Err(user(format!(
                    "Connector {:?} reads the OpenG2P Registry; a date-range import applies to ODK connectors.",
                    c.str("name").unwrap_or("?")
                )));
            }
        }
        let mut ids = Vec::new();
        for c in connectors {
            ids.push(self.create_run(c.id, "manual", start, end, |_| {}).await?.id);
        }
        Ok(ids)
    }

    /// Queues the next delta window of each recurring connector now.
    pub async fn run_now(&self, connectors: &[Record], now: DateTime<Utc>) -> Result<Vec<u64>, ActionError> {
        for c in connectors {
            let name = c.str("name").unwrap_or("?");
            crate::model::connector::check_runnable(c)?;
            if c.str("is_recurring") != Some("recurring") {
                return Err(user(format!(
                    "Connector {name:?} is a one-time job; use Restart to run its window again."
                )));
            }
            if !self.open_runs(c.id).is_empty() {
                return Err(user(format!(
                    "Connector {name:?} already has a run in progress; it covers the next window."
                )));
            }
        }
        let mut fires = Vec::new();
        for c in connectors {
            let (windows, settles) = scheduler::next_windows(self, c, now);
            if windows.is_empty() {
                let (start, _) = self.next_window(c, now);
                return Err(user(format!(
                    "Connector {:?} is up to date: its next window would start at {}",
                    c.str("name").unwrap_or("?"),
                    format_datetime(start)
                )));
            }
            fires.push(Fire { connector: c.id, windows, settles, next_at: None, not_before: None });
        }
        Ok(self.fire_batch(fires).await?.runs)
    }

    /// The window the connector's next run covers.
    pub fn next_window(&self, c: &Record, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match c.str("is_recurring") {
            Some("onetime") => window::onetime_window(c).unwrap_or((now, now)),
            _ => window::delta_window(c, self.watermark(c.id), now, self.config.minute()),
        }
    }

    /// Checks MTS (`/ping`) and, for ODK connectors, an ODK Central login. One short line
    /// per check; no secret in any of them.
    pub async fn test_connection(&self, c: &Record) -> String {
        let timeout = Duration::from_secs(10);
        let name = c.str("name").unwrap_or("?");
        let mut lines = vec![format!("Connector {name:?}:")];
        let stats = self.pool.stats();
        for url in pool::endpoints(c) {
            let in_flight = stats.iter().find(|s| s.url == url).map_or(0, |s| s.in_flight);
            lines.push(match self.mts.ping(&url, timeout).await {
                Ok(m) => format!("OK: {m} ({in_flight} requests of this service in flight there)"),
                Err(m) => format!("FAILED: {m}"),
            });
        }
        if c.str("input_type") == Some("custom") {
            lines.push(super::registry::test_connection(c).await);
        }
        if c.str("input_type") == Some("odk") {
            let base = c.str("odk_base_url").unwrap_or_default();
            let email = c.str("odk_email").unwrap_or_default();
            let password = c.secret("odk_password").cloned().unwrap_or_default();
            lines.push(match self.odk.session(base, email, &password, timeout).await {
                Ok(_) => format!("OK: ODK Central at {base} accepted the credentials of {email}"),
                Err(e) => format!("FAILED: {e}"),
            });
        }
        lines.join("\n")
    }
}
