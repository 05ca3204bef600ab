//! What the reliability scenarios count, how big they run, and the seeded random schedule of the
//! fault scenarios.
//!
//! Each scenario prints one `figures: {json}` line to stderr. With `SANDGATE_TEST_FIGURES` set to
//! a file path, the same line is appended there, and `tests/reliability` turns the file into a
//! table. `SANDGATE_TEST_SCALE` (default 1) multiplies the iteration counts, and
//! `SANDGATE_TEST_CHURN_SECS` (default 0) keeps the crash churn going for at least that long.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::target::DriverKind;

/// Variable with the path of the file that figures are appended to.
pub const FIGURES_ENV: &str = "SANDGATE_TEST_FIGURES";

/// Counts from one run of one scenario.
#[derive(Debug, Serialize)]
pub struct Figures {
    /// Name of the scenario.
    pub scenario: &'static str,
    /// Driver the gateway ran on.
    pub driver: &'static str,
    /// Seed of the random schedule, for the scenarios that have one.
    pub seed: Option<u64>,
    /// Sandboxes, generations or rounds the scenario went through.
    pub iterations: u64,
    /// Faults injected: gateway kills, API server stops, cut connections, callers dropped.
    pub faults: u64,
    /// Deletions whose removal was confirmed and then checked against the compute.
    pub confirmed: u64,
    /// Compute found without a record after the scenario settled.
    pub orphans: u64,
    /// Records found stuck in DELETING or PROVISIONING after the scenario settled.
    pub stuck: u64,
    /// Maximum time one delete call or wait took, in milliseconds.
    pub longest_wait_ms: u64,
    /// Other outcome counts, by name.
    pub outcomes: Vec<(&'static str, u64)>,
    /// Whether the scenario failed before it reported: the counts are those reached by then.
    pub failed: bool,
    /// Whether the figures were reported, so that a drop during a failure reports them.
    #[serde(skip)]
    reported: AtomicBool,
    /// File the figures are appended to, from `SANDGATE_TEST_FIGURES`.
    #[serde(skip)]
    path: Option<std::ffi::OsString>,
}

impl Figures {
    /// Starts the counts of `scenario` on `driver`.
    pub fn new(scenario: &'static str, driver: DriverKind) -> Self {
        Self {
            scenario,
            driver: driver.name(),
            seed: None,
            iterations: 0,
            faults: 0,
            confirmed: 0,
            orphans: 0,
            stuck: 0,
            longest_wait_ms: 0,
            outcomes: Vec::new(),
            failed: false,
            reported: AtomicBool::new(false),
            path: std::env::var_os(FIGURES_ENV),
        }
    }

    /// Records one wait of `elapsed`, keeping the longest.
    pub fn waited(&mut self, elapsed: Duration) {
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.longest_wait_ms = self.longest_wait_ms.max(millis);
    }

    /// Adds an outcome count.
    pub fn outcome(&mut self, name: &'static str, count: u64) {
        self.outcomes.push((name, count));
    }

    /// Prints the figures, and appends them to the file named by `SANDGATE_TEST_FIGURES`.
    pub fn report(&self) {
        if let Err(error) = self.write() {
            panic!("append the figures to {FIGURES_ENV}: {error}");
        }
    }

    fn write(&self) -> std::io::Result<()> {
        self.reported.store(true, Ordering::SeqCst);
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        eprintln!("figures: {line}");
        let Some(path) = &self.path else {
            return Ok(());
        };
        // One short write with O_APPEND, so lines of tests running at once do not mix.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(format!("{line}\n").as_bytes())
    }
}

impl Drop for Figures {
    /// Reports the counts of a scenario that panicked before it reported, marked failed, so
    /// that the table shows the failure. A panic here would abort, so errors are only printed.
    fn drop(&mut self) {
        if std::thread::panicking() && !self.reported.load(Ordering::SeqCst) {
            self.failed = true;
            if let Err(error) = self.write() {
                eprintln!("cannot append the figures of a failed scenario: {error}");
            }
        }
    }
}

fn number_from_env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

/// Factor applied to the iteration counts: `SANDGATE_TEST_SCALE`, default 1.
pub fn scale() -> u64 {
    number_from_env("SANDGATE_TEST_SCALE").unwrap_or(1).max(1)
}

/// Minimum time the crash churn runs for: `SANDGATE_TEST_CHURN_SECS`, default 0.
pub fn churn_duration() -> Duration {
    Duration::from_secs(number_from_env("SANDGATE_TEST_CHURN_SECS").unwrap_or(0))
}

/// Seed of a random schedule: `SANDGATE_TEST_SEED`, or one taken from the clock.
pub fn seed() -> u64 {
    number_from_env("SANDGATE_TEST_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1);
        nanos | 1
    })
}

/// A small deterministic generator (SplitMix64), so that a printed seed replays the same
/// schedule.
pub struct Rng(u64);

impl Rng {
    /// Starts the sequence of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Returns the next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_scenario_still_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures.jsonl");
        let file = path.clone();
        let outcome = std::thread::spawn(move || {
            let mut figures = Figures::new("doomed", DriverKind::Process);
            figures.path = Some(file.into_os_string());
            figures.iterations = 3;
            panic!("the scenario fails");
        })
        .join();
        assert!(outcome.is_err());
        let text = std::fs::read_to_string(&path).expect("a row was written");
        let row: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(row["scenario"], "doomed");
        assert_eq!(row["failed"], true);
        assert_eq!(row["iterations"], 3);
    }

    #[test]
    fn reported_scenario_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures.jsonl");
        let mut figures = Figures::new("fine", DriverKind::Process);
        figures.path = Some(path.clone().into_os_string());
        figures.report();
        drop(figures);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"failed\":false"), "{text}");
    }
}
