//! Smoke tests of the local Kubernetes test cluster: the behaviour of agent-sandbox, the garbage
//! collector and kwok that sandgate relies on. Each test skips itself unless
//! `SANDGATE_TEST_KUBECONFIG` names the kubeconfig of a cluster started with `tests/cluster/up`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions::is_deleted;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, Resource};
use sandgate_e2e::cluster::{
    OwnCluster, Sandbox, TestCluster, WAIT_TIMEOUT, create_ready_sandbox, wait_until,
};

/// Grace period of the test pods. Short, but long enough that "terminated at once" and "terminated
/// after the grace period" are clearly apart.
const GRACE_SECONDS: i64 = 3;
const GRACE: Duration = Duration::from_secs(GRACE_SECONDS as u64);

/// Allowed delay past the grace period: kwok deletes a pod up to 1 s after it, then the garbage
/// collector and the watch events add their latency.
const GRACE_SLACK: Duration = Duration::from_secs(8);

/// Finalizer that the tests put on a Pod to hold it after kwok has deleted it.
const TEST_FINALIZER: &str = "sandgate.dev/test-hold";

/// Environment variable with the name of the cluster that the API server restart test starts for
/// itself. The default is `smoke-restart`.
const RESTART_CLUSTER_ENV: &str = "SANDGATE_TEST_RESTART_CLUSTER";

fn pod_is_terminating(pod: Option<&Pod>) -> bool {
    pod.is_some_and(|pod| pod.metadata.deletion_timestamp.is_some())
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

fn uid_of<K: Resource>(object: &K) -> String {
    object.meta().uid.clone().unwrap_or_default()
}

#[tokio::test]
async fn sandbox_becomes_ready_on_kwok_node() -> Result<()> {
    let Some(cluster) = TestCluster::from_env().await? else {
        return Ok(());
    };
    let namespace = cluster.namespace("sandbox-ready").await?;
    let node = cluster.kwok_node_name().await?;

    let (sandbox, pod) = create_ready_sandbox(
        &namespace,
        &Sandbox::with_grace_period("ready", GRACE_SECONDS),
    )
    .await?;

    let spec = pod.spec.as_ref().context("pod without spec")?;
    assert_eq!(
        spec.node_name.as_deref(),
        Some(node.as_str()),
        "pod is not bound to the kwok node"
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(GRACE_SECONDS));
    let status = pod.status.as_ref().context("pod without status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(pod_is_ready(&pod), "pod is not Ready: {status:?}");

    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    assert_eq!(owners.len(), 1, "pod owner references: {owners:?}");
    let owner = &owners[0];
    assert_eq!(owner.api_version, "agents.x-k8s.io/v1beta1");
    assert_eq!(owner.kind, "Sandbox");
    assert_eq!(owner.name, "ready");
    assert_eq!(owner.uid, uid_of(&sandbox));
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));

    namespace.delete_and_wait(WAIT_TIMEOUT).await
}

#[tokio::test]
async fn background_delete_keeps_pod_for_grace_period() -> Result<()> {
    let Some(cluster) = TestCluster::from_env().await? else {
        return Ok(());
    };
    let namespace = cluster.namespace("background-delete").await?;
    let sandboxes = namespace.api::<Sandbox>();
    let pods = namespace.api::<Pod>();
    let (sandbox, pod) =
        create_ready_sandbox(&namespace, &Sandbox::with_grace_period("bg", GRACE_SECONDS)).await?;

    let deleted_at = Instant::now();
    sandboxes.delete("bg", &DeleteParams::background()).await?;

    // The Sandbox itself goes at once, because no finalizer keeps it.
    wait_until(
        &sandboxes,
        "bg",
        "sandbox to be deleted",
        Duration::from_secs(5),
        is_deleted(&uid_of(&sandbox)),
    )
    .await?;
    assert!(
        deleted_at.elapsed() < GRACE,
        "background-deleted sandbox took {:?}, longer than the pod's grace period",
        deleted_at.elapsed()
    );

    // The garbage collector deletes the Pod, which then stays Terminating for its grace period.
    let terminating = wait_until(
        &pods,
        "bg",
        "pod to start terminating",
        WAIT_TIMEOUT,
        pod_is_terminating,
    )
    .await?
    .context("pod vanished without a Terminating phase")?;
    assert_eq!(uid_of(&terminating), uid_of(&pod));
    assert_eq!(
        terminating.metadata.deletion_grace_period_seconds,
        Some(GRACE_SECONDS)
    );

    wait_until(
        &pods,
        "bg",
        "pod to be deleted",
        WAIT_TIMEOUT,
        is_deleted(&uid_of(&pod)),
    )
    .await?;
    let elapsed = deleted_at.elapsed();
    assert!(
        elapsed >= GRACE,
        "pod was gone after {elapsed:?}, before its grace period of {GRACE:?}"
    );
    assert!(
        elapsed <= GRACE + GRACE_SLACK,
        "pod was gone only after {elapsed:?}; expected at most {:?}",
        GRACE + GRACE_SLACK
    );

    namespace.delete_and_wait(WAIT_TIMEOUT).await
}

