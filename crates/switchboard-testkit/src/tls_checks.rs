//! The TLS behaviour every adapter shows, checked once for all: against a TLS
//! listener the adapter's test starts (its broker with TLS, or a [`TlsProxy`](crate::TlsProxy)
//! in front of it) with a fresh [`Pki`], through the adapter's `connect`.
//!
//! ```ignore
//! // tests/tls.rs of an adapter crate
//! fn checks() -> TlsChecks {
//!     TlsChecks::new(
//!         |pki, mutual| {
//!             let server = if mutual { NatsServer::start_mutual_tls(pki) } else { NatsServer::start_tls(pki) }?;
//!             Some(TlsEndpoint::new(server.tls_url(), server))
//!         },
//!         Connector::new(|url: String| async move { switchboard_nats::connect(&url).await }),
//!     )
//! }
//! // One #[tokio::test] per check:
//! switchboard_testkit::tls_checks!(checks());
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_conformance::Connector;
use switchboard_core::{Broker, ConnectKind, ErrorKind, Message};

use crate::certs::Pki;

/// A TLS listener a check connects to: its URL (scheme, credentials, host,
/// port, path; no query) and whatever keeps it running (a server process, a
/// proxy), stopped when this is dropped.
pub struct TlsEndpoint {
    url: String,
    _running: Box<dyn Send>,
}

impl TlsEndpoint {
    /// `url` is served for as long as `running` is kept.
    pub fn new(url: impl Into<String>, running: impl Send + 'static) -> Self {
        TlsEndpoint {
            url: url.into(),
            _running: Box::new(running),
        }
    }

    /// The URL with `query` appended.
    pub fn url_with(&self, query: &str) -> String {
        format!("{}?{query}", self.url)
    }
}

impl fmt::Debug for TlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsEndpoint")
            .field("url", &self.url)
            .finish()
    }
}

type StartFn = dyn Fn(&Pki, bool) -> Option<TlsEndpoint> + Send + Sync;

/// The checks, bound to one adapter: how to start its TLS listener and how to connect.
pub struct TlsChecks {
    start: Box<StartFn>,
    connector: Connector,
    /// Conformance cases not run over TLS, with the reason.
    left_out: Vec<(&'static str, &'static str)>,
}

