//! Abaco's cron schedules (spec §7.6): `"<start> + <N> <unit>"` where `<start>` is
//! `YYYY-MM-DD HH` (UTC) or `now`, and `<unit>` is hour(s), day(s), week(s) or month(s).
//! Parsing, validation with Abaco's messages (a bad unit is a 400 here, not a 500), and the next
//! due time — computed so a schedule that fell due while the platform was down fires once.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

/// A parsed schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub start: DateTime<Utc>,
    pub every: u32,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Hour,
    Day,
    Week,
    Month,
}

/// Why a schedule was refused; the texts are Abaco's where it had one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("The cron is not in the correct format")]
    Format,
    #[error("The starting date {0} is not in the correct format")]
    StartFormat(String),
    #[error("The starting datetime is old. The current UTC time is {0}")]
    Old(String),
    #[error("{0} is an invalid unit of time")]
    Unit(String),
    #[error("The increment must be a positive whole number, got {0:?}")]
    Increment(String),
    #[error("The increment is too large: the execution after the first would fall beyond the year 262143")]
    TooFar,
}

/// The current UTC hour (schedules have hour granularity).
pub fn this_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    now.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
}

/// The repetition of a schedule: every `N` units.
pub fn interval(text: &str) -> Result<(u32, Unit), CronError> {
    split(text).map(|(_, every, unit)| (every, unit))
}

fn split(text: &str) -> Result<(&str, u32, Unit), CronError> {
    let (start, rest) = text.split_once(" + ").ok_or(CronError::Format)?;
    let mut parts = rest.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CronError::Format);
    };
    let every: u32 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| CronError::Increment(n.to_string()))?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "hour" | "hours" => Unit::Hour,
        "day" | "days" => Unit::Day,
        "week" | "weeks" => Unit::Week,
        "month" | "months" => Unit::Month,
        other => return Err(CronError::Unit(other.to_string())),
    };
    Ok((start, every, unit))
}

/// Parses and validates a schedule against `now` (a start in a past hour is refused).
pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Schedule, CronError> {
    let (start, every, unit) = split(text)?;
    let start = start.trim();
    let hour = this_hour(now);
    let start_time = if start.eq_ignore_ascii_case("now") {
        hour
    } else {
        let bad = || CronError::StartFormat(start.to_string());
        let (date, h) = start.split_once(' ').ok_or_else(bad)?;
        let mut ymd = date.split('-');
        let (Some(y), Some(m), Some(d), None) = (ymd.next(), ymd.next(), ymd.next(), ymd.next())
        else {
            return Err(bad());
        };
        let num = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
        let date = NaiveDate::from_ymd_opt(num(y)? as i32, num(m)?, num(d)?).ok_or_else(bad)?;
        let time = date.and_hms_opt(num(h)?, 0, 0).ok_or_else(bad)?;
        Utc.from_utc_datetime(&time)
    };
    if start_time < hour {
        return Err(CronError::Old(hour.format("%Y-%m-%d %H:00:00").to_string()));
    }
    let schedule = Schedule {
        start: start_time,
        every,
        unit,
    };
    // A schedule whose second firing cannot be represented would be accepted and never repeat.
    if schedule.nth(1).is_none() {
        return Err(CronError::TooFar);
    }
    Ok(schedule)
}

impl Schedule {
    /// The `k`-th firing time (`k = 0` is the start).
    pub fn nth(&self, k: u32) -> Option<DateTime<Utc>> {
        let n = i64::from(self.every) * i64::from(k);
        match self.unit {
            Unit::Hour => self.start.checked_add_signed(Duration::hours(n)),
            Unit::Day => self.start.checked_add_signed(Duration::days(n)),
            Unit::Week => self.start.checked_add_signed(Duration::weeks(n)),
            Unit::Month => add_months(self.start, n),
        }
    }

    /// The first firing time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Hours and days are regular: jump close, then step.
        let mut k: u32 = 0;
        if let Some(approx) = self.approx_step_seconds() {
            let elapsed = (after - self.start).num_seconds();
            if elapsed > 0 {
                k = u32::try_from(elapsed / approx)
                    .unwrap_or(u32::MAX)
                    .saturating_sub(1);
            }
        }
        loop {
            let t = self.nth(k)?;
            if t > after {
                return Some(t);
            }
            k = k.checked_add(1)?;
        }
    }

    fn approx_step_seconds(&self) -> Option<i64> {
        let unit = match self.unit {
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 28 * 86_400,
        };
        Some(unit * i64::from(self.every)).filter(|s| *s > 0)
    }
}

