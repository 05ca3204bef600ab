//! [`KubeDriver`], the [`Driver`] implementation: connecting, creating and deleting Sandboxes,
//! and reading their state fresh for the server and the reconciler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use sandgate_core::{DriverDetails, Observed, SandboxId, SandboxRecord};
use sandgate_driver::{DeletePlan, Driver, DriverError, Found, Observation};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::errors::{driver_error, has_code, is_conflict, is_not_found};
use crate::objects::{
    Sandbox, build_sandbox, grace_seconds, instance_selector, labelled_id, object_name,
};
use crate::state::{NAME_ATTRIBUTE, NAMESPACE_ATTRIBUTE, Shared, UID_ATTRIBUTE, View};
use crate::{DRIVER_NAME, KubeDriverConfig};

/// Pods whose own deletion deadline is later than the plan's kill deadline by more than this are
/// deleted again with the shorter grace period. The API server stores deletion times in whole
/// seconds, so a smaller difference is rounding.
const GRACE_SLACK_SECONDS: i64 = 1;

/// How long the start-up check waits for the API server before the driver starts anyway.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kubernetes driver.
pub struct KubeDriver {
    shared: Arc<Shared>,
}

impl KubeDriver {
    /// Connects to the cluster and checks that this gateway may list Sandboxes in its namespace.
    ///
    /// # Errors
    /// Returns a message when the kubeconfig cannot be read, or the API server rejects the
    /// check (missing permission, or no agent-sandbox CRD). A cluster that cannot be reached is
    /// only logged, so that recorded deletions resume once it is back.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing has started before it returns.
    pub async fn connect(config: KubeDriverConfig) -> Result<Self, DriverError> {
        let kube_config = match &config.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|error| {
                    DriverError::Permanent(format!(
                        "cannot read kubeconfig {}: {error}",
                        path.display()
                    ))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|error| {
                        DriverError::Permanent(format!(
                            "invalid kubeconfig {}: {error}",
                            path.display()
                        ))
                    })?
            }
            None => Config::infer().await.map_err(|error| {
                DriverError::Permanent(format!(
                    "cannot find a Kubernetes configuration (KUBECONFIG, ~/.kube/config or \
                     in-cluster): {error}: give one with --kubeconfig PATH"
                ))
            })?,
        };
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let server = kube_config.cluster_url.to_string();
        let client = Client::try_from(kube_config).map_err(|error| {
            DriverError::Permanent(format!("cannot build a Kubernetes client: {error}"))
        })?;
        let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client, &namespace);

        let check = ListParams::default()
            .labels(&instance_selector(&config.instance))
            .limit(1);
        let checked = tokio::time::timeout(CONNECT_CHECK_TIMEOUT, sandboxes.list(&check)).await;
        let checked = checked.unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {CONNECT_CHECK_TIMEOUT:?}").into(),
            ))
        });
        match checked {
            Ok(_) => {}
            Err(error) if has_code(&error, 401) || has_code(&error, 403) => {
                return Err(driver_error(
                    &format!("listing Sandboxes in namespace {namespace}"),
                    error,
                ));
            }
            Err(error) if is_not_found(&error) => {
                return Err(driver_error(
                    &format!("listing Sandboxes in namespace {namespace}"),
                    error,
                ));
            }
            Err(error) => warn!(
                %server,
                %namespace,
                %error,
                "The Kubernetes API server cannot be reached yet; the watchers keep retrying"
            ),
        }
        info!(%server, %namespace, instance = %config.instance, "Kubernetes driver connected");

        Ok(Self {
            shared: Arc::new(Shared {
                namespace,
                instance: config.instance,
                sandboxes,
                pods,
                view: Mutex::new(View::default()),
                sink: Mutex::new(None),
            }),
        })
    }

    /// Returns the namespace that every object of this gateway lives in.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// Deletes `pod` with `grace_seconds`, guarded by its UID. A Pod that is already gone, or
    /// was replaced by another with the same name, counts as deleted.
    async fn delete_pod(&self, pod: &Pod, grace_seconds: u32) -> Result<(), DriverError> {
        let params = DeleteParams {
            grace_period_seconds: Some(grace_seconds),
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.shared.pods.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(()),
            Err(error) => Err(driver_error(
                &format!("deleting pod {}", pod.name_any()),
                error,
            )),
        }
    }

    /// Deletes the Sandbox `name` with `uid` and the propagation policy. A 404 means it is
    /// already gone; a 409 from the UID precondition means another object has the name now.
    async fn delete_sandbox(
        &self,
        name: &str,
        uid: &str,
        propagation: PropagationPolicy,
    ) -> Result<(), DriverError> {
        let params = DeleteParams {
            propagation_policy: Some(propagation),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.shared.sandboxes.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(()),
            Err(error) => Err(driver_error(&format!("deleting sandbox {name}"), error)),
        }
    }

    fn recorded_uid(record: &SandboxRecord) -> Option<&str> {
        record
            .driver
            .attributes
            .get(UID_ATTRIBUTE)
            .map(String::as_str)
            .filter(|uid| !uid.is_empty())
    }
}

