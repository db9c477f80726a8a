//! The reactions file of `switchboard worker`: routes from patterns to actions.
//!
//! ```toml
//! [[route]]
//! on = "alerts.>"            # pattern, required
//! group = "pagers"           # optional queue group
//! concurrency = 4            # optional
//! attempts = 3               # optional, total tries before dead-lettering
//! backoff = "100ms"          # optional, first retry delay
//! timeout = "5s"             # optional, per attempt
//! dead_letter = "dlq.alerts" # optional subject ({subject} = the original)
//! exec = ["sh", "-c", "cat >> /tmp/alerts.log"]   # exactly one of exec / publish / log
//! ```

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use switchboard::worker::{DeadLetterSubject, Route};
use switchboard::{Pattern, QueueGroup, Subject, Token};
use toml::Spanned;

/// A checked reactions file.
#[derive(Debug)]
pub(crate) struct Config {
    /// The routes, in file order.
    pub(crate) routes: Vec<RouteConfig>,
    /// How long in-flight actions may take to finish at shutdown, if set in the file.
    pub(crate) grace_period: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    #[serde(default, deserialize_with = "duration")]
    grace_period: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(deserialize_with = "pattern")]
    on: Pattern,
    #[serde(default, deserialize_with = "group")]
    group: Option<QueueGroup>,
    #[serde(default, deserialize_with = "concurrency")]
    concurrency: Option<usize>,
    #[serde(default, deserialize_with = "attempts")]
    attempts: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "dead_letter")]
    dead_letter: Option<String>,
    #[serde(default, deserialize_with = "exec")]
    exec: Option<Vec<String>>,
    #[serde(default, deserialize_with = "publish")]
    publish: Option<String>,
    #[serde(default)]
    log: Option<bool>,
}

/// One route of the file, checked.
#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    pub(crate) on: Pattern,
    pub(crate) group: Option<QueueGroup>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) attempts: Option<u32>,
    pub(crate) backoff: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dead_letter: Option<String>,
    pub(crate) action: Action,
}

/// What a route does with each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run a command: payload on stdin, subject and headers in the environment.
    Exec(Vec<String>),
    /// Forward to a subject template (`{subject}` = the original subject).
    Publish(String),
    /// Print one line on stdout.
    Log,
}

impl RouteConfig {
    /// The library route for this config, around `handler`.
    pub(crate) fn route(&self, handler: impl switchboard::worker::Handler) -> Route {
        let mut route = Route::new(self.on.as_str(), handler);
        if let Some(group) = &self.group {
            route = route.group(group.as_str());
        }
        if let Some(concurrency) = self.concurrency {
            route = route.concurrency(concurrency);
        }
        if let Some(attempts) = self.attempts {
            route = route.attempts(attempts);
        }
        if let Some(backoff) = self.backoff {
            route = route.backoff(backoff);
        }
        if let Some(timeout) = self.timeout {
            route = route.timeout(timeout);
        }
        if let Some(dead_letter) = &self.dead_letter {
            route = route.dead_letter(dead_letter.as_str());
        }
        route
    }
}

/// Reads and checks the file at `path`; errors are one line: `path:line: what is wrong`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        anyhow::anyhow!("{}: cannot read the worker config: {error}", path.display())
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses and checks a reactions file; `name` is used in error messages.
pub(crate) fn parse(name: &str, text: &str) -> anyhow::Result<Config> {
    let fail = |span: Option<Range<usize>>, message: &str| {
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        match span {
            Some(span) => anyhow::anyhow!("{name}:{}: {message}", line_of(text, span.start)),
            None => anyhow::anyhow!("{name}: {message}"),
        }
    };
    let file: File = toml::from_str(text).map_err(|error| fail(error.span(), error.message()))?;
    if file.route.is_empty() {
        return Err(fail(
            None,
            "no routes; add at least one [[route]] with `on` and one of `exec`, `publish` or `log`",
        ));
    }
    let mut routes = Vec::with_capacity(file.route.len());
    for spanned in file.route {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let mut actions = Vec::new();
        if let Some(argv) = raw.exec {
            actions.push(Action::Exec(argv));
        }
        if let Some(template) = raw.publish {
            actions.push(Action::Publish(template));
        }
        if raw.log == Some(true) {
            actions.push(Action::Log);
        }
        let action = match actions.len() {
            1 => actions.remove(0),
            0 => {
                return Err(fail(
                    Some(span),
                    &format!(
                        "route on {:?} has no action; set exactly one of `exec = [\"cmd\", ...]`, `publish = \"subject\"` or `log = true`",
                        raw.on.as_str()
                    ),
                ))
            }
            _ => {
                return Err(fail(
                    Some(span),
                    &format!(
                        "route on {:?} has several actions; set exactly one of `exec`, `publish` or `log` (use one route per action)",
                        raw.on.as_str()
                    ),
                ))
            }
        };
        if let Action::Publish(template) = &action {
            if feeds_itself(&raw.on, template) {
                return Err(fail(
                    Some(span),
                    &format!(
                        "route on {:?} publishes to {template:?}, which its own pattern matches: every forwarded message would come back to it in an endless loop; publish to a subject outside the pattern",
                        raw.on.as_str()
                    ),
                ));
            }
        }
        routes.push(RouteConfig {
            on: raw.on,
            group: raw.group,
            concurrency: raw.concurrency,
            attempts: raw.attempts,
            backoff: raw.backoff,
            timeout: raw.timeout,
            dead_letter: raw.dead_letter,
            action,
        });
    }
    Ok(Config {
        routes,
        grace_period: file.grace_period,
    })
}

