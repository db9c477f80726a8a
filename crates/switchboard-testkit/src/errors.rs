//! Checks on how an error reads when it is reported with its whole chain of
//! sources (`error: source: source's source`), as the CLI prints it.

/// The texts of `error` and of each of its sources, outermost first.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    texts
}

/// Fails if an error in the chain shows the text of its own source: reported
/// in full, that text would appear twice.
pub fn assert_chain_does_not_repeat(error: &(dyn std::error::Error + 'static)) {
    let texts = chain(error);
    for pair in texts.windows(2) {
        assert!(
            !pair[1].is_empty() && !pair[0].contains(&pair[1]),
            "{:?} repeats its source {:?}; the whole chain: {texts:?}",
            pair[0],
            pair[1]
        );
    }
}
