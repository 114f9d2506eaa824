//! Client connections: how many may be open, and how long each may stay idle or take to
//! send its request's headers, so that idle and slow clients cannot hold the service.
//!
//! Each connection is in one phase, kept in a [`ConnState`]:
//! - **idle**: between requests (or before the first), no byte of the next one yet; it
//!   is closed after the idle timeout;
//! - **headers**: bytes of a request arrived but the request has not reached the
//!   handler; it is closed after the header timeout (slowloris);
//! - **busy**: the handler runs (it bounds the body read itself).
//!
//! The phase moves on the bytes read ([`Watched`]), on the handler starting and on it
//! finishing ([`Tracker::busy`]). When [`Tracker::max`] connections are open, a new one
//! closes the connection that has been idle or reading headers the longest; only when
//! every connection is busy does the new one wait (at most a second) and then get closed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const IDLE: u8 = 0;
const HEADERS: u8 = 1;
const BUSY: u8 = 2;

/// The phase of one connection and since when (milliseconds since the tracker started).
pub struct ConnState {
    phase: AtomicU8,
    since_ms: AtomicU64,
    epoch: Instant,
    /// Told to close when another connection needs the slot.
    pub evict: Notify,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// When this connection must be closed if its phase does not change, or `None` while
    /// busy.
    pub fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            IDLE => Some(since + limits.idle),
            HEADERS => Some(since + limits.header),
            _ => None,
        }
    }

    fn evictable_since(&self) -> Option<u64> {
        (self.phase.load(Ordering::Relaxed) != BUSY).then(|| self.since_ms.load(Ordering::Relaxed))
    }
}

/// The timeouts of a connection between requests.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub idle: Duration,
    pub header: Duration,
}

/// Every open connection.
pub struct Tracker {
    max: usize,
    epoch: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// A connection closed.
    closed: Notify,
}

/// Removes a connection from the tracker when its task ends.
pub struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracker.conns().remove(&self.id);
        self.tracker.closed.notify_one();
    }
}

/// Marks a connection busy while a request is handled; idle again when dropped.
pub struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

impl Tracker {
    pub fn new(max: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            max: max.max(1),
            epoch: Instant::now(),
            next: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            closed: Notify::new(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.conns().len()
    }

    /// Makes room for one more connection: answers `true` when there is room (closing
    /// the longest-idle connection if needed), `false` when every connection stayed busy
    /// for a second.
    pub async fn make_room(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let closed = self.closed.notified();
            {
                let conns = self.conns();
                if conns.len() < self.max {
                    return true;
                }
                let victim =
                    conns.values().filter_map(|c| c.evictable_since().map(|t| (t, c.clone()))).min_by_key(|(t, _)| *t);
                if let Some((_, c)) = victim {
                    // It leaves the map when its task ends; the new connection may go over
                    // the limit by the few being closed meanwhile.
                    c.set(BUSY);
                    c.evict.notify_one();
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return false;
            }
        }
    }

    /// Registers a new connection (idle).
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
            epoch: self.epoch,
            evict: Notify::new(),
        });
        state.set(IDLE);
        self.conns().insert(id, state.clone());
        Registration { tracker: self.clone(), id, state }
    }
}

impl Registration {
    /// Marks the connection busy until the guard is dropped.
    pub fn busy(state: &Arc<ConnState>) -> BusyGuard {
        state.set(BUSY);
        BusyGuard(state.clone())
    }
}

/// A socket that moves its connection from idle to "reading headers" on the first byte.
pub struct Watched<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        Watched { inner, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.state.phase.load(Ordering::Relaxed) == IDLE {
            self.state.set(HEADERS);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft open-files limit to the hard one; answers the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// Descriptors kept for everything but client connections: the store, outgoing HTTP
/// (MTS, ODK Central, callback targets), the jq workers' pipes, the log.
pub const RESERVED_FILES: u64 = 256;

/// The connection limit that fits `open_files` (at least 16).
pub fn fit_to_open_files(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES).max(16);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_stays_below_the_open_files() {
        assert_eq!(fit_to_open_files(1000, 1024), 768);
        assert_eq!(fit_to_open_files(1000, 1 << 20), 1000);
        assert_eq!(fit_to_open_files(1000, 100), 16);
    }

    #[tokio::test]
    async fn a_full_tracker_evicts_the_longest_idle() {
        let t = Tracker::new(2);
        let a = t.register();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = t.register();
        let _busy = Registration::busy(&b.state);
        assert!(t.make_room().await, "a is idle: it makes room");
        // `a` was told to close, and counts as busy (not evictable twice) until it does.
        assert!(a.state.evictable_since().is_none());
        drop(a);
        let c = t.register();
        let _busy_c = Registration::busy(&c.state);
        // Both busy: no room within a second.
        assert!(!t.make_room().await);
    }
}
