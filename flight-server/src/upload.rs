//! Arrow IPC streams a client sends (bound parameters, bulk ingest), checked before
//! arrow-ipc decodes them.
//!
//! arrow-ipc trusts the offsets and lengths a message's header declares: a buffer said to
//! reach past the body panics the task that decodes it. And a compressed IPC buffer starts
//! with the length it claims to inflate to, which arrow-ipc allocates before it looks at
//! the data: a 32 KB message claiming 1 TiB aborts the process, and one claiming 768 MiB is
//! granted it. So each message is read here first, from its header and the first bytes of
//! its buffers, without allocating: every buffer must lie within the body, the bytes it
//! will hold once decoded must fit what is left of the caller's budget, and LZ4 buffers —
//! whose decoder grows past the claimed length — are inflated into nothing to check that
//! the claim is true. ZSTD's decoder stops at the claim by itself.

use std::io::Read;

use arrow::ipc::{CompressionType, MessageHeader, root_as_message};
use arrow_flight::FlightData;

/// Why a message was refused before decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UploadError {
    /// It would decode to more than what is left of the budget.
    #[error("it decodes to more than the {budget} bytes left")]
    OverBudget {
        /// What was left.
        budget: usize,
    },
    /// It is not a well-formed Arrow IPC message.
    #[error("malformed Arrow IPC message: {0}")]
    Malformed(String),
}

