//! R6: Keycloak's answers from outside, fuzzed. The representations the client parses
//! (users, groups, members, counts) get arbitrary bytes and near-valid JSON straight from
//! serde, as the client decodes them; and a whole [`Client::fetch`] runs against a stub
//! Keycloak whose token, count, page and error answers and `Retry-After` headers are
//! generated, which also reaches the token response and the header parsing the crate keeps
//! private. No case may panic, run past its time limit or allocate past a bound (see
//! `harness`). `KEYSYNC_FUZZ_CASES` sets the number of cases (default 256; `make fuzz` runs
//! 20000).

use std::time::Duration;

use config::Secret;
use keycloak::client::Client;
use keycloak::config::KeycloakSettings;
use keycloak::representation::{
    Count, GroupRepresentation, MemberRepresentation, UserRepresentation,
};
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
    "id",
    "username",
    "email",
    "firstName",
    "lastName",
    "enabled",
    "emailVerified",
    "attributes",
    "federationLink",
    "serviceAccountClientId",
    "name",
    "path",
    "subGroupCount",
    "subGroups",
    "count",
    "access_token",
    "expires_in",
];

fn user() -> BoxedStrategy<String> {
    let attributes = prop_oneof![
        3 => vec(("[a-z]{1,6}", vec("[a-z]{0,6}", 0..3)), 0..3).prop_map(|pairs| {
            let fields: Vec<String> = pairs
                .into_iter()
                .map(|(k, vs)| format!("\"{k}\":{}", serde_json::to_string(&vs).unwrap_or_default()))
                .collect();
            format!("{{{}}}", fields.join(","))
        }),
        1 => json::value(KEYS),
    ]
    .boxed();
    json::object(
        vec![
            ("id", json::text()),
            ("username", json::text()),
            ("email", json::text()),
            ("firstName", json::text()),
            ("lastName", json::text()),
            ("enabled", json::boolean()),
            ("emailVerified", json::boolean()),
            ("attributes", attributes),
            ("federationLink", json::text()),
            ("serviceAccountClientId", Just("null".to_owned()).boxed()),
        ],
        KEYS,
    )
}

fn group_leaf() -> BoxedStrategy<String> {
    json::object(
        vec![
            ("id", json::text()),
            ("name", json::text()),
            ("path", json::text()),
            ("subGroupCount", json::count()),
        ],
        KEYS,
    )
}

fn group() -> BoxedStrategy<String> {
    json::object(
        vec![
            ("id", json::text()),
            ("name", json::text()),
            ("path", json::text()),
            ("subGroupCount", json::count()),
            ("subGroups", json::array(group_leaf(), 3)),
        ],
        KEYS,
    )
}

fn member() -> BoxedStrategy<String> {
    json::object(vec![("id", json::text())], KEYS)
}

fn count() -> BoxedStrategy<String> {
    prop_oneof![
        json::count(),
        json::object(vec![("count", json::count())], KEYS),
    ]
    .boxed()
}

fn token() -> BoxedStrategy<String> {
    json::object(
        vec![
            ("access_token", json::text()),
            ("expires_in", json::count()),
            ("token_type", Just("\"Bearer\"".to_owned()).boxed()),
        ],
        KEYS,
    )
}

/// Parses `body` as every representation, as the client does (`serde_json::from_slice`).
fn parse_every_representation(body: &[u8]) {
    let _ = serde_json::from_slice::<Vec<UserRepresentation>>(body);
    let _ = serde_json::from_slice::<UserRepresentation>(body);
    let _ = serde_json::from_slice::<Vec<GroupRepresentation>>(body);
    let _ = serde_json::from_slice::<Vec<MemberRepresentation>>(body);
    if let Ok(count) = serde_json::from_slice::<Count>(body)
        && let Ok(checked) = count.checked()
    {
        assert!(checked <= keycloak::MAX_COUNT, "{checked}");
    }
}

