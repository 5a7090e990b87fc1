//! R6: the products' answers from outside, fuzzed. Jira, Confluence and Bitbucket clients
//! run their reads and writes against a stub server whose answers are generated per
//! endpoint: page envelopes and user, group, permission, licence and long-task beans with
//! fields dropped, doubled or of the wrong type; error bodies; arbitrary bytes; statuses
//! from 200 to 599; and `Retry-After` and `X-RateLimit-*` headers with absurd values. That
//! reaches every decoder the crate keeps private (`http.rs`: `retry_after`,
//! `error_message`; `http/pacer.rs`: the rate-limit headers; the envelopes of `jira.rs`,
//! `confluence.rs`, `bitbucket.rs` and `jira/`). No case may panic, run past its time limit
//! or allocate past a bound (see `test_support::fuzz`). `KEYSYNC_FUZZ_CASES` sets the number of cases
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

use test_support::fuzz as harness;

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

use test_support::fuzz::json;

use test_support::fuzz::stub;

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
