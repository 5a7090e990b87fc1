//! Admin and user events: against a real Keycloak (what edits come back as, watermarks
//! that neither lose nor repeat, gaps, the events configuration check, the role) and the
//! pure rules (watermarks, de-duplication, what each event path touches).

use std::collections::BTreeSet;

use keycloak::{
    Error,
    client::Client,
    events::{
        AdminEvent, AdminEventsExpiration, Event as _, EventsConfig, Touched, USER_EVENT_TYPES,
        UserEvent, Watermark, check_events_config, expiration_gap, gap, new_events,
    },
};
use reqwest::Method;
use serde_json::json;
use test_support::keycloak::{Keycloak, RealmSpec, TestRealm, UserSpec};

use crate::helpers::settings;

/// Turns on admin events with details and user events of the types keysync reads.
pub(crate) async fn enable_events(realm: &TestRealm<'_>) -> anyhow::Result<()> {
    realm.save_events(&USER_EVENT_TYPES).await
}

pub(crate) async fn create_user(realm: &TestRealm<'_>, username: &str) -> anyhow::Result<String> {
    realm
        .admin(
            Method::POST,
            "users",
            Some(&json!({ "username": username, "enabled": true })),
        )
        .await?;
    realm.user_id(username).await
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// What the read relies on (Keycloak 26.2+): `dateFrom` in epoch ms, inclusive, and
/// `direction=asc`; `count` events from `from` on.
async fn assert_pages_by_epoch_ms_ascending(
    realm: &TestRealm<'_>,
    from: i64,
    count: usize,
) -> anyhow::Result<()> {
    let raw = realm
        .admin(
            Method::GET,
            &format!("admin-events?dateFrom={from}&direction=asc&max=100"),
            None,
        )
        .await?;
    let times: Vec<i64> = raw
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|event| event["time"].as_i64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(times.len(), count, "{raw}");
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert!(times.iter().all(|time| *time >= from), "{times:?}");
    Ok(())
}

#[tokio::test]
async fn admin_events_since_a_watermark_name_exactly_what_changed() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .group("/staff")
                .user(UserSpec::new("ann").member_of("/staff")),
        )
        .await?;
    enable_events(&realm).await?;
    let mut settings = settings(&realm);
    // Pages of two events: the reads below page.
    settings.page_size = 2;
    let client = Client::new(settings)?;
    let ann = realm.user_id("ann").await?;
    let staff = realm.group_id("/staff").await?;

    // The first read: everything stored, and a full sync (no watermark yet).
    let start = client.admin_events_since(&Watermark::default()).await?;
    assert!(start.complete);
    assert!(start.gap.is_some(), "{start:?}");
    assert!(start.touched().full_sync.is_some());
    // Turning events on was the one event, and it asks for a full sync by itself.
    assert!(
        start
            .events
            .iter()
            .any(|event| event.resource_type.as_deref() == Some("REALM")),
        "{start:?}"
    );
    let at_start = start.watermark.clone();
    assert!(at_start.time.is_some() && !at_start.keys.is_empty());

    // First edits.
    let bob = create_user(&realm, "bob").await?;
    realm
        .admin(
            Method::PUT,
            &format!("users/{bob}"),
            Some(&json!({ "email": "bob@example.org" })),
        )
        .await?;
    let carl = create_user(&realm, "carl").await?;
    let middle = client.admin_events_since(&at_start).await?;
    assert_eq!(middle.events.len(), 3, "{middle:?}");
    assert_eq!(
        middle.touched(),
        Touched {
            users: set(&[&bob, &carl]),
            ..Touched::default()
        }
    );
    let at_middle = middle.watermark.clone();

    // Later edits: memberships, groups, a deleted user.
    realm
        .admin(Method::PUT, &format!("users/{bob}/groups/{staff}"), None)
        .await?;
    realm
        .admin(Method::DELETE, &format!("users/{ann}/groups/{staff}"), None)
        .await?;
    realm
        .admin(
            Method::POST,
            "groups",
            Some(&json!({ "name": "temporary" })),
        )
        .await?;
    let temporary = realm.group_id("/temporary").await?;
    realm
        .admin(
            Method::POST,
            &format!("groups/{staff}/children"),
            Some(&json!({ "name": "sub" })),
        )
        .await?;
    realm
        .admin(Method::DELETE, &format!("users/{ann}"), None)
        .await?;
    realm
        .admin(Method::DELETE, &format!("groups/{temporary}"), None)
        .await?;

    let later = client.admin_events_since(&at_middle).await?;
    assert!(later.complete && later.gap.is_none(), "{later:?}");
    assert_eq!(later.events.len(), 6, "{later:?}");
    assert_eq!(
        later.touched(),
        Touched {
            users: set(&[&bob, &ann]),
            groups: set(&[&staff, &temporary]),
            full_sync: None,
        }
    );
    let since_start = client.admin_events_since(&at_start).await?;
    assert_eq!(since_start.events.len(), 9);
    assert_eq!(
        since_start.touched(),
        Touched {
            users: set(&[&bob, &carl, &ann]),
            groups: set(&[&staff, &temporary]),
            full_sync: None,
        }
    );
    assert_eq!(since_start.watermark, later.watermark);
    assert!(
        since_start
            .events
            .windows(2)
            .all(|pair| pair[0].time <= pair[1].time)
    );

    let from = later
        .events
        .first()
        .map(|event| event.time)
        .unwrap_or_default();
    assert_pages_by_epoch_ms_ascending(&realm, from, 6).await?;

    // Nothing new since the last watermark: nothing read, nothing lost.
    let again = client.admin_events_since(&later.watermark).await?;
    assert!(again.events.is_empty() && again.complete && again.gap.is_none());
    assert_eq!(again.watermark, later.watermark);
    assert!(again.touched().is_empty());

    // Events cleared: the watermark's own events are gone, so events may be lost.
    realm.admin(Method::DELETE, "admin-events", None).await?;
    let cleared = client.admin_events_since(&later.watermark).await?;
    assert!(cleared.gap.is_some(), "{cleared:?}");
    assert!(cleared.touched().full_sync.is_some());
    Ok(())
}

