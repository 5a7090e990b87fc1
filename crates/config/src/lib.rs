//! Configuration loading shared by every keysync service.
//!
//! Settings come in layers, each overriding the one before:
//!
//! 1. the defaults, written once on the settings structs (`#[serde(default = ...)]`);
//! 2. one TOML file (`--config FILE`);
//! 3. environment variables prefixed `KEYSYNC_`, with `__` between nesting levels:
//!    `KEYSYNC_KEYCLOAK__CORP__PAGE_SIZE=200` sets `keycloak.corp.page_size`. Every setting
//!    lives in a section, so only variables that contain `__` are read; single-level
//!    `KEYSYNC_*` variables belong to the tooling (`KEYSYNC_KEYCLOAK_HOME`, `KEYSYNC_TEST_*`).
//!
//! A key ending in `_file` names a file that holds the value of the key without the suffix:
//! `client_secret_file = "/run/secrets/kc"` sets `client_secret` to the file's content (one
//! trailing newline dropped). It is resolved at load, so settings structs only ever see
//! `client_secret`. Settings that hold a path are therefore named `*_path`, never `*_file`.
//!
//! A secret file should be readable by its owner only. When one is readable by its group
//! or by others (Unix mode `& 0o077 != 0`), loading logs a warning that names the key and
//! the file; with `strict_secret_files = true` at the top level of the file (or the
//! variable `KEYSYNC_STRICT_SECRET_FILES=true`, which overrides it) loading fails instead,
//! with an error that names the key. The loader takes `strict_secret_files` out of the
//! settings, so no service declares it. One group-readable shape is accepted: a file owned
//! by root that a non-root process reads through its own effective group, and nobody else
//! can read — what Kubernetes makes of a secret volume's `defaultMode: 0400` in a pod with
//! an `fsGroup` (mode 0440). Keys ending as [`PUBLIC_FILE_KEY_ENDINGS`] say
//! (`ca_file`, `tls_cert_file`: certificates) are read the same way but hold nothing
//! secret, and are not checked.
//!
//! Errors name the key and where its value came from, for example
//! ``"`keycloak.corp.page_size` in /etc/keysync.toml: invalid type: found string "x", expected u32"``.
//!
//! [`plaintext_warning`] is the one wording of the warning about an `http://` endpoint on
//! another host, which the clients log when they are built and the test connection shows.
//!
//! Architecture invariant: this crate knows figment, serde and the file system; it knows
//! nothing of the settings of any one service.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use figment::{
    Figment, Metadata, Profile, Provider, Source,
    providers::{Env, Format, Toml},
    value::{Dict, Map, Tag, Value},
};
use serde::de::{self, DeserializeOwned, Deserializer};

/// The prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "KEYSYNC_";

/// The separator between nesting levels in an environment variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// The top-level key that turns a secret file readable by group or others from a warning
/// into an error.
pub const STRICT_SECRET_FILES_KEY: &str = "strict_secret_files";

/// The environment variable that sets [`STRICT_SECRET_FILES_KEY`] (`true` or `false`),
/// overriding the file. It has no `__`, so it is read here rather than by the layer above.
pub const STRICT_SECRET_FILES_ENV: &str = "KEYSYNC_STRICT_SECRET_FILES";

/// Endings of the `*_file` keys whose files hold certificates, public data read like the
/// others but never checked for permissions: `ca_file`, `tls_ca_file`, `tls_cert_file`. A
/// CA bundle or a certificate is meant to be readable by everyone (a private key is not:
/// `tls_key_file` is checked).
pub const PUBLIC_FILE_KEY_ENDINGS: &[&str] = &["ca_file", "cert_file"];

/// Whether the file of `file_key` holds public data (see [`PUBLIC_FILE_KEY_ENDINGS`]).
pub fn is_public_file_key(file_key: &str) -> bool {
    PUBLIC_FILE_KEY_ENDINGS
        .iter()
        .any(|ending| file_key.ends_with(ending))
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading configuration file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value has the wrong type, a key is unknown or missing, or a file does not parse.
    #[error("{}", render_figment_error(.0))]
    Invalid(Box<figment::Error>),
    #[error("`{key}_file` in {origin}: reading secret file {}", path.display())]
    SecretFile {
        key: String,
        origin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `strict_secret_files` is on and a secret file is readable by group or others.
    #[error(
        "`{key}_file` in {origin}: secret file {} is readable by group or others (mode {mode:04o}); \
         make it readable by its owner only (chmod 600), or set `strict_secret_files = false`",
        path.display()
    )]
    SecretFileExposed {
        key: String,
        origin: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("`{key}_file` in {origin}: expected a file path, found {found}")]
    SecretFileNotAPath {
        key: String,
        origin: String,
        found: String,
    },
    #[error("`{key}` and `{key}_file` are both set; set one of them")]
    SecretTwice { key: String },
    #[error(transparent)]
    Validation(#[from] Invalid),
}

