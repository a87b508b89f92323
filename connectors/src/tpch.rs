//! The TPC-H demo dataset, generated offline with the `tpchgen` crate.
//!
//! `tpchgen` yields rows as CSV text; Arrow's CSV reader turns them into typed batches (keys
//! `BIGINT`, money `DECIMAL(15,2)`, dates `DATE`) which are written as parquet. Large tables
//! are generated as several independent parts, one part file each, so memory stays bounded
//! and both cores work.

use std::io::Cursor;
use std::sync::Arc;

use arrow::csv::ReaderBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver_catalog::{Storage, TableName};
use tpchgen::csv::{
    CustomerCsv, LineItemCsv, NationCsv, OrderCsv, PartCsv, PartSuppCsv, RegionCsv, SupplierCsv,
};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

use crate::ConnectorError;
use crate::sink::{Landed, ParquetSink, encode_parquet};

/// The schema the demo tables live in.
pub const SCHEMA: &str = "tpch";

/// The eight TPC-H tables, smallest first.
pub const TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// Rows of CSV text parsed into one Arrow batch.
const CHUNK_ROWS: usize = 65_536;
/// Target rows per part file.
const PART_ROWS: f64 = 1_500_000.0;

/// Rows per unit of scale factor (`lineitem` averages four per order).
fn rows_per_scale(table: &str) -> f64 {
    match table {
        "lineitem" => 6_000_000.0,
        "orders" => 1_500_000.0,
        "partsupp" => 800_000.0,
        "part" => 200_000.0,
        "customer" => 150_000.0,
        "supplier" => 10_000.0,
        _ => 0.0, // nation and region have a fixed size
    }
}

/// CSV header of a table; it names the columns.
fn header(table: &str) -> &'static str {
    match table {
        "region" => RegionCsv::header(),
        "nation" => NationCsv::header(),
        "supplier" => SupplierCsv::header(),
        "customer" => CustomerCsv::header(),
        "part" => PartCsv::header(),
        "partsupp" => PartSuppCsv::header(),
        "orders" => OrderCsv::header(),
        _ => LineItemCsv::header(),
    }
}

/// The Arrow schema of a TPC-H table, typed from its column names.
pub fn schema(table: &str) -> SchemaRef {
    let fields = header(table).split(',').map(|name| {
        let column = name.split_once('_').map_or(name, |(_, c)| c);
        let data_type = match column {
            c if c.ends_with("key") => DataType::Int64,
            c if c.ends_with("date") => DataType::Date32,
            "size" | "availqty" | "shippriority" | "linenumber" => DataType::Int32,
            "acctbal" | "retailprice" | "supplycost" | "totalprice" | "quantity"
            | "extendedprice" | "discount" | "tax" => DataType::Decimal128(15, 2),
            _ => DataType::Utf8,
        };
        Field::new(name, data_type, false)
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// CSV lines of one part (1-based) of a table.
fn lines(
    table: &str,
    scale: f64,
    part: i32,
    parts: i32,
) -> Box<dyn Iterator<Item = String> + Send> {
    macro_rules! rows {
        ($generator:ident, $csv:ident) => {
            Box::new(
                $generator::new(scale, part, parts)
                    .into_iter()
                    .map(|row| $csv::new(row).to_string()),
            )
        };
    }
    match table {
        "region" => rows!(RegionGenerator, RegionCsv),
        "nation" => rows!(NationGenerator, NationCsv),
        "supplier" => rows!(SupplierGenerator, SupplierCsv),
        "customer" => rows!(CustomerGenerator, CustomerCsv),
        "part" => rows!(PartGenerator, PartCsv),
        "partsupp" => rows!(PartSuppGenerator, PartSuppCsv),
        "orders" => rows!(OrderGenerator, OrderCsv),
        _ => rows!(LineItemGenerator, LineItemCsv),
    }
}

/// Encodes one part of a table as a parquet file; returns the file and its row count.
fn generate_part(
    table: &str,
    scale: f64,
    part: i32,
    parts: i32,
) -> Result<(Vec<u8>, i64), ConnectorError> {
    let schema = schema(table);
    let mut lines = lines(table, scale, part, parts).peekable();
    let batches = std::iter::from_fn(|| {
        lines.peek()?;
        let mut text = String::with_capacity(CHUNK_ROWS * 160);
        for line in lines.by_ref().take(CHUNK_ROWS) {
            text.push_str(&line);
            text.push('\n');
        }
        let rows = text.lines().count();
        let batch = ReaderBuilder::new(schema.clone())
            .with_batch_size(rows.max(1))
            .build(Cursor::new(text))
            .and_then(|mut reader| reader.next().transpose())
            .map_err(ConnectorError::from)
            .and_then(|b| b.ok_or_else(|| ConnectorError::Source("empty TPC-H chunk".into())));
        Some(batch)
    });
    encode_parquet(schema.clone(), batches)
}

/// Generates `tpch.<table>` at `scale` into a new run folder; the caller commits it.
pub async fn generate(
    storage: &Storage,
    table: &str,
    scale: f64,
) -> Result<Landed, ConnectorError> {
    if !TABLES.contains(&table) {
        return Err(ConnectorError::Config(format!(
            "`{table}` is not a TPC-H table (expected one of: {})",
            TABLES.join(", ")
        )));
    }
    let name = TableName::new(SCHEMA, table)?;
    let parts = ((rows_per_scale(table) * scale) / PART_ROWS)
        .ceil()
        .max(1.0) as i32;
    let mut sink = ParquetSink::new(storage, &name);
    // Two parts at a time: both cores busy, memory bounded to two part files.
    let mut part = 1;
    while part <= parts {
        let batch: Vec<i32> = (part..=parts.min(part + 1)).collect();
        let handles: Vec<_> = batch
            .iter()
            .map(|&p| {
                let table = table.to_string();
                tokio::task::spawn_blocking(move || generate_part(&table, scale, p, parts))
            })
            .collect();
        for (p, handle) in batch.iter().zip(handles) {
            let (file, rows) = handle
                .await
                .map_err(|e| ConnectorError::Source(format!("TPC-H generator failed: {e}")))??;
            sink.put_part(*p as usize, file, rows).await?;
        }
        part += batch.len() as i32;
    }
    let landed = sink.finish().await?;
    tracing::info!(table = %name, scale, rows = landed.rows, bytes = landed.bytes, files = landed.files.len(), "TPC-H table generated");
    Ok(landed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_typed() {
        let s = schema("lineitem");
        assert_eq!(s.fields().len(), 16);
        for (column, expected) in [
            ("l_orderkey", DataType::Int64),
            ("l_shipdate", DataType::Date32),
            ("l_discount", DataType::Decimal128(15, 2)),
            ("l_linenumber", DataType::Int32),
            ("l_comment", DataType::Utf8),
        ] {
            assert_eq!(
                s.field_with_name(column).unwrap().data_type(),
                &expected,
                "{column}"
            );
        }
    }

    #[test]
    fn nation_has_25_rows_that_parse() {
        let (file, rows) = generate_part("nation", 0.01, 1, 1).unwrap();
        assert_eq!(rows, 25);
        assert!(file.starts_with(b"PAR1"));
    }

    #[test]
    fn parts_add_up_to_the_whole_table() {
        let whole = generate_part("orders", 0.01, 1, 1).unwrap().1;
        let split = generate_part("orders", 0.01, 1, 2).unwrap().1
            + generate_part("orders", 0.01, 2, 2).unwrap().1;
        assert_eq!(whole, 15_000);
        assert_eq!(split, whole);
    }
}
