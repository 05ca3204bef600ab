//! Unit tests of the mapping from Sandbox and Pods to `Observed`, on synthetic objects.

use serde_json::json;

use super::*;

const NAME: &str = "sbx-1f3a9c2e7d414b0c9a2e7d414b0c9a2e";
const DELETED_AT: &str = "2026-05-01T10:00:00Z";

fn sandbox(ready: Option<(&str, &str, &str)>) -> Sandbox {
    let conditions: Vec<serde_json::Value> = ready
        .map(|(status, reason, message)| {
            json!({
                "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2026-05-01T09:00:00Z",
            })
        })
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1beta1",
        "kind": "Sandbox",
        "metadata": {"name": NAME, "uid": "sandbox-uid"},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "sandbox"}]}}},
        "status": {"conditions": conditions},
    }))
    .unwrap()
}

fn deleting(mut sandbox: Sandbox, finalizers: &[&str]) -> Sandbox {
    sandbox.metadata.deletion_timestamp = Some(serde_json::from_value(json!(DELETED_AT)).unwrap());
    sandbox.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    sandbox
}

fn pod(uid: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": NAME, "uid": uid},
        "spec": {"nodeName": "kwok-node", "containers": [{"name": "sandbox"}]},
        "status": {"phase": phase},
    }))
    .unwrap()
}

fn terminated_pod(phase: &str, exit_code: i32) -> Pod {
    let mut pod = pod("pod-1", phase);
    pod.status = Some(
        serde_json::from_value(json!({
            "phase": phase,
            "containerStatuses": [{
                "name": "sandbox", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code}},
            }],
        }))
        .unwrap(),
    );
    pod
}

fn deleting_pod(mut pod: Pod, finalizers: &[&str]) -> Pod {
    pod.metadata.deletion_timestamp = Some(serde_json::from_value(json!(DELETED_AT)).unwrap());
    pod.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    pod
}

fn observe(sandbox: Option<&Sandbox>, pods: &[Pod], running: Option<&str>) -> Observed {
    derive(Snapshot {
        sandbox,
        pods,
        running_pod_uid: running,
    })
}

fn live(status: LiveStatus) -> Observed {
    Observed::Present {
        status,
        terminating: None,
    }
}

#[test]
fn ready_when_condition_true_and_pod_runs() {
    let sandbox = sandbox(Some(("True", "DependenciesReady", "")));
    let observed = observe(Some(&sandbox), &[pod("pod-1", "Running")], None);
    assert_eq!(
        observed,
        live(LiveStatus::Ready(format!(
            "pod {NAME} running on node kwok-node"
        )))
    );
}

#[test]
fn provisioning_before_any_condition() {
    let sandbox = sandbox(None);
    let observed = observe(Some(&sandbox), &[], None);
    assert_eq!(
        observed,
        live(LiveStatus::Provisioning(
            WAITING_FOR_CONTROLLER_REASON.to_string()
        ))
    );
}

#[test]
fn unschedulable_pod_is_provisioning_with_reason() {
    let sandbox = sandbox(Some(("False", "DependenciesNotReady", "pod not ready")));
    let mut pending = pod("pod-1", "Pending");
    pending.status = Some(
        serde_json::from_value(json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) had untolerated taint",
            }],
        }))
        .unwrap(),
    );
    let observed = observe(Some(&sandbox), &[pending], None);
    assert_eq!(
        observed,
        live(LiveStatus::Provisioning(
            "pod unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint"
                .to_string()
        ))
    );
}

#[test]
fn pending_pod_is_provisioning() {
    let sandbox = sandbox(Some(("False", "DependenciesNotReady", "")));
    let observed = observe(Some(&sandbox), &[pod("pod-1", "Pending")], None);
    assert_eq!(
        observed,
        live(LiveStatus::Provisioning(format!("pod {NAME} pending")))
    );
}

