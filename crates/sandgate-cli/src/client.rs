//! Connection to the gateway, and the translation of gRPC errors into one-line messages with the
//! exit code they end the command with.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use sandgate_proto::v1::sandbox_service_client::SandboxServiceClient;
use sandgate_proto::v1::{SandboxRef, sandbox_ref};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Exit code of a request that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of invalid arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the gateway cannot be reached or the connection is lost.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code of a wait that timed out.
pub const EXIT_TIMED_OUT: u8 = 4;

/// How long the first connection to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure that ends the command, with its message and exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Exit code of the command.
    pub code: u8,
    /// One-line message for stderr, without the "error: " prefix.
    pub message: String,
}

impl Failure {
    /// Creates a failure with exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }

    /// Creates a usage failure with exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {}

/// The sandbox a request is about, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A sandbox addressed by name within a workspace.
    Name {
        /// Workspace of the sandbox.
        workspace: String,
        /// Name of the sandbox.
        name: String,
    },
    /// A sandbox addressed by id.
    Id(String),
}

impl Target {
    /// Returns the target as the API's reference.
    pub fn to_ref(&self) -> SandboxRef {
        match self {
            Self::Name { workspace, name } => SandboxRef {
                workspace: workspace.clone(),
                target: Some(sandbox_ref::Target::Name(name.clone())),
            },
            Self::Id(id) => SandboxRef {
                workspace: String::new(),
                target: Some(sandbox_ref::Target::Id(id.clone())),
            },
        }
    }

    /// Returns the quoted label for result lines: the name, or the id when only the id is known.
    pub fn label(&self) -> String {
        match self {
            Self::Name { name, .. } => format!("{name:?}"),
            Self::Id(id) => id.clone(),
        }
    }

    /// Returns the message for a sandbox that does not exist.
    pub fn not_found(&self) -> String {
        match self {
            Self::Name { workspace, name } => {
                format!("sandbox {name:?} not found in workspace {workspace:?}")
            }
            Self::Id(id) => format!("sandbox with id {id} not found"),
        }
    }
}

/// A connected client of the gateway.
#[derive(Clone, Debug)]
pub struct Client {
    /// The generated gRPC client.
    pub rpc: SandboxServiceClient<Channel>,
    /// URL of the gateway, for messages.
    pub server: String,
}

/// Connects to the gateway at `server`.
///
/// # Errors
/// Returns a [`Failure`] with exit code 3 that names the server and the cause, such as
/// "connection refused".
pub async fn connect(server: &str) -> Result<Client, Failure> {
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|error| Failure::usage(format!("invalid server URL {server:?}: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| unreachable(server, &root_cause(&error)))?;
    Ok(Client {
        rpc: SandboxServiceClient::new(channel),
        server: server.to_string(),
    })
}

fn unreachable(server: &str, cause: &str) -> Failure {
    Failure {
        code: EXIT_UNREACHABLE,
        message: format!(
            "cannot reach sandgate at {server}: {cause}; is `sandgate serve` running?"
        ),
    }
}

/// Returns the innermost cause of a transport error in plain words.
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    if let Some(io_error) = current.downcast_ref::<io::Error>() {
        return match io_error.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::TimedOut => "connection timed out".to_string(),
            _ => io_error.to_string(),
        };
    }
    let text = current.to_string();
    if text.is_empty() {
        "connection failed".to_string()
    } else {
        text
    }
}

/// Returns whether `status` means the gateway went away or cannot be reached right now.
///
/// A gateway killed in the middle of a call resets the connection, which tonic reports as
/// UNKNOWN or INTERNAL with a transport error rather than as UNAVAILABLE.
pub fn is_unavailable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal => {
            let message = status.message();
            message.contains("transport error")
                || message.contains("h2 protocol error")
                || message.contains("connection reset")
                || message.contains("broken pipe")
        }
        _ => false,
    }
}

/// Returns why a connection was lost: the transport's innermost cause, such as "connection
/// refused", when the status carries one, else the status's message.
pub fn lost_cause(status: &Status) -> String {
    match StdError::source(status) {
        Some(source) => root_cause(source),
        None => server_message(status),
    }
}

/// Returns the code to act on: UNAVAILABLE for a lost connection, else the status's own.
pub fn effective_code(status: &Status) -> Code {
    if is_unavailable(status) {
        Code::Unavailable
    } else {
        status.code()
    }
}

/// Translates a gRPC error on a request about `target` into a one-line failure.
pub fn describe(status: &Status, target: Option<&Target>, server: &str) -> Failure {
    let message = server_message(status);
    match effective_code(status) {
        Code::NotFound => match target {
            // For an id, the server's message names the removed sandbox that held it, if any.
            Some(Target::Id(_)) if !status.message().trim().is_empty() => Failure::failed(message),
            Some(target) => Failure::failed(target.not_found()),
            None => Failure::failed(message),
        },
        Code::Unavailable => Failure {
            code: EXIT_UNREACHABLE,
            message: format!("lost connection to sandgate at {server}: {message}"),
        },
        Code::DeadlineExceeded => Failure {
            code: EXIT_TIMED_OUT,
            message: format!("timed out: {message}"),
        },
        Code::Cancelled => Failure {
            code: EXIT_TIMED_OUT,
            message: format!("request cancelled or timed out: {message}"),
        },
        _ => Failure::failed(message),
    }
}

/// Returns the server's message, or the code's description when it sent none.
pub fn server_message(status: &Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        status.code().description().to_string()
    } else {
        message.replace('\n', " ")
    }
}
