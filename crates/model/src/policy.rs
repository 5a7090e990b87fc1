//! The sync policy: everything a user configures about *what* keysync syncs, each part with its
//! default, and the validation that turns a [`Policy`] into the [`ValidPolicy`] that
//! [`crate::plan::plan`] takes.
//!
//! These are the only serializable types of the crate: the configuration file's `policy` section
//! deserializes into [`Policy`]. Field names are snake_case, unknown fields are errors, and a
//! missing field takes the default documented on it (the `Default` impls below are the one place
//! the defaults are written).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mapping::{Glob, GroupMapper, Template};
use crate::state::ConnectorName;

/// The whole sync policy for one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Which Keycloak users are synced.
    pub scope: Scope,
    /// How an account's login name, display name and email derive from a Keycloak user.
    pub attributes: Attributes,
    /// Which Keycloak groups become product groups, how they are named, and the default groups.
    pub groups: Groups,
    /// How existing product accounts that keysync does not manage yet are taken over on first sync.
    pub linking: Linking,
    /// What happens to the accounts of users who left Keycloak or the scope, and what replaces
    /// deactivation in a product that cannot deactivate.
    pub cleanup: Cleanup,
    /// Login-name patterns of accounts keysync never changes and never links: `*` matches any run
    /// of characters and `?` one character, case-insensitively (`admin`, `svc-*`, `*-bot`).
    /// Default: `["admin", "administrator", "sysadmin"]`.
    pub protected_accounts: Vec<String>,
    /// Product group patterns (the same wildcards): an account in such a group holds the
    /// product's administrator rights, and keysync never links, renames, deactivates or
    /// otherwise changes it, whatever Keycloak says. Default: the administrator groups of
    /// Jira and Confluence Data Center, `["jira-administrators",
    /// "jira-system-administrators", "confluence-administrators"]`.
    pub protected_groups: Vec<String>,
    /// Which kinds of change keysync makes at all; each switch is on by default.
    pub operations: Operations,
    /// When a plan is held until a person approves it.
    pub safety: Safety,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            scope: Scope::default(),
            attributes: Attributes::default(),
            groups: Groups::default(),
            linking: Linking::default(),
            cleanup: Cleanup::default(),
            protected_accounts: vec![
                "admin".to_owned(),
                "administrator".to_owned(),
                "sysadmin".to_owned(),
            ],
            protected_groups: vec![
                "jira-administrators".to_owned(),
                "jira-system-administrators".to_owned(),
                "confluence-administrators".to_owned(),
            ],
            operations: Operations::default(),
            safety: Safety::default(),
        }
    }
}

/// Which Keycloak users are synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scope {
    /// Full paths of Keycloak groups (`/staff`); only their members are synced. Default: empty,
    /// which syncs every user of the realm.
    pub required_groups: Vec<String>,
    /// Whether a member of a subgroup (`/staff/devs`) counts as a member of a required group
    /// (`/staff`). Default: `true`.
    pub include_subgroups: bool,
}

impl Default for Scope {
    fn default() -> Scope {
        Scope {
            required_groups: Vec::new(),
            include_subgroups: true,
        }
    }
}

/// How an account's fields derive from a Keycloak user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attributes {
    pub login: LoginMapping,
    pub display_name: DisplayNameMapping,
    pub email: EmailMapping,
}

/// Where the login name comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginMapping {
    /// `"username"`, `"email"` or `{ attribute = "NAME" }` (the attribute's first value). Default:
    /// `"username"`.
    pub from: LoginSource,
    /// Lower-case the login name. Default: `true` (Jira rejects upper-case user names).
    pub lowercase: bool,
    /// Drop everything from the last `@` on, so `ann@example.com` becomes `ann`. Default: `false`.
    pub strip_domain: bool,
    /// What replaces each character (and white space) the product refuses in a login name
    /// (`crate::rules::LoginRules`), for example `"_"`: `ann+jira` becomes `ann_jira` in
    /// Confluence. Default: none: a user whose login the product would refuse is not synced to
    /// it, and the plan says why (`NotSyncable`).
    pub replace_forbidden: Option<String>,
}

