//! Who may do what in the emulated products: Bitbucket refusing HTTP access tokens on its
//! admin endpoints, each seeded caller's rights (Jira `mypermissions`, Confluence's
//! admin-only listing, Bitbucket's global permissions), and Jira 10.1's capped search.

use std::io::{Read, Write};

use base64::Engine;
use emulator::store::{GlobalPermission, Seed, SeedAccount, SeedCaller, SeedGroup};
use emulator::store::{SeedMembership, SeedPermission};
use emulator::{Config, JiraVersion, Product, Running};
use serde_json::Value;

fn account(login: &str) -> SeedAccount {
    SeedAccount {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: format!("{login}@example.com"),
        active: true,
        read_only: false,
    }
}

/// `product` with the accounts `boss` (in `admin_group`) and `svc`, both signing in with the
/// password `pw`.
fn config(product: Product, admin_group: &str) -> Config {
    let mut config = Config::for_tests(product);
    config.seed = Seed {
        accounts: vec![account("boss"), account("svc")],
        groups: vec![SeedGroup {
            name: admin_group.to_owned(),
            deletable: true,
        }],
        memberships: vec![SeedMembership {
            group: admin_group.to_owned(),
            login: "boss".to_owned(),
        }],
    };
    config.callers = vec![
        SeedCaller::with_password("boss", "pw"),
        SeedCaller::with_password("svc", "pw"),
    ];
    config
}

async fn spawn(config: Config) -> Running {
    emulator::spawn(config).await.expect("the emulator starts")
}

fn basic(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {pair}\r\n")
}

const TOKEN: &str = "Authorization: Bearer test-token\r\n";

/// Sends one HTTP/1.1 request (with `auth` as a header line, or none) and answers the
/// status and the JSON body (`null` when empty).
async fn call(emulator: &Running, method: &str, path: &str, auth: &str) -> (u16, Value) {
    let addr = emulator.addr();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connects");
        stream.write_all(request.as_bytes()).expect("sends");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        response
    })
    .await
    .expect("the request task ends");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("a JSON body")
    };
    (status.expect("a status line"), body)
}

/// Bitbucket's authorisation failure: 401 with an `AuthorisationException`.
fn assert_not_permitted((status, body): (u16, Value)) {
    assert_eq!(status, 401, "{body}");
    let error = &body["errors"][0];
    assert_eq!(
        error["exceptionName"], "com.atlassian.bitbucket.AuthorisationException",
        "{body}"
    );
    assert_eq!(
        error["message"],
        "You are not permitted to access this resource"
    );
}

