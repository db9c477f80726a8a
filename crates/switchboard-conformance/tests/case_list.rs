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
