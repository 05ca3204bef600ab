//! Fault hooks that exist only for tests: with `SANDGATE_TEST_FAULT` set to a hook's name, the
//! server aborts at that point, as a `kill -9` would stop it there. With
//! `SANDGATE_TEST_STORE_FAULT_FILE` set to a path, every store write fails while that file
//! exists, as on a full disk. Production deployments leave both variables unset, and then no
//! hook does anything.

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

/// Environment variable naming a file whose existence makes every store write fail.
pub const STORE_FAULT_FILE_VARIABLE: &str = "SANDGATE_TEST_STORE_FAULT_FILE";

/// Installs the store fault hook if `SANDGATE_TEST_STORE_FAULT_FILE` is set.
pub fn install_store_fault(store: &sandgate_store::Store) {
    let Some(path) = std::env::var_os(STORE_FAULT_FILE_VARIABLE) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    tracing::warn!(path = %path.display(), "Test fault hook armed: store writes fail while this file exists");
    store.set_fault_probe(Box::new(move || {
        path.exists()
            .then(|| "test fault: the store refuses writes while the fault file exists".to_string())
    }));
}
