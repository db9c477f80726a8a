//! Secrets never reach the terminal: every server of a NATS URL list is
//! redacted (errors, `listening on`, `worker ready`, `-v` lines), and `-vvv`
//! (or `RUST_LOG=trace`) does not print the client libraries' wire traces
//! that hold the password, in text or as bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::{
    assert_one_error_line, broker_url, switchboard, unique, wait_output, Listener, TempDir,
    PATIENCE,
};
use switchboard_testkit::{free_port, NatsServer};

/// `secret` as the byte values a `Debug` of its bytes prints, without spaces
/// (`103,117,101,115,116` for "guest").
fn as_bytes(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Fails if `output` shows `secret` in text or as byte values.
fn assert_hidden(output: &str, secret: &str, what: &str) {
    assert_hidden_as_bytes(output, secret, what);
    assert!(
        !output.contains(secret),
        "{what}: the secret {secret:?} is shown:\n{output}"
    );
}

/// Fails if `output` shows `secret` as byte values, or after a `:` (a URL's
/// password) or a NUL (a SASL PLAIN response): for a password that is also
/// the user name, which may be shown.
fn assert_hidden_as_bytes(output: &str, secret: &str, what: &str) {
    for shown in [
        format!(":{secret}@"),
        format!("\0{secret}"),
        format!("\\0{secret}"),
    ] {
        assert!(
            !output.contains(&shown),
            "{what}: the secret {secret:?} is shown as {shown:?}:\n{output}"
        );
    }
    let packed: String = output.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        !packed.contains(&as_bytes(secret)),
        "{what}: the secret {secret:?} is shown as bytes:\n{output}"
    );
}

/// Runs `switchboard ARGS` with `env`, returns its stderr.
fn stderr_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = switchboard();
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = wait_output(command.spawn().unwrap(), PATIENCE);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn amqp_passwords_stay_out_of_trace_output() {
    let Some(url) = broker_url("amqp", "amqp_passwords_stay_out_of_trace_output") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let password = parsed.password().unwrap_or("guest").to_string();
    let subject = format!("{}.x", unique("vvv"));
    for (flags, env) in [
        (vec!["-vvv"], vec![]),
        (vec![], vec![("RUST_LOG", "trace")]),
    ] {
        let mut args = flags.clone();
        args.extend([
            "--broker",
            url.as_str(),
            "send",
            "--on",
            subject.as_str(),
            "hi",
        ]);
        let stderr = stderr_of(&args, &env);
        assert!(
            stderr.contains("TRACE") || stderr.contains("DEBUG"),
            "{flags:?} {env:?} shows the traces:\n{stderr}"
        );
        // The shared broker's user is `guest` with the password `guest`.
        assert_hidden_as_bytes(&stderr, &password, &format!("send {flags:?} {env:?}"));

        // A wrong password is sent too (and refused): not shown either.
        let mut wrong = parsed.clone();
        wrong.set_password(Some("Zx9wrongPw")).unwrap();
        let mut args = flags.clone();
        args.extend([
            "--broker",
            wrong.as_str(),
            "send",
            "--on",
            subject.as_str(),
            "hi",
        ]);
        let stderr = stderr_of(&args, &env);
        assert!(stderr.contains("authentication failed"), "{stderr}");
        assert_hidden(
            &stderr,
            "Zx9wrongPw",
            &format!("wrong password {flags:?} {env:?}"),
        );
    }

    // listen too.
    let pattern = format!("{}.>", unique("vvv"));
    let listener = Listener::start(&url, &["--on", &pattern, "--count", "1", "-vvv"]).unwrap();
    let output = harness::run(
        &url,
        &["send", "--on", &pattern.replace('>', "y"), "hello"],
        b"",
    );
    assert!(output.status.success());
    let (status, stderr) = listener.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert_hidden_as_bytes(&stderr, &password, "listen -vvv");
}

/// async-nats redacts its CONNECT in traces itself; this keeps it so.
#[test]
fn nats_passwords_stay_out_of_trace_output() {
    let Some(server) = NatsServer::start(&["--user", "alice", "--pass", "Qv7natsPw"]) else {
        return;
    };
    let url = format!("nats://alice:Qv7natsPw@127.0.0.1:{}", server.port());
    let token_server = NatsServer::start(&["--auth", "Tk5natsToken"]).unwrap();
    let token_url = format!("nats://Tk5natsToken@127.0.0.1:{}", token_server.port());
    for (flags, env) in [
        (vec!["-vvv"], vec![]),
        (vec![], vec![("RUST_LOG", "trace")]),
    ] {
        for (url, secret) in [(&url, "Qv7natsPw"), (&token_url, "Tk5natsToken")] {
            let mut args = flags.clone();
            args.extend(["--broker", url.as_str(), "send", "--on", "a.b", "hi"]);
            let stderr = stderr_of(&args, &env);
            assert!(stderr.contains("TRACE"), "{stderr}");
            assert_hidden(&stderr, secret, &format!("send {flags:?} {env:?}"));
        }
    }
}

