//! The test endpoints, outside auth, rate limit and counters: `GET /_emulator/state`,
//! `POST /_emulator/reset`, `POST /_emulator/seed` (a [`SeedDocument`], Jira's projects
//! included) and `POST /_emulator/projects` (Jira's projects alone, a JSON array like the
//! seed's `projects`, whose leads name accounts the emulator has now).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use crate::reply;
use crate::store::{SeedDocument, SeedProject, StateHandle};

pub(crate) fn routes() -> Router<StateHandle> {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/seed", post(seed))
        .route("/_emulator/projects", post(projects))
}

async fn projects(State(state): State<StateHandle>, body: Bytes) -> Response {
    let projects: Vec<SeedProject> = match serde_json::from_slice(&body) {
        Ok(projects) => projects,
        Err(error) => {
            return reply::json(
                400,
                json!({ "error": format!("invalid projects: {error}") }),
            );
        }
    };
    match state.seed_projects(&projects) {
        Ok(()) => reply::empty(204),
        Err(error) => reply::json(400, json!({ "error": error.to_string() })),
    }
}

async fn state(State(state): State<StateHandle>) -> Response {
    match serde_json::to_value(state.dump()) {
        Ok(dump) => reply::json(200, dump),
        Err(error) => reply::json(500, json!({ "error": error.to_string() })),
    }
}

async fn reset(State(state): State<StateHandle>) -> Response {
    match state.reset() {
        Ok(()) => reply::empty(204),
        Err(error) => reply::json(400, json!({ "error": error.to_string() })),
    }
}

async fn seed(State(state): State<StateHandle>, body: Bytes) -> Response {
    let mut seed: SeedDocument = match serde_json::from_slice(&body) {
        Ok(seed) => seed,
        Err(error) => {
            return reply::json(400, json!({ "error": format!("invalid seed: {error}") }));
        }
    };
    let projects = std::mem::take(&mut seed.projects);
    let (seed, permissions, callers) = seed.into_parts();
    match state.seed_with_projects(&seed, &permissions, &callers, &projects) {
        Ok(()) => reply::empty(204),
        Err(error) => reply::json(400, json!({ "error": error.to_string() })),
    }
}
