//! The typed agent-sandbox `Sandbox` (only the fields sandgate reads or writes), the labels
//! sandgate puts on its objects, and the builder that turns a sandbox record into a Sandbox.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ObjectMeta;
use kube::{CustomResource, ResourceExt};
use sandgate_core::{SandboxId, SandboxRecord};
use serde::{Deserialize, Serialize};

/// Label with the sandbox id, in its hyphenated form.
pub const ID_LABEL: &str = "sandgate.dev/sandbox-id";
/// Label with the sandbox's workspace.
pub const WORKSPACE_LABEL: &str = "sandgate.dev/workspace";
/// Label with the user-facing sandbox name.
pub const NAME_LABEL: &str = "sandgate.dev/name";
/// Label with the gateway instance that owns the object. Every list and watch selects on it.
pub const INSTANCE_LABEL: &str = "sandgate.dev/instance";
/// Name of the one container of each sandbox Pod.
pub const CONTAINER_NAME: &str = "sandbox";
/// Finalizer that kube-apiserver puts on an object deleted with foreground propagation.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Sandbox of the agent-sandbox project (`agents.x-k8s.io/v1beta1`). Fields that sandgate does
/// not use are left out, and the server keeps them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "agents.x-k8s.io",
    version = "v1beta1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxObjectSpec {
    /// Template of the Pod that the controller creates.
    pub pod_template: PodTemplate,
}

/// Pod template of a Sandbox. The controller copies its labels and annotations to the Pod,
/// except keys under `agents.x-k8s.io/`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodTemplateMetadata>,
    /// Spec of the Pod.
    pub spec: PodSpec,
}

/// Labels and annotations of a Sandbox's Pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    /// Labels of the Pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the Pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Status that agent-sandbox-controller writes on a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Conditions, among them Ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Node of the Pod, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

impl Sandbox {
    /// Returns the condition of type `type_`, if the controller has written it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
    }
}

/// Returns the name of the Sandbox (and so of its Pod) of sandbox `id`: "sbx-" and the id's 32
/// hex digits. The user-facing name is never used, because it may be reused by a new sandbox
/// while the old objects are still being deleted.
pub fn object_name(id: &SandboxId) -> String {
    format!("sbx-{}", id.simple())
}

/// Returns the label selector of every object of gateway instance `instance`.
pub fn instance_selector(instance: &str) -> String {
    format!("{INSTANCE_LABEL}={instance}")
}

/// Returns the label selector of the objects of sandbox `id` in gateway instance `instance`.
pub fn id_selector(instance: &str, id: &SandboxId) -> String {
    format!("{INSTANCE_LABEL}={instance},{ID_LABEL}={id}")
}

/// Returns the sandbox id in the labels of an object, if it carries a valid one.
pub fn labelled_id<K: ResourceExt>(object: &K) -> Option<SandboxId> {
    object.labels().get(ID_LABEL)?.parse().ok()
}

/// Returns whether `pod` belongs to the Sandbox with `uid`, by its owner references.
pub fn is_owned_by(pod: &Pod, uid: &str) -> bool {
    pod.owner_references().iter().any(|owner| owner.uid == uid)
}

/// Returns the labels sandgate puts on the Sandbox and on its Pod.
pub fn labels(record: &SandboxRecord, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ID_LABEL.to_string(), record.id.to_string()),
        (WORKSPACE_LABEL.to_string(), record.workspace.clone()),
        (NAME_LABEL.to_string(), record.name.clone()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
    ])
}

