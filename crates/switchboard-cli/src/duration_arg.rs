//! Durations given as command-line options, in humantime's syntax (`500ms`,
//! `2s`, `1m`), checked by clap: a value the command cannot use is a usage
//! error (exit 2) naming the option, not a panic (`bridge --report 0` made
//! `tokio::time::interval` panic), a silent change (`--ack-wait 100ms` was
//! raised to 1s) or a command that cannot work (`reply --command-timeout 0`
//! killed every command at once).

use std::time::Duration;

/// Any duration, zero included (`bridge --retry-for 0s`: give up at once).
pub(crate) fn zero_or_more(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::ZERO, "zero or more")
}

/// A duration above zero.
pub(crate) fn above_zero(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_nanos(1), "above zero")
}

/// A duration of one second or more (`listen --ack-wait`: brokers count it
/// in seconds or milliseconds, and a shorter one would redeliver what is
/// still being handled).
pub(crate) fn at_least_a_second(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_secs(1), "at least 1s")
}

fn at_least(text: &str, least: Duration, what: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration >= least => Ok(duration),
        Ok(_) => Err(format!("it must be {what}, e.g. 2s")),
        Err(error) => Err(format!("{error}; write e.g. 500ms, 2s or 1m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors() {
        assert_eq!(above_zero("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(
            above_zero("0s"),
            Err("it must be above zero, e.g. 2s".into())
        );
        assert_eq!(at_least_a_second("1s"), Ok(Duration::from_secs(1)));
        assert!(at_least_a_second("999ms")
            .unwrap_err()
            .contains("at least 1s"));
        assert!(above_zero("2").unwrap_err().contains("write e.g. 500ms"));
        assert_eq!(zero_or_more("0s"), Ok(Duration::ZERO));
        assert!(zero_or_more("-1s").is_err());
    }
}
