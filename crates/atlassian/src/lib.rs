//! Clients for Jira, Confluence and Bitbucket Data Center behind one [`Directory`] trait.
//!
//! The applier sees every product through [`Directory`]: list the accounts, groups and
//! memberships ([`Directory::fetch_state`]), then create, update, deactivate, reactivate and
//! delete accounts, create and delete groups, and add and remove memberships. Every write is
//! idempotent: "already exists with the same data", "already a member" and "already inactive"
//! answer [`Outcome::AlreadyDone`], so a redelivered change set never fails or duplicates.
//!
//! The products differ, and the differences are in the types instead of hidden:
//! - [`Capabilities`] says what a product can do. Bitbucket cannot deactivate
//!   (`can_deactivate == false`: [`Directory::deactivate_account`] answers
//!   [`Error::Unsupported`]); Confluence cannot rename; Confluence deletes asynchronously.
//! - [`RemoteAccount::id`] is the product's stable id: the Jira user key, the Confluence
//!   `userKey` or the Bitbucket slug. Writes take an [`AccountRef`] with both the id and the
//!   login, because each product addresses users differently.
//! - Jira lists users with the 10.3+ cursor endpoint or, for older versions, with prefix
//!   searches that work around the search's caps (100 on 10.0 to 10.2, 1,000 on 9.x) and
//!   fail a listing they cannot prove complete ([`config::UserListing`]).
//! - Read-only accounts (Bitbucket `mutableDetails`/`deletable` false) carry
//!   [`RemoteAccount::read_only`], and writes to them answer [`Outcome::Skipped`].
//! - Accounts that hold the product's administrator rights carry
//!   [`RemoteAccount::administrator`]; only Bitbucket lists them (its global permissions),
//!   so it is always `false` for Jira and Confluence, whose administrators the policy's
//!   default `protected_groups` cover.
//!
//! All three clients share one HTTP layer (`http.rs`): bearer or basic auth,
//! `X-Atlassian-Token: no-check`, retries on 429/502/503/504 and transport errors that honour
//! `Retry-After`, a client-side pacer that reads `X-RateLimit-*` headers so it never provokes
//! a 429 storm, and bounded concurrency. Above it they share one client core (`client.rs`):
//! the constructor and observer of every client type, and the one loop that reads a listing
//! page by page, to which each product adds only how its pages say they are the last and
//! where the next one starts.
//!
//! Hostile or broken answers never hang, panic or silently truncate a listing: paging must
//! prove progress and stops at [`config::Connection::max_pages`] (`client.rs`), bodies are
//! read within [`config::Connection::max_body_bytes`] ([`Error::ResponseTooLarge`]),
//! header numbers are parsed and used with checked arithmetic (`http.rs`), and a field whose
//! default would change the plan (`active`, `isLastPage`, `deletable`, …) is required, so a
//! missing one is [`Error::Decode`]; each product module lists its choices. A listing that
//! cannot be proven complete fails as [`Error::Incomplete`] with the reason.
//!
//! Entry points: [`Client::new`] from [`config::Settings`], or one of [`jira::JiraClient`],
//! [`confluence::ConfluenceClient`] and [`bitbucket::BitbucketClient`]. To measure the
//! calls (latency, retries, 429s), give a client a [`RequestObserver`] with
//! `with_observer`; this crate itself records no metrics.

pub mod bitbucket;
mod client;
pub mod config;
pub mod confluence;
mod http;
pub mod jira;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::config::Secret;
use futures::{StreamExt, TryStreamExt};

/// How many groups' members are listed at the same time by [`Directory::fetch_state`]; the
/// HTTP layer's own concurrency bound still applies underneath.
const LISTING_CONCURRENCY: usize = 8;

/// One Atlassian Data Center product's user directory, as the applier sees it.
///
/// Writes answer an [`Outcome`]; an `Err` is a failure that the caller should count and
/// report (after the HTTP layer's own retries).
pub trait Directory: Send + Sync {
    /// The product this client talks to.
    fn product(&self) -> Product;

    /// What this product can and cannot do; the plan reads it.
    fn capabilities(&self) -> Capabilities;

