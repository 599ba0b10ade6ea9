//! `playhead-fuzz`: fuzzes every decoder that reads input from outside, on stable Rust.
//!
//! Each target gets inputs mutated from valid seeds (bit flips, byte changes, insertions,
//! deletions, duplicated runs, truncation, JSON tokens that stress parsers: deep nesting, huge
//! numbers, escapes, protobuf length prefixes claiming more than there is) and plain random
//! bytes. An input fails when the decoder panics, when one allocation is larger than
//! `16 × input + 4 KiB`, or when the memory the call holds at its peak grows by more than
//! `16 × input + 64 KiB`; a counting allocator measures both. A length taken on trust (a
//! claimed size allocated up front) shows as thousands of times the input and fails at once.
//!
//! What keeps the decoders within 16 ×: a payload's list elements are counted on the wire before
//! anything is decoded and a payload whose lists would take more than 12 bytes per byte is
//! refused (an empty list element is 2 bytes of protobuf and a 48-byte struct); the vectors are
//! then made exactly that large instead of growing by doubling; and JSON is transcoded to
//! protobuf as it is read instead of going through prost-reflect's dynamic messages (about a
//! kilobyte of map per object). See `playhead_proto::codec`. Each run prints the worst ratios
//! it saw, so the distance to the bound stays visible.
//!
//! A failure is saved under `target/fuzz-failures/` and printed; the exit status is then 1.
//! The targets: the node's screening of each inbox kind (stored subject, ids, protobuf or JSON
//! payload, reply subject), reply subjects, session page tokens, and the console's dead-letter
//! preview and replay target (dead-letter payloads come from publishers). `make test` runs it
//! for 20 s with a fixed seed; `make fuzz` for longer with a fresh one. It is a random
//! mutational fuzzer without coverage feedback: cargo-fuzz's libFuzzer needs a nightly
//! compiler, which this project does not use.

mod alloc;
mod inputs;
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::targets::Target;

#[global_allocator]
static ALLOCATOR: alloc::Allocator<std::alloc::System> = alloc::Allocator::system();

/// The largest single allocation an input may cause (see the module documentation), plus room
/// for error messages and small fixed buffers.
fn allocation_bound(input: usize) -> usize {
    16 * input + 4 * 1024
}

/// The most an input may make a decoder hold at once (see the module documentation).
fn held_bound(input: usize) -> usize {
    16 * input + 64 * 1024
}

/// Fuzzes playhead's decoders of outside input (see the module documentation).
#[derive(Debug, Parser)]
#[command(name = "playhead-fuzz", version)]
struct Args {
    /// How long to run, shared by the targets, e.g. 10s, 5m.
    #[arg(long, default_value = "10s", value_parser = playhead_client::service::duration::parse_duration)]
    time: Duration,
    /// Random seed (default: from the clock; printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Only these targets (repeatable); default: all.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Run one saved input against `--target` and report.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

/// What went wrong with one input.
#[derive(Debug)]
enum Finding {
    Panic(String),
    Allocation { size: usize, bound: usize },
    Held { peak: usize, bound: usize },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Panic(message) => write!(f, "panicked: {message}"),
            Finding::Allocation { size, bound } => {
                write!(
                    f,
                    "allocated {size} bytes at once, above the bound of {bound}"
                )
            }
            Finding::Held { peak, bound } => {
                write!(
                    f,
                    "held {peak} bytes at its peak, above the bound of {bound}"
                )
            }
        }
    }
}

/// The most an input of a run allocated at once and held, per byte of input.
#[derive(Debug, Default)]
struct Worst {
    allocation_ratio: f64,
    held_ratio: f64,
}

