//! `suite!` runs exactly the cases `cases::ALL` lists.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[test]
fn suite_macro_lists_every_case() {
    let source = include_str!("../src/lib.rs");
    let start = source
        .find("[$broker, $url_env, $default_url, $connect]")
        .expect("the case list in suite!");
    let list = &source[start..];
    let list = &list[list.find(']').unwrap() + 1..list.find('}').unwrap()];
    let in_macro: Vec<&str> = list.split_whitespace().collect();
    assert_eq!(in_macro, switchboard_conformance::cases::ALL);
}

/// Every case `suite!` runs can be run by name (`Suite::run_all`), and no other.
#[test]
fn every_case_runs_by_name() {
    for name in switchboard_conformance::cases::ALL {
        assert!(
            switchboard_conformance::cases::by_name(name).is_some(),
            "{name}"
        );
    }
    assert!(switchboard_conformance::cases::by_name("no_such_case").is_none());
}

/// `Suite::run_all` runs the whole suite in one test: on the in-memory broker
/// every case passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_in_memory() {
    switchboard_conformance::Suite::at(
        "memory",
        "memory://run-all",
        switchboard_conformance::Connector::new(|url: String| async move {
            switchboard_core::MemoryBroker::connect(&url)
        }),
    )
    .run_all()
    .await;
}
