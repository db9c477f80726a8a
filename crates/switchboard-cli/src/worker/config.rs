//! The reactions file of `switchboard worker`: routes from patterns to actions.
//!
//! ```toml
//! grace_period = "10s"       # optional, above zero
//!
//! [[route]]
//! on = "alerts.>"            # pattern, required
//! group = "pagers"           # optional queue group
//! durable = "pager"          # optional durable consumer: kept while the worker is away
//! max_deliver = 3            # optional, with durable: deliveries before dead-lettering
//! concurrency = 4            # optional
//! ordered_per_subject = true # optional: one subject's messages in order at any concurrency
//! attempts = 3               # optional, total tries before dead-lettering
//! backoff = "100ms"          # optional, first retry delay ("0s" retries at once)
//! timeout = "5s"             # optional, per attempt, above zero
//! dead_letter = "dlq.alerts" # optional subject ({subject} = the original), or false
//! schema = "alert.schema.json"  # optional JSON Schema every payload must match
//! exec = ["sh", "-c", "cat >> /tmp/alerts.log"]   # exactly one of exec / publish / log
//!
//! [asyncapi]                 # optional, for `--asyncapi`
//! title = "Sarah Connor's pager"
//! version = "1.0.0"
//! description = "Reactions to robots."
//! ```
//!
//! A `schema` path is relative to the file's directory. The schema is read
//! and compiled with the file, so `--check` reports a missing or invalid one;
//! payloads that do not match it are dead-lettered at once (the worker
//! library's `Route::schema`).
//!
//! Everything that can be checked before the first message is checked when
//! the file is read (so `--check` reports it too), each error one line naming
//! `file:line`: the syntax and every value, that an `exec` program exists (on
//! `PATH`, or at the path given; what a shell command line runs in turn is
//! not checked), and that no routes hand messages round in a loop through
//! their `publish` targets and dead letters (the worker library's
//! `find_cycle`, which `Worker::start` applies as well).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use switchboard::worker::{
    find_cycle, BoxHandler, Context, DeadLetterSubject, HandlerError, HandlerExt, Route, Schema,
};
use switchboard::{ConsumerName, Pattern, QueueGroup, Subject};
use toml::Spanned;

/// A checked reactions file.
#[derive(Debug)]
pub(crate) struct Config {
    /// The routes, in file order.
    pub(crate) routes: Vec<RouteConfig>,
    /// How long in-flight actions may take to finish at shutdown, if set in the file.
    pub(crate) grace_period: Option<Duration>,
    /// The `[asyncapi]` table: what `--asyncapi` says about the file.
    pub(crate) asyncapi: AsyncApiInfo,
}

/// The `[asyncapi]` table of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AsyncApiInfo {
    /// The document's title (default: the file's name).
    pub(crate) title: Option<String>,
    /// The API's version (default: 0.0.0).
    pub(crate) version: Option<String>,
    /// What the reactions are for.
    pub(crate) description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    #[serde(default, deserialize_with = "grace_period")]
    grace_period: Option<Duration>,
    #[serde(default)]
    asyncapi: AsyncApiInfo,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(deserialize_with = "pattern")]
    on: Pattern,
    #[serde(default, deserialize_with = "group")]
    group: Option<QueueGroup>,
    #[serde(default, deserialize_with = "durable")]
    durable: Option<ConsumerName>,
    #[serde(default, deserialize_with = "max_deliver")]
    max_deliver: Option<u32>,
    #[serde(default, deserialize_with = "concurrency")]
    concurrency: Option<usize>,
    #[serde(default)]
    ordered_per_subject: bool,
    #[serde(default, deserialize_with = "attempts")]
    attempts: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    backoff: Option<Duration>,
    #[serde(default, deserialize_with = "timeout")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "dead_letter")]
    dead_letter: Option<DeadLetter>,
    #[serde(default, deserialize_with = "exec")]
    exec: Option<Vec<String>>,
    #[serde(default, deserialize_with = "publish")]
    publish: Option<String>,
    #[serde(default)]
    log: Option<bool>,
    #[serde(default)]
    schema: Option<Spanned<PathBuf>>,
}

/// One route of the file, checked.
#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    /// The line of its `[[route]]` header, for messages.
    pub(crate) line: usize,
    pub(crate) on: Pattern,
    pub(crate) group: Option<QueueGroup>,
    /// The durable consumer, and its delivery limit.
    pub(crate) durable: Option<ConsumerName>,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) concurrency: Option<usize>,
    /// Each subject's messages handled in order at any concurrency.
    pub(crate) ordered_per_subject: bool,
    pub(crate) attempts: Option<u32>,
    pub(crate) backoff: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    /// `None`: the default, `dlq.{subject}`.
    pub(crate) dead_letter: Option<DeadLetter>,
    /// The payload schema, read and compiled.
    pub(crate) schema: Option<Schema>,
    pub(crate) action: Action,
}

