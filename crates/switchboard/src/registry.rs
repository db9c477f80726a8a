//! The drivers this process can connect with, by URL scheme: the built-in
//! adapters of this build, registered on first use, and the ones a program
//! registers itself with [`register`] (sqlx's `install_drivers` is the model).

use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use switchboard_core::{Driver, Error, Result};

/// The built-in adapters each cargo feature brings, for the error that names
/// the missing feature when a URL needs an adapter this build was compiled
/// without (the adapter's own [`Driver`] is not linked then).
const OPTIONAL: &[(&str, &[&str])] = &[
    ("nats", &["nats", "tls"]),
    ("redis", &["redis", "rediss", "redis+unix", "unix"]),
    ("amqp", &["amqp", "amqps"]),
    ("mqtt", &["mqtt", "mqtts"]),
];

static DRIVERS: OnceLock<RwLock<Vec<Driver>>> = OnceLock::new();

/// The registry, filled with this build's adapters the first time it is used.
fn drivers_lock() -> &'static RwLock<Vec<Driver>> {
    DRIVERS.get_or_init(|| {
        let built_in = vec![
            switchboard_core::memory::DRIVER,
            #[cfg(feature = "nats")]
            switchboard_nats::DRIVER,
            #[cfg(feature = "redis")]
            switchboard_redis::DRIVER,
            #[cfg(feature = "amqp")]
            switchboard_amqp::DRIVER,
            #[cfg(feature = "mqtt")]
            switchboard_mqtt::DRIVER,
        ];
        RwLock::new(built_in)
    })
}

fn read() -> RwLockReadGuard<'static, Vec<Driver>> {
    // A panic while holding the lock cannot leave the list half-changed
    // (every change is one push or one assignment): use it as it is.
    drivers_lock()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write() -> RwLockWriteGuard<'static, Vec<Driver>> {
    drivers_lock()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes `driver` reachable by its URL schemes through [`connect`](crate::connect),
/// and by its kind as a bare name ([`resolve_url`]), in this process. A
/// binary that links a third-party adapter calls this once at start-up,
/// before connecting (the `switchboard` command: before
/// `switchboard_cli::main()`).
///
/// Idempotent per kind: registering a kind again replaces its driver (the
/// same driver twice changes nothing; a built-in kind can be replaced). A
/// scheme another kind's driver already takes is an
/// [`Error::SchemeTaken`] naming both, and nothing is registered.
///
/// ```
/// use std::sync::Arc;
/// use switchboard::{Broker, Driver, MemoryBroker};
///
/// const ECHO: Driver = Driver::new("echo", &["echo"], "echo://", |url| {
///     Box::pin(async move {
///         let memory = url.replacen("echo://", "memory://", 1);
///         Ok(Arc::new(MemoryBroker::connect(&memory)?) as Arc<dyn Broker>)
///     })
/// });
/// switchboard::register(ECHO)?;
/// switchboard::register(ECHO)?; // again: nothing changes
/// assert!(switchboard::supported_schemes().contains("echo://"));
///
/// const CLASH: Driver = Driver::new("other", &["nats"], "nats://h", |url| ECHO.connect(url));
/// let error = switchboard::register(CLASH).unwrap_err().to_string();
/// assert!(error.contains("\"nats\" is taken by the nats driver"), "{error}");
/// # Ok::<(), switchboard::Error>(())
/// ```
pub fn register(driver: Driver) -> Result<()> {
    check(&driver)?;
    let mut drivers = write();
    for scheme in driver.schemes() {
        if let Some(taken) = drivers
            .iter()
            .find(|d| d.kind() != driver.kind() && d.takes_scheme(scheme))
        {
            return Err(Error::SchemeTaken {
                scheme: scheme.to_string(),
                kind: driver.kind().to_string(),
                taken_by: taken.kind().to_string(),
            });
        }
    }
    match drivers.iter_mut().find(|d| d.kind() == driver.kind()) {
        Some(known) => *known = driver,
        None => drivers.push(driver),
    }
    Ok(())
}