/// The bytes `message`'s buffers hold once decoded — its body as sent, or for compressed
/// buffers the lengths they claim (checked) — refusing as soon as that passes `budget`.
pub(crate) fn decoded_len(message: &FlightData, budget: usize) -> Result<usize, UploadError> {
    let body = &message.data_body[..];
    if message.data_header.is_empty() {
        return within(body.len(), budget);
    }
    let header = root_as_message(&message.data_header)
        .map_err(|e| UploadError::Malformed(format!("header: {e}")))?;
    let batch = match header.header_type() {
        MessageHeader::RecordBatch => header.header_as_record_batch(),
        MessageHeader::DictionaryBatch => header
            .header_as_dictionary_batch()
            .and_then(|dictionary| dictionary.data()),
        _ => None,
    };
    let Some(batch) = batch else {
        return within(body.len(), budget);
    };
    let buffers = batch
        .buffers()
        .into_iter()
        .flatten()
        .map(|buffer| {
            let (offset, length) = (buffer.offset(), buffer.length());
            usize::try_from(offset)
                .ok()
                .zip(usize::try_from(length).ok())
                .and_then(|(start, len)| body.get(start..start.checked_add(len)?))
                .ok_or_else(|| {
                    UploadError::Malformed(format!(
                        "a buffer at {offset}+{length} lies outside the {}-byte body",
                        body.len()
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(compression) = batch.compression() else {
        return within(body.len(), budget);
    };
    let codec = compression.codec();
    if codec != CompressionType::LZ4_FRAME && codec != CompressionType::ZSTD {
        return Err(UploadError::Malformed(format!(
            "unknown compression codec {}",
            codec.0
        )));
    }
    let mut total = 0usize;
    for bytes in buffers {
        if bytes.is_empty() {
            continue;
        }
        let (prefix, data) = bytes.split_first_chunk::<8>().ok_or_else(|| {
            UploadError::Malformed("a compressed buffer shorter than its length prefix".into())
        })?;
        let claimed = match i64::from_le_bytes(*prefix) {
            -1 => data.len(), // stored uncompressed
            n => usize::try_from(n).map_err(|_| {
                UploadError::Malformed(format!("a compressed buffer claims {n} bytes"))
            })?,
        };
        total = within(total.saturating_add(claimed), budget)?;
        if codec == CompressionType::LZ4_FRAME && i64::from_le_bytes(*prefix) > 0 {
            let actual = lz4_len(data, claimed)?;
            if actual != claimed {
                return Err(UploadError::Malformed(format!(
                    "an LZ4 buffer claims {claimed} bytes but holds {actual}{}",
                    if actual > claimed { " or more" } else { "" }
                )));
            }
        }
    }
    Ok(total)
}

fn within(len: usize, budget: usize) -> Result<usize, UploadError> {
    if len > budget {
        Err(UploadError::OverBudget { budget })
    } else {
        Ok(len)
    }
}

/// How many bytes an LZ4 frame inflates to, reading at most one past `claimed`.
fn lz4_len(data: &[u8], claimed: usize) -> Result<usize, UploadError> {
    let decoder = lz4_flex::frame::FrameDecoder::new(data);
    let limit = u64::try_from(claimed).unwrap_or(u64::MAX).saturating_add(1);
    std::io::copy(&mut decoder.take(limit), &mut std::io::sink())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .map_err(|e| UploadError::Malformed(format!("an LZ4 buffer does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    /// The record batch message of a two-column batch, compressed with `codec`.
    fn message(codec: Option<CompressionType>, rows: usize) -> FlightData {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7; rows])),
                Arc::new(StringArray::from(vec!["x"; rows])),
            ],
        )
        .unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap();
        let (_, encoded) = IpcDataGenerator::default()
            .encode(
                &batch,
                &mut DictionaryTracker::new(false),
                &options,
                &mut Default::default(),
            )
            .unwrap();
        encoded.into()
    }

    /// `message` with the length prefix of its first non-empty buffer set to `claim`.
    fn claiming(mut message: FlightData, claim: i64) -> FlightData {
        let header = root_as_message(&message.data_header).unwrap();
        let batch = header.header_as_record_batch().unwrap();
        let first = batch
            .buffers()
            .unwrap()
            .iter()
            .find(|b| b.length() > 0)
            .unwrap();
        let at = first.offset() as usize;
        let mut body = message.data_body.to_vec();
        body[at..at + 8].copy_from_slice(&claim.to_le_bytes());
        message.data_body = body.into();
        message
    }

    #[test]
    fn honest_messages_count_what_they_decode_to() {
        let plain = message(None, 1000);
        assert_eq!(decoded_len(&plain, usize::MAX), Ok(plain.data_body.len()));
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            let packed = message(Some(codec), 1000);
            let len = decoded_len(&packed, usize::MAX).unwrap();
            assert!(len >= 9000 && len > packed.data_body.len(), "{len}");
            assert_eq!(
                decoded_len(&packed, len - 1),
                Err(UploadError::OverBudget { budget: len - 1 })
            );
        }
    }

    #[test]
    fn lying_and_broken_buffers_are_refused_before_allocation() {
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            let packed = message(Some(codec), 1000);
            let tib = claiming(packed.clone(), 1 << 40);
            assert_eq!(
                decoded_len(&tib, 1 << 20),
                Err(UploadError::OverBudget { budget: 1 << 20 })
            );
            assert!(matches!(
                decoded_len(&claiming(packed.clone(), -5), 1 << 20),
                Err(UploadError::Malformed(_))
            ));
            let mut cut = packed.clone();
            cut.data_body = cut.data_body.slice(..cut.data_body.len() / 2);
            assert!(matches!(
                decoded_len(&cut, 1 << 20),
                Err(UploadError::Malformed(_))
            ));
        }
        // LZ4 claiming less than it holds (its decoder would grow past the claim).
        let lz4 = message(Some(CompressionType::LZ4_FRAME), 1000);
        assert!(matches!(
            decoded_len(&claiming(lz4, 16), 1 << 20),
            Err(UploadError::Malformed(m)) if m.contains("claims 16 bytes")
        ));
        // A plain body cut short of the buffers its header declares (arrow-ipc panics).
        let mut short = message(None, 1000);
        short.data_body = short.data_body.slice(..short.data_body.len() / 2);
        assert!(matches!(
            decoded_len(&short, usize::MAX),
            Err(UploadError::Malformed(m)) if m.contains("lies outside")
        ));
        let mut garbage = message(None, 10);
        garbage.data_header = vec![0xff; 40].into();
        assert!(matches!(
            decoded_len(&garbage, 1 << 20),
            Err(UploadError::Malformed(_))
        ));
    }
}