#[tokio::test]
async fn user_events_are_read_with_the_type_filter() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(RealmSpec::default()).await?;
    enable_events(&realm).await?;
    // Save the service account's logins too: `CLIENT_LOGIN` events, not asked for.
    let mut config = realm.admin(Method::GET, "events/config", None).await?;
    let mut types = USER_EVENT_TYPES.to_vec();
    types.push("CLIENT_LOGIN");
    config["enabledEventTypes"] = json!(types);
    realm
        .admin(Method::PUT, "events/config", Some(&config))
        .await?;
    let client = Client::new(settings(&realm))?;
    client.events_config().await?;
    let stored = realm
        .admin(Method::GET, "events?type=CLIENT_LOGIN", None)
        .await?;
    assert!(
        stored.as_array().is_some_and(|events| !events.is_empty()),
        "{stored}"
    );
    let first = client.user_events_since(&Watermark::default()).await?;
    assert!(first.events.is_empty(), "{first:?}");
    assert!(first.complete);
    assert!(first.gap.is_some(), "the first start is a gap");
    Ok(())
}

/// A user changes their own profile through the account API: an `UPDATE_PROFILE` user
/// event, no admin event.
#[tokio::test]
async fn a_profile_update_by_the_user_is_a_user_event() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(RealmSpec::default()).await?;
    enable_events(&realm).await?;
    realm
        .admin(
            Method::POST,
            "users",
            Some(&json!({
                "username": "dora",
                "enabled": true,
                "email": "dora@example.org",
                "emailVerified": true,
                "firstName": "Dora",
                "lastName": "Explorer",
                "credentials": [{ "type": "password", "value": "pw-dora-1", "temporary": false }],
            })),
        )
        .await?;
    let dora = realm.user_id("dora").await?;
    let client = Client::new(settings(&realm))?;
    // No user event yet: the first read is a gap, and leaves a watermark that is not.
    let start = client.user_events_since(&Watermark::default()).await?;
    assert!(start.events.is_empty() && start.gap.is_some(), "{start:?}");
    assert_eq!(start.watermark, Watermark::at(0));

    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!(
            "{}/realms/{}/protocol/openid-connect/token",
            realm.base_url(),
            realm.name()
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "dora"),
            ("password", "pw-dora-1"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let access = token["access_token"].as_str().unwrap_or_default();
    http.post(format!(
        "{}/realms/{}/account/",
        realm.base_url(),
        realm.name()
    ))
    .bearer_auth(access)
    .json(&json!({
        "username": "dora",
        "email": "dora@example.org",
        "firstName": "Dora",
        "lastName": "Renamed",
    }))
    .send()
    .await?
    .error_for_status()?;

    let batch = client.user_events_since(&start.watermark).await?;
    assert!(batch.gap.is_none(), "{batch:?}");
    assert!(
        batch
            .events
            .iter()
            .any(|event| event.event_type.as_deref() == Some("UPDATE_PROFILE")),
        "{batch:?}"
    );
    assert_eq!(batch.touched().users, set(&[&dora]));
    Ok(())
}

