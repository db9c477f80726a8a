//! Password redaction for URLs shown in errors and logs.

/// Returns `url` with any password (and a bare token in the user position of a
/// NATS URL that has no password) replaced by `***`, so it can be printed
/// safely. Every URL of a comma-separated server list is redacted
/// (`nats://u:p1@h:1,nats://u2:p2@h:2`). A string that is not a URL is
/// returned as it is.
///
/// ```
/// use switchboard_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:secret@localhost:5672/%2f"), "amqp://guest:***@localhost:5672/%2f");
/// assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
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

/// The position of the comma that starts the next URL of a list, if any.
fn next_url_start(text: &str) -> Option<usize> {
    text.match_indices(',')
        .map(|(index, _)| index)
        .find(|&index| starts_with_scheme(text[index + 1..].trim_start()))
}

/// Whether `text` starts with `scheme://` (RFC 3986: a letter, then letters,
/// digits, `+`, `-` or `.`).
fn starts_with_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let scheme = url[..scheme_end].trim().to_ascii_lowercase();
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `nats://TOKEN@host`: the whole user part is a secret.
        None if matches!(scheme.as_str(), "nats" | "tls") => "***".to_string(),
        None => userinfo.to_string(),
    };
    format!(
        "{}{}{}",
        &url[..rest_start],
        redacted_userinfo,
        &url[rest_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_and_tokens() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://u:p@h"), "nats://u:***@h");
        assert_eq!(redact_url("amqp://guest@h/vh"), "amqp://guest@h/vh");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp://h/x?y=a@b"), "amqp://h/x?y=a@b");
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
        ] {
            let shown = redact_url(url);
            for secret in ["p1", "s3cret", "tok3n"] {
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
        }
    }
}
