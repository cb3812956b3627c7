//! FHIR date search values: prefixes, precision, and the implicit range a value stands for.
//!
//! A value without a zone is in the adapter's zone (R4-52). Ranges are half-open, in the legacy
//! database's local time, because that is how the legacy columns store date-times.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
    Ap,
}

/// `[start, end)` in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRange {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateQuery {
    pub prefix: Prefix,
    pub range: LocalRange,
}

/// Parses `[prefix]value`, e.g. `ge2024-03`, `2024-03-01T10:00:00Z`.
pub fn parse_date_query(text: &str, timezone: Tz) -> Result<DateQuery, String> {
    let (prefix, value) = split_prefix(text);
    let range = parse_range(value, timezone)?;
    Ok(DateQuery { prefix, range })
}

/// The prefixes a date value may start with.
const PREFIXES: [(&str, Prefix); 9] = [
    ("eq", Prefix::Eq),
    ("ne", Prefix::Ne),
    ("lt", Prefix::Lt),
    ("gt", Prefix::Gt),
    ("le", Prefix::Le),
    ("ge", Prefix::Ge),
    ("sa", Prefix::Sa),
    ("eb", Prefix::Eb),
    ("ap", Prefix::Ap),
];

fn split_prefix(text: &str) -> (Prefix, &str) {
    for (name, prefix) in PREFIXES {
        if let Some(rest) = text.strip_prefix(name) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, text)
}

/// One value `parse_date_query` accepts, with a prefix among those `admit` keeps, as an unanchored
/// ECMA-262 regular expression: `[prefix]` then `YYYY`, `YYYY-MM`, a calendar day `YYYY-MM-DD`
/// (leap years included), or a day with `Thh:mm[:ss[.fraction]]` and an optional `Z` or
/// `(+|-)hh:mm` (at most 14 hours). The value grammars the OpenAPI document publishes are built
/// from it (`date_values_pattern`, and the audit trail's `date`).
pub fn date_value_pattern(admit: impl Fn(Prefix) -> bool) -> String {
    const DATE: &str = concat!(
        "(?:[0-9]{4}|[0-9]{4}-(?:0[1-9]|1[0-2])|(?:",
        "[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)",
        "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29",
        ")(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]+)?)?",
        "(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])?)?)",
    );
    let prefixes: Vec<&str> = PREFIXES
        .iter()
        .filter(|(_, prefix)| admit(*prefix))
        .map(|(name, _)| *name)
        .collect();
    format!("(?:{})?{DATE}", prefixes.join("|"))
}

/// The values a date parameter accepts, as an ECMA-262 regular expression (the OpenAPI document
/// publishes it): comma-separated values (empty ones are skipped), each as `date_value_pattern`
/// with any prefix. Exactly what `parse_date_query` accepts; a test in `api::openapi` holds the
/// two together.
pub fn date_values_pattern() -> String {
    let value = date_value_pattern(|_| true);
    format!("^(?:{value})?(?:,(?:{value})?)*$")
}

const EXPECTED: &str = "expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|(+|-)hh:mm], optionally after a prefix eq ne lt gt le ge sa eb ap";

fn parse_range(value: &str, timezone: Tz) -> Result<LocalRange, String> {
    let bad = || format!("{value:?} is not a date: {EXPECTED}");
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // Only ASCII can be a date; checking first also makes the byte slicing below safe.
    if !value.is_ascii() || value.len() < 4 || !digits(&value[..4], 4) {
        return Err(bad());
    }
    let year: i32 = value[..4].parse().map_err(|_| bad())?;
    if value.len() == 4 {
        let start = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(bad)?;
        let end = NaiveDate::from_ymd_opt(year + 1, 1, 1).ok_or_else(bad)?;
        return Ok(day_range(start, end));
    }
    if value.len() == 7 && &value[4..5] == "-" && digits(&value[5..7], 2) {
        let month: u32 = value[5..7].parse().map_err(|_| bad())?;
        let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        let end = if month == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(year, month + 1, 1)
        }
        .ok_or_else(bad)?;
        return Ok(day_range(start, end));
    }
    if value.len() == 10 {
        let day = parse_day(value).ok_or_else(bad)?;
        return Ok(day_range(day, day + TimeDelta::days(1)));
    }
    // A date-time: the zone is optional; precision is minutes, seconds or fractions.
    let (local_text, zone) = split_zone(value);
    let (naive, precision) = parse_local(local_text).ok_or_else(bad)?;
    let start = match zone {
        Some(zone) => {
            let offset = parse_offset(zone).ok_or_else(bad)?;
            let zoned: DateTime<FixedOffset> = offset
                .from_local_datetime(&naive)
                .single()
                .ok_or_else(bad)?;
            zoned.with_timezone(&timezone).naive_local()
        }
        None => naive,
    };
    Ok(LocalRange {
        start,
        end: start + precision,
    })
}

fn day_range(start: NaiveDate, end: NaiveDate) -> LocalRange {
    LocalRange {
        start: start.and_time(NaiveTime::MIN),
        end: end.and_time(NaiveTime::MIN),
    }
}

fn split_zone(value: &str) -> (&str, Option<&str>) {
    if let Some(local) = value.strip_suffix('Z') {
        return (local, Some("Z"));
    }
    // An offset is the last 6 characters when they look like +hh:mm or -hh:mm after the 'T'.
    if value.len() > 16 {
        let tail = &value[value.len() - 6..];
        if (tail.starts_with('+') || tail.starts_with('-')) && &tail[3..4] == ":" {
            return (&value[..value.len() - 6], Some(tail));
        }
    }
    (value, None)
}

