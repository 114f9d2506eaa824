//! Command line, environment and TOML configuration.
//!
//! Every option of `serve` can come from a flag, an `MTSC_*` environment variable or the
//! TOML file named by `--config`; the first one set wins in that order (flag > env >
//! file), then the built-in default. clap resolves flag and environment, so its fields
//! are `Option`s without defaults; [`ServeArgs::resolve`] lays the file and the defaults
//! underneath.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::engine::EngineConfig;

use crate::secret::Secret;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8070";
pub const DEFAULT_DATA_DIR: &str = "./mts-connector-data";
pub const DEFAULT_DB_NAME: &str = "mts_connector";
pub const DEFAULT_API_LOGIN: &str = "admin";

#[derive(Debug, Parser)]
#[command(
    name = "mts-connector",
    version,
    about = "Connector engine between OpenG2P (Odoo) and the MOSIP Token Seeder"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: the Odoo-dialect JSON-RPC API, the store and the scheduler.
    Serve(Box<ServeArgs>),
    /// Show the whole flow against in-process fake ODK, MTS and Odoo: a connector, a
    /// manual import, the runs and the tokens delivered.
    Demo,
    /// List the connectors of a running service: status, schedule, last run, next run.
    Connectors(ClientArgs),
    /// Queue a manual import of a past time range for one connector of a running service.
    Import(ImportArgs),
    /// List the runs of one connector of a running service, newest first.
    Runs(RunsArgs),
    /// Internal: a jq evaluation worker the service starts itself (see `jq::worker`).
    #[command(name = "__jq-worker", hide = true)]
    JqWorker(JqWorkerArgs),
    /// A fake ODK Central on 127.0.0.1 for the integration tier against the real MTS
    /// (scripts/real): prints one JSON line with its URLs, serves until SIGTERM.
    #[command(hide = true)]
    FakeOdk(FakeOdkArgs),
}

/// The limits the service gives a jq worker process.
#[derive(Debug, Clone, Args)]
pub struct JqWorkerArgs {
    #[arg(long)]
    pub cpu_seconds: u64,
    #[arg(long)]
    pub memory_bytes: u64,
}

/// `fake-odk`: one web user, one form, the submissions of a seed file.
#[derive(Debug, Clone, Args)]
pub struct FakeOdkArgs {
    #[arg(long, default_value = "collector@example.org")]
    pub email: String,
    #[arg(long, default_value = "odk-password")]
    pub password: String,
    #[arg(long, default_value = "1")]
    pub project: String,
    #[arg(long, default_value = "registration")]
    pub form: String,
    /// JSON file: a list of {"submission_date": "YYYY-MM-DD HH:MM:SS" (UTC), "fields": {...}}
    #[arg(long)]
    pub seed: Option<std::path::PathBuf>,
}

