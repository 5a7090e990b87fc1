//! A streamed first sync: the fetch of a connector's first full APPLY run hands on its
//! users a part at a time (`keycloak::stream`), and each part is stored
//! (`{run_id}.part-{n}.pb.zst`) and announced with `SnapshotReady.part = n` (message id
//! `{run_id}/snapshot-part-{n}`) while Keycloak is still read, so the planner and the
//! appliers create the first accounts before the complete snapshot exists. The complete
//! snapshot follows as in any run, naming how many parts came before it
//! (`SnapshotReady.parts`); the planner plans it once it has planned them all.
//!
//! Only a connector's first full sync streams (no base snapshot stored yet, `crate::base`):
//! that is when nearly every user needs an account. A simulation, an event run and a
//! connector with `required_groups` never stream, nor does a fetcher with
//! `[fetcher] first_sync_part_users = 0`. Parts are numbered without a gap: after a part
//! that could not be stored or announced, none follows.

use futures::StreamExt;
use keycloak::stream::Part;
use model::snapshot::Snapshot;
use proto::v1::{self, RunRequested, SnapshotReady};
use telemetry::error_chain;

use crate::convert::{SnapshotHeader, snapshot_to_proto};
use crate::fetch::Fetcher;

impl Fetcher {
    /// Whether the run's fetch streams its users in parts.
    pub(crate) async fn streams(
        &self,
        request: &RunRequested,
        connector: &str,
        client: &keycloak::client::Client,
    ) -> Result<bool, String> {
        if self.part_users == 0
            || request.mode != v1::RunMode::Apply as i32
            || crate::event_run::delta_of(request).is_some()
            || !client.settings().required_groups.is_empty()
        {
            return Ok(false);
        }
        Ok(self.base_of(connector).await?.is_none())
    }

    /// Fetches the realm, announcing its parts as they are read. Answers the fetch and how
    /// many parts were announced.
    pub(crate) async fn fetch_streaming(
        &self,
        request: &RunRequested,
        connector: &str,
        client: &keycloak::client::Client,
    ) -> (Result<Snapshot, keycloak::Error>, u32) {
        let (parts, mut received) = keycloak::stream::Parts::new(self.part_users);
        let announcing = async {
            let mut announced = 0u32;
            let mut stopped = false;
            while let Some(part) = received.next().await {
                if stopped {
                    continue;
                }
                match self
                    .announce_part(request, connector, client, part, announced + 1)
                    .await
                {
                    Ok(()) => announced += 1,
                    Err(error) => {
                        tracing::warn!(
                            part = announced + 1,
                            error = %error_chain(&error),
                            "Could not announce a part of the streamed first sync; the \
                             complete snapshot will carry its users."
                        );
                        stopped = true;
                    }
                }
            }
            announced
        };
        let (fetched, announced) = tokio::join!(client.fetch_streaming(parts), announcing);
        (fetched, announced)
    }

    async fn announce_part(
        &self,
        request: &RunRequested,
        connector: &str,
        client: &keycloak::client::Client,
        part: Part,
        number: u32,
    ) -> Result<(), crate::Error> {
        let snapshot = snapshot_to_proto(
            part.snapshot,
            &SnapshotHeader {
                run_id: &request.run_id,
                connector,
                realm: &client.settings().realm,
                fetched_at: prost_types::Timestamp::from(std::time::SystemTime::now()),
            },
        );
        let key = format!("{}.part-{number}.pb.zst", request.run_id);
        let object = self.bus.put_object(&self.bucket, &key, &snapshot).await?;
        let mut ready: SnapshotReady = crate::fetch::ready(request, connector, &snapshot, object);
        ready.part = number;
        ready.realm_users = part.realm_users;
        self.bus
            .publish(
                &self.bus.topology().snapshot_ready(),
                &ready,
                &format!("{}/snapshot-part-{number}", request.run_id),
            )
            .await?;
        tracing::info!(
            part = number,
            users = ready.users,
            memberships = ready.memberships,
            "Announced a part of the streamed first sync."
        );
        Ok(())
    }
}
