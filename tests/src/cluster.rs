//! Access to the local Kubernetes test cluster started by `tests/cluster/up`.
//!
//! Tests find the cluster through the kubeconfig path in `SANDGATE_TEST_KUBECONFIG`. When it is unset,
//! [`TestCluster::from_env`] prints why and returns `None`, and the test returns early. Each test
//! works in a namespace of its own ([`TestNamespace`]), which is deleted when the test ends. When the
//! test panics, the objects in that namespace are printed first.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{self, await_condition};
use kube::{Api, Client, Config, CustomResource, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Environment variable with the path of the test cluster's admin kubeconfig.
pub const KUBECONFIG_ENV: &str = "SANDGATE_TEST_KUBECONFIG";

/// Label put on every test namespace, so that leftovers can be found with a label selector.
pub const TEST_NAMESPACE_LABEL: &str = "sandgate.dev/test-namespace";

/// Container image put into test pods. kwok never pulls images, so it only has to be a valid name.
pub const TEST_IMAGE: &str = "localhost/sandgate-test-agent:0";

/// Default bound for waits on the cluster's controllers (scheduling, readiness, garbage collection).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sandbox of the agent-sandbox project (`agents.x-k8s.io/v1beta1`), with only the fields that
/// sandgate reads or writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "agents.x-k8s.io",
    version = "v1beta1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Template of the Sandbox's Pod.
    pub pod_template: SandboxPodTemplate,
}

/// Pod template of a Sandbox. Its metadata carries only labels and annotations.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPodTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SandboxPodMetadata>,
    pub spec: PodSpec,
}

/// Labels and annotations that the controller copies onto the Sandbox's Pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Status that agent-sandbox-controller writes on a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub node_name: Option<String>,
}

impl Sandbox {
    /// Builds a Sandbox with one container and the given termination grace period.
    pub fn with_grace_period(name: &str, grace_period_seconds: i64) -> Self {
        let spec = SandboxSpec {
            pod_template: SandboxPodTemplate {
                metadata: None,
                spec: PodSpec {
                    containers: vec![Container {
                        name: "agent".to_owned(),
                        image: Some(TEST_IMAGE.to_owned()),
                        ..Container::default()
                    }],
                    termination_grace_period_seconds: Some(grace_period_seconds),
                    ..PodSpec::default()
                },
            },
        };
        Sandbox::new(name, spec)
    }

    /// Returns the status of condition `type_`, e.g. `Some("True")` for a ready Sandbox.
    pub fn condition_status(&self, type_: &str) -> Option<&str> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .map(|condition| condition.status.as_str())
    }

    pub fn is_ready(&self) -> bool {
        self.condition_status("Ready") == Some("True")
    }
}

/// Connection to the test cluster.
#[derive(Clone)]
pub struct TestCluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
}

impl TestCluster {
    /// Connects to the cluster named by `SANDGATE_TEST_KUBECONFIG`. Returns `None` after printing a
    /// message when the variable is unset, so that a test can skip itself.
    pub async fn from_env() -> Result<Option<Self>> {
        let Some(path) = std::env::var_os(KUBECONFIG_ENV) else {
            eprintln!(
                "skipping: {KUBECONFIG_ENV} is not set. Start a cluster with `tests/cluster/up` and set \
                 {KUBECONFIG_ENV} to the kubeconfig path it prints."
            );
            return Ok(None);
        };
        Self::connect(Path::new(&path)).await.map(Some)
    }