#[tokio::test]
async fn events_config_check_names_what_is_off_and_how_to_turn_it_on() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(RealmSpec::default()).await?;
    let client = Client::new(settings(&realm))?;
    let problems = check_events_config(&client.events_config().await?);
    let settings: Vec<&str> = problems.iter().map(|problem| problem.setting).collect();
    assert!(settings.contains(&"adminEventsEnabled"), "{problems:?}");
    assert!(settings.contains(&"eventsEnabled"), "{problems:?}");
    let admin = problems
        .iter()
        .find(|problem| problem.setting == "adminEventsEnabled")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        admin.contains("Admin events settings") && admin.contains("Save events"),
        "{admin}"
    );

    enable_events(&realm).await?;
    let config = client.events_config().await?;
    assert_eq!(check_events_config(&config), Vec::new(), "{config:?}");
    Ok(())
}

#[tokio::test]
async fn events_need_view_events_and_the_expiration_view_realm() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let without = keycloak
        .create_realm(RealmSpec::default().client_roles(&["view-users", "query-groups"]))
        .await?;
    let client = Client::new(settings(&without))?;
    let error = client
        .admin_events_since(&Watermark::default())
        .await
        .expect_err("no view-events");
    assert!(
        matches!(
            &error,
            Error::MissingRole {
                role: "view-events",
                ..
            }
        ),
        "{error:?}"
    );
    let error = client.events_config().await.expect_err("no view-events");
    assert!(
        matches!(
            &error,
            Error::MissingRole {
                role: "view-events",
                ..
            }
        ),
        "{error:?}"
    );
    // Without `view-realm` the realm's attributes are not shown.
    assert_eq!(
        client.admin_events_expiration().await?,
        AdminEventsExpiration::Unknown
    );

    let with = keycloak
        .create_realm(RealmSpec::default().client_roles(&["view-events", "view-realm"]))
        .await?;
    let client = Client::new(settings(&with))?;
    assert_eq!(
        client.admin_events_expiration().await?,
        AdminEventsExpiration::Never
    );
    keycloak
        .admin(
            Method::PUT,
            &format!("realms/{}", with.name()),
            Some(&json!({ "attributes": { "adminEventsExpiration": "3600" } })),
        )
        .await?;
    assert_eq!(
        client.admin_events_expiration().await?,
        AdminEventsExpiration::Seconds(3600)
    );
    Ok(())
}

// The pure rules.

fn admin(id: Option<&str>, time: i64, resource: &str, operation: &str, path: &str) -> AdminEvent {
    AdminEvent {
        id: id.map(str::to_owned),
        time,
        operation_type: Some(operation.to_owned()),
        resource_type: Some(resource.to_owned()),
        resource_path: Some(path.to_owned()),
        error: None,
    }
}