#[test]
fn reconciler_error_is_error_with_message() {
    let sandbox = sandbox(Some((
        "False",
        "ReconcilerError",
        "pod sbx-1 exists and is not owned by this sandbox",
    )));
    let observed = observe(Some(&sandbox), &[], None);
    assert_eq!(
        observed,
        live(LiveStatus::Error(
            "ReconcilerError: pod sbx-1 exists and is not owned by this sandbox".to_string()
        ))
    );
}

#[test]
fn multiple_pods_is_error() {
    let sandbox = sandbox(Some(("False", "MultiplePods", "found 2 pods")));
    let observed = observe(Some(&sandbox), &[pod("pod-1", "Running")], None);
    assert_eq!(
        observed,
        live(LiveStatus::Error("MultiplePods: found 2 pods".to_string()))
    );
}

#[test]
fn error_recovers_to_ready() {
    let failing = sandbox(Some(("False", "ReconcilerError", "conflict")));
    let pods = [pod("pod-1", "Running")];
    assert!(matches!(
        observe(Some(&failing), &pods, None),
        Observed::Present {
            status: LiveStatus::Error(_),
            ..
        }
    ));
    let recovered = sandbox(Some(("True", "DependenciesReady", "")));
    assert!(matches!(
        observe(Some(&recovered), &pods, None),
        Observed::Present {
            status: LiveStatus::Ready(_),
            ..
        }
    ));
}

#[test]
fn deleted_pod_reports_recreation() {
    // Ready is still True from the old Pod while the deleted one terminates.
    let stale = sandbox(Some(("True", "DependenciesReady", "")));
    let old = deleting_pod(pod("pod-1", "Running"), &[]);
    let expected = live(LiveStatus::Provisioning(RECREATING_REASON.to_string()));
    assert_eq!(
        observe(Some(&stale), std::slice::from_ref(&old), Some("pod-1")),
        expected
    );
    assert_eq!(observe(Some(&stale), &[old], None), expected);
    // The old Pod is gone and the controller has not created the new one yet.
    assert_eq!(observe(Some(&stale), &[], Some("pod-1")), expected);

    // The new Pod exists but is not running yet.
    let not_ready = sandbox(Some(("False", "DependenciesNotReady", "")));
    let new = pod("pod-2", "Pending");
    assert_eq!(
        observe(Some(&not_ready), std::slice::from_ref(&new), Some("pod-1")),
        expected
    );

    // Ready may still be True from the old Pod while the new one is pending.
    assert_eq!(
        observe(Some(&stale), std::slice::from_ref(&new), Some("pod-1")),
        expected
    );

    // Once the new Pod runs and Ready is True again, the sandbox is READY, although the Pod last
    // seen running is still the old one.
    let ready = sandbox(Some(("True", "DependenciesReady", "")));
    let running = pod("pod-2", "Running");
    assert!(matches!(
        observe(Some(&ready), &[running], Some("pod-1")),
        Observed::Present {
            status: LiveStatus::Ready(_),
            terminating: None,
        }
    ));
}

#[test]
fn succeeded_pod_is_exited_zero() {
    let sandbox = sandbox(Some(("False", "PodFailed", "")));
    let observed = observe(Some(&sandbox), &[terminated_pod("Succeeded", 0)], None);
    assert_eq!(observed, live(LiveStatus::Exited(0)));
}

#[test]
fn failed_pod_is_exited_with_code() {
    let sandbox = sandbox(Some(("False", "PodFailed", "container exited")));
    let observed = observe(Some(&sandbox), &[terminated_pod("Failed", 3)], None);
    assert_eq!(observed, live(LiveStatus::Exited(3)));
}

