//! Hostile and broken answers: paging that does not advance, envelopes without their
//! required fields, absurd headers and bodies without end. None of them may hang, panic or
//! silently cut a listing short; a listing that cannot be proven complete fails.
//!
//! The answers come from a stub server in this file (a plain HTTP/1.1 responder on a
//! `std::net::TcpListener`, one thread per connection, every answer `Connection: close`):
//! the emulators answer only what the products document. Every call runs under a
//! [`deadline`], so a client that loops forever fails the test instead of hanging it.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlassian::bitbucket::BitbucketClient;
use atlassian::config::{Auth, Connection, UserListing};
use atlassian::confluence::ConfluenceClient;
use atlassian::jira::JiraClient;
use atlassian::{Directory, Error};
use serde_json::{Value, json};
use url::Url;

use crate::helpers::{basic, bitbucket_with, confluence_with, jira_with};

/// What the stub answers to one request.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    /// Sent with its `Content-Length`.
    Bytes(Vec<u8>),
    /// Sent without a length, in 64 KiB chunks, until the client hangs up.
    Endless,
}

impl Reply {
    fn json(body: Value) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: Body::Bytes(body.to_string().into_bytes()),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }
}

/// One request as the stub saw it: the path and the query parameters.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn number(&self, name: &str) -> u64 {
        self.param(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A stub server answering every request with `handler`; it lives as long as the process.
struct Stub {
    url: String,
    requests: Arc<AtomicUsize>,
}

fn stub(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("a local address").port();
    let handler: Arc<Handler> = Arc::new(handler);
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                // A client that hangs up early is no failure of the stub.
                let _ = serve(stream, handler.as_ref());
            });
        }
    });
    Stub {
        url: format!("http://127.0.0.1:{port}/"),
        requests,
    }
}

/// Reads one request (its head; the clients' GETs have no body) and writes the reply.
fn serve(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let url = Url::parse(&format!("http://stub{target}")).expect("a request target");
    let seen = Seen {
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
    };
    let reply = handler(&seen);
    let mut stream = stream;
    let mut head = format!(
        "HTTP/1.1 {} Stub\r\nContent-Type: application/json\r\nConnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match reply.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes())?;
            stream.write_all(&bytes)?;
        }
        Body::Endless => {
            head.push_str("\r\n");
            stream.write_all(head.as_bytes())?;
            let chunk = vec![b' '; 64 << 10];
            loop {
                stream.write_all(&chunk)?;
            }
        }
    }
    stream.flush()
}

/// A connection to `stub` with short timeouts and waits, so that every test is quick.
fn connection(stub: &Stub, auth: Auth) -> Connection {
    let mut connection = Connection::new(Url::parse(&stub.url).expect("the stub URL"), auth);
    connection.request_timeout = Duration::from_secs(5);
    connection.max_retries = 2;
    connection.initial_backoff = Duration::from_millis(5);
    connection.max_backoff = Duration::from_millis(100);
    connection
}

fn bearer() -> Auth {
    Auth::Bearer(config::Secret::new("hostile-token"))
}

fn jira(stub: &Stub) -> JiraClient {
    jira_with(connection(stub, bearer()), UserListing::Cursor)
}

fn confluence(stub: &Stub) -> ConfluenceClient {
    confluence_with(connection(stub, bearer()))
}

fn bitbucket(stub: &Stub) -> BitbucketClient {
    bitbucket_with(connection(stub, basic("admin", "admin")))
}

/// `call`'s answer, or a failure when it takes longer than 20 seconds (a client that pages
/// forever).
async fn deadline<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call ends instead of looping or waiting forever")
}

/// Asserts that `result` is [`Error::Incomplete`] whose message holds `needle`.
fn assert_incomplete<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) {
    match result {
        Err(Error::Incomplete { message, .. }) => {
            assert!(message.contains(needle), "`{needle}` not in: {message}")
        }
        other => panic!("expected Incomplete ({needle}), got {other:?}"),
    }
}

fn assert_decode<T: std::fmt::Debug>(result: Result<T, Error>, field: &str) {
    match result {
        Err(error @ Error::Decode { .. }) => {
            let text = format!("{error} {:?}", std::error::Error::source(&error));
            assert!(text.contains(field), "`{field}` not in: {text}")
        }
        other => panic!("expected a decode error naming {field}, got {other:?}"),
    }
}

fn jira_user(name: &str) -> Value {
    json!({"key": format!("K-{name}"), "name": name, "displayName": name,
           "emailAddress": format!("{name}@example.com"), "active": true})
}

fn bitbucket_user(name: &str) -> Value {
    json!({"name": name, "slug": name, "displayName": name, "emailAddress": "x@example.com",
           "active": true, "mutableDetails": true, "mutableGroups": true, "deletable": true})
}

