//! The snapshot algorithm: a complete, consistent copy of one realm's users, groups and
//! direct memberships, or an error; never a part of one.
//!
//! One pass over the whole realm:
//!
//! 1. `/users/count` and `/groups/count`.
//! 2. At the same time, over the client's shared concurrency limit:
//!    - users, full representation (for `attributes`), in pages by offset fetched
//!      concurrently; one page more than the count asks for proves the end, and more
//!      follow while the last page comes back full. De-duplicated by id; service accounts
//!      dropped;
//!    - the group tree: top-level groups in pages, then `/groups/{id}/children` paged for
//!      every group with `subGroupCount > 0` (since Keycloak 23 `/groups` leaves
//!      `subGroups` empty; older servers fill it, and then it is used instead);
//!    - for every group as soon as it is known, its direct members (brief representation,
//!      only the ids are read), paged.
//! 3. The counts again. The pass stands only if both counts are unchanged and equal to
//!    what was read, and every member is a user that was read (or a service account, then
//!    left out). Otherwise the directory changed while it was read: the pass is thrown away
//!    and the fetch starts over, three passes at most, then [`Error::Changed`].
//!
//! With `required_groups`, the pass reads the whole group tree, then only the members of
//! the required groups and their subgroups (full representation), and every direct
//! membership of those users (`/users/{id}/groups`), so the plan sees all their groups.
//!
//! Offset paging is not a snapshot (Keycloak orders users by username; an insert or a
//! delete shifts the pages), which is why the counts are compared; a change that keeps
//! every count (a rename, a membership moved) between two reads is not detected.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream::FuturesUnordered};
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};

use crate::{
    Error,
    client::{Client, Endpoint},
    representation::{GroupCount, GroupRepresentation, MemberRepresentation, UserRepresentation},
};

/// Passes before the fetch gives up on a directory that keeps changing.
const PASSES: u32 = 3;

/// Members that are not among the users read, looked up one by one before the pass is
/// declared changed; more than this means the directory changed.
const MAX_UNKNOWN_MEMBERS: usize = 100;

impl Client {
    /// Reads the realm (or, with `required_groups`, the members of those groups) into a
    /// snapshot; see the module documentation for how it stays consistent. Users are
    /// sorted by username, groups by path, memberships by group then user.
    #[tracing::instrument(skip(self), fields(realm = %self.settings().realm))]
    pub async fn fetch(&self) -> Result<Snapshot, Error> {
        let started = std::time::Instant::now();
        let mut detail = String::new();
        for pass in 1..=PASSES {
            let outcome = if self.settings().required_groups.is_empty() {
                self.fetch_realm().await
            } else {
                self.fetch_required_groups().await
            };
            match outcome {
                Ok(snapshot) => {
                    tracing::info!(
                        users = snapshot.users.len(),
                        groups = snapshot.groups.len(),
                        memberships = snapshot.memberships.len(),
                        pass,
                        requests = self.progress().requests(),
                        seconds = started.elapsed().as_secs_f64(),
                        "Fetched the realm."
                    );
                    return Ok(snapshot);
                }
                Err(Pass::Failed(error)) => return Err(error),
                Err(Pass::Changed(why)) => {
                    tracing::warn!(pass, reason = %why, "The directory changed during the fetch; reading it again.");
                    detail = why;
                }
            }
        }
        Err(Error::Changed {
            attempts: PASSES,
            detail,
        })
    }

