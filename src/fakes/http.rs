//! Shared plumbing for the fakes: the hyper accept loop on 127.0.0.1:0, request recording and small reply helpers.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One HTTP request as a fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Percent-encoded path, without the query.
    pub path: String,
    /// Raw query string (without `?`), if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, when it was JSON.
    pub body: Option<Value>,
    /// The body as (lossy) UTF-8 text.
    pub raw_body: String,
}

impl Recorded {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded (`+` read as a space), first occurrence.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(self.query.as_deref().unwrap_or("")).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The value of one cookie from the `Cookie` header(s).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// The request as one line of JSON (method, path, query, every header, the body as
/// text), headers first: what an echoing server puts in its error answer, the way a
/// misconfigured proxy or a verbose framework repeats the request it refused.
pub fn echo_line(req: &Recorded) -> String {
    let headers: serde_json::Map<String, Value> =
        req.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    serde_json::json!({"headers": headers, "method": req.method, "path": req.path, "query": req.query, "body": req.raw_body})
        .to_string()
}

/// The reply type every fake handler produces.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Locks a mutex, ignoring poisoning: fake state stays usable after a panicking test thread.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running HTTP server bound to 127.0.0.1 on a free port. Stops on drop.
pub(crate) struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and serves every request with `handler` on the current tokio runtime.
    /// Each request is recorded before the handler sees it.
    pub(crate) async fn start<H, Fut>(handler: H) -> io::Result<Server>
    where
        H: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Self::start_with_cancel(handler, CancellationToken::new()).await
    }

    /// Like [`Server::start`], stopping when `cancel` is cancelled (or the server dropped).
    pub(crate) async fn start_with_cancel<H, Fut>(handler: H, cancel: CancellationToken) -> io::Result<Server>
    where
        H: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler = Arc::new(handler);
        let task = tokio::spawn(accept_loop(listener, handler, log.clone(), cancel.clone()));
        Ok(Server { addr, cancel, task: Some(task), log })
    }

    /// `http://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }

    /// Stops accepting, closes open connections and waits for the accept loop to end.
    pub(crate) async fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // The loop only ends by cancellation; a join error would be a panic inside it,
            // which has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop<H, Fut>(
    listener: TcpListener,
    handler: Arc<H>,
    log: Arc<Mutex<Vec<Recorded>>>,
    cancel: CancellationToken,
) where
    H: Fn(Recorded) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let log = log.clone();
        let conn_cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let log = log.clone();
                async move {
                    let recorded = record(req).await;
                    lock(&log).push(recorded.clone());
                    Ok::<_, Infallible>(handler(recorded).await)
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_cancel.cancelled() => {}
            }
        });
    }
}

async fn record(req: Request<Incoming>) -> Recorded {
    let (parts, body) = req.into_parts();
    // A body that fails mid-stream is recorded as empty; the handler answers as for no body.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    Recorded {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: serde_json::from_slice(&bytes).ok(),
        raw_body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A reply with a body and content type.
pub(crate) fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The outage switches every fake has: waits `delay`, then, when `down`, answers what
/// a proxy in front of a stopped server does (503 with an HTML page titled `title`).
pub(crate) async fn outage(down: bool, delay: std::time::Duration, title: &str) -> Option<Reply> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    down.then(|| {
        reply(StatusCode::SERVICE_UNAVAILABLE, "text/html", format!("<html><body><h1>{title}</h1></body></html>"))
    })
}

/// A JSON reply.
pub(crate) fn json(status: StatusCode, value: &Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

/// A plain-text reply.
pub(crate) fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.to_string())
}

/// Adds a header to a reply; values that are not valid header text are skipped.
pub(crate) fn with_header(mut resp: Reply, name: header::HeaderName, value: &str) -> Reply {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(name, v);
    }
    resp
}

/// A random alphanumeric string (tokens, session ids).
pub(crate) fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A random RFC 4122 version-4 UUID string.
pub(crate) fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Splits a query string into percent-decoded pairs (`+` is a space, as in forms).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Percent-decodes `s`; invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%41", true), "%zzA");
        let pairs = query_pairs("$filter=x%20ge%201&%24top=2");
        assert_eq!(pairs[0], ("$filter".into(), "x ge 1".into()));
        assert_eq!(pairs[1], ("$top".into(), "2".into()));
    }

    #[test]
    fn uuid_shape() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