fn confluence_person(name: &str) -> Value {
    json!({"type": "known", "username": name, "userKey": format!("k-{name}"),
           "displayName": name, "status": "Active"})
}

// 1. Every paging loop proves progress.

#[tokio::test]
async fn a_bitbucket_next_page_start_that_does_not_advance_fails_the_listing() {
    let server = stub(|seen| {
        let start = seen.number("start");
        Reply::json(json!({
            "values": [bitbucket_user(&format!("u{start}"))], "size": 1, "limit": 1000,
            "isLastPage": false, "start": start, "nextPageStart": start + 1 - start % 2
        }))
    });
    // start=0 points to 1, start=1 points back to 1.
    assert_incomplete(
        deadline(bitbucket(&server).list_accounts()).await,
        "start=1",
    );
}

#[tokio::test]
async fn a_bitbucket_server_that_ignores_start_fails_the_listing() {
    let server = stub(|_| {
        Reply::json(json!({
            "values": [bitbucket_user("same")], "size": 1, "limit": 1000,
            "isLastPage": false, "start": 0, "nextPageStart": 1
        }))
    });
    assert_incomplete(
        deadline(bitbucket(&server).list_accounts()).await,
        "asked for start=1",
    );
}

#[tokio::test]
async fn a_repeated_jira_user_list_cursor_fails_the_listing() {
    let server = stub(|seen| {
        // No cursor → c1 → c2 → c1 again.
        let next = match seen.param("cursor") {
            None => "c1",
            Some("c1") => "c2",
            Some(_) => "c1",
        };
        let user = jira_user(&format!("u-{next}"));
        Reply::json(json!({"values": [user], "isLast": false, "nextCursor": next}))
    });
    assert_incomplete(deadline(jira(&server).list_accounts()).await, "cursor=c1");
}

#[tokio::test]
async fn a_confluence_start_that_does_not_move_fails_the_listing() {
    let server = stub(|_| {
        Reply::json(json!({
            "results": [confluence_person("same")], "start": 0, "limit": 1, "size": 1,
            "_links": {"next": "/rest/api/user/list?start=1&limit=1"}
        }))
    });
    assert_incomplete(
        deadline(confluence(&server).list_accounts()).await,
        "asked for start=1",
    );
}

#[tokio::test]
async fn jira_group_member_paging_that_ignores_start_at_fails_the_listing() {
    let server = stub(|_| {
        Reply::json(json!({
            "values": [jira_user("same")], "isLast": false, "startAt": 0,
            "maxResults": 50, "total": 1000
        }))
    });
    assert_incomplete(
        deadline(jira(&server).list_members("developers")).await,
        "asked for startAt=1",
    );
}

