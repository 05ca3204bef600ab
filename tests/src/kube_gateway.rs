//! A gateway on the Kubernetes driver for end-to-end tests: it runs in a test namespace as the
//! ServiceAccount of `deploy/rbac.yaml`, with a kubeconfig that holds only that account's token,
//! so a permission missing from the manifest fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::config::Kubeconfig;
use sandgate_proto::v1 as pb;

use crate::api::{self, Client};
use crate::cluster::{Sandbox, TEST_IMAGE, TestNamespace, read_cluster_env};
use crate::gateway::{Gateway, GatewayOptions};

/// Name of the ServiceAccount, Role and RoleBinding in `deploy/rbac.yaml`.
pub const RBAC_NAME: &str = "sandgate";

/// A kubeconfig file for the gateway's ServiceAccount in one test namespace.
pub struct GatewayKubeconfig {
    /// Path of the file.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Returns the path of `deploy/rbac.yaml`.
pub fn rbac_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml")
}

/// Applies `deploy/rbac.yaml` in the namespace with the cluster's kubectl.
pub fn apply_rbac(admin_kubeconfig: &Path, namespace: &str) -> Result<()> {
    let env = read_cluster_env(admin_kubeconfig)?;
    let kubectl = env.get("KUBECTL").context("cluster.env has no KUBECTL")?;
    let output = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(admin_kubeconfig)
        .args(["apply", "--namespace", namespace, "-f"])
        .arg(rbac_manifest())
        .output()
        .context("failed to run kubectl apply")?;
    if !output.status.success() {
        bail!(
            "kubectl apply -f deploy/rbac.yaml failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Applies the RBAC manifest in `namespace`, requests a token for its ServiceAccount and writes
/// a kubeconfig with only that token, whose context namespace is the test namespace. With
/// `server`, the kubeconfig points there (a proxy) in place of the API server.
pub async fn service_account_kubeconfig(
    admin_kubeconfig: &Path,
    namespace: &TestNamespace,
    server: Option<&str>,
) -> Result<GatewayKubeconfig> {
    apply_rbac(admin_kubeconfig, namespace.name())?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(7200),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = namespace
        .api::<ServiceAccount>()
        .create_token_request(RBAC_NAME, &PostParams::default(), &request)
        .await
        .context("TokenRequest for the gateway's ServiceAccount failed")?
        .status
        .and_then(|status| status.token)
        .context("TokenRequest returned no token")?;

    let admin = Kubeconfig::read_from(admin_kubeconfig)?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .context("admin kubeconfig has no cluster")?;
    let ca_data = cluster
        .certificate_authority_data
        .clone()
        .context("admin kubeconfig has no certificate-authority-data")?;
    let server = server
        .map(str::to_string)
        .or(cluster.server.clone())
        .context("admin kubeconfig has no server")?;

    // JSON is valid YAML, so the kubeconfig is written with serde_json.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": server, "certificate-authority-data": ca_data,
        }}],
        "users": [{"name": RBAC_NAME, "user": {"token": token}}],
        "contexts": [{"name": "gateway", "context": {
            "cluster": "test", "user": RBAC_NAME, "namespace": namespace.name(),
        }}],
        "current-context": "gateway",
    });
    let dir = tempfile::Builder::new()
        .prefix("sandgate-kubeconfig-")
        .tempdir()?;
    let path = dir.path().join("gateway.kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(GatewayKubeconfig { path, _dir: dir })
}

/// Options of a gateway on the Kubernetes driver: the kubeconfig, and more arguments and
/// environment variables. No `--namespace` is passed, so the gateway takes the context's.
pub fn gateway_options(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> GatewayOptions {
    let mut all = vec![
        "--driver".to_string(),
        "kubernetes".to_string(),
        "--kubeconfig".to_string(),
        kubeconfig.display().to_string(),
        "--orphan-grace".to_string(),
        "5s".to_string(),
    ];
    all.extend(args.iter().map(|arg| arg.to_string()));
    GatewayOptions {
        args: all,
        env: env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

/// Starts a gateway on the Kubernetes driver and waits until its driver connected.
pub async fn start_gateway(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let gateway = Gateway::start_with(gateway_options(kubeconfig, args, env));
    gateway
        .wait_for_log("Kubernetes driver connected", Duration::from_secs(20))
        .await;
    gateway
}

/// Returns the Kubernetes object name of sandbox `id`.
pub fn object_name(id: &str) -> String {
    format!("sbx-{}", id.replace('-', ""))
}

/// Builds a create request for an image sandbox with `grace`.
pub fn create_request(name: &str, grace: Duration) -> pb::CreateSandboxRequest {
    let mut request = api::create_request(name, &["sleep", "infinity"], grace);
    if let Some(spec) = request.spec.as_mut() {
        spec.image = TEST_IMAGE.to_string();
    }
    request
}

/// Creates an image sandbox and returns it.
pub async fn create(client: &mut Client, name: &str, grace: Duration) -> pb::Sandbox {
    client
        .create_sandbox(create_request(name, grace))
        .await
        .unwrap_or_else(|status| panic!("create {name} failed: {status}"))
        .into_inner()
}

/// Waits until sandbox `id` is READY, for up to 60 s.
pub async fn wait_ready(client: &mut Client, id: &str) -> pb::Sandbox {
    api::wait_until(client, id, Duration::from_secs(60), "READY", |sandbox| {
        api::phase(sandbox) == pb::SandboxPhase::Ready
    })
    .await
}

/// Asserts that a direct GET of the Pod and of the Sandbox of `id` both return 404.
pub async fn assert_compute_gone(namespace: &TestNamespace, id: &str) {
    let name = object_name(id);
    let pod = namespace.api::<Pod>().get_opt(&name).await;
    assert!(
        matches!(pod, Ok(None)),
        "pod {name} of sandbox {id} is still there after its deletion was confirmed: {pod:?}"
    );
    let sandbox = namespace.api::<Sandbox>().get_opt(&name).await;
    assert!(
        matches!(sandbox, Ok(None)),
        "Sandbox {name} of sandbox {id} is still there after its deletion was confirmed: \
         {sandbox:?}"
    );
}

/// Deletes sandbox `id` with a wait of `timeout`, asserts the outcome DELETED, then asserts that
/// its Pod and Sandbox are gone. Returns the response.
pub async fn delete_and_confirm(
    client: &mut Client,
    namespace: &TestNamespace,
    id: &str,
    timeout: Duration,
) -> pb::DeleteSandboxResponse {
    let response = client
        .delete_sandbox(api::delete_request(api::by_id(id), true, timeout))
        .await
        .unwrap_or_else(|status| panic!("waiting delete of {id} failed: {status}"))
        .into_inner();
    assert_eq!(
        response.outcome,
        pb::DeleteOutcome::Deleted as i32,
        "waiting delete of {id} returned {response:?}"
    );
    assert_compute_gone(namespace, id).await;
    response
}

/// Lists every sandbox of the default workspace.
pub async fn list_all(client: &mut Client) -> Vec<pb::Sandbox> {
    client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .expect("list sandboxes")
        .into_inner()
        .sandboxes
}
