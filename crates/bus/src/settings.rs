//! `[bus]`: the section of the shared configuration file every service reads.
//!
//! ```toml
//! [bus]
//! nats_url = "nats://127.0.0.1:4222"   # default
//! prefix = "keysync"                   # default
//! ```

use config::Invalid;
use serde::Deserialize;

/// `[bus]`: where NATS is and the prefix of every subject, stream and bucket.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// The NATS server. Default: `nats://127.0.0.1:4222`.
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// The prefix of every subject, stream and bucket of one deployment: letters, digits,
    /// `-` and `_`. Default: `keysync`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

impl Default for BusSettings {
    fn default() -> BusSettings {
        BusSettings {
            nats_url: default_nats_url(),
            prefix: default_prefix(),
        }
    }
}

impl BusSettings {
    /// Checks the prefix and the URL; no IO. Keys are relative to `[bus]` (use
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
        Ok(())
    }

    /// The deployment's names.
    pub fn topology(&self) -> crate::Topology {
        crate::Topology::new(&self.prefix)
    }
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_prefix() -> String {
    "keysync".to_owned()
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
}
