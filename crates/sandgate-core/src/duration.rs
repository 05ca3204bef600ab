//! Durations as users write them ("500ms", "30s", "5m", "1h30m"), and the bounds the API
//! enforces on them.

use std::time::Duration;

use crate::validate::ValidationError;

/// Minimum wait a waiting delete accepts.
pub const MIN_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// Maximum wait a waiting delete accepts.
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Wait used when a waiting delete gives no timeout.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Grace period used when a sandbox's spec gives none.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Maximum grace period accepted at create or delete.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);

/// Parses a duration such as "500ms", "30s", "5m" or "1h30m".
///
/// A bare number is rejected, because its unit would be a guess.
///
/// # Errors
/// Returns an error message naming `value` and the accepted forms.
pub fn parse(value: &str) -> Result<Duration, String> {
    let trimmed = value.trim();
    let hint = "use a number with a unit, such as 500ms, 30s, 5m or 1h30m";
    if trimmed.is_empty() {
        return Err(format!(
            "invalid duration {}: {hint}",
            crate::validate::quote(value)
        ));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "invalid duration {}: missing unit; {hint}",
            crate::validate::quote(value)
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| format!("invalid duration {}: {hint}", crate::validate::quote(value)))
}

/// Formats a duration the way [`parse`] reads it, for messages ("1m 30s", "500ms").
pub fn format(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(1) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(duration.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

/// Checks the timeout of a waiting call against the API's bounds, giving the default for `None`.
///
/// # Errors
/// Returns [`ValidationError`] on `field` if the timeout is below 1 s or above 1 h.
pub fn wait_timeout(field: &str, timeout: Option<Duration>) -> Result<Duration, ValidationError> {
    let Some(timeout) = timeout else {
        return Ok(DEFAULT_WAIT_TIMEOUT);
    };
    if timeout < MIN_WAIT_TIMEOUT || timeout > MAX_WAIT_TIMEOUT {
        return Err(ValidationError::new(
            field,
            format!(
                "timeout {} is out of range: use a value from 1s to 1h inclusive",
                format(timeout)
            ),
        ));
    }
    Ok(timeout)
}

/// Checks a grace period against the API's bounds.
///
/// # Errors
/// Returns [`ValidationError`] on `field` if the period is longer than 1 h.
pub fn grace_period(field: &str, grace: Duration) -> Result<Duration, ValidationError> {
    if grace > MAX_GRACE_PERIOD {
        return Err(ValidationError::new(
            field,
            format!(
                "grace period {} is too long: use at most 1h, or force to skip it",
                format(grace)
            ),
        ));
    }
    Ok(grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_usual_forms() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parse_rejects_bare_numbers_and_junk() {
        let error = parse("30").unwrap_err();
        assert!(error.contains("\"30\""), "{error}");
        assert!(error.contains("missing unit"), "{error}");
        assert!(parse("soon").unwrap_err().contains("\"soon\""));
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn wait_timeout_bounds_are_inclusive() {
        assert_eq!(wait_timeout("timeout", None), Ok(DEFAULT_WAIT_TIMEOUT));
        assert_eq!(
            wait_timeout("timeout", Some(MIN_WAIT_TIMEOUT)),
            Ok(MIN_WAIT_TIMEOUT)
        );
        assert_eq!(
            wait_timeout("timeout", Some(MAX_WAIT_TIMEOUT)),
            Ok(MAX_WAIT_TIMEOUT)
        );

        let below = wait_timeout("timeout", Some(Duration::from_millis(999))).unwrap_err();
        assert_eq!(below.field, "timeout");
        assert!(below.message.contains("999ms"), "{}", below.message);

        let above = wait_timeout("timeout", Some(Duration::from_secs(3601))).unwrap_err();
        assert!(above.message.contains("1h 1s"), "{}", above.message);
    }
}