/// Where the running service is and how to authenticate to it (the operator commands).
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// URL of the running service
    #[arg(long, env = "MTSC_URL", default_value = "http://127.0.0.1:8070")]
    pub url: String,
    /// The service's "database" name (its --db-name)
    #[arg(long, env = "MTSC_DB_NAME", default_value = DEFAULT_DB_NAME)]
    pub db_name: String,
    /// The service's login (its --api-login)
    #[arg(long, env = "MTSC_API_LOGIN", default_value = DEFAULT_API_LOGIN)]
    pub api_login: String,
    /// The service's API key (its --api-key, or the content of <data-dir>/api-key)
    #[arg(long, env = "MTSC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The connector: its id or its exact name
    pub connector: String,
    /// Start of the range (included): "YYYY-MM-DD HH:MM:SS" in UTC, or ISO-8601
    #[arg(long, value_parser = crate::cli::parse_time)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the range (excluded), not in the future
    #[arg(long, value_parser = crate::cli::parse_time)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// Show the progress of windows and records until every window has ended; exit 3
    /// if any did not end done or empty
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The connector: its id or its exact name
    pub connector: String,
    /// Only the failed runs
    #[arg(long)]
    pub failed: bool,
    /// How many runs to show
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys as the long flag names with `_`).
    #[arg(long, env = "MTSC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the API listens on [default: 127.0.0.1:8070]
    #[arg(long, env = "MTSC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./mts-connector-data]
    #[arg(long, env = "MTSC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Odoo "database" name clients must pass [default: mts_connector]
    #[arg(long, env = "MTSC_DB_NAME")]
    pub db_name: Option<String>,
    /// The login clients authenticate with [default: admin]
    #[arg(long, env = "MTSC_API_LOGIN")]
    pub api_login: Option<String>,
    /// The password (API key) clients authenticate with. Without one, the first start
    /// writes a random key to <data-dir>/api-key (mode 0600) and later starts reuse it.
    #[arg(long, env = "MTSC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Log format: text or json [default: text]. Filter with RUST_LOG.
    #[arg(long, env = "MTSC_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// MTS requests in flight at once (from the ODK pre-count until MTS ended them), over all connectors and MTS endpoints [default: 64]
    #[arg(long, env = "MTSC_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// MTS requests in flight at once on one MTS endpoint [default: 4, the MTS image's gunicorn workers]
    #[arg(long, env = "MTSC_MAX_PER_MTS")]
    pub max_per_mts: Option<usize>,
    /// First retry delay of a failed submission, doubled each attempt [default: 30]
    #[arg(long, env = "MTSC_RETRY_BASE_SECONDS")]
    pub retry_base_seconds: Option<f64>,
    /// Longest retry delay [default: 3600]
    #[arg(long, env = "MTSC_RETRY_CAP_SECONDS")]
    pub retry_cap_seconds: Option<f64>,
    /// Attempts before a run is marked failed [default: 10]
    #[arg(long, env = "MTSC_MAX_ATTEMPTS")]
    pub max_attempts: Option<i64>,
    /// First wait between status polls of an MTS request, doubled up to --poll-max-seconds [default: 1]
    #[arg(long, env = "MTSC_POLL_SECONDS")]
    pub poll_seconds: Option<f64>,
    /// Longest wait between two status polls of an MTS request [default: 10]
    #[arg(long, env = "MTSC_POLL_MAX_SECONDS")]
    pub poll_max_seconds: Option<f64>,
    /// A request MTS keeps 'submitted' longer than this is taken as lost and resubmitted [default: 3600]
    #[arg(long, env = "MTSC_MTS_LOST_AFTER_SECONDS")]
    pub mts_lost_after_seconds: Option<f64>,
    /// An MTS endpoint that answered no call for this long has lost the requests it held: they are resubmitted elsewhere [default: 600]
    #[arg(long, env = "MTSC_MTS_GONE_AFTER_SECONDS")]
    pub mts_gone_after_seconds: Option<f64>,
    /// Runs kept per connector; failed runs, open runs and the watermark run are kept beyond it [default: 1000]
    #[arg(long, env = "MTSC_RUN_RETENTION")]
    pub run_retention: Option<usize>,
    /// Ended runs (failed ones too) created longer ago than this many days are dropped; 0 keeps them [default: 90]
    #[arg(long, env = "MTSC_RUN_RETENTION_DAYS")]
    pub run_retention_days: Option<f64>,
    /// Delivered relayed records kept per connector (none younger than a day is dropped: its key de-duplicates resubmissions) [default: 100000]
    #[arg(long, env = "MTSC_DELIVERY_RETENTION")]
    pub delivery_retention: Option<usize>,
    /// Delivered and failed relayed records unchanged for longer than this many days are dropped (at least 1) [default: 30]
    #[arg(long, env = "MTSC_DELIVERY_RETENTION_DAYS")]
    pub delivery_retention_days: Option<f64>,
    /// Memory for the store's page cache, in MiB [default: 16]
    #[arg(long, env = "MTSC_STORE_CACHE_MIB")]
    pub store_cache_mib: Option<usize>,
    /// The URL MTS reaches this service at, for relay-mode callbacks [default: http://<listen address>]
    #[arg(long, env = "MTSC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// First retry delay of a relayed callback, doubled each attempt [default: 5]
    #[arg(long, env = "MTSC_RELAY_RETRY_BASE_SECONDS")]
    pub relay_retry_base_seconds: Option<f64>,
    /// Longest retry delay of a relayed callback [default: 600]
    #[arg(long, env = "MTSC_RELAY_RETRY_CAP_SECONDS")]
    pub relay_retry_cap_seconds: Option<f64>,
    /// How long a relayed callback is retried before it is failed [default: 86400]
    #[arg(long, env = "MTSC_RELAY_GIVE_UP_SECONDS")]
    pub relay_give_up_seconds: Option<f64>,
    /// Relayed callbacks in flight to one target [default: 4]
    #[arg(long, env = "MTSC_RELAY_PER_TARGET")]
    pub relay_per_target: Option<usize>,
    /// After MTS ends a relay-mode request, how long to wait for missing records before resubmitting the window [default: 60]
    #[arg(long, env = "MTSC_RELAY_GRACE_SECONDS")]
    pub relay_grace_seconds: Option<f64>,
    /// Days the data of failed relayed callbacks is kept for replay [default: 30]
    #[arg(long, env = "MTSC_RELAY_FAILED_RETENTION_DAYS")]
    pub relay_failed_retention_days: Option<f64>,
    /// Seconds an Odoo session at a callback target may stay unused before the relay logs it out [default: 30]
    #[arg(long, env = "MTSC_RELAY_IDLE_LOGOUT_SECONDS")]
    pub relay_idle_logout_seconds: Option<f64>,
    /// Most client connections open at once; a new one beyond it closes the longest-idle one (or waits) [default: 1000; lowered to fit the open-files limit]
    #[arg(long, env = "MTSC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a keep-alive connection may wait for its next request [default: 60]
    #[arg(long, env = "MTSC_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<f64>,
    /// Seconds a client has to send a request's headers [default: 10]
    #[arg(long, env = "MTSC_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: Option<f64>,
    /// Seconds a client has to send a request's body, once its headers arrived [default: 60]
    #[arg(long, env = "MTSC_BODY_TIMEOUT_SECONDS")]
    pub body_timeout_seconds: Option<f64>,
    /// Seconds a web session (/web/session/authenticate) may stay unused before it expires [default: 3600]
    #[arg(long, env = "MTSC_SESSION_IDLE_SECONDS")]
    pub session_idle_seconds: Option<f64>,
    /// Seconds a web session lasts at most, used or not [default: 86400]
    #[arg(long, env = "MTSC_SESSION_MAX_SECONDS")]
    pub session_max_seconds: Option<f64>,
    /// Worker processes that evaluate relay output formats (jq) [default: 2]
    #[arg(long, env = "MTSC_JQ_WORKERS")]
    pub jq_workers: Option<usize>,
    /// CPU seconds one record's output format may use before it fails [default: 1]
    #[arg(long, env = "MTSC_JQ_CPU_SECONDS")]
    pub jq_cpu_seconds: Option<u64>,
    /// Memory (MiB of address space) of one jq worker process [default: 1024]
    #[arg(long, env = "MTSC_JQ_MEMORY_MIB")]
    pub jq_memory_mib: Option<u64>,
    /// Testing aid: how many seconds one minute of interval_minutes lasts [default: 60]
    #[arg(long, env = "MTSC_MINUTE_SECONDS", hide = true)]
    pub minute_seconds: Option<f64>,
}

