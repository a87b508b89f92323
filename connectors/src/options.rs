//! Typed connector options: each connector declares a `serde` struct (its doc comments are
//! the option reference) and parses its `options` mapping with [`parse`], which names the
//! offending field and rejects unknown keys with the list of known ones.

use quiver_config::FieldProblem;
use quiver_config::interpolate::is_reference;
use serde::de::DeserializeOwned;

use crate::{ConnectorError, Options};

/// Parses `options` into `T`; on failure, the problem names the field as `options.<key>`.
pub fn parse<T: DeserializeOwned>(options: &Options) -> Result<T, FieldProblem> {
    let value = serde_json::Value::Object(options.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "options".to_string()
        } else {
            format!("options.{path}")
        };
        FieldProblem::new(field, e.into_inner().to_string())
    })
}

/// Parses options that were checked when the table was defined.
pub fn parse_checked<T: DeserializeOwned>(options: &Options) -> Result<T, ConnectorError> {
    parse(options).map_err(|p| ConnectorError::Config(p.to_string()))
}

/// A problem unless the secret option `key` is absent or a `${ENV}` reference. Definitions
/// are stored and shown to admins, so a literal secret is refused rather than kept.
pub fn secret_reference(options: &Options, key: &str) -> Option<FieldProblem> {
    match options.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(v)) if is_reference(v) => None,
        Some(_) => Some(FieldProblem::new(
            format!("options.{key}"),
            format!(
                "is a secret: write it as an environment variable reference such as `${{{}}}` and set that variable for the server",
                key.to_ascii_uppercase()
            ),
        )),
    }
}
