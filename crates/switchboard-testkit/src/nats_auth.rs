//! NATS authentication made per test: NKey users and an operator-mode setup
//! (an operator, an account, user JWTs in `.creds` files) built with the
//! `nkeys` crate, written to a temporary directory removed on drop, and
//! nats-servers of the test's own configured for them.
//!
//! The JWTs are the NATS v2 format `nsc` writes: `header.claims.signature`,
//! base64url without padding, signed with the issuer's NKey (`ed25519-nkey`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};

use crate::process::NatsServer;

/// A temporary directory of NATS key and configuration files, removed on drop.
#[derive(Debug)]
pub struct NatsAuth {
    dir: PathBuf,
}

/// An NKey user: the file holding its seed and its public key.
#[derive(Debug, Clone)]
pub struct NkeyUser {
    /// The seed file (`SU…` on one line, as `nk -gen user` writes it).
    pub seed_file: PathBuf,
    /// The public key (`U…`) a server lists in its `authorization` block.
    pub public_key: String,
    /// The seed itself, for checking that no error shows it.
    pub seed: String,
}

impl Default for NatsAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl NatsAuth {
    /// A fresh temporary directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::unique("nats-auth"));
        std::fs::create_dir_all(&dir).expect("a temporary directory for NATS keys");
        NatsAuth { dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new NKey user whose seed is written to `<name>.nk`.
    pub fn nkey_user(&self, name: &str) -> NkeyUser {
        let pair = KeyPair::new_user();
        let seed = pair.seed().expect("a new key pair has a seed");
        let seed_file = self.dir.join(format!("{name}.nk"));
        std::fs::write(&seed_file, format!("{seed}\n")).expect("writing a seed file");
        NkeyUser {
            seed_file,
            public_key: pair.public_key(),
            seed,
        }
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("writing a file");
        path
    }

    /// A nats-server that accepts exactly the NKey users `users` (by public key).
    pub fn start_nkey_server(&self, users: &[&NkeyUser]) -> Option<NatsServer> {
        let list: Vec<String> = users
            .iter()
            .map(|user| format!("    {{ nkey: {:?} }}", user.public_key))
            .collect();
        let config = self.write(
            &format!("nkey-{}.conf", crate::unique("server")),
            &format!(
                "authorization {{\n  users = [\n{}\n  ]\n}}\n",
                list.join("\n")
            ),
        );
        NatsServer::start(&["-c", &config.display().to_string()])
    }
}

/// An operator-mode (JWT) setup: an operator, one account it signs, and
/// users that account signs, each as a `.creds` file.
#[derive(Debug)]
pub struct NatsOperator {
    auth: NatsAuth,
    operator: KeyPair,
    account: KeyPair,
}

impl Default for NatsOperator {
    fn default() -> Self {
        Self::new()
    }
}

impl NatsOperator {
    /// A new operator and account, in a fresh temporary directory.
    pub fn new() -> Self {
        NatsOperator {
            auth: NatsAuth::new(),
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.auth.dir()
    }

    /// A new user of the account, written as `<name>.creds` (its JWT and
    /// its seed, in the layout `nsc generate creds` writes).
    pub fn creds(&self, name: &str) -> PathBuf {
        self.user_creds(&self.account, name)
    }

    /// A user JWT signed by another account than the one the server
    /// trusts, as a `.creds` file: a server must reject it.
    pub fn foreign_creds(&self, name: &str) -> PathBuf {
        self.user_creds(&KeyPair::new_account(), name)
    }

    fn user_creds(&self, account: &KeyPair, name: &str) -> PathBuf {
        let user = KeyPair::new_user();
        let jwt = encode(
            account,
            &user.public_key(),
            name,
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        );
        let seed = user.seed().expect("a new key pair has a seed");
        self.auth.write(
            &format!("{name}.creds"),
            &format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\
                 NKEY Seed printed below can be used to sign and prove identity.\n\
                 NKEYs are sensitive and should be treated as secrets.\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
                 *************************************************************\n"
            ),
        )
    }

    /// A nats-server in operator mode trusting this operator, with the
    /// account preloaded (`resolver: MEMORY`).
    pub fn start_server(&self) -> Option<NatsServer> {
        let operator_public = self.operator.public_key();
        let operator_jwt = encode(
            &self.operator,
            &operator_public,
            "switchboard-test-operator",
            json!({"type": "operator", "version": 2}),
        );
        let account_public = self.account.public_key();
        let account_jwt = encode(
            &self.operator,
            &account_public,
            "switchboard-test-account",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account", "version": 2
            }),
        );
        let operator_file = self.auth.write("operator.jwt", &operator_jwt);
        let config = self.auth.write(
            &format!("operator-{}.conf", crate::unique("server")),
            &format!(
                "operator: {:?}\nresolver: MEMORY\nresolver_preload: {{\n  {account_public}: {account_jwt:?}\n}}\n",
                operator_file.display().to_string()
            ),
        );
        NatsServer::start(&["-c", &config.display().to_string()])
    }
}

/// A NATS v2 JWT for `subject`, issued and signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": crate::unique("jti").replace('.', ""),
        "iat": issued,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("signing a JWT");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

impl Drop for NatsAuth {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