/// The TOML file: the same options, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    db_name: Option<String>,
    api_login: Option<String>,
    api_key: Option<String>,
    log_format: Option<LogFormat>,
    max_in_flight: Option<usize>,
    max_per_mts: Option<usize>,
    retry_base_seconds: Option<f64>,
    retry_cap_seconds: Option<f64>,
    max_attempts: Option<i64>,
    poll_seconds: Option<f64>,
    poll_max_seconds: Option<f64>,
    mts_lost_after_seconds: Option<f64>,
    mts_gone_after_seconds: Option<f64>,
    run_retention: Option<usize>,
    run_retention_days: Option<f64>,
    delivery_retention: Option<usize>,
    delivery_retention_days: Option<f64>,
    store_cache_mib: Option<usize>,
    minute_seconds: Option<f64>,
    public_url: Option<String>,
    relay_retry_base_seconds: Option<f64>,
    relay_retry_cap_seconds: Option<f64>,
    relay_give_up_seconds: Option<f64>,
    relay_per_target: Option<usize>,
    relay_grace_seconds: Option<f64>,
    relay_failed_retention_days: Option<f64>,
    relay_idle_logout_seconds: Option<f64>,
    max_connections: Option<usize>,
    idle_timeout_seconds: Option<f64>,
    header_timeout_seconds: Option<f64>,
    body_timeout_seconds: Option<f64>,
    session_idle_seconds: Option<f64>,
    session_max_seconds: Option<f64>,
    jq_workers: Option<usize>,
    jq_cpu_seconds: Option<u64>,
    jq_memory_mib: Option<u64>,
}

