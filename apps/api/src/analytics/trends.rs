//! `GET /v1/analytics/trends`: events or distinct users per hour, day, week or month, in a time
//! zone, from the worker's hourly rollups: a query sums counts and unions HyperLogLog sketches of
//! whole hours, whatever the number of events, instead of scanning them.

use std::collections::HashMap;

use axum::extract::State;
use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use gamify_common::ingest::{FieldError, parse_time};
use gamify_db::sea_orm::Value as DbValue;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    analytics::reader::ProjectReader,
    http::{
        error::{Error, Result},
        extract::Query,
    },
    state::AppState,
};

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
    fn limits(self) -> (u32, Duration) {
        match self {
            Interval::Hour => (24 * 31, Duration::hours(48)),
            Interval::Day => (366, Duration::days(30)),
            Interval::Week => (105, Duration::weeks(12)),
            Interval::Month => (60, Duration::days(365)),
        }
    }

    fn as_sql(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// Events.
    Count,
    /// Distinct users (the `userId`, else the `anonymousId`), estimated within about 1–2 %.
    Users,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// Only events of this name; absent: every event.
    event: Option<String>,
    /// `hour`, `day` (the default), `week` (from Monday) or `month`.
    #[param(value_type = Option<Interval>)]
    interval: Option<String>,
    /// Start (RFC 3339), rounded down to the hour; default: 48 hours, 30 days, 12 weeks or 12
    /// months before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End, exclusive (RFC 3339), rounded down to the hour; default: now.
    #[param(format = DateTime)]
    to: Option<String>,
    /// IANA time zone the buckets are cut in (default `UTC`); its offsets must be whole hours.
    timezone: Option<String>,
    /// `count` (the default) or `users`.
    #[param(value_type = Option<Measure>)]
    measure: Option<String>,
    /// The project, with a session or a management token (a secret key names its own).
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    project_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    /// The bucket's start, RFC 3339 with the zone's offset at that instant.
    start: String,
    value: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Trend {
    interval: Interval,
    measure: Measure,
    timezone: String,
    data: Vec<Bucket>,
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
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

fn hour_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(3600), 0).unwrap_or(at)
}

