//! Wires store, API and shutdown together: `run` serves until `shutdown` resolves,
//! lets in-flight calls finish, and flushes the store.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub mod conns;

use crate::api::{self, App};
use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::secret::Secret;
use crate::store::{Store, StoreError};

/// Every model the store keeps a tree for.
pub const MODELS: &[&str] = &[crate::model::connector::MODEL, crate::model::run::MODEL, crate::model::delivery::MODEL];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error("cannot read or create the API key file {path}: {source}")]
    ApiKey { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start the scheduler thread: {0}")]
    Scheduler(std::io::Error),
}

/// The API key from the configuration, else from `<data_dir>/api-key`, created with a
/// random key (mode 0600) on first start. The key itself is never logged.
pub fn api_key(config: &ServeConfig) -> Result<Secret, ServeError> {
    if let Some(key) = &config.api_key {
        return Ok(key.clone());
    }
    let path = config.data_dir.join("api-key");
    let err = |source| ServeError::ApiKey { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => {
            tracing::info!(path = %path.display(), "using the API key stored in the data dir");
            Ok(Secret::new(key.trim()))
        }
        Ok(_) | Err(_) if !path.exists() || std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) => {
            let key = random_key();
            write_private(&path, key.expose()).map_err(err)?;
            tracing::info!(path = %path.display(), "generated an API key; read it from this file");
            Ok(key)
        }
        Ok(_) => unreachable_empty(&path),
        Err(e) => Err(err(e)),
    }
}

fn unreachable_empty(path: &Path) -> Result<Secret, ServeError> {
    Err(ServeError::ApiKey { path: path.into(), source: std::io::Error::other("the file is empty") })
}

fn random_key() -> Secret {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

/// Remembers every stored connector's secrets for the scrubber, and moves the extra
/// callback headers of connectors stored by an earlier version into their secrets (they
/// were readable in answers), in one durable batch.
async fn migrate_extra_headers(store: &Store) -> Result<(), ServeError> {
    for c in store.list(crate::model::connector::MODEL) {
        crate::scrub::remember_connector(&c);
    }
    let changed: Vec<_> = {
        let _guard = store.write_lock();
        let changed: Vec<_> = store
            .list(crate::model::connector::MODEL)
            .iter()
            .filter_map(|c| {
                let mut c = (**c).clone();
                crate::model::connector::migrate_extra_headers(&mut c).then_some(c)
            })
            .collect();
        if !changed.is_empty() {
            store.put_all(crate::model::connector::MODEL, changed.clone())?;
        }
        changed
    };
    if !changed.is_empty() {
        store.flush().await?;
        tracing::info!(connectors = changed.len(), "extra callback headers moved to the secrets");
    }
    Ok(())
}

/// Files and dirs this process creates get no group or other permissions (the data dir
/// holds secrets in clear).
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Opens the store, binds, and serves until `shutdown` resolves.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    // Everything this process creates (the store, the API key) is its user's alone.
    private_umask();
    // The store first: a second process on the same data dir fails on its lock, clearly,
    // before anything else.
    let started = std::time::Instant::now();
    let store = Arc::new(Store::open_with(&config.data_dir, MODELS, config.store.options)?);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        bytes = store.file_bytes(),
        ms = started.elapsed().as_millis() as u64,
        "store open"
    );
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    serve_on(store, listener, config, shutdown).await
}

/// Serves an open store on a bound `listener` (the demo binds its own to learn the port).
pub async fn serve_on(
    store: Arc<Store>,
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let key = api_key(&config)?;
    crate::scrub::register_global(key.expose());
    migrate_extra_headers(&store).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ServeError::Http(e.to_string()))?;
    let mut engine_config = config.engine.clone();
    if engine_config.public_url.is_empty() {
        engine_config.public_url = format!("http://{addr}");
    }
    crate::jq::sandbox::install(crate::jq::sandbox::SandboxConfig {
        workers: config.limits.jq_workers,
        cpu_limit: Duration::from_secs(config.limits.jq_cpu_seconds),
        memory_limit: config.limits.jq_memory_mib << 20,
        ..Default::default()
    });
    let engine = Engine::new(store.clone(), engine_config, http)?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "mts-connector listening on http://{addr}");
    let app = Arc::new(
        App::new(engine.clone(), config.db_name.clone(), config.api_login.clone(), key)
            .with_session_limits(config.limits.session_idle, config.limits.session_max),
    );
    let scheduler = crate::engine::scheduler::start(engine.clone()).map_err(ServeError::Scheduler)?;
    let deliveries = tokio::spawn(crate::relay::deliver::run(engine.clone()));
    let retention = tokio::spawn(crate::store::retention::run(
        store.clone(),
        config.store.retention.clone(),
        engine.cancel.clone(),
    ));
    run(listener, app, ServerLimits::from_config(&config.limits), shutdown).await;
    engine.shutdown(Duration::from_secs(10)).await;
    let _ = scheduler.await;
    let _ = deliveries.await;
    let _ = retention.await;
    // Bounded: a full or failing disk must not keep the process from exiting (what was
    // acknowledged is durable already; the rest was never acknowledged).
    match tokio::time::timeout(Duration::from_secs(10), store.flush()).await {
        Ok(Ok(())) => tracing::info!("stopped; store flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "stopped; the last writes could not be flushed"),
        Err(_) => tracing::warn!("stopped; the store did not flush within 10 s"),
    }
    Ok(())
}

