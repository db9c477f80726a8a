//! Loops among routes: a route whose publishes (or dead letters) reach a route
//! that hands them back floods the broker — one message forwarded without end.
//! [`find_cycle`] finds such loops from the routes' patterns and declared
//! targets, before any message flows; [`Worker::start`](crate::Worker::start)
//! refuses them.

use std::collections::VecDeque;
use std::fmt;

use switchboard_core::{Pattern, Token};

use crate::Route;

/// How a route hands a message on to a target subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Via {
    /// A target declared with [`Route::publishes_to`].
    Publish,
    /// The route's dead-letter subject.
    DeadLetter,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Publish => "publish",
            Via::DeadLetter => "dead letter",
        })
    }
}

/// One step of a [`RouteCycle`]: the route at index `route` (in the order the
/// routes were added), on `pattern`, hands messages via `via` to `target`,
/// which the next step's route (or the first, after the last step) receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CycleStep {
    /// The route's index among the worker's routes.
    pub route: usize,
    /// The route's pattern.
    pub pattern: String,
    /// Whether it publishes or dead-letters there.
    pub via: Via,
    /// The target subject template, as declared.
    pub target: String,
}

/// Routes that would hand messages round in a loop, in order; the last step
/// leads back to the first. Displayed as the loop spelled out, e.g.
/// `alerts.cpu → (publish audit.cpu) audit.cpu → (publish alerts.cpu) alerts.cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteCycle {
    /// The steps, starting at the route added first among them.
    pub steps: Vec<CycleStep>,
}

impl fmt::Display for RouteCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            write!(f, "{} → ({} {}) ", step.pattern, step.via, step.target)?;
        }
        match self.steps.first() {
            Some(first) => f.write_str(&first.pattern),
            None => Ok(()),
        }
    }
}

