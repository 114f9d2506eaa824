//! The operator CLI: talks to a running service over its own JSON-RPC API.
//!
//! `connectors` lists the connectors with their status, last run and next run; `runs`
//! lists a connector's runs; `import` queues a manual import and, with `--follow`,
//! draws its progress until every window has ended. Each command authenticates with
//! the names the service uses (`MTSC_API_LOGIN`, `MTSC_API_KEY`, `MTSC_DB_NAME`) and
//! finds the service at `--url` / `MTSC_URL`.
//!
//! Exit codes: 0 success; 1 the command could not be carried out (service unreachable,
//! credentials refused, unknown connector); 2 a usage error (clap's); 3 `import
//! --follow` saw a window end other than `done` or `empty`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

use crate::config::{ClientArgs, Command, ImportArgs, RunsArgs};
use crate::model::format_datetime;
use crate::secret::Secret;

/// How often `import --follow` reads the runs.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Consecutive failed polls before `--follow` gives up on the service.
const FOLLOW_MAX_FAILURES: u32 = 10;
/// Exit code of an import that ended with failed or cancelled windows.
const EXIT_FAILED_RUNS: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no API key: pass --api-key or set MTSC_API_KEY (a service started without one wrote it to <data-dir>/api-key)"
    )]
    NoKey,
    #[error("{0:?} is not a URL of the service (expected e.g. http://127.0.0.1:8070)")]
    BadUrl(String),
    #[error("cannot reach the mts-connector service at {url}: {reason}; is it running? (set --url or MTSC_URL)")]
    Unreachable { url: String, reason: String },
    #[error(
        "the service at {url} refused the credentials (login {login:?}, database {db:?}); check --api-key / MTSC_API_KEY, --api-login / MTSC_API_LOGIN and --db-name / MTSC_DB_NAME"
    )]
    AccessDenied { url: String, login: String, db: String },
    #[error("{url} did not answer like an mts-connector service ({detail})")]
    NotTheService { url: String, detail: String },
    #[error("the service refused {call}: {message}")]
    Refused { call: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// Runs one operator command and answers the process exit code.
pub async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Connectors(args) => connectors(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Runs(args) => runs(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Import(args) => import(&args).await,
        _ => Err(CliError::Usage("not an operator command".into())),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mts-connector: {e}");
        ExitCode::FAILURE
    })
}

/// Parses a UTC time given as `YYYY-MM-DD HH:MM:SS`, ISO-8601 (`2026-01-02T03:04:05Z`,
/// an offset, or no zone meaning UTC, fractions allowed) or a bare date (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)) {
        return Ok(t.and_utc());
    }
    Err(format!("{s:?} is not a time: use \"YYYY-MM-DD HH:MM:SS\" (UTC) or ISO-8601 such as 2026-01-02T03:04:05Z"))
}

/// A JSON-RPC client of the service with the operator's credentials.
pub struct Client {
    http: reqwest::Client,
    url: String,
    db: String,
    login: String,
    key: Secret,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Client, CliError> {
        let url = args.url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < "http://x".len() {
            return Err(CliError::BadUrl(args.url.clone()));
        }
        let key = match args.api_key.as_deref() {
            Some(k) if !k.is_empty() => Secret::new(k),
            _ => return Err(CliError::NoKey),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { http, url, db: args.db_name.clone(), login: args.api_login.clone(), key })
    }

