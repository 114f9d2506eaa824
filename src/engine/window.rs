//! Which time range a run covers. Windows are half-open `[start, end)`, contiguous and
//! never overlapping: each starts where the previous one ended (the watermark).

use chrono::{DateTime, Duration, TimeDelta, Utc};

use crate::model::fields::Record;
use crate::model::{connector, parse_datetime};

/// A half-open time range `[start, end)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

fn field_time(rec: &Record, field: &str) -> Option<DateTime<Utc>> {
    rec.str(field).and_then(|s| parse_datetime(s).ok())
}

/// How far back the first window of a recurring connector reaches: its interval, or
/// for a cron schedule the time between its two most recent fires.
pub fn period(rec: &Record, now: DateTime<Utc>, minute: TimeDelta) -> TimeDelta {
    if let Some(schedule) = rec.str("cron_expression").and_then(|e| connector::parse_cron(e).ok()) {
        for back in [Duration::hours(1), Duration::days(1), Duration::days(32), Duration::days(367)] {
            let fires: Vec<_> = schedule.after(&(now - back)).take_while(|t| *t <= now).collect();
            if let [.., a, b] = fires[..] {
                return b - a;
            }
        }
    }
    minute * rec.int("interval_minutes").unwrap_or(0).max(1) as i32
}

/// The end of a delta window started now: `now - settle_seconds`.
pub fn settled(rec: &Record, now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::seconds(rec.int("settle_seconds").unwrap_or(120).max(0))
}

/// The next delta window of a recurring connector: `[watermark, now - settle)`. Without
/// a watermark it starts at `start_datetime`, else one period before its end.
pub fn delta_window(
    rec: &Record,
    watermark: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    minute: TimeDelta,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = settled(rec, now);
    let start =
        watermark.or_else(|| field_time(rec, "start_datetime")).unwrap_or_else(|| end - period(rec, now, minute));
    (start, end)
}

/// A one-time job's own window `[start_datetime, end_datetime)`.
pub fn onetime_window(rec: &Record) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some((field_time(rec, "start_datetime")?, field_time(rec, "end_datetime")?))
}

/// The next time a recurring connector fires after `last` (its previous fire, or the
/// start): every interval, or at the cron expression's next time.
pub fn next_fire(rec: &Record, after: DateTime<Utc>, minute: TimeDelta) -> DateTime<Utc> {
    match rec.str("cron_expression").and_then(|e| connector::parse_cron(e).ok()) {
        Some(schedule) => schedule.after(&after).next().unwrap_or(after + Duration::days(366)),
        None => after + period(rec, after, minute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_datetime(s).unwrap()
    }

    #[test]
    fn first_window_reaches_one_interval_back_and_settles() {
        let mut r = Record::default();
        r.set("interval_minutes", 60);
        r.set("settle_seconds", 120);
        let (s, e) = delta_window(&r, None, t("2026-01-01 12:00:00"), Duration::minutes(1));
        assert_eq!(e, t("2026-01-01 11:58:00"));
        assert_eq!(s, t("2026-01-01 10:58:00"));
        let (s2, _) = delta_window(&r, Some(e), t("2026-01-01 13:00:00"), Duration::minutes(1));
        assert_eq!(s2, e, "the next window starts where the last ended");
    }

    #[test]
    fn cron_period_is_the_gap_between_fires() {
        let mut r = Record::default();
        r.set("cron_expression", "0 2 * * *");
        assert_eq!(period(&r, t("2026-01-05 12:00:00"), Duration::minutes(1)), Duration::days(1));
    }
}
