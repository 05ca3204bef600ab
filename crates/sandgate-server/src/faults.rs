//! Fault hooks that exist only for tests: with `SANDGATE_TEST_FAULT` set to a hook's name, the
//! server aborts at that point, as a `kill -9` would stop it there. Production deployments leave
//! the variable unset, and then no hook does anything.

use std::sync::OnceLock;

/// Environment variable that arms one fault hook.
pub const FAULT_VARIABLE: &str = "SANDGATE_TEST_FAULT";

/// A point where the server can be made to crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After a new record is committed, before the driver starts its compute.
    AfterCreateCommit,
    /// After DELETING is committed, before the driver is asked to delete.
    AfterDeleteCommit,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::AfterCreateCommit => "abort-after-create-commit",
            Fault::AfterDeleteCommit => "abort-after-delete-commit",
        }
    }
}

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(FAULT_VARIABLE).ok())
        .as_deref()
}

/// Aborts the process if `fault` is the armed hook.
pub fn hit(fault: Fault) {
    if armed() == Some(fault.name()) {
        eprintln!(
            "{FAULT_VARIABLE}={}: aborting as a crash would",
            fault.name()
        );
        std::process::abort();
    }
}
