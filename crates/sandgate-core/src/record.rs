//! The durable record of a sandbox and the tombstone it leaves when removed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::SandboxId;

/// Workspace of requests that name none.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Lifecycle phase of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// The record exists and the compute is being started.
    Provisioning,
    /// The command runs.
    Ready,
    /// The command ended on its own; the record stays until deleted.
    Exited,
    /// The sandbox could not be started or kept running.
    Error,
    /// The driver cannot observe the sandbox right now.
    Unknown,
    /// A deletion is recorded and in progress; left only by removal.
    Deleting,
}

impl Phase {
    /// Returns whether the phase is one of the live phases, which follow the driver's observations.
    pub fn is_live(self) -> bool {
        self != Phase::Deleting
    }

    /// Returns the phase's name as the API and the CLI show it ("READY").
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "PROVISIONING",
            Phase::Ready => "READY",
            Phase::Exited => "EXITED",
            Phase::Error => "ERROR",
            Phase::Unknown => "UNKNOWN",
            Phase::Deleting => "DELETING",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The command a sandbox runs, and how it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Program and leading arguments, argv[0] first.
    pub command: Vec<String>,
    /// Further arguments appended after `command`.
    pub args: Vec<String>,
    /// Environment of the command.
    pub env: BTreeMap<String, String>,
    /// Time between the stop signal and the forced kill.
    pub grace_period: Duration,
    /// Container image, for drivers that run images.
    pub image: Option<String>,
}

impl SandboxSpec {
    /// Returns the full argument vector: `command` followed by `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// Facts the driver recorded about a sandbox's compute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverDetails {
    /// Name of the driver, such as "process".
    pub driver: String,
    /// Driver-specific values, such as the supervisor pid or an object UID.
    pub attributes: BTreeMap<String, String>,
}

/// The path by which a removal was confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalPath {
    /// A delete request, confirmed by the driver's observation.
    Request,
    /// A reconciler pass.
    Reconciler,
    /// A forced deletion.
    Force,
}

impl RemovalPath {
    /// Returns the path's name as logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalPath::Request => "request",
            RemovalPath::Reconciler => "reconciler",
            RemovalPath::Force => "force",
        }
    }
}

/// A recorded deletion: when it was requested and how hard it pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// When the first delete request was committed. Never changes afterwards.
    pub requested_at: SystemTime,
    /// When whatever still runs gets killed. A later request can only move it earlier.
    pub kill_at: SystemTime,
    /// Whether any request asked for force.
    pub force: bool,
}

/// The durable record of one sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Server-assigned id.
    pub id: SandboxId,
    /// Workspace the name is unique in.
    pub workspace: String,
    /// User-facing name.
    pub name: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// What runs.
    pub spec: SandboxSpec,
    /// Current phase.
    pub phase: Phase,
    /// Stable sentence saying why the sandbox is in its phase.
    pub phase_reason: String,
    /// When `phase_reason` last changed.
    pub reason_since: SystemTime,
    /// When the record was committed.
    pub created_at: SystemTime,
    /// Exit status of the command once it ended; negative for a signal.
    pub exit_code: Option<i32>,
    /// Driver details; `driver` is empty until the driver has started the compute.
    pub driver: DriverDetails,
    /// Set once the record entered DELETING.
    pub deletion: Option<Deletion>,
    /// Store revision of the last change.
    pub revision: u64,
}

impl SandboxRecord {
    /// Creates a PROVISIONING record. The store assigns the revision on insert.
    pub fn new(
        workspace: String,
        name: String,
        labels: BTreeMap<String, String>,
        spec: SandboxSpec,
        now: SystemTime,
    ) -> Self {
        Self {
            id: SandboxId::new_random(),
            workspace,
            name,
            labels,
            spec,
            phase: Phase::Provisioning,
            phase_reason: "starting the sandbox".to_string(),
            reason_since: now,
            created_at: now,
            exit_code: None,
            driver: DriverDetails::default(),
            deletion: None,
            revision: 0,
        }
    }

    /// Returns whether the record is DELETING.
    pub fn is_deleting(&self) -> bool {
        self.phase == Phase::Deleting
    }

    /// Returns the workspace-qualified name, for logs and messages ("team-a/web").
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.workspace, self.name)
    }
}

/// The record kept of a removed sandbox for the retention period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Id of the removed sandbox.
    pub id: SandboxId,
    /// Its workspace.
    pub workspace: String,
    /// Its name, which is free again.
    pub name: String,
    /// When its deletion was requested.
    pub deletion_requested_at: SystemTime,
    /// When the removal was confirmed.
    pub deleted_at: SystemTime,
    /// The path by which the removal was confirmed.
    pub path: RemovalPath,
}
