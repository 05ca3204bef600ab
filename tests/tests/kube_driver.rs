//! End-to-end tests of `sandgate serve --driver kubernetes` on the local test cluster. Each test
//! runs the real gateway binary in a namespace of its own, as the ServiceAccount of
//! `deploy/rbac.yaml`, and checks the cluster directly after every deletion it waits for.
//!
//! The tests skip themselves when `SANDGATE_TEST_KUBECONFIG` is unset.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use sandgate_e2e::api::{self, by_id, by_name, delete_request, phase};
use sandgate_e2e::cluster::{Sandbox, TEST_IMAGE, TestCluster, TestNamespace};
use sandgate_e2e::figures::Figures;
use sandgate_e2e::kube_gateway::{
    assert_compute_gone, create, delete_and_confirm, list_all, object_name,
    service_account_kubeconfig, start_gateway, wait_ready,
};
use sandgate_e2e::target::DriverKind;
use sandgate_proto::v1 as pb;
use tonic::Code;

const GRACE: Duration = Duration::from_secs(3);
const LONG: Duration = Duration::from_secs(90);
const HOLD_FINALIZER: &str = "example.com/hold";

async fn setup(test: &str) -> Option<(TestCluster, TestNamespace)> {
    let cluster = TestCluster::from_env()
        .await
        .expect("connect to the cluster")?;
    let namespace = cluster.namespace(test).await.expect("create a namespace");
    Some((cluster, namespace))
}

async fn pod_of(namespace: &TestNamespace, id: &str) -> Pod {
    namespace
        .api::<Pod>()
        .get(&object_name(id))
        .await
        .unwrap_or_else(|error| panic!("get pod of {id}: {error}"))
}