/// A route's `dead_letter` setting, when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeadLetter {
    /// Publish what finally failed to this subject template.
    To(String),
    /// `dead_letter = false`: no dead letter; what finally failed is nacked
    /// (redelivered where the broker can) or reported.
    Off,
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

/// A handler that does nothing, for routes built only to be looked at (the
/// loop check, the AsyncAPI document). Boxed like the worker's own handlers
/// (`action::handler`): a route made for a handler type of its own
/// adds a copy of the route loop made for that type to the binary (see
/// `Handler::call_unboxed`), which these routes never run.
pub(crate) fn unhandled() -> BoxHandler {
    (|_ctx: Context| async { Ok::<_, HandlerError>(()) }).boxed()
}

impl RouteConfig {
    /// The library route for this config, around `handler`.
    pub(crate) fn route(&self, handler: impl switchboard::worker::Handler) -> Route {
        let mut route = Route::new(self.on.as_str(), handler);
        if let Some(group) = &self.group {
            route = route.group(group.as_str());
        }
        if let Some(durable) = &self.durable {
            route = route.durable(durable.as_str());
        }
        if let Some(max) = self.max_deliver {
            route = route.max_deliver(max);
        }
        if let Some(concurrency) = self.concurrency {
            route = route.concurrency(concurrency);
        }
        if self.ordered_per_subject {
            route = route.ordered_per_subject();
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
        match &self.dead_letter {
            Some(DeadLetter::To(subject)) => route = route.dead_letter(subject.as_str()),
            Some(DeadLetter::Off) => route = route.no_dead_letter(),
            None => {}
        }
        if let Action::Publish(template) = &self.action {
            route = route.publishes_to(template.as_str());
        }
        if let Some(schema) = &self.schema {
            route = route.schema(schema.clone());
        }
        route.describe(self.action.describe())
    }
}

impl Action {
    /// What the action does, in words (the route's AsyncAPI description).
    /// An `exec` is named by its program alone: its arguments may hold
    /// secrets, and the document is meant to be shared.
    fn describe(&self) -> String {
        match self {
            Action::Exec(argv) => format!(
                "Runs `{}` with the payload on stdin.",
                argv.first().map(String::as_str).unwrap_or("")
            ),
            Action::Publish(template) => format!("Forwards the message to `{template}`."),
            Action::Log => "Prints the message on stdout.".to_string(),
        }
    }
}

/// Reads and checks the file at `path`; errors are one line: `path:line: what is wrong`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        anyhow::anyhow!("{}: cannot read the worker config: {error}", path.display())
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse_in(&path.display().to_string(), &text, base)
}

/// Parses and checks a reactions file; `name` is used in error messages,
/// `schema` paths are relative to the current directory.
#[cfg(test)]
pub(crate) fn parse(name: &str, text: &str) -> anyhow::Result<Config> {
    parse_in(name, text, Path::new(""))
}

/// Parses and checks a reactions file; `name` is used in error messages,
/// `schema` paths are relative to `base`.
pub(crate) fn parse_in(name: &str, text: &str, base: &Path) -> anyhow::Result<Config> {
    let fail = |span: Option<Range<usize>>, message: &str| {
        let mut message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        // serde's words for the two slips it cannot name itself.
        if message.contains("invalid type: map, expected a sequence") {
            message.push_str("; each route is a [[route]] table, with two brackets");
        } else if [
            "expected i64",
            "expected u32",
            "expected u64",
            "expected usize",
        ]
        .iter()
        .any(|expected| message.contains(expected))
        {
            message.push_str("; write a whole number without quotes");
        }
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
        if raw.durable.is_some() && raw.group.is_some() {
            return Err(fail(
                Some(span),
                "a route cannot have both `durable` and `group`: workers with the same durable name already share its messages; drop `group`",
            ));
        }
        if raw.max_deliver.is_some() && raw.durable.is_none() {
            return Err(fail(
                Some(span),
                "`max_deliver` needs `durable = \"NAME\"`: only a durable consumer's broker counts deliveries",
            ));
        }
        let schema = match raw.schema {
            Some(path) => {
                let at = path.span();
                let compiled = Schema::from_file(base.join(path.into_inner()))
                    .map_err(|error| fail(Some(at), &error.to_string()))?;
                Some(compiled)
            }
            None => None,
        };
        routes.push(RouteConfig {
            line: line_of(text, span.start),
            on: raw.on,
            group: raw.group,
            durable: raw.durable,
            max_deliver: raw.max_deliver,
            concurrency: raw.concurrency,
            ordered_per_subject: raw.ordered_per_subject,
            attempts: raw.attempts,
            backoff: raw.backoff,
            timeout: raw.timeout,
            dead_letter: raw.dead_letter,
            schema,
            action,
        });
    }
    check_loops(name, &routes)?;
    Ok(Config {
        routes,
        grace_period: file.grace_period,
        asyncapi: file.asyncapi,
    })
}

