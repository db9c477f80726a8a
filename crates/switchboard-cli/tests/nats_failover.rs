//! `listen` connected to a 3-node NATS cluster of the test's own
//! (`nats://h1:p1,h2:p2,h3:p3`) says on stderr which node it moved to when
//! the node it is on is killed: one warning naming the new server and the old
//! one, host and port only. (`-v` also names the first server.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{unique, Process, Stdout, PATIENCE};
use switchboard_testkit::NatsCluster;

/// The port of the first `at 127.0.0.1:PORT` after `marker` in a log line.
fn port_after(line: &str, marker: &str) -> u16 {
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {line:?}"));
    let rest = &line[start..];
    let at = " at 127.0.0.1:";
    let rest = &rest[rest
        .find(at)
        .unwrap_or_else(|| panic!("a loopback address in {line:?}"))
        + at.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn listen_logs_the_server_it_fails_over_to() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    let subject = unique("failover");
    let url = cluster.url();
    let listener = Process::start(
        &["--broker", &url, "-v", "listen", "--on", &subject],
        Stdout::Read,
    );
    let first = listener.wait_stderr("nats: connected to server", PATIENCE);
    let first_port = port_after(&first, "connected to server");
    let victim = cluster
        .index_of_port(first_port)
        .unwrap_or_else(|| panic!("{first:?} names a node of the cluster"));
    assert!(first.contains(&format!("sbtest-node-{victim} at 127.0.0.1:{first_port}")));
    cluster.nodes[victim].process.kill();

    let switch = listener.wait_stderr("nats: now on server", PATIENCE);
    assert!(
        switch.contains("WARN"),
        "a warning, shown without -v: {switch:?}"
    );
    let now_port = port_after(&switch, "now on server");
    let now = cluster
        .index_of_port(now_port)
        .unwrap_or_else(|| panic!("{switch:?} names a node of the cluster"));
    assert_ne!(now, victim, "{switch}");
    assert!(
        switch.contains(&format!(
            "now on server sbtest-node-{now} at 127.0.0.1:{now_port} (was sbtest-node-{victim} at 127.0.0.1:{first_port})"
        )),
        "{switch}"
    );
    listener.signal("INT");
    let (_, _, stderr) = listener.wait(PATIENCE);
    assert_eq!(
        stderr.matches("nats: now on server").count(),
        1,
        "one line per switch: {stderr}"
    );
}
