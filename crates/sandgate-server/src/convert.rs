//! Conversions between protobuf messages and core records, with request validation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sandgate_core::duration;
use sandgate_core::validate::{self, ValidationError};
use sandgate_core::{Phase, RemovalPath, SandboxId, SandboxRecord, SandboxSpec, Tombstone, labels};
use sandgate_proto::v1 as pb;

/// A request's way of naming one sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// By name within a workspace.
    Name {
        /// Workspace, already defaulted.
        workspace: String,
        /// Name.
        name: String,
    },
    /// By id.
    Id(SandboxId),
}

impl Target {
    /// Describes the target for messages: `sandbox "web" in workspace "default"`.
    pub fn describe(&self) -> String {
        match self {
            Target::Name { workspace, name } => {
                format!("sandbox {name:?} in workspace {workspace:?}")
            }
            Target::Id(id) => format!("sandbox with id {id}"),
        }
    }
}

/// Reads a [`pb::SandboxRef`] in field `field`.
///
/// # Errors
/// Returns [`ValidationError`] if the target is missing or malformed.
pub fn target(field: &str, target: Option<&pb::SandboxRef>) -> Result<Target, ValidationError> {
    let missing = || ValidationError::new(field, "a target is required: give a name or an id");
    let target = target.ok_or_else(missing)?;
    match target.target.as_ref().ok_or_else(missing)? {
        pb::sandbox_ref::Target::Name(name) => {
            let workspace = validate::workspace(&format!("{field}.workspace"), &target.workspace)?;
            validate::name(&format!("{field}.name"), name)?;
            Ok(Target::Name {
                workspace,
                name: name.clone(),
            })
        }
        pb::sandbox_ref::Target::Id(id) => Ok(Target::Id(SandboxId::parse_field(
            &format!("{field}.id"),
            id,
        )?)),
    }
}

/// Converts an optional protobuf duration in `field`.
///
/// # Errors
/// Returns [`ValidationError`] if the duration is negative or malformed.
pub fn duration_field(
    field: &str,
    value: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, ValidationError> {
    let Some(value) = value else {
        return Ok(None);
    };
    // A google.protobuf.Duration is valid only with nanos in (-1e9, 1e9) and of the same sign as
    // seconds. No field of this API takes a negative duration, so nanos must be in [0, 1e9).
    let valid = value.seconds >= 0 && (0..1_000_000_000).contains(&value.nanos);
    if !valid {
        return Err(ValidationError::new(
            field,
            format!(
                "invalid duration of {} s and {} ns: use a non-negative duration with nanos from 0 \
                 to 999999999",
                value.seconds, value.nanos
            ),
        ));
    }
    Ok(Some(Duration::new(
        value.seconds as u64,
        value.nanos as u32,
    )))
}

/// Maximum number of labels on one sandbox.
pub const MAX_LABELS: usize = 64;

/// Validates a create request and builds its PROVISIONING record.
///
/// # Errors
/// Returns [`ValidationError`] naming the first bad field.
pub fn new_record(
    request: &pb::CreateSandboxRequest,
    now: SystemTime,
) -> Result<SandboxRecord, ValidationError> {
    let workspace = validate::workspace("workspace", &request.workspace)?;
    validate::name("name", &request.name)?;
    let labels: BTreeMap<String, String> = request.labels.clone().into_iter().collect();
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::new(
            "labels",
            format!(
                "{} labels given, more than the maximum of {MAX_LABELS}",
                labels.len()
            ),
        ));
    }
    labels::validate("labels", &labels)?;

    let spec = request.spec.clone().unwrap_or_default();
    validate::argv("spec.command", &spec.command)?;
    validate::argv("spec.args", &spec.args)?;
    let env: BTreeMap<String, String> = spec.env.into_iter().collect();
    validate::env("spec.env", &env)?;
    validate::spec_size("spec", &spec.command, &spec.args, &env)?;
    let grace_period = duration_field("spec.grace_period", spec.grace_period.as_ref())?
        .unwrap_or(duration::DEFAULT_GRACE_PERIOD);
    duration::grace_period("spec.grace_period", grace_period)?;
    let image = Some(spec.image).filter(|image| !image.is_empty());
    if image
        .as_ref()
        .is_some_and(|i| i.trim() != i || i.contains(char::is_whitespace))
    {
        return Err(ValidationError::new(
            "spec.image",
            format!(
                "invalid image {:?}: an image reference has no spaces",
                image.unwrap()
            ),
        ));
    }

    let spec = SandboxSpec {
        command: spec.command,
        args: spec.args,
        env,
        grace_period,
        image,
    };
    Ok(SandboxRecord::new(
        workspace,
        request.name.clone(),
        labels,
        spec,
        now,
    ))
}

