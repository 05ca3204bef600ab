//! Classification of Kubernetes API errors into the driver's transient and permanent errors.

use sandgate_driver::DriverError;

/// Returns whether `error` is an API response with HTTP status `code`.
pub fn has_code(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Returns whether `error` is a 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    has_code(error, 404)
}

/// Returns whether `error` is a 409, either AlreadyExists or a failed precondition.
pub fn is_conflict(error: &kube::Error) -> bool {
    has_code(error, 409)
}

/// Converts an API error of the call described by `action` into a driver error.
///
/// Throttling, server errors, timeouts and transport failures are transient, so the server
/// retries them with backoff. A rejected request (invalid, forbidden, unknown kind) is
/// permanent.
pub fn driver_error(action: &str, error: kube::Error) -> DriverError {
    match &error {
        kube::Error::Api(status) => match status.code {
            408 | 429 | 500 | 502 | 503 | 504 => {
                DriverError::Transient(format!("{action} failed: {error}"))
            }
            401 | 403 => DriverError::Permanent(format!(
                "{action} failed: {error}: grant the gateway's account the Role in \
                 deploy/rbac.yaml"
            )),
            404 => DriverError::Permanent(format!(
                "{action} failed: {error}: is the agent-sandbox CRD (agents.x-k8s.io/v1beta1) \
                 installed?"
            )),
            _ => DriverError::Permanent(format!("{action} failed: {error}")),
        },
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => {
            DriverError::Permanent(format!("{action} failed: {error}"))
        }
        _ => DriverError::Transient(format!("{action} failed: {error}")),
    }
}
