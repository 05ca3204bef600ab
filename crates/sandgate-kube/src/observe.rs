//! The pure mapping from the objects that the cluster has for one sandbox (its Sandbox and its Pods) to
//! an [`Observed`] value. Nothing here performs I/O, so every case is unit-tested with synthetic
//! objects.
//!
//! The mapping follows agent-sandbox v0.5.6: the Sandbox's Ready condition is True with reason
//! DependenciesReady once its Pod runs, False with DependenciesNotReady while the Pod is pending,
//! and False with reasons such as ReconcilerError or MultiplePods on errors. Conditions are
//! frozen while a Sandbox is being deleted, so deletion is read from `deletionTimestamp` and
//! finalizers only.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sandgate_core::{LiveStatus, Observed};

use crate::objects::{CONTAINER_NAME, FOREGROUND_FINALIZER, Sandbox};

/// Reason shown while the controller replaces a Pod that was deleted outside sandgate.
pub const RECREATING_REASON: &str =
    "pod deleted outside sandgate; the controller is re-creating it";
/// Reason shown before the controller has written any condition.
pub const WAITING_FOR_CONTROLLER_REASON: &str = "waiting for the sandbox controller";

/// Objects that the cluster has for one sandbox, as read by the driver.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// The Sandbox, if it exists (with the recorded UID, when one is recorded).
    pub sandbox: Option<&'a Sandbox>,
    /// Every Pod that carries the sandbox's id label or is owned by the Sandbox's UID.
    pub pods: &'a [Pod],
    /// UID of the Pod last seen running for this sandbox, so that a replaced Pod is recognised.
    pub running_pod_uid: Option<&'a str>,
}

/// Derives what is observed of a sandbox from `snapshot`.
///
/// `Observed::Gone` is returned only when neither the Sandbox nor any Pod exists. While some of
/// it is being deleted, `terminating` names what the deletion still waits for.
pub fn derive(snapshot: Snapshot<'_>) -> Observed {
    if snapshot.sandbox.is_none() && snapshot.pods.is_empty() {
        return Observed::Gone { exit_code: None };
    }
    Observed::Present {
        status: live_status(snapshot),
        terminating: terminating_reason(snapshot),
    }
}

/// Returns the Pod that the sandbox runs in now: the first one, by name, that is not being
/// deleted.
pub fn current_pod(pods: &[Pod]) -> Option<&Pod> {
    let mut live: Vec<&Pod> = pods.iter().filter(|pod| !is_deleting(*pod)).collect();
    live.sort_by_key(|pod| pod.name_any());
    live.first().copied()
}

fn is_deleting<K: ResourceExt>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Returns the exit code of the sandbox container, once it terminated.
fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses
        .iter()
        .find(|status| status.name == CONTAINER_NAME)
        .or(statuses.first())?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    Some(terminated.exit_code)
}

fn live_status(snapshot: Snapshot<'_>) -> LiveStatus {
    let current = current_pod(snapshot.pods);

    if let Some(pod) = current {
        match pod_phase(pod) {
            "Succeeded" | "Failed" => {
                if let Some(code) = exit_code(pod) {
                    return LiveStatus::Exited(code);
                }
                return LiveStatus::Error(pod_failure(pod));
            }
            _ => {}
        }
    }

    let Some(sandbox) = snapshot.sandbox else {
        let pod = first_by_name(snapshot.pods);
        return LiveStatus::Error(format!(
            "sandbox object was deleted outside sandgate; pod {pod} is still present"
        ));
    };

    let replaced = match (snapshot.running_pod_uid, current) {
        (Some(running), Some(pod)) => pod.metadata.uid.as_deref() != Some(running),
        (Some(_), None) => true,
        (None, None) => snapshot.pods.iter().any(is_deleting),
        (None, Some(_)) => false,
    };

    let Some(ready) = sandbox.condition("Ready") else {
        return LiveStatus::Provisioning(WAITING_FOR_CONTROLLER_REASON.to_string());
    };

    match ready.status.as_str() {
        "True" => match current {
            // A running replacement is ready too; the Pod last seen running is updated then.
            Some(pod) if pod_phase(pod) == "Running" => LiveStatus::Ready(running_reason(pod)),
            Some(pod) if !replaced => LiveStatus::Provisioning(pending_reason(pod)),
            _ => LiveStatus::Provisioning(RECREATING_REASON.to_string()),
        },
        "False" => match ready.reason.as_str() {
            "DependenciesNotReady" | "" => {
                if replaced {
                    return LiveStatus::Provisioning(RECREATING_REASON.to_string());
                }
                match current {
                    Some(pod) => LiveStatus::Provisioning(pending_reason(pod)),
                    None => match sandbox.condition("PodScheduled") {
                        Some(scheduled) if scheduled.status == "False" => {
                            LiveStatus::Provisioning(unschedulable(&scheduled.message))
                        }
                        _ => LiveStatus::Provisioning(
                            "waiting for the controller to create the pod".to_string(),
                        ),
                    },
                }
            }
            "PodFailed" => LiveStatus::Error(condition_reason(&ready.reason, &ready.message)),
            reason => LiveStatus::Error(condition_reason(reason, &ready.message)),
        },
        _ => LiveStatus::Unknown(format!(
            "the sandbox's Ready condition is {}: {}",
            ready.status,
            condition_reason(&ready.reason, &ready.message)
        )),
    }
}

