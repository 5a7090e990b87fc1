//! Keycloak's admin events and user events, read since a [`Watermark`] and turned into
//! what an incremental sync must read again ([`Touched`]).
//!
//! The event follower (issue #16) polls [`Client::admin_events_since`] and
//! [`Client::user_events_since`], stores the returned [`Watermark`] (it is serde) and
//! re-reads the users and groups [`Touched`] names. Events are only pointers: their
//! `representation` (a JSON string, partial or absent) is never read, and nothing here
//! trusts an event to say what a user or group now is.
//!
//! ## Watermark
//!
//! A [`Watermark`] is the time (epoch ms) of the newest event handled and the keys
//! ([`Event::key`]: the event's `id`, or `(time, type, path)` where an older Keycloak
//! gives no id) of every event handled at exactly that millisecond. Reading again from
//! it asks for `dateFrom = time` (inclusive) and drops the events it names, so a
//! millisecond read twice neither loses nor repeats an event; events older than `time`
//! count as handled. [`new_events`] and [`Watermark::advanced`] are the pure rules:
//! duplicates and events out of order in a response are harmless.
//!
//! ## Reading, and older servers
//!
//! Keycloak 26.7.3 (the version the tests run; the javadoc has it from 26.2) accepts
//! `dateFrom` as epoch milliseconds (inclusive) and `direction=asc` on both listings
//! (`RealmAdminResource.getEvents`, `DateUtil.toStartOfDay`); the JPA store orders by
//! `time` only, with no tie-break. The read pages
//! forward by time: `dateFrom` is moved to the newest millisecond read and `first` only
//! counts past events of that one millisecond, so a storm of more events in one
//! millisecond than a page still makes progress, and events pruned at the old end never
//! shift the pages. A page that brings nothing new and cannot be a legitimate page is
//! [`Error::Repeated`]; a page longer than `max` is [`Error::PageTooLong`].
//!
//! Older servers (26.0 and before) parse `dateFrom` only as `yyyy-MM-dd` (they answer
//! 400 to milliseconds) and ignore `direction` (their order is newest first). The read
//! notices either (a 400 to its first request, or a page whose times go down) and falls
//! back to reading everything since the day before the watermark (UTC, less a day for
//! the server's time zone) by offset, in any order, then sorting and de-duplicating:
//! correct, but up to a day of events per poll, bounded by [`MAX_FALLBACK_EVENTS`].
//!
//! One call returns at most [`MAX_BATCH_EVENTS`] new events ([`EventBatch::complete`]
//! says whether it caught up). A first read that finds no event leaves
//! [`Watermark::at`] 0, so that the next read is not taken for a first start again.
//!
//! Known limit: an event's `time` is stamped when the admin call succeeds, and (as far
//! as the source shows) stored with the call's transaction, so an event of a slow call
//! can become visible after a later-stamped one was read; the watermark then counts it
//! as handled. The periodic full sync covers that (as it covers
//! what no event reports).
//!
//! ## Gaps
//!
//! Events may have been lost, and [`EventBatch::gap`] (hence [`Touched::full_sync`])
//! says why, when (see [`gap`]):
//! - the watermark is empty: the first start;
//! - none of the watermark's own events is stored any more: they expired
//!   (`eventsExpiration`, the realm attribute `adminEventsExpiration`) or were cleared,
//!   and so may have events after them. This is exact at the time of the read, and also
//!   fires after a quiet spell longer than the expiration (nothing can prove it lost
//!   nothing).
//!
//! [`expiration_gap`] is the clock-based prediction for the follower to add (a
//! watermark older than the expiration allows), with the expirations from
//! [`Client::events_config`] and [`Client::admin_events_expiration`].
//!
//! ## What is read again ([`Touched`])
//!
//! `users` are user ids whose representation and direct groups must be read again (a 404
//! means deleted). `groups` are group ids whose subtree must be read again: the group,
//! its direct members, its children (a new or moved child shows up there) and the paths
//! below it (a rename changes them). A group that is gone (404) was deleted **with its
//! whole subtree and every membership in it**: Keycloak emits one `GROUP DELETE` and no
//! event per member or subgroup, so the follower removes them from its previous snapshot.
//!
//! Admin events, by `resourceType` (`ResourceType` in Keycloak 26.7):
//! - `USER` (`users/{id}`, and `users/{id}/...` actions) → the user;
//! - `GROUP_MEMBERSHIP` (`users/{uid}/groups/{gid}`) → the user (whose direct groups are
//!   read with it; the tree did not change, and reading 2,000 groups again for each
//!   membership was most of such a delta's fetch);
//! - `GROUP`: `groups/{id}` (create, update, delete) → the group;
//!   `groups/{parentId}/children` (a child created or moved below the parent) → the
//!   parent; `groups` (a group moved to the top level: its id is only in the
//!   representation) → full sync;
//! - `REALM_ROLE_MAPPING`, `CLIENT_ROLE_MAPPING`: `users/{id}/role-mappings/...` → the
//!   user; `groups/{id}/role-mappings/...` → the group (its members' roles);
//! - `REALM` (realm settings, the events configuration itself: events may have been off),
//!   `USER_FEDERATION_PROVIDER`, `USER_FEDERATION_MAPPER`, `COMPONENT` (LDAP and other
//!   user storage, whose syncs emit no per-user events), `USER_PROFILE` (which attributes
//!   the admin API shows), `PARTIAL_IMPORT` → full sync, with the reason;
//! - a `USER`, `GROUP_MEMBERSHIP` or `GROUP` event whose path has an unexpected shape →
//!   full sync;
//! - ignored: every other type (`CLIENT*`, `REALM_ROLE`, `CLIENT_ROLE` (composites),
//!   `*_SCOPE*`, `AUTH_*`, `REQUIRED_ACTION*`, `IDENTITY_PROVIDER*`, `PROTOCOL_MAPPER`,
//!   `USER_LOGIN_FAILURE`, `USER_SESSION`, `CLUSTER_NODE`, `AUTHORIZATION_*`, `CUSTOM`,
//!   `ORGANIZATION*`, anything unknown), and events without a type.
//!
//! User events ([`USER_EVENT_TYPES`], read with a `type` filter) → the `userId`; one
//! without a `userId` → full sync. `*_ERROR` types are never asked for.
//!
//! Not covered by any event (keep the periodic full sync): LDAP/federation syncs,
//! attributes an identity provider overwrites at each login (sync mode `FORCE`).
//!
//! ## Roles
//!
//! `GET /admin-events`, `GET /events` and `GET /events/config` need the
//! `realm-management` role `view-events`; the realm's `adminEventsExpiration` attribute
//! needs `view-realm` (without it Keycloak answers a summary without attributes).
//! Turning events on (`PUT /events/config`) needs `manage-events`, which keysync never
//! does.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    Error,
    client::{Client, Endpoint},
};