impl Default for LoginMapping {
    fn default() -> LoginMapping {
        LoginMapping {
            from: LoginSource::Username,
            lowercase: true,
            strip_domain: false,
            replace_forbidden: None,
        }
    }
}

/// The Keycloak field a login name is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LoginSource {
    Username,
    Email,
    Attribute(String),
}

/// How the display name is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplayNameMapping {
    /// A template over `{username}`, `{email}`, `{firstName}`, `{lastName}` and `{attributes.NAME}`
    /// (the attribute's first value); `{{` and `}}` are literal braces. Runs of whitespace in the
    /// result collapse to one space and the ends are trimmed. It is used for a user who has a value
    /// for each of its placeholders. Default: `"{firstName} {lastName}"`.
    pub template: String,
    /// The template used for a user who lacks a value for one of `template`'s placeholders; for a
    /// user who also lacks one of these, the login name is used. Default: `"{username}"`.
    pub fallback: String,
}

impl Default for DisplayNameMapping {
    fn default() -> DisplayNameMapping {
        DisplayNameMapping {
            template: "{firstName} {lastName}".to_owned(),
            fallback: "{username}".to_owned(),
        }
    }
}

/// Where the email comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailMapping {
    /// `"email"` or `{ attribute = "NAME" }`. Default: `"email"`.
    pub from: EmailSource,
    /// Lower-case the email. Default: `true`. Emails are compared case-insensitively either way.
    pub lowercase: bool,
    /// Treat an email Keycloak has not verified as missing. Default: `false`.
    pub require_verified: bool,
    /// Do not create an account for a user without a usable email (Jira and Bitbucket require one);
    /// the plan reports the user instead. An existing account keeps its email either way. Default:
    /// `true`.
    pub required: bool,
}

impl Default for EmailMapping {
    fn default() -> EmailMapping {
        EmailMapping {
            from: EmailSource::Email,
            lowercase: true,
            require_verified: false,
            required: true,
        }
    }
}

/// The Keycloak field an email is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailSource {
    Email,
    Attribute(String),
}

/// Which Keycloak groups become product groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Groups {
    /// `"all"`; `{ map = { "/KEYCLOAK/PATH" = "product-group", ... } }`; `{ pattern = { regex =
    /// "...", rename = "..." } }`, which syncs the groups whose name (or path, see `naming`) the
    /// regex matches, named by replacing the first match with `rename` (`$1`, `${name}`; default
    /// `$0`, the name unchanged); or `{ map_and_rest = { map = { ... }, rest = "all" } }`, which
    /// maps the listed groups as `map` does and selects every other group as `rest` says (`"all"`,
    /// the default, or `{ pattern = { regex = "...", rename = "..." } }`), named by `naming`.
    /// Default: `"all"`.
    pub select: GroupSelection,
    /// Whether `all`, `pattern` and the rest of `map_and_rest` name a product group after the
    /// Keycloak group's `name` (`devs`) or its full `path` without the leading slash
    /// (`staff/devs`). Default: `"name"`.
    pub naming: GroupNaming,
    /// Keycloak group paths that are never synced, whatever `select` says (a group `map` names
    /// too): an excluded group is the source of no product group, so its members are neither added
    /// to nor kept in a product group because of it. `*` matches any run of characters, `/`
    /// included, and `?` one character, case-insensitively; an entry matches only the paths it
    /// spells, so `"/staff/interns"` leaves out that group and `"/staff/interns/*"` its subgroups.
    /// Scope is not affected: a member of an excluded group that `scope.required_groups` names is
    /// still synced. Each entry starts with `/`. Default: empty.
    pub exclude: Vec<String>,
    /// Product groups a user joins when keysync creates the account; later runs leave these
    /// memberships alone. Missing groups are created. Default: empty.
    pub default_for_new_users: Vec<String>,
    /// Product groups every synced user belongs to, checked on every run (typically the licence
    /// group, such as `jira-software-users`). Missing groups are created. Default: empty.
    pub default_for_all_users: Vec<String>,
    /// Remove a product group keysync created once no mapping or default names it any more. When
    /// `false`, the group stays and only its managed members are removed. Default: `false`
    /// (removing a group also removes the permissions that name it).
    pub remove_unmapped: bool,
    /// Whether keysync removes a synced account from a product group it did not create (a group
    /// the product already had, such as `jira-software-users`, which a mapping names) when the
    /// account's Keycloak user is not in a Keycloak group mapped to it. keysync does not record who
    /// added a membership, so when `false` it never removes a membership from a group it did not
    /// create: members someone added by hand stay, and so do those keysync added itself. It still
    /// removes members who should not be there from the groups it created. Cleanup
    /// (`cleanup.action = "remove_groups"`, and the `when_cannot_deactivate` fallback) is not
    /// affected: it strips a departing account of its managed and default groups either way.
    /// Default: `true`.
    pub remove_unmanaged_members: bool,
}

