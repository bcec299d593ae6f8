//! A bounded, seeded mutation fuzzer that runs inside `cargo test`: each target feeds mutated
//! copies of its seeds to one reader for a fixed time, on a thread of its own, and fails on
//! the first input that makes the reader panic, run longer than [`HANG`], or allocate more
//! than its bound (a fixed base plus a multiple of the input's size).
//!
//! `VDIT_FUZZ_SECONDS` sets each target's budget (default [`DEFAULT_SECONDS`]);
//! `VDIT_TEST_SEED` replays a run. An offending input is written to
//! `target/tmp/fuzz-findings/` and named in the failure (a regression keeps it in
//! `tests/fuzz-regressions/`); each run's figures go there too, as `<target>.txt`.

pub mod alloc;
pub mod mutate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vdit_wgpu::rng::Rng;

use mutate::{below, mutate, Lie, Seed};

/// Seconds of mutation per target when `VDIT_FUZZ_SECONDS` is not set.
pub const DEFAULT_SECONDS: f64 = 12.0;

/// No single input may take this long (the slowest valid seed takes milliseconds).
pub const HANG: Duration = Duration::from_secs(10);

/// What a reader makes of one input. `Err` is a clean refusal, the usual outcome.
pub type Feed = Box<dyn FnMut(&[u8]) -> Result<(), String> + Send>;

pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Seed>,
    pub lie: Option<Lie>,
    /// Heap the reader may hold: `alloc_base + alloc_per_byte * input length`.
    pub alloc_base: usize,
    pub alloc_per_byte: usize,
    pub feed: Feed,
}

/// What a run reached.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    pub accepted: u64,
    pub refused: u64,
    pub seconds: f64,
    /// The largest heap peak seen, as a share of its input's bound.
    pub worst_share_of_bound: f64,
}

enum Outcome {
    Done {
        accepted: bool,
        peak: usize,
        bound: usize,
    },
    Panicked(String),
    /// The reader held `peak` bytes of heap for an input of `len` bytes, beyond `bound`.
    OverAllocated {
        peak: usize,
        bound: usize,
        len: usize,
    },
}

fn budget() -> Duration {
    let secs = std::env::var("VDIT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs_f64(secs.max(0.0))
}

/// Where offending inputs are written.
fn findings_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    std::fs::create_dir_all(&dir).expect("creating the findings folder");
    dir
}

fn keep_finding(target: &str, n: u64, input: &[u8]) -> PathBuf {
    let path = findings_dir().join(format!("{target}-{n}.bin"));
    std::fs::write(&path, input).expect("writing a finding");
    path
}

/// Feeds one input, measuring its heap peak against `bound` and catching a panic.
fn feed_one(feed: &mut Feed, input: &[u8], bound: usize) -> Outcome {
    let base = alloc::live();
    alloc::reset_peak();
    let result = catch_unwind(AssertUnwindSafe(|| feed(input)));
    let peak = alloc::peak_since_reset(base);
    match result {
        Ok(_) if peak > bound => Outcome::OverAllocated {
            peak,
            bound,
            len: input.len(),
        },
        Ok(r) => Outcome::Done {
            accepted: r.is_ok(),
            peak,
            bound,
        },
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into()),
        ),
    }
}

/// Runs `target`: first every file kept in `tests/fuzz-regressions/<name>/`, then every seed
/// as it is, then mutations until the budget is spent. Panics on the first finding.
pub fn run(target: Target) -> Report {
    run_with(target, HANG)
}

