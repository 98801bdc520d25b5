//! `Secret`: a config value (a password, a key passphrase) that no `Debug`, log line, error
//! message or `pipeline validate` output ever shows; only the client that needs it reads it.

use serde::Deserialize;

/// A secret string from the config file or a `PIPELINE__…` variable. It has no `Display`,
/// and its `Debug` prints a fixed mask, so formatting a config never leaks it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one client that needs it. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// Whether a librdkafka (or similar) property name holds a secret, so a pass-through
/// value under it is masked wherever it could be shown.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "private",
        "key.pem",
        "credential",
    ]
    .iter()
    .any(|part| key.contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_secret_never_shows_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(\"***\")");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn password_like_property_names_are_secret() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["linger.ms", "sasl.username", "ssl.ca.location"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
