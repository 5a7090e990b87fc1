//! R6: the products' answers from outside, fuzzed. Jira, Confluence and Bitbucket clients
//! run their reads and writes against a stub server whose answers are generated per
//! endpoint: page envelopes and user, group, permission, licence and long-task beans with
//! fields dropped, doubled or of the wrong type; error bodies; arbitrary bytes; statuses
//! from 200 to 599; and `Retry-After` and `X-RateLimit-*` headers with absurd values. That
//! reaches every decoder the crate keeps private (`http.rs`: `retry_after`,
//! `error_message`; `http/pacer.rs`: the rate-limit headers; the envelopes of `jira.rs`,
//! `confluence.rs`, `bitbucket.rs` and `jira/`). No case may panic, run past its time limit
//! or allocate past a bound (see `harness`). `KEYSYNC_FUZZ_CASES` sets the number of cases
//! (default 256; `make fuzz` runs 20000).

use std::time::Duration;

use atlassian::bitbucket::BitbucketClient;
use atlassian::config::{
    Auth, BitbucketSettings, ConfluenceSettings, Connection, JiraSettings, UserListing,
};
use atlassian::confluence::ConfluenceClient;
use atlassian::jira::JiraClient;
use atlassian::{AccountRef, AccountUpdate, Directory, NewAccount};
use proptest::collection::vec;
use proptest::prelude::*;

/// The guards every fuzz case runs under: a counting global allocator, a time limit and a
/// panic catcher. The same code is in each crate's `tests/fuzz.rs` (one test binary each).
mod harness {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError, mpsc};
    use std::time::{Duration, Instant};

    use proptest::test_runner::{Config, TestCaseError};

    /// [`System`], counting the bytes allocated now and the most allocated at once.
    pub struct Counting;

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn grew(bytes: usize) {
        let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(bytes: usize) {
        CURRENT.fetch_sub(bytes, Ordering::Relaxed);
    }

    // SAFETY: every call is forwarded to `System` unchanged; the counters are only added to.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is `System`'s.
            let pointer = unsafe { System.alloc(layout) };
            if !pointer.is_null() {
                grew(layout.size());
            }
            pointer
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as above.
            let pointer = unsafe { System.alloc_zeroed(layout) };
            if !pointer.is_null() {
                grew(layout.size());
            }
            pointer
        }

        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(pointer, layout) };
            shrank(layout.size());
        }

        unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as above.
            let moved = unsafe { System.realloc(pointer, layout, new_size) };
            if !moved.is_null() {
                if new_size >= layout.size() {
                    grew(new_size - layout.size());
                } else {
                    shrank(layout.size() - new_size);
                }
            }
            moved
        }
    }

    /// How long one case may take: a guard against hangs, not a benchmark.
    pub const TIME_LIMIT: Duration = Duration::from_secs(1);

    /// The most one case may allocate at once: 64 MiB and 64 bytes per input byte.
    pub fn allocation_limit(input_len: usize) -> usize {
        (64 << 20) + input_len.saturating_mul(64)
    }

    /// `KEYSYNC_FUZZ_CASES` (`make fuzz` sets 20000), else 256.
    pub fn config() -> Config {
        let cases = std::env::var("KEYSYNC_FUZZ_CASES")
            .ok()
            .and_then(|cases| cases.trim().parse().ok())
            .unwrap_or(256);
        Config {
            cases,
            // No regression files written next to the sources.
            failure_persistence: None,
            max_shrink_time: 60_000,
            // ChaCha, the default, is most of the generation time in a debug build.
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..Config::default()
        }
    }

    /// One case at a time per test binary, so that the allocation peak is the case's own.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Runs `job` on a thread of its own under the guards: a panic, a run past
    /// [`TIME_LIMIT`] or a peak allocation past [`allocation_limit`] of `input_len` fails
    /// the case, naming `what`.
    #[allow(dead_code, reason = "this binary's cases all set their own time limit")]
    pub fn guarded<R: Send + 'static>(
        what: &str,
        input_len: usize,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, TestCaseError> {
        guarded_within(what, TIME_LIMIT, allocation_limit(input_len), job)
    }

    pub fn guarded_within<R: Send + 'static>(
        what: &str,
        time_limit: Duration,
        byte_limit: usize,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, TestCaseError> {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let (sender, receiver) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("fuzz {what}"))
            .stack_size(8 << 20);
        let baseline = CURRENT.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let started = Instant::now();
        worker
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(job));
                let _ = sender.send(outcome);
            })
            .map_err(|error| TestCaseError::fail(format!("{what}: no thread: {error}")))?;
        let outcome = match receiver.recv_timeout(time_limit) {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(TestCaseError::fail(format!(
                    "{what}: no answer within {time_limit:?} (a hang?)"
                )));
            }
        };
        let elapsed = started.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
        let result = outcome.map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            TestCaseError::fail(format!("{what} panicked: {message}"))
        })?;
        if elapsed > time_limit {
            return Err(TestCaseError::fail(format!(
                "{what} took {elapsed:?}, over {time_limit:?}"
            )));
        }
        if peak > byte_limit {
            return Err(TestCaseError::fail(format!(
                "{what} allocated {peak} bytes at once, over {byte_limit}"
            )));
        }
        Ok(result)
    }

    /// The guards themselves fail a case that panics, hangs or allocates too much.
    pub fn self_test() {
        let panics = guarded_within("panic", TIME_LIMIT, 1 << 20, || -> u8 {
            panic!("deliberate")
        });
        assert!(
            format!("{panics:?}").contains("deliberate"),
            "a panic passed: {panics:?}"
        );
        let hangs = guarded_within("hang", Duration::from_millis(20), 1 << 20, || {
            std::thread::sleep(Duration::from_millis(200))
        });
        assert!(
            format!("{hangs:?}").contains("no answer"),
            "a hang passed: {hangs:?}"
        );
        let allocates = guarded_within("allocation", TIME_LIMIT, 1 << 20, || {
            std::hint::black_box(vec![1u8; 4 << 20]).len()
        });
        assert!(
            format!("{allocates:?}").contains("allocated"),
            "a large allocation passed: {allocates:?}"
        );
        assert_eq!(
            guarded_within("nothing", TIME_LIMIT, 1 << 20, || 7).ok(),
            Some(7)
        );
    }
}

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

