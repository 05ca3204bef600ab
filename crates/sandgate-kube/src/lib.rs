//! The Kubernetes driver of sandgate. Each sandbox is an `agents.x-k8s.io/v1beta1` Sandbox,
//! whose controller (agent-sandbox) creates its Pod.
//!
//! - Objects live in the gateway's one namespace and are named "sbx-" plus the sandbox id's 32
//!   hex digits. The Sandbox and its Pod carry the labels in [`objects`]: the sandbox id, the
//!   workspace, the name and the gateway instance. Every list and watch selects on the instance
//!   label, so two gateways with different `--instance` values can share a namespace.
//! - Watchers on Sandboxes and on Pods feed an in-memory view and send an observation for every
//!   sandbox whose state may have changed. After each re-list, objects missing from the new list
//!   count as deleted. `observe` and `list` read fresh from the API server.
//! - A sandbox is reported gone only when the Sandbox with the recorded UID no longer exists and
//!   no Pod carrying its id label or owned by that UID exists.

mod driver;
mod errors;
pub mod objects;
pub mod observe;
mod state;
mod watch;

use std::path::PathBuf;

pub use driver::KubeDriver;

/// Name of the driver, as recorded in each sandbox's driver details.
pub const DRIVER_NAME: &str = "kubernetes";

/// Gateway instance used when none is given.
pub const DEFAULT_INSTANCE: &str = "default";

/// Settings of the Kubernetes driver.
#[derive(Clone, Debug, Default)]
pub struct KubeDriverConfig {
    /// Kubeconfig to use. `None` uses the usual lookup: `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster ServiceAccount.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of every object. `None` uses the kubeconfig context's namespace, else
    /// "default".
    pub namespace: Option<String>,
    /// Value of the instance label on every object this gateway creates and reads.
    pub instance: String,
}
