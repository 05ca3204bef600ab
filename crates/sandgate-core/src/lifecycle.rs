//! The lifecycle state machine. Every change to a record is computed here, and the store writes
//! only what these functions return, so the rules below hold for every path into the store.
//!
//! # Invariants
//! 1. Live phases (PROVISIONING, READY, EXITED, ERROR, UNKNOWN) follow the driver's
//!    observations, in any order.
//! 2. Any live phase may go to DELETING. DELETING is sticky: no observation moves it back.
//! 3. A record leaves DELETING only by removal, and only on an observation that the compute is
//!    gone. Removal leaves a tombstone.
//! 4. `deletion.requested_at` is set once. `deletion.kill_at` only moves earlier, so a later
//!    request can escalate a deletion but never slow it down.
//! 5. `reason_since` changes exactly when `phase_reason` changes.

use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::record::{Deletion, Phase, RemovalPath, SandboxRecord, Tombstone};

/// The state of a sandbox's workload that the driver reports while some compute exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveStatus {
    /// Starting, with the reason (for example "pod unschedulable").
    Provisioning(String),
    /// Running, with a short description ("command running").
    Ready(String),
    /// The command ended with this status.
    Exited(i32),
    /// Cannot be started or kept running, with the reason.
    Error(String),
    /// Cannot be observed right now, with the reason.
    Unknown(String),
}

/// One observation of a sandbox's compute by its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Some compute exists. While a deletion runs, `terminating` names what is still present.
    Present {
        /// The workload's status.
        status: LiveStatus,
        /// The object a deletion still waits for, once the driver has noticed one under way.
        terminating: Option<String>,
    },
    /// Nothing of the sandbox remains. `exit_code` is the command's recorded status, if any.
    Gone {
        /// Exit status the command left behind.
        exit_code: Option<i32>,
    },
}

/// A change that the state machine does not allow.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransitionError {
    /// DELETING is sticky.
    #[error("sandbox {id} is DELETING and cannot move to {to}")]
    LeavesDeleting {
        /// Sandbox id.
        id: String,
        /// Requested phase.
        to: Phase,
    },
    /// Only a DELETING record can be removed.
    #[error("sandbox {id} is {phase}, not DELETING, so it cannot be removed")]
    RemovedWhileLive {
        /// Sandbox id.
        id: String,
        /// Its phase.
        phase: Phase,
    },
}

/// Checks a phase transition; this is the only place that does.
///
/// # Errors
/// Returns [`TransitionError::LeavesDeleting`] for any move out of DELETING.
pub fn check_transition(record: &SandboxRecord, to: Phase) -> Result<(), TransitionError> {
    if record.phase == Phase::Deleting && to != Phase::Deleting {
        return Err(TransitionError::LeavesDeleting {
            id: record.id.to_string(),
            to,
        });
    }
    Ok(())
}

/// The result of applying an observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to write.
    Unchanged,
    /// Write this record.
    Updated(SandboxRecord),
    /// Remove the record and keep this tombstone.
    Removed(Tombstone),
}

/// Reason shown while a deletion waits for the driver's first report.
pub const DELETION_STARTED_REASON: &str = "deletion requested; stopping the sandbox";
/// Reason for a live sandbox whose compute vanished without a delete through sandgate.
pub const VANISHED_REASON: &str = "compute vanished without a delete through sandgate";

/// Sets phase and reason, moving `reason_since` only when the reason text changes.
fn set_phase(record: &mut SandboxRecord, phase: Phase, reason: String, now: SystemTime) {
    record.phase = phase;
    if record.phase_reason != reason {
        record.phase_reason = reason;
        record.reason_since = now;
    }
}

