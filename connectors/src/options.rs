//! Typed connector options: each connector declares a `serde` struct (its doc comments are
//! the option reference) and parses its `options` mapping with [`parse`], which names the
//! offending field and rejects unknown keys with the list of known ones.

use quiver_config::FieldProblem;
use quiver_config::interpolate::{self, is_reference};
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

/// Resolves `${ENV}` references in string options (nested ones included). Done only when
/// the source is read, so a secret lives in memory for that read and nowhere else.
pub fn resolve(options: &Options) -> Result<Options, ConnectorError> {
    fn walk(value: &mut serde_json::Value, path: &str) -> Result<(), ConnectorError> {
        match value {
            serde_json::Value::String(s) if s.contains('$') => {
                *s = interpolate::resolve(s, |name| std::env::var(name).ok())
                    .map_err(|e| ConnectorError::Config(format!("`{path}`: {e}")))?;
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    walk(v, &format!("{path}.{k}"))?;
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(v, &format!("{path}[{i}]"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut value = serde_json::Value::Object(options.clone());
    walk(&mut value, "options")?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => unreachable!("an object stays an object"),
    }
}

/// A duration option, written as people write them: `30s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(&text).map(Duration).map_err(|_| {
            serde::de::Error::custom(format!("`{text}` is not a duration (e.g. `30m`)"))
        })
    }
}
