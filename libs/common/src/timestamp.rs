//! Serialises UTC timestamps exactly as chrono's `Serialize` does (RFC 3339, `Z`, 0, 3, 6 or 9
//! fractional digits), written into a stack buffer. chrono goes through `Display` and serde's
//! `collect_str`, which cost the gateway about as much as the rest of an envelope's fields; every
//! event has up to four timestamps serialised on the request path (its produced size, then the
//! envelope). Years outside 0000–9999 and leap seconds, which the gateway never stores, are left to
//! chrono itself.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// `YYYY-MM-DDTHH:MM:SS.fffffffffZ`
const LONGEST: usize = 30;

/// For `#[serde(serialize_with = "timestamp::serialize")]`.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; LONGEST];
    match write(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serde::Serialize::serialize(at, serializer),
    }
}

/// [`serialize`] for an optional timestamp (`null` when absent).
pub fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// The text chrono would write, or `None` where this does not cover chrono's format.
fn write<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; LONGEST]) -> Option<&'a str> {
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut len = 0;
    let mut put = |mut value: u32, digits: usize, after: Option<u8>| {
        // From the last digit back, dividing by the constant 10 (a multiplication once compiled).
        for slot in buffer[len..len + digits].iter_mut().rev() {
            // A remainder of 10 fits in a u8.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        len += digits;
        if let Some(separator) = after {
            buffer[len] = separator;
            len += 1;
        }
    };
    put(year, 4, Some(b'-'));
    put(at.month(), 2, Some(b'-'));
    put(at.day(), 2, Some(b'T'));
    put(at.hour(), 2, Some(b':'));
    put(at.minute(), 2, Some(b':'));
    let fraction = if nanos == 0 {
        None
    } else if nanos % 1_000_000 == 0 {
        Some((nanos / 1_000_000, 3))
    } else if nanos % 1_000 == 0 {
        Some((nanos / 1_000, 6))
    } else {
        Some((nanos, 9))
    };
    match fraction {
        None => put(at.second(), 2, Some(b'Z')),
        Some((value, digits)) => {
            put(at.second(), 2, Some(b'.'));
            put(value, digits, Some(b'Z'));
        }
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buffer[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct Fast(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn both(at: DateTime<Utc>) -> (String, String) {
        (
            serde_json::to_string(&Fast(at)).unwrap(),
            serde_json::to_string(&at).unwrap(),
        )
    }

    #[test]
    fn matches_chrono_for_each_precision() {
        for nanos in [0, 7_000_000, 123_000_000, 456_000, 1_000, 789, 999_999_999] {
            let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 5, 3).unwrap()
                + chrono::Duration::nanoseconds(nanos);
            let (fast, chrono) = both(at);
            assert_eq!(fast, chrono, "{nanos} ns");
        }
        let (fast, _) = both(Utc.with_ymd_and_hms(2026, 12, 1, 9, 5, 3).unwrap());
        assert_eq!(fast, "\"2026-12-01T09:05:03Z\"");
    }

    #[test]
    fn years_beyond_four_digits_and_leap_seconds_are_chronos() {
        let far = Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).unwrap();
        let before = Utc.with_ymd_and_hms(-3, 1, 1, 0, 0, 0).unwrap();
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        for at in [far, before, leap] {
            let (fast, chrono) = both(at);
            assert_eq!(fast, chrono);
        }
    }

    #[test]
    fn none_is_null() {
        #[derive(serde::Serialize)]
        struct Maybe(#[serde(serialize_with = "serialize_option")] Option<DateTime<Utc>>);
        assert_eq!(serde_json::to_string(&Maybe(None)).unwrap(), "null");
    }

    proptest! {
        #[test]
        fn any_timestamp_is_written_as_chrono_writes_it(
            seconds in -62_167_219_200i64..253_402_300_800i64,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let at = DateTime::from_timestamp(seconds, nanos).unwrap();
            let (fast, chrono) = both(at);
            prop_assert_eq!(fast, chrono);
        }
    }
}
