//! One gateway under test on either driver, so that a reliability scenario is written once and
//! run on both. A [`Target`] creates sandboxes that honour their grace period, and its
//! [`Probe`] checks that a sandbox's compute is gone and finds compute that has no record.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use sandgate_proto::v1 as pb;

use crate::api::{self, Client};
use crate::cluster::{Sandbox, TestCluster, TestNamespace};
use crate::gateway::Gateway;
use crate::kube_gateway::{self, GatewayKubeconfig};
use crate::processes;

/// Label that the Kubernetes driver puts on every object it creates.
pub const ID_LABEL: &str = "sandgate.dev/sandbox-id";

/// Inspects the compute of a [`Target`] directly, not through the gateway.
#[derive(Clone)]
pub enum Probe {
    /// Processes of a process-driver data directory.
    Process { data_dir: PathBuf },
    /// Sandboxes and Pods of a test namespace.
    Kubernetes {
        sandboxes: Api<Sandbox>,
        pods: Api<Pod>,
    },
}

impl Probe {
    /// Returns a description of whatever of sandbox `id` still runs or exists, or `None` when
    /// its compute is gone. On the process driver these are live processes, found through the
    /// sandbox's handle file and its cgroup. On the Kubernetes driver they are the Sandbox named
    /// after the id, the Pod of that name, and any Pod with the id label.
    pub async fn compute_left(&self, id: &str) -> Option<String> {
        let mut left = Vec::new();
        match self {
            Self::Process { data_dir } => {
                let pids = processes::remaining_processes(data_dir, id);
                if !pids.is_empty() {
                    left.push(format!("processes {pids:?}"));
                }
            }
            Self::Kubernetes { sandboxes, pods } => {
                let name = kube_gateway::object_name(id);
                match sandboxes.get_opt(&name).await {
                    Ok(None) => {}
                    Ok(Some(_)) => left.push(format!("Sandbox {name}")),
                    Err(error) => left.push(format!("Sandbox {name} unreadable: {error}")),
                }
                match pods.get_opt(&name).await {
                    Ok(None) => {}
                    Ok(Some(_)) => left.push(format!("Pod {name}")),
                    Err(error) => left.push(format!("Pod {name} unreadable: {error}")),
                }
                let selector = format!("{ID_LABEL}={id}");
                match pods.list(&ListParams::default().labels(&selector)).await {
                    Ok(list) => left.extend(
                        list.items
                            .iter()
                            .map(|pod| pod.name_any())
                            .filter(|pod| *pod != name)
                            .map(|pod| format!("Pod {pod}")),
                    ),
                    Err(error) => left.push(format!("Pods unreadable: {error}")),
                }
            }
        }
        (!left.is_empty()).then(|| left.join(", "))
    }

    /// Asserts that the compute of sandbox `id` is gone.
    pub async fn assert_compute_gone(&self, id: &str) {
        if let Some(left) = self.compute_left(id).await {
            panic!("sandbox {id} was confirmed deleted, but {left} is left");
        }
    }

    /// Returns the ids of sandboxes whose compute exists: those with live processes, or those
    /// with a Sandbox or Pod carrying the id label.
    pub async fn compute_ids(&self) -> BTreeSet<String> {
        match self {
            Self::Process { data_dir } => processes::ids_with_processes(data_dir),
            Self::Kubernetes { sandboxes, pods } => {
                let params = ListParams::default().labels(ID_LABEL);
                let mut ids: BTreeSet<String> = sandboxes
                    .list(&params)
                    .await
                    .expect("list Sandboxes")
                    .items
                    .iter()
                    .filter_map(|sandbox| sandbox.labels().get(ID_LABEL).cloned())
                    .collect();
                ids.extend(
                    pods.list(&params)
                        .await
                        .expect("list Pods")
                        .items
                        .iter()
                        .filter_map(|pod| pod.labels().get(ID_LABEL).cloned()),
                );
                ids
            }
        }
    }
}

/// The driver a [`Target`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    Process,
    Kubernetes,
}

impl DriverKind {
    /// Returns the name that `sandgate serve --driver` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Kubernetes => "kubernetes",
        }
    }
}

struct KubeParts {
    namespace: TestNamespace,
    _kubeconfig: GatewayKubeconfig,
}

/// A gateway under test, with what is needed to inspect its compute. The gateway is declared
/// first, so it is killed before the test namespace is deleted.
pub struct Target {
    /// The gateway process.
    pub gateway: Gateway,
    kube: Option<KubeParts>,
}