#[tokio::test]
async fn foreground_delete_waits_for_pod() -> Result<()> {
    let Some(cluster) = TestCluster::from_env().await? else {
        return Ok(());
    };
    let namespace = cluster.namespace("foreground-delete").await?;
    let sandboxes = namespace.api::<Sandbox>();
    let pods = namespace.api::<Pod>();
    let (sandbox, pod) =
        create_ready_sandbox(&namespace, &Sandbox::with_grace_period("fg", GRACE_SECONDS)).await?;

    let deleted_at = Instant::now();
    sandboxes.delete("fg", &DeleteParams::foreground()).await?;

    let pod_gone = async {
        wait_until(
            &pods,
            "fg",
            "pod to be deleted",
            WAIT_TIMEOUT,
            is_deleted(&uid_of(&pod)),
        )
        .await?;
        Ok::<_, anyhow::Error>(Instant::now())
    };
    let sandbox_gone = async {
        wait_until(
            &sandboxes,
            "fg",
            "sandbox to be deleted",
            WAIT_TIMEOUT,
            is_deleted(&uid_of(&sandbox)),
        )
        .await?;
        Ok::<_, anyhow::Error>(Instant::now())
    };
    let deleting = async {
        // While the Pod terminates, the Sandbox is still there, marked for deletion.
        wait_until(
            &pods,
            "fg",
            "pod to start terminating",
            WAIT_TIMEOUT,
            pod_is_terminating,
        )
        .await?;
        let held_sandbox = sandboxes
            .get_opt("fg")
            .await?
            .context("sandbox was gone while its pod was still terminating")?;
        Ok::<_, anyhow::Error>(held_sandbox)
    };
    let (held_sandbox, pod_gone, sandbox_gone) =
        tokio::try_join!(deleting, pod_gone, sandbox_gone)?;

    assert!(
        held_sandbox.metadata.deletion_timestamp.is_some(),
        "sandbox has no deletionTimestamp"
    );
    let finalizers = held_sandbox.metadata.finalizers.unwrap_or_default();
    assert!(
        finalizers
            .iter()
            .any(|finalizer| finalizer == "foregroundDeletion"),
        "sandbox finalizers are {finalizers:?}, without foregroundDeletion"
    );
    assert!(
        sandbox_gone >= pod_gone,
        "sandbox was gone {:?} before its pod",
        pod_gone - sandbox_gone
    );
    let elapsed = sandbox_gone - deleted_at;
    assert!(
        elapsed >= GRACE,
        "sandbox was gone after {elapsed:?}, before the grace period of {GRACE:?}"
    );
    assert!(
        elapsed <= GRACE + GRACE_SLACK,
        "sandbox was gone only after {elapsed:?}; expected at most {:?}",
        GRACE + GRACE_SLACK
    );

    namespace.delete_and_wait(WAIT_TIMEOUT).await
}

