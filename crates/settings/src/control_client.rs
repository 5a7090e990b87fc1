//! `[control_plane]` as the services that call the control plane read it: the appliers
//! (`GetRun`, `ReportResults`) and the planner (`GetRun`, before it publishes an approved
//! plan).
//!
//! ```toml
//! [control_plane]
//! endpoint = "https://keysync-control-plane:50051"   # default: http://127.0.0.1:50051
//! service_token_file = "/run/secrets/keysync-service/token"   # else `token_file`
//! ca_file = "/run/secrets/keysync-tls/ca.crt"         # default: the system's roots
//! client_cert_file = "/run/secrets/keysync-tls/client.crt"   # mutual TLS, with
//! client_key_file = "/run/secrets/keysync-tls/client.key"    # the key
//! ```
//!
//! The control plane owns this section and checks it strictly; its own keys (`listen`,
//! `schedule`, its TLS server keys) are left to it, so unknown keys are not errors here.

use config::{Invalid, Secret};
use serde::Deserialize;

/// `[control_plane]` as a client reads it.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawControlPlaneSettings")]
pub struct ControlPlaneSettings {
    /// The control plane's gRPC endpoint. Default: `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// The bearer token the service sends: `[control_plane] service_token`, which allows
    /// only the calls services make (`GetRun`, `ReportResults`), else the operator's
    /// `token`, which allows every call (kept for configurations without a service token).
    pub token: Secret,
    /// The PEM certificates an `https://` endpoint is checked against (`[control_plane]
    /// ca_file`), instead of the system's roots. Default: the system's roots.
    pub ca: Option<String>,
    /// The PEM certificate the service presents when the control plane asks for one
    /// (mutual TLS, `tls_client_ca_file` on its side): `client_cert_file`.
    pub client_cert: Option<String>,
    /// The certificate's PEM private key: `client_key_file`.
    pub client_key: Option<Secret>,
}

/// `[control_plane]` as written.
#[derive(Deserialize)]
struct RawControlPlaneSettings {
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    service_token: Option<Secret>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    client_cert: Option<String>,
    #[serde(default)]
    client_key: Option<Secret>,
}

impl From<RawControlPlaneSettings> for ControlPlaneSettings {
    fn from(raw: RawControlPlaneSettings) -> ControlPlaneSettings {
        ControlPlaneSettings {
            endpoint: raw.endpoint,
            token: raw
                .service_token
                .or(raw.token)
                .unwrap_or_else(|| Secret::new("")),
            ca: raw.ca,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
        }
    }
}

impl Default for ControlPlaneSettings {
    /// No token: [`ControlPlaneSettings::validate`] refuses it.
    fn default() -> ControlPlaneSettings {
        ControlPlaneSettings {
            endpoint: default_endpoint(),
            token: Secret::new(""),
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }
}

fn default_endpoint() -> String {
    "http://127.0.0.1:50051".to_owned()
}

impl ControlPlaneSettings {
    /// A token to send; an `http://` or `https://` endpoint; the client certificate and
    /// its key together, and only for `https://`; PEM that looks like PEM (it is parsed
    /// when the service connects). Keys are named as in the file, within `control_plane`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let within = |error: Invalid| error.within("control_plane");
        if self.token.expose().trim().is_empty() {
            return Err(within(Invalid::new(
                "token",
                "must not be empty (set `service_token_file`, or `token_file`, to a file \
                 that holds it)",
            )));
        }
        let endpoint = self.endpoint.trim();
        let https = endpoint.starts_with("https://");
        if !https && !endpoint.starts_with("http://") {
            return Err(within(Invalid::new(
                "endpoint",
                "must be an http:// or https:// URL",
            )));
        }
        let pem = |key: &str, value: &str, label: &str| {
            if value.contains("-----BEGIN ") && value.contains(label) {
                Ok(())
            } else {
                Err(within(Invalid::new(
                    key,
                    format!("is not PEM with a {label} (set `{key}_file` to a PEM file)"),
                )))
            }
        };
        if let Some(ca) = &self.ca {
            pem("ca", ca, "CERTIFICATE")?;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                pem("client_cert", cert, "CERTIFICATE")?;
                pem("client_key", key.expose(), "PRIVATE KEY")?;
            }
            (Some(_), None) => {
                return Err(within(Invalid::new(
                    "client_key",
                    "is missing: `client_cert_file` needs `client_key_file`",
                )));
            }
            (None, Some(_)) => {
                return Err(within(Invalid::new(
                    "client_cert",
                    "is missing: `client_key_file` needs `client_cert_file`",
                )));
            }
            (None, None) => {}
        }
        if !https && (self.ca.is_some() || self.client_cert.is_some()) {
            let key = if self.ca.is_some() {
                "ca"
            } else {
                "client_cert"
            };
            return Err(within(Invalid::new(
                key,
                "is for an https:// endpoint, and `endpoint` is http://",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> ControlPlaneSettings {
        #[derive(Deserialize)]
        struct File {
            control_plane: ControlPlaneSettings,
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, toml).expect("writes");
        config::load::<File>(Some(&file))
            .expect("loads")
            .control_plane
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----";

    #[test]
    fn the_service_token_wins_over_the_operator_token() {
        let settings = load(
            "[control_plane]\ntoken = \"operator\"\nservice_token = \"service\"\n\
             listen = \"0.0.0.0:50051\"\n",
        );
        assert_eq!(settings.token.expose(), "service");
        assert_eq!(settings.endpoint, "http://127.0.0.1:50051");
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(
            load("[control_plane]\ntoken = \"operator\"\n")
                .token
                .expose(),
            "operator"
        );
    }

    #[test]
    fn a_missing_token_names_the_key() {
        let error = load("[control_plane]\nendpoint = \"http://cp:50051\"\n")
            .validate()
            .expect_err("no token");
        assert_eq!(error.key(), "control_plane.token");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_https() {
        let settings = load(&format!(
            "[control_plane]\nendpoint = \"https://cp:50051\"\nservice_token = \"s\"\n\
             client_cert = \"{CERT}\"\nclient_key = \"{KEY}\"\nca = \"{CERT}\"\n"
        ));
        assert_eq!(settings.validate(), Ok(()));

        let error = load(&format!(
            "[control_plane]\nendpoint = \"https://cp:50051\"\nservice_token = \"s\"\n\
             client_cert = \"{CERT}\"\n"
        ))
        .validate()
        .expect_err("no key");
        assert_eq!(error.key(), "control_plane.client_key");

        let error = load(&format!(
            "[control_plane]\nendpoint = \"http://cp:50051\"\nservice_token = \"s\"\n\
             client_cert = \"{CERT}\"\nclient_key = \"{KEY}\"\n"
        ))
        .validate()
        .expect_err("plaintext");
        assert_eq!(error.key(), "control_plane.client_cert");
    }

    #[test]
    fn the_key_is_never_shown() {
        let settings = load(&format!(
            "[control_plane]\nendpoint = \"https://cp:50051\"\nservice_token = \"s3cr3t-token\"\n\
             client_cert = \"{CERT}\"\nclient_key = \"{KEY}\"\n"
        ));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