#[tokio::test]
async fn cli_create_ready_and_delete_waits() {
    let Some((cluster, namespace)) = setup("kube-create-ready").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;

    // No command after --image: the image's entrypoint runs.
    let output = gateway.cli(&[
        "create",
        "web",
        "--image",
        TEST_IMAGE,
        "--grace-period",
        "3s",
        "--label",
        "team=ml",
        "--wait-ready",
        "--timeout",
        "60s",
        "-o",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "create failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["phase"], "SANDBOX_PHASE_READY", "{created}");
    let reason = created["phaseReason"].as_str().unwrap_or_default();
    assert!(reason.contains("running on node kwok-node"), "{reason}");
    let attributes = &created["driver"]["attributes"];
    assert_eq!(attributes["namespace"], namespace.name());
    assert_eq!(attributes["name"], object_name(&id));

    let sandbox = namespace
        .api::<Sandbox>()
        .get(&object_name(&id))
        .await
        .unwrap();
    assert_eq!(attributes["uid"].as_str(), sandbox.metadata.uid.as_deref());
    let pod = pod_of(&namespace, &id).await;
    let labels = pod.labels();
    assert_eq!(labels["sandgate.dev/sandbox-id"], id);
    assert_eq!(labels["sandgate.dev/workspace"], "default");
    assert_eq!(labels["sandgate.dev/name"], "web");
    assert_eq!(labels["sandgate.dev/instance"], "default");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.termination_grace_period_seconds, Some(3));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.node_name.as_deref(), Some("kwok-node"));

    let started = Instant::now();
    let output = gateway.cli(&["delete", "web", "--timeout", "60s"]);
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "delete failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_compute_gone(&namespace, &id).await;
    eprintln!("delete with wait took {elapsed:?} for a grace period of {GRACE:?}");
    assert!(elapsed >= GRACE, "delete returned after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "delete took {elapsed:?}");
}

#[tokio::test]
async fn image_is_required() {
    let Some((cluster, namespace)) = setup("kube-image-required").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let request = api::create_request("plain", &["sleep", "60"], GRACE);
    let status = client.create_sandbox(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("spec.image"), "{status}");
    assert!(list_all(&mut client).await.is_empty());
}

#[tokio::test]
async fn no_wait_delete_lists_deleting_until_pod_gone() {
    let Some((cluster, namespace)) = setup("kube-no-wait").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "lazy", GRACE).await;
    wait_ready(&mut client, &sandbox.id).await;

    let started = Instant::now();
    let response = client
        .delete_sandbox(delete_request(by_name("lazy"), false, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Accepted as i32);

    let listed = list_all(&mut client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(phase(&listed[0]), pb::SandboxPhase::Deleting);
    assert!(!listed[0].phase_reason.is_empty());

    // The reason follows the watch events: the Pod terminates for its grace period.
    let pod_name = object_name(&sandbox.id);
    let terminating = api::wait_until(
        &mut client,
        &sandbox.id,
        Duration::from_secs(20),
        "DELETING with the Pod terminating",
        |s| s.phase_reason == format!("pod {pod_name} terminating"),
    )
    .await;
    assert_eq!(phase(&terminating), pb::SandboxPhase::Deleting);
    let pod = namespace.api::<Pod>().get_opt(&pod_name).await.unwrap();
    assert!(
        pod.is_some_and(|pod| pod.metadata.deletion_timestamp.is_some()),
        "DELETING shows a terminating Pod that is not terminating"
    );

    let waited = client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: sandbox.id.clone(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waited.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_compute_gone(&namespace, &sandbox.id).await;
    assert!(started.elapsed() >= GRACE);

    // The sandbox stays gone through several reconciler passes (one per second).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(api::get(&mut client, &sandbox.id).await.is_none());
        assert!(list_all(&mut client).await.is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn pod_finalizer_holds_deletion_until_removed() {
    let Some((cluster, namespace)) = setup("kube-finalizer").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "held", Duration::from_secs(1)).await;
    wait_ready(&mut client, &sandbox.id).await;
    let pod_name = object_name(&sandbox.id);
    let pods = namespace.api::<Pod>();
    let add = serde_json::json!({ "metadata": { "finalizers": [HOLD_FINALIZER] } });
    pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap();

    let status = client
        .delete_sandbox(delete_request(
            by_id(&sandbox.id),
            true,
            Duration::from_secs(8),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    let expected = format!("pod {pod_name} held by finalizer {HOLD_FINALIZER}");
    assert!(status.message().contains(&expected), "{status}");
    let record = api::get(&mut client, &sandbox.id)
        .await
        .expect("still listed");
    assert_eq!(phase(&record), pb::SandboxPhase::Deleting);
    assert_eq!(record.phase_reason, expected);
    // The gateway never removes another controller's finalizer.
    let held = pods.get(&pod_name).await.unwrap();
    assert_eq!(held.finalizers(), [HOLD_FINALIZER.to_string()]);

    let mark = gateway.log_mark();
    let waiter = {
        let mut client = gateway.client().await;
        let id = sandbox.id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
                    id,
                    timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
                })
                .await;
            (response, started.elapsed())
        })
    };
    // The waiter is registered while the finalizer still blocks the Pod's removal, so its wake-up comes
    // from the removal and not from a tombstone.
    gateway
        .wait_for_log_since(mark, "Waiting for removal", Duration::from_secs(10))
        .await;
    let remove = serde_json::json!({ "metadata": { "finalizers": null } });
    pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .unwrap();
    let (waited, waited_for) = waiter.await.unwrap();
    let waited = waited.expect("wait after the finalizer removal");
    assert_eq!(
        waited.into_inner().outcome,
        pb::DeleteOutcome::Deleted as i32
    );
    assert_compute_gone(&namespace, &sandbox.id).await;
    let mut figures = Figures::new("Pod held by a finalizer", DriverKind::Kubernetes);
    figures.iterations = 1;
    figures.faults = 1;
    figures.confirmed = 1;
    figures.waited(waited_for);
    figures.outcome("waits timed out naming the finalizer", 1);
    figures.report();
}

#[tokio::test]
async fn force_skips_long_grace_period() {
    let Some((cluster, namespace)) = setup("kube-force").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "slow", Duration::from_secs(120)).await;
    wait_ready(&mut client, &sandbox.id).await;

    // A wait shorter than the grace period times out, and its message names what the deletion waits for.
    let started = Instant::now();
    let status = client
        .delete_sandbox(delete_request(
            by_id(&sandbox.id),
            true,
            Duration::from_secs(3),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let pod_name = object_name(&sandbox.id);
    assert!(
        status
            .message()
            .contains(&format!("pod {pod_name} terminating")),
        "{status}"
    );

    // Force escalates the deletion under way.
    let mut request = delete_request(by_id(&sandbox.id), true, LONG);
    request.force = true;
    let started = Instant::now();
    let response = client.delete_sandbox(request).await.unwrap().into_inner();
    let elapsed = started.elapsed();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_compute_gone(&namespace, &sandbox.id).await;
    eprintln!("forced delete took {elapsed:?} for a grace period of 120 s");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(gateway.log_text().contains("Forced deletion"));
    let mut figures = Figures::new("grace period longer than the wait", DriverKind::Kubernetes);
    figures.iterations = 1;
    figures.confirmed = 1;
    figures.waited(elapsed);
    figures.outcome("waits timed out naming the Pod", 1);
    figures.report();
}

#[tokio::test]
async fn shorter_grace_period_applies_to_pod() {
    let Some((cluster, namespace)) = setup("kube-short-grace").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "patient", Duration::from_secs(60)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let mut request = delete_request(by_id(&sandbox.id), true, LONG);
    request.grace_period = Some(prost_types::Duration::try_from(Duration::from_secs(2)).unwrap());
    let started = Instant::now();
    let response = client.delete_sandbox(request).await.unwrap().into_inner();
    let elapsed = started.elapsed();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_compute_gone(&namespace, &sandbox.id).await;
    eprintln!("delete with a 2 s grace period on a 60 s Pod took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[tokio::test]
async fn delete_then_create_same_name() {
    let Some((cluster, namespace)) = setup("kube-recreate").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let grace = Duration::from_secs(1);
    let mut current = create(&mut client, "again", grace).await;
    let mut ids = vec![current.id.clone()];
    let mut rejected = 0;

    for round in 0..20 {
        let old = current.id.clone();
        let response = client
            .delete_sandbox(delete_request(by_id(&old), false, LONG))
            .await
            .unwrap_or_else(|status| panic!("round {round}: delete failed: {status}"))
            .into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Accepted as i32);
        let next = match client
            .create_sandbox(sandgate_e2e::kube_gateway::create_request("again", grace))
            .await
        {
            Ok(created) => Some(created.into_inner()),
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "round {round}: {status}"
                );
                rejected += 1;
                None
            }
        };
        // The old id's wait returns only once the old objects are gone, whatever the new
        // sandbox of the same name does.
        delete_and_confirm(&mut client, &namespace, &old, LONG).await;
        current = match next {
            Some(created) => created,
            None => create(&mut client, "again", grace).await,
        };
        assert!(!ids.contains(&current.id), "round {round}: id reused");
        ids.push(current.id.clone());
        let still = api::get(&mut client, &current.id).await;
        assert!(still.is_some(), "round {round}: the new sandbox vanished");
    }
    eprintln!("{rejected} of 20 immediate creates returned FAILED_PRECONDITION");
    delete_and_confirm(&mut client, &namespace, &current.id, LONG).await;
    let left = namespace
        .api::<Sandbox>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "Sandboxes left: {}",
        left.items.len()
    );
}

#[tokio::test]
async fn crash_after_delete_commit_resumes() {
    let Some((cluster, namespace)) = setup("kube-crash-delete").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let fault = [("SANDGATE_TEST_FAULT", "abort-after-delete-commit")];
    let mut gateway = start_gateway(&kubeconfig.path, &[], &fault).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "crashy", GRACE).await;
    wait_ready(&mut client, &sandbox.id).await;

    let result = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await;
    assert!(result.is_err(), "the gateway answered: {result:?}");
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    // The gateway died before any DELETE call.
    let object = namespace
        .api::<Sandbox>()
        .get(&object_name(&sandbox.id))
        .await
        .unwrap();
    assert!(object.metadata.deletion_timestamp.is_none());

    gateway.restart_with_env(Vec::new());
    let mut client = gateway.client().await;
    let record = api::get(&mut client, &sandbox.id)
        .await
        .expect("record kept");
    assert_eq!(phase(&record), pb::SandboxPhase::Deleting);
    let waited = client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: sandbox.id.clone(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waited.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_compute_gone(&namespace, &sandbox.id).await;
}

/// A restart lists Sandboxes and Pods in two watchers. When the Sandbox list finished first,
/// every READY sandbox briefly read as PROVISIONING "pod deleted outside sandgate".
#[tokio::test]
async fn restart_keeps_ready_sandboxes_ready() {
    let Some((cluster, namespace)) = setup("kube-restart-ready").await else {
        return;
    };
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let mut gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let mut client = gateway.client().await;
    let mut ids = Vec::new();
    for index in 0..5 {
        let sandbox = create(&mut client, &format!("steady-{index}"), GRACE).await;
        ids.push(sandbox.id);
    }
    for id in &ids {
        wait_ready(&mut client, id).await;
    }

    for restart in 0..3 {
        let mark = gateway.log_mark();
        gateway.kill();
        gateway.restart_with_env(Vec::new());
        for needle in [
            "Re-list finished kind=Sandbox",
            "Re-list finished kind=Pod",
            "Reconciler pass finished",
        ] {
            gateway
                .wait_for_log_since(mark, needle, Duration::from_secs(30))
                .await;
        }
        let mut client = gateway.client().await;
        for id in &ids {
            let record = api::get(&mut client, id).await.expect("record kept");
            assert_eq!(
                phase(&record),
                pb::SandboxPhase::Ready,
                "restart {restart}: {record:?}"
            );
        }
        let log = gateway.log_text();
        let changes: Vec<&str> = log
            .lines()
            .skip(mark)
            .filter(|line| line.contains("Sandbox changed"))
            .collect();
        assert!(
            changes.is_empty(),
            "restart {restart} changed READY sandboxes: {changes:#?}"
        );
    }
    let mut client = gateway.client().await;
    for id in &ids {
        delete_and_confirm(&mut client, &namespace, id, LONG).await;
    }
}