/// Whether forwarding a message the route on `pattern` received to `template`
/// would publish a subject that `pattern` matches again. Checked on one subject
/// the pattern matches (each wildcard taken as one token).
fn feeds_itself(pattern: &Pattern, template: &str) -> bool {
    let sample: Vec<&str> = pattern
        .tokens()
        .iter()
        .map(|token| match token {
            Token::Literal(text) => text.as_str(),
            Token::Any | Token::Rest => "x",
        })
        .collect();
    let sample = sample.join(".");
    pattern.matches(&template.replace("{subject}", &sample))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
    let text = String::deserialize(d)?;
    Pattern::new(&text).map_err(de::Error::custom)
}

fn group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<QueueGroup>, D::Error> {
    let text = String::deserialize(d)?;
    QueueGroup::new(&text).map(Some).map_err(de::Error::custom)
}

fn concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let value = i64::deserialize(d)?;
    match usize::try_from(value) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(de::Error::custom(format!(
            "concurrency must be 1 or more, not {value}"
        ))),
    }
}

fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = i64::deserialize(d)?;
    match u32::try_from(value) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(de::Error::custom(format!(
            "attempts must be 1 or more (total tries, the first included), not {value}"
        ))),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|error| {
        de::Error::custom(format!(
            "bad duration {text:?}: {error}; write it like \"250ms\", \"5s\" or \"1m 30s\""
        ))
    })
}

/// Refuses a `{...}` other than `{subject}` in a subject template, such as a
/// misspelt `{subjet}`, which would otherwise be sent as literal text.
fn known_placeholders(key: &str, text: &str) -> Result<(), String> {
    if text.replace("{subject}", "").contains(['{', '}']) {
        return Err(format!(
            "`{key}` target {text:?} has an unknown placeholder; the only one is {{subject}} (the original subject), e.g. \"audit.{{subject}}\""
        ));
    }
    Ok(())
}

fn dead_letter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    known_placeholders("dead_letter", &text).map_err(de::Error::custom)?;
    DeadLetterSubject::new(text.clone())
        .map(|_| Some(text))
        .map_err(de::Error::custom)
}

fn exec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let argv = Vec::<String>::deserialize(d)?;
    match argv.first() {
        None => Err(de::Error::custom(
            "`exec` is empty; give the command and its arguments, e.g. [\"sh\", \"-c\", \"cat >> /tmp/alerts.log\"]",
        )),
        Some(program) if program.trim().is_empty() => Err(de::Error::custom(
            "`exec` names no command; its first element is the program to run",
        )),
        Some(_) => Ok(Some(argv)),
    }
}

fn publish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    known_placeholders("publish", &text).map_err(de::Error::custom)?;
    Subject::new(&text.replace("{subject}", "x")).map_err(|_| {
        de::Error::custom(format!(
            "`publish` target {text:?} is not a valid subject; use dot-separated tokens, optionally with {{subject}}, e.g. \"audit.{{subject}}\""
        ))
    })?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse("r.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_route_parses() {
        let config = parse(
            "r.toml",
            r#"
grace_period = "3s"

[[route]]
on = "alerts.>"
group = "pagers"
concurrency = 4
attempts = 3
backoff = "100ms"
timeout = "5s"
dead_letter = "dlq.alerts"
exec = ["sh", "-c", "cat"]

[[route]]
on = "x.*"
publish = "audit.{subject}"

[[route]]
on = ">"
log = true
"#,
        )
        .unwrap();
        assert_eq!(config.grace_period, Some(Duration::from_secs(3)));
        assert_eq!(config.routes.len(), 3);
        let first = &config.routes[0];
        assert_eq!(first.on.as_str(), "alerts.>");
        assert_eq!(first.concurrency, Some(4));
        assert_eq!(first.backoff, Some(Duration::from_millis(100)));
        assert_eq!(
            first.action,
            Action::Exec(vec!["sh".into(), "-c".into(), "cat".into()])
        );
        assert_eq!(
            config.routes[1].action,
            Action::Publish("audit.{subject}".into())
        );
        assert_eq!(config.routes[2].action, Action::Log);
    }

    #[test]
    fn bad_configs_name_the_line() {
        let cases = [
            (
                "[[route]]\non = \"a\"\nlog = true\nfoo = 1\n",
                "r.toml:4: unknown field `foo`",
            ),
            (
                "[[route]]\non = \"a..b\"\nlog = true\n",
                "r.toml:2: invalid pattern",
            ),
            (
                "\n[[route]]\non = \"a\"\n",
                "r.toml:2: route on \"a\" has no action",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\npublish = \"b\"\n",
                "r.toml:1: route on \"a\" has several actions",
            ),
            (
                "[[route]]\non = \"a\"\nexec = []\n",
                "r.toml:3: `exec` is empty",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ntimeout = \"5 parsecs\"\n",
                "r.toml:4: bad duration",
            ),
            ("[[route]]\nlog = true\n", "r.toml:1: missing field `on`"),
            (
                "[[route]]\non = \"a\"\nlog = true\nattempts = 0\n",
                "r.toml:4: attempts must be 1 or more",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ngroup = \"a b\"\n",
                "r.toml:4: invalid queue group",
            ),
            (
                "[[route]]\non = \"a\"\npublish = \"x.{subjet}\"\n",
                "r.toml:3: `publish` target \"x.{subjet}\" has an unknown placeholder",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ndead_letter = \"dlq.{Subject}\"\n",
                "r.toml:4: `dead_letter` target \"dlq.{Subject}\" has an unknown placeholder",
            ),
            (
                "[[route]]\non = \"lp.>\"\npublish = \"lp.{subject}\"\n",
                "r.toml:1: route on \"lp.>\" publishes to \"lp.{subject}\", which its own pattern matches",
            ),
            ("", "r.toml: no routes"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.starts_with(expected), "{text:?}: got {message:?}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
}