fn parse_offset(zone: &str) -> Option<FixedOffset> {
    if zone == "Z" {
        return FixedOffset::east_opt(0);
    }
    let sign = match zone.get(..1)? {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let hours = two_digits(zone.get(1..3)?)? as i32;
    let minutes = two_digits(zone.get(4..6)?)? as i32;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

// The parsers below take exactly the layouts FHIR writes (chrono's format parsers also take
// one-digit fields, longer years and leap seconds); the OpenAPI document's pattern for date
// parameters describes exactly these layouts.

/// Two ASCII digits.
fn two_digits(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    (bytes.len() == 2 && bytes.iter().all(u8::is_ascii_digit))
        .then(|| u32::from(bytes[0] - b'0') * 10 + u32::from(bytes[1] - b'0'))
}

/// `YYYY-MM-DD`, a real calendar day.
fn parse_day(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = two_digits(text.get(..2)?)? * 100 + two_digits(text.get(2..4)?)?;
    let month = two_digits(text.get(5..7)?)?;
    let day = two_digits(text.get(8..10)?)?;
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

/// `YYYY-MM-DDThh:mm[:ss[.fraction]]` and its precision.
fn parse_local(text: &str) -> Option<(NaiveDateTime, TimeDelta)> {
    if text.len() < 16 || text.get(10..11)? != "T" || text.get(13..14)? != ":" {
        return None;
    }
    let day = parse_day(text.get(..10)?)?;
    let hour = two_digits(text.get(11..13)?)?;
    let minute = two_digits(text.get(14..16)?)?;
    let (second, nanos, precision) = match text.get(16..)? {
        "" => (0, 0, TimeDelta::minutes(1)),
        rest => {
            let rest = rest.strip_prefix(':')?;
            let second = two_digits(rest.get(..2)?)?;
            match rest.get(2..)? {
                "" => (second, 0, TimeDelta::seconds(1)),
                fraction => {
                    let digits = fraction.strip_prefix('.')?;
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    // Nanoseconds: the first nine digits, padded with zeros.
                    let nanos = digits
                        .bytes()
                        .chain(std::iter::repeat(b'0'))
                        .take(9)
                        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                    (second, nanos, TimeDelta::milliseconds(1))
                }
            }
        }
    };
    // Seconds stop at 59: no leap seconds.
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .filter(|_| second < 60 && nanos < 1_000_000_000)?;
    Some((day.and_time(time), precision))
}

/// The range `ap` searches: the value's range widened by 10% of its distance from `now`, and by at
/// least a day, either side.
pub fn approximate(range: LocalRange, now: NaiveDateTime) -> LocalRange {
    let distance = if now > range.end {
        now - range.end
    } else {
        range.start - now
    };
    let margin = (distance / 10).max(TimeDelta::days(1));
    LocalRange {
        start: range.start - margin,
        end: range.end + margin,
    }
}

/// The first midnight at or after `t`.
pub fn ceil_day(t: NaiveDateTime) -> NaiveDate {
    if t.time() == NaiveTime::MIN {
        t.date()
    } else {
        t.date() + TimeDelta::days(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn precision_sets_the_implicit_range() {
        let tz: Tz = "UTC".parse().unwrap();
        let cases = [
            ("2024", "2024-01-01 00:00:00", "2025-01-01 00:00:00"),
            ("2024-02", "2024-02-01 00:00:00", "2024-03-01 00:00:00"),
            ("2024-12", "2024-12-01 00:00:00", "2025-01-01 00:00:00"),
            ("2024-02-29", "2024-02-29 00:00:00", "2024-03-01 00:00:00"),
            (
                "2024-02-29T10:30",
                "2024-02-29 10:30:00",
                "2024-02-29 10:31:00",
            ),
            (
                "2024-02-29T10:30:05",
                "2024-02-29 10:30:05",
                "2024-02-29 10:30:06",
            ),
        ];
        for (text, start, end) in cases {
            let query = parse_date_query(text, tz).unwrap();
            assert_eq!(
                query.range,
                LocalRange {
                    start: at(start),
                    end: at(end)
                },
                "{text}"
            );
        }
    }

    #[test]
    fn zones_convert_to_the_adapter_zone() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let query = parse_date_query("ge2024-07-01T12:00:00Z", tz).unwrap();
        assert_eq!(query.prefix, Prefix::Ge);
        assert_eq!(query.range.start, at("2024-07-01 08:00:00"));
        let query = parse_date_query("2024-01-01T12:00:00+01:00", tz).unwrap();
        assert_eq!(query.range.start, at("2024-01-01 06:00:00"));
    }

    #[test]
    fn malformed_values_are_rejected_with_the_expected_shapes() {
        let tz: Tz = "UTC".parse().unwrap();
        for bad in [
            "",
            "20",
            "ﾟ･✿ヾ",
            "2ｰ024",
            "2024-13",
            "2024-02-30",
            "x2024",
            "2024-01-01T25:00",
            "ge",
            "2024-01-01T10:00+25:00",
            "1' OR '1'='1",
        ] {
            let error = parse_date_query(bad, tz).unwrap_err();
            assert!(error.contains("expected YYYY"), "{bad}: {error}");
        }
    }

    #[test]
    fn ceil_day_rounds_up_to_midnight() {
        assert_eq!(
            ceil_day(at("2024-01-01 00:00:00")),
            NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
        );
        assert_eq!(
            ceil_day(at("2024-01-01 00:00:01")),
            NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()
        );
    }
}