#[test]
fn failed_pod_without_exit_code_is_error() {
    let sandbox = sandbox(Some(("False", "PodFailed", "")));
    let mut evicted = pod("pod-1", "Failed");
    evicted.status = Some(
        serde_json::from_value(json!({
            "phase": "Failed", "reason": "Evicted", "message": "node ran out of memory",
        }))
        .unwrap(),
    );
    let observed = observe(Some(&sandbox), &[evicted], None);
    assert_eq!(
        observed,
        live(LiveStatus::Error(format!(
            "pod {NAME} failed without an exit code: Evicted: node ran out of memory"
        )))
    );
}

#[test]
fn terminating_pod_named() {
    let sandbox = deleting(
        sandbox(Some(("True", "DependenciesReady", ""))),
        &[FOREGROUND_FINALIZER],
    );
    let observed = observe(
        Some(&sandbox),
        &[deleting_pod(pod("pod-1", "Running"), &[])],
        None,
    );
    let Observed::Present { terminating, .. } = observed else {
        panic!("expected Present, got {observed:?}");
    };
    assert_eq!(terminating, Some(format!("pod {NAME} terminating")));
}

#[test]
fn pod_finalizer_named() {
    let sandbox = deleting(sandbox(None), &[FOREGROUND_FINALIZER]);
    let held = deleting_pod(pod("pod-1", "Running"), &["example.com/hold"]);
    let observed = observe(Some(&sandbox), &[held], None);
    let Observed::Present { terminating, .. } = observed else {
        panic!("expected Present, got {observed:?}");
    };
    assert_eq!(
        terminating,
        Some(format!("pod {NAME} held by finalizer example.com/hold"))
    );
}

#[test]
fn sandbox_waits_for_garbage_collector() {
    let sandbox = deleting(sandbox(None), &[FOREGROUND_FINALIZER]);
    let observed = observe(Some(&sandbox), &[], None);
    let Observed::Present { terminating, .. } = observed else {
        panic!("expected Present, got {observed:?}");
    };
    assert_eq!(
        terminating.as_deref(),
        Some("sandbox has deletionTimestamp; waiting for the garbage collector")
    );
}

#[test]
fn sandbox_finalizer_of_another_controller_named() {
    let sandbox = deleting(sandbox(None), &[FOREGROUND_FINALIZER, "example.com/audit"]);
    let observed = observe(Some(&sandbox), &[], None);
    let Observed::Present { terminating, .. } = observed else {
        panic!("expected Present, got {observed:?}");
    };
    assert_eq!(
        terminating,
        Some(format!(
            "sandbox {NAME} held by finalizer example.com/audit"
        ))
    );
}

#[test]
fn pod_left_after_background_delete() {
    let observed = observe(None, &[pod("pod-1", "Running")], None);
    let Observed::Present {
        status,
        terminating,
    } = observed
    else {
        panic!("expected Present, got {observed:?}");
    };
    assert_eq!(
        terminating,
        Some(format!(
            "pod {NAME} waiting for the garbage collector to delete it"
        ))
    );
    assert!(matches!(status, LiveStatus::Error(_)), "{status:?}");
}

#[test]
fn no_terminating_before_delete_issued() {
    let sandbox = sandbox(Some(("True", "DependenciesReady", "")));
    let observed = observe(Some(&sandbox), &[pod("pod-1", "Running")], None);
    assert!(matches!(
        observed,
        Observed::Present {
            terminating: None,
            ..
        }
    ));
}

#[test]
fn exit_code_kept_while_terminating() {
    let sandbox = deleting(sandbox(None), &[FOREGROUND_FINALIZER]);
    let exited = terminated_pod("Failed", 7);
    let observed = observe(Some(&sandbox), &[exited], None);
    assert!(matches!(
        observed,
        Observed::Present {
            status: LiveStatus::Exited(7),
            terminating: Some(_),
        }
    ));
}

#[test]
fn gone_when_nothing_left() {
    assert_eq!(observe(None, &[], None), Observed::Gone { exit_code: None });
    assert_eq!(
        observe(None, &[], Some("pod-1")),
        Observed::Gone { exit_code: None }
    );
}