/// The user event types that change what the sync reads of a user: a new user
/// (`REGISTER`, `IDENTITY_PROVIDER_FIRST_LOGIN`), names, email and attributes
/// (`UPDATE_PROFILE`, `UPDATE_EMAIL`, `VERIFY_PROFILE`), `emailVerified`
/// (`VERIFY_EMAIL`), `enabled` (`USER_DISABLED_BY_PERMANENT_LOCKOUT`) and deletion
/// (`DELETE_ACCOUNT`). All exist in Keycloak 24 and later.
pub const USER_EVENT_TYPES: [&str; 8] = [
    "REGISTER",
    "IDENTITY_PROVIDER_FIRST_LOGIN",
    "UPDATE_PROFILE",
    "UPDATE_EMAIL",
    "VERIFY_PROFILE",
    "VERIFY_EMAIL",
    "USER_DISABLED_BY_PERMANENT_LOCKOUT",
    "DELETE_ACCOUNT",
];

/// The most new events one call returns; [`EventBatch::complete`] is false when more
/// wait.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// The most events the fallback for older servers reads in one call (it reads whole
/// days); more is [`Error::Endless`].
pub const MAX_FALLBACK_EVENTS: u64 = 200_000;

/// An admin event (`AdminEventRepresentation`), reduced to what says what changed.
/// `representation`, `details` and `authDetails` are not read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminEvent {
    /// Absent before Keycloak 26.
    #[serde(default)]
    pub id: Option<String>,
    /// Epoch milliseconds; required.
    pub time: i64,
    /// `CREATE`, `UPDATE`, `DELETE`, `ACTION`.
    #[serde(default)]
    pub operation_type: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Below `/admin/realms/{realm}/`, e.g. `users/{id}/groups/{groupId}`.
    #[serde(default)]
    pub resource_path: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A user event (`EventRepresentation`), reduced to what says who changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEvent {
    /// Absent before Keycloak 26.
    #[serde(default)]
    pub id: Option<String>,
    /// Epoch milliseconds; required.
    pub time: i64,
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// An event as the watermark sees it.
pub trait Event {
    /// Epoch milliseconds.
    fn time(&self) -> i64;
    /// What tells two events apart: `id:{id}`, or `at:{time}:…` of the fields that make
    /// it up when the server gives no id.
    fn key(&self) -> String;
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

impl Event for AdminEvent {
    fn time(&self) -> i64 {
        self.time
    }

    fn key(&self) -> String {
        match &self.id {
            Some(id) => format!("id:{id}"),
            None => format!(
                "at:{}:{}:{}:{}",
                self.time,
                or_empty(&self.operation_type),
                or_empty(&self.resource_type),
                or_empty(&self.resource_path)
            ),
        }
    }
}

impl Event for UserEvent {
    fn time(&self) -> i64 {
        self.time
    }

    fn key(&self) -> String {
        match &self.id {
            Some(id) => format!("id:{id}"),
            None => format!(
                "at:{}:{}:{}:{}",
                self.time,
                or_empty(&self.event_type),
                or_empty(&self.user_id),
                or_empty(&self.session_id)
            ),
        }
    }
}

/// Where a follower is in one event listing; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Epoch ms of the newest event handled; `None` before the first read.
    #[serde(default)]
    pub time: Option<i64>,
    /// Keys of the events handled at exactly `time`.
    #[serde(default)]
    pub keys: BTreeSet<String>,
}

impl Watermark {
    /// Every event before `time` handled, none at it.
    pub fn at(time: i64) -> Watermark {
        Watermark {
            time: Some(time),
            keys: BTreeSet::new(),
        }
    }

    /// Nothing handled yet: the first start.
    pub fn is_empty(&self) -> bool {
        self.time.is_none()
    }

    /// Whether an event with this time and key is not handled yet.
    pub fn is_new(&self, time: i64, key: &str) -> bool {
        match self.time {
            None => true,
            Some(mark) => time > mark || (time == mark && !self.keys.contains(key)),
        }
    }

    /// The watermark after `events` are handled too, in any order.
    pub fn advanced<E: Event>(&self, events: &[E]) -> Watermark {
        let mut next = self.clone();
        for event in events {
            let time = event.time();
            match next.time {
                Some(mark) if time < mark => {}
                Some(mark) if time == mark => {
                    next.keys.insert(event.key());
                }
                _ => {
                    next.time = Some(time);
                    next.keys = BTreeSet::from([event.key()]);
                }
            }
        }
        next
    }
}

/// The events of `events` the watermark has not handled, each once, oldest first (ties
/// by key).
pub fn new_events<E: Event>(watermark: &Watermark, events: impl IntoIterator<Item = E>) -> Vec<E> {
    let mut fresh: BTreeMap<(i64, String), E> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for event in events {
        let key = event.key();
        if watermark.is_new(event.time(), &key) && keys.insert(key.clone()) {
            fresh.insert((event.time(), key), event);
        }
    }
    fresh.into_values().collect()
}

/// Why events may have been lost before a read from `watermark`, given whether any of
/// the watermark's own events was read back; `None` when none can have been.
pub fn gap(watermark: &Watermark, watermark_events_stored: bool) -> Option<String> {
    let Some(time) = watermark.time else {
        return Some("no watermark yet: the first start".to_owned());
    };
    if !watermark.keys.is_empty() && !watermark_events_stored {
        return Some(format!(
            "the events at the watermark ({time} ms) are no longer stored (expired or \
             cleared): events after them may be lost"
        ));
    }
    None
}

/// Why events may have been lost because the watermark is older than the realm keeps
/// events (`expiration_seconds`: `eventsExpiration` or `adminEventsExpiration`; `None`
/// or zero keeps them for ever), at `now_ms`.
pub fn expiration_gap(
    watermark: &Watermark,
    expiration_seconds: Option<u64>,
    now_ms: i64,
) -> Option<String> {
    let time = watermark.time?;
    let seconds = expiration_seconds.filter(|seconds| *seconds > 0)?;
    let kept_ms = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let oldest_kept = now_ms.saturating_sub(kept_ms);
    (time < oldest_kept).then(|| {
        format!(
            "the watermark ({time} ms) is older than the realm keeps events ({seconds} s): \
             events after it may have expired"
        )
    })
}

/// New events since a watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch<E> {
    /// Not handled before, each once, oldest first.
    pub events: Vec<E>,
    /// The watermark with `events` handled: store it once they are. After a first read
    /// that found nothing it is [`Watermark::at`] 0, so the next read is no first start.
    pub watermark: Watermark,
    /// False when [`MAX_BATCH_EVENTS`] cut the batch short: read again at once.
    pub complete: bool,
    /// Why events may have been lost before these (see [`gap`]).
    pub gap: Option<String>,
}

