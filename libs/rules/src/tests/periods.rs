use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::at;
use crate::periods::{local_start, period_key, periods_between};
use crate::{Period, period_bounds, previous_period_start};

const BERLIN: Tz = chrono_tz::Europe::Berlin;

fn bounds(period: Period, tz: Tz, time: &str) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    period_bounds(period, tz, at(time))
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn a_day_in_utc_is_midnight_to_midnight() {
    let (start, end) = bounds(Period::Day, chrono_tz::UTC, "2024-05-10T13:14:15Z");
    assert_eq!(start, at("2024-05-10T00:00:00Z"));
    assert_eq!(end, Some(at("2024-05-11T00:00:00Z")));
    // The end is exclusive: midnight belongs to the next day.
    let (start, _) = bounds(Period::Day, chrono_tz::UTC, "2024-05-11T00:00:00Z");
    assert_eq!(start, at("2024-05-11T00:00:00Z"));
}

#[test]
fn the_spring_dst_day_in_berlin_has_23_hours() {
    // Last Sunday of March 2024: 02:00 CET became 03:00 CEST.
    let (start, end) = bounds(Period::Day, BERLIN, "2024-03-31T12:00:00Z");
    assert_eq!(start, at("2024-03-30T23:00:00Z"));
    assert_eq!(end, Some(at("2024-03-31T22:00:00Z")));
    assert_eq!(end.unwrap() - start, Duration::hours(23));
    // 23:30 UTC on the 30th is already the 31st in Berlin.
    assert_eq!(
        period_key(Period::Day, BERLIN, at("2024-03-30T23:30:00Z")),
        date(2024, 3, 31)
    );
}

#[test]
fn the_autumn_dst_day_in_berlin_has_25_hours() {
    // Last Sunday of October 2024: 03:00 CEST became 02:00 CET.
    let (start, end) = bounds(Period::Day, BERLIN, "2024-10-27T01:30:00Z");
    assert_eq!(start, at("2024-10-26T22:00:00Z"));
    assert_eq!(end, Some(at("2024-10-27T23:00:00Z")));
    assert_eq!(end.unwrap() - start, Duration::hours(25));
    // Both passes through 02:30 local are the same day.
    for time in ["2024-10-27T00:30:00Z", "2024-10-27T01:30:00Z"] {
        assert_eq!(
            period_key(Period::Day, BERLIN, at(time)),
            date(2024, 10, 27)
        );
    }
}

#[test]
fn weeks_start_on_monday_in_the_zone() {
    // Sunday 7 January 2024, 23:59 in Berlin, is the last minute of the week of Monday the 1st.
    let (start, end) = bounds(Period::Week, BERLIN, "2024-01-07T22:59:00Z");
    assert_eq!(start, at("2023-12-31T23:00:00Z"));
    assert_eq!(end, Some(at("2024-01-07T23:00:00Z")));
    // A minute later it is Monday the 8th there, but still Sunday in UTC.
    let (start, _) = bounds(Period::Week, BERLIN, "2024-01-07T23:00:00Z");
    assert_eq!(start, at("2024-01-07T23:00:00Z"));
    let (start, _) = bounds(Period::Week, chrono_tz::UTC, "2024-01-07T23:00:00Z");
    assert_eq!(start, at("2024-01-01T00:00:00Z"));
    // An ISO week across the new year.
    let (start, end) = bounds(Period::Week, chrono_tz::UTC, "2025-01-01T12:00:00Z");
    assert_eq!(start, at("2024-12-30T00:00:00Z"));
    assert_eq!(end, Some(at("2025-01-06T00:00:00Z")));
    // A week holding the spring change is 167 hours long.
    let (start, end) = bounds(Period::Week, BERLIN, "2024-03-31T12:00:00Z");
    assert_eq!(end.unwrap() - start, Duration::hours(167));
}

#[test]
fn months_are_calendar_months_in_the_zone() {
    let (start, end) = bounds(Period::Month, chrono_tz::UTC, "2024-02-29T12:00:00Z");
    assert_eq!(start, at("2024-02-01T00:00:00Z"));
    assert_eq!(end, Some(at("2024-03-01T00:00:00Z")));
    // March in Berlin starts in CET and ends in CEST.
    let (start, end) = bounds(Period::Month, BERLIN, "2024-03-15T12:00:00Z");
    assert_eq!(start, at("2024-02-29T23:00:00Z"));
    assert_eq!(end, Some(at("2024-03-31T22:00:00Z")));
    // December rolls into the next year.
    let (_, end) = bounds(Period::Month, BERLIN, "2024-12-31T12:00:00Z");
    assert_eq!(end, Some(at("2024-12-31T23:00:00Z")));
}

#[test]
fn all_time_starts_at_the_epoch_and_never_ends() {
    for tz in [chrono_tz::UTC, BERLIN, chrono_tz::Pacific::Kiritimati] {
        assert_eq!(
            period_bounds(Period::AllTime, tz, at("2024-05-10T13:14:15Z")),
            (DateTime::UNIX_EPOCH, None)
        );
        assert_eq!(
            previous_period_start(Period::AllTime, tz, at("2024-05-10T13:14:15Z")),
            DateTime::UNIX_EPOCH
        );
    }
}

