//! Loading layered settings the way every service does: defaults, the TOML file, the
//! `KEYSYNC_*` environment, and secrets from `*_file` keys; and the errors a person reads
//! when one of them is wrong. `figment::Jail` gives each test its own directory and
//! environment.

// `Jail::expect_with` takes closures that return `figment::Error`, which is large; the
// signature is figment's.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use config::{Error, Invalid, Secret};
use figment::Jail;
use serde::Deserialize;

/// What a service's settings look like: sections, a map of named connectors, a secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The bus.
    #[serde(default)]
    nats: Nats,
    /// Connectors by name.
    #[serde(default)]
    keycloak: BTreeMap<String, Connector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nats {
    /// Default: `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    url: String,
    /// Default: `keysync`.
    #[serde(default = "default_prefix")]
    prefix: String,
}

impl Default for Nats {
    fn default() -> Nats {
        Nats {
            url: default_url(),
            prefix: default_prefix(),
        }
    }
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_prefix() -> String {
    "keysync".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Connector {
    /// The realm.
    realm: String,
    /// The client secret.
    client_secret: Secret,
    /// Default: 100.
    #[serde(default = "default_page_size")]
    page_size: u32,
}

fn default_page_size() -> u32 {
    100
}

fn load(jail: &Jail) -> Result<Settings, Error> {
    config::load(Some(&jail.directory().join("keysync.toml")))
}

#[test]
fn settings_take_the_defaults_then_the_file_then_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            r#"
                [nats]
                prefix = "from-file"

                [keycloak.corp]
                realm = "corp"
                client_secret = "s3cret"
                page_size = 50
            "#,
        )?;
        jail.set_env("KEYSYNC_KEYCLOAK__CORP__PAGE_SIZE", "200");
        let settings = load(jail).expect("loads");
        assert_eq!(settings.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(settings.nats.prefix, "from-file");
        let corp = &settings.keycloak["corp"];
        assert_eq!(corp.realm, "corp");
        assert_eq!(corp.client_secret.expose(), "s3cret");
        assert_eq!(corp.page_size, 200);
        Ok(())
    });
}

#[test]
fn secret_file_key_is_read_from_the_file_and_the_secret_never_printed() {
    Jail::expect_with(|jail| {
        jail.create_file("kc-secret", "from-a-file\n")?;
        let secret_path = jail.directory().join("kc-secret");
        jail.create_file(
            "keysync.toml",
            &format!(
                "[keycloak.corp]\nrealm = \"corp\"\nclient_secret_file = \"{}\"\n",
                secret_path.display()
            ),
        )?;
        let settings = load(jail).expect("loads");
        let corp = &settings.keycloak["corp"];
        assert_eq!(corp.client_secret.expose(), "from-a-file");
        let printed = format!("{settings:?} {}", corp.client_secret);
        assert!(!printed.contains("from-a-file"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
        Ok(())
    });
}

#[test]
fn secret_file_can_be_named_by_an_environment_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("kc-secret", "via-env")?;
        jail.create_file("keysync.toml", "[keycloak.corp]\nrealm = \"corp\"\n")?;
        jail.set_env(
            "KEYSYNC_KEYCLOAK__CORP__CLIENT_SECRET_FILE",
            jail.directory().join("kc-secret").display(),
        );
        let settings = load(jail).expect("loads");
        assert_eq!(settings.keycloak["corp"].client_secret.expose(), "via-env");
        Ok(())
    });
}

#[test]
fn secret_that_looks_like_a_number_is_kept_verbatim_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("keysync.toml", "[keycloak.corp]\nrealm = \"corp\"\n")?;
        jail.set_env("KEYSYNC_KEYCLOAK__CORP__CLIENT_SECRET", "0012345");
        let settings = load(jail).expect("loads");
        assert_eq!(settings.keycloak["corp"].client_secret.expose(), "0012345");
        Ok(())
    });
}

#[test]
fn wrong_type_in_the_file_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret = \"x\"\npage_size = \"many\"\n",
        )?;
        let error = load(jail).expect_err("page_size is not a number");
        let message = error.to_string();
        let file = jail.directory().join("keysync.toml");
        assert!(
            message.starts_with(&format!(
                "`keycloak.corp.page_size` in {}: invalid type",
                file.display()
            )),
            "{message}"
        );
        assert!(message.contains("\"many\""), "{message}");
        Ok(())
    });
}