impl EventBatch<AdminEvent> {
    /// What to read again, the gap included.
    pub fn touched(&self) -> Touched {
        let mut touched = Touched::from_admin_events(&self.events);
        if let Some(why) = &self.gap {
            touched.require_full_sync(why.clone());
        }
        touched
    }
}

impl EventBatch<UserEvent> {
    /// What to read again, the gap included.
    pub fn touched(&self) -> Touched {
        let mut touched = Touched::from_user_events(&self.events);
        if let Some(why) = &self.gap {
            touched.require_full_sync(why.clone());
        }
        touched
    }
}

/// What an incremental sync must read again; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// Why only a full sync will do; the first reason found.
    pub full_sync: Option<String>,
}

impl Touched {
    pub fn from_admin_events(events: &[AdminEvent]) -> Touched {
        let mut touched = Touched::default();
        for event in events {
            touched.add_admin_event(event);
        }
        touched
    }

    pub fn from_user_events(events: &[UserEvent]) -> Touched {
        let mut touched = Touched::default();
        for event in events {
            touched.add_user_event(event);
        }
        touched
    }

    /// Nothing to read again.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.full_sync.is_none()
    }

    /// Keeps the first reason.
    pub fn require_full_sync(&mut self, why: impl Into<String>) {
        self.full_sync.get_or_insert_with(|| why.into());
    }

    pub fn merge(&mut self, other: Touched) {
        self.users.extend(other.users);
        self.groups.extend(other.groups);
        if let Some(why) = other.full_sync {
            self.require_full_sync(why);
        }
    }

    pub fn add_admin_event(&mut self, event: &AdminEvent) {
        let Some(resource) = event.resource_type.as_deref() else {
            return;
        };
        let path = or_empty(&event.resource_path);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let unexpected = || {
            format!(
                "a {resource} {} event with the unexpected path `{path}`",
                or_empty(&event.operation_type)
            )
        };
        match resource {
            "USER" => match segments.as_slice() {
                ["users", id, ..] if !id.is_empty() => {
                    self.users.insert((*id).to_owned());
                }
                _ => self.require_full_sync(unexpected()),
            },
            "GROUP_MEMBERSHIP" => match segments.as_slice() {
                // The user's direct groups are read again with the user; the tree is
                // unchanged (a group created since the last full snapshot was named by its
                // own `GROUP` event, after which every delta carries the tree).
                ["users", user, "groups", group] if !user.is_empty() && !group.is_empty() => {
                    self.users.insert((*user).to_owned());
                }
                _ => self.require_full_sync(unexpected()),
            },
            "GROUP" => match segments.as_slice() {
                ["groups"] => self.require_full_sync(format!(
                    "a group was moved to the top level or created without an id (`{path}`)"
                )),
                ["groups", id, ..] if !id.is_empty() => {
                    // `groups/{id}`, `groups/{parentId}/children`, or a sub-resource.
                    self.groups.insert((*id).to_owned());
                }
                _ => self.require_full_sync(unexpected()),
            },
            "REALM_ROLE_MAPPING" | "CLIENT_ROLE_MAPPING" => match segments.as_slice() {
                ["users", id, "role-mappings", ..] if !id.is_empty() => {
                    self.users.insert((*id).to_owned());
                }
                ["groups", id, "role-mappings", ..] if !id.is_empty() => {
                    self.groups.insert((*id).to_owned());
                }
                _ => {}
            },
            "REALM"
            | "USER_FEDERATION_PROVIDER"
            | "USER_FEDERATION_MAPPER"
            | "COMPONENT"
            | "USER_PROFILE"
            | "PARTIAL_IMPORT" => self.require_full_sync(format!(
                "a {resource} {} event (`{path}`) can change any user",
                or_empty(&event.operation_type)
            )),
            _ => {}
        }
    }

    pub fn add_user_event(&mut self, event: &UserEvent) {
        let Some(kind) = event.event_type.as_deref() else {
            return;
        };
        if !USER_EVENT_TYPES.contains(&kind) {
            return;
        }
        match event.user_id.as_deref() {
            Some(id) if !id.is_empty() => {
                self.users.insert(id.to_owned());
            }
            _ => self.require_full_sync(format!("a {kind} user event without a userId")),
        }
    }
}