impl Default for Groups {
    fn default() -> Groups {
        Groups {
            select: GroupSelection::All,
            naming: GroupNaming::Name,
            exclude: Vec::new(),
            default_for_new_users: Vec::new(),
            default_for_all_users: Vec::new(),
            remove_unmapped: false,
            remove_unmanaged_members: true,
        }
    }
}

/// Which Keycloak groups are synced, and to which product group names. Groups that
/// [`Groups::exclude`] names are never synced, whichever selection is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupSelection {
    /// Every Keycloak group, named by `naming`.
    All,
    /// Only the listed Keycloak groups, by full path, each to the product group named here. Several
    /// Keycloak groups may map to one product group; its members are the union.
    Map(BTreeMap<String, String>),
    /// The groups whose name (or path) matches `regex`, renamed by `rename`.
    Pattern {
        regex: String,
        #[serde(default = "default_rename")]
        rename: String,
    },
    /// The groups `map` lists (by full path) to the product groups named there, as with `map`;
    /// every other group as `rest` selects it, named by `naming`. A product group that a listed
    /// group and a group of the rest both name has the members of both, and the plan reports it.
    MapAndRest {
        map: BTreeMap<String, String>,
        /// Default: `"all"`.
        #[serde(default)]
        rest: RestSelection,
    },
}

/// Which Keycloak groups the `rest` of a `map_and_rest` selection syncs: those its `map` does not
/// list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RestSelection {
    /// Every other group, named by `naming`.
    #[default]
    All,
    /// The other groups whose name (or path) matches `regex`, renamed by `rename`, as with
    /// `pattern`.
    Pattern {
        regex: String,
        #[serde(default = "default_rename")]
        rename: String,
    },
}

fn default_rename() -> String {
    "$0".to_owned()
}

/// What an `all` or `pattern` group selection names a product group after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupNaming {
    Name,
    Path,
}

/// How existing accounts are taken over. An account keysync links becomes managed, keeps its id and
/// history, and is updated like any other managed account. Protected accounts and disabled users
/// are never linked.
///
/// Apart from these switches, a managed account whose Keycloak user is missing from the snapshot
/// follows its login to an enabled user in scope who has that login and no account (a user deleted
/// and re-created under the same username): it is linked to the new user, counting toward
/// `safety.max_links`. A protected account, or one another connector may own, never is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Linking {
    /// Link an unmanaged account whose login name equals the user's (case-insensitively). Default:
    /// `true`. When `false`, such a user is reported as a conflict, since the login is taken.
    pub by_login: bool,
    /// Link an unmanaged account whose email equals the user's (case-insensitively) when no login
    /// matches; the account is then renamed to the user's login where the product can rename.
    /// Default: `true`.
    pub by_email: bool,
    /// Link by email only when Keycloak marks the user's email verified. A user who may edit
    /// their own email could otherwise set it to another account's address and receive that
    /// account. An unverified match is a conflict: nothing is linked or created. Default: `true`.
    pub by_email_requires_verified: bool,
}