/// Applies one driver observation to a record.
///
/// `path` is how a removal would be confirmed, if this observation completes a deletion; a forced
/// deletion is recorded as [`RemovalPath::Force`] whatever `path` is.
pub fn apply_observation(
    record: &SandboxRecord,
    observed: &Observed,
    path: RemovalPath,
    now: SystemTime,
) -> Change {
    let mut next = record.clone();

    if record.is_deleting() {
        match observed {
            Observed::Gone { exit_code } => {
                if exit_code.is_some() {
                    next.exit_code = *exit_code;
                }
                return confirm_removal(&next, path, now)
                    .map(Change::Removed)
                    .unwrap_or(Change::Unchanged);
            }
            Observed::Present {
                terminating: Some(reason),
                status,
            } => {
                if let LiveStatus::Exited(code) = status {
                    next.exit_code = Some(*code);
                }
                set_phase(&mut next, Phase::Deleting, reason.clone(), now);
            }
            Observed::Present {
                terminating: None, ..
            } => {}
        }
    } else {
        let (phase, reason, exit_code) = match observed {
            Observed::Present { status, .. } => live_phase(status),
            Observed::Gone {
                exit_code: Some(code),
            } => (Phase::Exited, exited_reason(*code), Some(*code)),
            Observed::Gone { exit_code: None } if record.phase == Phase::Exited => {
                return Change::Unchanged;
            }
            Observed::Gone { exit_code: None } => (Phase::Error, VANISHED_REASON.to_string(), None),
        };
        if check_transition(record, phase).is_err() {
            return Change::Unchanged;
        }
        if exit_code.is_some() {
            next.exit_code = exit_code;
        }
        set_phase(&mut next, phase, reason, now);
    }

    if next == *record {
        Change::Unchanged
    } else {
        Change::Updated(next)
    }
}

fn live_phase(status: &LiveStatus) -> (Phase, String, Option<i32>) {
    match status {
        LiveStatus::Provisioning(reason) => (Phase::Provisioning, reason.clone(), None),
        LiveStatus::Ready(reason) => (Phase::Ready, reason.clone(), None),
        LiveStatus::Exited(code) => (Phase::Exited, exited_reason(*code), Some(*code)),
        LiveStatus::Error(reason) => (Phase::Error, reason.clone(), None),
        LiveStatus::Unknown(reason) => (Phase::Unknown, reason.clone(), None),
    }
}

/// Returns the reason of an EXITED sandbox.
pub fn exited_reason(code: i32) -> String {
    if code < 0 {
        format!("command killed by signal {}", -code)
    } else {
        format!("command exited with status {code}")
    }
}

/// Parameters of one delete request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteParams {
    /// Grace period for this request; `None` uses the sandbox's own.
    pub grace_period: Option<Duration>,
    /// Kill at once.
    pub force: bool,
}

/// The effect of a delete request on a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletionDecision {
    /// The record enters DELETING; write it, then start the deletion.
    Started(SandboxRecord),
    /// A deletion was under way and this request makes it faster; write it, then tell the driver.
    Escalated(SandboxRecord),
    /// A deletion was under way and this request changes nothing; join it.
    Joined,
}

/// Applies a delete request to a record.
pub fn request_deletion(
    record: &SandboxRecord,
    params: DeleteParams,
    now: SystemTime,
) -> DeletionDecision {
    let grace = if params.force {
        Duration::ZERO
    } else {
        params.grace_period.unwrap_or(record.spec.grace_period)
    };
    let kill_at = now + grace;

    let mut next = record.clone();
    match &record.deletion {
        Some(deletion) if record.is_deleting() => {
            let earlier = kill_at < deletion.kill_at;
            let newly_forced = params.force && !deletion.force;
            if !earlier && !newly_forced {
                return DeletionDecision::Joined;
            }
            next.deletion = Some(Deletion {
                requested_at: deletion.requested_at,
                kill_at: deletion.kill_at.min(kill_at),
                force: deletion.force || params.force,
            });
            DeletionDecision::Escalated(next)
        }
        _ => {
            next.deletion = Some(Deletion {
                requested_at: now,
                kill_at,
                force: params.force,
            });
            set_phase(
                &mut next,
                Phase::Deleting,
                DELETION_STARTED_REASON.to_string(),
                now,
            );
            DeletionDecision::Started(next)
        }
    }
}

/// Builds the tombstone of a DELETING record whose compute is confirmed gone.
///
/// # Errors
/// Returns [`TransitionError::RemovedWhileLive`] unless the record is DELETING.
pub fn confirm_removal(
    record: &SandboxRecord,
    path: RemovalPath,
    now: SystemTime,
) -> Result<Tombstone, TransitionError> {
    let Some(deletion) = record.deletion.as_ref().filter(|_| record.is_deleting()) else {
        return Err(TransitionError::RemovedWhileLive {
            id: record.id.to_string(),
            phase: record.phase,
        });
    };
    let path = if deletion.force {
        RemovalPath::Force
    } else {
        path
    };
    Ok(Tombstone {
        id: record.id,
        workspace: record.workspace.clone(),
        name: record.name.clone(),
        deletion_requested_at: deletion.requested_at,
        deleted_at: now,
        path,
    })
}

#[cfg(test)]
mod tests;