    /// Checks the endpoint and the credentials, and proves the account holds the rights the
    /// writes need: Jira `ADMINISTER` or `SYSTEM_ADMIN` (`mypermissions`), Confluence
    /// administrator (an admin-only read), Bitbucket `ADMIN` (an admin-only read). Bad
    /// credentials answer [`Error::Unauthorized`]; credentials without the rights answer
    /// [`Error::MissingPermission`], which names the permission.
    fn test_connection(&self) -> impl Future<Output = Result<ConnectionInfo, Error>> + Send;

    /// Every account of the directory, active or not, across all pages.
    fn list_accounts(&self) -> impl Future<Output = Result<Vec<RemoteAccount>, Error>> + Send;

    /// Every group of the directory, across all pages.
    fn list_groups(&self) -> impl Future<Output = Result<Vec<RemoteGroup>, Error>> + Send;

    /// The stable ids ([`RemoteAccount::id`]) of a group's members, across all pages.
    fn list_members(&self, group: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// The projects and components each account leads (Jira); empty for the products that
    /// have no leads. A lead blocks the account's deactivation (project and component leads)
    /// and deletion (project leads) in Jira, so the plan must know them.
    fn list_leads(&self) -> impl Future<Output = Result<Vec<Lead>, Error>> + Send {
        std::future::ready(Ok(Vec::new()))
    }

    /// The licence seats: how many are taken and how many the licence has. `None` where the
    /// product does not say (no licence endpoint, or an unlimited licence reported as such).
    fn seats(&self) -> impl Future<Output = Result<Option<Seats>, Error>> + Send {
        std::future::ready(Ok(None))
    }

    /// Makes the account with login `to` the lead of `target` (Jira
    /// `PUT /rest/api/2/project/{key}` with `lead`, `PUT /rest/api/2/component/{id}` with
    /// `leadUserName`); [`Error::Unsupported`] for products that have no leads.
    fn hand_over_lead(
        &self,
        target: &LeadTarget,
        to: &str,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send {
        let _ = (target, to);
        std::future::ready(Err(Error::Unsupported {
            product: self.product(),
            operation: "hand over a project lead",
        }))
    }

    /// Accounts, groups and memberships together; members are listed for several groups at
    /// once. Where the product lists who holds its administrator rights (Bitbucket), the
    /// accounts that hold them carry [`RemoteAccount::administrator`], and a failure to read
    /// that fails the whole read: keysync never plans without knowing the administrators.
    fn fetch_state(&self) -> impl Future<Output = Result<DirectoryState, Error>> + Send {
        read_directory(self)
    }

    /// Creates an account and answers its stable id. An existing account with the same login,
    /// display name and email is [`Outcome::AlreadyDone`]; with other data it is
    /// [`Error::Conflict`].
    fn create_account(
        &self,
        account: &NewAccount,
    ) -> impl Future<Output = Result<Created, Error>> + Send;

    /// Changes the fields that are `Some` in `update`.
    fn update_account(
        &self,
        account: AccountRef<'_>,
        update: &AccountUpdate,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Deactivates an account; [`Error::Unsupported`] where
    /// [`Capabilities::can_deactivate`] is false.
    fn deactivate_account(
        &self,
        account: AccountRef<'_>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Reactivates an account; [`Error::Unsupported`] where
    /// [`Capabilities::can_deactivate`] is false.
    fn reactivate_account(
        &self,
        account: AccountRef<'_>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Deletes an account. An account that is already gone is [`Outcome::AlreadyDone`].
    fn delete_account(
        &self,
        account: AccountRef<'_>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Creates a group; an existing group is [`Outcome::AlreadyDone`].
    fn create_group(&self, name: &str) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Deletes a group; a missing group is [`Outcome::AlreadyDone`].
    fn delete_group(&self, name: &str) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Adds an account to a group; an existing membership is [`Outcome::AlreadyDone`].
    fn add_member(
        &self,
        group: &str,
        account: AccountRef<'_>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Adds an account to several groups: one result per group, in order, each as
    /// [`Directory::add_member`] would answer it. Where the product takes several groups in
    /// one request ([`Capabilities::groups_per_add`]), that is one request when they all
    /// succeed; the default adds them one by one.
    fn add_member_to_groups(
        &self,
        groups: &[String],
        account: AccountRef<'_>,
    ) -> impl Future<Output = Vec<Result<Outcome, Error>>> + Send {
        add_one_by_one(self, groups, account)
    }

    /// Removes an account from a group; a membership that does not exist (including a gone
    /// account or group) is [`Outcome::AlreadyDone`].
    fn remove_member(
        &self,
        group: &str,
        account: AccountRef<'_>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;
}

/// [`Directory::add_member`] for each group in turn: one result per group, in order.
pub(crate) async fn add_one_by_one<D: Directory + ?Sized>(
    directory: &D,
    groups: &[String],
    account: AccountRef<'_>,
) -> Vec<Result<Outcome, Error>> {
    let mut results = Vec::with_capacity(groups.len());
    for group in groups {
        results.push(directory.add_member(group, account).await);
    }
    results
}

/// Accounts, groups and memberships of `directory`, with members listed for several groups
/// at once; the whole of [`Directory::fetch_state`] where the product lists no
/// administrators, and its first part where it does.
pub(crate) async fn read_directory<D: Directory + ?Sized>(
    directory: &D,
) -> Result<DirectoryState, Error> {
    let accounts = directory.list_accounts().await?;
    let groups = directory.list_groups().await?;
    let names: Vec<String> = groups.iter().map(|group| group.name.clone()).collect();
    let member_lists: Vec<(String, Vec<String>)> = futures::stream::iter(names)
        .map(|name| async move {
            let members = directory.list_members(&name).await?;
            Ok::<_, Error>((name, members))
        })
        .buffer_unordered(LISTING_CONCURRENCY)
        .try_collect()
        .await?;
    let memberships = member_lists
        .into_iter()
        .flat_map(|(group, members)| {
            members.into_iter().map(move |account_id| Membership {
                group: group.clone(),
                account_id,
            })
        })
        .collect();
    let leads = directory.list_leads().await?;
    let seats = directory.seats().await?;
    Ok(DirectoryState {
        accounts,
        groups,
        memberships,
        leads,
        seats,
    })
}

/// The three Data Center products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    Jira,
    Confluence,
    Bitbucket,
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Product::Jira => "jira",
            Product::Confluence => "confluence",
            Product::Bitbucket => "bitbucket",
        })
    }
}

/// What a product can do through its REST API; the plan reads this instead of assuming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Accounts can be deactivated and reactivated (false for Bitbucket: the plan must strip
    /// licence groups or delete instead).
    pub can_deactivate: bool,
    /// An account's login can be changed ([`AccountUpdate::login`]); false for Confluence.
    pub can_rename: bool,
    /// Listings report each account's email address; false for Confluence, whose user
    /// objects carry no email, so [`RemoteAccount::email`] is `None` there.
    pub lists_email: bool,
    /// Deleting an account is a long-running task on the server (Confluence); the client
    /// waits for it, so a delete can take seconds.
    pub async_delete: bool,
    /// Group member listings include members of nested groups (Jira), not only direct
    /// members.
    pub nested_group_members: bool,
    /// How many groups [`Directory::add_member_to_groups`] gives an account in one request:
    /// Bitbucket's `add-groups` takes a list; 1 where every membership is its own request.
    pub groups_per_add: usize,
}

/// An account as the product reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAccount {
    /// The stable id: Jira user key, Confluence `userKey`, Bitbucket slug.
    pub id: String,
    /// The login name (Jira `name`, Confluence `username`, Bitbucket `name`); may change.
    pub login: String,
    pub display_name: String,
    /// `None` where the product does not report it (see [`Capabilities::lists_email`]).
    pub email: Option<String>,
    pub active: bool,
    /// Why keysync must not write to this account, when it must not (for example a
    /// Bitbucket account from a read-only LDAP directory).
    pub read_only: Option<String>,
    /// The product reports that the account holds administrator rights: Bitbucket's global
    /// `ADMIN` or `SYS_ADMIN` permission, granted to the account or to a group it is a
    /// member of. keysync never links, renames, deactivates or otherwise changes such an
    /// account.
    ///
    /// Always `false` for Jira and Confluence Data Center: they have no documented REST
    /// listing of the holders of their global permissions that works with a personal access
    /// token on every version keysync supports. Their administrators are covered by the
    /// policy's `protected_groups`, whose default names their administrator groups
    /// (`jira-administrators`, `jira-system-administrators`, `confluence-administrators`).
    pub administrator: bool,
}

/// A group as the product reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteGroup {
    pub name: String,
    /// Why keysync must not delete this group, when it must not (Bitbucket `deletable`).
    pub read_only: Option<String>,
}

/// One account's membership of one group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Membership {
    pub group: String,
    /// The member's [`RemoteAccount::id`].
    pub account_id: String,
}