/// The realm's events settings (`RealmEventsConfigRepresentation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsConfig {
    /// User events saved.
    #[serde(default)]
    pub events_enabled: bool,
    /// Seconds user events are kept; `None` or 0: for ever.
    #[serde(default)]
    pub events_expiration: Option<i64>,
    /// The user event types saved (Keycloak lists its defaults when none are set).
    #[serde(default)]
    pub enabled_event_types: Option<Vec<String>>,
    #[serde(default)]
    pub admin_events_enabled: Option<bool>,
    /// "Include representation".
    #[serde(default)]
    pub admin_events_details_enabled: Option<bool>,
}

impl EventsConfig {
    /// `eventsExpiration` for [`expiration_gap`]: `None` when user events are kept for
    /// ever.
    pub fn user_events_expiration(&self) -> Option<u64> {
        self.events_expiration
            .and_then(|seconds| u64::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
    }
}

/// A setting the event follower needs and the realm lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The `RealmEventsConfigRepresentation` field.
    pub setting: &'static str,
    /// What is wrong and how to turn it on.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// What the realm's events settings lack for the event follower, each with how to turn
/// it on; empty when nothing.
pub fn check_events_config(config: &EventsConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.admin_events_enabled != Some(true) {
        problems.push(Problem {
            setting: "adminEventsEnabled",
            message: "the realm does not save admin events: in the admin console, Realm \
                      settings → Events → Admin events settings, turn on \"Save events\" \
                      (`adminEventsEnabled`)"
                .to_owned(),
        });
    }
    if config.admin_events_details_enabled != Some(true) {
        problems.push(Problem {
            setting: "adminEventsDetailsEnabled",
            message: "the realm saves admin events without details: in the admin console, \
                      Realm settings → Events → Admin events settings, turn on \"Include \
                      representation\" (`adminEventsDetailsEnabled`)"
                .to_owned(),
        });
    }
    if !config.events_enabled {
        problems.push(Problem {
            setting: "eventsEnabled",
            message: "the realm does not save user events (self-registration and profile \
                      changes): in the admin console, Realm settings → Events → User events \
                      settings, turn on \"Save events\" (`eventsEnabled`)"
                .to_owned(),
        });
    }
    let saved = config.enabled_event_types.as_deref().unwrap_or_default();
    let missing: Vec<&str> = USER_EVENT_TYPES
        .into_iter()
        .filter(|kind| !saved.iter().any(|saved| saved == kind))
        .collect();
    if !missing.is_empty() {
        problems.push(Problem {
            setting: "enabledEventTypes",
            message: format!(
                "the realm does not save the user event types {}: in the admin console, \
                 Realm settings → Events → User events settings → Add saved types \
                 (`enabledEventTypes`)",
                missing.join(", ")
            ),
        });
    }
    problems
}

/// The realm's `adminEventsExpiration` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminEventsExpiration {
    /// Not set (or 0): admin events are kept for ever.
    Never,
    Seconds(u64),
    /// The answer had no attributes: the service account lacks `view-realm`.
    Unknown,
}

