//! Where all table data is written — by connectors and by users' writes: parquet part files
//! under a fresh run folder of the object store. Nothing written here is visible to queries
//! until the state store commits it as (part of) a table version.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::Array;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::engine::wire::{plain_batch, plain_schema};
use crate::state::tables::ShardFile;
use crate::{CatalogError, Storage, TableName};

/// Rows per parquet row group: small enough for min/max pruning to skip most of a file on a
/// selective filter, large enough for fast scans.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// A fixed-width column is dictionary-encoded when at most one value in this many is new
/// (measured in benches/RESULTS.md, session 17).
const DICTIONARY_SHARE: usize = 16;

/// Rows per part file written from a stream.
const PART_ROWS: usize = 512 * 1024;
/// Parts encoded at once (one per core on the machines Quiver is sized for).
const ENCODERS: usize = 2;
/// Arrow bytes buffered for one part before it is encoded, whatever its row count.
const PART_BYTES: usize = 256 * 1024 * 1024;

/// A part file being encoded on a blocking thread: its bytes and row count.
type Encoding = tokio::task::JoinHandle<Result<(Vec<u8>, i64), CatalogError>>;

/// Rows and bytes written so far by a running sync; read by logs and progress bars.
#[derive(Debug, Default)]
pub struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// Rows read from the source so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Parquet bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sets the rows done, for jobs that count their own (a Jira backfill counts issues).
    pub fn set_rows(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
    }
}

/// What a finished run left in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// URL of the run folder (trailing slash), to be committed as a version.
    pub location: String,
    /// Rows written.
    pub rows: i64,
    /// Parquet bytes written.
    pub bytes: i64,
    /// The part files written, in order (each a [`ShardFile`] keyed `<run>/<file>`), for
    /// versions that list their files (users' writes).
    pub files: Vec<ShardFile>,
}

/// Writes one run of a table as numbered parquet part files.
#[derive(Debug)]
pub struct ParquetSink {
    storage: Storage,
    prefix: ObjectPath,
    rows: i64,
    bytes: i64,
    files: Vec<ShardFile>,
}

impl ParquetSink {
    /// A sink writing into a new run folder of `table`.
    pub fn new(storage: &Storage, table: &TableName) -> Self {
        Self {
            storage: storage.clone(),
            prefix: storage.new_run_prefix(table),
            rows: 0,
            bytes: 0,
            files: Vec::new(),
        }
    }

    /// Stores an encoded part file (see [`encode_parquet`]) holding `rows` rows as part `index`.
    pub async fn put_part(
        &mut self,
        index: usize,
        file: Vec<u8>,
        rows: i64,
    ) -> Result<(), CatalogError> {
        let name = format!("part-{index:05}.parquet");
        let path = self.prefix.clone().join(name.as_str());
        let len = file.len() as i64;
        self.storage
            .store()
            .put(&path, PutPayload::from(file))
            .await
            .map_err(|e| CatalogError::Storage(format!("writing {path}: {e}")))?;
        self.rows += rows;
        self.bytes += len;
        let run = self.prefix.filename().unwrap_or_default();
        self.files.push(ShardFile {
            shard: format!("{run}/{name}"),
            url: self.storage.file_url(&path),
            rows,
            bytes: len,
        });
        Ok(())
    }

    /// Makes the written files durable (fsync on a local disk; object stores are durable
    /// once a put returns) and returns the run's summary, ready to be committed.
    pub async fn finish(self) -> Result<Landed, CatalogError> {
        self.storage.sync_folder(&self.prefix).await?;
        Ok(Landed {
            location: self.storage.folder_url(&self.prefix),
            rows: self.rows,
            bytes: self.bytes,
            files: self.files,
        })
    }

    /// The run folder's URL (trailing slash).
    pub fn location(&self) -> String {
        self.storage.folder_url(&self.prefix)
    }

    /// Writes a stream of batches of `schema` as part files of up to half a million rows.
    /// Parts are encoded on blocking threads, up to [`ENCODERS`] at once, while the next
    /// ones are read, so the source and the encoders keep both cores busy; memory stays
    /// bounded by the parts in flight. The stream's first error ends the write, returned
    /// as it came.
    pub async fn write_stream<E>(
        mut self,
        schema: SchemaRef,
        mut batches: impl Stream<Item = Result<RecordBatch, E>> + Unpin,
        progress: &Progress,
    ) -> Result<Landed, E>
    where
        E: From<CatalogError>,
    {
        let mut pending: VecDeque<Encoding> = VecDeque::new();
        let mut part: Vec<RecordBatch> = Vec::new();
        let (mut part_rows, mut part_bytes) = (0usize, 0usize);
        let (mut spawned, mut index) = (0usize, 0usize);
        loop {
            let next = batches.next().await.transpose()?;
            let end = next.is_none();
            if let Some(batch) = next {
                progress
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                part_rows += batch.num_rows();
                part_bytes += arrow_bytes(&batch);
                if batch.num_rows() > 0 {
                    part.push(batch);
                }
            }
            let full = part_rows >= PART_ROWS || part_bytes >= PART_BYTES;
            // An empty source still lands one (empty) part, so the version has a schema.
            let last_or_empty = end && (!part.is_empty() || spawned == 0);
            if full || last_or_empty {
                if pending.len() >= ENCODERS
                    && let Some(handle) = pending.pop_front()
                {
                    self.store_encoded(&mut index, handle, progress).await?;
                }
                let batches = std::mem::take(&mut part);
                let schema = schema.clone();
                pending.push_back(tokio::task::spawn_blocking(move || {
                    encode_parquet::<CatalogError>(schema, batches.into_iter().map(Ok))
                }));
                spawned += 1;
                (part_rows, part_bytes) = (0, 0);
            }
            if end {
                break;
            }
        }
        while let Some(handle) = pending.pop_front() {
            self.store_encoded(&mut index, handle, progress).await?;
        }
        Ok(self.finish().await?)
    }