    /// `model.method(*args, **kwargs)` through `object.execute_kw`.
    pub async fn call(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, CliError> {
        let body = json!({
            "jsonrpc": "2.0", "method": "call", "id": 1,
            "params": {"service": "object", "method": "execute_kw",
                "args": [self.db, crate::api::UID, self.key.expose(), model, method, args, kwargs]},
        });
        let endpoint = format!("{}/jsonrpc", self.url);
        let resp = self.http.post(&endpoint).json(&body).send().await.map_err(|e| CliError::Unreachable {
            url: self.url.clone(),
            reason: crate::clients::mts::error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| CliError::Unreachable {
            url: self.url.clone(),
            reason: crate::clients::mts::error_chain(&e),
        })?;
        let not_service = |detail: String| CliError::NotTheService { url: self.url.clone(), detail };
        let answer: Value = serde_json::from_str(&text)
            .map_err(|_| not_service(format!("HTTP {status}, {}", crate::clients::excerpt(&text))))?;
        if status != 200 || answer.get("jsonrpc").is_none() {
            return Err(not_service(format!("HTTP {status}, {}", crate::clients::excerpt(&text))));
        }
        if let Some(result) = answer.get("result") {
            return Ok(result.clone());
        }
        let Some(error) = answer.get("error").filter(|e| e.is_object()) else {
            return Err(not_service("a JSON-RPC answer without a result or an error".into()));
        };
        let name = error.pointer("/data/name").and_then(Value::as_str).unwrap_or_default();
        if name == "odoo.exceptions.AccessDenied" {
            return Err(CliError::AccessDenied {
                url: self.url.clone(),
                login: self.login.clone(),
                db: self.db.clone(),
            });
        }
        let message = error
            .pointer("/data/message")
            .or_else(|| error.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string();
        Err(CliError::Refused { call: format!("{model}.{method}"), message })
    }

    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
        extra: Value,
    ) -> Result<Vec<Value>, CliError> {
        let mut kwargs = json!({"fields": fields});
        if let (Some(k), Some(e)) = (kwargs.as_object_mut(), extra.as_object()) {
            k.extend(e.clone());
        }
        let rows = self.call(model, "search_read", json!([domain]), kwargs).await?;
        Ok(rows.as_array().cloned().unwrap_or_default())
    }

    /// The connector named by `arg`: its id, or else its exact name.
    pub async fn resolve(&self, arg: &str) -> Result<(u64, String), CliError> {
        let name = |row: &Value| row["name"].as_str().unwrap_or_default().to_string();
        if let Ok(id) = arg.trim().parse::<u64>() {
            let rows = self
                .search_read(crate::model::connector::MODEL, json!([["id", "=", id]]), &["name"], json!({}))
                .await?;
            if let Some(row) = rows.first() {
                return Ok((id, name(row)));
            }
        }
        let rows =
            self.search_read(crate::model::connector::MODEL, json!([["name", "=", arg]]), &["name"], json!({})).await?;
        match rows.as_slice() {
            [] => Err(CliError::Usage(format!(
                "no connector has the id or name {arg:?} (see `mts-connector connectors`)"
            ))),
            [row] => Ok((row["id"].as_u64().unwrap_or_default(), name(row))),
            many => {
                let ids: Vec<String> = many.iter().map(|r| r["id"].to_string()).collect();
                Err(CliError::Usage(format!(
                    "{} connectors are named {arg:?} (ids {}): pass the id",
                    many.len(),
                    ids.join(", ")
                )))
            }
        }
    }
}

/// A value as a table cell: `false` (Odoo's empty) is blank, many2one shows its name.
fn cell(v: &Value) -> String {
    match v {
        Value::Null | Value::Bool(false) => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 2 => a[1].as_str().map_or_else(|| a[0].to_string(), str::to_string),
        other => other.to_string(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

async fn connectors(args: &ClientArgs) -> Result<(), CliError> {
    let client = Client::new(args)?;
    let fields = [
        "name",
        "input_type",
        "is_recurring",
        "interval_minutes",
        "cron_expression",
        "job_status",
        "last_run_id",
        "next_run_at",
    ];
    let rows = client.search_read(crate::model::connector::MODEL, json!([]), &fields, json!({"order": "id"})).await?;
    if rows.is_empty() {
        println!("no connectors");
        return Ok(());
    }
    let last_ids: Vec<u64> = rows.iter().filter_map(|r| r["last_run_id"].get(0).and_then(Value::as_u64)).collect();
    let last_runs: BTreeMap<u64, Value> = if last_ids.is_empty() {
        BTreeMap::new()
    } else {
        client
            .call(
                crate::model::run::MODEL,
                "read",
                json!([last_ids]),
                json!({"fields": ["state", "done_date", "write_date"]}),
            )
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["id"].as_u64()?, r.clone())))
            .collect()
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let schedule = match (r["is_recurring"].as_str(), cell(&r["cron_expression"])) {
                (Some("recurring"), cron) if !cron.is_empty() => format!("cron {cron}"),
                (Some("recurring"), _) => format!("every {} min", cell(&r["interval_minutes"])),
                _ => "one-time".to_string(),
            };
            let last = r["last_run_id"].get(0).and_then(Value::as_u64).map_or_else(String::new, |id| {
                match last_runs.get(&id) {
                    Some(run) => {
                        let at = match cell(&run["done_date"]) {
                            d if !d.is_empty() => d,
                            _ => format!("since {}", cell(&run["write_date"])),
                        };
                        format!("#{id} {} {at}", cell(&run["state"]))
                    }
                    None => format!("#{id}"),
                }
            });
            vec![
                r["id"].to_string(),
                shorten(&cell(&r["name"]), 40),
                cell(&r["input_type"]),
                schedule,
                cell(&r["job_status"]),
                last,
                cell(&r["next_run_at"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["ID", "NAME", "INPUT", "SCHEDULE", "STATUS", "LAST RUN (UTC)", "NEXT RUN (UTC)"], &table_rows)
    );
    Ok(())
}

const RUN_FIELDS: &[&str] = &[
    "trigger",
    "window_start",
    "window_end",
    "state",
    "attempts",
    "records_expected",
    "mts_request_id",
    "mts_status",
    "error_code",
    "error_message",
    "split_of_id",
    "retry_of_id",
];

async fn runs(args: &RunsArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let (id, name) = client.resolve(&args.connector).await?;
    let mut domain = vec![json!(["connector_id", "=", id])];
    if args.failed {
        domain.push(json!(["state", "=", "failed"]));
    }
    let rows = client
        .search_read(
            crate::model::run::MODEL,
            Value::Array(domain),
            RUN_FIELDS,
            json!({"order": "id desc", "limit": args.limit}),
        )
        .await?;
    if rows.is_empty() {
        println!("connector {name:?} (#{id}) has no {}runs", if args.failed { "failed " } else { "" });
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let error = match (cell(&r["error_code"]), cell(&r["error_message"])) {
                (code, msg) if code.is_empty() => msg,
                (code, msg) => format!("{code}: {msg}"),
            };
            vec![
                r["id"].to_string(),
                cell(&r["trigger"]),
                format!("{} -> {}", cell(&r["window_start"]), cell(&r["window_end"])),
                cell(&r["state"]),
                cell(&r["attempts"]),
                match &r["records_expected"] {
                    Value::Number(n) if n.as_i64() >= Some(0) => n.to_string(),
                    _ => String::new(),
                },
                cell(&r["mts_request_id"]),
                shorten(&error, 160),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["RUN", "TRIGGER", "WINDOW (UTC)", "STATE", "ATTEMPTS", "RECORDS", "MTS REQUEST", "ERROR"], &table_rows)
    );
    Ok(())
}

async fn import(args: &ImportArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.client)?;
    if args.to <= args.from {
        return Err(CliError::Usage("--to must be after --from".into()));
    }
    let (id, name) = client.resolve(&args.connector).await?;
    let (from, to) = (format_datetime(args.from), format_datetime(args.to));
    let ids = client.call(crate::model::connector::MODEL, "action_import", json!([[id], from, to]), json!({})).await?;
    let ids: Vec<u64> = ids.as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let list = ids.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", ");
    println!("queued a manual import of [{from}, {to}) for connector {name:?} (#{id}): run {list}");
    if !args.follow || ids.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&client, id, &ids).await
}

/// The runs of one import: the runs it queued, the parts they were split into and the
/// runs that resubmit a window MTS lost, transitively.
pub fn family(all: &[Value], roots: &[u64]) -> Vec<Value> {
    let mut members: BTreeSet<u64> = roots.iter().copied().collect();
    loop {
        let before = members.len();
        for r in all {
            let parent = |f: &str| r[f].get(0).and_then(Value::as_u64).or_else(|| r[f].as_u64());
            if let Some(id) = r["id"].as_u64()
                && (parent("split_of_id").is_some_and(|p| members.contains(&p))
                    || parent("retry_of_id").is_some_and(|p| members.contains(&p)))
            {
                members.insert(id);
            }
        }
        if members.len() == before {
            break;
        }
    }
    all.iter().filter(|r| r["id"].as_u64().is_some_and(|id| members.contains(&id))).cloned().collect()
}

/// Where an import stands.
#[derive(Debug, Default, PartialEq)]
pub struct Progress {
    pub windows: usize,
    pub ended: usize,
    pub records_expected: i64,
    pub records_done: i64,
    pub by_state: BTreeMap<String, usize>,
}

fn is_terminal(state: &str) -> bool {
    crate::model::run::TERMINAL.contains(&state)
}

/// A run MTS lost and another run resubmitted: it is not a failure of the import.
fn superseded(run: &Value, family: &[Value]) -> bool {
    run["mts_status"] == "lost"
        && family.iter().any(|r| r["retry_of_id"].get(0).and_then(Value::as_u64) == run["id"].as_u64())
}

impl Progress {
    pub fn of(family: &[Value]) -> Progress {
        let mut p = Progress::default();
        for r in family.iter().filter(|r| !superseded(r, family)) {
            let state = r["state"].as_str().unwrap_or("queued");
            p.windows += 1;
            *p.by_state.entry(state.to_string()).or_default() += 1;
            let expected = r["records_expected"].as_i64().unwrap_or(0).max(0);
            p.records_expected += expected;
            if is_terminal(state) {
                p.ended += 1;
                if matches!(state, "done" | "done_with_errors") {
                    p.records_done += expected;
                }
            }
        }
        p
    }