impl AdminEventsExpiration {
    /// The expiration for [`expiration_gap`]: `None` when events are kept for ever or
    /// the expiration is unknown.
    pub fn seconds(self) -> Option<u64> {
        match self {
            AdminEventsExpiration::Seconds(seconds) => Some(seconds),
            AdminEventsExpiration::Never | AdminEventsExpiration::Unknown => None,
        }
    }
}

#[derive(Deserialize)]
struct RealmAttributes {
    #[serde(default)]
    attributes: Option<BTreeMap<String, serde_json::Value>>,
}

/// Which listing a read is of.
#[derive(Clone, Copy)]
enum Kind {
    Admin,
    User,
}

impl Kind {
    fn endpoint(self) -> Endpoint {
        match self {
            Kind::Admin => Endpoint::AdminEvents,
            Kind::User => Endpoint::UserEvents,
        }
    }

    fn segment(self) -> &'static str {
        match self {
            Kind::Admin => "admin-events",
            Kind::User => "events",
        }
    }

    /// The query filters of the listing.
    fn filters(self) -> Vec<(&'static str, String)> {
        match self {
            Kind::Admin => Vec::new(),
            Kind::User => USER_EVENT_TYPES
                .into_iter()
                .map(|kind| ("type", kind.to_owned()))
                .collect(),
        }
    }
}