    /// Connects with the kubeconfig at `path`, and checks that the API server responds.
    pub async fn connect(path: &Path) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
        let client = Client::try_from(config).context("failed to build a Kubernetes client")?;
        client.apiserver_version().await.with_context(|| {
            format!(
                "the API server in {} does not respond; is the cluster up (tests/cluster/up)?",
                path.display()
            )
        })?;
        Ok(Self {
            client,
            kubeconfig: path.to_owned(),
        })
    }

    /// Creates a namespace for one test, named after `test` plus a unique suffix.
    pub async fn namespace(&self, test: &str) -> Result<TestNamespace> {
        let name = unique_namespace_name(test);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_NAMESPACE_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("failed to create namespace {name}"))?;
        Ok(TestNamespace {
            client: self.client.clone(),
            name,
            kubectl: kubectl_for(&self.kubeconfig),
            kubeconfig: self.kubeconfig.clone(),
            deleted: false,
        })
    }

    /// Returns the name of the kwok node, the only node of the test cluster.
    pub async fn kwok_node_name(&self) -> Result<String> {
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(self.client.clone())
            .list(&kube::api::ListParams::default().labels("type=kwok"))
            .await
            .context("failed to list nodes")?;
        match nodes.items.as_slice() {
            [node] => node.metadata.name.clone().context("node without a name"),
            other => bail!(
                "expected exactly one node labelled type=kwok, found {}",
                other.len()
            ),
        }
    }
}

/// Namespace of one test. Dropping it deletes the namespace (without waiting for its contents to
/// go). When dropped during a panic, it first prints the Sandboxes, Pods and events in it.
pub struct TestNamespace {
    client: Client,
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Returns an API handle for namespaced kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace and waits up to `timeout` until it is gone, so that a test can check
    /// that its objects do not hold the namespace.
    pub async fn delete_and_wait(mut self, timeout: Duration) -> Result<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let namespace = namespaces
            .get(&self.name)
            .await
            .with_context(|| format!("failed to get namespace {}", self.name))?;
        let uid = namespace.metadata.uid.unwrap_or_default();
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("failed to delete namespace {}", self.name))?;
        self.deleted = true;
        wait_for(
            &format!("namespace {} to be deleted", self.name),
            timeout,
            await_condition(namespaces, &self.name, wait::conditions::is_deleted(&uid)),
        )
        .await?;
        Ok(())
    }

    /// Prints the Sandboxes, Pods and events of this namespace to stderr, using kubectl.
    pub fn print_objects(&self) {
        eprintln!("--- objects in namespace {} ---", self.name);
        for args in [
            &["get", "sandboxes.agents.x-k8s.io,pods", "-o", "yaml"][..],
            &["get", "events", "--sort-by=.lastTimestamp"][..],
        ] {
            let output = Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--namespace")
                .arg(&self.name)
                .args(args)
                .output();
            match output {
                Ok(output) => {
                    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
                    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
                }
                Err(error) => eprintln!(
                    "failed to run {}: {error}; set SANDGATE_TEST_KUBECTL to a kubectl binary",
                    self.kubectl.display()
                ),
            }
        }
        eprintln!("--- end of objects in namespace {} ---", self.name);
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_objects();
        }
        if self.deleted {
            return;
        }
        // Drop cannot await, so the namespace is deleted through kubectl without waiting.
        let result = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "failed to delete test namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!(
                "failed to run {} to delete test namespace {}: {error}",
                self.kubectl.display(),
                self.name
            ),
        }
    }
}

/// Cluster of its own, started with `tests/cluster/up NAME` and removed with `tests/cluster/down
/// NAME` when dropped. For tests that break the cluster, such as stopping the API server.
pub struct OwnCluster {
    pub name: String,
    pub cluster: TestCluster,
}

impl OwnCluster {
    /// Starts (or reuses) cluster `name`, suffixed with the test process's pid so that two test
    /// runs side by side never share one. The first start may build the components, which
    /// takes tens of minutes on a cold cache.
    pub async fn start(name: &str) -> Result<Self> {
        let name = &format!("{name}-{}", std::process::id());
        let output = run_cluster_script("up", &[name]).await?;
        let kubeconfig = output
            .lines()
            .last()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .ok_or_else(|| anyhow!("tests/cluster/up {name} printed no kubeconfig path"))?;
        // From here on, a failure still removes the cluster: the guard's Drop runs `down`.
        let guard = DownOnDrop(name.to_owned());
        let cluster = TestCluster::connect(Path::new(kubeconfig)).await?;
        std::mem::forget(guard);
        Ok(Self {
            name: name.to_owned(),
            cluster,
        })
    }

    /// Runs `tests/cluster/apiserver NAME ACTION`, where ACTION is stop, start or restart.
    pub async fn apiserver(&self, action: &str) -> Result<()> {
        run_cluster_script("apiserver", &[&self.name, action]).await?;
        Ok(())
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        run_down(&self.name);
    }
}

struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        run_down(&self.0);
    }
}

fn run_down(name: &str) {
    let script = cluster_script("down");
    match Command::new(&script).arg(name).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "{} {name} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => eprintln!("failed to run {} {name}: {error}", script.display()),
    }
}

/// Awaits `future` for at most `timeout`. The error names `description`, the thing awaited.
pub async fn wait_for<T, E>(
    description: &str,
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            Err(anyhow::Error::new(error).context(format!("failed waiting for {description}")))
        }
        Err(_) => bail!("timed out after {timeout:?} waiting for {description}"),
    }
}

/// Waits until object `name` of `api` satisfies `condition`, and returns the object (or `None` if
/// the condition holds for a missing object).
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    description: &str,
    timeout: Duration,
    condition: impl wait::Condition<K>,
) -> Result<Option<K>>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    wait_for(
        &format!("{description} ({name})"),
        timeout,
        await_condition(api.clone(), name, condition),
    )
    .await
}

/// Creates `sandbox` and waits until it is Ready and its Pod exists. Returns both.
pub async fn create_ready_sandbox(
    namespace: &TestNamespace,
    sandbox: &Sandbox,
) -> Result<(Sandbox, Pod)> {
    let sandboxes = namespace.api::<Sandbox>();
    let name = sandbox
        .metadata
        .name
        .clone()
        .context("sandbox without a name")?;
    sandboxes
        .create(&PostParams::default(), sandbox)
        .await
        .with_context(|| format!("failed to create sandbox {name}"))?;
    let ready = wait_until(
        &sandboxes,
        &name,
        "sandbox to become Ready",
        WAIT_TIMEOUT,
        |sandbox: Option<&Sandbox>| sandbox.is_some_and(Sandbox::is_ready),
    )
    .await?
    .context("sandbox vanished while becoming Ready")?;
    let pod = namespace
        .api::<Pod>()
        .get(&name)
        .await
        .with_context(|| format!("failed to get pod {name} of a Ready sandbox"))?;
    Ok((ready, pod))
}

fn unique_namespace_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let suffix = format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut prefix: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // A namespace name is a DNS label: at most 63 characters.
    prefix.truncate(62 - suffix.len().min(40));
    let name = format!("{}-{suffix}", prefix.trim_matches('-'));
    name.trim_start_matches('-').to_owned()
}

/// Reads the `cluster.env` file that `tests/cluster/up` writes beside the kubeconfig: ports, pids
/// and paths of the cluster's components, as `KEY=value` lines.
pub fn read_cluster_env(kubeconfig: &Path) -> Result<BTreeMap<String, String>> {
    let env_file = kubeconfig.with_file_name("cluster.env");
    let contents = std::fs::read_to_string(&env_file)
        .with_context(|| format!("failed to read {}", env_file.display()))?;
    let entries = contents
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Ok(entries)
}

/// Finds kubectl: `SANDGATE_TEST_KUBECTL`, else the `KUBECTL` entry of the cluster's
/// `cluster.env`, else `kubectl` from PATH.
fn kubectl_for(kubeconfig: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("SANDGATE_TEST_KUBECTL") {
        return PathBuf::from(path);
    }
    if let Ok(entries) = read_cluster_env(kubeconfig)
        && let Some(path) = entries.get("KUBECTL")
    {
        return PathBuf::from(path);
    }
    PathBuf::from("kubectl")
}

fn cluster_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cluster")
        .join(name)
}

/// Runs script `tests/cluster/NAME` with `args` on a blocking thread and returns its stdout. Its
/// stderr (progress lines) goes to the test's stderr.
async fn run_cluster_script(name: &str, args: &[&str]) -> Result<String> {
    let script = cluster_script(name);
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let description = format!("{} {}", script.display(), args.join(" "));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&script)
            .args(&args)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await
    .context("cluster script thread panicked")?
    .with_context(|| format!("failed to run {description}"))?;
    if !output.status.success() {
        bail!("{description} failed with {}", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("{description} printed invalid UTF-8"))
}