/// JSON text as an attacker or a broken proxy writes it: near-valid objects with fields
/// dropped, doubled or of the wrong type, absurd numbers, long strings, deep nesting.
mod json {
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Numbers no decoder should trust.
    pub fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop_oneof![
                Just("0"),
                Just("-1"),
                Just("-0"),
                Just("1.5"),
                Just("-0.5"),
                Just("1e999"),
                Just("-1e999"),
                Just("1E-400"),
                Just("18446744073709551615"),
                Just("18446744073709551616"),
                Just("-9223372036854775809"),
                Just("123456789012345678901234567890123456789"),
                Just("0.0000000000000000000000000000001"),
                Just("01"),
                Just("1."),
                Just("-"),
                Just("NaN"),
                Just("Infinity"),
            ]
            .prop_map(str::to_owned),
            2 => any::<i64>().prop_map(|n| n.to_string()),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<f64>().prop_map(|n| format!("{n:e}")),
            1 => (1usize..2000).prop_map(|n| "9".repeat(n)),
        ]
    }

    /// Strings, quoted: plain, escaped, invalid escapes, very long, unterminated.
    pub fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            40 => vec(any::<char>(), 0..12).prop_map(|chars| {
                serde_json::to_string(&String::from_iter(chars)).unwrap_or_default()
            }),
            1 => prop_oneof![
                Just("\"\\ud800\""),
                Just("\"\\udc00\\ud800\""),
                Just("\"\\u0000\""),
                Just("\"\\x41\""),
                Just("\"\\u12\""),
                Just("\"unterminated"),
                Just("\"\u{7f}\u{0}\""),
                Just("\"\t\""),
            ]
            .prop_map(str::to_owned),
            1 => (0usize..300_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
            1 => (0usize..2_000).prop_map(|n| format!("\"{}\"", "\\u00e9".repeat(n))),
        ]
    }

    /// Arrays or objects nested `depth` deep: past serde_json's recursion limit of 128.
    pub fn deep() -> impl Strategy<Value = String> {
        (0usize..5_000, any::<bool>()).prop_map(|(depth, objects)| {
            if objects {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            } else {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
        })
    }

    /// Any JSON value, with the given keys likely in objects.
    pub fn value(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number(),
            string(),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
                vec((key(keys), inner), 0..6).prop_map(|fields| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// A key, quoted: mostly one of `keys`.
    pub fn key(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(keys).prop_map(|key| format!("\"{key}\"")),
            1 => string(),
        ]
    }

    /// A field of a near-valid object: the valid one, dropped, of the wrong type or twice.
    fn field(
        name: &'static str,
        valid: BoxedStrategy<String>,
        keys: &'static [&'static str],
    ) -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            12 => valid.clone().prop_map(move |v| Some(format!("\"{name}\":{v}"))),
            1 => Just(None),
            1 => value(keys).prop_map(move |v| Some(format!("\"{name}\":{v}"))),
            1 => (valid, value(keys))
                .prop_map(move |(v, w)| Some(format!("\"{name}\":{v},\"{name}\":{w}"))),
        ]
    }

    /// An object with `fields` (name and valid value), each one kept, dropped, of the wrong
    /// type or doubled, and sometimes fields of no use.
    pub fn object(
        fields: Vec<(&'static str, BoxedStrategy<String>)>,
        keys: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        let fields: Vec<_> = fields
            .into_iter()
            .map(|(name, valid)| field(name, valid, keys).boxed())
            .collect();
        (fields, vec((key(keys), value(keys)), 0..2))
            .prop_map(|(fields, extra)| {
                let mut parts: Vec<String> = fields.into_iter().flatten().collect();
                parts.extend(extra.into_iter().map(|(k, v)| format!("{k}:{v}")));
                format!("{{{}}}", parts.join(","))
            })
            .boxed()
    }

    /// A JSON array of `item`s.
    pub fn array(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
        vec(item, 0..max)
            .prop_map(|items| format!("[{}]", items.join(",")))
            .boxed()
    }

    /// A valid string value.
    pub fn text() -> BoxedStrategy<String> {
        prop_oneof![
            8 => vec(prop::sample::select(&b"abcdefghijklmnopqrstuvwxyz0123456789.@-"[..]), 1..12)
                .prop_map(|bytes| format!("\"{}\"", String::from_utf8_lossy(&bytes))),
            1 => string(),
        ]
        .boxed()
    }

    /// A valid boolean.
    pub fn boolean() -> BoxedStrategy<String> {
        any::<bool>().prop_map(|b| b.to_string()).boxed()
    }

    /// A small valid count, or an absurd number.
    pub fn count() -> BoxedStrategy<String> {
        prop_oneof![4 => (0u64..20).prop_map(|n| n.to_string()), 1 => number()].boxed()
    }

    /// Whole documents: `valid` most of the time, else any value, deep nesting, bytes cut
    /// off, or garbage.
    pub fn document(
        valid: BoxedStrategy<String>,
        keys: &'static [&'static str],
    ) -> BoxedStrategy<Vec<u8>> {
        prop_oneof![
            12 => valid.clone().prop_map(String::into_bytes),
            2 => value(keys).prop_map(String::into_bytes),
            1 => deep().prop_map(String::into_bytes),
            2 => (valid, any::<prop::sample::Index>()).prop_map(|(text, at)| {
                let mut bytes = text.into_bytes();
                bytes.truncate(at.index(bytes.len() + 1));
                bytes
            }),
            1 => vec(any::<u8>(), 0..256),
        ]
        .boxed()
    }
}

