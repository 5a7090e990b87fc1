//! Bitbucket's global permissions in the emulator: the two documented listings over HTTP
//! (shape, paging, `filter`, 401), seeding them through the config and the JSON seed, and
//! refusing seeds that cannot be.

use std::io::{Read, Write};

use emulator::store::{GlobalPermission, Seed, SeedAccount, SeedGroup, SeedMembership};
use emulator::store::{SeedPermission, StateHandle};
use emulator::{Config, Product, Running};
use serde_json::{Value, json};

/// `admin:admin`, the test credentials of [`Config::for_tests`].
const BASIC: &str = "Authorization: Basic YWRtaW46YWRtaW4=\r\n";

fn account(login: &str) -> SeedAccount {
    SeedAccount {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: format!("{login}@example.com"),
        active: true,
        read_only: false,
    }
}

fn group(name: &str) -> SeedGroup {
    SeedGroup {
        name: name.to_owned(),
        deletable: true,
    }
}

/// `ops-admin` (SYS_ADMIN), `dev` (PROJECT_CREATE), `lead` (none, in `bb-admins`);
/// `bb-admins` (ADMIN), `stash-users` (LICENSED_USER).
fn bitbucket() -> Config {
    let mut config = Config::for_tests(Product::Bitbucket);
    config.seed = Seed {
        accounts: vec![account("ops-admin"), account("dev"), account("lead")],
        groups: vec![group("stash-users"), group("bb-admins")],
        memberships: vec![SeedMembership {
            group: "bb-admins".to_owned(),
            login: "lead".to_owned(),
        }],
    };
    config.permissions = vec![
        SeedPermission::user("ops-admin", GlobalPermission::SysAdmin),
        SeedPermission::user("dev", GlobalPermission::ProjectCreate),
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
        SeedPermission::group("stash-users", GlobalPermission::LicensedUser),
    ];
    config
}

async fn spawn(config: Config) -> Running {
    emulator::spawn(config).await.expect("the emulator starts")
}