#[tokio::test]
async fn bitbucket_refuses_http_access_tokens_on_admin_endpoints_and_takes_basic_auth() {
    let emulator = spawn(Config::for_tests(Product::Bitbucket)).await;
    let admin = basic("admin", "admin");

    for (method, path) in [
        ("GET", "/rest/api/1.0/admin/users"),
        ("GET", "/rest/api/latest/admin/groups"),
        ("POST", "/rest/api/1.0/admin/groups?name=made-with-a-token"),
        ("GET", "/rest/api/1.0/admin/permissions/users"),
    ] {
        assert_not_permitted(call(&emulator, method, path, TOKEN).await);
    }
    let (status, _) = call(&emulator, "GET", "/rest/api/1.0/admin/users", &admin).await;
    let (properties, _) = call(
        &emulator,
        "GET",
        "/rest/api/1.0/application-properties",
        TOKEN,
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(properties, 200, "a token works outside the admin endpoints");
    assert!(emulator.state().dump().groups.is_empty());
}

#[tokio::test]
async fn bitbucket_answers_each_caller_by_its_highest_global_permission() {
    let mut config = config(Product::Bitbucket, "bb-admins");
    config.permissions = vec![
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
        SeedPermission::user("svc", GlobalPermission::LicensedUser),
    ];
    let emulator = spawn(config).await;
    let (svc, boss) = (basic("svc", "pw"), basic("boss", "pw"));

    let (listing, _) = call(&emulator, "GET", "/rest/api/1.0/admin/users", &svc).await;
    let permissions = call(
        &emulator,
        "GET",
        "/rest/api/1.0/admin/permissions/users",
        &svc,
    );
    assert_not_permitted(permissions.await);
    assert_not_permitted(call(&emulator, "POST", "/rest/api/1.0/admin/groups?name=g", &svc).await);
    let (created, _) = call(
        &emulator,
        "POST",
        "/rest/api/1.0/admin/groups?name=g",
        &boss,
    )
    .await;
    let (wrong, _) = call(
        &emulator,
        "GET",
        "/rest/api/1.0/admin/users",
        &basic("svc", "x"),
    )
    .await;

    assert_eq!(listing, 200, "LICENSED_USER may list users");
    assert_eq!(created, 200, "ADMIN through a group may create groups");
    assert_eq!(wrong, 401);
}

#[tokio::test]
async fn jira_mypermissions_answers_what_each_caller_holds() {
    let emulator = spawn(config(Product::Jira, "jira-administrators")).await;
    let path = "/rest/api/2/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN";
    let held = |body: &Value| {
        (
            body["permissions"]["ADMINISTER"]["havePermission"].clone(),
            body["permissions"]["SYSTEM_ADMIN"]["havePermission"].clone(),
        )
    };

    let (_, admin) = call(&emulator, "GET", path, &basic("admin", "admin")).await;
    let (_, boss) = call(&emulator, "GET", path, &basic("boss", "pw")).await;
    let (_, svc) = call(&emulator, "GET", path, &basic("svc", "pw")).await;
    let (_, nobody) = call(&emulator, "GET", path, "").await;
    let (create, _) = call(&emulator, "POST", "/rest/api/2/group", &basic("svc", "pw")).await;

    assert_eq!(held(&admin), (Value::Bool(true), Value::Bool(true)));
    assert_eq!(held(&boss), (Value::Bool(true), Value::Bool(false)));
    assert_eq!(held(&svc), (Value::Bool(false), Value::Bool(false)));
    assert_eq!(held(&nobody), (Value::Bool(false), Value::Bool(false)));
    assert_eq!(admin["permissions"]["ADMINISTER"]["type"], "GLOBAL");
    assert_eq!(
        admin["permissions"].as_object().map(|keys| keys.len()),
        Some(2)
    );
    assert_eq!(create, 403, "a write needs ADMINISTER");
}

#[tokio::test]
async fn confluence_lists_active_users_to_administrators_only() {
    let emulator = spawn(config(Product::Confluence, "confluence-administrators")).await;
    let path = "/rest/api/admin/users/list/active?limit=1";

    let (boss, page) = call(&emulator, "GET", path, &basic("boss", "pw")).await;
    let (svc, _) = call(&emulator, "GET", path, &basic("svc", "pw")).await;
    let (current, me) = call(
        &emulator,
        "GET",
        "/rest/api/user/current",
        &basic("svc", "pw"),
    )
    .await;

    assert_eq!(boss, 200);
    assert_eq!(page["size"], 1);
    assert!(page["_links"]["next"].is_string(), "{page}");
    assert_eq!(svc, 403);
    assert_eq!((current, me["username"].clone()), (200, Value::from("svc")));
}

#[tokio::test]
async fn jira_10_1_has_no_user_list_and_caps_the_search_at_100_whatever_start_at_says() {
    let mut config = Config::for_tests(Product::Jira);
    config.jira_version = JiraVersion::V10_1;
    config.seed.accounts = (0..150).map(|idx| account(&format!("u{idx:03}"))).collect();
    let emulator = spawn(config).await;
    let admin = basic("admin", "admin");
    let search = "/rest/api/2/user/search?username=.&maxResults=1000";

    let (list, _) = call(&emulator, "GET", "/rest/api/2/user/list", &admin).await;
    let (_, first) = call(&emulator, "GET", &format!("{search}&startAt=0"), &admin).await;
    let (_, again) = call(&emulator, "GET", &format!("{search}&startAt=100"), &admin).await;
    let (_, info) = call(&emulator, "GET", "/rest/api/2/serverInfo", "").await;

    assert_eq!(list, 404);
    assert_eq!(first.as_array().map(Vec::len), Some(100));
    assert_eq!(again, first, "startAt is ignored");
    assert_eq!(info["version"], "10.1.0");
}

#[tokio::test]
async fn a_caller_must_name_an_account_of_the_seed() {
    let mut config = Config::for_tests(Product::Jira);
    config.callers = vec![SeedCaller::with_token("ghost", "t")];

    let error = emulator::spawn(config)
        .await
        .expect_err("an unknown caller");

    assert!(error.to_string().contains("ghost"), "{error}");
}
