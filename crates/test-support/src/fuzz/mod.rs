//! The guards every fuzz test case runs under (`make fuzz`, and a few cases in `make test`):
//! a counting global allocator, a time limit and a panic catcher, and the proptest
//! configuration (`KEYSYNC_FUZZ_CASES`). Each fuzz test binary installs the allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: test_support::fuzz::Counting = test_support::fuzz::Counting;
//! ```
//!
//! [`json`] builds near-valid JSON and [`stub`] serves chosen answers over HTTP.

pub mod json;
pub mod stub;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, TestCaseError};

/// [`System`], counting the bytes allocated now and the most allocated at once.
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are only added to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(pointer, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        moved
    }
}

/// How long one case may take: a guard against hangs, not a benchmark.
pub const TIME_LIMIT: Duration = Duration::from_secs(1);

/// The most one case may allocate at once: 64 MiB and 64 bytes per input byte.
pub fn allocation_limit(input_len: usize) -> usize {
    (64 << 20) + input_len.saturating_mul(64)
}

/// `KEYSYNC_FUZZ_CASES` (`make fuzz` sets 20000), else 256.
pub fn config() -> Config {
    let cases = std::env::var("KEYSYNC_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.trim().parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // No regression files written next to the sources.
        failure_persistence: None,
        max_shrink_time: 60_000,
        // ChaCha, the default, is most of the generation time in a debug build.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..Config::default()
    }
}

/// One case at a time per test binary, so that the allocation peak is the case's own.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `job` on a thread of its own under the guards: a panic, a run past
/// [`TIME_LIMIT`] or a peak allocation past [`allocation_limit`] of `input_len` fails
/// the case, naming `what`.
pub fn guarded<R: Send + 'static>(
    what: &str,
    input_len: usize,
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R, TestCaseError> {
    guarded_within(what, TIME_LIMIT, allocation_limit(input_len), job)
}

pub fn guarded_within<R: Send + 'static>(
    what: &str,
    time_limit: Duration,
    byte_limit: usize,
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R, TestCaseError> {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (sender, receiver) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(format!("fuzz {what}"))
        .stack_size(8 << 20);
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let started = Instant::now();
    worker
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job));
            let _ = sender.send(outcome);
        })
        .map_err(|error| TestCaseError::fail(format!("{what}: no thread: {error}")))?;
    let outcome = match receiver.recv_timeout(time_limit) {
        Ok(outcome) => outcome,
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "{what}: no answer within {time_limit:?} (a hang?)"
            )));
        }
    };
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    let result = outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {message}"))
    })?;
    if elapsed > time_limit {
        return Err(TestCaseError::fail(format!(
            "{what} took {elapsed:?}, over {time_limit:?}"
        )));
    }
    if peak > byte_limit {
        return Err(TestCaseError::fail(format!(
            "{what} allocated {peak} bytes at once, over {byte_limit}"
        )));
    }
    Ok(result)
}

/// The guards themselves fail a case that panics, hangs or allocates too much.
pub fn self_test() {
    let panics = guarded_within("panic", TIME_LIMIT, 1 << 20, || -> u8 {
        panic!("deliberate")
    });
    assert!(
        format!("{panics:?}").contains("deliberate"),
        "a panic passed: {panics:?}"
    );
    let hangs = guarded_within("hang", Duration::from_millis(20), 1 << 20, || {
        std::thread::sleep(Duration::from_millis(200))
    });
    assert!(
        format!("{hangs:?}").contains("no answer"),
        "a hang passed: {hangs:?}"
    );
    let allocates = guarded_within("allocation", TIME_LIMIT, 1 << 20, || {
        std::hint::black_box(vec![1u8; 4 << 20]).len()
    });
    assert!(
        format!("{allocates:?}").contains("allocated"),
        "a large allocation passed: {allocates:?}"
    );
    // The peak is the whole binary's, and other tests of the binary generate their inputs
    // while a case runs: a well-behaved job gets the budget every real case gets, not the
    // 1 MiB above, which another test's generation alone can pass.
    let nothing = guarded_within("nothing", TIME_LIMIT, allocation_limit(0), || 7);
    assert!(
        matches!(nothing, Ok(7)),
        "a well-behaved job failed: {nothing:?}"
    );
}