fn at(id: &str, time: i64) -> AdminEvent {
    admin(Some(id), time, "USER", "UPDATE", &format!("users/{id}"))
}

fn ids(events: &[AdminEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event.id.as_deref().unwrap_or("-"))
        .collect()
}

#[test]
fn events_in_the_watermarks_millisecond_are_neither_lost_nor_repeated() {
    let first = vec![at("a", 100), at("b", 100)];
    let watermark = Watermark::default().advanced(&first);
    assert_eq!(watermark.time, Some(100));
    assert_eq!(watermark.keys, set(&["id:a", "id:b"]));
    // Read again from 100 inclusive: `c` came in the same millisecond after the read.
    let read = vec![at("a", 100), at("b", 100), at("c", 100), at("d", 101)];
    let fresh = new_events(&watermark, read.clone());
    assert_eq!(ids(&fresh), ["c", "d"]);
    let watermark = watermark.advanced(&fresh);
    assert_eq!(watermark.time, Some(101));
    assert_eq!(watermark.keys, set(&["id:d"]));
    assert!(new_events(&watermark, read).is_empty());
}

#[test]
fn duplicate_and_out_of_order_events_are_handled_once_in_time_order() {
    let read = vec![
        at("d", 300),
        at("b", 200),
        at("d", 300),
        at("a", 100),
        at("c", 200),
        at("b", 200),
    ];
    let fresh = new_events(&Watermark::default(), read);
    assert_eq!(ids(&fresh), ["a", "b", "c", "d"]);
    // Advancing with events in any order gives the same watermark.
    let mut reversed = fresh.clone();
    reversed.reverse();
    assert_eq!(
        Watermark::default().advanced(&fresh),
        Watermark::default().advanced(&reversed)
    );
    // An event older than the watermark counts as handled.
    let watermark = Watermark::default().advanced(&fresh);
    assert!(new_events(&watermark, vec![at("late", 250)]).is_empty());
    assert!(!watermark.is_new(300, "id:d"));
    assert!(watermark.is_new(300, "id:e"));
}

#[test]
fn events_without_id_are_told_apart_by_time_type_and_path() {
    let create = admin(None, 100, "USER", "CREATE", "users/u1");
    let update = admin(None, 100, "USER", "UPDATE", "users/u1");
    let other = admin(None, 100, "USER", "UPDATE", "users/u2");
    let fresh = new_events(
        &Watermark::default(),
        vec![
            create.clone(),
            update.clone(),
            other.clone(),
            update.clone(),
        ],
    );
    assert_eq!(fresh.len(), 3);
    let watermark = Watermark::default().advanced(&fresh);
    assert!(new_events(&watermark, vec![create, update, other]).is_empty());
}

#[test]
fn the_watermark_is_serde_and_tolerates_an_empty_object() -> anyhow::Result<()> {
    let watermark = Watermark::default().advanced(&[at("a", 5)]);
    let text = serde_json::to_string(&watermark)?;
    assert_eq!(serde_json::from_str::<Watermark>(&text)?, watermark);
    assert_eq!(
        serde_json::from_str::<Watermark>("{}")?,
        Watermark::default()
    );
    Ok(())
}

#[test]
fn events_decode_without_id_and_never_read_the_representation() -> anyhow::Result<()> {
    let old: AdminEvent = serde_json::from_value(json!({
        "time": 1_700_000_000_000_i64,
        "realmId": "r",
        "authDetails": { "realmId": "master", "userId": "x" },
        "operationType": "CREATE",
        "resourceType": "USER",
        "resourcePath": "users/u1",
        "representation": "{\"id\": \"someone-else\", \"username\": \"evil\"}",
        "somethingNew": [1, 2],
    }))?;
    assert_eq!(old.id, None);
    assert_eq!(old.key(), "at:1700000000000:CREATE:USER:users/u1");
    assert_eq!(Touched::from_admin_events(&[old]).users, set(&["u1"]));
    let user: UserEvent = serde_json::from_value(json!({
        "id": "e1", "time": 1, "type": "REGISTER", "userId": "u2",
        "details": { "username": "x" },
    }))?;
    assert_eq!(user.key(), "id:e1");
    // `time` is required.
    assert!(serde_json::from_value::<AdminEvent>(json!({ "resourceType": "USER" })).is_err());
    Ok(())
}

