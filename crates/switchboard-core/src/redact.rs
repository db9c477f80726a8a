//! Password redaction for URLs shown in errors and logs.

/// Returns `url` with any password (and a bare token in the user position of a
/// NATS URL that has no password) replaced by `***`, so it can be printed
/// safely. Every URL of a comma-separated server list is redacted
/// (`nats://u:p1@h:1,nats://u2:p2@h:2`). A password may hold characters a
/// URL parser would end it at (`redis://:pa#ss@h`, `nats://u:pa/ss@h`), and
/// `user:password@host` is redacted without a scheme or with a mistyped one
/// (`nats:/u:pw@h`), since those are exactly the URLs refused in errors. A
/// user name without a password (`amqp://guest@h`) is kept, and text
/// without an `@` is returned as it is.
///
/// ```
/// use switchboard_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:secret@localhost:5672/%2f"), "amqp://guest:***@localhost:5672/%2f");
/// assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// assert_eq!(redact_url("redis://:pa#ss@localhost:6379"), "redis://:***@localhost:6379");
/// assert_eq!(redact_url("u:secret@localhost:4222"), "u:***@localhost:4222");
/// assert_eq!(
///     redact_url("nats://u:p1@h:1,nats://TOKEN@h:2"),
///     "nats://u:***@h:1,nats://***@h:2"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    // Work on the raw text rather than a parsed `Url`, so that the original
    // spelling (paths, default ports) survives and unparsable input still redacts.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    loop {
        // The next URL of a list starts at a comma followed by `scheme://`; a
        // comma elsewhere (inside a password, a query value) belongs to this one.
        let end = next_url_start(rest).unwrap_or(rest.len());
        out.push_str(&redact_one(&rest[..end]));
        if end == rest.len() {
            return out;
        }
        rest = &rest[end..];
        // Keep the comma (and any spaces after it) as they were.
        let url_start = rest.len() - rest[1..].trim_start().len();
        out.push_str(&rest[..url_start]);
        rest = &rest[url_start..];
    }
}

/// Returns `text` with the password of every `scheme://user:password@host`
/// URL in it redacted as [`redact_url`] does, for free text such as an
/// error that names a URL (`cannot connect to "postgres://app:pw@db/x"`)
/// before it leaves the process. Each whitespace-separated word holding
/// `://` and `@` is redacted from its scheme on; the rest is kept as it is.
///
/// ```
/// use switchboard_core::redact_text;
/// assert_eq!(
///     redact_text("cannot connect to \"postgres://app:pw@db:5432/x\": refused"),
///     "cannot connect to \"postgres://app:***@db:5432/x\": refused"
/// );
/// assert_eq!(redact_text("mail a@b.c, see https://x.org"), "mail a@b.c, see https://x.org");
/// ```
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        match word.find("://").filter(|_| word.contains('@')) {
            Some(separator) => {
                // The scheme runs back from `://` over scheme characters; a
                // quote or bracket before it is kept as it is.
                let scheme_start = word[..separator]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                    .map_or(0, |index| index + 1);
                out.push_str(&word[..scheme_start]);
                out.push_str(&redact_url(&word[scheme_start..]));
            }
            None => out.push_str(word),
        }
        let space_end = word_end + rest[word_end..].len() - rest[word_end..].trim_start().len();
        out.push_str(&rest[word_end..space_end]);
        rest = &rest[space_end..];
    }
    out
}

/// The position of the comma that starts the next URL of a list, if any.
fn next_url_start(text: &str) -> Option<usize> {
    text.match_indices(',')
        .map(|(index, _)| index)
        .find(|&index| starts_with_scheme(text[index + 1..].trim_start()))
}

/// Whether `text` starts with `scheme://` (RFC 3986: a letter, then letters,
/// digits, `+`, `-` or `.`).
fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(scheme, _)| is_scheme(scheme))
}

/// Whether `text` is a URL scheme (RFC 3986: a letter, then letters, digits,
/// `+`, `-` or `.`).
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Redacts one URL of a list.
///
/// The userinfo is found by its `@`, not by where a URL parser would end the
/// authority: a password typed raw may hold `#`, `?` or `/`, which a parser
/// takes for the start of a fragment, query or path, and the error then
/// names the URL with the password in it (`redis://:pa#ss@h` is refused as
/// "empty host"). So the userinfo runs to the last `@` before the first
/// `/`, `?` or `#` that follows the first `@`: a password may hold those
/// characters, while an `@` in a query after the host (`?name=a@b`) is left
/// alone. Text without a well-formed `scheme://` (`u:pw@h`, `nats:/u:pw@h`)
/// is read the same way, the user name kept and everything after its first
/// `:` hidden, since it is refused as a URL precisely because of its form.
fn redact_one(url: &str) -> String {
    let (scheme, rest_start) = scheme_and_authority_start(url);
    let rest = &url[rest_start..];
    let Some(first_at) = rest.find('@') else {
        return url.to_string();
    };
    let host_end = rest[first_at..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |end| first_at + end);
    let at = rest[..host_end].rfind('@').unwrap_or(first_at);
    let userinfo = &rest[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `nats://TOKEN@host`: the whole user part is a secret.
        None if matches!(scheme.as_deref(), Some("nats" | "tls")) => "***".to_string(),
        None => userinfo.to_string(),
    };
    format!("{}{}{}", &url[..rest_start], redacted_userinfo, &rest[at..])
}