/// Connection, body, session and jq limits (see the README's "Limits and timeouts").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client connections open at once (lowered at start to fit `RLIMIT_NOFILE`).
    pub max_connections: usize,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// A web session unused this long expires.
    pub session_idle: Duration,
    /// A web session expires this long after it was opened.
    pub session_max: Duration,
    /// Worker processes evaluating relay output formats.
    pub jq_workers: usize,
    /// CPU seconds one record's output format may use.
    pub jq_cpu_seconds: u64,
    /// Address space of one jq worker, in MiB.
    pub jq_memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            session_idle: Duration::from_secs(3600),
            session_max: Duration::from_secs(86_400),
            jq_workers: 2,
            jq_cpu_seconds: 1,
            jq_memory_mib: 1024,
        }
    }
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub db_name: String,
    pub api_login: String,
    /// `None`: use (or create) `<data_dir>/api-key`.
    pub api_key: Option<Secret>,
    pub log_format: LogFormat,
    pub engine: EngineConfig,
    pub limits: Limits,
    /// The store's memory and what it keeps.
    pub store: StoreConfig,
}

/// The store's settings (`--store-cache-mib` and the retention flags).
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    pub options: crate::store::StoreOptions,
    pub retention: crate::store::retention::RetentionPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} must be a positive number of seconds")]
    Seconds(&'static str),
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error("{0} must be at least {1}")]
    AtLeast(&'static str, u64),
    #[error("{0} must be a number of days, at least {1}")]
    Days(&'static str, f64),
}

fn days(
    name: &'static str,
    value: Option<f64>,
    min: f64,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match value {
        None => Ok(default),
        Some(0.0) if min == 0.0 => Ok(None),
        Some(v) if v.is_finite() && v >= min && v > 0.0 && v < 1e6 => Ok(Some(Duration::from_secs_f64(v * 86_400.0))),
        Some(_) => Err(ConfigError::Days(name, min)),
    }
}

fn seconds(name: &'static str, value: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        Some(_) => Err(ConfigError::Seconds(name)),
    }
}