/// The most a connection buffers of what a client sends (request headers must fit).
pub const READ_BUFFER: usize = 64 << 10;

/// How the accept loop treats clients (from [`crate::config::Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Client connections open at once.
    pub max_connections: usize,
    pub conn: conns::ConnLimits,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
}

impl ServerLimits {
    /// The configured limits, the connection count lowered to fit the open-files limit
    /// (raised to its hard value first).
    pub fn from_config(limits: &crate::config::Limits) -> ServerLimits {
        let open_files = conns::raise_open_files_limit();
        let max_connections = conns::fit_to_open_files(limits.max_connections, open_files);
        if max_connections < limits.max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                max_connections,
                open_files,
                "the open-files limit allows fewer client connections than configured"
            );
        }
        ServerLimits {
            max_connections,
            conn: conns::ConnLimits { idle: limits.idle_timeout, header: limits.header_timeout },
            body_timeout: limits.body_timeout,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        let l = crate::config::Limits::default();
        ServerLimits {
            max_connections: l.max_connections,
            conn: conns::ConnLimits { idle: l.idle_timeout, header: l.header_timeout },
            body_timeout: l.body_timeout,
        }
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then waits (up to 30 s) for
/// in-flight requests to finish. Connections are limited as [`conns`] describes.
pub async fn run(listener: TcpListener, app: Arc<App>, limits: ServerLimits, shutdown: impl Future<Output = ()>) {
    let builder = api::http::service_builder();
    let methods: jsonrpsee::Methods = api::http::rpc_module(app.clone()).into();
    let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
    let graceful = GracefulShutdown::new();
    let tracker = conns::Tracker::new(limits.max_connections);
    tracing::info!(max_connections = tracker.max(), "accepting client connections");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if !tracker.make_room().await {
            tracing::warn!(open = tracker.open(), "every client connection is busy; closing a new one");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let registration = tracker.register();
        let state = registration.state.clone();
        let (app, builder, methods, stop) = (app.clone(), builder.clone(), methods.clone(), stop_handle.clone());
        let service = service_fn(move |req| {
            let busy = conns::Registration::busy(&state);
            let fut = api::http::handle(
                app.clone(),
                builder.clone(),
                methods.clone(),
                stop.clone(),
                limits.body_timeout,
                req,
            );
            async move {
                let resp = fut.await;
                drop(busy);
                resp
            }
        });
        let io = TokioIo::new(conns::Watched::new(stream, registration.state.clone()));
        // A small read buffer per connection (hyper's default grows to ~400 KiB): the
        // memory idle or slow clients can hold is bounded by connections x this.
        let conn = hyper::server::conn::http1::Builder::new().max_buf_size(READ_BUFFER).serve_connection(io, service);
        let conn = graceful.watch(conn);
        let conn_limits = limits.conn;
        tokio::spawn(async move {
            tokio::pin!(conn);
            let state = registration.state.clone();
            loop {
                // Look again at least every header timeout: the phase may change meanwhile
                // (an idle connection starting a request), and with it the deadline. A busy
                // connection has none (the handler bounds its own work).
                let next_look = std::time::Instant::now() + conn_limits.header;
                let wake = state.deadline(&conn_limits).map_or(next_look, |at| at.min(next_look));
                let timer = tokio::time::sleep_until(wake.into());
                tokio::select! {
                    result = &mut conn => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = state.evict.notified() => {
                        tracing::debug!("connection closed to make room for a new one");
                        break;
                    }
                    () = timer => {
                        if state.deadline(&conn_limits).is_some_and(|at| at <= std::time::Instant::now()) {
                            tracing::debug!("connection closed: idle or too slow sending its request");
                            break;
                        }
                    }
                }
            }
            drop(registration);
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = server_handle.stop();
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections did not finish within 30 s");
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
