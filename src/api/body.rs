//! Reading request bodies within bounds: a size limit (a declared `Content-Length` over
//! it is refused before anything is read, a chunked body as soon as it passes it), a time
//! limit for the whole body, and a process-wide budget of memory held by bodies being
//! read or handled ([`BODY_MEMORY`]), so that many large bodies at once wait (or are
//! refused) instead of growing the process.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes all request bodies being read or handled may hold together.
pub const BODY_MEMORY: usize = 128 << 20;

static MEMORY: LazyLock<std::sync::Arc<Semaphore>> = LazyLock::new(|| std::sync::Arc::new(Semaphore::new(BODY_MEMORY)));

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0} s")]
    TooSlow(u64),
    #[error("too many large requests at once; try again")]
    Busy,
    #[error("the body could not be read")]
    Broken,
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Broken => StatusCode::BAD_REQUEST,
        }
    }
}

/// How much of a refused body is still read (and dropped) after the refusal, and for how
/// long, so that a client still sending it reads the answer instead of a reset
/// connection ("lingering close", as web servers do): many clients read the answer only
/// once they sent the whole body. Nothing of it is kept.
pub const LINGER_BYTES: usize = 64 << 20;
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body for a little while (see
/// [`LINGER_BYTES`]) without holding it: the answer goes out meanwhile, and the
/// connection (its answer says `Connection: close`) closes after.
pub fn linger(body: Incoming) {
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        while seen < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    });
}

/// The memory a body holds; given back when dropped.
pub struct Held {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// Reads `body` whole: at most `limit` bytes, within `timeout`, its memory counted in
/// [`BODY_MEMORY`] until the returned [`Held`] is dropped.
pub async fn read(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<(Bytes, Held), BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        linger(body);
        return Err(BodyError::TooLarge(limit));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let too_slow = || BodyError::TooSlow(timeout.as_secs().max(1));
    let mut held = Vec::new();
    if let Some(n) = declared.filter(|n| *n > 0) {
        held.push(reserve(n as usize, deadline).await.map_err(|()| BodyError::Busy)?);
    }
    let mut reserved = declared.unwrap_or(0) as usize;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(too_slow()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > limit {
            linger(body);
            return Err(BodyError::TooLarge(limit));
        }
        let needed = buf.len() + data.len();
        if needed > reserved {
            held.push(reserve(needed - reserved, deadline).await.map_err(|()| BodyError::Busy)?);
            reserved = needed;
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), Held { _permits: held }))
}

/// Takes `n` bytes of [`BODY_MEMORY`], waiting until `deadline` at most.
async fn reserve(n: usize, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit, ()> {
    let n = u32::try_from(n.min(BODY_MEMORY)).map_err(|_| ())?;
    match tokio::time::timeout_at(deadline, MEMORY.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(()),
    }
}
