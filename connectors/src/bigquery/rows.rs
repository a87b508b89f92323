//! BigQuery's result rows (`{"f": [{"v": …}]}`, every scalar as a string) as Arrow.
//!
//! Scalars are parsed by Arrow's own string casts (strict: a value that does not parse is an
//! error, never a silent null); `TIMESTAMP`s arrive as microseconds (`useInt64Timestamp`),
//! `BYTES` as base64, `STRUCT`s as nested `f` lists and `ARRAY`s as lists of `v`s.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Field, Fields, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use base64::Engine;
use serde_json::Value;

use crate::ConnectorError;

fn unexpected(what: String) -> ConnectorError {
    ConnectorError::Source(format!("BigQuery sent {what}"))
}

/// The Arrow schema of a BigQuery result schema (`{"fields": [...]}`).
pub(super) fn schema(bq: &Value) -> Result<SchemaRef, ConnectorError> {
    Ok(Arc::new(Schema::new(fields(bq)?)))
}

fn fields(bq: &Value) -> Result<Fields, ConnectorError> {
    bq["fields"]
        .as_array()
        .ok_or_else(|| unexpected("a schema without `fields`".into()))?
        .iter()
        .map(field)
        .collect()
}

fn field(bq: &Value) -> Result<Field, ConnectorError> {
    let name = bq["name"]
        .as_str()
        .ok_or_else(|| unexpected("a field without a name".into()))?;
    let kind = bq["type"].as_str().unwrap_or_default();
    let number = |key: &str| bq[key].as_str().and_then(|v| v.parse::<i64>().ok());
    let decimal = |default: (u8, i8), max: u8| match (number("precision"), number("scale")) {
        (Some(p), scale) if p as u8 <= max => (p as u8, scale.unwrap_or(0) as i8),
        _ => default,
    };
    let data_type = match kind {
        "INTEGER" | "INT64" => DataType::Int64,
        "FLOAT" | "FLOAT64" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "NUMERIC" => {
            let (p, s) = decimal((38, 9), 38);
            DataType::Decimal128(p, s)
        }
        "BIGNUMERIC" => {
            let (p, s) = decimal((76, 38), 76);
            DataType::Decimal256(p, s)
        }
        "BYTES" => DataType::Binary,
        "DATE" => DataType::Date32,
        "TIME" => DataType::Time64(TimeUnit::Microsecond),
        "DATETIME" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "RECORD" | "STRUCT" => DataType::Struct(fields(bq)?),
        // STRING, JSON, GEOGRAPHY (WKT), INTERVAL, RANGE: their text.
        _ => DataType::Utf8,
    };
    let data_type = if bq["mode"] == "REPEATED" {
        DataType::List(Arc::new(Field::new("item", data_type, true)))
    } else {
        data_type
    };
    let field = Field::new(name, data_type, true);
    Ok(if kind == "JSON" {
        field.with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            "arrow.json".to_string(),
        )]))
    } else {
        field
    })
}

/// The GoogleSQL type of a query parameter compared with `field` (the watermark).
pub(super) fn parameter_type(field: &Value) -> Result<&'static str, ConnectorError> {
    Ok(match field["type"].as_str().unwrap_or_default() {
        "INTEGER" | "INT64" => "INT64",
        "FLOAT" | "FLOAT64" => "FLOAT64",
        "NUMERIC" => "NUMERIC",
        "BIGNUMERIC" => "BIGNUMERIC",
        "STRING" => "STRING",
        "DATE" => "DATE",
        "DATETIME" => "DATETIME",
        "TIMESTAMP" => "TIMESTAMP",
        other => {
            return Err(ConnectorError::Config(format!(
                "the watermark `{}` is of type {other}; use a number, string, date or timestamp column",
                field["name"].as_str().unwrap_or_default()
            )));
        }
    })
}