    async fn store_encoded(
        &mut self,
        index: &mut usize,
        handle: Encoding,
        progress: &Progress,
    ) -> Result<(), CatalogError> {
        let (file, rows) = handle
            .await
            .map_err(|e| CatalogError::Internal(format!("parquet encoder failed: {e}")))??;
        progress
            .bytes
            .fetch_add(file.len() as u64, Ordering::Relaxed);
        self.put_part(*index, file, rows).await?;
        *index += 1;
        Ok(())
    }
}

/// Encodes batches as one parquet file (LZ4, 128 Ki-row groups, page statistics).
///
/// LZ4 (`LZ4_RAW`) rather than snappy: files of the same size, and every scan and lookup
/// 4–12 % faster, since decompression was a fifth of a full scan's CPU.
///
/// Dictionary encoding is used for text and binary columns, and for fixed-width columns
/// whose first batch repeats its values (see [`repeats`]): flags, quantities, rates and
/// dates scan faster from a dictionary, while for keys and amounts building one that is
/// abandoned once full costs about as much as all the rest of the encoding, and every read
/// of a page — a point lookup's unit of work — would decode it.
pub fn encode_parquet<E: From<CatalogError>>(
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch, E>>,
) -> Result<(Vec<u8>, i64), E> {
    let mut batches = batches.into_iter().peekable();
    let first = batches.peek().and_then(|b| b.as_ref().ok());
    let mut props = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for (i, field) in schema.fields().iter().enumerate() {
        let text = matches!(
            field.data_type(),
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Dictionary(_, _)
        );
        if text || first.is_some_and(|b| repeats(b.column(i).as_ref())) {
            props =
                props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    let props = props.build();
    // Files hold plain strings, whatever the source produced: the engine reads them as
    // views anyway, and a merge compares an old version's types with a new one's.
    let schema = plain_schema(&schema);
    let parquet =
        |e: parquet::errors::ParquetError| CatalogError::Internal(format!("parquet: {e}"));
    let mut writer =
        ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props)).map_err(parquet)?;
    let mut rows = 0;
    for batch in batches {
        let batch = plain_batch(batch?, &schema).map_err(|e| CatalogError::Query(e.into()))?;
        rows += batch.num_rows() as i64;
        writer.write(&batch).map_err(parquet)?;
    }
    Ok((writer.into_inner().map_err(parquet)?, rows))
}

/// The bytes of a batch's values. Not `get_array_memory_size`: the columns of a batch
/// decoded from one IPC message (a client's upload) share its buffer, which that would
/// count once per column.
pub fn arrow_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// A fixed-width column's values repeat when at most one in [`DICTIONARY_SHARE`] is new.
fn repeats(array: &dyn Array) -> bool {
    let Some(width) = array.data_type().primitive_width() else {
        return false;
    };
    let most = array.len() / DICTIONARY_SHARE;
    let data = array.to_data();
    let Some(values) = data.buffers().first() else {
        return false;
    };
    let values = &values.as_slice()[data.offset() * width..][..data.len() * width];
    let mut seen = HashSet::with_capacity(most + 1);
    for value in values.chunks_exact(width) {
        seen.insert(value);
        if seen.len() > most {
            return false;
        }
    }
    most > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn repeating_columns_get_dictionaries_and_keys_do_not() {
        let rows = 10_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("quantity", DataType::Int64, false),
            Field::new("day", DataType::Date32, true),
            Field::new("note", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % 50))),
                Arc::new(Date32Array::from_iter(
                    (0..rows).map(|i| (i % 7 != 0).then_some(i as i32 % 300)),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("n{i}")),
                )),
            ],
        )
        .unwrap();
        let (file, count) = encode_parquet::<CatalogError>(schema, [Ok(batch.clone())]).unwrap();
        assert_eq!(count, rows);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        let dictionary: Vec<bool> = reader
            .metadata()
            .row_group(0)
            .columns()
            .iter()
            .map(|c| c.dictionary_page_offset().is_some())
            .collect();
        assert_eq!(dictionary, [false, true, true, true]);
        let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &read).unwrap(),
            batch
        );
    }
}
