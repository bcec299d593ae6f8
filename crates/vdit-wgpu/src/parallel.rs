//! Filling large host arrays on every core (random benchmark weights, f16 conversion of
//! uploads): a 14B model's 14 billion values take minutes on one thread.

/// Below this many elements one thread does the work.
const MIN_PARALLEL: usize = 1 << 20;

/// Calls `fill(first, chunk)` on consecutive chunks of `out` (`first`: the index of the chunk's
/// first element), on scoped threads when `out` is large. Each element must depend only on
/// its index, so the result is the same however the work is split.
pub fn par_fill<T: Send>(out: &mut [T], fill: impl Fn(usize, &mut [T]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if out.len() < MIN_PARALLEL || threads == 1 {
        fill(0, out);
        return;
    }
    let chunk = out.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (k, part) in out.chunks_mut(chunk).enumerate() {
            let fill = &fill;
            s.spawn(move || fill(k * chunk, part));
        }
    });
}
