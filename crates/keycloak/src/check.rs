//! Test connection, as the control API offers it: the token, the realm, the roles (by
//! making one small call of every kind the fetch makes) and the size of the directory;
//! and whether the realm is ready to be followed by its events ([`Client::check_events`]).

use crate::{
    Error,
    client::{Client, Endpoint},
    events::{EventsConfig, check_events_config},
    representation::{GroupRepresentation, MemberRepresentation, UserRepresentation},
};

/// What a successful test connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionReport {
    pub realm: String,
    /// Users the fetch would read (`/users/count`; service accounts are not counted).
    pub users: u64,
    /// Groups at every level (`/groups/count`).
    pub groups: u64,
}

impl Client {
    /// Gets a token (the client id and secret, and the realm), then makes one small
    /// request of each kind the fetch makes, so a missing role shows as
    /// [`Error::MissingRole`] naming it. Nothing is retried more than a fetch would.
    #[tracing::instrument(skip(self), fields(realm = %self.settings().realm))]
    pub async fn check(&self) -> Result<ConnectionReport, Error> {
        self.token().await?;
        let _: Vec<UserRepresentation> = self
            .get(
                Endpoint::Users,
                &["users"],
                &[
                    ("first", "0"),
                    ("max", "1"),
                    ("briefRepresentation", "false"),
                ],
            )
            .await?;
        let users = self.count_users().await?;
        let top: Vec<GroupRepresentation> = self
            .get(
                Endpoint::Groups,
                &["groups"],
                &[
                    ("first", "0"),
                    ("max", "1"),
                    ("briefRepresentation", "true"),
                ],
            )
            .await?;
        let groups = self.count_groups().await?;
        if let Some(group) = top.first() {
            let _: Vec<MemberRepresentation> = self
                .get(
                    Endpoint::Members,
                    &["groups", group.id.as_str(), "members"],
                    &[
                        ("first", "0"),
                        ("max", "1"),
                        ("briefRepresentation", "true"),
                    ],
                )
                .await?;
            if group.sub_group_count.is_some_and(|count| count > 0) {
                let _: Vec<GroupRepresentation> = self
                    .get(
                        Endpoint::Children,
                        &["groups", group.id.as_str(), "children"],
                        &[
                            ("first", "0"),
                            ("max", "1"),
                            ("briefRepresentation", "true"),
                        ],
                    )
                    .await?;
            }
        }
        Ok(ConnectionReport {
            realm: self.settings().realm.clone(),
            users,
            groups,
        })
    }

    /// What the realm lacks for event-driven sync, each with how to turn it on; empty when
    /// it saves every event keysync needs. Reading the settings needs the `realm-management`
    /// role `view-events` ([`Error::MissingRole`] names it). No event is read.
    #[tracing::instrument(skip(self), fields(realm = %self.settings().realm))]
    pub async fn check_events(&self) -> Result<Vec<String>, Error> {
        let config: EventsConfig = self.events_config().await?;
        Ok(check_events_config(&config)
            .into_iter()
            .map(|problem| problem.message)
            .collect())
    }
}