/// Everything [`Directory::fetch_state`] read from a product.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryState {
    pub accounts: Vec<RemoteAccount>,
    pub groups: Vec<RemoteGroup>,
    pub memberships: BTreeSet<Membership>,
    /// What each account leads ([`Directory::list_leads`]).
    pub leads: Vec<Lead>,
    /// The licence seats, when the product reports them ([`Directory::seats`]).
    pub seats: Option<Seats>,
}

/// A Jira project or component that an account leads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lead {
    /// The lead's [`RemoteAccount::id`] (the Jira user key).
    pub account_id: String,
    pub target: LeadTarget,
}

/// What an account leads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeadTarget {
    /// A project, by key.
    Project { key: String },
    /// A project component, by id, with its project's key and its name for people.
    Component {
        id: String,
        project_key: String,
        name: String,
    },
}

/// A product's licence seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seats {
    /// Seats taken now.
    pub used: u64,
    /// Seats the licence has; `None` for an unlimited licence.
    pub limit: Option<u64>,
}

/// How writes address an existing account: products use the stable id for some calls and
/// the login for others (Jira membership calls take the username, Bitbucket admin calls take
/// the name while its user resources take the slug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountRef<'a> {
    /// [`RemoteAccount::id`].
    pub id: &'a str,
    /// [`RemoteAccount::login`], as the product knows it now.
    pub login: &'a str,
}