/// A setting whose value is well-formed but not acceptable, found by a `validate()` that
/// does no IO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct Invalid {
    key: String,
    reason: String,
}

impl Invalid {
    /// `key` is the setting's dotted path relative to the struct that validates it.
    pub fn new(key: &str, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The same error, for a struct nested at `section`: `page_size` becomes
    /// `keycloak.corp.page_size`.
    pub fn within(self, section: &str) -> Invalid {
        Invalid {
            key: format!("{section}.{}", self.key),
            reason: self.reason,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A secret string: a password, a client secret, a token. `Debug` and `Display` print
/// `[redacted]`, so a secret never reaches a log line by accident; [`Secret::expose`]
/// gives the value to the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        struct SecretVisitor;

        impl de::Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_owned()))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Secret, E> {
                Ok(Secret(value))
            }

            // An environment variable that looks like a number is parsed as one; a
            // secret made of digits is still a secret.
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
        }

        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Loads settings from the optional TOML `file`, then the `KEYSYNC_*` environment.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, Error> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // figment ignores a missing file; a file named on the command line must exist.
        std::fs::metadata(path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Environment(
        Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains(ENV_SEPARATOR))
            .split(ENV_SEPARATOR),
    ));
    extract(&figment)
}

/// Resolves the `*_file` keys of `figment` and deserializes the result; [`load`] uses it,
/// and so can a caller that layers its own providers.
pub fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, Error> {
    // A file that does not parse shows up here, with its metadata resolved.
    if let Err(error) = figment.extract::<Value>() {
        return Err(Error::Invalid(Box::new(error)));
    }
    let mut data = figment
        .data()
        .map_err(|error| Error::Invalid(Box::new(error)))?;
    let metadata = figment.__metadata_map().unwrap_or_default();
    let mut strict = None;
    for dict in data.values_mut() {
        if let Some(value) = dict.remove(STRICT_SECRET_FILES_KEY) {
            strict =
                Some(parse_bool(&value).ok_or_else(|| {
                    Invalid::new(STRICT_SECRET_FILES_KEY, "must be true or false")
                })?);
        }
    }
    if let Ok(value) = std::env::var(STRICT_SECRET_FILES_ENV) {
        strict = Some(
            parse_bool(&Value::from(value))
                .ok_or_else(|| Invalid::new(STRICT_SECRET_FILES_ENV, "must be true or false"))?,
        );
    }
    let strict = strict.unwrap_or(false);
    for dict in data.values_mut() {
        resolve_secret_files(dict, &mut Vec::new(), &metadata, strict)?;
    }
    let resolved = Figment::from(Resolved { data, metadata });
    // Lossy: a number or a boolean may be written as a string, which is how the
    // environment layer hands them over (see `Environment`).
    resolved
        .extract_lossy()
        .map_err(|error| Error::Invalid(Box::new(error)))
}

/// The `KEYSYNC_*` variables as figment's `Env` reads them, except that a value that
/// parses as a number or a boolean stays the string it was: a secret `0012345` keeps its
/// zeros, and the lossy extraction still turns `"200"` into a number where one is
/// expected. Arrays (`[a, b]`) and tables parse as usual.
struct Environment(Env);

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        'variables: for (key, raw) in self.0.iter() {
            let parsed: Value = raw.parse().unwrap_or_else(|never| match never {});
            let value = match parsed {
                Value::Num(..) | Value::Bool(..) => Value::from(raw),
                other => other,
            };
            let mut segments: Vec<&str> = key.as_str().split('.').collect();
            let Some(last) = segments.pop() else {
                continue;
            };
            let mut dict = &mut root;
            for segment in segments {
                let entry = dict
                    .entry(segment.to_owned())
                    .or_insert_with(|| Value::from(Dict::new()));
                if !matches!(entry, Value::Dict(..)) {
                    *entry = Value::from(Dict::new());
                }
                match entry {
                    Value::Dict(_, nested) => dict = nested,
                    _ => continue 'variables,
                }
            }
            dict.insert(last.to_owned(), value);
        }
        let mut data = Map::new();
        data.insert(self.0.profile.clone(), root);
        Ok(data)
    }
}