impl Target {
    /// Starts a gateway on the process driver with extra `serve` arguments.
    pub fn process(args: &[&str]) -> Self {
        let gateway = Gateway::start_with(crate::gateway::GatewayOptions {
            args: args.iter().map(|arg| arg.to_string()).collect(),
            env: Vec::new(),
        });
        Self {
            gateway,
            kube: None,
        }
    }

    /// Starts a gateway on the Kubernetes driver in a new namespace of the test cluster named by
    /// `SANDGATE_TEST_KUBECONFIG`, or returns `None` (after saying why) when it is unset.
    pub async fn kubernetes(test: &str, args: &[&str]) -> Option<Self> {
        let cluster = TestCluster::from_env()
            .await
            .expect("connect to the test cluster")?;
        Some(Self::kubernetes_on(&cluster, test, args).await)
    }

    /// Starts a gateway on the Kubernetes driver in a new namespace of `cluster`.
    pub async fn kubernetes_on(cluster: &TestCluster, test: &str, args: &[&str]) -> Self {
        let namespace = cluster.namespace(test).await.expect("create a namespace");
        let kubeconfig =
            kube_gateway::service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
                .await
                .expect("write the gateway's kubeconfig");
        let gateway = kube_gateway::start_gateway(&kubeconfig.path, args, &[]).await;
        Self {
            gateway,
            kube: Some(KubeParts {
                namespace,
                _kubeconfig: kubeconfig,
            }),
        }
    }

    /// Returns the driver the gateway runs on.
    pub fn driver(&self) -> DriverKind {
        if self.kube.is_some() {
            DriverKind::Kubernetes
        } else {
            DriverKind::Process
        }
    }

    /// Returns the test namespace, on the Kubernetes driver.
    pub fn namespace(&self) -> Option<&TestNamespace> {
        self.kube.as_ref().map(|kube| &kube.namespace)
    }

    /// Returns a new connection to the gateway.
    pub async fn client(&self) -> Client {
        self.gateway.client().await
    }

    /// Builds a create request for a sandbox that keeps running through the polite stop signal,
    /// so that its deletion takes the whole grace period.
    pub fn create_request(&self, name: &str, grace: Duration) -> pb::CreateSandboxRequest {
        match self.driver() {
            DriverKind::Process => {
                api::create_request(name, &["sh", "-c", "trap '' TERM; sleep 1000"], grace)
            }
            // kwok ends a deleted Pod when its grace period is over.
            DriverKind::Kubernetes => kube_gateway::create_request(name, grace),
        }
    }

    /// Creates a sandbox with [`Target::create_request`].
    pub async fn create(&self, client: &mut Client, name: &str, grace: Duration) -> pb::Sandbox {
        client
            .create_sandbox(self.create_request(name, grace))
            .await
            .unwrap_or_else(|status| panic!("create {name} failed: {status}"))
            .into_inner()
    }

    /// Waits until sandbox `id` is READY, for up to 60 s.
    pub async fn wait_ready(&self, client: &mut Client, id: &str) -> pb::Sandbox {
        kube_gateway::wait_ready(client, id).await
    }

    /// Kills the gateway with SIGKILL and starts it again on the same data directory.
    pub fn crash_and_restart(&mut self) {
        self.gateway.kill();
        self.gateway.restart();
    }

    /// Returns a handle that inspects the compute, for use in spawned tasks.
    pub fn probe(&self) -> Probe {
        match &self.kube {
            None => Probe::Process {
                data_dir: self.gateway.data_dir().to_path_buf(),
            },
            Some(kube) => Probe::Kubernetes {
                sandboxes: kube.namespace.api::<Sandbox>(),
                pods: kube.namespace.api::<Pod>(),
            },
        }
    }

    /// Returns what of sandbox `id` still runs or exists; see [`Probe::compute_left`].
    pub async fn compute_left(&self, id: &str) -> Option<String> {
        self.probe().compute_left(id).await
    }

    /// Asserts that the compute of sandbox `id` is gone.
    pub async fn assert_compute_gone(&self, id: &str) {
        self.probe().assert_compute_gone(id).await;
    }

    /// Returns the ids of the sandboxes whose compute exists; see [`Probe::compute_ids`].
    pub async fn compute_ids(&self) -> BTreeSet<String> {
        self.probe().compute_ids().await
    }

    /// Returns every record of the default workspace, reading all pages.
    pub async fn records(&self, client: &mut Client) -> Vec<pb::Sandbox> {
        let mut records = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_sandboxes(pb::ListSandboxesRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("list sandboxes")
                .into_inner();
            records.extend(page.sandboxes);
            if page.next_page_token.is_empty() {
                return records;
            }
            page_token = page.next_page_token;
        }
    }
}
