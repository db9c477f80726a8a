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

/// An ack wait (`listen --ack-wait`): one second or more (brokers count it
/// in seconds or milliseconds, and a shorter one would redeliver what is
/// still being handled), at most [`switchboard::Durable::MAX_ACK_WAIT`].
pub(crate) fn ack_wait(text: &str) -> Result<Duration, String> {
    let duration = at_least(text, Duration::from_secs(1), "at least 1s")?;
    if duration > switchboard::Durable::MAX_ACK_WAIT {
        // A value the broker cannot store failed only once subscribing (or,
        // on Redis, on every read).
        return Err("it must be at most 365d, the longest ack wait every broker stores".into());
    }
    Ok(duration)
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
        assert_eq!(ack_wait("1s"), Ok(Duration::from_secs(1)));
        assert!(ack_wait("999ms").unwrap_err().contains("at least 1s"));
        assert!(above_zero("2").unwrap_err().contains("write e.g. 500ms"));
        assert_eq!(ack_wait("365d"), Ok(Duration::from_secs(365 * 86_400)));
        assert!(ack_wait("366d").unwrap_err().contains("at most 365d"));
        assert_eq!(zero_or_more("0s"), Ok(Duration::ZERO));
        assert!(zero_or_more("-1s").is_err());
    }
}
