//! Subjects, patterns and queue group names: one syntax and one meaning on every broker.
//!
//! A subject is a dot-separated list of tokens (`alerts.cpu.high`). A pattern
//! is a subject that may also use `*` (exactly one token) and `>` (one or more
//! trailing tokens, last position only) — the NATS syntax. Adapters translate
//! patterns into their broker's syntax and check every delivery against
//! [`Pattern::matches`], so the meaning is identical everywhere.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::{Error, Result};

/// The longest subject or pattern accepted, in bytes.
///
/// AMQP routing keys are short strings (at most 255 bytes); the same limit
/// applies everywhere so a subject valid on one broker is valid on all.
pub const MAX_SUBJECT_LEN: usize = 255;

fn check_tokens(text: &str) -> std::result::Result<(), String> {
    if text.is_empty() {
        return Err("it is empty; use dot-separated tokens such as `alerts.cpu`".into());
    }
    if text.len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "it is {} bytes long; the limit is {MAX_SUBJECT_LEN} bytes",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "it contains {c:?}; whitespace and control characters are not allowed"
        ));
    }
    for (index, token) in text.split('.').enumerate() {
        if token.is_empty() {
            return Err(format!(
                "token {} is empty; remove the leading, trailing or doubled dot",
                index + 1
            ));
        }
    }
    Ok(())
}

/// A concrete subject that messages are published to, such as `alerts.cpu.high`.
///
/// Validated on construction: non-empty dot-separated tokens, no whitespace or
/// control characters, no wildcards, at most [`MAX_SUBJECT_LEN`] bytes.
/// Cloning is cheap.
///
/// ```
/// use switchboard_core::Subject;
/// let subject: Subject = "alerts.cpu.high".parse()?;
/// assert_eq!(subject.tokens().count(), 3);
/// assert!("alerts.*".parse::<Subject>().is_err());
/// # Ok::<(), switchboard_core::Error>(())
/// ```
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

impl std::hash::Hash for Subject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Subject {
    fn eq(&self, other: &Self) -> bool {
        // Clones share their text: publishing in a loop compares a subject with
        // itself, which the pointer settles without reading the bytes.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Subject {
    /// Parses and validates a subject.
    pub fn new(subject: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSubject {
            subject: subject.to_string(),
            reason,
        };
        check_tokens(subject).map_err(invalid)?;
        if let Some(token) = subject.split('.').find(|t| t.contains(['*', '>'])) {
            return Err(invalid(format!(
                "token {token:?} contains a wildcard; wildcards (`*`, `>`) are only for subscription patterns, publish to a concrete subject"
            )));
        }
        Ok(Subject(Arc::from(subject)))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated tokens.
    pub fn tokens(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for Subject {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Subject::new(s)
    }
}

impl TryFrom<&str> for Subject {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Subject::new(s)
    }
}

impl TryFrom<String> for Subject {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Subject::new(&s)
    }
}

impl TryFrom<&String> for Subject {
    type Error = Error;
    fn try_from(s: &String) -> Result<Self> {
        Subject::new(s)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One token of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token {
    /// A token that matches itself only.
    Literal(String),
    /// `*`: exactly one token, whatever it is.
    Any,
    /// `>`: one or more trailing tokens (last position only).
    Rest,
}

/// A subscription pattern such as `alerts.*.high` or `alerts.>`.
///
/// `*` matches exactly one token; `>` matches one or more trailing tokens and
/// may only be the last token. A wildcard must be a whole token (`alerts.cp*`
/// is rejected). [`Pattern::matches`] is the reference semantics every adapter
/// is tested against.
///
/// ```
/// use switchboard_core::Pattern;
/// let pattern: Pattern = "alerts.>".parse()?;
/// assert!(pattern.matches("alerts.cpu"));
/// assert!(pattern.matches("alerts.cpu.high"));
/// assert!(!pattern.matches("alerts"));
/// let one: Pattern = "alerts.*".parse()?;
/// assert!(!one.matches("alerts.cpu.high"));
/// # Ok::<(), switchboard_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    tokens: Arc<[Token]>,
}

impl Pattern {
    /// Parses and validates a pattern.
    pub fn new(pattern: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        };
        check_tokens(pattern).map_err(invalid)?;
        let count = pattern.split('.').count();
        let mut tokens = Vec::with_capacity(count);
        for (index, token) in pattern.split('.').enumerate() {
            let parsed = match token {
                "*" => Token::Any,
                ">" if index + 1 == count => Token::Rest,
                ">" => {
                    return Err(invalid(
                        "`>` must be the last token (it matches everything after it)".into(),
                    ))
                }
                t if t.contains(['*', '>']) => {
                    return Err(invalid(format!(
                        "token {t:?} mixes a wildcard with text; a wildcard must be a whole token, e.g. `alerts.*`"
                    )))
                }
                t => Token::Literal(t.to_string()),
            };
            tokens.push(parsed);
        }
        Ok(Pattern {
            text: Arc::from(pattern),
            tokens: tokens.into(),
        })
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether the pattern has no wildcard (it names exactly one subject).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `subject` matches this pattern. A subject that is not valid never matches.
    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for (index, token) in self.tokens.iter().enumerate() {
            match token {
                Token::Rest => {
                    // `>` needs at least one remaining non-empty token, and all
                    // of them valid; walked, not collected (this runs per
                    // message where a broker matches patterns itself).
                    let mut any = false;
                    for part in parts {
                        if part.is_empty() {
                            return false;
                        }
                        any = true;
                    }
                    return any && index + 1 == self.tokens.len();
                }
                Token::Any => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Token::Literal(literal) => match parts.next() {
                    Some(part) if part == literal => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl FromStr for Pattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Pattern::new(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Pattern::new(s)
    }
}

impl TryFrom<String> for Pattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Pattern::new(&s)
    }
}

impl From<Subject> for Pattern {
    fn from(subject: Subject) -> Self {
        let tokens = subject
            .tokens()
            .map(|t| Token::Literal(t.to_string()))
            .collect();
        Pattern {
            text: subject.0,
            tokens,
        }
    }
}

/// The name of a queue group: subscribers in the same group share the messages,
/// each message going to one member.
///
/// Letters, digits, `-`, `_` and `.`, 1 to 200 bytes, so that it is a valid
/// NATS queue name, AMQP queue name and Redis key on every broker.
///
/// ```
/// use switchboard_core::QueueGroup;
/// assert!(QueueGroup::new("pagers").is_ok());
/// assert!(QueueGroup::new("two words").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueGroup(Arc<str>);

impl QueueGroup {
    /// The longest group name accepted, in bytes (room is left for a broker-side prefix).
    pub const MAX_LEN: usize = 200;

