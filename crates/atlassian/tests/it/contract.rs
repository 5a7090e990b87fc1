//! Contract tests: every request the Bitbucket client makes is validated against Atlassian's
//! OpenAPI document for Bitbucket Data Center 8.14 (`shared/reference/specs`) by Prism, an
//! OpenAPI request validator (npm `@stoplight/prism-cli`, installed by `make deps`).
//!
//! Prism runs as a proxy in front of the Bitbucket emulator: it validates each request,
//! forwards it, and logs every violation it finds (see `test_support::prism` for why it does
//! not refuse them itself). A test fails when the log holds a violation of a request. The
//! document's paths are `/api/latest/...` under the server URL `http://{baseurl}/rest`; the
//! client calls `/rest/api/1.0/...`, the same API (`latest` is `1.0`), so the document is
//! rebased onto those paths first.

use std::collections::BTreeSet;

use atlassian::{AccountRef, AccountUpdate, Directory, Error, Outcome};
use emulator::store::{GlobalPermission, RequestRecord, Seed, SeedPermission};
use emulator::{Product, Running};
use reqwest::Method;
use test_support::prism::{Document, PrismProxy, undeclared_inputs};

use crate::helpers::*;

const DOCUMENT: &str = "bitbucket-server-8.14.openapi.yaml";

/// Prism in front of `emulator`, with the document rebased onto `/rest/api/1.0/`; and that
/// document as JSON.
async fn prism_in_front_of(emulator: &Running) -> (PrismProxy, serde_json::Value) {
    let upstream = emulator.url().trim_end_matches('/').to_owned();
    tokio::task::spawn_blocking(move || {
        let document =
            Document::reference(DOCUMENT)?.rebase_paths("/api/latest/", "/rest/api/1.0/")?;
        // Prism reads the document once, at start: the copy may go when it listens.
        let prism = PrismProxy::start(&document, &upstream)?;
        document.to_json().map(|json| (prism, json))
    })
    .await
    .expect("the Prism start does not panic")
    .expect("Prism starts (run `make deps` to install it)")
}

/// What a recorded request carries that its operation does not declare.
fn undeclared(document: &serde_json::Value, request: &RequestRecord) -> Vec<String> {
    let (path, query) = request.uri.split_once('?').unwrap_or((&request.uri, ""));
    let names: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name.into_owned())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = (!request.body.is_empty())
        .then(|| serde_json::from_str(&request.body).expect("the client sends JSON bodies"));
    undeclared_inputs(document, &request.method, path, &names, body.as_ref())
}

/// `METHOD /path`, without the query, of a recorded URI.
fn operation(method: &str, uri: &str) -> String {
    let path = uri.split_once('?').map_or(uri, |(path, _)| path);
    format!("{} {path}", method.to_uppercase())
}

