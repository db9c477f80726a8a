//! Message headers: string keys with one string value each, identical on every broker.

use std::collections::btree_map::{self, BTreeMap};
use std::fmt;

use crate::{Error, Result};

/// The longest header name accepted, in bytes (AMQP field names are short strings).
pub const MAX_HEADER_NAME_LEN: usize = 255;

/// Message headers: an ordered map of string keys to one string value each.
///
/// A key appears at most once: [`Headers::insert`] replaces an earlier value.
/// Keys are case-sensitive and keep their case. Names are 1 to
/// [`MAX_HEADER_NAME_LEN`] bytes of visible ASCII other than `:`; values are any
/// UTF-8 text without carriage return, line feed or NUL. These rules are the
/// intersection of what NATS, AMQP and switchboard's Redis wire format carry,
/// so headers round-trip unchanged on every broker.
///
/// ```
/// use switchboard_core::Headers;
/// let mut headers = Headers::new();
/// headers.insert("severity", "high")?;
/// headers.insert("severity", "critical")?; // replaces
/// assert_eq!(headers.get("severity"), Some("critical"));
/// assert!(headers.insert("bad name", "x").is_err());
/// # Ok::<(), switchboard_core::Error>(())
/// ```
///
/// No map is kept while there are no headers (`None`, never an empty map):
/// most messages carry none, and an empty `BTreeMap` cost about 50
/// instructions to drop and 20 to look up in, per message, where `None`
/// costs a comparison (BENCHMARKS.md, round seven). A map rather than a
/// sorted vector, so that a message with very many headers from a plain
/// client costs n log n to take in, not n².
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers(Option<BTreeMap<String, String>>);

impl Headers {
    /// An empty set of headers (allocates nothing).
    #[inline]
    pub fn new() -> Self {
        Headers(None)
    }

