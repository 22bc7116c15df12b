//! Time buckets cut in a time zone: the hours, days, weeks (from Monday) and months that trends
//! and retention count by, started where Postgres's `date_trunc` starts them in local time.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use gamify_common::ingest::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
    Week,
    Month,
}

impl Interval {
    /// The most buckets one request may ask for, and the range a request without `from` covers.
    pub(super) fn limits(self) -> (u32, Duration) {
        match self {
            Interval::Hour => (24 * 31, Duration::hours(48)),
            Interval::Day => (366, Duration::days(30)),
            Interval::Week => (105, Duration::weeks(12)),
            Interval::Month => (60, Duration::days(365)),
        }
    }

    pub(super) fn as_sql(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }
}

/// The `timezone` parameter: an IANA name, UTC when absent.
pub(super) fn parse_timezone(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Tz {
    match raw {
        None => Tz::UTC,
        Some(name) => name.parse().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "timezone",
                "must be an IANA time zone such as Europe/Berlin",
            ));
            Tz::UTC
        }),
    }
}

pub(super) fn parse_enum<T: for<'de> Deserialize<'de>>(
    field: &str,
    raw: Option<&str>,
    default: T,
    allowed: &str,
    errors: &mut Vec<FieldError>,
) -> T {
    match raw {
        None => default,
        Some(raw) => serde_json::from_value(serde_json::Value::from(raw)).unwrap_or_else(|_| {
            errors.push(FieldError::new(field, format!("must be one of {allowed}")));
            default
        }),
    }
}

pub(super) fn hour_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(3600), 0).unwrap_or(at)
}

/// The start of the bucket holding local time `local`, as Postgres's `date_trunc` cuts it.
pub(super) fn truncate(interval: Interval, local: NaiveDateTime) -> NaiveDateTime {
    let date = local.date();
    let midnight = |date: NaiveDate| date.and_hms_opt(0, 0, 0).unwrap_or(local);
    match interval {
        Interval::Hour => local
            .date()
            .and_hms_opt(local.hour(), 0, 0)
            .unwrap_or(local),
        Interval::Day => midnight(date),
        Interval::Week => {
            midnight(date - Duration::days(i64::from(date.weekday().num_days_from_monday())))
        }
        Interval::Month => midnight(date.with_day(1).unwrap_or(date)),
    }
}

pub(super) fn next(interval: Interval, start: NaiveDateTime) -> NaiveDateTime {
    match interval {
        Interval::Hour => start + Duration::hours(1),
        Interval::Day => start + Duration::days(1),
        Interval::Week => start + Duration::weeks(1),
        Interval::Month => start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(start + Duration::days(31)),
    }
}

/// The instant local time `local` names in `tz`: the earlier of two in a fold, the first instant
/// after a gap.
pub(super) fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Tz> {
    let mut probe = local;
    for _ in 0..4 {
        if let Some(at) = tz.from_local_datetime(&probe).earliest() {
            return at;
        }
        probe += Duration::minutes(30);
    }
    tz.from_utc_datetime(&local)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_start_where_postgres_cuts_them() {
        let at = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(13, 45, 10)
            .unwrap();
        assert_eq!(
            truncate(Interval::Hour, at).to_string(),
            "2026-03-29 13:00:00"
        );
        assert_eq!(
            truncate(Interval::Day, at).to_string(),
            "2026-03-29 00:00:00"
        );
        // 2026-03-29 is a Sunday: its week began on Monday the 23rd.
        assert_eq!(
            truncate(Interval::Week, at).to_string(),
            "2026-03-23 00:00:00"
        );
        assert_eq!(
            truncate(Interval::Month, at).to_string(),
            "2026-03-01 00:00:00"
        );
        assert_eq!(
            next(Interval::Month, truncate(Interval::Month, at)).to_string(),
            "2026-04-01 00:00:00"
        );
    }

    #[test]
    fn a_local_midnight_in_a_gap_is_its_first_instant() {
        // Santiago skips 00:00–01:00 when summer time starts.
        let local = NaiveDate::from_ymd_opt(2026, 9, 6)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let at = instant(Tz::America__Santiago, local);
        assert_eq!(at.naive_local().to_string(), "2026-09-06 01:00:00");
    }

    proptest! {
        /// Truncating is idempotent, never moves time forward, and the next bucket starts after it.
        #[test]
        fn truncation_is_a_floor(secs in 0i64..4_000_000_000, which in 0usize..4) {
            let interval = [Interval::Hour, Interval::Day, Interval::Week, Interval::Month][which];
            let local = DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
            let start = truncate(interval, local);
            prop_assert!(start <= local);
            prop_assert_eq!(truncate(interval, start), start);
            prop_assert!(next(interval, start) > local);
        }
    }
}
