//! MySQL/MariaDB DATE, DATETIME, TIMESTAMP and TIME cells read from their wire form.
//!
//! Old installs run with an empty `sql_mode`, so their date columns hold what no calendar type
//! accepts: zero dates (`0000-00-00`), partial dates (`1958-00-00`, `2001-07-00`), impossible days
//! (`2021-02-30`) and times beyond a day (`-01:30:00`, `25:00:00`). The driver refuses all of
//! them. Here a zero date is NULL, a calendar value is a `Date`/`DateTime`/`Time`, and anything else
//! is carried as text in MySQL's own layout (`1958-00-00`, `2001-07-00 10:30:00`), which the mapper
//! reads as a partial date where it is one and which still compares correctly when bound back.

use chrono::{NaiveDate, NaiveTime};

use crate::dialect::ast::Value;

/// The fields of a DATE/DATETIME/TIMESTAMP cell, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Calendar {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
    /// The column has a time part (DATETIME, TIMESTAMP).
    with_time: bool,
}

/// Decodes a DATE (`with_time` false) or DATETIME/TIMESTAMP cell from the binary protocol (a length
/// byte, then the fields) or the text protocol (`YYYY-MM-DD[ hh:mm:ss[.ffffff]]`).
pub fn calendar(bytes: &[u8], with_time: bool) -> Result<Value, String> {
    let fields = if bytes.first().is_some_and(u8::is_ascii_digit) {
        parse_calendar_text(bytes, with_time)
    } else {
        parse_calendar_binary(bytes, with_time)
    }
    .ok_or_else(|| "not a MySQL date or date-time".to_owned())?;
    Ok(calendar_value(fields))
}

fn parse_calendar_binary(bytes: &[u8], with_time: bool) -> Option<Calendar> {
    let (&length, body) = bytes.split_first()?;
    let byte = |i: usize| body.get(i).copied();
    let mut fields = Calendar {
        year: 0,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
        with_time,
    };
    if length >= 4 {
        fields.year = u16::from_le_bytes([byte(0)?, byte(1)?]);
        fields.month = byte(2)?;
        fields.day = byte(3)?;
    }
    if length >= 7 {
        fields.hour = byte(4)?;
        fields.minute = byte(5)?;
        fields.second = byte(6)?;
    }
    if length >= 11 {
        fields.micros = u32::from_le_bytes([byte(7)?, byte(8)?, byte(9)?, byte(10)?]);
    }
    Some(fields)
}

fn parse_calendar_text(bytes: &[u8], with_time: bool) -> Option<Calendar> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year = parts.next()?.parse().ok()?;
    let month = parts.next()?.parse().ok()?;
    let day = parts.next()?.parse().ok()?;
    let (hour, minute, second, micros) = match time {
        Some(time) => parse_clock_text(time)?,
        None => (0, 0, 0, 0),
    };
    Some(Calendar {
        year,
        month,
        day,
        hour: u8::try_from(hour).ok()?,
        minute,
        second,
        micros,
        with_time,
    })
}

/// `hh:mm:ss[.ffffff]` with any number of hour digits (TIME allows up to 838).
fn parse_clock_text(text: &str) -> Option<(u32, u8, u8, u32)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let mut parts = whole.splitn(3, ':');
    let hour = parts.next()?.parse().ok()?;
    let minute = parts.next()?.parse().ok()?;
    let second = parts.next().unwrap_or("0").parse().ok()?;
    let micros = match fraction {
        Some(digits) if !digits.is_empty() && digits.len() <= 6 => {
            digits.parse::<u32>().ok()? * 10u32.pow(6 - digits.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    Some((hour, minute, second, micros))
}

fn calendar_value(fields: Calendar) -> Value {
    let Calendar {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
        with_time,
    } = fields;
    if year == 0 && month == 0 && day == 0 {
        return Value::Null;
    }
    let date = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day));
    let time = NaiveTime::from_hms_micro_opt(
        u32::from(hour),
        u32::from(minute),
        u32::from(second),
        micros,
    );
    match (date, time, with_time) {
        (Some(date), _, false) => Value::Date(date),
        (Some(date), Some(time), true) => Value::DateTime(date.and_time(time)),
        // Partial (zero month or day), impossible or out-of-range: MySQL's own layout as text.
        _ => {
            let mut text = format!("{year:04}-{month:02}-{day:02}");
            if with_time {
                text.push_str(&format!(" {hour:02}:{minute:02}:{second:02}"));
                if micros > 0 {
                    text.push_str(&format!(".{micros:06}"));
                }
            }
            Value::Text(text)
        }
    }
}

