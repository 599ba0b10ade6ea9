//! What a measured call allocates: its largest single allocation, and the memory it made the
//! process hold at its peak beyond what was held when it began. The counts come from the
//! `tracking-allocator` global allocator's callbacks (no unsafe code of ours); the fuzzer is
//! single-threaded, so process-wide counters measure the call.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker};

pub use tracking_allocator::Allocator;

static HELD: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counter;

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, size: usize, _wrapped: usize, _group: AllocationGroupId) {
        let held = HELD.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
        PEAK.fetch_max(held, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }

    fn deallocated(
        &self,
        _addr: usize,
        size: usize,
        _wrapped: usize,
        _source: AllocationGroupId,
        _current: AllocationGroupId,
    ) {
        HELD.fetch_sub(size as isize, Ordering::Relaxed);
    }
}

/// Starts counting every allocation of the process.
pub fn start() {
    AllocationRegistry::set_global_tracker(Counter)
        .expect("the allocation counter is installed once");
    AllocationRegistry::enable_tracking();
}

/// A call's value, its largest single allocation, and the most it made the process hold
/// beyond what it held before.
pub struct Measured<T> {
    pub value: T,
    pub largest: usize,
    pub peak_growth: usize,
}

pub fn measure<T>(call: impl FnOnce() -> T) -> Measured<T> {
    let before = HELD.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let value = call();
    let peak_growth = (PEAK.load(Ordering::Relaxed) - before).max(0) as usize;
    Measured {
        value,
        largest: LARGEST.load(Ordering::Relaxed),
        peak_growth,
    }
}