fn touched(resource: &str, operation: &str, path: &str) -> Touched {
    Touched::from_admin_events(&[admin(None, 1, resource, operation, path)])
}

fn users(ids: &[&str]) -> Touched {
    Touched {
        users: set(ids),
        ..Touched::default()
    }
}

fn groups(ids: &[&str]) -> Touched {
    Touched {
        groups: set(ids),
        ..Touched::default()
    }
}

#[test]
fn each_admin_event_path_shape_touches_what_it_changed() {
    for operation in ["CREATE", "UPDATE", "DELETE"] {
        assert_eq!(touched("USER", operation, "users/u1"), users(&["u1"]));
        assert_eq!(touched("GROUP", operation, "groups/g1"), groups(&["g1"]));
    }
    assert_eq!(
        touched("USER", "ACTION", "users/u1/reset-password"),
        users(&["u1"])
    );
    for operation in ["CREATE", "DELETE"] {
        assert_eq!(
            touched("GROUP_MEMBERSHIP", operation, "users/u1/groups/g1"),
            users(&["u1"])
        );
    }
    // A child created or moved below a parent: the parent's subtree.
    for operation in ["CREATE", "UPDATE"] {
        assert_eq!(
            touched("GROUP", operation, "groups/p1/children"),
            groups(&["p1"])
        );
    }
    for resource in ["REALM_ROLE_MAPPING", "CLIENT_ROLE_MAPPING"] {
        assert_eq!(
            touched(resource, "CREATE", "users/u1/role-mappings/realm"),
            users(&["u1"])
        );
        assert_eq!(
            touched(resource, "DELETE", "groups/g1/role-mappings/clients/c1"),
            groups(&["g1"])
        );
    }
}

#[test]
fn events_that_can_change_anyone_ask_for_a_full_sync() {
    for (resource, path) in [
        ("GROUP", "groups"),
        ("REALM", "events/config"),
        ("REALM", ""),
        ("USER_FEDERATION_PROVIDER", "user-storage/c1/sync"),
        ("USER_FEDERATION_MAPPER", "user-federation/m1"),
        ("COMPONENT", "components/c1"),
        ("USER_PROFILE", "users/profile"),
        ("PARTIAL_IMPORT", "partialImport"),
        ("USER", "users"),
        ("GROUP_MEMBERSHIP", "users/u1/groups"),
    ] {
        let touched = touched(resource, "UPDATE", path);
        assert!(touched.users.is_empty() && touched.groups.is_empty());
        let why = touched.full_sync.unwrap_or_default();
        assert!(
            why.contains(resource) || why.contains("group"),
            "{resource}: {why}"
        );
    }
}

#[test]
fn other_admin_events_are_ignored() {
    for (resource, path) in [
        ("CLIENT", "clients/c1"),
        ("REALM_ROLE", "roles/admin"),
        ("CLIENT_ROLE", "clients/c1/roles/r"),
        ("USER_SESSION", "sessions/s1"),
        (
            "USER_LOGIN_FAILURE",
            "attack-detection/brute-force/users/u1",
        ),
        ("ORGANIZATION_MEMBERSHIP", "organizations/o1/members/u1"),
        ("REALM_ROLE_MAPPING", "clients/c1/scope-mappings/realm"),
        ("SOMETHING_NEW", "users/u1"),
    ] {
        assert!(touched(resource, "UPDATE", path).is_empty(), "{resource}");
    }
    let mut untyped = admin(None, 1, "USER", "CREATE", "users/u1");
    untyped.resource_type = None;
    assert!(Touched::from_admin_events(&[untyped]).is_empty());
}

