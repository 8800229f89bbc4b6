//! When to try again: exponential backoff with full jitter, and the provider's `Retry-After`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// No wait between attempts is longer than this, whatever the provider asks for.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(60);

/// The wait before retry number `retry` (0 for the first): the larger of a random time up to
/// `initial * 2^retry` (bounded by `max`) and the provider's `Retry-After`, at most [`MAX_DELAY`].
pub(crate) fn delay_before_retry(
    retry: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let bound = initial.saturating_mul(2u32.saturating_pow(retry)).min(max);
    let jittered = bound.mul_f64(random_fraction());
    jittered.max(retry_after.unwrap_or_default()).min(MAX_DELAY)
}

/// A number in `[0, 1]`. Jitter only needs to spread callers apart, not to be unpredictable, so
/// the standard library's randomly keyed hasher is enough and saves a dependency.
fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads `Retry-After` in its seconds form (`120`) or its HTTP-date form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, relative to `now`).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        // More seconds than a Duration holds still ask for the longest wait.
        return (seconds >= 0.0).then(|| Duration::try_from_secs_f64(seconds).unwrap_or(MAX_DELAY));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or_default())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate, the only HTTP-date form servers are allowed to send.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    // Four digits, as the format has them: a far-future year would overflow the time below.
    let year: i64 = year.parse().ok().filter(|year| (0..=9999).contains(year))?;
    let mut clock = time.split(':').map(|part| part.parse::<u64>().ok());
    let (hours, minutes, seconds) = (clock.next()??, clock.next()??, clock.next()??);
    if clock.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let total = days * 86_400 + hours * 3_600 + minutes * 60 + seconds;
    Some(UNIX_EPOCH + Duration::from_secs(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_DELAY)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_http_date(date), Some(at));
        assert_eq!(
            parse_retry_after(date, at - Duration::from_secs(30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(date, at + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        // A year past the format's four digits overflowed the time and panicked.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 300000000000 08:49:37 GMT"),
            None
        );
        assert!(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT").is_some());
    }

    #[test]
    fn backoff_is_jittered_within_its_bound_and_honours_retry_after() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(350);
        for retry in 0..10 {
            let bound = (initial * 2u32.pow(retry.min(8))).min(max);
            let delay = delay_before_retry(retry, initial, max, None);
            assert!(delay <= bound, "{delay:?} > {bound:?}");
        }
        let delay = delay_before_retry(0, initial, max, Some(Duration::from_secs(2)));
        assert_eq!(delay, Duration::from_secs(2));
        let delay = delay_before_retry(0, initial, max, Some(Duration::from_secs(3_600)));
        assert_eq!(delay, MAX_DELAY);
    }

    #[test]
    fn jitter_varies() {
        let samples: Vec<f64> = (0..20).map(|_| random_fraction()).collect();
        assert!(samples.iter().all(|f| (0.0..=1.0).contains(f)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
