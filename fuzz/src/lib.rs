//! A mutation fuzzer for bounded runs inside `cargo test` (the machine has no nightly
//! toolchain for cargo-fuzz): each target replays its corpus (`fuzz/corpus/<target>/`, kept
//! in the repository), then mutates corpus entries and the seeds the test adds (bit flips,
//! byte insertions and deletions, splices, interesting bytes, random tails) for a time budget.
//! An input that makes the target panic is written to the corpus as `crash-<hash>` before the
//! panic is passed on, so it is replayed by every later run once fixed.
//!
//! Budget: `STICKY_FUZZ_SECONDS` (all targets), else the test's default. Seed:
//! `STICKY_FUZZ_SEED`, else the clock (printed, to replay a run). `STICKY_FUZZ_WRITE_SEEDS=1`
//! writes the test's seed inputs into the corpus (`seed-<hash>`), to keep them in the repository.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub executions: u64,
    pub corpus: usize,
    pub seconds: f64,
}

/// `fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

/// The corpus of `target`, in file-name order.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// The budget in seconds: `STICKY_FUZZ_SECONDS`, else `default_seconds`.
pub fn budget(default_seconds: u64) -> u64 {
    std::env::var("STICKY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seconds)
}

/// Runs `check` on the corpus, the `seeds`, then mutations, for the budget
/// ([`budget`]`(default_seconds)`).
pub fn run(target: &str, default_seconds: u64, seeds: &[Vec<u8>], check: impl FnMut(&[u8])) -> Report {
    run_for(target, budget(default_seconds), seeds, check)
}

/// [`run`] with an explicit budget in seconds.
pub fn run_for(target: &str, budget: u64, seeds: &[Vec<u8>], mut check: impl FnMut(&[u8])) -> Report {
    let seed = std::env::var("STICKY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("fuzz {target}: {budget} s, STICKY_FUZZ_SEED={seed}");
    if std::env::var_os("STICKY_FUZZ_WRITE_SEEDS").is_some() {
        for seed in seeds {
            save(target, "seed", seed);
        }
    }
    let mut pool = corpus(target);
    let corpus_size = pool.len();
    pool.extend(seeds.iter().cloned());
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut rng = Rng(seed | 1);
    let mut executions = 0u64;
    let mut guarded = |input: &[u8]| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
            let path = save_crash(target, input);
            eprintln!("fuzz {target}: a panic; input saved to {}", path.display());
            resume_unwind(panic);
        }
    };
    for input in &pool {
        guarded(input);
        executions += 1;
    }
    let start = Instant::now();
    let limit = Duration::from_secs(budget);
    let mut input = Vec::new();
    while start.elapsed() < limit {
        // Check the clock every few hundred executions only.
        for _ in 0..256 {
            input.clear();
            input.extend_from_slice(&pool[rng.below(pool.len())]);
            for _ in 0..=rng.below(4) {
                mutate(&mut input, &pool, &mut rng);
            }
            guarded(&input);
            executions += 1;
        }
    }
    let report = Report {
        executions,
        corpus: corpus_size,
        seconds: start.elapsed().as_secs_f64(),
    };
    eprintln!(
        "fuzz {target}: {} executions in {:.1} s ({} corpus files, {} seeds), no panic",
        report.executions,
        report.seconds,
        corpus_size,
        seeds.len()
    );
    report
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    save(target, "crash", input)
}

/// Writes `input` into the corpus as `<kind>-<hash>`.
fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name, so the same input is saved once.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let dir = corpus_dir(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\x7f",
    b"\r\n",
    b";",
    b",",
    b"=",
    b" ",
    b"\"",
    b"%",
    b"%00",
    b"%ff",
    b"&",
    b"/",
    b"\\",
    b"..",
    b"=-",
    b"AAAA",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"18446744073709551615",
    b"-1",
    b"0",
    b"4294967296",
];

fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            input.insert(i, rng.next() as u8);
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(8)).min(len);
            input.drain(start..end);
        }
        4 => {
            let token = INTERESTING[rng.below(INTERESTING.len())];
            let i = rng.below(len + 1);
            input.splice(i..i, token.iter().copied());
        }
        5 => {
            // Splice a piece of another entry.
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(32)).min(other.len());
                let i = rng.below(len + 1);
                input.splice(i..i, other[start..end].iter().copied());
            }
        }
        6 if len > 0 => {
            // Duplicate a piece (repetition finds length and count limits).
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            let piece = input[start..end].to_vec();
            for _ in 0..=rng.below(64) {
                input.extend_from_slice(&piece);
            }
        }
        _ => {
            input.truncate(rng.below(len + 1));
            for _ in 0..rng.below(16) {
                input.push(rng.next() as u8);
            }
        }
    }
    // Keep inputs bounded.
    input.truncate(64 * 1024);
}

/// xorshift64*: fast, and enough for mutation choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_input_is_reported_and_saved() {
        let target = "self-test";
        let result = std::panic::catch_unwind(|| {
            run(target, 1, &[b"abc".to_vec()], |input| {
                assert!(!input.contains(&b'!'), "found the bang");
            })
        });
        assert!(result.is_err(), "the fuzzer finds a one-byte trigger within a second");
        let saved = corpus(target);
        assert!(saved.iter().any(|input| input.contains(&b'!')));
        let _ = std::fs::remove_dir_all(corpus_dir(target));
    }

    #[test]
    fn mutations_stay_bounded() {
        let mut rng = Rng(7);
        let pool = vec![vec![1u8; 1000]];
        let mut input = pool[0].clone();
        for _ in 0..10_000 {
            mutate(&mut input, &pool, &mut rng);
            assert!(input.len() <= 64 * 1024);
        }
    }
}