/// What a read brought: every new event (maybe more than once), whether any of the
/// watermark's own events came back, and whether the listing was read to its end.
struct Read<E> {
    events: Vec<E>,
    watermark_stored: bool,
    complete: bool,
}

impl Client {
    /// The realm's events settings (`GET /events/config`, role `view-events`).
    pub async fn events_config(&self) -> Result<EventsConfig, Error> {
        self.get(Endpoint::EventsConfig, &["events", "config"], &[])
            .await
    }

    /// The realm's `adminEventsExpiration` (`GET /admin/realms/{realm}`, role
    /// `view-realm`; without it [`AdminEventsExpiration::Unknown`]).
    pub async fn admin_events_expiration(&self) -> Result<AdminEventsExpiration, Error> {
        let realm: RealmAttributes = self.get(Endpoint::Realm, &[], &[]).await?;
        let Some(attributes) = realm.attributes else {
            return Ok(AdminEventsExpiration::Unknown);
        };
        let seconds = match attributes.get("adminEventsExpiration") {
            Some(serde_json::Value::String(text)) => text.trim().parse::<u64>().ok(),
            Some(serde_json::Value::Number(number)) => number.as_u64(),
            _ => None,
        };
        Ok(match seconds {
            Some(seconds) if seconds > 0 => AdminEventsExpiration::Seconds(seconds),
            _ => AdminEventsExpiration::Never,
        })
    }

