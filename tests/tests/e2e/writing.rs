//! End-to-end: writes through the arrow-flight Rust client's bulk ingest, where the timing
//! of two writers can be held in the test's hands.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use futures::stream;
use quiver_e2e::{TestServer, query};
use tonic::Code;

fn batch(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
}

fn ingest(
    table: &str,
    missing: TableNotExistOption,
    exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: missing.into(),
            if_exists: exists.into(),
        }),
        table: table.into(),
        schema: Some("me".into()),
        ..Default::default()
    }
}

fn values(batches: &[RecordBatch]) -> Vec<i64> {
    let mut v: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn two_replaces_race_to_one_winner_and_two_appends_both_land() -> anyhow::Result<()> {
    use TableExistsOption as E;
    use TableNotExistOption as N;
    let server = TestServer::spawn()?;
    let (mut a, mut b) = (server.client().await?, server.client().await?);
    let create = ingest("race", N::Create, E::Fail);
    let rows = a
        .execute_ingest(create, stream::iter([Ok(batch(&[1]))]))
        .await?;
    assert_eq!(rows, 1);

    // A starts replacing version 1 and keeps its stream open…
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<RecordBatch, FlightError>>();
    tx.unbounded_send(Ok(batch(&[10, 11])))?;
    let slow = tokio::spawn(async move {
        a.execute_ingest(ingest("race", N::Create, E::Replace), rx)
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // …while B replaces it and commits first.
    let rows = b
        .execute_ingest(
            ingest("race", N::Create, E::Replace),
            stream::iter([Ok(batch(&[20]))]),
        )
        .await?;
    assert_eq!(rows, 1);
    drop(tx);
    let lost = slow
        .await?
        .expect_err("the second replace to finish must lose");
    let FlightError::Tonic(status) = &lost else {
        panic!("{lost:?}")
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("changed while you wrote it"),
        "{status:?}"
    );
    // Never a mix: the table holds the winner's rows.
    assert_eq!(
        values(&query(&mut b, "SELECT x FROM me.race").await?),
        vec![20]
    );

    // Two appends started side by side both land.
    let mut c = server.client().await?;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<RecordBatch, FlightError>>();
    tx.unbounded_send(Ok(batch(&[30])))?;
    let first = tokio::spawn(async move {
        c.execute_ingest(ingest("race", N::Fail, E::Append), rx)
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.execute_ingest(
        ingest("race", N::Fail, E::Append),
        stream::iter([Ok(batch(&[40]))]),
    )
    .await?;
    drop(tx);
    assert_eq!(first.await??, 1);
    assert_eq!(
        values(&query(&mut b, "SELECT x FROM me.race").await?),
        vec![20, 30, 40]
    );

    // A client that goes away midway (its call reset) publishes nothing.
    let mut d = server.client().await?;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<RecordBatch, FlightError>>();
    tx.unbounded_send(Ok(batch(&[1])))?;
    let cut = tokio::spawn(async move {
        d.execute_ingest(ingest("broken", N::Create, E::Fail), rx)
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    cut.abort();
    let _ = cut.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tx);
    let missing = query(&mut b, "SELECT * FROM me.broken").await.unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    Ok(())
}

/// The frames `execute_ingest` would send for `batches` (schema first, descriptor on it).
async fn frames(table: &str, batches: Vec<RecordBatch>) -> Vec<arrow_flight::FlightData> {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::sql::ProstMessageExt;
    use futures::TryStreamExt;
    use prost::Message;
    let command = ingest(table, TableNotExistOption::Create, TableExistsOption::Fail);
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap()
}

/// Sends `frames` as one `DoPut` and returns how the server refused it.
async fn refused(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    frames: Vec<arrow_flight::FlightData>,
) -> tonic::Status {
    use futures::TryStreamExt;
    let outcome = match client.do_put(stream::iter(frames)).await {
        Ok(results) => results.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(FlightError::Tonic(status)) => Err(*status),
        Err(e) => Err(tonic::Status::unknown(e.to_string())),
    };
    outcome.expect_err("a malformed ingest stream must be refused")
}

#[tokio::test]
async fn malformed_ingest_streams_are_refused_and_publish_nothing() -> anyhow::Result<()> {
    use arrow::array::{BinaryArray, StringArray};
    let server = TestServer::spawn()?;
    let mut client = server.client().await?;
    let text = |values: Vec<&[u8]>, data_type: DataType| {
        let schema = Arc::new(Schema::new(vec![Field::new("s", data_type.clone(), true)]));
        let column: arrow::array::ArrayRef = match data_type {
            DataType::Binary => Arc::new(BinaryArray::from(values)),
            _ => Arc::new(StringArray::from(
                values
                    .iter()
                    .map(|v| std::str::from_utf8(v).unwrap())
                    .collect::<Vec<_>>(),
            )),
        };
        RecordBatch::try_new(schema, vec![column]).unwrap()
    };

    // Not an Arrow message where the schema should be.
    let mut garbage = frames("garbage", vec![batch(&[1, 2])]).await;
    garbage[0].data_header = bytes::Bytes::from_static(b"\xff\xff\xff\xffnot an arrow message");
    let status = refused(&mut client, garbage).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A batch whose body is cut short of the lengths its header declares.
    let mut short = frames("short", vec![batch(&(0..1000).collect::<Vec<_>>())]).await;
    let body = short[1].data_body.clone();
    short[1].data_body = body.slice(..body.len() / 2);
    let status = refused(&mut client, short).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("lies outside"), "{status:?}");

    // Bytes that are not UTF-8 in a column whose schema says text.
    let mut invalid = frames(
        "invalid_utf8",
        vec![text(vec![b"ok", b"\xff\xfe"], DataType::Binary)],
    )
    .await;
    invalid[0] = frames("invalid_utf8", vec![text(vec![b"ok"], DataType::Utf8)]).await[0].clone();
    let status = refused(&mut client, invalid).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A second schema midway.
    let mut changed = frames("changed", vec![batch(&[1])]).await;
    changed.extend(frames("changed", vec![text(vec![b"a"], DataType::Utf8)]).await);
    let status = refused(&mut client, changed).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("schema midway"), "{status:?}");

    // A descriptor and no data at all.
    let only = frames("empty", vec![batch(&[1])]).await[..1].to_vec();
    let mut only_descriptor = only[0].clone();
    only_descriptor.data_header = bytes::Bytes::new();
    let status = refused(&mut client, vec![only_descriptor]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("empty"), "{status:?}");

    // A command that is not one.
    let mut nonsense = frames("nonsense", vec![batch(&[1])]).await;
    nonsense[0].flight_descriptor = Some(arrow_flight::FlightDescriptor::new_cmd(
        b"\x0a\x05hello".to_vec(),
    ));
    let status = refused(&mut client, nonsense).await;
    assert_ne!(status.code(), Code::Ok, "{status:?}");

    // Nothing of any of them was published, and the server still serves.
    for table in [
        "garbage",
        "short",
        "invalid_utf8",
        "changed",
        "empty",
        "nonsense",
    ] {
        let missing = query(&mut client, &format!("SELECT * FROM me.{table}"))
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("not found"),
            "{table}: {missing}"
        );
    }
    let rows = client
        .execute_ingest(
            ingest("fine", TableNotExistOption::Create, TableExistsOption::Fail),
            stream::iter([Ok(batch(&[7]))]),
        )
        .await?;
    assert_eq!(rows, 1);
    assert_eq!(
        values(&query(&mut client, "SELECT x FROM me.fine").await?),
        vec![7]
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
    Ok(())
}