fn add_months(t: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    let total = i64::from(t.year()) * 12 + i64::from(t.month0()) + months;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = u32::try_from(total.rem_euclid(12)).ok()? + 1;
    // Clamp the day (Jan 31 + 1 month = Feb 28/29), as relativedelta does.
    let mut day = t.day();
    loop {
        if let Some(date) = NaiveDate::from_ymd_opt(year, month, day) {
            let time = date.and_hms_opt(t.hour(), 0, 0)?;
            return Some(Utc.from_utc_datetime(&time));
        }
        day = day.checked_sub(1)?;
    }
}

/// Abaco's display of `cron_next_ex`: `"Y-M-D H"` without zero padding.
pub fn display_next(t: DateTime<Utc>) -> String {
    format!("{}-{}-{} {}", t.year(), t.month(), t.day(), t.hour())
}

/// Reads a stored `cron_next_ex` back.
pub fn parse_next(text: &str) -> Option<DateTime<Utc>> {
    let (date, h) = text.trim().split_once(' ')?;
    let mut ymd = date.split('-').map(|p| p.parse::<u32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (ymd.next(), ymd.next(), ymd.next()) else {
        return None;
    };
    let time = NaiveDate::from_ymd_opt(y as i32, m, d)?.and_hms_opt(h.parse().ok()?, 0, 0)?;
    Some(Utc.from_utc_datetime(&time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn check(text: &str, expect: Result<(DateTime<Utc>, u32, Unit), CronError>) {
        let now = at(2026, 11, 23, 20) + Duration::minutes(30);
        assert_eq!(
            parse(text, now).map(|s| (s.start, s.every, s.unit)),
            expect,
            "{text}"
        );
    }

    #[test]
    fn parses_abaco_schedules() {
        check(
            "2030-06-26 16 + 1 hour",
            Ok((at(2030, 6, 26, 16), 1, Unit::Hour)),
        );
        check("now + 2 days", Ok((at(2026, 11, 23, 20), 2, Unit::Day)));
        check(
            "2078-09-6 20 + 3 months",
            Ok((at(2078, 9, 6, 20), 3, Unit::Month)),
        );
        check(
            "2030-06-26 16 + 1 fortnight",
            Err(CronError::Unit("fortnight".into())),
        );
        check("2030-06-26 16 1 hour", Err(CronError::Format));
        check(
            "2030-06 16 + 1 hour",
            Err(CronError::StartFormat("2030-06 16".into())),
        );
        check(
            "2020-01-01 01 + 1 hour",
            Err(CronError::Old("2026-11-23 20:00:00".into())),
        );
        check("now + 0 hours", Err(CronError::Increment("0".into())));
        check("now + 2147483648 days", Err(CronError::TooFar));
        check("now + 4294967295 months", Err(CronError::TooFar));
        check(
            "now + 1000000 days",
            Ok((at(2026, 11, 23, 20), 1_000_000, Unit::Day)),
        );
    }

    #[test]
    fn next_fire_skips_missed_slots_once() {
        let s = parse("2030-01-31 10 + 1 month", at(2029, 1, 1, 0)).unwrap();
        assert_eq!(s.nth(1), Some(at(2030, 2, 28, 10)));
        let s = parse("2030-01-01 00 + 6 hours", at(2029, 1, 1, 0)).unwrap();
        // Down for two days: the next firing is the first slot after now, not every missed one.
        assert_eq!(s.next_after(at(2030, 1, 3, 7)), Some(at(2030, 1, 3, 12)));
        assert_eq!(s.next_after(at(2029, 12, 31, 0)), Some(at(2030, 1, 1, 0)));
        assert_eq!(display_next(at(2030, 1, 3, 7)), "2030-1-3 7");
        assert_eq!(parse_next("2030-1-3 7"), Some(at(2030, 1, 3, 7)));
    }
}