impl Default for Linking {
    fn default() -> Linking {
        Linking {
            by_login: true,
            by_email: true,
            by_email_requires_verified: true,
        }
    }
}

/// What happens to managed accounts whose Keycloak user is gone or out of scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cleanup {
    /// The account of a user deleted from Keycloak (unless re-created under the same username,
    /// when the account follows it; see [`Linking`]) or no longer in a required group. Default:
    /// `"deactivate"`.
    pub action: CleanupAction,
    /// Used instead of deactivation (for cleanup and for users disabled in Keycloak) where the
    /// product cannot deactivate, which is Bitbucket. Default: `"remove_groups"`, which takes away
    /// the licence where it comes from a managed or default group and keeps the account's history.
    pub when_cannot_deactivate: Fallback,
    /// The login of the Jira account that takes over the projects and components a leaving
    /// account leads. Jira refuses to deactivate a project or component lead, and to delete a
    /// project lead; with this set, the plan hands each such lead to this account just before
    /// the deactivation or deletion (and says so in the change), and without it the account is
    /// left as it is, with a [`crate::plan::DiagnosticKind::Lead`] diagnostic naming what it
    /// leads. The account must exist and be active in Jira. Default: none.
    pub lead_replacement: Option<String>,
}

impl Default for Cleanup {
    fn default() -> Cleanup {
        Cleanup {
            action: CleanupAction::Deactivate,
            when_cannot_deactivate: Fallback::RemoveGroups,
            lead_replacement: None,
        }
    }
}

/// What cleanup does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupAction {
    /// Deactivate the account, keeping its groups; it is reactivated when the user comes back.
    Deactivate,
    /// Delete the account. Its history in the product may be anonymized or lost.
    Delete,
    /// Keep the account active but remove it from every managed group and every default group.
    RemoveGroups,
    /// Leave the account as it is.
    Keep,
}

/// What replaces deactivation in a product that cannot deactivate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    RemoveGroups,
    Delete,
    Keep,
}

/// Which kinds of change keysync makes. A switch that is off leaves the plan without any change
/// of its kinds; the plan is otherwise the same (a `link_user` is planned whatever the switches
/// say), and it reports one [`crate::plan::DiagnosticKind::Disabled`] diagnostic per switch that
/// left something out, counting what would have been done, such as "3 account(s) would be
/// created, but operations.create_users is off". Planning again after applying such a plan leaves
/// nothing that a switch allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Operations {
    /// Create accounts for Keycloak users who have none (`create_user`), with their first
    /// memberships. When off, a user without an account gets none, though an existing account may
    /// still be linked. Default: `true`.
    pub create_users: bool,
    /// Update a synced account's login, display name and email (`update_user`), and reactivate an
    /// inactive account whose user is back (`reactivate_user`). When off, a renamed Keycloak user
    /// keeps the account's old login, and a login only such a rename would free stays taken.
    /// Default: `true`.
    pub update_users: bool,
    /// Create and remove groups (`create_group`, `remove_group`) and add and remove memberships
    /// (`add_membership`, `remove_membership`), for every reason: mapped groups, default groups,
    /// the groups of new accounts, and cleanup's `remove_groups`, which therefore needs this switch
    /// and `deactivate_users`. Default: `true`.
    pub group_changes: bool,
    /// Take access away from the accounts of users who are deleted from Keycloak, out of scope or
    /// disabled, as `cleanup` says: deactivate (`deactivate_user`), delete (`delete_user`), or
    /// strip their groups (`remove_membership`, which also needs `group_changes`). When off, such
    /// accounts stay as they are, and a login only a deletion would free stays taken. Default:
    /// `true`.
    pub deactivate_users: bool,
}

impl Default for Operations {
    fn default() -> Operations {
        Operations {
            create_users: true,
            update_users: true,
            group_changes: true,
            deactivate_users: true,
        }
    }
}

