//! Sandbox ids: random (version 4) UUIDs assigned by the server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// The server-assigned id of a sandbox, stable for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(uuid::Uuid);

impl SandboxId {
    /// Creates a new random id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Returns the id's 32 lowercase hex digits, without hyphens.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }

    /// Parses the id in `field`, naming the field and the expected form on error.
    ///
    /// # Errors
    /// Returns [`ValidationError`] if `value` is not a UUID.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ValidationError> {
        value.parse().map_err(|_| {
            ValidationError::new(
                field,
                format!(
                    "invalid sandbox id {}: expected a UUID such as \
                     3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14",
                    crate::validate::quote(value)
                ),
            )
        })
    }
}

impl FromStr for SandboxId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(Self)
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
