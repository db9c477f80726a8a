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

/// Host, port and password of a `redis://[user[:password]@]host[:port][/db]` URL.
fn endpoint(url: &str) -> (String, String, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let password = userinfo
        .map(|u| u.split_once(':').map_or(u, |(_, p)| p).to_string())
        .filter(|p| !p.is_empty());
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => (h, p),
        _ => (hostport, "6379"),
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    (host.to_string(), port.to_string(), password)
}

async fn measure(url: &str, size: usize, msgs: u64) -> Result<f64, RunError> {
    let (host, port, password) = endpoint(url);
    let mut command = tokio::process::Command::new("redis-benchmark");
    command.args(["-h", &host, "-p", &port, "-c", "1", "-q", "--csv"]);
    command.args(["-P", &PIPELINE.to_string(), "-n", &msgs.to_string()]);
    if let Some(password) = password {
        command.args(["-a", &password]);
    }
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
    parse_rps(&stdout).ok_or_else(|| RunError::RedisBenchmarkOutput(stdout.trim().to_string()))
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
        assert_eq!(
            endpoint("redis://:pw@h:7000/0"),
            ("h".into(), "7000".into(), Some("pw".into()))
        );
        assert_eq!(
            endpoint("redis://127.0.0.1"),
            ("127.0.0.1".into(), "6379".into(), None)
        );
    }
}
