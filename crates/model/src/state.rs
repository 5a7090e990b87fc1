//! The product side of a sync: what one Atlassian product (Jira, Confluence or Bitbucket Data
//! Center) has now, and what it can do. The accounts, groups and memberships come from the product;
//! whether keysync manages an account or a group comes from keysync's own cache, because the
//! product does not know.

crate::string_id! {
    /// The product's own stable id of an account: the Jira user key, the Confluence userKey, the
    /// Bitbucket user id or slug. It survives renames, unlike the login name.
    AccountId
}

crate::string_id! {
    /// A product group name. Atlassian products compare group names case-insensitively, and so does
    /// the plan. Clones share one allocation, so memberships can hold the name without copying it.
    GroupName
}

crate::string_id! {
    /// The name of a Keycloak connector (`[keycloak.<name>]`): the owner of the accounts and
    /// groups its runs created or linked.
    ConnectorName
}

/// An Atlassian product keysync writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Product {
    Jira,
    Confluence,
    Bitbucket,
}

impl Product {
    /// The lower-case name used in change ids, reasons and configuration: `jira`, `confluence`,
    /// `bitbucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Jira => "jira",
            Product::Confluence => "confluence",
            Product::Bitbucket => "bitbucket",
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a product's REST API can do, declared by the product's client (the `atlassian` crate) and
/// given to the plan, which never plans an operation the product lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether an account can be deactivated and reactivated while keeping its history. When not,
    /// the policy's `cleanup.when_cannot_deactivate` says what happens instead.
    pub can_deactivate: bool,
    /// Whether an account's login name can be changed. When not, a renamed Keycloak user keeps the
    /// old login and the plan reports it.
    pub can_rename: bool,
}

impl Capabilities {
    /// The capabilities of current Data Center versions: Jira (8.3 and later) deactivates and
    /// renames; Confluence (8.4 and later) deactivates but has no rename in REST; Bitbucket renames
    /// but cannot deactivate.
    ///
    /// The plan takes what the product's client reports, as keysync's cache records it; these are
    /// only the fallback for a state cached before the capabilities were recorded, and a default
    /// for tests and benchmarks.
    pub fn of(product: Product) -> Capabilities {
        match product {
            Product::Jira => Capabilities {
                can_deactivate: true,
                can_rename: true,
            },
            Product::Confluence => Capabilities {
                can_deactivate: true,
                can_rename: false,
            },
            Product::Bitbucket => Capabilities {
                can_deactivate: false,
                can_rename: true,
            },
        }
    }
}

/// Everything one product has now, as far as keysync is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductState {
    pub product: Product,
    pub capabilities: Capabilities,
    pub accounts: Vec<Account>,
    pub groups: Vec<Group>,
    pub memberships: Vec<Membership>,
    /// The projects and components each account leads (Jira); empty elsewhere. Jira refuses
    /// to deactivate a project or component lead, or to delete a project lead, so the plan
    /// hands the lead over first (`cleanup.lead_replacement`) or leaves the account as it is.
    pub leads: Vec<Lead>,
    /// The licence seats when the product reports them; `None` when it does not, and the plan
    /// then assumes no limit.
    pub seats: Option<Seats>,
}

/// A Jira project or component that an account leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lead {
    pub account_id: AccountId,
    pub target: LeadTarget,
}

/// What an account leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl LeadTarget {
    /// Whether Jira refuses to delete the lead (only project leads: deleting a component lead
    /// makes the project lead take the component over).
    pub fn blocks_deletion(&self) -> bool {
        matches!(self, LeadTarget::Project { .. })
    }
}

impl std::fmt::Display for LeadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeadTarget::Project { key } => write!(f, "project {key}"),
            LeadTarget::Component {
                project_key, name, ..
            } => write!(f, "component {name} of project {project_key}"),
        }
    }
}

/// A product's licence seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// Seats taken when the state was read.
    pub used: u64,
    /// Seats the licence has; `None` for an unlimited licence.
    pub limit: Option<u64>,
}

impl ProductState {
    /// A product with no accounts and no groups, with the capabilities of [`Capabilities::of`].
    pub fn empty(product: Product) -> ProductState {
        ProductState {
            product,
            capabilities: Capabilities::of(product),
            accounts: Vec::new(),
            groups: Vec::new(),
            memberships: Vec::new(),
            leads: Vec::new(),
            seats: None,
        }
    }
}

/// A product account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// The login name (Jira and Bitbucket `name`, Confluence `username`). Compared
    /// case-insensitively.
    pub login: String,
    pub display_name: String,
    pub email: Option<String>,
    pub active: bool,
    /// The Keycloak user this account mirrors, set when keysync manages the account: it created it,
    /// or linked it on first sync. `None` means keysync never changes the account. Keeping the
    /// Keycloak id (not the username) makes a renamed Keycloak user a rename in the product, not a
    /// delete and a create.
    pub keycloak_user_id: Option<crate::snapshot::UserId>,
    /// The connector whose runs manage the account: the one that created or linked it. Only its
    /// runs change the account; to every other connector it is a login and an email that are
    /// taken. `None` in states cached before connectors owned accounts (see
    /// [`crate::policy::ValidPolicy::for_connector`] for how those are read).
    pub connector: Option<ConnectorName>,
    /// Whether the product reports that the account holds administrator rights (Bitbucket's
    /// global `ADMIN` or `SYS_ADMIN` permission). keysync never links, renames, deactivates or
    /// otherwise changes such an account, like one in a protected group.
    pub administrator: bool,
}

impl Account {
    /// Whether keysync manages this account.
    pub fn is_managed(&self) -> bool {
        self.keycloak_user_id.is_some()
    }
}

/// A product group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: GroupName,
    /// Whether keysync created this group. Groups a mapping points at are managed while the mapping
    /// lasts, whoever created them; only groups keysync created can be removed by it.
    pub managed: bool,
    /// The connector whose run created the group, when keysync did: only its runs remove it, or
    /// prune members from it when no mapping names it. `None` in states cached before connectors
    /// owned groups.
    pub connector: Option<ConnectorName>,
}

/// An account's membership of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub account_id: AccountId,
    pub group: GroupName,
}