impl<'a> From<&'a RemoteAccount> for AccountRef<'a> {
    fn from(account: &'a RemoteAccount) -> Self {
        AccountRef {
            id: &account.id,
            login: &account.login,
        }
    }
}

/// An account to create.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub login: String,
    pub display_name: String,
    pub email: String,
    /// The initial password. Accounts that sign in through SSO need none: Jira then picks a
    /// random one itself, and the Confluence and Bitbucket clients send a random one because
    /// those products require a password when no invitation email is sent.
    pub password: Option<Secret>,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    /// A new login (rename); [`Error::Unsupported`] where [`Capabilities::can_rename`] is false.
    pub login: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The product changed.
    Applied,
    /// The product was already in the wanted state (exists with the same data, already a
    /// member, already inactive, already gone).
    AlreadyDone,
    /// Nothing was written, on purpose: for example the account is read-only.
    Skipped { reason: String },
}

/// The answer to [`Directory::create_account`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The new (or existing, identical) account's stable id.
    pub id: String,
    pub outcome: Outcome,
}

/// What [`Directory::test_connection`] learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub product: Product,
    /// The product's version, when it reports one.
    pub version: Option<String>,
    /// The login the credentials belong to, when the product reports it.
    pub user: Option<String>,
    /// The administrator permission the check proved the account holds (Jira
    /// `SYSTEM_ADMIN` or `ADMINISTER`, Confluence administrator, Bitbucket `ADMIN` or
    /// higher); `None` where the product has no read that proves it (Confluence before the
    /// `admin/users` listing).
    pub permission: Option<String>,
}