/// Every server of a list is redacted, with a password or a token, in the
/// ready lines, in errors and in `-v` output.
#[test]
fn every_server_of_a_nats_list_is_redacted() {
    let Some(server) = NatsServer::start(&["--user", "u", "--pass", "Pw1first"]) else {
        return;
    };
    let nobody = free_port();
    let list = format!(
        "nats://u:Pw1first@127.0.0.1:{},nats://u2:S3cretSecond@127.0.0.1:{nobody},tls://Tok3nThird@127.0.0.1:{nobody}",
        server.port()
    );
    let secrets = ["Pw1first", "S3cretSecond", "Tok3nThird"];

    // listening on, and -v lines.
    let subject = unique("list");
    let listener = Listener::start(&list, &["--on", &subject, "--count", "1", "-v"]).unwrap();
    let output = harness::run(&list, &["-v", "send", "--on", &subject, "hello"], b"");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, stderr) = listener.wait(PATIENCE);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("listening on"), "{stderr}");
    assert!(
        stderr.contains("u:***@") && stderr.contains("u2:***@"),
        "{stderr}"
    );
    for secret in secrets {
        assert_hidden(&stderr, secret, "listen");
        assert_hidden(&String::from_utf8_lossy(&output.stderr), secret, "send -v");
    }

    // worker ready.
    let dir = std::env::temp_dir().join(unique("list-worker"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("reactions.toml");
    std::fs::write(
        &config,
        format!("[[route]]\non = \"{subject}.w\"\nlog = true\n"),
    )
    .unwrap();
    let worker = switchboard()
        .args(["-v", "--broker", &list, "worker", "--config"])
        .arg(&config)
        .args(["--count", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Sent until the worker, once subscribed, takes one and exits.
    let sender = std::thread::spawn({
        let list = list.clone();
        let subject = format!("{subject}.w");
        move || {
            for _ in 0..100 {
                harness::run(&list, &["send", "--on", &subject, "work"], b"");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let output = wait_output(worker, PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("worker ready"), "{stderr}");
    for secret in secrets {
        assert_hidden(&stderr, secret, "worker");
    }
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);

    // An error naming the list.
    let unreachable =
        format!("nats://u:Pw1first@127.0.0.1:{nobody},nats://u2:S3cretSecond@127.0.0.1:{nobody}");
    let stderr = stderr_of(&["--broker", &unreachable, "send", "--on", "a", "x"], &[]);
    assert!(stderr.starts_with("error: "), "{stderr}");
    for secret in secrets {
        assert_hidden(&stderr, secret, "error");
    }
}

/// A URL refused for its form is named in the error with the password
/// hidden: a raw `#`, `?` or `/` in the password (which a URL parser takes
/// for the end of the authority), no scheme, a mistyped scheme. Each of
/// these printed the password before.
#[test]
fn malformed_urls_are_refused_without_their_password() {
    for (url, secrets) in [
        ("redis://:pa#ss@127.0.0.1:1", &["pa#ss", "#ss@"][..]),
        ("amqp://u:se#cret@127.0.0.1:1/%2f", &["se#cret", "#cret@"]),
        ("mqtt://u:se?cret@127.0.0.1:1", &["se?cret", "?cret@"]),
        ("nats://u:pa/ss@127.0.0.1:1", &["pa/ss", "/ss@"]),
        ("u:secretpw@127.0.0.1:4222", &["secretpw"]),
        ("nats:/u:secretpw@h", &["secretpw"]),
    ] {
        let stderr = stderr_of(&["--broker", url, "send", "--on", "a.b", "x"], &[]);
        assert_one_error_line(&stderr, "invalid broker URL");
        assert!(stderr.contains(":***@"), "{url}: {stderr}");
        for secret in secrets {
            assert!(!stderr.contains(secret), "{url} shows {secret:?}: {stderr}");
        }
    }
    let dir = TempDir::new("asyncapi-secret");
    let config = dir.write("reactions.toml", "[[route]]\non = \"a.b\"\nlog = true\n");
    let stderr = stderr_of(
        &[
            "--broker",
            "u:S3cretPW@h",
            "worker",
            "-c",
            &config,
            "--asyncapi",
        ],
        &[],
    );
    assert_one_error_line(&stderr, "u:***@h");
    assert!(!stderr.contains("S3cretPW"), "{stderr}");
}

/// `--help` of every command shows that `BROKER_URL` is read, not its value:
/// clap printed the whole URL, password included, in help text that people
/// paste into issues and chats.
#[test]
fn help_does_not_show_the_password_in_broker_url() {
    let url = "amqp://app:hunter2@rabbit.invalid:5672/%2f";
    for args in [
        &["--help"][..],
        &["send", "-h"],
        &["listen", "--help"],
        &["worker", "--help"],
        &["bridge", "--help"],
    ] {
        let output = switchboard()
            .args(args)
            .env("BROKER_URL", url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {stdout}");
        assert!(stdout.contains("[env: BROKER_URL"), "{args:?}: {stdout}");
        assert_hidden(&stdout, "hunter2", &format!("{args:?}"));
    }
}