    pub fn finished(&self) -> bool {
        self.windows > 0 && self.ended == self.windows
    }

    /// Windows that did not end `done` or `empty`.
    pub fn failures(&self) -> usize {
        self.by_state
            .iter()
            .filter(|(s, _)| is_terminal(s) && !matches!(s.as_str(), "done" | "empty"))
            .map(|(_, n)| n)
            .sum()
    }

    /// `[#########-----------] 9/20 windows  4500/10000 records  1 failed`
    pub fn line(&self) -> String {
        const WIDTH: usize = 24;
        let filled = (self.ended * WIDTH).checked_div(self.windows).unwrap_or(0);
        let mut line = format!(
            "[{}{}] {}/{} windows  {}/{} records",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.ended,
            self.windows,
            self.records_done,
            self.records_expected
        );
        let open: Vec<String> = ["queued", "submitting", "submitted", "retrying"]
            .iter()
            .filter_map(|s| self.by_state.get(*s).map(|n| format!("{n} {s}")))
            .collect();
        if !open.is_empty() {
            line.push_str(&format!("  ({})", open.join(", ")));
        }
        for s in ["done_with_errors", "failed", "cancelled"] {
            if let Some(n) = self.by_state.get(s) {
                line.push_str(&format!("  {n} {}", s.replace('_', " ")));
            }
        }
        line
    }
}

/// Polls the import's runs until every one has ended, drawing progress on stderr: one
/// line redrawn with `\r` on a terminal, one line per change otherwise.
async fn follow(client: &Client, connector: u64, roots: &[u64]) -> Result<ExitCode, CliError> {
    let tty = std::io::stderr().is_terminal();
    let first = roots.iter().min().copied().unwrap_or(0);
    let domain = json!([["connector_id", "=", connector], ["id", ">=", first]]);
    let mut fields = RUN_FIELDS.to_vec();
    fields.push("id");
    let (mut last_line, mut failures) = (String::new(), 0);
    let family = loop {
        let all =
            match client.search_read(crate::model::run::MODEL, domain.clone(), &fields, json!({"order": "id"})).await {
                Ok(all) => {
                    failures = 0;
                    all
                }
                Err(CliError::Unreachable { .. }) if failures + 1 < FOLLOW_MAX_FAILURES => {
                    failures += 1;
                    tokio::time::sleep(FOLLOW_POLL * 2).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
        let family = family(&all, roots);
        let progress = Progress::of(&family);
        let line = progress.line();
        if line != last_line {
            let mut err = std::io::stderr().lock();
            if tty {
                let pad = last_line.chars().count().saturating_sub(line.chars().count());
                let _ = write!(err, "\r{line}{}", " ".repeat(pad));
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            last_line = line;
        }
        if progress.finished() {
            if tty {
                eprintln!();
            }
            break family;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    };
    let progress = Progress::of(&family);
    let failed: Vec<&Value> = family
        .iter()
        .filter(|r| !superseded(r, &family))
        .filter(|r| !matches!(r["state"].as_str(), Some("done" | "empty")))
        .collect();
    if failed.is_empty() {
        println!("import done: {} windows, {} records tokenised", progress.windows, progress.records_done);
        return Ok(ExitCode::SUCCESS);
    }
    println!("import ended with {} of {} windows not done:", failed.len(), progress.windows);
    for r in failed {
        let error = match (cell(&r["error_code"]), cell(&r["error_message"])) {
            (code, msg) if code.is_empty() => msg,
            (code, msg) => format!("{code}: {msg}"),
        };
        println!(
            "  run #{} [{} -> {}) {}: {}",
            r["id"],
            cell(&r["window_start"]),
            cell(&r["window_end"]),
            cell(&r["state"]),
            shorten(&error, 300)
        );
    }
    Ok(ExitCode::from(EXIT_FAILED_RUNS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let t = |s| parse_time(s).map(format_datetime);
        assert_eq!(t("2026-01-02 03:04:05").as_deref(), Ok("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02T03:04:05Z").as_deref(), Ok("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02T05:04:05+02:00").as_deref(), Ok("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02T03:04:05").as_deref(), Ok("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02").as_deref(), Ok("2026-01-02 00:00:00"));
        assert!(parse_time("yesterday").is_err());
    }

    fn run(id: u64, state: &str, expected: i64, split_of: Option<u64>, retry_of: Option<u64>) -> Value {
        let m2o = |v: Option<u64>| v.map_or(json!(false), |v| json!([v, format!("#{v}")]));
        json!({"id": id, "state": state, "records_expected": expected,
               "split_of_id": m2o(split_of), "retry_of_id": m2o(retry_of), "mts_status": false})
    }

    #[test]
    fn the_family_follows_splits_and_retries_only() {
        let all = vec![
            run(5, "done", 500, None, None),
            run(6, "done", 400, Some(5), None),
            run(7, "queued", 0, None, None),
            run(8, "submitted", 300, None, Some(6)),
            run(9, "queued", 0, Some(8), None),
        ];
        let ids: Vec<u64> = family(&all, &[5]).iter().filter_map(|r| r["id"].as_u64()).collect();
        assert_eq!(ids, vec![5, 6, 8, 9], "run 7 belongs to another trigger");
    }

    #[test]
    fn progress_counts_windows_records_and_failures() {
        let mut lost = run(2, "cancelled", 100, None, None);
        lost["mts_status"] = json!("lost");
        let fam = vec![
            run(1, "done", 500, None, None),
            lost,
            run(3, "done", 100, None, Some(2)),
            run(4, "failed", 200, Some(1), None),
            run(5, "submitted", 300, Some(1), None),
        ];
        let p = Progress::of(&fam);
        assert_eq!((p.windows, p.ended, p.records_expected, p.records_done), (4, 3, 1100, 600));
        assert!(!p.finished());
        assert_eq!(p.failures(), 1, "the lost run was resubmitted, so it is not a failure");
        assert!(p.line().contains("3/4 windows  600/1100 records  (1 submitted)  1 failed"), "{}", p.line());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