/// A failed call to a product. Variants that come from an HTTP answer keep the product's
/// status code and message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{product} rejected the credentials ({status}): {message}")]
    Unauthorized {
        product: Product,
        status: u16,
        message: String,
    },
    #[error("{product} forbade the call ({status}): {message}")]
    Forbidden {
        product: Product,
        status: u16,
        message: String,
    },
    #[error("{product} found no such object ({status}): {message}")]
    NotFound {
        product: Product,
        status: u16,
        message: String,
    },
    #[error("{product} reported a conflict ({status}): {message}")]
    Conflict {
        product: Product,
        status: u16,
        message: String,
    },
    #[error("{product} rejected the request as invalid ({status}): {message}")]
    Validation {
        product: Product,
        status: u16,
        message: String,
    },
    /// The product refused a write because its licence limit is reached (Confluence 402 on
    /// create, Bitbucket 403 on create or on an add to a group that grants a licence).
    #[error("{product}: licence limit reached ({status}): {message}")]
    LicenseLimit {
        product: Product,
        status: u16,
        message: String,
    },
    /// The credentials work but the account lacks `permission`, which the writes need.
    #[error("{product}: the account lacks the {permission} permission ({status}): {message}")]
    MissingPermission {
        product: Product,
        status: u16,
        permission: &'static str,
        message: String,
    },
    #[error("{product} kept rate limiting after {attempts} attempts: {message}")]
    RateLimited {
        product: Product,
        attempts: u32,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("{product} stayed unavailable after {attempts} attempts ({status}): {message}")]
    Unavailable {
        product: Product,
        attempts: u32,
        status: u16,
        message: String,
    },
    #[error("{product} answered an unexpected status ({status}): {message}")]
    UnexpectedStatus {
        product: Product,
        status: u16,
        message: String,
    },
    #[error("{product} cannot {operation} through its REST API")]
    Unsupported {
        product: Product,
        operation: &'static str,
    },
    #[error("{product} long task {task_id} did not succeed: {message}")]
    LongTask {
        product: Product,
        task_id: String,
        message: String,
    },
    /// A listing that cannot be proven complete; keysync never plans from part of one.
    #[error("{product} cannot be listed completely: {message}")]
    Incomplete { product: Product, message: String },
    #[error("{product} could not be reached after {attempts} attempts")]
    Transport {
        product: Product,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// An answer's body was larger than [`config::Connection::max_body_bytes`]; it was not
    /// read whole, and the request is not retried.
    #[error("{product} sent a body larger than the limit of {limit} bytes (`max_body_bytes`)")]
    ResponseTooLarge { product: Product, limit: usize },
    #[error("{product} sent a body that is not a valid {what}")]
    Decode {
        product: Product,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {product} client settings: {message}")]
    Config { product: Product, message: String },
}

impl Error {
    /// The HTTP status the product answered, for errors that come from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { status, .. }
            | Error::Forbidden { status, .. }
            | Error::NotFound { status, .. }
            | Error::Conflict { status, .. }
            | Error::Validation { status, .. }
            | Error::LicenseLimit { status, .. }
            | Error::MissingPermission { status, .. }
            | Error::Unavailable { status, .. }
            | Error::UnexpectedStatus { status, .. } => Some(*status),
            Error::RateLimited { .. } => Some(429),
            Error::Unsupported { .. }
            | Error::Incomplete { .. }
            | Error::LongTask { .. }
            | Error::Transport { .. }
            | Error::Decode { .. }
            | Error::ResponseTooLarge { .. }
            | Error::Config { .. } => None,
        }
    }
}

/// Any of the three clients, chosen by [`config::ProductSettings`]; the applier holds one of
/// these so that its code is the same for every product.
#[derive(Debug)]
pub enum Client {
    Jira(jira::JiraClient),
    Confluence(confluence::ConfluenceClient),
    Bitbucket(bitbucket::BitbucketClient),
}

impl Client {
    /// Builds the client for the product in `settings`; validates them and does no IO.
    pub fn new(settings: config::Settings) -> Result<Client, Error> {
        let config::Settings {
            connection,
            product,
        } = settings;
        Ok(match product {
            config::ProductSettings::Jira(jira) => {
                Client::Jira(jira::JiraClient::new(connection, jira)?)
            }
            config::ProductSettings::Confluence(confluence) => {
                Client::Confluence(confluence::ConfluenceClient::new(connection, confluence)?)
            }
            config::ProductSettings::Bitbucket(bitbucket) => {
                Client::Bitbucket(bitbucket::BitbucketClient::new(connection, bitbucket)?)
            }
        })
    }
}

impl Client {
    /// Tells `observer` of every HTTP attempt this client makes.
    pub fn with_observer(self, observer: Arc<dyn RequestObserver>) -> Client {
        match self {
            Client::Jira(client) => Client::Jira(client.with_observer(observer)),
            Client::Confluence(client) => Client::Confluence(client.with_observer(observer)),
            Client::Bitbucket(client) => Client::Bitbucket(client.with_observer(observer)),
        }
    }
}