#[tokio::test]
async fn every_request_of_the_bitbucket_client_conforms_to_the_openapi_document() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: ["alice", "bob", "ops"].map(seed_account).to_vec(),
            groups: ["stash-users", "developers", "bb-admins"]
                .map(seed_group)
                .to_vec(),
            memberships: vec![
                seed_membership("stash-users", "alice"),
                seed_membership("developers", "alice"),
                seed_membership("developers", "bob"),
                seed_membership("bb-admins", "ops"),
            ],
        },
    );
    config.permissions = vec![
        SeedPermission::user("ops", GlobalPermission::SysAdmin),
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
        SeedPermission::group("stash-users", GlobalPermission::LicensedUser),
    ];
    config.record_requests = true;
    let emulator = spawn(config).await;
    let (prism, document) = prism_in_front_of(&emulator).await;
    let mut connection = connection(&emulator);
    connection.endpoint = prism.url().parse().unwrap();
    // Small pages, so that the listings send `start` and `limit` past the first page.
    connection.page_size = Some(2);
    let client = bitbucket_with(connection);
    let carol = new_account("carol");

    // Every method of the `Directory` trait, and each of their requests: reads, then the
    // writes, each write once when it applies and once when it is already done.
    client.test_connection().await.unwrap();
    let state = client.fetch_state().await.unwrap();
    assert_eq!(state.accounts.len(), 3);
    assert_eq!(client.list_accounts().await.unwrap().len(), 3);
    assert_eq!(client.list_groups().await.unwrap().len(), 3);
    assert_eq!(client.list_members("developers").await.unwrap().len(), 2);
    let created = client.create_account(&carol).await.unwrap();
    assert_eq!(created.outcome, Outcome::Applied);
    let again = client.create_account(&carol).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyDone, "409, then read back");
    assert_eq!(
        client.create_group("contractors").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.create_group("contractors").await.unwrap(),
        Outcome::AlreadyDone
    );
    let account = AccountRef {
        id: &created.id,
        login: "carol",
    };
    assert_eq!(
        client.add_member("contractors", account).await.unwrap(),
        Outcome::Applied
    );
    // Several groups at once: one `add-groups` with the list.
    assert!(
        client
            .add_member_to_groups(
                &["developers".to_owned(), "contractors".to_owned()],
                account
            )
            .await
            .into_iter()
            .all(|outcome| matches!(outcome, Ok(Outcome::Applied)))
    );
    let update = AccountUpdate {
        login: Some("carol.new".into()),
        display_name: Some("Carol New".into()),
        email: Some("carol.new@example.com".into()),
    };
    assert_eq!(
        client.update_account(account, &update).await.unwrap(),
        Outcome::Applied,
        "a rename, then the details"
    );
    let renamed = client
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .find(|remote| remote.login == "carol.new")
        .expect("carol is renamed");
    let account = AccountRef {
        id: &renamed.id,
        login: "carol.new",
    };
    assert_eq!(
        client.remove_member("contractors", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.delete_group("contractors").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.delete_group("contractors").await.unwrap(),
        Outcome::AlreadyDone,
        "404"
    );
    assert_eq!(
        client.delete_account(account).await.unwrap(),
        Outcome::Applied
    );
    // No request: Bitbucket has no deactivation.
    assert!(matches!(
        client.deactivate_account(account).await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        client.reactivate_account(account).await,
        Err(Error::Unsupported { .. })
    ));

    let report = prism.report().unwrap();
    let (requests, responses): (Vec<_>, Vec<_>) = report
        .violations
        .iter()
        .partition(|violation| violation.is_about_a_request());
    let listed = |violations: &[&test_support::prism::Violation]| {
        let lines: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        lines.join("\n")
    };
    assert!(
        requests.is_empty(),
        "requests of the Bitbucket client violate {DOCUMENT} (Prism's log: {}):\n{}",
        prism.log_path().display(),
        listed(&requests)
    );
    // The emulator's answers are not what this test checks, and the document is stricter
    // than Bitbucket (an error's `context` is `null`): shown, not failed.
    if !responses.is_empty() {
        eprintln!(
            "note: the emulator's answers differ from {DOCUMENT}:\n{}",
            listed(&responses)
        );
    }
    // Every request went through Prism and on to the emulator: none was lost. (Sorted: the
    // reads the client makes at once may arrive in either order.)
    let dump = emulator.state().dump();
    let mut forwarded: Vec<String> = dump
        .requests
        .iter()
        .map(|request| operation(&request.method, &request.uri))
        .collect();
    let mut received = report.requests.clone();
    forwarded.sort();
    received.sort();
    assert_eq!(received, forwarded);
    // Nor does any carry a query parameter or a body property the document does not declare,
    // which Prism lets through.
    let undeclared: Vec<String> = dump
        .requests
        .iter()
        .flat_map(|request| undeclared(&document, request))
        .collect();
    assert!(
        undeclared.is_empty(),
        "requests of the Bitbucket client carry what {DOCUMENT} does not declare:\n{}",
        undeclared.join("\n")
    );
    let validated: BTreeSet<&str> = report.requests.iter().map(String::as_str).collect();
    assert_eq!(
        validated,
        BTreeSet::from([
            "DELETE /rest/api/1.0/admin/groups",
            "DELETE /rest/api/1.0/admin/users",
            "GET /rest/api/1.0/admin/groups",
            "GET /rest/api/1.0/admin/groups/more-members",
            "GET /rest/api/1.0/admin/license",
            "GET /rest/api/1.0/admin/permissions/groups",
            "GET /rest/api/1.0/admin/permissions/users",
            "GET /rest/api/1.0/admin/users",
            "GET /rest/api/1.0/application-properties",
            "POST /rest/api/1.0/admin/groups",
            "POST /rest/api/1.0/admin/users",
            "POST /rest/api/1.0/admin/users/add-groups",
            "POST /rest/api/1.0/admin/users/remove-group",
            "POST /rest/api/1.0/admin/users/rename",
            "PUT /rest/api/1.0/admin/users",
        ]),
        "the client's operations, each validated at least once"
    );
}

