//! The `--redis-benchmark` row: Redis's own load generator publishing from one
//! pipelined connection, the ceiling a single Redis connection reaches.

use crate::error::RunError;
use crate::report::Row;
use crate::target::Target;
use crate::Mode;

/// Commands `redis-benchmark` keeps in flight on its one connection.
const PIPELINE: u32 = 256;

/// Runs `redis-benchmark -c 1 -P 256 -n msgs PUBLISH <channel> <payload>` and
/// reports its requests per second as a `pub` row.
pub(crate) async fn run(target: &Target, size: usize, msgs: u64) -> Row {
    let mut row = Row::blank(
        &target.kind,
        &target.url,
        Mode::Pub,
        size,
        "redis-benchmark",
    );
    match measure(&target.url, size, msgs).await {
        Ok(rate) => {
            row.messages = msgs;
            row.msgs_per_s = Some(rate);
            row.mb_per_s = Some(rate * size as f64 / 1e6);
            row.publish_msgs_per_s = Some(rate);
            row.note = Some(format!(
                "redis-benchmark -c 1 -P {PIPELINE} -n {msgs} PUBLISH (client CPU not measured)"
            ));
        }
        Err(error) => row.fail("error", format!("redis-benchmark: {}", error.note())),
    }
    row
}

/// Where `redis-benchmark` connects: a `redis://[[user]:password@]host[:port]`
/// URL read with the same parsing and strict percent-decoding as the adapter's.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, RunError> {
        let parsed = url::Url::parse(url).map_err(|e| switchboard::Error::invalid_url(url, e))?;
        let user = match parsed.username() {
            "" => None,
            user => Some(switchboard::options::decode(url, "user name", user)?),
        };
        let password = parsed
            .password()
            .map(|p| switchboard::options::decode(url, "password", p))
            .transpose()?;
        Ok(Endpoint {
            host: parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .unwrap_or("127.0.0.1")
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: parsed.port().unwrap_or(6379),
            user,
            password,
        })
    }
}

async fn measure(url: &str, size: usize, msgs: u64) -> Result<f64, RunError> {
    let endpoint = Endpoint::parse(url)?;
    let mut command = tokio::process::Command::new("redis-benchmark");
    command.args(["-h", &endpoint.host, "-p", &endpoint.port.to_string()]);
    command.args(["-c", "1", "-q", "--csv"]);
    command.args(["-P", &PIPELINE.to_string(), "-n", &msgs.to_string()]);
    if let Some(user) = &endpoint.user {
        command.args(["--user", user]);
    }
    // In the environment, never with `-a`: arguments show in `ps`. (Builds
    // that read only `-a` then fail with NOAUTH, reported as such.)
    match &endpoint.password {
        Some(password) => command.env("REDISCLI_AUTH", password),
        None => command.env_remove("REDISCLI_AUTH"),
    };
    command.args(["PUBLISH", "bench.redis-benchmark", &"x".repeat(size)]);
    let output = command
        .output()
        .await
        .map_err(RunError::RedisBenchmarkSpawn)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(RunError::RedisBenchmarkExit {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_rps(&stdout).ok_or_else(|| {
        let output = stdout.trim().to_string();
        match output.lines().find(|line| line.contains("NOAUTH")) {
            Some(refusal) if endpoint.password.is_some() => {
                RunError::RedisBenchmarkAuth(refusal.trim().to_string())
            }
            _ => RunError::RedisBenchmarkOutput(output),
        }
    })
}

/// The requests per second in `redis-benchmark --csv` output (second field of
/// the last data line).
fn parse_rps(csv: &str) -> Option<f64> {
    csv.lines()
        .rev()
        .filter(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .find_map(|l| l.split("\",\"").nth(1)?.trim_matches('"').parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_csv_and_urls() {
        let csv =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"PUBLISH chan x\",\"1962666.75\",\"0.118\"\n";
        assert_eq!(parse_rps(csv), Some(1_962_666.75));
        let endpoint = |url| Endpoint::parse(url).unwrap();
        assert_eq!(
            endpoint("redis://:p%40ss@h:7000/0"),
            Endpoint {
                host: "h".into(),
                port: 7000,
                user: None,
                password: Some("p@ss".into())
            }
        );
        assert_eq!(
            endpoint("redis://127.0.0.1"),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 6379,
                user: None,
                password: None
            }
        );
        // A lone user name is a user, not a password.
        assert_eq!(endpoint("redis://alice@h").user.as_deref(), Some("alice"));
        assert_eq!(endpoint("redis://alice@h").password, None);
        assert_eq!(
            endpoint("redis://alice:pw@[::1]:7000").host,
            "::1".to_string()
        );
        assert!(Endpoint::parse("redis://:p%zz@h").is_err());
    }
}
