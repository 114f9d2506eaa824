//! Calls that may take CPU time (searches, reads of many records) run off the async
//! worker threads, a few at a time, so `/health` and every cheap call keep answering
//! while they run.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

/// Heavy calls running at once; more wait (without holding a thread) for a slot.
pub const HEAVY_CALLS: usize = 4;

static SLOTS: Semaphore = Semaphore::const_new(HEAVY_CALLS);

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