fn run_one(target: &Target, input: &[u8], worst: &mut Worst) -> Option<Finding> {
    let measured = alloc::measure(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(input)))
    });
    if let Err(payload) = measured.value {
        return Some(Finding::Panic(panic_message(payload.as_ref())));
    }
    let per_byte = |bytes: usize| bytes as f64 / input.len().max(1) as f64;
    // Ratios only mean something where the floors no longer dominate.
    if input.len() >= 1024 {
        worst.allocation_ratio = worst.allocation_ratio.max(per_byte(measured.largest));
        worst.held_ratio = worst.held_ratio.max(per_byte(measured.peak_growth));
    }
    let allocation = allocation_bound(input.len());
    let held = held_bound(input.len());
    if measured.largest > allocation {
        return Some(Finding::Allocation {
            size: measured.largest,
            bound: allocation,
        });
    }
    (measured.peak_growth > held).then_some(Finding::Held {
        peak: measured.peak_growth,
        bound: held,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".into())
}

fn save(target: &Target, seed: u64, index: u64, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-{seed}-{index}.bin", target.name));
    if let Err(error) = std::fs::write(&path, input) {
        eprintln!("cannot save the input to {}: {error}", path.display());
    }
    path
}

fn preview(input: &[u8]) -> String {
    let shown = &input[..input.len().min(200)];
    let text = String::from_utf8_lossy(shown);
    format!("{} bytes, starting {text:?}", input.len())
}

fn main() {
    let args = Args::parse();
    alloc::start();
    let all = targets::all();
    if args.list {
        for target in &all {
            println!("{:<22} {}", target.name, target.about);
        }
        return;
    }
    let chosen: Vec<&Target> = if args.targets.is_empty() {
        all.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.targets {
            match all.iter().find(|target| target.name == name) {
                Some(target) => chosen.push(target),
                None => {
                    eprintln!("playhead-fuzz: no target {name:?}; --list names them");
                    std::process::exit(2);
                }
            }
        }
        chosen
    };
    // Panics are findings, reported below; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    // The first call of a decoder builds lazily initialised tables (descriptor pools): that
    // memory is not the input's.
    for target in &chosen {
        for seed in (target.seeds)() {
            let _ = run_one(target, &seed, &mut Worst::default());
        }
    }
    if let Some(path) = &args.replay {
        let [target] = chosen.as_slice() else {
            eprintln!("playhead-fuzz: --replay needs exactly one --target");
            std::process::exit(2);
        };
        let input = std::fs::read(path).unwrap_or_else(|error| {
            eprintln!("playhead-fuzz: cannot read {}: {error}", path.display());
            std::process::exit(2);
        });
        match run_one(target, &input, &mut Worst::default()) {
            Some(finding) => {
                println!("{}: {finding} on {}", target.name, preview(&input));
                std::process::exit(1);
            }
            None => println!("{}: no finding on {}", target.name, preview(&input)),
        }
        return;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    });
    println!(
        "playhead-fuzz: {} targets for {:?}, seed {seed} (repeat with --seed {seed})",
        chosen.len(),
        args.time
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let per_target = args.time / chosen.len() as u32;
    let mut failed = false;
    for target in chosen {
        let seeds = (target.seeds)();
        let started = Instant::now();
        let mut runs: u64 = 0;
        let mut worst = Worst::default();
        while started.elapsed() < per_target {
            let input = if rng.random_ratio(1, 8) {
                inputs::random_bytes(&mut rng)
            } else {
                let seed_input = &seeds[rng.random_range(0..seeds.len())];
                inputs::mutate(&mut rng, seed_input)
            };
            runs += 1;
            match run_one(target, &input, &mut worst) {
                None => {}
                Some(finding) => {
                    let path = save(target, seed, runs, &input);
                    println!(
                        "FAIL {}: {finding} on {} (saved to {}; replay with --target {} --replay {})",
                        target.name,
                        preview(&input),
                        path.display(),
                        target.name,
                        path.display()
                    );
                    failed = true;
                    break;
                }
            }
        }
        println!(
            "{:<22} {runs:>8} inputs in {:>5.1} s; inputs of 1 KiB or more: largest allocation {:>5.1} ×, held {:>5.1} × their size{}",
            target.name,
            started.elapsed().as_secs_f64(),
            worst.allocation_ratio,
            worst.held_ratio,
            if failed { "  FAILED" } else { "" }
        );
        if failed {
            break;
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!(
        "playhead-fuzz: no panics; no allocation above 16 × its input + 4 KiB; nothing held above 16 × + 64 KiB"
    );
}
