//! The pure core of keysync: the Keycloak snapshot, a product's state, the sync policy, and the
//! plan function that turns them into the exact changes a product needs.
//!
//! ```text
//! plan(&Snapshot, &ProductState, &ValidPolicy) -> Plan
//! apply(ProductState, &[Change], new_account_id) -> ProductState
//!     = Applied::new(state), then Applied::apply_one(change, new_account_id) for each change
//! ```
//!
//! **Architecture invariant:** `model` knows nothing of NATS, gRPC, protobuf, HTTP, tokio or the
//! clock. It takes data and returns data; time and ids come in as arguments. Only the policy types
//! derive serde (the configuration file deserializes them); the services convert the other types to
//! and from their wire types by hand. A test (`tests/tidy.rs`) keeps IO crates out of this crate's
//! dependencies.
//!
//! Types to read first: [`snapshot::Snapshot`] (the Keycloak side), [`state::ProductState`] (the
//! product side, with keysync's knowledge of which accounts it manages), [`policy::Policy`],
//! [`plan::plan`] and [`plan::Plan`].
//!
//! # What a plan does
//!
//! [`plan::plan`] is pure, deterministic (the same inputs give the same changes in the same order,
//! whatever the order of the input vectors) and total (odd input becomes a [`plan::Diagnostic`],
//! never a panic). Its changes come in the order they can safely be applied: create groups, create
//! users, link users, update users, reactivate, add memberships, remove memberships, deactivate or
//! delete users, remove groups; within each kind, by login or group name. Every change has a
//! deterministic id and a reason a person can read, and carries everything an applier needs. A user
//! created by the plan has no product id yet, so the plan's later changes name it by login
//! ([`plan::AccountRef::New`]).
//!
//! Logins, emails and group names are compared case-insensitively, as the Atlassian products
//! compare them, with Unicode lower case ([`mapping::fold`]).
//!
//! # The policy, with its defaults
//!
//! **Scope** ([`policy::Scope`]). With `required_groups` empty (the default) every Keycloak user is
//! synced. Otherwise only members of a required group (given by full path, like `/staff`) are; with
//! `include_subgroups = true` (the default) a member of `/staff/devs` counts. The group tree is
//! walked once.
//!
//! **Attributes** ([`policy::Attributes`]). The login comes `from` the `username` (default), the
//! `email`, or an `attribute`, lower-cased (default on) and optionally with the domain stripped
//! (default off). A login the product's documented rules refuse ([`rules::LoginRules`]:
//! Confluence's user names) is mapped through `replace_forbidden` when it is set (default unset),
//! else the user is not synced to that product ([`plan::DiagnosticKind::NotSyncable`], naming the
//! rule). The display name is the `template` (default `{firstName} {lastName}`) for a user
//! who has a value for each of its placeholders, else the `fallback` (default `{username}`) on the
//! same condition, else the login. The email comes `from` the `email` (default) or an attribute,
//! lower-cased (default on); unverified emails can be treated as missing (default off); a user with
//! no usable email gets no new account when `required` (default on), and an existing account keeps
//! its email.
//!
//! **Groups** ([`policy::Groups`]). `select` is `all` Keycloak groups (default), an explicit `map`
//! from group path to product group, a regex `pattern` with a `rename` template, or `map_and_rest`:
//! the groups its `map` lists as `map` does, every other group as its `rest` says (`all`, the
//! default, or a `pattern`). `naming` is by `name` (default) or by `path`, for every group a map
//! does not name. `exclude` (default empty) lists Keycloak group paths, with `*` and `?` wildcards
//! compared case-insensitively, that are never synced whatever `select` says: an excluded group is
//! the source of no product group (it still counts for scope). Product groups that a mapping or a
//! default names are created when missing. For a synced user, keysync adds the memberships of its
//! mapped groups and of `default_for_all_users`, and removes memberships of groups keysync
//! *manages* (mapped in this run, or created by keysync) that the user should not have; default
//! groups are never pruned, and `default_for_new_users` are only given at creation. With
//! `remove_unmanaged_members = false` (default `true`) keysync never prunes a group it did not
//! create, even a mapped one (it does not record who added a membership, so this keeps every
//! member of such a group, including those keysync added); cleanup still strips groups as it says.
//! Memberships in groups keysync does not manage are left alone. Groups keysync created and no
//! longer maps are removed only with `remove_unmapped = true` (default off).
//!
//! **Lifecycle.** A Keycloak user who is disabled gets its account deactivated; a disabled user
//! with no account is neither created nor linked. A user back in scope and enabled is reactivated.
//!
//! **Cleanup** ([`policy::Cleanup`]). The account of a user deleted from Keycloak (and not
//! re-created, see below) or out of scope is deactivated (default), deleted, stripped of its
//! managed and default groups (`remove_groups`), or kept. A product that cannot deactivate
//! declares it ([`state::Capabilities`]; Bitbucket) and `when_cannot_deactivate` says what happens
//! instead: `remove_groups` (default), `delete` or `keep`. The same fallback applies to disabled
//! users.
//!
//! **Managed accounts only** ([`policy::Linking`]). keysync changes only accounts it manages: those
//! it created, and existing accounts it linked, by login (case-insensitive; default
//! on) or else by email (default on) — by email only when Keycloak marks the user's email
//! verified (`by_email_requires_verified`, default on; an unverified match is a conflict, so a user
//! who edits their own email cannot take over another account) — which keeps their history. A link is itself a change
//! ([`plan::Action::LinkUser`]) whose reason gives the evidence (same login, same verified email),
//! so a simulated run shows it. Accounts whose login matches
//! `protected_accounts` (default `admin`, `administrator`, `sysadmin`; `*` and `?` wildcards) are
//! never changed or linked, and no account is created with such a login. Nor are accounts in a
//! product group matching `protected_groups` (default `jira-administrators`,
//! `jira-system-administrators`, `confluence-administrators`): they hold the product's
//! administrator rights, and keysync leaves them alone whatever Keycloak says.
//!
//! **Re-created users.** A Keycloak user deleted and re-created under the same username gets a new
//! id. When a managed account's Keycloak user is missing from the snapshot and an enabled user in
//! scope, with no account of its own, has the account's login, the account follows the login: it
//! is linked to the new user ([`plan::Action::LinkUser`], which counts toward `safety.max_links`)
//! and updated and reactivated as needed, and a [`plan::DiagnosticKind::Recreated`] diagnostic
//! says so. A protected account, or one another connector may own, is never relinked; its login
//! stays taken.
//!
//! **Conflicts.** Two Keycloak users mapping to one login are reported as a [`plan::Conflict`] for
//! both, and neither is synced (their existing accounts are left as they are). So are a login held
//! by another account that this plan does not free (and that does not follow the login to its
//! user, see above), and an email matching several accounts. When a rename or a creation needs a
//! login that this plan frees (by renaming or deleting its holder), it is deferred to the next run
//! with a [`plan::DiagnosticKind::Deferred`] diagnostic, because creates and renames come before
//! deletes.
//!
//! **Operations** ([`policy::Operations`]). Four switches, each on by default, say which kinds of
//! change keysync makes at all: `create_users` (new accounts, with their first memberships),
//! `update_users` (login, display name and email, and reactivation), `group_changes` (creating and
//! removing groups, adding and removing memberships, for any reason) and `deactivate_users`
//! (taking access away from the accounts of users deleted, out of scope or disabled: deactivation,
//! deletion, or stripping groups, which also needs `group_changes`). Links are always planned. A
//! switch that is off leaves its changes out of the plan, and the plan reports one
//! [`plan::DiagnosticKind::Disabled`] diagnostic per switch that left something out, counting it
//! ("3 account(s) would be created, but operations.create_users is off"); a login that only a
//! left-out rename or deletion would free stays taken (a conflict, not a deferral).
//!
//! **Safety** ([`policy::Safety`]). Every change that takes access away, or hands an existing
//! account to a Keycloak user, is counted in the plan's [`plan::SafetyCounts`], and each count has
//! its own limit: accounts losing access (deactivated, deleted, or stripped of their groups by
//! cleanup; more than `max_accounts`, default 50, or `max_percent` of the managed accounts,
//! default 10 %), memberships removed for any reason (`max_memberships`, default 100, or
//! `max_memberships_percent` of the managed accounts' memberships, default 10 %), one group
//! losing more than `max_group_loss_percent` of its members (default 50 %, when two or more go),
//! groups removed (`max_groups`, default 0), and accounts linked after a product's first sync,
//! including accounts following a re-created user (`max_links`, default 0; on the first sync,
//! while keysync manages no account in the product, linking the accounts that exist is the
//! expected migration, and each link's reason says which case it is). Only the changes the plan
//! has are counted, not those an operation switch left out. A mapped Keycloak group missing from
//! the snapshot (and not excluded) whose product group would lose members holds the plan too.
//! Over any limit, the plan carries a [`plan::Hold`] naming every limit that tripped, with its
//! numbers. A snapshot with no users, or with no user in scope, against a product where keysync
//! manages accounts is always held. A held plan still lists its changes, so a person can review
//! them before approving.
//!
//! [`policy::Policy::validate`] checks a policy and compiles it into the [`policy::ValidPolicy`]
//! that `plan` takes; every error names its field, such as `groups.select.pattern.regex`.
//!
//! # Applying, and keysync's cache
//!
//! The product does not know which accounts keysync manages; keysync's cache does, as
//! [`state::Account::keycloak_user_id`] and [`state::Group::managed`]. [`apply::apply`] computes the
//! state after some changes, which the property tests use to check that planning again after
//! applying leaves nothing to do; the appliers keep the cache with the same rules, one change at a
//! time as the product answers ([`apply::Applied::apply_one`]).
//!
//! # Cost
//!
//! A million users, a hundred thousand groups and five million memberships plan in 1.6 to 1.8 s on
//! a shared two-core machine, in about 1.6 GiB including the inputs (`cargo bench -p model --bench
//! plan`). Ids are `Arc<str>` newtypes that carry their hash, so an index lookup reads one table
//! slot and never the string; callers that build memberships from the user's and group's own ids
//! (`id.clone()`) also keep the inputs small. The Keycloak and product sides are indexed on two
//! threads at once, and the accounts are planned in two halves; the output is sorted, so the split
//! never shows.

