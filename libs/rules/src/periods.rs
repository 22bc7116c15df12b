//! Calendar periods (day, ISO week from Monday, calendar month, all time) in a time zone.
//!
//! A period is identified by its key, the local date it starts on (the day itself, the week's
//! Monday, the month's first day), so that counting periods between two keys is calendar
//! arithmetic that does not depend on the zone. Instants come in only to find the key, and go out
//! only as a period's first instant.
//!
//! A local day is not always 24 hours: it is 23 or 25 around a DST change, and where a zone
//! moves its clocks at midnight (America/Santiago, Asia/Beirut in some years) local midnight
//! may not exist at all; a day then starts at its first instant that does exist.

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::document::Period;

/// The first instant of the period holding `at` in `tz`, and the first instant of the next
/// (`None` for all time, which starts at 1970-01-01T00:00:00Z in every zone).
pub fn period_bounds(
    period: Period,
    tz: Tz,
    at: DateTime<Utc>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    if period == Period::AllTime {
        return (DateTime::UNIX_EPOCH, None);
    }
    let key = period_key(period, tz, at);
    let start = local_start(tz, key);
    let end = next_key(period, key).map(|next| local_start(tz, next));
    (start, end)
}

/// The first instant of the period before the one holding `at` (for all time, its start).
pub fn previous_period_start(period: Period, tz: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    if period == Period::AllTime {
        return DateTime::UNIX_EPOCH;
    }
    let key = period_key(period, tz, at);
    let previous = match period {
        Period::Day => key.checked_sub_days(Days::new(1)),
        Period::Week => key.checked_sub_days(Days::new(7)),
        Period::Month => key.checked_sub_months(Months::new(1)),
        Period::AllTime => Some(key),
    };
    // Only the first representable date has no previous period; its own start stands in.
    local_start(tz, previous.unwrap_or(key))
}

/// The key of the period holding `at` in `tz`: the local date the period starts on.
pub(crate) fn period_key(period: Period, tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    let date = local_time(tz, at).date();
    match period {
        Period::Day => date,
        Period::Week => date
            .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
            .unwrap_or(date),
        Period::Month => date.with_day(1).unwrap_or(date),
        Period::AllTime => NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(date),
    }
}

/// The wall-clock time at `at` in `tz`. At the very ends of chrono's range the local time may
/// not be representable (chrono would panic); UTC's stands in there.
fn local_time(tz: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    let offset = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    at.naive_utc()
        .checked_add_offset(offset)
        .unwrap_or_else(|| at.naive_utc())
}

/// The key of the calendar month holding `at` in `tz`, which is what monthly freezes count by.
pub(crate) fn month_key(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    period_key(Period::Month, tz, at)
}

fn next_key(period: Period, key: NaiveDate) -> Option<NaiveDate> {
    match period {
        Period::Day => key.checked_add_days(Days::new(1)),
        Period::Week => key.checked_add_days(Days::new(7)),
        Period::Month => key.checked_add_months(Months::new(1)),
        Period::AllTime => None,
    }
}

/// How many periods `to` is after `from` (negative when before); both are keys of `period`.
pub(crate) fn periods_between(period: Period, from: NaiveDate, to: NaiveDate) -> i64 {
    match period {
        Period::Day => to.signed_duration_since(from).num_days(),
        Period::Week => to.signed_duration_since(from).num_days().div_euclid(7),
        Period::Month => {
            let months = |date: NaiveDate| i64::from(date.year()) * 12 + i64::from(date.month0());
            months(to) - months(from)
        }
        Period::AllTime => 0,
    }
}

/// The first instant of local date `date` in `tz`.
pub(crate) fn local_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(instant) => instant.with_timezone(&Utc),
        // Midnight happens twice when clocks go back over it; the day starts at the first.
        LocalResult::Ambiguous(first, second) => first.min(second).with_timezone(&Utc),
        LocalResult::None => first_instant_from(tz, midnight),
    }
}

/// The first instant whose local time in `tz` is `local` or later, for a `local` that falls in a
/// gap (clocks moved forward over it). chrono has no such query, so it is a binary search over
/// the seconds around `local`: local time only moves forward across a forward jump.
fn first_instant_from(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // UTC offsets stay within ±26 hours, so these two bracket the answer.
    const WINDOW: i64 = 2 * 86_400;
    let guess = local.and_utc().timestamp();
    let local_at =
        |seconds: i64| DateTime::from_timestamp(seconds, 0).map(|instant| local_time(tz, instant));
    let (mut before, mut after) = (guess.saturating_sub(WINDOW), guess.saturating_add(WINDOW));
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        match local_at(middle) {
            Some(time) if time >= local => after = middle,
            Some(_) => before = middle,
            // Out of chrono's range: nothing sensible to find, stop where we are.
            None => break,
        }
    }
    DateTime::from_timestamp(after, 0).unwrap_or_else(|| local.and_utc())
}
