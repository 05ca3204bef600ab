//! Time formatting: RFC 3339 timestamps, proto3 JSON durations, and kubectl-style ages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// Formats a protobuf timestamp as RFC 3339 in UTC with a `Z` suffix, with 0, 3, 6 or 9
/// fractional digits as the proto3 JSON mapping prescribes.
pub fn rfc3339(timestamp: &Timestamp) -> String {
    let seconds = timestamp.seconds;
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let hour = second_of_day / 3600;
    let minute = second_of_day % 3600 / 60;
    let second = second_of_day % 60;
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{}Z",
        fraction(timestamp.nanos)
    )
}

/// Formats the current time as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    rfc3339(&Timestamp { seconds, nanos: 0 })
}

/// Formats a protobuf duration the proto3 JSON way, such as "10s", "1.500s" or "-0.250s".
pub fn json_duration(duration: &prost_types::Duration) -> String {
    let negative = duration.seconds < 0 || duration.nanos < 0;
    let sign = if negative { "-" } else { "" };
    format!(
        "{sign}{}{}s",
        duration.seconds.unsigned_abs(),
        fraction(duration.nanos.abs())
    )
}

/// Returns ".123", ".123456", ".123456789" or "" for a nanosecond count.
fn fraction(nanos: i32) -> String {
    if nanos <= 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Converts a protobuf timestamp to a system time.
pub fn to_system_time(timestamp: &Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(timestamp.nanos.max(0) as u64);
    if timestamp.seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(timestamp.seconds as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(timestamp.seconds.unsigned_abs()) + nanos
    }
}

/// Returns the time from `since` to `now`, zero if `since` is in the future.
pub fn elapsed(since: &Timestamp, now: SystemTime) -> Duration {
    now.duration_since(to_system_time(since))
        .unwrap_or(Duration::ZERO)
}

/// Formats an age the way kubectl's AGE column does in its short form: "5s", "3m", "2h", "4d".
///
/// Each value is truncated to its largest whole unit.
pub fn age(age: Duration) -> String {
    let seconds = age.as_secs();
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 86_400 {
        format!("{}h", seconds / 3600)
    } else {
        format!("{}d", seconds / 86_400)
    }
}

/// Formats a span of a wait for people, such as "4m58s" or "12s".
pub fn span(span: Duration) -> String {
    let seconds = span.as_secs();
    let (hours, minutes, secs) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{secs}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn rfc3339_formats_utc_with_z() {
        assert_eq!(rfc3339(&at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(&at(1_714_564_800, 0)), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(&at(951_825_600, 0)), "2000-02-29T12:00:00Z");
        assert_eq!(rfc3339(&at(-1, 0)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_fraction_uses_3_6_or_9_digits() {
        assert_eq!(rfc3339(&at(0, 500_000_000)), "1970-01-01T00:00:00.500Z");
        assert_eq!(rfc3339(&at(0, 1_000)), "1970-01-01T00:00:00.000001Z");
        assert_eq!(rfc3339(&at(0, 1)), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn json_duration_forms() {
        let make = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(json_duration(&make(10, 0)), "10s");
        assert_eq!(json_duration(&make(1, 500_000_000)), "1.500s");
        assert_eq!(json_duration(&make(0, -250_000_000)), "-0.250s");
        assert_eq!(json_duration(&make(0, 0)), "0s");
    }

    #[test]
    fn age_uses_largest_whole_unit() {
        let cases = [
            (0, "0s"),
            (5, "5s"),
            (59, "59s"),
            (60, "1m"),
            (3 * 60 + 59, "3m"),
            (3599, "59m"),
            (3600, "1h"),
            (2 * 3600 + 1800, "2h"),
            (86_399, "23h"),
            (86_400, "1d"),
            (4 * 86_400 + 7200, "4d"),
            (400 * 86_400, "400d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(age(Duration::from_secs(seconds)), expected, "{seconds}s");
        }
    }

    #[test]
    fn elapsed_is_zero_for_future_times() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(elapsed(&at(40, 0), now), Duration::from_secs(60));
        assert_eq!(elapsed(&at(200, 0), now), Duration::ZERO);
    }

    #[test]
    fn span_formats_minutes_and_seconds() {
        assert_eq!(span(Duration::from_secs(12)), "12s");
        assert_eq!(span(Duration::from_secs(298)), "4m58s");
        assert_eq!(span(Duration::from_secs(3723)), "1h2m3s");
    }
}