#[test]
fn wrong_type_in_the_environment_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret = \"x\"\n",
        )?;
        jail.set_env("KEYSYNC_KEYCLOAK__CORP__PAGE_SIZE", "lots");
        let message = load(jail).expect_err("not a number").to_string();
        assert!(
            message.starts_with(
                "`keycloak.corp.page_size` in environment variable \
                 KEYSYNC_KEYCLOAK__CORP__PAGE_SIZE: invalid type"
            ),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn unknown_key_is_an_error_that_names_it() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret = \"x\"\npagesize = 10\n",
        )?;
        let message = load(jail).expect_err("typo").to_string();
        assert!(message.contains("unknown field"), "{message}");
        assert!(message.contains("`pagesize`"), "{message}");
        assert!(message.contains("keycloak.corp"), "{message}");
        Ok(())
    });
}

#[test]
fn missing_key_is_an_error_that_names_it() {
    Jail::expect_with(|jail| {
        jail.create_file("keysync.toml", "[keycloak.corp]\nclient_secret = \"x\"\n")?;
        let message = load(jail).expect_err("no realm").to_string();
        assert!(message.contains("missing field `realm`"), "{message}");
        assert!(message.contains("`keycloak.corp`"), "{message}");
        Ok(())
    });
}

#[test]
fn file_that_does_not_parse_is_an_error_naming_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file("keysync.toml", "[keycloak.corp\nrealm = 1\n")?;
        let message = load(jail).expect_err("not TOML").to_string();
        assert!(
            message.contains(&jail.directory().join("keysync.toml").display().to_string()),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn missing_configuration_file_is_an_error() {
    Jail::expect_with(|jail| {
        let error = load(jail).expect_err("no file");
        assert!(matches!(error, Error::File { .. }), "{error:?}");
        assert!(error.to_string().contains("keysync.toml"), "{error}");
        Ok(())
    });
}

#[test]
fn secret_and_secret_file_together_are_an_error() {
    Jail::expect_with(|jail| {
        jail.create_file("kc-secret", "a")?;
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret = \"b\"\nclient_secret_file = \"kc-secret\"\n",
        )?;
        let error = load(jail).expect_err("both set");
        assert_eq!(
            error.to_string(),
            "`keycloak.corp.client_secret` and `keycloak.corp.client_secret_file` are both set; \
             set one of them"
        );
        Ok(())
    });
}

#[test]
fn unreadable_secret_file_is_an_error_naming_the_key_and_the_path() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret_file = \"/nonexistent/kc\"\n",
        )?;
        let error = load(jail).expect_err("no such file");
        let message = error.to_string();
        assert!(
            message.starts_with("`keycloak.corp.client_secret_file` in "),
            "{message}"
        );
        assert!(message.contains("/nonexistent/kc"), "{message}");
        assert!(matches!(error, Error::SecretFile { .. }), "{error:?}");
        Ok(())
    });
}

/// What loading answers when `client_secret_file` names `path`: the error's source.
fn value_file_refusal(path: &str) -> String {
    let mut refusal = String::new();
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            &format!("[keycloak.corp]\nrealm = \"corp\"\nclient_secret_file = \"{path}\"\n"),
        )?;
        let error = load(jail).expect_err("the file is refused");
        assert!(matches!(error, Error::SecretFile { .. }), "{error:?}");
        assert!(error.to_string().contains(path), "{error}");
        refusal = std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default();
        Ok(())
    });
    refusal
}

#[test]
fn a_value_file_that_never_ends_blocks_or_is_huge_is_refused_without_reading_it_all() {
    // A device that never ends, and a FIFO nothing writes to (opening it would block).
    assert_eq!(value_file_refusal("/dev/zero"), "not a regular file");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fifo = dir.path().join("secret.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    assert_eq!(
        value_file_refusal(&fifo.display().to_string()),
        "not a regular file"
    );
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'x'; 5 * 1024 * 1024]).expect("writes");
    let mut permissions = std::fs::metadata(&huge).expect("metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&huge, permissions).expect("chmod");
    let refusal = value_file_refusal(&huge.display().to_string());
    assert!(
        refusal.starts_with("larger than 4194304 bytes"),
        "{refusal}"
    );
}

#[test]
fn variables_without_a_nesting_separator_are_left_to_the_tooling() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keysync.toml",
            "[keycloak.corp]\nrealm = \"corp\"\nclient_secret = \"x\"\n",
        )?;
        jail.set_env("KEYSYNC_KEYCLOAK_HOME", "/opt/keycloak");
        jail.set_env("KEYSYNC_TEST_KEYCLOAK_URL", "http://127.0.0.1:1");
        let settings = load(jail).expect("tooling variables are not settings");
        assert_eq!(settings.keycloak.len(), 1);
        Ok(())
    });
}

#[test]
fn invalid_setting_names_its_full_key() {
    let error = Error::from(Invalid::new("page_size", "must be 1 to 500").within("keycloak.corp"));
    assert_eq!(
        error.to_string(),
        "`keycloak.corp.page_size`: must be 1 to 500"
    );
}