    async fn fetch_realm(&self) -> Result<Snapshot, Pass> {
        // One after the other, so that a service account without roles is told about
        // `view-users` (which implies `query-groups`) first, every time.
        let users_before = self.count_users().await?;
        let groups_before = self.count_groups().await?;
        let (users, tree) = futures::try_join!(
            self.fetch_users(users_before),
            self.fetch_tree(Members::Listed)
        )?;
        let (users_after, groups_after) =
            futures::try_join!(self.count_users(), self.count_groups())?;
        if users_before != users_after || users.listed != users_after {
            return Err(Pass::Changed(format!(
                "{users_before} users counted before, {} read, {users_after} counted after",
                users.listed
            )));
        }
        if groups_before != groups_after || tree.groups.len() as u64 != groups_after {
            return Err(Pass::Changed(format!(
                "{groups_before} groups counted before, {} read, {groups_after} counted after",
                tree.groups.len()
            )));
        }
        let mut unknown: BTreeMap<String, Vec<GroupId>> = BTreeMap::new();
        let mut memberships =
            Vec::with_capacity(tree.members.iter().map(|(_, ids)| ids.len()).sum());
        for (group_id, member_ids) in tree.members {
            for member_id in member_ids {
                match users.by_id.get_key_value(&UserId::new(member_id.as_str())) {
                    Some((user_id, _)) => memberships.push(KeycloakMembership {
                        user_id: user_id.clone(),
                        group_id: group_id.clone(),
                    }),
                    None => unknown.entry(member_id).or_default().push(group_id.clone()),
                }
            }
        }
        self.check_unknown_members(unknown.into_keys().collect())
            .await?;
        Ok(finish(
            users.by_id.into_values().collect(),
            tree.groups,
            memberships,
        ))
    }

    async fn fetch_required_groups(&self) -> Result<Snapshot, Pass> {
        let groups_before = self.count_groups().await?;
        let tree = self.fetch_tree(Members::NotListed).await?;
        let groups_after = self.count_groups().await?;
        if groups_before != groups_after || tree.groups.len() as u64 != groups_after {
            return Err(Pass::Changed(format!(
                "{groups_before} groups counted before, {} read, {groups_after} counted after",
                tree.groups.len()
            )));
        }
        let mut children: HashMap<&str, Vec<&GroupId>> = HashMap::new();
        for group in &tree.groups {
            if let Some(parent) = &group.parent_id {
                children.entry(parent.as_str()).or_default().push(&group.id);
            }
        }
        let mut scoped: Vec<GroupId> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for path in &self.settings().required_groups {
            let Some(root) = tree.groups.iter().find(|group| &group.path == path) else {
                return Err(Pass::Failed(Error::RequiredGroupMissing {
                    path: path.clone(),
                }));
            };
            let mut stack = vec![&root.id];
            while let Some(group_id) = stack.pop() {
                if !seen.insert(group_id.as_str()) {
                    continue;
                }
                scoped.push(group_id.clone());
                stack.extend(children.get(group_id.as_str()).into_iter().flatten());
            }
        }
        let concurrency = self.settings().concurrency;
        let mut users: HashMap<UserId, KeycloakUser> = HashMap::new();
        // Owned ids in the streams: futures that borrow from their stream's items are not
        // `Send` for every lifetime, which `tokio::spawn` needs.
        let mut member_pages = futures::stream::iter(scoped)
            .map(|group_id| async move { self.full_members(&group_id).await })
            .buffer_unordered(concurrency);
        while let Some(members) = member_pages.next().await {
            for user in members? {
                if user.service_account_client_id.is_none() {
                    let user = user_from(user);
                    users.entry(user.id.clone()).or_insert(user);
                }
            }
        }
        drop(member_pages);
        let known_groups: HashMap<&str, &GroupId> = tree
            .groups
            .iter()
            .map(|group| (group.id.as_str(), &group.id))
            .collect();
        let mut memberships = Vec::new();
        let user_ids: Vec<UserId> = users.keys().cloned().collect();
        let mut groups_of_users = futures::stream::iter(user_ids)
            .map(|user_id| async move {
                let groups = self.groups_of(&user_id).await?;
                Ok::<_, Error>((user_id, groups))
            })
            .buffer_unordered(concurrency);
        while let Some((user_id, groups)) = groups_of_users.try_next().await? {
            for group in groups {
                let Some(group_id) = known_groups.get(group.id.as_str()) else {
                    return Err(Pass::Changed(format!(
                        "user {user_id} is a member of group {} ({}), which was not in the tree",
                        group.id,
                        group.path.unwrap_or_default()
                    )));
                };
                memberships.push(KeycloakMembership {
                    user_id: user_id.clone(),
                    group_id: (*group_id).clone(),
                });
            }
        }
        drop(groups_of_users);
        drop(known_groups);
        Ok(finish(
            users.into_values().collect(),
            tree.groups,
            memberships,
        ))
    }