#[test]
fn user_events_of_the_types_read_touch_their_user() {
    let event = |kind: &str, user: Option<&str>| UserEvent {
        id: None,
        time: 1,
        event_type: Some(kind.to_owned()),
        user_id: user.map(str::to_owned),
        session_id: None,
        error: None,
    };
    for kind in USER_EVENT_TYPES {
        assert_eq!(
            Touched::from_user_events(&[event(kind, Some("u1"))]),
            users(&["u1"]),
            "{kind}"
        );
    }
    assert!(Touched::from_user_events(&[event("LOGIN", Some("u1"))]).is_empty());
    assert!(Touched::from_user_events(&[event("UPDATE_PROFILE_ERROR", Some("u1"))]).is_empty());
    let orphan = Touched::from_user_events(&[event("REGISTER", None)]);
    assert!(orphan.full_sync.is_some());
}

#[test]
fn gaps_are_the_first_start_and_a_watermark_no_longer_stored() {
    assert!(gap(&Watermark::default(), false).is_some());
    let watermark = Watermark::default().advanced(&[at("a", 1_000)]);
    assert_eq!(gap(&watermark, true), None);
    assert!(gap(&watermark, false).is_some());
    // A watermark without keys (everything before a time) has nothing to look for.
    assert_eq!(gap(&Watermark::at(1_000), false), None);

    let now = 10_000_000;
    assert_eq!(expiration_gap(&watermark, None, now), None);
    assert_eq!(expiration_gap(&watermark, Some(0), now), None);
    assert_eq!(expiration_gap(&watermark, Some(100_000), now), None);
    assert!(expiration_gap(&watermark, Some(60), now).is_some());
    assert_eq!(expiration_gap(&watermark, Some(u64::MAX), now), None);
    assert_eq!(expiration_gap(&Watermark::default(), Some(60), now), None);

    let mut merged = Touched::default();
    merged.merge(users(&["u1"]));
    merged.require_full_sync("first");
    merged.require_full_sync("second");
    assert_eq!(merged.full_sync.as_deref(), Some("first"));
}

#[test]
fn the_events_config_check_lists_each_missing_setting() {
    let all_on = EventsConfig {
        events_enabled: true,
        events_expiration: None,
        enabled_event_types: Some(USER_EVENT_TYPES.map(str::to_owned).to_vec()),
        admin_events_enabled: Some(true),
        admin_events_details_enabled: Some(true),
    };
    assert!(check_events_config(&all_on).is_empty());
    assert_eq!(all_on.user_events_expiration(), None);
    let expiring = EventsConfig {
        events_expiration: Some(3600),
        ..all_on.clone()
    };
    assert_eq!(expiring.user_events_expiration(), Some(3600));
    assert_eq!(AdminEventsExpiration::Seconds(60).seconds(), Some(60));
    assert_eq!(AdminEventsExpiration::Unknown.seconds(), None);
    let off: EventsConfig =
        serde_json::from_value(json!({ "eventsEnabled": false })).unwrap_or_default();
    let settings: Vec<&str> = check_events_config(&off)
        .iter()
        .map(|problem| problem.setting)
        .collect();
    assert_eq!(
        settings,
        [
            "adminEventsEnabled",
            "adminEventsDetailsEnabled",
            "eventsEnabled",
            "enabledEventTypes"
        ]
    );
    let mut some_types = all_on.clone();
    some_types.enabled_event_types = Some(vec!["REGISTER".to_owned(), "LOGIN".to_owned()]);
    let problems = check_events_config(&some_types);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("UPDATE_EMAIL"), "{problems:?}");
    assert!(!problems[0].message.contains("REGISTER,"), "{problems:?}");
}

// Servers a real Keycloak 26.7 is not: older versions, a storm in one millisecond, a
// server that ignores `first`.

