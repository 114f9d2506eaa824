//! Calls that may take CPU time (searches, reads of many records) run off the async
//! worker threads, a few at a time, so `/health` and every cheap call keep answering
//! while they run. A read is first tried on the worker thread within a small budget of
//! work (most are a page of a list: far cheaper than handing the thread over), and run
//! again off the worker threads when it needs more.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

use super::error::OdooError;

/// Heavy calls running at once; more wait (without holding a thread) for a slot.
pub const HEAVY_CALLS: usize = 4;

/// What a read tried on a worker thread may spend: records looked at plus domain work
/// (see `model::domain::Budget`), about a millisecond.
pub const INLINE_WORK: u64 = 20_000;
/// Ids a `read` / `name_get` tried on a worker thread may ask for.
pub const INLINE_IDS: usize = 1_000;
/// Bytes of answer a read tried on a worker thread may build.
pub const INLINE_ANSWER: usize = 512 << 10;

static SLOTS: Semaphore = Semaphore::const_new(HEAVY_CALLS);

tokio::task_local! {
    static INLINE: ();
}

/// Whether the current call is a read tried on a worker thread (so bounded by the
/// `INLINE_*` limits, past which it answers [`OdooError::Offload`]).
pub fn inline() -> bool {
    INLINE.try_with(|_| ()).is_ok()
}

/// Runs the read-only call `make` makes on this worker thread within the `INLINE_*`
/// limits; when it needs more ([`OdooError::Offload`]), makes it again under [`run`]
/// with the full limits. Only for calls that change nothing: the first try is thrown
/// away.
pub async fn read_first<T, F, Fut>(make: F) -> Result<T, OdooError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, OdooError>>,
{
    match INLINE.scope((), make()).await {
        Err(OdooError::Offload) => run(make()).await,
        done => done,
    }
}

/// Runs `work` (a future that may compute for a while; what it awaits, e.g. a store
/// flush, it awaits on this thread) where it cannot stall the runtime: on a multi-threaded runtime under
/// `block_in_place`, which first hands this worker's other tasks to another thread; as
/// a plain `.await` otherwise (single-threaded tests).
pub async fn run<F: std::future::Future>(work: F) -> F::Output {
    // The semaphore is never closed, so acquiring only waits.
    let _slot = SLOTS.acquire().await.ok();
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(work)),
        _ => work.await,
    }
}