/// A plain HTTP/1.1 server on a local port that answers every request with what the current
/// case set for its path: the hostile product or Keycloak.
mod stub {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};

    /// What the stub answers.
    #[derive(Clone, Debug)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, Vec<u8>)>,
        pub body: Vec<u8>,
    }

    impl Reply {
        pub fn ok(body: Vec<u8>) -> Reply {
            Reply {
                status: 200,
                headers: Vec::new(),
                body,
            }
        }
    }

    type Route = Box<dyn Fn(&str) -> Reply + Send + Sync>;

    struct Stub {
        url: String,
        route: Arc<Mutex<Option<Route>>>,
    }

    fn stub() -> &'static Stub {
        static STUB: OnceLock<Stub> = OnceLock::new();
        STUB.get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            let port = listener.local_addr().expect("a local address").port();
            let route: Arc<Mutex<Option<Route>>> = Arc::new(Mutex::new(None));
            let routes = route.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let route = routes.clone();
                    std::thread::spawn(move || {
                        // A client that hangs up early is no failure of the stub.
                        let _ = serve(stream, &route);
                    });
                }
            });
            Stub {
                url: format!("http://127.0.0.1:{port}"),
                route,
            }
        })
    }

    /// The stub's base URL, without a trailing slash.
    pub fn url() -> &'static str {
        &stub().url
    }

    /// From now on, a request for path (and query) `p` is answered `route(p)`.
    pub fn answer(route: impl Fn(&str) -> Reply + Send + Sync + 'static) {
        *stub().route.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(route));
    }

    fn serve(stream: TcpStream, route: &Mutex<Option<Route>>) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let reply = {
            let route = route.lock().unwrap_or_else(PoisonError::into_inner);
            match route.as_ref() {
                Some(route) => route(&target),
                None => Reply::ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        write!(out, "HTTP/1.1 {} X\r\n", reply.status)?;
        for (name, value) in &reply.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.body.len()
        )?;
        out.extend_from_slice(&reply.body);
        let mut stream = stream;
        stream.write_all(&out)?;
        stream.flush()
    }

    /// A header value as a server might send it: a number, a date, garbage, bytes past
    /// ASCII. Never CR or LF, which would end the header.
    pub fn header_value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0u64..5).prop_map(|n| n.to_string().into_bytes()),
            2 => super::json::number().prop_map(String::into_bytes),
            1 => Just(b"Wed, 21 Oct 2015 07:28:00 GMT".to_vec()),
            1 => Just(b" 1 ".to_vec()),
            1 => Just(b"+3".to_vec()),
            1 => Just(b"".to_vec()),
            2 => proptest::collection::vec(
                any::<u8>().prop_filter("no line end", |b| *b != b'\r' && *b != b'\n'),
                0..24,
            ),
        ]
    }
}

