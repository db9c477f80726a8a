//! What the worker's log lines say about the message they belong to, in
//! tracing-subscriber's text format (the CLI's): each handling runs in a
//! `switchboard.message` span whose fields frame the handler's events and
//! the worker's own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{MemoryBroker, Message, Publisher};
use switchboard_worker::{Context, Route, Worker};
use tracing_subscriber::fmt::MakeWriter;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The one line holding `needle`.
    fn line_with(&self, needle: &str) -> String {
        let text = self.text();
        let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "one line with {needle:?} in:\n{text}");
        found[0].to_string()
    }
}

// A current-thread runtime: the worker's tasks run on the thread whose
// default subscriber the test sets.
#[tokio::test]
async fn each_line_names_the_message_and_its_attempt_once() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let broker = MemoryBroker::new();
    let handler = |ctx: Context| async move {
        tracing::info!("handling try {}", ctx.attempt());
        if ctx.attempt() == 1 {
            Err("the first try fails")
        } else {
            Ok(())
        }
    };
    let running = Worker::new(broker.clone())
        .route(
            Route::new("orders.>", handler)
                .attempts(2)
                .backoff(Duration::from_millis(1)),
        )
        .max_messages(1)
        .start()
        .await
        .unwrap();
    broker
        .publish(Message::new("orders.new", "one").unwrap())
        .await
        .unwrap();
    let summary = running.wait().await;
    assert_eq!(summary.stats.handled, 1, "{summary:?}");

    let span = "switchboard.message{route=orders.> subject=orders.new";
    // The first try: the span as made, its attempt once.
    let first = lines.line_with("handling try 1");
    assert!(first.contains(&format!("{span} attempt=1}}:")), "{first}");
    // The retry records its number; the text format appends it.
    let second = lines.line_with("handling try 2");
    assert!(
        second.contains(&format!("{span} attempt=1 attempt=2}}:")),
        "{second}"
    );
    // The worker's own event after the handler, logged in the span
    // without entering it.
    let handled = lines.line_with(": handled");
    assert!(handled.contains(span), "{handled}");
    let text = lines.text();
    assert!(!text.contains("attempt=1 attempt=1"), "{text}");
}