/// Returns the Pod's termination grace period for `grace`, in whole seconds rounded up, because
/// Kubernetes counts grace periods in seconds.
pub fn grace_seconds(grace: Duration) -> i64 {
    let whole = grace.as_secs();
    let seconds = if grace.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Builds the Sandbox of `record` for gateway instance `instance`.
///
/// The Pod runs one container with the record's image, command, arguments and environment. An
/// empty command keeps the image's entrypoint. The restart policy is Never, so a command that
/// ends leaves the Pod Succeeded or Failed with its exit code, and the sandbox becomes EXITED.
pub fn build_sandbox(record: &SandboxRecord, instance: &str) -> Sandbox {
    let labels = labels(record, instance);
    let env: Vec<EnvVar> = record
        .spec
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        })
        .collect();
    let non_empty = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: record.spec.image.clone(),
        command: non_empty(&record.spec.command),
        args: non_empty(&record.spec.args),
        env: (!env.is_empty()).then_some(env),
        ..Container::default()
    };
    let spec = SandboxObjectSpec {
        pod_template: PodTemplate {
            metadata: Some(PodTemplateMetadata {
                labels: labels.clone(),
                annotations: BTreeMap::new(),
            }),
            spec: PodSpec {
                containers: vec![container],
                restart_policy: Some("Never".to_string()),
                termination_grace_period_seconds: Some(grace_seconds(record.spec.grace_period)),
                ..PodSpec::default()
            },
        },
    };
    Sandbox {
        metadata: ObjectMeta {
            name: Some(object_name(&record.id)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandgate_core::SandboxSpec;
    use std::time::SystemTime;

    fn record() -> SandboxRecord {
        let spec = SandboxSpec {
            command: vec!["python3".into()],
            args: vec!["-m".into(), "http.server".into()],
            env: BTreeMap::from([("LOG".into(), "debug".into())]),
            grace_period: Duration::from_millis(2500),
            image: Some("localhost/agent:1".into()),
        };
        SandboxRecord::new(
            "team-a".into(),
            "web".into(),
            BTreeMap::new(),
            spec,
            SystemTime::now(),
        )
    }

    #[test]
    fn sandbox_named_after_id() {
        let record = record();
        let sandbox = build_sandbox(&record, "blue");
        let name = sandbox.metadata.name.clone().unwrap();
        assert_eq!(name, format!("sbx-{}", record.id.simple()));
        assert_eq!(name.len(), 36);
        assert!(!name.contains("web"));
    }

    #[test]
    fn labels_on_sandbox_and_pod() {
        let record = record();
        let sandbox = build_sandbox(&record, "blue");
        let labels = sandbox.metadata.labels.clone().unwrap();
        assert_eq!(labels[ID_LABEL], record.id.to_string());
        assert_eq!(labels[WORKSPACE_LABEL], "team-a");
        assert_eq!(labels[NAME_LABEL], "web");
        assert_eq!(labels[INSTANCE_LABEL], "blue");
        let pod_labels = &sandbox.spec.pod_template.metadata.as_ref().unwrap().labels;
        assert_eq!(pod_labels, &labels);
        assert_eq!(labelled_id(&sandbox), Some(record.id));
    }

    #[test]
    fn pod_spec_from_record() {
        let sandbox = build_sandbox(&record(), "blue");
        let spec = &sandbox.spec.pod_template.spec;
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(3));
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("localhost/agent:1"));
        assert_eq!(container.command, Some(vec!["python3".to_string()]));
        assert_eq!(
            container.args,
            Some(vec!["-m".to_string(), "http.server".to_string()])
        );
        let env = container.env.as_ref().unwrap();
        assert_eq!(env[0].name, "LOG");
        assert_eq!(env[0].value.as_deref(), Some("debug"));
    }

    #[test]
    fn empty_command_keeps_entrypoint() {
        let mut record = record();
        record.spec.command.clear();
        record.spec.args.clear();
        let sandbox = build_sandbox(&record, "blue");
        let container = &sandbox.spec.pod_template.spec.containers[0];
        assert_eq!(container.command, None);
        assert_eq!(container.args, None);
    }

    #[test]
    fn grace_rounds_up_to_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_secs(3)), 3);
        assert_eq!(grace_seconds(Duration::from_millis(100)), 1);
    }
}
