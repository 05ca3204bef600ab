//! The reliability scenarios on the Kubernetes driver, on the shared test cluster: those of
//! `sandgate_e2e::scenarios`, plus a delete of a sandbox whose Pod cannot be scheduled, and a
//! Pod deleted by someone else. Each test prints its figures.
//!
//! The tests skip themselves when `SANDGATE_TEST_KUBECONFIG` is unset.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use sandgate_e2e::api::{self, by_id, delete_request, phase};
use sandgate_e2e::figures::{Figures, scale, seed};
use sandgate_e2e::kube_gateway::object_name;
use sandgate_e2e::scenarios::{self, LONG};
use sandgate_e2e::target::Target;
use sandgate_proto::v1 as pb;

const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// Bound of each scenario, on top of the crash churn's least duration.
const LIMIT: Duration = Duration::from_secs(900);
const RECREATING_REASON: &str = "pod deleted outside sandgate; the controller is re-creating it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_crashes_during_churn() {
    let Some(mut target) = Target::kubernetes("kube-churn", &[]).await else {
        return;
    };
    let seed = seed();
    eprintln!("gateway_crashes_during_churn: SANDGATE_TEST_SEED={seed}");
    scenarios::bounded(
        LIMIT,
        scenarios::crash_churn(&mut target, seed, ORPHAN_GRACE),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_right_after_create() {
    let Some(target) = Target::kubernetes("kube-early-delete", &[]).await else {
        return;
    };
    let seed = seed();
    eprintln!("delete_right_after_create: SANDGATE_TEST_SEED={seed}");
    scenarios::bounded(LIMIT, scenarios::delete_right_after_create(&target, seed))
        .await
        .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_is_deleted() {
    let Some(target) = Target::kubernetes("kube-unschedulable", &[]).await else {
        return;
    };
    let namespace = target.namespace().unwrap();
    // Every container in the namespace requests more CPU than the kwok node has.
    let cpu = Quantity("100000".to_string());
    let limits = LimitRange {
        metadata: ObjectMeta {
            name: Some("too-big".to_string()),
            ..Default::default()
        },
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default: Some([("cpu".to_string(), cpu.clone())].into()),
                default_request: Some([("cpu".to_string(), cpu)].into()),
                ..Default::default()
            }],
        }),
    };
    namespace
        .api::<LimitRange>()
        .create(&PostParams::default(), &limits)
        .await
        .unwrap();

    let mut figures = Figures::new("delete while the Pod cannot be scheduled", target.driver());
    let mut client = target.client().await;
    let sandbox = target
        .create(&mut client, "nowhere", Duration::from_secs(1))
        .await;
    let pending = api::wait_until(
        &mut client,
        &sandbox.id,
        LONG,
        "PROVISIONING with a scheduling reason",
        |s| phase(s) == pb::SandboxPhase::Provisioning && s.phase_reason.contains("schedul"),
    )
    .await;
    eprintln!("reason while unschedulable: {}", pending.phase_reason);
    let pod = namespace
        .api::<Pod>()
        .get(&object_name(&sandbox.id))
        .await
        .unwrap();
    assert!(
        pod.spec.as_ref().unwrap().node_name.is_none(),
        "the Pod was scheduled"
    );

    let started = Instant::now();
    let response = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    figures.waited(started.elapsed());
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    target.assert_compute_gone(&sandbox.id).await;
    figures.iterations = 1;
    figures.confirmed = 1;
    figures.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_deleted_by_someone_else() {
    let Some(target) = Target::kubernetes("kube-external-delete", &[]).await else {
        return;
    };
    let namespace = target.namespace().unwrap();
    let mut figures = Figures::new("Pod deleted outside sandgate", target.driver());
    let mut client = target.client().await;
    let sandbox = target
        .create(&mut client, "replaced", Duration::from_secs(1))
        .await;
    target.wait_ready(&mut client, &sandbox.id).await;
    let name = object_name(&sandbox.id);
    let old = namespace.api::<Pod>().get(&name).await.unwrap();

    namespace
        .api::<Pod>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    figures.faults = 1;
    let noticed = api::wait_until(
        &mut client,
        &sandbox.id,
        Duration::from_secs(10),
        "PROVISIONING because the Pod was deleted",
        |s| phase(s) == pb::SandboxPhase::Provisioning,
    )
    .await;
    assert_eq!(noticed.phase_reason, RECREATING_REASON);

    // The controller creates a new Pod under the same name, and the sandbox is READY again.
    let ready = target.wait_ready(&mut client, &sandbox.id).await;
    let new = namespace.api::<Pod>().get(&name).await.unwrap();
    assert_ne!(
        new.metadata.uid, old.metadata.uid,
        "the Pod was not replaced"
    );
    eprintln!("after the replacement: {}", ready.phase_reason);

    let started = Instant::now();
    let response = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    figures.waited(elapsed);
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    target.assert_compute_gone(&sandbox.id).await;
    assert!(
        elapsed < Duration::from_secs(20),
        "the delete after the replacement took {elapsed:?}"
    );
    figures.iterations = 1;
    figures.confirmed = 1;
    figures.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_waiters_share_one_removal() {
    let Some(target) = Target::kubernetes("kube-waiters", &[]).await else {
        return;
    };
    scenarios::bounded(
        LIMIT,
        scenarios::many_waiters(&target, 1000 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_deletions_at_once() {
    let Some(target) = Target::kubernetes("kube-many", &[]).await else {
        return;
    };
    scenarios::bounded(
        LIMIT,
        scenarios::many_deletions(&target, 200 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_still_complete() {
    let Some(target) = Target::kubernetes("kube-abandoned", &["--reconcile-interval", "1h"]).await
    else {
        return;
    };
    scenarios::bounded(
        LIMIT,
        scenarios::abandoned_waits(&target, 5 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_backwards() {
    let Some(target) = Target::kubernetes("kube-monotonic", &[]).await else {
        return;
    };
    scenarios::bounded(
        LIMIT,
        scenarios::monotonic_reads(&target, 20 * scale() as usize),
    )
    .await
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_churn() {
    let Some(target) = Target::kubernetes("kube-same-name", &[]).await else {
        return;
    };
    scenarios::bounded(
        LIMIT,
        scenarios::same_name_churn(&target, 50 * scale() as usize),
    )
    .await
    .report();
}