/// The layered data with `*_file` keys replaced by the content of their files. Values
/// keep their tags, and the metadata of the original providers goes along, so an error
/// still names the file or variable a value came from.
struct Resolved {
    data: Map<Profile, Dict>,
    metadata: Map<Tag, Metadata>,
}

impl Provider for Resolved {
    fn metadata(&self) -> Metadata {
        Metadata::named("secret file")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(self.data.clone())
    }

    fn __metadata_map(&self) -> Option<Map<Tag, Metadata>> {
        Some(self.metadata.clone())
    }
}

/// `true`/`false`, as TOML or as the text of an environment variable.
fn parse_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(_, flag) => Some(*flag),
        Value::String(_, text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Warns of a secret file that its group or others can read, or refuses it when `strict`.
/// `metadata` is the open file's, so it is the file that is read.
#[cfg(unix)]
fn check_secret_file(
    metadata: &std::fs::Metadata,
    file: &Path,
    dotted: &str,
    origin: &str,
    strict: bool,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 || is_pod_secret(metadata, mode) {
        return Ok(());
    }
    let error = Error::SecretFileExposed {
        key: dotted.to_owned(),
        origin: origin.to_owned(),
        path: file.to_owned(),
        mode,
    };
    if strict {
        return Err(error);
    }
    tracing::warn!(key = %format!("{dotted}_file"), "{error}");
    Ok(())
}

/// Whether the file has the shape Kubernetes gives a secret volume's files in a pod with
/// an `fsGroup` (see [`pod_secret_shape`]), as seen by this process.
#[cfg(unix)]
fn is_pod_secret(metadata: &std::fs::Metadata, mode: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid and getegid have no preconditions and cannot fail (POSIX).
    let (user, group) = unsafe { (libc::geteuid(), libc::getegid()) };
    pod_secret_shape((metadata.uid(), metadata.gid(), mode), (user, group))
}

/// Kubernetes turns a secret volume's `defaultMode: 0400` into `root:<fsGroup>` mode 0440,
/// so that the pod's non-root user reads it through its group. That shape is not an
/// exposure: the file is owned by root, the process is not root and reads it through its
/// own effective group, and nobody else can read it or anybody but root write it.
/// `file` is (owner, group, mode), `process` (effective user, effective group).
fn pod_secret_shape(file: (u32, u32, u32), process: (u32, u32)) -> bool {
    let (owner, group, mode) = file;
    owner == 0 && process.0 != 0 && group == process.1 && mode & 0o037 == 0
}

#[cfg(not(unix))]
fn check_secret_file(
    _: &std::fs::Metadata,
    _: &Path,
    _: &str,
    _: &str,
    _: bool,
) -> Result<(), Error> {
    Ok(())
}

/// The content of `file`, checked with [`check_secret_file`] unless `public`.
fn read_value_file(
    file: &Path,
    dotted: &str,
    origin: &str,
    public: bool,
    strict: bool,
) -> Result<String, Error> {
    use std::io::Read;
    let failed = |source| Error::SecretFile {
        key: dotted.to_owned(),
        origin: origin.to_owned(),
        path: file.to_owned(),
        source,
    };
    // Looked at before opening: opening a FIFO blocks until something writes to it, and a
    // device such as /dev/zero never ends.
    let kind = std::fs::metadata(file).map_err(failed)?;
    if !kind.is_file() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let handle = std::fs::File::open(file).map_err(failed)?;
    if !public {
        let metadata = handle.metadata().map_err(failed)?;
        check_secret_file(&metadata, file, dotted, origin, strict)?;
    }
    let mut content = String::new();
    handle
        .take(MAX_VALUE_FILE_BYTES + 1)
        .read_to_string(&mut content)
        .map_err(failed)?;
    if content.len() as u64 > MAX_VALUE_FILE_BYTES {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {MAX_VALUE_FILE_BYTES} bytes, more than any secret or certificate bundle"
            ),
        )));
    }
    Ok(content)
}

