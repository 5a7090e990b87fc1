//! Prism (npm `@stoplight/prism-cli`, installed by `make deps`) as a validating proxy for
//! contract tests: it checks every request against an OpenAPI document, forwards it to the
//! upstream server, checks the upstream's answer against the document too, and logs every
//! violation it finds (and returns them in an `sl-violations` header).
//!
//! It runs without `--errors`: with it, Prism would answer a request that violates the
//! document with 422 itself, but it would also replace any answer that violates the document
//! with a 500, and the reference documents are stricter than the servers they describe (the
//! Bitbucket document types an error's `context` as a string, which the server sends as
//! `null`). So a request is never refused: a test runs a client through the proxy and then
//! asserts that [`PrismProxy::report`], read from the log, holds no violation of a request.
//!
//! Prism lets a request carry query parameters and JSON body properties that the document
//! does not declare (OpenAPI allows them, the server ignores them), so a misspelt optional
//! parameter would pass; [`undeclared_inputs`] finds those, on the document as JSON
//! ([`Document::to_json`]).
//!
//! The documents come from the shared reference folder next to the workspace
//! ([`reference_document`]). Prism matches request paths against the document's path keys
//! alone and ignores the base path of its `servers` URL, so a document whose server URL
//! carries a prefix (Bitbucket's `http://{baseurl}/rest`, paths `/api/latest/...`) is
//! rebased with [`Document::rebase_paths`] onto the paths the client really requests.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{
    deps,
    process::{self, Tethered},
};