fn at_least_one<T: PartialOrd + From<u8>>(name: &'static str, value: Option<T>, default: T) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v >= T::from(1) => Ok(v),
        Some(_) => Err(ConfigError::AtLeastOne(name)),
    }
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match self.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().map_err(|_| ConfigError::Empty("listen"))?,
        };
        let config = ServeConfig {
            listen,
            data_dir: self.data_dir.or(file.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            db_name: self.db_name.or(file.db_name).unwrap_or_else(|| DEFAULT_DB_NAME.into()),
            api_login: self.api_login.or(file.api_login).unwrap_or_else(|| DEFAULT_API_LOGIN.into()),
            api_key: self.api_key.or(file.api_key).map(Secret::new),
            log_format: self.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            limits: Limits::default(),
            store: StoreConfig::default(),
            engine: {
                let d = EngineConfig::default();
                EngineConfig {
                    max_in_flight: at_least_one(
                        "max-in-flight",
                        self.max_in_flight.or(file.max_in_flight),
                        d.max_in_flight,
                    )?,
                    max_per_mts: at_least_one("max-per-mts", self.max_per_mts.or(file.max_per_mts), d.max_per_mts)?,
                    retry_base: seconds(
                        "retry-base-seconds",
                        self.retry_base_seconds.or(file.retry_base_seconds),
                        d.retry_base,
                    )?,
                    retry_cap: seconds(
                        "retry-cap-seconds",
                        self.retry_cap_seconds.or(file.retry_cap_seconds),
                        d.retry_cap,
                    )?,
                    max_attempts: at_least_one(
                        "max-attempts",
                        self.max_attempts.or(file.max_attempts),
                        d.max_attempts,
                    )?,
                    poll_min: seconds("poll-seconds", self.poll_seconds.or(file.poll_seconds), d.poll_min)?,
                    poll_max: seconds("poll-max-seconds", self.poll_max_seconds.or(file.poll_max_seconds), d.poll_max)?,
                    gone_after: seconds(
                        "mts-gone-after-seconds",
                        self.mts_gone_after_seconds.or(file.mts_gone_after_seconds),
                        d.gone_after,
                    )?,
                    lost_after: seconds(
                        "mts-lost-after-seconds",
                        self.mts_lost_after_seconds.or(file.mts_lost_after_seconds),
                        d.lost_after,
                    )?,
                    retention: at_least_one("run-retention", self.run_retention.or(file.run_retention), d.retention)?,
                    minute: seconds("minute-seconds", self.minute_seconds.or(file.minute_seconds), d.minute)?,
                    // Filled from the bound address when not given (see server::serve_on).
                    public_url: self.public_url.or(file.public_url).unwrap_or_default(),
                    relay: {
                        let r = crate::relay::RelayConfig::default();
                        crate::relay::RelayConfig {
                            retry_base: seconds(
                                "relay-retry-base-seconds",
                                self.relay_retry_base_seconds.or(file.relay_retry_base_seconds),
                                r.retry_base,
                            )?,
                            retry_cap: seconds(
                                "relay-retry-cap-seconds",
                                self.relay_retry_cap_seconds.or(file.relay_retry_cap_seconds),
                                r.retry_cap,
                            )?,
                            give_up_after: seconds(
                                "relay-give-up-seconds",
                                self.relay_give_up_seconds.or(file.relay_give_up_seconds),
                                r.give_up_after,
                            )?,
                            per_target: at_least_one(
                                "relay-per-target",
                                self.relay_per_target.or(file.relay_per_target),
                                r.per_target,
                            )?,
                            grace: seconds(
                                "relay-grace-seconds",
                                self.relay_grace_seconds.or(file.relay_grace_seconds),
                                r.grace,
                            )?,
                            failed_retention: seconds(
                                "relay-failed-retention-days",
                                self.relay_failed_retention_days
                                    .or(file.relay_failed_retention_days)
                                    .map(|d| d * 86_400.0),
                                r.failed_retention,
                            )?,
                            idle_logout: seconds(
                                "relay-idle-logout-seconds",
                                self.relay_idle_logout_seconds.or(file.relay_idle_logout_seconds),
                                r.idle_logout,
                            )?,
                            ..r
                        }
                    },
                    ..d
                }
            },
        };
        let l = Limits::default();
        let config = ServeConfig {
            limits: Limits {
                max_connections: at_least_one(
                    "max-connections",
                    self.max_connections.or(file.max_connections),
                    l.max_connections,
                )?,
                idle_timeout: seconds(
                    "idle-timeout-seconds",
                    self.idle_timeout_seconds.or(file.idle_timeout_seconds),
                    l.idle_timeout,
                )?,
                header_timeout: seconds(
                    "header-timeout-seconds",
                    self.header_timeout_seconds.or(file.header_timeout_seconds),
                    l.header_timeout,
                )?,
                body_timeout: seconds(
                    "body-timeout-seconds",
                    self.body_timeout_seconds.or(file.body_timeout_seconds),
                    l.body_timeout,
                )?,
                session_idle: seconds(
                    "session-idle-seconds",
                    self.session_idle_seconds.or(file.session_idle_seconds),
                    l.session_idle,
                )?,
                session_max: seconds(
                    "session-max-seconds",
                    self.session_max_seconds.or(file.session_max_seconds),
                    l.session_max,
                )?,
                jq_workers: at_least_one("jq-workers", self.jq_workers.or(file.jq_workers), l.jq_workers)?,
                jq_cpu_seconds: at_least_one(
                    "jq-cpu-seconds",
                    self.jq_cpu_seconds.or(file.jq_cpu_seconds),
                    l.jq_cpu_seconds,
                )?,
                jq_memory_mib: match self.jq_memory_mib.or(file.jq_memory_mib) {
                    None => l.jq_memory_mib,
                    Some(m) if m >= 64 => m,
                    Some(_) => return Err(ConfigError::AtLeast("jq-memory-mib", 64)),
                },
            },
            ..config
        };
        let mut config = config;
        config.store = {
            let d = crate::store::retention::RetentionPolicy::default();
            let cache_mib = at_least_one("store-cache-mib", self.store_cache_mib.or(file.store_cache_mib), 16)?;
            StoreConfig {
                options: crate::store::StoreOptions {
                    cache_bytes: cache_mib.saturating_mul(1 << 20),
                    ..crate::store::StoreOptions::default()
                },
                retention: crate::store::retention::RetentionPolicy {
                    runs_per_connector: config.engine.retention,
                    run_max_age: days(
                        "run-retention-days",
                        self.run_retention_days.or(file.run_retention_days),
                        0.0,
                        d.run_max_age,
                    )?,
                    deliveries_per_connector: at_least_one(
                        "delivery-retention",
                        self.delivery_retention.or(file.delivery_retention),
                        d.deliveries_per_connector,
                    )?,
                    delivery_max_age: days(
                        "delivery-retention-days",
                        self.delivery_retention_days.or(file.delivery_retention_days),
                        1.0,
                        Some(d.delivery_max_age),
                    )?
                    .unwrap_or(d.delivery_max_age),
                    ..d
                },
            }
        };
        if config.db_name.is_empty() {
            return Err(ConfigError::Empty("db-name"));
        }
        if config.api_login.is_empty() {
            return Err(ConfigError::Empty("api-login"));
        }
        if config.api_key.as_ref().is_some_and(Secret::is_empty) {
            return Err(ConfigError::Empty("api-key"));
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    // toml's message quotes the offending line, which could hold the api key: keep only
    // the first line of the message (what and where).
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.message().lines().next().unwrap_or("syntax error").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["mts-connector", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("valid command line").command {
            Command::Serve(args) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_pinned() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8070");
        assert_eq!(c.data_dir, PathBuf::from("./mts-connector-data"));
        assert_eq!(c.db_name, "mts_connector");
        assert_eq!(c.api_login, "admin");
        assert!(c.api_key.is_none());
        assert_eq!(c.log_format, LogFormat::Text);
        let l = c.limits;
        assert_eq!(l.max_connections, 1000);
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.body_timeout, Duration::from_secs(60));
        assert_eq!(l.session_idle, Duration::from_secs(3600));
        assert_eq!(l.session_max, Duration::from_secs(86_400));
        assert_eq!((l.jq_workers, l.jq_cpu_seconds, l.jq_memory_mib), (2, 1, 1024));
        let e = &c.engine;
        assert_eq!((e.max_in_flight, e.max_per_mts), (64, 4));
        assert_eq!((e.poll_min, e.poll_max), (Duration::from_secs(1), Duration::from_secs(10)));
        assert_eq!((e.lost_after, e.gone_after), (Duration::from_secs(3600), Duration::from_secs(600)));
        assert_eq!(c.store.options.cache_bytes, 16 << 20);
        assert_eq!(c.store.retention.runs_per_connector, 1000);
        assert_eq!(c.store.retention.run_max_age, Some(Duration::from_secs(90 * 86400)));
        assert_eq!(c.store.retention.deliveries_per_connector, 100_000);
        assert_eq!(c.store.retention.delivery_max_age, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn limits_come_from_flags_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_connections = 50\nsession_idle_seconds = 5\njq_memory_mib = 256\n").unwrap();
        let c = parse(&["--config", file.to_str().unwrap(), "--max-connections", "7", "--body-timeout-seconds", "2.5"])
            .resolve()
            .unwrap();
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.body_timeout, Duration::from_millis(2500));
        assert_eq!(c.limits.session_idle, Duration::from_secs(5));
        assert_eq!(c.limits.jq_memory_mib, 256);
        assert!(parse(&["--jq-memory-mib", "8"]).resolve().is_err());
        assert!(parse(&["--max-connections", "0"]).resolve().is_err());
    }

    #[test]
    fn retention_flags() {
        let c = parse(&["--run-retention", "5", "--run-retention-days", "0", "--delivery-retention-days", "2"])
            .resolve()
            .unwrap();
        assert_eq!(c.store.retention.runs_per_connector, 5);
        assert_eq!(c.store.retention.run_max_age, None);
        assert_eq!(c.store.retention.delivery_max_age, Duration::from_secs(2 * 86400));
        let err = parse(&["--delivery-retention-days", "0.5"]).resolve().unwrap_err().to_string();
        assert!(err.contains("delivery-retention-days must be a number of days, at least 1"), "{err}");
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "db_name = \"from_file\"\napi_login = \"file_login\"\n").unwrap();
        let args = parse(&["--config", file.to_str().unwrap(), "--db-name", "from_flag"]);
        let c = args.resolve().unwrap();
        assert_eq!(c.db_name, "from_flag");
        assert_eq!(c.api_login, "file_login");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn unknown_file_keys_are_refused_without_echoing_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "api_key = 12\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).resolve().unwrap_err().to_string();
        assert!(err.contains("is not valid"), "{err}");
    }
}