#[test]
fn the_previous_period_is_one_step_back_in_the_calendar() {
    let time = at("2024-03-31T12:00:00Z");
    assert_eq!(
        previous_period_start(Period::Day, BERLIN, time),
        at("2024-03-29T23:00:00Z")
    );
    assert_eq!(
        previous_period_start(Period::Week, BERLIN, time),
        at("2024-03-17T23:00:00Z")
    );
    assert_eq!(
        previous_period_start(Period::Month, BERLIN, time),
        at("2024-01-31T23:00:00Z")
    );
    let (start, _) = bounds(Period::Month, BERLIN, "2024-03-31T12:00:00Z");
    let previous = previous_period_start(Period::Month, BERLIN, time);
    assert_eq!(
        period_bounds(Period::Month, BERLIN, previous).1,
        Some(start)
    );
}

/// Checks that `start` is the first instant of local `day` in `tz`.
#[track_caller]
fn starts_day(tz: Tz, day: NaiveDate, start: DateTime<Utc>) {
    assert_eq!(
        start.with_timezone(&tz).date_naive(),
        day,
        "{start} in {tz}"
    );
    let before = start - Duration::seconds(1);
    assert!(
        before.with_timezone(&tz).date_naive() < day,
        "{before} in {tz}"
    );
}

#[test]
fn a_day_whose_midnight_does_not_exist_starts_at_its_first_instant() {
    // Beirut moved its clocks from 00:00 to 01:00 on 31 March 2024.
    let beirut = chrono_tz::Asia::Beirut;
    let (start, end) = bounds(Period::Day, beirut, "2024-03-31T10:00:00Z");
    assert_eq!(start, at("2024-03-30T22:00:00Z"));
    assert_eq!(
        start.with_timezone(&beirut).format("%H:%M").to_string(),
        "01:00"
    );
    assert_eq!(end.unwrap() - start, Duration::hours(23));
    starts_day(beirut, date(2024, 3, 31), start);
    // Santiago did the same on 8 September 2024 (24:00 on the 7th became 01:00 on the 8th).
    let santiago = chrono_tz::America::Santiago;
    let start = local_start(santiago, date(2024, 9, 8));
    assert_eq!(start, at("2024-09-08T04:00:00Z"));
    starts_day(santiago, date(2024, 9, 8), start);
    assert_eq!(
        local_start(santiago, date(2024, 9, 7)),
        at("2024-09-07T04:00:00Z")
    );
}

#[test]
fn a_day_whose_midnight_happens_twice_starts_at_the_first() {
    // Havana went back from 01:00 to 00:00 on 5 November 2023.
    let havana = chrono_tz::America::Havana;
    let start = local_start(havana, date(2023, 11, 5));
    assert_eq!(start, at("2023-11-05T04:00:00Z"));
    starts_day(havana, date(2023, 11, 5), start);
    assert_eq!(
        local_start(havana, date(2023, 11, 6)) - start,
        Duration::hours(25)
    );
}

#[test]
fn a_skipped_day_is_empty() {
    // Samoa skipped 30 December 2011 when it crossed the date line.
    let apia = chrono_tz::Pacific::Apia;
    let skipped = local_start(apia, date(2011, 12, 30));
    assert_eq!(skipped, local_start(apia, date(2011, 12, 31)));
    let (start, end) = period_bounds(Period::Day, apia, skipped - Duration::seconds(1));
    assert_eq!(start.with_timezone(&apia).date_naive(), date(2011, 12, 29));
    assert_eq!(end, Some(skipped));
}

#[test]
fn every_day_of_a_year_tiles_time_in_awkward_zones() {
    let zones = [
        BERLIN,
        chrono_tz::Asia::Beirut,
        chrono_tz::America::Santiago,
        chrono_tz::America::Havana,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kathmandu,
    ];
    for tz in zones {
        let mut time = tz
            .with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        for _ in 0..366 {
            let (start, end) = period_bounds(Period::Day, tz, time);
            let end = end.unwrap();
            assert!(start <= time && time < end, "{time} in {tz}");
            let (next_start, _) = period_bounds(Period::Day, tz, end);
            assert_eq!(next_start, end, "days meet in {tz}");
            assert!(end - start >= Duration::hours(22) && end - start <= Duration::hours(26));
            time = end + Duration::hours(12);
        }
    }
}

#[test]
fn periods_between_counts_calendar_steps() {
    assert_eq!(
        periods_between(Period::Day, date(2024, 2, 28), date(2024, 3, 1)),
        2
    );
    assert_eq!(
        periods_between(Period::Day, date(2024, 3, 1), date(2024, 2, 28)),
        -2
    );
    assert_eq!(
        periods_between(Period::Week, date(2024, 1, 1), date(2024, 1, 15)),
        2
    );
    assert_eq!(
        periods_between(Period::Week, date(2024, 1, 15), date(2024, 1, 1)),
        -2
    );
    assert_eq!(
        periods_between(Period::Month, date(2023, 12, 1), date(2024, 2, 1)),
        2
    );
    assert_eq!(
        periods_between(Period::Month, date(2024, 2, 1), date(2023, 12, 1)),
        -2
    );
}

#[test]
fn extreme_instants_do_not_panic() {
    for time in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        DateTime::UNIX_EPOCH,
    ] {
        for period in [Period::Day, Period::Week, Period::Month, Period::AllTime] {
            for tz in [
                chrono_tz::UTC,
                chrono_tz::Pacific::Kiritimati,
                chrono_tz::Pacific::Niue,
            ] {
                let _ = period_bounds(period, tz, time);
                let _ = previous_period_start(period, tz, time);
            }
        }
    }
}