/// The shortest loop among `routes` (the one starting earliest on a tie), or
/// `None`. Routes whose pattern or targets are invalid are left out
/// ([`Worker::start`](crate::Worker::start) reports those first).
///
/// # What is checked
///
/// Each route hands messages on to its targets: the subject templates it
/// declared with [`Route::publishes_to`], and its dead-letter subject (with
/// the default stack; [`Route::no_dead_letter`] removes it). A target
/// template stands for every subject it can produce from what the route
/// receives: `audit.{subject}` on a route over `alerts.>` produces
/// `audit.alerts.>`. There is an edge from route A to route B when one of A's
/// targets can produce a subject B's pattern matches; a loop is a cycle of
/// such edges, including a route feeding itself (a dead letter its own
/// pattern matches, as `dlq.{subject}` under `>`).
///
/// The check reasons on patterns, so it is safe rather than exact: each route
/// is taken to receive everything its pattern matches (not only what the
/// previous route in a chain can send), and several `{subject}` in one
/// template are taken independently. It may therefore refuse a contrived
/// chain whose subjects could never actually line up; it never misses a loop
/// among declared targets. What a handler publishes without declaring it is
/// not known here.
///
/// ```
/// use switchboard_worker::{find_cycle, Context, HandlerError, Route};
/// let h = |_ctx: Context| async { Ok::<_, HandlerError>(()) };
/// let routes = [
///     Route::new("alerts.cpu", h).publishes_to("audit.cpu"),
///     Route::new("audit.cpu", h).publishes_to("alerts.cpu"),
/// ];
/// let cycle = find_cycle(&routes).expect("a loop");
/// assert_eq!(
///     cycle.to_string(),
///     "alerts.cpu → (publish audit.cpu) audit.cpu → (publish alerts.cpu) alerts.cpu"
/// );
/// ```
pub fn find_cycle(routes: &[Route]) -> Option<RouteCycle> {
    let patterns: Vec<Option<Pattern>> = routes
        .iter()
        .map(|route| Pattern::new(route.pattern()).ok())
        .collect();
    // edges[a] = (b, via, target): a hands on to b.
    let edges: Vec<Vec<(usize, Via, &str)>> = routes
        .iter()
        .zip(&patterns)
        .map(|(route, input)| {
            let Some(input) = input else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (via, target) in route.targets() {
                let Some(produced) = produce(target, input) else {
                    continue;
                };
                for (next, pattern) in patterns.iter().enumerate() {
                    if let Some(pattern) = pattern {
                        if intersects(&produced, pattern.tokens()) {
                            out.push((next, via, target));
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut best: Option<Vec<(usize, Via, &str)>> = None;
    for start in 0..routes.len() {
        if let Some(cycle) = shortest_cycle_from(start, &edges) {
            if best.as_ref().is_none_or(|b| cycle.len() < b.len()) {
                best = Some(cycle);
            }
        }
    }
    let steps = best?
        .into_iter()
        .map(|(route, via, target)| CycleStep {
            route,
            pattern: routes[route].pattern().to_string(),
            via,
            target: target.to_string(),
        })
        .collect();
    Some(RouteCycle { steps })
}

/// The shortest cycle through `start` (breadth first), as `(route, via,
/// target)` steps from `start`.
fn shortest_cycle_from<'a>(
    start: usize,
    edges: &[Vec<(usize, Via, &'a str)>],
) -> Option<Vec<(usize, Via, &'a str)>> {
    // parent[b] = the step that first reached b.
    let mut parent: Vec<Option<(usize, Via, &str)>> = vec![None; edges.len()];
    let mut queue = VecDeque::from([start]);
    let mut seen = vec![false; edges.len()];
    seen[start] = true;
    while let Some(node) = queue.pop_front() {
        for &(next, via, target) in &edges[node] {
            if next == start {
                let mut steps = vec![(node, via, target)];
                let mut at = node;
                while at != start {
                    let step = parent[at]?;
                    steps.push(step);
                    at = step.0;
                }
                steps.reverse();
                return Some(steps);
            }
            if !seen[next] {
                seen[next] = true;
                parent[next] = Some((node, via, target));
                queue.push_back(next);
            }
        }
    }
    None
}

/// A token of the subjects a target template can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Exactly this token.
    Lit(String),
    /// One token that starts with `prefix` and ends with `suffix`, with more between.
    Tok { prefix: String, suffix: String },
    /// Zero or more tokens, whatever they are.
    Star,
}

/// Part of one token of a template with the route's pattern put in for `{subject}`.
enum Atom<'a> {
    Text(&'a str),
    /// A `*` of the pattern: one token.
    One,
    /// A `>` of the pattern: one or more tokens.
    Many,
}

/// The subjects `template` can produce from a message received on `input`,
/// as pieces (over-approximated where a wildcard is glued to text, as in
/// `x-{subject}`); `None` when it can produce no valid subject.
fn produce(template: &str, input: &Pattern) -> Option<Vec<Piece>> {
    let mut tokens: Vec<Vec<Atom<'_>>> = vec![Vec::new()];
    for (index, text) in template.split("{subject}").enumerate() {
        if index > 0 {
            for (position, token) in input.tokens().iter().enumerate() {
                if position > 0 {
                    tokens.push(Vec::new());
                }
                let atom = match token {
                    Token::Literal(literal) => Atom::Text(literal),
                    Token::Any => Atom::One,
                    Token::Rest => Atom::Many,
                };
                tokens.last_mut()?.push(atom);
            }
        }
        for (position, part) in text.split('.').enumerate() {
            if position > 0 {
                tokens.push(Vec::new());
            }
            if !part.is_empty() {
                tokens.last_mut()?.push(Atom::Text(part));
            }
        }
    }
    let mut pieces = Vec::with_capacity(tokens.len());
    for atoms in &tokens {
        pieces.extend(token_pieces(atoms)?);
    }
    Some(pieces)
}

/// The pieces one template token becomes; `None` for an empty token (no valid subject).
fn token_pieces(atoms: &[Atom<'_>]) -> Option<Vec<Piece>> {
    let text = |atoms: &[Atom<'_>]| -> String {
        atoms
            .iter()
            .map(|atom| match atom {
                Atom::Text(text) => *text,
                _ => "",
            })
            .collect()
    };
    let Some(first_wild) = atoms.iter().position(|a| !matches!(a, Atom::Text(_))) else {
        let literal = text(atoms);
        return (!literal.is_empty()).then(|| vec![Piece::Lit(literal)]);
    };
    let last_wild = atoms
        .iter()
        .rposition(|a| !matches!(a, Atom::Text(_)))
        .unwrap_or(first_wild);
    let prefix = text(&atoms[..first_wild]);
    let suffix = text(&atoms[last_wild + 1..]);
    if !atoms.iter().any(|a| matches!(a, Atom::Many)) {
        return Some(vec![Piece::Tok { prefix, suffix }]);
    }
    // A `>` glued to text spans one or more tokens: the first keeps the
    // prefix, the last the suffix (only one of them is kept: still a superset).
    let any = |prefix: String, suffix: String| Piece::Tok { prefix, suffix };
    Some(if !prefix.is_empty() {
        vec![any(prefix, String::new()), Piece::Star]
    } else if !suffix.is_empty() {
        vec![Piece::Star, any(String::new(), suffix)]
    } else {
        vec![any(String::new(), String::new()), Piece::Star]
    })
}

/// Whether some subject is both produced by `pieces` and matched by `pattern`.
fn intersects(pieces: &[Piece], pattern: &[Token]) -> bool {
    let mut memo = vec![None; (pieces.len() + 1) * (pattern.len() + 1)];
    meet(pieces, pattern, 0, 0, &mut memo)
}

fn meet(
    pieces: &[Piece],
    pattern: &[Token],
    i: usize,
    j: usize,
    memo: &mut [Option<bool>],
) -> bool {
    let key = i * (pattern.len() + 1) + j;
    if let Some(known) = memo[key] {
        return known;
    }
    let result = if pattern.get(j) == Some(&Token::Rest) {
        // `>` (always last) takes one or more tokens of any kind, and any
        // remaining piece can make at least one.
        i < pieces.len()
    } else {
        match pieces.get(i) {
            None => j == pattern.len(),
            Some(Piece::Star) => {
                meet(pieces, pattern, i + 1, j, memo)
                    || (j < pattern.len() && meet(pieces, pattern, i, j + 1, memo))
            }
            Some(piece) => match pattern.get(j) {
                None => false,
                Some(token) => {
                    token_meets(token, piece) && meet(pieces, pattern, i + 1, j + 1, memo)
                }
            },
        }
    };
    memo[key] = Some(result);
    result
}

/// Whether one subject token can match both `token` (a pattern's, not `>`) and `piece`.
fn token_meets(token: &Token, piece: &Piece) -> bool {
    match (token, piece) {
        (Token::Literal(literal), Piece::Lit(text)) => literal == text,
        (Token::Literal(literal), Piece::Tok { prefix, suffix }) => {
            literal.len() > prefix.len() + suffix.len()
                && literal.starts_with(prefix.as_str())
                && literal.ends_with(suffix.as_str())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, HandlerError};

    /// Whether `template` on a route over `input` can produce a subject `pattern` matches.
    fn reaches(input: &str, template: &str, pattern: &str) -> bool {
        let input = Pattern::new(input).unwrap();
        let pattern = Pattern::new(pattern).unwrap();
        match produce(template, &input) {
            Some(pieces) => intersects(&pieces, pattern.tokens()),
            None => false,
        }
    }

    #[test]
    fn targets_reason_on_patterns() {
        let cases = [
            ("alerts.>", "audit.{subject}", "audit.>", true),
            ("alerts.>", "audit.{subject}", "audit.alerts.cpu", true),
            ("alerts.>", "audit.{subject}", "audit.alerts", false),
            ("alerts.>", "audit.{subject}", "alerts.>", false),
            (">", "dlq.{subject}", ">", true),
            ("alerts.>", "dlq.alerts", "alerts.>", false),
            ("alerts.>", "dlq.alerts", "dlq.>", true),
            ("alerts.>", "dlq.alerts", "dlq.*", true),
            ("alerts.>", "dlq.alerts", "dlq.alerts.>", false),
            ("a.*", "x-{subject}", "x-a.b", true),
            ("a.*", "x-{subject}", "a.b", false),
            ("a.*", "x-{subject}", "x-b.c", false),
            ("a.*", "x-{subject}", "x-a.b.c", false),
            (">", "x-{subject}", "x-a", true),
            (">", "x-{subject}", "x-a.b.c", true),
            (">", "x-{subject}", "y.a", false),
            (">", "x-{subject}", "x-", false),
            ("*", "{subject}-y", "a-y", true),
            ("*", "{subject}-y", "a-z", false),
            (">", "{subject}-y", "a.b-y", true),
            (">", "{subject}-y", "a.b", false),
            ("jobs.*", "{subject}.done", "jobs.*.done", true),
            ("jobs.*", "{subject}.done", "jobs.*", false),
            ("jobs.*", "{subject}.done", "jobs.>", true),
            (">", "{subject}.done", "a.done", true),
            (">", "{subject}.done", "done", false),
            (">", "{subject}.done", "a.*.done", true),
            ("a.b", "c.{subject}.{subject}", "c.a.b.a.b", true),
            ("a.b", "c.{subject}.{subject}", "c.a.b", false),
        ];
        for (input, template, pattern, expected) in cases {
            assert_eq!(
                reaches(input, template, pattern),
                expected,
                "{template:?} from {input:?} reaching {pattern:?}"
            );
        }
    }

    async fn ok(_ctx: Context) -> Result<(), HandlerError> {
        Ok(())
    }

    #[test]
    fn loops_are_found_and_spelled_out() {
        let cycle = |routes: &[Route]| find_cycle(routes).map(|c| c.to_string());
        assert_eq!(
            cycle(&[
                Route::new("alerts.cpu", ok).publishes_to("audit.cpu"),
                Route::new("audit.cpu", ok).publishes_to("alerts.cpu"),
            ])
            .as_deref(),
            Some("alerts.cpu → (publish audit.cpu) audit.cpu → (publish alerts.cpu) alerts.cpu")
        );
        assert_eq!(
            cycle(&[Route::new(">", ok)]).as_deref(),
            Some("> → (dead letter dlq.{subject}) >")
        );
        assert_eq!(
            cycle(&[
                Route::new("jobs.*", ok).dead_letter("failed.{subject}"),
                Route::new("failed.>", ok)
                    .dead_letter("dlq.x")
                    .publishes_to("retry.{subject}"),
                Route::new("retry.failed.*.*", ok).publishes_to("jobs.again"),
            ])
            .as_deref(),
            Some(
                "jobs.* → (dead letter failed.{subject}) failed.> → (publish retry.{subject}) \
                 retry.failed.*.* → (publish jobs.again) jobs.*"
            )
        );
        // The shortest loop is reported.
        let found = find_cycle(&[
            Route::new("a", ok).publishes_to("b"),
            Route::new("b", ok).publishes_to("a").publishes_to("b"),
        ])
        .unwrap();
        assert_eq!(found.to_string(), "b → (publish b) b");
        assert_eq!(found.steps[0].route, 1);
        assert_eq!(found.steps[0].via, Via::Publish);
    }

    #[test]
    fn chains_without_loops_pass() {
        let routes = [
            Route::new("alerts.>", ok).publishes_to("audit.{subject}"),
            Route::new("alerts.>", ok).dead_letter("dlq.alerts"),
            Route::new("audit.>", ok),
            Route::new("dlq.>", ok).no_dead_letter(),
            Route::custom("x.*", ok),
        ];
        assert_eq!(find_cycle(&routes), None);
        // Without a dead letter a catch-all route hands nothing on.
        assert_eq!(find_cycle(&[Route::new(">", ok).no_dead_letter()]), None);
        // A custom stack has no dead letter unless declared.
        assert_eq!(find_cycle(&[Route::custom(">", ok)]), None);
        assert!(find_cycle(&[Route::custom(">", ok).publishes_to("dlq.{subject}")]).is_some());
        // Invalid routes are left to Route::prepare.
        assert_eq!(
            find_cycle(&[Route::new("a..b", ok).publishes_to("a..b")]),
            None
        );
    }
}
