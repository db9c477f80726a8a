//! Password redaction for URLs shown in errors and logs.

/// Returns `url` with any password (and a bare token in the user position of a
/// URL that has no password, as NATS uses) replaced by `***`, so it can be
/// printed safely. A string that is not a URL is returned as it is.
///
/// ```
/// use switchboard_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:secret@localhost:5672/%2f"), "amqp://guest:***@localhost:5672/%2f");
/// assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    // Work on the raw text rather than a parsed `Url`, so that the original
    // spelling (paths, default ports) survives and unparsable input still redacts.
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
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `nats://TOKEN@host`: the whole user part is a secret.
        None if url.starts_with("nats") || url.starts_with("tls") => "***".to_string(),
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
}
