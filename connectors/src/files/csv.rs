//! CSV through DuckDB: its sniffer detects the dialect (delimiter, quoting, header) and the
//! column types (integers, dates and timestamps in their local formats); a fractional column
//! written with a fixed point (money: `1.234,56`) lands as decimal, not double. DuckDB runs on
//! a blocking thread of its own and hands its batches over with backpressure.

use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::{Batches, ConnectorError};

use super::FilesOptions;

/// Rows per batch handed on (DuckDB produces 2 048-row chunks).
const BATCH_ROWS: usize = 65_536;

/// Most fraction digits a CSV column may have and land as decimal; columns with more
/// (measurements, computed ratios) stay double.
const MAX_DECIMAL_SCALE: i64 = 9;

/// Reads CSV through DuckDB's `read_csv`, which sniffs what was not given.
pub(crate) async fn read_csv(
    options: FilesOptions,
    path: String,
) -> Result<Batches, ConnectorError> {
    blocking_batches(move |out| {
        let conn = duckdb::Connection::open_in_memory()
            .and_then(|c| {
                // Let DuckDB's threads parse ahead of the parquet encoder (its default
                // streaming buffer is 1 MB, which serialises the read) and hand over chunks
                // as they finish rather than in file order.
                c.execute_batch(
                    "SET streaming_buffer_size = '256MB'; SET preserve_insertion_order = false;",
                )?;
                Ok(c)
            })
            .map_err(|e| ConnectorError::Source(format!("DuckDB: {e}")))?;
        let mut args = vec!["?".to_string()];
        let mut params: Vec<Box<dyn duckdb::ToSql>> = vec![Box::new(path.clone())];
        let text_options = [
            ("delim", &options.delimiter),
            ("quote", &options.quote),
            ("dateformat", &options.date_format),
            ("timestampformat", &options.timestamp_format),
            ("decimal_separator", &options.decimal_separator),
            ("thousands", &options.thousands_separator),
            ("nullstr", &options.null_string),
        ];
        for (name, value) in text_options {
            if let Some(value) = value {
                args.push(format!("{name} = ?"));
                params.push(Box::new(value.clone()));
            }
        }
        if let Some(header) = options.header {
            args.push("header = ?".into());
            params.push(Box::new(header));
        }
        args.push("union_by_name = true".into());
        let csv_error = |e: duckdb::Error| {
            ConnectorError::Source(format!("reading CSV `{}`: {e}", options.path))
        };
        let refs: Vec<&dyn duckdb::ToSql> = params.iter().map(|p| p.as_ref()).collect();
        let decimals = fixed_point_columns(&conn, &args, &refs, &options).map_err(csv_error)?;
        if !decimals.is_empty() {
            let types: Vec<String> = decimals
                .iter()
                .map(|(name, precision, scale)| {
                    format!("{}: 'DECIMAL({precision}, {scale})'", quote_literal(name))
                })
                .collect();
            args.push(format!("types = {{{}}}", types.join(", ")));
        }
        let sql = format!("SELECT * FROM read_csv({})", args.join(", "));
        let mut stmt = conn.prepare(&sql).map_err(csv_error)?;
        // The iterator panics on a failed chunk; step() below reports it as an error.
        drop(stmt.stream_arrow(refs.as_slice()).map_err(csv_error)?);
        let schema = stmt.schema();
        out.schema(schema.clone());
        let mut coalescer = BatchCoalescer::new(schema, BATCH_ROWS);
        while let Some(chunk) = stmt.step().map_err(csv_error)? {
            coalescer.push_batch(RecordBatch::from(&chunk))?;
            while let Some(batch) = coalescer.next_completed_batch() {
                if !out.batch(batch) {
                    return Ok(());
                }
            }
        }
        coalescer.finish_buffered_batch()?;
        while let Some(batch) = coalescer.next_completed_batch() {
            if !out.batch(batch) {
                return Ok(());
            }
        }
        Ok(())
    })
    .await
}