    async fn count_users(&self) -> Result<u64, Error> {
        self.get(Endpoint::UsersCount, &["users", "count"], &[])
            .await
    }

    async fn count_groups(&self) -> Result<u64, Error> {
        let count: GroupCount = self
            .get(Endpoint::GroupsCount, &["groups", "count"], &[])
            .await?;
        Ok(count.count)
    }

    async fn fetch_users(&self, count: u64) -> Result<Users, Error> {
        let page_size = u64::from(self.settings().page_size);
        // One page past the count: a short (or empty) last page proves the end.
        let pages = count / page_size + 1;
        let mut users = Users {
            by_id: HashMap::with_capacity(usize::try_from(count).unwrap_or(0)),
            listed: 0,
            seen_service_accounts: HashSet::new(),
        };
        let mut last_page_full = false;
        let mut stream = futures::stream::iter(0..pages)
            .map(|page| async move {
                let first = page * page_size;
                self.user_page(first).await.map(|users| (page, users))
            })
            .buffer_unordered(self.settings().concurrency);
        while let Some(result) = stream.next().await {
            let (page, page_users) = result?;
            if page + 1 == pages && page_users.len() as u64 == page_size {
                last_page_full = true;
            }
            users.add(page_users, self);
        }
        drop(stream);
        // Users were added since the count: read on until a page comes back short.
        let mut first = pages * page_size;
        while last_page_full {
            let page_users = self.user_page(first).await?;
            last_page_full = page_users.len() as u64 == page_size;
            users.add(page_users, self);
            first += page_size;
        }
        Ok(users)
    }

    async fn user_page(&self, first: u64) -> Result<Vec<UserRepresentation>, Error> {
        let first = first.to_string();
        let max = self.settings().page_size.to_string();
        self.get(
            Endpoint::Users,
            &["users"],
            &[
                ("first", &first),
                ("max", &max),
                ("briefRepresentation", "false"),
            ],
        )
        .await
    }

    /// The whole group tree and, with [`Members::Listed`], every group's direct members.
    async fn fetch_tree(&self, members: Members) -> Result<Tree, Error> {
        let page_size = u64::from(self.settings().page_size);
        let top_count: GroupCount = self
            .get(
                Endpoint::GroupsCount,
                &["groups", "count"],
                &[("top", "true")],
            )
            .await?;
        let pages = top_count.count / page_size + 1;
        let mut tree = Tree::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pending = FuturesUnordered::new();
        let mut top_pages = futures::stream::iter(0..pages)
            .map(|page| self.group_page(Endpoint::Groups, &["groups"], page * page_size))
            .buffered(self.settings().concurrency);
        let mut last_page_full = false;
        let mut page_count = 0;
        while let Some(page) = top_pages.next().await {
            let page = page?;
            page_count += 1;
            last_page_full = page.len() as u64 == page_size;
            for group in page {
                self.add_group(group, None, members, &mut tree, &mut seen, &mut pending);
            }
        }
        drop(top_pages);
        let mut first = page_count * page_size;
        while last_page_full {
            let page = self
                .group_page(Endpoint::Groups, &["groups"], first)
                .await?;
            last_page_full = page.len() as u64 == page_size;
            first += page_size;
            for group in page {
                self.add_group(group, None, members, &mut tree, &mut seen, &mut pending);
            }
        }
        while let Some(done) = pending.next().await {
            match done? {
                Done::Children { parent, groups } => {
                    for group in groups {
                        self.add_group(
                            group,
                            Some(parent.clone()),
                            members,
                            &mut tree,
                            &mut seen,
                            &mut pending,
                        );
                    }
                }
                Done::Members { group, member_ids } => {
                    self.progress().add_memberships(member_ids.len());
                    tree.members.push((group, member_ids));
                }
            }
        }
        Ok(tree)
    }

