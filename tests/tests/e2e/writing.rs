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