#[tokio::test]
async fn pod_finalizer_holds_foreground_delete() -> Result<()> {
    let Some(cluster) = TestCluster::from_env().await? else {
        return Ok(());
    };
    let namespace = cluster.namespace("finalizer-holds").await?;
    let sandboxes = namespace.api::<Sandbox>();
    let pods = namespace.api::<Pod>();
    let (sandbox, pod) = create_ready_sandbox(
        &namespace,
        &Sandbox::with_grace_period("held", GRACE_SECONDS),
    )
    .await?;

    let add_finalizer = serde_json::json!({ "metadata": { "finalizers": [TEST_FINALIZER] } });
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&add_finalizer),
    )
    .await
    .context("failed to add a finalizer to the pod")?;
    sandboxes
        .delete("held", &DeleteParams::foreground())
        .await?;

    // kwok deletes the Pod with grace period 0 once the grace period has passed, as a kubelet does.
    // The finalizer keeps the Pod, and so the Sandbox, after that.
    let killed = wait_until(
        &pods,
        "held",
        "kwok to delete the terminating pod",
        WAIT_TIMEOUT,
        |pod: Option<&Pod>| {
            pod.is_some_and(|pod| pod.metadata.deletion_grace_period_seconds == Some(0))
        },
    )
    .await?
    .context("pod vanished although it has a finalizer")?;
    assert_eq!(
        killed.metadata.finalizers.as_deref(),
        Some(&[TEST_FINALIZER.to_owned()][..])
    );
    let held_sandbox = sandboxes
        .get_opt("held")
        .await?
        .context("sandbox was gone while a finalizer still held its pod")?;
    assert!(
        held_sandbox.metadata.deletion_timestamp.is_some(),
        "sandbox has no deletionTimestamp"
    );
    assert_eq!(uid_of(&held_sandbox), uid_of(&sandbox));

    let released_at = Instant::now();
    let remove_finalizer = serde_json::json!({ "metadata": { "finalizers": null } });
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&remove_finalizer),
    )
    .await
    .context("failed to remove the finalizer from the pod")?;
    wait_until(
        &pods,
        "held",
        "pod to be deleted",
        WAIT_TIMEOUT,
        is_deleted(&uid_of(&pod)),
    )
    .await?;
    wait_until(
        &sandboxes,
        "held",
        "sandbox to be deleted",
        Duration::from_secs(15),
        is_deleted(&uid_of(&sandbox)),
    )
    .await?;
    assert!(
        released_at.elapsed() <= GRACE_SLACK,
        "sandbox went {:?} after its pod was released",
        released_at.elapsed()
    );

    namespace.delete_and_wait(WAIT_TIMEOUT).await
}

#[tokio::test]
async fn service_account_token_is_authorized_by_role() -> Result<()> {
    let Some(cluster) = TestCluster::from_env().await? else {
        return Ok(());
    };
    let namespace = cluster.namespace("service-account").await?;
    let name = "gateway";
    let metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    namespace
        .api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: metadata.clone(),
                ..ServiceAccount::default()
            },
        )
        .await?;
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["agents.x-k8s.io".to_owned()]),
            resources: Some(vec!["sandboxes".to_owned()]),
            verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    namespace
        .api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: metadata.clone(),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.name().to_owned()),
            ..Subject::default()
        }]),
    };
    namespace
        .api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = namespace
        .api::<ServiceAccount>()
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .context("TokenRequest for the service account failed")?
        .status
        .and_then(|status| status.token)
        .context("TokenRequest returned no token")?;

    // A client with only the token: the kubeconfig supplies the server URL and CA.
    let mut config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cluster.kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    let gateway = Client::try_from(config)?;

    let allowed = Api::<Sandbox>::namespaced(gateway.clone(), namespace.name())
        .list(&Default::default())
        .await;
    assert!(
        allowed.is_ok(),
        "listing sandboxes with the role failed: {allowed:?}"
    );
    let denied = Api::<Pod>::namespaced(gateway.clone(), namespace.name())
        .list(&Default::default())
        .await;
    match denied {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "unexpected error: {status:?}")
        }
        other => panic!("listing pods without a role should be forbidden, got {other:?}"),
    }
    let other_namespace = Api::<Sandbox>::namespaced(gateway, "default")
        .list(&Default::default())
        .await;
    match other_namespace {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "unexpected error: {status:?}")
        }
        other => {
            panic!("listing sandboxes in another namespace should be forbidden, got {other:?}")
        }
    }

    namespace.delete_and_wait(WAIT_TIMEOUT).await
}

