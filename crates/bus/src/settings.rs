//! `[bus]`: the section of the shared configuration file every service reads.
//!
//! ```toml
//! [bus]
//! nats_url = "nats://127.0.0.1:4222"   # default
//! prefix = "keysync"                   # default
//!
//! # At most one way to authenticate (none by default):
//! credentials_file = "/run/secrets/nats/applier.creds"  # a NATS .creds file (user JWT + nkey seed)
//! # nkey_seed_file = "/run/secrets/nats/applier.nk"     # a user nkey seed (`SU...`)
//! # user = "applier"                                    # with `password_file` (or `password`)
//! # password_file = "/run/secrets/nats/applier.password"
//! # token_file = "/run/secrets/nats/token"              # (or `token`)
//!
//! # TLS (all optional):
//! tls_ca_file = "/etc/keysync/nats-ca.pem"    # the CA(s) that sign the server's certificate
//! tls_cert_file = "/etc/keysync/nats-client.pem"  # a client certificate, with `tls_key_file`
//! tls_key_file = "/run/secrets/nats/client.key"
//! require_tls = true                          # refuse a server that does not speak TLS
//!
//! inbox_prefix = "_INBOX_applier"  # where replies come; default `_INBOX`
//!
//! # What keysync creates on JetStream (streams, key-value buckets, object stores):
//! replicas = 3                  # JetStream replicas of each, 1 to 5; default 1
//! retention_days = 90           # runs, change results, events, dead letters; default 90
//! snapshot_retention_hours = 72 # stored snapshots and plans; default 72
//! ```
//!
//! keysync creates what is missing with these values and, when it is there, changes only
//! what it owns: it never lowers the replica count an operator raised, and keeps the
//! limits it does not set (`max_bytes`, placement, ...; see [`crate::provision`]).
//!
//! Every `*_file` key is read by the configuration loader (`config`), which puts the file's
//! content in the key without the suffix: this struct holds `credentials`, `nkey_seed`,
//! `password`, `token`, `tls_ca`, `tls_cert` and `tls_key`, never a path. The secrets among
//! them are [`Secret`]s, and a password in `nats_url` (`nats://user:pass@host`) is shown
//! as `***` by `Debug` and in every error ([`redact_url`]).

use std::{fmt, time::Duration};

use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use config::{Invalid, Secret};
use serde::Deserialize;

/// `[bus]`: where NATS is, how to authenticate and encrypt, and the prefix of every
/// subject, stream and bucket.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// The NATS server (or several, separated by commas). Default: `nats://127.0.0.1:4222`.
    /// `tls://` asks for TLS. Prefer `credentials_file` or `password_file` to a password
    /// in the URL.
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// The prefix of every subject, stream and bucket of one deployment: letters, digits,
    /// `-` and `_`. Default: `keysync`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `credentials_file`: a NATS `.creds` file (a user JWT and its nkey seed), for
    /// servers in operator mode.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// `nkey_seed_file`: a user nkey seed (`SU…`); the server knows its public key.
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// A user name, with `password_file` (or `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// `password_file` (or `password`): the password of `user`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `token_file` (or `token`): an authentication token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// `tls_ca_file`: PEM certificates of the CAs that sign the server's certificate,
    /// trusted instead of the system's roots. Required with a client certificate.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// `tls_cert_file`: the PEM client certificate (chain), with `tls_key_file`.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// `tls_key_file`: the PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key: Option<Secret>,
    /// Refuse to talk to a server without TLS. Default: `false` (TLS is still used when
    /// the URL is `tls://` or the server requires it).
    #[serde(default)]
    pub require_tls: bool,
    /// The subject prefix of this client's reply inboxes (JetStream API answers, pulled
    /// messages). Default: `_INBOX`. Give each service's user its own
    /// (`_INBOX_<user>`) and allow it only that, so that no service can read the replies
    /// meant for another (deploy/nats/accounts.conf).
    #[serde(default)]
    pub inbox_prefix: Option<String>,
    /// The JetStream replica count of every stream, key-value bucket and object store
    /// keysync creates: 1 to 5 (a cluster of at least that many servers). Default: 1. A
    /// higher count an operator set on one of them is kept, never lowered.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long runs, change results, the events stream and the dead letters are kept, in
    /// days; more than 0. Default: 90.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How long stored snapshots and plans are kept, in hours; more than 0. Default: 72.
    #[serde(default = "default_snapshot_retention_hours")]
    pub snapshot_retention_hours: u32,
}