/// The safety limits: when a plan waits until a person approves it. Every way a plan takes
/// access away, or hands an existing account to a Keycloak user, is counted against a limit of
/// its own; a plan over any of them is held, and the hold's reason names each limit that
/// tripped with its numbers. A held plan still lists its changes for review. A snapshot with no
/// users, or with no user in scope, against a product where keysync manages accounts is always
/// held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// Hold a plan in which more than this many accounts lose access (deactivated, deleted, or
    /// stripped of their groups by cleanup). Default: `50`.
    pub max_accounts: u32,
    /// Hold a plan in which more than this percentage (0 to 100) of the managed accounts lose
    /// access. Default: `10`. Small instances hit this first: with 20 managed accounts, 3
    /// departures are held.
    pub max_percent: u32,
    /// Hold a plan that removes more than this many memberships, for any reason (a user left a
    /// mapped group, a group is no longer mapped, cleanup strips groups). Default: `100`.
    pub max_memberships: u32,
    /// Hold a plan that removes more than this percentage (0 to 100) of the memberships of
    /// managed accounts. Default: `10`.
    pub max_memberships_percent: u32,
    /// Hold a plan in which one group loses more than this percentage (0 to 100) of its
    /// members, when at least two of them go: a Keycloak group that vanished or was emptied
    /// by mistake. Default: `50`.
    pub max_group_loss_percent: u32,
    /// Hold a plan that removes more than this many groups (with `groups.remove_unmapped`;
    /// removing a group also removes the permissions that name it). Default: `0`, so every
    /// group removal waits for a person.
    pub max_groups: u32,
    /// Hold a plan that links more than this many existing accounts to Keycloak users, except
    /// on the first sync of a product (while keysync manages no account in it), where linking
    /// the accounts that already exist is the expected migration. Later, a link hands an
    /// account with its history and permissions to whoever holds the matching login or
    /// verified email. A managed account that follows its login to a Keycloak user deleted and
    /// re-created under the same username is linked too, and counts here: the new user is a new
    /// identity that may be another person. Default: `0`, so every later link waits for a person.
    pub max_links: u32,
}

impl Default for Safety {
    fn default() -> Safety {
        Safety {
            max_accounts: 50,
            max_percent: 10,
            max_memberships: 100,
            max_memberships_percent: 10,
            max_group_loss_percent: 50,
            max_groups: 0,
            max_links: 0,
        }
    }
}

/// One problem in a policy, naming the field as it is written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error(
        "{field}: `{value}` is not a Keycloak group path; paths start with `/`, like `/staff/devs`"
    )]
    NotAGroupPath { field: String, value: String },
    #[error("{field}: bad template `{template}`: {problem}")]
    Template {
        field: String,
        template: String,
        problem: String,
    },
    #[error("{field}: bad regex `{regex}`: {problem}")]
    Regex {
        field: String,
        regex: String,
        problem: String,
    },
    #[error("{field}: {value} is not a percentage from 0 to 100")]
    Percent { field: String, value: u32 },
}

/// A policy that passed validation, with its templates, regex and patterns compiled.
/// [`crate::plan::plan`] takes only this, so a plan never meets a broken policy.
#[derive(Debug, Clone)]
pub struct ValidPolicy {
    policy: Policy,
    pub(crate) display_template: Template,
    pub(crate) display_fallback: Template,
    pub(crate) groups: GroupMapper,
    pub(crate) protected: Vec<Glob>,
    pub(crate) protected_groups: Vec<Glob>,
    pub(crate) excluded_groups: Vec<Glob>,
    connector: Option<ConnectorScope>,
}

/// The connector a policy plans for: its accounts and groups are the only ones the plan
/// changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorScope {
    pub name: ConnectorName,
    /// Whether it is the deployment's only connector. Accounts and groups cached before
    /// connectors owned them have no owner: the only connector owns them all; with several,
    /// an account without an owner is a connector's when its Keycloak user is in that
    /// connector's snapshot, and a group without an owner is no connector's to remove.
    pub sole: bool,
}