/// Decodes a TIME cell. TIME is a duration in MySQL (`-838:59:59` to `838:59:59`): a time of day
/// is a `Time`; a negative value or one of 24 hours or more is carried as text.
pub fn clock(bytes: &[u8]) -> Result<Value, String> {
    let bad = || "not a MySQL time".to_owned();
    let (negative, hours, minute, second, micros) = if bytes
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
    {
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (hours, minute, second, micros) = parse_clock_text(rest).ok_or_else(bad)?;
        (negative, hours, minute, second, micros)
    } else {
        let (&length, body) = bytes.split_first().ok_or_else(bad)?;
        let byte = |i: usize| body.get(i).copied().ok_or_else(bad);
        if length == 0 {
            (false, 0, 0, 0, 0)
        } else {
            let negative = byte(0)? == 1;
            let days = u32::from_le_bytes([byte(1)?, byte(2)?, byte(3)?, byte(4)?]);
            let hours = days * 24 + u32::from(byte(5)?);
            let micros = if length >= 12 {
                u32::from_le_bytes([byte(8)?, byte(9)?, byte(10)?, byte(11)?])
            } else {
                0
            };
            (negative, hours, byte(6)?, byte(7)?, micros)
        }
    };
    let time = NaiveTime::from_hms_micro_opt(hours, u32::from(minute), u32::from(second), micros);
    Ok(match time {
        Some(time) if !negative => Value::Time(time),
        _ => {
            let sign = if negative { "-" } else { "" };
            Value::Text(format!("{sign}{hours:02}:{minute:02}:{second:02}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_date(year: u16, month: u8, day: u8) -> Vec<u8> {
        let [lo, hi] = year.to_le_bytes();
        vec![4, lo, hi, month, day]
    }

    #[test]
    fn partial_and_zero_dates_survive_both_protocols() {
        let cases: [(&[u8], bool, Value); 6] = [
            (b"1958-00-00", false, Value::Text("1958-00-00".into())),
            (b"2001-07-00", false, Value::Text("2001-07-00".into())),
            (b"0000-00-00", false, Value::Null),
            (b"0000-00-00 00:00:00", true, Value::Null),
            (
                b"2001-07-00 10:30:00",
                true,
                Value::Text("2001-07-00 10:30:00".into()),
            ),
            (b"2021-02-30", false, Value::Text("2021-02-30".into())),
        ];
        for (text, with_time, expected) in cases {
            assert_eq!(calendar(text, with_time), Ok(expected), "{text:?}");
        }
        assert_eq!(
            calendar(&binary_date(1958, 0, 0), false),
            Ok(Value::Text("1958-00-00".into()))
        );
        assert_eq!(
            calendar(&binary_date(1958, 6, 1), false),
            Ok(Value::Date(NaiveDate::from_ymd_opt(1958, 6, 1).unwrap()))
        );
        assert_eq!(calendar(&[0], false), Ok(Value::Null));
        let datetime = [7, 0xd1, 0x07, 7, 0, 10, 30, 5];
        assert_eq!(
            calendar(&datetime, true),
            Ok(Value::Text("2001-07-00 10:30:05".into()))
        );
        let full = [11, 0xd1, 0x07, 7, 4, 10, 30, 5, 0x40, 0xe2, 0x01, 0];
        assert_eq!(
            calendar(&full, true),
            Ok(Value::DateTime(
                NaiveDate::from_ymd_opt(2001, 7, 4)
                    .unwrap()
                    .and_hms_micro_opt(10, 30, 5, 123_456)
                    .unwrap()
            ))
        );
        assert!(calendar(&[4, 1], false).is_err());
        assert!(calendar(b"19xx-01-01", false).is_err());
    }

    #[test]
    fn times_beyond_a_day_are_text() {
        let ten_thirty = NaiveTime::from_hms_opt(10, 30, 0).unwrap();
        assert_eq!(clock(b"10:30:00"), Ok(Value::Time(ten_thirty)));
        assert_eq!(
            clock(&[8, 0, 0, 0, 0, 0, 10, 30, 0]),
            Ok(Value::Time(ten_thirty))
        );
        assert_eq!(clock(&[0]), Ok(Value::Time(NaiveTime::MIN)));
        assert_eq!(clock(b"25:00:00"), Ok(Value::Text("25:00:00".into())));
        assert_eq!(clock(b"-01:30:00"), Ok(Value::Text("-01:30:00".into())));
        assert_eq!(
            clock(&[8, 1, 0, 0, 0, 0, 1, 30, 0]),
            Ok(Value::Text("-01:30:00".into()))
        );
        assert_eq!(
            clock(&[8, 0, 1, 0, 0, 0, 1, 0, 0]),
            Ok(Value::Text("25:00:00".into()))
        );
        assert!(clock(b"ab").is_err());
    }
}