fn condition_reason(reason: &str, message: &str) -> String {
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        (true, false) => message.to_string(),
        (true, true) => "no reason given".to_string(),
    }
}

fn unschedulable(message: &str) -> String {
    if message.is_empty() {
        "pod unschedulable".to_string()
    } else {
        format!("pod unschedulable: {message}")
    }
}

fn running_reason(pod: &Pod) -> String {
    let node = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref());
    match node {
        Some(node) => format!("pod {} running on node {node}", pod.name_any()),
        None => format!("pod {} running", pod.name_any()),
    }
}

/// Describes why a Pod that is not running yet waits: unschedulable, a waiting container, or
/// just pending.
fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let scheduled = status
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "PodScheduled")
        });
    if let Some(condition) = scheduled
        && condition.status == "False"
    {
        return unschedulable(condition.message.as_deref().unwrap_or_default());
    }
    let waiting = status
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.first())
        .and_then(|status| status.state.as_ref())
        .and_then(|state| state.waiting.as_ref());
    if let Some(waiting) = waiting
        && let Some(reason) = waiting.reason.as_deref()
    {
        return format!(
            "pod {} pending: container {}",
            pod.name_any(),
            condition_reason(reason, waiting.message.as_deref().unwrap_or_default())
        );
    }
    format!("pod {} pending", pod.name_any())
}

fn pod_failure(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or_default();
    let message = status
        .and_then(|s| s.message.as_deref())
        .unwrap_or_default();
    format!(
        "pod {} {} without an exit code: {}",
        pod.name_any(),
        pod_phase(pod).to_lowercase(),
        condition_reason(reason, message)
    )
}

fn first_by_name(pods: &[Pod]) -> String {
    pods.iter()
        .map(ResourceExt::name_any)
        .min()
        .unwrap_or_default()
}

/// Returns what a deletion still waits for, or `None` while nothing of the sandbox is being
/// deleted (a delete that sandgate has not issued yet).
fn terminating_reason(snapshot: Snapshot<'_>) -> Option<String> {
    let sandbox_deleting = snapshot.sandbox.is_none_or(is_deleting);
    if !sandbox_deleting {
        return None;
    }

    let mut pods: Vec<&Pod> = snapshot.pods.iter().collect();
    pods.sort_by_key(|pod| pod.name_any());
    let held = pods
        .iter()
        .find(|pod| is_deleting(**pod) && !pod.finalizers().is_empty());
    if let Some(pod) = held {
        return Some(format!(
            "pod {} held by finalizer {}",
            pod.name_any(),
            pod.finalizers().join(", ")
        ));
    }
    if let Some(pod) = pods.iter().find(|pod| is_deleting(**pod)) {
        return Some(format!("pod {} terminating", pod.name_any()));
    }
    if let Some(pod) = pods.first() {
        return Some(format!(
            "pod {} waiting for the garbage collector to delete it",
            pod.name_any()
        ));
    }

    let sandbox = snapshot.sandbox?;
    let others: Vec<&str> = sandbox
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|finalizer| *finalizer != FOREGROUND_FINALIZER)
        .collect();
    if others.is_empty() {
        Some("sandbox has deletionTimestamp; waiting for the garbage collector".to_string())
    } else {
        Some(format!(
            "sandbox {} held by finalizer {}",
            sandbox.name_any(),
            others.join(", ")
        ))
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
