//! The values that cross the state store's SQL interface ([`super::db`]): parameters
//! ([`Param`], `params![…]`), result [`Row`]s and their typed reads ([`FromValue`]), and
//! timestamps as microseconds since the Unix epoch in UTC. Both backends convert to and from
//! these, so no statement knows which backend runs it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::CatalogError;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// SQL `NULL`.
    Null,
    /// `BOOLEAN`.
    Bool(bool),
    /// Any integer column (`INTEGER`, `BIGINT`).
    Int(i64),
    /// `DOUBLE`.
    Float(f64),
    /// `VARCHAR`.
    Text(String),
    /// `TIMESTAMP` (UTC), microseconds since the Unix epoch.
    Time(i64),
}

/// A `TIMESTAMP` (UTC) read from or bound to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Milliseconds since the epoch (how leases, heartbeats and sign-in failures are
    /// stamped).
    pub fn millis(self) -> i64 {
        self.0 / 1000
    }

    /// `age` earlier.
    pub fn minus(self, age: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(age.as_micros().min(i64::MAX as u128) as i64),
        )
    }

    /// `delay` later.
    pub fn plus(self, delay: Duration) -> Self {
        Self(
            self.0
                .saturating_add(delay.as_micros().min(i64::MAX as u128) as i64),
        )
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// ISO 8601 to the second, e.g. `2026-12-01T12:00:00Z`.
    pub fn iso(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// ISO 8601 to the millisecond, e.g. `2026-12-01T12:00:00.123Z`.
    pub fn iso_millis(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(d.as_micros() as i64),
            Err(e) => Self(-(e.duration().as_micros() as i64)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(t.0.unsigned_abs())
        }
    }
}

/// Something that can be bound to a placeholder.
pub(crate) trait Param {
    /// The value bound.
    fn value(&self) -> Value;
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

impl Param for Value {
    fn value(&self) -> Value {
        self.clone()
    }
}

impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl Param for bool {
    fn value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Param for f64 {
    fn value(&self) -> Value {
        Value::Float(*self)
    }
}

impl Param for Timestamp {
    fn value(&self) -> Value {
        Value::Time(self.0)
    }
}

macro_rules! int_params {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_params!(i32, i64, u32, usize);

/// Parameters of a statement: `params![a, b]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::state::value::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::state::value::Param),+] as &[&dyn $crate::state::value::Param] };
}
pub(crate) use params;

/// Parameters given to a statement.
pub(crate) type Params<'a> = &'a [&'a dyn Param];

/// A row of a result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Value>);

impl Row {
    /// Column `index` as `T`.
    pub(crate) fn get<T: FromValue>(&self, index: usize) -> Result<T, CatalogError> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| CatalogError::Internal(format!("no column {index} in a state row")))?;
        T::from_value(value).ok_or_else(|| {
            CatalogError::Internal(format!(
                "state column {index} holds {value:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A type a column can be read as.
pub(crate) trait FromValue: Sized {
    /// `None` when the value is not of this type.
    fn from_value(value: &Value) -> Option<Self>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => i32::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for Timestamp {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Time(t) => Some(Self(*t)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc_iso() {
        let t = Timestamp(1_764_590_400_123_456);
        assert_eq!(t.iso(), "2025-12-01T12:00:00Z");
        assert_eq!(t.iso_millis(), "2025-12-01T12:00:00.123Z");
        assert_eq!(t.unix(), 1_764_590_400);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
    }
}
