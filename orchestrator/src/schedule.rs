//! When a table is due: `every 15m`, `every 2h`, `daily 03:00`, `daily 07:00,13:00` (UTC),
//! or a standard cron expression (`0 */6 * * *`, evaluated in UTC).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A fixed interval after the last successful sync started.
    Every(Duration),
    /// At these times of day, UTC.
    Daily(Vec<NaiveTime>),
    /// A cron expression, UTC.
    Cron(Box<Cron>),
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(interval) = text.strip_prefix("every ") {
            let interval = humantime::parse_duration(interval.trim()).map_err(|e| {
                format!("`{text}`: `{interval}` is not an interval ({e}); write e.g. `every 15m`")
            })?;
            if interval < Duration::from_secs(60) {
                return Err(format!(
                    "`{text}` is too frequent; the shortest interval is 1m"
                ));
            }
            return Ok(Schedule::Every(interval));
        }
        if let Some(times) = text.strip_prefix("daily ") {
            let mut parsed = times
                .split(',')
                .map(|t| {
                    NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| {
                        format!("`{text}`: `{}` is not a time of day; write e.g. `daily 03:00` or `daily 07:00,13:00` (UTC)", t.trim())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            parsed.sort();
            parsed.dedup();
            return Ok(Schedule::Daily(parsed));
        }
        let cron = Cron::from_str(text).map_err(|e| {
            format!(
                "`{text}` is not a schedule ({e}); write `every 15m`, `every 2h`, `daily 03:00`, `daily 07:00,13:00` or a cron expression such as `0 */6 * * *`"
            )
        })?;
        Ok(Schedule::Cron(Box::new(cron)))
    }
}

impl Schedule {
    /// The first time after `last` (the start of the last successful sync) that a sync is
    /// due.
    pub fn next_after(&self, last: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(interval) => {
                last + chrono::Duration::from_std(*interval).unwrap_or(chrono::Duration::MAX)
            }
            Schedule::Daily(times) => {
                let day = last.date_naive();
                (0..2)
                    .flat_map(|offset| {
                        times
                            .iter()
                            .map(move |t| (day + chrono::Days::new(offset)).and_time(*t).and_utc())
                    })
                    .find(|at| *at > last)
                    .unwrap_or(last + chrono::Duration::days(1))
            }
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&last, false)
                .unwrap_or(last + chrono::Duration::days(365)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn forms_parse_and_give_the_next_time() {
        let last = at("2026-11-22T05:10:00Z");
        let every: Schedule = "every 15m".parse().unwrap();
        assert_eq!(every.next_after(last), at("2026-11-22T05:25:00Z"));
        let every: Schedule = "every 2h".parse().unwrap();
        assert_eq!(every.next_after(last), at("2026-11-22T07:10:00Z"));
        let daily: Schedule = "daily 03:00".parse().unwrap();
        assert_eq!(daily.next_after(last), at("2026-11-23T03:00:00Z"));
        let twice: Schedule = "daily 13:00, 07:00".parse().unwrap();
        assert_eq!(twice.next_after(last), at("2026-11-22T07:00:00Z"));
        assert_eq!(
            twice.next_after(at("2026-11-22T07:00:00Z")),
            at("2026-11-22T13:00:00Z")
        );
        let cron: Schedule = "0 */6 * * *".parse().unwrap();
        assert_eq!(cron.next_after(last), at("2026-11-22T06:00:00Z"));
    }

    #[test]
    fn bad_schedules_say_what_to_write() {
        for (text, needle) in [
            ("every soon", "is not an interval"),
            ("every 10s", "too frequent"),
            ("daily 25:00", "not a time of day"),
            ("hourly-ish", "is not a schedule"),
            ("61 * * * *", "is not a schedule"),
        ] {
            let err = text.parse::<Schedule>().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