/// Converts a time to its protobuf form.
pub fn timestamp(time: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(time))
}

/// Returns the protobuf value of a phase.
pub fn phase_to_proto(phase: Phase) -> pb::SandboxPhase {
    match phase {
        Phase::Provisioning => pb::SandboxPhase::Provisioning,
        Phase::Ready => pb::SandboxPhase::Ready,
        Phase::Exited => pb::SandboxPhase::Exited,
        Phase::Error => pb::SandboxPhase::Error,
        Phase::Unknown => pb::SandboxPhase::Unknown,
        Phase::Deleting => pb::SandboxPhase::Deleting,
    }
}

/// Returns the core phase of a protobuf phase value, `None` for UNSPECIFIED or unknown values.
pub fn phase_from_proto(value: i32) -> Option<Phase> {
    match pb::SandboxPhase::try_from(value).ok()? {
        pb::SandboxPhase::Unspecified => None,
        pb::SandboxPhase::Provisioning => Some(Phase::Provisioning),
        pb::SandboxPhase::Ready => Some(Phase::Ready),
        pb::SandboxPhase::Exited => Some(Phase::Exited),
        pb::SandboxPhase::Error => Some(Phase::Error),
        pb::SandboxPhase::Unknown => Some(Phase::Unknown),
        pb::SandboxPhase::Deleting => Some(Phase::Deleting),
    }
}

/// Converts a record to its API form.
pub fn sandbox(record: &SandboxRecord) -> pb::Sandbox {
    let spec = &record.spec;
    pb::Sandbox {
        id: record.id.to_string(),
        workspace: record.workspace.clone(),
        name: record.name.clone(),
        labels: record.labels.clone().into_iter().collect(),
        spec: Some(pb::SandboxSpec {
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone().into_iter().collect(),
            grace_period: prost_types::Duration::try_from(spec.grace_period).ok(),
            image: spec.image.clone().unwrap_or_default(),
        }),
        phase: phase_to_proto(record.phase) as i32,
        phase_reason: record.phase_reason.clone(),
        reason_since: timestamp(record.reason_since),
        created_at: timestamp(record.created_at),
        deletion_requested_at: record
            .deletion
            .as_ref()
            .and_then(|deletion| timestamp(deletion.requested_at)),
        exit_code: record.exit_code,
        driver: Some(pb::DriverDetails {
            driver: record.driver.driver.clone(),
            attributes: record.driver.attributes.clone().into_iter().collect(),
        }),
        revision: record.revision,
        kill_at: record
            .deletion
            .as_ref()
            .and_then(|deletion| timestamp(deletion.kill_at)),
    }
}

/// Reason shown on the sandbox of a DELETED response built from a tombstone.
pub const REMOVED_REASON: &str = "removal confirmed";

/// Converts a tombstone to its API form.
pub fn tombstone(tombstone: &Tombstone) -> pb::Tombstone {
    let path = match tombstone.path {
        RemovalPath::Request => pb::RemovalPath::Request,
        RemovalPath::Reconciler => pb::RemovalPath::Reconciler,
        RemovalPath::Force => pb::RemovalPath::Force,
    };
    pb::Tombstone {
        id: tombstone.id.to_string(),
        workspace: tombstone.workspace.clone(),
        name: tombstone.name.clone(),
        deletion_requested_at: timestamp(tombstone.deletion_requested_at),
        deleted_at: timestamp(tombstone.deleted_at),
        path: path as i32,
    }
}

/// Builds the last known record of a removed sandbox from its tombstone, which keeps only its
/// identity and deletion times.
pub fn sandbox_from_tombstone(tombstone: &Tombstone) -> pb::Sandbox {
    pb::Sandbox {
        id: tombstone.id.to_string(),
        workspace: tombstone.workspace.clone(),
        name: tombstone.name.clone(),
        phase: pb::SandboxPhase::Deleting as i32,
        phase_reason: REMOVED_REASON.to_string(),
        reason_since: timestamp(tombstone.deleted_at),
        deletion_requested_at: timestamp(tombstone.deletion_requested_at),
        ..pb::Sandbox::default()
    }
}

/// Builds the status detail of a deletion that is still under way.
pub fn deletion_status(record: &SandboxRecord) -> pb::DeletionStatus {
    pb::DeletionStatus {
        id: record.id.to_string(),
        phase: phase_to_proto(record.phase) as i32,
        phase_reason: record.phase_reason.clone(),
        reason_since: timestamp(record.reason_since),
    }
}