/// Returns the grace period, in seconds, to delete `pod` with so that it ends by the plan's kill
/// deadline, or `None` when its own deadline is early enough.
fn grace_override(pod: &Pod, plan: &DeletePlan, now: SystemTime) -> Option<u32> {
    let left = grace_seconds(plan.grace_left(now));
    let own_left = match &pod.metadata.deletion_timestamp {
        Some(deadline) => {
            let deadline = SystemTime::from(deadline.0);
            grace_seconds(deadline.duration_since(now).unwrap_or_default())
        }
        None => pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
            .unwrap_or(30),
    };
    (own_left > left + GRACE_SLACK_SECONDS || (left == 0 && own_left > 0))
        .then(|| u32::try_from(left).unwrap_or(u32::MAX))
}

#[async_trait]
impl Driver for KubeDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn validate(&self, record: &SandboxRecord) -> Result<(), DriverError> {
        if record.spec.image.as_deref().is_none_or(str::is_empty) {
            return Err(DriverError::Unsupported {
                field: "spec.image".to_string(),
                message: "an image is required: the kubernetes driver runs each sandbox as a \
                          Pod, so give --image IMAGE"
                    .to_string(),
            });
        }
        Ok(())
    }

    async fn start(
        &self,
        records: Vec<SandboxRecord>,
        sink: mpsc::UnboundedSender<Observation>,
    ) -> Result<(), DriverError> {
        *self.shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
        self.shared
            .view()
            .known
            .extend(records.iter().map(|record| record.id));
        crate::watch::spawn_watchers(&self.shared);
        Ok(())
    }

    async fn create(&self, record: &SandboxRecord) -> Result<DriverDetails, DriverError> {
        self.shared.view().known.insert(record.id);
        let sandbox = build_sandbox(record, &self.shared.instance);
        let name = object_name(&record.id);
        match self
            .shared
            .sandboxes
            .create(&PostParams::default(), &sandbox)
            .await
        {
            Ok(created) => {
                info!(
                    sandbox_id = %record.id,
                    object = %name,
                    uid = created.metadata.uid.as_deref().unwrap_or_default(),
                    "Sandbox object created"
                );
                Ok(self.shared.details(&created))
            }
            Err(error) if is_conflict(&error) => {
                let existing = self
                    .shared
                    .sandboxes
                    .get(&name)
                    .await
                    .map_err(|error| driver_error(&format!("reading sandbox {name}"), error))?;
                let ours = labelled_id(&existing) == Some(record.id)
                    && existing.labels().get(crate::objects::INSTANCE_LABEL)
                        == Some(&self.shared.instance);
                if !ours {
                    return Err(DriverError::Permanent(format!(
                        "sandbox object {name} already exists in namespace {} and is not \
                         labelled with this sandbox's id and instance",
                        self.shared.namespace
                    )));
                }
                info!(sandbox_id = %record.id, object = %name, "Adopted an existing Sandbox object");
                Ok(self.shared.details(&existing))
            }
            Err(error) => Err(driver_error(&format!("creating sandbox {name}"), error)),
        }
    }

    async fn delete(&self, record: &SandboxRecord, plan: DeletePlan) -> Result<(), DriverError> {
        let id = record.id;
        let name = object_name(&id);
        let uid = match Self::recorded_uid(record) {
            Some(uid) => Some(uid.to_string()),
            None => self
                .shared
                .find_sandbox(&id, None)
                .await?
                .and_then(|sandbox| sandbox.metadata.uid),
        };

        if plan.force {
            warn!(
                sandbox_id = %id,
                object = %name,
                "Forced deletion: deleting the Pod with grace period 0 and the Sandbox in the background"
            );
        }
        if let Some(uid) = &uid {
            let propagation = if plan.force {
                PropagationPolicy::Background
            } else {
                PropagationPolicy::Foreground
            };
            self.delete_sandbox(&name, uid, propagation).await?;
        }

        let fresh = self.shared.read_fresh(&id, uid.as_deref()).await?;
        let now = SystemTime::now();
        for pod in &fresh.pods {
            let grace = if plan.force {
                Some(0)
            } else {
                grace_override(pod, &plan, now)
            };
            if let Some(grace) = grace {
                info!(
                    sandbox_id = %id,
                    pod = %pod.name_any(),
                    grace_period_seconds = grace,
                    "Deleting the Pod with a shorter grace period than its own"
                );
                self.delete_pod(pod, grace).await?;
            }
        }
        Ok(())
    }

    async fn observe(&self, record: &SandboxRecord) -> Result<Observed, DriverError> {
        self.shared
            .observe_fresh(&record.id, Self::recorded_uid(record), Some(record))
            .await
    }

    async fn list(&self) -> Result<Vec<Found>, DriverError> {
        let params = ListParams::default().labels(&instance_selector(&self.shared.instance));
        let sandboxes = self
            .shared
            .sandboxes
            .list(&params)
            .await
            .map_err(|error| driver_error("listing Sandboxes", error))?
            .items;
        let pods = self
            .shared
            .pods
            .list(&params)
            .await
            .map_err(|error| driver_error("listing Pods", error))?
            .items;

        let mut by_id: HashMap<SandboxId, (Option<Sandbox>, Vec<Pod>)> = HashMap::new();
        for sandbox in sandboxes {
            if let Some(id) = labelled_id(&sandbox) {
                by_id.entry(id).or_default().0 = Some(sandbox);
            }
        }
        for pod in pods {
            if let Some(id) = labelled_id(&pod) {
                by_id.entry(id).or_default().1.push(pod);
            }
        }

        let mut found = Vec::with_capacity(by_id.len());
        for (id, (sandbox, pods)) in by_id {
            let created_at = sandbox
                .as_ref()
                .and_then(|sandbox| sandbox.metadata.creation_timestamp.clone())
                .or_else(|| {
                    pods.iter()
                        .filter_map(|pod| pod.metadata.creation_timestamp.clone())
                        .min_by_key(|time| time.0)
                })
                .map(|time| SystemTime::from(time.0));
            let details = match &sandbox {
                Some(sandbox) => self.shared.details(sandbox),
                None => DriverDetails {
                    driver: DRIVER_NAME.to_string(),
                    attributes: [
                        (
                            NAMESPACE_ATTRIBUTE.to_string(),
                            self.shared.namespace.clone(),
                        ),
                        (NAME_ATTRIBUTE.to_string(), object_name(&id)),
                    ]
                    .into(),
                },
            };
            let observed = self.shared.derive(&id, sandbox.as_ref(), &pods);
            found.push(Found {
                id,
                created_at,
                observed,
                details,
            });
        }
        Ok(found)
    }

    async fn delete_orphan(&self, id: SandboxId) -> Result<(), DriverError> {
        let fresh = self.shared.read_fresh(&id, None).await?;
        let name = object_name(&id);
        warn!(sandbox_id = %id, object = %name, "Deleting objects that have no sandbox record, with grace period 0");
        if let Some(uid) = fresh
            .sandbox
            .as_ref()
            .and_then(|sandbox| sandbox.metadata.uid.clone())
        {
            self.delete_sandbox(&name, &uid, PropagationPolicy::Background)
                .await?;
        }
        for pod in &fresh.pods {
            self.delete_pod(pod, 0).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(grace: i64, deletion_in: Option<i64>, now: SystemTime) -> Pod {
        let mut pod = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                termination_grace_period_seconds: Some(grace),
                ..Default::default()
            }),
            ..Pod::default()
        };
        pod.metadata.deletion_timestamp = deletion_in.map(|seconds| {
            let at = now + Duration::from_secs(seconds as u64);
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at.try_into().unwrap())
        });
        pod
    }

    fn plan(now: SystemTime, seconds: u64, force: bool) -> DeletePlan {
        DeletePlan {
            kill_at: now + Duration::from_secs(seconds),
            force,
        }
    }

    #[test]
    fn own_grace_kept_when_plan_matches() {
        let now = SystemTime::now();
        assert_eq!(
            grace_override(&pod(3, None, now), &plan(now, 3, false), now),
            None
        );
        assert_eq!(
            grace_override(&pod(3, Some(3), now), &plan(now, 3, false), now),
            None
        );
    }

    #[test]
    fn shorter_plan_overrides_pod_grace() {
        let now = SystemTime::now();
        assert_eq!(
            grace_override(&pod(30, None, now), &plan(now, 2, false), now),
            Some(2)
        );
        assert_eq!(
            grace_override(&pod(30, Some(28), now), &plan(now, 2, false), now),
            Some(2)
        );
    }

    #[test]
    fn passed_deadline_overrides_with_zero() {
        let now = SystemTime::now();
        assert_eq!(
            grace_override(&pod(1, Some(1), now), &plan(now, 0, false), now),
            Some(0)
        );
    }
}