/// Sends one HTTP/1.1 request (with `auth` as a header line, or none) and answers the
/// status and the JSON body (`null` when empty).
async fn call(
    emulator: &Running,
    method: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> (u16, Value) {
    let addr = emulator.addr();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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

async fn get(emulator: &Running, path: &str) -> Value {
    let (status, body) = call(emulator, "GET", path, BASIC, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// `(holder, permission)` of every entry of a listing page.
fn entries(page: &Value, holder: &str) -> Vec<(String, String)> {
    page["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|entry| {
            let name = entry[holder]["name"].as_str().expect("a name").to_owned();
            let permission = entry["permission"].as_str().expect("a permission");
            (name, permission.to_owned())
        })
        .collect()
}

fn permissions(state: &StateHandle) -> Vec<Value> {
    let dump = serde_json::to_value(state.dump()).expect("the dump serializes");
    dump["permissions"].as_array().expect("permissions").clone()
}

#[tokio::test]
async fn users_with_a_global_permission_are_listed_by_name_in_pages_with_their_permission() {
    let emulator = spawn(bitbucket()).await;
    let users = "/rest/api/latest/admin/permissions/users";

    let first = get(&emulator, &format!("{users}?limit=1")).await;
    let second = get(&emulator, &format!("{users}?start=1&limit=1")).await;
    let filtered = get(&emulator, &format!("{users}?filter=OPS")).await;

    let pair = |name: &str, permission: &str| (name.to_owned(), permission.to_owned());
    assert_eq!(entries(&first, "user"), [pair("dev", "PROJECT_CREATE")]);
    assert_eq!(
        (
            &first["isLastPage"],
            &first["nextPageStart"],
            &first["size"]
        ),
        (&json!(false), &json!(1), &json!(1))
    );
    let user = &second["values"][0]["user"];
    assert_eq!(
        (&user["slug"], &user["emailAddress"], &user["type"]),
        (
            &json!("ops-admin"),
            &json!("ops-admin@example.com"),
            &json!("NORMAL")
        ),
        "a RestApplicationUser"
    );
    assert_eq!(entries(&second, "user"), [pair("ops-admin", "SYS_ADMIN")]);
    assert_eq!(second["isLastPage"], json!(true));
    assert!(second.get("nextPageStart").is_none(), "{second}");
    assert_eq!(entries(&filtered, "user"), [pair("ops-admin", "SYS_ADMIN")]);
}

#[tokio::test]
async fn groups_with_a_global_permission_are_listed_under_both_api_prefixes() {
    let emulator = spawn(bitbucket()).await;

    let latest = get(&emulator, "/rest/api/latest/admin/permissions/groups").await;
    let v1 = get(
        &emulator,
        "/rest/api/1.0/admin/permissions/groups?filter=admins",
    )
    .await;

    let pair = |name: &str, permission: &str| (name.to_owned(), permission.to_owned());
    assert_eq!(
        entries(&latest, "group"),
        [
            pair("bb-admins", "ADMIN"),
            pair("stash-users", "LICENSED_USER")
        ]
    );
    assert_eq!(latest["isLastPage"], json!(true));
    assert_eq!(entries(&v1, "group"), [pair("bb-admins", "ADMIN")]);
}

#[tokio::test]
async fn the_permission_listings_answer_an_anonymous_caller_401_in_bitbucket_shape() {
    let emulator = spawn(bitbucket()).await;

    for path in [
        "/rest/api/latest/admin/permissions/users",
        "/rest/api/latest/admin/permissions/groups",
    ] {
        let (status, body) = call(&emulator, "GET", path, "", "").await;

        assert_eq!(status, 401, "{path}");
        assert!(body["errors"][0]["exceptionName"].is_string(), "{body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn a_json_seed_grants_permissions_and_a_reset_restores_the_configured_ones() {
    let emulator = spawn(bitbucket()).await;
    let seed = json!({
        "accounts": [{"login": "root", "display_name": "Root", "email": "root@example.com"}],
        "groups": [{"name": "bb-admins"}],
        "permissions": [
            {"user": "root", "permission": "SYS_ADMIN"},
            {"group": "bb-admins", "permission": "ADMIN"}
        ]
    });
    let old_format = json!({"accounts": [], "groups": [{"name": "developers"}]});

    let (seeded, _) = call(&emulator, "POST", "/_emulator/seed", "", &seed.to_string()).await;
    let after_seed = permissions(emulator.state());
    let (reset, _) = call(&emulator, "POST", "/_emulator/reset", "", "").await;
    let after_reset = permissions(emulator.state());
    let body = old_format.to_string();
    let (old, _) = call(&emulator, "POST", "/_emulator/seed", "", &body).await;

    assert_eq!((seeded, reset, old), (204, 204, 204));
    assert_eq!(
        after_seed,
        [
            json!({"user": "root", "permission": "SYS_ADMIN"}),
            json!({"group": "bb-admins", "permission": "ADMIN"})
        ]
    );
    assert_eq!(after_reset.len(), 4);
    assert!(permissions(emulator.state()).is_empty());
    let (status, body) = call(&emulator, "POST", "/_emulator/seed", "", "{\"perms\":[]}").await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");
}

#[tokio::test]
async fn deleting_a_user_or_a_group_takes_its_permission_with_it() {
    let emulator = spawn(bitbucket()).await;

    let (user, _) = call(
        &emulator,
        "DELETE",
        "/rest/api/1.0/admin/users?name=ops-admin",
        BASIC,
        "",
    )
    .await;
    let (group, _) = call(
        &emulator,
        "DELETE",
        "/rest/api/1.0/admin/groups?name=bb-admins",
        BASIC,
        "",
    )
    .await;

    assert_eq!((user, group), (200, 200));
    assert_eq!(
        permissions(emulator.state()),
        [
            json!({"user": "dev", "permission": "PROJECT_CREATE"}),
            json!({"group": "stash-users", "permission": "LICENSED_USER"})
        ]
    );
}

#[tokio::test]
async fn seeds_with_permissions_that_cannot_be_are_refused() {
    let mut jira = Config::for_tests(Product::Jira);
    jira.seed = bitbucket().seed;
    jira.permissions = vec![SeedPermission::user("dev", GlobalPermission::Admin)];
    assert!(emulator::spawn(jira).await.is_err(), "Jira has none");

    let emulator = spawn(bitbucket()).await;
    let seed = bitbucket().seed;
    let both = SeedPermission {
        group: Some("bb-admins".to_owned()),
        ..SeedPermission::user("dev", GlobalPermission::Admin)
    };
    let refused = [
        vec![SeedPermission::user("ghost", GlobalPermission::Admin)],
        vec![SeedPermission::group("nowhere", GlobalPermission::Admin)],
        vec![both],
        vec![
            SeedPermission::user("dev", GlobalPermission::Admin),
            SeedPermission::user("DEV", GlobalPermission::SysAdmin),
        ],
    ];
    for permissions in refused {
        let result = emulator.state().seed_with(&seed, &permissions);
        assert!(result.is_err(), "{permissions:?}");
    }
    assert_eq!(
        permissions(emulator.state()).len(),
        4,
        "a refused seed changes nothing"
    );
}