    /// Records a group (and the subgroups an old server embeds) and queues the requests
    /// for its children and members.
    fn add_group<'a>(
        &'a self,
        group: GroupRepresentation,
        parent: Option<GroupId>,
        members: Members,
        tree: &mut Tree,
        seen: &mut HashSet<String>,
        pending: &mut FuturesUnordered<TaskFuture<'a>>,
    ) {
        let mut stack = vec![(group, parent)];
        while let Some((group, parent)) = stack.pop() {
            if !seen.insert(group.id.clone()) {
                continue;
            }
            let id = GroupId::new(group.id);
            let path = group.path.unwrap_or_else(|| {
                let parent_path = parent
                    .as_ref()
                    .and_then(|parent| tree.groups.iter().find(|known| &known.id == parent))
                    .map(|known| known.path.as_str())
                    .unwrap_or("");
                format!("{parent_path}/{}", group.name)
            });
            match group.sub_group_count {
                Some(0) => {}
                Some(_) => pending.push(Box::pin(self.run(Task::Children(id.clone())))),
                // A server older than Keycloak 23 embeds the whole tree.
                None => stack.extend(
                    group
                        .sub_groups
                        .into_iter()
                        .map(|child| (child, Some(id.clone()))),
                ),
            }
            if members == Members::Listed {
                pending.push(Box::pin(self.run(Task::Members(id.clone()))));
            }
            self.progress().add_groups(1);
            tree.groups.push(KeycloakGroup {
                id,
                name: group.name,
                path,
                parent_id: parent,
            });
        }
    }

    async fn run(&self, task: Task) -> Result<Done, Error> {
        let page_size = self.settings().page_size as usize;
        match task {
            Task::Children(parent) => {
                let mut groups = Vec::new();
                loop {
                    let page = self
                        .group_page(
                            Endpoint::Children,
                            &["groups", parent.as_str(), "children"],
                            groups.len() as u64,
                        )
                        .await?;
                    let short = page.len() < page_size;
                    groups.extend(page);
                    if short {
                        return Ok(Done::Children { parent, groups });
                    }
                }
            }
            Task::Members(group) => {
                let max = page_size.to_string();
                let mut member_ids = Vec::new();
                loop {
                    let first = member_ids.len().to_string();
                    let page: Vec<MemberRepresentation> = self
                        .get(
                            Endpoint::Members,
                            &["groups", group.as_str(), "members"],
                            &[
                                ("first", &first),
                                ("max", &max),
                                ("briefRepresentation", "true"),
                            ],
                        )
                        .await?;
                    let short = page.len() < page_size;
                    member_ids.extend(page.into_iter().map(|member| member.id));
                    if short {
                        return Ok(Done::Members { group, member_ids });
                    }
                }
            }
        }
    }

    async fn group_page(
        &self,
        endpoint: Endpoint,
        path: &[&str],
        first: u64,
    ) -> Result<Vec<GroupRepresentation>, Error> {
        let first = first.to_string();
        let max = self.settings().page_size.to_string();
        self.get(
            endpoint,
            path,
            &[
                ("first", &first),
                ("max", &max),
                ("briefRepresentation", "true"),
            ],
        )
        .await
    }

    /// A group's direct members, full representation (for `required_groups`).
    async fn full_members(&self, group: &GroupId) -> Result<Vec<UserRepresentation>, Error> {
        let page_size = self.settings().page_size as usize;
        let max = page_size.to_string();
        let mut members = Vec::new();
        loop {
            let first = members.len().to_string();
            let page: Vec<UserRepresentation> = self
                .get(
                    Endpoint::Members,
                    &["groups", group.as_str(), "members"],
                    &[
                        ("first", &first),
                        ("max", &max),
                        ("briefRepresentation", "false"),
                    ],
                )
                .await?;
            let short = page.len() < page_size;
            self.progress().add_users(page.len());
            members.extend(page);
            if short {
                return Ok(members);
            }
        }
    }

    /// A user's direct groups (for `required_groups`).
    async fn groups_of(&self, user: &UserId) -> Result<Vec<GroupRepresentation>, Error> {
        let page_size = self.settings().page_size as usize;
        let mut groups = Vec::new();
        loop {
            let page = self
                .group_page(
                    Endpoint::UserGroups,
                    &["users", user.as_str(), "groups"],
                    groups.len() as u64,
                )
                .await?;
            let short = page.len() < page_size;
            self.progress().add_memberships(page.len());
            groups.extend(page);
            if short {
                return Ok(groups);
            }
        }
    }

    /// Members that are not among the users read are service accounts (which `/users`
    /// leaves out, and so does the snapshot, with their memberships), or users created or
    /// deleted during the fetch, which makes the pass void.
    async fn check_unknown_members(&self, unknown: Vec<String>) -> Result<(), Pass> {
        if unknown.len() > MAX_UNKNOWN_MEMBERS {
            return Err(Pass::Changed(format!(
                "{} group members are not among the users read",
                unknown.len()
            )));
        }
        for member_id in unknown {
            let user: Result<UserRepresentation, Error> = self
                .get(Endpoint::User, &["users", member_id.as_str()], &[])
                .await;
            match user {
                // The admin API does not show `serviceAccountClientId`; a service
                // account's username has Keycloak's fixed prefix. A user with such a name
                // that is listed is never looked up here.
                Ok(user)
                    if user.service_account_client_id.is_some()
                        || user.username.starts_with("service-account-") => {}
                Ok(user) => {
                    return Err(Pass::Changed(format!(
                        "user {} ({}) is a group member but was not listed",
                        user.id, user.username
                    )));
                }
                Err(Error::Http { status: 404, .. }) => {
                    return Err(Pass::Changed(format!(
                        "group member {member_id} was deleted during the fetch"
                    )));
                }
                Err(error) => return Err(Pass::Failed(error)),
            }
        }
        Ok(())
    }
}