    /// Parses and validates a queue group name.
    pub fn new(group: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidGroup {
            group: group.to_string(),
            reason,
        };
        if group.is_empty() {
            return Err(invalid("it is empty; name the group, e.g. `pagers`".into()));
        }
        if group.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "it is longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if let Some(c) = group
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(format!(
                "it contains {c:?}; use letters, digits, `-`, `_` and `.` only"
            )));
        }
        Ok(QueueGroup(Arc::from(group)))
    }

    /// The group name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for QueueGroup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QueueGroup::new(s)
    }
}

impl TryFrom<&str> for QueueGroup {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        QueueGroup::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_reject_bad_input() {
        for bad in [
            "", ".a", "a.", "a..b", "a b", "a.*", "a.>", "a.b*", "a\tb", "a\nb",
        ] {
            assert!(Subject::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Subject::new(&"a".repeat(256)).is_err());
        assert!(Subject::new(&"a".repeat(255)).is_ok());
        assert!(Subject::new("some_event").is_ok());
        assert!(Subject::new("alerts.cpu-1.héllo").is_ok());
    }

    #[test]
    fn patterns_reject_bad_input() {
        for bad in [
            "", "a..b", ">.a", "a.>.b", "a.b*", "a.*b", "a.>>", "a b", ".",
        ] {
            assert!(Pattern::new(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in ["a", "*", ">", "a.*", "a.>", "*.b.>", "*.*"] {
            assert!(Pattern::new(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn matching_follows_nats_semantics() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            (">", "a", true),
            (">", "a.b", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.b.>", "x.b.c", true),
            ("*.b.>", "x.b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.d", false),
            ("a.b", "a..b", false),
            ("a.*", "a.", false),
            ("a.>", "a..", false),
        ];
        for (pattern, subject, expected) in cases {
            let p = Pattern::new(pattern).unwrap();
            assert_eq!(p.matches(subject), expected, "{pattern} ~ {subject}");
        }
    }

    #[test]
    fn subject_converts_to_literal_pattern() {
        let p: Pattern = Subject::new("a.b").unwrap().into();
        assert!(p.is_literal());
        assert!(p.matches("a.b"));
        assert!(!p.matches("a.c"));
    }
}