/// Prism really validates: each request that breaks the document is reported with the
/// reason, in the `sl-violations` header of its answer and in the log the other test
/// checks, while the same request made right is not.
#[tokio::test]
async fn prism_reports_a_request_that_violates_the_openapi_document() {
    let emulator = spawn(seeded(Product::Bitbucket, Seed::default())).await;
    let (prism, document) = prism_in_front_of(&emulator).await;
    let http = reqwest::Client::new();
    let send = |method: Method, path: &str, query: &[(&str, &str)], body: Option<&str>| {
        let url = url::Url::parse_with_params(&format!("{}{path}", prism.url()), query).unwrap();
        let mut request = http.request(method, url).basic_auth("admin", Some("admin"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            let header = response.headers().get("sl-violations");
            let violations = header.map(|value| value.to_str().unwrap().to_owned());
            (response.status().as_u16(), violations.unwrap_or_default())
        }
    };
    let users = "/rest/api/1.0/admin/users";
    let dave = [
        ("name", "dave"),
        ("displayName", "Dave"),
        ("emailAddress", "dave@example.com"),
        ("password", "secret-pw"),
    ];

    // `emailAddress` is a required query parameter of "Create user".
    let missing = send(Method::POST, users, &dave[..2], None).await;
    // `limit` is a number.
    let wrong_type = send(Method::GET, users, &[("limit", "many")], None).await;
    // `UserRename.name` is a string.
    let wrong_body = send(
        Method::POST,
        "/rest/api/1.0/admin/users/rename",
        &[],
        Some(r#"{"name": 5, "newName": "dave"}"#),
    )
    .await;
    let valid = send(Method::POST, users, &dave, None).await;

    for ((_, violations), reason) in [
        (&missing, "required property 'emailaddress'"),
        (&wrong_type, "limit must be number"),
        (&wrong_body, "name must be string"),
    ] {
        assert!(
            violations.contains(r#""location":["request""#),
            "{violations}"
        );
        assert!(violations.contains(reason), "{violations}");
    }
    assert_eq!(valid.0, 204, "{}", valid.1);
    assert!(valid.1.is_empty(), "{}", valid.1);
    let report = prism.report().unwrap();
    let reported: Vec<(&str, &str)> = report
        .violations
        .iter()
        .filter(|violation| violation.is_about_a_request())
        .map(|violation| (violation.request.as_str(), violation.location.as_str()))
        .collect();
    assert_eq!(
        reported,
        [
            ("POST /rest/api/1.0/admin/users", "request.query"),
            ("GET /rest/api/1.0/admin/users", "request.query.limit"),
            ("POST /rest/api/1.0/admin/users/rename", "request.body.name"),
        ]
    );
    // What Prism lets through, the undeclared-input check finds: a misspelt optional
    // parameter and a body property of another operation.
    assert_eq!(
        undeclared_inputs(
            &document,
            "POST",
            users,
            &["name", "addToDefaultGroups"],
            None
        ),
        ["POST /rest/api/1.0/admin/users: query parameter addToDefaultGroups is not declared"]
    );
    let body = serde_json::json!({"name": "dave", "newName": "david"});
    assert_eq!(
        undeclared_inputs(&document, "PUT", users, &[], Some(&body)),
        ["PUT /rest/api/1.0/admin/users: body property newName is not declared"]
    );
}

/// The licence read of [`Directory::seats`] conforms to the document ("Get license details",
/// `GET /api/latest/admin/license`), and the emulator's `RestBitbucketLicense` answer too.
#[tokio::test]
async fn the_licence_request_of_the_bitbucket_client_conforms_to_the_openapi_document() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("alice")],
            groups: vec![seed_group("stash-users")],
            memberships: vec![seed_membership("stash-users", "alice")],
        },
    );
    config.license_seats = Some(10);
    let emulator = spawn(config).await;
    let (prism, _) = prism_in_front_of(&emulator).await;
    let mut connection = connection(&emulator);
    connection.endpoint = prism.url().parse().unwrap();
    let client = bitbucket_with(connection);

    let seats = client.seats().await.unwrap();

    assert_eq!(
        seats,
        Some(atlassian::Seats {
            used: 1,
            limit: Some(10)
        })
    );
    let report = prism.report().unwrap();
    assert_eq!(report.requests, ["GET /rest/api/1.0/admin/license"]);
    let violations: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