    /// Admin events after `watermark` (`GET /admin-events`, role `view-events`).
    pub async fn admin_events_since(
        &self,
        watermark: &Watermark,
    ) -> Result<EventBatch<AdminEvent>, Error> {
        self.events_since(Kind::Admin, watermark).await
    }

    /// User events of the [`USER_EVENT_TYPES`] after `watermark` (`GET /events`, role
    /// `view-events`).
    pub async fn user_events_since(
        &self,
        watermark: &Watermark,
    ) -> Result<EventBatch<UserEvent>, Error> {
        self.events_since(Kind::User, watermark).await
    }

    async fn events_since<E>(
        &self,
        kind: Kind,
        watermark: &Watermark,
    ) -> Result<EventBatch<E>, Error>
    where
        E: Event + DeserializeOwned,
    {
        let read = match self.read_ordered(kind, watermark).await? {
            Some(read) => read,
            None => {
                tracing::info!(
                    endpoint = %kind.endpoint(),
                    "Keycloak does not page events by epoch time in ascending order; reading whole days."
                );
                self.read_unordered(kind, watermark).await?
            }
        };
        let mut events = new_events(watermark, read.events);
        let mut complete = read.complete;
        if events.len() > MAX_BATCH_EVENTS {
            events.truncate(MAX_BATCH_EVENTS);
            complete = false;
        }
        // A first read of an empty store: every event stored later is new.
        let next = if watermark.is_empty() && events.is_empty() && complete {
            Watermark::at(0)
        } else {
            watermark.advanced(&events)
        };
        Ok(EventBatch {
            watermark: next,
            gap: gap(watermark, read.watermark_stored),
            events,
            complete,
        })
    }

