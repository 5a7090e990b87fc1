//! `keysync config check FILE`: loads the file (and the `KEYSYNC_*` environment, as the
//! services do) the way each service loads it, with that service's own settings types and
//! checks from the `settings` crate (no service is linked), and reports the first problem, which names the key and where its value came
//! from. A section no service reads is an error too, since every service would ignore it.

use std::{path::Path, process::ExitCode};

use serde::{Deserialize, Serialize, de::IgnoredAny};

use crate::{error::Error, output};

/// Every top-level section of the shared file, by the services that read it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "the fields are there to be recognised, not read")]
struct Sections {
    /// Every service.
    bus: Option<IgnoredAny>,
    /// The control plane (the appliers read its `endpoint` and `token`).
    control_plane: Option<IgnoredAny>,
    /// The services' HTTP probes.
    health: Option<IgnoredAny>,
    /// The fetcher.
    fetcher: Option<IgnoredAny>,
    keycloak: Option<IgnoredAny>,
    /// The planner and the appliers.
    products: Option<IgnoredAny>,
    planner: Option<IgnoredAny>,
    /// The appliers.
    applier: Option<IgnoredAny>,
}

#[derive(Debug, Serialize)]
struct CheckJson {
    file: String,
    valid: bool,
    /// The services whose settings were loaded and checked.
    checked: Vec<&'static str>,
    error: Option<String>,
}

/// Checks `file`; exit code 1 when it is not valid.
pub fn check(file: &Path, json: bool) -> Result<ExitCode, Error> {
    let checked = ["control plane", "fetcher", "planner", "appliers"];
    let outcome = check_file(file);
    if json {
        output::print_json(&CheckJson {
            file: file.display().to_string(),
            valid: outcome.is_ok(),
            checked: checked.to_vec(),
            error: outcome.as_ref().err().cloned(),
        })?;
    } else {
        match &outcome {
            Ok(()) => out!(
                "{} is valid for the {}.",
                file.display(),
                checked.join(", ")
            ),
            // Errors of a value name its file already; a value that is well-formed but
            // not acceptable names only its key.
            Err(error) if error.contains(&file.display().to_string()) => {
                eprintln!("error: {error}")
            }
            Err(error) => eprintln!("error: {}: {error}", file.display()),
        }
    }
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first problem of `file`, as a person reads it.
fn check_file(file: &Path) -> Result<(), String> {
    config::load::<Sections>(Some(file)).map_err(|error| error.to_string())?;

    let control_plane = settings::control_plane::Settings::load(Some(file))
        .map_err(|error| format!("control plane: {error}"))?;
    for schedule in control_plane.schedules() {
        if schedule.enabled {
            schedule.time_zone().map_err(|error| {
                format!("control plane: {}", error.within("control_plane.schedule"))
            })?;
        }
    }

    settings::fetcher::Settings::load(Some(file)).map_err(|error| format!("fetcher: {error}"))?;

    let planner: settings::planner::Settings =
        config::load(Some(file)).map_err(|error| format!("planner: {error}"))?;
    planner
        .validate()
        .map_err(|error| format!("planner: {error}"))?;

    // One applier runs per enabled product, each reading that product's section.
    let applier: settings::applier::Settings =
        config::load(Some(file)).map_err(|error| format!("applier: {error}"))?;
    for product in applier.products.enabled() {
        applier
            .validate(product)
            .map_err(|error| format!("applier --product {product}: {error}"))?;
    }
    Ok(())
}