    /// Checks a header name against the rules above.
    pub fn validate_name(name: &str) -> Result<()> {
        let invalid = |reason: &str| Error::InvalidHeader {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.len() > MAX_HEADER_NAME_LEN {
            return Err(invalid("the name is longer than 255 bytes"));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(invalid(
                "names must be visible ASCII without spaces or `:`, e.g. `trace-id`",
            ));
        }
        Ok(())
    }

    /// Checks a header value against the rules above.
    pub fn validate_value(name: &str, value: &str) -> Result<()> {
        if value.contains(['\r', '\n', '\0']) {
            return Err(Error::InvalidHeader {
                name: name.to_string(),
                reason: "the value contains a line break or NUL; headers carry one line of text"
                    .to_string(),
            });
        }
        if value.trim() != value {
            return Err(Error::InvalidHeader {
                name: name.to_string(),
                reason: "the value starts or ends with whitespace, which brokers trim; trim it"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// `text` made a valid value of at most `max` bytes: line breaks, tabs
    /// and other control characters become spaces, runs of spaces one, the
    /// ends are trimmed, and a longer value is cut on a character boundary,
    /// ending with `…`. For text from elsewhere, such as an error.
    ///
    /// ```
    /// use switchboard_core::Headers;
    /// assert_eq!(Headers::one_line_value("a\r\nb\t\0c  d\n", 100), "a b c d");
    /// assert_eq!(Headers::one_line_value("héllo wörld", 7), "hél…");
    /// ```
    pub fn one_line_value(text: &str, max: usize) -> String {
        let mut out = String::with_capacity(text.len().min(max));
        let mut last_space = true;
        for c in text.chars() {
            let c = if c.is_control() || c.is_whitespace() {
                ' '
            } else {
                c
            };
            if c == ' ' {
                if last_space {
                    continue;
                }
                last_space = true;
            } else {
                last_space = false;
            }
            out.push(c);
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        if out.len() > max {
            let mut cut = max.saturating_sub('…'.len_utf8());
            while cut > 0 && !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
        }
        out
    }

    /// Sets `name` to `value` as received from a broker, where a plain
    /// client may have sent what [`Headers::insert`] refuses: a value with
    /// line breaks, control characters or surrounding whitespace is made one
    /// trimmed line ([`Headers::one_line_value`]) rather than dropped, as
    /// NATS's own client trims. Fails only on an invalid name.
    ///
    /// ```
    /// use switchboard_core::Headers;
    /// let mut headers = Headers::new();
    /// headers.insert_received("error", "disk full\r\n")?;
    /// assert_eq!(headers.get("error"), Some("disk full"));
    /// # Ok::<(), switchboard_core::Error>(())
    /// ```
    pub fn insert_received(&mut self, name: &str, value: &str) -> Result<()> {
        // Validated once on the common path; only a refused one is remade.
        self.insert(name, value)
            .or_else(|_| self.insert(name, Self::one_line_value(value, usize::MAX)))
    }

    /// Sets `name` to `value`, replacing any earlier value. Fails on an invalid name or value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let (name, value) = (name.into(), value.into());
        Self::validate_name(&name)?;
        Self::validate_value(&name, &value)?;
        self.0.get_or_insert_with(BTreeMap::new).insert(name, value);
        Ok(())
    }

    /// The value of `name`, if set.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.as_ref()?.get(name).map(String::as_str)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let map = self.0.as_mut()?;
        let value = map.remove(name);
        if map.is_empty() {
            // Never an empty map: equality and hashing rely on it.
            self.0 = None;
        }
        value
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many headers there are.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, BTreeMap::len)
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The headers in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.as_ref().map(BTreeMap::iter))
    }
}

/// Iterator over `(name, value)` pairs of [`Headers`], in name order.
#[derive(Debug)]
pub struct Iter<'a>(Option<btree_map::Iter<'a, String, String>>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .as_mut()?
            .next()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.as_ref().map_or((0, Some(0)), Iterator::size_hint)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> TryFrom<Vec<(K, V)>> for Headers {
    type Error = Error;
    fn try_from(pairs: Vec<(K, V)>) -> Result<Self> {
        let mut headers = Headers::new();
        for (k, v) in pairs {
            headers.insert(k, v)?;
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_checked() {
        let mut h = Headers::new();
        assert!(h.insert("", "x").is_err());
        assert!(h.insert("a:b", "x").is_err());
        assert!(h.insert("a b", "x").is_err());
        assert!(h.insert("é", "x").is_err());
        assert!(h.insert("ok", "line\nbreak").is_err());
        assert!(h.insert("ok", " padded").is_err());
        assert!(h.insert("ok", "padded\t").is_err());
        assert!(h.insert("ok", "").is_ok());
        assert!(h.insert("ok", "inner  spaces\tkept").is_ok());
        assert!(h.insert("Trace-Id", "héllo wörld: 1").is_ok());
        assert_eq!(h.get("Trace-Id"), Some("héllo wörld: 1"));
        assert_eq!(h.get("trace-id"), None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn names_stay_in_order_and_unique() {
        let mut h = Headers::new();
        for (name, value) in [("m", "1"), ("b", "2"), ("z", "3"), ("b", "4"), ("a", "5")] {
            h.insert(name, value).unwrap();
        }
        let pairs: Vec<_> = h.iter().collect();
        assert_eq!(pairs, [("a", "5"), ("b", "4"), ("m", "1"), ("z", "3")]);
        assert_eq!(h.remove("m").as_deref(), Some("1"));
        assert_eq!(h.remove("m"), None);
        assert!(h.contains("z") && !h.contains("m"));
        assert_eq!(h.get("0"), None);
        let same = Headers::try_from(vec![("z", "3"), ("a", "5"), ("b", "4")]).unwrap();
        assert_eq!(h, same);
    }

    #[test]
    fn emptied_headers_equal_new_ones() {
        use std::hash::{BuildHasher, RandomState};
        let mut h = Headers::try_from(vec![("a", "1")]).unwrap();
        assert_eq!(h.remove("a").as_deref(), Some("1"));
        assert!(h.is_empty());
        assert_eq!(h.len(), 0);
        assert_eq!(h.iter().count(), 0);
        assert_eq!(h, Headers::new());
        let state = RandomState::new();
        assert_eq!(state.hash_one(&h), state.hash_one(Headers::new()));
        assert_eq!(format!("{h:?}"), "{}");
    }
}