/// [`run`] with another bound on the time of one input.
fn run_with(target: Target, hang: Duration) -> Report {
    let seed = vdit_wgpu::testing::seed();
    let name = target.name;
    let Target {
        seeds,
        lie,
        alloc_base,
        alloc_per_byte,
        mut feed,
        ..
    } = target;
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let regressions = regression_inputs(name);
    // The input being read and where it came from, for the failure message.
    let current = Arc::new(Mutex::new((Vec::new(), String::new())));
    let (tx, rx) = mpsc::channel();
    let budget = budget();
    let worker = {
        let current = current.clone();
        std::thread::Builder::new()
            .name(format!("fuzz-{name}"))
            .spawn(move || {
                let mut rng = Rng::new(seed);
                let started = Instant::now();
                let as_is = seeds
                    .iter()
                    .map(|s| (s.bytes.clone(), format!("the seed {}", s.name)));
                let fixed: Vec<_> = regressions.into_iter().chain(as_is).collect();
                let mut fixed = fixed.into_iter();
                loop {
                    let (input, origin) = match fixed.next() {
                        Some(f) => f,
                        None if started.elapsed() < budget => {
                            let s = &seeds[below(&mut rng, seeds.len())];
                            let origin = format!("a mutation of {}", s.name);
                            (mutate(&mut rng, s, &seeds, lie), origin)
                        }
                        None => break,
                    };
                    *current.lock().unwrap() = (input.clone(), origin);
                    let bound = alloc_base + alloc_per_byte * input.len();
                    let outcome = feed_one(&mut feed, &input, bound);
                    // After a finding the input must stay in `current` for the report.
                    let stop = !matches!(outcome, Outcome::Done { .. });
                    if tx.send(outcome).is_err() || stop {
                        break;
                    }
                }
            })
            .expect("spawning a fuzz thread")
    };

    let started = Instant::now();
    let mut report = Report::default();
    let replay = format!("replay with VDIT_TEST_SEED={seed}");
    loop {
        let outcome = match rx.recv_timeout(hang) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (input, origin) = current.lock().unwrap().clone();
                let path = keep_finding(name, report.executions, &input);
                panic!(
                    "{name}: {origin} ran longer than {hang:?} (kept in {}; {replay})",
                    path.display()
                );
            }
        };
        report.executions += 1;
        match outcome {
            Outcome::OverAllocated { peak, bound, len } => {
                let (input, origin) = current.lock().unwrap().clone();
                let path = keep_finding(name, report.executions, &input);
                panic!(
                    "{name}: {origin} of {len} bytes made the reader hold {peak} bytes of \
                     heap, beyond its bound of {bound} (kept in {}; {replay})",
                    path.display()
                );
            }
            Outcome::Done {
                accepted,
                peak,
                bound,
            } => {
                report.worst_share_of_bound =
                    report.worst_share_of_bound.max(peak as f64 / bound as f64);
                if accepted {
                    report.accepted += 1;
                } else {
                    report.refused += 1;
                }
            }
            Outcome::Panicked(message) => {
                let (input, origin) = current.lock().unwrap().clone();
                let path = keep_finding(name, report.executions, &input);
                panic!(
                    "{name}: the reader panicked ({message}) on {origin}, kept in {}; {replay}",
                    path.display()
                );
            }
        }
    }
    worker.join().expect("the fuzz thread");
    report.seconds = started.elapsed().as_secs_f64();
    let line = format!(
        "fuzz {name}: {} executions in {:.1} s ({} accepted, {} refused; heap peak at most \
         {:.0}% of its bound; seed {seed})",
        report.executions,
        report.seconds,
        report.accepted,
        report.refused,
        report.worst_share_of_bound * 100.0
    );
    println!("{line}");
    // `cargo test` shows a passing test's output only with --nocapture: the figures also go
    // to a file beside the findings.
    let log = findings_dir().join(format!("{name}.txt"));
    std::fs::write(&log, line + "\n").expect("writing the fuzz report");
    report
}

/// The inputs that once were findings of this target, replayed first in every run.
fn regression_inputs(name: &str) -> Vec<(Vec<u8>, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("reading a regression input");
            (bytes, format!("the regression {}", p.display()))
        })
        .collect()
}

/// The harness itself: each kind of finding fails the run.
#[cfg(test)]
mod self_tests {
    use super::*;

    fn finding_of(feed: Feed, hang: Duration) -> String {
        let target = Target {
            name: "self-test",
            seeds: vec![Seed::whole("one", b"seed".to_vec())],
            lie: None,
            alloc_base: 1 << 20,
            alloc_per_byte: 1,
            feed,
        };
        let payload = catch_unwind(AssertUnwindSafe(|| run_with(target, hang)))
            .expect_err("the finding was missed");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn panics_hangs_and_allocations_are_findings() {
        let panics = finding_of(Box::new(|_| panic!("boom")), HANG);
        assert!(
            panics.contains("panicked (boom) on the seed one"),
            "{panics}"
        );
        let hogs = finding_of(
            Box::new(|_| {
                let v = vec![1u8; 4 << 20];
                std::hint::black_box(&v);
                Ok(())
            }),
            HANG,
        );
        assert!(hogs.contains("beyond its bound of 1048580"), "{hogs}");
        let sleeps = finding_of(
            Box::new(|_| {
                std::thread::sleep(Duration::from_secs(2));
                Ok(())
            }),
            Duration::from_millis(200),
        );
        assert!(sleeps.contains("ran longer than 200ms"), "{sleeps}");
    }
}