/// The path of `name` in the shared reference specifications: `$KEYSYNC_SHARED_DIR`, else
/// the `shared` folder beside the workspace (where a clone's CI and the developers have it),
/// else one inside it; `reference/specs/NAME` there.
pub fn reference_document(name: &str) -> anyhow::Result<PathBuf> {
    let root = deps::workspace_root();
    let mut candidates = Vec::new();
    if let Ok(shared) = std::env::var("KEYSYNC_SHARED_DIR") {
        candidates.push(PathBuf::from(shared));
    }
    candidates.extend([root.join("../shared"), root.join("shared")]);
    let found = candidates
        .iter()
        .map(|shared| shared.join("reference/specs").join(name))
        .find(|path| path.is_file());
    match found {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("resolving {}", path.display())),
        None => bail!(
            "the OpenAPI document {name} is in none of {}: the shared reference folder \
             (`shared/reference/specs`) belongs beside the workspace, or set KEYSYNC_SHARED_DIR",
            candidates
                .iter()
                .map(|shared| shared.join("reference/specs").display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An OpenAPI document for Prism: the original file, or a rewritten copy in a temporary
/// folder that lives as long as this value.
pub struct Document {
    path: PathBuf,
    _dir: Option<TempDir>,
}

impl Document {
    /// The document at `path`, as it is.
    pub fn at(path: impl Into<PathBuf>) -> Document {
        Document {
            path: path.into(),
            _dir: None,
        }
    }

    /// `reference_document(name)`, as it is.
    pub fn reference(name: &str) -> anyhow::Result<Document> {
        Ok(Document::at(reference_document(name)?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document as JSON, converted by the `js-yaml` that comes with Prism.
    pub fn to_json(&self) -> anyhow::Result<serde_json::Value> {
        // `.deps/prism-VERSION/node_modules/.bin/prism`: its `node_modules` holds js-yaml.
        let prism = PathBuf::from(deps::setting("KEYSYNC_PRISM")?);
        let modules = prism
            .parent()
            .and_then(Path::parent)
            .context("KEYSYNC_PRISM is not in a node_modules/.bin folder")?;
        let js_yaml = modules.join("js-yaml/bin/js-yaml.js");
        let output = std::process::Command::new(deps::existing_path("KEYSYNC_NODE")?)
            .arg(&js_yaml)
            .arg(&self.path)
            .output()
            .with_context(|| format!("running node {}", js_yaml.display()))?;
        if !output.status.success() {
            bail!(
                "js-yaml could not read {}: {}",
                self.path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("parsing {} as JSON", self.path.display()))
    }

    /// A copy whose path keys starting with `from` start with `to` instead, everything else
    /// unchanged: for example `/api/latest/` to `/rest/api/1.0/` for Bitbucket, whose
    /// server URL ends in `/rest` and whose `latest` is `1.0`. Only unquoted keys directly
    /// under `paths:` (two spaces in, as the reference documents write them) are rewritten;
    /// it is an error if none is.
    pub fn rebase_paths(&self, from: &str, to: &str) -> anyhow::Result<Document> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut rewritten = String::with_capacity(text.len() + 64 * 1024);
        let mut in_paths = false;
        let mut count = 0;
        for line in text.split_inclusive('\n') {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                in_paths = line.trim_end() == "paths:";
            }
            match line.strip_prefix("  ").filter(|_| in_paths) {
                Some(key) if key.starts_with(from) => {
                    rewritten.push_str("  ");
                    rewritten.push_str(to);
                    rewritten.push_str(&key[from.len()..]);
                    count += 1;
                }
                _ => rewritten.push_str(line),
            }
        }
        if count == 0 {
            bail!(
                "{} has no path key starting with {from}",
                self.path.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("keysync-openapi-")
            .tempdir()
            .context("creating a folder for the rebased OpenAPI document")?;
        let name = self
            .path
            .file_name()
            .map(|name| name.to_owned())
            .unwrap_or_else(|| "openapi.yaml".into());
        let path = dir.path().join(name);
        std::fs::write(&path, rewritten).with_context(|| format!("writing {}", path.display()))?;
        Ok(Document {
            path,
            _dir: Some(dir),
        })
    }
}

/// What a request to the operation `method path` of `document` (as JSON; `path` a path key,
/// as `/rest/api/1.0/admin/users`) carries that the operation does not declare: query
/// parameters that are none of its `in: query` parameters, and top-level properties of a
/// JSON object body that its `application/json` request schema does not list. Empty when
/// everything is declared; an operation the document lacks is reported too.
pub fn undeclared_inputs(
    document: &serde_json::Value,
    method: &str,
    path: &str,
    query: &[&str],
    body: Option<&serde_json::Value>,
) -> Vec<String> {
    let request = format!("{} {path}", method.to_uppercase());
    let Some(operation) = document
        .get("paths")
        .and_then(|paths| paths.get(path))
        .and_then(|item| item.get(method.to_lowercase()))
    else {
        return vec![format!("{request}: the document has no such operation")];
    };
    let mut found = Vec::new();
    let parameters: Vec<&serde_json::Value> = operation
        .get("parameters")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .map(|parameter| resolve(document, parameter))
        .collect();
    for name in query {
        let declared = parameters.iter().any(|parameter| {
            parameter["in"] == "query" && parameter["name"].as_str() == Some(name)
        });
        if !declared {
            found.push(format!("{request}: query parameter {name} is not declared"));
        }
    }
    if let Some(serde_json::Value::Object(fields)) = body {
        let schema = operation
            .pointer("/requestBody/content/application~1json/schema")
            .map(|schema| resolve(document, schema));
        match schema.and_then(|schema| schema.get("properties")) {
            Some(serde_json::Value::Object(properties)) => {
                for name in fields.keys().filter(|name| !properties.contains_key(*name)) {
                    found.push(format!("{request}: body property {name} is not declared"));
                }
            }
            _ => found.push(format!(
                "{request}: the document declares no JSON object body"
            )),
        }
    }
    found
}

/// The object a local `$ref` (`#/components/...`) points to, or `value` itself.
fn resolve<'a>(
    document: &'a serde_json::Value,
    value: &'a serde_json::Value,
) -> &'a serde_json::Value {
    let mut value = value;
    for _ in 0..16 {
        let Some(pointer) = value.get("$ref").and_then(|r| r.as_str()) else {
            break;
        };
        match pointer
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
        {
            Some(target) => value = target,
            None => break,
        }
    }
    value
}

/// A running `prism proxy DOCUMENT UPSTREAM` on a free port, killed on drop.
pub struct PrismProxy {
    /// Declared first: killed before its document goes.
    process: Tethered,
    port: u16,
    /// Where this run's output starts in the log, which an earlier Prism on the same port
    /// may have begun.
    log_start: u64,
    /// Prism's own copy of the document, kept while it runs: Prism watches the file, and
    /// its watcher crashed the process (chokidar, "Cannot read properties of undefined
    /// (reading 'close')") when a caller's copy went away just after Prism listened.
    _document: TempDir,
}

impl PrismProxy {
    /// Starts Prism in front of `upstream` (`http://host:port`, no path) and waits until it
    /// listens, which takes a few seconds for a large document.
    pub fn start(document: &Document, upstream: &str) -> anyhow::Result<PrismProxy> {
        let node = deps::existing_path("KEYSYNC_NODE")?;
        let prism = deps::existing_path("KEYSYNC_PRISM")?;
        let mut last_error = None;
        // A free port can be taken between our check and Prism's bind: retry.
        for _ in 0..3 {
            let own = tempfile::Builder::new()
                .prefix("keysync-prism-")
                .tempdir()
                .context("creating a folder for Prism's copy of the document")?;
            let name = document
                .path()
                .file_name()
                .context("the document has a file name")?;
            let copy = own.path().join(name);
            std::fs::copy(document.path(), &copy)
                .with_context(|| format!("copying {}", document.path().display()))?;
            match start_once(&node, &prism, own, &copy, upstream) {
                Ok(proxy) => return Ok(proxy),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("prism did not start")))
    }

    /// `http://127.0.0.1:PORT`, to use in place of the upstream's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    /// What Prism logged about the requests answered so far: the requests it received and
    /// every violation it found. Prism may log a violation just after it answered, so this
    /// waits until the log has stopped growing for a moment.
    pub fn report(&self) -> anyhow::Result<Report> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut log = self.log_text()?;
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let again = self.log_text()?;
            if again == log || Instant::now() > deadline {
                return Ok(Report::parse(&again));
            }
            log = again;
        }
    }

    /// This run's part of the log.
    fn log_text(&self) -> anyhow::Result<String> {
        let bytes = std::fs::read(self.log_path())
            .with_context(|| format!("reading {}", self.log_path().display()))?;
        let start = usize::try_from(self.log_start)
            .unwrap_or(0)
            .min(bytes.len());
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }
}

impl Drop for PrismProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text().unwrap_or_else(|error| format!("{error:#}"));
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- prism log ({}), last 200 lines ----\n{}\n---- end of prism log ----",
                self.log_path().display(),
                lines[lines.len().saturating_sub(200)..].join("\n")
            );
        }
    }
}