/// Stops and restarts kube-apiserver on a cluster of its own, so it never disturbs other tests.
#[tokio::test]
async fn apiserver_restart_keeps_objects() -> Result<()> {
    if TestCluster::from_env().await?.is_none() {
        return Ok(());
    }
    let name = std::env::var(RESTART_CLUSTER_ENV).unwrap_or_else(|_| "smoke-restart".to_owned());
    let own = OwnCluster::start(&name).await?;
    let cluster = &own.cluster;
    let namespace = cluster.namespace("apiserver-restart").await?;
    let sandboxes = namespace.api::<Sandbox>();
    let pods = namespace.api::<Pod>();

    let (sandbox, pod) = create_ready_sandbox(
        &namespace,
        &Sandbox::with_grace_period("survivor", GRACE_SECONDS),
    )
    .await?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("survivor".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..ConfigMap::default()
    };
    namespace
        .api::<ConfigMap>()
        .create(&PostParams::default(), &config_map)
        .await?;

    // A watch opened before the restart must resume after it. default_backoff() retries the
    // errors that the watcher returns while the API server is down.
    let mut sandbox_events = watcher(sandboxes.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(WAIT_TIMEOUT, sandbox_events.try_next())
        .await
        .context("timed out waiting for the first watch event")??;
    assert!(
        first.is_some(),
        "the sandbox watch ended before the restart"
    );

    own.apiserver("stop").await?;
    let while_down = sandboxes.get("survivor").await;
    assert!(
        while_down.is_err(),
        "the API server still answered after it was stopped: {while_down:?}"
    );
    own.apiserver("start").await?;

    // The same client reconnects.
    let after = sandboxes
        .get("survivor")
        .await
        .context("get after the restart failed")?;
    assert_eq!(uid_of(&after), uid_of(&sandbox));
    assert!(
        after.is_ready(),
        "sandbox is no longer Ready after the restart"
    );
    let pod_after = pods.get("survivor").await?;
    assert_eq!(uid_of(&pod_after), uid_of(&pod));
    assert!(pod_after.metadata.deletion_timestamp.is_none());
    assert!(
        pod_is_ready(&pod_after),
        "pod is no longer Ready after the restart"
    );
    let config_map_after = namespace.api::<ConfigMap>().get("survivor").await?;
    assert_eq!(config_map_after.data, config_map.data);

    // The watch resumes: it delivers a change made after the restart.
    let marker =
        serde_json::json!({ "metadata": { "labels": { "sandgate.dev/restarted": "yes" } } });
    sandboxes
        .patch("survivor", &PatchParams::default(), &Patch::Merge(&marker))
        .await?;
    // The errors from the time the API server was down (connection refused, or 410 Gone for a
    // resource version that the restarted watch cache no longer has) are skipped: the watcher
    // recovers from them by itself.
    let seen = tokio::time::timeout(WAIT_TIMEOUT, async {
        while let Some(event) = sandbox_events.next().await {
            match event {
                Ok(sandbox) => {
                    let labels = sandbox.metadata.labels.unwrap_or_default();
                    if labels.get("sandgate.dev/restarted").map(String::as_str) == Some("yes") {
                        return true;
                    }
                }
                Err(error) => eprintln!("sandbox watch error during the restart: {error}"),
            }
        }
        false
    })
    .await
    .context("timed out waiting for the watch to deliver the post-restart change")?;
    assert!(
        seen,
        "the sandbox watch ended without the post-restart change"
    );

    // The controllers reconnected too: a new Sandbox becomes Ready, and a foreground delete
    // (garbage collector and kwok) completes.
    let (fresh, fresh_pod) = create_ready_sandbox(
        &namespace,
        &Sandbox::with_grace_period("fresh", GRACE_SECONDS),
    )
    .await?;
    sandboxes
        .delete("fresh", &DeleteParams::foreground())
        .await?;
    wait_until(
        &pods,
        "fresh",
        "pod to be deleted",
        WAIT_TIMEOUT,
        is_deleted(&uid_of(&fresh_pod)),
    )
    .await?;
    wait_until(
        &sandboxes,
        "fresh",
        "sandbox to be deleted",
        WAIT_TIMEOUT,
        is_deleted(&uid_of(&fresh)),
    )
    .await?;

    namespace.delete_and_wait(WAIT_TIMEOUT).await?;
    // Dropping the cluster runs tests/cluster/down.
    drop(own);
    Ok(())
}
