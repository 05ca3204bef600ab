//! The lifecycle core of sandgate: sandbox records, request validation and the state machine
//! that every store write goes through. Nothing here performs I/O.

pub mod duration;
pub mod id;
pub mod labels;
pub mod lifecycle;
pub mod record;
pub mod validate;

pub use id::SandboxId;
pub use lifecycle::{DeleteParams, DeletionDecision, LiveStatus, Observed, TransitionError};
pub use record::{
    DEFAULT_WORKSPACE, Deletion, DriverDetails, Phase, RemovalPath, SandboxRecord, SandboxSpec,
    Tombstone,
};
pub use validate::ValidationError;
