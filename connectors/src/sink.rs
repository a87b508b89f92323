//! Where every connector writes: parquet part files under a fresh run folder of the object
//! store. Nothing written here is visible to queries until the orchestrator commits the
//! folder as a new table version.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver_catalog::{Storage, TableName};

use crate::ConnectorError;

/// Rows per parquet row group: small enough for min/max pruning to skip most of a file on a
/// selective filter, large enough for fast scans.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What a finished run left in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// URL of the run folder (trailing slash), to be committed as a version.
    pub location: String,
    /// Rows written.
    pub rows: i64,
    /// Parquet bytes written.
    pub bytes: i64,
    /// Part files written.
    pub files: usize,
}

/// Writes one run of a table as numbered parquet part files.
#[derive(Debug)]
pub struct ParquetSink {
    storage: Storage,
    prefix: ObjectPath,
    rows: i64,
    bytes: i64,
    files: usize,
}

impl ParquetSink {
    /// A sink writing into a new run folder of `table`.
    pub fn new(storage: &Storage, table: &TableName) -> Self {
        Self {
            storage: storage.clone(),
            prefix: storage.new_run_prefix(table),
            rows: 0,
            bytes: 0,
            files: 0,
        }
    }

    /// Stores an encoded part file (see [`encode_parquet`]) holding `rows` rows as part `index`.
    pub async fn put_part(
        &mut self,
        index: usize,
        file: Vec<u8>,
        rows: i64,
    ) -> Result<(), ConnectorError> {
        let path = self.prefix.clone().join(format!("part-{index:05}.parquet"));
        let len = file.len() as i64;
        self.storage
            .store()
            .put(&path, PutPayload::from(file))
            .await
            .map_err(|e| ConnectorError::Storage(format!("writing {path}: {e}")))?;
        self.rows += rows;
        self.bytes += len;
        self.files += 1;
        Ok(())
    }

    /// The run's summary, ready to be committed.
    pub fn finish(self) -> Landed {
        Landed {
            location: self.storage.folder_url(&self.prefix),
            rows: self.rows,
            bytes: self.bytes,
            files: self.files,
        }
    }
}

/// Encodes batches as one parquet file (snappy, 128 Ki-row groups, page statistics).
pub fn encode_parquet(
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch, ConnectorError>>,
) -> Result<(Vec<u8>, i64), ConnectorError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))?;
    let mut rows = 0;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as i64;
        writer.write(&batch)?;
    }
    Ok((writer.into_inner()?, rows))
}
