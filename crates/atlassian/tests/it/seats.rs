//! Licence seats as each product reports them: Bitbucket's `admin/license` and Confluence's
//! licence REST module, read by [`Directory::seats`] and with the rest of
//! [`Directory::fetch_state`], against the emulators' seeded accounts and
//! `Config::license_seats`; and a product without a licence to report (404), served by a
//! stub that answers every request with 404.

use std::io::{Read, Write};
use std::net::TcpListener;

use atlassian::{AccountRef, Directory, Error, Seats};
use emulator::store::{GlobalPermission, Seed, SeedCaller, SeedPermission};
use emulator::{Config, Product};

use crate::helpers::*;

/// Bitbucket: alice is in `stash-users`, ops in a group holding `ADMIN`, bob in neither
/// (no licence); ops may sign in with `ops-pw`, and bob with `bob-pw`.
fn bitbucket_directory(license_seats: Option<usize>) -> Config {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: ["alice", "bob", "ops"].map(seed_account).to_vec(),
            groups: ["stash-users", "developers", "bb-admins"]
                .map(seed_group)
                .to_vec(),
            memberships: vec![
                seed_membership("stash-users", "alice"),
                seed_membership("developers", "bob"),
                seed_membership("bb-admins", "ops"),
            ],
        },
    );
    config.permissions = vec![
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
        SeedPermission::group("stash-users", GlobalPermission::LicensedUser),
    ];
    config.callers = vec![
        SeedCaller::with_password("ops", "ops-pw"),
        SeedCaller::with_password("bob", "bob-pw"),
    ];
    config.license_seats = license_seats;
    config
}

/// Confluence: alice and bob active, carol deactivated (she takes no seat); carol may sign
/// in with `carol-pw`, without administrator rights.
fn confluence_directory(license_seats: Option<usize>) -> Config {
    let mut carol = seed_account("carol");
    carol.active = false;
    let mut config = seeded(
        Product::Confluence,
        Seed {
            accounts: vec![seed_account("alice"), seed_account("bob"), carol],
            ..Seed::default()
        },
    );
    config.license_seats = license_seats;
    config
}

#[tokio::test]
async fn bitbucket_reports_the_licensed_accounts_and_the_licence_limit() {
    let emulator = spawn(bitbucket_directory(Some(5))).await;
    let client = bitbucket(&emulator);

    let before = client.fetch_state().await.unwrap();
    client.create_account(&new_account("dave")).await.unwrap();
    let after = client.seats().await.unwrap();

    // alice (stash-users) and ops (ADMIN through bb-admins); not bob.
    assert_eq!(
        before.seats,
        Some(Seats {
            used: 2,
            limit: Some(5)
        })
    );
    assert_eq!(before.accounts.len(), 3);
    // dave joined the default group, and with it a licence.
    assert_eq!(
        after,
        Some(Seats {
            used: 3,
            limit: Some(5)
        })
    );
}

#[tokio::test]
async fn bitbucket_without_a_user_limit_reports_an_unlimited_licence() {
    let emulator = spawn(bitbucket_directory(None)).await;
    let client = bitbucket(&emulator);
    let bob = AccountRef {
        id: "bob",
        login: "bob",
    };

    let before = client.fetch_state().await.unwrap();
    client.add_member("stash-users", bob).await.unwrap();
    let after = client.seats().await.unwrap();

    assert_eq!(
        before.seats,
        Some(Seats {
            used: 2,
            limit: None
        })
    );
    assert_eq!(
        after,
        Some(Seats {
            used: 3,
            limit: None
        })
    );
}

#[tokio::test]
async fn bitbucket_licence_needs_admin_and_an_admin_who_is_not_sys_admin_may_read_it() {
    let emulator = spawn(bitbucket_directory(Some(5))).await;
    let admin = bitbucket_with(connection_with(&emulator, basic("ops", "ops-pw")));
    let licensed_user = bitbucket_with(connection_with(&emulator, basic("bob", "bob-pw")));

    let seats = admin.seats().await.unwrap();
    let error = licensed_user.seats().await.unwrap_err();

    assert_eq!(seats.map(|seats| seats.used), Some(2));
    assert!(
        matches!(
            error,
            Error::MissingPermission {
                status: 401,
                permission: "ADMIN (global)",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn confluence_reports_the_active_accounts_and_the_licence_limit() {
    let emulator = spawn(confluence_directory(Some(10))).await;
    let client = confluence(&emulator);

    let before = client.fetch_state().await.unwrap();
    let created = client.create_account(&new_account("dave")).await.unwrap();
    let with_dave = client.seats().await.unwrap();
    let dave = AccountRef {
        id: &created.id,
        login: "dave",
    };
    client.deactivate_account(dave).await.unwrap();
    let without_dave = client.seats().await.unwrap();

    // alice and bob; carol is deactivated.
    assert_eq!(
        before.seats,
        Some(Seats {
            used: 2,
            limit: Some(10)
        })
    );
    assert_eq!(before.accounts.len(), 3);
    assert_eq!(
        with_dave,
        Some(Seats {
            used: 3,
            limit: Some(10)
        })
    );
    assert_eq!(without_dave, before.seats);
}

#[tokio::test]
async fn confluence_without_a_user_limit_reports_an_unlimited_licence() {
    let emulator = spawn(confluence_directory(None)).await;
    let client = confluence(&emulator);

    let before = client.fetch_state().await.unwrap();
    client.create_account(&new_account("dave")).await.unwrap();
    let after = client.seats().await.unwrap();

    // The module answers Integer.MAX_VALUE for an unlimited licence.
    assert_eq!(
        before.seats,
        Some(Seats {
            used: 2,
            limit: None
        })
    );
    assert_eq!(
        after,
        Some(Seats {
            used: 3,
            limit: None
        })
    );
}

#[tokio::test]
async fn confluence_licence_module_is_for_administrators() {
    let mut config = confluence_directory(Some(10));
    config.seed.accounts[2].active = true;
    config.callers = vec![SeedCaller::with_password("carol", "carol-pw")];
    let emulator = spawn(config).await;
    let client = confluence_with(connection_with(&emulator, basic("carol", "carol-pw")));

    let error = client.seats().await.unwrap_err();

    assert!(
        matches!(error, Error::Forbidden { status: 403, .. }),
        "{error:?}"
    );
}

/// A server that answers every request with 404 and `body`, on its own thread, until the
/// test process ends; its base URL.
fn answering_404(body: &'static str) -> url::Url {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the head of the request (a GET has no body), then answer and close.
            let mut head = Vec::new();
            let mut buffer = [0_u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url::Url::parse(&format!("http://{address}/")).expect("a valid URL")
}

#[tokio::test]
async fn bitbucket_without_a_licence_installed_reports_no_seats() {
    let endpoint = answering_404(
        r#"{"errors":[{"context":null,"message":"No license has been installed.","exceptionName":null}]}"#,
    );
    let client = bitbucket_with(atlassian::config::Connection::new(
        endpoint,
        basic("admin", "admin"),
    ));

    assert_eq!(client.seats().await.unwrap(), None);
}

#[tokio::test]
async fn confluence_without_the_licence_module_reports_no_seats() {
    let endpoint = answering_404(
        r#"{"statusCode":404,"data":{"authorized":true,"valid":true,"errors":[],"successful":false},"message":"null for uri","reason":"Not Found"}"#,
    );
    let client = confluence_with(atlassian::config::Connection::new(
        endpoint,
        basic("admin", "admin"),
    ));

    assert_eq!(client.seats().await.unwrap(), None);
}
