//! Checking a table definition completely before it is stored: names, mode, schedule and
//! the connector's options, every problem named by its field.

use quiver_config::{FieldProblem, SyncMode, TableDef};
use quiver_connectors::{CONNECTORS, connector, connector_names};

use crate::Schedule;

/// Checks a definition completely: names, mode, schedule, and the connector's options.
pub fn validate(def: &TableDef) -> Vec<FieldProblem> {
    let mut problems = def.problems();
    if let Some(schedule) = &def.schedule
        && let Err(e) = schedule.parse::<Schedule>()
    {
        problems.push(FieldProblem::new("schedule", e));
    }
    match connector(&def.connector) {
        Some(c) => {
            problems.extend(c.check(&def.options));
            if def.mode == SyncMode::Remote && c.remote().is_none() {
                let remote: Vec<&str> = CONNECTORS
                    .iter()
                    .filter(|(_, c)| c.remote().is_some())
                    .map(|(name, _)| *name)
                    .collect();
                problems.push(FieldProblem::new(
                    "mode",
                    format!(
                        "`{}` tables are copied, not read at query time: `mode: remote` works with {} (use `full` or `incremental`)",
                        def.connector,
                        remote.join(" and ")
                    ),
                ));
            }
        }
        None => problems.push(FieldProblem::new(
            "connector",
            format!(
                "`{}` is not a connector (expected one of: {})",
                def.connector,
                connector_names()
            ),
        )),
    }
    problems
}