/// Why a pass produced no snapshot.
enum Pass {
    /// The directory changed while it was read; another pass may succeed.
    Changed(String),
    Failed(Error),
}

impl From<Error> for Pass {
    fn from(error: Error) -> Pass {
        Pass::Failed(error)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Members {
    Listed,
    NotListed,
}

struct Users {
    by_id: HashMap<UserId, KeycloakUser>,
    /// Distinct ids read, service accounts included: what `/users/count` counts.
    listed: u64,
    seen_service_accounts: HashSet<String>,
}

impl Users {
    fn add(&mut self, page: Vec<UserRepresentation>, client: &Client) {
        client.progress().add_users(page.len());
        for user in page {
            if user.service_account_client_id.is_some() {
                if self.seen_service_accounts.insert(user.id) {
                    self.listed += 1;
                }
                continue;
            }
            let user = user_from(user);
            if self.by_id.contains_key(&user.id) {
                continue;
            }
            self.listed += 1;
            self.by_id.insert(user.id.clone(), user);
        }
    }
}

#[derive(Default)]
struct Tree {
    groups: Vec<KeycloakGroup>,
    /// Member ids per group, resolved to the users' ids once all users are read.
    members: Vec<(GroupId, Vec<String>)>,
}

enum Task {
    Children(GroupId),
    Members(GroupId),
}

enum Done {
    Children {
        parent: GroupId,
        groups: Vec<GroupRepresentation>,
    },
    Members {
        group: GroupId,
        member_ids: Vec<String>,
    },
}

type TaskFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Done, Error>> + Send + 'a>>;

fn user_from(user: UserRepresentation) -> KeycloakUser {
    let non_empty = |value: Option<String>| value.filter(|value| !value.is_empty());
    KeycloakUser {
        id: UserId::new(user.id),
        username: user.username,
        email: non_empty(user.email),
        first_name: non_empty(user.first_name),
        last_name: non_empty(user.last_name),
        enabled: user.enabled,
        email_verified: user.email_verified,
        attributes: user.attributes.unwrap_or_default(),
        federation_link: non_empty(user.federation_link),
    }
}

/// The snapshot in a stable order.
fn finish(
    mut users: Vec<KeycloakUser>,
    mut groups: Vec<KeycloakGroup>,
    mut memberships: Vec<KeycloakMembership>,
) -> Snapshot {
    users.sort_unstable_by(|a, b| a.username.cmp(&b.username).then_with(|| a.id.cmp(&b.id)));
    groups.sort_unstable_by(|a, b| a.path.cmp(&b.path).then_with(|| a.id.cmp(&b.id)));
    memberships.sort_unstable_by(|a, b| {
        a.group_id
            .cmp(&b.group_id)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
    memberships.dedup();
    Snapshot {
        users,
        groups,
        memberships,
    }
}