/// Refuses routes that would hand messages round in a loop, with the library's
/// own check (the one `Worker::start` applies), naming the routes' lines.
fn check_loops(name: &str, routes: &[RouteConfig]) -> anyhow::Result<()> {
    let checked: Vec<Route> = routes
        .iter()
        .map(|route| route.route(unhandled()))
        .collect();
    let Some(cycle) = find_cycle(&checked) else {
        return Ok(());
    };
    let lines: Vec<String> = cycle
        .steps
        .iter()
        .map(|step| routes[step.route].line.to_string())
        .collect();
    let first = lines.first().map(String::as_str).unwrap_or("1");
    let which = if lines.len() == 1 {
        format!("the route on line {first} feeds itself")
    } else {
        format!("the routes on lines {} form a loop", lines.join(", "))
    };
    anyhow::bail!(
        "{name}:{first}: {which}: {cycle}; a message entering it would go round without end — \
         publish or dead-letter to a subject none of these routes receives, or set `dead_letter = false`"
    )
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

fn durable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ConsumerName>, D::Error> {
    let text = String::deserialize(d)?;
    ConsumerName::new(&text)
        .map(Some)
        .map_err(de::Error::custom)
}

/// A whole number from 1 to `max` (the type's or the library's limit).
fn count<'de, D: Deserializer<'de>, T: TryFrom<i64> + Into<u64> + Copy>(
    d: D,
    name: &str,
    max: u64,
    hint: &str,
) -> Result<Option<T>, D::Error> {
    let value = i64::deserialize(d)?;
    match T::try_from(value) {
        Ok(n) if (1..=max).contains(&n.into()) => Ok(Some(n)),
        _ => Err(de::Error::custom(format!(
            "{name} must be from 1 to {max}{hint}, not {value}"
        ))),
    }
}

fn max_deliver<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count(d, "max_deliver", u32::MAX.into(), "")
}

fn concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let max = switchboard::worker::MAX_CONCURRENCY as u64;
    Ok(count::<D, u64>(d, "concurrency", max, "")?.map(|n| n as usize))
}

fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count(
        d,
        "attempts",
        u32::MAX.into(),
        " (total tries, the first included)",
    )
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    /// A bare number is read to say what to write instead.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    let text = match Written::deserialize(d)? {
        Written::Text(text) => text,
        Written::Number(n) => {
            return Err(de::Error::custom(format!(
            "a duration is text with a unit: write \"{n}s\" or \"{n}ms\", not the bare number {n}"
        )))
        }
    };
    humantime::parse_duration(&text).map(Some).map_err(|error| {
        de::Error::custom(format!(
            "bad duration {text:?}: {error}; write it like \"250ms\", \"5s\" or \"1m 30s\""
        ))
    })
}

/// A duration that must be above zero; `zero` says why, for the error.
fn positive_duration<'de, D: Deserializer<'de>>(
    d: D,
    zero: &str,
) -> Result<Option<Duration>, D::Error> {
    match duration(d)? {
        Some(value) if value.is_zero() => Err(de::Error::custom(zero)),
        value => Ok(value),
    }
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    positive_duration(
        d,
        "`timeout` is zero, so every attempt would fail at once; give a positive limit such as \"5s\" (without `timeout` it is 30s)",
    )
}

fn grace_period<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    positive_duration(
        d,
        "`grace_period` is zero, which leaves in-flight actions no time to finish at shutdown; give a positive duration such as \"10s\" (the default)",
    )
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

fn dead_letter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeadLetter>, D::Error> {
    let text = match toml::Value::deserialize(d)? {
        toml::Value::String(text) => text,
        toml::Value::Boolean(false) => return Ok(Some(DeadLetter::Off)),
        other => {
            return Err(de::Error::custom(format!(
                "`dead_letter` must be a subject such as \"dlq.{{subject}}\" (the default), or false for none, not {other}"
            )))
        }
    };
    known_placeholders("dead_letter", &text).map_err(de::Error::custom)?;
    DeadLetterSubject::new(text.clone())
        .map(|_| Some(DeadLetter::To(text)))
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
        Some(program) => {
            runnable(program).map_err(de::Error::custom)?;
            Ok(Some(argv))
        }
    }
}