impl ValidPolicy {
    /// The policy as written.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// This policy, for the runs of connector `name`: a plan then changes only the accounts
    /// and groups that connector owns, and treats every other managed account as a taken
    /// login and email it never links or changes. Without a connector (a policy straight
    /// from [`Policy::validate`]) every managed account and group is the plan's.
    pub fn for_connector(mut self, name: &str, sole: bool) -> ValidPolicy {
        self.connector = Some(ConnectorScope {
            name: ConnectorName::new(name),
            sole,
        });
        self
    }

    /// The connector this policy plans for, if one was set.
    pub fn connector(&self) -> Option<&ConnectorScope> {
        self.connector.as_ref()
    }

    /// Whether a login name matches one of `protected_accounts`.
    pub fn is_protected(&self, login: &str) -> bool {
        matches_any(&self.protected, login)
    }

    /// Whether a product group name matches one of `protected_groups`.
    pub fn is_protected_group(&self, group: &str) -> bool {
        matches_any(&self.protected_groups, group.trim())
    }

    /// Whether a Keycloak group path matches one of `groups.exclude`.
    pub fn is_excluded_group(&self, path: &str) -> bool {
        matches_any(&self.excluded_groups, path.trim())
    }
}

impl Policy {
    /// Checks every field, without side effects, and compiles the templates, the regex and the
    /// patterns. Returns every problem found, not only the first, so `keysync config check` can
    /// list them all.
    pub fn validate(&self) -> Result<ValidPolicy, Vec<PolicyError>> {
        let mut errors = Vec::new();
        for (idx, path) in self.scope.required_groups.iter().enumerate() {
            check_group_path(&format!("scope.required_groups[{idx}]"), path, &mut errors);
        }
        if let LoginSource::Attribute(name) = &self.attributes.login.from {
            check_not_empty("attributes.login.from.attribute", name, &mut errors);
        }
        if let EmailSource::Attribute(name) = &self.attributes.email.from {
            check_not_empty("attributes.email.from.attribute", name, &mut errors);
        }
        let display = &self.attributes.display_name;
        let display_template = compile_template(
            "attributes.display_name.template",
            &display.template,
            &mut errors,
        );
        let display_fallback = compile_template(
            "attributes.display_name.fallback",
            &display.fallback,
            &mut errors,
        );

        if let Some(login) = &self.cleanup.lead_replacement {
            check_not_empty("cleanup.lead_replacement", login.trim(), &mut errors);
        }
        let groups = self.groups.compile(&mut errors);
        for (idx, path) in self.groups.exclude.iter().enumerate() {
            check_group_path(&format!("groups.exclude[{idx}]"), path, &mut errors);
        }
        for (idx, name) in self.groups.default_for_new_users.iter().enumerate() {
            check_not_empty(
                &format!("groups.default_for_new_users[{idx}]"),
                name,
                &mut errors,
            );
        }
        for (idx, name) in self.groups.default_for_all_users.iter().enumerate() {
            check_not_empty(
                &format!("groups.default_for_all_users[{idx}]"),
                name,
                &mut errors,
            );
        }
        for (idx, pattern) in self.protected_accounts.iter().enumerate() {
            check_not_empty(&format!("protected_accounts[{idx}]"), pattern, &mut errors);
        }
        for (idx, pattern) in self.protected_groups.iter().enumerate() {
            check_not_empty(&format!("protected_groups[{idx}]"), pattern, &mut errors);
        }
        for (field, value) in [
            ("safety.max_percent", self.safety.max_percent),
            (
                "safety.max_memberships_percent",
                self.safety.max_memberships_percent,
            ),
            (
                "safety.max_group_loss_percent",
                self.safety.max_group_loss_percent,
            ),
        ] {
            if value > 100 {
                errors.push(PolicyError::Percent {
                    field: field.to_owned(),
                    value,
                });
            }
        }

        match (display_template, display_fallback, groups) {
            (Some(display_template), Some(display_fallback), Some(groups)) if errors.is_empty() => {
                Ok(ValidPolicy {
                    policy: self.clone(),
                    display_template,
                    display_fallback,
                    groups,
                    protected: self
                        .protected_accounts
                        .iter()
                        .map(|pattern| Glob::new(pattern))
                        .collect(),
                    protected_groups: self
                        .protected_groups
                        .iter()
                        .map(|pattern| Glob::new(pattern))
                        .collect(),
                    excluded_groups: self
                        .groups
                        .exclude
                        .iter()
                        .map(|pattern| Glob::new(pattern))
                        .collect(),
                    connector: None,
                })
            }
            _ => Err(errors),
        }
    }
}