impl fmt::Debug for TlsChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsChecks")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl TlsChecks {
    /// `start(pki, mutual)` starts a listener serving [`Pki::server_cert`]
    /// that, when `mutual`, requires a client certificate signed by
    /// [`Pki::ca`]; `None` skips the check (the fixture said why).
    pub fn new(
        start: impl Fn(&Pki, bool) -> Option<TlsEndpoint> + Send + Sync + 'static,
        connector: Connector,
    ) -> Self {
        TlsChecks {
            start: Box::new(start),
            connector,
            left_out: Vec::new(),
        }
    }

    /// Leaves conformance case `case` out of [`TlsChecks::conformance_over_tls`],
    /// saying `why` (printed as a `skipped:` line).
    pub fn leave_out_of_conformance(mut self, case: &'static str, why: &'static str) -> Self {
        self.left_out.push((case, why));
        self
    }

    /// With `ca=` in the URL the connection works: a message goes round.
    pub async fn trusts_the_ca_in_the_url(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        self.works(&endpoint.url_with(&pki.ca_query())).await;
    }

    /// Without `ca=`, the system trust store does not know the test CA: one
    /// line says the certificate is not trusted and how to fix it.
    pub async fn without_a_ca_the_certificate_is_not_trusted(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        self.fails(
            &endpoint.url,
            &[
                "certificate is not trusted",
                "the system trust store",
                "ca=",
            ],
        )
        .await;
    }

    /// With a CA that did not sign the server's certificate, the error names its file.
    pub async fn the_wrong_ca_is_named(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        let wrong = pki.untrusted_ca().display().to_string();
        self.fails(
            &endpoint.url_with(&format!("ca={wrong}")),
            &[
                "certificate is not trusted",
                &format!("the CA file {wrong}"),
            ],
        )
        .await;
    }

    /// `tls_server_name` is what the certificate is checked against: a name
    /// it does not hold is a host name mismatch listing the names it holds; a
    /// name it holds (and the URL's host does not) works.
    pub async fn tls_server_name_is_checked(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        let url = endpoint.url_with(&pki.ca_query());
        self.fails(
            &format!("{url}&tls_server_name=elsewhere.example"),
            &[
                "host name mismatch",
                "elsewhere.example",
                Pki::OTHER_NAME,
                "tls_server_name",
            ],
        )
        .await;
        self.works(&format!("{url}&tls_server_name={}", Pki::OTHER_NAME))
            .await;
    }

    /// When the server requires a client certificate: without one the error
    /// says so; one the server does not trust is refused, naming its file;
    /// the trusted one works.
    pub async fn mutual_tls_needs_the_client_certificate(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, true) else {
            return;
        };
        let url = endpoint.url_with(&pki.ca_query());
        self.fails(&url, &["requires a client certificate", "cert=", "key="])
            .await;
        let stranger = pki.untrusted_client_cert().display().to_string();
        self.fails(
            &format!(
                "{url}&cert={stranger}&key={}",
                pki.untrusted_client_key().display()
            ),
            &["refused the client certificate", &stranger],
        )
        .await;
        self.works(&format!("{url}&{}", pki.client_query())).await;
    }

    /// A file that cannot be read or holds the wrong thing is named, and a
    /// key file's contents never appear in the error.
    pub async fn unusable_files_are_named_without_their_contents(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        self.fails(
            &endpoint.url_with("ca=/nonexistent/ca.pem"),
            &["cannot read the CA file /nonexistent/ca.pem"],
        )
        .await;
        let key = std::fs::read_to_string(pki.client_key()).unwrap();
        let secret = key.lines().nth(1).unwrap().to_string();
        let key = pki.client_key().display().to_string();
        let text = self
            .fails(
                &endpoint.url_with(&format!("{}&cert={key}&key={key}", pki.ca_query())),
                &["client certificate file", &key],
            )
            .await;
        assert!(!text.contains(&secret), "key contents in: {text}");
    }

    /// A failed handshake, however it fails (certificate not trusted, client
    /// certificate missing or refused, the latter shown only after the
    /// handshake with TLS 1.3), is a [`ConnectKind::Tls`] error that is not
    /// temporary (connecting again cannot fix it), and its chain of sources
    /// never repeats the text of the one before.
    pub async fn handshake_failures_are_tls_and_not_temporary(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        self.fails_tls(&endpoint.url).await;
        drop(endpoint);
        let Some(endpoint) = (self.start)(&pki, true) else {
            return;
        };
        let url = endpoint.url_with(&pki.ca_query());
        self.fails_tls(&url).await;
        self.fails_tls(&format!(
            "{url}&cert={}&key={}",
            pki.untrusted_client_cert().display(),
            pki.untrusted_client_key().display()
        ))
        .await;
    }

    /// Connecting to `url` fails with a TLS connect error (see
    /// [`handshake_failures_are_tls_and_not_temporary`](Self::handshake_failures_are_tls_and_not_temporary)).
    async fn fails_tls(&self, url: &str) {
        let error = match self.connector.connect(url).await {
            Ok(_) => panic!("connecting to {url} should fail"),
            Err(error) => error,
        };
        assert_eq!(error.connect_kind(), Some(ConnectKind::Tls), "{error}");
        assert!(!error.is_temporary(), "{error}");
        crate::assert_chain_does_not_repeat(&error);
    }

    /// Connects to `url` and sends a message round.
    /// The whole conformance suite, unchanged, over TLS with `ca=` in the
    /// URL: what works in plain text works the same through TLS.
    pub async fn conformance_over_tls(&self) {
        let pki = Pki::new();
        let Some(endpoint) = (self.start)(&pki, false) else {
            return;
        };
        let url = endpoint.url_with(&pki.ca_query());
        let broker = self
            .connector
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        let kind = broker.kind();
        broker.close().await.unwrap();
        switchboard_conformance::Suite::at(kind, url, self.connector.clone())
            .run_all_but(&self.left_out)
            .await;
    }

    async fn works(&self, url: &str) {
        let broker = self
            .connector
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        round_trip(broker.as_ref()).await;
        broker.close().await.unwrap();
    }

    /// Connecting to `url` fails, without hanging, with one line containing
    /// every `needle`; returns the line.
    pub async fn fails(&self, url: &str, needles: &[&str]) -> String {
        let started = Instant::now();
        let error = match self.connector.connect(url).await {
            Ok(_) => panic!("connecting to {url} should fail"),
            Err(error) => error,
        };
        // Bounded by the adapter's connect timeout; generous: "it does not hang".
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "failed after {:?}",
            started.elapsed()
        );
        assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
        let text = error.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(!text.contains("guest:guest"), "password shown: {text}");
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} missing in: {text}");
        }
        text
    }
}

/// Publishes and receives one message: the connection really works.
async fn round_trip(broker: &dyn Broker) {
    let subject = format!("{}.secure", crate::unique("tls"));
    let mut subscription = broker.subscribe(&subject.parse().unwrap()).await.unwrap();
    broker
        .publish(Message::new(subject.as_str(), "over TLS").unwrap())
        .await
        .unwrap();
    let mut delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message arrives within 10 s")
        .expect("the subscription is open")
        .unwrap();
    assert_eq!(delivery.payload_str(), Some("over TLS"));
    if broker.capabilities().ack {
        delivery.ack().await.unwrap();
    }
}

/// Expands to one `#[tokio::test]` per shared TLS check, each calling it on
/// the [`TlsChecks`] that `$checks` (an expression, evaluated per test) builds.
///
/// ```ignore
/// switchboard_testkit::tls_checks!(checks());
/// ```
#[macro_export]
macro_rules! tls_checks {
    ($checks:expr) => {
        $crate::__tls_checks! {
            $checks;
            trusts_the_ca_in_the_url
            without_a_ca_the_certificate_is_not_trusted
            the_wrong_ca_is_named
            tls_server_name_is_checked
            mutual_tls_needs_the_client_certificate
            unusable_files_are_named_without_their_contents
            handshake_failures_are_tls_and_not_temporary
        }
    };
}

/// Implementation detail of [`tls_checks!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __tls_checks {
    ($checks:expr; $($check:ident)*) => {
        $(
            #[::tokio::test]
            async fn $check() {
                ($checks).$check().await;
            }
        )*

        /// The conformance suite over TLS, on the runtime the suite's cases
        /// run on (two worker threads).
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_over_tls() {
            ($checks).conformance_over_tls().await;
        }
    };
}