/// Runs Prism's script with `node` (`.deps/env`'s `KEYSYNC_NODE`, which may not be on
/// `PATH` for the script's own `#!/usr/bin/env node`).
fn start_once(
    node: &Path,
    prism: &Path,
    own: TempDir,
    document: &Path,
    upstream: &str,
) -> anyhow::Result<PrismProxy> {
    let port = process::free_port()?;
    let log = process::log_dir().join(format!("prism-{port}.log"));
    let args = [
        prism.display().to_string(),
        "proxy".to_owned(),
        document.display().to_string(),
        upstream.to_owned(),
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        port.to_string(),
    ];
    // No colours in the log: the report parses it.
    let envs = [
        ("FORCE_COLOR", "0".to_owned()),
        ("NO_COLOR", "1".to_owned()),
    ];
    let log_start = std::fs::metadata(&log).map_or(0, |meta| meta.len());
    let process = Tethered::spawn(node, &args, &envs, &log)?;
    let mut proxy = PrismProxy {
        process,
        port,
        log_start,
        _document: own,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = proxy.process.exited() {
            bail!(
                "prism exited with {status}:\n{}",
                process::log_tail(&log, 20)
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(proxy);
        }
        if Instant::now() > deadline {
            proxy.process.kill();
            bail!(
                "prism did not listen within 120 s:\n{}",
                process::log_tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a Prism log says about the requests it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every request received, `"METHOD /path"` (without the query), in order.
    pub requests: Vec<String>,
    /// Every violation of the document and every request Prism refused, in order.
    pub violations: Vec<Violation>,
}

/// One problem Prism logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The request Prism received last before it logged this, `"METHOD /path"`; with
    /// requests in flight at once it may be another one of them.
    pub request: String,
    /// `request...` or `response...` (which part, as `request.query.limit`), or `refused`
    /// for a request Prism could not forward and answered itself.
    pub location: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    pub message: String,
}

impl Violation {
    /// Whether it is about a request rather than an upstream's answer.
    pub fn is_about_a_request(&self) -> bool {
        self.location.starts_with("request") || self.location == "refused"
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} {} {}",
            self.request, self.severity, self.location, self.message
        )
    }
}

impl Report {
    /// Reads the lines Prism 5 writes:
    /// `[time] › [HTTP SERVER] post /path ℹ  info      Request received`,
    /// `[time] › [HTTP SERVER] post /path ✖  error     Request terminated with error: ...` and
    /// `[time] ›     [VALIDATOR] ⚠  warning   Violation: request.query.limit Request ...`.
    pub fn parse(log: &str) -> Report {
        let mut report = Report::default();
        let mut current = String::new();
        for line in log.lines() {
            let Some((_, rest)) = line.split_once("] › ") else {
                continue;
            };
            let rest = rest.trim_start();
            if let Some(server) = rest.strip_prefix("[HTTP SERVER] ") {
                let mut words = server.split_whitespace();
                let (Some(method), Some(path)) = (words.next(), words.next()) else {
                    continue;
                };
                let request = format!("{} {}", method.to_uppercase(), path);
                if server.ends_with("Request received") {
                    current = request.clone();
                    report.requests.push(request);
                } else if let Some((_, error)) =
                    server.split_once("Request terminated with error: ")
                {
                    report.violations.push(Violation {
                        request,
                        location: "refused".to_owned(),
                        severity: "error".to_owned(),
                        message: error.to_owned(),
                    });
                }
            } else if let Some(validator) = rest.strip_prefix("[VALIDATOR] ") {
                let Some((head, message)) = validator.split_once("Violation: ") else {
                    continue;
                };
                let severity = head
                    .split_whitespace()
                    .find(|word| ["error", "warning", "info"].contains(word))
                    .unwrap_or("error");
                let (location, message) = message.split_once(' ').unwrap_or((message, ""));
                report.violations.push(Violation {
                    request: current.clone(),
                    location: location.to_owned(),
                    severity: severity.to_owned(),
                    message: message.to_owned(),
                });
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_requests_and_their_violations() {
        let log = "\
[5:06:43 PM] › [CLI] ▶  start     Prism is listening on http://127.0.0.1:18998
[5:06:43 PM] › [HTTP SERVER] get /api/latest/admin/users ℹ  info      Request received
[5:06:43 PM] ›     [PROXY] ℹ  info      > Forwarding \"get\" request to http://127.0.0.1:18999/api/latest/admin/users...
[5:06:43 PM] ›     [VALIDATOR] ⚠  warning   Violation: response Unable to match the returned status code
[5:07:57 PM] › [HTTP SERVER] post /api/latest/admin/users ℹ  info      Request received
[5:07:57 PM] ›     [VALIDATOR] ✖  error     Violation: request.query Request query must have required property 'emailaddress'
[5:07:57 PM] › [HTTP SERVER] post /api/latest/admin/users ✖  error     Request terminated with error: https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY: Invalid request
";
        let report = Report::parse(log);
        assert_eq!(
            report.requests,
            [
                "GET /api/latest/admin/users",
                "POST /api/latest/admin/users"
            ]
        );
        let found: Vec<(&str, &str, &str)> = report
            .violations
            .iter()
            .map(|v| (v.request.as_str(), v.location.as_str(), v.severity.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("GET /api/latest/admin/users", "response", "warning"),
                ("POST /api/latest/admin/users", "request.query", "error"),
                ("POST /api/latest/admin/users", "refused", "error"),
            ]
        );
        assert!(report.violations[1].message.contains("emailaddress"));
        assert!(!report.violations[0].is_about_a_request());
        assert!(report.violations[2].is_about_a_request());
    }

    #[test]
    fn undeclared_query_parameters_and_body_properties_are_found() {
        let document = serde_json::json!({
            "paths": {"/users": {"post": {
                "parameters": [
                    {"name": "name", "in": "query"},
                    {"$ref": "#/components/parameters/notify"},
                    {"name": "X-Id", "in": "header"},
                ],
                "requestBody": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/User"},
                }}},
            }}},
            "components": {
                "parameters": {"notify": {"name": "notify", "in": "query"}},
                "schemas": {"User": {"properties": {"email": {"type": "string"}}}},
            },
        });
        let body = serde_json::json!({"email": "a@b", "mail": "a@b"});

        let found = undeclared_inputs(
            &document,
            "POST",
            "/users",
            &["name", "notify", "X-Id", "notfy"],
            Some(&body),
        );

        assert_eq!(
            found,
            [
                "POST /users: query parameter X-Id is not declared",
                "POST /users: query parameter notfy is not declared",
                "POST /users: body property mail is not declared",
            ]
        );
        assert!(undeclared_inputs(&document, "post", "/users", &["name"], None).is_empty());
        assert_eq!(
            undeclared_inputs(&document, "get", "/users", &[], None),
            ["GET /users: the document has no such operation"]
        );
    }

    #[test]
    fn rebasing_rewrites_only_path_keys() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("doc.yaml");
        std::fs::write(
            &source,
            "openapi: 3.0.1\nservers:\n- url: \"http://{baseurl}/rest\"\npaths:\n  /api/latest/admin/users:\n    get:\n      description: see /api/latest/admin/users\n  /build-status/latest/x:\n    get: {}\ncomponents:\n  /api/latest/not-a-path: {}\n",
        )
        .unwrap();
        let rebased = Document::at(&source)
            .rebase_paths("/api/latest/", "/rest/api/1.0/")
            .unwrap();
        let text = std::fs::read_to_string(rebased.path()).unwrap();
        assert!(text.contains("\n  /rest/api/1.0/admin/users:\n"), "{text}");
        assert!(text.contains("see /api/latest/admin/users"), "{text}");
        assert!(text.contains("\n  /build-status/latest/x:\n"), "{text}");
        assert!(text.contains("\n  /api/latest/not-a-path: {}"), "{text}");
        assert!(
            Document::at(&source)
                .rebase_paths("/nothing/", "/x/")
                .is_err()
        );
    }
}