mod scripted {
    use config::Secret;
    use keycloak::{
        Error,
        client::Client,
        config::KeycloakSettings,
        events::{AdminEvent, Event as _, Watermark},
    };

    use crate::fake::{FakeKeycloak, Request, Response, json, status};

    /// How the scripted server reads `dateFrom`, `direction` and `first`.
    #[derive(Clone, Copy)]
    enum Server {
        /// Keycloak 26.2 and later.
        Current,
        /// 26.0 and before: `dateFrom` only as `yyyy-MM-dd` (400 otherwise), newest
        /// first whatever `direction` says.
        Old,
        /// Epoch `dateFrom`, but newest first whatever `direction` says.
        NoDirection,
        /// Answers the first page whatever `first` says.
        IgnoresFirst,
    }

    /// `(time, id)` of the stored admin events.
    fn answer(request: &Request, server: Server, stored: &[(i64, &str)]) -> Response {
        if request.path.ends_with("/protocol/openid-connect/token") {
            return json(r#"{"access_token":"t","expires_in":300}"#);
        }
        if request.path != "/admin/realms/corp/admin-events" {
            return status(404, r#"{"error":"not found"}"#);
        }
        let from = match request.param("dateFrom") {
            None => i64::MIN,
            // A day: every event here is after it.
            Some(day) if day.contains('-') => i64::MIN,
            Some(_) if matches!(server, Server::Old) => {
                return status(400, r#"{"error":"Invalid value for 'Date(From)'"}"#);
            }
            Some(ms) => ms.parse().unwrap_or(i64::MAX),
        };
        let mut events: Vec<(i64, &str)> = stored
            .iter()
            .copied()
            .filter(|(time, _)| *time >= from)
            .collect();
        let ascending = request.param("direction") == Some("asc")
            && matches!(server, Server::Current | Server::IgnoresFirst);
        if !ascending {
            events.reverse();
        }
        let first = match server {
            Server::IgnoresFirst => 0,
            _ => request.number("first") as usize,
        };
        let max = request.number("max") as usize;
        let page: Vec<String> = events
            .iter()
            .skip(first)
            .take(max)
            .map(|(time, id)| {
                format!(
                    r#"{{"id":"{id}","time":{time},"resourceType":"USER","operationType":"UPDATE","resourcePath":"users/{id}","representation":"{{}}"}}"#
                )
            })
            .collect();
        json(&format!("[{}]", page.join(",")))
    }

    async fn client(
        server: Server,
        stored: Vec<(i64, &'static str)>,
    ) -> anyhow::Result<(FakeKeycloak, Client)> {
        let fake = FakeKeycloak::start(move |request| answer(request, server, &stored)).await?;
        let mut settings =
            KeycloakSettings::new(fake.url(), "corp", "keysync", Secret::new("secret"));
        settings.retries = 0;
        settings.page_size = 2;
        let client = Client::new(settings)?;
        Ok((fake, client))
    }

    fn ids(events: &[AdminEvent]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|event| event.id.as_deref())
            .collect()
    }

    /// A backlog larger than one call takes is cut at `MAX_BATCH_EVENTS`, says so (the
    /// follower then reads again at once), and the next read from its watermark brings the
    /// rest: nothing lost, nothing twice.
    #[tokio::test]
    async fn a_backlog_larger_than_a_batch_is_cut_short_and_read_on_from_its_watermark()
    -> anyhow::Result<()> {
        let total = keycloak::events::MAX_BATCH_EVENTS + 50;
        let stored: Vec<(i64, &'static str)> = (0..total)
            .map(|n| {
                let id: &'static str = Box::leak(format!("e{n:05}").into_boxed_str());
                (1_000 + n as i64, id)
            })
            .collect();
        let fake =
            FakeKeycloak::start(move |request| answer(request, Server::Current, &stored)).await?;
        let mut settings =
            KeycloakSettings::new(fake.url(), "corp", "keysync", Secret::new("secret"));
        settings.retries = 0;
        settings.page_size = 500;
        let client = Client::new(settings)?;
        let first = client.admin_events_since(&Watermark::default()).await?;
        assert!(first.events.len() <= keycloak::events::MAX_BATCH_EVENTS);
        assert!(!first.complete, "a cut batch says more wait");
        let mut seen: Vec<String> = ids(&first.events).into_iter().map(str::to_owned).collect();
        let mut watermark = first.watermark;
        let mut reads = 1;
        loop {
            let next = client.admin_events_since(&watermark).await?;
            assert_eq!(next.gap, None);
            seen.extend(ids(&next.events).into_iter().map(str::to_owned));
            watermark = next.watermark;
            reads += 1;
            if next.complete {
                break;
            }
            assert!(reads < 4, "the backlog never ends");
        }
        let expected: Vec<String> = (0..total).map(|n| format!("e{n:05}")).collect();
        assert_eq!(seen, expected);
        Ok(())
    }

    /// Seven events in one millisecond, read in pages of two, from nothing and from a
    /// watermark in the middle of the millisecond.
    #[tokio::test]
    async fn a_storm_in_one_millisecond_is_paged_without_loss_or_repeat() -> anyhow::Result<()> {
        let stored = vec![
            (90, "a"),
            (100, "s1"),
            (100, "s2"),
            (100, "s3"),
            (100, "s4"),
            (100, "s5"),
            (100, "s6"),
            (100, "s7"),
            (110, "z"),
        ];
        let (_fake, client) = client(Server::Current, stored).await?;
        let all = client.admin_events_since(&Watermark::default()).await?;
        assert_eq!(
            ids(&all.events),
            ["a", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "z"]
        );
        assert!(all.complete);
        let part = &all.events[..4];
        let middle = Watermark::default().advanced(part);
        assert_eq!(middle.time, Some(100));
        let rest = client.admin_events_since(&middle).await?;
        assert_eq!(ids(&rest.events), ["s4", "s5", "s6", "s7", "z"]);
        assert_eq!(rest.gap, None);
        assert_eq!(rest.watermark, all.watermark);
        let none = client.admin_events_since(&all.watermark).await?;
        assert!(none.events.is_empty() && none.gap.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn older_servers_are_read_by_day_in_any_order() -> anyhow::Result<()> {
        let stored = vec![
            (100, "a"),
            (101, "b"),
            (102, "c"),
            (102, "d"),
            (103, "e"),
            (104, "f"),
        ];
        for server in [Server::Old, Server::NoDirection] {
            let (_fake, client) = client(server, stored.clone()).await?;
            let all = client.admin_events_since(&Watermark::default()).await?;
            assert_eq!(ids(&all.events), ["a", "b", "c", "d", "e", "f"]);
            let middle = Watermark::default().advanced(&all.events[..3]);
            let rest = client.admin_events_since(&middle).await?;
            assert_eq!(ids(&rest.events), ["d", "e", "f"]);
            assert_eq!(rest.gap, None);
            assert!(rest.complete);
            // The watermark's events are gone: a gap.
            let mut pruned = middle.clone();
            pruned.keys = [AdminEvent {
                id: Some("gone".to_owned()),
                time: 102,
                operation_type: None,
                resource_type: None,
                resource_path: None,
                error: None,
            }
            .key()]
            .into();
            let after_prune = client.admin_events_since(&pruned).await?;
            assert!(after_prune.gap.is_some());
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_server_that_ignores_first_is_an_error_not_a_loop() -> anyhow::Result<()> {
        let stored = vec![(100, "a"), (100, "b"), (100, "c")];
        let (fake, client) = client(Server::IgnoresFirst, stored).await?;
        let error = client
            .admin_events_since(&Watermark::default())
            .await
            .expect_err("the same page for ever");
        assert!(matches!(&error, Error::Repeated { .. }), "{error:?}");
        assert!(fake.count("GET /admin/realms/corp/admin-events") < 10);
        Ok(())
    }
}
