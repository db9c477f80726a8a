//! The TLS keys of a broker URL, read the same way by every adapter: errors
//! are [`Error::InvalidUrl`] naming the URL (password redacted).

use switchboard_core::options::Query;
use switchboard_core::{Error, Result};

use crate::TlsOptions;

impl TlsOptions {
    /// Applies every TLS key (`ca`, `cert`, `key`, `tls_server_name`) of a
    /// URL's `query` (`url` as given, for messages) on top of these options;
    /// `Ok(true)` if the URL had one. Other keys are left to the adapter.
    ///
    /// ```
    /// use switchboard_core::options::{self, Query};
    /// use switchboard_tls::TlsOptions;
    /// let url = "tls://h:4222?ca=/etc/ca.pem&name=api";
    /// let query = Query::parse(url, &url::Url::parse(url).unwrap(), options::COMMON_AND_TLS)?;
    /// let mut tls = TlsOptions::new();
    /// assert!(tls.apply_url_query(url, &query)?);
    /// assert_eq!(tls, TlsOptions::new().ca("/etc/ca.pem"));
    /// # Ok::<(), switchboard_core::Error>(())
    /// ```
    pub fn apply_url_query(&mut self, url: &str, query: &Query) -> Result<bool> {
        let mut any = false;
        for (key, value) in query.pairs() {
            any |= self
                .apply_query(key, value)
                .map_err(|e| Error::invalid_url(url, e))?;
        }
        Ok(any)
    }

    /// [`check`](Self::check) for the URL `url`: settings that contradict
    /// each other are an [`Error::InvalidUrl`] naming it.
    pub fn check_url(&self, url: &str) -> Result<()> {
        self.check().map_err(|e| Error::invalid_url(url, e))
    }
}

/// The error for TLS keys in a URL without TLS: they would go unused, so
/// the URL is refused, saying to write `tls_scheme` (`rediss://`) instead of
/// `plain_scheme` (`redis://`).
pub fn keys_need_tls(url: &str, tls_scheme: &str, plain_scheme: &str) -> Error {
    Error::invalid_url(
        url,
        format!(
            "TLS settings (ca, cert, key, tls_server_name) need TLS: write {tls_scheme} instead of {plain_scheme}"
        ),
    )
}