const KEYS: &[&str] = &[
    "key",
    "name",
    "displayName",
    "emailAddress",
    "active",
    "groups",
    "items",
    "values",
    "isLast",
    "nextCursor",
    "startAt",
    "total",
    "permissions",
    "havePermission",
    "version",
    "versionNumbers",
    "results",
    "start",
    "limit",
    "size",
    "_links",
    "next",
    "username",
    "userKey",
    "status",
    "type",
    "count",
    "id",
    "successful",
    "percentageComplete",
    "messages",
    "translation",
    "isLastPage",
    "nextPageStart",
    "slug",
    "directoryName",
    "mutableDetails",
    "mutableGroups",
    "deletable",
    "user",
    "permission",
    "group",
    "maximumNumberOfUsers",
    "unlimitedNumberOfUsers",
    "currentNumberOfUsers",
    "lead",
    "leadUserName",
    "selectedByDefault",
    "numberOfSeats",
    "userCount",
    "hasUnlimitedSeats",
    "errorMessages",
    "errors",
    "message",
    "data",
];

type Body = BoxedStrategy<String>;

fn obj(fields: Vec<(&'static str, Body)>) -> Body {
    json::object(fields, KEYS)
}

fn text() -> Body {
    json::text()
}

fn boolean() -> Body {
    json::boolean()
}

fn count() -> Body {
    json::count()
}

fn opt(body: Body) -> Body {
    prop_oneof![3 => body, 1 => Just("null".to_owned())].boxed()
}

fn array(item: Body) -> Body {
    prop_oneof![
        8 => json::array(item.clone(), 6),
        // Exactly a search cap of Jira's `/user/search`.
        1 => vec(item, 10..=10).prop_map(|items| format!("[{}]", items.join(","))),
    ]
    .boxed()
}

fn jira_user() -> Body {
    obj(vec![
        ("key", opt(text())),
        ("name", text()),
        ("displayName", opt(text())),
        ("emailAddress", opt(text())),
        ("active", boolean()),
        (
            "groups",
            opt(obj(vec![(
                "items",
                json::array(obj(vec![("name", text())]), 3),
            )])),
        ),
    ])
}

fn jira_routes() -> Vec<(&'static str, Body)> {
    let group_name = || obj(vec![("name", text())]);
    let user_ref = || obj(vec![("key", opt(text())), ("name", text())]);
    vec![
        (
            "/user/list",
            obj(vec![
                ("values", array(jira_user())),
                ("isLast", boolean()),
                ("nextCursor", opt(text())),
            ]),
        ),
        ("/user/search", array(jira_user())),
        (
            "/group/member",
            obj(vec![
                ("values", array(jira_user())),
                ("isLast", boolean()),
                ("startAt", count()),
            ]),
        ),
        (
            "/groups/picker",
            obj(vec![("total", count()), ("groups", array(group_name()))]),
        ),
        (
            "/mypermissions",
            obj(vec![(
                "permissions",
                obj(vec![
                    ("ADMINISTER", obj(vec![("havePermission", boolean())])),
                    ("SYSTEM_ADMIN", obj(vec![("havePermission", boolean())])),
                ]),
            )]),
        ),
        (
            "/serverInfo",
            obj(vec![
                ("version", opt(text())),
                (
                    "versionNumbers",
                    prop_oneof![
                        Just("[10,3,0]".to_owned()),
                        Just("[9,12,1]".to_owned()),
                        json::array(count(), 4),
                    ]
                    .boxed(),
                ),
            ]),
        ),
        (
            "/applicationrole",
            array(obj(vec![
                ("key", text()),
                ("selectedByDefault", boolean()),
                ("numberOfSeats", count()),
                ("userCount", count()),
                ("hasUnlimitedSeats", boolean()),
            ])),
        ),
        (
            "/components",
            array(obj(vec![
                ("id", text()),
                ("name", text()),
                ("lead", opt(user_ref())),
                ("leadUserName", opt(text())),
            ])),
        ),
        (
            "/project",
            array(obj(vec![("key", text()), ("lead", opt(user_ref()))])),
        ),
        ("/myself", jira_user()),
        ("/user", jira_user()),
        ("/group", group_name()),
    ]
}

fn confluence_page(item: Body) -> Body {
    obj(vec![
        ("results", array(item)),
        ("start", count()),
        ("limit", count()),
        ("size", count()),
        ("_links", obj(vec![("next", opt(text()))])),
    ])
}

fn confluence_person() -> Body {
    obj(vec![
        ("type", opt(text())),
        ("username", opt(text())),
        ("userKey", opt(text())),
        ("displayName", opt(text())),
        ("status", opt(text())),
    ])
}

fn confluence_routes() -> Vec<(&'static str, Body)> {
    vec![
        (
            "/longtask",
            obj(vec![
                ("successful", opt(boolean())),
                ("percentageComplete", opt(count())),
                (
                    "messages",
                    json::array(obj(vec![("translation", opt(text()))]), 3),
                ),
            ]),
        ),
        (
            "/admin/users/list/active",
            prop_oneof![count(), obj(vec![("count", opt(count()))])].boxed(),
        ),
        (
            "/admin/user",
            prop_oneof![
                obj(vec![("userKey", opt(text()))]),
                obj(vec![("id", text())]),
            ]
            .boxed(),
        ),
        (
            "/user/list",
            confluence_page(obj(vec![
                ("username", text()),
                ("userKey", text()),
                ("displayName", opt(text())),
                ("status", text()),
            ])),
        ),
        ("/member", confluence_page(confluence_person())),
        ("/group", confluence_page(obj(vec![("name", text())]))),
        ("/user", confluence_person()),
    ]
}

fn bitbucket_page(item: Body) -> Body {
    obj(vec![
        ("values", array(item)),
        ("isLastPage", boolean()),
        ("start", count()),
        ("nextPageStart", opt(count())),
    ])
}

fn bitbucket_user() -> Body {
    obj(vec![
        ("name", text()),
        ("slug", text()),
        ("displayName", opt(text())),
        ("emailAddress", opt(text())),
        ("active", boolean()),
        ("directoryName", opt(text())),
        ("mutableDetails", boolean()),
        ("mutableGroups", boolean()),
        ("deletable", boolean()),
    ])
}

fn bitbucket_routes() -> Vec<(&'static str, Body)> {
    let permission = || {
        prop_oneof![
            Just("\"ADMIN\"".to_owned()),
            Just("\"SYS_ADMIN\"".to_owned()),
            Just("\"LICENSED_USER\"".to_owned()),
            text(),
        ]
        .boxed()
    };
    vec![
        (
            "/admin/groups/more-members",
            bitbucket_page(bitbucket_user()),
        ),
        (
            "/admin/groups",
            bitbucket_page(obj(vec![("name", text()), ("deletable", boolean())])),
        ),
        (
            "/admin/permissions/users",
            bitbucket_page(obj(vec![
                ("user", obj(vec![("name", text()), ("slug", opt(text()))])),
                ("permission", permission()),
            ])),
        ),
        (
            "/admin/permissions/groups",
            bitbucket_page(obj(vec![
                ("group", obj(vec![("name", text())])),
                ("permission", permission()),
            ])),
        ),
        (
            "/admin/license",
            obj(vec![
                ("maximumNumberOfUsers", opt(count())),
                ("unlimitedNumberOfUsers", opt(boolean())),
                (
                    "status",
                    opt(obj(vec![("currentNumberOfUsers", opt(count()))])),
                ),
            ]),
        ),
        (
            "/application-properties",
            obj(vec![("version", opt(text()))]),
        ),
        ("/admin/users", bitbucket_page(bitbucket_user())),
    ]
}

/// The error bodies of the three products, and what else an error page may hold.
fn error_body() -> Body {
    prop_oneof![
        obj(vec![
            ("errorMessages", json::array(text(), 3)),
            (
                "errors",
                obj(vec![("name", text()), ("email", json::value(KEYS).boxed())])
            ),
        ]),
        obj(vec![
            ("message", text()),
            (
                "data",
                obj(vec![(
                    "errors",
                    json::array(
                        obj(vec![("message", obj(vec![("translation", text())]))]),
                        3
                    ),
                )])
            ),
        ]),
        obj(vec![(
            "errors",
            json::array(obj(vec![("message", text())]), 3)
        )]),
        Just("<html><body>Bad gateway</body></html>".to_owned()).boxed(),
        Just(String::new()).boxed(),
    ]
    .boxed()
}

const HEADERS: &[&str] = &[
    "Retry-After",
    "X-RateLimit-FillRate",
    "X-RateLimit-Interval-Seconds",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-Any",
];

/// An answer: the route's body (mostly 2xx) or an error body, with headers.
fn reply(body: Body) -> impl Strategy<Value = stub::Reply> {
    let success = (
        prop_oneof![12 => Just(200u16), 1 => Just(201), 1 => Just(204)],
        json::document(body, KEYS),
    );
    let failure = (
        prop::sample::select(vec![
            400u16, 401, 403, 404, 409, 429, 500, 502, 503, 504, 599,
        ]),
        json::document(error_body(), KEYS),
    );
    let headers = vec((prop::sample::select(HEADERS), stub::header_value()), 0..4);
    (prop_oneof![4 => success, 1 => failure], headers).prop_map(|((status, body), headers)| {
        stub::Reply {
            status,
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            body,
        }
    })
}

/// Which product, and what the client is asked to do.
#[derive(Clone, Copy, Debug)]
enum Which {
    Jira(UserListing),
    Confluence,
    Bitbucket,
}

#[derive(Clone, Copy, Debug)]
enum Operation {
    TestConnection,
    FetchState,
    ListMembers,
    Seats,
    Leads,
    CreateAccount,
    UpdateAccount,
    DeactivateAccount,
    ReactivateAccount,
    DeleteAccount,
    CreateGroup,
    DeleteGroup,
    AddMember,
    RemoveMember,
}

/// A case: a product, an operation and the stub's answer for each of the product's
/// endpoints (and for any other path).
#[derive(Clone, Debug)]
struct Case {
    which: Which,
    operation: Operation,
    routes: Vec<(&'static str, stub::Reply)>,
    other: stub::Reply,
}

fn routes_of(routes: Vec<(&'static str, Body)>) -> BoxedStrategy<Vec<(&'static str, stub::Reply)>> {
    let strategies: Vec<_> = routes
        .into_iter()
        .map(|(path, body)| reply(body).prop_map(move |reply| (path, reply)))
        .collect();
    strategies.boxed()
}

fn case() -> impl Strategy<Value = Case> {
    let operation = prop::sample::select(vec![
        Operation::TestConnection,
        Operation::FetchState,
        Operation::FetchState,
        Operation::FetchState,
        Operation::ListMembers,
        Operation::Seats,
        Operation::Leads,
        Operation::CreateAccount,
        Operation::UpdateAccount,
        Operation::DeactivateAccount,
        Operation::ReactivateAccount,
        Operation::DeleteAccount,
        Operation::CreateGroup,
        Operation::DeleteGroup,
        Operation::AddMember,
        Operation::RemoveMember,
    ]);
    let product = |which: BoxedStrategy<Which>, routes: Vec<(&'static str, Body)>| {
        (
            which,
            operation.clone(),
            routes_of(routes),
            reply(json::value(KEYS).boxed()),
        )
            .prop_map(|(which, operation, routes, other)| Case {
                which,
                operation,
                routes,
                other,
            })
    };
    prop_oneof![
        product(
            prop::sample::select(vec![
                UserListing::Cursor,
                UserListing::PrefixSearch,
                UserListing::Auto,
            ])
            .prop_map(Which::Jira)
            .boxed(),
            jira_routes(),
        ),
        product(Just(Which::Confluence).boxed(), confluence_routes()),
        product(Just(Which::Bitbucket).boxed(), bitbucket_routes()),
    ]
}

impl Case {
    fn len(&self) -> usize {
        self.routes
            .iter()
            .map(|(_, reply)| reply.body.len())
            .sum::<usize>()
            + self.other.body.len()
    }

    fn answer(&self, target: &str) -> stub::Reply {
        let path = target.split('?').next().unwrap_or(target);
        self.routes
            .iter()
            .find(|(route, _)| path.contains(route))
            .map_or(&self.other, |(_, reply)| reply)
            .clone()
    }
}

fn connection(which: Which) -> Connection {
    let endpoint = url::Url::parse(&format!("{}/", stub::url())).expect("the stub's URL");
    let auth = match which {
        Which::Bitbucket => Auth::Basic {
            user: "svc".to_owned(),
            password: config::Secret::new("secret"),
        },
        _ => Auth::Bearer(config::Secret::new("token")),
    };
    let mut connection = Connection::new(endpoint, auth);
    connection.max_concurrency = 2;
    connection.max_retries = 1;
    connection.initial_backoff = Duration::from_millis(1);
    connection.max_backoff = Duration::from_millis(10);
    connection.request_timeout = Duration::from_secs(2);
    connection.connect_timeout = Duration::from_secs(1);
    connection.max_pages = 8;
    connection
}

async fn operate<D: Directory>(client: &D, operation: Operation) -> Result<String, String> {
    let account = AccountRef {
        id: "u1",
        login: "alice",
    };
    let outcome = match operation {
        Operation::TestConnection => client
            .test_connection()
            .await
            .map(|info| format!("{info:?}")),
        Operation::FetchState => client
            .fetch_state()
            .await
            .map(|state| format!("{} accounts", state.accounts.len())),
        Operation::ListMembers => client.list_members("staff").await.map(|m| format!("{m:?}")),
        Operation::Seats => client.seats().await.map(|seats| format!("{seats:?}")),
        Operation::Leads => client
            .list_leads()
            .await
            .map(|leads| format!("{}", leads.len())),
        Operation::CreateAccount => client
            .create_account(&NewAccount {
                login: "alice".to_owned(),
                display_name: "Alice".to_owned(),
                email: "alice@example.org".to_owned(),
                password: None,
            })
            .await
            .map(|created| format!("{created:?}")),
        Operation::UpdateAccount => client
            .update_account(
                account,
                &AccountUpdate {
                    login: None,
                    display_name: Some("Alice B".to_owned()),
                    email: Some("b@example.org".to_owned()),
                },
            )
            .await
            .map(|outcome| format!("{outcome:?}")),
        Operation::DeactivateAccount => client
            .deactivate_account(account)
            .await
            .map(|o| format!("{o:?}")),
        Operation::ReactivateAccount => client
            .reactivate_account(account)
            .await
            .map(|o| format!("{o:?}")),
        Operation::DeleteAccount => client
            .delete_account(account)
            .await
            .map(|o| format!("{o:?}")),
        Operation::CreateGroup => client.create_group("staff").await.map(|o| format!("{o:?}")),
        Operation::DeleteGroup => client.delete_group("staff").await.map(|o| format!("{o:?}")),
        Operation::AddMember => client
            .add_member("staff", account)
            .await
            .map(|o| format!("{o:?}")),
        Operation::RemoveMember => client
            .remove_member("staff", account)
            .await
            .map(|o| format!("{o:?}")),
    };
    outcome.map_err(|error| error.to_string())
}

/// The clients, built once (a client loads the TLS roots: tens of milliseconds in a debug
/// build) and kept with the runtime they run on; Jira's `Auto` client resolves its listing
/// once, so it is built anew for each case.
struct Clients {
    runtime: tokio::runtime::Runtime,
    jira_cursor: JiraClient,
    jira_search: JiraClient,
    confluence: ConfluenceClient,
    bitbucket: BitbucketClient,
}

fn jira(user_listing: UserListing) -> JiraClient {
    JiraClient::new(
        connection(Which::Jira(user_listing)),
        JiraSettings { user_listing },
    )
    .expect("valid Jira settings")
}

fn clients() -> &'static Clients {
    static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
    CLIENTS.get_or_init(|| {
        let mut confluence = ConfluenceSettings::recommended();
        confluence.long_task_timeout = Duration::from_millis(300);
        confluence.long_task_poll_interval = Duration::from_millis(5);
        Clients {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime"),
            jira_cursor: jira(UserListing::Cursor),
            jira_search: jira(UserListing::PrefixSearch),
            confluence: ConfluenceClient::new(connection(Which::Confluence), confluence)
                .expect("valid Confluence settings"),
            bitbucket: BitbucketClient::new(
                connection(Which::Bitbucket),
                BitbucketSettings {
                    add_to_default_group: true,
                },
            )
            .expect("valid Bitbucket settings"),
        }
    })
}

fn run(which: Which, operation: Operation) -> Result<String, String> {
    let clients = clients();
    clients.runtime.block_on(async move {
        match which {
            Which::Jira(UserListing::Cursor) => operate(&clients.jira_cursor, operation).await,
            Which::Jira(UserListing::PrefixSearch) => {
                operate(&clients.jira_search, operation).await
            }
            Which::Jira(UserListing::Auto) => operate(&jira(UserListing::Auto), operation).await,
            Which::Confluence => operate(&clients.confluence, operation).await,
            Which::Bitbucket => operate(&clients.bitbucket, operation).await,
        }
    })
}

/// How long one operation against the stub may take: several requests over loopback, each
/// a new connection, a retry and the waits the headers ask for (each at most 10 ms here), in
/// a debug build.
const CALL_TIME_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn fuzz_harness_fails_a_panic_a_hang_and_a_large_allocation() {
    harness::self_test();
}

proptest! {
    #![proptest_config(harness::config())]

    #[test]
    fn fuzz_atlassian_clients_against_a_hostile_server(case in case()) {
        let len = case.len();
        let (which, operation) = (case.which, case.operation);
        let served = case.clone();
        stub::answer(move |target| served.answer(target));
        let outcome = harness::guarded_within(
            "a product client against a hostile server",
            CALL_TIME_LIMIT,
            harness::allocation_limit(len),
            move || run(which, operation),
        )?;
        if let Err(message) = outcome {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn fuzz_atlassian_arbitrary_bytes_and_headers(
        which in prop_oneof![
            Just(Which::Jira(UserListing::Cursor)),
            Just(Which::Confluence),
            Just(Which::Bitbucket),
        ],
        status in 100u16..1000,
        body in vec(any::<u8>(), 0..2048),
        headers in vec((prop::sample::select(HEADERS), stub::header_value()), 0..6),
    ) {
        let len = body.len();
        let reply = stub::Reply {
            status,
            headers: headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
            body,
        };
        stub::answer(move |_| reply.clone());
        let outcome = harness::guarded_within(
            "a product client reading arbitrary bytes",
            CALL_TIME_LIMIT,
            harness::allocation_limit(len),
            move || run(which, Operation::FetchState),
        )?;
        if let Err(message) = outcome {
            prop_assert!(!message.is_empty());
        }
    }
}