/// One page of rows as a batch of `schema`.
pub(super) fn batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, ConnectorError> {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let values: Vec<&Value> = rows.iter().map(|row| &row["f"][i]["v"]).collect();
            array(field.data_type(), &values)
                .map_err(|e| unexpected(format!("a value of `{}` that {e}", field.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

/// `values` (each a `v`, null for NULL) as an array of `data_type`.
fn array(data_type: &DataType, values: &[&Value]) -> Result<ArrayRef, String> {
    Ok(match data_type {
        DataType::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            let mut items = Vec::new();
            offsets.push(0i32);
            for value in values {
                // BigQuery has no NULL arrays: NULL is the empty one.
                if let Some(elements) = value.as_array() {
                    items.extend(elements.iter().map(|e| &e["v"]));
                }
                offsets.push(i32::try_from(items.len()).map_err(|_| "is too long")?);
            }
            let child = array(item.data_type(), &items)?;
            Arc::new(
                ListArray::try_new(item.clone(), OffsetBuffer::new(offsets.into()), child, None)
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::Struct(fields) => {
            let nulls = NullBuffer::from_iter(values.iter().map(|v| !v.is_null()));
            let children = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let values: Vec<&Value> = values.iter().map(|v| &v["f"][i]["v"]).collect();
                    array(f.data_type(), &values)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(
                StructArray::try_new(fields.clone(), children, Some(nulls))
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::Binary => {
            let base64 = base64::engine::general_purpose::STANDARD;
            let bytes = texts(values)?
                .map(|v| v.map(|s| base64.decode(s)).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("is not base64: {e}"))?;
            Arc::new(BinaryArray::from_iter(bytes))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let micros = texts(values)?
                .map(|v| v.map(str::parse::<i64>).transpose())
                .collect::<Result<Int64Array, _>>()
                .map_err(|e| format!("is not a timestamp in microseconds: {e}"))?;
            Arc::new(
                micros
                    .reinterpret_cast::<TimestampMicrosecondType>()
                    .with_timezone("UTC"),
            )
        }
        _ => {
            let strings = StringArray::from_iter(texts(values)?);
            let strict = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(&strings, data_type, &strict).map_err(|e| e.to_string())?
        }
    })
}

/// Scalar values as text, or the first that is not a string.
fn texts<'a>(
    values: &'a [&'a Value],
) -> Result<impl Iterator<Item = Option<&'a str>> + 'a, String> {
    if let Some(other) = values.iter().find(|v| !(v.is_null() || v.is_string())) {
        return Err(format!("is {other}, not a string"));
    }
    Ok(values.iter().map(|v| v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use serde_json::json;

    fn shown(batch: &RecordBatch, column: &str) -> Vec<String> {
        let array = batch.column_by_name(column).unwrap();
        let formatter = ArrayFormatter::try_new(array, &FormatOptions::default()).unwrap();
        (0..array.len())
            .map(|i| formatter.value(i).to_string())
            .collect()
    }

    #[test]
    fn every_type_and_nulls() {
        let bq = json!({"fields": [
            {"name": "i", "type": "INTEGER"}, {"name": "f", "type": "FLOAT"},
            {"name": "n", "type": "NUMERIC"}, {"name": "big", "type": "BIGNUMERIC"},
            {"name": "b", "type": "BOOLEAN"}, {"name": "s", "type": "STRING"},
            {"name": "bytes", "type": "BYTES"}, {"name": "d", "type": "DATE"},
            {"name": "dt", "type": "DATETIME"}, {"name": "t", "type": "TIME"},
            {"name": "ts", "type": "TIMESTAMP"}, {"name": "j", "type": "JSON"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "r", "type": "RECORD", "fields": [
                {"name": "x", "type": "INTEGER"},
                {"name": "ys", "type": "FLOAT", "mode": "REPEATED"}]},
        ]});
        let schema = schema(&bq).unwrap();
        assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(38, 9));
        assert_eq!(schema.field(3).data_type(), &DataType::Decimal256(76, 38));
        let row = json!({"f": [
            {"v": "-9007199254740993"}, {"v": "NaN"}, {"v": "12345.678901234"},
            {"v": "1.00000000000000000000000000000000000001"}, {"v": "true"}, {"v": "žluť"},
            {"v": "AAH/"}, {"v": "2026-12-03"}, {"v": "2026-12-03T10:11:12.123456"},
            {"v": "23:59:59.5"}, {"v": "1764756672123456"}, {"v": "{\"a\":1}"},
            {"v": [{"v": "a"}, {"v": "b"}]},
            {"v": {"f": [{"v": "7"}, {"v": [{"v": "1.5"}, {"v": "-Infinity"}]}]}},
        ]});
        let nulls = json!({"f": [
            {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null},
            {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null},
            {"v": []}, {"v": null},
        ]});
        let batch = super::batch(&schema, &[row, nulls]).unwrap();
        let first: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| shown(&batch, f.name())[0].clone())
            .collect();
        assert_eq!(
            first,
            [
                "-9007199254740993",
                "NaN",
                "12345.678901234",
                "1.00000000000000000000000000000000000001",
                "true",
                "žluť",
                "0001ff",
                "2026-12-03",
                "2026-12-03T10:11:12.123456",
                "23:59:59.500",
                "2025-12-03T10:11:12.123456Z",
                "{\"a\":1}",
                "[a, b]",
                "{x: 7, ys: [1.5, -inf]}",
            ]
        );
        for field in schema.fields().iter().filter(|f| f.name() != "tags") {
            assert!(
                batch.column_by_name(field.name()).unwrap().is_null(1),
                "{field}"
            );
        }
        assert_eq!(shown(&batch, "tags")[1], "[]");
    }

    #[test]
    fn a_value_that_does_not_parse_is_an_error_naming_the_column() {
        let schema = schema(&json!({"fields": [{"name": "when", "type": "DATE"}]})).unwrap();
        let error = batch(&schema, &[json!({"f": [{"v": "yesterday"}]})]).unwrap_err();
        assert!(error.to_string().contains("`when`"), "{error}");
    }
}