/// An answer of the stub Keycloak: the document with a status (mostly 200) and headers.
fn reply(document: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = stub::Reply> {
    let status = prop_oneof![
        12 => Just(200u16),
        1 => prop::sample::select(vec![204u16, 301, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504, 599]),
    ];
    let headers = vec(
        (
            prop::sample::select(vec![
                "Retry-After",
                "Content-Encoding",
                "Content-Type",
                "X-Any",
            ]),
            stub::header_value(),
        ),
        0..3,
    );
    (status, headers, document).prop_map(|(status, headers, body)| stub::Reply {
        status,
        headers: headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
        body,
    })
}

/// The stub's answers, by endpoint.
#[derive(Clone, Debug)]
struct Realm {
    token: stub::Reply,
    count: stub::Reply,
    users: stub::Reply,
    groups: stub::Reply,
    members: stub::Reply,
    /// Whether pages after the first are empty (else every page is the first).
    paged: bool,
}

fn realm() -> impl Strategy<Value = Realm> {
    (
        prop_oneof![
            4 => json::count().prop_map(|lifetime| stub::Reply::ok(
                format!("{{\"access_token\":\"t\",\"expires_in\":{lifetime}}}").into_bytes()
            )),
            1 => reply(json::document(token(), KEYS)),
        ],
        prop_oneof![
            2 => (0u64..12).prop_map(|n| stub::Reply::ok(n.to_string().into_bytes())),
            1 => reply(json::document(count(), KEYS)),
        ],
        prop_oneof![
            2 => vec(any::<bool>(), 0..4).prop_map(|users| {
                let users: Vec<String> = users
                    .iter()
                    .enumerate()
                    .map(|(i, enabled)| {
                        format!(
                            "{{\"id\":\"u{i}\",\"username\":\"user{i}\",\
                             \"enabled\":{enabled},\"emailVerified\":true}}"
                        )
                    })
                    .collect();
                stub::Reply::ok(format!("[{}]", users.join(",")).into_bytes())
            }),
            1 => reply(json::document(json::array(user(), 6), KEYS)),
        ],
        prop_oneof![
            2 => (0usize..3, 0u64..3).prop_map(|(groups, children)| {
                let groups: Vec<String> = (0..groups)
                    .map(|i| {
                        format!(
                            "{{\"id\":\"g{i}\",\"name\":\"g{i}\",\"path\":\"/g{i}\",\
                             \"subGroupCount\":{children}}}"
                        )
                    })
                    .collect();
                stub::Reply::ok(format!("[{}]", groups.join(",")).into_bytes())
            }),
            1 => reply(json::document(json::array(group(), 4), KEYS)),
        ],
        prop_oneof![
            2 => (0usize..4).prop_map(|members| {
                let members: Vec<String> =
                    (0..members).map(|i| format!("{{\"id\":\"u{i}\"}}")).collect();
                stub::Reply::ok(format!("[{}]", members.join(",")).into_bytes())
            }),
            1 => reply(json::document(json::array(member(), 6), KEYS)),
        ],
        any::<bool>(),
    )
        .prop_map(|(token, count, users, groups, members, paged)| Realm {
            token,
            count,
            users,
            groups,
            members,
            paged,
        })
}

impl Realm {
    fn len(&self) -> usize {
        [
            &self.token,
            &self.count,
            &self.users,
            &self.groups,
            &self.members,
        ]
        .iter()
        .map(|reply| reply.body.len())
        .sum()
    }

    fn answer(&self, target: &str) -> stub::Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let later_page = query
            .split('&')
            .any(|pair| pair.starts_with("first=") && pair != "first=0");
        if later_page && self.paged {
            return stub::Reply::ok(b"[]".to_vec());
        }
        let reply = if path.ends_with("/token") {
            &self.token
        } else if path.ends_with("/count") {
            &self.count
        } else if path.ends_with("/members") {
            &self.members
        } else if path.contains("/groups") {
            &self.groups
        } else {
            &self.users
        };
        reply.clone()
    }
}

/// How long one fetch against the stub may take: many requests over loopback, each a new
/// connection, in a debug build.
const FETCH_TIME_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn fuzz_harness_fails_a_panic_a_hang_and_a_large_allocation() {
    harness::self_test();
}

proptest! {
    #![proptest_config(harness::config())]

    #[test]
    fn fuzz_keycloak_representations_arbitrary_bytes(body in vec(any::<u8>(), 0..4096)) {
        let len = body.len();
        harness::guarded("keycloak representations of arbitrary bytes", len, move || {
            parse_every_representation(&body);
        })?;
    }

    #[test]
    fn fuzz_keycloak_representations_near_valid(
        body in prop_oneof![
            json::document(json::array(user(), 8), KEYS),
            json::document(user(), KEYS),
            json::document(json::array(group(), 6), KEYS),
            json::document(json::array(member(), 8), KEYS),
            json::document(count(), KEYS),
        ]
    ) {
        let len = body.len();
        harness::guarded("keycloak representations of near-valid JSON", len, move || {
            parse_every_representation(&body);
        })?;
    }

}

/// A quarter of the cases for the whole fetch: each one builds a client, which loads the TLS
/// roots (about 20 ms in a debug build), so that the default run stays short.
fn fetch_config() -> proptest::test_runner::Config {
    let mut config = harness::config();
    config.cases = (config.cases / 4).max(16);
    config
}

proptest! {
    #![proptest_config(fetch_config())]

    #[test]
    fn fuzz_keycloak_fetch_against_a_hostile_server(realm in realm()) {
        let len = realm.len();
        let served = realm.clone();
        stub::answer(move |target| served.answer(target));
        let outcome = harness::guarded_within(
            "keycloak fetch from a hostile server",
            FETCH_TIME_LIMIT,
            harness::allocation_limit(len),
            move || {
                let mut settings =
                    KeycloakSettings::new(stub::url(), "corp", "keysync", Secret::new("s3cret"));
                settings.retries = 0;
                settings.page_size = 3;
                settings.concurrency = 2;
                settings.timeout_seconds = 2;
                let client = Client::new(settings).expect("valid settings");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime
                    .block_on(client.fetch())
                    .map(|snapshot| snapshot.users.len())
                    .map_err(|error| error.to_string())
            },
        )?;
        if let Err(message) = outcome {
            prop_assert!(!message.is_empty());
        }
    }
}