pub mod apply;
pub mod delta;
pub mod mapping;
pub mod plan;
pub mod policy;
pub mod rules;
pub mod snapshot;
pub mod state;

mod hash;

/// Defines a string id newtype over `Arc<str>`: cheap to clone, ordered as the string, and carrying
/// its hash, computed once when made, so that the plan's indexes never read the string to hash it
/// and, when two ids share one allocation, never read it to compare them either.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name {
            hash: u64,
            text: std::sync::Arc<str>,
        }

        impl $name {
            pub fn new(id: impl Into<std::sync::Arc<str>>) -> $name {
                let text = id.into();
                $name { hash: crate::hash::hash_str(&text), text }
            }

            pub fn as_str(&self) -> &str {
                &self.text
            }

            #[allow(dead_code)]
            pub(crate) fn key(&self) -> crate::hash::IdKey<'_> {
                crate::hash::IdKey { hash: self.hash, text: &self.text }
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                // Ids cloned from one another share their text, so that is checked before the
                // bytes.
                self.hash == other.hash
                    && (std::sync::Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &$name) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &$name) -> std::cmp::Ordering {
                self.text.cmp(&other.text)
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                state.write_u64(self.hash);
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&*self.text, f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.text)
            }
        }
    };
}
pub(crate) use string_id;
