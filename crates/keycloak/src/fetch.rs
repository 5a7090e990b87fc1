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
//! `/users/count` is read there too, only to bound the member listings.
//!
//! Offset paging is not a snapshot (Keycloak orders users by username; an insert or a
//! delete shifts the pages), which is why the counts are compared; a change that keeps
//! every count (a rename, a membership moved) between two reads is not detected.
//!
//! ## Hostile answers
//!
//! Nothing the server answers can make the fetch hang, panic, or pass off a part of the
//! directory as all of it. Every listing (users, top-level groups, `/children`, members,
//! a user's groups) goes through one pager, [`Client::read_listing`], which holds these
//! rules:
//!
//! - **Every page makes progress.** A page with more entries than `max` is
//!   [`Error::PageTooLong`]. A non-empty page whose ids were all read before in the same
//!   listing (a server that ignores `first` answers the same page forever) is
//!   [`Error::Repeated`]; so is a group met twice in the tree (a cycle). Entries inserted
//!   during the read can do the same to an honest server, so a pass that meets it is
//!   read again, and the error stands only when every pass met it.
//! - **Every listing ends.** A listing may hold at most its count plus a margin
//!   ([`allowance`]: a tenth, at least [`COUNT_MARGIN`]) of distinct entries: users by
//!   `/users/count`, top-level groups by `/groups/count?top=true`, a group's children by
//!   its `subGroupCount`, the whole tree and a user's groups by `/groups/count`, a group's
//!   members by `/users/count` (service accounts fit the margin). Past it, the listing is
//!   [`Error::Endless`]. Since a full page must bring a new id and the ids are bounded, so
//!   are the pages. Pages are requested no further than the first short page.
//! - **Counts are checked, never trusted with memory.** A count must be an integer from 0
//!   to [`crate::MAX_COUNT`], or it is [`Error::ImpossibleCount`] (negative, fractional,
//!   absurd). It bounds listings; no allocation is sized by it beyond
//!   [`MAX_PREALLOCATED`] entries.
//! - **Required fields are required.** A user without `id`, `username`, `enabled` or
//!   `emailVerified`, a group without `id` or `name`, a member without `id` is an
//!   [`Error::Decode`] (not retried: the server would answer the same), never a default:
//!   a missing `enabled` read as `false` would deactivate everyone. Fields Keycloak
//!   documents as optional (`email`, names, `attributes`, `path`, `subGroupCount`, …)
//!   stay optional.
//! - Bodies are read with a size limit, and token lifetimes are clamped; see `client`
//!   and `token`.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream::FuturesUnordered};
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};

use crate::{
    Error,
    client::{Client, Endpoint},
    representation::{Count, GroupRepresentation, MemberRepresentation, UserRepresentation},
    stream::Parts,
};

/// Passes before the fetch gives up on a directory that keeps changing.
const PASSES: u32 = 3;

/// Members that are not among the users read, looked up one by one before the pass is
/// declared changed; more than this means the directory changed.
const MAX_UNKNOWN_MEMBERS: usize = 100;

/// The least number of entries a listing may hold beyond its count (entries added while
/// it is read; more than that and the counts after the read differ anyway).
pub(crate) const COUNT_MARGIN: u64 = 1_000;

/// The most entries reserved ahead from a count; beyond it, collections grow as entries
/// arrive, so that an absurd count cannot exhaust memory.
pub(crate) const MAX_PREALLOCATED: u64 = 100_000;

/// The most distinct entries a listing of `count` may hold: the count, plus a tenth of it
/// or [`COUNT_MARGIN`], whichever is more.
pub(crate) fn allowance(count: u64) -> u64 {
    count.saturating_add((count / 10).max(COUNT_MARGIN))
}

/// What `read` answers, with the seconds since `started` when it did.
async fn timed<T>(
    started: std::time::Instant,
    read: impl Future<Output = Result<T, Error>>,
) -> Result<(T, f64), Error> {
    let read = read.await?;
    Ok((read, started.elapsed().as_secs_f64()))
}