    /// One page of a listing.
    async fn event_page<E: DeserializeOwned>(
        &self,
        kind: Kind,
        query: Vec<(&'static str, String)>,
    ) -> Result<Vec<E>, Error> {
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        self.get(kind.endpoint(), &[kind.segment()], &query).await
    }

    /// Events since the watermark, paged forward by time (`dateFrom` in epoch ms,
    /// `direction=asc`); `None` when the server does not do that (see the module
    /// documentation).
    async fn read_ordered<E>(
        &self,
        kind: Kind,
        watermark: &Watermark,
    ) -> Result<Option<Read<E>>, Error>
    where
        E: Event + DeserializeOwned,
    {
        let max = u64::from(self.settings().page_size.max(2));
        let mut cursor = watermark.time;
        // Keys read (or in the watermark) at exactly `cursor`.
        let mut at_cursor = watermark.keys.clone();
        // Events at `cursor` to skip: those the pages at `cursor` gave already.
        let mut skip: u64 = 0;
        let mut read = Read {
            events: Vec::new(),
            watermark_stored: false,
            complete: false,
        };
        loop {
            let mut query = kind.filters();
            query.push(("direction", "asc".to_owned()));
            if let Some(cursor) = cursor {
                query.push(("dateFrom", cursor.to_string()));
            }
            query.push(("first", skip.to_string()));
            query.push(("max", max.to_string()));
            let page: Vec<E> = match self.event_page(kind, query).await {
                // 26.0 and before: `dateFrom` must be `yyyy-MM-dd`.
                Err(Error::Http { status: 400, .. }) if read.events.is_empty() && skip == 0 => {
                    return Ok(None);
                }
                result => result?,
            };
            if page.len() as u64 > max {
                return Err(Error::PageTooLong {
                    endpoint: kind.endpoint().to_string(),
                    max: max as usize,
                    len: page.len(),
                });
            }
            if page.windows(2).any(|pair| pair[1].time() < pair[0].time()) {
                // `direction` ignored: newest first.
                return Ok(None);
            }
            let known_before = at_cursor.len() as u64;
            let mut fresh = 0usize;
            let mut advanced = false;
            for event in &page {
                let key = event.key();
                if watermark.time == Some(event.time()) && watermark.keys.contains(&key) {
                    read.watermark_stored = true;
                }
                match cursor {
                    Some(mark) if event.time() < mark => continue,
                    Some(mark) if event.time() == mark => {
                        if at_cursor.insert(key) {
                            fresh += 1;
                        }
                    }
                    _ => {
                        cursor = Some(event.time());
                        at_cursor = BTreeSet::from([key]);
                        advanced = true;
                        fresh += 1;
                    }
                }
            }
            let len = page.len() as u64;
            read.events.extend(page);
            if len < max {
                read.complete = true;
                return Ok(Some(read));
            }
            if advanced {
                skip = 0;
            } else {
                if fresh == 0 && skip >= known_before {
                    return Err(Error::Repeated {
                        endpoint: kind.endpoint().to_string(),
                        detail: format!(
                            "a full page at first={skip} of the millisecond {} brought no new event",
                            cursor.unwrap_or_default()
                        ),
                    });
                }
                skip += len;
            }
            if read.events.len() >= MAX_BATCH_EVENTS {
                return Ok(Some(read));
            }
        }
    }

    /// Events since the day before the watermark, by offset in whatever order the server
    /// gives them: for servers without epoch `dateFrom` or `direction`.
    async fn read_unordered<E>(&self, kind: Kind, watermark: &Watermark) -> Result<Read<E>, Error>
    where
        E: Event + DeserializeOwned,
    {
        let max = u64::from(self.settings().page_size.max(2));
        let day = watermark
            .time
            .map(|time| utc_date(time.saturating_sub(DAY_MS)));
        let mut keys = BTreeSet::new();
        let mut read = Read {
            events: Vec::new(),
            watermark_stored: false,
            complete: true,
        };
        let mut first: u64 = 0;
        loop {
            let mut query = kind.filters();
            if let Some(day) = &day {
                query.push(("dateFrom", day.clone()));
            }
            query.push(("first", first.to_string()));
            query.push(("max", max.to_string()));
            let page: Vec<E> = self.event_page(kind, query).await?;
            if page.len() as u64 > max {
                return Err(Error::PageTooLong {
                    endpoint: kind.endpoint().to_string(),
                    max: max as usize,
                    len: page.len(),
                });
            }
            let len = page.len() as u64;
            let mut fresh = 0;
            for event in page {
                let key = event.key();
                if watermark.time == Some(event.time()) && watermark.keys.contains(&key) {
                    read.watermark_stored = true;
                }
                if keys.insert(key) {
                    fresh += 1;
                    read.events.push(event);
                }
            }
            if len > 0 && fresh == 0 {
                return Err(Error::Repeated {
                    endpoint: kind.endpoint().to_string(),
                    detail: format!(
                        "the {len} events of the page at first={first} were all read before"
                    ),
                });
            }
            if keys.len() as u64 > MAX_FALLBACK_EVENTS {
                return Err(Error::Endless {
                    endpoint: kind.endpoint().to_string(),
                    limit: MAX_FALLBACK_EVENTS,
                    detail: "events since the day before the watermark".to_owned(),
                });
            }
            if len < max {
                return Ok(read);
            }
            first += len;
        }
    }
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// `yyyy-MM-dd` (UTC) of an epoch-ms time.
fn utc_date(ms: i64) -> String {
    // Howard Hinnant's `civil_from_days`.
    let days = ms.div_euclid(DAY_MS) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(1_796_268_304_067), "2026-12-03");
        assert_eq!(utc_date(1_796_268_304_067 - DAY_MS), "2026-12-02");
    }
}