/// The start of the bucket holding local time `local`, as Postgres's `date_trunc` cuts it.
fn truncate(interval: Interval, local: NaiveDateTime) -> NaiveDateTime {
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

fn next(interval: Interval, start: NaiveDateTime) -> NaiveDateTime {
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
fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Tz> {
    let mut probe = local;
    for _ in 0..4 {
        if let Some(at) = tz.from_local_datetime(&probe).earliest() {
            return at;
        }
        probe += Duration::minutes(30);
    }
    tz.from_utc_datetime(&local)
}

/// Whether every offset `tz` uses in [from, to) is a whole number of hours, so that each of the
/// rollups' UTC hours falls in exactly one local bucket.
fn whole_hours(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let mut at = from;
    while at < to {
        if tz
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
            % 3600
            != 0
        {
            return false;
        }
        at += Duration::hours(1);
    }
    true
}

/// Events, or distinct users, per hour, day, week or month in a time zone.
#[utoipa::path(
    get,
    path = "/v1/analytics/trends",
    tag = "analytics",
    params(TrendQuery),
    responses(
        (status = 200, description = "One value per bucket, empty buckets included", body = Trend),
        crate::http::schemas::AnalyticsErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
async fn trends(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(query): Query<TrendQuery>,
) -> Result<axum::Json<Trend>> {
    let mut errors = Vec::new();
    let interval = parse_enum(
        "interval",
        query.interval.as_deref(),
        Interval::Day,
        "hour, day, week, month",
        &mut errors,
    );
    let measure = parse_enum(
        "measure",
        query.measure.as_deref(),
        Measure::Count,
        "count, users",
        &mut errors,
    );
    let to = parse_time("to", query.to.as_deref(), &mut errors).map(hour_floor);
    let from = parse_time("from", query.from.as_deref(), &mut errors).map(hour_floor);
    let tz: Tz = match query.timezone.as_deref() {
        None => Tz::UTC,
        Some(name) => name.parse().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "timezone",
                "must be an IANA time zone such as Europe/Berlin",
            ));
            Tz::UTC
        }),
    };
    if query.event.as_deref().is_some_and(|e| e.contains('\0')) {
        errors.push(FieldError::new(
            "event",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }
    let (max_buckets, default_range) = interval.limits();
    let to = to.unwrap_or_else(|| hour_floor(state.now()) + Duration::hours(1));
    let from = from.unwrap_or(to - default_range);
    if from >= to {
        return Err(Error::invalid_field("from", "must be before to"));
    }
    // A first bound before any per-hour work: the longest a bucket can be, times the cap.
    let longest = match interval {
        Interval::Hour => Duration::hours(1),
        Interval::Day => Duration::hours(25),
        Interval::Week => Duration::hours(7 * 24 + 1),
        Interval::Month => Duration::hours(31 * 24 + 1),
    };
    if to - from > longest * max_buckets as i32 {
        return Err(Error::invalid_field(
            "from",
            format_args!(
                "the range holds more than {max_buckets} {}s; narrow it or use a longer interval",
                interval.as_sql()
            ),
        ));
    }
    if !whole_hours(tz, from, to) {
        return Err(Error::invalid_field(
            "timezone",
            format_args!(
                "{tz} uses offsets that are not whole hours in this range; trends are cut from hourly rollups, so use a zone with whole-hour offsets"
            ),
        ));
    }
    // The local buckets covering [from, to).
    let mut starts = Vec::new();
    let mut local = truncate(interval, from.with_timezone(&tz).naive_local());
    let end_local = to.with_timezone(&tz).naive_local();
    while local < end_local {
        if starts.len() as u32 >= max_buckets {
            return Err(Error::invalid_field(
                "from",
                format_args!(
                    "the range holds more than {max_buckets} {}s; narrow it or use a longer interval",
                    interval.as_sql()
                ),
            ));
        }
        starts.push(local);
        local = next(interval, local);
    }

    let value_sql = match measure {
        Measure::Count => "sum(events)::bigint",
        Measure::Users => "round(hll_cardinality(hll_union_agg(users)))::bigint",
    };
    // `hour` buckets are UTC hours (a local hour that repeats in autumn is two of them); the others
    // are cut in local time, as `starts` above is.
    let mut values: Vec<DbValue> = vec![reader.project_id.into(), from.into(), to.into()];
    let bucket_sql = match interval {
        Interval::Hour => "(hour AT TIME ZONE 'UTC')".to_owned(),
        other => {
            values.push(tz.name().to_owned().into());
            format!(
                "date_trunc('{}', hour AT TIME ZONE ${})",
                other.as_sql(),
                values.len()
            )
        }
    };
    let event_filter = match query.event {
        Some(event) => {
            values.push(event.into());
            format!(" AND event_type = ${}", values.len())
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT {bucket_sql} AS bucket, {value_sql} AS value FROM event_rollups
         WHERE project_id = $1 AND hour >= $2 AND hour < $3{event_filter}
         GROUP BY 1 ORDER BY 1"
    );
    let rows = state
        .db()
        .tenant_rows(reader.project_id, sql, values)
        .await?;
    let mut by_bucket: HashMap<NaiveDateTime, u64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let bucket: NaiveDateTime = row.try_get("", "bucket")?;
        let value: Option<i64> = row.try_get("", "value")?;
        *by_bucket.entry(bucket).or_default() += value.unwrap_or(0).max(0) as u64;
    }
    let data = if interval == Interval::Hour {
        // Hourly buckets are UTC hours shown in local time.
        let mut data = Vec::new();
        let mut at = from;
        while at < to {
            data.push(Bucket {
                start: at
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                value: by_bucket.get(&at.naive_utc()).copied().unwrap_or(0),
            });
            at += Duration::hours(1);
        }
        data
    } else {
        starts
            .into_iter()
            .map(|local| Bucket {
                start: instant(tz, local).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                value: by_bucket.get(&local).copied().unwrap_or(0),
            })
            .collect()
    };
    Ok(axum::Json(Trend {
        interval,
        measure,
        timezone: tz.name().to_owned(),
        data,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(trends))
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
    fn only_whole_hour_zones_are_re_bucketed() {
        let from = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let to = from + Duration::days(400);
        assert!(whole_hours(Tz::Europe__Berlin, from, to));
        assert!(whole_hours(Tz::America__New_York, from, to));
        assert!(!whole_hours(Tz::Asia__Kolkata, from, to));
        assert!(!whole_hours(Tz::Australia__Adelaide, from, to));
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