/// Checks that `program` can be started as `exec` will start it: a name
/// without `/` is looked up on `PATH` (not checked when `PATH` is unset), a
/// path must be an executable file (relative to the current directory).
fn runnable(program: &str) -> Result<(), String> {
    if program.contains('/') {
        let path = Path::new(program);
        if !path.exists() {
            return Err(format!(
                "`exec` program {program:?} does not exist{}",
                if path.is_relative() {
                    " (a relative path is taken from the worker's current directory)"
                } else {
                    ""
                }
            ));
        }
        if !is_executable(path) {
            return Err(format!(
                "`exec` program {program:?} is not an executable file; check the path, or make it executable (chmod +x)"
            ));
        }
        return Ok(());
    }
    let Some(search) = std::env::var_os("PATH").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    if std::env::split_paths(&search).any(|dir| is_executable(&dir.join(program))) {
        return Ok(());
    }
    Err(format!(
        "`exec` program {program:?} is not on PATH; install it, fix the name, or give its full path"
    ))
}

/// Whether `path` is a file the worker may execute.
fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_file()
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
ordered_per_subject = true
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
dead_letter = false
"#,
        )
        .unwrap();
        assert_eq!(config.grace_period, Some(Duration::from_secs(3)));
        assert_eq!(config.routes.len(), 3);
        let first = &config.routes[0];
        assert_eq!(first.on.as_str(), "alerts.>");
        assert_eq!(first.concurrency, Some(4));
        assert!(first.ordered_per_subject);
        assert!(!config.routes[1].ordered_per_subject);
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
        assert_eq!(first.line, 4);
        assert_eq!(first.dead_letter, Some(DeadLetter::To("dlq.alerts".into())));
        assert_eq!(config.routes[2].dead_letter, Some(DeadLetter::Off));
        assert_eq!(config.routes[1].dead_letter, None);
    }

    #[test]
    fn schemas_are_read_from_the_files_directory() {
        let dir = std::env::temp_dir().join(format!("sb-config-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("alert.schema.json"), r#"{ "type": "object" }"#).unwrap();
        let text = "[asyncapi]\ntitle = \"Pager\"\n\n[[route]]\non = \"a\"\nlog = true\nschema = \"alert.schema.json\"\n";
        let config = parse_in("r.toml", text, &dir).unwrap();
        assert_eq!(config.routes[0].schema.as_ref().unwrap().name(), "alert");
        assert_eq!(config.asyncapi.title.as_deref(), Some("Pager"));
        let message = parse("r.toml", text).unwrap_err().to_string();
        assert!(
            message.starts_with("r.toml:7: schema file alert.schema.json: cannot read it"),
            "{message}"
        );
        let message = parse_in("r.toml", "[asyncapi]\ntitel = \"x\"\n", &dir)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("r.toml:2: unknown field `titel`"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loops_are_refused_naming_the_lines() {
        let cases = [
            (
                "[[route]]\non = \"lp.>\"\npublish = \"lp.{subject}\"\n",
                "r.toml:1: the route on line 1 feeds itself: lp.> → (publish lp.{subject}) lp.>;",
            ),
            (
                "[[route]]\non = \">\"\nlog = true\n",
                "r.toml:1: the route on line 1 feeds itself: > → (dead letter dlq.{subject}) >;",
            ),
            (
                "[[route]]\non = \"alerts.>\"\nlog = true\ndead_letter = \"alerts.dead\"\n",
                "r.toml:1: the route on line 1 feeds itself: alerts.> → (dead letter alerts.dead) alerts.>;",
            ),
            (
                "[[route]]\non = \"alerts.cpu\"\npublish = \"audit.cpu\"\n\n[[route]]\non = \"audit.cpu\"\npublish = \"alerts.cpu\"\n",
                "r.toml:1: the routes on lines 1, 5 form a loop: alerts.cpu → (publish audit.cpu) audit.cpu → (publish alerts.cpu) alerts.cpu;",
            ),
            (
                "[[route]]\non = \"jobs.*\"\nlog = true\n\n[[route]]\non = \"dlq.jobs.*\"\npublish = \"jobs.retry\"\n",
                "r.toml:1: the routes on lines 1, 5 form a loop: jobs.* → (dead letter dlq.{subject}) dlq.jobs.* → (publish jobs.retry) jobs.*;",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.starts_with(expected), "{text:?}: got {message:?}");
            assert!(message.contains("dead_letter = false"), "{message:?}");
            assert!(!message.contains('\n'), "{message:?}");
        }
        // Chains that end are fine (`jobs.{subject}` from `dlq.jobs.*` is
        // `jobs.dlq.jobs.*`, which `jobs.*` does not match).
        parse(
            "r.toml",
            "[[route]]\non = \"jobs.*\"\nlog = true\n\n[[route]]\non = \"dlq.jobs.*\"\npublish = \"jobs.{subject}\"\n",
        )
        .unwrap();
        parse(
            "r.toml",
            "[[route]]\non = \"alerts.>\"\npublish = \"audit.{subject}\"\n\n[[route]]\non = \"audit.>\"\nlog = true\n\n[[route]]\non = \">\"\nlog = true\ndead_letter = false\n",
        )
        .unwrap();
        parse(
            "r.toml",
            "[[route]]\non = \"alerts.>\"\npublish = \"audit.{subject}\"\n\n[[route]]\non = \"audit.>\"\nlog = true\n",
        )
        .unwrap();
    }

    #[test]
    fn exec_programs_must_exist() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("not-executable.sh");
        std::fs::write(&plain, "echo hi\n").unwrap();
        let cases = [
            (
                "[[route]]\non = \"a\"\nexec = [\"no-such-program-sb8\", \"x\"]\n".to_string(),
                "r.toml:3: `exec` program \"no-such-program-sb8\" is not on PATH".to_string(),
            ),
            (
                "[[route]]\non = \"a\"\nexec = [\"/no/such/dir/prog\"]\n".to_string(),
                "r.toml:3: `exec` program \"/no/such/dir/prog\" does not exist".to_string(),
            ),
            (
                "[[route]]\non = \"a\"\nexec = [\"./no/such/prog\"]\n".to_string(),
                "r.toml:3: `exec` program \"./no/such/prog\" does not exist (a relative path"
                    .to_string(),
            ),
            (
                format!(
                    "[[route]]\non = \"a\"\n\nexec = [{:?}]\n",
                    plain.display().to_string()
                ),
                format!(
                    "r.toml:4: `exec` program {:?} is not an executable file",
                    plain.display().to_string()
                ),
            ),
        ];
        for (text, expected) in &cases {
            let message = error(text);
            assert!(
                message.starts_with(expected.as_str()),
                "{text:?}: got {message:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // On PATH, or a path to an executable: fine.
        parse(
            "r.toml",
            "[[route]]\non = \"a\"\nexec = [\"sh\", \"-c\", \"true\"]\n",
        )
        .unwrap();
        parse("r.toml", "[[route]]\non = \"a\"\nexec = [\"/bin/sh\"]\n").unwrap();
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
            (
                "[[route]]\non = \"a\"\nlog = true\ntimeout = 5\n",
                "r.toml:4: a duration is text with a unit: write \"5s\"",
            ),
            (
                "[route]\non = \"a\"\nlog = true\n",
                "r.toml:1: invalid type: map, expected a sequence; each route is a [[route]] table, with two brackets",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\nconcurrency = \"4\"\n",
                "r.toml:4: invalid type: string \"4\", expected i64; write a whole number without quotes",
            ),
            ("[[route]]\nlog = true\n", "r.toml:1: missing field `on`"),
            (
                "[[route]]\non = \"a\"\nlog = true\nattempts = 0\n",
                "r.toml:4: attempts must be from 1 to 4294967295",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\nattempts = 5000000000\n",
                "r.toml:4: attempts must be from 1 to 4294967295 (total tries",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ndurable = \"d\"\nmax_deliver = 99999999999999999\n",
                "r.toml:5: max_deliver must be from 1 to 4294967295, not 99999999999999999",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\nconcurrency = 9223372036854775807\n",
                "r.toml:4: concurrency must be from 1 to 2305843009213693951",
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
                "[[route]]\non = \"a\"\nlog = true\ntimeout = \"0s\"\n",
                "r.toml:4: `timeout` is zero",
            ),
            (
                "grace_period = \"0ms\"\n[[route]]\non = \"a\"\nlog = true\n",
                "r.toml:1: `grace_period` is zero",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ndead_letter = true\n",
                "r.toml:4: `dead_letter` must be a subject",
            ),
            (
                "[[route]]\non = \"a\"\nlog = true\ndead_letter = 3\n",
                "r.toml:4: `dead_letter` must be a subject",
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