/// The columns DuckDB's sniffer typed DOUBLE whose every value is a plain fixed-point number
/// (sign, digits, thousands separators, at most [`MAX_DECIMAL_SCALE`] fraction digits), with
/// the most fraction digits seen: those are amounts, which land as decimals so they add up
/// exactly. The precision is 18 when the widest value fits (DuckDB parses those as 64-bit
/// integers, ~25× faster than its 128-bit `DECIMAL(38, s)`), else 38. One extra pass over
/// the text (a fraction of the read), only when there are such candidates.
fn fixed_point_columns(
    conn: &duckdb::Connection,
    args: &[String],
    params: &[&dyn duckdb::ToSql],
    options: &FilesOptions,
) -> Result<Vec<(String, u8, i64)>, duckdb::Error> {
    let mut describe = conn.prepare(&format!(
        "SELECT column_name FROM (DESCRIBE SELECT * FROM read_csv({})) WHERE column_type = 'DOUBLE'",
        args.join(", ")
    ))?;
    let doubles: Vec<String> = describe
        .query_map(params, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if doubles.is_empty() {
        return Ok(Vec::new());
    }
    let decimal = options.decimal_separator.as_deref().unwrap_or(".");
    let thousands = options.thousands_separator.as_deref().unwrap_or("");
    let point = regex_escape(decimal);
    let checks: Vec<String> = doubles
        .iter()
        .map(|name| {
            let text = format!(
                "replace(trim({}), {}, '')",
                quote_identifier(name),
                quote_literal(thousands)
            );
            let decimal = quote_literal(decimal);
            format!(
                "bool_and(regexp_full_match({text}, '[+-]?[0-9]+({point}[0-9]+)?')), \
                 coalesce(max(length(split_part({text}, {decimal}, 2))), 0), \
                 coalesce(max(length(ltrim(split_part({text}, {decimal}, 1), '+-'))), 0)"
            )
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM read_csv({}, all_varchar = true)",
        checks.join(", "),
        args.join(", ")
    );
    let row: Vec<(Option<bool>, i64, i64)> = conn.query_row(&sql, params, |r| {
        (0..doubles.len())
            .map(|i| Ok((r.get(3 * i)?, r.get(3 * i + 1)?, r.get(3 * i + 2)?)))
            .collect()
    })?;
    Ok(doubles
        .into_iter()
        .zip(row)
        .filter_map(|(name, (plain, scale, digits))| {
            let precision = match digits + scale {
                0..=18 => 18,
                19..=38 => 38,
                _ => return None,
            };
            (plain == Some(true) && (1..=MAX_DECIMAL_SCALE).contains(&scale))
                .then_some((name, precision, scale))
        })
        .collect())
}

/// `text` as a DuckDB string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` as a DuckDB identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` matched literally in a regular expression.
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Where a blocking reader hands its schema and batches.
pub(crate) struct Emitter {
    schema: Option<oneshot::Sender<Result<SchemaRef, ConnectorError>>>,
    batches: mpsc::Sender<Result<RecordBatch, ConnectorError>>,
}

impl Emitter {
    /// Announces the schema; must come before the first batch.
    pub(crate) fn schema(&mut self, schema: SchemaRef) {
        if let Some(tx) = self.schema.take() {
            let _ = tx.send(Ok(schema));
        }
    }

    /// Hands on a batch; `false` when nobody reads any more (stop reading).
    pub(crate) fn batch(&mut self, batch: RecordBatch) -> bool {
        self.batches.blocking_send(Ok(batch)).is_ok()
    }
}

/// Runs a blocking reader on its own thread and streams what it emits, with backpressure.
pub(crate) async fn blocking_batches(
    produce: impl FnOnce(&mut Emitter) -> Result<(), ConnectorError> + Send + 'static,
) -> Result<Batches, ConnectorError> {
    let (schema_tx, schema_rx) = oneshot::channel();
    let (tx, mut rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut emitter = Emitter {
            schema: Some(schema_tx),
            batches: tx,
        };
        if let Err(e) = produce(&mut emitter) {
            match emitter.schema.take() {
                Some(schema) => {
                    let _ = schema.send(Err(e));
                }
                None => {
                    let _ = emitter.batches.blocking_send(Err(e));
                }
            }
        }
    });
    let schema = schema_rx
        .await
        .map_err(|_| ConnectorError::Source("the reader stopped unexpectedly".into()))??;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Ok(Batches { schema, stream })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn csv_is_sniffed_into_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "id;amount;day;note;ratio;big\n1;1.212,50;03.01.2026;x;0,1234567890123;12.345.678.901.234.567,89\n2;-7,2;04.01.2026;;1,5e3;1,5\n",
        )
        .unwrap();
        let opts = FilesOptions {
            path: path.to_string_lossy().into(),
            format: None,
            delimiter: None,
            header: None,
            quote: None,
            date_format: Some("%d.%m.%Y".into()),
            timestamp_format: None,
            decimal_separator: Some(",".into()),
            thousands_separator: Some(".".into()),
            null_string: None,
            storage_options: BTreeMap::new(),
        };
        let batches = read_csv(opts, path.to_string_lossy().into()).await.unwrap();
        let types: Vec<String> = batches
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(types[0], "id:Int64");
        // Money lands exactly, at the most fraction digits seen, in 18 digits when they are
        // enough and 38 when not; other fractions stay double.
        assert_eq!(types[1], "amount:Decimal128(18, 2)");
        assert_eq!(types[2], "day:Date32");
        assert_eq!(types[4], "ratio:Float64");
        assert_eq!(types[5], "big:Decimal128(38, 2)");
        let batches: Vec<RecordBatch> = batches.stream.try_collect().await.unwrap();
        let amounts = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let amounts = arrow::util::display::ArrayFormatter::try_new(
            amounts.column(1).as_ref(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            [amounts.value(0).to_string(), amounts.value(1).to_string()],
            ["1212.50", "-7.20"]
        );
        let big = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let big = arrow::util::display::ArrayFormatter::try_new(
            big.column(5).as_ref(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(big.value(0).to_string(), "12345678901234567.89");
    }
}