/// One HTTP attempt of a client, as its [`RequestObserver`] hears of it: after the answer
/// (or the transport error), before any retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvent<'a> {
    pub product: Product,
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'a str,
    /// The REST resource without the names or ids in its path, such as `rest/api/2/user`
    /// or `rest/api/admin/user` (for `rest/api/admin/user/{name}/disable`): a bounded set,
    /// fit for a metric label. Query strings are never part of it.
    pub endpoint: &'static str,
    /// The status answered; `None` when the request failed without an answer (connect,
    /// timeout, a broken body).
    pub status: Option<u16>,
    /// From sending the request to the end of the answer's body.
    pub elapsed: Duration,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Whether the client tries again after this attempt (429, 502, 503, 504 or a transport
    /// error, with retries left).
    pub retried: bool,
}

/// Hears of every HTTP attempt of a client (see [`Client::with_observer`]); called on the
/// request's task, so it must be quick and must not block.
pub trait RequestObserver: Send + Sync + 'static {
    fn observe(&self, event: &RequestEvent<'_>);
}

/// Forwards one `Directory` method to whichever client `Client` holds.
macro_rules! delegate {
    ($self:ident, $client:ident => $call:expr) => {
        match $self {
            Client::Jira($client) => $call,
            Client::Confluence($client) => $call,
            Client::Bitbucket($client) => $call,
        }
    };
}

impl Directory for Client {
    fn product(&self) -> Product {
        delegate!(self, client => client.product())
    }

    fn capabilities(&self) -> Capabilities {
        delegate!(self, client => client.capabilities())
    }

    async fn test_connection(&self) -> Result<ConnectionInfo, Error> {
        delegate!(self, client => client.test_connection().await)
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, Error> {
        delegate!(self, client => client.list_accounts().await)
    }

    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, Error> {
        delegate!(self, client => client.list_groups().await)
    }

    async fn list_leads(&self) -> Result<Vec<Lead>, Error> {
        delegate!(self, client => client.list_leads().await)
    }

    async fn seats(&self) -> Result<Option<Seats>, Error> {
        delegate!(self, client => client.seats().await)
    }

    async fn hand_over_lead(&self, target: &LeadTarget, to: &str) -> Result<Outcome, Error> {
        delegate!(self, client => client.hand_over_lead(target, to).await)
    }

    async fn list_members(&self, group: &str) -> Result<Vec<String>, Error> {
        delegate!(self, client => client.list_members(group).await)
    }

    async fn fetch_state(&self) -> Result<DirectoryState, Error> {
        delegate!(self, client => client.fetch_state().await)
    }

    async fn create_account(&self, account: &NewAccount) -> Result<Created, Error> {
        delegate!(self, client => client.create_account(account).await)
    }

    async fn update_account(
        &self,
        account: AccountRef<'_>,
        update: &AccountUpdate,
    ) -> Result<Outcome, Error> {
        delegate!(self, client => client.update_account(account, update).await)
    }

    async fn deactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        delegate!(self, client => client.deactivate_account(account).await)
    }

    async fn reactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        delegate!(self, client => client.reactivate_account(account).await)
    }

    async fn delete_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        delegate!(self, client => client.delete_account(account).await)
    }

    async fn create_group(&self, name: &str) -> Result<Outcome, Error> {
        delegate!(self, client => client.create_group(name).await)
    }

    async fn delete_group(&self, name: &str) -> Result<Outcome, Error> {
        delegate!(self, client => client.delete_group(name).await)
    }

    async fn add_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        delegate!(self, client => client.add_member(group, account).await)
    }

    async fn add_member_to_groups(
        &self,
        groups: &[String],
        account: AccountRef<'_>,
    ) -> Vec<Result<Outcome, Error>> {
        delegate!(self, client => client.add_member_to_groups(groups, account).await)
    }

    async fn remove_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        delegate!(self, client => client.remove_member(group, account).await)
    }
}

/// A random password for products that require one on create; 24 characters from a
/// 62-letter alphabet (about 143 bits).
fn random_password() -> Secret {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let password: String = (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    Secret::new(password)
}

/// Whether an existing account carries the same data as the one we meant to create; logins
/// and emails compare case-insensitively, and an email the product does not report matches.
fn same_account(existing: &RemoteAccount, wanted: &NewAccount) -> bool {
    existing.login.eq_ignore_ascii_case(&wanted.login)
        && existing.display_name == wanted.display_name
        && existing
            .email
            .as_deref()
            .is_none_or(|email| email.eq_ignore_ascii_case(&wanted.email))
}