/// The scheme of `url` (lowercase) and where what follows it starts: after
/// `scheme:` and the slashes that follow it, however many (`nats://h`, and
/// the mistyped `nats:/h` or `nats:///h`). Without a scheme followed by a
/// slash (`u:pw@h`, where `u:` reads like a scheme), none and 0.
fn scheme_and_authority_start(url: &str) -> (Option<String>, usize) {
    let leading = url.len() - url.trim_start().len();
    let text = &url[leading..];
    let Some(colon) = text.find(':') else {
        return (None, 0);
    };
    let scheme = &text[..colon];
    let after = &text[colon + 1..];
    let slashes = after.len() - after.trim_start_matches('/').len();
    if !is_scheme(scheme) || slashes == 0 {
        return (None, 0);
    }
    (
        Some(scheme.to_ascii_lowercase()),
        leading + colon + 1 + slashes,
    )
}

#[cfg(test)]
mod tests {
    use super::{redact_text, redact_url};

    #[test]
    fn redacts_urls_inside_text() {
        for (text, expected) in [
            (
                "connect to amqp://u:p@h/v failed; retry nats://tok@n:4222",
                "connect to amqp://u:***@h/v failed; retry nats://***@n:4222",
            ),
            ("(redis://:pa#ss@h:1)", "(redis://:***@h:1)"),
            ("  two\tspaces  kept ", "  two\tspaces  kept "),
            ("a@b c://d", "a@b c://d"),
            ("", ""),
            ("ünïcode postgres://ü:pw@h", "ünïcode postgres://ü:***@h"),
        ] {
            assert_eq!(redact_text(text), expected, "{text}");
        }
    }

    #[test]
    fn redacts_passwords_and_tokens() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://u:p@h"), "nats://u:***@h");
        assert_eq!(redact_url("amqp://guest@h/vh"), "amqp://guest@h/vh");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp://h/x?y=a@b"), "amqp://h/x?y=a@b");
    }

    /// The URLs a tester saw printed with their password: a raw `#`, `?`
    /// or `/` in the password, no scheme, a mistyped scheme.
    #[test]
    fn redacts_passwords_a_url_parser_would_cut_short() {
        for (url, shown) in [
            ("redis://:pa#ss@127.0.0.1:1", "redis://:***@127.0.0.1:1"),
            (
                "amqp://u:se#cret@127.0.0.1:1/%2f",
                "amqp://u:***@127.0.0.1:1/%2f",
            ),
            ("mqtt://u:se?cret@127.0.0.1:1", "mqtt://u:***@127.0.0.1:1"),
            ("nats://u:pa/ss@127.0.0.1:1", "nats://u:***@127.0.0.1:1"),
            ("u:secretpw@127.0.0.1:4222", "u:***@127.0.0.1:4222"),
            ("nats:/u:secretpw@h", "nats:/u:***@h"),
            ("u:S3cretPW@h", "u:***@h"),
            // More of the same: every character a parser stops at, together.
            (
                "amqp://u:a/b?c#d@h:5672/vh?x=1",
                "amqp://u:***@h:5672/vh?x=1",
            ),
            ("nats:///u:pw@h", "nats:///u:***@h"),
            ("  nats://u:pw@h", "  nats://u:***@h"),
            // A raw `@` in the password, before any `/`, `?` or `#`.
            ("nats://u:p@ss@h:1", "nats://u:***@h:1"),
            // A token with a `/` in it.
            ("nats://to/ken@h", "nats://***@h"),
            (
                "redis+unix://:pw@/tmp/redis.sock",
                "redis+unix://:***@/tmp/redis.sock",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn keeps_what_is_no_password() {
        for url in [
            "user@host",
            "amqp://guest@h/vh",
            "amqp://guest@h:5672/vh?name=a@b",
            "redis://h:6379/0#x",
            "127.0.0.1:4222",
            "nats://h:1,nats://h:2",
            "memory://",
        ] {
            assert_eq!(redact_url(url), url);
        }
        // Without credentials, an `@` in the query cannot be told from the
        // end of a password holding `:` and `?`: hidden rather than risk one.
        assert_eq!(redact_url("nats://h:4222?name=a@b"), "nats://h:***@b");
        // With credentials, an `@` in the query after the host is left alone.
        assert_eq!(
            redact_url("nats://u:p@h?name=a@b"),
            "nats://u:***@h?name=a@b"
        );
        assert_eq!(
            redact_url("amqp://u:pa/ss@h/vh?x=a@b"),
            "amqp://u:***@h/vh?x=a@b"
        );
    }

    #[test]
    fn redacts_every_server_of_a_list() {
        assert_eq!(
            redact_url("nats://u:p1@h:1,nats://u2:s3cret@h:2"),
            "nats://u:***@h:1,nats://u2:***@h:2"
        );
        assert_eq!(
            redact_url("nats://a:1, tls://T0KEN@b:2,nats://c:3"),
            "nats://a:1, tls://***@b:2,nats://c:3"
        );
        assert_eq!(
            redact_url("nats://tok1@a,nats://tok2@b?name=x,y"),
            "nats://***@a,nats://***@b?name=x,y"
        );
        // A comma that does not start a URL is part of this one (here, of the password).
        assert_eq!(
            redact_url("nats://u:pa,ss@h:1,nats://h:2"),
            "nats://u:***@h:1,nats://h:2"
        );
        for url in [
            "nats://u:p1@h:1,nats://u2:s3cret@h:2",
            "NATS://u:p1@h:1,Nats://tok3n@h:2",
            "redis://:p1@a,redis://:s3cret@b",
            "nats://u:p1/x@h:1,nats://u2:s3cret#y@h:2",
            "redis+cluster://:s3cret#p1@a:1,b:2",
            "amqp://u:s3cret?p1@a:5672,b:5672/vh",
        ] {
            let shown = redact_url(url);
            for secret in ["p1", "s3cret", "tok3n"] {
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
        }
    }
}