/// Refuses a driver no URL could reach, or whose default URL another
/// driver would take: each was accepted, and failed only at `connect`, with
/// an error about something else.
fn check(driver: &Driver) -> Result<()> {
    let invalid = |reason: String| Error::InvalidDriver {
        kind: driver.kind().to_string(),
        reason,
    };
    if driver.kind().trim().is_empty() {
        return Err(invalid(
            "its kind is empty; name it as `--broker` would (\"mybroker\")".into(),
        ));
    }
    if driver.schemes().is_empty() {
        return Err(invalid(
            "it names no URL scheme; give it at least one (\"mybroker\")".into(),
        ));
    }
    for scheme in driver.schemes() {
        // RFC 3986: a letter, then letters, digits, `+`, `-` or `.`; lower
        // case, as URL parsers make every scheme.
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid {
            return Err(invalid(format!(
                "{scheme:?} cannot be a URL scheme: use a lower-case letter, then lower-case letters, digits, `+`, `-` or `.`"
            )));
        }
    }
    let default_scheme = driver
        .default_url()
        .split_once("://")
        .map(|(scheme, _)| scheme);
    if !default_scheme.is_some_and(|scheme| driver.schemes().contains(&scheme)) {
        return Err(invalid(format!(
            "its default URL {:?} is not of one of its schemes ({}); the kind alone would connect elsewhere",
            switchboard_core::redact_url(driver.default_url()),
            driver.schemes().join(", ")
        )));
    }
    Ok(())
}

/// The drivers this process knows, in the order they were registered: the
/// built-in ones of this build first (`memory`, then `nats`, `redis` and
/// `amqp`, `mqtt` as their cargo features allow), then those given to [`register`].
pub fn drivers() -> Vec<Driver> {
    read().clone()
}

/// The driver whose schemes include `scheme` (any case, without `://`).
pub(crate) fn driver_for_scheme(scheme: &str) -> Option<Driver> {
    read().iter().find(|d| d.takes_scheme(scheme)).copied()
}

/// The error for a URL whose `scheme` no registered driver takes: it lists
/// what this process supports, and names the cargo feature when the scheme is
/// a built-in adapter's that this build was compiled without.
pub(crate) fn unknown_scheme(scheme: String, url: &str) -> Error {
    let compiled_out = OPTIONAL
        .iter()
        .find(|(_, schemes)| schemes.iter().any(|s| s.eq_ignore_ascii_case(&scheme)))
        .map(|(kind, _)| *kind);
    let supported = match compiled_out {
        Some(kind) => format!(
            "{} (the `{kind}` cargo feature of switchboard is not enabled)",
            supported_schemes()
        ),
        None => supported_schemes(),
    };
    Error::UnknownScheme {
        scheme,
        url: switchboard_core::redact_url(url),
        supported,
    }
}

/// The URL schemes this process can connect to, comma-separated, for error
/// messages: `memory://, nats://, tls://, …`.
pub fn supported_schemes() -> String {
    let schemes: Vec<String> = read()
        .iter()
        .flat_map(|d| d.schemes().iter().map(|s| format!("{s}://")))
        .collect();
    schemes.join(", ")
}

/// The kinds this process knows, comma-separated: `memory, nats, redis, amqp, mqtt`.
pub(crate) fn kinds() -> String {
    let kinds: Vec<&str> = read().iter().map(Driver::kind).collect();
    kinds.join(", ")
}

/// Turns a bare kind (`nats`, `redis`, `amqp`, `mqtt`, `memory`, or a registered
/// driver's) into its default local URL; anything else is returned as it is
/// (trimmed).
///
/// ```
/// assert_eq!(switchboard::resolve_url("nats"), "nats://127.0.0.1:4222");
/// assert_eq!(switchboard::resolve_url("redis://h:1"), "redis://h:1");
/// ```
pub fn resolve_url(kind_or_url: &str) -> &str {
    let trimmed = kind_or_url.trim();
    let default_url: Option<&'static str> = read()
        .iter()
        .find(|d| d.kind().eq_ignore_ascii_case(trimmed))
        .map(Driver::default_url);
    default_url.unwrap_or(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every feature on the built-in schemes are all registered, so the
    /// compiled-out text is checked here, on the error itself.
    #[test]
    fn a_compiled_out_scheme_names_its_feature() {
        let error = unknown_scheme("amqps".into(), "amqps://u:pw@h").to_string();
        assert!(
            error.contains("(the `amqp` cargo feature of switchboard is not enabled)"),
            "{error}"
        );
        assert!(
            error.starts_with(
                "unsupported broker \"amqps\" in amqps://u:***@h: this build supports memory://"
            ),
            "{error}"
        );
        let error = unknown_scheme("kafka".into(), "kafka://h").to_string();
        assert!(!error.contains("cargo feature"), "{error}");
    }

    /// Every built-in driver says where its URLs lead (what `switchboard
    /// bridge` compares), its default URL included.
    #[test]
    fn built_in_drivers_locate_their_urls() {
        for driver in drivers() {
            let location = driver.locate(driver.default_url());
            assert!(
                location.is_some(),
                "{} cannot locate {}",
                driver.kind(),
                driver.default_url()
            );
        }
        let nats = driver_for_scheme("nats").map(|d| d.locate("nats://Example:4222,nats://b"));
        if let Some(location) = nats {
            let expected = switchboard_core::Location::servers([("example", 4222), ("b", 4222)]);
            assert_eq!(location, Some(expected));
        }
    }
}
