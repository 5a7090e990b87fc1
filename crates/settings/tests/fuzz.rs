//! R6: the configuration file from outside, fuzzed. Each service's settings are loaded
//! through `config::load` from a temporary file holding arbitrary bytes, or a valid
//! configuration with lines dropped, doubled, added or given values of the wrong type
//! (huge integers, odd floats, dates, deep arrays, bad cron expressions and time zones,
//! `*_file` keys naming missing files, directories and devices), and validated. Each load
//! is `Ok` or an error that names a key or the file; no case may panic, run past a second
//! or allocate past a bound (see `test_support::fuzz`). `KEYSYNC_FUZZ_CASES` sets the number of cases
//! (default 256; `make fuzz` runs 20000).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use model::state::Product;
use proptest::collection::vec;
use proptest::prelude::*;

use test_support::fuzz as harness;

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

/// A hex token long enough for every check.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// One line of a configuration file.
#[derive(Clone, Debug)]
enum Line {
    Section(String),
    Entry(String, String),
    Raw(String),
}

/// A configuration every service accepts; `SECRET` is a file holding [`TOKEN`].
fn valid_lines() -> Vec<Line> {
    let section = |name: &str| Line::Section(name.to_owned());
    let entry = |key: &str, value: &str| Line::Entry(key.to_owned(), value.to_owned());
    vec![
        section("bus"),
        entry("nats_url", "\"nats://127.0.0.1:4222\""),
        entry("prefix", "\"keysync\""),
        section("control_plane"),
        entry("listen", "\"127.0.0.1:50051\""),
        entry("endpoint", "\"http://127.0.0.1:50051\""),
        entry("token_file", "\"SECRET\""),
        section("control_plane.schedule"),
        entry("cron", "\"0 3 * * *\""),
        entry("timezone", "\"Europe/Berlin\""),
        section("keycloak.corp"),
        entry("endpoint", "\"https://sso.example.org\""),
        entry("realm", "\"corp\""),
        entry("client_id", "\"keysync\""),
        entry("client_secret_file", "\"SECRET\""),
        entry("page_size", "100"),
        entry("retries", "2"),
        section("products.jira"),
        entry("endpoint", "\"https://jira.example.org\""),
        entry("token_file", "\"SECRET\""),
        section("products.confluence"),
        entry("endpoint", "\"https://confluence.example.org\""),
        entry("token_file", "\"SECRET\""),
        section("products.bitbucket"),
        entry("endpoint", "\"https://bitbucket.example.org\""),
        entry("user", "\"svc-keysync\""),
        entry("password_file", "\"SECRET\""),
        section("planner"),
        section("applier"),
        section("fetcher"),
        section("health"),
    ]
}

const SECTIONS: &[&str] = &[
    "bus",
    "control_plane",
    "control_plane.schedule",
    "control_plane.schedule.corp",
    "keycloak.corp",
    "keycloak.corp.events",
    "keycloak.other",
    "products.jira",
    "products.jira.policy",
    "products.jira.policy.scope",
    "products.jira.policy.attributes.login",
    "products.jira.policy.safety",
    "products.confluence",
    "products.bitbucket",
    "planner",
    "applier",
    "fetcher",
    "health",
    "keycloak",
    "products",
];

