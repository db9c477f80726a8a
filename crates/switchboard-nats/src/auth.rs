//! Authentication from files: an NKey seed file (`nkey=`) and a credentials
//! file (`creds=`, a user JWT and its seed), read when connecting and handed
//! to async-nats, which signs the server's challenge with the seed. Every
//! error names the file and never shows what it holds.

use std::path::Path;

use switchboard_core::{ConnectKind, Error, Result};

use crate::options::NatsOptions;
use crate::KIND;

/// Adds the NKey or credentials file of `options` to `connect` (neither set:
/// `connect` as it is). Fails with an [`Error::Connect`] of kind
/// [`ConnectKind::Auth`] naming the file if it cannot be read or holds no
/// usable seed.
pub(crate) async fn configure(
    url: &str,
    connect: async_nats::ConnectOptions,
    options: &NatsOptions,
) -> Result<async_nats::ConnectOptions> {
    if let Some(path) = &options.nkey {
        let text = read(url, "NKey seed", path).await?;
        let seed = user_seed(&text).map_err(|problem| {
            auth_error(
                url,
                format!("the NKey seed file {} {problem}", path.display()),
            )
        })?;
        return Ok(connect.nkey(seed.to_string()));
    }
    if let Some(path) = &options.creds {
        let text = read(url, "credentials", path).await?;
        // async-nats' parse errors say what is missing, never the content.
        return connect.credentials(&text).map_err(|e| {
            auth_error(
                url,
                format!(
                    "the credentials file {} is not usable ({e}); it must hold a user JWT and its NKey seed, as `nsc generate creds` writes them",
                    path.display()
                ),
            )
        });
    }
    Ok(connect)
}

/// What to check when the server rejects the credentials, in terms of what
/// was given: an NKey file, a credentials file, or the URL's user or token.
pub(crate) fn rejected(options: &NatsOptions) -> String {
    if let Some(path) = &options.nkey {
        format!(
            "authorization failed: the server accepts no NKey user for the seed in {}; check that its `authorization` block lists that user's public key (U…)",
            path.display()
        )
    } else if let Some(path) = &options.creds {
        format!(
            "authorization failed: the server rejected the user JWT in {}; check that it was issued by an account the server trusts (operator, resolver) and has not expired",
            path.display()
        )
    } else {
        "authorization failed: the server rejected the credentials; check the user:password or token in the URL".to_string()
    }
}

/// The text of the file at `path` (`what` names it in the error).
async fn read(url: &str, what: &str, path: &Path) -> Result<String> {
    tokio::fs::read_to_string(path).await.map_err(|e| {
        auth_error(
            url,
            format!("cannot read the {what} file {}: {e}", path.display()),
        )
    })
}

/// The user seed (`SU…`) in `text`: the first word that decodes as an NKey
/// seed, so a file with comments or decoration around the seed still works.
/// The problem, if any, is said without the seed.
fn user_seed(text: &str) -> std::result::Result<&str, &'static str> {
    let seed = text
        .split_whitespace()
        .find(|word| word.starts_with('S') && nkeys::KeyPair::from_seed(word).is_ok())
        .ok_or("holds no NKey seed (a line `SU…` as `nk -gen user` writes it)")?;
    if !seed.starts_with("SU") {
        return Err("holds an NKey seed that is not a user's (a user seed starts with `SU`)");
    }
    Ok(seed)
}

fn auth_error(url: &str, reason: String) -> Error {
    Error::connect(KIND, url, ConnectKind::Auth, reason, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_user_seed_and_never_shows_a_seed() {
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let decorated = format!("# alice\n\n  {user}  \n");
        assert_eq!(user_seed(&decorated), Ok(user.as_str()));
        let err = user_seed(&account).unwrap_err();
        assert!(err.contains("not a user's"), "{err}");
        assert!(!err.contains(&account));
        let err = user_seed("SUNOTASEED hello").unwrap_err();
        assert!(err.contains("holds no NKey seed"), "{err}");
    }
}
