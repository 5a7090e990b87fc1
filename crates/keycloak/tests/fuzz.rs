//! R6: Keycloak's answers from outside, fuzzed. The representations the client parses
//! (users, groups, members, counts) get arbitrary bytes and near-valid JSON straight from
//! serde, as the client decodes them; and a whole [`Client::fetch`] runs against a stub
//! Keycloak whose token, count, page and error answers and `Retry-After` headers are
//! generated, which also reaches the token response and the header parsing the crate keeps
//! private. No case may panic, run past its time limit or allocate past a bound (see
//! `test_support::fuzz`). `KEYSYNC_FUZZ_CASES` sets the number of cases (default 256; `make fuzz` runs
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

use test_support::fuzz as harness;

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

use test_support::fuzz::json;

use test_support::fuzz::stub;

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
