//! How a Kafka client authenticates and encrypts: the typed `security` table of a Kafka
//! source or sink (TLS, SASL) and the librdkafka properties it becomes, plus the
//! pass-through property table whose secret values are masked in any `Debug`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::config::{is_secret_key, Problems, Secret};

use super::KafkaError;

/// librdkafka `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// librdkafka `sasl.mechanism`; the ones librdkafka implements without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The `security` table of a Kafka source or sink. Plaintext unless set. Secrets
/// (`sasl_password`, `key_password`) are [`Secret`]s: set them in the file or, better, with
/// `PIPELINE__SINKS__<NAME>__SECURITY__SASL_PASSWORD`; they are never printed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// PEM file of the CA(s) that signed the brokers' certificates (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate clients by TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to (default true).
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    #[serde(default)]
    pub sasl_password: Option<Secret>,
}

fn default_true() -> bool {
    true
}

/// librdkafka properties the `security` table owns.
pub const OWNED_SECURITY_KEYS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

impl KafkaSecurity {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        let p = self.protocol;
        let tls_only = |set: bool, key: &str, problems: &mut Problems| {
            problems.check(
                !set || p.uses_tls(),
                format!("{prefix}.security.{key}"),
                "is a TLS setting; set security.protocol to ssl or sasl_ssl",
            );
        };
        tls_only(self.ca_file.is_some(), "ca_file", problems);
        tls_only(self.cert_file.is_some(), "cert_file", problems);
        tls_only(self.key_file.is_some(), "key_file", problems);
        tls_only(self.key_password.is_some(), "key_password", problems);
        problems.check(
            self.cert_file.is_some() == self.key_file.is_some(),
            format!("{prefix}.security.cert_file"),
            "cert_file and key_file go together",
        );
        if p.uses_sasl() {
            problems.check(
                self.sasl_mechanism.is_some(),
                format!("{prefix}.security.sasl_mechanism"),
                "is required with a sasl_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            );
            problems.check(
                self.sasl_username.as_deref().is_some_and(|u| !u.is_empty())
                    && self.sasl_password.is_some(),
                format!("{prefix}.security.sasl_username"),
                "sasl_username and sasl_password are required with a sasl_* protocol",
            );
        } else {
            problems.check(
                self.sasl_mechanism.is_none()
                    && self.sasl_username.is_none()
                    && self.sasl_password.is_none(),
                format!("{prefix}.security.sasl_mechanism"),
                "SASL settings need security.protocol sasl_plaintext or sasl_ssl",
            );
        }
        if p == SecurityProtocol::SaslPlaintext && self.sasl_mechanism == Some(SaslMechanism::Plain)
        {
            tracing::warn!(
                "{prefix}: SASL PLAIN over plaintext sends the password unencrypted; \
                 prefer sasl_ssl"
            );
        }
    }

    /// Sets this table's librdkafka properties on `c`.
    pub fn apply(&self, c: &mut ClientConfig) {
        c.set("security.protocol", self.protocol.as_librdkafka());
        if self.protocol.uses_tls() {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &self.ca_file {
                c.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &self.cert_file {
                c.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &self.key_file {
                c.set("ssl.key.location", path(key));
            }
            if let Some(pw) = &self.key_password {
                c.set("ssl.key.password", pw.expose());
            }
            c.set(
                "ssl.endpoint.identification.algorithm",
                if self.verify_hostname {
                    "https"
                } else {
                    "none"
                },
            );
        }
        if self.protocol.uses_sasl() {
            if let Some(m) = self.sasl_mechanism {
                c.set("sasl.mechanism", m.as_librdkafka());
            }
            if let Some(u) = &self.sasl_username {
                c.set("sasl.username", u);
            }
            if let Some(pw) = &self.sasl_password {
                c.set("sasl.password", pw.expose());
            }
        }
    }
}

/// Creates a librdkafka client from `config`. A failure's message can quote the value of
/// the property librdkafka refused, so the values of secret properties are masked in it.
pub fn create_client<T>(
    config: &ClientConfig,
    what: &'static str,
    create: impl FnOnce(&ClientConfig) -> rdkafka::error::KafkaResult<T>,
) -> Result<T, KafkaError> {
    create(config).map_err(|e| {
        let mut message = e.to_string();
        // (`config_map` masks only the keys rdkafka knows to be sensitive; read the rest.)
        for key in config.config_map().into_keys().filter(|k| is_secret_key(k)) {
            if let Some(value) = config.get(key).filter(|v| !v.is_empty()) {
                message = message.replace(value, "***");
            }
        }
        KafkaError::Create { what, message }
    })
}

/// The pass-through table of librdkafka properties. Its `Debug` masks the values of
/// secret-looking keys (`sasl.password`, `ssl.key.password`, …).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Sets every property on `c`.
    pub fn apply(&self, c: &mut ClientConfig) {
        for (k, v) in &self.0 {
            c.set(k, v);
        }
    }
}

impl FromIterator<(String, String)> for Properties {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret_key(k) { "***" } else { v.as_str() };
                (k, shown)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(toml_text: &str) -> KafkaSecurity {
        toml::from_str(toml_text).unwrap()
    }

    fn problems_of(s: &KafkaSecurity) -> Vec<String> {
        let mut p = Problems::new();
        s.validate("sinks.k", &mut p);
        p.into_vec().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn sasl_ssl_with_scram_sets_every_librdkafka_property() {
        let s = security(
            "protocol = \"sasl_ssl\"\nca_file = \"/etc/ca.pem\"\n\
             sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"svc\"\n\
             sasl_password = \"s3cret\"\n",
        );
        assert!(problems_of(&s).is_empty(), "{:?}", problems_of(&s));
        let mut c = ClientConfig::new();
        s.apply(&mut c);
        for (k, v) in [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "https"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "svc"),
            ("sasl.password", "s3cret"),
        ] {
            assert_eq!(c.get(k), Some(v), "{k}");
        }
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn sasl_without_credentials_or_tls_files_without_tls_are_refused() {
        let p = problems_of(&security("protocol = \"sasl_ssl\""));
        assert!(p.iter().any(|m| m.contains("sasl_mechanism")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("sasl_username")), "{p:?}");
        let p = problems_of(&security("ca_file = \"/ca.pem\""));
        assert!(p.iter().any(|m| m.contains("security.ca_file")), "{p:?}");
        let p = problems_of(&security("protocol = \"ssl\"\ncert_file = \"/c.pem\""));
        assert!(p.iter().any(|m| m.contains("go together")), "{p:?}");
    }

    #[test]
    fn pass_through_debug_masks_secret_values() {
        let p: Properties = [
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("linger.ms".to_string(), "7".to_string()),
        ]
        .into_iter()
        .collect();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"linger.ms\": \"7\""), "{shown}");
    }
}
