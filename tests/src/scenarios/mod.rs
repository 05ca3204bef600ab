//! Reliability scenarios written once for both drivers. Each one drives a [`Target`], asserts
//! what a broken gateway would violate, and returns its [`Figures`].

mod churn;
mod load;
mod provisioning;

pub use churn::{crash_churn, same_name_churn};
pub use load::{abandoned_waits, many_deletions, many_waiters, monotonic_reads};
pub use provisioning::delete_right_after_create;

use std::time::{Duration, Instant};

use sandgate_proto::v1 as pb;

use crate::api::Client;
use crate::figures::{churn_duration, scale};

/// Bound of every wait in the scenarios.
pub const LONG: Duration = Duration::from_secs(120);

/// Runs `scenario`, failing with a message after `limit` times `SANDGATE_TEST_SCALE` plus three
/// times the crash churn's minimum duration. A gateway that stops responding then fails the test
/// instead of hanging it.
pub async fn bounded<T>(limit: Duration, scenario: impl std::future::Future<Output = T>) -> T {
    let limit = limit * scale() as u32 + churn_duration() * 3;
    match tokio::time::timeout(limit, scenario).await {
        Ok(value) => value,
        Err(_) => panic!("the scenario did not finish within {limit:?}"),
    }
}

/// Builds a request to wait for the removal of `id` for up to [`LONG`].
pub fn wait_request(id: &str) -> pb::WaitSandboxDeletedRequest {
    pb::WaitSandboxDeletedRequest {
        id: id.to_string(),
        timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
    }
}

/// Waits for the removal of `id` by id and returns the response and how long it took.
async fn wait_by_id(client: &mut Client, id: &str) -> (pb::DeleteSandboxResponse, Duration) {
    let started = Instant::now();
    let response = client
        .wait_sandbox_deleted(wait_request(id))
        .await
        .unwrap_or_else(|status| panic!("wait for the removal of {id} failed: {status}"))
        .into_inner();
    assert_eq!(
        response.outcome,
        pb::DeleteOutcome::Deleted as i32,
        "wait for {id}: {response:?}"
    );
    (response, started.elapsed())
}