#[test]
fn secret_prints_redacted() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
    assert_eq!(secret.expose(), "hunter2");
}

/// A secret file with `mode`, and a configuration naming it, with `strict` at the top.
#[cfg(unix)]
fn secret_file_with_mode(jail: &Jail, mode: u32, strict: &str) -> Result<(), figment::Error> {
    use std::os::unix::fs::PermissionsExt;
    jail.create_file("kc-secret", "s3cret\n")?;
    let secret_path = jail.directory().join("kc-secret");
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    jail.create_file(
        "keysync.toml",
        &format!(
            "{strict}\n[keycloak.corp]\nrealm = \"corp\"\nclient_secret_file = \"{}\"\n",
            secret_path.display()
        ),
    )?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn strict_secret_files_refuses_a_secret_file_others_can_read_and_names_the_key() {
    Jail::expect_with(|jail| {
        secret_file_with_mode(jail, 0o644, "strict_secret_files = true")?;
        let error = load(jail).expect_err("readable by others");
        let message = error.to_string();
        assert!(
            matches!(error, Error::SecretFileExposed { mode: 0o644, .. }),
            "{error:?}"
        );
        assert!(
            message.starts_with("`keycloak.corp.client_secret_file` in "),
            "{message}"
        );
        assert!(message.contains("0644"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn strict_secret_files_takes_a_secret_file_only_its_owner_can_read() {
    Jail::expect_with(|jail| {
        secret_file_with_mode(jail, 0o600, "strict_secret_files = true")?;
        let settings = load(jail).expect("owner only");
        assert_eq!(settings.keycloak["corp"].client_secret.expose(), "s3cret");
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_is_only_a_warning_unless_strict() {
    Jail::expect_with(|jail| {
        secret_file_with_mode(jail, 0o644, "")?;
        let settings = load(jail).expect("a warning, not an error");
        assert_eq!(settings.keycloak["corp"].client_secret.expose(), "s3cret");
        secret_file_with_mode(jail, 0o640, "strict_secret_files = false")?;
        load(jail).expect("strict is off");
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn strict_secret_files_can_be_set_by_the_environment() {
    Jail::expect_with(|jail| {
        secret_file_with_mode(jail, 0o640, "strict_secret_files = false")?;
        jail.set_env(config::STRICT_SECRET_FILES_ENV, "true");
        let error = load(jail).expect_err("the environment overrides the file");
        assert!(
            matches!(error, Error::SecretFileExposed { .. }),
            "{error:?}"
        );
        jail.set_env(config::STRICT_SECRET_FILES_ENV, "maybe");
        let error = load(jail).expect_err("not a boolean");
        assert!(
            error.to_string().contains(config::STRICT_SECRET_FILES_ENV),
            "{error}"
        );
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn a_ca_file_is_read_without_a_permission_check() {
    #[derive(Debug, Deserialize)]
    struct WithCa {
        tls: Tls,
    }
    #[derive(Debug, Deserialize)]
    struct Tls {
        ca: String,
    }
    Jail::expect_with(|jail| {
        use std::os::unix::fs::PermissionsExt;
        jail.create_file("ca.pem", "-----BEGIN CERTIFICATE-----\n")?;
        let ca = jail.directory().join("ca.pem");
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        jail.create_file(
            "keysync.toml",
            &format!(
                "strict_secret_files = true\n[tls]\nca_file = \"{}\"\n",
                ca.display()
            ),
        )?;
        let loaded: WithCa = config::load(Some(&jail.directory().join("keysync.toml")))
            .expect("a CA bundle is public");
        assert_eq!(loaded.tls.ca, "-----BEGIN CERTIFICATE-----");
        assert!(config::is_public_file_key("tls_ca_file"));
        assert!(config::is_public_file_key("tls_cert_file"));
        assert!(!config::is_public_file_key("tls_key_file"));
        assert!(!config::is_public_file_key("client_secret_file"));
        Ok(())
    });
}

#[test]
fn plain_http_to_another_host_is_warned_of_without_the_path_or_credentials() {
    let warning = config::plaintext_warning("http://svc:pw@sso.example.org:8080/auth?x=secret")
        .expect("plain HTTP to another host");
    assert!(warning.contains("http://sso.example.org:8080"), "{warning}");
    assert!(warning.contains("https://"), "{warning}");
    for hidden in ["svc", "pw", "auth", "secret"] {
        assert!(!warning.contains(hidden), "`{hidden}` in {warning}");
    }
    assert!(config::plaintext_warning("http://10.0.0.5/jira").is_some());
    for quiet in [
        "https://sso.example.org",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:7990/bitbucket",
        "http://localhost:8090",
        "http://keycloak.localhost",
        "not a url",
    ] {
        assert_eq!(config::plaintext_warning(quiet), None, "{quiet}");
    }
}
