//! The reliability scenarios of `sandgate_e2e::scenarios` on the process driver: gateway crashes
//! during churn, deletes right after create, many waiters, many deletions, cancelled callers,
//! reads during teardown and same-name churn. Each test prints its figures.

use std::time::Duration;

use sandgate_e2e::figures::{scale, seed};
use sandgate_e2e::scenarios;
use sandgate_e2e::target::Target;

const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// Bound of each scenario, on top of the crash churn's least duration.
const LIMIT: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_crashes_during_churn() {
    let seed = seed();
    eprintln!("gateway_crashes_during_churn: SANDGATE_TEST_SEED={seed}");
    let mut target = Target::process(&["--orphan-grace", "5s"]);
    scenarios::bounded(
        LIMIT,
        scenarios::crash_churn(&mut target, seed, ORPHAN_GRACE),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_right_after_create() {
    let seed = seed();
    eprintln!("delete_right_after_create: SANDGATE_TEST_SEED={seed}");
    let target = Target::process(&[]);
    scenarios::bounded(LIMIT, scenarios::delete_right_after_create(&target, seed))
        .await
        .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_waiters_share_one_removal() {
    let target = Target::process(&[]);
    scenarios::bounded(
        LIMIT,
        scenarios::many_waiters(&target, 1000 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_deletions_at_once() {
    let target = Target::process(&[]);
    scenarios::bounded(
        LIMIT,
        scenarios::many_deletions(&target, 200 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_still_complete() {
    let target = Target::process(&["--reconcile-interval", "1h"]);
    scenarios::bounded(
        LIMIT,
        scenarios::abandoned_waits(&target, 5 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_backwards() {
    let target = Target::process(&[]);
    scenarios::bounded(
        LIMIT,
        scenarios::monotonic_reads(&target, 20 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_churn() {
    let target = Target::process(&[]);
    scenarios::bounded(
        LIMIT,
        scenarios::same_name_churn(&target, 50 * scale() as usize),
    )
    .await
    .report();
}