#[tokio::test]
async fn a_listing_past_max_pages_fails_instead_of_paging_on() {
    let server = stub(|seen| {
        let page = seen
            .param("cursor")
            .and_then(|cursor| cursor.parse::<u64>().ok())
            .unwrap_or(0);
        let user = jira_user(&format!("u{page}"));
        Reply::json(
            json!({"values": [user], "isLast": false, "nextCursor": (page + 1).to_string()}),
        )
    });
    let mut connection = connection(&server, bearer());
    connection.max_pages = 5;
    let client = jira_with(connection, UserListing::Cursor);
    assert_incomplete(deadline(client.list_accounts()).await, "max_pages");
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn empty_pages_that_say_there_is_more_do_not_end_a_listing_silently() {
    let server = stub(|seen| {
        let page = seen
            .param("cursor")
            .and_then(|cursor| cursor.parse::<u64>().ok())
            .unwrap_or(0);
        Reply::json(json!({"values": [], "isLast": false, "nextCursor": (page + 1).to_string()}))
    });
    assert_incomplete(
        deadline(jira(&server).list_accounts()).await,
        "empty pages in a row",
    );
}

#[tokio::test]
async fn a_user_search_that_invents_users_forever_stops_at_max_pages() {
    let next = Arc::new(AtomicUsize::new(0));
    let server = stub(move |seen| {
        assert_eq!(seen.path, "/rest/api/2/user/search");
        let users: Vec<Value> = (0..1000)
            .map(|_| jira_user(&format!("u{}", next.fetch_add(1, Ordering::SeqCst))))
            .collect();
        Reply::json(Value::Array(users))
    });
    let mut connection = connection(&server, bearer());
    connection.max_pages = 3;
    let client = jira_with(connection, UserListing::PrefixSearch);
    assert_incomplete(deadline(client.list_accounts()).await, "max_pages");
}

#[tokio::test]
async fn a_group_picker_that_caps_every_query_stops_at_max_pages() {
    let server = stub(|seen| {
        if seen.path != "/rest/api/2/groups/picker" {
            // `group/member`, asking whether the capped query is itself a group.
            return Reply::json(json!({"errorMessages": ["no such group"]})).status(404);
        }
        let name = seen.param("query").unwrap_or_default().to_owned();
        Reply::json(json!({"total": 1000, "groups": [{"name": format!("{name}x")}]}))
    });
    let mut connection = connection(&server, bearer());
    connection.max_pages = 50;
    let client = jira_with(connection, UserListing::Cursor);
    assert_incomplete(deadline(client.list_groups()).await, "max_pages");
}

// 2. A page that does not say it is the last is not the last.

#[tokio::test]
async fn a_bitbucket_page_without_is_last_page_is_a_decode_error() {
    let server = stub(|_| {
        Reply::json(json!({"values": [bitbucket_user("a")], "size": 1, "limit": 1000, "start": 0}))
    });
    assert_decode(
        deadline(bitbucket(&server).list_accounts()).await,
        "isLastPage",
    );
}

#[tokio::test]
async fn a_bitbucket_page_that_is_not_the_last_without_next_page_start_fails() {
    let server = stub(|_| {
        Reply::json(json!({
            "values": [bitbucket_user("a")], "size": 1, "limit": 1, "start": 0,
            "isLastPage": false
        }))
    });
    assert_incomplete(
        deadline(bitbucket(&server).list_accounts()).await,
        "nextPageStart",
    );
}

#[tokio::test]
async fn a_jira_page_that_is_not_the_last_without_a_cursor_fails() {
    let server = stub(|_| Reply::json(json!({"values": [jira_user("a")], "isLast": false})));
    assert_incomplete(deadline(jira(&server).list_accounts()).await, "nextCursor");
}

#[tokio::test]
async fn a_jira_page_without_is_last_is_a_decode_error() {
    let server = stub(|_| Reply::json(json!({"values": [jira_user("a")], "nextCursor": "c"})));
    assert_decode(deadline(jira(&server).list_accounts()).await, "isLast");
}

#[tokio::test]
async fn a_confluence_page_without_links_is_a_decode_error() {
    let server = stub(|_| {
        Reply::json(json!({
            "results": [confluence_person("a")], "start": 0, "limit": 200, "size": 1
        }))
    });
    assert_decode(
        deadline(confluence(&server).list_accounts()).await,
        "_links",
    );
}

#[tokio::test]
async fn a_confluence_page_whose_size_disagrees_with_its_results_fails() {
    let server = stub(|_| {
        Reply::json(json!({
            "results": [confluence_person("a")], "start": 0, "limit": 200, "size": 2,
            "_links": {}
        }))
    });
    assert_incomplete(
        deadline(confluence(&server).list_accounts()).await,
        "size is 2",
    );
}

// 3. Absurd headers neither panic nor wait forever.

#[tokio::test]
async fn absurd_rate_limit_headers_neither_panic_nor_stall_the_client() {
    let headers: [[(&'static str, &'static str); 3]; 3] = [
        [
            ("X-RateLimit-FillRate", "1e-300"),
            ("X-RateLimit-Interval-Seconds", "1e300"),
            ("X-RateLimit-Remaining", "-1e300"),
        ],
        [
            ("X-RateLimit-FillRate", "0.000001"),
            ("X-RateLimit-Interval-Seconds", "86400"),
            ("X-RateLimit-Remaining", "0"),
        ],
        [
            ("X-RateLimit-FillRate", "1e308"),
            ("X-RateLimit-Interval-Seconds", "1e-308"),
            ("X-RateLimit-Limit", "1e308"),
        ],
    ];
    for pairs in headers {
        let server = stub(move |seen| {
            let start = seen.number("start");
            let last = start >= 3;
            let mut reply = Reply::json(json!({
                "values": [bitbucket_user(&format!("u{start}"))], "size": 1, "limit": 1,
                "isLastPage": last, "start": start, "nextPageStart": start + 1
            }));
            for (name, value) in pairs {
                reply = reply.header(name, value);
            }
            reply
        });
        let started = Instant::now();
        let accounts = deadline(bitbucket(&server).list_accounts())
            .await
            .expect("the listing");
        assert_eq!(accounts.len(), 4, "{pairs:?}");
        // Four pages, each held back at most `max_backoff` (100 ms).
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{pairs:?}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_huge_or_negative_retry_after_is_clamped_and_never_overflows() {
    for retry_after in [
        "18446744073709551615",
        "99999999999999999999999999",
        "-5",
        "1e9",
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let server = stub(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::json(json!({}))
                    .status(429)
                    .header("Retry-After", retry_after);
            }
            Reply::json(json!({"values": [], "isLastPage": true, "start": 0}))
        });
        let started = Instant::now();
        let groups = deadline(bitbucket(&server).list_groups())
            .await
            .expect("the retry succeeds");
        assert!(groups.is_empty());
        assert!(started.elapsed() < Duration::from_secs(3), "{retry_after}");
    }
    // Out of retries, the error reports the wait, bounded: a caller may add it to an instant.
    let server = stub(|_| {
        Reply::json(json!({}))
            .status(429)
            .header("Retry-After", "18446744073709551615")
    });
    let mut connection = connection(&server, basic("admin", "admin"));
    connection.max_retries = 0;
    let error = deadline(bitbucket_with(connection).list_groups())
        .await
        .expect_err("rate limited");
    let Error::RateLimited {
        retry_after: Some(retry_after),
        ..
    } = error
    else {
        panic!("expected RateLimited with a Retry-After, got {error:?}");
    };
    assert!(
        retry_after <= Duration::from_secs(24 * 60 * 60),
        "{retry_after:?}"
    );
    assert!(Instant::now().checked_add(retry_after).is_some());
}

// 4. Bodies are read with a limit.

#[tokio::test]
async fn a_body_over_the_limit_is_an_error_naming_the_limit() {
    let server = stub(|_| Reply::json(json!({"values": vec![bitbucket_user("a"); 100]})));
    let mut connection = connection(&server, basic("admin", "admin"));
    connection.max_body_bytes = 1024;
    let error = deadline(bitbucket_with(connection).list_accounts())
        .await
        .expect_err("too large");
    assert!(
        matches!(error, Error::ResponseTooLarge { limit: 1024, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("1024"), "{error}");
    // Not retried: the same request would get the same answer.
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_endless_body_without_a_length_fails_at_the_limit_instead_of_being_buffered() {
    let server = stub(|_| Reply {
        status: 200,
        headers: Vec::new(),
        body: Body::Endless,
    });
    let mut connection = connection(&server, basic("admin", "admin"));
    connection.max_body_bytes = 1 << 20;
    let error = deadline(bitbucket_with(connection).list_groups())
        .await
        .expect_err("too large");
    assert!(
        matches!(error, Error::ResponseTooLarge { limit, .. } if limit == 1 << 20),
        "{error:?}"
    );
}

// 5. A missing required field is a decode error, never a default.

#[tokio::test]
async fn a_jira_user_without_active_is_a_decode_error() {
    let server = stub(|_| {
        let mut user = jira_user("a");
        user.as_object_mut().map(|user| user.remove("active"));
        Reply::json(json!({"values": [user], "isLast": true}))
    });
    assert_decode(deadline(jira(&server).list_accounts()).await, "active");
}

#[tokio::test]
async fn a_bitbucket_user_or_group_without_its_write_flags_is_a_decode_error() {
    for field in ["active", "mutableDetails", "mutableGroups", "deletable"] {
        let server = stub(move |_| {
            let mut user = bitbucket_user("a");
            user.as_object_mut().map(|user| user.remove(field));
            Reply::json(json!({"values": [user], "isLastPage": true, "start": 0}))
        });
        assert_decode(deadline(bitbucket(&server).list_accounts()).await, field);
    }
    let server = stub(|_| {
        Reply::json(json!({"values": [{"name": "ldap-group"}], "isLastPage": true, "start": 0}))
    });
    assert_decode(
        deadline(bitbucket(&server).list_groups()).await,
        "deletable",
    );
}

#[tokio::test]
async fn a_confluence_user_without_key_or_status_is_a_decode_error_not_dropped() {
    for field in ["userKey", "username", "status"] {
        let server = stub(move |_| {
            let mut person = confluence_person("a");
            person.as_object_mut().map(|person| person.remove(field));
            Reply::json(json!({
                "results": [person], "start": 0, "limit": 200, "size": 1, "_links": {}
            }))
        });
        assert_decode(deadline(confluence(&server).list_accounts()).await, field);
        assert_decode(deadline(confluence(&server).list_members("g")).await, field);
    }
}

#[tokio::test]
async fn a_jira_group_member_page_without_start_at_is_a_decode_error() {
    let server = stub(|_| Reply::json(json!({"values": [jira_user("a")], "isLast": true})));
    assert_decode(
        deadline(jira(&server).list_members("developers")).await,
        "startAt",
    );
}

/// The stub itself: it answers what the handler says, path and query as sent.
#[tokio::test]
async fn the_stub_answers_with_the_handler() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let server = stub(move |request| {
        record.lock().expect("the record").push(request.clone());
        Reply::json(json!({"values": [], "isLastPage": true, "start": 0}))
    });
    let groups = deadline(bitbucket(&server).list_groups()).await;
    assert!(groups.is_ok_and(|groups| groups.is_empty()));
    let seen = seen.lock().expect("the record");
    assert_eq!(seen[0].path, "/rest/api/1.0/admin/groups");
    assert_eq!(seen[0].param("start"), Some("0"));
}