impl Groups {
    /// Checks and compiles `select` (with `naming`), naming the field of every error.
    fn compile(&self, errors: &mut Vec<PolicyError>) -> Option<GroupMapper> {
        match &self.select {
            GroupSelection::All => Some(GroupMapper::All {
                naming: self.naming,
            }),
            GroupSelection::Map(map) => {
                check_map("groups.select.map", map, errors);
                Some(GroupMapper::Map(map.clone()))
            }
            GroupSelection::Pattern { regex, rename } => compile_pattern(
                "groups.select.pattern.regex",
                regex,
                rename,
                self.naming,
                errors,
            ),
            GroupSelection::MapAndRest { map, rest } => {
                check_map("groups.select.map_and_rest.map", map, errors);
                let rest = match rest {
                    RestSelection::All => Some(GroupMapper::All {
                        naming: self.naming,
                    }),
                    RestSelection::Pattern { regex, rename } => compile_pattern(
                        "groups.select.map_and_rest.rest.pattern.regex",
                        regex,
                        rename,
                        self.naming,
                        errors,
                    ),
                }?;
                Some(GroupMapper::MapAndRest {
                    map: map.clone(),
                    rest: Box::new(rest),
                })
            }
        }
    }

    /// The explicit map of `select`, for a `map` or a `map_and_rest` selection.
    pub(crate) fn explicit_map(&self) -> Option<&BTreeMap<String, String>> {
        match &self.select {
            GroupSelection::Map(map) | GroupSelection::MapAndRest { map, .. } => Some(map),
            GroupSelection::All | GroupSelection::Pattern { .. } => None,
        }
    }
}

fn check_map(field: &str, map: &BTreeMap<String, String>, errors: &mut Vec<PolicyError>) {
    for (path, name) in map {
        check_group_path(&format!("{field}[\"{path}\"]"), path, errors);
        check_not_empty(&format!("{field}[\"{path}\"]"), name, errors);
    }
}

fn compile_pattern(
    field: &str,
    regex: &str,
    rename: &str,
    naming: GroupNaming,
    errors: &mut Vec<PolicyError>,
) -> Option<GroupMapper> {
    match regex::Regex::new(regex) {
        Ok(compiled) => Some(GroupMapper::Pattern {
            regex: compiled,
            rename: rename.to_owned(),
            naming,
        }),
        Err(error) => {
            errors.push(PolicyError::Regex {
                field: field.to_owned(),
                regex: regex.to_owned(),
                problem: error.to_string(),
            });
            None
        }
    }
}

fn matches_any(globs: &[Glob], name: &str) -> bool {
    if globs.is_empty() {
        return false;
    }
    let folded = crate::mapping::fold(name);
    globs.iter().any(|glob| glob.matches(&folded))
}

fn check_not_empty(field: &str, value: &str, errors: &mut Vec<PolicyError>) {
    if value.trim().is_empty() {
        errors.push(PolicyError::Empty {
            field: field.to_owned(),
        });
    }
}

fn check_group_path(field: &str, value: &str, errors: &mut Vec<PolicyError>) {
    if !value.starts_with('/') || value.len() < 2 {
        errors.push(PolicyError::NotAGroupPath {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
}

fn compile_template(
    field: &str,
    template: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<Template> {
    match Template::parse(template) {
        Ok(compiled) => Some(compiled),
        Err(problem) => {
            errors.push(PolicyError::Template {
                field: field.to_owned(),
                template: template.to_owned(),
                problem,
            });
            None
        }
    }
}