/// The largest `*_file` read: a token, a password, a key, or a CA bundle (a system's
/// whole bundle is about 200 KiB) fits many times over.
const MAX_VALUE_FILE_BYTES: u64 = 4 * 1024 * 1024;

fn resolve_secret_files(
    dict: &mut Dict,
    path: &mut Vec<String>,
    metadata: &Map<Tag, Metadata>,
    strict: bool,
) -> Result<(), Error> {
    let file_keys: Vec<String> = dict
        .keys()
        .filter(|key| key.ends_with("_file") && key.len() > "_file".len())
        .cloned()
        .collect();
    for file_key in file_keys {
        let Some(value) = dict.remove(&file_key) else {
            continue;
        };
        let key = file_key.trim_end_matches("_file").to_owned();
        let dotted = path
            .iter()
            .chain(std::iter::once(&key))
            .cloned()
            .collect::<Vec<_>>()
            .join(".");
        let origin = describe_origin(metadata.get(&value.tag()), &{
            let mut keys = path.clone();
            keys.push(file_key.clone());
            keys
        });
        if dict.contains_key(&key) {
            return Err(Error::SecretTwice { key: dotted });
        }
        let Some(file) = value.as_str() else {
            return Err(Error::SecretFileNotAPath {
                key: dotted,
                origin,
                found: format!("{:?}", value.to_actual()),
            });
        };
        let file = PathBuf::from(file);
        let public = is_public_file_key(&file_key);
        let content = read_value_file(&file, &dotted, &origin, public, strict)?;
        let content = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(&content)
            .to_owned();
        // A default tag: the value takes the tag of `Resolved`, named "secret file".
        dict.insert(key, Value::String(Tag::Default, content));
    }
    for (key, value) in dict.iter_mut() {
        if let Value::Dict(_, nested) = value {
            path.push(key.clone());
            resolve_secret_files(nested, path, metadata, strict)?;
            path.pop();
        }
    }
    Ok(())
}

/// Where a value came from: a file path, or the environment variable's name.
fn describe_origin(metadata: Option<&Metadata>, keys: &[String]) -> String {
    let Some(metadata) = metadata else {
        return "the configuration".to_owned();
    };
    if let Some(Source::File(path)) = &metadata.source {
        return path.display().to_string();
    }
    if metadata.name.contains("environment variable") {
        let name = keys
            .iter()
            .map(|key| key.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(ENV_SEPARATOR);
        return format!("environment variable {ENV_PREFIX}{name}");
    }
    metadata.name.to_string()
}

/// One line per error: "`key` in ORIGIN: what is wrong".
fn render_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|error| {
            let origin = describe_origin(error.metadata.as_ref(), &error.path);
            if error.path.is_empty() {
                format!("{origin}: {}", error.kind)
            } else {
                format!("`{}` in {origin}: {}", error.path.join("."), error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A warning when `endpoint` is plain `http://` to a host other than this machine
/// (anything but `localhost`, `*.localhost`, `127.0.0.0/8` and `::1`): the credentials and
/// tokens keysync sends, and the directory it reads, then cross the network unencrypted.
/// `None` for `https://`, a loopback host, or text that is not a URL. The warning names the
/// scheme, host and port only, never a path, a query or credentials in the URL.
pub fn plaintext_warning(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint.trim()).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let loopback = match url.host()? {
        url::Host::Domain(domain) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    };
    if loopback {
        return None;
    }
    let host = url.host_str()?;
    let port = url
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Some(format!(
        "http://{host}{port} is plain HTTP to another host: credentials, tokens and directory \
         data cross the network unencrypted; use https://"
    ))
}

#[cfg(test)]
mod tests {
    use super::pod_secret_shape;

    #[test]
    fn only_a_root_owned_file_of_the_process_group_and_nobody_else_is_a_pod_secret() {
        let pod = (65532, 65532);
        assert!(pod_secret_shape((0, 65532, 0o440), pod));
        assert!(pod_secret_shape((0, 65532, 0o400), pod));
        // Another group, others, group write, a non-root owner, or a root process.
        assert!(!pod_secret_shape((0, 1000, 0o440), pod));
        assert!(!pod_secret_shape((0, 65532, 0o444), pod));
        assert!(!pod_secret_shape((0, 65532, 0o460), pod));
        assert!(!pod_secret_shape((1000, 65532, 0o440), pod));
        assert!(!pod_secret_shape((0, 0, 0o440), (0, 0)));
    }
}
