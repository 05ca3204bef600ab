//! Validation of names, workspaces, labels and specs, with errors that name the field, the value
//! and the fix.

use std::collections::BTreeMap;

use thiserror::Error;

/// An invalid request field, which the server returns as INVALID_ARGUMENT with this message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Dotted path of the field, such as `spec.grace_period`.
    pub field: String,
    /// The problem with the value and the fix.
    pub message: String,
}

impl ValidationError {
    /// Creates an error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Maximum number of characters of a value that error messages quote.
const QUOTE_LIMIT: usize = 64;

/// Quotes `value` for an error message, cutting it after 64 characters and saying how long it
/// was, so that a huge input never makes a huge message.
pub fn quote(value: &str) -> String {
    let length = value.chars().count();
    if length <= QUOTE_LIMIT {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTE_LIMIT).collect();
    format!("{head:?}... ({length} characters)")
}

/// Maximum total size in bytes of a spec's command, arguments and environment. Linux limits
/// one argument or environment string to 128 KiB (MAX_ARG_STRLEN), and the whole exec to a
/// quarter of the stack limit, so larger specs could never start.
pub const MAX_SPEC_BYTES: usize = 128 * 1024;

/// Checks that the command, arguments and environment fit in [`MAX_SPEC_BYTES`].
///
/// # Errors
/// Returns [`ValidationError`] on `field` with the size found.
pub fn spec_size(
    field: &str,
    command: &[String],
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    let argv: usize = command.iter().chain(args).map(|arg| arg.len() + 1).sum();
    let environment: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let total = argv + environment;
    if total > MAX_SPEC_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "command, arguments and environment take {total} bytes, more than the maximum of                  {MAX_SPEC_BYTES}: pass large inputs through a file instead"
            ),
        ));
    }
    Ok(())
}

/// Maximum length of a DNS-1123 label.
pub const MAX_LABEL_LEN: usize = 63;

/// Checks that `value` is a DNS-1123 label: 1 to 63 lowercase letters, digits or '-', starting
/// and ending with a letter or digit.
///
/// # Errors
/// Returns [`ValidationError`] on `field`, naming `value` and the rule.
pub fn dns_label(field: &str, what: &str, value: &str) -> Result<(), ValidationError> {
    let rule = "use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter \
                or digit";
    if value.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{what} is required: {rule}"),
        ));
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "invalid {what} {}: the maximum is 63 characters",
                quote(value)
            ),
        ));
    }
    let bytes = value.as_bytes();
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = bytes.iter().all(|&b| allowed(b) || b == b'-')
        && allowed(bytes[0])
        && allowed(bytes[bytes.len() - 1]);
    if !valid {
        return Err(ValidationError::new(
            field,
            format!("invalid {what} {}: {rule}", quote(value)),
        ));
    }
    Ok(())
}

/// Returns the workspace a request means: empty is "default".
///
/// # Errors
/// Returns [`ValidationError`] if a non-empty workspace is not a DNS-1123 label.
pub fn workspace(field: &str, value: &str) -> Result<String, ValidationError> {
    if value.is_empty() {
        return Ok(crate::DEFAULT_WORKSPACE.to_string());
    }
    dns_label(field, "workspace", value)?;
    Ok(value.to_string())
}

/// Checks a sandbox name.
///
/// # Errors
/// Returns [`ValidationError`] if `value` is not a DNS-1123 label.
pub fn name(field: &str, value: &str) -> Result<(), ValidationError> {
    dns_label(field, "name", value)
}

/// Checks environment variable names: non-empty, no '=' and no NUL; values have no NUL.
///
/// # Errors
/// Returns [`ValidationError`] on the first bad entry.
pub fn env(field: &str, env: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ValidationError::new(
                field,
                format!(
                    "invalid environment variable name {}: use a non-empty name without '=' or NUL",
                    quote(key)
                ),
            ));
        }
        if value.contains('\0') {
            return Err(ValidationError::new(
                format!("{field}[{key}]"),
                "invalid environment variable value: it contains a NUL byte",
            ));
        }
    }
    Ok(())
}

/// Checks a command line: each argument without NUL bytes.
///
/// # Errors
/// Returns [`ValidationError`] on the first bad argument.
pub fn argv(field: &str, args: &[String]) -> Result<(), ValidationError> {
    for (index, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            return Err(ValidationError::new(
                format!("{field}[{index}]"),
                "invalid argument: it contains a NUL byte",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_accepts_valid_names() {
        for value in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert_eq!(dns_label("name", "name", value), Ok(()), "{value}");
        }
    }

    #[test]
    fn dns_label_rejects_invalid_names() {
        for value in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            let error = dns_label("name", "name", value).unwrap_err();
            assert_eq!(error.field, "name");
            if !value.is_empty() {
                assert!(
                    error.message.contains(&format!("{value:?}")),
                    "{}",
                    error.message
                );
            }
        }
    }

    #[test]
    fn workspace_defaults_when_empty() {
        assert_eq!(workspace("workspace", ""), Ok("default".to_string()));
        assert_eq!(workspace("workspace", "team-a"), Ok("team-a".to_string()));
        assert!(workspace("workspace", "Team").is_err());
    }

    #[test]
    fn quote_cuts_huge_values() {
        assert_eq!(quote("web"), "\"web\"");
        let huge = "a".repeat(100_000);
        let quoted = quote(&huge);
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.ends_with("... (100000 characters)"), "{quoted}");
        let error = name("name", &huge).unwrap_err();
        assert!(error.message.len() < 200, "{}", error.message);
    }

    #[test]
    fn spec_size_limits_total_bytes() {
        let small = vec!["sleep".to_string(), "1".to_string()];
        assert!(spec_size("spec", &small, &[], &BTreeMap::new()).is_ok());
        let big = vec!["x".repeat(MAX_SPEC_BYTES)];
        let error = spec_size("spec", &small, &big, &BTreeMap::new()).unwrap_err();
        assert_eq!(error.field, "spec");
        assert!(error.message.contains("131072"), "{}", error.message);
    }

    #[test]
    fn env_rejects_bad_names() {
        let mut env_map = BTreeMap::new();
        env_map.insert("A=B".to_string(), "x".to_string());
        assert!(env("spec.env", &env_map).is_err());
    }
}