/// Room for `count` entries, at most [`MAX_PREALLOCATED`].
fn preallocation(count: u64) -> usize {
    usize::try_from(count.min(MAX_PREALLOCATED)).unwrap_or(0)
}

impl Client {
    /// Reads the realm (or, with `required_groups`, the members of those groups) into a
    /// snapshot; see the module documentation for how it stays consistent. Users are
    /// sorted by username, groups by path, memberships by group then user.
    #[tracing::instrument(skip(self), fields(realm = %self.settings().realm))]
    pub async fn fetch(&self) -> Result<Snapshot, Error> {
        self.fetch_with(None).await
    }

    /// [`Client::fetch`] that also hands `parts` the users as they are read
    /// ([`crate::stream`]), in its first pass over the realm (a pass read again after the
    /// directory changed streams nothing). With `required_groups`, nothing is streamed.
    pub async fn fetch_streaming(&self, mut parts: Parts) -> Result<Snapshot, Error> {
        self.fetch_with(Some(&mut parts)).await
    }

    async fn fetch_with(&self, mut parts: Option<&mut Parts>) -> Result<Snapshot, Error> {
        let started = std::time::Instant::now();
        let mut detail = String::new();
        for pass in 1..=PASSES {
            let outcome = if self.settings().required_groups.is_empty() {
                let streaming = parts.take().filter(|_| pass == 1);
                self.fetch_realm(streaming).await
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
                Err(Pass::Failed(error @ Error::Repeated { .. })) if pass < PASSES => {
                    tracing::warn!(pass, reason = %error, "A listing repeated itself; reading the realm again.");
                    detail = error.to_string();
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

    async fn fetch_realm(&self, parts: Option<&mut Parts>) -> Result<Snapshot, Pass> {
        // One after the other, so that a service account without roles is told about
        // `view-users` (which implies `query-groups`) first, every time.
        let users_before = self.count_users().await?;
        let groups_before = self.count_groups().await?;
        // Each timed: the users' listing is most of a fetch (at 100,000 users about 80 s of
        // Keycloak's time against 15 s for the tree and every group's members).
        let started = std::time::Instant::now();
        let ((users, users_seconds), (tree, tree_seconds)) = match parts {
            None => futures::try_join!(
                timed(started, self.fetch_users(users_before, None)),
                timed(
                    started,
                    self.fetch_tree(Members::Listed, groups_before, users_before)
                )
            )?,
            // A part holds its users' memberships: the tree and its members come first.
            Some(parts) => {
                let mut tree = timed(
                    started,
                    self.fetch_tree(Members::Listed, groups_before, users_before),
                )
                .await?;
                // The members are lent to the parts while the users are read, not copied.
                let members = std::mem::take(&mut tree.0.members);
                parts.know_tree(&tree.0.groups, members, users_before);
                let users =
                    timed(started, self.fetch_users(users_before, Some(&mut *parts))).await?;
                tree.0.members = parts.give_back_members();
                (users, tree)
            }
        };
        tracing::info!(
            users_seconds,
            tree_seconds,
            "Read the users and the group tree."
        );
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
        // Only to bound the member listings.
        let users_counted = self.count_users().await?;
        let groups_before = self.count_groups().await?;
        let tree = self
            .fetch_tree(Members::NotListed, groups_before, users_counted)
            .await?;
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
            .map(|group_id| async move { self.full_members(&group_id, users_counted).await })
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
                let groups = self.groups_of(&user_id, groups_before).await?;
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

    pub(crate) async fn count_users(&self) -> Result<u64, Error> {
        self.count(Endpoint::UsersCount, &["users", "count"], &[])
            .await
    }

    pub(crate) async fn count_groups(&self) -> Result<u64, Error> {
        self.count(Endpoint::GroupsCount, &["groups", "count"], &[])
            .await
    }

    /// A count, checked: see [`Count::checked`].
    async fn count(
        &self,
        endpoint: Endpoint,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<u64, Error> {
        let count: Count = self.get(endpoint, path, query).await?;
        count.checked().map_err(|value| Error::ImpossibleCount {
            endpoint: endpoint.to_string(),
            value: value.to_string(),
        })
    }

    async fn fetch_users(&self, count: u64, mut parts: Option<&mut Parts>) -> Result<Users, Error> {
        let mut users = Users {
            by_id: HashMap::with_capacity(preallocation(count)),
            listed: 0,
            seen_service_accounts: HashSet::new(),
        };
        self.read_listing(
            Endpoint::Users,
            count,
            allowance(count),
            self.settings().concurrency,
            |first| self.user_page(first),
            |page| {
                let Some(parts) = parts.as_deref_mut() else {
                    users.add(page, self);
                    return Ok(());
                };
                let fresh: Vec<UserId> = page
                    .iter()
                    .filter(|user| user.service_account_client_id.is_none())
                    .map(|user| UserId::new(user.id.as_str()))
                    .filter(|id| !users.by_id.contains_key(id))
                    .collect();
                users.add(page, self);
                parts.offer(fresh, &users.by_id);
                Ok(())
            },
        )
        .await?;
        Ok(users)
    }

    /// Reads a listing by offset: the pages that `expected` entries fill and one more
    /// (a short or empty last page proves the end), `concurrency` at a time, then one at
    /// a time while pages keep coming back full; no page past the first short one is
    /// requested. `each` gets every page; see the module documentation for the checks.
    async fn read_listing<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        expected: u64,
        limit: u64,
        concurrency: usize,
        page: F,
        mut each: impl FnMut(Vec<T>) -> Result<(), Error>,
    ) -> Result<(), Error>
    where
        T: Listed,
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<Vec<T>, Error>>,
    {
        let page_size = u64::from(self.settings().page_size);
        let planned = expected / page_size + 1;
        let mut listing = Listing::new(endpoint, limit);
        let mut in_flight = FuturesUnordered::new();
        let mut next: u64 = 0;
        let mut end: Option<u64> = None;
        loop {
            // `concurrency` at a time up to the planned pages, then one at a time.
            let width = |next: u64| {
                if next < planned {
                    concurrency.max(1)
                } else {
                    1
                }
            };
            while end.is_none() && in_flight.len() < width(next) {
                let first = next.saturating_mul(page_size);
                let page = &page;
                in_flight.push(async move { (next, first, page(first).await) });
                next += 1;
            }
            let Some((index, first, result)) = in_flight.next().await else {
                return Ok(());
            };
            let items = result?;
            let len = items.len() as u64;
            if len > page_size {
                return Err(Error::PageTooLong {
                    endpoint: endpoint.to_string(),
                    max: page_size as usize,
                    len: items.len(),
                });
            }
            if len < page_size {
                end = Some(end.map_or(index, |end| end.min(index)));
            }
            listing.check(first, items.iter().map(Listed::id))?;
            each(items)?;
        }
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
    /// `groups` (`/groups/count`) bounds the tree, `users` (`/users/count`) every
    /// group's members.
    async fn fetch_tree(&self, members: Members, groups: u64, users: u64) -> Result<Tree, Error> {
        let top_count = self
            .count(
                Endpoint::GroupsCount,
                &["groups", "count"],
                &[("top", "true")],
            )
            .await?;
        let mut walk = Walk {
            tree: Tree::default(),
            seen: HashSet::new(),
            pending: FuturesUnordered::new(),
            members,
            group_limit: allowance(groups),
            member_limit: allowance(users),
        };
        self.read_listing(
            Endpoint::Groups,
            top_count,
            allowance(top_count),
            self.settings().concurrency,
            |first| self.group_page(Endpoint::Groups, &["groups"], first),
            |page| {
                for group in page {
                    self.add_group(Endpoint::Groups, group, None, &mut walk)?;
                }
                Ok(())
            },
        )
        .await?;
        while let Some(done) = walk.pending.next().await {
            match done? {
                Done::Children { parent, groups } => {
                    for group in groups {
                        self.add_group(Endpoint::Children, group, Some(parent.clone()), &mut walk)?;
                    }
                }
                Done::Members { group, member_ids } => {
                    self.progress().add_memberships(member_ids.len());
                    walk.tree.members.push((group, member_ids));
                }
            }
        }
        Ok(walk.tree)
    }

    /// Records a group (and the subgroups an old server embeds) and queues the requests
    /// for its children and members. `from` is the listing that gave it, for errors.
    fn add_group<'a>(
        &'a self,
        from: Endpoint,
        group: GroupRepresentation,
        parent: Option<GroupId>,
        walk: &mut Walk<'a>,
    ) -> Result<(), Error> {
        let mut stack = vec![(group, parent)];
        while let Some((group, parent)) = stack.pop() {
            if !walk.seen.insert(group.id.clone()) {
                return Err(Error::Repeated {
                    endpoint: from.to_string(),
                    detail: format!("group {} is in the tree twice", group.id),
                });
            }
            if walk.tree.groups.len() as u64 >= walk.group_limit {
                return Err(Error::Endless {
                    endpoint: from.to_string(),
                    limit: walk.group_limit,
                    detail: "the group tree is larger than `GET /groups/count` allows".into(),
                });
            }
            let id = GroupId::new(group.id);
            let path = group.path.unwrap_or_else(|| {
                let parent_path = parent
                    .as_ref()
                    .and_then(|parent| walk.tree.groups.iter().find(|known| &known.id == parent))
                    .map(|known| known.path.as_str())
                    .unwrap_or("");
                format!("{parent_path}/{}", group.name)
            });
            match group.sub_group_count {
                Some(0) => {}
                Some(count) => walk
                    .pending
                    .push(Box::pin(self.run(Task::Children(id.clone(), count)))),
                // A server older than Keycloak 23 embeds the whole tree.
                None => stack.extend(
                    group
                        .sub_groups
                        .into_iter()
                        .map(|child| (child, Some(id.clone()))),
                ),
            }
            if walk.members == Members::Listed {
                walk.pending.push(Box::pin(
                    self.run(Task::Members(id.clone(), walk.member_limit)),
                ));
            }
            self.progress().add_groups(1);
            walk.tree.groups.push(KeycloakGroup {
                id,
                name: group.name,
                path,
                parent_id: parent,
            });
        }
        Ok(())
    }

    async fn run(&self, task: Task) -> Result<Done, Error> {
        match task {
            Task::Children(parent, count) => {
                let mut groups = Vec::new();
                let path = ["groups", parent.as_str(), "children"];
                self.read_listing(
                    Endpoint::Children,
                    0,
                    allowance(count),
                    1,
                    |first| self.group_page(Endpoint::Children, &path, first),
                    |page| {
                        groups.extend(page);
                        Ok(())
                    },
                )
                .await?;
                Ok(Done::Children { parent, groups })
            }
            Task::Members(group, limit) => {
                let max = self.settings().page_size.to_string();
                let mut member_ids = Vec::new();
                self.read_listing(
                    Endpoint::Members,
                    0,
                    limit,
                    1,
                    |first| {
                        let first = first.to_string();
                        let path = ["groups", group.as_str(), "members"];
                        let max = &max;
                        async move {
                            self.get::<Vec<MemberRepresentation>>(
                                Endpoint::Members,
                                &path,
                                &[
                                    ("first", &first),
                                    ("max", max),
                                    ("briefRepresentation", "true"),
                                ],
                            )
                            .await
                        }
                    },
                    |page| {
                        member_ids.extend(page.into_iter().map(|member| member.id));
                        Ok(())
                    },
                )
                .await?;
                Ok(Done::Members { group, member_ids })
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

    /// A group's direct members, full representation (for `required_groups`); `users`
    /// (`/users/count`) bounds them.
    async fn full_members(
        &self,
        group: &GroupId,
        users: u64,
    ) -> Result<Vec<UserRepresentation>, Error> {
        let max = self.settings().page_size.to_string();
        let mut members = Vec::new();
        self.read_listing(
            Endpoint::Members,
            0,
            allowance(users),
            1,
            |first| {
                let first = first.to_string();
                let path = ["groups", group.as_str(), "members"];
                let max = &max;
                async move {
                    self.get::<Vec<UserRepresentation>>(
                        Endpoint::Members,
                        &path,
                        &[
                            ("first", &first),
                            ("max", max),
                            ("briefRepresentation", "false"),
                        ],
                    )
                    .await
                }
            },
            |page| {
                self.progress().add_users(page.len());
                members.extend(page);
                Ok(())
            },
        )
        .await?;
        Ok(members)
    }

    /// The whole group tree, without members: what the event follower reads again when
    /// an event named a group, and with every later delta on the same base.
    pub async fn group_tree(&self) -> Result<Vec<KeycloakGroup>, Error> {
        let users = self.count_users().await?;
        let groups = self.count_groups().await?;
        Ok(self
            .fetch_tree(Members::NotListed, groups, users)
            .await?
            .groups)
    }

    /// A user's direct groups (for `required_groups`); `groups` (`/groups/count`) bounds
    /// them.
    pub(crate) async fn groups_of(
        &self,
        user: &UserId,
        groups: u64,
    ) -> Result<Vec<GroupRepresentation>, Error> {
        let mut found = Vec::new();
        let path = ["users", user.as_str(), "groups"];
        self.read_listing(
            Endpoint::UserGroups,
            0,
            allowance(groups),
            1,
            |first| self.group_page(Endpoint::UserGroups, &path, first),
            |page| {
                self.progress().add_memberships(page.len());
                found.extend(page);
                Ok(())
            },
        )
        .await?;
        Ok(found)
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

/// An entry of a listing, known by its id.
trait Listed {
    fn id(&self) -> &str;
}

impl Listed for UserRepresentation {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for GroupRepresentation {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for MemberRepresentation {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The ids one listing has given so far: the proof that every page makes progress and
/// that the listing ends.
struct Listing {
    endpoint: Endpoint,
    seen: HashSet<String>,
    /// The most distinct ids the listing may give.
    limit: u64,
}

impl Listing {
    fn new(endpoint: Endpoint, limit: u64) -> Listing {
        Listing {
            endpoint,
            seen: HashSet::new(),
            limit,
        }
    }

    /// Takes the ids of the page at offset `first`: [`Error::Repeated`] if there are
    /// some and none is new, [`Error::Endless`] once the listing holds more than its
    /// limit.
    fn check<'a>(&mut self, first: u64, ids: impl Iterator<Item = &'a str>) -> Result<(), Error> {
        let mut entries = 0usize;
        let mut new = 0usize;
        for id in ids {
            entries += 1;
            if !self.seen.contains(id) {
                self.seen.insert(id.to_owned());
                new += 1;
            }
        }
        if entries > 0 && new == 0 {
            return Err(Error::Repeated {
                endpoint: self.endpoint.to_string(),
                detail: format!(
                    "the {entries} entries of the page at first={first} were all read before"
                ),
            });
        }
        if self.seen.len() as u64 > self.limit {
            return Err(Error::Endless {
                endpoint: self.endpoint.to_string(),
                limit: self.limit,
                detail: format!("{} distinct entries read so far", self.seen.len()),
            });
        }
        Ok(())
    }
}

/// The state of a walk of the group tree.
struct Walk<'a> {
    tree: Tree,
    /// Ids of the groups in `tree`.
    seen: HashSet<String>,
    /// Children and members requests under way.
    pending: FuturesUnordered<TaskFuture<'a>>,
    members: Members,
    /// The most groups the tree may hold.
    group_limit: u64,
    /// The most members a group may have.
    member_limit: u64,
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
    /// A group and its `subGroupCount`.
    Children(GroupId, u64),
    /// A group and the most members it may have.
    Members(GroupId, u64),
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

pub(crate) fn user_from(user: UserRepresentation) -> KeycloakUser {
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
pub(crate) fn finish(
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