/// The most replicas JetStream allows.
const MAX_REPLICAS: usize = 5;

impl Default for BusSettings {
    fn default() -> BusSettings {
        BusSettings {
            nats_url: default_nats_url(),
            prefix: default_prefix(),
            credentials: None,
            nkey_seed: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            inbox_prefix: None,
            replicas: default_replicas(),
            retention_days: default_retention_days(),
            snapshot_retention_hours: default_snapshot_retention_hours(),
        }
    }
}

impl fmt::Debug for BusSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BusSettings")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("prefix", &self.prefix)
            .field("credentials", &self.credentials)
            .field("nkey_seed", &self.nkey_seed)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "[PEM]"))
            .field("tls_cert", &self.tls_cert.as_ref().map(|_| "[PEM]"))
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("replicas", &self.replicas)
            .field("retention_days", &self.retention_days)
            .field("snapshot_retention_hours", &self.snapshot_retention_hours)
            .finish()
    }
}

impl BusSettings {
    /// Checks the prefix, the URL, the replica count and the retentions, that at most one
    /// authentication method is set and that the TLS material parses; no IO. Keys are relative to `[bus]` (use
    /// [`Invalid::within`] with `"bus"`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let valid = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|char| char.is_ascii_alphanumeric() || char == '-' || char == '_');
        if !valid {
            return Err(Invalid::new(
                "prefix",
                "must be letters, digits, `-` and `_`",
            ));
        }
        if self.nats_url.trim().is_empty() {
            return Err(Invalid::new("nats_url", "must not be empty"));
        }
        if let Some(inbox) = &self.inbox_prefix {
            let valid = !inbox.is_empty()
                && inbox.split('.').all(|token| {
                    !token.is_empty()
                        && token
                            .chars()
                            .all(|char| char.is_ascii_alphanumeric() || char == '-' || char == '_')
                });
            if !valid {
                return Err(Invalid::new(
                    "inbox_prefix",
                    "must be subject tokens (letters, digits, `-` and `_`) separated by `.`",
                ));
            }
        }
        self.validate_provisioning()?;
        self.validate_auth()?;
        self.validate_tls()?;
        Ok(())
    }

    /// The deployment's names.
    pub fn topology(&self) -> crate::Topology {
        crate::Topology::new(&self.prefix)
    }

    /// The options of a connection with these settings: the authentication method and
    /// the TLS configuration. Validates first.
    pub fn connect_options(&self) -> Result<async_nats::ConnectOptions, Invalid> {
        self.validate()?;
        let mut options = async_nats::ConnectOptions::new();
        if let Some(credentials) = &self.credentials {
            options = options
                .credentials(credentials.expose())
                .map_err(|_| invalid_credentials())?;
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.expose().to_owned());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(config) = self.tls_client_config()? {
            options = options.tls_client_config(config);
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        if let Some(inbox) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(inbox);
        }
        Ok(options)
    }

    /// What keysync creates on JetStream with these settings (not validated: see
    /// [`BusSettings::validate`]).
    pub fn provisioning(&self) -> crate::Provisioning {
        crate::Provisioning {
            replicas: self.replicas,
            runs_max_age: Duration::from_secs(u64::from(self.retention_days) * 24 * 3600),
            snapshots_max_age: Duration::from_secs(u64::from(self.snapshot_retention_hours) * 3600),
        }
    }

    fn validate_provisioning(&self) -> Result<(), Invalid> {
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(Invalid::new(
                "replicas",
                format!(
                    "must be 1 to {MAX_REPLICAS} (the JetStream replica count), not {}",
                    self.replicas
                ),
            ));
        }
        if self.retention_days == 0 {
            return Err(Invalid::new("retention_days", "must be more than 0"));
        }
        if self.snapshot_retention_hours == 0 {
            return Err(Invalid::new(
                "snapshot_retention_hours",
                "must be more than 0",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), Invalid> {
        match (&self.user, &self.password) {
            (Some(_), None) => {
                return Err(Invalid::new(
                    "password",
                    "is required with `user` (set `password_file` or `password`)",
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new("user", "is required with `password`"));
            }
            (Some(user), Some(_)) if user.is_empty() => {
                return Err(Invalid::new("user", "must not be empty"));
            }
            _ => {}
        }
        let methods = [
            ("nats_url", url_has_userinfo(&self.nats_url)),
            ("credentials", self.credentials.is_some()),
            ("nkey_seed", self.nkey_seed.is_some()),
            ("user", self.user.is_some()),
            ("token", self.token.is_some()),
        ];
        let mut set = methods.iter().filter(|(_, set)| *set).map(|(key, _)| *key);
        if let (Some(first), Some(second)) = (set.next(), set.next()) {
            return Err(Invalid::new(
                second,
                format!(
                    "is a second way to authenticate, with `{first}`: set one of a user and \
                     password in `nats_url`, `credentials_file`, `nkey_seed_file`, \
                     `user` with `password_file`, `token_file`"
                ),
            ));
        }
        if let Some(credentials) = &self.credentials {
            async_nats::ConnectOptions::with_credentials(credentials.expose())
                .map_err(|_| invalid_credentials())?;
        }
        if let Some(seed) = &self.nkey_seed {
            let seed = seed.expose().trim();
            if !seed.starts_with("SU") || seed.len() < 50 || seed.contains(char::is_whitespace) {
                return Err(Invalid::new(
                    "nkey_seed",
                    "is not a user nkey seed (one line starting `SU`)",
                ));
            }
        }
        if let Some(token) = &self.token
            && token.expose().is_empty()
        {
            return Err(Invalid::new("token", "must not be empty"));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), Invalid> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(Invalid::new(
                    "tls_key",
                    "is required with `tls_cert_file` (set `tls_key_file`)",
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new(
                    "tls_cert",
                    "is required with `tls_key_file` (set `tls_cert_file`)",
                ));
            }
            (Some(_), Some(_)) if self.tls_ca.is_none() => {
                return Err(Invalid::new(
                    "tls_ca",
                    "is required with a client certificate (set `tls_ca_file`)",
                ));
            }
            _ => {}
        }
        self.tls_client_config().map(|_| ())
    }

    /// The rustls configuration for `tls_ca` (and the client certificate), or `None` to
    /// let async-nats use the system's roots.
    fn tls_client_config(&self) -> Result<Option<async_nats::rustls::ClientConfig>, Invalid> {
        use async_nats::rustls::{self, RootCertStore};

        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let ca = pem_certificates(ca).map_err(|reason| Invalid::new("tls_ca", reason))?;
        let mut roots = RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate).map_err(|error| {
                Invalid::new("tls_ca", format!("is not a usable CA certificate: {error}"))
            })?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Invalid::new("tls_ca", format!("TLS setup failed: {error}")))?
            .with_root_certificates(roots);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let chain =
                    pem_certificates(cert).map_err(|reason| Invalid::new("tls_cert", reason))?;
                let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                    .map_err(|_| Invalid::new("tls_key", "is not a PEM private key"))?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    Invalid::new(
                        "tls_key",
                        format!("does not go with `tls_cert_file`: {error}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(config))
    }
}

fn invalid_credentials() -> Invalid {
    Invalid::new(
        "credentials",
        "is not a NATS credentials file (a user JWT and an nkey seed)",
    )
}

fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("is not PEM certificates: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// `url` (one NATS URL or several separated by commas) with the secret part of every
/// user info replaced by `***`: `nats://user:***@host:4222`. A user info without `:` is a
/// token in NATS and is replaced whole: `nats://***@host:4222`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let (scheme, rest) = match server.find("://") {
                Some(at) => server.split_at(at + 3),
                None => ("", server),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return server.to_owned();
            };
            let user = match rest[..at].find(':') {
                Some(colon) => format!("{}:***", &rest[..colon]),
                None => "***".to_owned(),
            };
            format!("{scheme}{user}{}", &rest[at..])
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn url_has_userinfo(url: &str) -> bool {
    redact_url(url) != url
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_prefix() -> String {
    "keysync".to_owned()
}

fn default_replicas() -> usize {
    1
}

fn default_retention_days() -> u32 {
    90
}

fn default_snapshot_retention_hours() -> u32 {
    72
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_that_is_not_a_subject_token_names_its_key() {
        let settings = BusSettings {
            prefix: "a.b".to_owned(),
            ..BusSettings::default()
        };
        assert_eq!(settings.validate().expect_err("a dot").key(), "prefix");
        assert!(BusSettings::default().validate().is_ok());
    }

    #[test]
    fn replicas_and_retentions_are_checked_and_name_their_keys() {
        for replicas in [0, 6] {
            let settings = BusSettings {
                replicas,
                ..BusSettings::default()
            };
            let error = settings.validate().expect_err("out of range");
            assert_eq!(error.key(), "replicas");
            assert!(error.reason().contains("1 to 5"), "{error}");
        }
        for replicas in 1..=5 {
            let settings = BusSettings {
                replicas,
                ..BusSettings::default()
            };
            assert!(settings.validate().is_ok(), "{replicas} replicas");
        }
        let no_retention = BusSettings {
            retention_days: 0,
            ..BusSettings::default()
        };
        assert_eq!(
            no_retention.validate().expect_err("0 days").key(),
            "retention_days"
        );
        let no_snapshots = BusSettings {
            snapshot_retention_hours: 0,
            ..BusSettings::default()
        };
        assert_eq!(
            no_snapshots.validate().expect_err("0 hours").key(),
            "snapshot_retention_hours"
        );
    }

    #[test]
    fn provisioning_defaults_to_one_replica_90_days_and_72_hours() {
        let defaults = BusSettings::default().provisioning();
        assert_eq!(defaults, crate::Provisioning::default());
        assert_eq!(defaults.replicas, 1);
        assert_eq!(defaults.runs_max_age, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(defaults.snapshots_max_age, Duration::from_secs(72 * 3600));
        let settings = BusSettings {
            replicas: 3,
            retention_days: 7,
            snapshot_retention_hours: 1,
            ..BusSettings::default()
        };
        assert_eq!(
            settings.provisioning(),
            crate::Provisioning {
                replicas: 3,
                runs_max_age: Duration::from_secs(7 * 24 * 3600),
                snapshots_max_age: Duration::from_secs(3600),
            }
        );
        assert!(format!("{settings:?}").contains("replicas: 3"));
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("nats://applier:s3cret@nats:4222"),
            "nats://applier:***@nats:4222"
        );
        assert_eq!(redact_url("tls://t0ken@nats"), "tls://***@nats");
        assert_eq!(
            redact_url("a:b@one:4222,nats://two:4222,nats://c:d@three/x@y"),
            "a:***@one:4222,nats://two:4222,nats://c:***@three/x@y"
        );
        assert_eq!(redact_url("nats://nats:4222"), "nats://nats:4222");
    }

    #[test]
    fn debug_shows_no_secret() {
        let settings = BusSettings {
            nats_url: "nats://applier:s3cret@nats:4222".to_owned(),
            user: Some("applier".to_owned()),
            password: Some(Secret::new("hunter2")),
            token: Some(Secret::new("t0ken")),
            tls_key: Some(Secret::new("-----BEGIN PRIVATE KEY-----")),
            ..BusSettings::default()
        };
        let debug = format!("{settings:?}");
        for secret in ["s3cret", "hunter2", "t0ken", "PRIVATE KEY"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("nats://applier:***@nats:4222"), "{debug}");
    }

    #[test]
    fn at_most_one_authentication_method() {
        let settings = BusSettings {
            user: Some("applier".to_owned()),
            password: Some(Secret::new("pw")),
            token: Some(Secret::new("t")),
            ..BusSettings::default()
        };
        let error = settings.validate().expect_err("two methods");
        assert_eq!(error.key(), "token");
        assert!(!error.to_string().contains("pw"));

        let settings = BusSettings {
            nats_url: "nats://a:b@nats".to_owned(),
            token: Some(Secret::new("t")),
            ..BusSettings::default()
        };
        assert_eq!(
            settings.validate().expect_err("url and token").key(),
            "token"
        );

        let only_user = BusSettings {
            user: Some("applier".to_owned()),
            ..BusSettings::default()
        };
        assert_eq!(
            only_user.validate().expect_err("no password").key(),
            "password"
        );
        let only_password = BusSettings {
            password: Some(Secret::new("pw")),
            ..BusSettings::default()
        };
        assert_eq!(only_password.validate().expect_err("no user").key(), "user");
    }

    #[test]
    fn malformed_secrets_and_tls_material_name_their_keys() {
        let cases = [
            (
                BusSettings {
                    credentials: Some(Secret::new("not a creds file")),
                    ..BusSettings::default()
                },
                "credentials",
            ),
            (
                BusSettings {
                    nkey_seed: Some(Secret::new("UABC")),
                    ..BusSettings::default()
                },
                "nkey_seed",
            ),
            (
                BusSettings {
                    tls_ca: Some("not pem".to_owned()),
                    ..BusSettings::default()
                },
                "tls_ca",
            ),
            (
                BusSettings {
                    tls_cert: Some("x".to_owned()),
                    ..BusSettings::default()
                },
                "tls_key",
            ),
            (
                BusSettings {
                    tls_key: Some(Secret::new("x")),
                    ..BusSettings::default()
                },
                "tls_cert",
            ),
            (
                BusSettings {
                    inbox_prefix: Some("_INBOX.>".to_owned()),
                    ..BusSettings::default()
                },
                "inbox_prefix",
            ),
            (
                BusSettings {
                    tls_cert: Some("x".to_owned()),
                    tls_key: Some(Secret::new("x")),
                    ..BusSettings::default()
                },
                "tls_ca",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(settings.validate().expect_err(key).key(), key);
        }
    }

    #[test]
    fn the_file_keys_load_into_their_values() {
        let dir = std::env::temp_dir().join(format!("keysync-bus-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let password = dir.join("password");
        std::fs::write(&password, "hunter2\n").expect("password file");
        let file = dir.join("keysync.toml");
        std::fs::write(
            &file,
            format!(
                "[bus]\nuser = \"applier\"\npassword_file = \"{}\"\nrequire_tls = true\n",
                password.display()
            ),
        )
        .expect("config file");
        #[derive(Deserialize)]
        struct File {
            bus: BusSettings,
        }
        let file: File = config::load(Some(&file)).expect("loads");
        assert_eq!(file.bus.password, Some(Secret::new("hunter2")));
        assert!(file.bus.require_tls);
        assert!(file.bus.validate().is_ok());
        assert_eq!(file.bus.provisioning(), crate::Provisioning::default());

        let path = dir.join("keysync.toml");
        std::fs::write(
            &path,
            "[bus]\nreplicas = 6\nretention_days = 30\nsnapshot_retention_hours = 24\n",
        )
        .expect("config file");
        let file: File = config::load(Some(&path)).expect("loads");
        assert_eq!(
            (file.bus.retention_days, file.bus.snapshot_retention_hours),
            (30, 24)
        );
        assert_eq!(
            file.bus.validate().expect_err("six replicas").key(),
            "replicas"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