const KEYS: &[&str] = &[
    "absent_applier_seconds",
    "ack_wait_seconds",
    "add_to_default_group",
    "allow_plaintext",
    "apply_deadline_per_change_ms",
    "apply_deadline_seconds",
    "batch_window_ms",
    "ca",
    "ca_file",
    "change_set_size",
    "client_cert",
    "client_id",
    "client_key",
    "client_secret",
    "client_secret_file",
    "concurrency",
    "connect_timeout_seconds",
    "connector",
    "connectors",
    "credentials",
    "credentials_file",
    "cron",
    "deadline_sweep_seconds",
    "enabled",
    "endpoint",
    "fetch_deadline_seconds",
    "hold_expiry",
    "inbox_prefix",
    "initial_backoff_ms",
    "listen",
    "long_task_timeout_seconds",
    "max_backoff_seconds",
    "max_concurrency",
    "max_requests_per_second",
    "max_retries",
    "nats_url",
    "nkey_seed",
    "nkey_seed_file",
    "page_size",
    "password",
    "password_file",
    "plan_deadline_seconds",
    "poll_interval_ms",
    "prefix",
    "realm",
    "replicas",
    "report_batch_size",
    "request_timeout_seconds",
    "require_tls",
    "required_groups",
    "retention_days",
    "retries",
    "sequence_timeout_seconds",
    "service_token",
    "service_token_file",
    "snapshot_bucket",
    "snapshot_retention_hours",
    "state_timeout_seconds",
    "strict_secret_files",
    "timeout_seconds",
    "timezone",
    "tls_ca",
    "tls_ca_file",
    "tls_cert",
    "tls_cert_file",
    "tls_client_ca",
    "tls_key",
    "tls_key_file",
    "token",
    "token_file",
    "tokens",
    "tokens_file",
    "user",
    "user_listing",
];

/// TOML strings, quoted: plain, escaped, literal, multi-line, long, broken.
fn toml_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(any::<char>(), 0..16).prop_map(|chars| {
            let text: String = chars.into_iter().collect();
            format!("\"{}\"", text.escape_default())
        }),
        2 => "[a-z:/.0-9-]{0,24}".prop_map(|text| format!("'{text}'")),
        1 => prop_oneof![
            Just("\"\\x41\""),
            Just("\"\\uD800\""),
            Just("\"\\U0011FFFF\""),
            Just("\"unterminated"),
            Just("'''multi\nline'''"),
            Just("\"\"\"a\\\n  b\"\"\""),
            Just("\"\u{0}\""),
            Just("\"\""),
            Just("\" \""),
        ]
        .prop_map(str::to_owned),
        1 => (0usize..200_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ]
}

fn toml_number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![
            Just("0"), Just("-1"), Just("9223372036854775807"), Just("9223372036854775808"),
            Just("-9223372036854775809"), Just("18446744073709551616"), Just("0x7fffffff"),
            Just("0xffffffffffffffffff"), Just("0o777"), Just("0b101"), Just("1_000"),
            Just("1__0"), Just("01"), Just("inf"), Just("-inf"), Just("nan"), Just("1e400"),
            Just("-0.0"), Just("3.5"), Just("1e-400"), Just("4294967296"), Just("65536"),
        ]
        .prop_map(str::to_owned),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_filter("finite", |n| n.is_finite()).prop_map(|n| format!("{n:e}")),
    ]
}

fn toml_other() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true"),
        Just("false"),
        Just("1979-05-27T07:32:00Z"),
        Just("1979-05-27"),
        Just("07:32:00"),
        Just("1979-05-27T07:32:00.999999-07:00"),
        Just("9999-99-99"),
        Just("{}"),
        Just("[]"),
        Just(""),
        Just("="),
        Just("[["),
    ]
    .prop_map(str::to_owned)
}

/// Cron expressions and time zones, for the schedule's keys.
fn schedule_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("*/0 * * * *"),
            Just("0 0 31 2 *"),
            Just("1-99999999999 * * * *"),
            Just("* * * * * * * *"),
            Just("L W # ? *"),
            Just("0 0 * * 8"),
            Just("60 24 32 13 7"),
            Just("5-1 * * * *"),
            Just("*/4294967296 * * * *"),
            Just("@reboot"),
            Just("@yearly"),
            Just("0 0 29 2 MON#5"),
            Just(""),
            Just("UTC"),
            Just("Etc/GMT+14"),
            Just("../../etc/passwd"),
            Just("Europe/Nowhere"),
            Just("+25:00"),
            Just("America/Argentina/ComodRivadavia"),
        ]
        .prop_map(|text| format!("\"{text}\"")),
        vec(
            prop::sample::select(vec![
                "*", "/", "-", ",", "0", "1", "59", "L", "W", "#", "?", " ", "MON", "JAN"
            ]),
            0..24
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat())),
    ]
}

