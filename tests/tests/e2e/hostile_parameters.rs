//! End-to-end: bound parameters sent as hostile Arrow IPC streams — decompression bombs,
//! lying length prefixes, truncated bodies and random corruption — to the real server, which
//! must refuse each one with a clear status, allocate nothing it was not allowed, and go on
//! serving.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::ipc::{CompressionType, root_as_message};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandPreparedStatementQuery, ProstMessageExt,
};
use arrow_flight::{Action, FlightData, FlightDescriptor};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_e2e::{TestServer, query, row_count};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

struct Raw {
    client: FlightServiceClient<Channel>,
    token: String,
}

impl Raw {
    async fn new(server: &TestServer) -> anyhow::Result<Self> {
        let token = server.client().await?.token().unwrap().clone();
        Ok(Self {
            client: FlightServiceClient::new(server.channel().await?),
            token,
        })
    }

    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        request
    }

    /// The handle of `sql`, prepared.
    async fn prepare(&mut self, sql: &str) -> anyhow::Result<Bytes> {
        let body = ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        let action = Action::new("CreatePreparedStatement", body);
        let mut results = self
            .client
            .do_action(self.authed(action))
            .await?
            .into_inner();
        let first = results.next().await.unwrap()?;
        let result: ActionCreatePreparedStatementResult =
            Any::decode(first.body)?.unpack()?.unwrap();
        Ok(result.prepared_statement_handle)
    }

    /// Binds `messages` (a parameter stream) to `handle`: the first refusal, if any.
    async fn put(&mut self, messages: Vec<FlightData>) -> Result<(), Status> {
        let request = self.authed(futures::stream::iter(messages));
        let mut results = self.client.do_put(request).await?.into_inner();
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(())
    }
}

/// `batch` as a parameter stream for `handle`: schema message, then the batch, compressed
/// with `codec`.
async fn stream(handle: &Bytes, batch: RecordBatch, codec: CompressionType) -> Vec<FlightData> {
    let descriptor = FlightDescriptor::new_cmd(
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone(),
        }
        .as_any()
        .encode_to_vec(),
    );
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(codec))
        .unwrap();
    FlightDataEncoderBuilder::new()
        .with_options(options)
        .with_max_flight_data_size(usize::MAX)
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .unwrap()
}

/// `messages` with the length prefix of the batch's largest buffer set to `claim`.
fn claiming(mut messages: Vec<FlightData>, claim: i64) -> Vec<FlightData> {
    let last = messages.last_mut().unwrap();
    let at = {
        let header = root_as_message(&last.data_header).unwrap();
        let batch = header.header_as_record_batch().unwrap();
        let buffer = batch
            .buffers()
            .unwrap()
            .iter()
            .max_by_key(|b| b.length())
            .unwrap();
        buffer.offset() as usize
    };
    let mut body = last.data_body.to_vec();
    body[at..at + 8].copy_from_slice(&claim.to_le_bytes());
    last.data_body = body.into();
    messages
}

fn numbers(n: i64) -> RecordBatch {
    let values: ArrayRef = Arc::new(Int64Array::from((0..n).collect::<Vec<_>>()));
    RecordBatch::try_from_iter([("p", values)]).unwrap()
}

fn text(value: String) -> RecordBatch {
    let values: ArrayRef = Arc::new(StringArray::from(vec![value]));
    RecordBatch::try_from_iter([("p", values)]).unwrap()
}

#[tokio::test]
async fn hostile_parameter_streams_are_refused_and_the_server_lives() -> anyhow::Result<()> {
    let server = TestServer::spawn()?;
    let mut raw = Raw::new(&server).await?;
    let ints = raw.prepare("SELECT ? + 1 AS x").await?;
    let strings = raw.prepare("SELECT length(?) AS n").await?;

    // Honest compressed parameters work, with either codec.
    for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
        raw.put(stream(&ints, numbers(100), codec).await)
            .await
            .unwrap_or_else(|s| panic!("{codec:?}: {s}"));
    }

    // A 1 TiB claim: refused before anything is allocated (this used to abort the process).
    for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
        let bomb = claiming(stream(&ints, numbers(100), codec).await, 1 << 40);
        let status = raw.put(bomb).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(
            status.message().contains("query.max_parameter_bytes"),
            "{status}"
        );
    }

    // 64 MiB of one letter compresses to kilobytes: over the 1 MiB limit once decoded.
    let big = text("x".repeat(64 << 20));
    for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
        let messages = stream(&strings, big.clone(), codec).await;
        let sent: usize = messages.iter().map(|m| m.data_body.len()).sum();
        assert!(sent < 1 << 20, "{sent} bytes on the wire");
        let status = raw.put(messages.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{codec:?}: {status}"
        );
        assert!(
            status.message().contains("query.max_parameter_bytes"),
            "{status}"
        );
        // The same bomb claiming 16 bytes: LZ4 would grow past the claim, ZSTD stops at it.
        let status = raw.put(claiming(messages, 16)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{codec:?}: {status}");
    }

    // Truncated bodies and corrupted bytes, in header and body: every one answered.
    let honest = [
        stream(&ints, numbers(500), CompressionType::LZ4_FRAME).await,
        stream(&ints, numbers(500), CompressionType::ZSTD).await,
        stream(&strings, text("y".repeat(5000)), CompressionType::LZ4_FRAME).await,
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut refused, mut accepted) = (0, 0);
    for round in 0..400 {
        let mut messages = honest[round % honest.len()].clone();
        let last = messages.last_mut().unwrap();
        let in_header = next() % 3 == 0;
        let mut bytes = if in_header {
            last.data_header.to_vec()
        } else {
            last.data_body.to_vec()
        };
        match next() % 4 {
            0 => bytes.truncate((next() as usize) % bytes.len().max(1)),
            _ => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= 1 << (next() % 8);
                    }
                }
            }
        }
        if in_header {
            last.data_header = bytes.into();
        } else {
            last.data_body = bytes.into();
        }
        match raw.put(messages).await {
            Ok(()) => accepted += 1,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted
                    ),
                    "round {round}: {status}; the server's log ends: {}",
                    server
                        .log()
                        .lines()
                        .rev()
                        .take(8)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 100, "{refused} refused, {accepted} accepted");

    // Still serving, to this client and a new one.
    let mut client = server.client().await?;
    assert_eq!(row_count(&query(&mut client, "SELECT 1").await?), 1);
    raw.put(stream(&ints, numbers(3), CompressionType::ZSTD).await)
        .await?;
    Ok(())
}