/// What a `*_file` key names.
fn file_value(dir: &Path) -> Vec<String> {
    let quoted = |path: &Path| format!("\"{}\"", path.display());
    vec![
        quoted(&dir.join("secret")),
        quoted(&dir.join("missing")),
        quoted(dir),
        quoted(&dir.join("empty")),
        quoted(&dir.join("binary")),
        quoted(&dir.join("open")),
        "\"/dev/null\"".to_owned(),
        "\"relative/path\"".to_owned(),
        "\"\"".to_owned(),
        "[\"a\"]".to_owned(),
        "1".to_owned(),
    ]
}

/// Any TOML value, nested a little, or an array nested deep.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![toml_string(), toml_number(), toml_other(), schedule_text()];
    prop_oneof![
        8 => leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(", "))),
                vec((prop::sample::select(KEYS), inner), 0..4).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", fields.join(", "))
                }),
            ]
        }),
        1 => (0usize..5_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        1 => (0usize..5_000).prop_map(|depth| format!("{}1{}", "{ a = ".repeat(depth), " }".repeat(depth))),
    ]
}

/// One edit of the valid configuration.
#[derive(Clone, Debug)]
enum Edit {
    Drop(prop::sample::Index),
    Double(prop::sample::Index),
    /// A new value for a line's key (a `*_file` key: one of [`file_value`]).
    Value(prop::sample::Index, String, prop::sample::Index),
    /// A key, perhaps unknown where it lands, with any value.
    Add(prop::sample::Index, &'static str, String),
    Section(prop::sample::Index, String),
    Raw(prop::sample::Index, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        1 => index().prop_map(Edit::Drop),
        1 => index().prop_map(Edit::Double),
        4 => (index(), toml_value(), index()).prop_map(|(at, value, file)| Edit::Value(at, value, file)),
        2 => (index(), prop::sample::select(KEYS), toml_value()).prop_map(|(at, key, value)| Edit::Add(at, key, value)),
        1 => (index(), prop_oneof![
            prop::sample::select(SECTIONS).prop_map(str::to_owned),
            prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
            "[a-z.\"\\[\\] ]{0,16}",
        ]).prop_map(|(at, name)| Edit::Section(at, name)),
        1 => (index(), "\\PC{0,32}").prop_map(|(at, text)| Edit::Raw(at, text)),
    ]
}

fn render(lines: &[Line], secret: &Path) -> String {
    let mut text = String::new();
    for line in lines {
        match line {
            Line::Section(name) => text.push_str(&format!("[{name}]\n")),
            Line::Entry(key, value) => text.push_str(&format!("{key} = {value}\n")),
            Line::Raw(raw) => {
                text.push_str(raw);
                text.push('\n');
            }
        }
    }
    text.replace("SECRET", &secret.display().to_string())
}

fn edited(edits: &[Edit], dir: &Path) -> Vec<Line> {
    let mut lines = valid_lines();
    let files = file_value(dir);
    for edit in edits {
        let len = lines.len().max(1);
        match edit {
            Edit::Drop(at) if !lines.is_empty() => {
                lines.remove(at.index(len));
            }
            Edit::Drop(_) => {}
            Edit::Double(at) if !lines.is_empty() => {
                let line = lines[at.index(len)].clone();
                lines.insert(at.index(len), line);
            }
            Edit::Double(_) => {}
            Edit::Value(at, value, file) if !lines.is_empty() => {
                if let Line::Entry(key, old) = &mut lines[at.index(len)] {
                    *old = if key.ends_with("_file") {
                        file.get(&files).clone()
                    } else {
                        value.clone()
                    };
                }
            }
            Edit::Value(..) => {}
            Edit::Add(at, key, value) => lines.insert(
                at.index(len + 1),
                Line::Entry((*key).to_owned(), value.clone()),
            ),
            Edit::Section(at, name) => lines.insert(at.index(len + 1), Line::Section(name.clone())),
            Edit::Raw(at, text) => lines.insert(at.index(len + 1), Line::Raw(text.clone())),
        }
    }
    lines
}

/// A directory with the files `*_file` keys may name.
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("writes");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    write("secret", format!("{TOKEN}\n").as_bytes());
    write("empty", b"");
    write("binary", &[0xff, 0xfe, 0, 1, 2]);
    write("open", format!("{TOKEN}\n").as_bytes());
    std::fs::set_permissions(
        dir.path().join("open"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    dir
}

/// Whether `error` says where: a key (in backquotes), the file, or an environment
/// variable.
fn names_a_key_or_the_file(error: &config::Error, file: &Path) -> bool {
    let message = error.to_string();
    let file = file.display().to_string();
    match error {
        config::Error::Validation(invalid) => !invalid.key().is_empty(),
        _ => message.contains('`') || message.contains(&file) || message.contains("KEYSYNC_"),
    }
}

/// Loads `file` as every service does, and validates; panics on an error that does not say
/// where it is.
fn load_as_every_service(file: &Path) -> usize {
    let mut loaded = 0;
    let mut seen = |result: Result<(), config::Error>| match result {
        Ok(()) => loaded += 1,
        Err(error) => assert!(
            names_a_key_or_the_file(&error, file),
            "an error that names no key and not the file: {error}"
        ),
    };
    seen(settings::fetcher::Settings::load(Some(file)).map(drop));
    seen(settings::control_plane::Settings::load(Some(file)).map(drop));
    seen(
        config::load::<settings::planner::Settings>(Some(file))
            .and_then(|settings| settings.validate().map(drop).map_err(config::Error::from)),
    );
    match config::load::<settings::applier::Settings>(Some(file)) {
        Ok(settings) => {
            for product in [Product::Jira, Product::Confluence, Product::Bitbucket] {
                seen(
                    settings
                        .validate(product)
                        .map(drop)
                        .map_err(config::Error::from),
                );
            }
        }
        Err(error) => seen(Err(error)),
    }
    loaded
}

fn run(what: &str, file: PathBuf, len: usize) -> Result<usize, TestCaseError> {
    harness::guarded(what, len, move || load_as_every_service(&file))
}

#[test]
fn fuzz_harness_fails_a_panic_a_hang_and_a_large_allocation() {
    harness::self_test();
}

#[test]
fn fuzz_config_the_unedited_configuration_loads() {
    let dir = files();
    let file = dir.path().join("keysync.toml");
    std::fs::write(&file, render(&valid_lines(), &dir.path().join("secret"))).expect("writes");
    assert_eq!(
        load_as_every_service(&file),
        6,
        "the valid configuration does not load"
    );
}

proptest! {
    #![proptest_config(harness::config())]

    #[test]
    fn fuzz_config_arbitrary_bytes(content in vec(any::<u8>(), 0..4096)) {
        let dir = files();
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, &content).expect("writes");
        run("config of arbitrary bytes", file, content.len())?;
    }

    #[test]
    fn fuzz_config_edited(edits in vec(edit(), 1..6)) {
        let dir = files();
        let file = dir.path().join("keysync.toml");
        let text = render(&edited(&edits, dir.path()), &dir.path().join("secret"));
        std::fs::write(&file, &text).expect("writes");
        run("config with edited lines", file, text.len())?;
    }

    #[test]
    fn fuzz_config_cut_short(at in any::<prop::sample::Index>()) {
        let dir = files();
        let file = dir.path().join("keysync.toml");
        let text = render(&valid_lines(), &dir.path().join("secret")).into_bytes();
        let cut = &text[..at.index(text.len() + 1)];
        std::fs::write(&file, cut).expect("writes");
        run("config cut short", file, cut.len())?;
    }
}
